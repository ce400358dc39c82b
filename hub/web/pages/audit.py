"""The audit trail (admins only): who did what, when and from where, newest first, filtered; the same as CSV.

``GET /audit``: entries newest first, ``PAGE_SIZE`` a page, keyset pages on ``(ts_ms, id)`` (``?before=<ts>.<id>``;
**Older** / **Newest** links keep the filters). Filters (combined with AND; an invalid value is a 400 naming the
parameter): ``actor`` and ``origin`` (exact, or the start of it with a trailing ``*``: ``api:*``, ``ip:10.0.0.*``),
``action`` (exact), ``from`` / ``to`` (``YYYY-MM-DD``, UTC days, both included). ``GET /audit.csv``: every matching
entry (not one page), streamed.

Read-only: the page has no form that writes and no endpoint edits or deletes an entry; the ledger's triggers refuse
UPDATE and DELETE on ``audit`` whoever asks (even the writer).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, render_template, request
from werkzeug.datastructures import MultiDict

from hub.ledger.numbers import MAX_TS_MS, shown
from hub.ledger.origin import AUTOMATIC, MAX_ORIGIN
from hub.web.access import requires
from hub.web.db import get_db, keyset_batches, streamed_read
from hub.web.filters import csv_chunks, csv_download, csv_text, iso_ms
from hub.web.inputs import BadInput, day_value, int_text, single
from hub.web.pages.alerts_text import readable_evidence
from hub.web.pages.audit_queries import ACTIONS, PAGE_SIZE, Entry, Filters, page

bp = Blueprint("audit", __name__)

CSV_BATCH = 1000
CSV_HEADER = ("id", "time_utc", "actor", "action", "origin", "details")
_ACTION = re.compile(r"[a-z][a-z0-9_]{0,39}")
_ACTOR_MAX = 64


class FilterError(ValueError):
    """A query parameter the page cannot use; the message names it."""


def _text(args: MultiDict[str, str], name: str, longest: int) -> str:
    value = (single(args, name) or "").strip()
    if len(value) > longest + 1:  # + the trailing "*" of a prefix
        raise FilterError(f"{name}: at most {longest} characters")
    if not value.isprintable():
        raise FilterError(f"{name}: control characters are not allowed")
    return value


def parse_filters(args: MultiDict[str, str]) -> Filters:
    action = (single(args, "action") or "").strip()
    if action and _ACTION.fullmatch(action) is None:
        raise FilterError(f"action: {action[:40]!r} is not an action name (lower-case letters, digits and '_')")
    day_from, day_to = day_value(args, "from"), day_value(args, "to")
    if day_from is not None and day_to is not None and day_from > day_to:
        raise FilterError("from: the first day is after the last day (to)")
    return Filters(_text(args, "actor", _ACTOR_MAX), action, _text(args, "origin", MAX_ORIGIN), day_from, day_to)


def parse_before(args: MultiDict[str, str]) -> tuple[int, int] | None:
    value = (single(args, "before") or "").strip()
    if not value:
        return None
    ts, _, entry = value.partition(".")
    try:
        return int_text("before", ts, 0, MAX_TS_MS), int_text("before", entry)
    except BadInput:
        raise FilterError(f"before: {shown(value)} is not a page position: follow the page links") from None


def _filters_or_400() -> tuple[Filters, tuple[int, int] | None]:
    try:
        return parse_filters(request.args), parse_before(request.args)
    except (FilterError, BadInput) as exc:
        abort(400, str(exc))


def where_label(origin: str | None) -> str:
    """An entry's origin as the page says it."""
    if origin is None:
        return "not recorded"
    if origin == AUTOMATIC:
        return "automatic (the hub itself)"
    return origin


@bp.get("/audit")
@requires("admin")
def index() -> str:
    filters, before = _filters_or_400()
    rows = page(get_db(), filters, before)
    older = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        older = "?" + urlencode([*filters.query_args(), ("before", rows[-1].cursor)])
    query = urlencode(filters.query_args())
    return render_template(
        "audit.html",
        entries=[(e, where_label(e.origin), readable_evidence(e.details)) for e in rows],
        filters=filters,
        actions=ACTIONS,
        older=older,
        newest="?" + query if before is not None else None,
        export_query=query,
        page_size=PAGE_SIZE,
    )


def csv_row(e: Entry) -> list[object]:
    """An entry for the CSV: the id stays a number, text is made formula-safe, details are the stored JSON."""
    return [e.id, iso_ms(e.ts_ms), csv_text(e.actor), csv_text(e.action), csv_text(e.origin), csv_text(e.details)]


def csv_lines(conn: sqlite3.Connection, filters: Filters) -> Iterator[str]:
    """The CSV, ``CSV_BATCH`` entries a chunk (keyset, so memory stays constant; entries committed meanwhile are
    newer than the first batch and are left out)."""
    batches = keyset_batches(
        lambda before: page(conn, filters, before, CSV_BATCH - 1), lambda e: (e.ts_ms, e.id), CSV_BATCH
    )
    return csv_chunks(CSV_HEADER, (map(csv_row, entries) for entries in batches))


@bp.get("/audit.csv")
@requires("admin")
def export() -> Response:
    filters, _before = _filters_or_400()
    return csv_download("audit", streamed_read(lambda conn: csv_lines(conn, filters)))
