"""Read-only access to the ledger: stock, movements, counts, alerts, nodes, audit.

``LedgerReader`` opens its own read-only connection (``mode=ro``, ``query_only``), so readers never block the
writer and never write. In WAL mode each statement sees one committed state; ``async with reader.snapshot() as
snap`` holds one read transaction so that several queries see the *same* committed state (e.g. a page showing
stock and the movements that led to it). A reader is meant for one task at a time; open one per consumer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiosqlite

from hub.ledger.identity import LAST_RESTORE_SQL, RESTORED_SQL, RestorePoint, restore_point
from hub.ledger.lane_activity import UNDER_NO_SKU
from hub.ledger.models import (
    Alert,
    AlertStatus,
    AuditEntry,
    BookBalance,
    Lane,
    Movement,
    MovementPage,
    NodeState,
    ObservedBalance,
    PhysicalCount,
    Reason,
    Sku,
    sensor_location,
)

MOVEMENT_COLUMNS = (
    "id, ts_ms, recorded_ms, sku, location, qty, reason, source_ref, leg, actor, note, reverses_id,"
    " node_id, event_seq, weight_delta_dg, confidence"
)
ALERT_COLUMNS = (
    "id, kind, cause_key, status, opened_ms, acknowledged_ms, acknowledged_by, resolved_ms, resolved_by,"
    " resolution, resolution_movement_id, evidence"
)
NODE_COLUMNS = (
    "node_id, label, key_id, fw_version, first_seen_ms, last_seen_ms, last_uplink_seq, downlink_session,"
    " downlink_seq, highest_contiguous_event_seq"
)
COUNT_COLUMNS = (
    "id, ts_ms, recorded_ms, sku, location, book_qty, counted_qty, actor, source_ref, adjustment_movement_id"
)
SKU_COLUMNS = "sku, name, unit_weight_dg, spread_permille, reorder_point, reorder_qty, capacity, gtin"

# The consistency invariant: every balance equals the sum of its movements (sensor rows of unassigned lanes
# carry no SKU and have no balance). Returns the (sku, location, balance, sum) rows that disagree.
CONSISTENCY_SQL = """
SELECT sku, location, b, m FROM (
    SELECT s.sku, s.location, coalesce(b.qty, 0) AS b, s.total AS m
    FROM (SELECT sku, location, sum(qty) AS total FROM movements WHERE sku IS NOT NULL
          GROUP BY sku, location) AS s
    LEFT JOIN balances AS b ON b.sku = s.sku AND b.location = s.location
    UNION ALL
    SELECT b.sku, b.location, b.qty, 0 FROM balances AS b
    WHERE NOT EXISTS (SELECT 1 FROM movements AS m WHERE m.sku = b.sku AND m.location = b.location)
) WHERE b != m
"""


def movement_from_row(r: Sequence[Any]) -> Movement:
    return Movement(
        id=r[0],
        ts_ms=r[1],
        recorded_ms=r[2],
        sku=r[3],
        location=r[4],
        qty=r[5],
        reason=Reason(r[6]),
        source_ref=r[7],
        leg=r[8],
        actor=r[9],
        note=r[10],
        reverses_id=r[11],
        node_id=r[12],
        event_seq=r[13],
        weight_delta_dg=r[14],
        confidence=r[15],
    )


def alert_from_row(r: Sequence[Any]) -> Alert:
    return Alert(
        id=r[0],
        kind=r[1],
        cause_key=r[2],
        status=AlertStatus(r[3]),
        opened_ms=r[4],
        acknowledged_ms=r[5],
        acknowledged_by=r[6],
        resolved_ms=r[7],
        resolved_by=r[8],
        resolution=r[9],
        resolution_movement_id=r[10],
        evidence=json.loads(r[11]),
    )


def node_from_row(r: Sequence[Any]) -> NodeState:
    return NodeState(*r)


def count_from_row(r: Sequence[Any]) -> PhysicalCount:
    return PhysicalCount(*r)


def sku_from_row(r: Sequence[Any]) -> Sku:
    return Sku(*r)


def _where(clauses: Iterable[tuple[str, Any]]) -> tuple[str, list[Any]]:
    parts, params = [], []
    for sql, value in clauses:
        if value is not None:
            parts.append(sql)
            params.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


# ------------------------------------------------------------------------------ query definitions, shared
# One definition (SQL and row mapper) per read that more than one reader makes: LedgerReader below (aiosqlite)
# and the status page's per-request sqlite3 connection (hub/web/db.py: fetch_all / fetch_one) run the same ones.

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """``sql`` with ``{where}`` where optional filters go (a query with ``{where}`` takes its parameters from the
    filters only); ``row`` maps one result row."""

    sql: str
    row: Callable[[Sequence[Any]], T]

    def bind(self, params: Sequence[Any] = (), *, where: Iterable[tuple[str, Any]] = ()) -> tuple[str, list[Any]]:
        """The statement and its parameters; ``where``: (condition, value) pairs, those with a None value left out."""
        clause, values = _where(where)
        return self.sql.replace("{where}", clause), [*params, *values]


def _int(r: Sequence[Any]) -> int:
    return int(r[0])


def lane_and_sku_from_row(r: Sequence[Any]) -> tuple[Lane, Sku | None]:
    return Lane(r[0], r[1], r[2], r[3]), (sku_from_row(r[4:]) if r[4] is not None else None)


ALERT = Query(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?", alert_from_row)
SKUS = Query(f"SELECT {SKU_COLUMNS} FROM skus{{where}} ORDER BY sku", sku_from_row)
LANES = Query(
    "SELECT lane_id, node_id, lane_index, sku FROM lanes{where} ORDER BY node_id, lane_index", lambda r: Lane(*r)
)
# a lane with its SKU's record (None: unassigned)
LANES_WITH_SKU = Query(
    "SELECT l.lane_id, l.node_id, l.lane_index, l.sku,"
    f" {', '.join('s.' + c.strip() for c in SKU_COLUMNS.split(','))}"
    " FROM lanes AS l LEFT JOIN skus AS s ON s.sku = l.sku{where} ORDER BY l.node_id, l.lane_index",
    lane_and_sku_from_row,
)
NODES = Query(f"SELECT {NODE_COLUMNS} FROM nodes{{where}} ORDER BY node_id", node_from_row)
BALANCE = Query("SELECT qty FROM balances WHERE sku = ? AND location = ?", _int)  # no row: nothing was booked there
BOOK_TOTAL = Query("SELECT coalesce(sum(qty), 0) FROM book_stock WHERE sku = ?", _int)
BOOK_STOCK = Query("SELECT sku, location, qty FROM book_stock{where} ORDER BY sku, location", lambda r: BookBalance(*r))
OBSERVED_STOCK = Query(
    "SELECT lane_id, sku, qty FROM observed_stock{where} ORDER BY lane_id, sku", lambda r: ObservedBalance(*r)
)
# The units booked at a lane's sensor location under no SKU (what a node counted on a lane nobody assigned: in no
# balance, so not in observed_stock), read through the lane's spans; parameters ``no_sku_params(lane_id)``. The
# shelf page and ``ledger stock`` (``LedgerReader.no_sku_stock``) read it.
NO_SKU_UNITS = Query(UNDER_NO_SKU, _int)


def no_sku_params(lane_id: str) -> tuple[str]:
    """``NO_SKU_UNITS``' parameters: the lane's sensor location."""
    return (sensor_location(lane_id),)


class LedgerReader:
    """Queries on a read-only connection. Use ``await LedgerReader.open(path)`` or ``async with``."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, path: Path | str, *, busy_timeout_ms: int = 5000) -> LedgerReader:
        uri = f"file:{Path(path).resolve()}?mode=ro"
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000)
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await conn.execute("PRAGMA query_only = ON")
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> LedgerReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[LedgerReader]:
        """Every query inside sees the same committed state (one read transaction)."""
        await self._conn.execute("BEGIN")
        try:
            # A read transaction starts at its first read: take it now.
            await self._conn.execute_fetchall("SELECT 1 FROM schema_version LIMIT 1")
            yield self
        finally:
            await self._conn.execute("COMMIT")

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def _run(self, query: Query[T], params: Sequence[Any] = (), **where: Any) -> list[T]:
        """``query`` with ``params``, filtered by ``where`` (column = value, None: no filter)."""
        sql, bound = query.bind(params, where=((f"{column} = ?", value) for column, value in where.items()))
        return [query.row(r) for r in await self._all(sql, bound)]

    # ------------------------------------------------------------------------------------------------ stock

    async def book_stock(self, sku: str | None = None, location: str | None = None) -> list[BookBalance]:
        """Book stock per (SKU, book location), including zero balances of locations that ever held the SKU."""
        return await self._run(BOOK_STOCK, sku=sku, location=location)

    async def book_total(self, sku: str) -> int:
        """Everything the store owns of a SKU, all book locations together."""
        return (await self._run(BOOK_TOTAL, (sku,)))[0]

    async def observed_stock(self, lane_id: str | None = None, sku: str | None = None) -> list[ObservedBalance]:
        """What the sensors observe per lane (the separate sensor ledger), per SKU the lane has held."""
        return await self._run(OBSERVED_STOCK, lane_id=lane_id, sku=sku)

    async def no_sku_stock(self) -> list[tuple[str, int]]:
        """``(lane_id, units)`` of the lanes with no SKU whose nodes counted units on them (booked under no SKU, so
        in no ``observed_stock``), by node and lane index; a lane at 0 is left out. Assigning the lane moves them to
        its SKU (``hub.ledger.postings.settle``)."""
        out = []
        for lane in await self._run(LANES):
            if lane.sku is None and (units := (await self._run(NO_SKU_UNITS, no_sku_params(lane.lane_id)))[0]):
                out.append((lane.lane_id, units))
        return out

    async def balance(self, sku: str, location: str) -> int:
        rows = await self._run(BALANCE, (sku, location))
        return rows[0] if rows else 0

    async def consistency_errors(self) -> list[tuple[str, str, int, int]]:
        """(sku, location, balance, sum of movements) for every balance that disagrees; empty when consistent."""
        return [(r[0], r[1], r[2], r[3]) for r in await self._all(CONSISTENCY_SQL)]

    # -------------------------------------------------------------------------------------------- movements

    async def movements(
        self,
        *,
        sku: str | None = None,
        location: str | None = None,
        reason: Reason | str | None = None,
        actor: str | None = None,
        source_ref: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> MovementPage:
        """Movements in id (= commit) order, filtered; page on with ``after_id=page.next_after_id``.

        ``since_ms`` / ``until_ms`` filter on the business time ``ts_ms`` (inclusive / exclusive)."""
        limit = max(1, min(int(limit), 1000))
        where, params = _where(
            (
                ("sku = ?", sku),
                ("location = ?", location),
                ("reason = ?", str(reason) if reason is not None else None),
                ("actor = ?", actor),
                ("source_ref = ?", source_ref),
                ("ts_ms >= ?", since_ms),
                ("ts_ms < ?", until_ms),
                ("id > ?", after_id),
            )
        )
        rows = await self._all(
            f"SELECT {MOVEMENT_COLUMNS} FROM movements{where} ORDER BY id LIMIT ?", [*params, limit + 1]
        )
        items = [movement_from_row(r) for r in rows[:limit]]
        return MovementPage(items, items[-1].id if len(rows) > limit else None)

    async def movement(self, movement_id: int) -> Movement | None:
        rows = await self._all(f"SELECT {MOVEMENT_COLUMNS} FROM movements WHERE id = ?", (movement_id,))
        return movement_from_row(rows[0]) if rows else None

    async def movement_count(self) -> int:
        return int((await self._all("SELECT count(*) FROM movements"))[0][0])

    # ------------------------------------------------------------------------------------------- reference

    async def skus(self) -> list[Sku]:
        return await self._run(SKUS)

    async def sku(self, sku: str) -> Sku | None:
        rows = await self._run(SKUS, sku=sku)
        return rows[0] if rows else None

    async def lanes(self, node_id: int | None = None) -> list[Lane]:
        return await self._run(LANES, node_id=node_id)

    async def nodes(self) -> list[NodeState]:
        return await self._run(NODES)

    async def node(self, node_id: int) -> NodeState | None:
        rows = await self._run(NODES, node_id=node_id)
        return rows[0] if rows else None

    async def counts(self, sku: str | None = None, limit: int = 100) -> list[PhysicalCount]:
        where, params = _where((("sku = ?", sku),))
        rows = await self._all(
            f"SELECT {COUNT_COLUMNS} FROM physical_counts{where} ORDER BY id DESC LIMIT ?", [*params, limit]
        )
        return [count_from_row(r) for r in rows]

    async def alerts(
        self, status: AlertStatus | str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Alert]:
        where, params = _where((("status = ?", str(status) if status else None), ("kind = ?", kind)))
        rows = await self._all(f"SELECT {ALERT_COLUMNS} FROM alerts{where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [alert_from_row(r) for r in rows]

    async def alert(self, alert_id: int) -> Alert | None:
        rows = await self._run(ALERT, (alert_id,))
        return rows[0] if rows else None

    async def audit(self, *, after_id: int | None = None, limit: int = 100) -> list[AuditEntry]:
        where, params = _where((("id > ?", after_id),))
        rows = await self._all(
            f"SELECT id, ts_ms, actor, action, details, origin FROM audit{where} ORDER BY id LIMIT ?",
            [*params, limit],
        )
        return [AuditEntry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    async def schema_version(self) -> int:
        return int((await self._all("SELECT max(version) FROM schema_version"))[0][0])

    # ------------------------------------------------------------------- the node link's state (hub.link)

    async def events_above(self, node_id: int, event_seq: int) -> set[int]:
        """Stored event_seqs of a node above ``event_seq`` (the ledger's marks after a restart): its weight events
        and its tag events share the sequence."""
        rows = await self._all(
            "SELECT event_seq FROM movements WHERE node_id = ? AND event_seq > ?"
            " UNION SELECT event_seq FROM tag_events WHERE node_id = ? AND event_seq > ?",
            (node_id, event_seq, node_id, event_seq),
        )
        return {int(r[0]) for r in rows}

    async def assigned_lanes(self, node_id: int) -> list[AssignedLane]:
        """A node's lanes with their SKU's unit weight and spread (what the hub sends after every hello)."""
        rows = await self._all(
            "SELECT l.lane_index, s.sku, s.unit_weight_dg, s.spread_permille FROM lanes AS l"
            " JOIN skus AS s ON s.sku = l.sku WHERE l.node_id = ? ORDER BY l.lane_index",
            (node_id,),
        )
        return [AssignedLane(*r) for r in rows]

    async def restore_point(self) -> RestorePoint | None:
        """The restore from a backup that began this incarnation, with each node's mark in the backup (``identity``);
        None when there is none."""
        identity = await self._all(RESTORED_SQL)
        details = await self._all(LAST_RESTORE_SQL) if identity else []
        return restore_point(identity[0] if identity else None, details[0][0] if details else None)

    async def sensor_tallies(self) -> dict[tuple[int, int], tuple[int, int]]:
        """``SENSOR_TALLIES``, read: run it at start, then keep the figures up to date from committed outcomes."""
        return sensor_tallies_of(await self._all(SENSOR_TALLIES))


# Per (node, lane index): the lane's counter reference, the units the nodes' own reports booked for it (events and
# the gaps booked from their counters, whichever node booked them, under whatever SKU; not the staff corrections nor
# the moves of the lane's units to its SKU, which have no node: hub/ledger/postings/lanes.py, settle.py) and the
# highest event_seq among them of the node the lane has now (a lane taken over from a replaced node starts with none
# of the new node's). The lane's units are all its SKU's (settle.py), so its observed stock is this plus the staff
# corrections. One pass over the sensor movements, grouped by
# location and node (a temporary b-tree: about a quarter slower than grouping by location alone on a million rows).
SENSOR_TALLIES = (
    "SELECT l.node_id, l.lane_index, sum(t.qty), coalesce(max(CASE WHEN t.node_id = l.node_id THEN"
    " t.max_event END), 0) FROM (SELECT location, node_id, coalesce(sum(qty), 0) AS qty,"
    " coalesce(max(event_seq), 0) AS max_event FROM movements WHERE location GLOB 'sensor:*'"
    " AND node_id IS NOT NULL GROUP BY location, node_id) AS t JOIN lanes AS l ON t.location = 'sensor:' || l.lane_id"
    " GROUP BY l.node_id, l.lane_index"
)


def sensor_tallies_of(rows: Iterable[Sequence[Any]]) -> dict[tuple[int, int], tuple[int, int]]:
    """``SENSOR_TALLIES``' rows as (node, lane index) -> (units, highest event_seq of the lane's node)."""
    return {(int(r[0]), int(r[1])): (int(r[2]), int(r[3])) for r in rows}


@dataclass(frozen=True, slots=True)
class AssignedLane:
    lane_index: int
    sku: str
    unit_weight_dg: int
    spread_permille: int
