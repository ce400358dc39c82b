"""What the publisher reads and writes in the ledger database (``hub.fleet.schema``).

* ``FleetReader``: a read-only connection (``mode=ro``, ``query_only``) in a thread of its own. Each call reads and
  encodes one message there (``json.dumps`` of a batch takes about 2 ms per 500 movements): the hub's event loop
  never parses, encodes or waits for SQLite on the publisher's behalf, and the ledger's writer is never involved.
* ``advance`` / ``rewind`` / ``adopt``: the only writes, each one transaction of the ledger's writer
  (``LedgerService.transact``), queued behind the ingest batches like any other work, never a second writer.

Every message carries the ledger's incarnation (``hub.ledger.identity``), read once: it changes only by a restore,
which cannot happen while the hub has the ledger open.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hub.fleet import messages
from hub.ledger.postings import Tx
from hub.ledger.service import LedgerService

T = TypeVar("T")
log = logging.getLogger("hub.fleet.publisher")

MOVEMENTS_AFTER = f"SELECT {', '.join(messages.MOVEMENT_COLUMNS)} FROM movements WHERE id > ? ORDER BY id LIMIT ?"
ALERTS_AFTER = (
    "SELECT a.id, a.kind, a.cause_key, a.status, a.opened_ms, a.acknowledged_ms, a.acknowledged_by, a.resolved_ms,"
    " a.resolved_by, a.resolution, a.resolution_movement_id, o.rev"
    " FROM fleet_outbox AS o JOIN alerts AS a ON a.id = o.alert_id WHERE o.rev > ? ORDER BY o.rev LIMIT ?"
)
SNAPSHOT_SKUS = "SELECT sku, name, unit_weight_dg, reorder_point, reorder_qty, capacity, gtin FROM skus ORDER BY sku"
SNAPSHOT_LANES = (
    "SELECT l.lane_id, l.node_id, l.lane_index, l.sku, r.count, r.weight_dg, r.ts_ms FROM lanes AS l"
    " LEFT JOIN lane_readings AS r ON r.lane_id = l.lane_id"
    " AND r.ts_ms = (SELECT max(ts_ms) FROM lane_readings WHERE lane_id = l.lane_id) ORDER BY l.lane_id"
)
SNAPSHOT_NODES = "SELECT node_id, label, fw_version, last_seen_ms FROM nodes ORDER BY node_id"
SNAPSHOT_BOOK = "SELECT sku, location, qty FROM book_stock ORDER BY sku, location"
CURSOR_STATE = (
    "SELECT c.movements_acked, c.incarnation, i.incarnation, (SELECT coalesce(max(id), 0) FROM movements)"
    " FROM fleet_cursor AS c, ledger_identity AS i"
)
REQUEUE_ALERTS = (
    "INSERT INTO fleet_outbox (alert_id) SELECT id FROM alerts WHERE id NOT IN (SELECT alert_id FROM fleet_outbox)"
    " ORDER BY id"
)


@dataclass(frozen=True, slots=True)
class Batch:
    """One encoded message: ``last`` is the highest movement id (movements) or rev (alerts) it carries, ``revs``
    the outbox revs to delete once it is acknowledged."""

    kind: messages.Kind
    payload: bytes
    first: int = 0
    last: int = 0
    count: int = 0
    revs: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far the publisher lags: what the status shows."""

    last_movement_id: int  # the ledger's newest movement
    acked: int  # the cursor it was read for
    oldest_unsent_ms: int | None  # recorded_ms of the first movement after ``acked`` (None: nothing waits)
    alerts_waiting: int  # outbox rows


@dataclass(frozen=True, slots=True)
class CursorState:
    """The stored cursor and the incarnation it counts in, against the ledger's own."""

    acked: int
    cursor_incarnation: int
    incarnation: int  # the ledger's (hub.ledger.identity)
    last_movement_id: int


class FleetReader:
    """The publisher's reads, each in its own read transaction on one read-only connection in one thread."""

    def __init__(self, database: Path | str, hub: str, *, busy_timeout_ms: int = 5000) -> None:
        self.database = Path(database)
        self.hub = hub
        self.busy_timeout_ms = busy_timeout_ms
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-reader")
        self._conn: sqlite3.Connection | None = None
        self._incarnation: int | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = f"file:{self.database.resolve()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA query_only = ON")
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await self._call(shut)
        finally:
            self._pool.shutdown(wait=False)

    # ------------------------------------------------------------------------------------------------ reads

    async def cursor(self) -> int:
        return await self._call(
            lambda: int(self._db().execute("SELECT movements_acked FROM fleet_cursor").fetchone()[0])
        )

    async def state(self) -> CursorState:
        def read() -> CursorState:
            state = CursorState(*map(int, self._db().execute(CURSOR_STATE).fetchone()))
            self._incarnation = state.incarnation
            return state

        return await self._call(read)

    def incarnation(self) -> int:
        """The ledger's incarnation (read once; in the reader's thread)."""
        if self._incarnation is None:
            self._incarnation = int(self._db().execute("SELECT incarnation FROM ledger_identity").fetchone()[0])
        return self._incarnation

    async def movements(self, after: int, limit: int, sent_ms: int) -> Batch | None:
        """The movements after id ``after`` (at most ``limit``), encoded; None when there are none."""
        return await self._call(self._movements, after, limit, sent_ms)

    def _movements(self, after: int, limit: int, sent_ms: int) -> Batch | None:
        rows = self._db().execute(MOVEMENTS_AFTER, (after, limit)).fetchall()
        if not rows:
            return None
        payload = messages.encode_movements(self.hub, rows, sent_ms, incarnation=self.incarnation())
        return Batch("movements", payload, rows[0][0], rows[-1][0], len(rows))

    async def alerts(self, after_rev: int, limit: int, sent_ms: int) -> Batch | None:
        """The alerts whose outbox rev is above ``after_rev`` (at most ``limit``), oldest change first."""
        return await self._call(self._alerts, after_rev, limit, sent_ms)

    def _alerts(self, after_rev: int, limit: int, sent_ms: int) -> Batch | None:
        rows = self._db().execute(ALERTS_AFTER, (after_rev, limit)).fetchall()
        if not rows:
            return None
        revs = tuple(int(r[-1]) for r in rows)
        payload = messages.encode_alerts(self.hub, rows, sent_ms, incarnation=self.incarnation())
        return Batch("alerts", payload, revs[0], revs[-1], len(rows), revs)

    async def snapshot(self, sent_ms: int) -> Batch:
        return await self._call(self._snapshot, sent_ms)

    def _snapshot(self, sent_ms: int) -> Batch:
        db = self._db()
        incarnation = self.incarnation()
        db.execute("BEGIN")  # one read transaction: the book is as of last_movement_id
        try:
            last = int(db.execute("SELECT coalesce(max(id), 0) FROM movements").fetchone()[0])
            payload = messages.encode_snapshot(
                self.hub,
                sent_ms,
                incarnation=incarnation,
                last_movement_id=last,
                skus=db.execute(SNAPSHOT_SKUS).fetchall(),
                lanes=db.execute(SNAPSHOT_LANES).fetchall(),
                nodes=db.execute(SNAPSHOT_NODES).fetchall(),
                book=db.execute(SNAPSHOT_BOOK).fetchall(),
            )
        finally:
            db.execute("COMMIT")
        return Batch("snapshot", payload, 0, last, 1)

    async def backlog(self, acked: int) -> Backlog:
        """How far the ledger is ahead of ``acked`` (the publisher's cursor, maybe ahead of its write)."""
        return await self._call(self._backlog, acked)

    def _backlog(self, acked: int) -> Backlog:
        db = self._db()
        db.execute("BEGIN")
        try:
            last = int(db.execute("SELECT coalesce(max(id), 0) FROM movements").fetchone()[0])
            row = db.execute("SELECT recorded_ms FROM movements WHERE id > ? ORDER BY id LIMIT 1", (acked,)).fetchone()
            waiting = int(db.execute("SELECT count(*) FROM fleet_outbox").fetchone()[0])
        finally:
            db.execute("COMMIT")
        return Backlog(last, acked, int(row[0]) if row else None, waiting)


# ---------------------------------------------------------------------------------------------------- writes


async def advance(tx: Tx, acked: int, revs: Sequence[int]) -> None:
    """The broker acknowledged every movement up to ``acked`` and the alert states of ``revs``: move the cursor
    (only forwards: a rewind committed before lowers it on purpose, and ``acked`` was taken after it) and delete
    those outbox rows (an alert changed since has a newer rev, and stays)."""
    await tx.conn.execute(
        "UPDATE fleet_cursor SET movements_acked = ?, acked_ms = ? WHERE movements_acked < ?", (acked, tx.now_ms, acked)
    )
    for start in range(0, len(revs), 500):
        chunk = revs[start : start + 500]
        await tx.conn.execute(f"DELETE FROM fleet_outbox WHERE rev IN ({', '.join('?' * len(chunk))})", chunk)


async def rewind(tx: Tx, movements_after: int | None, alerts: bool) -> int:
    """Central asked again for every movement after ``movements_after`` (and, with ``alerts``, every alert): lower
    the cursor and queue every alert not waiting already. Returns the cursor as it is now."""
    if movements_after is not None:
        await tx.conn.execute(
            "UPDATE fleet_cursor SET movements_acked = min(movements_acked, ?), rewinds = rewinds + 1",
            (movements_after,),
        )
    if alerts:
        await tx.conn.execute(REQUEUE_ALERTS)
    rows = await tx.rows("SELECT movements_acked FROM fleet_cursor")
    return int(rows[0][0])


async def resume(ledger: LedgerService, state: CursorState) -> int:
    """The cursor to publish from: the stored one; 0 when it counts in another incarnation than the ledger's (restored
    from a backup: its ids repeat ids published for other movements), after writing so (``adopt``)."""
    if state.cursor_incarnation == state.incarnation:
        return state.acked
    await ledger.transact(lambda tx: adopt(tx, state.incarnation))
    log.warning("fleet: the ledger is incarnation %d (restored), the publish cursor was in %d: publishing all %d "
                "movements and every alert again under %d", state.incarnation, state.cursor_incarnation,
                state.last_movement_id, state.incarnation)  # fmt: skip
    return 0


async def adopt(tx: Tx, incarnation: int) -> None:
    """The ledger is another incarnation than the cursor's (it was restored from a backup: its ids repeat ids the
    lost ledger had published for other movements): count from 0 in ``incarnation`` and queue every alert, so the
    whole ledger is published again under it."""
    await tx.conn.execute(
        "UPDATE fleet_cursor SET movements_acked = 0, acked_ms = NULL, incarnation = ?", (incarnation,)
    )
    await tx.conn.execute(REQUEUE_ALERTS)
