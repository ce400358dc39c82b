"""Serving the app from the hub process: hypercorn's HTTP/1.1 on an event loop of its own in a thread beside the
hub's loop, the Flask app in worker threads (``serving/``), TLS by the standard library's ``ssl``.

The server also keeps the status page's own table tidy: every ``PRUNE_INTERVAL_S`` it deletes old sign-in attempts
(``accounts.users.prune_login_attempts``) through the hub's ledger writer, a task on the hub's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from hub.config import WebConfig
from hub.config.web import is_loopback
from hub.ledger import LedgerService
from hub.ledger.models import LedgerClosed
from hub.web.accounts.users import PRUNE_INTERVAL_S, prune_login_attempts
from hub.web.api.errors import body_limit as api_body_limit
from hub.web.app import create_app
from hub.web.bridge import LoopWriter
from hub.web.live.lane_feed import close_feed
from hub.web.serving.connections import Connections, Limits
from hub.web.serving.http_server import HttpServer, Listener, bind
from hub.web.serving.plain_http import RedirectToHttps
from hub.web.serving.tls import (
    TlsFiles,
    ensure_self_signed,
    fingerprint,
    host_names,
    self_signed_paths,
    server_context,
)
from hub.web.serving.wsgi_bridge import BodyLimit, Pools, WsgiBridge

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


class WebServer:
    """``WebServer.start(...)`` on the hub's loop binds the sockets and starts serving; ``await stop()``."""

    def __init__(
        self,
        server: HttpServer,
        pools: Pools,
        url: str,
        app: Flask,
        housekeeping: concurrent.futures.Future[None],
        *,
        fingerprint: str | None = None,
        certificate: Path | None = None,
        redirect_url: str | None = None,
    ) -> None:
        self._server = server
        self._pools = pools
        self.url = url
        self.app = app
        self._housekeeping = housekeeping
        self.fingerprint = fingerprint  # the certificate's SHA-256 (TLS), for staff to compare
        self.certificate = certificate  # its PEM file: what a client on this machine may trust (the demo's POS)
        self.redirect_url = redirect_url  # the plain-HTTP port that sends people to HTTPS, if any

    @property
    def connections(self) -> Connections:
        return self._server.connections

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
        api_threads: int = 4,
        limits: Limits | None = None,
        tls: TlsFiles | None = None,
        http_port: int | None = None,
        live: Mapping[str, Any] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        count_lane: Callable[[int, int, int, str], Coroutine[Any, Any, tuple[bool, str]]] | None = None,
        hub_config: Path | None = None,
    ) -> WebServer:
        """``tls``: the certificate and key (None: plain HTTP, refused unless ``host`` is a loopback address);
        ``http_port``: with TLS, a plain-HTTP port that redirects to it. ``live``: LIVE_* settings of the feed
        (``lane_feed.DEFAULTS``). ``status``: the hub's ``status()`` (runs on ``loop`` for the nodes page);
        ``count_lane``: the hub's ``count_lane`` (a manager's count on the shelf page); ``hub_config``: the hub's
        hub.toml, named in the commands the pages suggest (``HUB_CONFIG``)."""
        if tls is None and not is_loopback(host):
            raise ValueError(
                f"web: plain HTTP on {host} would send passwords and API tokens in clear text: serve TLS, or bind "
                "a loopback address (127.0.0.1 / ::1)"
            )
        limits = limits or Limits()
        context = server_context(tls) if tls is not None else None
        app = create_app(
            ledger_path,
            LoopWriter(ledger, loop),
            config={
                "LIVE_MAX_CLIENTS": max_live_clients,
                **(live or {}),
                "TLS_ENABLED": tls is not None,
                "SESSION_COOKIE_SECURE": tls is not None,
                **({"HUB_CONFIG": str(hub_config)} if hub_config is not None else {}),
            },
            status=loop_status(status, loop) if status is not None else None,
            count_lane=loop_count_lane(count_lane, loop) if count_lane is not None else None,
        )
        pools = Pools.create(threads, max_live_clients, api_threads)
        sockets: list[socket.socket] = []
        try:
            main = bind(host, port, setting="web.port")
            sockets.append(main)
            listeners: list[Listener] = []
            server = HttpServer(listeners, limits)
            bridge = WsgiBridge(app, pools, server.connections, max_body=int(app.config["MAX_CONTENT_LENGTH"]),
                                larger=_api_body_limit)  # fmt: skip
            listeners.append(Listener(main, bridge, context))
            redirect_url = None
            bound_host, bound_port = listeners[0].address
            if tls is not None and http_port is not None:
                plain = bind(host, http_port, setting="web.http_port")
                sockets.append(plain)
                listeners.append(Listener(plain, RedirectToHttps(bound_port), None))
                redirect_url = _url("http", *listeners[1].address)
            server.start()
        except BaseException:
            for sock in sockets:
                sock.close()
            pools.shutdown()
            raise
        housekeeping = asyncio.run_coroutine_threadsafe(prune_sign_ins(ledger), loop)  # from any thread
        url = _url("https" if tls is not None else "http", bound_host, bound_port)
        return cls(
            server,
            pools,
            url,
            app,
            housekeeping,
            fingerprint=fingerprint(tls.certificate) if tls is not None else None,
            certificate=tls.certificate if tls is not None else None,
            redirect_url=redirect_url,
        )

    async def stop(self) -> None:
        """End the live-update streams, stop accepting, let the worker threads finish (their ledger writes need
        this loop running), stop the housekeeping."""
        self._housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wrap_future(self._housekeeping)

        def close() -> None:
            close_feed(self.app)  # the live streams end (their threads return)
            self._server.stop()
            self._pools.shutdown()

        await asyncio.to_thread(close)


def _api_body_limit(path: str) -> BodyLimit | None:
    """The API's batches (1 MiB) and CSV files (3,000,000 bytes) beyond the pages' 64 KiB, refused in its JSON."""
    limit = api_body_limit(path)
    return BodyLimit(*limit) if limit is not None else None


def _url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/"


def start_web(
    cfg: WebConfig,
    database: Path,
    ledger: LedgerService,
    status: Callable[[], dict[str, Any]] | None,
    count_lane: Callable[[int, int, int, str], Coroutine[Any, Any, tuple[bool, str]]] | None,
) -> WebServer:
    """The hub's ``[web]``: TLS files (the operator's, or a self-signed pair generated beside the ledger), limits."""
    tls: TlsFiles | None = None
    if cfg.tls == "auto":
        if cfg.certificate is not None and cfg.private_key is not None:
            tls = TlsFiles(cfg.certificate, cfg.private_key, generated=False)
        else:
            tls = self_signed_paths(database)
            names, addresses = host_names(cfg.host)
            if ensure_self_signed(tls, names, addresses):
                log.info("web: generated a self-signed certificate %s for %s", tls.certificate,
                         ", ".join([*names, *addresses]))  # fmt: skip
    return WebServer.start(
        database,
        ledger,
        asyncio.get_running_loop(),
        host=cfg.host,
        port=cfg.port,
        threads=cfg.threads,
        max_live_clients=cfg.max_live_clients,
        api_threads=cfg.api_threads,
        limits=Limits(
            max_connections=cfg.max_connections,
            max_per_client=cfg.max_connections_per_client,
            handshake_timeout_s=cfg.header_timeout_s,
            header_timeout_s=cfg.header_timeout_s,
            body_timeout_s=cfg.body_timeout_s,
            write_timeout_s=cfg.write_timeout_s,
        ),
        tls=tls,
        http_port=cfg.http_port,
        live={"LIVE_MAX_PER_SESSION": cfg.max_live_per_session, "LIVE_MAX_PER_USER": cfg.max_live_per_user},
        status=status,
        count_lane=count_lane,
        hub_config=cfg.hub_config,
    )
