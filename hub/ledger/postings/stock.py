"""Stock postings: the legs of a posting, sales, order picks, receipts, returns, restocks, transfers, write-offs,
physical counts and reversals, and the book balances and locations they are checked against.

* **Locations.** Book locations are ``backroom``, ``lane:<lane_id>`` of a registered lane, or another plain name
  (``[a-z][a-z0-9_-]*``, e.g. ``warehouse``). ``sensor:*`` belongs to the sensor ledger and is never a target.
* **Sales and order picks** take stock off the shelf: by default from the SKU's lane holding the most book stock
  (ties: the lowest lane id), or ``backroom`` if the SKU is on no lane. Pass ``location`` to choose.
* **Receipts** go to ``backroom`` unless told otherwise. **Restockable returns** come back into ``backroom``;
  a non-restockable return is booked in and written off as damage in the same posting (net zero, but visible).
* **Restock** moves book stock from ``backroom`` to the lane that holds the SKU (refused for a lane assigned to
  another SKU). **Transfer** moves it between any two book locations.
* **Counts** store the book and the counted quantity; the difference is posted as a ``count_adjustment`` at the
  time the count is recorded. Default location: ``backroom``.
* **Reversal** posts the negated legs of a posting under ``reversal:<id of its first leg>`` with ``reverses_id``;
  a posting is reversed at most once, and a reversal is not itself reversible (post the original again). A sensor
  movement's reversal is its lane's SKU's: when the lane has changed SKU since, the reversal leg is moved to it in the
  same transaction (``settle.settle_lane``); a ``lane_assigned`` move is not reversible (it follows the assignment).
* Book stock may go negative (a sale of stock the ledger did not know about): the ledger records what happened,
  reconciliation and counts make it visible.

``ts`` is the business time (an aware datetime or ms since the epoch); None: the time the posting is recorded, and
a re-sent reference is then not compared on time.
"""

from __future__ import annotations

from typing import Any

from hub.ledger.models import (
    BACKROOM,
    LANE_PREFIX,
    MAX_QTY,
    Applied,
    ApplyResult,
    CountResult,
    InvalidArgument,
    NotReversible,
    Reason,
    RefConflict,
    Timestamp,
    UnknownLane,
    UnknownLocation,
    UnknownMovement,
    business_ms,
    lane_location,
)
from hub.ledger.postings.catalogue import require_sku
from hub.ledger.postings.checks import (
    REF_MAX,
    RESOLUTION_KIND,
    check_actor,
    check_qty,
    check_ref,
    foreign,
    used_by,
)
from hub.ledger.postings.core import TxCore
from hub.ledger.postings.legs import Leg, balance, book_location, legs_of, post, shelf_location
from hub.ledger.postings.settle import settle_lanes_of
from hub.ledger.reader import MOVEMENT_COLUMNS, movement_from_row


async def _simple(
    tx: TxCore,
    kind: str,
    ref: str | None,
    legs: list[Leg],
    *,
    ts_ms: int | None,
    actor: str,
    note: str | None = None,
    compare_locations: bool = True,
    details: dict[str, Any] | None = None,
) -> ApplyResult:
    actor = check_actor(actor)
    source_ref = f"{kind}:{check_ref(ref)}"
    for g in legs:
        assert g.sku is not None
        await require_sku(tx, g.sku)
    result = await post(tx, source_ref, legs, ts_ms=ts_ms, actor=actor, note=note, compare_locations=compare_locations)
    if isinstance(result, Applied):
        await tx.audit(
            actor,
            kind,
            {
                "source_ref": source_ref,
                "movement_ids": list(result.movement_ids),
                "legs": [[g.sku, g.location, g.qty, str(g.reason)] for g in legs],
                "ts_ms": tx.now_ms if ts_ms is None else ts_ms,
                **(details or {}),
            },
        )
    return result


# ------------------------------------------------------------------------------------------ business postings


async def _out_of(tx: TxCore, sku: str, location: str | None) -> tuple[str, bool]:
    """Where a sale or pick takes stock from. A plain location name must be one stock was ever booked at: a
    typo (``backroon``) would otherwise open a phantom location with negative stock."""
    await require_sku(tx, sku)
    if location is None:
        return await shelf_location(tx, sku), False
    loc = await book_location(tx, location)
    plain = loc != BACKROOM and not loc.startswith(LANE_PREFIX)
    if plain and not await tx.rows("SELECT 1 FROM balances WHERE location = ? LIMIT 1", (loc,)):
        rows = await tx.rows(
            "SELECT DISTINCT location FROM balances WHERE location NOT GLOB 'sensor:*' AND location NOT GLOB"
            " 'lane:*' ORDER BY location LIMIT 6"
        )
        known = ", ".join(sorted({BACKROOM, *(str(r[0]) for r in rows)}))
        raise UnknownLocation(
            f"no stock was ever booked at {loc!r}: nothing can be sold or picked from there"
            f" (known: {known}, or lane:<lane id>)"
        )
    return loc, True


async def sale(
    tx: TxCore,
    sku: str,
    qty: int,
    *,
    actor: str,
    ref: str | None = None,
    ts: Timestamp = None,
    location: str | None = None,
) -> ApplyResult:
    ts_ms = business_ms(ts)
    check_qty(qty)
    loc, explicit = await _out_of(tx, sku, location)
    return await _simple(
        tx, "sale", ref, [Leg(sku, loc, -qty, Reason.SALE)], ts_ms=ts_ms, actor=actor, compare_locations=explicit
    )


async def order_pick(
    tx: TxCore,
    sku: str,
    qty: int,
    order: str,
    *,
    actor: str,
    ref: str | None = None,
    ts: Timestamp = None,
    location: str | None = None,
) -> ApplyResult:
    ts_ms = business_ms(ts)
    check_qty(qty)
    if not isinstance(order, str) or not order.strip() or len(order) > REF_MAX:
        raise InvalidArgument(f"order must be a non-empty id of at most {REF_MAX} characters")
    loc, explicit = await _out_of(tx, sku, location)
    return await _simple(
        tx,
        "pick",
        ref,
        [Leg(sku, loc, -qty, Reason.ORDER_PICK)],
        ts_ms=ts_ms,
        actor=actor,
        note=f"order {order.strip()}",
        compare_locations=explicit,
        details={"order": order.strip()},
    )


async def receipt(
    tx: TxCore,
    sku: str,
    qty: int,
    *,
    actor: str,
    ref: str | None = None,
    ts: Timestamp = None,
    location: str = BACKROOM,
) -> ApplyResult:
    ts_ms = business_ms(ts)
    check_qty(qty)
    loc = await book_location(tx, location)
    return await _simple(tx, "receipt", ref, [Leg(sku, loc, qty, Reason.RECEIPT)], ts_ms=ts_ms, actor=actor)


async def return_(
    tx: TxCore,
    sku: str,
    qty: int,
    *,
    actor: str,
    ref: str | None = None,
    ts: Timestamp = None,
    restockable: bool = True,
    location: str = BACKROOM,
) -> ApplyResult:
    ts_ms = business_ms(ts)
    check_qty(qty)
    loc = await book_location(tx, location)
    legs = [Leg(sku, loc, qty, Reason.RETURN)]
    if not restockable:
        legs.append(Leg(sku, loc, -qty, Reason.DAMAGE))
    return await _simple(
        tx,
        "return",
        ref,
        legs,
        ts_ms=ts_ms,
        actor=actor,
        note=None if restockable else "not restockable: written off as damage",
        details={"restockable": restockable},
    )


async def restock(
    tx: TxCore,
    sku: str,
    lane_id: str,
    qty: int,
    *,
    actor: str,
    ref: str | None = None,
    ts: Timestamp = None,
    from_location: str = BACKROOM,
) -> ApplyResult:
    ts_ms = business_ms(ts)
    check_qty(qty)
    await require_sku(tx, sku)
    rows = await tx.rows("SELECT sku FROM lanes WHERE lane_id = ?", (lane_id,))
    if not rows:
        raise UnknownLane(f"unknown lane {lane_id!r}")
    if rows[0][0] != sku:
        held = f"holds {rows[0][0]!r}" if rows[0][0] else "is unassigned"
        raise InvalidArgument(f"lane {lane_id!r} {held}, not {sku!r}: assign the lane first")
    src = await book_location(tx, from_location)
    legs = [Leg(sku, src, -qty, Reason.RESTOCK), Leg(sku, lane_location(lane_id), qty, Reason.RESTOCK)]
    return await _simple(tx, "restock", ref, legs, ts_ms=ts_ms, actor=actor)


async def transfer(
    tx: TxCore,
    sku: str,
    qty: int,
    from_location: str,
    to_location: str,
    *,
    actor: str,
    ref: str | None = None,
    ts: Timestamp = None,
) -> ApplyResult:
    ts_ms = business_ms(ts)
    check_qty(qty)
    src = await book_location(tx, from_location)
    dst = await book_location(tx, to_location)
    if src == dst:
        raise InvalidArgument(f"transfer from {src!r} to itself")
    legs = [Leg(sku, src, -qty, Reason.TRANSFER), Leg(sku, dst, qty, Reason.TRANSFER)]
    return await _simple(tx, "transfer", ref, legs, ts_ms=ts_ms, actor=actor)


async def write_off(
    tx: TxCore,
    sku: str,
    qty: int,
    reason: Reason,
    *,
    actor: str,
    ref: str | None = None,
    ts: Timestamp = None,
    location: str = BACKROOM,
    note: str | None = None,
) -> ApplyResult:
    """Damage or shrinkage write-off (book stock leaves the store)."""
    ts_ms = business_ms(ts)
    if reason not in (Reason.DAMAGE, Reason.SHRINKAGE):
        raise InvalidArgument(f"a write-off is damage or shrinkage, not {reason!r}")
    check_qty(qty)
    loc = await book_location(tx, location)
    return await _simple(
        tx, "writeoff", ref, [Leg(sku, loc, -qty, Reason(reason))], ts_ms=ts_ms, actor=actor, note=note
    )


async def count(
    tx: TxCore,
    sku: str,
    counted: int,
    *,
    actor: str,
    ref: str | None = None,
    ts: Timestamp = None,
    location: str = BACKROOM,
    kind: str = "count",
) -> CountResult:
    """Record a physical count under ``<kind>:<ref>``. ``kind`` is ``count`` for every client (API, CSV,
    Python API); an alert resolution's count uses ``RESOLUTION_KIND``, a reference space no client reaches."""
    ts_ms = business_ms(ts)
    actor = check_actor(actor)
    if kind not in ("count", RESOLUTION_KIND):
        raise InvalidArgument(f"a count is recorded as count or {RESOLUTION_KIND}, not {kind!r}")
    if not isinstance(counted, int) or isinstance(counted, bool) or not 0 <= counted <= MAX_QTY:
        raise InvalidArgument(f"counted quantity must be an integer 0..{MAX_QTY:,}, not {counted!r}")
    await require_sku(tx, sku)
    loc = await book_location(tx, location)
    source_ref = f"{kind}:{check_ref(ref)}"
    rows = await tx.rows(
        "SELECT id, sku, location, counted_qty, ts_ms, book_qty, adjustment_movement_id, actor"
        " FROM physical_counts WHERE source_ref = ?",
        (source_ref,),
    )
    if rows:
        cid, esku, eloc, ecounted, ets, ebook, eadj, eactor = rows[0]
        if foreign(eactor, actor):
            raise RefConflict(used_by(source_ref, eactor))
        if (esku, eloc, ecounted) != (sku, loc, counted) or (ts_ms is not None and ets != ts_ms):
            raise RefConflict(f"{source_ref} was already recorded: {ecounted} of {esku} at {eloc}")
        return CountResult(cid, source_ref, ebook, ecounted, eadj, duplicate=True)
    book = await balance(tx, sku, loc)
    adjustment_id = None
    if counted != book:
        posted = await post(
            tx,
            source_ref,
            [Leg(sku, loc, counted - book, Reason.COUNT_ADJUSTMENT)],
            ts_ms=ts_ms,
            actor=actor,
            note=f"counted {counted}, book {book}",
        )
        adjustment_id = posted.movement_ids[0]
    cid = await tx.insert(
        "INSERT INTO physical_counts (ts_ms, recorded_ms, sku, location, book_qty, counted_qty, actor,"
        " source_ref, adjustment_movement_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            tx.now_ms if ts_ms is None else ts_ms,
            tx.now_ms,
            sku,
            loc,
            book,
            counted,
            actor,
            source_ref,
            adjustment_id,
        ),
    )
    await tx.audit(
        actor,
        "count",
        {
            "source_ref": source_ref,
            "sku": sku,
            "location": loc,
            "book": book,
            "counted": counted,
            "adjustment_movement_id": adjustment_id,
        },
    )
    return CountResult(cid, source_ref, book, counted, adjustment_id)


async def reverse(tx: TxCore, movement_id: int, *, actor: str, why: str) -> Applied:
    """Post the reversal of the posting that ``movement_id`` belongs to (all its legs)."""
    actor = check_actor(actor)
    if not isinstance(why, str) or not why.strip():
        raise InvalidArgument("a reversal needs a reason (why)")
    rows = await tx.rows(f"SELECT {MOVEMENT_COLUMNS} FROM movements WHERE id = ?", (movement_id,))
    if not rows:
        raise UnknownMovement(f"no movement {movement_id}")
    target = movement_from_row(rows[0])
    if target.reverses_id is not None:
        raise NotReversible(
            f"movement {movement_id} is itself a reversal (of {target.reverses_id}): post the original again"
        )
    legs = await legs_of(tx, target.source_ref)
    if target.reason == Reason.LANE_ASSIGNED:
        raise NotReversible(
            f"movement {movement_id} moved a lane's sensor units to the SKU the lane was assigned: it follows the"
            " assignment and is not reversed (assign the lane instead)"
        )
    ph = ",".join("?" * len(legs))
    done = await tx.rows(f"SELECT id, reverses_id FROM movements WHERE reverses_id IN ({ph})", [m.id for m in legs])
    if done:
        raise NotReversible(f"movement {done[0][1]} was already reversed by movement {done[0][0]}")
    source_ref = f"reversal:{legs[0].id}"
    result = await post(
        tx,
        source_ref,
        [Leg(m.sku, m.location, -m.qty, m.reason) for m in legs],
        ts_ms=tx.now_ms,
        actor=actor,
        note=why.strip(),
        reverses=[m.id for m in legs],
    )
    assert isinstance(result, Applied)
    await tx.audit(
        actor,
        "reverse",
        {
            "source_ref": source_ref,
            "reverses": target.source_ref,
            "reversed_ids": [m.id for m in legs],
            "movement_ids": list(result.movement_ids),
            "why": why.strip(),
        },
    )
    # a sensor movement booked under a SKU the lane no longer holds: the correction is the lane's SKU's now
    await settle_lanes_of(tx, [m.location for m in legs], actor=actor, cause="reverse")
    return result
