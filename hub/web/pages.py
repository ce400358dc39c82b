"""The overview: every lane with its SKU, count against capacity, last change, state and open alerts."""

from __future__ import annotations

import html
import json
import sqlite3
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import Blueprint, current_app, render_template, request, url_for
from markupsafe import Markup

from hub.web.access import allowed
from hub.web.app import fmt_ms

bp = Blueprint("pages", __name__)

# Per lane: SKU, observed count, capacity, reorder point and the last sensor movement of the lane's SKU (newest
# first on movements_location_ts, stopping at the first row of the SKU; "+" keeps the planner off the SKU index,
# which would walk every movement of the SKU). Alerts are counted in Python from the unresolved ones
# (``alert_counts``): one pass over a small set instead of a scan per lane.
_LANES_SQL = """
SELECT l.lane_id, l.node_id, l.lane_index, l.sku, s.name, s.capacity, s.reorder_point,
       coalesce(b.qty, 0),
       CASE WHEN l.sku IS NOT NULL THEN (
           SELECT m.ts_ms FROM movements AS m
           WHERE m.location = 'sensor:' || l.lane_id AND +m.sku = l.sku
           ORDER BY m.ts_ms DESC LIMIT 1) END
FROM lanes AS l
LEFT JOIN skus AS s ON s.sku = l.sku
LEFT JOIN balances AS b ON b.sku = l.sku AND b.location = 'sensor:' || l.lane_id
{where}
ORDER BY l.node_id, l.lane_index
"""
# Unresolved alerts: a scan of the partial index alerts_one_unresolved (only unresolved rows are in it).
UNRESOLVED_SQL = "SELECT id, kind, cause_key FROM alerts WHERE status != 'resolved'"
TROUBLE_KINDS = frozenset({"sensor", "unassigned_lane"})
STATE_LABELS = {"ok": "ok", "low": "low", "out": "out", "trouble": "sensor trouble"}


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

    def to_json(self) -> dict[str, Any]:
        """The lane as /events and /lanes.json send it (hub/web/README.md, "Live updates")."""
        return {
            "lane_id": self.lane_id,
            "node_id": self.node_id,
            "lane_index": self.lane_index,
            "sku": self.sku,
            "name": self.name,
            "count": self.observed,
            "capacity": self.capacity,
            "reorder_point": self.reorder_point,
            "state": self.state,
            "last_change_ms": self.last_change_ms,
            "open_alerts": self.open_alerts,
        }


def lane_state(sku: str | None, observed: int, reorder_point: int, trouble: bool) -> str:
    if trouble or sku is None:
        return "trouble"
    if observed <= 0:
        return "out"
    if observed <= reorder_point:
        return "low"
    return "ok"


def cause_lanes(cause_key: str) -> list[str]:
    """The lane ids an alert's cause key names: ``lane:<id>`` or ``lane:<id>/...`` (every prefix before a "/",
    since a lane id may itself contain one)."""
    if not cause_key.startswith("lane:"):
        return []
    rest = cause_key[5:]
    return [rest, *(rest[:i] for i, ch in enumerate(rest) if ch == "/")]


def cause_node(cause_key: str) -> int | None:
    """The node an alert's cause key names (``node:<id>`` or ``node:<id>/...``, e.g. a silent node): it is about
    every lane of that node."""
    if not cause_key.startswith("node:"):
        return None
    head = cause_key[5:].split("/", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass(frozen=True, slots=True)
class AlertCounts:
    by_lane: Counter[str]  # unresolved alerts about the lane (lane:<id>, lane:<id>/...)
    trouble: Counter[str]  # of those, sensor / unassigned_lane alerts
    by_sku: Counter[str]  # unresolved alerts about the SKU (sku:<sku>)
    by_node: Counter[int]  # unresolved alerts about a node (node:<id>[/...]): about each of its lanes
    node_trouble: Counter[int]  # of those, sensor alerts (a silent node: its lanes' counts are stale)
    total: int

    def for_lane(self, lane_id: str, sku: str | None, node_id: int) -> int:
        return self.by_lane[lane_id] + (self.by_sku[sku] if sku is not None else 0) + self.by_node[node_id]

    def troubled(self, lane_id: str, node_id: int) -> bool:
        return self.trouble[lane_id] > 0 or self.node_trouble[node_id] > 0


def alert_counts(conn: sqlite3.Connection) -> AlertCounts:
    by_lane: Counter[str] = Counter()
    trouble: Counter[str] = Counter()
    by_sku: Counter[str] = Counter()
    by_node: Counter[int] = Counter()
    node_trouble: Counter[int] = Counter()
    total = 0
    for _id, kind, key in conn.execute(UNRESOLVED_SQL):
        total += 1
        if key.startswith("sku:"):
            by_sku[key[4:]] += 1
            continue
        node_id = cause_node(key)
        if node_id is not None:
            by_node[node_id] += 1
            if kind in TROUBLE_KINDS:
                node_trouble[node_id] += 1
            continue
        for lane_id in cause_lanes(key):
            by_lane[lane_id] += 1
            if kind in TROUBLE_KINDS:
                trouble[lane_id] += 1
    return AlertCounts(by_lane, trouble, by_sku, by_node, node_trouble, total)


def lanes(
    conn: sqlite3.Connection, lane_ids: Collection[str] | None = None, *, alerts: AlertCounts | None = None
) -> list[LaneRow]:
    """Every lane (or only ``lane_ids``), by node and lane index. ``alerts``: counts already read in the same
    transaction (else they are read here)."""
    if lane_ids is None:
        cursor = conn.execute(_LANES_SQL.format(where=""))
    else:
        where = "WHERE l.lane_id IN (SELECT value FROM json_each(?))"
        cursor = conn.execute(_LANES_SQL.format(where=where), (json.dumps(sorted(lane_ids)),))
    found = cursor.fetchall()
    if alerts is None:
        alerts = alert_counts(conn)
    rows = []
    for lane_id, node_id, lane_index, sku, name, capacity, reorder_point, observed, last_ms in found:
        reorder = int(reorder_point or 0)
        trouble = alerts.troubled(lane_id, node_id)
        rows.append(
            LaneRow(
                lane_id,
                node_id,
                lane_index,
                sku,
                name,
                capacity,
                reorder,
                observed,
                last_ms,
                alerts.for_lane(lane_id, sku, node_id),
                lane_state(sku, observed, reorder, trouble),
            )
        )
    return rows


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
    return (
        f'<tr id="lane-{lane_id}" data-state="{lane.state}" data-search="{search}"',
        f"><td>{name}</td><td>{sku}</td>"
        f'<td class="num count" data-count="{n}">{n}</td>'
        f'<td class="num capacity">{meter}<span>{capacity}</span></td>'
        f'<td class="wide last-change">{fmt_ms(lane.last_change_ms)}</td>'
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
def overview() -> str:
    from hub.web.live import feed

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
