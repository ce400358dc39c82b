"""Shelf (lane) detail: ``GET /lanes/<lane_id>?range=1h|24h`` (404 for an unknown lane, 400 for another range).

The lane's header, the RFID tags on it now (each linked to its trail, ``tags``; those of another SKU, unknown or not
confirmed since a restart marked), its count and weight over the last hour or day as inline SVG charts (``charts``),
and its event timeline (weight movements, tag arrivals and departures with their verdicts, alerts); every figure is
read in one read transaction (``shelf_queries``, ``tags_queries``).

``POST /lanes/<lane_id>/count`` (manager): staff counted the lane (the stock a shelf is installed with, a recount).
The running hub sends the count to the lane's node and books it as a physical count of the lane's book stock
(``HubService.set_count``, through the ``count_lane`` callable given to ``create_app``); the answer is one line.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError
from datetime import UTC, datetime

from flask import Blueprint, Flask, abort, current_app, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from hub.ledger.models import now_ms
from hub.web.access import requires
from hub.web.db import get_db, read_transaction
from hub.web.inputs import BadInput, int_text, single
from hub.web.lanes import STATE_LABELS
from hub.web.pages import charts
from hub.web.pages.shelf_queries import (
    TIMELINE_MAX,
    TimelineEntry,
    count_series,
    lane_info,
    open_alerts,
    timeline,
    weight_series,
)
from hub.web.pages.tags_queries import lane_events, lane_tags, lane_verdicts
from shared_protocol.messages import MAX_COUNT

bp = Blueprint("shelf", __name__)

RANGES = {"1h": 3_600_000, "24h": 86_400_000}
COUNT_EXTENSION = "smartshelf_count_lane"  # create_app(count_lane=...) keeps the callable here

CountLane = Callable[[int, int, int, str], tuple[bool, str]]  # (node, lane index, counted, actor) -> (booked, line)


def install(app: Flask, count_lane: CountLane | None) -> None:
    """``count_lane``: the running hub's ``count_lane`` callable from any thread, or None (no hub: no counting)."""
    app.extensions[COUNT_EXTENSION] = count_lane


def _count_lane() -> CountLane | None:
    fn = current_app.extensions.get(COUNT_EXTENSION)
    return fn if callable(fn) else None


def _short(ms: int) -> str:
    """A time in the timeline and tables: short enough for a phone (the period's dates are above them)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M:%S")


@bp.get("/lanes/<lane_id>")
@requires("viewer")
def detail(lane_id: str) -> str:
    try:
        range_name = single(request.args, "range") or "1h"
    except BadInput as exc:
        abort(400, str(exc))
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
        tags = lane_tags(conn, lane_id)
        tag_events = lane_events(conn, lane_id, t0, t1, TIMELINE_MAX + 1)
        verdicts = lane_verdicts(conn, lane_id, t0, t1)
    tags_truncated = len(tag_events) > TIMELINE_MAX
    for e in tag_events[:TIMELINE_MAX]:
        note = "; ".join(x for x in (e.verdict_text, e.note or "", "" if e.ts_known else "time unknown") if x)
        actor = f"node:{e.node_id}"
        tag = TimelineEntry(e.ts_ms, "tag", e.what, ref=e.epc, actor=actor, event_seq=e.event_seq, note=note or None)
        entries.append(tag)
    entries.sort(key=lambda x: x.ts_ms, reverse=True)
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
        can_count=_count_lane() is not None,
        tags=tags,
        tags_truncated=tags_truncated,
        verdicts=verdicts,
    )


@bp.post("/lanes/<lane_id>/count")
@requires("manager")
def count(lane_id: str) -> Response:
    with read_transaction(get_db()) as conn:
        lane = lane_info(conn, lane_id)
    if lane is None:
        abort(404)
    back = url_for("shelf.detail", lane_id=lane_id)
    fn = _count_lane()
    try:  # ASCII digits only, given once (hub/web/inputs.py)
        counted = int_text("counted", (single(request.form, "counted") or "").strip(), 0, MAX_COUNT)
    except BadInput as exc:
        flash(f"Not counted: the count {exc.message}.")
        return redirect(back)
    if fn is None:
        flash("Not counted: this page is not served by a running hub.")
    else:
        try:
            booked, line = fn(lane.node_id, lane.lane_index, counted, f"web:{g.user.username}")
        except TimeoutError:
            flash("The hub did not answer in time: the count may still be booked; check the ledger before retrying.")
        except (RuntimeError, CancelledError):  # the hub's loop is closed or stopping
            flash("Not counted: the hub is stopping.")
        else:
            flash(f"Counted: {line}." if booked else f"Not counted: {line}.")
    return redirect(back)
