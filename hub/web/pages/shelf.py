"""Shelf (lane) detail: ``GET /lanes/<lane_id>?range=1h|24h`` (404 for an unknown lane, 400 for another range).

The lane's header, its count and weight over the last hour or day as inline SVG charts (``charts``), and its event
timeline; every figure is read in one read transaction (``shelf_queries``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, abort, render_template, request
from markupsafe import Markup

from hub.ledger.models import now_ms
from hub.web.access import requires
from hub.web.db import get_db, read_transaction
from hub.web.lanes import STATE_LABELS
from hub.web.pages import charts
from hub.web.pages.shelf_queries import TIMELINE_MAX, count_series, lane_info, open_alerts, timeline, weight_series

bp = Blueprint("shelf", __name__)

RANGES = {"1h": 3_600_000, "24h": 86_400_000}


def _short(ms: int) -> str:
    """A time in the timeline and tables: short enough for a phone (the period's dates are above them)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M:%S")


@bp.get("/lanes/<lane_id>")
@requires("viewer")
def detail(lane_id: str) -> str:
    range_name = request.args.get("range", "1h")
    span = RANGES.get(range_name)
    if span is None:
        abort(400, f"range must be one of {', '.join(RANGES)}")
    with read_transaction(get_db()) as conn:  # the header, both charts and the timeline agree under live writes
        t1 = now_ms()
        t0 = t1 - span
        lane = lane_info(conn, lane_id)
        if lane is None:
            abort(404)
        start, counts, count_n = count_series(conn, lane, t0, t1)
        weights, weight_n = weight_series(conn, lane_id, t0, t1)
        entries, shown, total = timeline(conn, lane, t0, t1)
        alerts = open_alerts(conn, lane)
    refs = []
    if lane.capacity is not None:
        refs.append(charts.RefLine(lane.capacity, "capacity"))
    if lane.sku is not None and lane.reorder_point > 0:
        refs.append(charts.RefLine(lane.reorder_point, "reorder point"))
    label = "last hour" if range_name == "1h" else "last day"
    count_svg = charts.step_chart(
        start, counts, t0, t1, title=f"Count on lane {lane_id}, {label}", unit="units", refs=refs
    )
    weight_svg = charts.line_chart(weights, t0, t1, title=f"Weight on lane {lane_id}, {label}", unit="g")
    return render_template(
        "shelf.html",
        lane=lane,
        range_name=range_name,
        ranges=list(RANGES),
        t0=t0,
        t1=t1,
        count_start=start,
        count_svg=Markup(count_svg),  # charts escapes every text it draws
        weight_svg=Markup(weight_svg),
        counts=counts,
        count_n=count_n,
        weights=weights,
        weight_n=weight_n,
        short=_short,
        alerts=alerts,
        entries=entries,
        shown=shown,
        total=total,
        timeline_max=TIMELINE_MAX,
        labels=STATE_LABELS,
    )
