"""Units sold per SKU, location and hour with a running total, kept by the writer beside the postings (issue 13,
migration 11): what the reports read instead of every sale of their period.

A report's units sold in ``[start, end]`` (``hub.web.pages.metrics``, "units sold") count each sale or order pick
at its own time and each reversal of one at the time of what it reverses (whenever it was entered, once it was
entered no earlier than the period start). ``sold_hours`` holds, per (SKU, location, hour of that time), the units
(``units``) and the running total up to and including that hour (``total``); ``record`` keeps both for the legs of
each posting (``hub.ledger.postings.legs.post``: every sale, order pick and their reversals go through it). Units
sold up to a moment t are then the total before t's hour plus that hour's movements up to t, read by the reason /
time index: ``sold_between`` reads two totals per SKU and location and at most two hours of movements, whatever
the period. A reversal entered *before* the time of what it reverses (an original dated ahead) is left out of the
totals: the few such reversals are read and counted as the reports' rule says. ``BUILD`` fills the table for an
existing ledger (migration 11); ``rebuild`` does it again for tools that write movements without the writer.

``sold_totals`` (migration 15) holds, per SKU and location that ever sold, the first and last hour of its
``sold_hours`` and their sum (the last hour's running total), kept by ``record`` beside them in the posting's
transaction. It is what ``sold_between`` starts from: only the locations that sell (not every book balance), and
a seek into ``sold_hours`` only where a period boundary falls inside a pair's hours (the total before the end's
hour is the pair's total unless it sold in that hour or later; before the start's hour there is nothing unless its
first hour is earlier).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

import aiosqlite

from hub.ledger.schema import Migration

HOUR_MS = 3_600_000
SOLD_REASONS = ("sale", "order_pick")
_SOLD = "('sale', 'order_pick')"

_DDL = (
    """CREATE TABLE sold_hours (
        sku TEXT NOT NULL,
        location TEXT NOT NULL,
        hour INTEGER NOT NULL,
        units INTEGER NOT NULL,
        total INTEGER NOT NULL,
        PRIMARY KEY (sku, location, hour)
    ) STRICT, WITHOUT ROWID""",
)
BUILD = (
    "WITH a AS (SELECT m.sku, m.location, coalesce(o.ts_ms, m.ts_ms) / 3600000 AS hour, -m.qty AS units"
    " FROM movements AS m LEFT JOIN movements AS o ON o.id = m.reverses_id"
    f" WHERE m.reason IN {_SOLD} AND (m.reverses_id IS NULL OR m.ts_ms >= o.ts_ms)),"
    " h AS (SELECT sku, location, hour, sum(units) AS units FROM a GROUP BY sku, location, hour)"
    " INSERT INTO sold_hours (sku, location, hour, units, total) SELECT sku, location, hour, units,"
    " sum(units) OVER (PARTITION BY sku, location ORDER BY hour ROWS UNBOUNDED PRECEDING) FROM h",
)
SOLD_HOURS = Migration(11, "units sold per SKU, location and hour with running totals", (*_DDL, *BUILD))

_TOTALS_DDL = (
    """CREATE TABLE sold_totals (
        sku TEXT NOT NULL,
        location TEXT NOT NULL,
        first_hour INTEGER NOT NULL,
        last_hour INTEGER NOT NULL,
        total INTEGER NOT NULL,
        PRIMARY KEY (sku, location),
        CHECK (first_hour <= last_hour)
    ) STRICT, WITHOUT ROWID""",
)
BUILD_TOTALS = (
    "INSERT INTO sold_totals (sku, location, first_hour, last_hour, total)"
    " SELECT sku, location, min(hour), max(hour), sum(units) FROM sold_hours GROUP BY sku, location",
)
SOLD_TOTALS = Migration(
    15, "units sold per SKU and location: first and last hour, total", (*_TOTALS_DDL, *BUILD_TOTALS)
)


def rebuild(conn: sqlite3.Connection) -> None:
    """Fill the tables again from the movements, inside the caller's transaction."""
    conn.execute("DELETE FROM sold_hours")
    conn.execute("DELETE FROM sold_totals")
    for statement in (*BUILD, *BUILD_TOTALS):
        conn.execute(statement)


# ----------------------------------------------------------------------------------------------- the writer


async def record(
    conn: aiosqlite.Connection, legs: Sequence[tuple[str | None, str, int, str, int]], reverses: Sequence[int] | None
) -> None:
    """Legs of one posting just inserted: (SKU, location, qty, reason, ts_ms), and the ids they reverse (or None)."""
    sold = [(k, leg) for k, leg in enumerate(legs) if leg[3] in SOLD_REASONS and leg[0] is not None]
    if not sold:
        return
    when: dict[int, int] = {}
    if reverses:
        ids = [reverses[k] for k, _ in sold]
        ph = ", ".join("?" * len(ids))
        when = {int(i): int(ts) for i, ts in await conn.execute_fetchall(
            f"SELECT id, ts_ms FROM movements WHERE id IN ({ph})", ids
        )}  # fmt: skip
    for k, (sku, location, qty, _reason, ts) in sold:
        at = ts
        if reverses:
            at = when[reverses[k]]
            if ts < at:
                continue  # entered before what it reverses: counted by ``sold_between`` from the movements
        hour = at // HOUR_MS
        await conn.execute(
            "INSERT INTO sold_hours (sku, location, hour, units, total) VALUES (?1, ?2, ?3, 0, coalesce((SELECT"
            " h.total FROM sold_hours AS h WHERE h.sku = ?1 AND h.location = ?2 AND h.hour < ?3 ORDER BY h.hour DESC"
            " LIMIT 1), 0)) ON CONFLICT (sku, location, hour) DO NOTHING",
            (sku, location, hour),
        )
        await conn.execute(
            "UPDATE sold_hours SET units = units + CASE WHEN hour = ?3 THEN ?4 ELSE 0 END, total = total + ?4"
            " WHERE sku = ?1 AND location = ?2 AND hour >= ?3",
            (sku, location, hour, -qty),
        )
        await conn.execute(
            "INSERT INTO sold_totals (sku, location, first_hour, last_hour, total) VALUES (?1, ?2, ?3, ?3, ?4)"
            " ON CONFLICT (sku, location) DO UPDATE SET first_hour = min(first_hour, ?3),"
            " last_hour = max(last_hour, ?3), total = total + ?4",
            (sku, location, hour, -qty),
        )


# ---------------------------------------------------------------------------------------------- the reports


def _hour_rows(conn: sqlite3.Connection, a: int, b: int) -> list[Any]:
    """(SKU, location, units) attributed to moments in ``[a, b]`` (one hour at most: the reason / time index): sales
    and order picks, and the reversals of them entered no earlier than what they reverse."""
    return conn.execute(
        "SELECT m.sku, m.location, -m.qty FROM movements AS m INDEXED BY movements_reason_ts"
        f" WHERE m.reason IN {_SOLD} AND m.ts_ms BETWEEN ?1 AND ?2 AND m.reverses_id IS NULL"
        " UNION ALL SELECT r.sku, r.location, -r.qty FROM movements AS m INDEXED BY movements_reason_ts"
        " JOIN movements AS r ON r.reverses_id = m.id"
        f" WHERE m.reason IN {_SOLD} AND m.ts_ms BETWEEN ?1 AND ?2 AND m.reverses_id IS NULL AND r.ts_ms >= m.ts_ms",
        (a, b),
    ).fetchall()


def sold_between(
    conn: sqlite3.Connection, start_ms: int, end_ms: int, skus: Collection[str] | None = None
) -> dict[tuple[str, str], int]:
    """Units sold in ``[start_ms, end_ms]`` per (SKU, location booked from), net of reversals: each sale or order pick
    at its own time, each reversal of one at the time of what it reverses if it was entered at or after
    ``start_ms``. Pairs that sold nothing net are left out; with ``skus``, only those SKUs' pairs are read.

    Units sold up to a moment t: the running total before t's hour, plus that hour's movements up to t. So: per SKU
    and location that sells (``sold_totals``), the totals before the end's and the start's hour (its total, nothing,
    or a primary-key seek where the boundary falls inside its hours), the end hour's movements up to the end less
    the start hour's before the start, and the reversals ``record`` leaves out."""
    first, last = start_ms // HOUR_MS, end_ms // HOUR_MS
    only = None if skus is None else set(skus)
    some = "" if only is None else " WHERE t.sku IN (SELECT value FROM json_each(?3))"
    out: dict[tuple[str, str], int] = {}
    for sku, location, before_end, before_start in conn.execute(
        "SELECT t.sku, t.location,"
        " CASE WHEN t.last_hour < ?2 THEN t.total ELSE (SELECT h.total FROM sold_hours AS h WHERE h.sku = t.sku"
        "  AND h.location = t.location AND h.hour < ?2 ORDER BY h.hour DESC LIMIT 1) END,"
        " CASE WHEN t.first_hour < ?1 THEN (SELECT h.total FROM sold_hours AS h WHERE h.sku = t.sku"
        f"  AND h.location = t.location AND h.hour < ?1 ORDER BY h.hour DESC LIMIT 1) END FROM sold_totals AS t{some}",
        (first, last) if only is None else (first, last, json.dumps(sorted(only))),
    ):
        if before_end != before_start:
            out[(sku, location)] = int(before_end or 0) - int(before_start or 0)
    for sign, (a, b) in ((1, (last * HOUR_MS, end_ms)), (-1, (first * HOUR_MS, start_ms - 1))):
        for sku, location, units in _hour_rows(conn, a, b):
            if only is None or sku in only:
                out[(sku, location)] = out.get((sku, location), 0) + sign * int(units)
    for sku, location, units in conn.execute(
        "SELECT r.sku, r.location, -r.qty FROM movements AS r INDEXED BY movements_reversed_once"
        " JOIN movements AS o ON o.id = r.reverses_id"
        f" WHERE r.reverses_id IS NOT NULL AND r.reason IN {_SOLD} AND r.ts_ms < o.ts_ms"
        " AND o.ts_ms BETWEEN ? AND ? AND r.ts_ms >= ?",
        (start_ms, end_ms, start_ms),
    ):
        if only is None or sku in only:
            out[(sku, location)] = out.get((sku, location), 0) + int(units)
    return {key: n for key, n in out.items() if n}
