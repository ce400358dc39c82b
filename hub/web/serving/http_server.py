"""The HTTP server: hypercorn's HTTP/1.1 protocol (h11) on the accept loops of ``connections``, in a thread with an
event loop of its own (the hub's loop never parses HTTP or does TLS).

Hypercorn does the protocol: request heads up to 16 KiB, keep-alive, chunked bodies, HEAD; its idle timer is the
header deadline (``Limits.header_timeout_s``). What it leaves to the application is done by ``connections``
(admission, TLS handshake deadline) and ``wsgi_bridge`` (body deadline, write deadline, threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config

from hub.web.serving.connections import Connections, Limits, Peer, accept_loop

log = logging.getLogger(__name__)

App = Callable[..., Any]  # an ASGI app with hypercorn's app-wrapper signature (scope, receive, send, spawn, soon)
_MAX_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Listener:
    sock: socket.socket
    app: App
    tls: ssl.SSLContext | None

    @property
    def address(self) -> tuple[str, int]:
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])


def bind(host: str, port: int, backlog: int = 128, setting: str = "") -> socket.socket:
    """A listening TCP socket on ``host`` (a name resolves to its first address; ``::`` takes IPv4 too). An
    ``OSError`` (its errno kept) names the address and the ``setting`` it comes from (``web.port``): "cannot listen
    on 0.0.0.0:8443 (web.port): Address already in use"."""
    where = f"{host}:{port}" + (f" ({setting})" if setting else "")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:  # the host, not the port
        raise OSError(exc.errno, f"cannot listen on {host!r}: {exc.strerror or exc}") from None
    if not infos:
        raise OSError(f"{host}: no address to listen on")
    try:
        family, _, _, _, address = infos[0]
        dual = family == socket.AF_INET6 and host in ("::", "") and socket.has_dualstack_ipv6()
        return socket.create_server(address[:2], family=family, backlog=backlog, dualstack_ipv6=dual)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from None


class HttpServer:
    """``start()`` serves every listener until ``stop()``; both from any thread but the server's own."""

    def __init__(self, listeners: list[Listener], limits: Limits) -> None:
        self.listeners = listeners
        self.connections = Connections(limits)
        self._config = Config()
        self._config.keep_alive_timeout = limits.header_timeout_s
        self._config.h11_max_incomplete_size = _MAX_HEAD
        self._config.include_server_header = False
        self._config.accesslog = None
        self._config.errorlog = logging.getLogger("hub.web.http")
        self._context = WorkerContext(None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None:
            raise self._failure

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the server's loop (e.g. cutting a connection)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    def stop(self, grace_s: float = 3.0) -> None:
        """Stop accepting, let open requests finish for up to ``grace_s``, cut the rest, end the thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._grace_s = grace_s
        self._thread.join(grace_s + 5.0)
        for listener in self.listeners:
            listener.sock.close()

    # ------------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to start() (before ready) or logged
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
            else:
                log.exception("web: the HTTP server failed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._grace_s = 3.0
        accepting = [
            asyncio.create_task(accept_loop(listener.sock, self.connections, self._handler(listener.app), listener.tls))
            for listener in self.listeners
        ]
        self._ready.set()
        await self._stopping.wait()
        for task in accepting:
            task.cancel()
        await asyncio.gather(*accepting, return_exceptions=True)
        for listener in self.listeners:
            listener.sock.close()
        await self._context.terminated.set()  # idle keep-alive connections close now
        deadline = asyncio.get_running_loop().time() + self._grace_s
        while len(self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        self.connections.abort_all()
        await asyncio.sleep(0)  # let the aborted connections' tasks see it

    def _handler(self, app: App) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Any]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
            loop = asyncio.get_running_loop()
            await TCPServer(app, loop, self._config, self._context, {}, reader, writer)

        return handle
