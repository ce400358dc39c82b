"""The hub service end to end: fake nodes on real ptys -> serial links -> ingest -> a real SQLite ledger -> acks."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from hub.ledger import LaneReading, LedgerService, SensorEvent, Sku
from hub.ledger.models import InvalidArgument, Reason
from hub.link.booking import SensorBooking
from hub.link.commands import CommandTimeout
from hub.link.session import RESERVE_BLOCK
from hub.schema import MIGRATIONS
from hub.service import HubService
from hub.service.control import HubRunning
from shared_protocol.auth import Key
from shared_protocol.frame import UplinkSender
from shared_protocol.messages import (
    KIND_PICK,
    STATUS_BUSY,
    STATUS_OK,
    Ack,
    Calibrate,
    Event,
    Health,
    Identify,
    RequestState,
    SetCount,
    SetLane,
    Tare,
)
from shared_protocol.serial_framing import encode_serial
from tests.hub_support import KEY2, FakeNode, db_rows, eventually, settled, start_hub


@pytest.fixture
async def hub(config: Path) -> AsyncIterator[HubService]:
    service = await start_hub(config)
    yield service
    await service.stop()


def movements(hub_or_db: HubService | Path, node_id: int = 1) -> list[tuple[Any, ...]]:
    db = hub_or_db.config.database if isinstance(hub_or_db, HubService) else hub_or_db
    return db_rows(
        db,
        "SELECT event_seq, qty, reason, ts_ms, note, source_ref FROM movements WHERE node_id = ? ORDER BY id",
        (node_id,),
    )


async def handshake(node: FakeNode, expect_ack: int = 0) -> None:
    node.hello()
    await node.wait_for(lambda: expect_ack in node.acks)


async def seed(db: Path, fn: Callable[[LedgerService], Awaitable[None]]) -> None:
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await fn(ledger)


# ---------------------------------------------------------------------------------------------- handshake


async def test_hello_is_answered_with_the_ledgers_mark_then_lanes_are_pushed_and_counters_booked(
    config: Path, node: FakeNode, tmp_path: Path
) -> None:
    db = tmp_path / "hub.db"

    async def setup(ledger: LedgerService) -> None:
        await ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
        await ledger.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
        for seq in (1, 2, 3, 5):  # 4 is missing: the contiguous mark is 3
            await ledger.submit(SensorEvent(1, seq, 0, KIND_PICK, -1, -3500, 90, 1_700_000_000_000))

    await seed(db, setup)
    # The node has counted those events (and 4) already, and lane 2 holds 6 units it counted before the hub knew.
    for _ in range(5):
        node.make_event(0, -1)
    node.counters[2].count = 6
    node.counters[2].added = 6
    node.boot = 7
    node.reboot(7)
    service = await start_hub(config)
    try:
        node.hello()
        await node.wait_for(lambda: node.acks)
        assert node.acks[0] == 3  # the highest contiguous event_seq in the ledger
        assert node.received[0].seq == 1  # first frame of the new downlink session
        set_lane = await node.wait_for(lambda: node.messages(SetLane))
        assert set_lane == [SetLane(0, 3500, 20, "COLA")]
        await node.wait_for(lambda: node.messages(RequestState))
        # lane 2's counters disagree with the (empty) ledger: the first report books a sensor gap
        await eventually(lambda: service.ingest and service.ingest.totals().gaps >= 1, what="gap")
        await asyncio.sleep(0.1)
        gaps = db_rows(db, "SELECT qty, location FROM movements WHERE reason = 'sensor_gap'")
        assert gaps == [(6, "sensor:node1-lane2")]  # lane 0 (events up to 5, 4 not received) is compared later
        state = db_rows(db, "SELECT downlink_session, downlink_seq, fw_version FROM nodes WHERE node_id = 1")
        assert state == [(7, RESERVE_BLOCK, "1.2.3")]
        # the node retransmits 4: now the mark passes 5 and lane 0's counters agree with the ledger
        ev4 = Event(4, 0, KIND_PICK, -1, -3500, 97, 100)
        node.send(ev4)
        await node.wait_ack(5)
    finally:
        await service.stop()


# ------------------------------------------------------------------------------------------ exactly once


async def test_events_are_applied_once_and_retransmissions_and_replays_are_not(hub: HubService, node: FakeNode) -> None:
    await handshake(node)
    frames = [node.event(0, -1)[1] for _ in range(5)]
    await node.wait_ack(5)
    assert [m[0] for m in movements(hub)] == [1, 2, 3, 4, 5]
    # the node did not get the ack: it retransmits 3..5 in new frames (new frame seq, same event_seq)
    for ev_seq in (3, 4, 5):
        node.send(Event(ev_seq, 0, KIND_PICK, -1, -3500, 97, 900))
    await eventually(lambda: hub.ingest and hub.ingest.totals().duplicates == 3, what="duplicates")
    await node.wait_for(lambda: node.acks.count(5) >= 2)
    # an old frame replayed byte for byte is rejected before it reaches the ledger
    node.write(encode_serial(frames[1]))
    await eventually(lambda: hub.ingest and hub.ingest.rejects_by_reason(1).get("replay") == 1, what="replay")
    assert [m[0] for m in movements(hub)] == [1, 2, 3, 4, 5]
    assert all(m[1] == -1 and m[2] == Reason.SENSOR_PICK for m in movements(hub))
    status = hub.status()["nodes"][0]
    assert (status["applied"], status["duplicates"], status["contiguous_event_seq"]) == (5, 3, 5)


async def test_health_is_answered_with_the_mark_so_an_idle_node_keeps_its_session(
    hub: HubService, node: FakeNode
) -> None:
    await handshake(node)
    node.event(0, -1)
    await node.wait_ack(1)
    before = len(node.acks)
    node.health(outbox_first=0)
    await node.wait_for(lambda: len(node.acks) > before)
    assert node.acks[-1] == 1
    status = hub.status()["nodes"][0]
    assert status["health"]["outbox_first"] == 0 and status["health"]["sample_rate_chz"] == 8000


async def test_event_time_is_arrival_minus_age_and_unknown_age_is_marked(hub: HubService, node: FakeNode) -> None:
    await handshake(node)
    before = time.time_ns() // 1_000_000
    node.event(0, -1, age_ms=60_000)
    node.event(0, -1, age_ms=0xFFFFFFFF)
    await node.wait_ack(2)
    after = time.time_ns() // 1_000_000
    (_, _, _, ts1, note1, _), (_, _, _, ts2, note2, _) = movements(hub)
    assert before - 60_000 <= ts1 <= after - 60_000 and note1 is None
    assert before <= ts2 <= after and note2 is not None and "age unknown" in note2


async def test_no_ack_before_commit_and_none_without_it(hub: HubService, node: FakeNode) -> None:
    await handshake(node)
    ledger = hub.ledger
    assert ledger is not None
    original = ledger._commit
    gate = asyncio.Event()

    async def slow_commit() -> None:
        await gate.wait()
        await original()

    ledger._commit = slow_commit  # type: ignore[method-assign]
    node.event(0, -1)
    await asyncio.sleep(0.3)
    assert node.acks == [0]  # only the hello's
    assert movements(hub) == []  # and nothing is visible: the transaction is open, not committed
    gate.set()
    await node.wait_ack(1)
    assert len(movements(hub)) == 1

    async def failing_commit() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    ledger._commit = failing_commit  # type: ignore[method-assign]
    ev, _ = node.event(0, -1)
    await eventually(lambda: hub.ingest and hub.ingest.totals().failed == 1, what="failure")
    await asyncio.sleep(0.2)
    assert max(node.acks) == 1 and len(movements(hub)) == 1
    ledger._commit = original  # type: ignore[method-assign]
    node.send(ev)  # the node retransmits what was not acknowledged
    await node.wait_ack(2)
    assert [m[0] for m in movements(hub)] == [1, 2]


# ------------------------------------------------------------------------------------------- rejections


async def test_forged_replayed_unknown_and_garbage_are_never_applied_and_are_counted(
    hub: HubService, node: FakeNode
) -> None:
    await handshake(node)
    forger = UplinkSender(1, Key(b"\xee" * 16), lambda: 1000)
    node.write(encode_serial(forger.encode(Event(1, 0, KIND_PICK, -9, -9, 99, 0))))  # wrong key
    good = bytearray(node.frame(Event(1, 0, KIND_PICK, -1, -3500, 97, 10)))
    good[17] ^= 0x01  # count_delta changed in transit / by an attacker
    node.write(encode_serial(bytes(good)))
    stranger = UplinkSender(99, Key(KEY2), lambda: 1)
    node.write(encode_serial(stranger.encode(Event(1, 0, KIND_PICK, -1, -3500, 97, 10))))
    # console output between frames: a traceback, line noise, an over-long run, stray delimiters
    node.write(b'Traceback (most recent call last):\r\n  File "main.py", line 3\r\nMemoryError\r\n')
    node.write(bytes(range(1, 256)) * 3 + b"\x00\x00\x00")
    node.write(b"\x00\x05\x01\x02\x00")  # a COBS block that runs past its chunk
    node.event(0, -1)
    await node.wait_ack(1)
    status = hub.status()
    n1 = status["nodes"][0]
    assert n1["forged_frames"] == 2 and n1["rejected"] == {"bad_tag": 2}
    assert status["totals"]["rejected_unknown_node"] == {"unknown_node": 1}
    assert status["links"][0]["garbage_chunks"] >= 2
    assert [(m[0], m[1]) for m in movements(hub)] == [(1, -1)]
    assert movements(hub, 99) == []


# ------------------------------------------------------------------------------- unplug, reboot, restart


async def test_unplug_and_replug_reconnects_and_continues(hub: HubService, node: FakeNode) -> None:
    await handshake(node)
    node.event(0, -1)
    await node.wait_ack(1)
    node.unplug()
    await eventually(lambda: not hub.links[0].connected, what="disconnect")
    assert hub.status()["nodes"][0]["up"] is False
    node.make_event(0, -1)  # counted while unplugged; the node keeps it in its outbox
    node.plug()
    await eventually(lambda: hub.links[0].connected, what="reconnect")
    node.send(Event(2, 0, KIND_PICK, -1, -3500, 97, 3000))  # retransmitted after the replug, same boot
    node.event(0, -1)
    await node.wait_ack(3)
    assert [m[0] for m in movements(hub)] == [1, 2, 3]
    assert hub.links[0].stats.opens == 2 and hub.links[0].stats.disconnects == 1


async def test_a_device_missing_at_start_is_waited_for(config: Path, node: FakeNode) -> None:
    node.unplug()
    service = await start_hub(config)
    try:
        await asyncio.sleep(0.2)
        assert not service.links[0].connected and service.links[0].stats.opens == 0
        node.plug()
        await eventually(lambda: service.links[0].connected, what="the port opened")
        await handshake(node)
        node.event(0, -1)
        await node.wait_ack(1)
    finally:
        await service.stop()


async def test_node_reboot_starts_a_new_downlink_session(hub: HubService, node: FakeNode) -> None:
    await handshake(node)
    node.event(0, -1)
    await node.wait_ack(1)
    node.answer_commands = False
    pending = asyncio.ensure_future(hub.command(1, Identify(30), timeout_s=5))
    await node.wait_for(lambda: node.messages(Identify))
    mark = len(node.received)
    node.reboot(2)
    node.hello()  # uplink seq continues (persisted on the node), boot count is new
    first = await node.wait_for(lambda: [f for f in node.received[mark:] if isinstance(f.message, Ack)])
    assert first[0].message == Ack(1) and first[0].seq == 1  # new session: seq 1, authenticated under boot 2
    with pytest.raises(Exception, match="rebooted"):
        await pending
    node.event(0, -1)
    await node.wait_ack(2)
    state = db_rows(hub.config.database, "SELECT downlink_session FROM nodes WHERE node_id = 1")
    assert state == [(2,)]


async def test_hub_restart_rejects_old_frames_accepts_new_ones_and_keeps_the_downlink(
    config: Path, node: FakeNode
) -> None:
    service = await start_hub(config)
    await handshake(node)
    _, old_frame = node.event(0, -1)
    await node.wait_ack(1)
    await service.stop()

    service = await start_hub(config)
    try:
        node.write(encode_serial(old_frame))  # captured on the wire, replayed to the new hub
        await eventually(lambda: service.ingest and service.ingest.rejects_by_reason(1).get("replay"), what="replay")
        # no hello from the node (it did not reboot): the restored session and seq still reach it
        node.event(0, -1)
        await node.wait_ack(2)
        assert node.received[-1].seq > RESERVE_BLOCK  # resumed above the stored reservation
        node.send(node.lane_state(0))  # agrees with the ledger as loaded at start: no gap
        await eventually(lambda: service.ingest and service.ingest.nodes[1].lane_states, what="lane state")
        node.hello()  # a repeated hello of the same boot
        await node.wait_for(lambda: node.acks.count(2) >= 2)
        node.reboot(2)
        node.hello()
        await node.wait_for(lambda: node.acks.count(2) >= 3)
        assert [m[0] for m in movements(service)] == [1, 2]
        assert service.ingest is not None and service.ingest.totals().gaps == 0
    finally:
        await service.stop()


async def test_stop_flushes_the_ledger_and_acks_what_committed(config: Path, node: FakeNode) -> None:
    service = await start_hub(config)
    await handshake(node)
    for _ in range(50):
        node.event(1, +1)
    await eventually(lambda: service.ingest and service.ingest.totals().events >= 50, what="events read")
    await service.stop()
    assert len(movements(config.parent / "hub.db")) == 50
    await node.wait_ack(50, timeout=10)


# --------------------------------------------------------------------------------------------- commands


async def test_commands_round_trip_and_are_recorded(hub: HubService, node: FakeNode, tmp_path: Path) -> None:
    await handshake(node)
    node.answers["tare"] = (STATUS_OK, 8423)
    outcome = await hub.command(1, Tare(2), actor="alice")
    assert (outcome.command, outcome.args, outcome.status_name, outcome.value) == ("tare", {"lane": 2}, "ok", 8423)
    node.answers["calibrate"] = (4, 0)  # STATUS_FAILED
    failed = await hub.command(1, Calibrate(1, 5000))
    assert failed.status_name == "failed" and not failed.ok
    node.answer_commands = False
    with pytest.raises(CommandTimeout):
        await hub.command(1, Identify(3), timeout_s=0.2)

    def audited() -> list[tuple[str, str, dict[str, Any]]]:
        audit = db_rows(tmp_path / "hub.db", "SELECT actor, action, details FROM audit ORDER BY id")
        return [(a, act, json.loads(d)) for a, act, d in audit]

    def recorded(entries: list[tuple[str, str, dict[str, Any]]]) -> bool:
        actions = {act if act != "command" else d["command"] for _, act, d in entries}
        return {"tare", "command_timeout"} <= actions

    # the answers and the timeout are audited in the background (off the frame path): wait for both
    await eventually(lambda: recorded(audited()), what="the tare and the timeout audited")
    entries = audited()
    tare = [d for a, act, d in entries if act == "command" and d["command"] == "tare"]
    assert tare and tare[0]["status"] == "ok" and tare[0]["value"] == 8423 and tare[0]["requested_by"] == "alice"
    assert any(act == "command_timeout" and d["command"] == "identify" for _, act, d in entries)


async def test_command_for_a_node_not_yet_connected_waits_for_its_hello(hub: HubService, node: FakeNode) -> None:
    pending = asyncio.ensure_future(hub.command(1, Identify(5), timeout_s=5))
    await asyncio.sleep(0.2)
    assert not pending.done() and node.received == []
    node.hello()
    outcome = await pending
    assert outcome.ok and node.messages(Identify) == [Identify(5)]


async def test_hub_command_cli_over_the_control_socket(
    hub: HubService, node: FakeNode, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    assert hub.ledger is not None
    await hub.ledger.add_sku(Sku("TEA", "Tea 20 bags", 420, 15), actor="setup")
    await handshake(node)
    node.answers["identify"] = (STATUS_OK, 0)
    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "1", "identify", "5"])
    assert rc == 0 and "node 1: identify seconds 5: ok" in capsys.readouterr().out
    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "1", "set-lane", "3", "TEA"])
    assert rc == 0
    assert node.messages(SetLane)[-1] == SetLane(3, 420, 15, "TEA")
    lanes = db_rows(config.parent / "hub.db", "SELECT lane_index, sku FROM lanes WHERE node_id = 1")
    assert lanes == [(3, "TEA")]
    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "7", "tare", "0"])
    assert rc == 2 and "node 7 is not configured (this hub has node 1: " in capsys.readouterr().err  # bad input
    rc = await asyncio.to_thread(main, ["hub", "status", "--config", str(config)])
    status = json.loads(capsys.readouterr().out)
    assert rc == 0 and status["nodes"][0]["node_id"] == 1 and status["nodes"][0]["up"] is True


async def test_set_count_books_the_counted_quantity_not_a_sensor_gap(
    hub: HubService, node: FakeNode, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shelf installed with stock on it: the node's count event becomes the lane's opening observed stock
    (``sensor_count``), the count is a physical count of the lane's book stock (book vs counted), and the lane
    counters agree with the ledger, so no sensor gap is booked."""
    from hub.cli import main

    assert hub.ledger is not None and hub.reader is not None
    await hub.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
    await handshake(node)
    assert (await hub.set_lane(1, 0, "COLA", actor="setup")).ok
    lane_id = (await hub.reader.lanes(1))[0].lane_id
    await hub.ledger.record_receipt("COLA", 10, actor="setup", ref="r1")
    await hub.ledger.restock("COLA", lane_id, 10, actor="setup", ref="s1")  # the book says 10 on the lane

    out = await hub.set_count(1, 0, 12, actor="alice")
    assert out.command.ok and out.command.value == 1  # the node's count event
    assert node.messages(SetCount) == [SetCount(0, 12)]
    assert out.count is not None and (out.count.book_qty, out.count.counted_qty) == (10, 12)
    await node.wait_ack(1)
    node.send(node.lane_state(0))  # the counters the node reports agree: no gap
    node.event(0, -2)
    await node.wait_ack(2)
    assert [(r[0], r[1], r[2]) for r in movements(hub)] == [(1, 12, "sensor_count"), (2, -2, "sensor_pick")]
    db = config.parent / "hub.db"
    assert db_rows(db, "SELECT qty FROM balances WHERE location = ?", (f"sensor:{lane_id}",)) == [(10,)]
    assert db_rows(db, "SELECT qty FROM balances WHERE location = ?", (f"lane:{lane_id}",)) == [(12,)]
    counts = db_rows(db, "SELECT location, book_qty, counted_qty, actor, source_ref FROM physical_counts")
    assert counts[0][:4] == (f"lane:{lane_id}", 10, 12, "alice") and len(counts) == 1
    assert re.fullmatch(rf"count:node1\.lane0\.boot1\.cmd{out.command.seq}\.[0-9a-f]{{8}}", counts[0][4]), counts

    # A node that does not take the count (busy: units moving) changes nothing in the ledger.
    node.answers["set_count"] = (STATUS_BUSY, 0)
    busy = await hub.set_count(1, 0, 7, actor="alice")
    assert busy.command.status_name == "busy" and busy.count is None
    assert len(db_rows(db, "SELECT * FROM physical_counts")) == 1
    del node.answers["set_count"]
    with pytest.raises(InvalidArgument, match="lane 3 of node 1 is not in the ledger: assign a SKU first"):  # exit 2
        await hub.set_count(1, 3, 5, actor="alice")
    # A node that does not answer in time may still take the count: the error says to send it again.
    node.answer_commands = False
    with pytest.raises(CommandTimeout, match="the node may still take the count: send the same count again"):
        await hub.set_count(1, 0, 7, actor="alice", timeout_s=0.2)
    node.answer_commands = True

    # The CLI: the node's answer and the count booked, book vs counted.
    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "1", "set-count", "0", "9"])
    out_text = capsys.readouterr().out
    assert rc == 0 and f"lane {lane_id} (COLA): counted 9, book 12: adjusted -3" in out_text, out_text
    await node.wait_ack(3)
    assert db_rows(db, "SELECT qty FROM balances WHERE location = ?", (f"sensor:{lane_id}",)) == [(9,)]
    with pytest.raises(SystemExit) as refused:
        main(["hub", "command", "--config", str(config), "1", "set-count", "0", "-1"])
    assert refused.value.code == 2 and "a count is 0..1,000,000 units" in capsys.readouterr().err


async def test_hub_command_without_a_running_hub(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli import main

    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "1", "tare", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no hub is running" in err[0]


async def test_a_second_hub_on_the_same_database_refuses_to_start(hub: HubService, config: Path) -> None:
    with pytest.raises(HubRunning):
        await start_hub(config)


async def test_lane_states_become_thinned_readings_of_registered_lanes(hub: HubService, node: FakeNode) -> None:
    assert hub.ledger is not None and hub.ingest is not None
    await hub.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
    await hub.ledger.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")  # lanes 1..3 stay unknown
    await handshake(node)  # the hub requests every lane's state after the hello
    db = hub.config.database
    await eventually(lambda: db_rows(db, "SELECT lane_id, count FROM lane_readings"), what="a reading")
    node.send(node.lane_state(0))  # unchanged, within a minute: thinned away
    node.event(0, -1)
    node.send(node.lane_state(0))  # the count changed: stored
    await eventually(lambda: len(db_rows(db, "SELECT 1 FROM lane_readings")) >= 2, what="the second reading")
    await node.wait_ack(1)
    assert [r[:2] for r in db_rows(db, "SELECT count, weight_dg FROM lane_readings ORDER BY ts_ms")] == [
        (0, 0),
        (-1, -3500),
    ]
    assert db_rows(db, "SELECT DISTINCT lane_id FROM lane_readings") == [("A1",)]
    assert db_rows(db, "SELECT lane_id FROM lanes") == [("A1",)]  # the readings of unknown lanes registered none


async def test_a_reading_the_ledger_could_not_store_is_not_thinned_away() -> None:
    booking = SensorBooking(cast(LedgerService, None))
    reading = LaneReading(1, 0, 1_700_000_000_000, 3500, 1)
    assert booking.readings.keep(reading) and not booking.readings.keep(reading)
    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    fut.set_exception(sqlite3.OperationalError("disk I/O error"))
    booking.reading_done(reading, fut)
    assert booking.readings.keep(reading)  # stored next time


# --------------------------------------------------------------------------------------- outbox overflow


async def test_outbox_overflow_books_a_sensor_gap_and_acks_move_past_it(
    hub: HubService, node: FakeNode, tmp_path: Path
) -> None:
    assert hub.ledger is not None
    await hub.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
    await hub.ledger.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
    await handshake(node)
    await node.wait_for(lambda: node.messages(RequestState))
    node.event(0, -1)
    node.event(0, -1)
    await node.wait_ack(2)
    lost = [node.make_event(0, -2), node.make_event(0, -1), node.make_event(1, +3), node.make_event(0, -1)]  # 3..6
    node.event(0, -1)  # 7
    node.event(1, +1)  # 8
    await eventually(lambda: hub.ingest and hub.ingest.totals().applied >= 4, what="events 7, 8")
    await asyncio.sleep(0.1)
    assert max(node.acks) == 2  # 3..6 missing: no ack past them yet
    node.health(outbox_first=7, outbox_depth=2, dropped=4)
    await node.wait_ack(8)
    await eventually(lambda: hub.ingest and hub.ingest.totals().gaps == 2, what="both lanes' gaps")
    gaps = db_rows(
        tmp_path / "hub.db", "SELECT location, qty, note FROM movements WHERE reason = 'sensor_gap' ORDER BY location"
    )
    assert [(loc, qty) for loc, qty, _ in gaps] == [("sensor:A1", -4), ("sensor:node1-lane1", 3)]
    assert any("events 3..6" in (note or "") for _, _, note in gaps)
    observed = db_rows(tmp_path / "hub.db", "SELECT lane_id, qty FROM observed_stock WHERE lane_id = 'A1'")
    assert observed == [("A1", node.counters[0].count)]
    node.send(lost[1])  # a dropped event turning up after all is not counted twice
    await eventually(lambda: hub.ingest and hub.ingest.totals().duplicates == 1, what="duplicate")
    assert len(db_rows(tmp_path / "hub.db", "SELECT 1 FROM movements WHERE reason = 'sensor_gap'")) == 2


async def test_a_health_that_says_empty_then_a_burst_of_later_events_books_no_gap(
    hub: HubService, node: FakeNode, tmp_path: Path
) -> None:
    """Found by `smartshelf bench rfid` feeding a minute of frames at once (a BLE connection delivers such bursts): a
    health sent while the outbox was empty, then new events and their lane state, all in one read. The health's
    check ran after the events before it had committed, but took the highest ``last_event`` of lane states that
    arrived *after* it, so it declared the new events dropped by a full outbox and booked a false sensor gap."""
    assert hub.ledger is not None
    await hub.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
    await hub.ledger.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
    await handshake(node)
    await node.wait_for(lambda: node.messages(RequestState))
    node.event(0, -1)
    await node.wait_ack(1)
    burst = [node.frame(Health(60, 100_000, 8000, node.seq, 0, 0, 0, 0, 0))]  # outbox empty when it was sent
    burst += [node.frame(node.make_event(0, -1)) for _ in range(30)]  # events 2..31, then the lane's state
    burst.append(node.frame(node.lane_state(0)))
    node.write(b"".join(encode_serial(f) for f in burst))
    await node.wait_ack(31)
    await settled(hub, node)  # the burst read, and the health's and the lane state's checks run
    assert db_rows(tmp_path / "hub.db", "SELECT qty, note FROM movements WHERE reason = 'sensor_gap'") == []
    observed = db_rows(tmp_path / "hub.db", "SELECT lane_id, qty FROM observed_stock WHERE lane_id = 'A1'")
    assert observed == [("A1", node.counters[0].count)]


# ------------------------------------------------------------------------------------------ smartshelf hub run


async def test_hub_run_serves_logs_status_and_exits_0_on_sigterm(config: Path, node: FakeNode) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli",
        "hub",
        "run",
        "--config",
        str(config),
        "--status-interval",
        "0.2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []

    async def collect() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip())

    reading = asyncio.ensure_future(collect())
    try:
        # a process start (imports, the ledger's migrations): seconds on a loaded machine
        await eventually(lambda: any("connected" in line for line in lines), timeout=60, what="the port opened")
        await handshake(node)
        node.event(0, -1)
        await node.wait_ack(1)
        await eventually(
            lambda: any("status:" in line and "node 1 up" in line for line in lines), timeout=30, what="status"
        )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reading
    text = "\n".join(lines)
    assert "node 1: hello, boot 1" in text and "hub stopped" in text and "Traceback" not in text
    assert len(movements(config.parent / "hub.db")) == 1
