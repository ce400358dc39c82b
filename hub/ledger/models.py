"""Typed records, reasons, locations and errors of the perpetual ledger.

Two kinds of quantity are kept apart so that nothing is counted twice:

* **Book stock** (what the store owns) per SKU and *book location*: ``backroom``, ``lane:<lane_id>`` (owned stock
  on that shelf lane) or another plain location name (``warehouse``, ``display-front``, ...). Receipts, sales,
  order picks, returns, restocks, transfers, write-offs and count adjustments move book stock.
* **Observed stock** (what the shelf sensors see) per lane, kept in a separate *sensor ledger* whose locations
  are ``sensor:<lane_id>``. Only sensor picks, puts, anomalies, counts and sensor-gap corrections move it, and the
  moves that keep a lane's units under the SKU it is assigned (``lane_assigned``: ``hub.ledger.postings.settle``).

A restock moves book stock from ``backroom`` to ``lane:<lane_id>`` *and* explains the sensor put the lane reports;
reconciliation (a later module) matches the two ledgers, they are never summed.

Timestamps are integers: milliseconds since the Unix epoch, UTC (``*_ms``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

BACKROOM = "backroom"
LANE_PREFIX = "lane:"
SENSOR_PREFIX = "sensor:"

LANE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PLAIN_LOCATION_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
SKU_RE = re.compile(r"[ -~]{1,32}")  # printable ASCII, as on the wire (set_lane)
MAX_QTY = 1_000_000  # one posting never moves more than this many units (catches typos like 10000000)


class Reason(StrEnum):
    """Why a movement happened. Sensor reasons move observed stock, every other reason moves book stock."""

    SENSOR_PICK = "sensor_pick"
    SENSOR_PUT = "sensor_put"
    SENSOR_ANOMALY = "sensor_anomaly"
    SENSOR_GAP = "sensor_gap"
    SENSOR_COUNT = "sensor_count"  # staff counted the lane; its node recorded the difference (protocol v1.1)
    # the lane's sensor units booked under another SKU (or none) became the SKU it is assigned (migration 16)
    LANE_ASSIGNED = "lane_assigned"
    SALE = "sale"
    ORDER_PICK = "order_pick"
    RECEIPT = "receipt"
    RESTOCK = "restock"
    RETURN = "return"
    TRANSFER = "transfer"
    DAMAGE = "damage"
    SHRINKAGE = "shrinkage"
    COUNT_ADJUSTMENT = "count_adjustment"

    @property
    def is_sensor(self) -> bool:
        return self in SENSOR_REASONS


SENSOR_REASONS = frozenset(
    {
        Reason.SENSOR_PICK,
        Reason.SENSOR_PUT,
        Reason.SENSOR_ANOMALY,
        Reason.SENSOR_GAP,
        Reason.SENSOR_COUNT,
        Reason.LANE_ASSIGNED,
    }
)
WriteOffReason = Literal[Reason.DAMAGE, Reason.SHRINKAGE]


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertKind(StrEnum):
    """Alert kinds the hub raises. The column is free text so later modules may add kinds."""

    SHRINKAGE = "shrinkage"
    DAMAGE = "damage"
    TAMPER = "tamper"
    MISPLACED = "misplaced"
    REORDER = "reorder"
    SENSOR = "sensor"  # a node silent, a lane stuck or drifting (reconciliation)
    SENSOR_GAP = "sensor_gap"
    UNASSIGNED_LANE = "unassigned_lane"


# ---------------------------------------------------------------------------------------------------------- errors


class LedgerError(Exception):
    """Base class: the operation was refused and nothing was written."""


class InvalidArgument(LedgerError, ValueError):
    pass


class UnknownSku(LedgerError):
    pass


class UnknownLane(LedgerError):
    pass


class UnknownLocation(LedgerError):
    pass


class UnknownMovement(LedgerError):
    pass


class UnknownAlert(LedgerError):
    pass


class RefConflict(LedgerError):
    """The source reference was already used for a *different* operation: post a correction instead."""


class NotReversible(LedgerError):
    """Already reversed, or itself a reversal."""


class AlertStateError(LedgerError):
    pass


class LaneInUse(LedgerError):
    pass


class SchemaError(LedgerError):
    """The database is not a smartshelf ledger this version can open (e.g. written by a newer version)."""


class LedgerClosed(LedgerError):
    pass


# --------------------------------------------------------------------------------------------------- time helpers


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(ts: datetime) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidArgument(f"timestamp {ts.isoformat()} has no timezone")
    return int(ts.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ts_or_now(ts: datetime | int | None) -> int:
    if ts is None:
        return now_ms()
    if isinstance(ts, datetime):
        return to_ms(ts)
    return int(ts)


Timestamp = datetime | int | None  # a business time: aware datetime, or ms since the epoch; None = when recorded


def business_ms(ts: Timestamp) -> int | None:
    """A posting's business time in ms. None stays None: the posting takes the commit time, and a re-sent reference
    is not compared on time."""
    return None if ts is None else ts_or_now(ts)


# ------------------------------------------------------------------------------------------------------ locations


def lane_location(lane_id: str) -> str:
    """Book location of stock the store owns on a lane."""
    return LANE_PREFIX + lane_id


def sensor_location(lane_id: str) -> str:
    """Location in the sensor ledger: what the lane's sensors observe."""
    return SENSOR_PREFIX + lane_id


def is_sensor_location(location: str) -> bool:
    return location.startswith(SENSOR_PREFIX)


# -------------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Sku:
    sku: str
    name: str
    unit_weight_dg: int
    spread_permille: int = 0
    reorder_point: int = 0
    reorder_qty: int = 0
    capacity: int | None = None
    gtin: str | None = None  # GTIN-8/12/13/14 (stored as 14 digits): an SGTIN tag's EPC names this SKU by it


@dataclass(frozen=True, slots=True)
class Lane:
    lane_id: str
    node_id: int
    lane_index: int
    sku: str | None  # None: unassigned (events are kept, in no SKU's stock until the lane is assigned)


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the hub persists per node so that a restart neither re-applies nor re-acks wrongly (protocol §11)."""

    node_id: int
    label: str
    key_id: str | None
    fw_version: str | None
    first_seen_ms: int | None
    last_seen_ms: int | None
    last_uplink_seq: int
    downlink_session: int
    downlink_seq: int
    highest_contiguous_event_seq: int


@dataclass(frozen=True, slots=True)
class Movement:
    id: int
    ts_ms: int
    recorded_ms: int
    sku: str | None
    location: str
    qty: int
    reason: Reason
    source_ref: str
    leg: int
    actor: str
    note: str | None
    reverses_id: int | None
    node_id: int | None = None
    event_seq: int | None = None
    weight_delta_dg: int | None = None
    confidence: int | None = None

    @property
    def is_observed(self) -> bool:
        return is_sensor_location(self.location)


@dataclass(frozen=True, slots=True)
class MovementPage:
    items: list[Movement]
    next_after_id: int | None  # pass as ``after_id`` for the next page (None: no more)


@dataclass(frozen=True, slots=True)
class BookBalance:
    sku: str
    location: str
    qty: int


@dataclass(frozen=True, slots=True)
class ObservedBalance:
    lane_id: str
    sku: str
    qty: int


@dataclass(frozen=True, slots=True)
class PhysicalCount:
    id: int
    ts_ms: int
    recorded_ms: int
    sku: str
    location: str
    book_qty: int
    counted_qty: int
    actor: str
    source_ref: str
    adjustment_movement_id: int | None


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    kind: str
    cause_key: str
    status: AlertStatus
    opened_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None
    resolved_ms: int | None
    resolved_by: str | None
    resolution: str | None
    resolution_movement_id: int | None
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    ts_ms: int
    actor: str  # who
    action: str
    details: dict[str, Any]
    origin: str | None = None  # from where (hub.ledger.origin); None: written before the ledger kept it


# -------------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Applied:
    """Written and committed."""

    source_ref: str
    movement_ids: tuple[int, ...]
    duplicate: Literal[False] = False


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The source reference was already in the ledger with the same content: nothing was written.

    ``movement_ids`` are the existing rows for business postings and gaps; empty for node events (a known
    ``event_seq`` is recognised from the node's marks without looking the row up)."""

    source_ref: str
    movement_ids: tuple[int, ...] = ()
    duplicate: Literal[True] = True


ApplyResult = Applied | Duplicate


@dataclass(frozen=True, slots=True)
class CountResult:
    count_id: int
    source_ref: str
    book_qty: int
    counted_qty: int
    adjustment_movement_id: int | None  # None when the count agreed with the book
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class SensorEvent:
    """One counted event from a node (wire message ``event``), ready for the ledger."""

    node_id: int
    event_seq: int
    lane_index: int
    kind: int  # shared_protocol.messages.KIND_PICK / KIND_PUT / KIND_ANOMALY
    count_delta: int
    weight_delta_dg: int
    confidence: int
    observed_ms: int  # hub receive time minus the event's age_ms
    uplink_seq: int | None = None  # the frame seq that carried it: persisted as nodes.last_uplink_seq
    note: str | None = None  # e.g. why observed_ms is only the arrival time (the node could not know the age)

    @property
    def source_ref(self) -> str:
        return f"node:{self.node_id}:ev:{self.event_seq}"


@dataclass(frozen=True, slots=True)
class SensorGap:
    """A correction of observed stock for units the node counted but whose events will never arrive (§11)."""

    node_id: int
    lane_index: int
    count_delta: int
    ref: str  # unique per gap and lane, e.g. "ev13-20:lane2"; source_ref = node:<id>:gap:<ref>
    observed_ms: int
    skip_events_to: int | None = None  # move the contiguous event mark to at least this event_seq
    note: str | None = None

    @property
    def source_ref(self) -> str:
        return f"node:{self.node_id}:gap:{self.ref}"


@dataclass(frozen=True, slots=True)
class NodeUpdate:
    """Protocol state seen in a frame (hello, health, ...), persisted in the same batch as events."""

    node_id: int
    seen_ms: int | None = None
    uplink_seq: int | None = None
    fw_version: str | None = None
    downlink_session: int | None = None
    downlink_seq: int | None = None


@dataclass(frozen=True, slots=True)
class LaneReading:
    """A lane's weight and count as its node reported them (``lane_state``), for the shelf charts.

    Stored in ``lane_readings`` under the lane registered for ``(node_id, lane_index)``; a reading of a lane the
    ledger does not know is ignored (no row, no error). Ingest thins them first (``ReadingThinner``)."""

    node_id: int
    lane_index: int
    ts_ms: int  # hub receive time
    weight_dg: int
    count: int
    flags: int = 0


@dataclass(slots=True)
class ServiceStats:
    """Counters of the writer, for benchmarks and the status page."""

    transactions: int = 0
    sensor_batches: int = 0
    sensor_items: int = 0
    failed_batches: int = 0
    largest_batch: int = 0
    checkpoints: int = 0
    readings_pruned: int = 0
    tag_rows_pruned: int = 0
