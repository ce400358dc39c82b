"""What the pages and the API read about RFID tags: the tags on a lane now, a lane's tag events in a period, and one
tag's serialised trail (where it arrived, which lanes it sat on, when it left, why, and the alerts citing it).

A tag's SKU is resolved when read (``hub.ledger.tags.tag_sku_sql``: the store's EPC table, else the GTIN of its
SGTIN), so a table imported after the tag was read names it. Every read is an index range: a lane's rows of
``tag_presence`` (primary key), a lane's or an EPC's ``tag_events`` by time (``tag_events_lane``,
``tag_events_epc``); the alerts citing an EPC: those its verdicts name (``recon_tags``), and those whose evidence
names it, unresolved or opened in the last 90 days.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field

from hub.ledger.epc import EPC_MAX_BYTES, InvalidCode, ProductCode, decode
from hub.ledger.tags import tag_sku_sql

TRAIL_EVENTS_MAX = 1000
ALERTS_LOOKBACK_MS = 90 * 86_400_000  # resolved alerts that mention an EPC are looked for this far back
SEARCH_MAX = 50
VERDICT_TEXT = {
    "picked": "left with a pick",
    "picked_late": "left after a pick that took no tag",
    "weight_changed": "left as the lane's weight dropped",
    "tamper": "left with no weight change: tamper",
    "cross_read": "cross-read (never on this lane): ignored",
    "other_sku_picked": "a misplaced item taken",
    "returned": "read again at once: never left",
    "moved": "read on another lane",
    "reader_outage": "left while a reader was not reading",
    "time_unknown": "departure time unknown (node restarted)",
    "unknown_sku": "unknown EPC",
    "unassigned_lane": "lane without SKU",
}
_WHAT = {
    ("seen", "arrived"): "tag arrived",
    ("seen", "still"): "tag read again",
    ("seen", "superseded"): "tag seen (out of order)",
    ("lost", "left"): "tag left",
    ("lost", "superseded"): "tag left (out of order)",
    ("expired", "left"): "tag gone after restart",
}


def what(kind: str, effect: str) -> str:
    return _WHAT.get((kind, effect), f"tag {kind}")


@dataclass(frozen=True, slots=True)
class LaneTag:
    """A tag on a lane now."""

    epc: str
    sku: str | None  # None: unknown
    name: str | None
    first_seen_ms: int | None
    last_read_ms: int | None
    rssi: int | None
    unconfirmed_ms: int | None  # its node restarted then and has not read it since
    node_id: int

    def other_sku(self, lane_sku: str | None) -> bool:
        return self.sku is not None and lane_sku is not None and self.sku != lane_sku


def lane_tags(conn: sqlite3.Connection, lane_id: str) -> list[LaneTag]:
    sku = tag_sku_sql("p")
    return [
        LaneTag(*r)
        for r in conn.execute(
            f"SELECT p.epc, {sku}, (SELECT s.name FROM skus AS s WHERE s.sku = {sku}), p.first_seen_ms,"
            " p.last_read_ms, p.rssi, p.unconfirmed_ms, p.node_id FROM tag_presence AS p WHERE p.lane_id = ?"
            " AND p.present = 1 ORDER BY p.first_seen_ms, p.epc",
            (lane_id,),
        )
    ]


def all_lane_tags(conn: sqlite3.Connection, lane_id: str | None = None) -> list[tuple[str, LaneTag]]:
    """(lane id, tag) of every tag on a lane now (or on ``lane_id``), by lane."""
    sku = tag_sku_sql("p")
    where = "" if lane_id is None else " AND p.lane_id = ?"
    rows = conn.execute(
        f"SELECT p.lane_id, p.epc, {sku}, (SELECT s.name FROM skus AS s WHERE s.sku = {sku}), p.first_seen_ms,"
        f" p.last_read_ms, p.rssi, p.unconfirmed_ms, p.node_id FROM tag_presence AS p WHERE p.present = 1{where}"
        " ORDER BY p.lane_id, p.first_seen_ms, p.epc",
        () if lane_id is None else (lane_id,),
    )
    return [(r[0], LaneTag(*r[1:])) for r in rows]


@dataclass(frozen=True, slots=True)
class TagEventRow:
    id: int
    ts_ms: int
    ts_known: bool
    lane_id: str
    epc: str
    kind: str
    effect: str
    node_id: int
    event_seq: int | None
    rssi: int | None
    sku: str | None  # resolved now
    note: str | None
    verdict: str | None  # a departure's, once judged (recon_tags)
    pick_id: int | None
    alert_id: int | None

    @property
    def what(self) -> str:
        return what(self.kind, self.effect)

    @property
    def verdict_text(self) -> str:
        return VERDICT_TEXT.get(self.verdict or "", self.verdict or "")


def _event(r: tuple[object, ...] | sqlite3.Row) -> TagEventRow:
    row = list(r)
    row[2] = bool(row[2])  # ts_known: 0 / 1 in the table
    return TagEventRow(*row)


_EVENT_COLUMNS = (
    "e.id, e.ts_ms, e.ts_known, e.lane_id, e.epc, e.kind, e.effect, e.node_id, e.event_seq, e.rssi,"
    f" {tag_sku_sql('e')}, e.note, r.verdict, r.pick_id, r.alert_id"
)


def lane_events(conn: sqlite3.Connection, lane_id: str, t0_ms: int, t1_ms: int, limit: int) -> list[TagEventRow]:
    """The lane's tag events in the window, newest first."""
    return [
        _event(r)
        for r in conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM tag_events AS e LEFT JOIN recon_tags AS r ON r.event_id = e.id"
            " WHERE e.lane_id = ? AND e.ts_ms BETWEEN ? AND ? ORDER BY e.ts_ms DESC, e.id DESC LIMIT ?",
            (lane_id, t0_ms, t1_ms, limit),
        )
    ]


def lane_verdicts(conn: sqlite3.Connection, lane_id: str, t0_ms: int, t1_ms: int) -> dict[str, int]:
    """How the tags that left the lane in the window were judged (cross-reads are counted here, never alerted)."""
    return {
        str(r[0]): int(r[1])
        for r in conn.execute(
            "SELECT verdict, count(*) FROM recon_tags WHERE lane_id = ? AND ts_ms BETWEEN ? AND ? GROUP BY verdict",
            (lane_id, t0_ms, t1_ms),
        )
    }


@dataclass(frozen=True, slots=True)
class Stay:
    """A stretch of time the tag sat on one lane."""

    lane_id: str
    arrived_ms: int | None  # None: before the trail (pruned, or never reported)
    left_ms: int | None  # None: still there
    how: str  # how it left (a verdict's text), or "still there"
    unconfirmed: bool = False


@dataclass(slots=True)
class Trail:
    epc: str
    code: ProductCode | None
    sku: str | None
    sku_name: str | None
    sku_from: str  # "the store's EPC table" | "its GTIN" | ""
    events: list[TagEventRow] = field(default_factory=list)  # oldest first
    events_total: int = 0
    stays: list[Stay] = field(default_factory=list)
    alerts: list[tuple[int, str, str, str, int]] = field(default_factory=list)  # id, kind, cause, status, opened

    @property
    def known(self) -> bool:
        return bool(self.events or self.stays or self.sku_from == "the store's EPC table")


def trail(conn: sqlite3.Connection, epc: str, now_ms: int) -> Trail:
    """Everything the ledger holds about one EPC (the ledger's hex form)."""
    code = decode(epc)
    mapped = conn.execute(
        "SELECT x.sku, s.name FROM epc_skus AS x JOIN skus AS s ON s.sku = x.sku WHERE x.epc = ?", (epc,)
    ).fetchone()
    by_gtin = None
    if mapped is None and code is not None:
        by_gtin = conn.execute("SELECT sku, name FROM skus WHERE gtin = ?", (code.gtin,)).fetchone()
    found = mapped or by_gtin
    out = Trail(
        epc,
        code,
        found[0] if found else None,
        found[1] if found else None,
        "the store's EPC table" if mapped else ("its GTIN" if by_gtin else ""),
    )
    out.events_total = int(conn.execute("SELECT count(*) FROM tag_events WHERE epc = ?", (epc,)).fetchone()[0])
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM tag_events AS e LEFT JOIN recon_tags AS r ON r.event_id = e.id"
        " WHERE e.epc = ? ORDER BY e.ts_ms DESC, e.id DESC LIMIT ?",
        (epc, TRAIL_EVENTS_MAX),
    ).fetchall()
    out.events = [_event(r) for r in reversed(rows)]
    out.stays = _stays(conn, epc, out.events)
    alert_ids = {e.alert_id for e in out.events if e.alert_id is not None}
    out.alerts = [
        (int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]))
        for r in conn.execute(
            "SELECT id, kind, cause_key, status, opened_ms FROM alerts WHERE id IN (SELECT value FROM json_each(?))"
            " OR ((status != 'resolved' OR opened_ms >= ?) AND instr(evidence, ?) > 0)"
            " ORDER BY opened_ms DESC, id DESC",
            (json.dumps(sorted(alert_ids)), now_ms - ALERTS_LOOKBACK_MS, epc),
        )
    ]
    return out


def _stays(conn: sqlite3.Connection, epc: str, events: list[TagEventRow]) -> list[Stay]:
    """Arrivals and departures paired per lane, in time order; the presence table says where it is now."""
    stays: list[Stay] = []
    open_at: dict[str, int | None] = {}
    for e in events:
        if e.effect == "arrived":
            open_at[e.lane_id] = e.ts_ms
        elif e.effect == "left":
            how = e.verdict_text or ("left" if e.kind == "lost" else "not read again after its node restarted")
            stays.append(Stay(e.lane_id, open_at.pop(e.lane_id, None), e.ts_ms, how))
    now = {
        str(r[0]): (r[1], r[2])
        for r in conn.execute(
            "SELECT lane_id, first_seen_ms, unconfirmed_ms FROM tag_presence WHERE epc = ? AND present = 1", (epc,)
        )
    }
    for lane_id, (first, unconfirmed) in sorted(now.items()):
        stays.append(Stay(lane_id, open_at.get(lane_id, first), None, "still there", unconfirmed is not None))
    stays.sort(key=lambda s: s.arrived_ms if s.arrived_ms is not None else (s.left_ms or 0))
    return stays


_SEPARATORS = re.compile(r"[\s:-]+")
_HEX_DIGITS = frozenset("0123456789ABCDEF")


def normalise_prefix(text: str) -> str:
    """The start of an EPC as staff type it (any case, spaces or dashes), in the ledger's form: 1 to 64 hex digits,
    whole bytes or not (``307`` finds ``3074...``; an EPC itself is ``hub.ledger.epc.normalise_epc``'s)."""
    compact = _SEPARATORS.sub("", text.strip()).upper()
    if not 1 <= len(compact) <= 2 * EPC_MAX_BYTES or not set(compact) <= _HEX_DIGITS:
        raise InvalidCode(
            f"{text.strip()[:80]!r} is not the start of an EPC: 1..{2 * EPC_MAX_BYTES} hex digits (e.g. 3074257B)"
        )
    return compact


def search(conn: sqlite3.Connection, prefix: str) -> list[tuple[str, str | None, str | None]]:
    """EPCs the ledger knows starting with ``prefix`` (``normalise_prefix``: hex digits, any number of them): (EPC,
    lane it is on now or None, SKU)."""
    hi = prefix + "G"  # above every hex digit: [prefix, prefix + "G") is the prefix's range on the index
    epcs = sorted(
        {
            str(r[0])
            for sql in (
                "SELECT DISTINCT epc FROM tag_presence WHERE epc >= ? AND epc < ? LIMIT ?",
                "SELECT DISTINCT epc FROM tag_events WHERE epc >= ? AND epc < ? LIMIT ?",
                "SELECT epc FROM epc_skus WHERE epc >= ? AND epc < ? LIMIT ?",
            )
            for r in conn.execute(sql, (prefix, hi, SEARCH_MAX))
        }
    )[:SEARCH_MAX]
    out = []
    for e in epcs:
        row = conn.execute(
            f"SELECT p.lane_id, {tag_sku_sql('p')} FROM tag_presence AS p WHERE p.epc = ? AND p.present = 1 LIMIT 1",
            (e,),
        ).fetchone()
        sku = row[1] if row else None
        if row is None:
            mapped = conn.execute("SELECT sku FROM epc_skus WHERE epc = ?", (e,)).fetchone()
            sku = mapped[0] if mapped else None
        out.append((e, row[0] if row else None, sku))
    return out
