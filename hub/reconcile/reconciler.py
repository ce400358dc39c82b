"""``Reconciler``: runs reconciliation on an interval as an asyncio task, or once (``run_once(now)``).

A run has two phases: ``plan.build_plan`` reads one committed state of the ledger on its own read-only connection
in a worker thread (the event loop and the writer keep going), then ``apply.apply_plan`` writes the result in one
transaction of the ledger's single writer. See ``hub/reconcile/README.md`` for the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from hub.ledger.models import now_ms, ts_or_now
from hub.ledger.service import LedgerService
from hub.reconcile.apply import RunReport, apply_plan
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.plan import ReconcileConflict, build_plan

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        ledger: LedgerService,
        config: ReconcileConfig | None = None,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.ledger = ledger
        self.config = config or ReconcileConfig()
        self.clock = clock
        self.last_report: RunReport | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def run_once(self, now: datetime | int | None = None) -> RunReport:
        """Reconcile everything the ledger holds as of ``now`` (ms since the epoch or an aware datetime; default:
        the clock). Running it again with the same ``now`` and ledger changes nothing."""
        now_ms_ = self.clock() if now is None else ts_or_now(now)
        async with self._lock:  # one run at a time per reconciler (run_once beside the periodic task)
            started = time.perf_counter()
            plan = await asyncio.to_thread(build_plan, self.ledger.path, now_ms_, self.config)
            report = await self.ledger.transact(lambda tx: apply_plan(tx, plan, self.config))
            report.seconds = time.perf_counter() - started
        self.last_report = report
        if report.changed:
            log.info("reconcile: %s", report.summary())
        return report

    async def run_forever(self) -> None:
        """Run every ``interval_s`` until cancelled; a failed run is logged and the next one tries again."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except ReconcileConflict as exc:
                log.warning("reconcile: %s", exc)
            except Exception:
                log.exception("reconcile: run failed")
            await asyncio.sleep(self.config.interval_s)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run_forever(), name="reconcile")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Reconciler:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
