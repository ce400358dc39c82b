"""The fleet wire contract's names, limits and records (``hub/fleet/README.md``); ``hub.fleet.messages`` is the API
that encodes and decodes them (and re-exports everything here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

VERSION = 1
DEFAULT_PREFIX = "smartshelf/v1"
KINDS = ("movements", "alerts", "snapshot", "status", "rewind")
Kind = Literal["movements", "alerts", "snapshot", "status", "rewind"]
MAX_ROWS = 1000  # movements or alerts in one message
MAX_PAYLOAD = {"movements": 4 << 20, "alerts": 4 << 20, "snapshot": 16 << 20, "status": 4096, "rewind": 4096}
HUB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
INT64 = (-(1 << 63), (1 << 63) - 1)
MS = (0, (1 << 53) - 1)  # ms since the Unix epoch (exact in a double, too)
ID = (1, (1 << 63) - 1)
NODE_ID = (1, 0xFFFFFFFF)
KEY_MAX = 1024  # location, source_ref, actor, kind, cause_key, lane_id, ...: identifying text
TEXT_MAX = 16384  # free text: note, resolution, names, labels (cut by the encoders)

MOVEMENT_COLUMNS = (
    "id", "ts_ms", "recorded_ms", "sku", "location", "qty", "reason", "source_ref", "leg", "actor", "note",
    "reverses_id", "node_id", "event_seq", "weight_delta_dg", "confidence",
)  # fmt: skip
ALERT_COLUMNS = (
    "id", "kind", "cause_key", "status", "opened_ms", "acknowledged_ms", "acknowledged_by", "resolved_ms",
    "resolved_by", "resolution", "resolution_movement_id", "rev",
)  # fmt: skip
SKU_COLUMNS = ("sku", "name", "unit_weight_dg", "reorder_point", "reorder_qty", "capacity", "gtin")
LANE_COLUMNS = ("lane_id", "node_id", "lane_index", "sku", "count", "weight_dg", "ts_ms")
NODE_COLUMNS = ("node_id", "label", "fw_version", "last_seen_ms")
BOOK_COLUMNS = ("sku", "location", "qty")
ALERT_STATUSES = ("open", "acknowledged", "resolved")
STATES = ("online", "offline")


class FleetMessageError(ValueError):
    """A payload or topic that is not a message of the contract; ``str()`` is one plain line saying why."""


class Movement(NamedTuple):
    id: int
    ts_ms: int
    recorded_ms: int
    sku: str | None
    location: str
    qty: int
    reason: str
    source_ref: str
    leg: int
    actor: str
    note: str | None
    reverses_id: int | None
    node_id: int | None
    event_seq: int | None
    weight_delta_dg: int | None
    confidence: int | None


class Alert(NamedTuple):
    id: int
    kind: str
    cause_key: str
    status: str
    opened_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None
    resolved_ms: int | None
    resolved_by: str | None
    resolution: str | None
    resolution_movement_id: int | None
    rev: int


class SkuInfo(NamedTuple):
    sku: str
    name: str
    unit_weight_dg: int
    reorder_point: int
    reorder_qty: int
    capacity: int | None
    gtin: str | None


@dataclass(frozen=True, slots=True)
class LaneInfo:  # not a NamedTuple: ``count`` would hide tuple.count
    lane_id: str
    node_id: int
    lane_index: int
    sku: str | None
    count: int | None
    weight_dg: int | None
    ts_ms: int | None


class NodeInfo(NamedTuple):
    node_id: int
    label: str
    fw_version: str | None
    last_seen_ms: int | None


class BookEntry(NamedTuple):
    sku: str
    location: str
    qty: int


@dataclass(frozen=True, slots=True)
class Movements:
    hub: str
    sent_ms: int
    incarnation: int  # the hub's ledger incarnation (hub.ledger.identity): ids repeat across incarnations
    first: int
    last: int
    rows: tuple[Movement, ...]  # every movement first..last, ascending


@dataclass(frozen=True, slots=True)
class Alerts:
    hub: str
    sent_ms: int
    incarnation: int  # alert ids and revs repeat across incarnations too
    rows: tuple[Alert, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    hub: str
    sent_ms: int
    incarnation: int  # last_movement_id counts in it
    last_movement_id: int  # the highest movement id when it was read (0: none); book is as of that movement
    skus: tuple[SkuInfo, ...]
    lanes: tuple[LaneInfo, ...]
    nodes: tuple[NodeInfo, ...]
    book: tuple[BookEntry, ...]


@dataclass(frozen=True, slots=True)
class Status:
    hub: str
    sent_ms: int
    state: str  # online | offline


@dataclass(frozen=True, slots=True)
class Rewind:
    """Central -> hub: publish again every movement with id > ``movements_after`` (None: no change) and, with
    ``alerts``, every alert."""

    hub: str
    sent_ms: int
    movements_after: int | None
    alerts: bool


Message = Movements | Alerts | Snapshot | Status | Rewind


# ----------------------------------------------------------------------------------------------------- topics


def check_hub_id(hub: object) -> str:
    if not isinstance(hub, str) or HUB_ID_RE.fullmatch(hub) is None:
        raise FleetMessageError(f"hub id must be 1..64 of A-Z a-z 0-9 _ -, not {show(hub)}")
    return hub


def check_prefix(prefix: object) -> str:
    """A topic prefix: 1..200 characters of levels separated by ``/``, none empty, no wildcard, no NUL."""
    if not isinstance(prefix, str) or not 1 <= len(prefix) <= 200:
        raise FleetMessageError(f"topic prefix must be 1..200 characters, not {show(prefix)}")
    levels = prefix.split("/")
    if any(not level or "+" in level or "#" in level or "\x00" in level for level in levels) or prefix[0] == "$":
        raise FleetMessageError(f"topic prefix {prefix!r}: levels must be non-empty, without + # NUL, not start with $")
    return prefix


def topic(prefix: str, hub: str, kind: Kind) -> str:
    return f"{prefix}/{hub}/{kind}"


def parse_topic(prefix: str, name: str) -> tuple[str, Kind]:
    """``<prefix>/<hub>/<kind>`` -> (hub, kind); ``FleetMessageError`` for any other topic."""
    head = prefix + "/"
    if not name.startswith(head):
        raise FleetMessageError(f"topic {name[:300]!r} is not under {prefix!r}")
    parts = name[len(head) :].split("/")
    if len(parts) != 2 or parts[1] not in KINDS:
        raise FleetMessageError(f"topic {name[:300]!r} is not {prefix}/<hub>/<{'|'.join(KINDS)}>")
    hub, kind = check_hub_id(parts[0]), parts[1]
    return hub, kind  # type: ignore[return-value]


def show(value: object) -> str:
    """A value as a message quotes it: short, never the whole of a long text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return repr(value)[:40]
