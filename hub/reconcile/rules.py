"""Pure rules: does a weight change fit whole units of a SKU, is an event damage or a misplaced item, how much to
reorder. No I/O: the reconciler feeds them ledger rows and turns their findings into alert evidence."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hub.ledger.models import Reason, Sku
from hub.reconcile.config import ReconcileConfig


def tolerance_dg(sku: Sku, units: int, cfg: ReconcileConfig) -> int:
    """How far the weight of ``units`` items of ``sku`` may be from ``units * unit_weight`` and still fit."""
    n = max(units, 1)
    sigma = sku.unit_weight_dg * sku.spread_permille / 1000
    tol = cfg.abs_tol_dg + cfg.rel_tol_permille / 1000 * n * sku.unit_weight_dg + cfg.spread_k * sigma * math.sqrt(n)
    return math.ceil(tol)


@dataclass(frozen=True, slots=True)
class Fit:
    units: int  # nearest whole number of units (>= 0)
    residual_dg: int  # weight - units * unit_weight
    tolerance_dg: int

    @property
    def whole(self) -> bool:
        return self.units >= 1 and abs(self.residual_dg) <= self.tolerance_dg


def fit(weight_dg: int, sku: Sku, cfg: ReconcileConfig) -> Fit:
    """The nearest whole number of units of ``sku`` for a weight change of magnitude ``weight_dg``."""
    w = abs(weight_dg)
    n = (2 * w + sku.unit_weight_dg) // (2 * sku.unit_weight_dg)  # round half up, in integers
    return Fit(n, w - n * sku.unit_weight_dg, tolerance_dg(sku, n, cfg))


@dataclass(frozen=True, slots=True)
class Finding:
    """One event that is evidence for an alert (damage or misplaced item)."""

    rule: str
    detail: dict[str, Any]
    suggested_units: int = 0  # damage: units a write-off would take off the book


def check_damage(
    reason: Reason, qty: int, weight_dg: int | None, confidence: int, sku: Sku, cfg: ReconcileConfig
) -> Finding | None:
    """Damage rules for a sensor pick or anomaly (weight loss):

    * ``weight_loss_without_count``: an anomaly (or any event) with count 0 that lost more than ``min_change_dg``.
    * ``not_whole_units``: a pick whose weight is not within tolerance of a whole number of units.
    * ``count_disagrees``: a confident pick (>= min_confidence) whose weight is whole units, but not the count.
    """
    if weight_dg is None:
        return None
    f = fit(weight_dg, sku, cfg)
    base = {
        "weight_delta_dg": weight_dg,
        "counted": -qty,
        "whole_units_by_weight": f.units,
        "residual_dg": f.residual_dg,
        "tolerance_dg": f.tolerance_dg,
        "unit_weight_dg": sku.unit_weight_dg,
    }
    if qty == 0:
        if weight_dg < -cfg.min_change_dg:
            return Finding("weight_loss_without_count", base, max(1, f.units))
        return None
    if reason != Reason.SENSOR_PICK or qty > 0:
        return None
    if weight_dg >= 0:
        return Finding("not_whole_units", base, 1)  # counted a removal, yet the weight went up
    if not f.whole:
        return Finding("not_whole_units", base, 1)  # part of an item went (an opened pack, a leak): one unit
    if f.units != -qty and confidence >= cfg.min_confidence:
        return Finding("count_disagrees", base, max(0, f.units - (-qty)))
    return None


def likely_skus(
    weight_dg: int, skus: list[Sku], exclude: str, cfg: ReconcileConfig, limit: int = 3
) -> list[dict[str, Any]]:
    """SKUs whose whole units fit a weight, most likely first (fewest units, then smallest relative residual)."""
    found = []
    for s in skus:
        if s.sku == exclude:
            continue
        f = fit(weight_dg, s, cfg)
        if f.whole:
            found.append((f.units, abs(f.residual_dg) / max(f.tolerance_dg, 1), s, f))
    found.sort(key=lambda t: (t[0], t[1], t[2].sku))
    return [
        {
            "sku": s.sku,
            "name": s.name,
            "units": f.units,
            "unit_weight_dg": s.unit_weight_dg,
            "residual_dg": f.residual_dg,
        }
        for _, _, s, f in found[:limit]
    ]


def check_misplaced(
    reason: Reason, qty: int, weight_dg: int | None, sku: Sku, skus: list[Sku], cfg: ReconcileConfig
) -> Finding | None:
    """A put (or an anomaly that gained weight) whose weight is not whole units of the lane's SKU: something else
    was put on the lane. The finding names the SKUs whose weight it does fit."""
    if weight_dg is None or weight_dg <= 0:
        return None
    if reason == Reason.SENSOR_ANOMALY or qty == 0:
        if weight_dg <= cfg.min_change_dg:
            return None
    elif reason != Reason.SENSOR_PUT:
        return None
    f = fit(weight_dg, sku, cfg)
    if f.whole:
        return None
    return Finding(
        "wrong_weight_for_lane",
        {
            "weight_delta_dg": weight_dg,
            "counted": qty,
            "lane_unit_weight_dg": sku.unit_weight_dg,
            "nearest_units_of_lane_sku": f.units,
            "residual_dg": f.residual_dg,
            "tolerance_dg": f.tolerance_dg,
            "likely_skus": likely_skus(weight_dg, skus, sku.sku, cfg),
        },
    )


def put_fits_lane(qty: int, weight_dg: int | None, sku: Sku, cfg: ReconcileConfig) -> bool:
    """A put that can be a put-back: a positive count whose weight fits whole units of the lane's SKU."""
    if qty <= 0:
        return False
    return weight_dg is None or (weight_dg > 0 and fit(weight_dg, sku, cfg).whole)


# The stock the reorder rule looks at, per SKU with a reorder point or quantity: the SKU's fields, book stock at every
# book location, observed shelf stock, its lanes, and the units in unresolved shrinkage alerts. Read by the
# reconciler (its reorder alerts) and by the status page's reorder report, so both apply the same rule.
REORDER_STOCK_SQL = (
    "SELECT s.sku, s.name, s.unit_weight_dg, s.spread_permille, s.reorder_point, s.reorder_qty, s.capacity,"
    " coalesce((SELECT sum(b.qty) FROM balances AS b WHERE b.sku = s.sku"
    "   AND b.location NOT GLOB 'sensor:*'), 0),"
    " coalesce((SELECT sum(b.qty) FROM balances AS b WHERE b.sku = s.sku AND b.location GLOB 'sensor:*'), 0),"
    " (SELECT count(*) FROM lanes AS l WHERE l.sku = s.sku),"
    " coalesce((SELECT sum(r.unexplained) FROM alerts AS a JOIN recon_picks AS r ON r.alert_id = a.id"
    "   WHERE a.kind = 'shrinkage' AND a.status != 'resolved' AND r.sku = s.sku), 0)"
    " FROM skus AS s WHERE s.reorder_point > 0 OR s.reorder_qty > 0 ORDER BY s.sku"
)


def reorder_available(book: int, pending_shrinkage: int) -> int:
    """Stock available for the reorder decision: book stock minus units likely gone but not yet written off."""
    return book - pending_shrinkage


def reorder_due(sku: Sku, available: int) -> bool:
    """The reorder rule: at or below the reorder point."""
    return available <= sku.reorder_point


def reorder_quantity(sku: Sku, stock: int, lanes: int) -> int:
    """How much to order when ``stock`` is at or below the reorder point.

    * ``reorder_qty`` set: whole multiples of it, enough to get above the reorder point (an (s, nQ) policy;
      reorder_qty is usually the case size).
    * else ``capacity`` set: up to the shelf capacity of the SKU's lanes (at least one lane's worth).
    * else: up to twice the reorder point.
    """
    shortfall = sku.reorder_point - stock + 1
    if sku.reorder_qty > 0:
        return sku.reorder_qty * max(1, math.ceil(shortfall / sku.reorder_qty))
    if sku.capacity:
        return max(sku.capacity * max(lanes, 1) - stock, shortfall, 1)
    return max(2 * sku.reorder_point - stock, shortfall, 1)
