"""Booking RFID records inside the writer's sensor batch (``sensor.apply_batch``), and their upkeep.

* **Tag events** (``book_events``): one ``tag_events`` row each, under explicit ids that are never reused
  (``next_event_id``: above the table's AUTOINCREMENT sequence, so pruning the newest events frees no id); dedupe
  and the node's contiguous mark are the batch's (``sensor.apply_batch``: a tag event is one of the node's
  events). The EPC is decoded (``epc.decode``) and its SKU resolved (``tags.tag_sku_sql``'s rule) once per batch.
  Then the lane's presence (``tag_presence``, one row per (lane, EPC): the latest stay) follows the event, **in
  the node's event_seq order**: an event older than the one that set the row (a retransmission overtaken by a
  later event) changes nothing and is booked as ``superseded``. A seen tag already present on the lane is
  ``still`` there (read again after its node restarted: it stays, its arrival unchanged), otherwise it
  ``arrived``; a lost one ``left``.
* **Rechecks** (``recheck``): a node restarted; its present tags become unconfirmed.
* **Reader reports** (``reader_reports``): outages opened and closed in ``rfid_outages``; while every reader of a
  node works, its confirmed present tags are read (``last_read_ms``).
* **Expiry** (``expire_unconfirmed``, through ``Tx`` by reconciliation): a tag still unconfirmed once its reader
  has worked without a break for a while after the restart is recorded gone (``expired``), its departure time
  unknown. Which reader a tag is on the hub does not know; an outage holds a tag back unless it began before the
  tag's last read (that reader was not the tag's: the tag was read).
* **Pruning** (``prune_tags``): events, closed outages and presence rows of tags gone older than the retention,
  in batches; the presence of tags on a lane now is kept whatever its age.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from hub.ledger.bulk import json_insert, rows_param
from hub.ledger.epc import EPC_MAX_BYTES, decode
from hub.ledger.models import Applied, InvalidArgument
from hub.ledger.tags import (
    EXPIRED,
    LOST,
    OUTAGE_SLACK_MS,
    READER_OK,
    READER_STATES,
    SEEN,
    ReaderReport,
    TagEvent,
    TagRecheck,
)

_U32 = 0xFFFFFFFF
_PRESENCE_COLUMNS = (
    "lane_id, epc, node_id, present, seq, first_seen_ms, last_read_ms, left_ms, rssi, gtin, unconfirmed_ms, event_id"
)
_UPSERT_PRESENCE = (
    f"INSERT INTO tag_presence ({_PRESENCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (lane_id, epc) DO UPDATE SET node_id = excluded.node_id, present = excluded.present,"
    " seq = excluded.seq, first_seen_ms = excluded.first_seen_ms, last_read_ms = excluded.last_read_ms,"
    " left_ms = excluded.left_ms, rssi = excluded.rssi, gtin = excluded.gtin,"
    " unconfirmed_ms = excluded.unconfirmed_ms, event_id = excluded.event_id"
)
_INSERT_EVENT = json_insert(
    "INSERT INTO tag_events (id, node_id, event_seq, lane_id, epc, kind, effect, ts_ms, ts_known, recorded_ms, rssi,"
    " gtin, sku, note)",
    14,
)


def _int(name: str, value: object, lo: int, hi: int) -> None:
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value!r} outside {lo}..{hi}")


def validate(item: TagEvent | TagRecheck | ReaderReport) -> None:
    """What the writer refuses of an RFID record (the item alone fails: ``InvalidArgument``)."""
    _int("node_id", item.node_id, 1, _U32)
    _int("ts_ms", item.ts_ms, 0, 2**62)
    if isinstance(item, TagEvent):
        _int("event_seq", item.event_seq, 1, _U32)
        _int("lane_index", item.lane_index, 0, 31)
        if item.kind not in (SEEN, LOST):
            raise InvalidArgument(f"unknown tag event kind {item.kind!r}")
        text = item.epc
        if not isinstance(text, str) or not 2 <= len(text) <= 2 * EPC_MAX_BYTES or len(text) % 2:
            raise InvalidArgument(f"EPC {text!r} must be 1..{EPC_MAX_BYTES} bytes of upper-case hex")
        if text.strip("0123456789ABCDEF"):
            raise InvalidArgument(f"EPC {text!r} must be upper-case hex")
        if item.rssi is not None:
            _int("rssi", item.rssi, -128, 127)
    elif isinstance(item, ReaderReport):
        _int("reader", item.reader, 0, 7)
        if item.state not in READER_STATES:
            raise InvalidArgument(f"unknown reader state {item.state!r}")
        if item.missed_from_ms is not None:
            _int("missed_from_ms", item.missed_from_ms, 0, item.ts_ms)
    if item.uplink_seq is not None:
        _int("uplink_seq", item.uplink_seq, 1, _U32)


@dataclass(slots=True)
class _Stay:
    """A ``tag_presence`` row while the batch works on it."""

    lane_id: str
    epc: str
    node_id: int
    present: int
    seq: int | None
    first_seen_ms: int | None
    last_read_ms: int | None
    left_ms: int | None
    rssi: int | None
    gtin: str | None
    unconfirmed_ms: int | None
    event_id: int

    def newer(self, e: TagEvent) -> bool:
        """Is ``e`` later than the event that set this row? Only the node's own sequence can say."""
        return self.node_id != e.node_id or self.seq is None or e.event_seq > self.seq


async def _skus(conn: aiosqlite.Connection, epcs: dict[str, str | None]) -> dict[str, str | None]:
    """The SKU of each EPC (given its GTIN or None): the imported table first, then the GTIN's SKU."""
    keys = json.dumps(sorted(epcs))
    mapped = {
        r[0]: r[1]
        for r in await conn.execute_fetchall(
            "SELECT epc, sku FROM epc_skus WHERE epc IN (SELECT value FROM json_each(?))", (keys,)
        )
    }
    gtins = sorted({g for g in epcs.values() if g is not None})
    by_gtin = {
        r[0]: r[1]
        for r in await conn.execute_fetchall(
            "SELECT gtin, sku FROM skus WHERE gtin IN (SELECT value FROM json_each(?))", (json.dumps(gtins),)
        )
    }
    return {epc: mapped.get(epc) or (by_gtin.get(g) if g is not None else None) for epc, g in epcs.items()}


async def next_event_id(conn: aiosqlite.Connection) -> int:
    """The id the next ``tag_events`` row takes: above every id ever booked, pruned ones included (the table's
    AUTOINCREMENT sequence), so an id names one event for good (reconciliation's mark and verdicts rely on it)."""
    async with conn.execute(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'tag_events'), 0),"
        " coalesce((SELECT max(id) FROM tag_events), 0)) + 1"
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def book_in_order(
    conn: aiosqlite.Connection, items: Sequence[tuple[int, TagEvent, str] | tuple[int, TagRecheck]], now_ms: int
) -> list[tuple[int, Applied | int]]:
    """A batch's tag events ``(item index, event, lane id)`` and rechecks ``(item index, recheck)`` in item order:
    a node's restart is applied before the tags it reads again after it (they confirm, not the other way round).
    Returns each item's outcome by index: the event's ``Applied`` (its ``tag_events`` id), the tags a recheck
    marked."""
    out: list[tuple[int, Applied | int]] = []
    run: list[tuple[int, TagEvent, str]] = []
    for entry in [*items, None]:
        if entry is not None and len(entry) == 3:
            run.append(entry)
            continue
        if run:
            ids = await book_events(conn, [(e, lane_id) for _, e, lane_id in run], now_ms)
            out.extend((i, Applied(e.source_ref, (tag_id,))) for (i, e, _), tag_id in zip(run, ids, strict=True))
            run = []
        if entry is not None:
            out.append((entry[0], (await recheck(conn, [entry[1]]))[0]))
    return out


async def book_events(conn: aiosqlite.Connection, events: Sequence[tuple[TagEvent, str]], now_ms: int) -> list[int]:
    """Book ``(event, lane_id)`` pairs (already deduplicated) and move the lanes' presence; returns their row ids."""
    gtins: dict[str, str | None] = {}
    for e, _lane in events:
        if e.epc not in gtins:
            code = decode(e.epc)
            gtins[e.epc] = code.gtin if code is not None else None
    skus = await _skus(conn, gtins)
    wanted = {(lane, e.epc) for e, lane in events}
    stays = {  # the batch's lanes' rows (their primary key's prefix), those of the batch's EPCs kept
        (r[0], r[1]): _Stay(*r)
        for r in await conn.execute_fetchall(
            f"SELECT {_PRESENCE_COLUMNS} FROM tag_presence WHERE lane_id IN (SELECT value FROM json_each(?))"
            " AND epc IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted({lane for lane, _ in wanted})), json.dumps(sorted({epc for _, epc in wanted}))),
        )
        if (r[0], r[1]) in wanted
    }
    next_id = await next_event_id(conn)
    rows: list[tuple[Any, ...]] = []
    ids: list[int] = []
    for e, lane_id in events:
        stay = stays.get((lane_id, e.epc))
        effect, note = _apply(stay, e, lane_id, next_id, gtins[e.epc], stays)
        if not e.ts_known:
            note = "age unknown (an event from an earlier boot of the node): the time is the hub's arrival" + (
                f"; {note}" if note else ""
            )
        rows.append(
            (next_id, e.node_id, e.event_seq, lane_id, e.epc, e.kind, effect, e.ts_ms, int(e.ts_known), now_ms,
             e.rssi, gtins[e.epc], skus[e.epc], note)
        )  # fmt: skip
        ids.append(next_id)
        next_id += 1
    await conn.execute(_INSERT_EVENT, rows_param(rows))
    await conn.executemany(
        _UPSERT_PRESENCE,
        [
            (s.lane_id, s.epc, s.node_id, s.present, s.seq, s.first_seen_ms, s.last_read_ms, s.left_ms, s.rssi,
             s.gtin, s.unconfirmed_ms, s.event_id)
            for key, s in stays.items()
            if key in wanted
        ],
    )  # fmt: skip
    return ids


def _apply(
    stay: _Stay | None,
    e: TagEvent,
    lane_id: str,
    event_id: int,
    gtin: str | None,
    stays: dict[tuple[str, str], _Stay],
) -> tuple[str, str | None]:
    """Move the (lane, EPC) presence for ``e``; returns the event's effect and a note for the trail."""
    if stay is not None and not stay.newer(e):
        return "superseded", f"event {stay.seq} of the node, booked first, already said where the tag is"
    if e.kind == SEEN:
        if stay is not None and stay.present:
            stay.node_id, stay.seq, stay.rssi = e.node_id, e.event_seq, e.rssi
            stay.last_read_ms = max(stay.last_read_ms or e.ts_ms, e.ts_ms)
            if e.ts_known:
                note = "read again after its node restarted: still there" if stay.unconfirmed_ms else None
                stay.unconfirmed_ms = None
                return "still", note
            stay.unconfirmed_ms = stay.unconfirmed_ms or e.ts_ms
            return "still", None
        stays[(lane_id, e.epc)] = _Stay(
            lane_id, e.epc, e.node_id, 1, e.event_seq, e.ts_ms, e.ts_ms, None, e.rssi, gtin,
            None if e.ts_known else e.ts_ms, event_id,
        )  # fmt: skip
        return "arrived", None
    if stay is None:
        stay = stays[(lane_id, e.epc)] = _Stay(
            lane_id, e.epc, e.node_id, 0, e.event_seq, None, None, e.ts_ms, None, gtin, None, event_id
        )
        return "left", "its arrival is not in the ledger (before the retention, or dropped by the node)"
    stay.present, stay.node_id, stay.seq, stay.event_id = 0, e.node_id, e.event_seq, event_id
    stay.left_ms, stay.unconfirmed_ms = e.ts_ms, None
    if stay.last_read_ms is None or e.ts_ms > stay.last_read_ms:
        stay.last_read_ms = e.ts_ms
    return "left", None


async def recheck(conn: aiosqlite.Connection, items: Sequence[TagRecheck]) -> list[int]:
    """Each node's present (confirmed) tags become unconfirmed as of its restart; returns the rows marked."""
    marked = []
    for r in items:
        cur = await conn.execute(
            "UPDATE tag_presence SET unconfirmed_ms = ? WHERE node_id = ? AND present = 1 AND unconfirmed_ms IS NULL",
            (r.ts_ms, r.node_id),
        )
        marked.append(max(cur.rowcount, 0))
        await cur.close()
    return marked


async def reader_reports(conn: aiosqlite.Connection, items: Sequence[ReaderReport]) -> None:
    for r in items:
        if r.missed_from_ms is not None:  # an outage between two reports: closed as soon as it is found
            await conn.execute(
                "INSERT INTO rfid_outages (node_id, reader, from_ms, to_ms, cause) SELECT ?, ?, ?, ?, ? WHERE NOT"
                " EXISTS (SELECT 1 FROM rfid_outages WHERE node_id = ? AND reader = ? AND to_ms IS NULL)",
                (r.node_id, r.reader, r.missed_from_ms, r.ts_ms, r.missed_cause, r.node_id, r.reader),
            )
        if r.state == READER_OK:
            await conn.execute(
                "UPDATE rfid_outages SET to_ms = max(?, from_ms) WHERE node_id = ? AND reader = ? AND to_ms IS NULL",
                (r.ts_ms, r.node_id, r.reader),
            )
        else:
            await conn.execute(
                "INSERT INTO rfid_outages (node_id, reader, from_ms, to_ms, cause) SELECT ?, ?, ?, NULL, ? WHERE NOT"
                " EXISTS (SELECT 1 FROM rfid_outages WHERE node_id = ? AND reader = ? AND to_ms IS NULL)",
                (r.node_id, r.reader, r.ts_ms, READER_STATES[r.state], r.node_id, r.reader),
            )
        if r.all_ok and r.state == READER_OK:
            await conn.execute(
                "UPDATE tag_presence SET last_read_ms = max(coalesce(last_read_ms, 0), ?) WHERE node_id = ?"
                " AND present = 1 AND unconfirmed_ms IS NULL",
                (r.ts_ms, r.node_id),
            )


async def expire_unconfirmed(
    conn: aiosqlite.Connection, restarted_before_ms: int, now_ms: int, slack_ms: int = OUTAGE_SLACK_MS
) -> int:
    """Tags still unconfirmed since a restart at or before ``restarted_before_ms`` whose reader has worked since
    then without a break: gone, at a time between their last read and the restart. Returns how many.

    The hub does not know which reader a tag is on, but it knows that reader was reading at the tag's last read:
    an outage not over by ``restarted_before_ms`` holds a tag back only if it began at or after the tag's last read
    less ``slack_ms`` (the rule reconciliation's verdicts apply, ``tag_rules.Outage.explains``). One reader dead
    since before the tags were read does not keep the node's other readers' tags present forever."""
    rows = await conn.execute_fetchall(
        "SELECT p.lane_id, p.epc, p.node_id, p.unconfirmed_ms, p.last_read_ms, p.gtin FROM tag_presence AS p"
        " WHERE p.unconfirmed_ms IS NOT NULL AND p.unconfirmed_ms <= ? AND p.present = 1 AND NOT EXISTS"
        " (SELECT 1 FROM rfid_outages AS o WHERE o.node_id = p.node_id AND (o.to_ms IS NULL OR o.to_ms > ?)"
        " AND (p.last_read_ms IS NULL OR o.from_ms >= p.last_read_ms - ?))"
        " ORDER BY p.unconfirmed_ms, p.lane_id, p.epc",
        (restarted_before_ms, restarted_before_ms, slack_ms),
    )
    if not rows:
        return 0
    next_id = await next_event_id(conn)
    skus = await _skus(conn, {str(r[1]): r[5] for r in rows})
    events, stays = [], []
    for lane_id, epc, node_id, restart_ms, last_read, gtin in rows:
        note = "not read again after its node restarted: it left between its last read and the restart" + (
            "" if last_read is None else f" (last read {last_read} ms)"
        )
        events.append(
            (next_id, node_id, None, lane_id, epc, EXPIRED, "left", restart_ms, 0, now_ms, None, gtin, skus[epc], note)
        )
        stays.append((restart_ms, next_id, lane_id, epc))
        next_id += 1
    await conn.execute(_INSERT_EVENT, rows_param(events))
    await conn.executemany(
        "UPDATE tag_presence SET present = 0, left_ms = ?, unconfirmed_ms = NULL, event_id = ?"
        " WHERE lane_id = ? AND epc = ?",
        stays,
    )
    return len(events)


async def prune_tags(conn: aiosqlite.Connection, before_ms: int, max_rows: int) -> tuple[int, bool]:
    """Delete up to ``max_rows`` tag events, ended outages and presence rows of tags gone older than
    ``before_ms`` (index ranges, oldest first); returns (rows deleted, whether more may be left)."""
    deleted = 0
    for sql in (
        "DELETE FROM tag_events WHERE id IN (SELECT id FROM tag_events WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?)",
        "DELETE FROM rfid_outages WHERE id IN (SELECT id FROM rfid_outages WHERE to_ms IS NOT NULL AND to_ms < ?"
        " LIMIT ?)",
        "DELETE FROM tag_presence WHERE (lane_id, epc) IN (SELECT lane_id, epc FROM tag_presence WHERE present = 0"
        " AND left_ms < ? LIMIT ?)",
    ):
        if deleted >= max_rows:
            return deleted, True
        cur = await conn.execute(sql, (before_ms, max_rows - deleted))
        deleted += max(cur.rowcount, 0)
        await cur.close()
    return deleted, deleted >= max_rows
