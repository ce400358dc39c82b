"""One batch of fleet messages into PostgreSQL, in one transaction: all of it or nothing.

``receive`` turns one MQTT message into a ``Received``: its topic's hub and the record ``hub.fleet.messages.decode``
made of it, or the reason it was refused (a topic outside the contract, a payload ``decode`` refused: malformed,
too big, forged, i.e. whose ``hub`` is not the topic's). ``apply_batch`` writes a list of them:

1. the hubs heard from (``hubs``, sorted by id: every transaction locks its hubs' rows in the same order, so two
   consumers never deadlock, and everything below that touches a hub is serialized per hub);
2. every movement, ``INSERT ... ON CONFLICT DO NOTHING`` over ``(hub_id, incarnation, id)`` and ``(hub_id,
   source_ref, leg)`` in one statement, whose ``RETURNING`` feeds the ``stock`` upsert in the same statement: stock
   moves by exactly the rows that inserted, a redelivery (or a restored hub's ledger published again) by nothing;
   rows held under another incarnation are recorded in ``movement_matches`` (``hub.central.movements``);
3. the id ranges received, merged per hub and incarnation (``movement_ranges``; ``movements_complete_to``: every id
   of the hub's current incarnation up to it stored);
4. alerts, each ``(hub_id, incarnation, id)`` kept at its highest ``rev`` (a restored ledger reuses alert ids: each
   incarnation's alerts are kept apart);
5. snapshots, replacing a hub's previous one only when newer (``(incarnation, sent_ms)``); statuses likewise;
6. the refused messages into ``rejected``;
7. when the caller asks (``RejectedBound``: the consumer does every ``rejected_prune_interval_s``), the refused
   messages older than the bound's age or beyond its newest ``keep_rows`` are deleted (``prune_rejected``): at most
   ``limit`` a time, skipping rows another consumer's transaction is deleting, so neither waits for the other.

The database refusing a value (a data or constraint error, SQLSTATE classes 22, 23, 54) does not block the queue:
the batch is applied again message by message, each in a savepoint, and the one refused goes to ``rejected`` with
the database's reason. Any other error (connection lost, server shutting down, deadlock) propagates: the caller
acknowledges nothing and tries again.

``Rewind``s come back for the caller to publish after the commit: at a hub's first contact (every alert again), and
at a snapshot when central still lacks movements the hub's previous snapshot (of the same incarnation) already had
(a hole below the highest id received, or no movement received since that snapshot): "publish again after
``movements_complete_to``". A hub's incarnation is the highest any of its messages carried: a restored hub's
counters start again from 0 (it publishes its whole ledger again by itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.central.movements import store_movements
from hub.fleet.messages import (
    Alerts,
    FleetMessageError,
    Message,
    Movements,
    Rewind,
    Snapshot,
    Status,
    decode,
    parse_topic,
)

if TYPE_CHECKING:
    import asyncpg

REJECTED_PAYLOAD_KEPT = 64 * 1024
PRUNE_BATCH = 10_000  # refused messages deleted at most per batch transaction
DATA_ERROR_CLASSES = ("22", "23", "54")  # data exception, integrity constraint violation, program limit exceeded


@dataclass(frozen=True, slots=True)
class Received:
    """One message as taken from the broker: decoded, or refused with the reason."""

    topic: str
    payload: bytes
    hub: str | None  # the topic's hub (None: the topic names none)
    message: Message | None  # None: refused
    reason: str = ""


def receive(prefix: str, topic: str, payload: bytes) -> Received:
    """Check one message's topic and payload (never raises)."""
    try:
        hub, kind = parse_topic(prefix, topic)
    except FleetMessageError as exc:
        return Received(topic, payload, None, None, str(exc))
    try:
        return Received(topic, payload, hub, decode(hub, kind, payload))
    except FleetMessageError as exc:
        return Received(topic, payload, hub, None, str(exc))
    except Exception as exc:  # a decoder bug must not stop the consumer: refuse, record, go on
        return Received(topic, payload, hub, None, f"cannot decode: {type(exc).__name__}: {exc}")


@dataclass(slots=True)
class Outcome:
    """What a committed batch did."""

    messages: int = 0
    movements_inserted: int = 0
    movements_duplicate: int = 0  # not inserted: redelivered, or held already (matched, conflicts)
    movements_matched: int = 0  # held under another incarnation: the same movement (a restored hub's ledger again)
    movements_conflicting: int = 0  # not stored: another movement holds its source_ref/leg or incarnation/id
    alerts: int = 0
    snapshots: int = 0
    statuses: int = 0
    ignored: int = 0  # rewinds (central's own, on the hubs' topics) and outdated snapshots / statuses
    rejected: list[Received] = field(default_factory=list)
    rejected_pruned: int = 0  # rows deleted from ``rejected`` (RejectedBound)
    new_hubs: list[str] = field(default_factory=list)
    rewinds: list[Rewind] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        for name in ("messages", "movements_inserted", "movements_duplicate", "movements_matched",
                     "movements_conflicting", "alerts", "snapshots", "statuses"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.ignored += other.ignored
        self.rejected_pruned += other.rejected_pruned
        self.rejected += other.rejected
        self.new_hubs += other.new_hubs
        self.rewinds += other.rewinds


def is_data_error(exc: BaseException) -> bool:
    """PostgreSQL refused a value (not: the connection, the server, a lock), or asyncpg could not encode one (its
    client-side ``DataError``: an ``InterfaceError`` that is a ``ValueError``)."""
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state[:2] in DATA_ERROR_CLASSES:
        return True
    return type(exc).__name__ == "DataError" and isinstance(exc, ValueError)


@dataclass(frozen=True, slots=True)
class RejectedBound:
    """How much of ``rejected`` to keep: rows received in the last ``keep_ms``, and the newest ``keep_rows`` of those;
    ``limit``: rows deleted at most in one transaction."""

    keep_ms: int
    keep_rows: int
    limit: int = PRUNE_BATCH


async def apply_batch(
    conn: asyncpg.Connection, batch: Sequence[Received], now_ms: int, prune: RejectedBound | None = None
) -> Outcome:
    """Write ``batch`` in one transaction (see the module's doc), pruning ``rejected`` in it when ``prune`` says so;
    returns what it did once committed."""
    try:
        async with conn.transaction():
            out = await _apply(conn, batch, now_ms)
            if prune is not None:
                out.rejected_pruned = await prune_rejected(conn, now_ms, prune)
            return out
    except Exception as exc:
        if not is_data_error(exc) or len(batch) < 1:
            raise
    out = Outcome()
    async with conn.transaction():
        for item in batch:
            try:
                async with conn.transaction():  # a savepoint: this message, all of it or nothing
                    out.add(await _apply(conn, [item], now_ms))
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                refused = Received(item.topic, item.payload, item.hub, None, f"the database refused it: {exc}")
                out.add(await _apply(conn, [refused], now_ms))
        if prune is not None:
            out.rejected_pruned = await prune_rejected(conn, now_ms, prune)
    return out


# the rows to delete, oldest first: received before $1, or older than the $2-th newest; rows another transaction
# has locked (another consumer pruning) are skipped, not waited for
_PRUNE_REJECTED = """
WITH doomed AS (
    SELECT id FROM rejected
    WHERE received_ms < $1 OR id <= (SELECT id FROM rejected ORDER BY id DESC OFFSET $2 LIMIT 1)
    ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM rejected r USING doomed d WHERE r.id = d.id RETURNING 1
) SELECT count(*) FROM gone
"""


async def prune_rejected(conn: asyncpg.Connection, now_ms: int, bound: RejectedBound) -> int:
    """Delete from ``rejected`` what ``bound`` does not keep (at most ``bound.limit`` rows); how many, in the
    caller's transaction."""
    return int(await conn.fetchval(_PRUNE_REJECTED, now_ms - bound.keep_ms, bound.keep_rows, bound.limit))


# ------------------------------------------------------------------------------------------------- the batch


@dataclass(slots=True)
class _Hub:
    """A hub's row, read at the start of the transaction (locked) and written back at its end."""

    hub_id: str
    created: bool
    status: str
    status_sent_ms: int | None
    incarnation: int  # the newest of the hub's ledger heard of (0: none yet)
    snapshot_incarnation: int | None
    snapshot_sent_ms: int | None
    snapshot_received_ms: int | None
    snapshot_last_movement_id: int | None
    inserted: int
    max_id: int
    complete_to: int
    movements_received_ms: int | None
    rewind_after: int | None
    rewind_requested_ms: int | None


_UPSERT_HUBS = """
INSERT INTO hubs AS h (hub_id, first_contact_ms, last_contact_ms, last_sent_ms)
SELECT t.hub_id, $3, $3, t.sent_ms FROM unnest($1::text[], $2::bigint[]) AS t(hub_id, sent_ms) ORDER BY t.hub_id
ON CONFLICT (hub_id) DO UPDATE SET last_contact_ms = greatest(h.last_contact_ms, excluded.last_contact_ms),
    last_sent_ms = greatest(h.last_sent_ms, excluded.last_sent_ms)
RETURNING h.hub_id, (h.xmax = 0) AS created, h.status, h.status_sent_ms, h.incarnation, h.snapshot_incarnation,
    h.snapshot_sent_ms, h.snapshot_received_ms, h.snapshot_last_movement_id, 0::bigint AS inserted,
    h.movements_max_id AS max_id, h.movements_complete_to AS complete_to, h.movements_received_ms, h.rewind_after,
    h.rewind_requested_ms
"""
# what is written back, in _WRITE_HUBS's order
_WRITTEN = (
    "hub_id", "status", "status_sent_ms", "snapshot_sent_ms", "snapshot_received_ms", "snapshot_last_movement_id",
    "inserted", "max_id", "complete_to", "movements_received_ms", "rewind_after", "rewind_requested_ms",
    "incarnation", "snapshot_incarnation",
)  # fmt: skip

_WRITE_HUBS = """
UPDATE hubs AS h SET status = t.status, status_sent_ms = t.status_sent_ms, snapshot_sent_ms = t.snapshot_sent_ms,
    snapshot_received_ms = t.snapshot_received_ms, snapshot_last_movement_id = t.snapshot_last_movement_id,
    movements_stored = h.movements_stored + t.inserted, movements_max_id = t.max_id,
    movements_complete_to = t.complete_to, movements_received_ms = t.movements_received_ms,
    rewind_after = t.rewind_after, rewind_requested_ms = t.rewind_requested_ms, incarnation = t.incarnation,
    snapshot_incarnation = t.snapshot_incarnation
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
    $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[])
    AS t(hub_id, status, status_sent_ms, snapshot_sent_ms, snapshot_received_ms, snapshot_last_movement_id, inserted,
         max_id, complete_to, movements_received_ms, rewind_after, rewind_requested_ms, incarnation,
         snapshot_incarnation)
WHERE h.hub_id = t.hub_id
"""

_ALERT_NAMES = (
    "hub_id, id, incarnation, rev, kind, cause_key, status, opened_ms, acknowledged_ms, acknowledged_by, resolved_ms,"
    " resolved_by, resolution, resolution_movement_id"
)
_ALERT_TYPES = (
    "text",
    "bigint",
    "bigint",
    "bigint",
    "text",
    "text",
    "text",
    "bigint",
    "bigint",
    "text",
    "bigint",
    "text",
    "text",
    "bigint",
)
_ALERT_ARRAYS = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_ALERT_TYPES))
_UPSERT_ALERTS = f"""
WITH a AS (
    INSERT INTO alerts AS al ({_ALERT_NAMES}, received_ms)
    SELECT t.*, ${len(_ALERT_TYPES) + 1} FROM unnest({_ALERT_ARRAYS})
        AS t({_ALERT_NAMES})
    ON CONFLICT (hub_id, incarnation, id) DO UPDATE SET {
    ", ".join(f"{c} = excluded.{c}" for c in _ALERT_NAMES.replace(" ", "").split(",")[3:])
}, received_ms = excluded.received_ms
    WHERE al.rev < excluded.rev
    RETURNING 1
) SELECT count(*) FROM a
"""

_SNAPSHOT_TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("snapshot_skus", "sku, name, unit_weight_dg, reorder_point, reorder_qty, capacity, gtin",
     ("text", "text", "bigint", "bigint", "bigint", "bigint", "text")),
    ("snapshot_lanes", "lane_id, node_id, lane_index, sku, count, weight_dg, ts_ms",
     ("text", "bigint", "integer", "text", "bigint", "bigint", "bigint")),
    ("snapshot_nodes", "node_id, label, fw_version, last_seen_ms", ("bigint", "text", "text", "bigint")),
    ("snapshot_book", "sku, location, qty", ("text", "text", "bigint")),
)  # fmt: skip

_INSERT_REJECTED = """
INSERT INTO rejected (received_ms, topic, hub_id, reason, payload, payload_bytes)
SELECT $1, t.* FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[], $6::integer[])
    AS t(topic, hub_id, reason, payload, payload_bytes)
"""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def _apply(conn: asyncpg.Connection, batch: Sequence[Received], now_ms: int) -> Outcome:
    out = Outcome(messages=len(batch))
    accepted = [r.message for r in batch if r.message is not None and not isinstance(r.message, Rewind)]
    out.ignored += sum(1 for r in batch if isinstance(r.message, Rewind))
    hubs = await _upsert_hubs(conn, accepted, now_ms)
    out.new_hubs = sorted(h.hub_id for h in hubs.values() if h.created)
    out.rewinds = [Rewind(hub, now_ms, None, True) for hub in out.new_hubs]  # first contact: every alert again
    for m in accepted:  # a newer incarnation (a restored ledger): its counters start from nothing
        h = hubs[m.hub]
        if isinstance(m, (Movements, Alerts, Snapshot)) and m.incarnation > h.incarnation:
            h.incarnation, h.max_id, h.complete_to = m.incarnation, 0, 0
    movements = [m for m in accepted if isinstance(m, Movements)]
    if movements:
        await _movements(conn, movements, hubs, now_ms, out)
    alerts = [m for m in accepted if isinstance(m, Alerts)]
    if alerts:
        await _alerts(conn, alerts, now_ms, out)
    for status in sorted((m for m in accepted if isinstance(m, Status)), key=lambda s: s.sent_ms):
        h = hubs[status.hub]
        newer = h.status_sent_ms is None or status.sent_ms > h.status_sent_ms
        if newer or (status.sent_ms == h.status_sent_ms and status.state == "offline"):  # the will of that session
            h.status, h.status_sent_ms = status.state, status.sent_ms
            out.statuses += 1
        else:
            out.ignored += 1
    for snap in sorted((m for m in accepted if isinstance(m, Snapshot)), key=lambda s: (s.incarnation, s.sent_ms)):
        if await _snapshot(conn, snap, hubs[snap.hub], now_ms, out):
            out.snapshots += 1
        else:
            out.ignored += 1
    if hubs:
        await _write_hubs(conn, hubs.values())
    refused = [r for r in batch if r.message is None]
    if refused:
        await conn.execute(
            _INSERT_REJECTED,
            now_ms,
            [r.topic[:1024] for r in refused],
            [r.hub for r in refused],
            [r.reason[:2000] for r in refused],
            [r.payload[:REJECTED_PAYLOAD_KEPT] for r in refused],
            [len(r.payload) for r in refused],
        )
        out.rejected = list(refused)
    return out


async def _upsert_hubs(conn: asyncpg.Connection, accepted: Sequence[Message], now_ms: int) -> dict[str, _Hub]:
    sent: dict[str, int] = {}
    for m in accepted:
        sent[m.hub] = max(sent.get(m.hub, 0), m.sent_ms)
    if not sent:
        return {}
    names = sorted(sent)
    rows = await conn.fetch(_UPSERT_HUBS, names, [sent[n] for n in names], now_ms)
    return {r["hub_id"]: _Hub(**dict(r)) for r in rows}


async def _movements(
    conn: asyncpg.Connection, batches: Sequence[Movements], hubs: dict[str, _Hub], now_ms: int, out: Outcome
) -> None:
    counts = await store_movements(conn, batches, hubs, now_ms)
    out.movements_inserted += counts.inserted
    out.movements_duplicate += counts.sent - counts.inserted
    out.movements_matched += counts.matched
    out.movements_conflicting += counts.conflicts


async def _alerts(conn: asyncpg.Connection, batches: Sequence[Alerts], now_ms: int, out: Outcome) -> None:
    latest: dict[tuple[str, int, int], tuple[Any, ...]] = {}  # (hub, incarnation, id): the highest rev
    for b in batches:
        for a in b.rows:
            key = (b.hub, b.incarnation, a.id)
            if key not in latest or latest[key][3] < a.rev:
                latest[key] = (b.hub, a.id, b.incarnation, a.rev, *a[1:11])
    rows = [latest[k] for k in sorted(latest)]
    out.alerts += await conn.fetchval(_UPSERT_ALERTS, *_columns(rows, len(_ALERT_TYPES)), now_ms)


async def _snapshot(conn: asyncpg.Connection, snap: Snapshot, h: _Hub, now_ms: int, out: Outcome) -> bool:
    """Replace the hub's snapshot if this one is newer; decide on a rewind. False: an older one, ignored (or one of
    a lost ledger, delivered late)."""
    if snap.incarnation < h.incarnation:
        return False
    if (
        h.snapshot_incarnation == snap.incarnation
        and h.snapshot_sent_ms is not None
        and snap.sent_ms <= h.snapshot_sent_ms
    ):
        return False
    same_life = h.snapshot_incarnation == snap.incarnation  # the previous snapshot's ids count in this one's
    previous_last, previous_at = h.snapshot_last_movement_id, h.snapshot_received_ms
    for (table, names, types), rows in zip(
        _SNAPSHOT_TABLES, (snap.skus, snap.lanes, snap.nodes, snap.book), strict=True
    ):
        await conn.execute(f"DELETE FROM {table} WHERE hub_id = $1", snap.hub)
        if rows:
            params = ", ".join(f"${i + 2}::{t}[]" for i, t in enumerate(types))
            fields = names.split(", ")  # the records' attribute names (named tuples or dataclasses)
            await conn.execute(
                f"INSERT INTO {table} (hub_id, {names}) SELECT $1, t.* FROM unnest({params}) AS t({names})",
                snap.hub,
                *_columns([[getattr(row, f) for f in fields] for row in rows], len(types)),
            )
    h.snapshot_sent_ms, h.snapshot_received_ms, h.snapshot_last_movement_id = (
        snap.sent_ms,
        now_ms,
        snap.last_movement_id,
    )
    h.snapshot_incarnation = snap.incarnation
    if same_life and previous_last is not None and h.complete_to < previous_last:
        hole = h.max_id > h.complete_to
        stalled = h.movements_received_ms is None or (previous_at is not None and h.movements_received_ms < previous_at)
        if hole or stalled:
            h.rewind_after, h.rewind_requested_ms = h.complete_to, now_ms
            # whatever lost those movements (a broker that lost its state, a publish no subscription took) lost
            # the alert changes sent beside them too, and nothing else would ever show it: ask for every alert
            out.rewinds.append(Rewind(snap.hub, now_ms, h.complete_to, True))
    return True


async def _write_hubs(conn: asyncpg.Connection, hubs: Any) -> None:
    rows = [tuple(getattr(h, f) for f in _WRITTEN) for h in sorted(hubs, key=lambda h: h.hub_id)]
    await conn.execute(_WRITE_HUBS, *_columns(rows, len(_WRITTEN)))
