"""How values are written on pages and in CSV files: the template filters (``install``) and the CSV cells."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

from flask import Flask, Response

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def fmt_ms(ms: object) -> str:
    """The ``ms`` template filter: ms since the epoch as UTC time ("-" for none). Built by hand: ten times faster
    than strftime, which matters for the overview's 2,000 rows."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "-"
    t = time.gmtime(ms // 1000)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} UTC"


def iso_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, as the CSV files write times (``2026-11-20T02:45:00.000Z``)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def csv_text(value: str | None) -> str:
    """A text cell safe to open in a spreadsheet (OWASP CSV injection): a leading = + - @ tab or CR gets a quote."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def install(app: Flask) -> None:
    app.jinja_env.filters["ms"] = fmt_ms


def csv_chunks(header: Sequence[str], batches: Iterable[Iterable[Iterable[object]]]) -> Iterator[str]:
    """A CSV file as text chunks (CRLF line ends): the header row, then each batch of rows as one chunk."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(header)
    yield buf.getvalue()
    for rows in batches:
        buf.seek(0)
        buf.truncate()
        out.writerows(rows)
        yield buf.getvalue()


def csv_download(prefix: str, lines: Iterator[str]) -> Response:
    """A streamed CSV attachment named ``<prefix>-<UTC time>.csv`` (the ledger's, the audit trail's and the reports'
    exports)."""
    filename = f"{prefix}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv"
    return Response(
        lines,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Content-Type-Options": "nosniff"},
    )
