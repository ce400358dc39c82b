"""The reorder list (``/reorder``): the SKUs at or below their reorder point by the reconciler's own rule
(``hub.reconcile.rules``, which its reorder alerts use too), with their sales velocity and days of cover."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hub.ledger.causes import Cause, CauseKind
from hub.ledger.models import Sku
from hub.reconcile.rules import REORDER_STOCK_SQL, reorder_available, reorder_due, reorder_quantity
from hub.web.pages.metrics import days_of_cover, period, sales, sold_by_sku, velocity

REORDER_VELOCITY_DAYS = 30  # the reorder report's days of cover use the sales of the last 30 days


@dataclass(frozen=True, slots=True)
class ReorderLine:
    sku: str
    name: str
    observed: int  # shelf stock the sensors see (sensor:* balances of the SKU)
    book: int  # book stock at every book location
    pending_shrinkage: int  # units in unresolved shrinkage alerts
    available: int  # what the reorder rule compares with the reorder point
    reorder_point: int
    reorder_qty: int
    suggested_qty: int  # the reconciler's suggestion: whole multiples of reorder_qty (hub/reconcile/rules.py)
    per_day: float  # units sold per day over the last REORDER_VELOCITY_DAYS days
    alert_id: int | None
    alert_status: str | None  # open | acknowledged | None (no unresolved reorder alert)

    @property
    def days_of_cover(self) -> float | None:
        return days_of_cover(self.available, self.per_day)


def reorder_lines(conn: sqlite3.Connection, now_ms: int) -> list[ReorderLine]:
    """SKUs at or below their reorder point by the reconciler's rule (``hub.reconcile.rules``), with the sales of
    the last ``REORDER_VELOCITY_DAYS`` days of those SKUs only (read once the rule has picked them)."""
    alerts = {}
    for alert_id, key, status in conn.execute(
        "SELECT id, cause_key, status FROM alerts WHERE kind = 'reorder' AND status != 'resolved'"
    ):
        cause = Cause.parse_or_none(key)
        if cause is not None and cause.kind is CauseKind.SKU and cause.sku is not None:
            alerts[cause.sku] = (alert_id, status)
    due = []
    for sku_id, name, unit, spread, point, qty, capacity, book, shelf, lanes, pending in conn.execute(
        REORDER_STOCK_SQL
    ).fetchall():
        sku = Sku(sku_id, name, unit, spread, point, qty, capacity)
        available = reorder_available(book, pending)
        if reorder_due(sku, available):
            due.append((sku, shelf, book, pending, available, reorder_quantity(sku, available, lanes)))
    sold = sold_by_sku(sales(conn, period(REORDER_VELOCITY_DAYS, now_ms), [d[0].sku for d in due])) if due else {}
    lines = []
    for sku, shelf, book, pending, available, suggested in due:
        alert_id, status = alerts.get(sku.sku, (None, None))
        lines.append(
            ReorderLine(
                sku.sku,
                sku.name,
                shelf,
                book,
                pending,
                available,
                sku.reorder_point,
                sku.reorder_qty,
                suggested,
                velocity(sold.get(sku.sku, 0), REORDER_VELOCITY_DAYS),
                alert_id,
                status,
            )
        )
    return lines
