"""Phase 1 of a run: read one committed state of the ledger (a read-only connection, in a worker thread so the
event loop and the writer keep going) and compute everything the run will write, as a ``Plan``.

What the plan holds:

* **settled picks**: sensor picks whose window (plus grace for late POS data) has closed, with their final
  matches (put-backs, sales, order picks) and status: ``explained``, ``unexplained`` (confident: shrinkage) or
  ``uncertain`` (low confidence: not shrinkage);
* **late explanations**: units of picks already reported as unexplained (their shrinkage alert still
  unresolved) that a sale or put-back arriving since explains;
* **findings**: damage and misplaced-item events among the sensor events not checked before;
* **sensor health**: silent nodes, stuck and drifting lanes, lanes flagged uncalibrated, faulty or overloaded
  (``lane_flags``) to open, and sensor alerts whose cause is gone (to resolve);
* **tags** (``tag_plan``): tag departures judged (tamper, cross-reads, the pick a tag left with), misplaced tags,
  and what the tags say about each open pick (a low-confidence count the tags settle is matched with their count).

Which picks are still open is tracked by two marks (``recon_state``): every sensor pick with
``ts_ms < settled_before_ms`` and ``id <= scanned_to_id`` is settled. So a run looks at the picks at or after the
time mark, plus the picks that arrived since the last run whatever their time (a node that was offline delivers
old events late): the work per run is bounded by the window, not by the size of the ledger.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.ledger.causes import DRIFT, SILENT, STUCK, Cause
from hub.ledger.models import Reason, Sku
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.lane_flags import check_lane_flags
from hub.reconcile.matching import PUT_BACK, Credit, Match, Pick, allocate
from hub.reconcile.rules import check_damage, check_misplaced, put_fits_lane
from hub.reconcile.tag_plan import TagPlan, TagPlanner

SHRINKAGE, DAMAGE, MISPLACED, SENSOR, REORDER = "shrinkage", "damage", "misplaced", "sensor", "reorder"
_SENSOR_EVENTS = "('sensor_pick', 'sensor_put', 'sensor_anomaly')"
_NOT_REVERSED = "NOT EXISTS (SELECT 1 FROM movements AS x WHERE x.reverses_id = m.id)"
_CONSUMED = "coalesce((SELECT sum(c.units) FROM recon_matches AS c WHERE c.by_id = m.id), 0)"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class ReconcileConflict(Exception):
    """Another reconciler wrote since this run read the ledger: nothing was written; run again."""


@dataclass(slots=True)
class PickInfo:
    """What a pick's evidence shows besides its matches."""

    node_id: int | None
    event_seq: int | None
    weight_delta_dg: int | None
    confidence: int


@dataclass(slots=True)
class SettledPick:
    pick: Pick
    units: int
    put_back: int
    sold: int
    status: str  # explained | unexplained | uncertain


@dataclass(slots=True)
class LateExplanation:
    pick_id: int
    alert_id: int
    matches: list[Match]


@dataclass(slots=True)
class AlertUpdate:
    """Open (or add to) the alert of ``(kind, cause_key)``: ``fields`` replace the evidence's top-level fields,
    ``events`` are appended (those above the evidence's ``last_movement_id``)."""

    kind: str
    cause_key: str
    fields: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    suggested_units: int = 0


@dataclass(slots=True)
class Plan:
    run_seq: int  # recon_state.run_seq this plan was computed from
    now_ms: int
    settled_before_ms: int
    scanned_to_id: int
    settled: list[SettledPick] = field(default_factory=list)
    late: list[LateExplanation] = field(default_factory=list)
    findings: list[AlertUpdate] = field(default_factory=list)
    sensor_open: list[AlertUpdate] = field(default_factory=list)
    sensor_clear: dict[str, str] = field(default_factory=dict)  # cause key -> resolution
    pick_info: dict[int, PickInfo] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    tags: TagPlan | None = None


def connect_ro(path: Path | str, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    conn = sqlite3.connect(
        f"file:{Path(path).resolve()}?mode=ro", uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000
    )
    conn.execute("PRAGMA query_only = ON")
    return conn


def build_plan(path: Path | str, now_ms: int, cfg: ReconcileConfig) -> Plan:
    """Read one committed state of the ledger at ``path`` and compute the run (blocking: call in a thread)."""
    conn = connect_ro(path)
    try:
        conn.execute("BEGIN")
        try:
            return _Planner(conn, now_ms, cfg).plan()
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()


class _Planner:
    def __init__(self, conn: sqlite3.Connection, now_ms: int, cfg: ReconcileConfig) -> None:
        self.conn = conn
        self.now = now_ms
        self.cfg = cfg
        self.max_id = 0
        self.events_checked = 0

    def q(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def plan(self) -> Plan:
        cfg = self.cfg
        row = self.q("SELECT run_seq, settled_before_ms, scanned_to_id FROM recon_state WHERE id = 1")
        run_seq, old_settled, old_scanned = row[0] if row else (0, 0, 0)
        self.max_id = int(self.q("SELECT coalesce(max(id), 0) FROM movements")[0][0])
        settled = max(old_settled, self.now - cfg.settle_ms)
        plan = Plan(run_seq, self.now, settled, max(old_scanned, self.max_id))
        self.skus = {
            r[0]: Sku(*r)
            for r in self.q(
                "SELECT sku, name, unit_weight_dg, spread_permille, reorder_point, reorder_qty, capacity FROM skus"
            )
        }
        self.lanes = {r[0]: (r[1], r[2]) for r in self.q("SELECT lane_id, node_id, sku FROM lanes")}
        self.nodes = {r[0]: (r[1], r[2]) for r in self.q("SELECT node_id, label, last_seen_ms FROM nodes")}

        picks, late_alert = self._candidate_picks(plan, old_settled, old_scanned)
        fresh = [p for p in picks if p.id not in late_alert]
        weights = {p.id: (plan.pick_info[p.id].weight_delta_dg, plan.pick_info[p.id].confidence) for p in fresh}
        plan.tags = TagPlanner(self.conn, self.now, cfg, self.skus, self.lanes).plan(fresh, weights)
        by_tags = {i: t.units_by_tags for i, t in plan.tags.picks.items() if t.units_by_tags is not None}
        for p in fresh:  # a count the weight left open, settled by the tags that left with the pick
            p.remaining = by_tags.get(p.id, p.remaining)
        puts, sales = self._credits(fresh, settled, old_scanned)
        allocate(picks, puts, sales, window_ms=cfg.window_ms, lead_ms=cfg.lead_ms, putback_ms=cfg.putback_ms)

        n_units = {p.id: p.remaining + sum(m.units for m in p.matches) for p in picks}
        for p in picks:
            if p.id in late_alert:
                if p.matches:
                    plan.late.append(LateExplanation(p.id, late_alert[p.id], list(p.matches)))
                continue
            if p.ts_ms >= settled:
                continue  # still inside its window: matched again next run
            put_back = sum(m.units for m in p.matches if m.kind == PUT_BACK)
            sold = n_units[p.id] - put_back - p.remaining
            if p.remaining == 0:
                status = "explained"
            elif plan.pick_info[p.id].confidence < cfg.min_confidence and p.id not in by_tags:
                status = "uncertain"
            else:
                status = "unexplained"
            plan.settled.append(SettledPick(p, n_units[p.id], put_back, sold, status))

        silent = self._silent_nodes(plan)
        self._scan_events(plan, old_scanned)
        self._stuck_lanes(plan, sales, settled, silent)
        self._drifting_lanes(plan)
        flagged, cleared = check_lane_flags(self.conn, self.now, cfg, self.lanes, silent)
        plan.sensor_open += [AlertUpdate(SENSOR, cause, fields) for cause, fields in flagged]
        plan.sensor_clear.update(cleared)
        plan.stats = {
            "picks_settled": len(plan.settled),
            "units_settled": sum(s.units for s in plan.settled),
            "units_unexplained": sum(s.pick.remaining for s in plan.settled if s.status == "unexplained"),
            "units_uncertain": sum(s.pick.remaining for s in plan.settled if s.status == "uncertain"),
            "units_explained_late": sum(m.units for x in plan.late for m in x.matches),
            "picks_open": sum(1 for p in picks if p.id not in late_alert and p.ts_ms >= settled),
            "events_checked": self.events_checked,
            "picks_counted_by_tags": sum(1 for s in plan.settled if s.pick.id in by_tags),
            **plan.tags.stats,
        }
        return plan

    # ---------------------------------------------------------------------------------------------- picks

    def _candidate_picks(self, plan: Plan, old_settled: int, old_scanned: int) -> tuple[list[Pick], dict[int, int]]:
        cols = (
            "SELECT m.id, m.ts_ms, m.sku, substr(m.location, 8), -m.qty, m.node_id, m.event_seq, m.weight_delta_dg,"
            " coalesce(m.confidence, 100) FROM movements AS m WHERE m.reason = 'sensor_pick' AND m.sku IS NOT NULL"
            " AND m.qty < 0 AND m.reverses_id IS NULL AND m.id <= ?"
            " AND NOT EXISTS (SELECT 1 FROM recon_picks AS r WHERE r.movement_id = m.id) AND " + _NOT_REVERSED
        )
        # Not settled yet: at or after the time mark, or arrived since the last run (a node delivering late).
        rows = self.q(f"{cols} AND m.ts_ms >= ?", (self.max_id, old_settled))
        rows += self.q(f"{cols} AND m.id > ? AND m.ts_ms < ?", (self.max_id, old_scanned, old_settled))
        picks = []
        for r in rows:
            picks.append(Pick(r[0], r[1], r[2], r[3], r[4]))
            plan.pick_info[r[0]] = PickInfo(r[5], r[6], r[7], r[8])
        # Picks already reported as unexplained whose alert is still unresolved: a late sale may explain them.
        late_alert: dict[int, int] = {}
        for r in self.q(
            "SELECT r.movement_id, r.ts_ms, r.sku, r.lane_id, r.unexplained, r.alert_id, m.node_id, m.event_seq,"
            " m.weight_delta_dg, coalesce(m.confidence, 100) FROM alerts AS a JOIN recon_picks AS r"
            " ON r.alert_id = a.id JOIN movements AS m ON m.id = r.movement_id"
            " WHERE a.kind = 'shrinkage' AND a.status != 'resolved' AND r.unexplained > 0"
        ):
            picks.append(Pick(r[0], r[1], r[2], r[3], r[4]))
            late_alert[r[0]] = r[5]
            plan.pick_info[r[0]] = PickInfo(r[6], r[7], r[8], r[9])
        return picks, late_alert

    def _credits(self, picks: list[Pick], settled: int, old_scanned: int) -> tuple[list[Credit], list[Credit]]:
        """Puts and sales that can explain the open picks, plus every put and sale that arrived since the last run.

        A pick already reported as unexplained can only be explained by a credit that arrived since: an older one
        was offered to it when it settled (the greedy gives a sale to the earliest pick in its window first)."""
        cfg = self.cfg
        ranges: dict[str, list[int]] = {}
        for p in picks:
            lo_hi = ranges.setdefault(p.sku, [p.ts_ms, p.ts_ms])
            lo_hi[0] = min(lo_hi[0], p.ts_ms)
            lo_hi[1] = max(lo_hi[1], p.ts_ms)
        put_sql = (
            "SELECT m.id, m.ts_ms, m.sku, substr(m.location, 8), m.qty - " + _CONSUMED + ", m.qty, m.weight_delta_dg"
            " FROM movements AS m WHERE m.reason = 'sensor_put' AND m.sku IS NOT NULL AND m.qty > 0"
            " AND m.reverses_id IS NULL AND m.id <= ? AND " + _NOT_REVERSED
        )
        sale_sql = (
            "SELECT m.id, m.ts_ms, m.sku, m.reason, -m.qty - " + _CONSUMED + " FROM movements AS m"
            " WHERE m.reason IN ('sale', 'order_pick') AND m.location GLOB 'lane:*' AND m.qty < 0"
            " AND m.reverses_id IS NULL AND m.id <= ? AND " + _NOT_REVERSED
        )
        # (On the first run everything is new: the id query alone covers it.)
        put_rows = self.q(put_sql + " AND m.id > ?", (self.max_id, old_scanned))
        for sku, (lo, hi) in sorted(ranges.items() if old_scanned else ()):
            put_rows += self.q(
                put_sql + " AND m.sku = ? AND m.ts_ms BETWEEN ? AND ?", (self.max_id, sku, lo, hi + cfg.putback_ms)
            )
        puts: dict[int, Credit] = {}
        for mid, ts, sku_id, lane_id, remaining, qty, weight in put_rows:
            if remaining > 0 and mid not in puts and put_fits_lane(qty, weight, self.skus[sku_id], cfg):
                puts[mid] = Credit(mid, ts, PUT_BACK, sku_id, lane_id, remaining)
        # Sales that can explain an open pick p lie in [p - lead, p + window]; the settled ones of the last stuck_s
        # are needed too (sold, yet seen by no lane: a stuck lane).
        stuck_lo = self.now - round(cfg.stuck_s * 1000)
        sale_ranges = {
            sku: (min(lo - cfg.lead_ms, stuck_lo), max(hi + cfg.window_ms, settled)) for sku, (lo, hi) in ranges.items()
        }
        for _node, sku in self.lanes.values():
            if sku is not None and sku not in sale_ranges:
                sale_ranges[sku] = (stuck_lo, settled)
        sale_rows = self.q(sale_sql + " AND m.id > ?", (self.max_id, old_scanned))
        for sku, (lo, hi) in sorted(sale_ranges.items() if old_scanned else ()):
            sale_rows += self.q(sale_sql + " AND m.sku = ? AND m.ts_ms BETWEEN ? AND ?", (self.max_id, sku, lo, hi))
        sales: dict[int, Credit] = {}
        for mid, ts, sku_id, reason, remaining in sale_rows:
            if remaining > 0 and mid not in sales:
                sales[mid] = Credit(mid, ts, reason, sku_id, None, remaining)
        return list(puts.values()), list(sales.values())

    # ------------------------------------------------------------------------------------- damage, misplaced

    def _scan_events(self, plan: Plan, old_scanned: int) -> None:
        """Weight checks of every sensor event that arrived since the last run (each event checked once)."""
        skus = sorted(self.skus.values(), key=lambda s: s.sku)
        groups: dict[tuple[str, str, str], AlertUpdate] = {}
        rows = self.q(
            "SELECT m.id, m.ts_ms, m.sku, substr(m.location, 8), m.reason, m.qty, m.weight_delta_dg,"
            " coalesce(m.confidence, 100), m.node_id, m.event_seq FROM movements AS m WHERE m.id > ? AND m.id <= ?"
            f" AND m.reason IN {_SENSOR_EVENTS} AND m.sku IS NOT NULL ORDER BY m.id",
            (old_scanned, self.max_id),
        )
        self.events_checked = len(rows)
        for mid, ts, sku_id, lane_id, reason_s, qty, weight, conf, node_id, seq in rows:
            sku = self.skus[sku_id]
            reason = Reason(reason_s)
            event = {
                "movement_id": mid,
                "ts": iso(ts),
                "ts_ms": ts,
                "kind": reason.value.removeprefix("sensor_"),
                "node_id": node_id,
                "event_seq": seq,
                "confidence": conf,
            }
            damage = check_damage(reason, qty, weight, conf, sku, self.cfg)
            if damage is not None:
                upd = groups.setdefault(
                    (DAMAGE, lane_id, sku_id),
                    AlertUpdate(DAMAGE, str(Cause.lane_sku(lane_id, sku_id)), self._lane_fields(lane_id, sku)),
                )
                upd.events.append({**event, "rule": damage.rule, **damage.detail, "units": damage.suggested_units})
                upd.suggested_units += damage.suggested_units
            misplaced = check_misplaced(reason, qty, weight, sku, skus, self.cfg)
            if misplaced is not None:
                upd = groups.setdefault(
                    (MISPLACED, lane_id, sku_id),
                    AlertUpdate(MISPLACED, str(Cause.lane_sku(lane_id, sku_id)), self._lane_fields(lane_id, sku)),
                )
                upd.events.append({**event, "rule": misplaced.rule, **misplaced.detail})
        plan.findings = [groups[k] for k in sorted(groups)]

    def _lane_fields(self, lane_id: str, sku: Sku) -> dict[str, Any]:
        node = self.lanes.get(lane_id, (None, None))[0]
        return {
            "lane_id": lane_id,
            "node_id": node,
            "sku": sku.sku,
            "sku_name": sku.name,
            "location": f"lane:{lane_id}",
            "unit_weight_dg": sku.unit_weight_dg,
            "spread_permille": sku.spread_permille,
        }

    # ------------------------------------------------------------------------------------------ sensor health

    def _silent_nodes(self, plan: Plan) -> set[int]:
        """Nodes heard from at least once, with a lane holding a SKU, and not heard from for silent_s."""
        limit = self.now - round(self.cfg.silent_s * 1000)
        watched: dict[int, list[str]] = defaultdict(list)
        for lane_id, (node_id, sku) in sorted(self.lanes.items()):
            if sku is not None:
                watched[node_id].append(lane_id)
        silent = set()
        for node_id, (label, last_seen) in sorted(self.nodes.items()):
            cause = str(Cause.node_problem(node_id, SILENT))
            if last_seen is None or node_id not in watched:
                continue
            if last_seen < limit:
                silent.add(node_id)
                plan.sensor_open.append(
                    AlertUpdate(
                        SENSOR,
                        cause,
                        {
                            "problem": "silent",
                            "node_id": node_id,
                            "label": label,
                            "last_seen_ms": last_seen,
                            "last_seen": iso(last_seen),
                            "silent_after_s": self.cfg.silent_s,
                            "lanes": watched[node_id],
                        },
                    )
                )
            else:
                plan.sensor_clear[cause] = f"node {node_id} reporting again (last seen {iso(last_seen)})"
        return silent

    def _stuck_lanes(self, plan: Plan, sales: list[Credit], settled: int, silent: set[int]) -> None:
        """A lane that reported nothing for stuck_s while sales of its SKU went unseen by any lane."""
        cfg = self.cfg
        since = self.now - round(cfg.stuck_s * 1000)
        unseen: dict[str, list[Credit]] = defaultdict(list)
        for s in sales:
            if s.remaining > 0 and since <= s.ts_ms and s.ts_ms + cfg.lead_ms < settled:
                unseen[s.sku].append(s)
        active = {
            r[0]
            for r in self.q(
                f"SELECT DISTINCT substr(location, 8) FROM movements WHERE reason IN {_SENSOR_EVENTS}"
                " AND ts_ms >= ? AND id <= ?",
                (since, self.max_id),
            )
        }
        for lane_id, (node_id, sku) in sorted(self.lanes.items()):
            cause = str(Cause.lane_problem(lane_id, STUCK))
            if lane_id in active:
                plan.sensor_clear[cause] = f"lane {lane_id} reporting events again"
                continue
            seen = self.nodes.get(node_id, ("", None))[1]
            if sku is None or seen is None or node_id in silent:
                continue
            units = sum(s.remaining for s in unseen.get(sku, []))
            if units >= cfg.stuck_min_units:
                plan.sensor_open.append(
                    AlertUpdate(
                        SENSOR,
                        cause,
                        {
                            "problem": "stuck",
                            "lane_id": lane_id,
                            "node_id": node_id,
                            "sku": sku,
                            "no_event_for_s": cfg.stuck_s,
                            "unseen_sale_units": units,
                            "unseen_sales": [s.id for s in unseen[sku][: cfg.evidence_items_max]],
                        },
                    )
                )

    def _drifting_lanes(self, plan: Plan) -> None:
        """Many low-confidence or anomaly events on a lane within drift_s."""
        cfg = self.cfg
        by_lane: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for mid, ts, lane_id, reason, qty, weight, conf in self.q(
            "SELECT id, ts_ms, substr(location, 8), reason, qty, weight_delta_dg, confidence FROM movements"
            f" WHERE reason IN {_SENSOR_EVENTS} AND ts_ms BETWEEN ? AND ? AND id <= ?"
            " AND (reason = 'sensor_anomaly' OR coalesce(confidence, 100) < ?) ORDER BY id",
            (self.now - round(cfg.drift_s * 1000), self.now, self.max_id, cfg.min_confidence),
        ):
            by_lane[lane_id].append(
                {
                    "movement_id": mid,
                    "ts": iso(ts),
                    "ts_ms": ts,
                    "kind": str(reason).removeprefix("sensor_"),
                    "counted": qty,
                    "weight_delta_dg": weight,
                    "confidence": conf,
                }
            )
        for lane_id in sorted(self.lanes):
            events = by_lane.get(lane_id, [])
            cause = str(Cause.lane_problem(lane_id, DRIFT))
            if len(events) >= cfg.drift_min_events:
                node_id, sku = self.lanes[lane_id]
                plan.sensor_open.append(
                    AlertUpdate(
                        SENSOR,
                        cause,
                        {
                            "problem": "drift",
                            "lane_id": lane_id,
                            "node_id": node_id,
                            "sku": sku,
                            "period_s": cfg.drift_s,
                            "events_in_period": len(events),
                            "threshold": cfg.drift_min_events,
                        },
                        events,
                    )
                )
            elif 2 * len(events) < cfg.drift_min_events:
                plan.sensor_clear[cause] = f"lane {lane_id}: {len(events)} uncertain events in the last period"
