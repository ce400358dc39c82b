"""Phase 1 of a run, the tags' part: read what the rules of ``tag_rules`` need from the same committed state as
the rest of the plan (``plan._Planner``, a read-only connection in a worker thread) and judge.

* **Departures to judge**: every ``tag_lost`` booked since the mark (``recon_tag_state.settled_to_id``) once it is
  due: ``tag_window_s + tag_return_s`` after it happened (a weight step or a return may still come), and once its
  node's contiguous mark covers it, so every event the node recorded before it is booked (a pick is decided
  within a second or two of the lift, the loss of its tag only when the tag was not read for the node's loss
  time: the pick comes first in the node's sequence, and a retransmission cannot bring it after the verdict).
  The mark then moves to just below the first departure not due yet, so each departure is judged exactly once and a
  run reads only what came since.
* Per lane with departures: its weight events around them (from ``tag_late_s`` before to ``tag_window_s`` after),
  the tags already given to those picks, its weight readings, later reads of the EPCs, and the reader outages of
  the departures' nodes that began around them (``tag_rules.Outage.explains``; one already under way at a tag's
  last read is another reader's).
* **Picks**: for each pick still open (its window not closed) on a lane that has ever held tags, what its tags say
  (``tag_rules.pick_tags``): the count of a low-confidence pick is settled by its tags before the matching runs.
* **Misplaced**: the tags on a lane of another SKU for ``misplaced_grace_s``, except those present on another lane
  too that wins (``tag_rules.held_elsewhere``: a lane of the tag's SKU, else the strongest read): each node settles
  cross-reads among its own antennas only, so the hub arbitrates between nodes; the losers are cross-reads, counted
  (``tags_cross_read_present``), never alerted.
* **Expiry**: tags unconfirmed since a restart ``tag_reseen_s`` ago (the writer checks the readers worked since).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hub.ledger.lane_activity import lane_rows_sql
from hub.ledger.models import Sku
from hub.ledger.sensor import READING_INTERVAL_MS
from hub.ledger.tags import tag_sku_sql
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.matching import Pick
from hub.reconcile.tag_rules import (
    PICKED,
    PICKED_LATE,
    SWAPPED,
    TAMPER,
    Departure,
    Outage,
    PickTags,
    Present,
    Reading,
    Sighting,
    Step,
    Verdict,
    held_elsewhere,
    judge,
    misplaced,
    pick_tags,
)

_STEP_KIND = {"sensor_pick": "pick", "sensor_put": "put", "sensor_anomaly": "anomaly"}
_NOT_REVERSED = "NOT EXISTS (SELECT 1 FROM movements AS x WHERE x.reverses_id = m.id)"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def step_json(s: Step) -> dict[str, Any]:
    """A weight event as alert evidence shows it."""
    return {
        "movement_id": s.movement_id,
        "ts": iso(s.ts_ms),
        "kind": s.kind,
        "qty": s.qty,
        "weight_delta_dg": s.weight_delta_dg,
    }


@dataclass(slots=True)
class Judged:
    dep: Departure
    verdict: Verdict
    evidence: dict[str, Any] | None = None  # a tamper's evidence item (what the alert lists about this tag)


@dataclass(slots=True)
class TagPlan:
    settled_to_id: int
    expire_before_ms: int
    judged: list[Judged] = field(default_factory=list)
    misplaced: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (lane, its SKU) -> tags
    cross_reads: dict[tuple[str, str], str] = field(default_factory=dict)  # (lane, EPC) -> the lane it is held on
    picks: dict[int, PickTags] = field(default_factory=dict)  # open picks of tagged lanes
    stats: Counter[str] = field(default_factory=Counter)


class TagPlanner:
    def __init__(
        self, conn: sqlite3.Connection, now_ms: int, cfg: ReconcileConfig, skus: dict[str, Sku], lanes: dict[str, Any]
    ) -> None:
        self.conn = conn
        self.now = now_ms
        self.cfg = cfg
        self.skus = skus
        self.lanes: dict[str, tuple[int, str | None]] = lanes
        self.given: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # pick -> [in window, late] this run

    def q(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def plan(self, picks: list[Pick], weights: dict[int, tuple[int | None, int]]) -> TagPlan:
        """``picks``: the open picks of this run; ``weights``: pick id -> (weight change, confidence)."""
        row = self.q("SELECT settled_to_id FROM recon_tag_state WHERE id = 1")
        mark = int(row[0][0]) if row else 0
        # ids are never reused (tag_events is AUTOINCREMENT): everything booked since the mark lies above it, even
        # once the newest events before it were pruned
        top = max(mark, int(self.q("SELECT coalesce(max(id), 0) FROM tag_events")[0][0]))
        tp = TagPlan(top, self.now - self.cfg.ms("tag_reseen_s"))
        due: list[tuple[Departure, int | None]] = []
        waiting: list[int] = []
        after = self.cfg.tag_window_ms + self.cfg.ms("tag_return_s")
        for r in self.q(
            f"SELECT e.id, e.node_id, e.lane_id, e.epc, {tag_sku_sql('e')}, e.ts_ms, e.ts_known,"
            " n.highest_contiguous_event_seq >= e.event_seq, e.event_seq FROM tag_events AS e"
            " JOIN nodes AS n ON n.node_id = e.node_id WHERE e.id > ? AND e.id <= ? AND e.kind = 'lost'"
            " AND NOT EXISTS (SELECT 1 FROM recon_tags AS r WHERE r.event_id = e.id) ORDER BY e.id",
            (mark, top),
        ):
            dep = Departure(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]))
            if r[7] and (self.now >= r[5] + after or not dep.ts_known):
                due.append((dep, r[8]))
            else:
                waiting.append(dep.event_id)
        if waiting:
            tp.settled_to_id = min(waiting) - 1
        by_lane: dict[str, list[tuple[Departure, int | None]]] = defaultdict(list)
        for dep, seq in due:
            by_lane[dep.lane_id].append((dep, seq))
        for lane_id in sorted(by_lane):
            self._judge_lane(tp, lane_id, sorted(by_lane[lane_id], key=lambda d: (d[0].ts_ms, d[0].event_id)))
        tp.stats.update(f"tags_{j.verdict.verdict}" for j in tp.judged)
        tp.stats["tags_judged"] = len(tp.judged)
        self._picks(tp, picks, weights)
        self._misplaced(tp)
        return tp

    # ---------------------------------------------------------------------------------------------- departures

    def _judge_lane(self, tp: TagPlan, lane_id: str, deps: list[tuple[Departure, int | None]]) -> None:
        cfg, window = self.cfg, self.cfg.tag_window_ms
        sku_id = self.lanes.get(lane_id, (0, None))[1]  # (node, SKU)
        sku = self.skus.get(sku_id) if sku_id is not None else None
        lo = min(d.ts_ms for d, _ in deps) - cfg.ms("tag_late_s") - window
        hi = max(d.ts_ms for d, _ in deps) + max(window, cfg.ms("tag_return_s"))  # a swap's put comes that late
        steps = self._steps(lane_id, lo, hi)
        taken = self._taken([s.movement_id for s in steps])
        first = min(d.ts_ms for d, _ in deps) - window
        after = window + cfg.ms("tag_return_s")  # the verdict's horizon after a departure
        readings = [  # the lane's weight before the first window (however old: a quiet lane's), then through them
            Reading(r[0], r[1])
            for r in self.q(
                "SELECT * FROM (SELECT ts_ms, weight_dg FROM lane_readings WHERE lane_id = ? AND ts_ms <= ?"
                " ORDER BY ts_ms DESC LIMIT 1) UNION SELECT ts_ms, weight_dg FROM lane_readings WHERE lane_id = ?"
                " AND ts_ms > ? AND ts_ms <= ? ORDER BY ts_ms",
                (lane_id, first, lane_id, first, hi + READING_INTERVAL_MS),
            )
        ]
        epcs = json.dumps(sorted({d.epc for d, _ in deps}))
        later: dict[str, list[Sighting]] = defaultdict(list)
        for epc, other_lane, ts in self.q(
            "SELECT epc, lane_id, ts_ms FROM tag_events WHERE epc IN (SELECT value FROM json_each(?)) AND kind = 'seen'"
            " AND ts_ms BETWEEN ? AND ?",
            (epcs, lo, hi + cfg.ms("tag_return_s")),
        ):
            later[epc].append(Sighting(other_lane, ts))
        arrivals = [
            Sighting(lane_id, r[0])
            for r in self.q(
                f"SELECT e.ts_ms FROM tag_events AS e WHERE e.lane_id = ? AND e.kind = 'seen' AND e.effect = 'arrived'"
                f" AND e.ts_ms BETWEEN ? AND ? AND {tag_sku_sql('e')} = ?",
                (lane_id, lo, hi + cfg.ms("tag_return_s"), sku_id),
            )
        ]
        # outages of the node that reported each departure that began around it (``Outage.explains``: one that began
        # before the tag's last read is another reader's), not every outage overlapping: an open one overlaps all
        outages: dict[int, list[Outage]] = defaultdict(list)
        for node, since, until in self.q(
            "SELECT node_id, from_ms, to_ms FROM rfid_outages WHERE node_id IN (SELECT value FROM json_each(?))"
            " AND from_ms BETWEEN ? AND ?",
            (json.dumps(sorted({d.node_id for d, _ in deps})), first, max(d.ts_ms for d, _ in deps) + after),
        ):
            outages[int(node)].append(Outage(since, until))
        for dep, seq in deps:
            counts = {k: (v[0] + self.given[k][0], v[1] + self.given[k][1]) for k, v in taken.items()}
            mine = [a for a in arrivals if a.ts_ms > dep.ts_ms]
            verdict = judge(dep, sku, steps, counts, readings, later[dep.epc], outages[dep.node_id], cfg, mine)
            if verdict.pick_id is not None:
                self.given[verdict.pick_id][0 if verdict.verdict == PICKED else 1] += 1
            evidence = None
            if verdict.verdict == TAMPER:
                evidence = self._tamper_evidence(dep, seq, steps, readings, verdict.why)
            tp.judged.append(Judged(dep, verdict, evidence))

    def _steps(self, lane_id: str, lo: int, hi: int) -> list[Step]:
        return [
            Step(r[0], r[1], _STEP_KIND[r[2]], r[3], r[4], r[5])
            for r in self.q(
                lane_rows_sql(  # the lane's movements through its sensor spans (hub.ledger.lane_activity)
                    "m.id, m.ts_ms, m.reason, m.qty, m.weight_delta_dg, coalesce(m.confidence, 100)",
                    " AND m.reason IN ('sensor_pick', 'sensor_put', 'sensor_anomaly') AND m.reverses_id IS NULL"
                    f" AND {_NOT_REVERSED}",
                    "ORDER BY m.ts_ms, m.id",
                ),
                (f"sensor:{lane_id}", lo, hi),
            )
        ]

    def _taken(self, pick_ids: list[int]) -> dict[int, tuple[int, int]]:
        """Tags already given to these picks by earlier runs: (within the window, late)."""
        found: dict[int, tuple[int, int]] = {i: (0, 0) for i in pick_ids}
        for pick_id, window, late in self.q(
            f"SELECT pick_id, sum(verdict = '{PICKED}'), sum(verdict = '{PICKED_LATE}') FROM recon_tags"
            " WHERE pick_id IN (SELECT value FROM json_each(?)) GROUP BY pick_id",
            (json.dumps(pick_ids),),
        ):
            found[int(pick_id)] = (int(window), int(late))
        return found

    def _tamper_evidence(
        self, dep: Departure, seq: int | None, steps: list[Step], readings: list[Reading], why: str
    ) -> dict[str, Any]:
        window = self.cfg.tag_window_ms
        span = max(window, self.cfg.ms("tag_return_s")) if why == SWAPPED else window  # a swap's put comes later
        arrived = self.q(
            "SELECT max(ts_ms) FROM tag_events WHERE epc = ? AND lane_id = ? AND kind = 'seen' AND effect = 'arrived'"
            " AND ts_ms <= ?",
            (dep.epc, dep.lane_id, dep.ts_ms),
        )[0][0]
        before = [r for r in readings if r.ts_ms <= dep.ts_ms - window][-1:]
        around = [r for r in readings if dep.ts_ms - window < r.ts_ms <= dep.ts_ms + window]
        later = [r for r in readings if r.ts_ms > dep.ts_ms + window][:1]
        shown = [*before, *around, *later]
        return {
            "event_id": dep.event_id,
            "epc": dep.epc,
            "sku": dep.sku,
            "node_id": dep.node_id,
            "event_seq": seq,
            "arrived": iso(arrived) if arrived is not None else None,
            "departed": iso(dep.ts_ms),
            "departed_ms": dep.ts_ms,
            "why": why,
            "weight_steps": [step_json(s) for s in steps if dep.ts_ms - window <= s.ts_ms <= dep.ts_ms + span],
            "readings": [{"ts": iso(r.ts_ms), "weight_dg": r.weight_dg} for r in shown],
            "weight_before_dg": shown[0].weight_dg if shown else None,
            "weight_after_dg": shown[-1].weight_dg if shown else None,
        }

    # --------------------------------------------------------------------------------------------------- picks

    def _picks(self, tp: TagPlan, picks: list[Pick], weights: dict[int, tuple[int | None, int]]) -> None:
        """What the tags say about each open pick of a lane that has held tags."""
        tagged_lanes = {r[0] for r in self.q("SELECT DISTINCT lane_id FROM tag_presence")}
        mine = [p for p in picks if p.lane_id in tagged_lanes and p.sku in self.skus]
        if not mine:
            return
        taken = self._taken([p.id for p in mine])
        window = self.cfg.tag_window_ms
        for p in mine:
            left = taken[p.id][0] + self.given[p.id][0]
            tagged = left > 0 or bool(
                self.q(
                    f"SELECT 1 FROM tag_presence AS t WHERE t.lane_id = ? AND {tag_sku_sql('t')} = ?"
                    " AND t.first_seen_ms <= ? AND (t.present = 1 OR t.left_ms >= ?) LIMIT 1",
                    (p.lane_id, p.sku, p.ts_ms, p.ts_ms - window),
                )
            )
            weight, confidence = weights.get(p.id, (None, 100))
            step = Step(p.id, p.ts_ms, "pick", -p.remaining, weight, confidence)
            found = pick_tags(step, self.skus[p.sku], tagged, left, self.cfg)
            if found is not None:
                tp.picks[p.id] = found

    # ------------------------------------------------------------------------------------------------ misplaced

    def _misplaced(self, tp: TagPlan) -> None:
        cfg, window = self.cfg, self.cfg.tag_window_ms
        for lane_id, epc, sku, first, last, rssi, node_id, lane_sku in self.q(
            f"SELECT p.lane_id, p.epc, {tag_sku_sql('p')}, p.first_seen_ms, p.last_read_ms, p.rssi, p.node_id, l.sku"
            " FROM tag_presence AS p JOIN lanes AS l ON l.lane_id = p.lane_id WHERE p.present = 1"
            " AND p.unconfirmed_ms IS NULL AND l.sku IS NOT NULL AND p.first_seen_ms <= ? ORDER BY p.lane_id, p.epc",
            (self.now - cfg.ms("misplaced_grace_s"),),
        ):
            tag = Present(lane_id, epc, sku, first, last, rssi)
            if not misplaced(tag, lane_sku, self.now, cfg):
                continue
            held = held_elsewhere(tag, lane_sku, self._elsewhere(lane_id, epc))
            if held is not None:  # another node holds it too, on its SKU's lane or read stronger: a cross-read here
                tp.cross_reads[(lane_id, epc)] = held.lane_id
                tp.stats["tags_cross_read_present"] += 1
                continue
            puts = [
                s
                for s in self._steps(lane_id, first - window, first + window)
                if s.weight_delta_dg and s.weight_delta_dg > 0
            ]
            rec = self.skus.get(sku)
            tp.misplaced.setdefault((lane_id, lane_sku), []).append(
                {
                    "epc": epc,
                    "sku": sku,
                    "sku_name": rec.name if rec is not None else None,
                    "node_id": node_id,
                    "arrived": iso(first),
                    "arrived_ms": first,
                    "last_read": iso(last) if last is not None else None,
                    "rssi": rssi,
                    "weight_at_arrival": [step_json(s) for s in puts],
                    "weight_confirmed": bool(puts),
                }
            )
            tp.stats["tags_misplaced"] += 1

    def _elsewhere(self, lane_id: str, epc: str) -> list[tuple[Present, str | None]]:
        """The EPC's stays on other lanes now (confirmed or not: a restart is no evidence), with each lane's SKU."""
        return [
            (Present(r[0], epc, r[1], r[2], r[3], r[4], bool(r[5])), r[6])
            for r in self.q(
                f"SELECT p.lane_id, {tag_sku_sql('p')}, p.first_seen_ms, p.last_read_ms, p.rssi,"
                " p.unconfirmed_ms IS NOT NULL, l.sku FROM tag_presence AS p LEFT JOIN lanes AS l ON l.lane_id ="
                " p.lane_id WHERE p.epc = ? AND p.present = 1 AND p.lane_id != ? ORDER BY p.lane_id",
                (epc, lane_id),
            )
        ]
