"""Applying a request's items in the caller's write transaction, all or nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.ledger.models import BACKROOM, CountResult, LedgerError, RefConflict, UnknownLocation, UnknownSku
from hub.ledger.postings import Tx
from hub.web.api.errors import FieldError, Rejected
from hub.web.api.fields import PostKind
from hub.web.api.validation import Item


async def _post_one(tx: Tx, kind: PostKind, item: Item, actor: str) -> dict[str, Any]:
    out: dict[str, Any] = {"index": item.index, "id": item.id}
    if kind == "counts":
        counted: CountResult = await tx.count(
            item.sku, item.qty, ts=item.ts_ms, actor=actor, ref=item.id, location=item.location or BACKROOM
        )
        adjustment = counted.adjustment_movement_id
        out.update(
            status="duplicate" if counted.duplicate else "created",
            movement_ids=[] if adjustment is None else [adjustment],
            count_id=counted.count_id,
            book=counted.book_qty,
            counted=counted.counted_qty,
            adjustment_movement_id=adjustment,
        )
        return out
    common: dict[str, Any] = {"ts": item.ts_ms, "actor": actor, "ref": item.id}
    if kind == "sales":
        result = await tx.sale(item.sku, item.qty, location=item.location, **common)
    elif kind == "picks":
        assert item.order is not None
        result = await tx.order_pick(item.sku, item.qty, item.order, location=item.location, **common)
    elif kind == "receipts":
        result = await tx.receipt(item.sku, item.qty, location=item.location or BACKROOM, **common)
    else:
        result = await tx.return_(
            item.sku, item.qty, restockable=item.restockable, location=item.location or BACKROOM, **common
        )
    out.update(status="duplicate" if result.duplicate else "created", movement_ids=list(result.movement_ids))
    return out


async def post_items(tx: Tx, kind: PostKind, items: Sequence[Item], actor: str) -> list[dict[str, Any]]:
    """Apply every item in the caller's transaction; raise ``Rejected`` (rolling it back) with every problem."""
    results: list[dict[str, Any]] = []
    errors: list[FieldError] = []
    conflicts: list[FieldError] = []
    for item in items:
        try:
            results.append(await _post_one(tx, kind, item, actor))
        except RefConflict as exc:
            conflicts.append(FieldError(f"{item.path}id", str(exc), item.index))
        except UnknownSku as exc:
            errors.append(FieldError(f"{item.path}sku", str(exc), item.index))
        except UnknownLocation as exc:
            errors.append(FieldError(f"{item.path}location", str(exc), item.index))
        except LedgerError as exc:
            errors.append(FieldError(item.path[:-1] if item.path else "body", str(exc), item.index))
    if errors:
        raise Rejected(422, sorted(errors + conflicts, key=lambda e: e.index or 0))
    if conflicts:
        raise Rejected(409, conflicts)
    return results
