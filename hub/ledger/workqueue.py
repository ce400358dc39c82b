"""The writer's queue and the completion of a sensor item without a future: the sensor path's per-item costs.

Every node event passes through here once in each direction, so both are kept to plain Python objects: the queue is
a ``deque`` with one waiter (the writer), and a ``Completion`` calls its callback as soon as the batch holding the
item committed (or failed), where an ``asyncio.Future`` would schedule each callback through the event loop
(``LedgerService.submit_then``; ``submit`` keeps returning a future to await).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
W = TypeVar("W")
log = logging.getLogger(__name__)


class WorkQueue(Generic[T]):
    """FIFO of the writer's work: ``put_nowait`` from anywhere on the loop, ``get`` / ``fill`` by the one writer."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def fill(self, batch: list[W], limit: int, kind: type[W]) -> T | None:
        """Move queued items of ``kind`` into ``batch`` (up to ``limit``); return the first other item met, which
        is taken off the queue to run next, or None."""
        items = self._items
        while items and len(batch) < limit:
            item = items.popleft()
            if not isinstance(item, kind):
                return item
            batch.append(item)
        return None

    def qsize(self) -> int:
        return len(self._items)


class Completion:
    """What the writer resolves like a future; calls ``on_done(self)`` at once, with ``result()`` to read."""

    __slots__ = ("_done", "_exception", "_on_done", "_result")

    def __init__(self, on_done: Callable[[Completion], None]) -> None:
        self._on_done = on_done
        self._done = False
        self._result: Any = None
        self._exception: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return self._exception

    def result(self) -> Any:
        if self._exception is not None:
            raise self._exception
        return self._result

    def set_result(self, result: Any) -> None:
        self._done, self._result = True, result
        self._call()

    def set_exception(self, exception: BaseException) -> None:
        self._done, self._exception = True, exception
        self._call()

    def _call(self) -> None:
        try:
            self._on_done(self)
        except Exception:  # like a future's callback: never the writer's problem (the batch's others still resolve)
            log.exception("ledger: a sensor item's completion callback failed")
