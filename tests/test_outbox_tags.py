"""The outbox with RFID tag records (firmware/outbox.py) on CPython and the real MicroPython VM: events and
tag_seen / tag_lost share one event_seq sequence, one journal (format v2) and one ack; a v1 journal (firmware before
RFID) is migrated at boot; a power cut tears at most the record being written; the EPC ring is bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

M = "tests.portable.outbox_cases"
T = 120
UNKNOWN = 0xFFFFFFFF
EPC_A = "3074257bf7194e4000001a85"
EPC_32 = bytes(range(0x40, 0x60)).hex()


def _base(runtime: Any, tmp_path: Path, name: str = "ob") -> str:
    return str(tmp_path / name) if runtime.name == "cpython" else "/" + name


def test_events_and_tag_records_round_trip(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "round_trip", _base(runtime, tmp_path), timeout_s=T)
    assert r["seqs"] == [1, 2, 3, 4, 5]  # one sequence for both
    assert r["kinds"] == [1, 8, 2, 9, 8] and r["events"] == [True, False, True, False, False]
    assert r["msgs"] == [
        {"type": "event", "event_seq": 1, "lane": 0, "kind": 1, "count_delta": -2, "weight_delta_dg": -900,
         "confidence": 97, "age_ms": 1000},
        {"type": "tag_seen", "event_seq": 2, "lane": 1, "rssi": -55, "age_ms": 900, "epc": EPC_A},
        {"type": "event", "event_seq": 3, "lane": 0, "kind": 2, "count_delta": 1, "weight_delta_dg": 450,
         "confidence": 90, "age_ms": 800},
        {"type": "tag_lost", "event_seq": 4, "lane": 1, "age_ms": 700, "epc": EPC_A},
        {"type": "tag_seen", "event_seq": 5, "lane": 2, "rssi": -60, "age_ms": 600, "epc": EPC_32},
    ]  # fmt: skip
    assert r["wire"] == r["msgs"]  # through frames, authenticated, and back
    # v2 journal: magic + 22 bytes per event + 16 + EPC per tag record
    assert r["journal_magic"] and r["journal_size"] == 4 + 22 * 2 + (16 + 12) * 2 + (16 + 32)
    assert r["released"] == 2 and r["after_ack"] == [3, 4, 5]
    assert r["epc_used"] == 12 + 32  # the acknowledged tag record's EPC was released
    # after a reboot: everything again (acks are folded in at compaction), ages unknown
    assert [m["event_seq"] for m in r["reboot"]] == [1, 2, 3, 4, 5]
    assert all(m["age_ms"] == UNKNOWN for m in r["reboot"])
    assert [{k: v for k, v in m.items() if k != "age_ms"} for m in r["reboot"]] == [
        {k: v for k, v in m.items() if k != "age_ms"} for m in r["msgs"]
    ]
    assert [m["event_seq"] for m in r["compacted"]] == [4, 5] and r["compacted_size"] == 4 + 28 + 48
    assert r["next"] == 6
    assert (r["bad_lane"], r["bad_epc"], r["bad_kind"]) == ("ProtocolError", "ProtocolError", "ValueError")
    # the EPC ring: none on an outbox that never held a tag; 16 bytes per slot once it does
    assert r["no_tags_no_ring"] == 0 and r["ring"] == 16 * 16


@pytest.mark.parametrize(("tail", "torn"), [("", 0), ("000000", 1)], ids=["whole", "torn-tail"])
def test_a_v1_journal_is_migrated_at_boot(runtime: Any, tmp_path: Path, tail: str, torn: int) -> None:
    r = runtime.call(M, "migration", _base(runtime, tmp_path), tail, timeout_s=T)
    assert r["v1_size"] == 4 * 22 + len(tail) // 2
    # event 1 was acknowledged (head), 2..4 are held, with their fields; sequence continues at 5
    assert [(m["event_seq"], m["lane"], m["kind"], m["count_delta"], m["weight_delta_dg"], m["confidence"])
            for m in r["msgs"]] == [(2, 1, 2, 3, 1350, 88), (3, 0, 3, 0, 60, 40), (4, 1, 4, 12, 0, 100)]  # fmt: skip
    assert all(m["age_ms"] == UNKNOWN for m in r["msgs"])
    assert (r["migrated"], r["torn"], r["next_seq"]) == (1, torn, 5)
    assert r["magic"] and r["size"] == 4 + 3 * 22  # rewritten as v2 at once
    assert r["tag_seq"] == 5
    assert [m["event_seq"] for m in r["again"]] == [2, 3, 4, 5] and r["again"][-1]["type"] == "tag_seen"
    assert (r["again_migrated"], r["again_torn"]) == (0, 0)  # once


def test_an_empty_journal_file_is_not_a_migration(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "empty_v1", _base(runtime, tmp_path), timeout_s=T)
    assert r == {"depth": 0, "migrated": 0, "magic": True, "next": 1}


@pytest.mark.parametrize("keep", [1, 2, 5, 12, 15, 27])
def test_a_power_cut_tears_only_the_tag_record_being_written(runtime: Any, tmp_path: Path, keep: int) -> None:
    r = runtime.call(M, "torn", _base(runtime, tmp_path), keep, timeout_s=T)
    assert r["line"] == 28
    assert r["after_cut"] == [1, 2] and r["torn"] == 1
    assert r["next"] == 3  # the torn record's seq was never given out by the journal: reused
    assert [m["type"] for m in r["after_append"]] == ["event", "tag_seen", "tag_lost"]
    assert r["after_append"][1]["epc"] == EPC_A and r["torn_again"] == 0


def test_the_epc_ring_is_bounded_and_keeps_each_records_epc(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "epc_ring", _base(runtime, tmp_path), timeout_s=T)
    assert r["ring"] == 128
    # 12 tags + 4 events = 16 records into 8 slots and 128 bytes of EPC (four of 32): the oldest dropped, counted
    assert r["seqs"] == list(range(11, 17)) and r["first"] == 11
    assert r["dropped"] == 10 and r["depth"] == 6
    assert r["types"].count("tag_seen") == 4
    assert r["epcs_ok"] and r["reboot_ok"] and r["reboot_seqs"] == r["seqs"]
    assert r["dropped_after_ack"] == 0 and r["depth_after"] == 4  # acknowledged records free their EPCs


def test_the_lane_counters_ignore_tag_records(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "shelf_counts_events_only", _base(runtime, tmp_path), timeout_s=T)
    assert r == [[-2, 2, 0, 1], [3, 0, 3, 3]]  # last_event: the lane's events only


def test_tag_records_are_delivered_exactly_once_through_acks(runtime: Any, tmp_path: Path) -> None:
    r = runtime.call(M, "delivery", _base(runtime, tmp_path), timeout_s=T)
    assert r["booked"] == list(range(1, 11))
    assert r["types"] == ["event", "tag_seen", "event", "tag_lost"] * 2 + ["event", "tag_seen"]
    assert r["sends"] > 10  # retransmitted while the acks lagged: the hub's dedupe by event_seq books each once
    assert r["depth"] == 0 and r["quiet_after"] == 0
