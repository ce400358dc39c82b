"""Portable lane bodies: emulated HX711 (pin level, virtual time) -> driver -> lane pipeline -> detector."""

from firmware.calibration import Calibration
from firmware.detector import Detector
from firmware.hx711 import HX711
from firmware.lane import Lane
from tools.emulation.hx711_chip import HX711Chip, LoadCellSource, VirtualClock

OFFSET = 8000
CPG = 420  # counts per gram: a 5 kg cell


def _ramp(t, t0, t1, g0, g1):
    if t <= t0:
        return g0
    if t >= t1:
        return g1
    return g0 + (g1 - g0) * (t - t0) // (t1 - t0)


def shelf_load(t_us):
    """1 kg of stock (ten 100 g items); a two-item pick with a hand pressing down first; one put back."""
    t = t_us // 1000  # ms
    if t < 3000:
        return 1000
    if t < 3300:  # hand rests on the items before lifting: +60 g
        return 1000 + _ramp(t, 3000, 3100, 0, 60)
    if t < 3600:
        return _ramp(t, 3300, 3600, 1060, 800)
    if t < 6000:
        return 800
    if t < 6500:
        return _ramp(t, 6000, 6500, 800, 900) + (40 if 6200 <= t < 6350 else 0)
    return 900


def _rig(grams_at, noise_counts, seed, cells=1, rate=80):
    clk = VirtualClock(0, tick_cost_us=1)
    drivers = []
    chips = []
    if cells > 1:  # the load is shared by the lane's cells
        whole = grams_at

        def grams_at(t_us):
            return (whole(t_us) if callable(whole) else whole) / cells

    for i in range(cells):
        src = LoadCellSource(grams_at, counts_per_g=CPG, offset=OFFSET, noise_counts=noise_counts, seed=seed + i)
        chip = HX711Chip(clk, src, rate_sps=rate, pin_cost_us=1)
        chips.append(chip)
        drivers.append(HX711(chip.sck, chip.dout, clock=clk, poll_us=1000))
    cal = Calibration(cells, OFFSET * cells, CPG * 10)
    cal.calibrated = True
    det = Detector(1000, 10)
    return clk, chips, Lane(0, drivers, cal, det)


def _run(clk, lane, until_ms, events, on_ms=None):
    while clk.ticks_ms() < until_ms:
        if on_ms is not None:
            on_ms(clk.ticks_ms())
        if lane.sample(clk.ticks_ms()):
            d = lane.det
            events.append(
                {
                    "t": d.ev_t_ms,
                    "kind": d.ev_kind,
                    "count": d.ev_count,
                    "delta": d.ev_delta_dg,
                    "conf": d.ev_confidence,
                }
            )


def pick_and_put(noise_counts, seed, cells):
    clk, _chips, lane = _rig(shelf_load, noise_counts, seed, cells)
    events = []
    _run(clk, lane, 9000, events)
    return {"events": events, "weight": lane.weight_dg, "faults": lane.faults, "samples": lane.samples}


def fault_mid_event(seed):
    """The cell stops answering while two items are taken; the lane must not report a confident count."""

    def load(t_us):
        t = t_us // 1000
        return 1000 if t < 3000 else _ramp(t, 3000, 3400, 1000, 800)

    clk, chips, lane = _rig(load, 420, seed)
    events = []
    states = {}

    def script(t):
        if t >= 2900 and "cut" not in states:
            states["cut"] = t
            chips[0].disconnect()
        if t >= 4500 and "back" not in states:
            states["back"] = t
            chips[0].reconnect()
        if 3000 < t < 4400:
            states["flags_during"] = lane.flags()

    _run(clk, lane, 9000, events, script)
    return {
        "events": events,
        "faults": lane.faults,
        "flags_during": states.get("flags_during", 0),
        "fault_now": lane.fault,
    }


def tare_while_loaded(seed):
    """Tare with a tray on the lane: no event is reported for the re-zeroing, weight reads ~0 after."""
    clk, _chips, lane = _rig(500, 420, seed)
    events = []
    _run(clk, lane, 2000, events)
    before = lane.weight_dg
    busy_or_offset = lane.tare()
    _run(clk, lane, 4000, events)
    return {"before": before, "tare": busy_or_offset, "after": lane.weight_dg, "events": events}


def shelf_reboot(base, seed):
    """Two lanes record events into the outbox and counters; a reboot rebuilds the same counters."""
    import os

    from firmware.counters import CountersStore
    from firmware.outbox import Outbox
    from firmware.shelf import Shelf

    try:
        os.mkdir(base)
    except OSError:
        pass

    def build(clk_and_lanes, boot):
        lanes = [cl[2] for cl in clk_and_lanes]
        for i, lane in enumerate(lanes):
            lane.index = i
        return Shelf(lanes, Outbox(base + "/ob", boot, 64), CountersStore(base + "/cnt", len(lanes)))

    first_rig = _rig(shelf_load, 420, seed)
    clk = first_rig[0]
    # One virtual clock for both lanes: the second lane's chip follows the first's clock.
    rigs = [first_rig, _rig_on(clk, 500, 420, seed + 1)]
    shelf = build(rigs, 1)
    while clk.ticks_ms() < 9000:
        shelf.poll(clk.ticks_ms())
    first = [shelf.lane_state(i).to_dict() for i in range(2)]
    pending = [e.to_dict() for e in shelf.pending(clk.ticks_ms(), 10)]
    shelf.outbox.ack(1)
    again = build([_rig(1, 0, 1), _rig(1, 0, 1)], 2)
    second = [again.lane_state(i).to_dict() for i in range(2)]
    return {"first": first, "second": second, "pending": pending, "depth_after": again.outbox.depth}


def _rig_on(clk, grams_at, noise_counts, seed):
    src = LoadCellSource(grams_at, counts_per_g=CPG, offset=OFFSET, noise_counts=noise_counts, seed=seed)
    chip = HX711Chip(clk, src, rate_sps=80, pin_cost_us=1)
    hx = HX711(chip.sck, chip.dout, clock=clk, poll_us=1000)
    cal = Calibration(1, OFFSET, CPG * 10)
    cal.calibrated = True
    return clk, [chip], Lane(0, [hx], cal, Detector(1000, 10))
