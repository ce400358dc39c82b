"""What the shelf (lane) page reads: the lane's header, count and weight over a window, its event timeline.

Every query is a range of an index, so the page costs the same on a ledger of a million movements as on a small
one:

* the count chart: the lane's sensor movements (its ``sensor_spans``: ``hub.ledger.lane_activity``) of the lane's
  current SKU. The count
  before the window is the lane's observed balance (``balances``) minus what moved since the window began, so no
  history before the window is read; the rows of the window stream into a ``Downsampler`` (bounded memory);
* the weight chart: ``lane_readings`` of the window (primary key ``(lane_id, ts_ms)``), broken where no reading
  came for ``GAP_MS``;
* the timeline: the newest ``TIMELINE_MAX`` movements of the lane in the window (the same spans) and the
  alerts about the lane or its SKU opened or resolved in the window.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from hub.ledger.causes import Cause
from hub.ledger.lane_activity import MAX_TS, lane_rows_sql
from hub.ledger.models import lane_location, sensor_location
from hub.ledger.reader import BALANCE, BOOK_TOTAL, LANES_WITH_SKU, NO_SKU_UNITS, no_sku_params
from hub.ledger.sensor import READING_INTERVAL_MS
from hub.web.db import fetch_one
from hub.web.lanes import TROUBLE_KINDS, lane_state
from hub.web.pages import charts

TIMELINE_MAX = 500
ALERTS_MAX = 100
GAP_MS = 3 * READING_INTERVAL_MS  # no reading stored for this long: the node was silent (quiet lanes: 1 per 5 min)

# unresolved or not, about the lane (lane:<id>, lane:<id>/...), its node (node:<id>, node:<id>/..., e.g. a silent
# node) or its SKU (sku:<sku>); the keys and prefixes are the parameters ``_about`` makes (hub/ledger/causes.py)
_ABOUT_LANE = (
    "(a.cause_key = :lane OR substr(a.cause_key, 1, length(:lane_sub)) = :lane_sub"
    " OR a.cause_key = :node OR substr(a.cause_key, 1, length(:node_sub)) = :node_sub)"
)
_ABOUT = f"({_ABOUT_LANE} OR a.cause_key = :sku)"
_TROUBLE = ", ".join(f"'{kind}'" for kind in sorted(TROUBLE_KINDS))


def _about(lane_id: str, node_id: int, sku: str | None) -> dict[str, str | None]:
    lane, node = Cause.lane(lane_id), Cause.node(node_id)
    return {
        "lane": str(lane),
        "lane_sub": lane.prefix,
        "node": str(node),
        "node_sub": node.prefix,
        "sku": None if sku is None else str(Cause.of_sku(sku)),
    }


@dataclass(frozen=True, slots=True)
class LaneInfo:
    lane_id: str
    node_id: int
    lane_index: int
    sku: str | None
    name: str | None
    unit_weight_dg: int | None
    capacity: int | None
    reorder_point: int
    observed: int
    book_total: int | None  # the SKU's book stock, all locations
    book_lane: int | None  # ... of it on this lane (lane:<id>)
    state: str
    last_reading: tuple[int, int, int] | None  # ts_ms, weight_dg, count


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    ts_ms: int
    kind: str  # "movement" | "alert"
    what: str  # reason, or "alert opened" / "alert resolved"
    qty: int | None = None
    weight_delta_dg: int | None = None
    confidence: int | None = None
    ref: str = ""
    actor: str = ""
    event_seq: int | None = None
    note: str | None = None
    alert_id: int | None = None


@dataclass(frozen=True, slots=True)
class OpenAlert:
    id: int
    kind: str
    cause_key: str
    status: str
    opened_ms: int


def _one(conn: sqlite3.Connection, sql: str, params: Any = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def lane_info(conn: sqlite3.Connection, lane_id: str) -> LaneInfo | None:
    found = fetch_one(conn, LANES_WITH_SKU, where=[("l.lane_id = ?", lane_id)])
    if found is None:
        return None
    lane, rec = found
    node_id, lane_index, sku = lane.node_id, lane.lane_index, lane.sku
    name = unit_dg = capacity = None
    reorder = 0
    if rec is not None:
        name, unit_dg, capacity, reorder = rec.name, rec.unit_weight_dg, rec.capacity, rec.reorder_point or 0
    location = sensor_location(lane_id)
    book_total: int | None = None
    book_lane: int | None = None
    if sku is not None:
        # balances' primary key is (sku, location): these read one SKU's rows only
        observed = fetch_one(conn, BALANCE, (sku, location)) or 0
        book_total = fetch_one(conn, BOOK_TOTAL, (sku,)) or 0
        book_lane = fetch_one(conn, BALANCE, (sku, lane_location(lane_id))) or 0
    else:
        observed = fetch_one(conn, NO_SKU_UNITS, no_sku_params(lane_id)) or 0
    trouble = bool(
        _one(
            conn,
            f"SELECT count(*) FROM alerts AS a WHERE a.status != 'resolved' AND a.kind IN ({_TROUBLE})"
            f" AND {_ABOUT_LANE}",
            _about(lane_id, node_id, None),
        )
    )
    last = conn.execute(
        "SELECT ts_ms, weight_dg, count FROM lane_readings WHERE lane_id = ? ORDER BY ts_ms DESC LIMIT 1", (lane_id,)
    ).fetchone()
    return LaneInfo(
        lane_id,
        node_id,
        lane_index,
        sku,
        name,
        unit_dg,
        capacity,
        reorder,
        observed,
        book_total,
        book_lane,
        lane_state(sku, observed, reorder, trouble),
        None if last is None else (last[0], last[1], last[2]),
    )


def open_alerts(conn: sqlite3.Connection, lane: LaneInfo) -> list[OpenAlert]:
    rows = conn.execute(
        f"SELECT a.id, a.kind, a.cause_key, a.status, a.opened_ms FROM alerts AS a WHERE a.status != 'resolved'"
        f" AND {_ABOUT} ORDER BY a.opened_ms DESC, a.id DESC LIMIT {ALERTS_MAX}",
        _about(lane.lane_id, lane.node_id, lane.sku),
    )
    return [OpenAlert(*r) for r in rows]


def count_series(
    conn: sqlite3.Connection, lane: LaneInfo, t0_ms: int, t1_ms: int
) -> tuple[int, list[charts.Sample], int]:
    """The count at ``t0_ms``, its changes up to ``t1_ms`` (downsampled) and how many there were, from the lane's
    sensor movements of its current SKU (unassigned: those without a SKU), which is what the observed count adds
    up. The count at the start is the observed count minus what moved since: no row before the window is read."""
    location = sensor_location(lane.lane_id)
    since = int(
        _one(conn, lane_rows_sql("coalesce(sum(m.qty), 0)", " AND m.sku IS ?4"), (location, t0_ms, MAX_TS, lane.sku))
    )
    start = lane.observed - since
    down = charts.Downsampler(t0_ms, t1_ms)
    running = start
    for ts, qty in conn.execute(
        lane_rows_sql("m.ts_ms, m.qty", " AND m.sku IS ?4", "ORDER BY m.ts_ms, m.id"),
        (location, t0_ms, t1_ms, lane.sku),
    ):
        running += qty
        down.add(ts, running)
    return start, down.samples(), down.count


def weight_series(conn: sqlite3.Connection, lane_id: str, t0_ms: int, t1_ms: int) -> tuple[list[charts.Sample], int]:
    """The lane's stored readings in the window in grams (downsampled; breaks where none came for GAP_MS), and how
    many there were."""
    down = charts.Downsampler(t0_ms, t1_ms, max_gap_ms=GAP_MS)
    for ts, weight_dg in conn.execute(
        "SELECT ts_ms, weight_dg FROM lane_readings WHERE lane_id = ? AND ts_ms >= ? AND ts_ms <= ? ORDER BY ts_ms",
        (lane_id, t0_ms, t1_ms),
    ):
        down.add(ts, weight_dg / 10)
    return down.samples(), down.count


def timeline(conn: sqlite3.Connection, lane: LaneInfo, t0_ms: int, t1_ms: int) -> tuple[list[TimelineEntry], int, int]:
    """Newest first: the lane's movements in the window (at most TIMELINE_MAX) and the alerts about it opened or
    resolved then. Returns (entries, movements shown, movements in the window)."""
    location = sensor_location(lane.lane_id)
    window = (location, t0_ms, t1_ms)
    columns = "m.ts_ms, m.reason, m.qty, m.weight_delta_dg, m.confidence, m.source_ref, m.actor, m.event_seq, m.note"
    rows = conn.execute(
        lane_rows_sql(columns, order=f"ORDER BY m.ts_ms DESC, m.id DESC LIMIT {TIMELINE_MAX + 1}"), window
    ).fetchall()
    total = len(rows)
    if total > TIMELINE_MAX:
        rows = rows[:TIMELINE_MAX]
        total = int(_one(conn, lane_rows_sql("count(*)"), window))
    entries = [TimelineEntry(r[0], "movement", r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]
    for aid, kind, cause, opened, resolved, resolved_by, resolution in conn.execute(
        "SELECT a.id, a.kind, a.cause_key, a.opened_ms, a.resolved_ms, a.resolved_by, a.resolution FROM alerts AS a"
        f" WHERE a.opened_ms <= :t1 AND (a.opened_ms >= :t0 OR a.resolved_ms >= :t0) AND {_ABOUT}"
        f" ORDER BY a.opened_ms DESC LIMIT {ALERTS_MAX}",
        {**_about(lane.lane_id, lane.node_id, lane.sku), "t0": t0_ms, "t1": t1_ms},
    ):
        if t0_ms <= opened <= t1_ms:
            entries.append(TimelineEntry(opened, "alert", f"{kind} alert opened", ref=cause, alert_id=aid))
        if resolved is not None and t0_ms <= resolved <= t1_ms:
            entries.append(
                TimelineEntry(
                    resolved, "alert", f"{kind} alert resolved", ref=cause, actor=resolved_by or "",
                    note=resolution, alert_id=aid,
                )
            )  # fmt: skip
    entries.sort(key=lambda e: e.ts_ms, reverse=True)  # stable: movements keep their id order within a ms
    return entries, len(rows), total
