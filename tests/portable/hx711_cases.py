"""Portable HX711 test bodies: the firmware driver against the pin-level emulator, on virtual time.

Each function builds a chip and a driver, runs a scenario and returns plain data (JSON) for the test to
assert on; the same code runs under CPython and MicroPython.
"""

from firmware.hx711 import HX711
from tools.emulation.hx711_chip import (
    FLOATING,
    STUCK_HIGH,
    STUCK_LOW,
    ArraySource,
    HX711Chip,
    LoadCellSource,
    VirtualClock,
)

MODES = {"high": STUCK_HIGH, "low": STUCK_LOW, "floating": FLOATING}


def _rig(source, rate=80, gain=128, pin_cost_us=1, start_us=0, **driver_kw):
    clk = VirtualClock(start_us)
    chip = HX711Chip(clk, source, rate_sps=rate, pin_cost_us=pin_cost_us)
    hx = HX711(chip.sck, chip.dout, gain=gain, clock=clk, **driver_kw)
    return clk, chip, hx


def _timed_read(clk, hx):
    t = clk.now
    v = hx.read()
    return v, clk.now - t


def replay(values, rate):
    """Read every value of an ArraySource through the driver (gain 128)."""
    _clk, chip, hx = _rig(ArraySource(values), rate)
    out = [hx.read() for _ in values]
    return {"values": out, "chip_reads": chip.reads, "missed": chip.missed, "faults": hx.faults}


def constant_load(grams, offset, gains, rate):
    """For each gain, the first three reads of a noiseless cell holding ``grams``."""
    out = {}
    for gain in gains:
        _clk, chip, hx = _rig(LoadCellSource(grams, counts_per_g=420, offset=offset), rate, gain)
        vals = [hx.read() for _ in range(3)]
        out[str(gain)] = {"values": vals, "chip_gain": chip.last_read_gain, "discarded": hx.discarded}
    return out


def timing(rate, n, start_us, poll_us):
    """n reads of consecutive conversions: when each value arrived (virtual us) and what it was."""
    values = list(range(1000, 1000 + n + 8))
    clk, chip, hx = _rig(ArraySource(values), rate, start_us=start_us, poll_us=poll_us)
    vals = []
    times = []
    for _ in range(n):
        vals.append(hx.read())
        times.append(clk.now)
    # An immediate second read waits for the next conversion rather than re-reading the last one.
    before = clk.now
    ready_before = hx.ready()
    nxt = hx.read()
    return {
        "values": vals,
        "times": times,
        "period_us": chip.period_us,
        "settle_us": chip.settle_us,
        "conversions": chip.conversions,
        "missed": chip.missed,
        "faults": hx.faults,
        "ready_right_after_read": ready_before,
        "next_value": nxt,
        "next_wait_us": clk.now - before,
        "wrapped": clk.ticks_us() < start_us,
    }


def _raw_read(chip, pulses):
    """Bit-bang one read directly on the emulated pins (no driver): 24 data bits + ``pulses``."""
    v = 0
    for _ in range(24):
        chip.sck.value(1)
        chip.sck.value(0)
        v = (v << 1) | chip.dout.value()
    for _ in range(pulses):
        chip.sck.value(1)
        chip.sck.value(0)
    return v - 0x1000000 if v & 0x800000 else v


def chip_gain_selection():
    """At pin level: the pulses after the data select the input for the next conversion, not this one."""
    clk = VirtualClock()
    chip = HX711Chip(clk, LoadCellSource(1000, offset=8000), rate_sps=80, pin_cost_us=1)
    out = {}
    # Clocked while settling (DOUT high, not ready): the model shifts out ones, i.e. -1, behind no conversion.
    out["settling_dout"] = chip.dout.value()
    out["settling_read"] = _raw_read(chip, 1)
    out["settling_gain"] = chip.last_read_gain
    clk.sleep_us(chip.settle_us)
    out["ready_after_settle"] = chip.dout.value() == 0
    out["first"] = _raw_read(chip, 2)  # converted at A/128; 26 pulses select B/32
    out["first_gain"] = chip.last_read_gain
    out["selected_after"] = chip.selected_gain()
    out["dout_after_read"] = chip.dout.value()
    clk.sleep_us(chip.period_us)
    out["word_gain"] = chip.word_gain()
    out["second"] = _raw_read(chip, 3)  # B/32; 27 pulses select A/64
    out["second_gain"] = chip.last_read_gain
    clk.sleep_us(chip.period_us)
    out["third"] = _raw_read(chip, 1)
    out["third_gain"] = chip.last_read_gain
    # Clocked again before the next conversion: DOUT stays high (ones), the chip counts no new read, and
    # the extra pulses count as gain pulses (more than 27 as 27: the datasheet calls it an error).
    reads = chip.reads
    out["again_dout"] = chip.dout.value()
    out["again_read"] = _raw_read(chip, 1)
    out["again_new_reads"] = chip.reads - reads
    out["again_selected"] = chip.selected_gain()
    return out


def chip_power_down_rule():
    """At pin level: SCK high for 60 us is fine, 61 us powers down; low again resets with settling."""
    clk = VirtualClock()
    chip = HX711Chip(clk, LoadCellSource(10, offset=0), rate_sps=80)
    clk.sleep_us(chip.settle_us)
    out = {"ready": chip.dout.value() == 0}
    chip.sck.value(1)
    clk.sleep_us(60)
    chip.sync()
    out["powered_at_60"] = chip.powered
    chip.sck.value(0)  # this was the first data pulse of a read; abandon it and let the chip settle again
    clk.sleep_us(chip.period_us * 3)
    chip.sck.value(1)
    clk.sleep_us(61)
    chip.sync()
    out["powered_at_61"] = chip.powered
    out["dout_powered_down"] = chip.dout.value()
    conv = chip.conversions
    clk.sleep_us(1000000)
    out["conversions_while_down"] = chip.conversions - conv
    chip.sck.value(0)
    t0 = clk.now
    while chip.dout.value() and clk.now - t0 < 1000000:
        clk.sleep_us(50)
    out["first_ready_after_us"] = clk.now - t0
    out["settle_us"] = chip.settle_us
    out["power_downs"] = chip.power_downs
    out["resets"] = chip.resets
    return out


def gain_change(rate):
    """Driver level: set_gain applies from the next conversion; read() skips the one made with the old gain."""
    clk, chip, hx = _rig(LoadCellSource(1000, offset=8000), rate)
    steps = []
    for gain in (128, 64, 64, 32, 32, 128):
        if gain != hx.gain:
            hx.set_gain(gain)
        d0 = hx.discarded
        v, dt = _timed_read(clk, hx)
        steps.append(
            {"gain": gain, "value": v, "chip_gain": chip.last_read_gain, "skipped": hx.discarded - d0, "dt": dt}
        )
    return {"steps": steps, "period_us": chip.period_us, "faults": hx.faults}


def power_cycle(rate, gain):
    clk, chip, hx = _rig(LoadCellSource(1000, offset=8000), rate, gain)
    out = {"before": hx.read()}
    hx.power_down()
    chip.sync()
    out["chip_powered"] = chip.powered
    conv = chip.conversions
    clk.sleep_us(2000000)
    out["ready_while_down"] = hx.ready()
    out["read_while_down"], out["read_while_down_us"] = _timed_read(clk, hx)
    out["fault_while_down"] = hx.fault
    out["conversions_while_down"] = chip.conversions - conv
    hx.power_up()
    d0 = hx.discarded
    out["after"], out["after_us"] = _timed_read(clk, hx)
    out["skipped"] = hx.discarded - d0
    out["fault"] = hx.fault
    out["faults"] = hx.faults
    out["settle_us"] = chip.settle_us
    out["period_us"] = chip.period_us
    return out


def stretched(kind, rate):
    """A clock-high phase longer than allowed, in several forms; what the driver returns each time."""
    max_high = 1000000 if kind == "unchecked70" else 50
    clk, chip, hx = _rig(LoadCellSource(1000, offset=8000), rate, max_high_us=max_high)
    out = {"good": hx.read()}
    pd0 = chip.power_downs
    if kind == "cost61":
        chip.pin_cost_us = 61
        out["values"] = [hx.read() for _ in range(3)]
        chip.pin_cost_us = 1
    else:
        us = 55 if kind == "pulse55" else 70
        chip.stretch(12, us)
        out["values"] = [hx.read()]
    out["fault"] = hx.fault
    out["glitches"] = hx.glitches
    out["faults"] = hx.faults
    out["chip_power_downs"] = chip.power_downs - pd0
    out["after"], out["after_us"] = _timed_read(clk, hx)
    out["fault_after"] = hx.fault
    out["settle_us"] = chip.settle_us
    out["period_us"] = chip.period_us
    return out


def disconnected(mode, rate, n):
    clk, chip, hx = _rig(LoadCellSource(1000, offset=8000), rate)
    out = {"good": hx.read()}
    chip.disconnect(MODES[mode])
    vals = []
    waits = []
    faults = []
    for _ in range(n):
        v, dt = _timed_read(clk, hx)
        vals.append(v)
        waits.append(dt)
        faults.append(hx.fault)
    out["values"] = vals
    out["waits_us"] = waits
    out["fault_flags"] = faults
    out["faults"] = hx.faults
    out["timeouts"] = hx.timeouts
    out["glitches"] = hx.glitches
    chip.reconnect()
    out["after"], out["after_us"] = _timed_read(clk, hx)
    out["fault_after"] = hx.fault
    out["reads"] = hx.reads
    return out


def dies_mid_read(mode, pulse):
    """The sensor is unplugged while the driver clocks a read out."""
    clk, chip, hx = _rig(LoadCellSource(1000, offset=8000), 80)
    out = {"good": hx.read()}
    m = MODES[mode]

    def unplug(c, n):
        if n == pulse:
            c.disconnect(m)
            c.hook = None

    chip.hook = unplug
    out["during"], out["during_us"] = _timed_read(clk, hx)
    out["fault_during"] = hx.fault
    out["next"], out["next_us"] = _timed_read(clk, hx)
    out["fault_next"] = hx.fault
    out["faults"] = hx.faults
    return out


def source_trace(seed, n):
    """A noisy, drifting, spiky cell sampled at 80 SPS, straight from the source (no chip)."""
    src = LoadCellSource(
        lambda t: 1000 + t // 1000000,  # a gram per second: integer grams, exact on both runtimes
        counts_per_g=420,
        offset=-25000,
        noise_counts=400,
        temp_coeff=30,
        temp_swing_mc=2000,
        temp_period_s=10,
        drift_counts_per_h=3600,
        spike_ppm=20000,
        spike_counts=50000,
        seed=seed,
    )
    out = []
    for i in range(n):
        gain, ch = ((128, 0), (64, 0), (32, 1))[i % 3]
        out.append(src.counts(i * 12500, gain, ch))
    return {"counts": out, "spikes": src.spikes, "temp_mc": [src.temp_mc(t * 1000000) for t in range(11)]}


def noise_through_driver(noise, n):
    """Mean and spread of n driver reads of a constant load with white noise (integer statistics)."""
    _clk, _chip, hx = _rig(LoadCellSource(500, offset=1000, noise_counts=noise, seed=7), 80, poll_us=1000)
    vals = [hx.read() for _ in range(n)]
    mean = sum(vals) // n
    var = sum((v - mean) * (v - mean) for v in vals) // n
    return {"mean": mean, "var": var, "expected": 1000 + 500 * 420}


def clock_wrap():
    clk = VirtualClock(start_us=(1 << 30) - 5)
    a = clk.ticks_us()
    clk.sleep_us(10)
    b = clk.ticks_us()
    return {"a": a, "b": b, "diff": clk.ticks_diff(b, a), "back": clk.ticks_diff(a, b), "now": clk.now}
