"""The Flask app (WSGI) behind hypercorn (ASGI): each request runs in a worker thread of its pool; the event loop
only parses, reads and writes.

* Pools: ``/api/`` requests have their own threads (the tills' and the WMS's reserve: pages and live streams can
  never take them), ``/events`` streams theirs (each holds a thread for its lifetime), pages the rest.
* The body is read on the loop before a thread is taken: at most ``max_body`` bytes, or what a path takes beyond that
  (``larger``: the API's batches and CSV files), else 413; complete within ``body_timeout_s`` (408), so a slow sender
  holds no thread. A body beyond ``max_body`` waits for one of ``LARGE_BODIES`` slots, held until its response is
  sent: the memory such bodies take stays bounded however many connections send them. A body over its limit is read
  to its end and dropped (up to ``DRAIN_MAX``, within the deadline) before the 413, so a client that sends it whole
  before reading gets the answer, not a reset.
* Each write waits for the client to take it (back-pressure) at most ``write_timeout_s``; then the connection is
  cut and the response's iterator closed (a live stream's subscription ends with it). A client that goes away is
  noticed at the next write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from hub.web.headers import COMMON, DATA_CSP, NO_STORE
from hub.web.serving.connections import Connections, Peer

log = logging.getLogger(__name__)

Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
StartResponse = Callable[..., Callable[[bytes], None]]
_LIVE_SPARE = 4
LARGE_BODIES = 4  # bodies beyond max_body held at once (at most 4 x 3 MB: the API's CSV files)
DRAIN_MAX = 16 * 1024 * 1024  # a refused body up to this is read (and dropped) before the 413 is sent
# what the app's responses carry (hub/web/headers.py), on the server's own answers too (408, 413, 500, redirects)
SERVER_HEADERS = [
    (b"content-security-policy", DATA_CSP.encode()),
    (b"cache-control", NO_STORE.encode()),
    *((name.lower().encode(), value.encode()) for name, value in COMMON.items()),
]


class WsgiApp(Protocol):
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]: ...


class ClientGone(Exception):
    """The client closed the connection, or a write to it timed out (the connection was cut)."""


@dataclass(frozen=True, slots=True)
class Pools:
    pages: concurrent.futures.ThreadPoolExecutor
    live: concurrent.futures.ThreadPoolExecutor
    api: concurrent.futures.ThreadPoolExecutor

    @classmethod
    def create(cls, threads: int, live: int, api: int) -> Pools:
        return cls(
            concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="web-page"),
            # the streams, plus a few to refuse one more (503) or send a snapshot while every stream is open
            concurrent.futures.ThreadPoolExecutor(live + _LIVE_SPARE, thread_name_prefix="web-live"),
            concurrent.futures.ThreadPoolExecutor(api, thread_name_prefix="web-api"),
        )

    def for_path(self, path: str) -> concurrent.futures.ThreadPoolExecutor:
        if path == "/api" or path.startswith("/api/"):
            return self.api
        if path == "/events":
            return self.live
        return self.pages

    def shutdown(self) -> None:
        for pool in (self.pages, self.live, self.api):
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """What a path takes beyond the server's ``max_body``: at most ``max_bytes``, a larger body refused (413) with
    ``refusal`` (its own error format)."""

    max_bytes: int
    refusal: bytes
    content_type: bytes = b"application/json"


def _plain(
    status: int,
    text: str | bytes,
    send: Send,
    extra: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> Any:
    body = text.encode() if isinstance(text, str) else text
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SERVER_HEADERS,
        *(extra or []),
    ]

    async def go() -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return go()


class _Exchange:
    """One request's state shared by the loop and its worker thread."""

    def __init__(self) -> None:
        self.gone = threading.Event()
        self.started = False


class WsgiBridge:
    """An ASGI application (hypercorn's app-wrapper signature) running ``app`` in ``pools``."""

    def __init__(
        self,
        app: WsgiApp,
        pools: Pools,
        connections: Connections,
        *,
        max_body: int,
        larger: Callable[[str], BodyLimit | None] | None = None,
    ) -> None:
        self.app = app
        self.pools = pools
        self.connections = connections
        self.max_body = max_body
        self.larger = larger or (lambda path: None)
        self.limits = connections.limits
        self._large = asyncio.Semaphore(LARGE_BODIES)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send, *_: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close"})
            return
        client = scope.get("client") or ("", 0)
        peer: Peer = (str(client[0]), int(client[1]))
        large: list[bool] = []  # a slot taken (_read_body)
        try:
            body = await self._read_body(receive, send, scope, large)
            if body is not None:
                await self._respond(scope, receive, send, body, peer)
        finally:
            if large:
                self._large.release()

    async def _respond(self, scope: dict[str, Any], receive: Receive, send: Send, body: bytes, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        exchange = _Exchange()
        watcher = loop.create_task(self._watch(receive, exchange))
        environ = build_environ(scope, body)

        def cut() -> None:
            loop.call_soon_threadsafe(self.connections.abort, peer)

        def send_blocking(message: Message) -> None:
            if exchange.gone.is_set():
                raise ClientGone
            future = asyncio.run_coroutine_threadsafe(self._write(send, message, peer, exchange), loop)
            try:
                future.result(self.limits.write_timeout_s + 5.0)
            except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
                exchange.gone.set()
                raise ClientGone from None

        try:
            await loop.run_in_executor(
                self.pools.for_path(scope["path"]),
                self._run,
                environ,
                send_blocking,
                exchange,
                cut,
            )
        except RuntimeError as exc:  # the pool is shut down: the server stops
            log.debug("web: request not run: %s", exc)
            self.connections.abort(peer)
        finally:
            watcher.cancel()

    async def _read_body(self, receive: Receive, send: Send, scope: dict[str, Any], large: list[bool]) -> bytes | None:
        """The whole body, or None when it was refused (answered) or the client left; ``large`` gets an entry when
        a slot for a body beyond ``max_body`` was taken (the caller releases it)."""
        larger = self.larger(scope["path"])
        limit = larger.max_bytes if larger is not None else self.max_body
        declared = _content_length(scope)
        too_large = declared is not None and declared > limit
        body = bytearray()
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                if too_large and not await _drain(receive, 0, declared):
                    return None
                if not too_large:
                    if declared is not None and declared > self.max_body:
                        await self._large.acquire()
                        large.append(True)
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return None
                        body.extend(message.get("body", b""))
                        more = message.get("more_body", False)
                        if len(body) > limit:
                            too_large = True
                            if more and not await _drain(receive, len(body), declared):
                                return None
                            break
                        if len(body) > self.max_body and not large:  # a chunked body grows beyond: wait for a slot
                            await self._large.acquire()
                            large.append(True)
                        if not more:
                            return bytes(body)
        except TimeoutError:
            if not too_large:
                await _plain(408, "The request body did not arrive in time.\n", send)
                return None
        await self._too_large(larger, send)
        return None

    async def _too_large(self, larger: BodyLimit | None, send: Send) -> None:
        if larger is None:
            await _plain(413, f"Request body over {self.max_body} bytes.\n", send)
        else:
            await _plain(413, larger.refusal, send, content_type=larger.content_type)

    async def _watch(self, receive: Receive, exchange: _Exchange) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                exchange.gone.set()
                return

    async def _write(self, send: Send, message: Message, peer: Peer, exchange: _Exchange) -> None:
        try:
            async with asyncio.timeout(self.limits.write_timeout_s):
                await send(message)
        except TimeoutError:
            exchange.gone.set()
            log.info("web: %s did not read its response for %.0f s: connection cut", peer[0],
                     self.limits.write_timeout_s)  # fmt: skip
            self.connections.abort(peer)
            raise ClientGone from None

    def _run(
        self,
        environ: dict[str, Any],
        send: Callable[[Message], None],
        exchange: _Exchange,
        cut: Callable[[], None],
    ) -> None:
        """In a worker thread: call the app, send what it returns (``cut``: abort the connection)."""
        response: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            if exc_info is not None and exchange.started:
                raise exc_info[1].with_traceback(exc_info[2])
            response["status"] = int(status.split(" ", 1)[0])
            response["headers"] = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            return write

        def start() -> None:
            if not exchange.started:
                if "status" not in response:
                    raise RuntimeError("the WSGI app sent a body before start_response")
                exchange.started = True
                send({"type": "http.response.start", "status": response["status"], "headers": response["headers"]})

        def write(data: bytes) -> None:
            if data:
                start()
                send({"type": "http.response.body", "body": bytes(data), "more_body": True})

        try:
            result = self.app(environ, start_response)
        except Exception:
            log.exception("web: the app failed on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            self._failed(send, exchange, cut)
            return
        try:
            for chunk in result:
                write(chunk)
            start()
            send({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientGone:
            pass
        except Exception:
            log.exception("web: the response to %s %s failed", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            self._failed(send, exchange, cut)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("web: closing the response to %s failed", environ["PATH_INFO"])

    def _failed(self, send: Callable[[Message], None], exchange: _Exchange, cut: Callable[[], None]) -> None:
        if exchange.started:
            exchange.gone.set()  # half a response sent: only cutting the connection tells the client
            cut()
            return
        exchange.started = True
        body = b"Internal error: the hub's log has the details.\n"
        try:
            send({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"), *SERVER_HEADERS]})  # fmt: skip
            send({"type": "http.response.body", "body": body, "more_body": False})
        except ClientGone:
            pass


async def _drain(receive: Receive, received: int, declared: int | None) -> bool:
    """Read and drop the rest of a refused body, up to ``DRAIN_MAX`` bytes in all (the caller bounds the time): a
    client that sends its whole body before it reads (urllib, most tills) then gets the 413 instead of a reset.
    False: the client left."""
    if declared is not None and declared > DRAIN_MAX:
        return True
    while received <= DRAIN_MAX:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        if not message.get("more_body", False):
            return True
        received += len(message.get("body", b""))
    return True


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                return None
    return None


def build_environ(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    """PEP 3333's environ for an ASGI HTTP scope (strings are latin-1 "bytes as str", as WSGI wants them)."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_LENGTH":
            continue  # the body as read
        key = "CONTENT_TYPE" if name == "CONTENT_TYPE" else f"HTTP_{name}"
        if key in environ:
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    return environ
