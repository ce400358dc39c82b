"""Per-node jobs: work that must wait for the ledger (a barrier future, a read) and must run in arrival order.

A node's lane and outbox checks compare its counters with what has *committed*, so each waits for the commit of
everything received before it; running them one at a time, in the order their frames arrived, means every check
sees one consistent sequence. One ``NodeJobs`` per node: an ``asyncio.Queue`` of jobs and one worker task,
started by the first job. A job that fails is logged and the next one runs; ``cancel`` stops the worker and drops
what is queued (the checks are redone after the node's next hello).

At most ``MAX_JOBS`` wait: a node that floods the hub with reports while the ledger is slow gets the rest dropped
(``add`` returns False; counted in ``dropped``, logged at warning the first time). Every job is a check its node's
next report of the same kind does again (a lane state, a health, a hello), so a dropped one is only late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
MAX_JOBS = 1024  # jobs waiting per node


class NodeJobs:
    __slots__ = ("_name", "_queue", "_running", "_worker", "dropped")

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: asyncio.Queue[Job] = asyncio.Queue(MAX_JOBS)
        self._worker: asyncio.Task[None] | None = None
        self._running = False
        self.dropped = 0

    def __len__(self) -> int:
        """Jobs waiting (the one running not included)."""
        return self._queue.qsize()

    @property
    def idle(self) -> bool:
        """Nothing running, nothing waiting."""
        return not self._running and self._queue.empty()

    def add(self, job: Job) -> bool:
        """Run ``job`` after this node's earlier jobs (on the running loop); False (dropped, counted) when
        ``MAX_JOBS`` are waiting already."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            level = logging.WARNING if self.dropped == 1 else logging.DEBUG
            log.log(level, "%s: %d jobs waiting: a check dropped (%d so far)", self._name, MAX_JOBS, self.dropped)
            return False
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"{self._name} jobs")
        return True

    async def cancel(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self._running = True
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: job failed", self._name)
            finally:
                self._running = False
