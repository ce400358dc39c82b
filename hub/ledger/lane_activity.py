"""What the pages read of the sensor ledger instead of an index entry per sensor movement (issue 13, migration 11).

A sensor movement (a node's event or gap at ``sensor:<lane>``) used to cost an entry in the status page's index
``movements(location, ts_ms, sku, qty)``: on the hot path that was one more B-tree insert per event, scattered over
every lane of the batch. The writer now keeps three small tables instead, written **once per lane per batch** (and
per sensor leg of a staff reversal, the only business posting at a sensor location), in the same transaction as the
movements, by ``record``:

* ``sensor_spans``: per lane, SKU and batch, the ids ``first_id..last_id`` of the batch's movements of that lane and
  SKU (the sensor batch gives them consecutive ids: ``hub.ledger.sensor``) and the range of their ``ts_ms``. A
  lane's movements in a time window are the spans whose time range meets the window (primary key ``(location,
  max_ts, first_id)``), read by id range from ``movements``: ``LANE_ROWS``. Spans of one location never share an id.
* ``lane_activity``: per lane and SKU, the first and last ``ts_ms`` of its movements (the overview's "last change")
  and, while the lane's count of that SKU is at or below zero, since when (``out_since``).
* ``lane_outages``: per lane and SKU, each ended stretch ``[from_ts, to_ts)`` during which its count was at or below
  zero. The count of a SKU on a lane at time t is the sum of its movements there with ``ts_ms <= t``; stretches
  start no earlier than the first movement (before it there is no count), so the out-of-stock time of any period is
  the overlap of these stretches (and the ongoing one) with it: the reports read a few rows per lane instead of
  walking every movement (``hub.web.pages.metrics``).

A movement that is not the newest of its lane and SKU (an event retransmitted after a later one, a backdated
reversal) rewrites the stretches from its time on, from the movements read back through the spans; in time order
(what nodes send) nothing is read back, nor for movements in the newest one's millisecond (a backlog a node
delivers at once) unless they take a count that was above zero in it to zero or below. ``BUILD`` fills the
tables from the movements of an existing ledger (migration 11) and ``rebuild`` does it again (tools that write
movements without the writer). Movements of an unassigned lane (no SKU) get spans only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from hub.ledger.bulk import json_insert, rows_param
from hub.ledger.models import SENSOR_PREFIX, Applied
from hub.ledger.schema import Migration

# (id, ts_ms, sku, location, qty) of movements at sensor locations, as inserted
SensorRow = tuple[int, int, str | None, str, int]

_DDL = (
    """CREATE TABLE sensor_spans (
        location TEXT NOT NULL,
        max_ts INTEGER NOT NULL,
        first_id INTEGER NOT NULL,
        last_id INTEGER NOT NULL,
        min_ts INTEGER NOT NULL,
        sku TEXT,
        PRIMARY KEY (location, max_ts, first_id),
        CHECK (first_id <= last_id AND min_ts <= max_ts)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE lane_activity (
        location TEXT NOT NULL,
        sku TEXT NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        out_since INTEGER,
        PRIMARY KEY (location, sku)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE lane_outages (
        location TEXT NOT NULL,
        sku TEXT NOT NULL,
        from_ts INTEGER NOT NULL,
        to_ts INTEGER NOT NULL,
        PRIMARY KEY (location, sku, from_ts),
        CHECK (from_ts < to_ts)
    ) STRICT, WITHOUT ROWID""",
    "CREATE INDEX lane_outages_to ON lane_outages(to_ts)",
)

# Existing movements: spans are runs of consecutive ids of one location and SKU; stretches from each lane and SKU's
# count after each distinct time (islands of consecutive times at or below zero; the last one, if it runs on, is
# ``out_since``).
BUILD = (
    "WITH r AS (SELECT id, ts_ms, location, sku, id - row_number() OVER (PARTITION BY location, sku ORDER BY id)"
    " AS run FROM movements WHERE location GLOB 'sensor:*')"
    " INSERT INTO sensor_spans (location, max_ts, first_id, last_id, min_ts, sku)"
    " SELECT location, max(ts_ms), min(id), max(id), min(ts_ms), sku FROM r GROUP BY location, sku, run",
    "INSERT INTO lane_activity (location, sku, first_ts, last_ts) SELECT location, sku, min(ts_ms), max(ts_ms)"
    " FROM movements WHERE location GLOB 'sensor:*' AND sku IS NOT NULL GROUP BY location, sku",
    "CREATE TEMP TABLE lane_activity_build AS"
    " WITH g AS (SELECT location, sku, ts_ms, sum(qty) AS q FROM movements"
    "   WHERE location GLOB 'sensor:*' AND sku IS NOT NULL GROUP BY location, sku, ts_ms),"
    " c AS (SELECT location, sku, ts_ms, row_number() OVER w AS k,"
    "   sum(q) OVER (w ROWS UNBOUNDED PRECEDING) <= 0 AS out, lead(ts_ms) OVER w AS next_ts"
    "   FROM g WINDOW w AS (PARTITION BY location, sku ORDER BY ts_ms)),"
    " i AS (SELECT *, k - row_number() OVER (PARTITION BY location, sku, out ORDER BY ts_ms) AS island FROM c)"
    " SELECT location, sku, min(ts_ms) AS from_ts,"
    " CASE WHEN count(next_ts) = count(*) THEN max(next_ts) END AS to_ts"
    " FROM i WHERE out GROUP BY location, sku, island",
    "INSERT INTO lane_outages (location, sku, from_ts, to_ts)"
    " SELECT location, sku, from_ts, to_ts FROM temp.lane_activity_build WHERE to_ts IS NOT NULL",
    "UPDATE lane_activity SET out_since = (SELECT b.from_ts FROM temp.lane_activity_build AS b"
    " WHERE b.location = lane_activity.location AND b.sku = lane_activity.sku AND b.to_ts IS NULL)",
    "DROP TABLE temp.lane_activity_build",
)

LANE_ACTIVITY = Migration(
    11, "sensor spans, lane activity and out-of-stock stretches (written once per lane per batch)", (*_DDL, *BUILD)
)

# A sensor location's movements with ts_ms in [t0, t1] (parameters ?1 location, ?2 t0, ?3 t1; ``{where}`` may use
# ?4 on): the spans that meet the window, then their ids (CROSS JOIN keeps that order). ``{columns}`` of ``m``.
LANE_ROWS = (
    "SELECT {columns} FROM sensor_spans AS s CROSS JOIN movements AS m ON m.id BETWEEN s.first_id AND s.last_id"
    " WHERE s.location = ?1 AND s.max_ts >= ?2 AND s.min_ts <= ?3 AND m.location = ?1"
    " AND m.ts_ms BETWEEN ?2 AND ?3{where}"
)
MAX_TS = 2**62  # later than any movement (ts_ms is checked to be at most this)
# The units booked at a sensor location (?1) under no SKU, of all time: its no-SKU spans, then their ids. NOT INDEXED:
# without it SQLite walks movements_sku_ts for ``sku IS NULL`` (every no-SKU movement of the ledger, per span: seconds
# on a ledger of tens of thousands, inside assign_lane's write transaction) instead of each span's id range.
UNDER_NO_SKU = (
    "SELECT coalesce(sum(m.qty), 0) FROM sensor_spans AS s CROSS JOIN movements AS m NOT INDEXED"
    " ON m.id BETWEEN s.first_id AND s.last_id WHERE s.location = ?1 AND s.sku IS NULL"
    " AND m.location = ?1 AND m.sku IS NULL"
)


def lane_rows_sql(columns: str, where: str = "", order: str = "") -> str:
    """``LANE_ROWS`` with its columns, extra conditions (``" AND m.sku IS ?4"``) and an ORDER BY / LIMIT tail."""
    return LANE_ROWS.format(columns=columns, where=where) + (f" {order}" if order else "")


def rebuild(conn: sqlite3.Connection) -> None:
    """Fill the tables again from the movements, inside the caller's transaction (tools that insert movements
    directly, e.g. a benchmark's ledger built with ``executemany``)."""
    for table in ("sensor_spans", "lane_activity", "lane_outages"):
        conn.execute(f"DELETE FROM {table}")
    for statement in BUILD:
        conn.execute(statement)


# ----------------------------------------------------------------------------------------------- the writer


# A sensor batch's movements by (lane id, SKU): the lane's node, the rows (ts_ms at 0, qty at 1, source ref at 3) and
# the item of each row
Lanes = dict[tuple[str, str | None], tuple[int, list[tuple[Any, ...]], list[int]]]


async def insert(
    conn: aiosqlite.Connection, sql: str, lanes: Lanes, next_id: int, now_ms: int, outcomes: list[Any]
) -> None:
    """Insert a sensor batch's movements lane by lane with ids from ``next_id``, so that every lane's movements of
    one batch have consecutive ids (one span): ``sql`` with ?1 the lanes as JSON [lane_id, sku, first id, node_id,
    rows] and ?2 ``now_ms``. Sets each row's item's outcome to its ``Applied`` and keeps the tables."""
    param: list[tuple[Any, ...]] = []
    spans: list[tuple[Any, ...]] = []
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    mid = next_id
    for (lane_id, sku), (node_id, rows, owners) in lanes.items():
        first = mid
        for row, owner in zip(rows, owners, strict=True):
            outcomes[owner] = Applied(row[3], (mid,))
            mid += 1
        param.append((lane_id, sku, first, node_id, rows))
        location = SENSOR_PREFIX + lane_id
        ts = [r[0] for r in rows]
        spans.append((location, max(ts), first, mid - 1, min(ts), sku))
        if sku is not None:
            groups[(location, sku)] = [(r[0], r[1]) for r in rows]
    await conn.execute(sql, (rows_param(param)[0], now_ms))
    await conn.execute(_INSERT_SPANS, rows_param(spans))
    if groups:
        await _activity(conn, groups)


def spans_of(rows: Sequence[SensorRow]) -> list[tuple[Any, ...]]:
    """Span rows for sensor movements just inserted: one per run of consecutive ids of one location and SKU."""
    out: list[tuple[Any, ...]] = []
    run: list[Any] | None = None  # location, sku, first_id, last_id, min_ts, max_ts
    for mid, ts, sku, location, _qty in sorted(rows, key=lambda r: r[0]):
        if run is not None and run[0] == location and run[1] == sku and run[3] + 1 == mid:
            run[3] = mid
            run[4] = min(run[4], ts)
            run[5] = max(run[5], ts)
            continue
        if run is not None:
            out.append((run[0], run[5], run[2], run[3], run[4], run[1]))
        run = [location, sku, mid, mid, ts, ts]
    if run is not None:
        out.append((run[0], run[5], run[2], run[3], run[4], run[1]))
    return out


def stretches(
    count_before: int, open_since: int | None, moves: Iterable[tuple[int, int]]
) -> tuple[list[tuple[int, int]], int | None]:
    """Replay ``moves`` ((ts_ms, qty), any order) from the count before the first of them: the stretches that ended
    (``[from, to)``) and the start of the one still going on (or None)."""
    by_ts: dict[int, int] = {}
    for ts, qty in moves:
        by_ts[ts] = by_ts.get(ts, 0) + qty
    ended: list[tuple[int, int]] = []
    count = count_before
    for ts in sorted(by_ts):
        count += by_ts[ts]
        if count <= 0 and open_since is None:
            open_since = ts
        elif count > 0 and open_since is not None:
            ended.append((open_since, ts))
            open_since = None
    return ended, open_since


_INSERT_SPANS = json_insert("INSERT INTO sensor_spans (location, max_ts, first_id, last_id, min_ts, sku)", 6)
_UPSERT_ACTIVITY = json_insert(
    "INSERT INTO lane_activity (location, sku, first_ts, last_ts, out_since)",
    5,
    "ON CONFLICT (location, sku) DO UPDATE SET first_ts = excluded.first_ts, last_ts = excluded.last_ts,"
    " out_since = excluded.out_since",
)


async def record(conn: aiosqlite.Connection, rows: Sequence[SensorRow]) -> None:
    """Keep the tables up to date for sensor movements just inserted in the caller's transaction (the balances
    already include them)."""
    if not rows:
        return
    await conn.execute(_INSERT_SPANS, rows_param(spans_of(rows)))
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for _mid, ts, sku, location, qty in rows:
        if sku is not None:
            groups.setdefault((location, sku), []).append((ts, qty))
    if groups:
        await _activity(conn, groups)


async def _activity(conn: aiosqlite.Connection, groups: dict[tuple[str, str], list[tuple[int, int]]]) -> None:
    """Lane activity and stretches of the (location, SKU)s of movements just inserted: their (ts_ms, qty)."""
    keys = list(groups)
    known: dict[tuple[str, str], tuple[int, int, int | None]] = {}
    balance: dict[tuple[str, str], int] = {}
    for location, sku, first_ts, last_ts, out_since, qty in await conn.execute_fetchall(
        f"WITH k(location, sku) AS (VALUES {', '.join('(?, ?)' for _ in keys)})"
        " SELECT k.location, k.sku, a.first_ts, a.last_ts, a.out_since, b.qty FROM k"
        " LEFT JOIN lane_activity AS a ON a.location = k.location AND a.sku = k.sku"
        " LEFT JOIN balances AS b ON b.sku = k.sku AND b.location = k.location",
        [v for key in keys for v in key],
    ):
        if first_ts is not None:
            known[(location, sku)] = (int(first_ts), int(last_ts), out_since)
        balance[(location, sku)] = int(qty or 0)
    activity: list[tuple[Any, ...]] = []
    ended: list[tuple[Any, ...]] = []
    for key, moves in groups.items():
        location, sku = key
        first = min(ts for ts, _ in moves)
        last = max(ts for ts, _ in moves)
        total = balance.get(key, 0)
        before = known.get(key)
        count = total - sum(q for _, q in moves)
        if before is None or first > before[1] or _joins_newest(first, before[1], count, moves):
            # the newest of the lane's movements (or beside the newest, in its millisecond): replay only them
            done, since = stretches(count, None if before is None else before[2], moves)
            done = [(a, b) for a, b in done if a < b]  # a stretch its own millisecond's movements ended never was
            first_ts, last_ts = (first, last) if before is None else (before[0], last)
        else:  # older than the lane's newest: the stretches from ``first`` on are replayed from the movements
            done, since = await _replay(conn, location, sku, first, total, before[2])
            first_ts, last_ts = min(first, before[0]), max(last, before[1])
        activity.append((location, sku, first_ts, last_ts, since))
        ended += [(location, sku, a, b) for a, b in done]
    await conn.execute(_UPSERT_ACTIVITY, rows_param(activity))
    if ended:
        await conn.executemany("INSERT INTO lane_outages (location, sku, from_ts, to_ts) VALUES (?, ?, ?, ?)", ended)


def _joins_newest(first: int, newest: int, count: int, moves: Iterable[tuple[int, int]]) -> bool:
    """Whether movements whose earliest is in the lane's newest millisecond (``first == newest``) extend its
    stretches without reading back: ``count`` (the count after ``newest`` before them) goes on from there, except
    when it was above zero and they take it to zero or below (a stretch that ended in that millisecond goes on:
    ``_replay``). A stretch that began in that millisecond and their units end there is dropped by the caller."""
    if first != newest:
        return False
    return count <= 0 or count + sum(q for ts, q in moves if ts == first) > 0


async def _replay(
    conn: aiosqlite.Connection, location: str, sku: str, t0: int, total: int, out_since: int | None
) -> tuple[list[tuple[int, int]], int | None]:
    """The stretches of (location, sku) from ``t0`` on, from its movements since then; the ended ones that reach
    ``t0`` are deleted (the one it cuts through goes on from where it began)."""
    args = (location, t0, MAX_TS, sku)
    moves = [
        (int(ts), int(qty))
        for ts, qty in await conn.execute_fetchall(lane_rows_sql("m.ts_ms, m.qty", " AND m.sku = ?4"), args)
    ]
    count = total - sum(q for _, q in moves)
    cut = await conn.execute_fetchall(
        "SELECT from_ts FROM lane_outages WHERE location = ? AND sku = ? AND from_ts < ? AND to_ts >= ?",
        (location, sku, t0, t0),
    )
    since = int(next(iter(cut))[0]) if cut else (out_since if out_since is not None and out_since < t0 else None)
    await conn.execute("DELETE FROM lane_outages WHERE location = ? AND sku = ? AND to_ts >= ?", (location, sku, t0))
    return stretches(count, since, moves)
