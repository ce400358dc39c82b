"""API clients administration (admins only): list, add (the token is shown once), disable.

The same ledger functions as ``smartshelf api-clients`` (``clients.py``), each one writer transaction with an
audit entry (actor ``web:<admin>``). The new token is rendered in the response to the add form and nowhere else:
only its SHA-256 is stored, and the page is sent with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from flask import Blueprint, flash, g, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers.response import Response

from hub.ledger.models import InvalidArgument, LedgerError
from hub.web.access import requires
from hub.web.accounts.clients import (
    SCOPES,
    add_client,
    check_name,
    disable_client,
    list_clients,
    new_token,
    token_sha256,
)
from hub.web.db import get_db, get_writer

bp = Blueprint("clients", __name__)


def _page(*, error: str | None = None, token: str | None = None, name: str = "", status: int = 200) -> Response:
    resp = make_response(
        render_template(
            "clients.html",
            clients=list_clients(get_db()),
            scopes=SCOPES,
            error=error,
            token=token,
            name=name,
            checked=set(request.form.getlist("scopes")) if request.method == "POST" else set(),
        ),
        status,
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/api-clients")
@requires("admin")
def index() -> Response:
    return _page()


@bp.post("/api-clients")
@requires("admin")
def create() -> Response:
    name = request.form.get("name", "").strip()
    scopes = tuple(request.form.getlist("scopes"))
    actor = f"web:{g.user.username}"
    try:
        check_name(name)
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise InvalidArgument(f"choose at least one scope of {', '.join(SCOPES)}")
        token = new_token()
        digest = token_sha256(token)
        get_writer().call(lambda ledger: ledger.transact(lambda tx: add_client(tx, name, digest, scopes, actor=actor)))
    except LedgerError as exc:
        return _page(error=str(exc), name=name, status=400)
    return _page(token=token, name=name, status=201)


@bp.post("/api-clients/<name>/disable")
@requires("admin")
def disable(name: str) -> Response:
    actor = f"web:{g.user.username}"
    try:
        get_writer().call(lambda ledger: ledger.transact(lambda tx: disable_client(tx, name, actor=actor)))
    except LedgerError as exc:
        flash(str(exc))
    else:
        flash(f"API client {name} disabled: its token is refused from now on.")
    return redirect(url_for("clients.index"))
