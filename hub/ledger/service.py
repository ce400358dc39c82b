"""``LedgerService``: the one writer of the ledger database.

Every write goes through one asyncio task that owns the only write connection (aiosqlite; WAL;
``synchronous=FULL`` by default, ``NORMAL`` on request; ``foreign_keys=ON``; ``busy_timeout``), so writes are
serialised in the order they were submitted and never interleave.

* **Sensor items** (``SensorEvent``, ``SensorGap``, ``NodeUpdate``, ``LaneReading``) are batched: the writer
  takes every sensor item already queued (up to ``max_batch``, optionally waiting ``batch_linger_s`` for more)
  and applies them in one transaction. Each caller's future resolves only **after COMMIT** returned, so ingest
  can ack a node exactly when its events are durable. ``submit()`` enqueues without waiting, which is what lets
  many events share one commit; ``apply_sensor_event()`` is ``await submit(...)``.
  If a batch's transaction fails, it is rolled back; after a data error (a constraint) its items are retried one per
  transaction so that a single poisonous item fails alone, after an operational error (locked, I/O, disk full)
  they all fail at once. A failed item's future gets the exception and nothing of it is written.
* **Business operations** (sales, receipts, ..., counts, reversals, SKUs, lanes, alerts, CSV imports) each run in
  their own transaction, in queue order, record their actor, and write the audit trail (see ``postings``).
* **Lane readings** older than ``reading_retention_s`` (8 days) are pruned every ``prune_interval_s`` by the
  writer, in transactions of at most 2,000 deleted rows queued like any other work (``prune_lane_readings``).
  (The status page prunes its own sign-in attempts through ``transact``: hub/web/server.py.)
* **Commit listeners**: ``service.changes.listen(fn)`` calls ``fn(changes)`` on the loop after each commit with
  what the transaction changed (movements' locations, lanes, SKUs, alerts; see ``changes``), collected by TEMP
  triggers on the writer's connection, so no write path can be missed.
* **Readers** use separate read-only connections: ``await service.reader()`` (see ``reader``).
* **Backups**: ``await service.backup(dest)`` and, with a ``BackupPolicy``, on a schedule (see ``backup``); both
  use SQLite's online backup API on their own connection in a thread and never stop the writer.

The service holds ``<db>.lock`` shared while open, so ``smartshelf ledger restore`` refuses to swap the file
under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, overload

import aiosqlite

from hub.ledger import schema
from hub.ledger.backup import BackupInfo, BackupPolicy, backup_database, scheduled_backup
from hub.ledger.changes import ChangeTracker
from hub.ledger.dblock import DbLock
from hub.ledger.imports import ImportKind, ImportReport, ImportTooLarge, import_rows, parse_csv
from hub.ledger.models import (
    BACKROOM,
    Alert,
    Applied,
    ApplyResult,
    CountResult,
    LaneReading,
    LedgerClosed,
    LedgerError,
    NodeUpdate,
    Reason,
    SensorEvent,
    SensorGap,
    ServiceStats,
    Sku,
    now_ms,
    ts_or_now,
)
from hub.ledger.postings import AlertOpened, Tx, WriteOff, check_actor
from hub.ledger.reader import LedgerReader
from hub.ledger.sensor import PRUNE_BATCH_ROWS, READING_RETENTION_MS, SensorItem, apply_batch, prune_readings

log = logging.getLogger(__name__)
T = TypeVar("T")
Timestamp = datetime | int | None  # aware datetime, or ms since the epoch; None = when recorded


@dataclass(slots=True)
class _SensorWork:
    item: SensorItem
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _TxWork:
    fn: Callable[[Tx], Awaitable[Any]]
    future: asyncio.Future[Any]


class _Stop:
    pass


_Work = _SensorWork | _TxWork | _Stop


class _Rejected(Exception):
    """Raised inside an import transaction to roll it back; carries the report."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__("import rejected")
        self.report = report


class LedgerService:
    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: schema.Synchronous = "FULL",
        busy_timeout_ms: int = 5000,
        max_batch: int = 1000,
        batch_linger_s: float = 0.0,
        backups: BackupPolicy | None = None,
        checkpoint_interval_s: float | None = 1.0,
        reading_retention_s: float = READING_RETENTION_MS / 1000,
        prune_interval_s: float | None = 600.0,
    ) -> None:
        if max_batch < 1 or batch_linger_s < 0:
            raise ValueError("max_batch must be >= 1 and batch_linger_s >= 0")
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max_batch
        self.batch_linger_s = batch_linger_s
        self.backup_policy = backups
        self.checkpoint_interval_s = checkpoint_interval_s
        self.reading_retention_s = reading_retention_s
        self.prune_interval_s = prune_interval_s
        self.stats = ServiceStats()
        self.last_backup: BackupInfo | None = None
        self.changes = ChangeTracker()  # commit listeners (hub/ledger/changes.py)
        self._conn: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock: DbLock | None = None
        self._closing = False

    # ----------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> LedgerService:
        """Create or upgrade the database (SchemaError if it is newer or not a ledger) and start the writer."""
        if self._writer is not None:
            return self
        schema.check_sqlite_version()
        self._lock = DbLock(self.path).acquire(exclusive=False)
        try:
            await asyncio.to_thread(
                schema.open_and_migrate, self.path, synchronous=self.synchronous, busy_timeout_ms=self.busy_timeout_ms
            )
            conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
            for stmt in schema.pragmas(synchronous=self.synchronous, busy_timeout_ms=self.busy_timeout_ms):
                await conn.execute(stmt)
            if self.checkpoint_interval_s is not None:
                await conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run beside the writer
            await self.changes.install(conn)
        except BaseException:
            self._lock.release()
            raise
        self._conn = conn
        self._writer = asyncio.create_task(self._run(), name="ledger-writer")
        if self.backup_policy is not None:
            self._tasks.append(asyncio.create_task(self._backup_loop(self.backup_policy), name="ledger-backups"))
        if self.checkpoint_interval_s is not None:
            self._tasks.append(
                asyncio.create_task(self._checkpoint_loop(self.checkpoint_interval_s), name="ledger-checkpoints")
            )
        if self.prune_interval_s is not None:
            self._tasks.append(asyncio.create_task(self._prune_loop(self.prune_interval_s), name="ledger-prune"))
        return self

    async def close(self) -> None:
        """Finish everything already submitted, then close. Later submissions raise LedgerClosed."""
        if self._writer is None or self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queue.put_nowait(_Stop())
        await self._writer
        assert self._conn is not None
        await self._conn.close()
        self._conn = None
        if self._lock is not None:
            self._lock.release()

    async def __aenter__(self) -> LedgerService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------------- writer

    def _enqueue(self, work: _Work) -> None:
        if self._writer is None or self._closing:
            raise LedgerClosed("the ledger service is not running")
        self._queue.put_nowait(work)

    async def _run(self) -> None:
        held: _Work | None = None
        while True:
            work = held if held is not None else await self._queue.get()
            held = None
            if isinstance(work, _Stop):
                return
            try:
                if isinstance(work, _SensorWork):
                    batch = [work]
                    held = self._fill(batch)
                    if held is None and self.batch_linger_s > 0 and len(batch) < self.max_batch:
                        await asyncio.sleep(self.batch_linger_s)
                        held = self._fill(batch)
                    await self._sensor_batch(batch)
                else:
                    await self._business(work)
            except Exception:  # pragma: no cover - the writer must survive anything
                log.exception("ledger writer: unexpected error")

    def _fill(self, batch: list[_SensorWork]) -> _Work | None:
        """Move queued sensor items into ``batch``; return the first non-sensor item met (to run next)."""
        while len(batch) < self.max_batch:
            try:
                work = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
            if not isinstance(work, _SensorWork):
                return work
            batch.append(work)
        return None

    async def _commit(self) -> None:
        assert self._conn is not None
        await self._conn.execute("COMMIT")

    async def _in_tx(self, fn: Callable[[aiosqlite.Connection, int], Awaitable[T]]) -> T:
        conn = self._conn
        assert conn is not None
        await conn.execute("BEGIN IMMEDIATE")
        try:
            result = await fn(conn, now_ms())
            changed = await self.changes.collect(conn)
            await self._commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
        self.stats.transactions += 1
        self.changes.notify(changed)
        return result

    async def _sensor_batch(self, batch: list[_SensorWork]) -> None:
        items = [w.item for w in batch]
        try:
            outcomes = await self._in_tx(lambda conn, now: apply_batch(conn, items, now))
        except Exception as exc:
            self.stats.failed_batches += 1
            if len(batch) == 1 or isinstance(exc, sqlite3.OperationalError):
                # Locked, I/O error, disk full: not caused by one item, so retrying them one by one cannot help.
                log.warning("ledger: %d sensor item(s) failed: %s", len(batch), exc)
                for w in batch:
                    _fail(w.future, exc)
                return
            log.warning("ledger: a batch of %d sensor items failed (%s); retrying them one by one", len(batch), exc)
            for w in batch:
                await self._sensor_batch([w])
            return
        self.stats.sensor_batches += 1
        self.stats.sensor_items += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for w, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, LedgerError):
                _fail(w.future, outcome)
            elif not w.future.done():
                w.future.set_result(outcome)

    async def _business(self, work: _TxWork) -> None:
        try:
            result = await self._in_tx(lambda conn, now: work.fn(Tx(conn, now)))
        except Exception as exc:
            _fail(work.future, exc)
        else:
            if not work.future.done():
                work.future.set_result(result)

    async def _tx(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_TxWork(fn, future))
        return await future

    # ------------------------------------------------------------------------------------------- sensor path

    @overload
    def submit(self, item: SensorEvent | SensorGap) -> asyncio.Future[ApplyResult]: ...
    @overload
    def submit(self, item: NodeUpdate) -> asyncio.Future[None]: ...
    @overload
    def submit(self, item: LaneReading) -> asyncio.Future[bool]: ...  # False: the ledger knows no such lane
    def submit(self, item: SensorItem) -> asyncio.Future[Any]:
        """Queue a sensor item without waiting; the future resolves after the batch holding it committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_SensorWork(item, future))
        return future

    async def apply_sensor_event(
        self,
        node_id: int,
        event_seq: int,
        lane_index: int,
        kind: int,
        count_delta: int,
        weight_delta_dg: int,
        confidence: int,
        observed_ms: int,
        *,
        uplink_seq: int | None = None,
    ) -> ApplyResult:
        """Book one node event in the sensor ledger: ``Applied`` once, ``Duplicate`` on every re-delivery."""
        return await self.submit(
            SensorEvent(
                node_id, event_seq, lane_index, kind, count_delta, weight_delta_dg, confidence, observed_ms, uplink_seq
            )
        )

    async def apply_sensor_gap(self, gap: SensorGap) -> ApplyResult:
        return await self.submit(gap)

    async def update_node(self, update: NodeUpdate) -> None:
        await self.submit(update)

    async def prune_lane_readings(self, before_ms: int | None = None, *, max_rows: int = PRUNE_BATCH_ROWS) -> int:
        """Delete lane readings older than ``before_ms`` (default: the retention before now), at most ``max_rows``
        per transaction, each queued behind the work already submitted. Returns how many rows went."""
        cutoff = before_ms if before_ms is not None else now_ms() - int(self.reading_retention_s * 1000)
        total = 0
        resume: str | None = ""
        while resume is not None:
            deleted, resume = await self._tx(functools.partial(_prune, before_ms=cutoff, start=resume, rows=max_rows))
            total += deleted
            self.stats.readings_pruned += deleted
        return total

    # ---------------------------------------------------------------------------------------- business writes

    async def add_sku(self, sku: Sku, *, actor: str) -> bool:
        return await self._tx(lambda tx: tx.add_sku(sku, actor=actor))

    async def register_node(self, node_id: int, *, actor: str, label: str = "", key_id: str | None = None) -> None:
        await self._tx(lambda tx: tx.register_node(node_id, actor=actor, label=label, key_id=key_id))

    async def assign_lane(
        self, node_id: int, lane_index: int, sku: str | None, *, actor: str, lane_id: str | None = None
    ) -> str:
        return await self._tx(lambda tx: tx.assign_lane(node_id, lane_index, sku, actor=actor, lane_id=lane_id))

    async def record_sale(
        self,
        sku: str,
        qty: int,
        *,
        actor: str,
        ref: str | None = None,
        ts: Timestamp = None,
        location: str | None = None,
    ) -> ApplyResult:
        t = _ts(ts)
        return await self._tx(lambda tx: tx.sale(sku, qty, ts_ms=t, actor=actor, ref=ref, location=location))

    async def record_order_pick(
        self,
        sku: str,
        qty: int,
        order: str,
        *,
        actor: str,
        ref: str | None = None,
        ts: Timestamp = None,
        location: str | None = None,
    ) -> ApplyResult:
        t = _ts(ts)
        return await self._tx(
            lambda tx: tx.order_pick(sku, qty, order, ts_ms=t, actor=actor, ref=ref, location=location)
        )

    async def record_receipt(
        self,
        sku: str,
        qty: int,
        *,
        actor: str,
        ref: str | None = None,
        ts: Timestamp = None,
        location: str = BACKROOM,
    ) -> ApplyResult:
        t = _ts(ts)
        return await self._tx(lambda tx: tx.receipt(sku, qty, ts_ms=t, actor=actor, ref=ref, location=location))

    async def record_return(
        self,
        sku: str,
        qty: int,
        *,
        actor: str,
        ref: str | None = None,
        ts: Timestamp = None,
        restockable: bool = True,
        location: str = BACKROOM,
    ) -> ApplyResult:
        t = _ts(ts)
        return await self._tx(
            lambda tx: tx.return_(sku, qty, ts_ms=t, actor=actor, ref=ref, restockable=restockable, location=location)
        )

    async def record_count(
        self,
        sku: str,
        counted: int,
        *,
        actor: str,
        ref: str | None = None,
        ts: Timestamp = None,
        location: str = BACKROOM,
    ) -> CountResult:
        t = _ts(ts)
        return await self._tx(lambda tx: tx.count(sku, counted, ts_ms=t, actor=actor, ref=ref, location=location))

    async def restock(
        self,
        sku: str,
        lane_id: str,
        qty: int,
        *,
        actor: str,
        ref: str | None = None,
        ts: Timestamp = None,
        from_location: str = BACKROOM,
    ) -> ApplyResult:
        t = _ts(ts)
        return await self._tx(
            lambda tx: tx.restock(sku, lane_id, qty, ts_ms=t, actor=actor, ref=ref, from_location=from_location)
        )

    async def transfer(
        self,
        sku: str,
        qty: int,
        from_location: str,
        to_location: str,
        *,
        actor: str,
        ref: str | None = None,
        ts: Timestamp = None,
    ) -> ApplyResult:
        t = _ts(ts)
        return await self._tx(
            lambda tx: tx.transfer(sku, qty, from_location, to_location, ts_ms=t, actor=actor, ref=ref)
        )

    async def write_off(
        self,
        sku: str,
        qty: int,
        reason: Reason,
        *,
        actor: str,
        ref: str | None = None,
        ts: Timestamp = None,
        location: str = BACKROOM,
        note: str | None = None,
    ) -> ApplyResult:
        """Damage or shrinkage write-off (book stock leaves the store)."""
        t = _ts(ts)
        return await self._tx(
            lambda tx: tx.write_off(sku, qty, reason, ts_ms=t, actor=actor, ref=ref, location=location, note=note)
        )

    async def reverse(self, movement_id: int, *, actor: str, why: str) -> Applied:
        """Post the reversal of the posting that ``movement_id`` belongs to (all its legs)."""
        return await self._tx(lambda tx: tx.reverse(movement_id, actor=actor, why=why))

    async def open_alert(
        self, kind: str, cause_key: str, evidence: dict[str, Any], *, actor: str, ts: Timestamp = None
    ) -> AlertOpened:
        t = _ts(ts)
        return await self._tx(lambda tx: tx.open_alert(kind, cause_key, evidence, actor=actor, ts_ms=t))

    async def acknowledge_alert(self, alert_id: int, *, actor: str) -> Alert:
        return await self._tx(lambda tx: tx.acknowledge_alert(alert_id, actor=actor))

    async def resolve_alert(
        self, alert_id: int, *, actor: str, resolution: str, write_off: WriteOff | None = None
    ) -> Alert:
        """Resolve an alert, posting the ledger entry it implies (e.g. a shrinkage write-off) in the same
        transaction."""
        return await self._tx(
            lambda tx: tx.resolve_alert(alert_id, actor=actor, resolution=resolution, write_off=write_off)
        )

    async def record_audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Append one entry to the audit trail (e.g. a node's answer to a command the hub sent)."""
        await self._tx(lambda tx: tx.audit(check_actor(actor), action, details))

    async def transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``fn(tx)`` as one write transaction of the writer, in queue order (committed when it returns,
        rolled back when it raises). For modules that keep their own tables in the ledger database
        (reconciliation); ``fn`` must use only ``tx`` and never await another call on this service."""
        return await self._tx(fn)

    async def import_csv(
        self, kind: ImportKind, data: bytes, *, actor: str, name: str = "<data>", max_rows: int | None = None
    ) -> ImportReport:
        """Import a business-transaction file all-or-nothing. A rejected file writes nothing; the report has
        every problem with its line number. The file is parsed in a thread (never on the loop); ``max_rows``
        refuses a larger file (``ImportTooLarge``) before anything is queued for the writer."""
        parsed = await asyncio.to_thread(parse_csv, kind, data)
        if max_rows is not None and parsed.data_rows > max_rows:
            raise ImportTooLarge(
                f"{name} has {parsed.data_rows:,} rows, more than {max_rows:,} in one file: split it into files of"
                f" at most {max_rows:,} rows (each is imported all or nothing; re-sending a file is safe)"
            )
        if not parsed.rows and not parsed.skus_of_bad_rows:  # nothing to check against the ledger
            return ImportReport(kind, name, rows=parsed.data_rows, errors=parsed.errors)

        async def run(tx: Tx) -> ImportReport:
            done = await import_rows(tx, kind, parsed, actor=actor, name=name, data=data)
            if not done.ok:
                raise _Rejected(done)
            return done

        try:
            return await self._tx(run)
        except _Rejected as rejected:
            return rejected.report

    async def import_file(self, kind: ImportKind, path: Path | str, *, actor: str) -> ImportReport:
        path = Path(path)
        data = await asyncio.to_thread(path.read_bytes)
        return await self.import_csv(kind, data, actor=actor, name=path.name)

    # -------------------------------------------------------------------------------------- reads and backups

    async def reader(self) -> LedgerReader:
        """A new read-only connection (close it when done)."""
        return await LedgerReader.open(self.path, busy_timeout_ms=self.busy_timeout_ms)

    async def backup(self, dest: Path | str) -> BackupInfo:
        """Online backup to ``dest`` (a file, or a directory for a time-stamped name) while the writer runs."""
        info = await asyncio.to_thread(backup_database, self.path, dest)
        self.last_backup = info
        return info

    async def _checkpoint_loop(self, interval_s: float) -> None:
        """Copy the WAL back into the database from a second connection, so the writer's commits never wait for
        a checkpoint (with autocheckpoint, every ~1000 pages one COMMIT also writes and fsyncs the database file:
        a latency spike on an SD card). PASSIVE never blocks the writer or readers."""
        conn = await asyncio.to_thread(
            sqlite3.connect, self.path, isolation_level=None, check_same_thread=False, timeout=0
        )

        def checkpoint() -> None:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        try:
            while True:
                await asyncio.sleep(interval_s)
                running = asyncio.ensure_future(asyncio.to_thread(checkpoint))
                try:
                    await asyncio.shield(running)
                    self.stats.checkpoints += 1
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await running
                    raise
                except sqlite3.Error as exc:
                    log.warning("ledger: checkpoint failed: %s", exc)
        finally:
            await asyncio.to_thread(conn.close)

    async def _prune_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.prune_lane_readings()
            except LedgerClosed:
                return
            except Exception:
                log.exception("ledger: pruning lane readings failed")

    async def _backup_loop(self, policy: BackupPolicy) -> None:
        while True:
            await asyncio.sleep(policy.interval_s)
            copying = asyncio.ensure_future(asyncio.to_thread(scheduled_backup, self.path, policy))
            try:
                self.last_backup = await asyncio.shield(copying)
                log.info("ledger backup: %s", self.last_backup.path)
            except asyncio.CancelledError:
                # Closing: let the copy in flight finish (its thread cannot be stopped) so no temporary file stays.
                with contextlib.suppress(Exception):
                    await copying
                raise
            except Exception:
                log.exception("ledger: scheduled backup failed")


def _ts(ts: Timestamp) -> int | None:
    """None stays None: the posting takes the commit time, and a re-sent reference is not compared on time."""
    return None if ts is None else ts_or_now(ts)


async def _prune(tx: Tx, *, before_ms: int, start: str, rows: int) -> tuple[int, str | None]:
    return await prune_readings(tx.conn, before_ms, start, rows)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
