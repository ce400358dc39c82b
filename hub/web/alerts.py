"""Alerts: list (filter), acknowledge, resolve with a reason (posting the ledger entry it implies)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from werkzeug.wrappers.response import Response

from hub.ledger.models import AlertStateError, UnknownAlert
from hub.web.app import get_db, get_writer

bp = Blueprint("alerts", __name__)


@bp.get("/alerts")
def index() -> str:
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
    return redirect(url_for("alerts.index"))
