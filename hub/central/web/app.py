"""The central page's Flask application: ``create_central_app(database)``.

The hub's stack, central's data and roles: the hub's access policy (``hub.web.access``: every endpoint declares its
rule, undeclared ones are refused, CSRF on every form post) with central's roles (``schema.ROLES``) and users
(``accounts.get_user``, PostgreSQL); the hub's security headers and Content-Security-Policy with its stylesheets
(``hub.web.headers``, ``hub.web.assets``: no inline script or style, no script at all here); the hub's checked
``<int:...>`` converter, template filters and JSON API errors. Reads and writes go to PostgreSQL through
``pg.Database`` (an asyncpg pool on a loop of its own). The session cookie is signed with a key kept in PostgreSQL
(``web_secret``, made by the first server that starts), so every replica of the page accepts the same sessions.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, render_template, request
from flask.typing import ResponseReturnValue
from jinja2 import ChoiceLoader, FileSystemLoader

from hub.central.web import admin, api, login, pages
from hub.central.web.accounts import CentralUser, get_user, session_key
from hub.central.web.pg import Database, get_database, install, unavailable_errors
from hub.central.web.queries import OFFLINE_AFTER_MS
from hub.central.web.schema import ROLES
from hub.web import access, filters, headers, inputs
from hub.web.api.errors import FieldError, error_response
from hub.web.app import shared_templates

TEMPLATES = Path(__file__).resolve().parent / "templates"
# in the order their routes are matched (and listed by access.matrix_markdown within a role)
BLUEPRINTS = (login, pages, admin, api)


def _load_user(username: str) -> CentralUser | None:
    return get_database().run(lambda conn: get_user(conn, username))


def unavailable(exc: BaseException) -> ResponseReturnValue:
    """503 when PostgreSQL cannot answer (down, restarting, too slow): a clear page or JSON, never a 500."""
    message = "The central database is not available right now. Try again in a moment."
    if request.path == "/api" or request.path.startswith("/api/"):
        return error_response(503, [FieldError("database", message)], {"Retry-After": "5"})
    return render_template("unavailable.html", message=message), 503, {"Retry-After": "5"}


def create_central_app(
    database: Database, *, config: dict[str, Any] | None = None, offline_after_ms: int = OFFLINE_AFTER_MS
) -> Flask:
    """``database``: a started ``pg.Database`` of a central store at the current schema (``central migrate``).
    ``offline_after_ms``: no message from a hub for this long shows it as silent."""
    app = Flask(__name__, static_folder=None)
    # its own templates, then the hub's shared ones ("shared/accounts.html": the sign-in, users and clients forms)
    app.jinja_loader = ChoiceLoader([FileSystemLoader(TEMPLATES), shared_templates()])
    app.config.update(
        SECRET_KEY=database.run(session_key),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="smartshelf_central_session",
        MAX_CONTENT_LENGTH=64 * 1024,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        OFFLINE_AFTER_MS=offline_after_ms,
    )
    if config:
        app.config.update(config)
    install(app, database)
    filters.install(app)
    inputs.install(app)  # before the blueprints: <int:...> is the checked converter in every route
    for error in unavailable_errors():
        app.register_error_handler(error, unavailable)
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    headers.install(app)  # security headers on every response; the hub's stylesheets at /static/
    access.install(app, roles=ROLES, load_user=_load_user)  # last: every endpoint is known, each declares its rule
    return app
