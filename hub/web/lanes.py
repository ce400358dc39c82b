"""A lane's row as every reader of the status page sees it: the overview, the live feed, ``/lanes.json`` and
``/api/v1/lanes`` (one shape, ``LaneRow.to_json``), and the state rule the shelf page shows too.

A row is a function of the lane (node, index, SKU), its SKU (name, capacity, reorder point), the lane's observed
balance and last sensor movement (``sensor:<lane>``), the tags on it now (``tag_presence``: how many, how many of
another SKU, when the latest was last read), and the unresolved alerts about the lane (``lane:<id>``,
``lane:<id>/...``), its node (``node:<id>[/...]``) or its SKU (``sku:<sku>``): exactly what the ledger's commit
notifications name (``hub/ledger/changes.py``), which is how the live feed knows which rows to read again.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from hub.ledger.causes import Cause, CauseKind
from hub.ledger.tags import tag_sku_sql

# Per lane: SKU, observed count, capacity, reorder point and the last sensor movement of the lane's SKU (its
# ``lane_activity`` row, kept by the ledger's writer: hub/ledger/lane_activity.py). Alerts are counted in Python from
# the unresolved ones
# (``alert_counts``): one pass over a small set instead of a scan per lane.
# The tags: probes of the lane's rows in tag_presence (its primary key's prefix), usually none.
_LANES_SQL = f"""
SELECT l.lane_id, l.node_id, l.lane_index, l.sku, s.name, s.capacity, s.reorder_point,
       coalesce(b.qty, 0),
       (SELECT a.last_ts FROM lane_activity AS a WHERE a.location = 'sensor:' || l.lane_id AND a.sku = l.sku),
       (SELECT count(*) FROM tag_presence AS p WHERE p.lane_id = l.lane_id AND p.present = 1),
       (SELECT count(*) FROM tag_presence AS p WHERE p.lane_id = l.lane_id AND p.present = 1
        AND {tag_sku_sql("p")} != l.sku),
       (SELECT max(p.last_read_ms) FROM tag_presence AS p WHERE p.lane_id = l.lane_id AND p.present = 1)
FROM lanes AS l
LEFT JOIN skus AS s ON s.sku = l.sku
LEFT JOIN balances AS b ON b.sku = l.sku AND b.location = 'sensor:' || l.lane_id
{{where}}
ORDER BY l.node_id, l.lane_index
"""
# Unresolved alerts: a scan of the partial index alerts_one_unresolved (only unresolved rows are in it).
_UNRESOLVED_SQL = "SELECT kind, cause_key FROM alerts WHERE status != 'resolved'"
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
    tags_present: int = 0  # RFID tags on the lane now
    tags_other_sku: int = 0  # ... of those, tags of another SKU than the lane's
    tags_last_read_ms: int | None = None  # the latest a tag on the lane was confirmed read

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
            "tags_present": self.tags_present,
            "tags_other_sku": self.tags_other_sku,
            "tags_last_read_ms": self.tags_last_read_ms,
        }


def lane_state(sku: str | None, observed: int, reorder_point: int, trouble: bool) -> str:
    if trouble or sku is None:
        return "trouble"
    if observed <= 0:
        return "out"
    if observed <= reorder_point:
        return "low"
    return "ok"


@dataclass(frozen=True, slots=True)
class AlertCounts:
    by_lane: Counter[str]  # unresolved alerts about the lane (lane:<id>, lane:<id>/...)
    trouble: Counter[str]  # of those, sensor / unassigned_lane alerts
    by_sku: Counter[str]  # unresolved alerts about the SKU (sku:<sku>)
    by_node: Counter[int]  # unresolved alerts about a node (node:<id>[/...]): about each of its lanes
    node_trouble: Counter[int]  # of those, sensor alerts (a silent node: its lanes' counts are stale)
    total: int  # every unresolved alert, whatever it is about

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
    for kind, key in conn.execute(_UNRESOLVED_SQL):
        total += 1
        cause = Cause.parse_or_none(key)  # a key of other code's is about no lane
        if cause is None:
            continue
        troubling = kind in TROUBLE_KINDS
        if cause.kind is CauseKind.SKU and cause.sku is not None:
            by_sku[cause.sku] += 1
        elif cause.node_id is not None:
            by_node[cause.node_id] += 1
            node_trouble[cause.node_id] += troubling
        elif cause.lane_id is not None:
            by_lane[cause.lane_id] += 1
            trouble[cause.lane_id] += troubling
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
    for lane_id, node_id, lane_index, sku, name, capacity, reorder_point, observed, last_ms, tags, other, read in found:
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
                int(tags or 0),
                int(other or 0),
                read,
            )
        )
    return rows


def lanes_named(named: Iterable[str], skus: Iterable[str], causes: Iterable[str], rows: Iterable[LaneRow]) -> set[str]:
    """The lanes whose row a commit may have changed: those it ``named``, and the known ``rows`` whose SKU it
    names (``skus``, or an alert cause ``sku:<sku>``) or whose node an alert cause names (``node:<id>``); a cause key
    this module does not parse (another part's) is about no lane."""
    lanes_out = set(named)
    skus_out = set(skus)
    nodes: set[int] = set()
    for key in causes:
        cause = Cause.parse_or_none(key)
        if cause is None:
            continue
        if cause.lane_id is not None:
            lanes_out.add(cause.lane_id)
        elif cause.node_id is not None:
            nodes.add(cause.node_id)
        elif cause.sku is not None:
            skus_out.add(cause.sku)
    if skus_out or nodes:
        lanes_out.update(r.lane_id for r in rows if r.sku in skus_out or r.node_id in nodes)
    return lanes_out
