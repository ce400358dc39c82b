"""RFID tags: ``GET /tags?epc=`` (find a tag by its EPC or the start of it) and ``GET /tags/<epc>`` (one tag's
serialised trail: what its EPC encodes and which SKU it is, when it arrived on which lane, how long it sat there,
when and how it left, every event of it, and the alerts that cite it).

Staff type EPCs as printed (any case, with spaces or dashes); the address is always the ledger's form (upper-case
hex), so a search for a whole EPC goes straight to its trail. The search takes any number of hex digits (``307``
finds ``3074...``); 400 for text that is not hex (or longer than an EPC), and for a trail address that is no EPC;
404 for an EPC the ledger has never seen nor been told about. Viewers and up, like the shelf pages the trail is
reached from.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from hub.ledger.epc import InvalidCode, normalise_epc
from hub.ledger.models import now_ms
from hub.web.access import requires
from hub.web.db import get_db, read_transaction
from hub.web.inputs import BadInput, single
from hub.web.pages.tags_queries import TRAIL_EVENTS_MAX, normalise_prefix, search, trail

bp = Blueprint("tags", __name__)


@bp.get("/tags")
@requires("viewer")
def index() -> ResponseReturnValue:
    try:
        text = (single(request.args, "epc") or "").strip()[:100]
    except BadInput as exc:
        abort(400, str(exc))
    error = None
    found: list[tuple[str, str | None, str | None]] = []
    if text:
        try:
            prefix = normalise_prefix(text)  # any number of hex digits: the start of an EPC need not be whole bytes
        except InvalidCode as exc:
            error = str(exc)
        else:
            with read_transaction(get_db()) as conn:
                found = search(conn, prefix)
            if len(found) == 1 and found[0][0] == prefix:
                return redirect(url_for("tags.detail", epc=prefix))
    return render_template("tags.html", q=text, found=found, error=error), (400 if error else 200)


@bp.get("/tags/<epc>")
@requires("viewer")
def detail(epc: str) -> ResponseReturnValue:
    try:
        canonical = normalise_epc(epc)
    except InvalidCode as exc:
        abort(400, str(exc))
    if canonical != epc:
        return redirect(url_for("tags.detail", epc=canonical))
    with read_transaction(get_db()) as conn:
        found = trail(conn, canonical, now_ms())
    if not found.known:
        abort(404)
    return render_template("tag.html", t=found, events_max=TRAIL_EVENTS_MAX)
