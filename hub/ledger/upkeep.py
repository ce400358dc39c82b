"""The writer's background tasks: WAL checkpoints and scheduled backups run beside it, never through its queue, each
on its own connection in a thread, so neither ever holds up a commit; pruning (lane readings, tag events) goes
through the queue in small transactions, between the other work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from hub.ledger.backup import BackupInfo, BackupPolicy, scheduled_backup
from hub.ledger.models import LedgerClosed, ServiceStats
from hub.ledger.offsite import ShipFailed, ship

log = logging.getLogger(__name__)
T = TypeVar("T")


async def checkpoints(path: Path, interval_s: float, stats: ServiceStats) -> None:
    """Copy the WAL back into the database from a second connection, so the writer's commits never wait for
    a checkpoint (with autocheckpoint, every ~1000 pages one COMMIT also writes and fsyncs the database file:
    a latency spike on an SD card). PASSIVE never blocks the writer or readers. Runs until cancelled."""
    conn = await asyncio.to_thread(sqlite3.connect, path, isolation_level=None, check_same_thread=False, timeout=0)

    def checkpoint() -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    try:
        while True:
            await asyncio.sleep(interval_s)
            running = asyncio.ensure_future(asyncio.to_thread(checkpoint))
            try:
                await asyncio.shield(running)
                stats.checkpoints += 1
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await running
                raise
            except sqlite3.Error as exc:
                log.warning("ledger: checkpoint failed: %s", exc)
    finally:
        await asyncio.to_thread(conn.close)


async def backups(path: Path, policy: BackupPolicy, taken: Callable[[BackupInfo], None]) -> None:
    """A backup every ``policy.interval_s`` (``scheduled_backup``), each reported to ``taken``; with
    ``policy.offsite``, then shipped off the Pi (``offsite.ship``: a failure is logged, the local backup stays and
    the next run ships what is missing). Runs until cancelled; a backup or shipment in flight then finishes first
    (its thread cannot be stopped), so no temporary file stays."""
    while True:
        await asyncio.sleep(policy.interval_s)
        try:
            info = await _finish(asyncio.to_thread(scheduled_backup, path, policy))
        except Exception:
            log.exception("ledger: scheduled backup failed")
            continue
        taken(info)
        log.info("ledger backup: %s", info.path)
        if policy.offsite is None:
            continue
        try:
            shipped = await _finish(asyncio.to_thread(ship, policy.directory, policy.offsite))
        except ShipFailed as exc:
            log.error("ledger: %s; the local backup %s is kept, the next backup retries", exc, info.path.name)
        except Exception:
            log.exception("ledger: off-site backup failed; the local backup %s is kept", info.path.name)
        else:
            for s in shipped:
                log.info("ledger backup shipped: %s (%d bytes)", s.path, s.manifest.size)


async def _finish(work: Awaitable[T]) -> T:
    """Await ``work`` (a thread); cancelled meanwhile, let it finish first, then be cancelled."""
    running = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await running
        raise


async def pruning(interval_s: float, *jobs: Callable[[], Awaitable[int]]) -> None:
    """Every ``interval_s``, each pruning job in turn (each deletes in transactions queued behind the writer's
    work). A failed job is logged and tried again next time; a closed ledger ends the loop."""
    while True:
        await asyncio.sleep(interval_s)
        for job in jobs:
            try:
                await job()
            except LedgerClosed:
                return
            except Exception:
                log.exception("ledger: pruning failed (%s)", getattr(job, "__name__", job))
