"""Outbox, lane counters, filters and calibration on CPython and real MicroPython."""

from __future__ import annotations

from pathlib import Path
from typing import Any

M = "tests.portable.store_cases"


def _base(runtime: Any, tmp_path: Path) -> str:
    return str(tmp_path) if runtime.name == "cpython" else "/store"


def test_outbox_ack_overflow_and_reboot(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "outbox_lifecycle", _base(runtime, tmp_path), 8)
    assert r["after_add"] == [1, 2, 3, 4, 5]
    assert r["age"] == 500
    assert r["released"] == 3
    assert r["after_ack"] == [4, 5]
    assert r["reboot_uncompacted"] == [1, 2, 3, 4, 5]  # acks are folded in only at compaction
    assert r["reboot_age"] is True
    assert r["reboot_compacted"] == [4, 5]
    # 2 held + 10 new into 8 slots: 4 dropped, the newest 8 (seq 8..15) kept.
    assert r["overflow_depth"] == 8
    assert r["dropped"] == 4
    assert r["overflow_first"] == 8
    assert r["next_seq"] == 16
    assert r["after_overflow_reboot"] == [8, 8, 16]
    assert r["ack_future"] == 8
    assert r["next_after_full_ack"] == 16
    assert r["never_reuses"] == 16
    assert r["bad_lane"] == "bad_field"


def test_outbox_survives_a_torn_record(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "outbox_torn_tail", _base(runtime, tmp_path))
    assert r == {"after_torn": [1, 2, 3], "torn": 1, "after_append": [1, 2, 3, 4]}


def test_counters_exact_after_crash_with_bounded_writes(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "counters_recover", _base(runtime, tmp_path), 100, 70)
    assert r["got"] == r["expected"]
    assert r["writes"] <= 100 // r["checkpoint_every"] + 2


def test_outbox_record_layout(runtime: Any, tmp_path: Path) -> None:
    size, declared = runtime.call(M, "outbox_record_size", _base(runtime, tmp_path))
    assert size == declared


def _mean_half_away(xs: list[int]) -> int:
    s, c = sum(xs), len(xs)
    return (s + c // 2) // c if s >= 0 else -((-s + c // 2) // c)


def test_filters(runtime: Any) -> None:
    samples = [0, 3, -2, 900, 1, 0, 500, 504, 497, -7, -9, -5, -3, -2]
    out, avg, rejected = runtime.call(M, "filters", samples, 4, 50)
    # One sample of delay; noise within the threshold passes unchanged; the spike becomes the median.
    assert out == [0, 0, 3, -2, 1, 1, 0, 500, 504, 497, -7, -9, -5, -3]
    assert rejected == 1
    assert avg == [_mean_half_away(samples[max(0, i - 3) : i + 1]) for i in range(len(samples))]


def test_calibration(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "calibration", _base(runtime, tmp_path))
    assert r["c10"] == 4200
    # 420 counts/g: 42 counts = 0.1 g = 1 dg
    assert r["weights"] == [0, 1, 1, -1, 10000, 100000, round(-8388000 * 100 / 4200)]
    assert r["missing"] == [False, "no calibration stored"]
    assert r["reloaded"] == [True, 8000, 4200]
    assert r["wrong_layout"] == [False, "calibration is for 1 cells, lane has 2"]
    assert r["errors"][0] == "known weight must be positive"
    assert "implausible" in r["errors"][1]
    assert r["errors"][2] == "known weight must be positive"
    assert r["reversed"] == [-4200, 100]  # 4,200 counts down = 10 g
    assert r["two_point"] == [4200, 100000 - 50000 * 42, 50000, 60000]  # 50 kg and 60 kg on a loaded lane
    assert r["zero"] == [[True, False, False], 8001]
