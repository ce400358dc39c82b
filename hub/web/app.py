"""The Flask application: ``create_app(ledger_path, writer)``.

Reads use a read-only sqlite3 connection per request (``db.get_db``, closed at teardown); writes go through
``writer`` (the hub's LedgerService on its loop, see ``bridge.py``). Every endpoint's access rule is declared where
it is defined and checked here at start-up (``access.install``). The session cookie is signed with a key generated
once and kept next to the database (``<db>.secret``, mode 0600); a key file that other users can read is refused
(``hub.private_files.ExposedSecret``: the page, hence the hub, does not start).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, render_template, request
from flask.typing import ResponseReturnValue
from jinja2 import BaseLoader, FileSystemLoader, PrefixLoader

from hub.ledger.models import LedgerClosed
from hub.private_files import check_private
from hub.web import access, db, filters, headers, inputs
from hub.web.accounts import clients_admin, login, users_admin
from hub.web.api import views as api
from hub.web.api.errors import unavailable as api_unavailable
from hub.web.bridge import Writer
from hub.web.live import views as live
from hub.web.pages import alerts, audit, ledger, nodes, overview, reports, shelf, tags

TEMPLATES = Path(__file__).resolve().parent / "templates"


def shared_templates() -> BaseLoader:
    """The templates another app renders too, as ``shared/<name>``: ``templates/shared/`` (the account forms, which
    the central page's users, API clients and sign-in pages call). This app finds them in its own folder."""
    return PrefixLoader({"shared": FileSystemLoader(TEMPLATES / "shared")})


def secret_key_path(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.name + ".secret")


def load_secret_key(path: Path) -> bytes:
    """Read the key, creating it (mode 0600) the first time. The key is written to a temporary file first and
    then linked into place (``os.link`` fails if the name exists), so another process starting at the same moment
    either finds no file or the whole key, never an empty or partial one, and both use the same key."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(64))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    with open(path, "rb") as f:
        check_private(path, "the key that signs the page's session cookies", os.fstat(f.fileno()))
        key = f.read()
    if len(key) < 32:
        raise RuntimeError(f"{path}: secret key is too short; delete it to generate a new one")
    return key


def unavailable(exc: Exception) -> ResponseReturnValue:
    """503 for a write the ledger did not confirm (the writer is busy past the bridge's timeout, or closed), from
    any view: a clear page (JSON under /api/), never a 500. A timed-out write is still queued and may be applied."""
    if request.path == "/api" or request.path.startswith("/api/"):
        return api_unavailable(exc, "request")
    if isinstance(exc, TimeoutError):
        message = (
            "The ledger is busy and did not confirm this change in time. It may still be applied: check before"
            " trying again (reload the page in a moment)."
        )
    else:
        message = "The ledger is not available (the hub is stopping or restarting). Try again in a moment."
    return render_template("unavailable.html", message=message), 503, {"Retry-After": "5"}


# in the order their routes are matched (and listed by access.matrix_markdown within a role)
BLUEPRINTS = (
    login,
    overview,
    live,
    nodes,
    shelf,
    tags,
    alerts,
    ledger,
    reports,
    users_admin,
    clients_admin,
    audit,
    api,
)


def create_app(
    ledger_path: Path | str,
    writer: Writer,
    *,
    config: dict[str, Any] | None = None,
    status: Callable[[], dict[str, Any]] | None = None,
    count_lane: shelf.CountLane | None = None,
) -> Flask:
    """``status``: the running hub's ``HubService.status()``, callable from any thread (``server.loop_status``);
    the nodes page shows only the ledger's view without it. ``count_lane``: the hub's ``count_lane``, callable from
    any thread (``server.loop_count_lane``); the shelf page offers no count without it."""
    ledger_path = Path(ledger_path)
    app = Flask(__name__, static_folder=None)
    app.config.update(
        LEDGER_PATH=str(ledger_path),
        SECRET_KEY=load_secret_key(secret_key_path(ledger_path)),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="smartshelf_session",
        MAX_CONTENT_LENGTH=64 * 1024,
        # a signed cookie older than a shift is refused (the signature's timestamp), even if it was copied
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    if config:
        app.config.update(config)
    db.install(app, writer)
    nodes.install(app, status)
    shelf.install(app, count_lane)
    filters.install(app)
    inputs.install(app)  # before the blueprints: <int:...> is the checked converter in every route
    app.register_error_handler(TimeoutError, unavailable)
    app.register_error_handler(LedgerClosed, unavailable)
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    headers.install(app)  # security headers on every response; the assets the pages' policy allows
    access.install(app)  # last: every endpoint is known, each must declare its rule
    return app
