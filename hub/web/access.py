"""Who may see what: the role matrix (defined here, once), session users, CSRF tokens.

Every request is checked against ``ROLE_MATRIX`` before its view runs (fail closed: an endpoint missing from the
matrix is refused to everyone). Endpoints marked ``API`` take no session: the API blueprint checks their bearer
token and scope itself (``hub/web/api.py``), before its views run, failing closed the same way.
Anonymous users are redirected to the login page; a signed-in user whose role
is below the minimum gets 403. Every POST must carry the session's CSRF token (form field ``csrf_token``).
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, g, redirect, request, session, url_for
from werkzeug.wrappers.response import Response

from hub.web.users import ROLES, get_user, role_rank

PUBLIC = "public"
API = "api client"  # bearer token of an API client; its scopes are checked by hub/web/api.py (API_SCOPES)
# endpoint -> minimum role (or PUBLIC, or API). hub/web/README.md renders this table.
ROLE_MATRIX: dict[str, str] = {
    "auth.login": PUBLIC,
    "auth.logout": PUBLIC,
    # seeing the store
    "pages.overview": "viewer",
    "live.events": "viewer",
    "live.lanes": "viewer",
    "shelf.detail": "viewer",
    "alerts.index": "viewer",
    "reports.reorder": "viewer",
    "nodes.index": "viewer",
    # acting on it
    "alerts.acknowledge": "clerk",
    "ledger.explorer": "clerk",
    "alerts.resolve": "manager",
    "ledger.export": "manager",
    "reports.index": "manager",
    "reports.export": "manager",
    # administration
    "users.index": "admin",
    "users.create": "admin",
    "users.update": "admin",
    "clients.index": "admin",
    "clients.create": "admin",
    "clients.disable": "admin",
    # the HTTP API (hub/web/api.py): bearer tokens, scopes in api.API_SCOPES
    "api.openapi": PUBLIC,
    "api.post_sales": API,
    "api.post_receipts": API,
    "api.post_returns": API,
    "api.post_picks": API,
    "api.post_counts": API,
    "api.stock": API,
    "api.lanes": API,
    "api.alerts": API,
    "api.import_sales": API,
    "api.import_receipts": API,
    "api.import_returns": API,
    "api.import_picks": API,
    "api.import_counts": API,
}


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _check_csrf() -> None:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), given.encode()):
        abort(400, "The form's security token is missing or out of date: reload the page and try again.")


def _enforce() -> Response | None:
    from hub.web.app import get_db

    g.user = None
    name = session.get("user")
    if isinstance(name, str):
        user = get_user(get_db(), name)
        if user is None or user.disabled or session.get("epoch") != user.session_epoch:
            session.clear()  # disabled, or signed out since (logout, password reset, role change: a new epoch)
        else:
            g.user = user
    if request.routing_exception is not None:
        return None  # 404 / 405: Flask raises it next
    needed = ROLE_MATRIX.get(request.endpoint or "")
    if needed is None:
        abort(403)
    if needed == API:
        return None  # no session, no cookie, no CSRF: hub/web/api.py checks the bearer token and its scopes
    if needed != PUBLIC:
        if g.user is None:
            return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
        if role_rank(g.user.role) < role_rank(needed):
            abort(403)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        _check_csrf()
    return None


def install(app: Flask) -> None:
    app.before_request(_enforce)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["allowed"] = allowed


def allowed(endpoint: str) -> bool:
    """For templates: may the current user reach ``endpoint``?"""
    needed = ROLE_MATRIX.get(endpoint)
    if needed is None or needed == API:
        return False
    if needed == PUBLIC:
        return True
    user = g.get("user")
    return user is not None and role_rank(user.role) >= role_rank(needed)


def matrix_markdown(app: Flask) -> str:
    """The role matrix as the Markdown table in hub/web/README.md (a test keeps the two equal)."""
    routes: dict[str, list[str]] = {}
    for rule in app.url_map.iter_rules():
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        routes.setdefault(rule.endpoint, []).append(f"{' '.join(methods)} `{rule.rule}`")
    lines = ["| route | endpoint | minimum role | " + " | ".join(("anonymous", *ROLES)) + " |"]
    lines.append("| --- | --- | --- |" + " --- |" * (len(ROLES) + 1))
    for endpoint, needed in ROLE_MATRIX.items():
        if needed == API:
            cells = ["token"] * (len(ROLES) + 1)
        else:
            cells = ["yes" if needed == PUBLIC else "→ login"]
            cells += ["yes" if needed == PUBLIC or role_rank(r) >= role_rank(needed) else "403" for r in ROLES]
        route = ", ".join(routes.get(endpoint, ["-"]))
        lines.append(f"| {route} | `{endpoint}` | {needed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
