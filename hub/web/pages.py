"""The overview: every lane with its SKU, count against capacity, last change, state and open alerts."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from flask import Blueprint, render_template

from hub.web.app import get_db

bp = Blueprint("pages", __name__)

# Per lane: SKU, observed count, capacity, reorder point, last sensor movement, unresolved alerts about the lane or
# its SKU, and whether one of them is a sensor alert.
_LANES_SQL = """
SELECT l.lane_id, l.node_id, l.lane_index, l.sku, s.name, s.capacity, s.reorder_point,
       coalesce(b.qty, 0),
       (SELECT max(m.ts_ms) FROM movements AS m WHERE m.sku = l.sku AND m.location = 'sensor:' || l.lane_id),
       (SELECT count(*) FROM alerts AS a WHERE a.status != 'resolved' AND (
            a.cause_key = 'lane:' || l.lane_id
            OR substr(a.cause_key, 1, length(l.lane_id) + 6) = 'lane:' || l.lane_id || '/'
            OR a.cause_key = 'sku:' || l.sku)),
       (SELECT count(*) FROM alerts AS a WHERE a.status != 'resolved' AND a.kind IN ('sensor', 'unassigned_lane')
            AND (a.cause_key = 'lane:' || l.lane_id
                 OR substr(a.cause_key, 1, length(l.lane_id) + 6) = 'lane:' || l.lane_id || '/'))
FROM lanes AS l
LEFT JOIN skus AS s ON s.sku = l.sku
LEFT JOIN balances AS b ON b.sku = l.sku AND b.location = 'sensor:' || l.lane_id
ORDER BY l.node_id, l.lane_index
"""


@dataclass(frozen=True, slots=True)
class LaneRow:
    lane_id: str
    node_id: int
    lane_index: int
    sku: str | None
    name: str | None
    capacity: int | None
    reorder_point: int
    observed: int
    last_change_ms: int | None
    open_alerts: int
    state: str  # ok | low | out | trouble


def lane_state(sku: str | None, observed: int, reorder_point: int, trouble: bool) -> str:
    if trouble or sku is None:
        return "trouble"
    if observed <= 0:
        return "out"
    if observed <= reorder_point:
        return "low"
    return "ok"


def lanes(conn: sqlite3.Connection) -> list[LaneRow]:
    rows = []
    for r in conn.execute(_LANES_SQL):
        reorder = int(r[6] or 0)
        rows.append(
            LaneRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                reorder,
                r[7],
                r[8],
                r[9],
                lane_state(r[3], r[7], reorder, r[10] > 0),
            )
        )
    return rows


@bp.get("/")
def overview() -> str:
    return render_template("overview.html", lanes=lanes(get_db()))
