"""Per-node jobs: work that must wait for the ledger (a barrier future, a read) and must run in arrival order.

A node's lane and outbox checks compare its counters with what has *committed*, so each waits for the commit of
everything received before it; running them one at a time, in the order their frames arrived, means every check
sees one consistent sequence. One ``NodeJobs`` per node: an ``asyncio.Queue`` of jobs and one worker task,
started by the first job. A job that fails is logged and the next one runs; ``cancel`` stops the worker and drops
what is queued (the checks are redone after the node's next hello).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class NodeJobs:
    __slots__ = ("_name", "_queue", "_worker")

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def add(self, job: Job) -> None:
        """Run ``job`` after this node's earlier jobs (on the running loop)."""
        self._queue.put_nowait(job)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"{self._name} jobs")

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
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: job failed", self._name)
