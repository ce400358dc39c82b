"""The running hub's local control channel: a Unix socket (``hub.control_socket``, default ``<database>.sock``).

One JSON object per line in each direction, one request per connection::

    -> {"op": "command", "node": 1, "command": "tare", "lane": 0, "timeout_s": 10, "actor": "cli:alice"}
    <- {"ok": true, "node": 1, "command": "tare", "args": {"lane": 0}, "seq": 7, "status": "ok", "value": 8423}
    -> {"op": "status"}
    <- {"ok": true, "status": {...}}

Failures answer ``{"ok": false, "error": "<one line>"}``. The socket is created mode 0600: whoever may open it
may command the shelves, so access is the file permission (run the CLI as the hub's user). What a request writes
is audited as from ``cli:<user>@<host>``, the user the kernel says is at the other end (``SO_PEERCRED``). A socket
left by a hub that died is replaced; one that still answers means another hub is running on this database, and the
new one refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hub.ledger.origin import acting_from, peer

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class HubRunning(Exception):
    """Another hub answers on the control socket."""


class HubNotRunning(Exception):
    """Nothing answers on the control socket."""


def _alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def claim(path: Path) -> None:
    """Refuse when another hub listens on ``path``; remove a stale socket left by one that died."""
    if path.is_socket():
        if _alive(path):
            raise HubRunning(f"another hub is running (it answers on {path})")
        path.unlink()
    elif path.exists():
        raise HubRunning(f"{path} exists and is not a socket: remove it or set hub.control_socket")


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        claim(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)
        self._inode = self.path.stat().st_ino

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:  # never remove another hub's socket
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await reader.readline()
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
            except (ValueError, asyncio.LimitOverrunError) as exc:
                reply: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
            else:
                try:
                    # audited as from the OS user at the other end of the socket (the kernel's word, not the request's)
                    with acting_from(peer(writer.get_extra_info("socket"))):
                        reply = await self._handler(request)
                except Exception as exc:
                    log.exception("control: request failed")
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(reply, sort_keys=True).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def request(path: Path, payload: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """Send one request to the running hub and return its reply (``HubNotRunning`` when nothing listens)."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_REQUEST)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise HubNotRunning(f"no hub is running ({path}: {exc.strerror})") from None
    try:
        writer.write(json.dumps(payload).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not line:
        raise HubNotRunning(f"the hub closed the connection without answering ({path})")
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise ValueError("the hub's reply is not a JSON object")
    return reply
