"""PostgreSQL for the page's worker threads: an asyncpg pool on an event loop of its own, in a thread.

Flask runs each request in a worker thread (synchronous); asyncpg is asynchronous. As the hub's page reaches its
ledger writer on the hub's loop (``hub.web.bridge.LoopWriter``), the central page reaches PostgreSQL on a loop of
its own: ``Database.start(config)`` starts a thread (``central-db``) that runs a loop and an asyncpg pool of
``max_size`` connections (one per worker thread: a request never waits for another's connection); ``run(fn)``
schedules ``fn(conn)`` on that loop with a connection of the pool and blocks the calling thread until it returns
(or ``timeout_s`` passes: ``TimeoutError``, the query is cancelled). ``read(fn)`` does it in a read-only,
repeatable-read transaction, so every query of one page or API answer sees the same committed state.

Never call ``run`` from the loop's own thread: it would wait for itself. PostgreSQL down: the pool reconnects by
itself at the next ``acquire``; meanwhile ``run`` raises what asyncpg raised (``OSError``, ``asyncpg``'s
connection errors), which the app answers with 503 (``UNAVAILABLE``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import current_app

from hub.central.config import DatabaseConfig
from hub.central.consumer import load_asyncpg

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")
Query = Callable[["asyncpg.Connection"], Awaitable[T]]
_EXTENSION = "smartshelf_central_db"


class Database:
    """An asyncpg pool on a loop thread of its own; ``run``/``read`` from any other thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: Any, thread: threading.Thread, timeout_s: float) -> None:
        self._loop = loop
        self._pool = pool
        self._thread = thread
        self.timeout_s = timeout_s
        self.display = ""

    @classmethod
    def start(cls, config: DatabaseConfig, *, max_size: int = 8, timeout_s: float = 30.0) -> Database:
        """Connect (at least one connection, so a wrong password or host fails here, not at the first page)."""
        asyncpg = load_asyncpg()
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def main() -> None:
            asyncio.set_event_loop(loop)

            async def open_pool() -> None:
                try:
                    pool = await asyncpg.create_pool(min_size=1, max_size=max_size, **config.connect_kwargs())
                except BaseException as exc:
                    ready.set_exception(exc)
                    loop.stop()
                    return
                ready.set_result(pool)

            opening = loop.create_task(open_pool())
            loop.run_forever()
            del opening
            loop.close()

        thread = threading.Thread(target=main, name="central-db", daemon=True)
        thread.start()
        try:
            pool = ready.result(config.connect_timeout_s + 5.0)
        except BaseException:
            if loop.is_running():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
            raise
        db = cls(loop, pool, thread, timeout_s)
        db.display = config.display()
        return db

    def run(self, fn: Query[T], *, timeout_s: float | None = None) -> T:
        """``fn(conn)`` with a connection of the pool, on the pool's loop; blocks until it returns."""

        async def go() -> T:
            async with self._pool.acquire() as conn:
                return await fn(conn)

        future = asyncio.run_coroutine_threadsafe(go(), self._loop)
        try:
            return future.result(self.timeout_s if timeout_s is None else timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("the central database did not answer in time") from None

    def read(self, fn: Query[T], *, timeout_s: float | None = None) -> T:
        """``run`` inside a read-only, repeatable-read transaction: one consistent view for every query of ``fn``."""

        async def go(conn: asyncpg.Connection) -> T:
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                return await fn(conn)

        return self.run(go, timeout_s=timeout_s)

    def close(self) -> None:
        """Close the pool's connections and end the thread."""
        if self._loop.is_closed():
            return

        async def shut() -> None:
            try:
                await asyncio.wait_for(self._pool.close(), 5.0)
            except (TimeoutError, OSError):
                self._pool.terminate()

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)


def install(app: Any, database: Database) -> None:
    app.extensions[_EXTENSION] = database


def get_database() -> Database:
    """The app's database (inside a request or an app context)."""
    database: Database = current_app.extensions[_EXTENSION]
    return database


def unavailable_errors() -> tuple[type[Exception], ...]:
    """What ``run`` raises when PostgreSQL cannot answer: the app turns these into 503 (never a 500)."""
    asyncpg = load_asyncpg()
    return (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
    )
