"""A scenario's store in the ledger: the books it opens with, and what its ground truth says the ledger must show.

Shared by ``smartshelf demo`` (tools/demo.py) and the hardware-in-the-loop tests, so both open the same store and
judge the outcome by the same rule. Tagged SKUs open with their GTIN (what an SGTIN tag's EPC names); the expected
outcome also says which tags the truth puts on each lane and which left in a substitution (no weight change: only
the tags can tell), for a judge of tag-based alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.ledger.causes import Cause
from hub.ledger.models import Sku
from hub.ledger.service import LedgerService
from tools.emulation.scenarios import Scenario, TruthRow

STAFF = "demo-staff"  # who opens the store's books (the audit trail's actor)


def lane_id(node: int, lane: int) -> str:
    return f"node{node}-lane{lane}"


@dataclass
class Expected:
    counts: dict[str, tuple[str, int]] = field(default_factory=dict)  # lane_id -> (sku, units on the shelf)
    alerts: set[tuple[str, str]] = field(default_factory=set)  # (kind, cause_key)
    tags: dict[str, set[str]] = field(default_factory=dict)  # lane_id -> EPCs on the lane (tagged lanes, strays aside)
    substituted: set[tuple[str, str]] = field(default_factory=set)  # (lane_id, EPC) swapped for an untagged stand-in


def expected_outcome(truth: list[TruthRow], until_s: float) -> Expected:
    """What the ledger should show once everything that happened before ``until_s`` is in."""
    exp = Expected()
    for row in sorted(truth, key=lambda r: r.t):
        if row.t > until_s:
            continue
        lid = lane_id(row.node, row.lane)
        exp.counts[lid] = (row.sku, row.stock_after)
        on_lane = exp.tags.setdefault(lid, set())
        if row.action in ("pick", "theft", "substitution"):
            on_lane.difference_update(row.epcs)
        elif row.action in ("initial", "put_back", "restock", "misplaced"):
            on_lane.update(row.epcs)
        if row.action == "substitution":
            exp.substituted.update((lid, e) for e in row.epcs)
        cause = str(Cause.lane_sku(lid, row.sku))
        if row.action == "theft":
            exp.alerts.add(("shrinkage", cause))
        elif row.action == "damage":
            exp.alerts.add(("damage", cause))
        elif row.action == "misplaced":
            exp.alerts.add(("misplaced", cause))
        elif row.action == "substitution":  # a tag left a tagged lane and the weight did not change
            exp.alerts.add(("tamper", cause))
        if row.action != "initial" and row.stock_after <= row.reorder_point:
            exp.alerts.add(("reorder", str(Cause.of_sku(row.sku))))
    return exp


async def open_store(ledger: LedgerService, scenario: Scenario) -> None:
    """A scenario's catalogue, lane assignments and opening stock (received, then put on the shelves)."""
    seen: set[str] = set()
    for nid, plan in sorted(scenario.nodes.items()):
        for index, setup in enumerate(plan.lanes):
            sku = setup.sku
            if sku.sku not in seen:
                seen.add(sku.sku)
                await ledger.add_sku(
                    Sku(sku.sku, sku.sku.title(), round(sku.unit_g * 10), round(sku.spread * 1000),
                        setup.reorder_point, 2 * setup.initial, 2 * setup.initial, gtin=sku.gtin),
                    actor=STAFF,
                )  # fmt: skip
            lid = (await ledger.assign_lane(nid, index, sku.sku, actor=STAFF, lane_id=lane_id(nid, index))).lane_id
            await ledger.record_receipt(sku.sku, setup.initial, actor=STAFF, ref=f"opening:{lid}")
            await ledger.restock(sku.sku, lid, setup.initial, actor=STAFF, ref=f"opening-shelf:{lid}")
