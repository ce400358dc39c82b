"""The sensor path: exactly-once events, contiguous marks, unassigned lanes, gaps, batching and commit rules."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.ledger import (
    AlertKind,
    AlertStatus,
    Applied,
    Duplicate,
    LedgerService,
    NodeUpdate,
    Reason,
    SensorEvent,
    SensorGap,
    Sku,
)
from hub.ledger.models import InvalidArgument, LaneReading, LedgerClosed, now_ms
from hub.ledger.sensor import ReadingThinner
from hub.schema import MIGRATIONS
from shared_protocol.messages import KIND_ANOMALY, KIND_PICK, KIND_PUT

NODE = 7


def pick(seq: int, lane: int = 0, n: int = 1, node: int = NODE) -> SensorEvent:
    return SensorEvent(node, seq, lane, KIND_PICK, -n, -3500 * n, 96, 1_700_000_000_000 + seq, uplink_seq=100 + seq)


def put(seq: int, lane: int = 0, n: int = 1, node: int = NODE) -> SensorEvent:
    return SensorEvent(node, seq, lane, KIND_PUT, n, 3500 * n, 90, 1_700_000_000_000 + seq)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS) as svc:
        await svc.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
        await svc.assign_lane(NODE, 0, "COLA", actor="setup", lane_id="A1")
        yield svc


def rows(ledger: LedgerService, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(ledger.path)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


async def test_an_event_is_applied_once_and_redelivery_is_a_duplicate(ledger: LedgerService) -> None:
    first = await ledger.submit(pick(1))
    assert isinstance(first, Applied) and first.source_ref == "node:7:ev:1"
    again = await ledger.submit(pick(1))
    assert isinstance(again, Duplicate) and again.duplicate
    async with await ledger.reader() as reader:
        page = await reader.movements(source_ref="node:7:ev:1")
        assert len(page.items) == 1
        m = page.items[0]
        assert (m.sku, m.location, m.qty, m.reason, m.actor) == ("COLA", "sensor:A1", -1, Reason.SENSOR_PICK, "node:7")
        assert (m.node_id, m.event_seq, m.weight_delta_dg, m.confidence) == (7, 1, -3500, 96)
        assert m.ts_ms == 1_700_000_000_001 and m.is_observed
        node = await reader.node(NODE)
        assert node is not None
        assert node.highest_contiguous_event_seq == 1 and node.last_uplink_seq == 101


async def test_pick_put_and_anomaly_move_observed_stock_only(ledger: LedgerService) -> None:
    await ledger.record_receipt("COLA", 10, actor="t", ref="R1")
    await ledger.submit(put(1, n=5))
    await ledger.submit(pick(2, n=2))
    anomaly = SensorEvent(NODE, 3, 0, KIND_ANOMALY, 0, -1234, 20, 1)
    assert isinstance(await ledger.submit(anomaly), Applied)
    async with await ledger.reader() as reader:
        assert [(o.lane_id, o.sku, o.qty) for o in await reader.observed_stock()] == [("A1", "COLA", 3)]
        assert await reader.book_total("COLA") == 10
        reasons = [m.reason for m in (await reader.movements(location="sensor:A1")).items]
        assert reasons == [Reason.SENSOR_PUT, Reason.SENSOR_PICK, Reason.SENSOR_ANOMALY]


async def test_contiguous_mark_follows_out_of_order_delivery(ledger: LedgerService) -> None:
    for seq in (1, 2, 4, 5):
        await ledger.submit(pick(seq))
    async with await ledger.reader() as reader:
        node = await reader.node(NODE)
        assert node is not None and node.highest_contiguous_event_seq == 2
        assert isinstance(await ledger.submit(pick(4)), Duplicate)
        assert isinstance(await ledger.submit(pick(3)), Applied)
        node = await reader.node(NODE)
        assert node is not None and node.highest_contiguous_event_seq == 5
        assert await reader.movement_count() == 5


async def test_the_same_event_twice_in_one_batch_is_applied_once(ledger: LedgerService) -> None:
    futures = [ledger.submit(pick(s)) for s in (1, 2, 1, 3, 2)]
    results = await asyncio.gather(*futures)
    assert [r.duplicate for r in results] == [False, False, True, False, True]
    assert ledger.stats.sensor_batches == 1
    assert rows(ledger, "SELECT count(*) FROM movements") == [(3,)]


async def test_a_batch_numbers_movements_lane_by_lane_and_a_repeated_gap_names_its_movement(
    ledger: LedgerService,
) -> None:
    await ledger.assign_lane(NODE, 1, "COLA", actor="setup", lane_id="B1")
    gap = SensorGap(NODE, 0, -2, "g1", 1_700_000_000_050, note="lost")
    items = [pick(1, lane=1), gap, pick(2, lane=0), gap, put(3, lane=1), pick(4, lane=5)]
    futures = [ledger.submit(it) for it in items]
    results = await asyncio.gather(*futures)
    assert ledger.stats.sensor_batches == 1
    assert [type(r) for r in results] == [Applied, Applied, Applied, Duplicate, Applied, Applied]
    ids = [r.movement_ids for r in results]
    # lane B1 first (its first item came first), then A1, then the lane registered for index 5: consecutive per lane
    assert [ids[0], ids[4], ids[1], ids[2], ids[5]] == [(1,), (2,), (3,), (4,), (5,)]
    assert ids[3] == ids[1]  # the gap again: a duplicate of the movement the batch booked for it
    stored = rows(
        ledger,
        "SELECT id, ts_ms, sku, location, qty, reason, source_ref, actor, note, node_id, event_seq, weight_delta_dg,"
        " confidence, leg, reverses_id, recorded_ms = (SELECT min(recorded_ms) FROM movements) FROM movements"
        " ORDER BY id",
    )
    t0 = 1_700_000_000_000
    assert stored == [
        (1, t0 + 1, "COLA", "sensor:B1", -1, "sensor_pick", "node:7:ev:1", "node:7", None, 7, 1, -3500, 96, 0, None, 1),
        (2, t0 + 3, "COLA", "sensor:B1", 1, "sensor_put", "node:7:ev:3", "node:7", None, 7, 3, 3500, 90, 0, None, 1),
        (3, t0 + 50, "COLA", "sensor:A1", -2, "sensor_gap", "node:7:gap:g1", "node:7", "lost", 7, None, None, None, 0,
         None, 1),
        (4, t0 + 2, "COLA", "sensor:A1", -1, "sensor_pick", "node:7:ev:2", "node:7", None, 7, 2, -3500, 96, 0, None, 1),
        (5, t0 + 4, None, "sensor:node7-lane5", -1, "sensor_pick", "node:7:ev:4", "node:7", None, 7, 4, -3500, 96, 0,
         None, 1),
    ]  # fmt: skip
    spans = rows(ledger, "SELECT location, first_id, last_id, min_ts, max_ts, sku FROM sensor_spans ORDER BY first_id")
    assert spans == [
        ("sensor:B1", 1, 2, t0 + 1, t0 + 3, "COLA"),
        ("sensor:A1", 3, 4, t0 + 2, t0 + 50, "COLA"),
        ("sensor:node7-lane5", 5, 5, t0 + 4, t0 + 4, None),
    ]


async def test_marks_survive_a_restart(ledger: LedgerService) -> None:
    await asyncio.gather(*(ledger.submit(pick(s)) for s in (1, 2, 3, 5)))
    await ledger.submit(NodeUpdate(NODE, uplink_seq=900, fw_version="1.2.3", downlink_session=4, downlink_seq=17))
    await ledger.close()
    async with LedgerService(ledger.path, migrations=MIGRATIONS) as again:
        assert isinstance(await again.submit(pick(5)), Duplicate)
        assert isinstance(await again.submit(pick(2)), Duplicate)
        assert isinstance(await again.submit(pick(4)), Applied)
        async with await again.reader() as reader:
            node = await reader.node(NODE)
            assert node is not None
            assert node.highest_contiguous_event_seq == 5
            assert (node.last_uplink_seq, node.fw_version) == (900, "1.2.3")
            assert (node.downlink_session, node.downlink_seq) == (4, 17)


async def test_node_updates_keep_sequence_numbers_monotonic(ledger: LedgerService) -> None:
    await ledger.update_node(NodeUpdate(NODE, uplink_seq=50, downlink_session=2, downlink_seq=10))
    await ledger.update_node(NodeUpdate(NODE, uplink_seq=40, downlink_seq=5))  # stale values never lower the marks
    async with await ledger.reader() as reader:
        node = await reader.node(NODE)
        assert node is not None and (node.last_uplink_seq, node.downlink_session, node.downlink_seq) == (50, 2, 10)
        await ledger.update_node(NodeUpdate(NODE, downlink_session=3, downlink_seq=1))  # new boot: new session
        node = await reader.node(NODE)
        assert node is not None and (node.downlink_session, node.downlink_seq) == (3, 1)


async def test_events_of_an_unknown_lane_are_kept_unassigned_with_one_alert(ledger: LedgerService) -> None:
    results = await asyncio.gather(ledger.submit(pick(1, lane=3)), ledger.submit(pick(2, lane=3)))
    assert all(isinstance(r, Applied) for r in results)
    await ledger.submit(pick(3, lane=3))
    async with await ledger.reader() as reader:
        lanes = {lane.lane_index: lane for lane in await reader.lanes(NODE)}
        assert lanes[3].lane_id == "node7-lane3" and lanes[3].sku is None
        unassigned = (await reader.movements(location="sensor:node7-lane3")).items
        assert [m.sku for m in unassigned] == [None, None, None]
        assert await reader.observed_stock() == []  # counts towards no SKU
        node = await reader.node(NODE)
        assert node is not None and node.highest_contiguous_event_seq == 3  # acked: the outbox can drain
        alerts = await reader.alerts(kind=AlertKind.UNASSIGNED_LANE)
        assert len(alerts) == 1 and alerts[0].cause_key == "lane:node7-lane3"
        assert alerts[0].evidence == {"lane_id": "node7-lane3", "node_id": 7, "lane_index": 3}

        await ledger.assign_lane(NODE, 3, "COLA", actor="manager")  # the 3 units picked before become COLA's
        await ledger.submit(pick(4, lane=3))
        assert [(o.lane_id, o.qty) for o in await reader.observed_stock(sku="COLA")] == [("node7-lane3", -4)]
        moved = (await reader.movements(location="sensor:node7-lane3", reason=Reason.LANE_ASSIGNED)).items
        assert [(m.sku, m.qty, m.node_id) for m in moved] == [(None, 3, None), ("COLA", -3, None)]
        events = (await reader.movements(location="sensor:node7-lane3", reason=Reason.SENSOR_PICK)).items
        assert [m.sku for m in events] == [None, None, None, "COLA"]  # as booked: the move is a posting of its own
        alert = await reader.alert(alerts[0].id)
        assert alert is not None and alert.status == AlertStatus.RESOLVED
        assert await reader.consistency_errors() == []


async def test_a_sensor_gap_books_the_counters_and_skips_lost_events(ledger: LedgerService) -> None:
    await asyncio.gather(*(ledger.submit(pick(s)) for s in (1, 2)))
    gap = SensorGap(NODE, 0, -4, "ev3-9:lane0", 1_700_000_000_100, skip_events_to=9, note="outbox overflow")
    applied = await ledger.apply_sensor_gap(gap)
    assert isinstance(applied, Applied) and applied.source_ref == "node:7:gap:ev3-9:lane0"
    assert isinstance(await ledger.apply_sensor_gap(gap), Duplicate)
    assert isinstance(await ledger.submit(pick(5)), Duplicate)  # inside the skipped range: already counted
    assert isinstance(await ledger.submit(pick(10)), Applied)
    async with await ledger.reader() as reader:
        node = await reader.node(NODE)
        assert node is not None and node.highest_contiguous_event_seq == 10
        gaps = (await reader.movements(reason=Reason.SENSOR_GAP)).items
        assert [(m.qty, m.location, m.note) for m in gaps] == [(-4, "sensor:A1", "outbox overflow")]
        assert [o.qty for o in await reader.observed_stock()] == [-7]


async def test_a_bad_item_fails_alone_in_its_batch(ledger: LedgerService) -> None:
    futures = [ledger.submit(pick(1)), ledger.submit(pick(2, lane=40)), ledger.submit(pick(3))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[0], Applied) and isinstance(results[2], Applied)
    assert isinstance(results[1], InvalidArgument) and "lane_index=40" in str(results[1])
    assert ledger.stats.sensor_batches == 1 and ledger.stats.failed_batches == 0


async def test_queued_events_share_one_transaction(ledger: LedgerService) -> None:
    before = ledger.stats.transactions
    results = await asyncio.gather(*(ledger.submit(pick(s)) for s in range(1, 501)))
    assert all(isinstance(r, Applied) for r in results)
    assert ledger.stats.transactions - before == 1
    assert ledger.stats.largest_batch == 500


async def test_max_batch_bounds_a_transaction(tmp_path: Path) -> None:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, max_batch=64) as ledger:
        await asyncio.gather(*(ledger.submit(pick(s)) for s in range(1, 201)))
        assert ledger.stats.sensor_batches == 4 and ledger.stats.largest_batch == 64


async def test_futures_resolve_only_after_commit(ledger: LedgerService, monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()
    committing = asyncio.Event()
    real_commit = ledger._commit

    async def slow_commit() -> None:
        committing.set()
        await release.wait()
        await real_commit()

    monkeypatch.setattr(ledger, "_commit", slow_commit)
    futures = [ledger.submit(pick(s)) for s in (1, 2, 3)]
    await committing.wait()
    await asyncio.sleep(0.05)
    assert not any(f.done() for f in futures)  # the rows are written, but not committed: no ack yet
    assert rows(ledger, "SELECT count(*) FROM movements") == [(0,)]  # other connections cannot see them
    release.set()
    assert all(isinstance(r, Applied) for r in await asyncio.gather(*futures))
    assert rows(ledger, "SELECT count(*) FROM movements") == [(3,)]


async def test_a_failing_commit_resolves_no_future_and_writes_nothing(
    ledger: LedgerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.submit(pick(1))

    async def failing_commit() -> None:
        raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(ledger, "_commit", failing_commit)
    futures = [ledger.submit(pick(s)) for s in (2, 3, 4)] + [ledger.submit(NodeUpdate(NODE, uplink_seq=999))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert ledger.stats.failed_batches == 1  # an I/O error fails the batch at once: no retries one by one
    monkeypatch.undo()
    assert rows(ledger, "SELECT event_seq FROM movements") == [(1,)]
    assert rows(ledger, "SELECT highest_contiguous_event_seq, last_uplink_seq FROM nodes") == [(1, 101)]
    # The writer is still alive, and the events apply when re-delivered.
    assert isinstance(await ledger.submit(pick(2)), Applied)


async def test_a_poisonous_event_fails_alone_and_leaves_nothing(ledger: LedgerService) -> None:
    conn = sqlite3.connect(ledger.path)
    conn.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON movements WHEN NEW.source_ref = 'node:7:ev:3'"
        " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    conn.commit()
    conn.close()
    results = await asyncio.gather(*(ledger.submit(pick(s)) for s in range(1, 6)), return_exceptions=True)
    assert isinstance(results[2], sqlite3.IntegrityError) and "injected failure" in str(results[2])
    assert [isinstance(r, Applied) for i, r in enumerate(results) if i != 2] == [True] * 4
    assert ledger.stats.failed_batches == 2  # the batch, then event 3 on its own
    assert rows(ledger, "SELECT event_seq FROM movements ORDER BY event_seq") == [(1,), (2,), (4,), (5,)]
    assert rows(ledger, "SELECT highest_contiguous_event_seq FROM nodes") == [(2,)]  # never acked past the hole


async def test_submitting_to_a_closed_service_is_refused(tmp_path: Path) -> None:
    ledger = LedgerService(tmp_path / "l.db", migrations=MIGRATIONS)
    with pytest.raises(LedgerClosed):
        ledger.submit(pick(1))
    await ledger.start()
    pending = ledger.submit(pick(1))
    await ledger.close()
    assert isinstance(pending.result(), Applied)  # close() finishes what was submitted
    with pytest.raises(LedgerClosed):
        await ledger.apply_sensor_event(NODE, 2, 0, KIND_PICK, -1, -3500, 90, 0)


async def test_checkpoints_run_beside_the_writer(tmp_path: Path) -> None:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, checkpoint_interval_s=0.01) as ledger:
        assert ledger._conn is not None
        assert list(await ledger._conn.execute_fetchall("PRAGMA wal_autocheckpoint")) == [(0,)]
        await ledger.add_sku(Sku("COLA", "Cola", 3500), actor="setup")
        for wave in range(5):
            await asyncio.gather(*(ledger.submit(pick(wave * 100 + s)) for s in range(1, 101)))
            await asyncio.sleep(0.02)
        assert ledger.stats.checkpoints > 0
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, checkpoint_interval_s=None) as ledger:
        assert ledger._conn is not None
        assert list(await ledger._conn.execute_fetchall("PRAGMA wal_autocheckpoint")) == [(1000,)]
        async with await ledger.reader() as reader:
            assert await reader.movement_count() == 500


# ------------------------------------------------------------------------------------------------ lane readings


def reading(ts: int, weight: int = 35_000, count: int = 10, lane: int = 0, flags: int = 0) -> LaneReading:
    return LaneReading(NODE, lane, ts, weight, count, flags)


def test_the_thinner_keeps_changes_and_one_reading_a_minute() -> None:
    thin = ReadingThinner(interval_ms=60_000, weight_dg=20)
    t = 1_700_000_000_000
    assert thin.keep(reading(t))  # the first of a lane
    assert not thin.keep(reading(t + 10_000))  # nothing changed
    assert not thin.keep(reading(t + 20_000, weight=35_020))  # within 2 g of the last stored one
    assert thin.keep(reading(t + 30_000, weight=35_021))  # moved more than 2 g
    assert not thin.keep(reading(t + 40_000, weight=35_001))  # compared with the stored 35_021, not the dropped one
    assert thin.keep(reading(t + 41_000, count=9, weight=35_021))  # the count changed
    assert thin.keep(reading(t + 42_000, count=9, weight=35_021, flags=1))  # the flags changed
    assert not thin.keep(reading(t + 101_999, count=9, weight=35_021, flags=1))
    assert thin.keep(reading(t + 102_000, count=9, weight=35_021, flags=1))  # a minute since the last stored one
    assert thin.keep(reading(t + 50_000, count=9, weight=35_021, flags=1))  # the clock went back: kept
    assert thin.keep(reading(t + 50_000, lane=1))  # lanes are independent
    thin.forget(NODE, 1)
    assert thin.keep(reading(t + 50_001, lane=1))


async def test_readings_are_stored_under_the_registered_lane(ledger: LedgerService) -> None:
    await asyncio.gather(ledger.submit(reading(1000, 35_000, 10)), ledger.submit(reading(2000, 31_500, 9, flags=4)))
    assert rows(ledger, "SELECT lane_id, ts_ms, weight_dg, count, flags FROM lane_readings ORDER BY ts_ms") == [
        ("A1", 1000, 35_000, 10, 0),
        ("A1", 2000, 31_500, 9, 4),
    ]
    await ledger.submit(reading(2000, 31_400, 9))  # the same lane and time again: replaced, not an error
    assert rows(ledger, "SELECT weight_dg, flags FROM lane_readings WHERE ts_ms = 2000") == [(31_400, 0)]


async def test_a_reading_of_an_unknown_lane_is_ignored_without_failing_the_batch(ledger: LedgerService) -> None:
    futures = [
        ledger.submit(pick(1)),
        ledger.submit(reading(1000, lane=5)),  # node 7 lane 5 is not registered
        ledger.submit(LaneReading(99, 0, 1000, 1, 1)),  # nor is node 99
        ledger.submit(reading(1000)),
        ledger.submit(reading(1000, lane=40)),  # invalid: fails alone
        ledger.submit(pick(2)),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[0], Applied) and isinstance(results[5], Applied)
    assert results[1:4] == [False, False, True]  # stored or not: ingest keeps the next reading of an unknown lane
    assert isinstance(results[4], InvalidArgument) and "lane_index=40" in str(results[4])
    assert ledger.stats.sensor_batches == 1 and ledger.stats.failed_batches == 0  # one transaction for all six
    assert rows(ledger, "SELECT lane_id, ts_ms FROM lane_readings") == [("A1", 1000)]
    assert rows(ledger, "SELECT lane_id FROM lanes ORDER BY lane_id") == [("A1",)]  # a reading registers no lane
    assert rows(ledger, "SELECT node_id FROM nodes ORDER BY node_id") == [(NODE,)]  # nor a node
    assert rows(ledger, "SELECT count(*) FROM alerts") == [(0,)]


async def test_a_reading_follows_a_lane_registered_earlier_in_its_batch(ledger: LedgerService) -> None:
    await asyncio.gather(ledger.submit(pick(1, lane=3)), ledger.submit(reading(1000, lane=3)))
    assert rows(ledger, "SELECT lane_id FROM lane_readings") == [("node7-lane3",)]


async def test_pruning_deletes_old_readings_in_small_transactions(ledger: LedgerService) -> None:
    await ledger.assign_lane(NODE, 1, "COLA", actor="setup", lane_id="B1")
    await ledger.assign_lane(NODE, 2, "COLA", actor="setup", lane_id="C1")
    items = [reading(ts, lane=lane) for lane in (0, 1, 2) for ts in range(1000, 1030)]
    await asyncio.gather(*(ledger.submit(r) for r in items))
    assert rows(ledger, "SELECT count(*) FROM lane_readings") == [(90,)]
    before = ledger.stats.transactions
    assert await ledger.prune_lane_readings(1020, max_rows=7) == 60  # ts 1000..1019 of each of the 3 lanes
    assert ledger.stats.transactions - before == 9  # 60 rows, 7 at a time (the 9th finds nothing more)
    assert ledger.stats.readings_pruned == 60
    for lane in ("A1", "B1", "C1"):
        assert rows(ledger, "SELECT min(ts_ms), count(*) FROM lane_readings WHERE lane_id = ?", (lane,)) == [(1020, 10)]
    assert await ledger.prune_lane_readings(1020) == 0
    assert await ledger.prune_lane_readings() == 30  # default: 8 days before now (all of these are 1970)
    assert rows(ledger, "SELECT count(*) FROM lane_readings") == [(0,)]


async def test_the_writer_prunes_readings_on_its_own(tmp_path: Path) -> None:
    async with LedgerService(
        tmp_path / "l.db", migrations=MIGRATIONS, prune_interval_s=0.01, reading_retention_s=3600
    ) as svc:
        await svc.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
        await svc.assign_lane(NODE, 0, "COLA", actor="setup", lane_id="A1")
        recent = now_ms()
        await asyncio.gather(svc.submit(reading(recent - 3_700_000)), svc.submit(reading(recent)))
        for _ in range(200):
            if svc.stats.readings_pruned:
                break
            await asyncio.sleep(0.01)
        assert svc.stats.readings_pruned == 1
        assert rows(svc, "SELECT ts_ms FROM lane_readings") == [(recent,)]
