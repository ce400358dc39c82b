"""The alerts page's reads: one page of alerts matching the filters (keyset pages on ``(opened_ms, id)``, newest
first), with what each resolution posted; the kinds of alerts there are. The alert by id (to resolve one) is the
ledger's own query (``hub.ledger.reader.ALERT``)."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any

from hub.web.inputs import day_end_ms, day_start_ms

PAGE_SIZE = 50
# a status filter -> the statuses it selects
STATUSES: dict[str, tuple[str, ...]] = {
    "unresolved": ("open", "acknowledged"),
    "open": ("open",),
    "acknowledged": ("acknowledged",),
    "resolved": ("resolved",),
    "all": (),
}


@dataclass(frozen=True, slots=True)
class Filters:
    status: str = "unresolved"
    kind: str = ""
    q: str = ""  # text in the cause key
    since: date | None = None  # opened on or after this day (UTC)
    until: date | None = None  # opened on or before this day (UTC)

    def args(self) -> dict[str, str]:
        """The query arguments that select these filters (defaults left out)."""
        out = {"status": self.status} if self.status != "unresolved" else {}
        if self.kind:
            out["kind"] = self.kind
        if self.q:
            out["q"] = self.q
        if self.since:
            out["from"] = self.since.isoformat()
        if self.until:
            out["to"] = self.until.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as the page lists it (the evidence as stored text) and the movement its resolution posted."""

    id: int
    kind: str
    cause_key: str
    status: str
    opened_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None
    resolved_ms: int | None
    resolved_by: str | None
    resolution: str | None
    resolution_movement_id: int | None
    evidence: str
    posted_sku: str | None
    posted_location: str | None
    posted_qty: int | None
    posted_reason: str | None


_SELECT = (
    "SELECT a.id, a.kind, a.cause_key, a.status, a.opened_ms, a.acknowledged_ms, a.acknowledged_by, a.resolved_ms,"
    " a.resolved_by, a.resolution, a.resolution_movement_id, a.evidence, m.sku, m.location, m.qty, m.reason"
    " FROM alerts AS a LEFT JOIN movements AS m ON m.id = a.resolution_movement_id"
)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[AlertRecord]
    older: str | None  # cursor of the next (older) page
    newer: str | None  # cursor of the previous (newer) page
    first: bool  # this is the newest page


def list_alerts(
    conn: sqlite3.Connection,
    filters: Filters,
    *,
    before: tuple[int, int] | None = None,
    after: tuple[int, int] | None = None,
    page_size: int = PAGE_SIZE,
) -> Page:
    """One page of alerts matching ``filters``, newest first: those older than ``before`` (opened_ms, id), or
    the page just newer than ``after``; the newest page without either."""
    where: list[str] = []
    params: list[Any] = []
    statuses = STATUSES[filters.status]
    if statuses:
        where.append(f"a.status IN ({', '.join('?' * len(statuses))})")
        params += statuses
    if filters.kind:
        where.append("a.kind = ?")
        params.append(filters.kind)
    if filters.q:
        where.append("a.cause_key LIKE ? ESCAPE '\\'")
        params.append("%" + re.sub(r"([\\%_])", r"\\\1", filters.q) + "%")
    if filters.since:
        where.append("a.opened_ms >= ?")
        params.append(day_start_ms(filters.since))
    if filters.until:
        where.append("a.opened_ms < ?")
        params.append(day_end_ms(filters.until))  # 9999-12-31 has no next day: never date arithmetic

    def fetch(extra: str, extra_params: tuple[int, ...], order: str) -> list[AlertRecord]:
        clauses = [*where, extra] if extra else where
        sql = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql += f" ORDER BY a.opened_ms {order}, a.id {order} LIMIT ?"
        return [AlertRecord(*r) for r in conn.execute(sql, [*params, *extra_params, page_size + 1])]

    if after is not None:
        newer = fetch("(a.opened_ms > ? OR (a.opened_ms = ? AND a.id > ?))", (after[0], after[0], after[1]), "ASC")
        if len(newer) > page_size:  # there are newer pages still
            rows = newer[:page_size][::-1]
            return Page(rows, _key(rows[-1]), _key(rows[0]), first=False)
        before = None  # fewer than a page newer than that: the newest page
    if before is not None:
        older = fetch("(a.opened_ms < ? OR (a.opened_ms = ? AND a.id < ?))", (before[0], before[0], before[1]), "DESC")
    else:
        older = fetch("", (), "DESC")
    rows = older[:page_size]
    more = len(older) > page_size
    first = before is None
    return Page(rows, _key(rows[-1]) if more else None, None if first or not rows else _key(rows[0]), first)


def _key(row: AlertRecord) -> str:
    return f"{row.opened_ms}.{row.id}"


def kinds_in_ledger(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT DISTINCT kind FROM alerts")}
