"""The posting primitive: the legs of one posting written under its source reference (or recognised as a duplicate
of it, or refused as a conflict: the rules are in ``hub.ledger.postings``), and the book balances and locations
postings are checked against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hub.ledger import lane_activity, sold_hours
from hub.ledger.models import (
    BACKROOM,
    LANE_PREFIX,
    PLAIN_LOCATION_RE,
    SENSOR_PREFIX,
    Applied,
    ApplyResult,
    Duplicate,
    Movement,
    Reason,
    RefConflict,
    UnknownLocation,
    is_sensor_location,
    lane_location,
)
from hub.ledger.postings.checks import foreign, used_by
from hub.ledger.postings.core import TxCore
from hub.ledger.reader import MOVEMENT_COLUMNS, movement_from_row


@dataclass(frozen=True, slots=True)
class Leg:
    sku: str | None
    location: str
    qty: int
    reason: Reason


# --------------------------------------------------------------------------------------------------- lookups


async def book_location(tx: TxCore, location: str) -> str:
    """Validate a book location (a lane must be registered)."""
    if not isinstance(location, str):
        raise UnknownLocation(f"bad location {location!r}")
    if location.startswith(SENSOR_PREFIX):
        raise UnknownLocation(f"{location!r} is in the sensor ledger: book postings cannot target it")
    if location.startswith(LANE_PREFIX):
        lane_id = location[len(LANE_PREFIX) :]
        if not await tx.rows("SELECT 1 FROM lanes WHERE lane_id = ?", (lane_id,)):
            raise UnknownLocation(f"unknown lane {lane_id!r} in location {location!r}")
        return location
    if not PLAIN_LOCATION_RE.fullmatch(location):
        raise UnknownLocation(f"bad location {location!r}: use backroom, lane:<lane id> or a plain name")
    return location


async def balance(tx: TxCore, sku: str, location: str) -> int:
    rows = await tx.rows("SELECT qty FROM balances WHERE sku = ? AND location = ?", (sku, location))
    return int(rows[0][0]) if rows else 0


async def shelf_location(tx: TxCore, sku: str) -> str:
    """Where a sale or order pick takes the SKU from when the caller does not say."""
    rows = await tx.rows(
        "SELECT l.lane_id FROM lanes AS l LEFT JOIN balances AS b ON b.sku = l.sku AND b.location = 'lane:' ||"
        " l.lane_id WHERE l.sku = ? ORDER BY coalesce(b.qty, 0) DESC, l.lane_id LIMIT 1",
        (sku,),
    )
    return lane_location(rows[0][0]) if rows else BACKROOM


async def legs_of(tx: TxCore, source_ref: str) -> list[Movement]:
    rows = await tx.rows(f"SELECT {MOVEMENT_COLUMNS} FROM movements WHERE source_ref = ? ORDER BY leg", (source_ref,))
    return [movement_from_row(r) for r in rows]


# ------------------------------------------------------------------------------------------------------ post


async def post(
    tx: TxCore,
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
    existing = await legs_of(tx, source_ref)
    if existing:
        if foreign(existing[0].actor, actor):
            raise RefConflict(used_by(source_ref, existing[0].actor))
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
            await tx.insert(
                "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, leg, actor,"
                " note, reverses_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tx.now_ms if ts_ms is None else ts_ms,
                    tx.now_ms,
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
    # what the writer keeps beside the movements: sensor spans and activity (a reversal's legs at a sensor location),
    # units sold per hour (sales, order picks and their reversals)
    ts = tx.now_ms if ts_ms is None else ts_ms
    sensor = [(i, ts, g.sku, g.location, g.qty) for i, g in zip(ids, legs, strict=True)
              if is_sensor_location(g.location)]  # fmt: skip
    await lane_activity.record(tx.conn, sensor)
    await sold_hours.record(tx.conn, [(g.sku, g.location, g.qty, str(g.reason), ts) for g in legs], reverses)
    return Applied(source_ref, tuple(ids))
