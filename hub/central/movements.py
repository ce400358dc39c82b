"""A batch's movements into the central store (``store.apply_batch`` step 2, in its transaction).

Movement ids are per ledger *incarnation* (``hub/ledger/identity.py``): a hub restored from a backup gives again
ids the lost ledger had given to other movements, and publishes its whole ledger again under its new incarnation.
So ``movements`` has two unique keys, ``(hub_id, incarnation, id)`` and ``(hub_id, source_ref, leg)`` (the business
identity the hub's ledger enforces too), and one statement per round:

1. the batch's rows go in by binary COPY into this session's staging table (about twice as fast as one INSERT from
   17 unnest()ed arrays), then one statement empties the stage, inserts what is new with ``ON CONFLICT DO NOTHING``
   (either key), records in ``movement_matches`` each row not inserted because a movement of *another* incarnation
   holds its ``(source_ref, leg)`` (``same`` when SKU, location, quantity and reason agree: the same movement,
   published again after a restore or booked again at the store; else a conflict), or another movement its
   ``(incarnation, id)`` (a conflict: an incarnation used twice), and adds to ``stock`` exactly the rows inserted
   (book locations: one row per location, incarnation 0) plus, at ``sensor:`` locations, the rows newly matched
   whose ``(incarnation, id)`` no movement holds: a sensor location's stock is per incarnation, the sum of what that
   incarnation's ledger holds (schema step 3). Rows not inserted for neither reason are plain redeliveries, and add
   nothing. Only rows not inserted are looked up: a batch of new movements costs one anti-join over itself.
2. a batch holding several incarnations of one hub (the lost ledger's last messages, delivered late beside the
   restored one's) is written in rounds, the older incarnation first, so that the matches see what the round
   before inserted (one statement sees the table as it was when it began).
3. the id ranges received, merged per hub and incarnation (``movement_ranges``); the hub's ``complete_to`` and
   ``max_id`` are those of its current incarnation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hub.central.schema import SENSOR_MATCHED_ROW
from hub.fleet.messages import Movements

if TYPE_CHECKING:
    import asyncpg

NAMES = (
    "hub_id, incarnation, id, ts_ms, recorded_ms, sku, location, qty, reason, source_ref, leg, actor, note,"
    " reverses_id, node_id, event_seq, weight_delta_dg, confidence"
)
COLUMNS = tuple(NAMES.split(", "))
STAGE = "central_movements_stage"
# Made by every batch's transaction when missing (a table made in a transaction that rolled back is gone with it: a
# session-long "made it" mark would then point at nothing, and every retry of that batch fail). CREATE TABLE AS
# copies the columns without their NOT NULL (received_ms is set by the INSERT).
_CREATE_STAGE = f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ON COMMIT DELETE ROWS AS SELECT * FROM movements WITH NO DATA"
_MATCH_NAMES = "hub_id, incarnation, id, held_incarnation, held_id, same, sku, location, qty, source_ref, leg"
SENSOR_MATCHED = SENSOR_MATCHED_ROW.format(x="x")
INSERT = f"""
WITH staged AS (
    DELETE FROM {STAGE} RETURNING {NAMES}
), m AS (
    INSERT INTO movements ({NAMES}, received_ms)
    SELECT {NAMES}, $1 FROM staged
    ON CONFLICT DO NOTHING
    RETURNING hub_id, incarnation, id, sku, location, qty
), dropped AS (
    SELECT * FROM staged d WHERE NOT EXISTS (
        SELECT 1 FROM m WHERE m.hub_id = d.hub_id AND m.incarnation = d.incarnation AND m.id = d.id)
), held AS (
    SELECT d.hub_id, d.incarnation, d.id, o.incarnation AS held_incarnation, o.id AS held_id,
        (o.sku IS NOT DISTINCT FROM d.sku AND o.location = d.location AND o.qty = d.qty AND o.reason = d.reason)
            AS same,
        d.sku, d.location, d.qty, d.source_ref, d.leg
    FROM dropped d JOIN movements o ON o.hub_id = d.hub_id AND o.source_ref = d.source_ref AND o.leg = d.leg
    WHERE o.incarnation <> d.incarnation
    UNION ALL
    SELECT d.hub_id, d.incarnation, d.id, o.incarnation, o.id, false, d.sku, d.location, d.qty, d.source_ref, d.leg
    FROM dropped d JOIN movements o ON o.hub_id = d.hub_id AND o.incarnation = d.incarnation AND o.id = d.id
    WHERE o.source_ref <> d.source_ref OR o.leg <> d.leg
), x AS (
    INSERT INTO movement_matches ({_MATCH_NAMES}, received_ms)
    SELECT *, $1 FROM held
    ON CONFLICT DO NOTHING
    RETURNING hub_id, incarnation, id, same, sku, location, qty
), s AS (
    INSERT INTO stock AS st (hub_id, sku, location, incarnation, qty, updated_ms)
    SELECT hub_id, sku, location, life, sum(qty), $1 FROM (
        SELECT hub_id, sku, location, CASE WHEN location LIKE 'sensor:%' THEN incarnation ELSE 0 END AS life, qty
        FROM m
        UNION ALL
        SELECT hub_id, sku, location, incarnation, qty FROM x WHERE location LIKE 'sensor:%' AND {SENSOR_MATCHED}
    ) AS c WHERE sku IS NOT NULL
    GROUP BY hub_id, sku, location, life ORDER BY hub_id, sku, location, life
    ON CONFLICT (hub_id, sku, location, incarnation)
    DO UPDATE SET qty = st.qty + excluded.qty, updated_ms = excluded.updated_ms
)
SELECT 'stored' AS what, hub_id, incarnation, count(*) AS n FROM m GROUP BY hub_id, incarnation
UNION ALL
SELECT CASE WHEN same THEN 'matched' ELSE 'conflict' END, hub_id, incarnation, count(*) FROM x GROUP BY 1, 2, 3
"""


class HubState(Protocol):
    """What this module reads and writes of a hub's row (``store._Hub``)."""

    incarnation: int
    inserted: int
    max_id: int
    complete_to: int
    movements_received_ms: int | None


@dataclass(slots=True)
class Counts:
    sent: int = 0  # rows received
    inserted: int = 0
    matched: int = 0  # held already under another incarnation: the same movement
    conflicts: int = 0  # not stored: another movement holds its (source_ref, leg) or (incarnation, id)


def rounds(batches: Sequence[Movements]) -> list[list[Movements]]:
    """The batches, in rounds: round r holds each hub's r-th oldest incarnation in the batch (one round, nearly
    always); the same batch twice is kept once."""
    seen: set[tuple[str, int, int, int]] = set()
    per_hub: dict[str, dict[int, list[Movements]]] = {}
    for b in batches:
        if (b.hub, b.incarnation, b.first, b.last) not in seen:
            seen.add((b.hub, b.incarnation, b.first, b.last))
            per_hub.setdefault(b.hub, {}).setdefault(b.incarnation, []).append(b)
    out: list[list[Movements]] = []
    for lives in per_hub.values():
        for r, incarnation in enumerate(sorted(lives)):
            if r == len(out):
                out.append([])
            out[r].extend(lives[incarnation])
    return out


async def store_movements(
    conn: asyncpg.Connection, batches: Sequence[Movements], hubs: Mapping[str, HubState], now_ms: int
) -> Counts:
    """Insert the batches' movements (see the module's doc), update the hubs' counters; the counts."""
    counts = Counts(sent=sum(len(b.rows) for b in batches))
    await conn.execute(_CREATE_STAGE)
    for group in rounds(batches):
        records = [(b.hub, b.incarnation, *row) for b in group for row in b.rows]
        await conn.copy_records_to_table(STAGE, records=records, columns=COLUMNS)
        for r in await conn.fetch(INSERT, now_ms):
            if r["what"] == "stored":
                hubs[r["hub_id"]].inserted += r["n"]
                counts.inserted += r["n"]
            elif r["what"] == "matched":
                counts.matched += r["n"]
            else:
                counts.conflicts += r["n"]
    await _ranges(conn, batches, hubs, now_ms)
    return counts


async def _ranges(
    conn: asyncpg.Connection, batches: Sequence[Movements], hubs: Mapping[str, HubState], now_ms: int
) -> None:
    """Merge the batches' id ranges into ``movement_ranges`` per hub and incarnation; a hub's ``complete_to`` and
    ``max_id`` are its current incarnation's, ``movements_received_ms`` when ids of that one arrived first."""
    new: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for b in batches:
        new.setdefault((b.hub, b.incarnation), []).append((b.first, b.last))
    keys = sorted(new)
    existing: dict[tuple[str, int], list[tuple[int, int]]] = {k: [] for k in keys}
    for r in await conn.fetch(
        "SELECT hub_id, incarnation, first_id, last_id FROM movement_ranges"
        " WHERE (hub_id, incarnation) IN (SELECT * FROM unnest($1::text[], $2::bigint[])) ORDER BY 1, 2, 3",
        [k[0] for k in keys],
        [k[1] for k in keys],
    ):
        existing[(r["hub_id"], r["incarnation"])].append((r["first_id"], r["last_id"]))
    changed: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for key in keys:
        merged = merge_ranges(existing[key] + new[key])
        if merged != existing[key]:
            changed[key] = merged
        h = hubs[key[0]]
        if key[1] == h.incarnation:
            h.complete_to = merged[0][1] if merged and merged[0][0] == 1 else 0
            h.max_id = max(h.max_id, merged[-1][1] if merged else 0)
            if key in changed:  # ids it had not received (a redelivery is no sign of life)
                h.movements_received_ms = now_ms
    if changed:
        gone = sorted(changed)
        await conn.execute(
            "DELETE FROM movement_ranges"
            " WHERE (hub_id, incarnation) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))",
            [k[0] for k in gone],
            [k[1] for k in gone],
        )
        flat = [(hub, life, first, last) for (hub, life), ranges in sorted(changed.items()) for first, last in ranges]
        await conn.execute(
            "INSERT INTO movement_ranges (hub_id, incarnation, first_id, last_id)"
            " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])",
            *([list(c) for c in zip(*flat, strict=True)] if flat else [[], [], [], []]),
        )


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged: overlapping and adjacent ranges become one."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out
