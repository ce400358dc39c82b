"""The Flask application: ``create_app(ledger_path, writer)``.

Reads use a read-only sqlite3 connection per request (``get_db``, closed at teardown); writes go through
``writer`` (the hub's LedgerService on its loop, see ``bridge.py``). The session cookie is signed with a key
generated once and kept next to the database (``<db>.secret``, mode 0600).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g

from hub.web import access
from hub.web.bridge import Writer


def secret_key_path(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.name + ".secret")


def load_secret_key(path: Path) -> bytes:
    """Read the key, creating it (mode 0600, exclusively, so two processes agree) the first time."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 32:
            raise RuntimeError(f"{path}: secret key is too short; delete it to generate a new one") from None
        return key
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(64))
    return path.read_bytes()


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


def _fmt_ms(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
    )
    if config:
        app.config.update(config)
    app.extensions["smartshelf_writer"] = writer
    app.extensions["smartshelf_status"] = status  # hub/web/nodes_page.py
    app.teardown_appcontext(_close_db)
    app.jinja_env.filters["ms"] = _fmt_ms
    access.install(app)

    from hub.web import alerts, api, auth, ledger_view, live, nodes_page, pages, reports, shelf, users_admin

    for module in (auth, pages, live, nodes_page, shelf, alerts, ledger_view, reports, users_admin, api):
        app.register_blueprint(module.bp)
    return app
