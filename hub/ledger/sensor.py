"""The sensor path: many node events, gaps and node-state updates applied in one write transaction.

This is the hot path (``smartshelf bench hub``), so a batch costs a fixed number of statements whatever its size: read
the nodes' marks and lanes of the batch, then one statement per table, its rows as one JSON array (``hub.ledger.bulk``:
one SQLite step for the whole batch, without the GIL, where ``executemany`` takes the GIL back for every row).

Rules:

* **Exactly once.** An event's source reference is ``node:<node_id>:ev:<event_seq>``. An event at or below the
  node's highest contiguous ``event_seq``, or already stored above it, is a ``Duplicate`` (nothing written).
  Events skipped by a sensor gap (``skip_events_to``) also count as duplicates if they ever arrive: the gap
  correction already booked their effect from the lane counters.
* **Highest contiguous event_seq** (what the hub acks, protocol §4.3) is advanced in the same transaction as the
  events it covers, together with ``last_uplink_seq`` and the downlink session/seq (protocol §11).
* **Observed stock only.** A pick/put/anomaly is a movement of ``count_delta`` (signed, as the node counted it)
  at ``sensor:<lane_id>`` with reason ``sensor_pick`` / ``sensor_put`` / ``sensor_anomaly``, carrying the weight
  change and confidence as evidence; a count event (staff counted the lane, protocol v1.1) likewise, with reason
  ``sensor_count``. It never touches book stock.
* **Unknown lanes are kept, not rejected.** A node event for a lane the hub has not registered is stored (and
  therefore acknowledged, so the node's outbox does not fill up) under an auto-registered *unassigned* lane
  ``node<node_id>-lane<index>`` (``.2``, ``.3``, ... when a replacement node took that id over) with no SKU: it
  counts towards no SKU's observed stock, and an
  ``unassigned_lane`` alert is opened. Assigning the lane resolves the alert; events from then on count for the
  SKU, and the units booked before become the SKU's then (``postings.settle``: its node's count, at once).
* **Bad input fails only its own item** (e.g. a lane index above 31): its future gets ``InvalidArgument`` and the
  rest of the batch is applied.
* **Lane readings** (``LaneReading``: a lane's weight and count from ``lane_state``, for the shelf charts) go to
  ``lane_readings`` under the lane registered for ``(node_id, lane_index)`` (the same lookup as events, in the same
  transaction). A reading of a lane the ledger does not know is ignored: no row, no lane, no alert, no error.
  Ingest thins them first (``ReadingThinner``); ``prune_readings`` deletes old ones in small batches.
* **Tag events** (``TagEvent``, protocol v1.2 ``tag_seen`` / ``tag_lost``) are events of the node: the same dedupe
  by ``(node, event_seq)``, the same contiguous mark, the same lane lookup (an unknown lane is registered as for a
  weight event). They are booked in ``tag_events`` and move the lanes' tag presence (``tag_booking``), never stock.
  ``TagRecheck`` and ``ReaderReport`` (a node restarted; a reader's state) ride in the same batches.
* **A skip without units.** Events a node's full outbox dropped are booked from its lane counters as a sensor gap
  that moves the mark past them (``skip_events_to``). When no lane's counters changed (the dropped events were tag
  events, which are not weight, or weight events that cancel out) the gap has 0 units: the mark moves and the skip
  is recorded in the audit trail (``event_skip``, actor ``node:<id>``), with no stock movement.
* **Audited as the hub's own work** (origin ``auto``, actor ``node:<id>``): a skip without units, a lane registered
  (``register_lane``) and its ``unassigned_lane`` alert opened (``open_alert``). The movements of node events are
  their own trail (append-only, actor ``node:<id>``, ``recorded_ms``) and get no audit entry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from hub.ledger import lane_activity, tag_booking
from hub.ledger.bulk import json_insert, rows_param
from hub.ledger.causes import Cause
from hub.ledger.models import (
    SENSOR_PREFIX,
    AlertKind,
    Applied,
    ApplyResult,
    Duplicate,
    InvalidArgument,
    LaneReading,
    LedgerError,
    NodeUpdate,
    Reason,
    SensorEvent,
    SensorGap,
)
from hub.ledger.origin import AUTOMATIC
from hub.ledger.tags import ReaderReport, TagEvent, TagRecheck
from shared_protocol.messages import KIND_ANOMALY, KIND_COUNT, KIND_PICK, KIND_PUT

SensorItem = SensorEvent | SensorGap | NodeUpdate | LaneReading | TagEvent | TagRecheck | ReaderReport
# bool: a lane reading (stored or not); int: a recheck (tags marked unconfirmed)
SensorOutcome = ApplyResult | bool | int | None | LedgerError
# the items that read and move a node's marks (a recheck and a reader report: only its last uplink seq)
_NODE_STATE = (SensorEvent, SensorGap, NodeUpdate, TagEvent, TagRecheck, ReaderReport)

_KIND_REASON = {
    KIND_PICK: Reason.SENSOR_PICK,
    KIND_PUT: Reason.SENSOR_PUT,
    KIND_ANOMALY: Reason.SENSOR_ANOMALY,
    KIND_COUNT: Reason.SENSOR_COUNT,
}
_U32 = 0xFFFFFFFF

# A batch's movements as one JSON array of lanes [lane_id, sku, first id, node_id, rows], each row [ts_ms, qty,
# reason, source_ref, note, event_seq, weight_delta_dg, confidence] (ids consecutive from the first; leg 0, no
# reversal: the columns' defaults); recorded_ms is ?2. What a lane's rows share is sent once: fewer values to encode
# and to extract (the hot path, hub.ledger.bulk). json_extract, not ->> (SQLite 3.38): schema.MIN_SQLITE is 3.37.
_G = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(5))
_R = [f"json_extract(r.value, '$[{i}]')" for i in range(8)]
_INSERT_MOVEMENT = (
    f"WITH g(lane_id, sku, first_id, node, rows) AS MATERIALIZED (SELECT {_G} FROM json_each(?1)) INSERT INTO"
    " movements (id, ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor, note, node_id, event_seq,"
    " weight_delta_dg, confidence)"
    f" SELECT g.first_id + r.key, {_R[0]}, ?2, g.sku, '{SENSOR_PREFIX}' || g.lane_id, {_R[1]}, {_R[2]}, {_R[3]},"
    f" 'node:' || g.node, {_R[4]}, g.node, {_R[5]}, {_R[6]}, {_R[7]} FROM g, json_each(g.rows) AS r"
)
_UPSERT_NODE = json_insert(
    "INSERT INTO nodes (node_id, fw_version, first_seen_ms, last_seen_ms, last_uplink_seq, downlink_session,"
    " downlink_seq, highest_contiguous_event_seq)",
    8,
    "ON CONFLICT (node_id) DO UPDATE SET fw_version = excluded.fw_version, first_seen_ms = excluded.first_seen_ms,"
    " last_seen_ms = excluded.last_seen_ms, last_uplink_seq = excluded.last_uplink_seq,"
    " downlink_session = excluded.downlink_session, downlink_seq = excluded.downlink_seq,"
    " highest_contiguous_event_seq = excluded.highest_contiguous_event_seq",
)
_UPSERT_READING = json_insert(
    "INSERT INTO lane_readings (lane_id, ts_ms, weight_dg, count, flags)",
    5,
    "ON CONFLICT (lane_id, ts_ms) DO UPDATE SET weight_dg = excluded.weight_dg, count = excluded.count,"
    " flags = excluded.flags",
)

READING_INTERVAL_MS = 300_000  # a quiet lane: one stored reading per 5 minutes (the charts show 5-min steps)
READING_WEIGHT_DG = 20  # ... and whenever its weight moved more than this (2 g) since the last stored one
READING_RETENTION_MS = 8 * 86_400_000  # readings older than this are pruned
PRUNE_BATCH_ROWS = 2000  # rows deleted per pruning transaction (the writer serves other work in between)


class ReadingThinner:
    """Which lane readings are worth storing: the first of a lane, then one whenever the count or flags changed,
    the weight moved more than ``weight_dg`` since the last stored reading, or ``interval_ms`` passed.

    Memory: one entry per ``(node_id, lane_index)`` ever reported (at most 32 per node)."""

    def __init__(self, interval_ms: int = READING_INTERVAL_MS, weight_dg: int = READING_WEIGHT_DG) -> None:
        self.interval_ms = interval_ms
        self.weight_dg = weight_dg
        self._last: dict[tuple[int, int], tuple[int, int, int, int]] = {}  # -> ts_ms, count, weight_dg, flags

    def keep(self, r: LaneReading) -> bool:
        key = (r.node_id, r.lane_index)
        last = self._last.get(key)
        if last is not None:
            ts, count, weight, flags = last
            if (
                r.count == count
                and r.flags == flags
                and abs(r.weight_dg - weight) <= self.weight_dg
                and 0 <= r.ts_ms - ts < self.interval_ms
            ):
                return False
        self._last[key] = (r.ts_ms, r.count, r.weight_dg, r.flags)
        return True

    def forget(self, node_id: int, lane_index: int) -> None:
        """Store the lane's next reading whatever it is (e.g. when the stored one was lost)."""
        self._last.pop((node_id, lane_index), None)


async def prune_readings(
    conn: aiosqlite.Connection, before_ms: int, from_lane: str = "", max_rows: int = PRUNE_BATCH_ROWS
) -> tuple[int, str | None]:
    """Delete readings older than ``before_ms`` lane by lane, from ``from_lane`` on (inclusive), inside the
    caller's write transaction, until ``max_rows`` are gone.

    Returns (rows deleted, the lane to resume from; None when every lane was visited). Every statement is a
    primary-key seek or range, never a scan of the table: the next lane is found by seeking past the previous."""
    deleted = 0
    op, lane = ">=", from_lane
    while True:
        found = await conn.execute_fetchall(
            f"SELECT lane_id FROM lane_readings WHERE lane_id {op} ? ORDER BY lane_id LIMIT 1", (lane,)
        )
        row = next(iter(found), None)
        if row is None:
            return deleted, None
        lane, op = str(row[0]), ">"
        if deleted >= max_rows:
            return deleted, lane
        cur = await conn.execute(
            "DELETE FROM lane_readings WHERE lane_id = ? AND ts_ms IN (SELECT ts_ms FROM lane_readings"
            " WHERE lane_id = ? AND ts_ms < ? ORDER BY ts_ms LIMIT ?)",
            (lane, lane, before_ms, max_rows - deleted),
        )
        deleted += max(cur.rowcount, 0)
        await cur.close()
        if deleted >= max_rows:
            return deleted, lane  # this lane may have more


@dataclass(slots=True)
class _Node:
    node_id: int
    fw_version: str | None = None
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None
    last_uplink_seq: int = 0
    downlink_session: int = 0
    downlink_seq: int = 0
    contiguous: int = 0
    above: set[int] = field(default_factory=set)  # stored event_seqs above the contiguous mark

    def seen(self, ms: int | None, uplink_seq: int | None) -> None:
        if ms is not None:
            self.first_seen_ms = ms if self.first_seen_ms is None else self.first_seen_ms
            self.last_seen_ms = ms if self.last_seen_ms is None else max(self.last_seen_ms, ms)
        if uplink_seq is not None:
            self.last_uplink_seq = max(self.last_uplink_seq, uplink_seq)

    def advance(self) -> None:
        while self.contiguous + 1 in self.above:
            self.contiguous += 1
            self.above.discard(self.contiguous)

    def skip_to(self, event_seq: int) -> None:
        if event_seq > self.contiguous:
            self.contiguous = event_seq
            self.above = {s for s in self.above if s > event_seq}
            self.advance()


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value!r} outside {lo}..{hi}")
    return value


def _plainly_valid_event(e: SensorEvent) -> bool:
    """The hot path's check; ``_validate`` explains what is wrong when this says False."""
    return (
        type(e.node_id) is int
        and type(e.event_seq) is int
        and type(e.lane_index) is int
        and type(e.count_delta) is int
        and type(e.weight_delta_dg) is int
        and type(e.confidence) is int
        and type(e.observed_ms) is int
        and 1 <= e.node_id <= _U32
        and 1 <= e.event_seq <= _U32
        and 0 <= e.lane_index <= 31
        and e.kind in _KIND_REASON
        and -0x8000 <= e.count_delta <= 0x7FFF
        and -0x80000000 <= e.weight_delta_dg <= 0x7FFFFFFF
        and 0 <= e.confidence <= 100
        and 0 <= e.observed_ms <= 2**62
        and (e.uplink_seq is None or (type(e.uplink_seq) is int and 1 <= e.uplink_seq <= _U32))
        and (e.note is None or type(e.note) is str)
    )


def _validate(item: SensorItem) -> None:
    if isinstance(item, SensorEvent) and _plainly_valid_event(item):
        return
    if isinstance(item, TagEvent | TagRecheck | ReaderReport):
        tag_booking.validate(item)
        return
    _check_int("node_id", item.node_id, 1, _U32)
    if isinstance(item, SensorEvent):
        _check_int("event_seq", item.event_seq, 1, _U32)
        _check_int("lane_index", item.lane_index, 0, 31)
        if item.kind not in _KIND_REASON:
            raise InvalidArgument(f"unknown event kind {item.kind!r}")
        _check_int("count_delta", item.count_delta, -0x8000, 0x7FFF)
        _check_int("weight_delta_dg", item.weight_delta_dg, -0x80000000, 0x7FFFFFFF)
        _check_int("confidence", item.confidence, 0, 100)
        _check_int("observed_ms", item.observed_ms, 0, 2**62)
        if item.uplink_seq is not None:
            _check_int("uplink_seq", item.uplink_seq, 1, _U32)
        if item.note is not None and not isinstance(item.note, str):
            raise InvalidArgument(f"note {item.note!r} must be a string")
    elif isinstance(item, SensorGap):
        _check_int("lane_index", item.lane_index, 0, 31)
        _check_int("count_delta", item.count_delta, -(2**31), 2**31 - 1)
        _check_int("observed_ms", item.observed_ms, 0, 2**62)
        if not isinstance(item.ref, str) or not 1 <= len(item.ref) <= 64 or not item.ref.isprintable():
            raise InvalidArgument(f"gap ref {item.ref!r} must be 1..64 printable characters")
        if item.skip_events_to is not None:
            _check_int("skip_events_to", item.skip_events_to, 0, _U32)
    elif isinstance(item, LaneReading):
        _check_int("lane_index", item.lane_index, 0, 31)
        _check_int("ts_ms", item.ts_ms, 0, 2**62)
        _check_int("weight_dg", item.weight_dg, -0x80000000, 0x7FFFFFFF)
        _check_int("count", item.count, -0x80000000, 0x7FFFFFFF)
        _check_int("flags", item.flags, 0, 0xFFFF)
    else:
        for name in ("uplink_seq", "downlink_session", "downlink_seq", "seen_ms"):
            value = getattr(item, name)
            if value is not None:
                _check_int(name, value, 0, 2**62)


async def apply_batch(conn: aiosqlite.Connection, items: Sequence[SensorItem], now_ms: int) -> list[SensorOutcome]:
    """Apply ``items`` inside the caller's open write transaction; returns one outcome per item, in order."""
    outcomes: list[SensorOutcome] = [None] * len(items)
    valid: list[int] = []
    for i, item in enumerate(items):
        try:
            _validate(item)
            valid.append(i)
        except LedgerError as exc:
            outcomes[i] = exc
    if not valid:
        return outcomes

    node_ids = sorted({items[i].node_id for i in valid})
    ph = ",".join("?" * len(node_ids))
    # Node state is read and written for the nodes of events, gaps and updates; readings only look up lanes.
    state_ids = sorted({items[i].node_id for i in valid if isinstance(items[i], _NODE_STATE)})
    sph = ",".join("?" * len(state_ids))
    nodes = {n: _Node(n) for n in state_ids}
    if state_ids:
        for r in await conn.execute_fetchall(
            "SELECT node_id, fw_version, first_seen_ms, last_seen_ms, last_uplink_seq, downlink_session,"
            f" downlink_seq, highest_contiguous_event_seq FROM nodes WHERE node_id IN ({sph})",
            state_ids,
        ):
            nodes[r[0]] = _Node(*r)
        for node_id, seq in await conn.execute_fetchall(
            "SELECT m.node_id, m.event_seq FROM nodes AS n JOIN movements AS m ON m.node_id = n.node_id"
            f" AND m.event_seq > n.highest_contiguous_event_seq WHERE n.node_id IN ({sph}) UNION ALL"
            " SELECT t.node_id, t.event_seq FROM nodes AS n JOIN tag_events AS t ON t.node_id = n.node_id"
            f" AND t.event_seq > n.highest_contiguous_event_seq WHERE n.node_id IN ({sph})",
            [*state_ids, *state_ids],
        ):
            nodes[node_id].above.add(seq)
    lanes: dict[tuple[int, int], tuple[str, str | None]] = {
        (r[0], r[1]): (r[2], r[3])
        for r in await conn.execute_fetchall(
            f"SELECT node_id, lane_index, lane_id, sku FROM lanes WHERE node_id IN ({ph})", node_ids
        )
    }
    # A lane the ledger does not have gets the id node<N>-lane<I>, unless a lane taken over from a replaced node
    # holds that id already (Tx.replace_node): then node<N>-lane<I>.2, .3, ... (rare: looked up only then).
    missing = {
        (it.node_id, it.lane_index)
        for it in (items[i] for i in valid)
        if isinstance(it, SensorEvent | SensorGap | TagEvent) and (it.node_id, it.lane_index) not in lanes
    }
    taken: set[str] = set()
    for n, i in missing:
        for r in await conn.execute_fetchall("SELECT lane_id FROM lanes WHERE lane_id GLOB ?", (f"node{n}-lane{i}*",)):
            taken.add(str(r[0]))
    gap_refs = [it.source_ref for it in (items[i] for i in valid) if isinstance(it, SensorGap)]
    seen_refs: dict[str, int] = {}
    if gap_refs:
        gph = ",".join("?" * len(gap_refs))
        for ref, mid in await conn.execute_fetchall(
            f"SELECT source_ref, id FROM movements WHERE source_ref IN ({gph})", gap_refs
        ):
            seen_refs[ref] = mid
    next_id = int(next(iter(await conn.execute_fetchall("SELECT coalesce(max(id), 0) + 1 FROM movements")))[0])

    new_lanes: list[tuple[str, int, int]] = []
    unassigned: dict[str, tuple[int, int]] = {}
    # each lane's node, movement rows (as _INSERT_MOVEMENT reads them) and the item of each row
    by_lane: lane_activity.Lanes = {}
    batch_gaps: dict[str, int] = {}  # the item of a gap booked in the batch, by source ref
    repeats: list[tuple[int, str]] = []  # items that repeat a gap of the batch: their Duplicate names its movement
    readings: dict[tuple[str, int], tuple[str, int, int, int, int]] = {}  # (lane_id, ts_ms) -> row: last one wins
    # tag events (item index, event, lane id) and rechecks in item order: a restart's recheck before the tags the
    # node reads again after it, never after them
    tags: list[tuple[int, TagEvent, str] | tuple[int, TagRecheck]] = []
    reports: list[ReaderReport] = []
    skips: list[tuple[Any, ...]] = []  # audit rows of gaps without units

    def lane_of(node_id: int, lane_index: int) -> tuple[str, str | None]:
        lane = lanes.get((node_id, lane_index))
        if lane is None:
            lane_id, k = f"node{node_id}-lane{lane_index}", 1
            while lane_id in taken:
                k += 1
                lane_id = f"node{node_id}-lane{lane_index}.{k}"
            lane = (lane_id, None)
            lanes[(node_id, lane_index)] = lane
            new_lanes.append((lane[0], node_id, lane_index))
        if lane[1] is None:
            unassigned[lane[0]] = (node_id, lane_index)
        return lane

    for i in valid:
        item = items[i]
        if isinstance(item, TagRecheck | ReaderReport):
            nodes[item.node_id].seen(now_ms, item.uplink_seq)  # committed with it: a replay cannot book it again
            if isinstance(item, TagRecheck):
                tags.append((i, item))
            else:
                reports.append(item)
            continue
        if isinstance(item, LaneReading):
            known = lanes.get((item.node_id, item.lane_index))
            if known is not None:  # else ignored: a reading registers no lane
                readings[(known[0], item.ts_ms)] = (known[0], item.ts_ms, item.weight_dg, item.count, item.flags)
            outcomes[i] = known is not None  # the reading's future: stored or not
            continue
        node = nodes[item.node_id]
        if isinstance(item, TagEvent):
            node.seen(now_ms, item.uplink_seq)
            if item.event_seq <= node.contiguous or item.event_seq in node.above:
                outcomes[i] = Duplicate(item.source_ref)
                continue
            tags.append((i, item, lane_of(item.node_id, item.lane_index)[0]))
            node.above.add(item.event_seq)
            node.advance()
        elif isinstance(item, SensorEvent):
            node.seen(now_ms, item.uplink_seq)
            ref = item.source_ref
            if item.event_seq <= node.contiguous or item.event_seq in node.above:
                outcomes[i] = Duplicate(ref)
                continue
            lane = lane_of(item.node_id, item.lane_index)
            group = by_lane.get(lane)
            if group is None:
                group = by_lane[lane] = (item.node_id, [], [])
            group[1].append(
                (item.observed_ms, item.count_delta, _KIND_REASON[item.kind].value, ref, item.note, item.event_seq,
                 item.weight_delta_dg, item.confidence)
            )  # fmt: skip
            group[2].append(i)
            node.above.add(item.event_seq)
            node.advance()
        elif isinstance(item, SensorGap):
            node.seen(now_ms, None)
            if item.skip_events_to is not None:
                node.skip_to(item.skip_events_to)
            ref = item.source_ref
            if ref in seen_refs:
                outcomes[i] = Duplicate(ref, (seen_refs[ref],))
                continue
            if ref in batch_gaps:
                repeats.append((i, ref))
                continue
            if item.count_delta == 0 and item.skip_events_to is not None:  # a skip without units: no stock gap
                details = {"ref": ref, "lane": item.lane_index, "to": item.skip_events_to, "note": item.note}
                skips.append(_audit_row(now_ms, item.node_id, "event_skip", details))
                outcomes[i] = Applied(ref, ())
                continue
            lane = lane_of(item.node_id, item.lane_index)
            batch_gaps[ref] = i
            group = by_lane.setdefault(lane, (item.node_id, [], []))
            group[1].append(
                (item.observed_ms, item.count_delta, Reason.SENSOR_GAP.value, ref, item.note, None, None, None)
            )
            group[2].append(i)
        else:
            node.seen(item.seen_ms if item.seen_ms is not None else now_ms, item.uplink_seq)
            if item.fw_version is not None:
                node.fw_version = item.fw_version
            if item.downlink_session is not None and item.downlink_session != node.downlink_session:
                node.downlink_session = item.downlink_session
                node.downlink_seq = item.downlink_seq or 0
            elif item.downlink_seq is not None:
                node.downlink_seq = max(node.downlink_seq, item.downlink_seq)

    if readings:
        await conn.execute(_UPSERT_READING, rows_param(list(readings.values())))
    marks = [
        (n.node_id, n.fw_version, n.first_seen_ms, n.last_seen_ms, n.last_uplink_seq, n.downlink_session,
         n.downlink_seq, n.contiguous)
        for n in nodes.values()
    ]  # fmt: skip
    await conn.execute(_UPSERT_NODE, rows_param(marks))
    if new_lanes:
        await conn.executemany(
            "INSERT INTO lanes (lane_id, node_id, lane_index, sku) VALUES (?, ?, ?, NULL)", new_lanes
        )
        for lane_id, n, li in new_lanes:
            skips.append(_audit_row(now_ms, n, "register_lane", {"lane_id": lane_id, "node_id": n, "lane_index": li}))
    if by_lane:
        await lane_activity.insert(conn, _INSERT_MOVEMENT, by_lane, next_id, now_ms, outcomes)
        for i, ref in repeats:
            booked = outcomes[batch_gaps[ref]]
            assert isinstance(booked, Applied)
            outcomes[i] = Duplicate(ref, booked.movement_ids)
    if tags:
        for i, outcome in await tag_booking.book_in_order(conn, tags, now_ms):
            outcomes[i] = outcome
    if reports:
        await tag_booking.reader_reports(conn, reports)
    # An unassigned lane's alert, opened once while unresolved (rare: only lanes without a SKU, one statement each, to
    # audit the ones really opened).
    for lane_id, (n, li) in unassigned.items():
        cause = str(Cause.lane(lane_id))
        for (alert_id,) in await conn.execute_fetchall(
            "INSERT OR IGNORE INTO alerts (kind, cause_key, status, opened_ms, evidence) VALUES (?, ?, 'open', ?, ?)"
            " RETURNING id",
            (
                AlertKind.UNASSIGNED_LANE.value,
                cause,
                now_ms,
                json.dumps({"lane_id": lane_id, "node_id": n, "lane_index": li}, sort_keys=True),
            ),
        ):
            details = {"alert_id": alert_id, "kind": AlertKind.UNASSIGNED_LANE.value, "cause_key": cause}
            skips.append(_audit_row(now_ms, n, "open_alert", details))
    if skips:
        await conn.executemany(_INSERT_AUDIT, skips)
    return outcomes


# The sensor path's audit entries (a skip without units, a lane registered, its alert opened) are the hub's own work.
_INSERT_AUDIT = "INSERT INTO audit (ts_ms, actor, action, details, origin) VALUES (?, ?, ?, ?, ?)"


def _audit_row(now_ms: int, node_id: int, action: str, details: dict[str, Any]) -> tuple[Any, ...]:
    return (now_ms, f"node:{node_id}", action, json.dumps(details, sort_keys=True), AUTOMATIC)
