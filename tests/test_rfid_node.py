"""RFID end to end on the node (firmware/node.py + firmware/rfid/), on both runtimes: the real firmware on an
emulated board whose UART carries a byte-level reader module (tools/emulation/uhf_module.py), tags coming, moving
and going on virtual time, and a hub simulator that books each event_seq once and acks with a lag. The hub side sees
exactly one tag_seen and one tag_lost per appearance, in the events' sequence, and reader_health as the reader's
state changes."""

from __future__ import annotations

from typing import Any

from shared_protocol.messages import READER_OK, READER_SILENT, READER_STARTING
from tests.portable.rfid_node_cases import EPC_A, EPC_B, EPC_C

M = "tests.portable.rfid_node_cases"
T = 240


def _base(runtime: Any, tmp_path: Any, name: str = "flash") -> str:
    return str(tmp_path / name) if runtime.name == "cpython" else "/" + name


def test_tags_come_move_and_go_exactly_once_each(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "tags_flow", _base(runtime, tmp_path), timeout_s=T)
    recs = r["records"]
    # one sequence, contiguous, for the tag records and the weight event (the pick at 20 s)
    assert [x[0] for x in recs] == list(range(1, len(recs) + 1))
    per_tag: dict[str, list[tuple[str, int, int]]] = {}
    for _seq, kind, epc, lane, t in recs:
        per_tag.setdefault(epc, []).append((kind, lane, t))
    assert [(k, lane) for k, lane, _t in per_tag[EPC_A]] == [("tag_seen", 0), ("tag_lost", 0)]
    assert [(k, lane) for k, lane, _t in per_tag[EPC_B]] == [("tag_seen", 1)]
    assert [(k, lane) for k, lane, _t in per_tag[EPC_C]] == [("tag_seen", 0), ("tag_lost", 0), ("tag_seen", 1)]
    assert [(k, lane) for k, lane, _t in per_tag[""]] == [("event", 0)]
    a_seen, a_lost = per_tag[EPC_A][0][2], per_tag[EPC_A][1][2]
    assert 2000 < a_seen < 3500  # placed at 2 s: seen within a cycle or two of the antennas
    assert 30000 + 5000 <= a_lost <= 30000 + 5000 + 500  # taken at 30 s, lost_s 5
    # what the hub dates them at (arrival - age_ms, in the first copy booked): the arrival at its first read, the
    # departure at its last read, not at the decision lost_s later
    dated = {(x[1], x[2]): x[4] - age for x, age in zip(recs, r["ages"], strict=True)}
    assert 2000 <= dated[("tag_seen", EPC_A)] < 3000
    assert 30000 - 600 <= dated[("tag_lost", EPC_A)] <= 30000
    c_moved = per_tag[EPC_C][1][2]
    assert per_tag[EPC_C][2][2] == c_moved and 12000 < c_moved < 12000 + 4000  # moved at 12 s: lost, then seen
    assert 5000 < per_tag[EPC_B][0][2] < 6500
    assert all(-60 <= x <= -30 for x in r["rssi"])
    assert r["copies"] > len(recs)  # acks lagged: re-sent, booked once
    assert r["outbox"] == 0
    # tags do not count: lane 0's counters carry the pick only, lane 1's nothing
    pick_seq = next(x[0] for x in recs if x[1] == "event")
    assert r["lane_states"] == {"0": [-1, pick_seq], "1": [0, 0]}
    # reader_health: with the first health (starting), when it became OK, then with the 30 s health
    rh = r["reader_health"]
    assert [x[1] for x in rh[:2]] == [READER_STARTING, READER_OK] and rh[1][0] < 200
    assert rh[-1][0] == r["health_t"][-1] == 30000
    assert rh[-1][2] > 500 and rh[-1][3:6] == [0, 0, 0] and rh[-1][6] == 3  # reads; no bad frame, reset, silence
    assert r["present"] == [[EPC_B, 1], [EPC_C, 1]]
    assert r["keeper_need"] == 7  # the watchdog waits for the RFID task too
    assert r["reader"][1:4] == [0, 0, 0] and r["module"]["busy_dropped"] == 0


def test_a_reader_that_reboots_and_vanishes_loses_no_tag(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "reader_faults", _base(runtime, tmp_path), timeout_s=T)
    # the two tags seen once; nothing lost while the reader could not read (held), nothing seen twice
    assert [x[1:4] for x in r["records"]] == [["tag_seen", EPC_A, 0], ["tag_seen", EPC_B, 1]]
    states = [(x[0], x[1]) for x in r["reader_health"]]
    names = [s for _t, s in states]
    # the first health, OK; the reboot at 8 s: found reset, configured again; unplugged 14..20 s: silent, then back
    assert names[:8] == [READER_STARTING, READER_OK, READER_STARTING, READER_OK, READER_SILENT, READER_STARTING,
                         READER_OK, READER_OK]  # fmt: skip
    assert 8000 < states[2][0] < 9500 and 16000 <= states[4][0] <= 17000 and 20000 < states[5][0] < 37000
    last = r["reader_health"][-1]
    assert last[4:7] == [2, 1, 2]  # resets (the reboot, and the power-on after the unplug), silences, present
    assert r["present"] == [[EPC_A, 0], [EPC_B, 1]]


def test_tag_records_survive_a_node_reboot_until_acknowledged(runtime: Any, tmp_path: Any) -> None:
    first = runtime.call(M, "reboot_run", _base(runtime, tmp_path, "a"), None, 6000, False, timeout_s=T)
    assert [x[1:4] for x in first["records"]] == [["tag_seen", EPC_A, 0], ["tag_seen", EPC_B, 1]]
    assert first["outbox"] == 2  # never acknowledged
    second = runtime.call(M, "reboot_run", _base(runtime, tmp_path, "b"), first["files"], 12000, True, timeout_s=T)
    assert second["hellos"] == [2]
    recs = second["records"]
    # the journalled records again (same event_seq, age unknown after a reboot), then the table's fresh sightings
    assert [x[:4] for x in recs[:2]] == [[1, "tag_seen", EPC_A, 0], [2, "tag_seen", EPC_B, 1]]
    assert second["ages"][:2] == [0xFFFFFFFF] * 2
    assert [x[1:4] for x in recs[2:]] == [["tag_seen", EPC_A, 0], ["tag_seen", EPC_B, 1]]
    assert [x[0] for x in recs[2:]] == [3, 4] and second["outbox"] == 0


def test_a_node_without_readers_is_unchanged(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "without_rfid", _base(runtime, tmp_path), timeout_s=T)
    assert r == {"rfid": True, "ring": 0, "types": ["health", "hello", "lane_state"], "need": 3}
