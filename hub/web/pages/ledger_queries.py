"""The ledger explorer's reads: movements matching the filters, newest id first, a page at a time (keyset on the
id), with a plan chosen here (``page``): SQLite has no statistics on a read-only ledger that was never analyzed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any

from hub.ledger.lane_activity import MAX_TS, lane_rows_sql
from hub.ledger.models import SENSOR_PREFIX, Reason
from hub.web.inputs import day_end_ms, day_start_ms
from hub.web.schema import BOOK_LOCATION

PAGE_SIZE = 100
COLUMNS = (
    "id, ts_ms, sku, location, qty, reason, actor, source_ref, note, reverses_id,"
    " (SELECT r.id FROM movements AS r WHERE r.reverses_id = movements.id)"
)


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
            out.append(("ts_ms >= ?", day_start_ms(self.day_from)))
        if self.day_to is not None:
            out.append(("ts_ms < ?", day_end_ms(self.day_to)))
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


# An index range at most this long is read whole and sorted by id; a longer one is not: the page then walks the
# table by id (newest first) and stops at a page full, which is quick exactly when the filter matches often.
SORT_LIMIT = 20_000
_ALL_REASONS = tuple(r.value for r in Reason)


def _book(location_cond: str, ts: str) -> str:
    """Ids of book movements (every location but ``sensor:*``) by the status page's index."""
    return f"SELECT id FROM movements INDEXED BY movements_book_location WHERE {location_cond} AND {BOOK_LOCATION}{ts}"


def _candidates(filters: Filters) -> list[tuple[str, list[Any]]]:
    """(id subquery, parameters) for each index that can drive the query (date range included): the status page's
    index for book locations, the ledger's sensor spans for sensor ones (``hub.ledger.lane_activity``)."""
    bounds = filters.time_range()
    ts = "".join(f" AND {condition}" for condition, _ in bounds)
    ts_args = [value for _, value in bounds]
    lo = day_start_ms(filters.day_from) if filters.day_from is not None else -MAX_TS
    hi = day_end_ms(filters.day_to) - 1 if filters.day_to is not None else MAX_TS
    spans = lane_rows_sql("m.id")  # ?1 location, ?2 / ?3 the range: numbered, so it stands alone in its subquery
    out: list[tuple[str, list[Any]]] = []
    if filters.sku:
        out.append((f"SELECT id FROM movements INDEXED BY movements_sku_ts WHERE sku = ?{ts}", [filters.sku, *ts_args]))
    if filters.lane:  # its sensor movements by their spans, its book movements by the index
        book = _book("location = ?", ts)
        out.append(
            (
                f"{spans} UNION ALL SELECT * FROM ({book})",
                ["sensor:" + filters.lane, lo, hi, "lane:" + filters.lane, *ts_args],
            )
        )
    if filters.location.startswith(SENSOR_PREFIX):
        out.append((spans, [filters.location, lo, hi]))
    elif filters.location:
        out.append((_book("location = ?", ts), [filters.location, *ts_args]))
    if filters.reasons or ts_args:
        # without a reason filter, every reason (always true: a CHECK constraint) makes a date range an index range
        reasons = filters.reasons or _ALL_REASONS
        cond = f"reason IN ({', '.join('?' * len(reasons))})"
        out.append((f"SELECT id FROM movements INDEXED BY movements_reason_ts WHERE {cond}{ts}", [*reasons, *ts_args]))
    return out


def page(conn: sqlite3.Connection, filters: Filters, before: int | None, limit: int = PAGE_SIZE) -> list[Any]:
    """One page of movements, newest id first, with ``id < before``; up to ``limit + 1`` rows (one more: is there
    an older page?).

    Plan: of the indexes the filters can use, the one with the shortest range (counted up to SORT_LIMIT + 1
    entries, a bounded cost); if that is at most SORT_LIMIT long, read it and sort by id, else walk the table by id.
    SQLite has no statistics on a read-only ledger that was never analyzed, so the choice is made here."""
    cond, args = filters.where()
    best: tuple[int, str, list[Any]] | None = None
    for sql, params in _candidates(filters):  # a spans subquery (numbered ?1..?3) comes first in its statement
        n = _count(conn, sql, params, before)
        if best is None or n < best[0]:
            best = (n, sql, params)
    if best is not None and best[0] <= SORT_LIMIT:
        where_ids = [f"id IN (SELECT id FROM ({best[1]}))"]
        cond, args = [*where_ids, *cond], [*best[2], *args]
        source = "movements"
    else:
        source = "movements NOT INDEXED"
    if before is not None:
        cond.append("id < ?")
        args.append(before)
    where = f" WHERE {' AND '.join(cond)}" if cond else ""
    return conn.execute(
        f"SELECT {COLUMNS} FROM {source}{where} ORDER BY id DESC LIMIT ?", (*args, limit + 1)
    ).fetchall()


def _count(conn: sqlite3.Connection, sql: str, params: list[Any], before: int | None) -> int:
    """How many ids a source holds below ``before``, counted up to SORT_LIMIT + 1."""
    bound, bound_args = ("", []) if before is None else (" WHERE id < ?", [before])
    return int(
        conn.execute(
            f"SELECT count(*) FROM (SELECT id FROM ({sql}){bound} LIMIT ?)", (*params, *bound_args, SORT_LIMIT + 1)
        ).fetchone()[0]
    )
