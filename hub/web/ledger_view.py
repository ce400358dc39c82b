"""Ledger explorer: movements filtered by SKU, lane, location, reason, actor, date and source reference; keyset
pagination by id (newest first); the same filters as a streamed CSV export.

Filters (query parameters, all optional, combined with AND; an invalid value is a 400 naming the parameter):
``sku`` (exact), ``lane`` (``sensor:<lane>`` and ``lane:<lane>``), ``location`` (exact), ``reason`` (repeatable:
any of them), ``actor`` (prefix), ``from`` / ``to`` (``YYYY-MM-DD``, UTC days, both included), ``ref`` (text in
the source reference), ``before`` (an id: the page of older movements).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, current_app, render_template, request
from werkzeug.datastructures import MultiDict

from hub.ledger.models import LANE_ID_RE, SKU_RE, Reason
from hub.web.app import get_db

bp = Blueprint("ledger", __name__)

PAGE_SIZE = 100
CSV_BATCH = 1000
_DAY_MS = 86_400_000
_MAX_TEXT = 200
COLUMNS = (
    "id, ts_ms, sku, location, qty, reason, actor, source_ref, note, reverses_id,"
    " (SELECT r.id FROM movements AS r WHERE r.reverses_id = movements.id)"
)
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


@dataclass(frozen=True, slots=True)
class Filters:
    sku: str = ""
    lane: str = ""
    location: str = ""
    reasons: tuple[str, ...] = ()
    actor: str = ""
    day_from: date | None = None
    day_to: date | None = None
    ref: str = ""

    def time_range(self) -> list[tuple[str, int]]:
        """The date filters as (condition, parameter): days from / to in UTC, both included."""
        out = []
        if self.day_from is not None:
            out.append(("ts_ms >= ?", _day_ms(self.day_from)))
        if self.day_to is not None:
            out.append(("ts_ms < ?", _day_ms(self.day_to) + _DAY_MS))
        return out

    def where(self) -> tuple[list[str], list[Any]]:
        """SQL conditions and their parameters (written so that SQLite can use the movements indexes)."""
        cond: list[str] = []
        args: list[Any] = []
        if self.sku:
            cond.append("sku = ?")
            args.append(self.sku)
        if self.lane:
            cond.append("location IN (?, ?)")
            args += ["sensor:" + self.lane, "lane:" + self.lane]
        if self.location:
            cond.append("location = ?")
            args.append(self.location)
        if self.reasons:
            cond.append(f"reason IN ({', '.join('?' * len(self.reasons))})")
            args += self.reasons
        if self.actor:
            cond.append("substr(actor, 1, ?) = ?")
            args += [len(self.actor), self.actor]
        for condition, value in self.time_range():
            cond.append(condition)
            args.append(value)
        if self.ref:
            cond.append("instr(source_ref, ?) > 0")
            args.append(self.ref)
        return cond, args

    def query_args(self) -> list[tuple[str, str]]:
        """The filters as query parameters (links keep them)."""
        out: list[tuple[str, str]] = []
        for name, value in (("sku", self.sku), ("lane", self.lane), ("location", self.location)):
            if value:
                out.append((name, value))
        out += [("reason", r) for r in self.reasons]
        if self.actor:
            out.append(("actor", self.actor))
        if self.day_from is not None:
            out.append(("from", self.day_from.isoformat()))
        if self.day_to is not None:
            out.append(("to", self.day_to.isoformat()))
        if self.ref:
            out.append(("ref", self.ref))
        return out


def _day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _text(args: MultiDict[str, str], name: str) -> str:
    value = args.get(name, "").strip()
    if len(value) > _MAX_TEXT:
        raise FilterError(f"{name}: at most {_MAX_TEXT} characters")
    if any(ord(c) < 32 for c in value):
        raise FilterError(f"{name}: control characters are not allowed")
    return value


def _day(args: MultiDict[str, str], name: str) -> date | None:
    value = args.get(name, "").strip()
    if not value:
        return None
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{name}: {value[:40]!r} is not a date (YYYY-MM-DD, UTC)") from None


def parse_filters(args: MultiDict[str, str]) -> Filters:
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
    day_from, day_to = _day(args, "from"), _day(args, "to")
    if day_from is not None and day_to is not None and day_from > day_to:
        raise FilterError("from: the first day is after the last day (to)")
    return Filters(sku, lane, location, tuple(reasons), _text(args, "actor"), day_from, day_to, _text(args, "ref"))


def parse_before(args: MultiDict[str, str]) -> int | None:
    value = args.get("before", "").strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18 or int(value) <= 0:
        raise FilterError(f"before: {value[:40]!r} is not a movement id (a positive whole number)")
    return int(value)


def _filters_or_400() -> tuple[Filters, int | None]:
    try:
        return parse_filters(request.args), parse_before(request.args)
    except FilterError as exc:
        abort(400, str(exc))


# An index range at most this long is read whole and sorted by id; a longer one is not: the page then walks the
# table by id (newest first) and stops at a page full, which is quick exactly when the filter matches often.
SORT_LIMIT = 20_000
_ALL_REASONS = tuple(r.value for r in Reason)


def _candidates(filters: Filters) -> list[tuple[str, str, list[Any]]]:
    """(index, condition, parameters) for each index that can drive the query (date range included)."""
    bounds = filters.time_range()
    ts = "".join(f" AND {condition}" for condition, _ in bounds)
    ts_args = [value for _, value in bounds]
    out: list[tuple[str, str, list[Any]]] = []
    if filters.sku:
        out.append(("movements_sku_ts", "sku = ?" + ts, [filters.sku, *ts_args]))
    if filters.lane:
        out.append(
            (
                "movements_location_ts",
                "location IN (?, ?)" + ts,
                ["sensor:" + filters.lane, "lane:" + filters.lane, *ts_args],
            )
        )
    if filters.location:
        out.append(("movements_location_ts", "location = ?" + ts, [filters.location, *ts_args]))
    if filters.reasons or ts_args:
        # without a reason filter, every reason (always true: a CHECK constraint) makes a date range an index range
        reasons = filters.reasons or _ALL_REASONS
        cond = f"reason IN ({', '.join('?' * len(reasons))})"
        out.append(("movements_reason_ts", cond + ts, [*reasons, *ts_args]))
    return out


def page(conn: sqlite3.Connection, filters: Filters, before: int | None, limit: int = PAGE_SIZE) -> list[Any]:
    """One page of movements, newest id first, with ``id < before``; up to ``limit + 1`` rows (one more: is there
    an older page?).

    Plan: of the indexes the filters can use, the one with the shortest range (counted up to SORT_LIMIT + 1
    entries, a bounded cost); if that is at most SORT_LIMIT long, read it and sort by id, else walk the table by id.
    SQLite has no statistics on a read-only ledger that was never analyzed, so the choice is made here."""
    cond, args = filters.where()
    bound, bound_args = ("", []) if before is None else (" AND id < ?", [before])
    best: tuple[int, str, str, list[Any]] | None = None
    for index, icond, iargs in _candidates(filters):
        n = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM movements INDEXED BY {index} WHERE {icond}{bound} LIMIT ?)",
            (*iargs, *bound_args, SORT_LIMIT + 1),
        ).fetchone()[0]
        if best is None or n < best[0]:
            best = (n, index, icond, iargs)
    if best is not None and best[0] <= SORT_LIMIT:
        source = f"movements INDEXED BY {best[1]}"
        cond, args = [best[2], *cond], [*best[3], *args]
    else:
        source = "movements NOT INDEXED"
    if before is not None:
        cond.append("id < ?")
        args.append(before)
    where = f" WHERE {' AND '.join(cond)}" if cond else ""
    return conn.execute(
        f"SELECT {COLUMNS} FROM {source}{where} ORDER BY id DESC LIMIT ?", (*args, limit + 1)
    ).fetchall()


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str | None) -> str:
    """A text cell safe to open in a spreadsheet (OWASP CSV injection): a leading = + - @ tab or CR gets a quote."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


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


def open_ro(path: str | Path) -> sqlite3.Connection:
    """A read-only connection of the export's own (a streamed response outlives the request's connection)."""
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=5.0)
    conn.execute("PRAGMA query_only = ON")
    return conn


def csv_lines(conn: sqlite3.Connection, filters: Filters) -> Iterator[str]:
    """The CSV, a batch of rows at a time (keyset by id, so memory stays constant for any number of rows; rows
    committed meanwhile have higher ids and are not included)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(CSV_HEADER)
    yield buf.getvalue()
    before: int | None = None
    while True:
        rows = page(conn, filters, before, CSV_BATCH - 1)
        if not rows:
            return
        buf.seek(0)
        buf.truncate()
        out.writerows(csv_row(r) for r in rows)
        yield buf.getvalue()
        if len(rows) < CSV_BATCH:
            return
        before = rows[-1][0]


@bp.get("/ledger")
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
def export() -> Response:
    filters, _before = _filters_or_400()
    path = current_app.config["LEDGER_PATH"]

    def stream() -> Iterator[str]:
        conn = open_ro(path)
        try:
            yield from csv_lines(conn, filters)
        finally:
            conn.close()

    filename = f"ledger-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv"
    return Response(
        stream(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Content-Type-Options": "nosniff"},
    )
