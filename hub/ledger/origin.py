"""Where a write comes from: the ``origin`` of each audit entry (migration 9), beside who (``actor``) and when.

* ``ip:<address>``: a request to the status page or the HTTP API, the peer's address (``request.remote_addr``);
  the actor says who (``web:<user>``, ``api:<client>``).
* ``cli:<os user>@<host>``: a ``smartshelf`` command that opened the database itself (``cli()``), or one sent to
  the running hub over its control socket (the user is the peer's, from the kernel: ``peer()``).
* ``auto``: the hub's own work, no person asked for it (ingest, reconciliation runs, a node's answer to a command
  the hub sent on its own).

The origin travels with the work, not through every posting's arguments: whoever starts a write sets ``ORIGIN``
(``with acting_from(...)``) and the ledger's writer reads it when the work is queued (``LedgerService._tx``), so
the audit entries of that transaction carry it. ``asyncio`` copies the caller's context into the tasks it starts
(``run_coroutine_threadsafe`` from a WSGI thread, ``create_task``), so it crosses from a web worker thread to the
hub's loop by itself. Work with no origin set is the writer's default (``LedgerService(origin=...)``: ``auto``).
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import socket
import struct
from collections.abc import Iterator
from contextvars import ContextVar

AUTOMATIC = "auto"
MAX_ORIGIN = 200
ORIGIN: ContextVar[str | None] = ContextVar("smartshelf_origin", default=None)


def clean(text: str) -> str:
    """An origin as stored: printable ASCII (anything else becomes ``?``), at most ``MAX_ORIGIN`` characters."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text)[:MAX_ORIGIN]
    return out or "?"


def ip(address: str | None) -> str:
    """A request's origin: its peer address (``?`` when the server did not say)."""
    return clean(f"ip:{address or '?'}")


def _host() -> str:
    try:
        return socket.gethostname() or "?"
    except OSError:  # pragma: no cover - no host name at all
        return "?"


def cli(user: str | None = None) -> str:
    """A command line's origin: ``cli:<os user>@<host>`` (the login name of this process unless ``user``)."""
    if user is None:
        try:
            user = getpass.getuser()
        except Exception:  # no login name (containers)
            user = "?"
    return clean(f"cli:{user}@{_host()}")


def peer(sock: socket.socket | None) -> str:
    """The origin of a request on a Unix socket: the OS user of the process at the other end (``SO_PEERCRED``,
    from the kernel, not from the request), as ``cli:<user>@<host>``; ``cli:?@<host>`` where that is unknown."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return cli("?")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", raw)
    except OSError:
        return cli("?")
    try:
        import pwd

        name = pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        name = f"uid{uid}"
    return cli(name)


@contextlib.contextmanager
def acting_from(origin: str | None) -> Iterator[None]:
    """Writes started inside (and tasks created inside) are audited as coming from ``origin``."""
    token = ORIGIN.set(None if origin is None else clean(origin))
    try:
        yield
    finally:
        ORIGIN.reset(token)


def current() -> str | None:
    """The origin set for the work being started, or None (the writer's default)."""
    return ORIGIN.get()


def is_loopback(host: str) -> bool:
    """Is ``host`` (an address or ``localhost``) this machine's loopback? (Plain HTTP is allowed there only: the
    status page's ``tls = "off"``, ``ledger import --url http://...``.)"""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
