"""The API's own reads (the others are the ledger's shared query definitions and the live feed's lane rows)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection

from hub.ledger.models import Alert
from hub.ledger.reader import ALERT_COLUMNS, alert_from_row


def known_skus(conn: sqlite3.Connection, skus: Collection[str]) -> set[str]:
    """Those of ``skus`` the ledger has (one statement, however many)."""
    return {
        str(row[0])
        for row in conn.execute(
            "SELECT value FROM json_each(?) WHERE value IN (SELECT sku FROM skus)", (json.dumps(sorted(set(skus))),)
        )
    }


def alerts_page(conn: sqlite3.Connection, *, after: int, status: str | None, limit: int) -> list[Alert]:
    """Alerts with an id above ``after``, oldest first, at most ``limit + 1`` (one more: is there a next page?);
    ``status``: open, acknowledged, resolved, unresolved (open or acknowledged) or None (all)."""
    clauses: list[str] = ["id > ?"]
    params: list[int | str] = [after]
    if status == "unresolved":
        clauses.append("status != 'resolved'")
    elif status is not None:
        clauses.append("status = ?")
        params.append(status)
    rows = conn.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?", [*params, limit + 1]
    )
    return [alert_from_row(r) for r in rows]
