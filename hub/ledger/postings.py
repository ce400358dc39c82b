"""Business postings inside one write transaction (used by ``LedgerService`` and the CSV imports).

Every method runs inside a transaction the writer opened; it validates first and raises a ``LedgerError``
(nothing written) or writes its rows and one audit entry. Rules a store manager relies on:

* **Source references.** Each posting has a unique source reference ``<kind>:<client id>``; posting the same
  reference again with the same content **by the same actor** is a no-op reported as ``Duplicate``; with different
  content it is refused (``RefConflict``): a mistake is corrected with a reversal and a new posting, never by
  re-sending. Each API client has its own ids: a reference used by an API client is refused to every other actor,
  and one used by anyone else is refused to an API client (``RefConflict`` naming that actor, never the other
  posting's content), so two tills each sending their own line ``1`` cannot silently lose a sale. Staff, the CLI
  and the hub share the store's references (a file re-imported by another person is still a duplicate).
  Alert resolutions post under references no client can produce: ``writeoff:alert<id>`` (clients cannot post
  write-offs) and ``resolution:alert<id>`` for a count.
  A posting with two sides (restock, transfer, non-restockable return) is one source reference with two legs.
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
  a posting is reversed at most once, and a reversal is not itself reversible (post the original again).
* Book stock may go negative (a sale of stock the ledger did not know about): the ledger records what happened,
  reconciliation and counts make it visible.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from hub.ledger.causes import Cause
from hub.ledger.models import (
    BACKROOM,
    LANE_ID_RE,
    LANE_PREFIX,
    MAX_QTY,
    PLAIN_LOCATION_RE,
    SENSOR_PREFIX,
    SKU_RE,
    Alert,
    AlertKind,
    AlertStateError,
    AlertStatus,
    Applied,
    ApplyResult,
    CountResult,
    Duplicate,
    InvalidArgument,
    LaneInUse,
    Movement,
    NotReversible,
    Reason,
    RefConflict,
    Sku,
    UnknownAlert,
    UnknownLane,
    UnknownLocation,
    UnknownMovement,
    UnknownSku,
    lane_location,
)
from hub.ledger.reader import ALERT_COLUMNS, MOVEMENT_COLUMNS, alert_from_row, movement_from_row

REF_MAX = 64
# The source reference kind of the physical count an alert resolution posts (``resolution:alert<id>``): no API,
# CSV or Python client call produces it, so a client's id can never pre-empt (or turn into a no-op) a resolution.
RESOLUTION_KIND = "resolution"
AUTO_LANE_ID_RE = re.compile(r"node\d+-lane\d+")


@dataclass(frozen=True, slots=True)
class Leg:
    sku: str | None
    location: str
    qty: int
    reason: Reason


@dataclass(frozen=True, slots=True)
class WriteOff:
    """The ledger entry implied by resolving an alert (e.g. shrinkage found on a lane)."""

    sku: str
    qty: int
    reason: Reason = Reason.SHRINKAGE
    location: str = BACKROOM


@dataclass(frozen=True, slots=True)
class AlertOpened:
    alert_id: int
    created: bool  # False: an unresolved alert for the same (kind, cause_key) already existed


def check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 64:
        raise InvalidArgument("actor must be a non-empty name of at most 64 characters")
    return actor.strip()


def _foreign(existing_actor: str, actor: str) -> bool:
    """Is a reference of ``existing_actor`` out of ``actor``'s reach? Each API client (``api:<name>``) has its own
    ids: two tills each sending their line ``1`` must not meet. Staff, the CLI and the hub itself share the store's
    references, so a file re-imported by another person is still a duplicate."""
    return existing_actor != actor and (existing_actor.startswith("api:") or actor.startswith("api:"))


def _used_by(source_ref: str, other_actor: str) -> str:
    """Another actor's reference: named, its content never shown (client ids are scoped per actor)."""
    return f"{source_ref} was already used by {other_actor}: use ids unique to this client"


def check_qty(qty: int, what: str = "quantity") -> int:
    if not isinstance(qty, int) or isinstance(qty, bool):
        raise InvalidArgument(f"{what} must be an integer, not {qty!r}")
    if qty <= 0:
        raise InvalidArgument(f"{what} must be positive, not {qty}")
    if qty > MAX_QTY:
        raise InvalidArgument(f"{what} {qty} is larger than {MAX_QTY:,}")
    return qty


def check_ref(ref: str | None) -> str:
    """A client id (from a POS line, a file row, a web form's idempotency key); generated when None."""
    if ref is None:
        return uuid.uuid4().hex
    if not isinstance(ref, str) or not (1 <= len(ref) <= REF_MAX) or ref != ref.strip() or not ref.isprintable():
        raise InvalidArgument(f"id {ref!r} must be 1..{REF_MAX} printable characters without surrounding spaces")
    return ref


class Tx:
    """One open write transaction on the writer's connection."""

    def __init__(self, conn: aiosqlite.Connection, now_ms: int) -> None:
        self.conn = conn
        self.now_ms = now_ms

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self.conn.execute_fetchall(sql, params))

    async def _insert(self, sql: str, params: Sequence[Any]) -> int:
        cur = await self.conn.execute(sql, params)
        rowid = cur.lastrowid
        await cur.close()
        assert rowid is not None
        return rowid

    async def audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        await self.conn.execute(
            "INSERT INTO audit (ts_ms, actor, action, details) VALUES (?, ?, ?, ?)",
            (self.now_ms, actor, action, json.dumps(details, sort_keys=True, separators=(",", ":"))),
        )

    # --------------------------------------------------------------------------------------------- lookups

    async def require_sku(self, sku: str) -> None:
        if not await self._rows("SELECT 1 FROM skus WHERE sku = ?", (sku,)):
            raise UnknownSku(f"unknown SKU {sku!r}")

    async def book_location(self, location: str) -> str:
        """Validate a book location (a lane must be registered)."""
        if not isinstance(location, str):
            raise UnknownLocation(f"bad location {location!r}")
        if location.startswith(SENSOR_PREFIX):
            raise UnknownLocation(f"{location!r} is in the sensor ledger: book postings cannot target it")
        if location.startswith(LANE_PREFIX):
            lane_id = location[len(LANE_PREFIX) :]
            if not await self._rows("SELECT 1 FROM lanes WHERE lane_id = ?", (lane_id,)):
                raise UnknownLocation(f"unknown lane {lane_id!r} in location {location!r}")
            return location
        if not PLAIN_LOCATION_RE.fullmatch(location):
            raise UnknownLocation(f"bad location {location!r}: use backroom, lane:<lane id> or a plain name")
        return location

    async def balance(self, sku: str, location: str) -> int:
        rows = await self._rows("SELECT qty FROM balances WHERE sku = ? AND location = ?", (sku, location))
        return int(rows[0][0]) if rows else 0

    async def shelf_location(self, sku: str) -> str:
        """Where a sale or order pick takes the SKU from when the caller does not say."""
        rows = await self._rows(
            "SELECT l.lane_id FROM lanes AS l LEFT JOIN balances AS b ON b.sku = l.sku AND b.location = 'lane:' ||"
            " l.lane_id WHERE l.sku = ? ORDER BY coalesce(b.qty, 0) DESC, l.lane_id LIMIT 1",
            (sku,),
        )
        return lane_location(rows[0][0]) if rows else BACKROOM

    async def legs_of(self, source_ref: str) -> list[Movement]:
        rows = await self._rows(
            f"SELECT {MOVEMENT_COLUMNS} FROM movements WHERE source_ref = ? ORDER BY leg", (source_ref,)
        )
        return [movement_from_row(r) for r in rows]

    # ------------------------------------------------------------------------------------------------- post

    async def post(
        self,
        source_ref: str,
        legs: Sequence[Leg],
        *,
        ts_ms: int | None,
        actor: str,
        note: str | None = None,
        compare_locations: bool = True,
        reverses: Sequence[int] | None = None,
    ) -> ApplyResult:
        """Write the legs of one posting, or report the existing posting with this reference as a duplicate."""
        existing = await self.legs_of(source_ref)
        if existing:
            if _foreign(existing[0].actor, actor):
                raise RefConflict(_used_by(source_ref, existing[0].actor))
            same = len(existing) == len(legs) and all(
                e.sku == g.sku
                and e.qty == g.qty
                and e.reason == g.reason
                and (ts_ms is None or e.ts_ms == ts_ms)
                and e.note == note
                and (e.location == g.location or not compare_locations)
                for e, g in zip(existing, legs, strict=False)
            )
            if not same:
                was = ", ".join(f"{e.reason} {e.qty:+d} {e.sku} at {e.location}" for e in existing)
                raise RefConflict(f"{source_ref} was already posted with different content ({was})")
            return Duplicate(source_ref, tuple(e.id for e in existing))
        ids = []
        for leg_no, g in enumerate(legs):
            ids.append(
                await self._insert(
                    "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, leg, actor,"
                    " note, reverses_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.now_ms if ts_ms is None else ts_ms,
                        self.now_ms,
                        g.sku,
                        g.location,
                        g.qty,
                        str(g.reason),
                        source_ref,
                        leg_no,
                        actor,
                        note,
                        reverses[leg_no] if reverses else None,
                    ),
                )
            )
        return Applied(source_ref, tuple(ids))

    async def _simple(
        self,
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
            await self.require_sku(g.sku)
        result = await self.post(
            source_ref, legs, ts_ms=ts_ms, actor=actor, note=note, compare_locations=compare_locations
        )
        if isinstance(result, Applied):
            await self.audit(
                actor,
                kind,
                {
                    "source_ref": source_ref,
                    "movement_ids": list(result.movement_ids),
                    "legs": [[g.sku, g.location, g.qty, str(g.reason)] for g in legs],
                    "ts_ms": self.now_ms if ts_ms is None else ts_ms,
                    **(details or {}),
                },
            )
        return result

    # ------------------------------------------------------------------------------------- business postings

    async def _out_of(self, sku: str, location: str | None) -> tuple[str, bool]:
        """Where a sale or pick takes stock from. A plain location name must be one stock was ever booked at: a
        typo (``backroon``) would otherwise open a phantom location with negative stock."""
        await self.require_sku(sku)
        if location is None:
            return await self.shelf_location(sku), False
        loc = await self.book_location(location)
        plain = loc != BACKROOM and not loc.startswith(LANE_PREFIX)
        if plain and not await self._rows("SELECT 1 FROM balances WHERE location = ? LIMIT 1", (loc,)):
            rows = await self._rows(
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
        self, sku: str, qty: int, *, ts_ms: int | None, actor: str, ref: str | None, location: str | None = None
    ) -> ApplyResult:
        check_qty(qty)
        loc, explicit = await self._out_of(sku, location)
        return await self._simple(
            "sale", ref, [Leg(sku, loc, -qty, Reason.SALE)], ts_ms=ts_ms, actor=actor, compare_locations=explicit
        )

    async def order_pick(
        self,
        sku: str,
        qty: int,
        order: str,
        *,
        ts_ms: int | None,
        actor: str,
        ref: str | None,
        location: str | None = None,
    ) -> ApplyResult:
        check_qty(qty)
        if not isinstance(order, str) or not order.strip() or len(order) > REF_MAX:
            raise InvalidArgument(f"order must be a non-empty id of at most {REF_MAX} characters")
        loc, explicit = await self._out_of(sku, location)
        return await self._simple(
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
        self, sku: str, qty: int, *, ts_ms: int | None, actor: str, ref: str | None, location: str = BACKROOM
    ) -> ApplyResult:
        check_qty(qty)
        loc = await self.book_location(location)
        return await self._simple("receipt", ref, [Leg(sku, loc, qty, Reason.RECEIPT)], ts_ms=ts_ms, actor=actor)

    async def return_(
        self,
        sku: str,
        qty: int,
        *,
        ts_ms: int | None,
        actor: str,
        ref: str | None,
        restockable: bool = True,
        location: str = BACKROOM,
    ) -> ApplyResult:
        check_qty(qty)
        loc = await self.book_location(location)
        legs = [Leg(sku, loc, qty, Reason.RETURN)]
        if not restockable:
            legs.append(Leg(sku, loc, -qty, Reason.DAMAGE))
        return await self._simple(
            "return",
            ref,
            legs,
            ts_ms=ts_ms,
            actor=actor,
            note=None if restockable else "not restockable: written off as damage",
            details={"restockable": restockable},
        )

    async def restock(
        self,
        sku: str,
        lane_id: str,
        qty: int,
        *,
        ts_ms: int | None,
        actor: str,
        ref: str | None,
        from_location: str = BACKROOM,
    ) -> ApplyResult:
        check_qty(qty)
        await self.require_sku(sku)
        rows = await self._rows("SELECT sku FROM lanes WHERE lane_id = ?", (lane_id,))
        if not rows:
            raise UnknownLane(f"unknown lane {lane_id!r}")
        if rows[0][0] != sku:
            held = f"holds {rows[0][0]!r}" if rows[0][0] else "is unassigned"
            raise InvalidArgument(f"lane {lane_id!r} {held}, not {sku!r}: assign the lane first")
        src = await self.book_location(from_location)
        legs = [Leg(sku, src, -qty, Reason.RESTOCK), Leg(sku, lane_location(lane_id), qty, Reason.RESTOCK)]
        return await self._simple("restock", ref, legs, ts_ms=ts_ms, actor=actor)

    async def transfer(
        self,
        sku: str,
        qty: int,
        from_location: str,
        to_location: str,
        *,
        ts_ms: int | None,
        actor: str,
        ref: str | None,
    ) -> ApplyResult:
        check_qty(qty)
        src = await self.book_location(from_location)
        dst = await self.book_location(to_location)
        if src == dst:
            raise InvalidArgument(f"transfer from {src!r} to itself")
        legs = [Leg(sku, src, -qty, Reason.TRANSFER), Leg(sku, dst, qty, Reason.TRANSFER)]
        return await self._simple("transfer", ref, legs, ts_ms=ts_ms, actor=actor)

    async def write_off(
        self,
        sku: str,
        qty: int,
        reason: Reason,
        *,
        ts_ms: int | None,
        actor: str,
        ref: str | None,
        location: str = BACKROOM,
        note: str | None = None,
    ) -> ApplyResult:
        if reason not in (Reason.DAMAGE, Reason.SHRINKAGE):
            raise InvalidArgument(f"a write-off is damage or shrinkage, not {reason!r}")
        check_qty(qty)
        loc = await self.book_location(location)
        return await self._simple(
            "writeoff", ref, [Leg(sku, loc, -qty, Reason(reason))], ts_ms=ts_ms, actor=actor, note=note
        )

    async def count(
        self,
        sku: str,
        counted: int,
        *,
        ts_ms: int | None,
        actor: str,
        ref: str | None,
        location: str = BACKROOM,
        kind: str = "count",
    ) -> CountResult:
        """Record a physical count under ``<kind>:<ref>``. ``kind`` is ``count`` for every client (API, CSV,
        Python API); an alert resolution's count uses ``RESOLUTION_KIND``, a reference space no client reaches."""
        actor = check_actor(actor)
        if kind not in ("count", RESOLUTION_KIND):
            raise InvalidArgument(f"a count is recorded as count or {RESOLUTION_KIND}, not {kind!r}")
        if not isinstance(counted, int) or isinstance(counted, bool) or not 0 <= counted <= MAX_QTY:
            raise InvalidArgument(f"counted quantity must be an integer 0..{MAX_QTY:,}, not {counted!r}")
        await self.require_sku(sku)
        loc = await self.book_location(location)
        source_ref = f"{kind}:{check_ref(ref)}"
        rows = await self._rows(
            "SELECT id, sku, location, counted_qty, ts_ms, book_qty, adjustment_movement_id, actor"
            " FROM physical_counts WHERE source_ref = ?",
            (source_ref,),
        )
        if rows:
            cid, esku, eloc, ecounted, ets, ebook, eadj, eactor = rows[0]
            if _foreign(eactor, actor):
                raise RefConflict(_used_by(source_ref, eactor))
            if (esku, eloc, ecounted) != (sku, loc, counted) or (ts_ms is not None and ets != ts_ms):
                raise RefConflict(f"{source_ref} was already recorded: {ecounted} of {esku} at {eloc}")
            return CountResult(cid, source_ref, ebook, ecounted, eadj, duplicate=True)
        book = await self.balance(sku, loc)
        adjustment_id = None
        if counted != book:
            posted = await self.post(
                source_ref,
                [Leg(sku, loc, counted - book, Reason.COUNT_ADJUSTMENT)],
                ts_ms=ts_ms,
                actor=actor,
                note=f"counted {counted}, book {book}",
            )
            adjustment_id = posted.movement_ids[0]
        cid = await self._insert(
            "INSERT INTO physical_counts (ts_ms, recorded_ms, sku, location, book_qty, counted_qty, actor,"
            " source_ref, adjustment_movement_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.now_ms if ts_ms is None else ts_ms,
                self.now_ms,
                sku,
                loc,
                book,
                counted,
                actor,
                source_ref,
                adjustment_id,
            ),
        )
        await self.audit(
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

    async def reverse(self, movement_id: int, *, actor: str, why: str) -> Applied:
        actor = check_actor(actor)
        if not isinstance(why, str) or not why.strip():
            raise InvalidArgument("a reversal needs a reason (why)")
        rows = await self._rows(f"SELECT {MOVEMENT_COLUMNS} FROM movements WHERE id = ?", (movement_id,))
        if not rows:
            raise UnknownMovement(f"no movement {movement_id}")
        target = movement_from_row(rows[0])
        if target.reverses_id is not None:
            raise NotReversible(
                f"movement {movement_id} is itself a reversal (of {target.reverses_id}): post the original again"
            )
        legs = await self.legs_of(target.source_ref)
        ph = ",".join("?" * len(legs))
        done = await self._rows(
            f"SELECT id, reverses_id FROM movements WHERE reverses_id IN ({ph})", [m.id for m in legs]
        )
        if done:
            raise NotReversible(f"movement {done[0][1]} was already reversed by movement {done[0][0]}")
        source_ref = f"reversal:{legs[0].id}"
        result = await self.post(
            source_ref,
            [Leg(m.sku, m.location, -m.qty, m.reason) for m in legs],
            ts_ms=self.now_ms,
            actor=actor,
            note=why.strip(),
            reverses=[m.id for m in legs],
        )
        assert isinstance(result, Applied)
        await self.audit(
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
        return result

    # ----------------------------------------------------------------------------------- reference data

    async def add_sku(self, sku: Sku, *, actor: str) -> bool:
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
        old = await self._rows(
            "SELECT sku, name, unit_weight_dg, spread_permille, reorder_point, reorder_qty, capacity FROM skus"
            " WHERE sku = ?",
            (sku.sku,),
        )
        if old and tuple(old[0]) == values:
            return False
        await self.conn.execute(
            "INSERT INTO skus (sku, name, unit_weight_dg, spread_permille, reorder_point, reorder_qty, capacity)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sku) DO UPDATE SET name = excluded.name,"
            " unit_weight_dg = excluded.unit_weight_dg, spread_permille = excluded.spread_permille,"
            " reorder_point = excluded.reorder_point, reorder_qty = excluded.reorder_qty,"
            " capacity = excluded.capacity",
            values,
        )
        await self.audit(
            actor,
            "update_sku" if old else "add_sku",
            {"sku": sku.sku, "old": list(old[0]) if old else None, "new": list(values)},
        )
        return True

    async def register_node(self, node_id: int, *, actor: str, label: str = "", key_id: str | None = None) -> None:
        actor = check_actor(actor)
        if not isinstance(node_id, int) or not 1 <= node_id <= 0xFFFFFFFF:
            raise InvalidArgument(f"node id must be 1..4294967295, not {node_id!r}")
        await self.conn.execute(
            "INSERT INTO nodes (node_id, label, key_id) VALUES (?, ?, ?)"
            " ON CONFLICT (node_id) DO UPDATE SET label = excluded.label, key_id = excluded.key_id",
            (node_id, label, key_id),
        )
        await self.audit(actor, "register_node", {"node_id": node_id, "label": label, "key_id": key_id})

    async def assign_lane(
        self, node_id: int, lane_index: int, sku: str | None, *, actor: str, lane_id: str | None = None
    ) -> str:
        """Register lane ``lane_index`` of ``node_id`` (if new) and assign it a SKU (None: unassign).

        A lane keeps its id for life (sensor history is stored under it). Re-assigning a lane that still holds
        book stock of its old SKU is refused: transfer or count that stock out first."""
        actor = check_actor(actor)
        if not isinstance(lane_index, int) or not 0 <= lane_index <= 31:
            raise InvalidArgument(f"lane index must be 0..31, not {lane_index!r}")
        if sku is not None:
            await self.require_sku(sku)
        rows = await self._rows(
            "SELECT lane_id, sku FROM lanes WHERE node_id = ? AND lane_index = ?", (node_id, lane_index)
        )
        old_sku: str | None = None
        if rows:
            existing_id: str = rows[0][0]
            old_sku = rows[0][1]
            if lane_id is not None and lane_id != existing_id:
                raise InvalidArgument(f"node {node_id} lane {lane_index} is already registered as {existing_id!r}")
            lane_id = existing_id
            if old_sku == sku:
                return existing_id
            if old_sku is not None:
                held = await self.balance(old_sku, lane_location(existing_id))
                if held != 0:
                    raise LaneInUse(
                        f"lane {existing_id!r} still holds {held} of {old_sku!r} in the book: "
                        "transfer or count it out first"
                    )
            await self.conn.execute("UPDATE lanes SET sku = ? WHERE lane_id = ?", (sku, existing_id))
        else:
            auto_id = f"node{node_id}-lane{lane_index}"
            lane_id = lane_id if lane_id is not None else auto_id
            if not LANE_ID_RE.fullmatch(lane_id):
                raise InvalidArgument(f"lane id {lane_id!r} must match {LANE_ID_RE.pattern}")
            if lane_id != auto_id and AUTO_LANE_ID_RE.fullmatch(lane_id):
                # Reserved: the sensor path names unregistered lanes this way.
                raise InvalidArgument(f"lane id {lane_id!r} is reserved for node/lane {lane_id[4:]}")
            if await self._rows("SELECT 1 FROM lanes WHERE lane_id = ?", (lane_id,)):
                raise InvalidArgument(f"lane id {lane_id!r} is already used by another lane")
            await self.register_node_if_missing(node_id)
            await self.conn.execute(
                "INSERT INTO lanes (lane_id, node_id, lane_index, sku) VALUES (?, ?, ?, ?)",
                (lane_id, node_id, lane_index, sku),
            )
        await self.audit(
            actor,
            "assign_lane",
            {"lane_id": lane_id, "node_id": node_id, "lane_index": lane_index, "old_sku": old_sku, "sku": sku},
        )
        if sku is not None:
            await self._resolve_if_open(
                AlertKind.UNASSIGNED_LANE, str(Cause.lane(lane_id)), actor=actor, resolution=f"lane assigned to {sku}"
            )
        return lane_id

    async def register_node_if_missing(self, node_id: int) -> None:
        if not isinstance(node_id, int) or not 1 <= node_id <= 0xFFFFFFFF:
            raise InvalidArgument(f"node id must be 1..4294967295, not {node_id!r}")
        await self.conn.execute("INSERT OR IGNORE INTO nodes (node_id) VALUES (?)", (node_id,))

    # ------------------------------------------------------------------------------------------------ alerts

    async def _alert(self, alert_id: int) -> Alert:
        rows = await self._rows(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,))
        if not rows:
            raise UnknownAlert(f"no alert {alert_id}")
        return alert_from_row(rows[0])

    async def open_alert(
        self, kind: str, cause_key: str, evidence: dict[str, Any], *, actor: str, ts_ms: int | None = None
    ) -> AlertOpened:
        actor = check_actor(actor)
        if not kind or not cause_key:
            raise InvalidArgument("an alert needs a kind and a cause key")
        rows = await self._rows(
            "SELECT id FROM alerts WHERE kind = ? AND cause_key = ? AND status != 'resolved'", (kind, cause_key)
        )
        if rows:
            return AlertOpened(rows[0][0], created=False)
        alert_id = await self._insert(
            "INSERT INTO alerts (kind, cause_key, status, opened_ms, evidence) VALUES (?, ?, 'open', ?, ?)",
            (str(kind), cause_key, ts_ms if ts_ms is not None else self.now_ms, json.dumps(evidence, sort_keys=True)),
        )
        await self.audit(actor, "open_alert", {"alert_id": alert_id, "kind": str(kind), "cause_key": cause_key})
        return AlertOpened(alert_id, created=True)

    async def acknowledge_alert(self, alert_id: int, *, actor: str) -> Alert:
        actor = check_actor(actor)
        alert = await self._alert(alert_id)
        if alert.status != AlertStatus.OPEN:
            raise AlertStateError(f"alert {alert_id} is {alert.status}, not open")
        await self.conn.execute(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_ms = ?, acknowledged_by = ? WHERE id = ?",
            (self.now_ms, actor, alert_id),
        )
        await self.audit(actor, "acknowledge_alert", {"alert_id": alert_id})
        return await self._alert(alert_id)

    async def update_alert_evidence(self, alert_id: int, evidence: dict[str, Any], *, actor: str) -> bool:
        """Replace the evidence of an unresolved alert (later evidence for the same cause goes to the alert in
        flight, not to a new one). Returns False when it was already exactly this."""
        actor = check_actor(actor)
        alert = await self._alert(alert_id)
        if alert.status == AlertStatus.RESOLVED:
            raise AlertStateError(f"alert {alert_id} is resolved: its evidence is final")
        text = json.dumps(evidence, sort_keys=True)
        if json.dumps(alert.evidence, sort_keys=True) == text:
            return False
        await self.conn.execute("UPDATE alerts SET evidence = ? WHERE id = ?", (text, alert_id))
        await self.audit(actor, "update_alert_evidence", {"alert_id": alert_id})
        return True

    async def resolve_alert(
        self,
        alert_id: int,
        *,
        actor: str,
        resolution: str,
        write_off: WriteOff | None = None,
        movement_id: int | None = None,
    ) -> Alert:
        """Resolve an alert; ``write_off`` posts the entry it implies, or ``movement_id`` names one the caller
        posted in this transaction (e.g. a count adjustment)."""
        actor = check_actor(actor)
        if not isinstance(resolution, str) or not resolution.strip():
            raise InvalidArgument("say how the alert was resolved")
        if write_off is not None and movement_id is not None:
            raise InvalidArgument("an alert is resolved by one ledger entry: a write-off or a movement id")
        alert = await self._alert(alert_id)
        if alert.status == AlertStatus.RESOLVED:
            raise AlertStateError(f"alert {alert_id} is already resolved")
        if movement_id is not None and not await self._rows("SELECT 1 FROM movements WHERE id = ?", (movement_id,)):
            raise UnknownMovement(f"no movement {movement_id}")
        if write_off is not None:
            posted = await self.write_off(
                write_off.sku,
                write_off.qty,
                write_off.reason,
                ts_ms=self.now_ms,
                actor=actor,
                ref=f"alert{alert_id}",
                location=write_off.location,
                note=f"alert {alert_id}: {resolution.strip()}",
            )
            movement_id = posted.movement_ids[0]
        await self.conn.execute(
            "UPDATE alerts SET status = 'resolved', resolved_ms = ?, resolved_by = ?, resolution = ?,"
            " resolution_movement_id = ? WHERE id = ?",
            (self.now_ms, actor, resolution.strip(), movement_id, alert_id),
        )
        await self.audit(
            actor,
            "resolve_alert",
            {"alert_id": alert_id, "resolution": resolution.strip(), "movement_id": movement_id},
        )
        return await self._alert(alert_id)

    async def _resolve_if_open(self, kind: str, cause_key: str, *, actor: str, resolution: str) -> None:
        rows = await self._rows(
            "SELECT id FROM alerts WHERE kind = ? AND cause_key = ? AND status != 'resolved'", (kind, cause_key)
        )
        for (alert_id,) in rows:
            await self.resolve_alert(alert_id, actor=actor, resolution=resolution)
