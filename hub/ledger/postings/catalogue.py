"""The catalogue: SKU master data (unit weight and spread, reorder point and quantity, lane capacity)."""

from __future__ import annotations

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
    if not 1 <= sku.unit_weight_dg <= 1_000_000:
        raise InvalidArgument("unit weight must be 1..1,000,000 dg (0.1 g .. 100 kg)")
    if not 0 <= sku.spread_permille <= 1000:
        raise InvalidArgument("spread must be 0..1000 permille")
    if sku.reorder_point < 0 or sku.reorder_qty < 0 or (sku.capacity is not None and sku.capacity < 0):
        raise InvalidArgument("reorder point, reorder quantity and capacity cannot be negative")
    values = (
        sku.sku,
        sku.name,
        sku.unit_weight_dg,
        sku.spread_permille,
        sku.reorder_point,
        sku.reorder_qty,
        sku.capacity,
    )
    old = await tx.rows(
        "SELECT sku, name, unit_weight_dg, spread_permille, reorder_point, reorder_qty, capacity FROM skus"
        " WHERE sku = ?",
        (sku.sku,),
    )
    if old and tuple(old[0]) == values:
        return False
    await tx.conn.execute(
        "INSERT INTO skus (sku, name, unit_weight_dg, spread_permille, reorder_point, reorder_qty, capacity)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sku) DO UPDATE SET name = excluded.name,"
        " unit_weight_dg = excluded.unit_weight_dg, spread_permille = excluded.spread_permille,"
        " reorder_point = excluded.reorder_point, reorder_qty = excluded.reorder_qty,"
        " capacity = excluded.capacity",
        values,
    )
    await tx.audit(
        actor,
        "update_sku" if old else "add_sku",
        {"sku": sku.sku, "old": list(old[0]) if old else None, "new": list(values)},
    )
    return True
