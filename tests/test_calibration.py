"""Confidence calibration (firmware/detector.py ``_CAL``, tools/sensing/calibration.py): on seeds held out from
the fit, the reported confidence of counted picks / puts is the exact-count rate."""

from __future__ import annotations

from typing import Any

from firmware.detector import _CAL, cal_cell, calibrate
from tools.sensing import calibration

# A bounded run: one held-out seed, fewer traces than the benchmark (which checks 5 points per decile on
# 28,800 traces); a decile with few events passes when its measured rate's 95 % interval reaches within 5 points.
_SEED = calibration.HELD_OUT_SEEDS[0]
_BROAD, _HARD = 300, 1500


def test_held_out_seeds_are_not_the_tuning_seeds() -> None:
    assert not set(calibration.TUNING_SEEDS) & set(calibration.HELD_OUT_SEEDS)


def test_reported_confidence_matches_the_exact_count_rate_on_a_held_out_seed() -> None:
    events = calibration.collect(calibration.jobs(_SEED, _BROAD, _HARD))
    rows = calibration.deciles(events)
    table = "\n".join(calibration.table_lines(rows))
    below_100 = [r for r in rows if r.events and r.hi < 100]
    assert sum(r.events for r in below_100) >= 300, table  # the run has uncertain counts to measure
    for r in rows:
        if r.events >= 20:
            assert r.consistent(calibration.TOLERANCE), table
        if r.events >= 400:
            assert r.within(calibration.TOLERANCE), table
    n = len(events)
    reported = sum(e.confidence for e in events) / n
    measured = 100 * sum(e.exact for e in events) / n
    assert abs(reported - measured) <= 1.5, table


def test_the_table_is_integers_per_cent() -> None:
    assert len(_CAL) == 27 and all(0 <= v <= 100 for v in _CAL)
    # the cell: raw band x unit against noise (Q4 sigma 160 = 1 g)
    assert cal_cell(100, 1000, 160) == 26  # 100 g unit, 1 g noise: 100 sigma
    assert cal_cell(100, 50, 160) == 8  # 5 g unit: 5 sigma
    assert cal_cell(50, 150, 160) == 10  # exactly 50 (a change only 3-4 sigma of the measurement), 15 sigma
    assert calibrate(97, 1000, 160) == _CAL[24]


def test_the_node_reports_the_calibrated_value(runtime: Any) -> None:
    # the event path (tests/portable/detector_cases.py) on both runtimes: every pick / put's confidence is in the table
    for case in ("pick", "put_back", "spread_ambiguous"):
        for ev in runtime.call("tests.portable.detector_cases", "run_case", case)["events"]:
            assert ev[5] in set(_CAL) or ev[3] == 3, (case, ev)  # anomalies (kind 3) keep their own confidence
