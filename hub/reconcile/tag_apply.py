"""Phase 2 of a run, the tags' part: write ``tag_plan.TagPlan`` in the run's one transaction (``apply.apply_plan``).

* every departure judged gets its ``recon_tags`` row (verdict, the pick it left with, the alert citing it) and the
  mark moves (``recon_tag_state``);
* **tamper**: one unresolved alert per lane and SKU (``lane:<lane>/<sku>``, as shrinkage); its evidence lists each
  tag (EPC, departure, the lane's weight steps and readings around it) and ``unexplained_units`` (one unit per tag:
  a substituted item is a unit gone; resolving as ``theft`` writes them off);
* **misplaced**: the tags of another SKU on a lane go into the lane's ``misplaced`` alert (the same one the weight
  rule opens for a put of the wrong weight, so a chip bag on the cola lane is one alert with both its weight and its
  EPC); a listed tag that left is marked so (or, once another node holds it on its SKU's lane or reads it
  stronger, as a cross-read), and an alert whose tags all left (with no weight finding) resolves itself;
* **picks**: what the tags said about each settled pick of a tagged lane (``recon_pick_rfid``); a departure named
  on a pick already in a shrinkage alert refreshes that alert's evidence (``touched``);
* **upkeep**: tags not read again after their node restarted are recorded gone (``Tx.expire_unconfirmed_tags``);
  verdicts on tag events the ledger pruned are dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Protocol

from hub.ledger.causes import Cause
from hub.ledger.postings import Tx
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.tag_plan import Judged, TagPlan, iso
from hub.reconcile.tag_rules import PICKED_LATE, TAMPER, PickTags

TAMPER_KIND, MISPLACED_KIND = "tamper", "misplaced"
TAMPER_RULE = (
    "a tag of the lane's SKU left the lane while the lane's weight did not change, or the weight came back and the"
    " tag did not (a swap)"
)
MISPLACED_RULE = "a tag of another SKU stayed on the lane"


class AlertBook(Protocol):
    """The run's alert writes (``apply._Writer``): each recorded in the run's report."""

    async def open_alert(self, kind: str, cause_key: str, evidence: dict[str, Any]) -> tuple[int, bool]: ...
    async def update_alert(self, kind: str, cause_key: str, alert_id: int, evidence: dict[str, Any]) -> None: ...
    async def resolve_alert(self, kind: str, cause_key: str, alert_id: int, resolution: str) -> None: ...


async def _rows(tx: Tx, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
    return list(await tx.conn.execute_fetchall(sql, params))


async def _unresolved(tx: Tx, kind: str, cause: str) -> tuple[int, dict[str, Any]] | None:
    rows = await _rows(
        tx, "SELECT id, evidence FROM alerts WHERE kind = ? AND cause_key = ? AND status != 'resolved'", (kind, cause)
    )
    return (int(rows[0][0]), json.loads(rows[0][1])) if rows else None


async def _lane_fields(tx: Tx, lane_id: str, sku: str) -> dict[str, Any]:
    rows = await _rows(
        tx,
        "SELECT l.node_id, s.name FROM lanes AS l LEFT JOIN skus AS s ON s.sku = ? WHERE l.lane_id = ?",
        (sku, lane_id),
    )
    node, name = rows[0] if rows else (None, None)
    return {"lane_id": lane_id, "node_id": node, "sku": sku, "sku_name": name, "location": f"lane:{lane_id}"}


async def write_verdicts(
    tx: Tx, tp: TagPlan, cfg: ReconcileConfig, alerts: AlertBook, now_ms: int
) -> dict[int, tuple[str, str]]:
    """Tamper alerts, the verdict rows and the mark; returns the shrinkage alerts whose picks a late tag named
    (alert id -> (lane, SKU)), whose evidence the run rewrites."""
    alert_of: dict[int, int] = {}  # departure event id -> tamper alert
    groups: dict[tuple[str, str], list[Judged]] = defaultdict(list)
    for j in tp.judged:
        if j.verdict.verdict == TAMPER and j.dep.sku is not None:
            groups[(j.dep.lane_id, j.dep.sku)].append(j)
    for (lane_id, sku), judged in sorted(groups.items()):
        alert_id = await _tamper(tx, lane_id, sku, judged, cfg, alerts)
        alert_of.update((j.dep.event_id, alert_id) for j in judged)
    await tx.conn.executemany(
        "INSERT INTO recon_tags (event_id, lane_id, epc, sku, ts_ms, verdict, pick_id, lag_ms, alert_id, settled_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (j.dep.event_id, j.dep.lane_id, j.dep.epc, j.dep.sku, j.dep.ts_ms, j.verdict.verdict, j.verdict.pick_id,
             j.verdict.lag_ms, alert_of.get(j.dep.event_id), now_ms)
            for j in tp.judged
        ],
    )  # fmt: skip
    await tx.conn.execute(
        "INSERT INTO recon_tag_state (id, settled_to_id) VALUES (1, ?) ON CONFLICT (id) DO UPDATE"
        " SET settled_to_id = max(settled_to_id, excluded.settled_to_id)",
        (tp.settled_to_id,),
    )
    late = sorted({j.verdict.pick_id for j in tp.judged if j.verdict.verdict == PICKED_LATE and j.verdict.pick_id})
    touched: dict[int, tuple[str, str]] = {}
    for alert_id, lane_id, sku in await _rows(
        tx,
        "SELECT r.alert_id, r.lane_id, r.sku FROM recon_picks AS r JOIN alerts AS a ON a.id = r.alert_id"
        " WHERE a.status != 'resolved' AND r.movement_id IN (SELECT value FROM json_each(?))",
        (json.dumps(late),),
    ):
        touched[int(alert_id)] = (str(lane_id), str(sku))
    return touched


async def _tamper(tx: Tx, lane_id: str, sku: str, judged: list[Judged], cfg: ReconcileConfig, alerts: AlertBook) -> int:
    cause = str(Cause.lane_sku(lane_id, sku))
    existing = await _unresolved(tx, TAMPER_KIND, cause)
    old: dict[str, Any] = existing[1] if existing else {}
    known = {t.get("event_id") for t in old.get("tags", [])}
    new = [j.evidence for j in judged if j.evidence is not None and j.dep.event_id not in known]
    tags = [*old.get("tags", []), *new]
    total = int(old.get("tags_total", 0)) + len(new)
    evidence = {
        **old,
        **await _lane_fields(tx, lane_id, sku),
        "tags": tags[-cfg.evidence_items_max :],
        "tags_total": total,
        "tags_omitted": max(0, total - cfg.evidence_items_max),
        "unexplained_units": total,
        "first_departure": tags[0]["departed"] if tags else None,
        "last_departure": tags[-1]["departed"] if tags else None,
        "window_s": cfg.tag_window_s,
        "rule": TAMPER_RULE,
    }
    if existing is None:
        alert_id, _ = await alerts.open_alert(TAMPER_KIND, cause, evidence)
        return alert_id
    await alerts.update_alert(TAMPER_KIND, cause, existing[0], evidence)
    return existing[0]


async def write_misplaced(tx: Tx, tp: TagPlan, cfg: ReconcileConfig, alerts: AlertBook) -> None:
    """The tags of another SKU per lane into the lane's misplaced alert; tags that left are marked (the newest
    ``evidence_items_max`` of them kept), and an alert left with no tag present and no weight finding resolves
    itself."""
    listed: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for alert_id, key, text in await _rows(
        tx, "SELECT id, cause_key, evidence FROM alerts WHERE kind = 'misplaced' AND status != 'resolved'"
    ):
        about = Cause.parse_or_none(str(key))
        evidence = json.loads(text)
        if about is not None and about.lane_id is not None and about.sku is not None and "tags" in evidence:
            listed[(about.lane_id, about.sku)] = (int(alert_id), evidence)
    for lane_id, sku in sorted(set(listed) | set(tp.misplaced)):
        current = {t["epc"]: t for t in tp.misplaced.get((lane_id, sku), [])}
        cause = str(Cause.lane_sku(lane_id, sku))
        found = listed.get((lane_id, sku)) or await _unresolved(tx, MISPLACED_KIND, cause)
        old: dict[str, Any] = found[1] if found else {}
        tags: list[dict[str, Any]] = []
        for tag in old.get("tags", []):
            if tag["epc"] in current:
                tags.append(current.pop(tag["epc"]))
            elif "left" not in tag:
                held = tp.cross_reads.get((lane_id, tag["epc"]))
                left = f"a cross-read: the tag is on lane {held}" if held else await _left(tx, lane_id, tag["epc"])
                tags.append({**tag, "left": left})
            else:
                tags.append(tag)
        tags.extend(current.values())
        present = [t for t in tags if "left" not in t]
        gone = [t for t in tags if "left" in t]
        if len(gone) > cfg.evidence_items_max:
            dropped = {id(t) for t in gone[: len(gone) - cfg.evidence_items_max]}
            tags = [t for t in tags if id(t) not in dropped]
        evidence = {
            **old,
            **await _lane_fields(tx, lane_id, sku),
            "tags": tags,
            "tags_present": len(present),
            "rule": old.get("rule", MISPLACED_RULE),
        }
        if found is None:
            if present:
                await alerts.open_alert(MISPLACED_KIND, cause, evidence)
            continue
        await alerts.update_alert(MISPLACED_KIND, cause, found[0], evidence)
        if not present and not old.get("events"):
            epcs = ", ".join(t["epc"] for t in tags[:5]) + (f" and {len(tags) - 5} more" if len(tags) > 5 else "")
            await alerts.resolve_alert(MISPLACED_KIND, cause, found[0], f"the misplaced item left the lane ({epcs})")


async def _left(tx: Tx, lane_id: str, epc: str) -> str:
    """When a listed tag left the lane, as the trail says (or why it is not listed any more)."""
    rows = await _rows(tx, "SELECT present, left_ms FROM tag_presence WHERE lane_id = ? AND epc = ?", (lane_id, epc))
    if rows and not rows[0][0] and rows[0][1] is not None:
        return iso(int(rows[0][1]))
    return "not listed any more (unconfirmed since its node restarted, or its SKU changed)"


async def write_pick_tags(tx: Tx, settled: list[int], picks: dict[int, PickTags]) -> None:
    """``settled``: the picks this run settled; the tags' view of those of tagged lanes (``recon_pick_rfid``)."""
    await tx.conn.executemany(
        "INSERT INTO recon_pick_rfid (pick_id, counted, confidence, tags_left, units_by_tags) VALUES (?, ?, ?, ?, ?)",
        [
            (pick_id, found.counted, found.confidence, found.tags_left, found.units_by_tags)
            for pick_id in settled
            if (found := picks.get(pick_id)) is not None
        ],
    )


async def pick_evidence(tx: Tx, pick_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per pick of a tagged lane, what its shrinkage evidence says of the tags: the note (``no tag left: lower
    confidence``, a count the tags settled, ...) and the tags named on it (within the window, or late)."""
    out: dict[int, dict[str, Any]] = {}
    ids = json.dumps(pick_ids)
    for pick_id, counted, confidence, left, units in await _rows(
        tx,
        "SELECT pick_id, counted, confidence, tags_left, units_by_tags FROM recon_pick_rfid"
        " WHERE pick_id IN (SELECT value FROM json_each(?))",
        (ids,),
    ):
        note = PickTags(counted, confidence, left, units).note
        out[int(pick_id)] = {"note": note, "tags_left": left, "units_by_tags": units, "tags": []}
    for pick_id, epc, verdict, ts in await _rows(
        tx,
        "SELECT pick_id, epc, verdict, ts_ms FROM recon_tags WHERE pick_id IN (SELECT value FROM json_each(?))"
        " ORDER BY ts_ms, event_id",
        (ids,),
    ):
        entry = out.setdefault(int(pick_id), {"note": "", "tags_left": 0, "units_by_tags": None, "tags": []})
        entry["tags"].append({"epc": epc, "left": iso(int(ts)), "late": verdict == PICKED_LATE})
    return out


async def upkeep(tx: Tx, tp: TagPlan) -> int:
    """Expire tags not read again after a restart; drop verdicts on pruned tag events. Returns tags expired."""
    expired = await tx.expire_unconfirmed_tags(tp.expire_before_ms)
    # tag event ids are never reused (AUTOINCREMENT): every id below the oldest event left was pruned (all of them
    # when none is left); a range of the primary key
    oldest = (await _rows(tx, "SELECT min(id) FROM tag_events"))[0][0]
    await tx.conn.execute(
        "DELETE FROM recon_tags WHERE event_id < ? AND alert_id IS NULL",  # verdicts an alert cites stay with it
        (int(oldest) if oldest is not None else 1 << 62,),
    )
    return expired
