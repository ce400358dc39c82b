"""The overview: every lane with its SKU, count against capacity, last change, RFID tags on it (how many, of another
SKU, when last read), state and open alerts.

It renders the live feed's rows (``hub/web/live``: in memory, up to date with every commit so far); the table rows
are built here in Python (``rows_html``), each once while it stays the same.
"""

from __future__ import annotations

import html
from collections import Counter
from urllib.parse import quote

from flask import Blueprint, current_app, render_template, request, url_for
from markupsafe import Markup

from hub.web.access import allowed, requires
from hub.web.filters import fmt_ms
from hub.web.lanes import STATE_LABELS, LaneRow
from hub.web.live.lane_feed import feed

bp = Blueprint("pages", __name__)


# lane id -> (what the row was built from, the row): one entry per lane, replaced when the lane's row changes
_ROW_CACHE: dict[str, tuple[tuple[LaneRow, tuple[str, str] | None, str | None], tuple[str, str]]] = {}
_ROW_CACHE_MAX = 50_000  # lanes (of every app in the process); cleared when exceeded


def _row_html(lane: LaneRow, lane_url: tuple[str, str] | None, alerts_url: str | None) -> tuple[str, str]:
    """A lane's table row, split where `` hidden`` may go."""
    lane_id = html.escape(lane.lane_id)
    search = html.escape(" ".join((lane.lane_id, lane.sku or "", lane.name or "")).lower())
    if lane_url is not None:
        href = html.escape(lane_url[0] + quote(lane.lane_id, safe="") + lane_url[1])
        name = f'<a href="{href}">{lane_id}</a>'
    else:
        name = lane_id
    if lane.sku is None:
        sku = "<em>unassigned</em>"
    else:
        sku = f'{html.escape(lane.sku)}<span class="wide"> {html.escape(lane.name or "")}</span>'
    n = lane.observed
    meter = ""
    if lane.capacity:
        cap = lane.capacity
        meter = f'<meter min="0" max="{cap}" low="{lane.reorder_point + 0.5}" optimum="{cap}" value="{n}"></meter> '
    capacity = "-" if lane.capacity is None else str(lane.capacity)
    k = lane.open_alerts
    alerts = f'<a href="{html.escape(alerts_url)}">{k}</a>' if k and alerts_url else str(k)
    other = f" ({lane.tags_other_sku} other SKU)" if lane.tags_other_sku else ""
    read = fmt_ms(lane.tags_last_read_ms) if lane.tags_present else ""
    return (
        f'<tr id="lane-{lane_id}" data-state="{lane.state}" data-search="{search}"',
        f"><td>{name}</td><td>{sku}</td>"
        f'<td class="num count" data-count="{n}">{n}</td>'
        f'<td class="num capacity">{meter}<span>{capacity}</span></td>'
        f'<td class="wide last-change">{fmt_ms(lane.last_change_ms)}</td>'
        f'<td class="num tags" data-tags="{lane.tags_present}"><span>{lane.tags_present}</span>'
        f'<small class="wide other">{other}</small><small class="wide read">{read}</small></td>'
        f'<td><span class="state {lane.state}">{STATE_LABELS[lane.state]}</span></td>'
        f'<td class="num alerts">{alerts}</td></tr>\n',
    )


def rows_html(rows: list[LaneRow], shown: set[str], lane_url: tuple[str, str] | None, alerts_url: str | None) -> Markup:
    """The overview's table rows, built here rather than in Jinja (a Jinja loop over 2,000 lanes takes ~200 ms),
    each row once while it stays the same. ``lane_url``: the shelf page's URL before and after the (quoted) lane
    id; ``alerts_url``: None if the user may not see alerts."""
    out = []
    cache = _ROW_CACHE
    for lane in rows:
        key = (lane, lane_url, alerts_url)
        hit = cache.get(lane.lane_id)
        if hit is not None and hit[0] == key:
            parts = hit[1]
        else:
            if len(cache) >= _ROW_CACHE_MAX:
                cache.clear()
            parts = _row_html(lane, lane_url, alerts_url)
            cache[lane.lane_id] = (key, parts)
        out.append(parts[0])
        if lane.lane_id not in shown:
            out.append(" hidden")
        out.append(parts[1])
    return Markup("".join(out))


def _matches(lane: LaneRow, text: str, state: str) -> bool:
    if state and lane.state != state:
        return False
    if not text:
        return True
    return any(text in (v or "").casefold() for v in (lane.lane_id, lane.sku, lane.name))


@bp.get("/")
@requires("viewer")
def overview() -> str:
    # the live feed's rows: up to date with every commit so far, only changed lanes read again (a closed feed, the
    # server stopping: 503 from app._unavailable)
    rows, open_alerts = feed(current_app).rows()
    text = request.args.get("q", "").strip()[:64]
    state = request.args.get("state", "")
    if state not in STATE_LABELS:
        state = ""
    tiles = Counter(lane.state for lane in rows)
    shown = {lane.lane_id for lane in rows if _matches(lane, text.casefold(), state)}
    lane_url = None
    if "shelf.detail" in current_app.view_functions:
        before, _, after = url_for("shelf.detail", lane_id="__lane__").partition("__lane__")
        lane_url = (before, after)
    alerts_url = None
    if allowed("alerts.index") and "alerts.index" in current_app.view_functions:
        alerts_url = url_for("alerts.index")
    return render_template(
        "overview.html",
        lanes=rows,
        rows_html=rows_html(rows, shown, lane_url, alerts_url),
        shown=shown,
        q=text,
        state=state,
        tiles=tiles,
        open_alerts=open_alerts,
        labels=STATE_LABELS,
        live=int(current_app.config.get("LIVE_MAX_CLIENTS", 1)) > 0,  # [web] max_live_clients = 0: no stream
    )
