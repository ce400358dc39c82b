"""The fleet wire contract (``hub/fleet/README.md``) in code: topics, ``encode_*`` for the hub, strict ``decode``.

``decode(topic_hub, kind, payload)`` is what the central consumer runs on every message it takes from the broker:
payloads are untrusted (a hub's credentials may be stolen, a hub may run another version), so it checks the size
before parsing, then UTF-8, JSON without floats, NaN or duplicate keys, exactly the fields of the kind, every
type and range, text without NUL (PostgreSQL refuses it), and that the payload's ``hub`` is the topic's. It returns
one of the frozen records below or raises ``FleetMessageError`` (one plain line, e.g.
``movements: rows[3].qty: must be an integer -9223372036854775808..9223372036854775807, not 1.5``).

``Movement`` and ``Alert`` are named tuples in the wire's column order, ready for a bulk insert. The encoders take
rows as the ledger's queries return them (tuples in ``MOVEMENT_COLUMNS`` / ``ALERT_COLUMNS`` order); free text
longer than the contract allows is cut (ending in ``…``; identifying text never comes near ``KEY_MAX``), NUL and
unpaired surrogates are replaced, so whatever the ledger holds encodes into a message ``decode`` accepts (the tests
check that round trip with hypothesis).

API (stable; ``hub/central`` imports it): ``topic``, ``parse_topic``, ``encode_movements``, ``encode_alerts``,
``encode_snapshot``, ``encode_status``, ``encode_rewind``, ``decode``, ``FleetMessageError`` and the records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from hub.fleet.decoding import decode
from hub.fleet.records import (
    ALERT_COLUMNS,
    ALERT_STATUSES,
    BOOK_COLUMNS,
    DEFAULT_PREFIX,
    HUB_ID_RE,
    KEY_MAX,
    KINDS,
    LANE_COLUMNS,
    MAX_PAYLOAD,
    MAX_ROWS,
    MOVEMENT_COLUMNS,
    NODE_COLUMNS,
    SKU_COLUMNS,
    STATES,
    TEXT_MAX,
    VERSION,
    Alert,
    Alerts,
    BookEntry,
    FleetMessageError,
    Kind,
    LaneInfo,
    Message,
    Movement,
    Movements,
    NodeInfo,
    Rewind,
    SkuInfo,
    Snapshot,
    Status,
    check_hub_id,
    check_prefix,
    parse_topic,
    topic,
)  # fmt: skip

__all__ = [
    "ALERT_COLUMNS", "ALERT_STATUSES", "BOOK_COLUMNS", "DEFAULT_PREFIX", "HUB_ID_RE", "KEY_MAX", "KINDS",
    "LANE_COLUMNS", "MAX_PAYLOAD", "MAX_ROWS", "MOVEMENT_COLUMNS", "NODE_COLUMNS", "SKU_COLUMNS", "STATES",
    "TEXT_MAX", "VERSION", "Alert", "Alerts", "BookEntry", "FleetMessageError", "Kind", "LaneInfo", "Message",
    "Movement", "Movements", "NodeInfo", "Rewind", "SkuInfo", "Snapshot", "Status", "check_hub_id", "check_prefix",
    "decode", "encode_alerts", "encode_movements", "encode_rewind", "encode_snapshot", "encode_status",
    "parse_topic", "topic",
]  # fmt: skip

# --------------------------------------------------------------------------------------------------- encoding


def _clean(value: str, limit: int = TEXT_MAX) -> str:
    """Text the contract accepts: NUL -> U+FFFD, unpaired surrogates -> ?, at most ``limit`` characters."""
    if "\x00" in value or not value.isascii():
        value = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _opt(value: str | None, limit: int = TEXT_MAX) -> str | None:
    return None if value is None else _clean(value, limit)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _envelope(hub: str, kind: str, sent_ms: int) -> dict[str, Any]:
    return {"v": VERSION, "hub": hub, "kind": kind, "sent_ms": sent_ms}


def encode_movements(hub: str, rows: Sequence[Sequence[Any]], sent_ms: int, *, incarnation: int = 1) -> bytes:
    """A batch of consecutive ledger movements (tuples in ``MOVEMENT_COLUMNS`` order, ascending ids) of the ledger's
    ``incarnation`` (``hub.ledger.identity``; 1: a ledger never restored)."""
    if not 1 <= len(rows) <= MAX_ROWS:
        raise FleetMessageError(f"movements: a batch holds 1..{MAX_ROWS} rows, not {len(rows)}")
    out = []
    for r in rows:
        out.append(
            [r[0], r[1], r[2], _opt(r[3], KEY_MAX), _clean(r[4], KEY_MAX), r[5], r[6], _clean(r[7], KEY_MAX), r[8],
             _clean(r[9], KEY_MAX), _opt(r[10]), r[11], r[12], r[13], r[14], r[15]]
        )  # fmt: skip
    msg = _envelope(hub, "movements", sent_ms)
    msg.update(incarnation=incarnation, first=rows[0][0], last=rows[-1][0], rows=out)
    return _dump(msg)


def encode_alerts(hub: str, rows: Sequence[Sequence[Any]], sent_ms: int, *, incarnation: int = 1) -> bytes:
    """Alerts' latest state (tuples in ``ALERT_COLUMNS`` order, ``rev`` last) in the ledger's ``incarnation``."""
    if not 1 <= len(rows) <= MAX_ROWS:
        raise FleetMessageError(f"alerts: a message holds 1..{MAX_ROWS} rows, not {len(rows)}")
    out = []
    for r in rows:
        texts = (r[0], _clean(r[1], KEY_MAX), _clean(r[2], KEY_MAX), r[3], r[4], r[5], _opt(r[6], KEY_MAX), r[7],
                 _opt(r[8], KEY_MAX), _opt(r[9]), r[10], r[11])  # fmt: skip
        out.append(dict(zip(ALERT_COLUMNS, texts, strict=True)))
    msg = _envelope(hub, "alerts", sent_ms)
    msg["incarnation"] = incarnation
    msg["rows"] = out
    return _dump(msg)


def encode_snapshot(
    hub: str,
    sent_ms: int,
    *,
    incarnation: int = 1,
    last_movement_id: int,
    skus: Sequence[Sequence[Any]],
    lanes: Sequence[Sequence[Any]],
    nodes: Sequence[Sequence[Any]],
    book: Sequence[Sequence[Any]],
) -> bytes:
    """The hub's state: tuples in ``SKU_COLUMNS``, ``LANE_COLUMNS``, ``NODE_COLUMNS``, ``BOOK_COLUMNS`` order."""
    msg = _envelope(hub, "snapshot", sent_ms)
    msg["incarnation"] = incarnation
    msg["last_movement_id"] = last_movement_id
    msg["skus"] = [dict(zip(SKU_COLUMNS, (s[0], _clean(s[1]), *s[2:]), strict=True)) for s in skus]
    msg["lanes"] = [dict(zip(LANE_COLUMNS, lane, strict=True)) for lane in lanes]
    msg["nodes"] = [dict(zip(NODE_COLUMNS, (n[0], _clean(n[1]), _opt(n[2], 64), n[3]), strict=True)) for n in nodes]
    msg["book"] = [dict(zip(BOOK_COLUMNS, b, strict=True)) for b in book]
    return _dump(msg)


def encode_status(hub: str, state: Literal["online", "offline"], sent_ms: int) -> bytes:
    msg = _envelope(hub, "status", sent_ms)
    msg["state"] = state
    return _dump(msg)


def encode_rewind(hub: str, sent_ms: int, *, movements_after: int | None, alerts: bool) -> bytes:
    msg = _envelope(hub, "rewind", sent_ms)
    msg.update(movements_after=movements_after, alerts=alerts)
    return _dump(msg)
