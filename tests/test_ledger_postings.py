"""Business postings: every reason, book locations, counts, reversals, idempotent references, alerts, audit."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.ledger import (
    AlertStatus,
    Applied,
    Duplicate,
    LedgerReader,
    LedgerService,
    Reason,
    SensorEvent,
    SensorGap,
    Sku,
    WriteOff,
)
from hub.ledger.models import (
    AlertStateError,
    InvalidArgument,
    LaneInUse,
    NotReversible,
    RefConflict,
    UnknownLane,
    UnknownLocation,
    UnknownMovement,
    UnknownSku,
)
from hub.schema import MIGRATIONS
from shared_protocol.messages import KIND_ANOMALY, KIND_COUNT, KIND_PICK, KIND_PUT

T0 = datetime(2025, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    # NORMAL: these tests are about the rules; durability (FULL, the default) is tested in test_ledger_sensor.
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as svc:
        await svc.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20, reorder_point=6, reorder_qty=24), actor="setup")
        await svc.add_sku(Sku("TEA", "Green tea", 1200), actor="setup")
        await svc.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
        await svc.assign_lane(1, 1, "COLA", actor="setup", lane_id="A2")
        await svc.assign_lane(1, 2, "TEA", actor="setup", lane_id="B1")
        yield svc


@pytest.fixture
async def reader(ledger: LedgerService) -> AsyncIterator[LedgerReader]:
    async with await ledger.reader() as r:
        yield r


async def book(reader: LedgerReader, sku: str) -> dict[str, int]:
    return {b.location: b.qty for b in await reader.book_stock(sku=sku) if b.qty}


async def test_every_reason_can_be_posted(ledger: LedgerService, reader: LedgerReader) -> None:
    await ledger.record_receipt("COLA", 50, actor="clerk", ref="R1", ts=T0)
    await ledger.restock("COLA", "A1", 20, actor="clerk", ref="X1")
    await ledger.record_sale("COLA", 2, actor="pos", ref="S1")
    await ledger.record_order_pick("COLA", 1, "ORD-9", actor="picker", ref="P1")
    await ledger.record_return("COLA", 1, actor="desk", ref="RT1")
    await ledger.transfer("COLA", 3, "backroom", "warehouse", actor="clerk", ref="T1")
    await ledger.write_off("COLA", 1, Reason.DAMAGE, actor="clerk", ref="D1")
    await ledger.write_off("COLA", 1, Reason.SHRINKAGE, actor="clerk", ref="K1", location="lane:A1")
    await ledger.record_count("COLA", 20, actor="counter", ref="C1")
    for seq, kind, delta in ((1, KIND_PICK, -1), (2, KIND_PUT, 1), (3, KIND_ANOMALY, 0), (4, KIND_COUNT, 5)):
        await ledger.apply_sensor_event(1, seq, 0, kind, delta, delta * 3500, 90, 1)
    await ledger.apply_sensor_gap(SensorGap(1, 0, -2, "g1", 1))
    await ledger.apply_sensor_event(1, 5, 3, KIND_PUT, 2, 2400, 90, 1)  # a lane not assigned yet: no SKU
    await ledger.assign_lane(1, 3, "TEA", actor="setup")  # its units become TEA's (lane_assigned)
    used = {m.reason for m in (await reader.movements(limit=1000)).items}
    assert used == set(Reason)
    assert await reader.consistency_errors() == []


async def test_book_locations_follow_the_store(ledger: LedgerService, reader: LedgerReader) -> None:
    await ledger.record_sale("TEA", 1, actor="pos", ref="S0")  # on lane B1 with nothing booked: goes negative there
    assert await book(reader, "TEA") == {"lane:B1": -1}
    await ledger.record_receipt("COLA", 30, actor="clerk", ref="R1")
    assert await book(reader, "COLA") == {"backroom": 30}
    await ledger.restock("COLA", "A1", 4, actor="clerk", ref="X1")
    await ledger.restock("COLA", "A2", 10, actor="clerk", ref="X2")
    await ledger.record_sale("COLA", 3, actor="pos", ref="S1")  # from the lane holding the most
    assert await book(reader, "COLA") == {"backroom": 16, "lane:A1": 4, "lane:A2": 7}
    await ledger.record_sale("COLA", 1, actor="pos", ref="S2", location="backroom")
    await ledger.record_receipt("COLA", 5, actor="clerk", ref="R2", location="warehouse")
    assert await book(reader, "COLA") == {"backroom": 15, "lane:A1": 4, "lane:A2": 7, "warehouse": 5}
    assert await reader.book_total("COLA") == 31
    assert await reader.observed_stock() == []  # book postings never touch the sensor ledger


async def test_a_sku_on_no_lane_sells_from_the_backroom(ledger: LedgerService, reader: LedgerReader) -> None:
    await ledger.add_sku(Sku("SOAP", "Soap", 900), actor="setup")
    await ledger.record_receipt("SOAP", 5, actor="clerk", ref="R1")
    await ledger.record_sale("SOAP", 2, actor="pos", ref="S1")
    assert await book(reader, "SOAP") == {"backroom": 3}


async def test_restock_and_transfer_are_two_legged(ledger: LedgerService, reader: LedgerReader) -> None:
    await ledger.record_receipt("COLA", 10, actor="clerk", ref="R1")
    restock = await ledger.restock("COLA", "A1", 6, actor="clerk", ref="X1")
    assert isinstance(restock, Applied) and len(restock.movement_ids) == 2
    legs = (await reader.movements(source_ref="restock:X1")).items
    assert [(m.leg, m.location, m.qty) for m in legs] == [(0, "backroom", -6), (1, "lane:A1", 6)]
    with pytest.raises(InvalidArgument, match="holds 'TEA'"):
        await ledger.restock("COLA", "B1", 1, actor="clerk", ref="X2")
    with pytest.raises(UnknownLane):
        await ledger.restock("COLA", "Z9", 1, actor="clerk", ref="X3")
    with pytest.raises(InvalidArgument, match="to itself"):
        await ledger.transfer("COLA", 1, "backroom", "backroom", actor="clerk", ref="T1")
    with pytest.raises(UnknownLocation, match="sensor ledger"):
        await ledger.transfer("COLA", 1, "backroom", "sensor:A1", actor="clerk", ref="T2")
    with pytest.raises(UnknownLocation, match="unknown lane"):
        await ledger.record_receipt("COLA", 1, actor="clerk", ref="R9", location="lane:nope")
    with pytest.raises(UnknownLocation, match="bad location"):
        await ledger.record_receipt("COLA", 1, actor="clerk", ref="R9", location="Back Room")
    assert await book(reader, "COLA") == {"backroom": 4, "lane:A1": 6}


async def test_returns(ledger: LedgerService, reader: LedgerReader) -> None:
    await ledger.record_return("TEA", 2, actor="desk", ref="RT1")
    broken = await ledger.record_return("TEA", 3, actor="desk", ref="RT2", restockable=False)
    assert len(broken.movement_ids) == 2
    legs = (await reader.movements(source_ref="return:RT2")).items
    assert [(m.reason, m.qty) for m in legs] == [(Reason.RETURN, 3), (Reason.DAMAGE, -3)]
    assert await book(reader, "TEA") == {"backroom": 2}


async def test_counts_store_book_and_counted_and_post_the_difference(
    ledger: LedgerService, reader: LedgerReader
) -> None:
    await ledger.record_receipt("COLA", 12, actor="clerk", ref="R1")
    short = await ledger.record_count("COLA", 9, actor="counter", ref="C1", ts=T0)
    assert (short.book_qty, short.counted_qty) == (12, 9) and short.adjustment_movement_id is not None
    adjustment = await reader.movement(short.adjustment_movement_id)
    assert adjustment is not None and (adjustment.reason, adjustment.qty) == (Reason.COUNT_ADJUSTMENT, -3)
    agree = await ledger.record_count("COLA", 9, actor="counter", ref="C2")
    assert agree.adjustment_movement_id is None
    over = await ledger.record_count("COLA", 0, actor="counter", ref="C3", location="lane:A1")
    assert (over.book_qty, over.adjustment_movement_id) == (0, None)
    again = await ledger.record_count("COLA", 9, actor="counter", ref="C1", ts=T0)
    assert again.duplicate and again.count_id == short.count_id
    with pytest.raises(RefConflict):
        await ledger.record_count("COLA", 8, actor="counter", ref="C1", ts=T0)
    counts = await reader.counts(sku="COLA")
    assert [(c.book_qty, c.counted_qty, c.location) for c in counts] == [
        (0, 0, "lane:A1"),
        (9, 9, "backroom"),
        (12, 9, "backroom"),
    ]
    assert await book(reader, "COLA") == {"backroom": 9}


async def test_reversal_rules(ledger: LedgerService, reader: LedgerReader) -> None:
    await ledger.record_receipt("COLA", 10, actor="clerk", ref="R1")
    restock = await ledger.restock("COLA", "A1", 4, actor="clerk", ref="X1")
    reversal = await ledger.reverse(restock.movement_ids[1], actor="manager", why="wrong lane")
    assert reversal.source_ref == f"reversal:{restock.movement_ids[0]}"
    legs = (await reader.movements(source_ref=reversal.source_ref)).items
    assert [(m.location, m.qty, m.reason, m.reverses_id) for m in legs] == [
        ("backroom", 4, Reason.RESTOCK, restock.movement_ids[0]),
        ("lane:A1", -4, Reason.RESTOCK, restock.movement_ids[1]),
    ]
    assert legs[0].note == "wrong lane" and legs[0].actor == "manager"
    assert await book(reader, "COLA") == {"backroom": 10}
    with pytest.raises(NotReversible, match="already reversed"):
        await ledger.reverse(restock.movement_ids[0], actor="manager", why="again")
    with pytest.raises(NotReversible, match="itself a reversal"):
        await ledger.reverse(reversal.movement_ids[0], actor="manager", why="undo the undo")
    with pytest.raises(UnknownMovement):
        await ledger.reverse(9999, actor="manager", why="?")
    with pytest.raises(InvalidArgument, match="reason"):
        await ledger.reverse(1, actor="manager", why=" ")
    # A sensor movement can be reversed too (a false detection), in the sensor ledger.
    event = await ledger.apply_sensor_event(1, 1, 0, KIND_PICK, -2, -7000, 40, 1)
    await ledger.reverse(event.movement_ids[0], actor="manager", why="hand rested on the shelf")
    assert [o.qty for o in await reader.observed_stock()] == [0]
    assert await reader.consistency_errors() == []


async def test_references_make_resubmission_harmless(ledger: LedgerService, reader: LedgerReader) -> None:
    first = await ledger.record_sale("COLA", 2, actor="pos", ref="S1", ts=T0)
    same = await ledger.record_sale("COLA", 2, actor="pos", ref="S1", ts=T0)
    assert isinstance(same, Duplicate) and same.movement_ids == first.movement_ids
    assert isinstance(await ledger.record_sale("COLA", 2, actor="pos", ref="S1"), Duplicate)  # no time: not compared
    with pytest.raises(RefConflict, match="different content"):
        await ledger.record_sale("COLA", 3, actor="pos", ref="S1", ts=T0)
    await ledger.record_order_pick("COLA", 1, "O1", actor="p", ref="P1", ts=T0)
    with pytest.raises(RefConflict):  # the same pick id for another order
        await ledger.record_order_pick("COLA", 1, "O2", actor="p", ref="P1", ts=T0)
    generated = await ledger.record_receipt("TEA", 1, actor="clerk")
    assert generated.source_ref.startswith("receipt:") and len(generated.source_ref) > 20
    assert (await reader.movements(source_ref="sale:S1")).items[0].ts_ms == int(T0.timestamp() * 1000)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.record_sale("NOPE", 1, actor="pos", ref="S"), UnknownSku),
        (lambda s: s.record_sale("COLA", 0, actor="pos", ref="S"), InvalidArgument),
        (lambda s: s.record_sale("COLA", -1, actor="pos", ref="S"), InvalidArgument),
        (lambda s: s.record_sale("COLA", True, actor="pos", ref="S"), InvalidArgument),
        (lambda s: s.record_sale("COLA", 10_000_000, actor="pos", ref="S"), InvalidArgument),
        (lambda s: s.record_sale("COLA", 1, actor="", ref="S"), InvalidArgument),
        (lambda s: s.record_sale("COLA", 1, actor="pos", ref=" S"), InvalidArgument),
        (lambda s: s.record_sale("COLA", 1, actor="pos", ref="S", ts=datetime(2025, 1, 1)), InvalidArgument),
        (lambda s: s.record_order_pick("COLA", 1, "", actor="p", ref="P"), InvalidArgument),
        (lambda s: s.write_off("COLA", 1, Reason.SALE, actor="c", ref="W"), InvalidArgument),
        (lambda s: s.record_count("COLA", -1, actor="c", ref="C"), InvalidArgument),
        (lambda s: s.add_sku(Sku("BAD\n", "x", 1), actor="a"), InvalidArgument),
        (lambda s: s.add_sku(Sku("X", "x", 0), actor="a"), InvalidArgument),
        (lambda s: s.add_sku(Sku("overload", "x", 10), actor="a"), InvalidArgument),  # reads as a lane's problem
        (lambda s: s.assign_lane(1, 32, "COLA", actor="a"), InvalidArgument),
        (lambda s: s.assign_lane(2, 0, "COLA", actor="a", lane_id="node3-lane0"), InvalidArgument),
        (lambda s: s.assign_lane(2, 0, "COLA", actor="a", lane_id="A1"), InvalidArgument),
    ],
)
async def test_invalid_postings_are_refused_and_write_nothing(
    ledger: LedgerService, reader: LedgerReader, call: object, error: type[Exception]
) -> None:
    before = (await reader.movement_count(), len(await reader.audit(limit=1000)))
    with pytest.raises(error):
        await call(ledger)  # type: ignore[operator]
    assert (await reader.movement_count(), len(await reader.audit(limit=1000))) == before


async def test_every_business_write_is_audited_with_its_actor(ledger: LedgerService, reader: LedgerReader) -> None:
    start = len(await reader.audit(limit=1000))
    await ledger.record_receipt("COLA", 5, actor="clerk", ref="R1")
    await ledger.record_receipt("COLA", 5, actor="clerk", ref="R1")  # duplicate: nothing written, nothing audited
    await ledger.record_count("COLA", 4, actor="counter", ref="C1")
    await ledger.reverse(1, actor="manager", why="typo")
    await ledger.register_node(9, actor="installer", label="aisle 3")
    opened = await ledger.open_alert("shrinkage", "lane:A1", {"missing": 1}, actor="reconcile")
    await ledger.acknowledge_alert(opened.alert_id, actor="manager")
    await ledger.resolve_alert(opened.alert_id, actor="manager", resolution="found it")
    await ledger.add_sku(Sku("COLA", "Cola 0.33 l", 3500, 20, reorder_point=6, reorder_qty=24), actor="buyer")
    entries = (await reader.audit(limit=1000))[start:]
    assert [(e.actor, e.action) for e in entries] == [
        ("clerk", "receipt"),
        ("counter", "count"),
        ("manager", "reverse"),
        ("installer", "register_node"),
        ("reconcile", "open_alert"),
        ("manager", "acknowledge_alert"),
        ("manager", "resolve_alert"),
        ("buyer", "update_sku"),
    ]
    assert entries[0].details["source_ref"] == "receipt:R1"
    assert entries[-1].details["old"][1] == "Cola 330 ml"
    node = await reader.node(9)
    assert node is not None and node.label == "aisle 3"


async def test_one_unresolved_alert_per_cause(ledger: LedgerService, reader: LedgerReader) -> None:
    first = await ledger.open_alert("shrinkage", "lane:A1", {"missing": 2}, actor="reconcile")
    again = await ledger.open_alert("shrinkage", "lane:A1", {"missing": 3}, actor="reconcile")
    assert first.created and not again.created and again.alert_id == first.alert_id
    other = await ledger.open_alert("shrinkage", "lane:A2", {}, actor="reconcile")
    assert other.alert_id != first.alert_id
    acknowledged = await ledger.acknowledge_alert(first.alert_id, actor="manager")
    assert acknowledged.status == AlertStatus.ACKNOWLEDGED and acknowledged.acknowledged_by == "manager"
    assert not (await ledger.open_alert("shrinkage", "lane:A1", {}, actor="reconcile")).created
    with pytest.raises(AlertStateError):
        await ledger.acknowledge_alert(first.alert_id, actor="manager")

    await ledger.record_receipt("COLA", 10, actor="clerk", ref="R1")
    await ledger.restock("COLA", "A1", 10, actor="clerk", ref="X1")
    resolved = await ledger.resolve_alert(
        first.alert_id,
        actor="manager",
        resolution="stolen: written off",
        write_off=WriteOff("COLA", 2, Reason.SHRINKAGE, "lane:A1"),
    )
    assert resolved.status == AlertStatus.RESOLVED and resolved.resolution_movement_id is not None
    movement = await reader.movement(resolved.resolution_movement_id)
    assert movement is not None
    assert (movement.reason, movement.qty, movement.location) == (Reason.SHRINKAGE, -2, "lane:A1")
    assert await book(reader, "COLA") == {"lane:A1": 8}
    with pytest.raises(AlertStateError, match="already resolved"):
        await ledger.resolve_alert(first.alert_id, actor="manager", resolution="twice")
    reopened = await ledger.open_alert("shrinkage", "lane:A1", {"missing": 1}, actor="reconcile")
    assert reopened.created and reopened.alert_id != first.alert_id
    assert [a.status for a in await reader.alerts(kind="shrinkage")] == ["open", "open", "resolved"]


async def test_a_failed_resolution_posts_nothing_and_leaves_the_alert_open(
    ledger: LedgerService, reader: LedgerReader
) -> None:
    opened = await ledger.open_alert("damage", "lane:B1", {}, actor="reconcile")
    with pytest.raises(UnknownSku):
        await ledger.resolve_alert(
            opened.alert_id, actor="manager", resolution="broken", write_off=WriteOff("NOPE", 1, Reason.DAMAGE)
        )
    alert = await reader.alert(opened.alert_id)
    assert alert is not None and alert.status == AlertStatus.OPEN
    assert await reader.movement_count() == 0


async def test_lanes_keep_their_id_and_refuse_reassignment_while_stocked(
    ledger: LedgerService, reader: LedgerReader
) -> None:
    await ledger.record_receipt("COLA", 5, actor="clerk", ref="R1")
    await ledger.restock("COLA", "A2", 5, actor="clerk", ref="X1")
    with pytest.raises(LaneInUse, match="still holds 5"):
        await ledger.assign_lane(1, 1, "TEA", actor="manager")
    await ledger.transfer("COLA", 5, "lane:A2", "backroom", actor="clerk", ref="T1")
    assert (await ledger.assign_lane(1, 1, "TEA", actor="manager")).lane_id == "A2"
    assert (await ledger.assign_lane(1, 1, "TEA", actor="manager", lane_id="A2")).lane_id == "A2"
    lanes = {lane.lane_id: lane.sku for lane in await reader.lanes()}
    assert lanes == {"A1": "COLA", "A2": "TEA", "B1": "TEA"}


async def test_movements_are_filtered_and_paginated(ledger: LedgerService, reader: LedgerReader) -> None:
    for i in range(25):
        await ledger.record_receipt("TEA" if i % 2 else "COLA", 1, actor="clerk", ref=f"R{i}", ts=T0)
    seen: list[int] = []
    after: int | None = None
    while True:
        page = await reader.movements(sku="COLA", after_id=after, limit=5)
        seen += [m.id for m in page.items]
        if page.next_after_id is None:
            break
        after = page.next_after_id
    assert len(seen) == 13 and seen == sorted(seen)
    assert len((await reader.movements(reason="receipt", actor="clerk", limit=1000)).items) == 25
    t = int(T0.timestamp() * 1000)
    assert len((await reader.movements(since_ms=t, until_ms=t + 1, limit=1000)).items) == 25
    assert (await reader.movements(until_ms=t)).items == []


async def test_sensor_event_records_are_typed(ledger: LedgerService) -> None:
    event = SensorEvent(1, 1, 0, KIND_PICK, -1, -3500, 90, 5)
    assert event.source_ref == "node:1:ev:1"
    result = await ledger.submit(event)
    assert isinstance(result, Applied)
    conn = sqlite3.connect(ledger.path)
    assert conn.execute("SELECT count(*) FROM audit WHERE action LIKE 'sensor%'").fetchone() == (0,)
    conn.close()


async def test_a_reference_is_scoped_to_its_actor(ledger: LedgerService, reader: LedgerReader) -> None:
    """Another actor's reference is refused, naming the actor and nothing of its posting; the same actor's replay
    stays a duplicate (sales, counts)."""
    first = await ledger.record_sale("COLA", 1, actor="api:pos1", ref="1", location="lane:A1")
    with pytest.raises(RefConflict) as refused:
        await ledger.record_sale("COLA", 1, actor="api:pos2", ref="1", location="lane:A1")
    assert str(refused.value) == "sale:1 was already used by api:pos1: use ids unique to this client"
    again = await ledger.record_sale("COLA", 1, actor="api:pos1", ref="1", location="lane:A1")
    assert again.duplicate and again.movement_ids == first.movement_ids
    await ledger.record_count("TEA", 0, actor="api:pos1", ref="c1")
    with pytest.raises(RefConflict, match="count:c1 was already used by api:pos1: use ids unique"):
        await ledger.record_count("TEA", 0, actor="api:pos2", ref="c1")
    assert (await ledger.record_count("TEA", 0, actor="api:pos1", ref="c1")).duplicate
    # staff and the CLI share the store's references: another person's replay is a duplicate, an API client's is not
    staff = await ledger.record_receipt("COLA", 6, actor="cli:ann", ref="D-7")
    assert (await ledger.record_receipt("COLA", 6, actor="web:bob", ref="D-7")).movement_ids == staff.movement_ids
    with pytest.raises(RefConflict, match="receipt:D-7 was already used by cli:ann"):
        await ledger.record_receipt("COLA", 6, actor="api:wms", ref="D-7")


async def test_an_alert_resolution_count_has_its_own_reference_kind(ledger: LedgerService) -> None:
    from hub.ledger.postings import RESOLUTION_KIND

    await ledger.record_count("COLA", 5, actor="api:wms", ref="alert1", location="lane:A1")  # a client's "alert1"
    result = await ledger.transact(
        lambda tx: tx.count("COLA", 7, ts=None, actor="web:mia", ref="alert1", location="lane:A1", kind=RESOLUTION_KIND)
    )
    assert result.source_ref == "resolution:alert1" and not result.duplicate and result.book_qty == 5
    with pytest.raises(InvalidArgument):
        await ledger.transact(lambda tx: tx.count("COLA", 7, ts=None, actor="x", ref="y", kind="sale"))


async def test_a_sale_or_pick_from_a_location_that_never_held_stock_is_refused(
    ledger: LedgerService, reader: LedgerReader
) -> None:
    """A typo in a plain location name must not open a phantom location with negative stock."""
    with pytest.raises(UnknownLocation, match=r"no stock was ever booked at 'warehuose'.*known: backroom"):
        await ledger.record_sale("COLA", 1, actor="pos", ref="typo", location="warehuose")
    with pytest.raises(UnknownLocation, match="nothing can be sold or picked from there"):
        await ledger.record_order_pick("COLA", 1, "W1", actor="wms", ref="typo-pick", location="warehuose")
    # stock entering a new location opens it; then it can be sold from
    await ledger.record_receipt("COLA", 5, actor="wms", ref="in", location="warehouse")
    await ledger.record_sale("COLA", 2, actor="pos", ref="ok", location="warehouse")
    with pytest.raises(UnknownLocation, match="known: backroom, warehouse"):
        await ledger.record_sale("COLA", 1, actor="pos", ref="typo2", location="warehuose")
    assert "warehuose" not in {b.location for b in await reader.book_stock()}
