"""A lane's sensor units are its SKU's (issue 13): ``settle_lane`` moves the units booked at a lane's sensor location
under any other SKU, or none, to the SKU the lane holds, in the caller's transaction.

Why: the lane's counter reference (what its node's counters are compared with, ``reader.SENSOR_TALLIES``) is per
lane, whatever the SKU of the movements: a node counts units, not products, and keeps counting across a change of
SKU (``set_lane`` only gives it the new unit weight). Observed stock is per SKU (``balances``; rows with no SKU are
in none). Left alone, units a node booked before its lane had a SKU (an emulated board, a node moved or
re-provisioned, counting before ``set-lane``), or under the lane's previous SKU, would count in the reference and in
no stock of the lane's SKU: no sensor gap (the counters agree with the reference) and no count (relative to the
counter) would bring them back.

The rule: whenever a lane's SKU changes (none -> a SKU, SKU A -> SKU B, A -> none), ``assign_lane`` settles it in the
same transaction; so do a reversal of a movement booked under a SKU the lane no longer holds, and a staff count of
the lane (``rebase_lane``: this also repairs a ledger written before the rule). Per old SKU one posting of two legs
at the sensor location, old -qty and new +qty, reason ``lane_assigned``, no node, at the transaction's time, under
``lane_assigned:<lane id>:<random>`` (``/2``, ``/3``, ... for more old SKUs), and one audit entry
``move_lane_units`` (to SKU, units, per old SKU, references, cause). The legs sum to nothing at the location, so
the reference does not change (they have no node) and the node's next counters agree with it, after a node reboot
and a hub restart too; all the lane's units being its SKU's, its observed stock is the reference plus the staff
corrections, exactly. The book side is not touched. A ``lane_assigned`` posting is not reversible.
"""

from __future__ import annotations

import uuid

from hub.ledger.lane_activity import UNDER_NO_SKU
from hub.ledger.models import SENSOR_PREFIX, Reason, sensor_location
from hub.ledger.postings.core import TxCore
from hub.ledger.postings.legs import Leg, post

LANE_ASSIGNED_KIND = "lane_assigned"  # lane_assigned:<lane id>:<random>: the lane's units moved to its SKU
# Units at a sensor location under a SKU other than ?2: the balances of the SKUs that ever moved there (each has its
# lane_activity row, written with its first movement there: a primary-key range, not a scan of the balances); and
# under no SKU (in no balance): the location's movements with no SKU, read through its spans (hub.ledger.lane_activity).
_UNDER_OTHER_SKUS = (
    "SELECT b.sku, b.qty FROM lane_activity AS a JOIN balances AS b ON b.sku = a.sku AND b.location = a.location"
    " WHERE a.location = ?1 AND a.sku IS NOT ?2 AND b.qty != 0 ORDER BY a.sku"
)


async def settle_lane(
    tx: TxCore, lane_id: str, sku: str | None, *, actor: str, cause: str
) -> list[tuple[str | None, int]]:
    """Move the units booked at lane ``lane_id``'s sensor location under any SKU but ``sku`` (the lane's SKU; None:
    unassigned), or under none, to ``sku`` (module docstring): per old SKU one posting ``lane_assigned`` (old -qty,
    ``sku`` +qty, at the transaction's time), and one audit entry ``move_lane_units`` naming ``cause`` (the action
    that settled it). Returns the units moved per old SKU, ``(old SKU or None, units)`` (empty, nothing written, when
    all were ``sku``'s already)."""
    location = sensor_location(lane_id)
    held: list[tuple[str | None, int]] = [(r[0], int(r[1])) for r in await tx.rows(_UNDER_OTHER_SKUS, (location, sku))]
    if sku is not None:
        without = int((await tx.rows(UNDER_NO_SKU, (location,)))[0][0])
        if without:
            held.insert(0, (None, without))
    if not held:
        return []
    base = f"{LANE_ASSIGNED_KIND}:{lane_id}:{uuid.uuid4().hex[:12]}"  # unique across a restore's incarnations too
    refs = []
    for i, (old, qty) in enumerate(held):
        source_ref = base + (f"/{i + 1}" if i else "")
        note = (
            f"lane {lane_id} holds {sku or 'no SKU'}: the {qty} units its sensors counted under "
            f"{old or 'no SKU'} are {sku or 'no SKU'}'s"
        )
        legs = [Leg(old, location, -qty, Reason.LANE_ASSIGNED), Leg(sku, location, qty, Reason.LANE_ASSIGNED)]
        await post(tx, source_ref, legs, ts_ms=None, actor=actor, note=note)
        refs.append(source_ref)
    moved = sum(qty for _old, qty in held)
    by_sku = [[old, qty] for old, qty in held]
    details = {"lane_id": lane_id, "sku": sku, "units": moved, "by_sku": by_sku, "refs": refs, "cause": cause}
    await tx.audit(actor, "move_lane_units", details)
    return held


async def settle_lanes_of(tx: TxCore, locations: list[str], *, actor: str, cause: str) -> None:
    """``settle_lane`` for each lane whose sensor location is in ``locations`` (e.g. a reversal's legs), with its SKU
    of now."""
    lane_ids = sorted({loc[len(SENSOR_PREFIX) :] for loc in locations if loc.startswith(SENSOR_PREFIX)})
    for lane_id in lane_ids:
        rows = await tx.rows("SELECT sku FROM lanes WHERE lane_id = ?", (lane_id,))
        if rows:
            await settle_lane(tx, lane_id, rows[0][0], actor=actor, cause=cause)
