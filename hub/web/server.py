"""Serving the app from the hub process: waitress (a production WSGI server) in a thread beside the hub's loop.

The server also keeps the status page's own table tidy: every ``PRUNE_INTERVAL_S`` it deletes old sign-in attempts
(``accounts.users.prune_login_attempts``) through the hub's ledger writer, a task on the hub's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from flask import Flask
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from hub.ledger import LedgerService
from hub.ledger.models import LedgerClosed
from hub.web.accounts.users import PRUNE_INTERVAL_S, prune_login_attempts
from hub.web.app import create_app
from hub.web.bridge import LoopWriter
from hub.web.live.lane_feed import close_feed

log = logging.getLogger(__name__)
DEFAULT_MAX_LIVE_CLIENTS = 64


def loop_status(
    status: Callable[[], dict[str, Any]], loop: asyncio.AbstractEventLoop, *, timeout_s: float = 2.0
) -> Callable[[], dict[str, Any]]:
    """``status`` made callable from a WSGI thread: it runs on ``loop`` (where the hub's state lives); the caller
    waits at most ``timeout_s`` (TimeoutError), RuntimeError once the loop is closed."""

    def call() -> dict[str, Any]:
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(status())
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    return call


def loop_count_lane(
    count_lane: Callable[[int, int, int, str], Coroutine[Any, Any, tuple[bool, str]]],
    loop: asyncio.AbstractEventLoop,
    *,
    timeout_s: float = 20.0,
) -> Callable[[int, int, int, str], tuple[bool, str]]:
    """The hub's ``count_lane`` (a node command, then a ledger write) made callable from a WSGI thread: it runs on
    ``loop``; the caller waits at most ``timeout_s`` (the node's own answer has 10 s) and gets TimeoutError."""

    def call(node_id: int, lane: int, count: int, actor: str) -> tuple[bool, str]:
        return asyncio.run_coroutine_threadsafe(count_lane(node_id, lane, count, actor), loop).result(timeout_s)

    return call


async def prune_sign_ins(ledger: LedgerService, interval_s: float = PRUNE_INTERVAL_S) -> None:
    """Every ``interval_s``, delete old sign-in attempts through the writer (until cancelled or the ledger closes)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await ledger.transact(prune_login_attempts)
        except LedgerClosed:
            return
        except Exception:
            log.exception("web: pruning old sign-in attempts failed")


def waitress_threads(threads: int, max_live_clients: int) -> int:
    """A live-updates stream holds a worker thread for its lifetime: ``threads`` stay for everything else."""
    return threads + max_live_clients


class WebServer:
    """``WebServer.start(...)`` on the hub's loop binds the socket and starts serving; ``await stop()``."""

    def __init__(
        self,
        server: MultiSocketServer | BaseWSGIServer,
        thread: threading.Thread,
        url: str,
        app: Flask,
        housekeeping: concurrent.futures.Future[None],
    ) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        self.app = app
        self._housekeeping = housekeeping

    @classmethod
    def start(
        cls,
        ledger_path: Path,
        ledger: LedgerService,
        loop: asyncio.AbstractEventLoop,
        *,
        host: str,
        port: int,
        threads: int = 4,
        max_live_clients: int = DEFAULT_MAX_LIVE_CLIENTS,
        status: Callable[[], dict[str, Any]] | None = None,
        count_lane: Callable[[int, int, int, str], Coroutine[Any, Any, tuple[bool, str]]] | None = None,
    ) -> WebServer:
        """``status``: the hub's ``status()`` (runs on ``loop`` for the nodes page); ``count_lane``: the hub's
        ``count_lane`` (a manager's count on the shelf page)."""
        app = create_app(
            ledger_path,
            LoopWriter(ledger, loop),
            config={"LIVE_MAX_CLIENTS": max_live_clients},
            status=loop_status(status, loop) if status is not None else None,
            count_lane=loop_count_lane(count_lane, loop) if count_lane is not None else None,
        )
        total = waitress_threads(threads, max_live_clients)
        server = create_server(
            app,
            host=host,
            port=port,
            threads=total,
            connection_limit=max(100, total + 50),
            asyncore_use_poll=True,
            ident="smartshelf",
        )
        bound_host = getattr(server, "effective_host", host)
        bound_port = getattr(server, "effective_port", port)
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        thread = threading.Thread(target=server.run, name="web", daemon=True)
        thread.start()
        housekeeping = asyncio.run_coroutine_threadsafe(prune_sign_ins(ledger), loop)  # from any thread
        return cls(server, thread, f"http://{shown}:{bound_port}/", app, housekeeping)

    async def stop(self) -> None:
        """End the live-update streams, stop accepting, let the worker threads finish (their ledger writes need
        this loop running), stop the housekeeping."""
        self._housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wrap_future(self._housekeeping)

        def close() -> None:
            close_feed(self.app)
            # workers first: closing the sockets under a running stream logs EBADF tracebacks
            self._server.task_dispatcher.shutdown()
            self._server.close()
            self._thread.join(5)

        await asyncio.to_thread(close)
