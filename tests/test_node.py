"""The node firmware (firmware/node.py and the session, delivery, reports, commands, housekeeping and link it is
built from; config.py) on an emulated board, on both runtimes.

Each case boots the real firmware on ``tools/emulation/board.EmulatedBoard`` (pin-level HX711s fed by gram-level
physics) on virtual time and talks to it with the protocol's own hub-side classes (tests/portable/node_cases.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from firmware import config as config_mod
from shared_protocol.auth import Key
from shared_protocol.downlink_text import encode_line
from shared_protocol.frame import DownlinkSender
from shared_protocol.messages import (
    FLAG_SENSOR_FAULT,
    FLAG_UNCALIBRATED,
    FLAG_UNSTABLE,
    KIND_ANOMALY,
    KIND_COUNT,
    KIND_PICK,
    KIND_PUT,
    STATUS_BAD_ARGS,
    STATUS_BUSY,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_UNSUPPORTED,
    Ack,
    Calibrate,
    Identify,
    RequestState,
    SetConfig,
    SetLane,
    Tare,
)
from tests.portable import node_cases

M = "tests.portable.node_cases"
T = 120


def _base(runtime: Any, tmp_path: Any, name: str = "flash") -> str:
    return str(tmp_path / name) if runtime.name == "cpython" else "/" + name


def test_hello_repeats_with_backoff_until_acknowledged(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "hello_backoff", _base(runtime, tmp_path), timeout_s=T)
    times = [h[0] for h in r["hellos"]]
    # At boot, then 2, 4, 8, 16 s apart, then every 30 s; the ack at 75 s ends them.
    assert times == [10, 2010, 6010, 14010, 30010, 60010], times
    assert all(h[1:] == [1, 2, r["layout_hash"]] for h in r["hellos"])
    assert r["session"] is True
    # Lane state every 10 s per lane (two lanes: one every 5 s), and for both lanes when the session starts.
    ls = r["lane_states"]
    assert [t for t, _ in ls if t <= 75000] == list(range(5000, 75001, 5000))
    assert [lane for t, lane in ls if t == 75010] == [0, 1]
    # Health every 30 s and at the session start; counters count since boot.
    health = r["health"]
    assert [h[0] for h in health] == [30000, 60000, 75010, 90000]
    assert [h[2] for h in health] == [0, 0, 1, 1]  # rx_frames
    assert [h[3] for h in health] == [30, 60, 75, 90]  # uptime_s
    assert health[0][1] == 4 + 6  # tx_frames before it: the hellos at 0, 2, 6, 14 s and six lane states


def test_events_sent_retransmitted_and_released_by_ack(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "events_flow", _base(runtime, tmp_path), timeout_s=T)
    ev = r["events"]
    # [t, frame seq, event_seq, lane, kind, count, age_ms]
    first = ev[0]
    assert first[2:6] == [1, 0, KIND_PICK, -2]
    assert 5400 <= first[0] <= 6300  # within ~0.8 s of the hand leaving (5.5 s)
    assert 300 <= first[6] <= 1300  # age: since the change began (5.0-5.3 s)
    # Not acknowledged: sent again 2 s later, then 4 s later (new frames, new seq, same event); the ack at 13 s
    # stops it.
    again = [e for e in ev if e[2] == 1]
    assert [e[0] - first[0] for e in again] == [0, 2000, 6000]
    seqs = [e[1] for e in again]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [e[6] - first[6] for e in again] == [0, 2000, 6000]
    # The put-back at 16 s is acknowledged at once: sent once.
    assert [e[2:6] for e in ev if e[2] == 2] == [[2, 0, KIND_PUT, 1]]
    assert r["outbox"] == [0, 2]
    # lane_state after each event carries the counters.
    after = [s for s in r["lane_states"] if s["last_event"] >= 1]
    assert (after[0]["count"], after[0]["removed_total"], after[0]["added_total"]) == (-2, 2, 0)
    assert after[0]["t"] == first[0]
    last = r["lane_states"][-1]
    assert (last["count"], last["removed_total"], last["added_total"], last["last_event"]) == (-1, 2, 1, 2)
    assert abs(last["weight_dg"] - 4000) < 30 and last["flags"] == 0
    h = r["health_now"]
    assert h["uptime_s"] == 22
    assert 7800 <= h["sample_rate_chz"] <= 8100
    assert h["tx_frames"] == r["frames_total"]
    assert h["rx_frames"] == 3  # the hello's ack, the ack at 12 s and the put-back's ack
    assert (h["rx_rejected"], h["outbox_depth"], h["outbox_dropped"], h["outbox_first"]) == (0, 0, 0, 0)
    if runtime.name == "micropython":
        assert h["free_heap"] > 0
    # The health sent when the session started: nothing pending yet, outbox_first 0.
    assert r["health_frames"][0]["outbox_depth"] == 0


def test_unacknowledged_events_survive_a_reboot(runtime: Any, tmp_path: Any) -> None:
    base = _base(runtime, tmp_path)
    first = runtime.call(M, "reboot_run", base, None, 9000, False, timeout_s=T)
    assert first["hellos"] == [1]
    assert [e[1:3] for e in first["events"]] == [[1, -1], [1, -1]]  # sent, re-sent, never acknowledged
    # The second boot starts from the first one's flash (carried across as files, like a power cycle).
    base2 = _base(runtime, tmp_path, "flash2")
    second = runtime.call(M, "reboot_run", base2, first["files"], 9000, True, timeout_s=T)
    assert second["hellos"] == [2]  # a new boot count: the new downlink session
    assert second["min_seq"] > first["max_seq"]  # frame seq keeps increasing across the reboot
    # The event comes again (a new frame), its age unknown after a reboot; acknowledged, it is not re-sent.
    assert [e[1:4] for e in second["events"]] == [[1, -1, 0xFFFFFFFF]]
    lane0 = second["lane0"]
    assert (lane0["count"], lane0["removed_total"], lane0["last_event"]) == (-1, 1, 1)


def test_commands_are_executed_and_answered(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "commands", _base(runtime, tmp_path), timeout_s=T)
    res = r["results"]
    by_name: dict[str, list[list[int]]] = {}
    for seq, name, t in r["sent"]:
        by_name.setdefault(name, []).append(res[str(seq)])
        assert t < res[str(seq)][2] <= t + 10  # answered at the next link poll
    tare_ok, tare_busy, tare_bad = by_name["tare"]
    assert tare_ok[0] == STATUS_OK and abs(tare_ok[1] - node_cases.OFFSET) < 600  # the new zero, raw counts
    assert tare_busy[0] == STATUS_BUSY  # the lane was moving
    assert tare_bad[0] == STATUS_BAD_ARGS  # no lane 9
    cal_ok, cal_bad = by_name["calibrate"]
    assert cal_ok[0] == STATUS_OK and abs(cal_ok[1] - node_cases.CPG * 10) < 30  # counts per 10 g
    assert cal_bad[0] == STATUS_FAILED  # an implausible scale is refused; the old one stays
    assert abs(r["weight0"] - 10000) < 30  # the calibrated lane reads the kilogram
    ident_on, ident_off = by_name["identify"]
    assert ident_on[0] == ident_off[0] == STATUS_OK
    led = {name: (on, changes) for name, on, changes in r["led"]}
    assert led["identify"][0] is False and led["identify"][1] >= 3  # blinked, then off
    assert by_name["set_lane"] == [[STATUS_OK, 0, by_name["set_lane"][0][2]]]
    assert r["assignment"] == [2500, 15, "SKU-X"] and r["unit1"] == 2500 and r["skus"][1] == "SKU-X"
    assert [x[0] for x in by_name["set_config"]] == [STATUS_OK, STATUS_UNSUPPORTED, STATUS_BAD_ARGS]
    assert r["settings"] == [5000, 30000]
    rs_all, rs_bad = by_name["request_state"]
    assert rs_all[0] == STATUS_OK and rs_bad[0] == STATUS_BAD_ARGS
    assert r["lane_states_after_request"] == [0, 1]
    # The new lane_state interval (5 s, two lanes) applies at once.
    assert r["lane_state_times"] == [9205, 9505, 9505, 11705, 14205]


def test_a_new_identity_starts_afresh_and_the_same_one_keeps_its_state(runtime: Any, tmp_path: Any) -> None:
    """The node's numbers, counters and events belong to its id (firmware/identity.py): a reboot keeps them, and so
    does a key rotated by hand; a config for another node (a board re-provisioned), or the record smartshelf flash
    installs with a new config, starts from nothing but keeps the calibration."""
    first = runtime.call(M, "identity_run", _base(runtime, tmp_path, "a"), None, timeout_s=T)
    assert first["events"] == [[1, -2]] and first["lane0"][:2] == [-2, 1]
    # The same identity after a reboot: its counts and numbers carry on.
    unacked = runtime.call(M, "identity_run", _base(runtime, tmp_path, "b"), first["files"], timeout_s=T)
    assert unacked["boots"] == [2] and unacked["lane0"][:2] == [-2, 1] and unacked["notes"] == []
    assert unacked["min_seq"] > first["min_seq"]
    other = bytes(range(100, 132)).hex()
    rotated = runtime.call(M, "with_config", first["files"], other, timeout_s=T)
    kept = runtime.call(M, "identity_run", _base(runtime, tmp_path, "c"), rotated, other, timeout_s=T)
    assert kept["boots"] == [2] and kept["lane0"][:2] == [-2, 1] and kept["min_seq"] > first["min_seq"]
    assert kept["notes"] == []
    for name, node_id, unclaimed in (("d", 8, False), ("e", 7, True)):
        files = runtime.call(M, "with_config", first["files"], other, node_id, unclaimed, timeout_s=T)
        fresh = runtime.call(M, "identity_run", _base(runtime, tmp_path, name), files, other, node_id, timeout_s=T)
        assert fresh["boots"] == [1] and fresh["events"] == [] and fresh["lane0"][:2] == [0, 0], (name, fresh)
        assert fresh["min_seq"] == 1
        assert fresh["notes"] and fresh["notes"][0].startswith("new identity: ")
        assert not fresh["lane0"][2] & FLAG_UNCALIBRATED and abs(fresh["weight0"] - 3000) < 100  # calibration kept


def test_what_changed_while_the_firmware_was_stopped_is_counted_at_the_next_boot(runtime: Any, tmp_path: Any) -> None:
    """firmware/standby.py: a stop on purpose (Ctrl-C) keeps the lanes' levels; at the next boot a lane that lost
    2 items meanwhile records an anomaly of -2 (confidence 40) and the unchanged lane nothing; the record is used
    once, and a boot after a stop that kept nothing (a power cut) compares nothing."""
    first = runtime.call(M, "standby_run", _base(runtime, tmp_path, "a"), None, 500.0, True, timeout_s=T)
    assert first["events"] == [] and first["levels_file"]
    second = runtime.call(M, "standby_run", _base(runtime, tmp_path, "b"), first["files"], 300.0, False, timeout_s=T)
    ((seq, lane, kind, count, delta, confidence),) = second["events"]
    assert (lane, kind, count, confidence) == (0, KIND_ANOMALY, -2, 40) and abs(delta + 2000) < 60, second["events"]
    assert second["counts"] == [-2, 0] and not second["levels_file"]
    third = runtime.call(M, "standby_run", _base(runtime, tmp_path, "c"), second["files"], 100.0, False, timeout_s=T)
    assert [e[0] for e in third["events"]] in ([], [seq])  # at most the same event again (acks are not journalled)
    # 60 g more than the stop left is no whole number of 100 g items: the weight only, count 0.
    odd = runtime.call(M, "standby_run", _base(runtime, tmp_path, "d"), first["files"], 560.0, False, timeout_s=T)
    ((_seq, lane, kind, count, delta, confidence),) = odd["events"]
    assert (lane, kind, count, confidence) == (0, KIND_ANOMALY, 0, 40) and abs(delta - 600) < 60, odd["events"]


def test_set_count_records_count_events_that_survive_a_reboot(runtime: Any, tmp_path: Any) -> None:
    base = _base(runtime, tmp_path)
    r = runtime.call(M, "set_count", base, timeout_s=T)
    res = {count: r["results"][str(seq)] for seq, count, _t in r["sent"]}
    # The node had counted nothing on lane 0 yet; staff counted 12: one count event of +12, answered with its
    # event_seq.
    assert r["events"][0] == [1, 0, KIND_COUNT, 12, 0, 100]
    assert res[12] == [STATUS_OK, 1]
    assert res[5] == [STATUS_BUSY, 0]  # the lane was moving: nothing recorded
    assert r["events"][1][1:4] == [0, KIND_PICK, -2]  # the pick itself
    assert res[10] == [STATUS_OK, 0]  # 12 - 2 agrees with the count: no event
    # 40000 on lane 1 takes two events (at most 32767 units each), summing to the count.
    assert [e[1:4] for e in r["events"][2:]] == [[1, KIND_COUNT, 32767], [1, KIND_COUNT, 40000 - 32767]]
    assert res[40000] == [STATUS_OK, 4]
    assert res[1] == [STATUS_BAD_ARGS, 0]  # no lane 9
    assert len(r["events"]) == 4 and r["outbox"] == 0
    # The lane states carry the counts, their totals, and last_event covering the count events.
    assert r["last_state"]["0"] == [10, 2, 12, 2]
    assert r["last_state"]["1"] == [40000, 0, 40000, 4]
    # After a reboot the counters are what was counted.
    again = runtime.call(M, "set_count", _base(runtime, tmp_path, "again"), r["files"], timeout_s=T)
    assert again["last_state"]["0"][0] == 10 and again["last_state"]["1"][0] == 40000
    # Acks are not journalled one by one: the rebooted node may send the same events again (same event_seq,
    # which the hub dedupes), never new ones.
    assert {e[0] for e in again["events"]} <= {1, 2, 3, 4}


def test_set_count_without_room_in_the_outbox_records_nothing(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "set_count_no_room", _base(runtime, tmp_path), timeout_s=T)
    assert r["first"] == 1 and r["seen"] == [1]
    assert r["busy"] == r["no_room"] and r["depth"] == 2 and r["count"] == 5


def test_forged_replayed_and_garbled_downlink_is_dropped_and_counted(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "forged", _base(runtime, tmp_path), timeout_s=T)
    # Bad tag, another node's frame, another boot's frame, a replay, bad base64, an overlong line: six rejects.
    assert r["rx_rejected"] == 6
    # Only the two genuine commands were answered (the replayed copy of the first was not).
    assert [x[1] for x in r["results"]] == [STATUS_OK, STATUS_OK]
    assert [x[0] for x in r["results"]] == [2, r["good_seq"]]
    assert r["rx_frames"] == 3  # the hello's ack and the two commands
    assert r["ignored"] == 2  # console typing and noise without '!': not frames, not counted as rejects


def test_a_missing_cell_is_a_sensor_fault_not_a_hang(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "unwired_cell", _base(runtime, tmp_path), timeout_s=T)
    assert r["flags"][0] & FLAG_SENSOR_FAULT
    assert r["flags"][0] & FLAG_UNCALIBRATED  # nothing provisioned in this case
    assert not r["flags"][1] & (FLAG_SENSOR_FAULT | FLAG_UNSTABLE)
    assert r["faults"] == 1
    assert 230 <= r["samples"][1] <= 240  # the healthy lane keeps its 80 samples/s
    assert r["hellos"] == 1
    assert r["count_answer"] == [[STATUS_BUSY, 0]] and r["events"] == 0  # no count on a faulted lane


def _cfg(**over: Any) -> str:
    d: dict[str, Any] = {
        "node_id": 3,
        "key": "00" * 16,
        "lanes": [{"cells": [[4, 5]], "rate_sps": 80}, {"cells": [[6, 7], [8, 9]], "rate_sps": 10}],
    }
    d.update(over)
    return json.dumps(d)


BAD_CONFIGS = [
    ("{not json", "not valid JSON"),
    (_cfg(node_id=0), "node_id: 0 is outside 1..4294967295"),
    (_cfg(node_id=True), "node_id: must be an integer"),
    (_cfg(key="abc"), "key: must be 32..128 hex characters"),
    (_cfg(key="zz" * 16), "key: must be hex"),
    (_cfg(lanes=[]), "lanes: must be a list of 1..32 lanes"),
    (_cfg(lanes=[{"cells": [[4, 5]], "rate_sps": 20}]), "lanes[0].rate_sps: must be 10 or 80"),
    (_cfg(lanes=[{"cells": [[4, 5]]}, {"cells": [[6, 4]]}]), "lanes[1].cells[0]: pin 4 is already used by lanes[0]"),
    (_cfg(lanes=[{"cells": [[4, 70]]}]), "lanes[0].cells[0][1] (dout): 70 is outside 0..63"),
    (_cfg(lanes=[{"cells": [4, 5]}]), "lanes[0].cells[0]: must be [sck_pin, dout_pin]"),
    (_cfg(lanes=[{"cells": [[4, 5]], "rate": 80}]), "lanes[0].rate: unknown field"),
    (_cfg(intervals={"health_s": 1}), "intervals.health_s: 1 is outside 5..3600"),
    (_cfg(outbox=3), "outbox: 3 is outside 4..1024"),
    (_cfg(lane_count=2), "lane_count: unknown field"),
    (json.dumps({"node_id": 1, "key": "00" * 16}), "lanes: missing"),
]


def test_a_bad_config_is_named_and_nothing_runs(runtime: Any, tmp_path: Any) -> None:
    docs = [text for text, _ in BAD_CONFIGS] + [_cfg()]
    r = runtime.call(M, "bad_configs", _base(runtime, tmp_path), docs, timeout_s=T)
    for (msg, started), (_text, expected) in zip(r[:-1], BAD_CONFIGS, strict=True):
        assert expected in msg, (msg, expected)
        assert msg.startswith(_base(runtime, tmp_path) + "/config.json: ")
        assert started is False
    assert r[-1] == ["", True]


def test_bad_config_is_reported_on_the_console(tmp_path: Any, capsys: Any) -> None:
    from firmware import node

    (tmp_path / "config.json").write_text(_cfg(key="abc"))
    from tools.emulation.board import EmulatedBoard

    board = EmulatedBoard({}, node_cases.PipeIO(), lambda: 0, str(tmp_path))  # type: ignore[no-untyped-call]
    assert node.boot(board) is None
    out = capsys.readouterr().out
    assert "config error" in out and "key: must be 32..128 hex characters" in out and "not started" in out


def test_config_round_trip_and_layout_hash() -> None:
    text = config_mod.dumps(9, bytes(range(20)), [([(4, 5)], 80), ([(6, 7), (8, 9)], 10)], led="LED")
    cfg = config_mod.parse(json.loads(text))
    assert (cfg.node_id, cfg.key, [lane.rate_sps for lane in cfg.lanes]) == (9, bytes(range(20)), [80, 10])
    assert (cfg.lane_state_s, cfg.health_s, cfg.retransmit_ms, cfg.led, cfg.watchdog_s) == (10, 30, 2000, "LED", 0)
    small = config_mod.parse(json.loads(config_mod.dumps(9, bytes(16), [([(4, 5)], 80)], outbox=8)))
    assert cfg.outbox == 256 and small.outbox == 8  # records kept for the hub (firmware/outbox.py)
    rewired = config_mod.parse(json.loads(config_mod.dumps(9, bytes(16), [([(4, 5)], 80), ([(6, 7), (9, 8)], 10)])))
    assert cfg.layout_hash() != rewired.layout_hash()  # a swapped pair of wires is a different layout


SAMPLER_ALLOC = """
import gc
import micropython
from tests.portable import node_cases as nc
from tools.emulation.board import EmulatedBoard
from tools.emulation.provision import provision
from firmware import node as node_mod

def values(load_g, n):
    return [8000 + load_g * 420 + ((i * 7919) % 841) - 420 for i in range(n)]

plan = nc.plan_two_lanes([])
plan["cells"][0]["values"] = values(500, 97)
plan["cells"][1]["values"] = values(300, 89)
provision("/a", nc.config_text(), plan)
if STOPPED:  # the node was stopped by Ctrl-C with lane 0 settled at 500 g and lane 1 moving (firmware/standby.py)
    import struct
    from firmware.persist import Record
    from firmware.standby import UNKNOWN
    Record("/a/state/levels").save(struct.pack(">iiii", 5000, nc.CPG * 10, UNKNOWN, nc.CPG * 10))
board = EmulatedBoard(plan, nc.PipeIO(), None, "/a")
node = node_mod.boot(board)
adv = board.clock.advance
ticks = board.clock.ticks_ms
sample = node.sample_once

def window(n):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    events = 0
    i = 0
    while i < n:
        adv(2500)
        events += sample(ticks())
        i += 1
    b = gc.mem_alloc()
    gc.enable()
    return b - a, events

for _ in range(1600):  # warm-up: the detectors learn the noise and settle
    adv(2500)
    sample(ticks())
delta, events = window(2000)
micropython.heap_lock()
locked = True
try:
    for _ in range(400):
        adv(2500)
        sample(ticks())
except MemoryError:
    locked = False
micropython.heap_unlock()
result = {"delta": delta, "events": events, "locked": locked, "stable": [l.det.stable for l in node.shelf.lanes],
          "samples": [l.samples for l in node.shelf.lanes]}
"""


@pytest.mark.parametrize("stopped", [False, True], ids=["boot", "boot-after-a-stop"])
def test_sampler_allocates_nothing_per_sample(mpy: Any, stopped: bool) -> None:
    """Also after a stop that kept the levels of only some lanes: the comparison is once per known lane."""
    r = mpy.exec(f"STOPPED = {stopped}\n" + SAMPLER_ALLOC, timeout_s=T)
    assert r["stable"] == [True, True] and r["events"] == 0, r
    assert r["samples"][0] >= 1600 * 2500 // 12500, r  # only ready cells were read: one sample per conversion
    assert r["delta"] == 0, r
    assert r["locked"] is True, r


def test_downlink_lines_never_contain_control_bytes() -> None:
    sender = DownlinkSender(5, Key(bytes(range(16))))
    sender.new_session(0xFFFFFFFF)
    msgs = [Ack(0), Ack(0xFFFFFFFF), Tare(31), Calibrate(31, 1000000), SetLane(31, 1000000, 1000, "~" * 32)]
    msgs += [Identify(255), SetConfig(255, -(2**31)), SetConfig(1, 2**31 - 1), RequestState(255)]
    msgs += [SetLane(0, 1, 0, " ")]
    for _ in range(200):
        for m in msgs:
            line = encode_line(sender.encode(m))
            assert line.endswith(b"\n")
            assert all(0x20 <= b < 0x7F for b in line[:-1]), line


def test_the_node_runs_on_any_link_it_is_given(runtime: Any, tmp_path: Any) -> None:
    """A link that carries whole frames (as BLE will) gets the same session, outbox, retransmission and acks:
    what goes up is message for message, seq for seq, what the serial link carried."""
    serial = runtime.call(M, "events_flow", _base(runtime, tmp_path, "serial"), timeout_s=T)
    framed = runtime.call(M, "events_flow", _base(runtime, tmp_path, "framed"), True, timeout_s=T)
    for r in (serial, framed):  # free heap is whatever the interpreter has left, not the node's doing
        for h in [r["health_now"], *r["health_frames"]]:
            h.pop("free_heap")
    assert framed == serial
    assert len(framed["events"]) == 4


def test_replay_rules_hold_on_any_link(runtime: Any, tmp_path: Any) -> None:
    r = runtime.call(M, "framed_replay", _base(runtime, tmp_path), timeout_s=T)
    assert [x[0] for x in r["results"]] == [2, r["good_seq"]]  # the replay and the forgery were not answered
    assert [x[1] for x in r["results"]] == [STATUS_OK, STATUS_OK]
    assert r["rx_rejected"] == 3  # replay + bad tag (session checks) + what the link dropped
    assert r["rx_frames"] == 3  # the hello's ack and the two commands
    assert r["tx_frames"] == r["uplink_frames"]


def test_a_trial_ends_only_for_the_image_on_trial(tmp_path: Any) -> None:
    """firmware/trial.py: the marks go when the image they name has proven itself, not when the loader fell back
    to another image that did."""
    from firmware import trial

    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "trial").write_text("0.2.0-aaaaaaaaaa\n")
    (fw / "tries").write_text("2")
    assert trial.confirm("0.1.0-bbbbbbbbbb", str(tmp_path)) is False
    assert trial.confirm(None, str(tmp_path)) is False
    assert (fw / "trial").exists() and (fw / "tries").exists()
    assert trial.confirm("0.2.0-aaaaaaaaaa", str(tmp_path)) is True
    assert not (fw / "trial").exists() and not (fw / "tries").exists()


def test_an_image_that_runs_ten_minutes_has_proven_itself_without_a_hub(tmp_path: Any) -> None:
    """firmware/node.py on_proven: the hub's answer, or PROVEN_MS of running without one."""
    proven = node_cases.proven_after(str(tmp_path / "flash"))
    assert proven == [None, 600], proven  # not at 9 minutes; once, at 10
