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
  their own transaction, in queue order, record their actor, and write the audit trail: each is a ``Tx`` method
  (``postings``) run as its own transaction with that method's signature (``operations``); ``transact(fn)`` runs
  any function of a ``Tx`` the same way (modules with their own tables: reconciliation, the status page). The
  audit entries say where the work came from: the origin set when it was queued (``origin.ORIGIN``: a request's
  address, a command line), else the service's own (``origin=``, default ``auto``: the hub's own work).
* **Lane readings** older than ``reading_retention_s`` (8 days) are pruned every ``prune_interval_s`` by the
  writer, in transactions of at most 2,000 deleted rows queued like any other work (``prune_lane_readings``); tag
  events, reader outages and the presence of tags gone older than ``tag_retention_s`` (30 days) the same way
  (``prune_tags``). RFID records (``TagEvent``, ``TagRecheck``, ``ReaderReport``: ``tags``) are sensor items.
  (The status page prunes its own sign-in attempts through ``transact``: hub/web/server.py.)
* **Commit listeners**: ``service.changes.listen(fn)`` calls ``fn(changes)`` on the loop after each commit with
  what the transaction changed (movements' locations, lanes, SKUs, alerts; see ``changes``), collected by TEMP
  triggers on the writer's connection, so no write path can be missed.
* **Readers** use separate read-only connections: ``await service.reader()`` (see ``reader``).
* **Backups**: ``await service.backup(dest)`` and, with a ``BackupPolicy``, on a schedule (see ``backup``); both
  use SQLite's online backup API on their own connection in a thread and never stop the writer. WAL checkpoints
  run beside the writer the same way, every ``checkpoint_interval_s`` (``upkeep``).
* **Schema**: ``start()`` creates the database or upgrades it to ``migrations``, the steps of every subsystem that
  keeps tables in it (``hub.schema.MIGRATIONS``, handed in by the hub: the ledger never imports its users), in one
  transaction, refusing a file written by a newer smartshelf or not a ledger (``schema``).

The service holds ``<db>.lock`` shared while open, so ``smartshelf ledger restore`` refuses to swap the file
under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import aiosqlite

from hub.ledger import origin as origin_
from hub.ledger import schema, upkeep
from hub.ledger.backup import BackupInfo, BackupPolicy, backup_database
from hub.ledger.changes import ChangeTracker
from hub.ledger.dblock import DbLock
from hub.ledger.epc_imports import EPCS, import_epc_rows, parse_epc_csv
from hub.ledger.imports import ImportKind, ImportReport, check_size, import_rows, parse_csv
from hub.ledger.models import (
    BACKROOM,
    Alert,
    ApplyResult,
    CountResult,
    LaneReading,
    LedgerClosed,
    LedgerError,
    NodeUpdate,
    SensorEvent,
    SensorGap,
    ServiceStats,
    Timestamp,
    now_ms,
)
from hub.ledger.operations import Operation
from hub.ledger.postings import Tx, WriteOff
from hub.ledger.reader import LedgerReader
from hub.ledger.sensor import PRUNE_BATCH_ROWS, READING_RETENTION_MS, SensorItem, apply_batch, prune_readings
from hub.ledger.tag_booking import prune_tags
from hub.ledger.tags import TAG_RETENTION_MS, ReaderReport, TagEvent, TagRecheck
from hub.ledger.workqueue import Completion, WorkQueue

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class _SensorWork:
    item: SensorItem
    future: asyncio.Future[Any] | Completion


@dataclass(slots=True)
class _TxWork:
    fn: Callable[[Tx], Awaitable[Any]]
    future: asyncio.Future[Any]
    origin: str  # where the work came from, as its audit entries record it (hub.ledger.origin)


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
        migrations: Sequence[schema.Migration],
        synchronous: schema.Synchronous = "FULL",
        busy_timeout_ms: int = 5000,
        max_batch: int = 1000,
        batch_linger_s: float = 0.0,
        backups: BackupPolicy | None = None,
        checkpoint_interval_s: float | None = 1.0,
        reading_retention_s: float = READING_RETENTION_MS / 1000,
        tag_retention_s: float = TAG_RETENTION_MS / 1000,
        prune_interval_s: float | None = 600.0,
        origin: str = origin_.AUTOMATIC,
    ) -> None:
        if max_batch < 1 or batch_linger_s < 0:
            raise ValueError("max_batch must be >= 1 and batch_linger_s >= 0")
        self.path = Path(path)
        self.migrations = tuple(migrations)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max_batch
        self.batch_linger_s = batch_linger_s
        self.backup_policy = backups
        self.checkpoint_interval_s = checkpoint_interval_s
        self.reading_retention_s = reading_retention_s
        self.tag_retention_s = tag_retention_s
        self.prune_interval_s = prune_interval_s
        self.origin = origin_.clean(origin)  # of work queued with no origin set (hub.ledger.origin.ORIGIN)
        self.stats = ServiceStats()
        self.last_backup: BackupInfo | None = None
        self.changes = ChangeTracker()  # commit listeners (hub/ledger/changes.py)
        self._conn: aiosqlite.Connection | None = None
        self._queue: WorkQueue[_Work] = WorkQueue()
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
                schema.open_and_migrate,
                self.path,
                self.migrations,
                synchronous=self.synchronous,
                busy_timeout_ms=self.busy_timeout_ms,
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
            self._tasks.append(
                asyncio.create_task(upkeep.backups(self.path, self.backup_policy, self._taken), name="ledger-backups")
            )
        if self.checkpoint_interval_s is not None:
            self._tasks.append(
                asyncio.create_task(
                    upkeep.checkpoints(self.path, self.checkpoint_interval_s, self.stats), name="ledger-checkpoints"
                )
            )
        if self.prune_interval_s is not None:
            pruning = upkeep.pruning(self.prune_interval_s, self.prune_lane_readings, self.prune_tags)
            self._tasks.append(asyncio.create_task(pruning, name="ledger-prune"))
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
        return self._queue.fill(batch, self.max_batch, _SensorWork)

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
            result = await self._in_tx(lambda conn, now: work.fn(Tx(conn, now, work.origin)))
        except Exception as exc:
            _fail(work.future, exc)
        else:
            if not work.future.done():
                work.future.set_result(result)

    async def _tx(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_TxWork(fn, future, origin_.current() or self.origin))
        return await future

    # ------------------------------------------------------------------------------------------- sensor path

    @overload
    def submit(self, item: SensorEvent | SensorGap | TagEvent) -> asyncio.Future[ApplyResult]: ...
    @overload
    def submit(self, item: NodeUpdate | ReaderReport) -> asyncio.Future[None]: ...
    @overload
    def submit(self, item: TagRecheck) -> asyncio.Future[int]: ...  # the tags marked unconfirmed
    @overload
    def submit(self, item: LaneReading) -> asyncio.Future[bool]: ...  # False: the ledger knows no such lane
    def submit(self, item: SensorItem) -> asyncio.Future[Any]:
        """Queue a sensor item without waiting; the future resolves after the batch holding it committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_SensorWork(item, future))
        return future

    def submit_then(self, item: SensorItem, on_done: Callable[[Completion], None]) -> None:
        """``submit`` without a future (the hot path): ``on_done`` runs as soon as the batch committed or failed."""
        self._enqueue(_SensorWork(item, Completion(on_done)))

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

    async def prune_tags(self, before_ms: int | None = None, *, max_rows: int = PRUNE_BATCH_ROWS) -> int:
        """Delete tag events, ended reader outages and the presence of tags gone, older than ``before_ms`` (default:
        the retention before now), at most ``max_rows`` per transaction. The tags on a lane now are kept."""
        cutoff = before_ms if before_ms is not None else now_ms() - int(self.tag_retention_s * 1000)
        total, more = 0, True
        while more:
            deleted, more = await self._tx(lambda tx: prune_tags(tx.conn, cutoff, max_rows))
            total += deleted
            self.stats.tag_rows_pruned += deleted
        return total

    # ---------------------------------------------------------------------------------------- business writes
    # Each runs the ``Tx`` method it names as one transaction of the writer, in queue order, with that method's
    # signature (``operations.Operation``); the postings' rules are in ``hub.ledger.postings``.

    add_sku = Operation(Tx.add_sku)
    register_node = Operation(Tx.register_node)
    assign_lane = Operation(Tx.assign_lane)
    replace_node = Operation(Tx.replace_node)
    record_sale = Operation(Tx.sale)
    record_order_pick = Operation(Tx.order_pick)
    record_receipt = Operation(Tx.receipt)
    record_return = Operation(Tx.return_)
    restock = Operation(Tx.restock)
    transfer = Operation(Tx.transfer)
    write_off = Operation(Tx.write_off)
    reverse = Operation(Tx.reverse)
    open_alert = Operation(Tx.open_alert)
    acknowledge_alert = Operation(Tx.acknowledge_alert)
    record_audit = Operation(Tx.record_audit)

    # These two offer less than their ``Tx`` method, on purpose: a client's count is always under ``count:<ref>``
    # (``resolution:`` belongs to alert resolutions), and a resolution's movement must come from its own transaction.

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
        """Record a physical count under ``count:<ref>``: the difference to the book is posted as an adjustment."""
        return await self._tx(lambda tx: tx.count(sku, counted, actor=actor, ref=ref, ts=ts, location=location))

    async def resolve_alert(
        self, alert_id: int, *, actor: str, resolution: str, write_off: WriteOff | None = None
    ) -> Alert:
        """Resolve an alert, posting the ledger entry it implies (e.g. a shrinkage write-off) in the same
        transaction."""
        return await self._tx(
            lambda tx: tx.resolve_alert(alert_id, actor=actor, resolution=resolution, write_off=write_off)
        )

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
        check_size(parsed.data_rows, name, max_rows)
        if not parsed.rows and not parsed.skus_of_bad_rows:  # nothing to check against the ledger
            return ImportReport(kind, name, rows=parsed.data_rows, errors=parsed.errors)
        return await self._import(lambda tx: import_rows(tx, kind, parsed, actor=actor, name=name, data=data))

    async def import_epcs(
        self, data: bytes, *, actor: str, name: str = "<data>", max_rows: int | None = None
    ) -> ImportReport:
        """Import the store's EPC -> SKU table (``epc,sku``; ``epc_imports``) like ``import_csv``: all or nothing."""
        parsed = await asyncio.to_thread(parse_epc_csv, data)
        check_size(parsed.data_rows, name, max_rows)
        if not parsed.rows:
            return ImportReport(EPCS, name, rows=parsed.data_rows, errors=parsed.errors)
        return await self._import(lambda tx: import_epc_rows(tx, parsed, actor=actor, name=name, data=data))

    async def _import(self, apply: Callable[[Tx], Awaitable[ImportReport]]) -> ImportReport:
        """One transaction, rolled back (and the report returned) unless the report is ok."""

        async def run(tx: Tx) -> ImportReport:
            done = await apply(tx)
            if not done.ok:
                raise _Rejected(done)
            return done

        try:
            return await self._tx(run)
        except _Rejected as rejected:
            return rejected.report

    async def import_file(self, kind: ImportKind | Literal["epcs"], path: Path | str, *, actor: str) -> ImportReport:
        path = Path(path)
        data = await asyncio.to_thread(path.read_bytes)
        if kind == "epcs":
            return await self.import_epcs(data, actor=actor, name=path.name)
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

    def _taken(self, info: BackupInfo) -> None:
        """A scheduled backup was taken (``upkeep.backups``)."""
        self.last_backup = info


async def _prune(tx: Tx, *, before_ms: int, start: str, rows: int) -> tuple[int, str | None]:
    return await prune_readings(tx.conn, before_ms, start, rows)


def _fail(future: asyncio.Future[Any] | Completion, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
