"""Uplink sequence numbers and boot counter persistence, on CPython and real MicroPython."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

M = "tests.portable.firmware_cases"


def _base(runtime: Any, tmp_path: Path) -> str:
    return str(tmp_path) if runtime.name == "cpython" else "/seqtest"


def test_seq_strictly_increases_across_reboots_with_bounded_writes(runtime: Any, tmp_path: Path) -> None:
    frames = [5, 0, 40, 17, 1, 100]
    r = runtime.call(M, "seq_across_reboots", _base(runtime, tmp_path), 16, frames)
    seqs = r["seqs"]
    assert len(seqs) == sum(frames)
    assert all(b > a for a, b in itertools.pairwise(seqs)), seqs
    assert seqs[0] == 1
    # One write per boot plus one per 16 frames used, never more.
    assert r["writes"] <= len(frames) + sum(frames) // 16 + 1
    # Each boot skips at most one block.
    assert seqs[-1] <= sum(frames) + 16 * len(frames)


def test_default_block_writes_once_per_1024_frames(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "seq_across_reboots", _base(runtime, tmp_path), 1024, [3000])
    assert r["seqs"] == list(range(1, 3001))
    assert r["writes"] == 3  # boot reservation + two more blocks


def test_torn_writes_never_lower_the_counter(runtime: Any, tmp_path: Path) -> None:
    assert runtime.call(M, "torn_writes", _base(runtime, tmp_path)) == [100, 200, 100, None, None]


def test_boot_counter_increments(runtime: Any, tmp_path: Path) -> None:
    assert runtime.call(M, "boots", _base(runtime, tmp_path), 4) == [1, 2, 3, 4]


def test_records_keep_the_newest_valid_copy(runtime: Any, tmp_path: Path) -> None:
    assert runtime.call(M, "records", _base(runtime, tmp_path)) == [None, "second", 3, None]
