"""Nodes and lanes: registering a node, registering a node's lane and assigning it a SKU, a node taking over the
lanes of the one it replaces, and re-basing a lane's sensor ledger on a staff count (``rebase_lane``).

**Staff corrections of sensor movements** (the rule, ``hub/ledger/README.md``, *Observed stock*). The hub compares a
node's lane counters with its *counter reference*: the lane's sensor movements a node booked (``node_id`` set: its
events and the sensor gaps booked from its counters; ``reader.SENSOR_TALLIES``). A staff posting at a sensor
location (a reversal of a sensor movement; ``node_id`` NULL) is a correction beside that reference: the lane's
observed stock is the reference plus the corrections, and no comparison with the node's counters undoes them. When
staff count the lane through its node (``set_count``) the node's counter becomes the count, so the corrections are
absorbed then: ``rebase_lane`` posts their negation, which leaves the lane's observed stock equal to its node's
counter again.

**A lane's sensor units are its SKU's** (``settle.settle_lane``): assigning a lane another SKU (or its first, or none)
moves the units booked at its sensor location under any other SKU, or none, to its SKU in the same transaction, so
its observed stock is what its node counts; a count settles the lane too, before absorbing its corrections."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.ledger.causes import Cause
from hub.ledger.models import (
    LANE_ID_RE,
    AlertKind,
    InvalidArgument,
    LaneInUse,
    Reason,
    lane_location,
    sensor_location,
)
from hub.ledger.postings.alerts import resolve_if_open
from hub.ledger.postings.catalogue import require_sku
from hub.ledger.postings.checks import check_actor
from hub.ledger.postings.core import TxCore
from hub.ledger.postings.legs import Leg, balance, post
from hub.ledger.postings.settle import settle_lane

AUTO_LANE_ID_RE = re.compile(r"node\d+-lane\d+")
REBASE_KIND = "rebase"  # rebase:<the count's reference>: the corrections a staff count of the lane absorbed
# The staff corrections at one sensor location, whatever their SKU: reversal legs (read through the partial index of
# reversals) and the earlier re-bases (a range of the source reference index). The other postings at a sensor
# location are the lane_assigned moves, whose legs sum to nothing there.
_CORRECTIONS = (
    "SELECT coalesce(sum(qty), 0) FROM (SELECT qty FROM movements WHERE reverses_id IS NOT NULL AND location = ?1"
    " AND node_id IS NULL UNION ALL SELECT qty FROM movements WHERE source_ref >= 'rebase:'"
    " AND source_ref < 'rebase;' AND location = ?1)"
)


@dataclass(frozen=True, slots=True)
class LaneAssigned:
    """What ``assign_lane`` did: the lane (its id, its SKU now) and the sensor units it moved to that SKU, per SKU
    they were under, ``(old SKU or None, units)`` (``settle_lane``; empty: none moved)."""

    lane_id: str
    sku: str | None
    moved: tuple[tuple[str | None, int], ...] = ()


async def register_node(tx: TxCore, node_id: int, *, actor: str, label: str = "", key_id: str | None = None) -> None:
    actor = check_actor(actor)
    if not isinstance(node_id, int) or not 1 <= node_id <= 0xFFFFFFFF:
        raise InvalidArgument(f"node id must be 1..4294967295, not {node_id!r}")
    await tx.conn.execute(
        "INSERT INTO nodes (node_id, label, key_id) VALUES (?, ?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET label = excluded.label, key_id = excluded.key_id",
        (node_id, label, key_id),
    )
    await tx.audit(actor, "register_node", {"node_id": node_id, "label": label, "key_id": key_id})


async def register_node_if_missing(tx: TxCore, node_id: int) -> None:
    if not isinstance(node_id, int) or not 1 <= node_id <= 0xFFFFFFFF:
        raise InvalidArgument(f"node id must be 1..4294967295, not {node_id!r}")
    await tx.conn.execute("INSERT OR IGNORE INTO nodes (node_id) VALUES (?)", (node_id,))


async def assign_lane(
    tx: TxCore, node_id: int, lane_index: int, sku: str | None, *, actor: str, lane_id: str | None = None
) -> LaneAssigned:
    """Register lane ``lane_index`` of ``node_id`` (if new) and assign it a SKU (None: unassign).

    A lane keeps its id for life (sensor history is stored under it). Re-assigning a lane that still holds
    book stock of its old SKU is refused: transfer or count that stock out first. The units its sensors counted
    under its old SKU, or none, become the new SKU's in the same transaction (``settle_lane``), so its observed stock
    is what its node counts at once. Returns the lane's id and the units so moved (``LaneAssigned``)."""
    actor = check_actor(actor)
    if not isinstance(lane_index, int) or not 0 <= lane_index <= 31:
        raise InvalidArgument(f"lane index must be 0..31, not {lane_index!r}")
    if sku is not None:
        await require_sku(tx, sku)
    rows = await tx.rows("SELECT lane_id, sku FROM lanes WHERE node_id = ? AND lane_index = ?", (node_id, lane_index))
    old_sku: str | None = None
    if rows:
        existing_id: str = rows[0][0]
        old_sku = rows[0][1]
        if lane_id is not None and lane_id != existing_id:
            raise InvalidArgument(f"node {node_id} lane {lane_index} is already registered as {existing_id!r}")
        lane_id = existing_id
        if old_sku == sku:  # nothing to assign; units booked under another SKU (an older ledger) become its SKU's
            moved = await settle_lane(tx, existing_id, sku, actor=actor, cause="assign_lane")
            return LaneAssigned(existing_id, sku, tuple(moved))
        if old_sku is not None:
            held = await balance(tx, old_sku, lane_location(existing_id))
            if held != 0:
                raise LaneInUse(
                    f"lane {existing_id!r} still holds {held} of {old_sku!r} in the book: "
                    "transfer or count it out first"
                )
        await tx.conn.execute("UPDATE lanes SET sku = ? WHERE lane_id = ?", (sku, existing_id))
    else:
        auto_id = f"node{node_id}-lane{lane_index}"
        lane_id = lane_id if lane_id is not None else auto_id
        if not LANE_ID_RE.fullmatch(lane_id):
            raise InvalidArgument(f"lane id {lane_id!r} must match {LANE_ID_RE.pattern}")
        if lane_id != auto_id and AUTO_LANE_ID_RE.fullmatch(lane_id):
            # Reserved: the sensor path names unregistered lanes this way.
            raise InvalidArgument(f"lane id {lane_id!r} is reserved for node/lane {lane_id[4:]}")
        if await tx.rows("SELECT 1 FROM lanes WHERE lane_id = ?", (lane_id,)):
            raise InvalidArgument(f"lane id {lane_id!r} is already used by another lane")
        await register_node_if_missing(tx, node_id)
        await tx.conn.execute(
            "INSERT INTO lanes (lane_id, node_id, lane_index, sku) VALUES (?, ?, ?, ?)",
            (lane_id, node_id, lane_index, sku),
        )
    await tx.audit(
        actor,
        "assign_lane",
        {"lane_id": lane_id, "node_id": node_id, "lane_index": lane_index, "old_sku": old_sku, "sku": sku},
    )
    moved = []
    if rows:  # the lane's sensor units are its new SKU's (a new lane has none)
        moved = await settle_lane(tx, lane_id, sku, actor=actor, cause="assign_lane")
    if sku is not None:
        await resolve_if_open(
            tx, AlertKind.UNASSIGNED_LANE, str(Cause.lane(lane_id)), actor=actor, resolution=f"lane assigned to {sku}"
        )
    return LaneAssigned(lane_id, sku, tuple(moved))


async def replace_node(tx: TxCore, old: int, new: int, *, actor: str) -> list[str]:
    """Node ``new`` takes over the lanes of node ``old`` (a board replaced, or wiped and provisioned under a new
    id): the lanes keep their ids, SKUs, stock and history; events ``old`` never delivered are not merged into
    ``new``'s (its counters start afresh, and the first report of each lane books the difference as a sensor gap).
    ``new`` must have no lanes yet. Returns the lane ids handed over."""
    actor = check_actor(actor)
    for name, node_id in (("old", old), ("new", new)):
        if not isinstance(node_id, int) or isinstance(node_id, bool) or not 1 <= node_id <= 0xFFFFFFFF:
            raise InvalidArgument(f"{name} node id must be 1..4294967295, not {node_id!r}")
    if old == new:
        raise InvalidArgument(f"node {old} cannot replace itself: the new board needs an id of its own")
    lanes = [
        str(r[0]) for r in await tx.rows("SELECT lane_id FROM lanes WHERE node_id = ? ORDER BY lane_index", (old,))
    ]
    if not lanes:
        raise InvalidArgument(f"node {old} has no lanes to hand over")
    if await tx.rows("SELECT 1 FROM lanes WHERE node_id = ? LIMIT 1", (new,)):
        raise InvalidArgument(f"node {new} already has lanes: a replacement takes over another node's lanes whole")
    await register_node_if_missing(tx, new)
    await tx.conn.execute("UPDATE lanes SET node_id = ? WHERE node_id = ?", (new, old))
    await tx.audit(actor, "replace_node", {"old": old, "new": new, "lanes": lanes})
    return lanes


async def rebase_lane(tx: TxCore, lane_id: str, *, actor: str, ref: str) -> int:
    """Staff counted lane ``lane_id`` through its node (``set_count``), which set the node's counter to the count:
    absorb the staff corrections of the lane's sensor movements (module docstring), posting their negation under the
    lane's SKU, ``rebase:<ref>`` (reason ``sensor_count``, no node), with one audit entry ``rebase_lane``; first the
    lane is settled (``settle_lane``: units under another SKU or none, left by a ledger written before that rule,
    become its SKU's). Returns the units absorbed (0: there were none, no re-base written)."""
    actor = check_actor(actor)
    rows = await tx.rows("SELECT sku FROM lanes WHERE lane_id = ?", (lane_id,))
    if not rows:
        raise InvalidArgument(f"unknown lane {lane_id!r}")
    sku: str | None = rows[0][0]
    await settle_lane(tx, lane_id, sku, actor=actor, cause="count")
    location = sensor_location(lane_id)
    absorbed = int((await tx.rows(_CORRECTIONS, (location,)))[0][0])
    if not absorbed:
        return 0
    source_ref = f"{REBASE_KIND}:{ref}"
    note = "staff counted the lane through its node: earlier corrections of its sensor movements absorbed"
    await post(tx, source_ref, [Leg(sku, location, -absorbed, Reason.SENSOR_COUNT)], ts_ms=None, actor=actor, note=note)
    details = {"lane_id": lane_id, "absorbed": absorbed, "by_sku": [[sku, absorbed]], "refs": [source_ref]}
    await tx.audit(actor, "rebase_lane", details)
    return absorbed
