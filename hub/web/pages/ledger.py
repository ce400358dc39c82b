"""Ledger explorer: movements filtered by SKU, lane, location, reason, actor, date and source reference; keyset
pagination by id (newest first); the same filters as a streamed CSV export.

Filters (query parameters, all optional, combined with AND; an invalid value is a 400 naming the parameter, and so
is any parameter but ``reason`` given twice): ``sku`` (exact), ``lane`` (``sensor:<lane>`` and ``lane:<lane>``),
``location`` (exact), ``reason`` (repeatable: any of them), ``actor`` (prefix), ``from`` / ``to`` (``YYYY-MM-DD``,
UTC days 1970-01-01..9999-12-31, both included), ``ref`` (text in the source reference), ``before`` (an id: the page
of older movements). Days and ids are read by ``hub.web.inputs``, as on every page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, render_template, request
from werkzeug.datastructures import MultiDict

from hub.ledger.models import LANE_ID_RE, SKU_RE, Reason
from hub.web.access import requires
from hub.web.db import get_db, keyset_batches, streamed_read
from hub.web.filters import csv_chunks, csv_download, csv_text, iso_ms
from hub.web.inputs import BadInput, day_value, int_value, single
from hub.web.pages.ledger_queries import PAGE_SIZE, Filters, page

bp = Blueprint("ledger", __name__)

CSV_BATCH = 1000
_MAX_TEXT = 200
CSV_HEADER = (
    "id",
    "time_utc",
    "sku",
    "location",
    "qty",
    "reason",
    "actor",
    "source_ref",
    "note",
    "reverses_id",
    "reversed_by",
)


class FilterError(ValueError):
    """A query parameter the explorer cannot use; the message names it."""


def _text(args: MultiDict[str, str], name: str) -> str:
    value = (single(args, name) or "").strip()
    if len(value) > _MAX_TEXT:
        raise FilterError(f"{name}: at most {_MAX_TEXT} characters")
    if any(ord(c) < 32 for c in value):
        raise FilterError(f"{name}: control characters are not allowed")
    return value


def parse_filters(args: MultiDict[str, str]) -> Filters:
    """``FilterError`` or ``hub.web.inputs.BadInput`` (both name the parameter) for a value it cannot use."""
    sku = _text(args, "sku")
    if sku and not SKU_RE.fullmatch(sku):
        raise FilterError(f"sku: {sku[:40]!r} is not a SKU (1-32 printable ASCII characters)")
    lane = _text(args, "lane")
    if lane and not LANE_ID_RE.fullmatch(lane):
        raise FilterError(f"lane: {lane[:40]!r} is not a lane id")
    location = _text(args, "location")
    valid = {r.value for r in Reason}
    reasons: list[str] = []
    for value in args.getlist("reason"):
        value = value.strip()
        if not value:
            continue
        if value not in valid:
            raise FilterError(f"reason: {value[:40]!r} is not one of {', '.join(sorted(valid))}")
        if value not in reasons:
            reasons.append(value)
    day_from, day_to = day_value(args, "from"), day_value(args, "to")
    if day_from is not None and day_to is not None and day_from > day_to:
        raise FilterError("from: the first day is after the last day (to)")
    return Filters(sku, lane, location, tuple(reasons), _text(args, "actor"), day_from, day_to, _text(args, "ref"))


def parse_before(args: MultiDict[str, str]) -> int | None:
    """A movement id (1..2**63-1, ASCII digits: ``hub.web.inputs``), or None."""
    return int_value(args, "before", 1)


def _filters_or_400() -> tuple[Filters, int | None]:
    try:
        return parse_filters(request.args), parse_before(request.args)
    except (FilterError, BadInput) as exc:
        abort(400, str(exc))


def csv_row(r: Sequence[Any]) -> list[Any]:
    """A movement row for the CSV: numbers stay numbers, text is made formula-safe."""
    mid, ts, sku, location, qty, reason, actor, ref, note, reverses, reversed_by = r
    return [
        mid,
        iso_ms(ts),
        csv_text(sku),
        csv_text(location),
        qty,
        reason,
        csv_text(actor),
        csv_text(ref),
        csv_text(note),
        "" if reverses is None else reverses,
        "" if reversed_by is None else reversed_by,
    ]


def csv_lines(conn: sqlite3.Connection, filters: Filters) -> Iterator[str]:
    """The CSV, ``CSV_BATCH`` rows a chunk (keyset by id, so memory stays constant for any number of rows; rows
    committed meanwhile have higher ids and are not included)."""
    batches = keyset_batches(lambda before: page(conn, filters, before, CSV_BATCH - 1), lambda r: r[0], CSV_BATCH)
    return csv_chunks(CSV_HEADER, (map(csv_row, rows) for rows in batches))


@bp.get("/ledger")
@requires("clerk")
def explorer() -> str:
    filters, before = _filters_or_400()
    rows = page(get_db(), filters, before)
    older = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        older = "?" + urlencode([*filters.query_args(), ("before", str(rows[-1][0]))])
    query = urlencode(filters.query_args())
    return render_template(
        "ledger.html",
        rows=rows,
        filters=filters,
        reasons=[r.value for r in Reason],
        before=before,
        older=older,
        newest="?" + query if before is not None else None,
        export_query=query,
        page_size=PAGE_SIZE,
    )


@bp.get("/ledger.csv")
@requires("manager")
def export() -> Response:
    filters, _before = _filters_or_400()
    return csv_download("ledger", streamed_read(lambda conn: csv_lines(conn, filters)))
