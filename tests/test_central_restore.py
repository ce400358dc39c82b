"""A hub restored from a backup, at central (real PostgreSQL, tests/fleet_support.py): sensor locations' stock per
ledger incarnation (schema step 3) and its repair of a database written before it; shrink through a reversal
published under the new incarnation of a movement stored under the old one (``movement_matches``); ``central check``
listing the book movements lost at the store, not the sensor observations the restored hub re-booked as a gap.

The story, throughout: incarnation 1 books sensor picks 1..4 (node 7's events 1..4) and sale 5; a backup is taken;
it books picks 6..8 (events 5..7) and sale 9, then the Pi dies. The store restores the backup (incarnation 2) and
publishes its ledger 1..5 again; node 7 still holds event 7 but no longer 5 and 6: the hub books a sensor gap of 2
(6), takes event 7 again (7: the movement central holds as incarnation 1's 8) and a new pick (8, event 8). The hub's
own balances: sensor:7:0 -4 -2 -1 -1 = -8, shelf:A1 -1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from hub.central.check import format_report, report
from hub.central.schema import MIGRATIONS, migrate
from hub.central.store import Outcome, apply_batch, receive
from hub.central.web import queries as q
from hub.central.web.accounts import EVERY_STORE
from hub.fleet.messages import encode_movements, encode_snapshot
from tests.fleet_support import FreshDatabase

PREFIX = "smartshelf/v1"
T = 1_790_000_000_000
LANE = "sensor:7:0"


def row(
    i: int, ref: str, qty: int, *, location: str = "shelf:A1", reason: str = "sale", ts: int | None = None,
    reverses: int | None = None,
) -> tuple[Any, ...]:  # fmt: skip
    at = T + i * 1000 if ts is None else ts
    node = (7, int(ref.rsplit(":", 1)[1]) if ":ev:" in ref else None) if location.startswith("sensor:") else (None,) * 2
    actor = "node:7" if location.startswith("sensor:") else "pos:1"
    return (i, at, at + 100, "COLA-330", location, qty, reason, ref, 0, actor, None, reverses, *node, None, None)


def pick(i: int, event: int) -> tuple[Any, ...]:
    return row(i, f"node:7:ev:{event}", -1, location=LANE, reason="sensor_pick")


OLD_KEPT = [pick(1, 1), pick(2, 2), pick(3, 3), pick(4, 4), row(5, "till:5", -1)]  # in the backup
OLD_LOST = [pick(6, 5), pick(7, 6), pick(8, 7), row(9, "till:9", -1)]  # booked after it: lost with the Pi
GAP = row(6, "node:7:gap:ev5-6:lane0", -2, location=LANE, reason="sensor_gap")
RESTORED = [*OLD_KEPT, GAP, pick(7, 7), pick(8, 8)]


def movements(incarnation: int, rows: list[tuple[Any, ...]], sent: int) -> tuple[str, bytes]:
    return "movements", encode_movements("s1", rows, T + sent, incarnation=incarnation)


def snapshot(incarnation: int, sent: int, last: int, book_qty: int) -> tuple[str, bytes]:
    book = [("COLA-330", "shelf:A1", book_qty)]
    payload = encode_snapshot(
        "s1", T + sent, incarnation=incarnation, last_movement_id=last, skus=[], lanes=[], nodes=[], book=book
    )
    return "snapshot", payload


@pytest.fixture
async def conn(postgres_db: FreshDatabase) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(postgres_db.dsn)
    try:
        yield c
    finally:
        await c.close()


async def apply(conn: asyncpg.Connection, *messages: tuple[str, bytes], at: int = 100_000) -> Outcome:
    batch = [receive(PREFIX, f"{PREFIX}/s1/{kind}", payload) for kind, payload in messages]
    assert [r.reason for r in batch if r.message is None] == []
    return await apply_batch(conn, batch, T + at)


async def stock(conn: asyncpg.Connection, view: str = "stock") -> dict[tuple[Any, ...], int]:
    extra = ", incarnation" if view == "stock" else ""
    got = await conn.fetch(f"SELECT location{extra}, qty FROM {view} WHERE hub_id = 's1' ORDER BY 1, 2")
    return {tuple(r)[:-1]: r["qty"] for r in got}


async def test_a_restore_leaves_sensor_stock_at_what_the_restored_ledger_holds(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    await apply(conn, movements(1, OLD_KEPT + OLD_LOST, 100), snapshot(1, 200, 9, -2))
    assert await stock(conn, "sensor_stock") == {(LANE,): -7}
    out = await apply(conn, movements(2, RESTORED, 300), snapshot(2, 400, 8, -1))
    assert (out.movements_inserted, out.movements_matched, out.movements_conflicting) == (2, 6, 0)
    # each incarnation's lane sum: the lost ledger's -7; the restored one's its picks held under incarnation 1
    # (1..4 and event 7), its gap and its new pick: -8, the hub's own balance; not -7 - 2 - 1 = -10 (the picks lost
    # with the old ledger and the gap booked for them)
    assert await stock(conn) == {(LANE, 1): -7, (LANE, 2): -8, ("shelf:A1", 0): -2}
    assert await stock(conn, "sensor_stock") == {(LANE,): -8}
    # book stock keeps the sale lost at the store (central check lists it) until the store books it again
    assert await stock(conn, "book_stock") == {("shelf:A1",): -2}

    # redelivered, and the lost ledger's batches delivered late once more: nothing moves
    for again in (movements(2, RESTORED, 300), movements(1, OLD_LOST, 150), movements(1, OLD_KEPT, 120)):
        out = await apply(conn, again)
        assert (out.movements_inserted, out.movements_matched, out.movements_conflicting) == (0, 0, 0)
    assert await stock(conn) == {(LANE, 1): -7, (LANE, 2): -8, ("shelf:A1", 0): -2}

    # central check: the lost sale is listed, not the lost sensor picks 6 and 7 (the gap re-booked them); the
    # books agree
    (h,) = await report(conn)
    assert (h.book_compared, h.lost_compared, h.book_differences) == (True, True, [])
    assert h.lost == 1 and [(m["incarnation"], m["id"], m["location"]) for m in h.lost_movements] == [
        (1, 9, "shelf:A1")
    ]
    lost_sensor = await conn.fetch(
        "SELECT id FROM movements o WHERE incarnation = 1 AND location LIKE 'sensor:%' AND NOT EXISTS ("
        " SELECT 1 FROM movement_matches x WHERE x.held_incarnation = 1 AND x.held_id = o.id) ORDER BY id"
    )
    assert [r["id"] for r in lost_sensor] == [6, 7], "the story has lost sensor movements that check leaves out"
    text = "\n".join(format_report([h], T + 700_000))
    assert "1 book movement(s) of an earlier incarnation lost at the store" in text
    assert "lost at the store: incarnation 1 movement 9: sale -1 COLA-330 at shelf:A1 (till:9, leg 0)" in text
    assert "sensor_pick" not in text and LANE not in text

    # the store books the lost sale again under its own reference: matched, nothing lost, stock unchanged; a new
    # pick moves the current incarnation's lane only
    out = await apply(conn, movements(2, [row(9, "till:9", -1), pick(10, 9)], 800), snapshot(2, 900, 10, -2))
    assert (out.movements_inserted, out.movements_matched) == (1, 1)
    (h,) = await report(conn)
    assert (h.lost, h.book_differences, h.problems) == (0, [], [])
    assert await stock(conn) == {(LANE, 1): -7, (LANE, 2): -9, ("shelf:A1", 0): -2}


async def test_a_restored_hubs_ledger_arriving_before_the_lost_ones_last_batch_counts_each_once(
    conn: asyncpg.Connection,
) -> None:
    """The restored hub republishes first; the lost ledger's whole history is delivered after it (a consumer that
    was away). Its picks held by incarnation 2 are incarnation 1's matches: counted in incarnation 1's sum, once."""
    await migrate(conn)
    await apply(conn, movements(2, RESTORED, 300), snapshot(2, 400, 8, -1))
    assert await stock(conn) == {(LANE, 2): -8, ("shelf:A1", 0): -1}
    out = await apply(conn, movements(1, OLD_KEPT + OLD_LOST, 100))  # 6, 7 and 9 are new; the rest incarnation 2's
    assert (out.movements_inserted, out.movements_matched) == (3, 6)
    assert await stock(conn) == {(LANE, 1): -7, (LANE, 2): -8, ("shelf:A1", 0): -2}
    assert await stock(conn, "sensor_stock") == {(LANE,): -8}


async def test_step_3_repairs_the_sensor_stock_a_restore_doubled(conn: asyncpg.Connection) -> None:
    """A database written before step 3: the same story, with the stock the consumer then kept (every stored
    movement summed per location: the lane at -7 - 2 - 1 = -10). Step 3 recomputes the sensor rows per incarnation
    and leaves the book rows as they were."""
    assert await migrate(conn, MIGRATIONS[:2]) == (0, 2)
    await conn.execute(
        "INSERT INTO hubs (hub_id, first_contact_ms, last_contact_ms, last_sent_ms, incarnation)"
        " VALUES ('s1', $1, $1, $1, 2)",
        T,
    )
    cols = "hub_id, incarnation, id, ts_ms, recorded_ms, sku, location, qty, reason, source_ref, leg, actor"
    stored = [(1, r) for r in OLD_KEPT + OLD_LOST] + [(2, r) for r in (GAP, RESTORED[7])]
    await conn.executemany(
        f"INSERT INTO movements ({cols}, received_ms) VALUES ('s1', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        [(life, *r[:10], T) for life, r in stored],
    )
    await conn.executemany(
        "INSERT INTO movement_matches (hub_id, incarnation, id, held_incarnation, held_id, same, sku, location, qty,"
        " source_ref, leg, received_ms) VALUES ('s1', 2, $1, 1, $1, true, $2, $3, $4, $5, 0, $6)",
        [(r[0], r[3], r[4], r[5], r[7], T) for r in OLD_KEPT],
    )
    await conn.execute(  # event 7: incarnation 2's movement 7, held as incarnation 1's 8
        "INSERT INTO movement_matches (hub_id, incarnation, id, held_incarnation, held_id, same, sku, location, qty,"
        " source_ref, leg, received_ms) VALUES ('s1', 2, 7, 1, 8, true, 'COLA-330', $1, -1, 'node:7:ev:7', 0, $2)",
        LANE,
        T,
    )
    await conn.execute(
        "INSERT INTO stock (hub_id, sku, location, qty, updated_ms) VALUES"
        " ('s1', 'COLA-330', $1, -10, $2), ('s1', 'COLA-330', 'shelf:A1', -2, $2)",
        LANE,
        T,
    )
    assert await migrate(conn) == (2, MIGRATIONS[-1].version)
    assert await stock(conn) == {(LANE, 1): -7, (LANE, 2): -8, ("shelf:A1", 0): -2}
    assert await stock(conn, "sensor_stock") == {(LANE,): -8}
    # and the consumer goes on from there
    await apply(conn, movements(2, [pick(9, 9)], 500))
    assert await stock(conn, "sensor_stock") == {(LANE,): -9}
    # a sensor row must say its incarnation, a book row must not
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO stock (hub_id, sku, location, incarnation, qty, updated_ms) VALUES ('s1', 'X', $1, 0, 1, 0)",
            LANE,
        )


async def test_shrink_counts_a_reversal_published_under_the_new_incarnation_of_a_movement_stored_under_the_old(
    conn: asyncpg.Connection,
) -> None:
    """Incarnation 1 wrote off 3 (movement 1) and sold 1 (2) in the period; a backup; it wrote off 5 (3), lost with
    the Pi. The restored ledger (incarnation 2) publishes 1 and 2 again (stored once, under incarnation 1: its rows
    are ``movement_matches``), books its own write-off as 3 (dated before the period), reverses that one (4) and,
    after the period, reverses write-off 1 (5). A reversal counts in the period of what it reverses: 5 through its
    match to incarnation 1's movement 1 (in the period: shrink -3), 4 with incarnation 2's own 3 (before the
    period: not counted), never with incarnation 1's 3, the same id."""
    start, end = T, T + 100_000
    await migrate(conn)
    old = [
        row(1, "writeoff:1", -3, reason="shrinkage", ts=start + 10),
        row(2, "till:2", -1, ts=start + 20),
        row(3, "writeoff:3", -5, reason="shrinkage", ts=start + 30),
    ]
    restored = [
        *old[:2],
        row(3, "writeoff:b3", -2, reason="shrinkage", ts=start - 5_000),
        row(4, "reversal:3", 2, reason="shrinkage", ts=start + 40, reverses=3),
        row(5, "reversal:1", 3, reason="shrinkage", ts=end + 5_000, reverses=1),
    ]
    await apply(conn, movements(1, old, 100))
    out = await apply(conn, movements(2, restored, 200))
    assert (out.movements_inserted, out.movements_matched) == (3, 2)
    matched = await conn.fetch("SELECT id, held_incarnation, held_id FROM movement_matches ORDER BY id")
    assert [tuple(r) for r in matched] == [(1, 1, 1), (2, 1, 2)]

    f = q.Filters(EVERY_STORE)
    (total,) = (await q.shrink_by_store(conn, f, start, end, None, None, 10)).rows
    # 3 (1) + 5 (incarnation 1's 3, lost at the store, kept here) - 3 (5 reverses 1); 4 and incarnation 2's 3 out
    assert (total.hub_id, total.sold, total.shrink) == ("s1", 1, 5)
    (per_sku,) = (await q.shrink_by_sku(conn, f, start, end, None, None, 10)).rows
    assert (per_sku.sku, per_sku.sold, per_sku.shrink) == ("COLA-330", 1, 5)
    # a period holding only incarnation 2's write-off 3: it and its reversal 4 (entered in the next period) cancel
    early = await q.shrink_by_store(conn, f, start - 10_000, start - 1, None, None, 10)
    assert early.rows == []
