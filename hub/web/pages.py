"""Overview (every lane) and alerts (list, acknowledge)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from werkzeug.wrappers.response import Response

from hub.ledger.models import AlertStateError, UnknownAlert
from hub.web.app import get_db, get_writer

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


@bp.get("/alerts")
def alerts() -> str:
    rows: list[dict[str, Any]] = [
        {
            "id": r[0],
            "kind": r[1],
            "cause_key": r[2],
            "status": r[3],
            "opened_ms": r[4],
            "acknowledged_by": r[5],
            "evidence": json.dumps(json.loads(r[6]), sort_keys=True)[:200],
        }
        for r in get_db().execute(
            "SELECT id, kind, cause_key, status, opened_ms, acknowledged_by, evidence FROM alerts"
            " WHERE status != 'resolved' ORDER BY opened_ms DESC, id DESC LIMIT 500"
        )
    ]
    return render_template("alerts.html", alerts=rows)


@bp.post("/alerts/<int:alert_id>/acknowledge")
def acknowledge(alert_id: int) -> Response:
    actor = f"web:{g.user.username}"
    try:
        get_writer().call(lambda ledger: ledger.acknowledge_alert(alert_id, actor=actor))
    except UnknownAlert:
        abort(404)
    except AlertStateError as exc:
        flash(str(exc))
    else:
        flash(f"Alert {alert_id} acknowledged.")
    return redirect(url_for("pages.alerts"))
