"""The sensor spans, lane activity and out-of-stock stretches (hub/ledger/lane_activity.py) and the units sold per
hour (hub/ledger/sold_hours.py) the ledger's writer keeps
against a recomputation from the movements, after random sequences of writes: node events of several lanes per
batch, out of order and backdated (retransmissions, ages of hours, dated in the future), gaps, staff reversals,
lanes re-assigned and unassigned, and the migration that builds them for an existing ledger. The reports' out-of-
stock figures from them must equal the walk of every movement that the reports did before
(``tools.bench.web_reports.walk_lane_outages``, the previous ``metrics.lane_outages``), and the units sold the scan of
every sale (``sales_by_scan``), for many periods: sales dated late or ahead, reversals entered after and before
the time of what they reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from hub.ledger import LedgerService, SensorEvent, SensorGap, Sku, lane_activity, sold_hours
from hub.ledger import schema as ledger_schema
from hub.ledger.models import now_ms
from hub.reconcile.config import ReconcileConfig
from hub.schema import MIGRATIONS
from hub.web.pages import metrics
from hub.web.pages.metrics import Period
from shared_protocol.messages import KIND_ANOMALY, KIND_PICK, KIND_PUT
from tools.bench.web_reports import sales_by_scan, walk_lane_outages

H = 3_600_000
SKUS = ("COLA", "TEA", "SOUP")
del ReconcileConfig  # (imported to make sure the reconcile schema's module loads like in the hub)


# ------------------------------------------------------------------------------------------- recomputation


def expected_activity(conn: sqlite3.Connection) -> tuple[dict[Any, Any], set[Any]]:
    """From the movements alone: per (location, SKU) first / last time and the open stretch; the ended stretches."""
    by_ts: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for loc, sku, ts, qty in conn.execute(
        "SELECT location, sku, ts_ms, qty FROM movements WHERE location GLOB 'sensor:*' AND sku IS NOT NULL"
    ):
        by_ts[(loc, sku)][ts] = by_ts[(loc, sku)].get(ts, 0) + qty
    activity, ended = {}, set()
    for key, steps in by_ts.items():
        count, since = 0, None
        for ts in sorted(steps):
            count += steps[ts]
            if count <= 0 and since is None:
                since = ts
            elif count > 0 and since is not None:
                ended.add((*key, since, ts))
                since = None
        activity[key] = (min(steps), max(steps), since)
    return activity, ended


def check_tables(conn: sqlite3.Connection) -> None:
    activity, ended = expected_activity(conn)
    got = {(r[0], r[1]): (r[2], r[3], r[4]) for r in conn.execute("SELECT * FROM lane_activity")}
    assert got == activity
    assert set(conn.execute("SELECT location, sku, from_ts, to_ts FROM lane_outages")) == ended
    # every sensor movement in exactly one span of its location; a span holds only its location's and SKU's rows
    spans = conn.execute("SELECT location, max_ts, first_id, last_id, min_ts, sku FROM sensor_spans").fetchall()
    rows = {r[0]: r[1:] for r in conn.execute("SELECT id, location, sku, ts_ms FROM movements")}
    covered: dict[int, int] = defaultdict(int)
    for loc, max_ts, first, last, min_ts, sku in spans:
        inside = [rows[i] for i in range(first, last + 1) if i in rows]
        assert inside and all(r[0] == loc and r[1] == sku for r in inside), (loc, first, last)
        assert (min(r[2] for r in inside), max(r[2] for r in inside)) == (min_ts, max_ts)
        for i in range(first, last + 1):
            covered[i] += 1
    sensor = {i for i, r in rows.items() if r[0].startswith("sensor:")}
    assert set(covered) == sensor and set(covered.values()) <= {1}


def check_reports(conn: sqlite3.Connection, rng: random.Random, around: int) -> None:
    ends = [around, around + H, around - 2 * H, around + 30 * H, around - 5 * H + 17]
    for end in ends + [rng.randint(around - 10 * H, around + 10 * H) for _ in range(6)]:
        for days in (1, 7, 30):
            p = metrics.period(days, end)
            assert metrics.lane_outages(conn, p) == walk_lane_outages(conn, p), (end, days)
        p = Period(end - rng.randint(1, 8 * H), end, 1)
        assert metrics.lane_outages(conn, p) == walk_lane_outages(conn, p), (p, "short")


# --------------------------------------------------------------------------------------------- random writes


class Writer:
    def __init__(self, ledger: LedgerService, rng: random.Random, now: int) -> None:
        self.ledger, self.rng, self.now = ledger, rng, now
        self.seq: dict[int, int] = defaultdict(int)
        self.sensor_ids: list[int] = []

    def event(self, node: int, lane: int, spread_h: float) -> SensorEvent:
        rng = self.rng
        self.seq[node] += 1
        seq = self.seq[node]
        if rng.random() < 0.1 and seq > 3:  # a retransmission of an earlier number: a duplicate
            seq = rng.randint(1, seq - 1)
        kind = rng.choice((KIND_PICK, KIND_PICK, KIND_PUT, KIND_ANOMALY))
        delta = {KIND_PICK: -rng.randint(1, 3), KIND_PUT: rng.randint(1, 4), KIND_ANOMALY: rng.randint(-2, 2)}[kind]
        # mostly in time order, some backdated by hours, some dated ahead
        ts = self.now + rng.randint(-int(spread_h * H), int(H / 4))
        if rng.random() < 0.1:
            ts = self.now  # the same millisecond as others
        return SensorEvent(node, seq, lane, kind, delta, delta * 100, rng.randint(40, 100), max(0, ts))

    async def burst(self, n: int, spread_h: float = 3.0) -> None:
        rng = self.rng
        items: list[Any] = []
        for _ in range(n):
            node, lane = rng.choice(((1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 5)))
            if rng.random() < 0.08:
                items.append(SensorGap(node, lane, rng.randint(-3, 3), f"g{rng.randint(0, 40)}", self.now))
            else:
                items.append(self.event(node, lane, spread_h))
        results = await asyncio.gather(*(self.ledger.submit(i) for i in items), return_exceptions=True)
        for r in results:
            if not isinstance(r, BaseException) and not r.duplicate:
                self.sensor_ids += r.movement_ids
        self.now += rng.randint(1, 20) * 60_000

    async def reverse_some(self, k: int) -> None:
        for mid in self.rng.sample(self.sensor_ids, min(k, len(self.sensor_ids))):
            with contextlib.suppress(Exception):  # already reversed
                await self.ledger.reverse(mid, actor="staff", why="miscounted")


async def _setup(ledger: LedgerService) -> None:
    for sku in SKUS:
        await ledger.add_sku(Sku(sku, sku.title(), 1000), actor="t")
    await ledger.assign_lane(1, 0, "COLA", actor="t", lane_id="A1")
    await ledger.assign_lane(1, 1, "TEA", actor="t", lane_id="A2")
    await ledger.assign_lane(2, 0, "COLA", actor="t", lane_id="B1")
    await ledger.assign_lane(2, 1, "SOUP", actor="t", lane_id="B2")
    # (1, 2) and (2, 5) are registered unassigned by their first event


@pytest.mark.parametrize("seed", range(3))
def test_tables_and_reports_equal_a_recomputation_after_random_writes(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    replays = []
    replay = lane_activity._replay

    async def counted(*args: Any) -> Any:
        replays.append(args[1:4])
        return await replay(*args)

    monkeypatch.setattr(lane_activity, "_replay", counted)

    async def run() -> None:
        db = tmp_path / "l.db"
        async with LedgerService(db, migrations=MIGRATIONS, synchronous="NORMAL", prune_interval_s=None) as ledger:
            await _setup(ledger)
            w = Writer(ledger, rng, now_ms() - 40 * H)
            for step in range(14):
                await w.burst(rng.randint(1, 60), spread_h=rng.choice((0.0, 0.5, 6.0)))
                if step % 3 == 2:
                    await w.reverse_some(rng.randint(1, 4))
                if step == 6:  # a lane changes SKU, another is assigned for the first time
                    await ledger.assign_lane(1, 1, "SOUP", actor="t", lane_id="A2")
                    await ledger.assign_lane(1, 2, "TEA", actor="t", lane_id="node1-lane2")
                conn = sqlite3.connect(db)
                try:
                    check_tables(conn)
                    if step % 4 == 3 or step == 13:
                        check_reports(conn, rng, w.now)
                finally:
                    conn.close()
        conn = sqlite3.connect(db)
        try:  # what was compared was not trivial: stretches ended and going on, lanes out for a while
            assert conn.execute("SELECT count(*) FROM lane_outages").fetchone()[0] >= 3
            assert conn.execute("SELECT count(*) FROM lane_activity WHERE out_since IS NOT NULL").fetchone()[0]
            assert any(o.out_ms for o in metrics.lane_outages(conn, metrics.period(30, w.now)))
        finally:
            conn.close()

    asyncio.run(run())
    assert len(replays) >= 5  # backdated movements rewrote stretches


def test_the_migration_builds_them_for_an_existing_ledger(tmp_path: Path) -> None:
    """A ledger at version 10 with sensor movements in any order (written before the writer kept the tables) gets
    them from migration 11, then the writer keeps them up to date."""
    rng = random.Random(5)
    db = tmp_path / "old.db"
    ledger_schema.open_and_migrate(db, MIGRATIONS[:10])
    conn = ledger_schema.connect(db, synchronous="NORMAL")
    start = now_ms() - 30 * H
    conn.execute("BEGIN")
    for sku in SKUS:
        conn.execute("INSERT INTO skus (sku, name, unit_weight_dg) VALUES (?, ?, 1000)", (sku, sku))
    conn.executemany("INSERT INTO nodes (node_id) VALUES (?)", [(1,), (2,)])
    lanes = [("A1", 1, 0, "COLA"), ("A2", 1, 1, "TEA"), ("B1", 2, 0, "SOUP"), ("U1", 2, 3, None)]
    conn.executemany("INSERT INTO lanes (lane_id, node_id, lane_index, sku) VALUES (?, ?, ?, ?)", lanes)
    seq = {1: 0, 2: 0}
    for k in range(600):
        lane_id, node, _idx, sku = rng.choice(lanes)
        seq[node] += 1
        qty = rng.choice((-1, -1, -2, 1, 3))
        ts = start + rng.randint(0, 29 * H) if rng.random() < 0.3 else start + k * 60_000
        conn.execute(
            "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor, node_id,"
            " event_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, ts, sku, f"sensor:{lane_id}", qty, "sensor_pick" if qty < 0 else "sensor_put",
             f"node:{node}:ev:{seq[node]}", f"node:{node}", node, seq[node]),
        )  # fmt: skip
    for mid in rng.sample(range(1, 601), 20):  # staff reversals, dated when entered
        loc, sku, qty, reason = conn.execute(
            "SELECT location, sku, qty, reason FROM movements WHERE id = ?", (mid,)
        ).fetchone()
        conn.execute(
            "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor, reverses_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'staff', ?)",
            (start + 29 * H + mid, start + 29 * H, sku, loc, -qty, reason, f"reversal:{mid}", mid),
        )
    for k in range(200):  # sales from the lanes, some reversed (entered after or before what they reverse)
        lane_id, _node, _idx, sku = rng.choice(lanes[:3])
        ts = start + rng.randint(0, 40 * H)
        conn.execute(
            "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'pos')",
            (ts, ts, sku, f"lane:{lane_id}", -rng.randint(1, 3), rng.choice(("sale", "order_pick")), f"sale:{k}"),
        )
        if k % 9 == 0:
            mid, qty, reason = conn.execute("SELECT id, qty, reason FROM movements ORDER BY id DESC LIMIT 1").fetchone()
            at = ts + rng.randint(-5 * H, 5 * H)
            conn.execute(
                "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor,"
                " reverses_id) VALUES (?, ?, ?, ?, ?, ?, ?, 'staff', ?)",
                (at, at, sku, f"lane:{lane_id}", -qty, reason, f"reversal:{mid}", mid),
            )
    conn.execute("COMMIT")
    conn.close()
    assert ledger_schema.open_and_migrate(db, MIGRATIONS) == (10, MIGRATIONS[-1].version)
    conn = sqlite3.connect(db)
    try:
        check_tables(conn)
        check_sales(conn, rng, start + 20 * H)
        check_reports(conn, rng, start + 29 * H)
        assert conn.execute("SELECT count(*) FROM lane_outages").fetchone()[0] > 0  # the figures were not trivial
    finally:
        conn.close()

    async def more() -> None:
        async with LedgerService(db, migrations=MIGRATIONS, synchronous="NORMAL", prune_interval_s=None) as ledger:
            w = Writer(ledger, rng, start + 29 * H)
            w.seq.update({1: 400, 2: 400})
            for _ in range(4):
                await w.burst(40, spread_h=10.0)
            w.sensor_ids += list(range(1, 601))
            await w.reverse_some(5)

    asyncio.run(more())
    conn = sqlite3.connect(db)
    try:
        check_tables(conn)
        check_reports(conn, rng, start + 30 * H)
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------- units sold


def expected_sold_hours(conn: sqlite3.Connection) -> set[tuple[Any, ...]]:
    units: dict[tuple[str, str, int], int] = defaultdict(int)
    for sku, loc, qty, ts, orig in conn.execute(
        "SELECT m.sku, m.location, m.qty, m.ts_ms, o.ts_ms FROM movements AS m LEFT JOIN movements AS o"
        " ON o.id = m.reverses_id WHERE m.reason IN ('sale', 'order_pick')"
    ):
        if orig is not None and ts < orig:
            continue
        units[(sku, loc, (ts if orig is None else orig) // H)] -= qty
    out, totals = set(), defaultdict(int)
    for key in sorted(units):
        totals[key[:2]] += units[key]
        out.add((*key, units[key], totals[key[:2]]))
    return out


def expected_sold_totals(hours: set[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """Per SKU and location: the first and last hour of its ``sold_hours`` and their units' sum."""
    pairs: dict[tuple[str, str], list[int]] = {}
    for sku, loc, hour, units, _total in hours:
        first, last, total = pairs.get((sku, loc), [hour, hour, 0])
        pairs[(sku, loc)] = [min(first, hour), max(last, hour), total + units]
    return {(*key, *value) for key, value in pairs.items()}


def check_sales(conn: sqlite3.Connection, rng: random.Random, around: int) -> None:
    hours = expected_sold_hours(conn)
    assert set(conn.execute("SELECT * FROM sold_hours")) == hours
    assert set(conn.execute("SELECT * FROM sold_totals")) == expected_sold_totals(hours)
    ends = [around, around - 3 * H + 1, around + 50 * H, around - 30 * H]
    for end in ends + [rng.randint(around - 60 * H, around + 60 * H) for _ in range(8)]:
        for p in (metrics.period(1, end), metrics.period(7, end), Period(end - rng.randint(1, 5 * H), end, 1)):
            sold = metrics.sales(conn, p)
            assert sold == sales_by_scan(conn, p), (p, end)
            some = set(rng.sample(SKUS, 2))  # the reorder list reads the SKUs it shows only
            assert metrics.sales(conn, p, some) == {k: n for k, n in sold.items() if k[0] in some}, (p, end)


def test_units_sold_equal_the_scan_of_every_sale(tmp_path: Path) -> None:
    rng = random.Random(11)

    async def run() -> None:
        db = tmp_path / "s.db"
        async with LedgerService(db, migrations=MIGRATIONS, synchronous="NORMAL", prune_interval_s=None) as ledger:
            await _setup(ledger)
            base = now_ms()
            for sku in SKUS:
                await ledger.record_receipt(sku, 10_000, actor="t", ref=f"r-{sku}", ts=base - 100 * H)
            ids: list[int] = []
            for k in range(300):
                sku = rng.choice(SKUS)
                ts = base + rng.randint(-48 * H, 48 * H)  # late POS data and sales dated ahead
                if rng.random() < 0.3:  # from a lane
                    lane = rng.choice(("A1", "A2", "B1", "B2"))
                    r = await ledger.record_sale(
                        sku, rng.randint(1, 3), actor="pos", ref=f"s{k}", ts=ts, location=f"lane:{lane}"
                    )
                elif rng.random() < 0.5:
                    r = await ledger.record_sale(sku, rng.randint(1, 3), actor="pos", ref=f"s{k}", ts=ts)
                else:
                    r = await ledger.record_order_pick(sku, rng.randint(1, 3), f"o{k}", actor="wms", ref=f"o{k}", ts=ts)
                ids += r.movement_ids
                if rng.random() < 0.15 and ids:  # reversals entered now: after, or before, what they reverse
                    mid = ids.pop(rng.randrange(len(ids)))
                    await ledger.reverse(mid, actor="staff", why="keyed twice")
                if k % 60 == 59:
                    conn = sqlite3.connect(db)
                    try:
                        check_sales(conn, rng, base)
                    finally:
                        conn.close()
            conn = sqlite3.connect(db)
            try:  # both kinds of reversal were compared
                late = conn.execute(
                    "SELECT sum(r.ts_ms < o.ts_ms), sum(r.ts_ms >= o.ts_ms) FROM movements AS r JOIN movements AS o"
                    " ON o.id = r.reverses_id"
                ).fetchone()
                assert late[0] and late[1], late
            finally:
                conn.close()

    asyncio.run(run())
    # the migration builds the same table from the movements
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        conn.execute("BEGIN")
        sold_hours.rebuild(conn)
        check_sales(conn, rng, now_ms())
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_movements_in_the_newest_millisecond_extend_the_stretches_without_reading_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog a node delivers at once lands in its lane's newest millisecond: the stretches go on from the
    lane's row, read back only when a count that was above zero in that millisecond drops to zero or below (a
    stretch that ended there goes on). Each step is checked against the recomputation."""
    replays: list[int] = []
    replay = lane_activity._replay

    async def counted(*args: Any) -> Any:
        replays.append(args[3])
        return await replay(*args)

    monkeypatch.setattr(lane_activity, "_replay", counted)
    t0 = now_ms() - 10 * H
    t1, t2, t3 = t0 + 60_000, t0 + 120_000, t0 + 180_000
    steps = [  # (ts, units) per batch, one batch at a time; then the stretches the table must hold
        ([(t0, 2)], set(), None),
        ([(t1, -3)], set(), t1),  # out from t1
        ([(t1, 2)], set(), None),  # in t1's millisecond it came back: there never was a stretch
        ([(t1, -5)], set(), t1),  # above zero in t1 -> below: read back
        ([(t1, 10), (t1, -1)], set(), None),  # back above zero in the same millisecond again
        ([(t2, -7)], set(), t2),
        ([(t3, -1), (t3, 5)], {(t2, t3)}, None),  # ended at t3
        ([(t3, -4)], set(), t2),  # the stretch that ended at t3 goes on: read back
        ([(t3, -1), (t3 + 1, 9)], {(t2, t3 + 1)}, None),  # below zero in t3, a later millisecond ends it
    ]

    async def run() -> None:
        db = tmp_path / "l.db"
        async with LedgerService(db, migrations=MIGRATIONS, synchronous="NORMAL", prune_interval_s=None) as ledger:
            await _setup(ledger)
            seq = 0
            for moves, ended, since in steps:
                items = []
                for ts, units in moves:
                    seq += 1
                    kind = KIND_PUT if units > 0 else KIND_PICK
                    items.append(SensorEvent(1, seq, 0, kind, units, units * 100, 90, ts))
                await asyncio.gather(*(ledger.submit(i) for i in items))
                conn = sqlite3.connect(db)
                try:
                    check_tables(conn)
                    got = set(conn.execute("SELECT from_ts, to_ts FROM lane_outages WHERE location = 'sensor:A1'"))
                    row = conn.execute("SELECT out_since FROM lane_activity WHERE location = 'sensor:A1'").fetchone()
                    assert (got, row[0]) == (ended, since), moves
                finally:
                    conn.close()

    asyncio.run(run())
    assert replays == [t1, t3]  # only where a count above zero in the newest millisecond dropped
