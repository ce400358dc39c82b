"""How the web layer writes, and learns of commits: through the hub's LedgerService, on the hub's asyncio loop.

WSGI worker threads never open a write connection. ``LoopWriter.call(fn)`` schedules ``fn(ledger)`` on the loop
that owns the ``LedgerService`` (``asyncio.run_coroutine_threadsafe``) and blocks the calling thread until the
writer committed (or raised), or the timeout passed (``TimeoutError``: the work stays queued and may still be
committed, so a caller must never say it was not applied). Never call it from the loop's own thread: it would
wait for itself.

``LoopWriter.listen(fn)`` (a ``ChangeSource``) registers ``fn`` with the ledger's commit listeners
(``hub/ledger/changes.py``): ``fn(changes)`` runs on the hub's loop after each commit and must only hand the changes
over to its thread (the live feed puts them on a bounded ``queue.Queue``). A writer that is no ``ChangeSource``
(one that cannot see the ledger's commits) leaves the live feed polling (``hub/web/live/feed.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

from hub.ledger import LedgerService
from hub.ledger.changes import Listener

T = TypeVar("T")


class Writer(Protocol):
    def call(self, fn: Callable[[LedgerService], Awaitable[T]], *, timeout_s: float | None = None) -> T: ...


@runtime_checkable
class ChangeSource(Protocol):
    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(changes)`` after every commit of the ledger's writer; returns the unsubscribe."""
        ...


class LoopWriter:
    """Thread-safe bridge from WSGI threads to the ledger writer running on ``loop``."""

    def __init__(self, ledger: LedgerService, loop: asyncio.AbstractEventLoop, *, timeout_s: float = 30.0) -> None:
        self.ledger = ledger
        self.loop = loop
        self.timeout_s = timeout_s

    def call(self, fn: Callable[[LedgerService], Awaitable[T]], *, timeout_s: float | None = None) -> T:
        """``timeout_s``: how long to wait for this call (default: ``self.timeout_s``); a longer one for work known
        to keep the writer busy (a CSV import). On ``TimeoutError`` the work is still queued and may yet commit."""

        async def run() -> T:
            return await fn(self.ledger)

        wait = self.timeout_s if timeout_s is None else timeout_s
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(wait)

    def listen(self, listener: Listener) -> Callable[[], None]:
        return self.ledger.changes.listen(listener)
