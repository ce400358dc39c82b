"""The audit page's reads: entries of the audit trail matching the filters, newest first, a page at a time (keyset on
``(ts_ms, id)``: the ``before`` cursor is the last entry shown, ``<ts_ms>.<id>``).

Every filter is an index range already in that order (``audit_ts``, ``audit_actor``, ``audit_origin`` of step 10,
``audit_action`` of step 5; each ends with the rowid, the entry's id), so a page reads about a page of index entries
whatever the trail's size. A prefix (``api:*``) cannot use the actor's or origin's index: it walks the trail by time
from the cursor and stops at a page full (quick when the prefix matches often, a scan of the trail when it matches
nothing).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any

from hub.web.inputs import day_end_ms, day_start_ms

PAGE_SIZE = 100
COLUMNS = "id, ts_ms, actor, action, origin, details"

# The actions the hub writes (for the form's suggestions; any other name is still a valid filter).
ACTIONS = (
    "acknowledge_alert",
    "add_api_client",
    "add_sku",
    "add_user",
    "assign_lane",
    "command",
    "command_timeout",
    "count",
    "disable_api_client",
    "disable_user",
    "enable_user",
    "end_sessions",
    "event_skip",
    "import_counts",
    "import_epcs",
    "import_picks",
    "import_receipts",
    "import_returns",
    "import_sales",
    "login",
    "open_alert",
    "pick",
    "rebase_lane",
    "receipt",
    "reconcile",
    "register_lane",
    "register_node",
    "replace_node",
    "reset_password",
    "resolve_alert",
    "restock",
    "return",
    "reverse",
    "sale",
    "set_user_role",
    "transfer",
    "update_alert_evidence",
    "writeoff",
)


@dataclass(frozen=True, slots=True)
class Filters:
    actor: str = ""  # exact, or the start of it when it ends with "*"
    action: str = ""  # exact
    origin: str = ""  # exact, or the start of it when it ends with "*"
    day_from: date | None = None  # UTC days, both included
    day_to: date | None = None

    def where(self) -> tuple[list[str], list[Any]]:
        cond: list[str] = []
        args: list[Any] = []
        for column, value in (("actor", self.actor), ("origin", self.origin)):
            if value.endswith("*"):
                if value != "*":
                    cond.append(f"substr({column}, 1, ?) = ?")
                    args += [len(value) - 1, value[:-1]]
            elif value:
                cond.append(f"{column} = ?")
                args.append(value)
        if self.action:
            cond.append("action = ?")
            args.append(self.action)
        if self.day_from is not None:
            cond.append("ts_ms >= ?")
            args.append(day_start_ms(self.day_from))
        if self.day_to is not None:
            cond.append("ts_ms < ?")
            args.append(day_end_ms(self.day_to))
        return cond, args

    def query_args(self) -> list[tuple[str, str]]:
        """The filters as query parameters (links keep them)."""
        out = [(name, value) for name, value in (("actor", self.actor), ("action", self.action)) if value]
        if self.origin:
            out.append(("origin", self.origin))
        if self.day_from is not None:
            out.append(("from", self.day_from.isoformat()))
        if self.day_to is not None:
            out.append(("to", self.day_to.isoformat()))
        return out


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    ts_ms: int
    actor: str
    action: str
    origin: str | None  # None: written before the ledger kept where entries came from
    details: str  # JSON as stored

    @property
    def cursor(self) -> str:
        """The ``before`` of the page after this entry."""
        return f"{self.ts_ms}.{self.id}"


def page(
    conn: sqlite3.Connection, filters: Filters, before: tuple[int, int] | None, limit: int = PAGE_SIZE
) -> list[Entry]:
    """Entries matching ``filters`` older than ``before`` (``(ts_ms, id)``), newest first: up to ``limit + 1`` (one
    more: is there an older page?)."""
    cond, args = filters.where()
    if before is not None:
        cond.append("(ts_ms, id) < (?, ?)")
        args += [before[0], before[1]]
    where = f" WHERE {' AND '.join(cond)}" if cond else ""
    sql = f"SELECT {COLUMNS} FROM audit{where} ORDER BY ts_ms DESC, id DESC LIMIT ?"
    return [Entry(*r) for r in conn.execute(sql, (*args, limit + 1))]
