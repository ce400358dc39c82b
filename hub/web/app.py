"""The Flask application: ``create_app(ledger_path, writer)``.

Reads use a read-only sqlite3 connection per request (``get_db``, closed at teardown); writes go through
``writer`` (the hub's LedgerService on its loop, see ``bridge.py``). The session cookie is signed with a key
generated once and kept next to the database (``<db>.secret``, mode 0600).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, render_template, request
from flask.typing import ResponseReturnValue

from hub.ledger.models import LedgerClosed
from hub.web import access
from hub.web.bridge import Writer


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
    key = path.read_bytes()
    if len(key) < 32:
        raise RuntimeError(f"{path}: secret key is too short; delete it to generate a new one")
    return key


def get_db() -> sqlite3.Connection:
    """This request's read-only connection to the ledger."""
    if "db" not in g:
        uri = f"file:{Path(current_app.config['LEDGER_PATH']).resolve()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        conn.execute("PRAGMA query_only = ON")
        g.db = conn
    db: sqlite3.Connection = g.db
    return db


def get_writer() -> Writer:
    writer: Writer = current_app.extensions["smartshelf_writer"]
    return writer


def _close_db(_exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def fmt_ms(ms: object) -> str:
    """The ``ms`` template filter: ms since the epoch as UTC time ("-" for none). Built by hand: ten times faster
    than strftime, which matters for the overview's 2,000 rows."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "-"
    t = time.gmtime(ms // 1000)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} UTC"


def _unavailable(exc: Exception) -> ResponseReturnValue:
    """503 for a write the ledger did not confirm (the writer is busy past the bridge's timeout, or closed), from
    any view: a clear page (JSON under /api/), never a 500. A timed-out write is still queued and may be applied."""
    if request.path == "/api" or request.path.startswith("/api/"):
        from hub.web.api import unavailable

        return unavailable(exc, "request")
    if isinstance(exc, TimeoutError):
        message = (
            "The ledger is busy and did not confirm this change in time. It may still be applied: check before"
            " trying again (reload the page in a moment)."
        )
    else:
        message = "The ledger is not available (the hub is stopping or restarting). Try again in a moment."
    return render_template("unavailable.html", message=message), 503, {"Retry-After": "5"}


def create_app(
    ledger_path: Path | str,
    writer: Writer,
    *,
    config: dict[str, Any] | None = None,
    status: Callable[[], dict[str, Any]] | None = None,
) -> Flask:
    """``status``: the running hub's ``HubService.status()``, callable from any thread (``server.loop_status``);
    the nodes page shows only the ledger's view without it."""
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
    app.extensions["smartshelf_writer"] = writer
    app.extensions["smartshelf_status"] = status  # hub/web/nodes_page.py
    app.teardown_appcontext(_close_db)
    app.jinja_env.filters["ms"] = fmt_ms
    access.install(app)
    app.register_error_handler(TimeoutError, _unavailable)
    app.register_error_handler(LedgerClosed, _unavailable)

    from hub.web import (
        alerts,
        api,
        auth,
        clients_admin,
        ledger_view,
        live,
        nodes_page,
        pages,
        reports,
        shelf,
        users_admin,
    )

    blueprints = (auth, pages, live, nodes_page, shelf, alerts, ledger_view, reports, users_admin, clients_admin, api)
    for module in blueprints:
        app.register_blueprint(module.bp)
    return app
