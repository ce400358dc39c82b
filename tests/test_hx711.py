"""HX711 driver (firmware/hx711.py) against the pin-level emulator (tools/emulation/hx711_chip.py).

Every scenario runs under CPython and the real MicroPython VM (``runtime``); virtual time makes the timing
assertions exact. The allocation test runs under MicroPython only, where the heap is the one that matters.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import pytest

from tests.conftest import CPythonRuntime

M = "tests.portable.hx711_cases"
T = 60  # seconds; a MicroPython call that hangs fails the test instead of stalling the run
TIMEOUT_US = 500_000  # the driver's default ready timeout
POLL_US = 100  # the driver's default poll interval


def expected(grams: int, offset: int, gain: int, counts_per_g: int = 420) -> int:
    """What a noiseless cell reads: bridge counts at gain 128, scaled by gain, saturated to 24 bits."""
    c = (offset + grams * counts_per_g) >> {128: 0, 64: 1, 32: 2}[gain]
    return max(-(1 << 23), min((1 << 23) - 1, c))


# -- values ----------------------------------------------------------------------------------------


def test_twos_complement_edges_and_saturation(runtime: Any) -> None:
    values = [0, 1, -1, 2, -2, 0x7FFFFF, -0x800000, 0x7FFFFE, -0x7FFFFF, 123456, -123456, 9_999_999, -9_999_999]
    r = runtime.call(M, "replay", values, 80, timeout_s=T)
    clamped = [max(-0x800000, min(0x7FFFFF, v)) for v in values]
    assert r["values"] == clamped
    assert r["missed"] == 0 and r["faults"] == 0


@pytest.mark.parametrize(
    ("grams", "offset"),
    [(1000, 8000), (-500, 8000), (0, -3), (30_000, 0), (50_000, 0), (-30_000, 0), (-50_000, -5000)],
)
def test_reads_match_the_source_at_each_gain(runtime: Any, grams: int, offset: int) -> None:
    r = runtime.call(M, "constant_load", grams, offset, [128, 64, 32], 80, timeout_s=T)
    for gain in (128, 64, 32):
        got = r[str(gain)]
        assert got["values"] == [expected(grams, offset, gain)] * 3, gain
        assert got["chip_gain"] == gain
        # The chip resets to A/128: a driver set to another gain skips that first conversion.
        assert got["discarded"] == (0 if gain == 128 else 1)


# -- timing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "n", "start_us"),
    [(80, 40, 0), (10, 10, 0), (80, 20, (1 << 30) - 20_000)],  # the last one wraps ticks_us mid-settling
    ids=["80sps", "10sps", "80sps-ticks-wrap"],
)
def test_read_waits_for_each_conversion_and_keeps_the_chip_rate(runtime: Any, rate: int, n: int, start_us: int) -> None:
    r = runtime.call(M, "timing", rate, n, start_us, POLL_US, timeout_s=T)
    period, settle = r["period_us"], r["settle_us"]
    assert period == 1_000_000 // rate
    # Every conversion read exactly once, in order: nothing skipped, nothing read twice.
    assert r["values"] == list(range(1000, 1000 + n))
    assert r["missed"] == 0 and r["faults"] == 0
    times = r["times"]
    # First data after the power-on settling time, found within one poll interval (+ the read itself).
    assert settle <= times[0] <= settle + POLL_US + 300
    for a, b in itertools.pairwise(times):
        assert abs((b - a) - period) <= POLL_US + 300
    achieved = (n - 1) * 1_000_000 / (times[-1] - times[0])
    assert achieved == pytest.approx(rate, rel=0.01)
    assert r["ready_right_after_read"] is False
    assert r["next_value"] == 1000 + n
    assert period - POLL_US - 300 <= r["next_wait_us"] <= period + POLL_US + 300
    if start_us:
        assert r["wrapped"]


def test_clock_ticks_wrap_like_micropython(runtime: Any) -> None:
    r = runtime.call(M, "clock_wrap", timeout_s=T)
    assert r == {"a": (1 << 30) - 5, "b": 5, "diff": 10, "back": -10, "now": 10}


# -- gain ------------------------------------------------------------------------------------------


def test_chip_gain_pulses_select_the_next_conversion(runtime: Any) -> None:
    r = runtime.call(M, "chip_gain_selection", timeout_s=T)
    assert r["ready_after_settle"]
    assert (r["first"], r["first_gain"]) == (expected(1000, 8000, 128), 128)
    assert r["selected_after"] == 32  # 26 pulses: channel B for the next conversion
    assert r["dout_after_read"] == 1  # pulled high by the 25th pulse until the next conversion
    assert r["word_gain"] == 32
    assert (r["second"], r["second_gain"]) == (expected(1000, 8000, 32), 32)
    assert (r["third"], r["third_gain"]) == (expected(1000, 8000, 64), 64)
    # Clocked while not ready (settling, or again before the next conversion): ones, i.e. -1.
    assert r["settling_dout"] == 1
    assert (r["settling_read"], r["settling_gain"]) == (-1, 0)
    assert r["again_dout"] == 1
    assert (r["again_read"], r["again_new_reads"], r["again_selected"]) == (-1, 0, 64)


@pytest.mark.parametrize("rate", [80, 10])
def test_driver_gain_change_takes_effect_on_the_next_conversion(runtime: Any, rate: int) -> None:
    r = runtime.call(M, "gain_change", rate, timeout_s=T)
    period = r["period_us"]
    steps = r["steps"]
    assert r["faults"] == 0
    for i, s in enumerate(steps):
        assert s["value"] == expected(1000, 8000, s["gain"]), s
        assert s["chip_gain"] == s["gain"]
        changed = i > 0 and s["gain"] != steps[i - 1]["gain"]
        assert s["skipped"] == (1 if changed else 0), s
        if i > 0:
            # One conversion period per read; two when the read had to skip the old-gain conversion.
            assert abs(s["dt"] - period * (2 if changed else 1)) <= 2 * (POLL_US + 300), s


# -- power -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "gain"), [(80, 128), (10, 128), (80, 64), (10, 32)])
def test_power_down_and_up_with_settling(runtime: Any, rate: int, gain: int) -> None:
    r = runtime.call(M, "power_cycle", rate, gain, timeout_s=T)
    assert r["before"] == expected(1000, 8000, gain)
    assert r["chip_powered"] is False
    assert r["conversions_while_down"] == 0
    assert r["ready_while_down"] is False
    # Powered down on purpose: no wait, no fault.
    assert r["read_while_down"] is None and r["read_while_down_us"] < 10 and r["fault_while_down"] is False
    assert r["after"] == expected(1000, 8000, gain)
    settle, period = r["settle_us"], r["period_us"]
    extra = 0 if gain == 128 else period  # reset to A/128: one conversion skipped to get back to the gain
    assert r["skipped"] == (0 if gain == 128 else 1)
    assert settle + extra <= r["after_us"] <= settle + extra + 2 * (POLL_US + 300)
    assert r["fault"] is False and r["faults"] == 0


def test_chip_clock_high_over_60us_powers_down_and_low_resets(runtime: Any) -> None:
    r = runtime.call(M, "chip_power_down_rule", timeout_s=T)
    assert r["ready"]
    assert r["powered_at_60"] is True
    assert r["powered_at_61"] is False
    assert r["dout_powered_down"] == 1
    assert r["conversions_while_down"] == 0
    assert r["settle_us"] <= r["first_ready_after_us"] < r["settle_us"] + 50
    assert (r["power_downs"], r["resets"]) == (1, 1)


@pytest.mark.parametrize("rate", [80, 10])
@pytest.mark.parametrize("kind", ["pulse70", "cost61", "pulse55"])
def test_stretched_clock_high_is_a_fault_not_a_wrong_value(runtime: Any, kind: str, rate: int) -> None:
    r = runtime.call(M, "stretched", kind, rate, timeout_s=T)
    good = expected(1000, 8000, 128)
    assert r["good"] == good
    assert all(v is None for v in r["values"]), r["values"]
    assert r["fault"] is True
    assert r["glitches"] == r["faults"] == len(r["values"])
    if kind == "pulse55":
        # 55 us does not power the chip down (the rule is > 60 us), but it exceeds the datasheet's 50 us
        # maximum high time: the driver discards it; the only power-down is the driver's own reset.
        assert r["chip_power_downs"] == 1
    else:
        # The chip powered down (the stretch) and the driver then reset it (its recovery power cycle).
        assert r["chip_power_downs"] >= 2
    # Recovery: the next read is good after the settling time, and clears the fault.
    assert r["after"] == good and r["fault_after"] is False
    assert r["after_us"] <= r["settle_us"] + r["period_us"] + POLL_US + 300


def test_without_the_high_phase_check_a_stretch_returns_a_wrong_value(runtime: Any) -> None:
    """Why the driver times its pulses: the same stretch, check disabled, is silently wrong."""
    r = runtime.call(M, "stretched", "unchecked70", 80, timeout_s=T)
    assert r["values"][0] is not None and r["values"][0] != r["good"]
    assert r["fault"] is False and r["faults"] == 0
    assert r["chip_power_downs"] == 1


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [80, 10])
def test_missing_sensor_times_out_flags_a_fault_and_recovers(runtime: Any, rate: int) -> None:
    r = runtime.call(M, "disconnected", "high", rate, 3, timeout_s=T)
    assert r["good"] == expected(1000, 8000, 128)
    assert r["values"] == [None] * 3
    assert r["fault_flags"] == [True] * 3
    assert (r["timeouts"], r["glitches"], r["faults"]) == (3, 0, 3)
    for w in r["waits_us"]:
        # Bounded by the ready timeout (+ one poll, + the 80 us recovery power cycle): never a hang.
        assert TIMEOUT_US <= w <= TIMEOUT_US + POLL_US + 200
    # Reconnected: a power-on reset, data after settling, the fault clears.
    assert r["after"] == expected(1000, 8000, 128)
    assert r["fault_after"] is False
    assert r["after_us"] <= (50_000 if rate == 80 else 400_000) + POLL_US + 300


def test_dout_stuck_low_is_a_fault_not_zero(runtime: Any) -> None:
    r = runtime.call(M, "disconnected", "low", 80, 3, timeout_s=T)
    assert r["values"] == [None] * 3
    assert r["fault_flags"] == [True] * 3
    assert (r["timeouts"], r["glitches"]) == (0, 3)
    assert all(w < 1000 for w in r["waits_us"])
    assert r["after"] == expected(1000, 8000, 128) and r["fault_after"] is False


def test_floating_dout_never_hangs_and_is_mostly_caught(runtime: Any) -> None:
    n = 60
    r = runtime.call(M, "disconnected", "floating", 80, n, timeout_s=T)
    assert all(w <= TIMEOUT_US + POLL_US + 200 for w in r["waits_us"])
    caught = sum(1 for v in r["values"] if v is None)
    # Random levels pass the one DOUT-high check after the 25th pulse about half the time (documented limit:
    # use a pull-up on DOUT so an unplugged sensor reads as "never ready").
    assert caught >= n // 4
    assert r["faults"] == caught
    assert r["after"] == expected(1000, 8000, 128) and r["fault_after"] is False


@pytest.mark.parametrize(("mode", "pulse"), [("high", 10), ("low", 10), ("high", 1), ("low", 24)])
def test_sensor_lost_mid_read(runtime: Any, mode: str, pulse: int) -> None:
    r = runtime.call(M, "dies_mid_read", mode, pulse, timeout_s=T)
    good = expected(1000, 8000, 128)
    assert r["during_us"] <= 12_500 + POLL_US + 300  # the wait for the next conversion, then the read
    if mode == "low":
        # DOUT low after the gain pulse: caught in the same read.
        assert r["during"] is None and r["fault_during"] is True
    else:
        # Pulled high, the remaining bits read as ones: one wrong value (documented limit) ...
        assert r["during"] is not None and r["during"] != good
        ones = (1 << (25 - pulse)) - 1  # the bit of the unplugging pulse and every later one
        assert r["during"] & ones == ones
    # ... and the next read times out with a fault; bounded either way.
    assert r["next"] is None and r["fault_next"] is True
    assert r["next_us"] <= TIMEOUT_US + POLL_US + 200


# -- the load model --------------------------------------------------------------------------------


def test_load_cell_source_is_identical_on_both_runtimes(mpy: Any) -> None:
    n = 3000
    cp = CPythonRuntime().call(M, "source_trace", 12345, n)
    mp = mpy.call(M, "source_trace", 12345, n, timeout_s=T)
    assert mp == cp
    # Sanity of the model itself: spikes near 2 % of samples, a temperature triangle, noise around 400.
    assert 20 <= cp["spikes"] <= 100
    assert cp["temp_mc"] == [0, 800, 1600, 1600, 800, 0, -800, -1600, -1600, -800, 0]
    a = [c for i, c in enumerate(cp["counts"]) if i % 3 == 0]
    resid = [y - x for x, y in itertools.pairwise(a)]  # the load and drift change little between samples
    spread = statistics.median(abs(d) for d in resid) / 0.6745 / 2**0.5  # robust sigma of the noise
    assert 320 < spread < 480


def test_white_noise_through_the_driver(runtime: Any) -> None:
    r = runtime.call(M, "noise_through_driver", 420, 400, timeout_s=T)
    assert abs(r["mean"] - r["expected"]) < 3 * 420 / 20  # 3 standard errors
    assert 0.8 * 420**2 < r["var"] < 1.2 * 420**2


# -- allocation ------------------------------------------------------------------------------------

ALLOC_CODE = """
import gc
import micropython
from array import array
from firmware.hx711 import HX711
from tools.emulation.hx711_chip import ArraySource, HX711Chip, VirtualClock

N = 1000
VALUES = [((i * 7919) % 16000000) - 8000000 for i in range(61)]
clk = VirtualClock(tick_cost_us=1)
src = ArraySource(VALUES)
chip = HX711Chip(clk, src, rate_sps=80, pin_cost_us=1)
hx = HX711(chip.sck, chip.dout, gain=GAIN, clock=clk, poll_us=1000)
out = array('i', [0] * N)

def allocating_read():
    t = (hx.read(), 0)  # a tuple per sample: what the measurement must catch
    return t[0]

def window(reader, n):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    i = 0
    while i < n:
        out[i] = reader()
        i += 1
    b = gc.mem_alloc()
    gc.enable()
    return b - a

def locked(reader, n):
    micropython.heap_lock()
    try:
        i = 0
        while i < n:
            out[i] = reader()
            i += 1
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True

read = hx.read
for _ in range(20):  # warm-up: settling, the gain switch, first-call effects
    read()
start = src.index
delta = window(read, N)
values_ok = list(out) == [VALUES[(start + i) % len(VALUES)] for i in range(N)]
locked_ok = locked(read, 200)
bad_delta = window(allocating_read, 200)
bad_locked_ok = locked(allocating_read, 200)
result = {
    "delta": delta, "values_ok": values_ok, "locked_ok": locked_ok,
    "bad_delta": bad_delta, "bad_locked_ok": bad_locked_ok,
    "faults": hx.faults, "missed": chip.missed, "reads": hx.reads, "virtual_us": clk.now,
}
"""


@pytest.mark.parametrize("gain", [128, 64])
def test_read_path_allocates_nothing_under_micropython(mpy: Any, gain: int) -> None:
    r = mpy.exec(ALLOC_CODE.replace("GAIN", str(gain)), timeout_s=T)
    # 1,000 driver reads against the emulator (waiting, 24+N timed edges, conversions): zero bytes.
    assert r["delta"] == 0, r
    # Not even transiently: more reads with the heap locked raise no MemoryError.
    assert r["locked_ok"] is True, r
    assert r["values_ok"] is True
    assert r["faults"] == 0 and r["missed"] == 0
    # Warm-up, the measured window, the locked window, the allocating window, and one read before the
    # locked heap refused the allocating reader's tuple.
    assert r["reads"] == 20 + 1000 + 200 + 200 + 1
    assert r["virtual_us"] < 2**30  # timestamps still small ints on 32-bit MicroPython
    # The measurement is real: a read that builds one tuple per sample shows up in both checks.
    assert r["bad_delta"] >= 200 * 16, r
    assert r["bad_locked_ok"] is False
