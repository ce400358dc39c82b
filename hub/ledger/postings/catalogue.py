"""The catalogue: SKU master data (unit weight and spread, reorder point and quantity, lane capacity, GTIN).

A SKU's GTIN is what an SGTIN tag's EPC names it by (``hub.ledger.epc``): it is checked by its check digit and
stored as 14 digits, and no two SKUs share one (a tag would name both).
"""

from __future__ import annotations

import dataclasses

from hub.ledger.causes import LANE_PROBLEMS
from hub.ledger.epc import InvalidCode, normalise_gtin
from hub.ledger.models import SKU_RE, InvalidArgument, Sku, UnknownSku
from hub.ledger.postings.checks import check_actor
from hub.ledger.postings.core import TxCore


async def require_sku(tx: TxCore, sku: str) -> None:
    if not await tx.rows("SELECT 1 FROM skus WHERE sku = ?", (sku,)):
        raise UnknownSku(f"unknown SKU {sku!r}")


async def add_sku(tx: TxCore, sku: Sku, *, actor: str) -> bool:
    """Create or update a SKU's master data. Returns True when something changed."""
    actor = check_actor(actor)
    if not SKU_RE.fullmatch(sku.sku) or sku.sku != sku.sku.strip():
        raise InvalidArgument(f"SKU {sku.sku!r} must be 1..32 printable ASCII characters")
    if sku.sku in LANE_PROBLEMS:  # lane:<id>/<sku> and lane:<id>/<problem> would read alike (hub.ledger.causes)
        problems = ", ".join(sorted(LANE_PROBLEMS))
        raise InvalidArgument(f"SKU {sku.sku!r} is reserved: alerts name a lane's sensor problems so ({problems})")
    if not 1 <= sku.unit_weight_dg <= 1_000_000:
        raise InvalidArgument("unit weight must be 1..1,000,000 dg (0.1 g .. 100 kg)")
    if not 0 <= sku.spread_permille <= 1000:
        raise InvalidArgument("spread must be 0..1000 permille")
    if sku.reorder_point < 0 or sku.reorder_qty < 0 or (sku.capacity is not None and sku.capacity < 0):
        raise InvalidArgument("reorder point, reorder quantity and capacity cannot be negative")
    if sku.gtin is not None:
        try:
            sku = dataclasses.replace(sku, gtin=normalise_gtin(sku.gtin))
        except InvalidCode as exc:
            raise InvalidArgument(str(exc)) from None
        other = await tx.rows("SELECT sku FROM skus WHERE gtin = ? AND sku != ?", (sku.gtin, sku.sku))
        if other:
            raise InvalidArgument(f"GTIN {sku.gtin} belongs to SKU {other[0][0]!r} already")
    values = (
        sku.sku,
        sku.name,
        sku.unit_weight_dg,
        sku.spread_permille,
        sku.reorder_point,
        sku.reorder_qty,
        sku.capacity,
        sku.gtin,
    )
    old = await tx.rows(
        "SELECT sku, name, unit_weight_dg, spread_permille, reorder_point, reorder_qty, capacity, gtin FROM skus"
        " WHERE sku = ?",
        (sku.sku,),
    )
    if old and tuple(old[0]) == values:
        return False
    await tx.conn.execute(
        "INSERT INTO skus (sku, name, unit_weight_dg, spread_permille, reorder_point, reorder_qty, capacity, gtin)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sku) DO UPDATE SET name = excluded.name,"
        " unit_weight_dg = excluded.unit_weight_dg, spread_permille = excluded.spread_permille,"
        " reorder_point = excluded.reorder_point, reorder_qty = excluded.reorder_qty,"
        " capacity = excluded.capacity, gtin = excluded.gtin",
        values,
    )
    await tx.audit(
        actor,
        "update_sku" if old else "add_sku",
        {"sku": sku.sku, "old": list(old[0]) if old else None, "new": list(values)},
    )
    return True
