"""Phase 2 of a run: write a ``Plan`` in one transaction of the ledger's writer (``LedgerService.transact``).

Everything of a run is committed together or not at all: settled picks and their matches, late explanations,
alerts opened / extended / resolved, reorder suggestions, the tags' verdicts and alerts (``tag_apply``), and the
marks in ``recon_state`` and ``recon_tag_state``. The run checks that
``recon_state.run_seq`` is still the one it planned from (another reconciler, e.g. ``smartshelf reconcile`` while
the hub runs, would otherwise write the same picks twice) and raises ``ReconcileConflict`` if not.

Alerts go through the ledger's alert API (``open_alert`` / ``update_alert_evidence`` / ``resolve_alert``), so
there is never more than one unresolved alert per (kind, cause key): evidence found later is added to the alert in
flight. Alert states are read again here, inside the transaction, so an alert a manager resolved while the run was
planning is never extended or re-resolved.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hub.ledger.causes import Cause
from hub.ledger.models import Sku
from hub.ledger.postings import Tx
from hub.reconcile import tag_apply
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.matching import PUT_BACK
from hub.reconcile.plan import (
    DAMAGE,
    MISPLACED,
    REORDER,
    SHRINKAGE,
    AlertUpdate,
    Plan,
    ReconcileConflict,
    SettledPick,
    iso,
)
from hub.reconcile.rules import REORDER_STOCK_SQL, reorder_available, reorder_due, reorder_quantity


@dataclass(slots=True)
class RunReport:
    """What one run did (also written to the audit trail when it changed anything)."""

    now_ms: int
    settled_before_ms: int
    scanned_to_id: int
    stats: dict[str, int] = field(default_factory=dict)
    opened: list[tuple[str, str, int]] = field(default_factory=list)  # (kind, cause key, alert id)
    updated: list[tuple[str, str, int]] = field(default_factory=list)
    resolved: list[tuple[str, str, int]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(
            self.opened
            or self.updated
            or self.resolved
            or self.stats.get("picks_settled")
            or self.stats.get("units_explained_late")
            or self.stats.get("tags_judged")
            or self.stats.get("tags_expired")
        )

    def summary(self) -> str:
        s = self.stats
        parts = [
            f"reconciled to {iso(self.settled_before_ms)}",
            f"{s.get('picks_settled', 0)} picks settled ({s.get('units_settled', 0)} units:"
            f" {s.get('units_unexplained', 0)} unexplained, {s.get('units_uncertain', 0)} uncertain)",
            f"{s.get('units_explained_late', 0)} units explained late",
            f"{s.get('picks_open', 0)} picks still in their window",
            f"{s.get('events_checked', 0)} events checked",
            f"{s.get('tags_judged', 0)} tag departures judged ({s.get('tags_tamper', 0)} tamper,"
            f" {s.get('tags_cross_read', 0)} cross-reads), {s.get('tags_expired', 0)} tags gone after a restart",
            f"alerts: {len(self.opened)} opened, {len(self.updated)} updated, {len(self.resolved)} resolved",
        ]
        return "; ".join(parts) + f" ({self.seconds:.2f} s)"


async def _rows(tx: Tx, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
    return list(await tx.conn.execute_fetchall(sql, params))


async def _unresolved(tx: Tx, kind: str, cause_key: str) -> tuple[int, dict[str, Any]] | None:
    rows = await _rows(
        tx,
        "SELECT id, evidence FROM alerts WHERE kind = ? AND cause_key = ? AND status != 'resolved'",
        (kind, cause_key),
    )
    return (rows[0][0], json.loads(rows[0][1])) if rows else None


async def apply_plan(tx: Tx, plan: Plan, cfg: ReconcileConfig) -> RunReport:
    state = await _rows(tx, "SELECT run_seq FROM recon_state WHERE id = 1")
    if (state[0][0] if state else 0) != plan.run_seq:
        raise ReconcileConflict("another reconciler ran since this run read the ledger; nothing was written")
    report = RunReport(plan.now_ms, plan.settled_before_ms, plan.scanned_to_id, stats=dict(plan.stats))
    w = _Writer(tx, plan, cfg, report)
    await w.settle()
    tags = plan.tags
    if tags is not None:
        w.touched.update(await tag_apply.write_verdicts(tx, tags, cfg, w, plan.now_ms))
        await tag_apply.write_pick_tags(tx, [s.pick.id for s in plan.settled], tags.picks)
    await w.explain_late()
    await w.shrinkage_evidence()
    for upd in plan.findings:
        await w.upsert(upd)
    if tags is not None:
        await tag_apply.write_misplaced(tx, tags, cfg, w)
    for upd in plan.sensor_open:
        await w.upsert(upd)
    await w.clear_sensor_alerts()
    await w.reorder()
    if tags is not None:
        report.stats["tags_expired"] = await tag_apply.upkeep(tx, tags)
    await tx.conn.execute(
        "INSERT INTO recon_state (id, run_seq, settled_before_ms, scanned_to_id, last_run_ms) VALUES (1, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET run_seq = excluded.run_seq, settled_before_ms = excluded.settled_before_ms,"
        " scanned_to_id = excluded.scanned_to_id, last_run_ms = excluded.last_run_ms",
        (plan.run_seq + 1, plan.settled_before_ms, plan.scanned_to_id, plan.now_ms),
    )
    if report.changed:
        await tx.audit(
            cfg.actor,
            "reconcile",
            {
                "now_ms": plan.now_ms,
                "settled_before_ms": plan.settled_before_ms,
                "scanned_to_id": plan.scanned_to_id,
                **plan.stats,
                "opened": [a[2] for a in report.opened],
                "resolved": [a[2] for a in report.resolved],
            },
        )
    return report


class _Writer:
    def __init__(self, tx: Tx, plan: Plan, cfg: ReconcileConfig, report: RunReport) -> None:
        self.tx = tx
        self.plan = plan
        self.cfg = cfg
        self.report = report
        self.actor = cfg.actor
        self.touched: dict[int, tuple[str, str]] = {}  # shrinkage alert id -> (lane, sku)

    async def open_alert(self, kind: str, cause_key: str, evidence: dict[str, Any]) -> tuple[int, bool]:
        opened = await self.tx.open_alert(kind, cause_key, evidence, actor=self.actor, ts=self.plan.now_ms)
        if opened.created:
            self.report.opened.append((kind, cause_key, opened.alert_id))
        return opened.alert_id, opened.created

    async def update_alert(self, kind: str, cause_key: str, alert_id: int, evidence: dict[str, Any]) -> None:
        changed = await self.tx.update_alert_evidence(alert_id, evidence, actor=self.actor)
        if changed and not any(a[2] == alert_id for a in self.report.opened + self.report.updated):
            self.report.updated.append((kind, cause_key, alert_id))

    async def resolve_alert(self, kind: str, cause_key: str, alert_id: int, resolution: str) -> None:
        await self.tx.resolve_alert(alert_id, actor=self.actor, resolution=resolution)
        self.report.resolved.append((kind, cause_key, alert_id))

    # ------------------------------------------------------------------------------------------- shrinkage

    async def settle(self) -> None:
        groups: dict[tuple[str, str], list[SettledPick]] = defaultdict(list)
        for s in self.plan.settled:
            if s.status == "unexplained":
                groups[(s.pick.lane_id, s.pick.sku)].append(s)
        alert_of: dict[tuple[str, str], int] = {}
        for lane_id, sku in sorted(groups):
            alert_id, _ = await self.open_alert(
                SHRINKAGE, str(Cause.lane_sku(lane_id, sku)), {"lane_id": lane_id, "sku": sku}
            )
            alert_of[(lane_id, sku)] = alert_id
            self.touched[alert_id] = (lane_id, sku)
        now = self.plan.now_ms
        await self.tx.conn.executemany(
            "INSERT INTO recon_picks (movement_id, sku, lane_id, ts_ms, units, put_back, sold, unexplained, status,"
            " alert_id, settled_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    s.pick.id,
                    s.pick.sku,
                    s.pick.lane_id,
                    s.pick.ts_ms,
                    s.units,
                    s.put_back,
                    s.sold,
                    s.pick.remaining,
                    s.status,
                    alert_of.get((s.pick.lane_id, s.pick.sku)) if s.status == "unexplained" else None,
                    now,
                )
                for s in self.plan.settled
            ],
        )
        await self.tx.conn.executemany(
            "INSERT INTO recon_matches (pick_id, by_id, kind, units, lag_ms, late, matched_ms)"
            " VALUES (?, ?, ?, ?, ?, 0, ?)",
            [(m.pick_id, m.by_id, m.kind, m.units, m.lag_ms, now) for s in self.plan.settled for m in s.pick.matches],
        )

    async def explain_late(self) -> None:
        now = self.plan.now_ms
        for late in self.plan.late:
            state = await _rows(
                self.tx,
                "SELECT a.status, r.unexplained, r.lane_id, r.sku FROM recon_picks AS r JOIN alerts AS a"
                " ON a.id = r.alert_id WHERE r.movement_id = ? AND a.id = ?",
                (late.pick_id, late.alert_id),
            )
            total = sum(m.units for m in late.matches)
            if not state or state[0][0] == "resolved" or state[0][1] < total:
                self.report.stats["units_explained_late"] -= total  # resolved meanwhile: its outcome stands
                continue
            put_back = sum(m.units for m in late.matches if m.kind == PUT_BACK)
            await self.tx.conn.executemany(
                "INSERT INTO recon_matches (pick_id, by_id, kind, units, lag_ms, late, matched_ms)"
                " VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (pick_id, by_id) DO UPDATE"
                " SET units = units + excluded.units, late = 1, matched_ms = excluded.matched_ms",
                [(m.pick_id, m.by_id, m.kind, m.units, m.lag_ms, now) for m in late.matches],
            )
            await self.tx.conn.execute(
                "UPDATE recon_picks SET put_back = put_back + ?, sold = sold + ?, unexplained = unexplained - ?,"
                " status = CASE WHEN unexplained - ? = 0 THEN 'explained' ELSE status END WHERE movement_id = ?",
                (put_back, total - put_back, total, total, late.pick_id),
            )
            self.touched[late.alert_id] = (state[0][2], state[0][3])

    async def shrinkage_evidence(self) -> None:
        """(Re)write the evidence of every shrinkage alert this run touched, from its settled picks; an alert
        whose units were all explained late is resolved with no ledger entry."""
        for alert_id, (lane_id, sku) in sorted(self.touched.items()):
            evidence = await self._shrinkage_evidence(alert_id, lane_id, sku)
            cause = str(Cause.lane_sku(lane_id, sku))
            if evidence["unexplained_units"] == 0:
                late = sorted({m["source_ref"] for p in evidence["picks"] for m in p["explained_by"] if m["late"]})
                shown = ", ".join(late[:5]) + (f" and {len(late) - 5} more" if len(late) > 5 else "")
                await self.update_alert(SHRINKAGE, cause, alert_id, evidence)
                await self.resolve_alert(SHRINKAGE, cause, alert_id, f"explained late by {shown}")
            else:
                await self.update_alert(SHRINKAGE, cause, alert_id, evidence)

    async def _shrinkage_evidence(self, alert_id: int, lane_id: str, sku: str) -> dict[str, Any]:
        rows = await _rows(
            self.tx,
            "SELECT r.movement_id, r.ts_ms, r.units, r.put_back, r.sold, r.unexplained, m.node_id, m.event_seq,"
            " m.weight_delta_dg, m.confidence, m.source_ref FROM recon_picks AS r JOIN movements AS m"
            " ON m.id = r.movement_id WHERE r.alert_id = ? ORDER BY r.ts_ms, r.movement_id",
            (alert_id,),
        )
        explained: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for pick_id, by_id, kind, units, lag_ms, late, ref in await _rows(
            self.tx,
            "SELECT c.pick_id, c.by_id, c.kind, c.units, c.lag_ms, c.late, m.source_ref FROM recon_matches AS c"
            " JOIN recon_picks AS r ON r.movement_id = c.pick_id JOIN movements AS m ON m.id = c.by_id"
            " WHERE r.alert_id = ? ORDER BY c.id",
            (alert_id,),
        ):
            explained[pick_id].append(
                {
                    "movement_id": by_id,
                    "source_ref": ref,
                    "kind": kind,
                    "units": units,
                    "lag_s": lag_ms / 1000,
                    "late": bool(late),
                }
            )
        picks = [
            {
                "movement_id": r[0],
                "source_ref": r[10],
                "ts": iso(r[1]),
                "ts_ms": r[1],
                "units": r[2],
                "put_back": r[3],
                "sold": r[4],
                "unexplained": r[5],
                "node_id": r[6],
                "event_seq": r[7],
                "weight_delta_dg": r[8],
                "confidence": r[9],
                "explained_by": explained.get(r[0], []),
            }
            for r in rows
        ]
        tags = await tag_apply.pick_evidence(self.tx, [p["movement_id"] for p in picks])
        for p in picks:
            if p["movement_id"] in tags:
                p["rfid"] = tags[p["movement_id"]]
        node = await _rows(self.tx, "SELECT node_id FROM lanes WHERE lane_id = ?", (lane_id,))
        limit = self.cfg.evidence_items_max
        return {
            "lane_id": lane_id,
            "node_id": node[0][0] if node else None,
            "sku": sku,
            "location": f"lane:{lane_id}",
            "unexplained_units": sum(p["unexplained"] for p in picks),
            "picks_total": len(picks),
            "first_pick": picks[0]["ts"] if picks else None,
            "last_pick": picks[-1]["ts"] if picks else None,
            "picks": picks[-limit:],
            "picks_omitted": max(0, len(picks) - limit),
            "window_s": self.cfg.window_s,
            "lead_s": self.cfg.lead_s,
            "grace_s": self.cfg.grace_s,
            "rule": "removed from the lane, not put back, and no sale or order pick of the SKU within the window",
        }

    # ------------------------------------------------------------------------ damage, misplaced, sensor

    async def upsert(self, upd: AlertUpdate) -> None:
        """Open the alert of (kind, cause) with this evidence, or add the new events to the one in flight."""
        limit = self.cfg.evidence_items_max
        existing = await _unresolved(self.tx, upd.kind, upd.cause_key)
        old: dict[str, Any] = existing[1] if existing else {}
        last = int(old.get("last_movement_id", 0))
        new = [e for e in upd.events if e["movement_id"] > last]
        events = [*old.get("events", []), *new]
        evidence: dict[str, Any] = {**old, **upd.fields}
        if upd.events or "events" in old:
            evidence["events"] = events[-limit:]
            evidence["events_total"] = int(old.get("events_total", 0)) + len(new)
            evidence["events_omitted"] = evidence["events_total"] - len(evidence["events"])
            evidence["last_movement_id"] = max([last, *(e["movement_id"] for e in new)])
        if upd.kind == DAMAGE:
            evidence["suggested_units"] = int(old.get("suggested_units", 0)) + sum(int(e["units"]) for e in new)
        if upd.kind == MISPLACED:
            counts: dict[str, int] = dict(old.get("likely_sku_counts", {}))
            for e in new:
                if e["likely_skus"]:
                    first = e["likely_skus"][0]["sku"]
                    counts[first] = counts.get(first, 0) + 1
            evidence["likely_sku_counts"] = counts
            evidence["likely_sku"] = min(counts, key=lambda k: (-counts[k], k)) if counts else None
        if existing is None:
            await self.open_alert(upd.kind, upd.cause_key, evidence)
        else:
            await self.update_alert(upd.kind, upd.cause_key, existing[0], evidence)

    async def clear_sensor_alerts(self) -> None:
        if not self.plan.sensor_clear:
            return
        for alert_id, cause in await _rows(
            self.tx, "SELECT id, cause_key FROM alerts WHERE kind = 'sensor' AND status != 'resolved' ORDER BY id"
        ):
            resolution = self.plan.sensor_clear.get(cause)
            if resolution is not None:
                await self.resolve_alert("sensor", cause, alert_id, resolution)

    # -------------------------------------------------------------------------------------------- reorder

    async def reorder(self) -> None:
        """Per SKU with a reorder point or quantity: available = book stock (every book location) minus the units
        in unresolved shrinkage alerts (likely gone, not yet written off). At or below the reorder point: one
        suggestion per SKU, kept up to date; above it: the suggestion is resolved."""
        rows = await _rows(self.tx, REORDER_STOCK_SQL)
        open_now = {
            r[1]: r[0]
            for r in await _rows(
                self.tx, "SELECT id, cause_key FROM alerts WHERE kind = 'reorder' AND status != 'resolved'"
            )
        }
        for sku_id, name, unit, spread, point, qty, capacity, book, shelf, lanes, pending in rows:
            sku = Sku(sku_id, name, unit, spread, point, qty, capacity)
            cause = str(Cause.of_sku(sku_id))
            available = reorder_available(book, pending)
            if reorder_due(sku, available):
                suggested = reorder_quantity(sku, available, lanes)
                evidence = {
                    "sku": sku_id,
                    "sku_name": name,
                    "book_stock": book,
                    "pending_shrinkage": pending,
                    "available": available,
                    "shelf_observed": shelf,
                    "reorder_point": point,
                    "reorder_qty": qty,
                    "capacity": capacity,
                    "lanes": lanes,
                    "suggested_qty": suggested,
                }
                if cause in open_now:
                    await self.update_alert(REORDER, cause, open_now[cause], evidence)
                else:
                    await self.open_alert(REORDER, cause, evidence)
            elif cause in open_now:
                await self.resolve_alert(REORDER, cause, open_now[cause], f"stock recovered: {available} available")
            open_now.pop(cause, None)
        for cause, alert_id in sorted(open_now.items()):  # the SKU's reorder point and quantity were removed
            await self.resolve_alert(REORDER, cause, alert_id, "no reorder point any more")
