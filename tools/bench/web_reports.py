"""The report pages of ``smartshelf bench web`` (issue 13): every report over HTTP beside bare-SQLite references, and
the out-of-stock walk the reports did before the ledger kept out-of-stock stretches, in the same run.

* **Pages**, signed in as a manager, interleaved with the references: ``/reports?days=7|30|90``,
  ``/reports.csv?days=90`` and ``/reorder``.
* **References** on a bare read-only ``sqlite3`` connection: the out-of-stock figures as the page computes them now
  (``metrics.lane_outages``, 90 days), and reading the sensor movements of those 90 days once (their reason / time
  index), the least the walk used to read.
* **Before**: once the server has stopped, ``walk_lane_outages`` (the previous ``metrics.lane_outages``: every
  sensor movement of the period read lane by lane and walked in Python) on the same ledger, with the per-movement
  location index it read by created for it and dropped again; a few runs, timed beside the new computation.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.ledger.models import now_ms
from hub.web.pages import metrics
from hub.web.pages.metrics import LaneOutage, Period, _segments, assignments, out_of_stock_ms

REPORT_P95_TARGET_MS = 200.0
PAGES = {
    "reports_7d": "/reports?days=7",
    "reports_30d": "/reports?days=30",
    "reports_90d": "/reports?days=90",
    "reports_csv_90d": "/reports.csv?days=90",
    "reorder": "/reorder",
}
_OLD_INDEX = "CREATE INDEX bench_movements_location_ts ON movements(location, ts_ms, sku, qty)"


def walk_lane_outages(conn: sqlite3.Connection, p: Period) -> list[LaneOutage]:
    """The reports' out-of-stock figures as computed before the ledger kept stretches: every movement of the period
    walked (``tests/test_lane_activity.py`` holds the new figures equal to these)."""
    history = assignments(conn, p.end_ms)
    result = []
    for lane_id, sku in conn.execute("SELECT lane_id, sku FROM lanes ORDER BY lane_id").fetchall():
        location = f"sensor:{lane_id}"
        total: int | None = None
        end_count = 0
        for start, end, held in _segments(history.get(lane_id, []), sku, p):
            (now_count,) = conn.execute(
                "SELECT coalesce(sum(qty), 0) FROM balances WHERE sku = ? AND location = ?", (held, location)
            ).fetchone()
            (since,) = conn.execute(
                "SELECT coalesce(sum(qty), 0) FROM movements WHERE location = ? AND ts_ms >= ? AND sku = ?",
                (location, start, held),
            ).fetchone()
            opening = int(now_count) - int(since)
            steps = conn.execute(
                "SELECT ts_ms, qty FROM movements WHERE location = ? AND ts_ms >= ? AND ts_ms < ? AND sku = ?"
                " ORDER BY ts_ms, id",
                (location, start, end, held),
            ).fetchall()
            earlier = conn.execute(
                "SELECT 1 FROM movements WHERE location = ? AND ts_ms < ? AND sku = ? LIMIT 1", (location, start, held)
            ).fetchone()
            if earlier is None and not steps:
                continue
            end_count = opening + sum(q for _, q in steps)
            first = start if earlier is not None else steps[0][0]
            total = (total or 0) + out_of_stock_ms(opening, steps, first, end)
        if sku is None:
            end_count = 0
        result.append(
            LaneOutage(lane_id, sku, total, end_count, total is not None and sku is not None and end_count <= 0)
        )
    return result


def sales_by_scan(conn: sqlite3.Connection, p: Period) -> dict[tuple[str, str], int]:
    """Units sold in the period as computed before the hourly totals: every sale of the period read (pairs that
    sold nothing net left out, as ``metrics.sales`` does now)."""
    rows = conn.execute(
        "SELECT m.sku, m.location, -sum(m.qty) FROM movements AS m WHERE m.reason IN ('sale', 'order_pick')"
        f" AND {metrics.IN_PERIOD} GROUP BY m.sku, m.location",
        metrics.in_period_args(p),
    )
    return {(sku, location): int(n) for sku, location, n in rows if n}


def calls(page: Callable[[str], Callable[[], int]], bare: sqlite3.Connection) -> dict[str, Callable[[], object]]:
    """The timed calls: each page (``page(path)`` makes a checked GET) and the bare-SQLite references."""

    def stretches() -> None:
        metrics.lane_outages(bare, metrics.period(90, now_ms()))

    def sensor_rows() -> None:
        start = now_ms() - 90 * metrics.DAY_MS
        bare.execute(
            "SELECT count(*), sum(qty) FROM movements INDEXED BY movements_reason_ts WHERE reason IN ('sensor_pick',"
            " 'sensor_put', 'sensor_anomaly', 'sensor_count', 'sensor_gap') AND ts_ms >= ?",
            (start,),
        ).fetchone()

    out: dict[str, Callable[[], object]] = {name: page(path) for name, path in PAGES.items()}
    out["outages_90d_query"] = stretches
    out["sensor_rows_90d"] = sensor_rows
    return out


def before_and_after(db: Path, repeats: int) -> dict[str, Any]:
    """The walk of before against the stretches of now, same ledger, same period, alternating; the figures must be
    equal. The walk's location index is created for it and dropped after."""
    conn = sqlite3.connect(db)
    try:
        t = time.perf_counter()
        conn.execute(_OLD_INDEX)
        index_s = time.perf_counter() - t
        walk, now = [], []
        p = metrics.period(90, now_ms())
        for _ in range(repeats):
            t = time.perf_counter()
            old = walk_lane_outages(conn, p)
            walk.append(time.perf_counter() - t)
            t = time.perf_counter()
            new = metrics.lane_outages(conn, p)
            now.append(time.perf_counter() - t)
            if new != old:
                raise RuntimeError("the out-of-stock figures differ from the walk of every movement")
        conn.execute("DROP INDEX bench_movements_location_ts")
    finally:
        conn.close()
    lanes_out = sum(1 for o in old if o.out_ms)
    return {
        "repeats": repeats,
        "walk_ms": round(min(walk) * 1000, 1),
        "stretches_ms": round(min(now) * 1000, 2),
        "ratio": round(min(walk) / max(min(now), 1e-9), 1),
        "lanes_out_in_period": lanes_out,
        "index_build_s": round(index_s, 1),
    }
