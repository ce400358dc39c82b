"""firmware/detector.py: every sensing case on CPython and real MicroPython, identical events, no allocation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from firmware.detector import LOW_CONFIDENCE
from firmware.ticks import TICKS_MAX
from shared_protocol.messages import KIND_ANOMALY, KIND_PICK, KIND_PUT
from tests.portable import detector_cases

REPO = Path(__file__).resolve().parents[1]
M = "tests.portable.detector_cases"
T, DUR, DELTA, KIND, COUNT, CONF, RAW = range(7)
UNIT = detector_cases.UNIT


def _one(evs: list[list[int]]) -> list[int]:
    assert len(evs) == 1, evs
    return evs[0]


def _counted(ev: list[int], kind: int, count: int) -> None:
    assert ev[KIND] == kind, ev
    assert ev[COUNT] == count, ev
    assert ev[CONF] >= 90, ev
    assert abs(ev[DELTA] - count * UNIT) <= 30, ev  # within 3 g


def _check(case: str, r: dict[str, Any]) -> None:
    evs = r["events"]
    end = r["end"]
    if case in ("pick", "pick_10sps", "heavy_press", "wrap"):
        ev = _one(evs)
        _counted(ev, KIND_PICK, -1)
        start = ev[T] - ev[DUR]
        assert 2900 <= start <= 3300, ev  # the change began with the hand's first contact (3000 ms)
        assert ev[T] - end <= (1200 if case == "pick_10sps" else 450), ev  # latency after the end of motion
    elif case == "multi_pick":
        _counted(_one(evs), KIND_PICK, -3)
    elif case == "pick_resting_hand":
        ev = _one(evs)  # not a pick of 1 at the crest, then another when the hand leaves
        _counted(ev, KIND_PICK, -2)
        assert ev[T] >= 7500, ev  # counted once the shelf settled, after the resting hand left
    elif case == "put_back":
        assert len(evs) == 2, evs
        _counted(evs[0], KIND_PICK, -1)
        _counted(evs[1], KIND_PUT, 1)
    elif case == "quick_picks":
        assert len(evs) == 2, evs
        _counted(evs[0], KIND_PICK, -1)
        _counted(evs[1], KIND_PICK, -1)
    elif case in ("bump", "push_bump", "lean", "drift", "spikes", "fault_no_change"):
        assert evs == [], evs
        assert r["stable"]
    elif case in ("fault_mid_event", "gap_mid_event"):
        ev = _one(evs)
        # compared with the level before the fault: the right change, but reported as an anomaly, low confidence
        assert ev[KIND] == KIND_ANOMALY, ev
        assert ev[CONF] <= 40, ev
        assert ev[COUNT] == -1 and abs(ev[DELTA] + UNIT) <= 30, ev
        assert ev[T] - ev[DUR] <= 3400, ev  # t_start: when the change began, before the fault
    elif case in ("ambiguous", "spread_ambiguous"):
        ev = _one(evs)
        # an anomaly, or a count whose posterior is low; the reported confidence is what such counts earn
        # (calibrated: here below the 90 of a clear count)
        assert ev[KIND] == KIND_ANOMALY or (ev[RAW] < LOW_CONFIDENCE and ev[CONF] < 90), ev
    elif case == "no_unit":
        ev = _one(evs)
        assert ev[KIND] == KIND_PICK and ev[COUNT] == 0 and abs(ev[DELTA] + UNIT) <= 30, ev
    else:
        raise AssertionError(case)


@pytest.mark.parametrize("case", detector_cases.CASES)
def test_case(runtime: Any, case: str) -> None:
    _check(case, runtime.call(M, "run_case", case))


def test_both_runtimes_give_identical_events(mpy: Any) -> None:
    cpython = json.loads(json.dumps(detector_cases.run_all()))
    assert mpy.call(M, "run_all") == cpython


def test_wrap_changes_nothing() -> None:
    plain = detector_cases.run_case("pick")["events"]
    wrapped = detector_cases.run_case("wrap")["events"]
    assert plain == wrapped


def test_isqrt(runtime: Any) -> None:
    values = [0, 1, 2, 3, 4, 15, 16, 17, 99, 100, 101, 65535, 65536, 10**6 + 1, (1 << 30) - 1, 2**31 + 5]
    assert runtime.call(M, "isqrt_table", values) == [math.isqrt(v) for v in values]


# -- allocation ------------------------------------------------------------------------------------

_ALLOC = """
import gc
from array import array
from firmware.detector import Detector

class FloatMean(Detector):
    # The mistake the detector must not make: a float running mean (each float is a heap object).
    def feed(self, t_ms, weight_dg):
        self.mean = self.mean * 0.99 + weight_dg * 0.01
        return Detector.feed(self, t_ms, weight_dg)

d = {cls}(1000, 20)
d.mean = 0.0
noise = array('i', [0] * 256)
x = 12345
for i in range(256):
    x = (1103515245 * x + 12345) & 0x7FFFFFFF
    noise[i] = ((x >> 8) % 41) - 20          # about +-1 g of noise, integers
t = {t0}
base = 50000

def tick(t, dt):                             # time.ticks_add: stays below 2**30 without a big int
    if t > 0x3FFFFFFF - dt:
        return t - 0x3FFFFFFF - 1 + dt
    return t + dt

for i in range(2000):                        # warm-up: noise estimate, first level, stable
    d.feed(t, base + noise[i & 255])
    t = tick(t, 12 + (i & 1))
events = 0
gc.collect()
gc.disable()
before = gc.mem_alloc()
for i in range(1000):
    w = base + noise[i & 255]
    if {bump} and 300 <= i < 310:
        w += 3000                            # a knock: the detector moves, settles, finds no change
    if {pick} and i >= 300:
        w += 3000 if i < 315 else -1000      # a hand presses (190 ms), an item is lifted: one pick
    if d.feed(t, w):
        events += 1
    t = tick(t, 12 + (i & 1))
after = gc.mem_alloc()
gc.enable()
result = {{"alloc": after - before, "events": events, "stable": d.stable}}
"""


def _alloc(mpy: Any, cls: str = "Detector", bump: bool = False, pick: bool = False, t0: int = 0) -> Any:
    return mpy.exec(_ALLOC.format(cls=cls, bump=bump, pick=pick, t0=t0))


def test_steady_state_allocates_nothing(mpy: Any) -> None:
    r = _alloc(mpy)
    assert r == {"alloc": 0, "events": 0, "stable": True}


def test_steady_state_across_the_tick_wrap_allocates_nothing(mpy: Any) -> None:
    r = _alloc(mpy, t0=TICKS_MAX - 30000)  # the 1,000 measured samples cross 2**30 ms (ticks_ms wraps there)
    assert r == {"alloc": 0, "events": 0, "stable": True}


def test_motion_without_event_allocates_nothing(mpy: Any) -> None:
    r = _alloc(mpy, bump=True)
    assert r == {"alloc": 0, "events": 0, "stable": True}


def test_event_path_allocates_nothing(mpy: Any) -> None:
    r = _alloc(mpy, pick=True)
    assert r == {"alloc": 0, "events": 1, "stable": True}


def test_the_allocation_measurement_can_fail(mpy: Any) -> None:
    r = _alloc(mpy, cls="FloatMean")
    assert r["events"] == 0
    assert r["alloc"] > 1000  # 1,000 float objects at least


def test_steady_state_frames_fit_on_the_c_stack() -> None:
    """On ESP32 / RP2 a frame above 11 words is heap-allocated at every call (and freed): gc.mem_alloc() cannot
    see that and the WebAssembly build (which has a Python stack) never does it, so read the compiled frames."""
    from tools.mpy_frames import MAX_ON_C_STACK, compile_frames

    sizes = compile_frames(REPO / "firmware" / "detector.py")
    hot = ("feed", "_interval", "_stable_sample", "_track", "_noise")
    assert {f: sizes[f"Detector.{f}"] for f in hot if sizes[f"Detector.{f}"] > MAX_ON_C_STACK} == {}
