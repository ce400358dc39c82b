"""The listening sockets' own accept loop: who may hold a connection, and how one is cut.

Every connection is counted from ``accept`` (before TLS, before a byte of HTTP) by its client address: beyond
``max_per_client`` from one address, or ``max_connections`` in all, a new one is closed at once, so a slow or
hostile client on the store LAN (half-sent requests, stalled handshakes) can hold only its own share and never
lock the tills' ``POST /api/v1/sales`` out. A TLS handshake has ``handshake_timeout_s``; a request head has
``header_timeout_s`` from the connection's start or the previous response's end (hypercorn's idle timer, which
bytes of an unfinished head do not reset); the bridge bounds the body and each write (``wsgi_bridge``).

Everything here runs on the web server's own event loop (one thread): no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Peer = tuple[str, int]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]
_REFUSAL_LOG_EVERY_S = 10.0
_READ_LIMIT = 2**16


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 256  # open connections in all (the hub's other files need descriptors too)
    max_per_client: int = 32  # open connections from one client address
    handshake_timeout_s: float = 10.0  # a TLS handshake not finished by then is dropped
    header_timeout_s: float = 10.0  # a request head not complete by then is dropped (also: keep-alive idle)
    body_timeout_s: float = 30.0  # a request body not complete by then: 408
    write_timeout_s: float = 30.0  # a response write the client has not taken by then: the connection is cut

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_client < 1:
            raise ValueError("connection limits must be at least 1")
        for name in ("handshake_timeout_s", "header_timeout_s", "body_timeout_s", "write_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


class Connections:
    """The open connections by peer (host, port), counted per host from their accept."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._transports: dict[Peer, asyncio.BaseTransport | None] = {}
        self._per_host: Counter[str] = Counter()
        self.refused = 0  # connections closed at accept (over a limit)
        self.cut = 0  # connections aborted (a write timed out, the server stopping)
        self._last_refusal_log = 0.0

    def __len__(self) -> int:
        return len(self._transports)

    def from_host(self, host: str) -> int:
        return self._per_host[host]

    def admit(self, peer: Peer) -> str | None:
        """None: ``peer`` may connect (counted from now); else why not."""
        if len(self._transports) >= self.limits.max_connections:
            why = f"{len(self._transports)} connections open (max_connections {self.limits.max_connections})"
        elif self._per_host[peer[0]] >= self.limits.max_per_client:
            why = f"{self._per_host[peer[0]]} connections from {peer[0]} (max_per_client {self.limits.max_per_client})"
        else:
            self._transports[peer] = None
            self._per_host[peer[0]] += 1
            return None
        self.refused += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= _REFUSAL_LOG_EVERY_S:
            self._last_refusal_log = now
            log.warning("web: refused a connection from %s: %s (%d refused so far)", peer[0], why, self.refused)
        return why

    def attach(self, peer: Peer, transport: asyncio.BaseTransport) -> None:
        if peer in self._transports:
            self._transports[peer] = transport

    def release(self, peer: Peer) -> None:
        if self._transports.pop(peer, False) is not False:
            self._per_host[peer[0]] -= 1
            if self._per_host[peer[0]] <= 0:
                del self._per_host[peer[0]]

    def abort(self, peer: Peer) -> None:
        """Cut ``peer``'s connection now (no flush of what it did not read)."""
        transport = self._transports.get(peer)
        if transport is not None and not transport.is_closing():
            self.cut += 1
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()

    def abort_all(self) -> None:
        for peer in list(self._transports):
            self.abort(peer)


def _peer(address: object) -> Peer:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return str(address), 0


async def accept_loop(
    sock: socket.socket,
    connections: Connections,
    handler: Handler,
    tls: ssl.SSLContext | None,
) -> None:
    """Accept on ``sock`` until cancelled: admit by ``connections``, TLS handshake (bounded), then ``handler``."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    pending: set[asyncio.Task[None]] = set()
    while True:
        try:
            conn, address = await loop.sock_accept(sock)
        except asyncio.CancelledError:
            raise
        except OSError as exc:  # EMFILE / ENFILE / ECONNABORTED: wait a little, never spin
            log.warning("web: accept failed (%s); %d connections open", exc.strerror or exc, len(connections))
            await asyncio.sleep(0.1)
            continue
        peer = _peer(address)
        if connections.admit(peer) is not None:
            _reset(conn)
            continue
        with contextlib.suppress(OSError):  # asyncio sets it only on sockets made with proto IPPROTO_TCP, not these:
            # without it a response's body waits for the client's delayed ACK of its head (40 ms a request)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(_open(loop, conn, peer, connections, handler, tls))
        pending.add(task)
        task.add_done_callback(pending.discard)


def _reset(conn: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): no TIME_WAIT kept for a refused client."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


async def _open(
    loop: asyncio.AbstractEventLoop,
    conn: socket.socket,
    peer: Peer,
    connections: Connections,
    handler: Handler,
    tls: ssl.SSLContext | None,
) -> None:
    reader = asyncio.StreamReader(limit=_READ_LIMIT, loop=loop)
    done = loop.create_future()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w, peer)
        finally:
            connections.release(peer)
            if not done.done():
                done.set_result(None)

    protocol = asyncio.StreamReaderProtocol(reader, serve, loop=loop)
    try:
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol,
            conn,
            ssl=tls,
            ssl_handshake_timeout=connections.limits.handshake_timeout_s if tls is not None else None,
        )
    except asyncio.CancelledError:
        connections.release(peer)
        conn.close()
        raise
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:  # a failed or stalled handshake
        log.debug("web: connection from %s dropped before HTTP: %s", peer[0], exc)
        connections.release(peer)
        conn.close()
        return
    connections.attach(peer, transport)
    try:
        await done  # the handler's task belongs to the protocol
    except asyncio.CancelledError:
        transport.abort()  # the server stops: cut what is left
        raise
