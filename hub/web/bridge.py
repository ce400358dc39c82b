"""How the web layer writes: through the hub's LedgerService, on the hub's asyncio loop.

WSGI worker threads never open a write connection. ``LoopWriter.call(fn)`` schedules ``fn(ledger)`` on the loop
that owns the ``LedgerService`` (``asyncio.run_coroutine_threadsafe``) and blocks the calling thread until the
writer committed (or raised), or the timeout passed (``TimeoutError``: the work stays queued and may still be
committed, so a caller must never say it was not applied). Never call it from the loop's own thread: it would
wait for itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from hub.ledger import LedgerService

T = TypeVar("T")


class Writer(Protocol):
    def call(self, fn: Callable[[LedgerService], Awaitable[T]], *, timeout_s: float | None = None) -> T: ...


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
