"""Message payloads of protocol v1.2: what each type carries, its byte layout, and range checks.

Every message class has ``TYPE``, ``FIELDS`` (name, kind) and typed attributes. ``encode_payload``
checks every field against its range *before* packing (MicroPython's ``struct.pack`` silently
truncates), and ``decode_payload`` rejects anything that does not decode to in-range values, so both
runtimes accept and produce exactly the same bytes. All integers are big-endian.

Field kinds: ``B``/``H``/``I`` unsigned 8/16/32-bit, ``b``/``h``/``i`` signed, ``E`` an RFID EPC
(1-byte length then 1..32 bytes), ``S`` an identifier (1-byte length then 1..32 printable ASCII).
"""

import struct

from shared_protocol.compat import const
from shared_protocol.errors import BAD_FIELD, BAD_LENGTH, BAD_TYPE, TRUNCATED, ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

# Uplink (node -> hub) types are 0x01..0x3F, downlink (hub -> node) types 0x40..0x7F.
HELLO = const(0x01)
LANE_STATE = const(0x02)
EVENT = const(0x03)
COMMAND_RESULT = const(0x04)
HEALTH = const(0x05)
RFID_SEEN = const(0x06)
RFID_LOST = const(0x07)
TAG_SEEN = const(0x08)  # v1.2
TAG_LOST = const(0x09)  # v1.2
READER_HEALTH = const(0x0A)  # v1.2
ACK = const(0x40)
CMD_TARE = const(0x41)
CMD_CALIBRATE = const(0x42)
CMD_SET_LANE = const(0x43)
CMD_IDENTIFY = const(0x44)
CMD_SET_CONFIG = const(0x45)
CMD_REQUEST_STATE = const(0x46)
CMD_SET_COUNT = const(0x47)  # v1.1

UPLINK = const(0)
DOWNLINK = const(1)

# Event kinds.
KIND_PICK = const(1)
KIND_PUT = const(2)
KIND_ANOMALY = const(3)
KIND_COUNT = const(4)  # v1.1: a counted quantity set the lane's count (set_count); count_delta = new - old

# Command-result status codes.
STATUS_OK = const(0)
STATUS_BAD_ARGS = const(1)
STATUS_UNSUPPORTED = const(2)
STATUS_BUSY = const(3)
STATUS_FAILED = const(4)

# Lane-state flag bits.
FLAG_SENSOR_FAULT = const(0x0001)
FLAG_UNSTABLE = const(0x0002)
FLAG_UNCALIBRATED = const(0x0004)
FLAG_OVERLOAD = const(0x0008)
FLAG_OUTBOX_OVERFLOW = const(0x0010)

# reader_health.state (v1.2).
READER_OK = const(0)  # the reader answers and inventories
READER_SILENT = const(1)  # the reader stopped answering (unplugged, unpowered, rebooting): nothing is read
READER_STARTING = const(2)  # the node is (re)configuring the reader: region, power

ALL_LANES = const(255)
AGE_UNKNOWN = const(0xFFFFFFFF)  # event.age_ms of an event from an earlier boot: its age cannot be known
MAX_VAR_LEN = const(32)
MAX_COUNT = const(1000000)  # set_count.count: the most units a lane can be said to hold
MAX_STEP = const(32767)  # the largest |count_delta| one event carries (i16)

_INT_RANGES = {
    "B": (0, 0xFF),
    "b": (-0x80, 0x7F),
    "H": (0, 0xFFFF),
    "h": (-0x8000, 0x7FFF),
    "I": (0, 0xFFFFFFFF),
    "i": (-0x80000000, 0x7FFFFFFF),
}
_INT_SIZES = {"B": 1, "b": 1, "H": 2, "h": 2, "I": 4, "i": 4}


def _check_int(name: str, kind: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(BAD_FIELD, name + " must be an integer")
    rlo, rhi = _INT_RANGES[kind]
    if lo < rlo:
        lo = rlo
    if hi > rhi:
        hi = rhi
    if value < lo or value > hi:
        raise ProtocolError(BAD_FIELD, name + "=" + str(value) + " outside " + str(lo) + ".." + str(hi))
    return value


def _check_var(name: str, kind: str, value: object) -> bytes:
    if kind == "S":
        if not isinstance(value, str):
            raise ProtocolError(BAD_FIELD, name + " must be a string")
        # Check characters before encoding: CPython cannot encode lone surrogates (UnicodeEncodeError).
        for ch in value:
            if ord(ch) < 0x20 or ord(ch) > 0x7E:
                raise ProtocolError(BAD_FIELD, name + " must be printable ASCII")
        raw = value.encode()
    else:
        if not isinstance(value, (bytes, bytearray)):
            raise ProtocolError(BAD_FIELD, name + " must be bytes")
        raw = bytes(value)
    if not 1 <= len(raw) <= MAX_VAR_LEN:
        raise ProtocolError(BAD_FIELD, name + " length " + str(len(raw)) + " outside 1.." + str(MAX_VAR_LEN))
    return raw


def _unhex(name: str, text: str) -> bytes:
    # No try/except-raise: MicroPython prints a warning for ``raise ... from``.
    if len(text) % 2 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ProtocolError(BAD_FIELD, name + " must be hex")
    return bytes.fromhex(text)


_FIXED: "dict[type, tuple[str, int] | None]" = {}


def _fixed_layout(cls: "type[Message]") -> "tuple[str, int] | None":
    """(struct format, size) of a message made only of integer fields; None when it has variable fields."""
    if cls in _FIXED:
        return _FIXED[cls]
    fmt = ">"
    size = 0
    layout: tuple[str, int] | None = None
    for _name, kind, _lo, _hi in cls.FIELDS:
        if kind not in _INT_SIZES:
            break
        fmt += kind
        size += _INT_SIZES[kind]
    else:
        layout = (fmt, size)
    _FIXED[cls] = layout
    return layout


class Message:
    """Base class: subclasses set TYPE, NAME, DIRECTION and FIELDS = ((name, kind, lo, hi), ...)."""

    TYPE = 0
    NAME = ""
    DIRECTION = UPLINK
    FIELDS: "ClassVar[tuple[tuple[str, str, int, int], ...]]" = ()

    def __init__(self, *values: "Any") -> None:
        raise TypeError("Message is abstract; use a message class")

    def encode_payload(self) -> bytes:
        out = bytearray()
        for name, kind, lo, hi in self.FIELDS:
            value = getattr(self, name)
            if kind in _INT_SIZES:
                out += struct.pack(">" + kind, _check_int(name, kind, value, lo, hi))
            else:
                raw = _check_var(name, kind, value)
                out.append(len(raw))
                out += raw
        return bytes(out)

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Message":
        fixed = _fixed_layout(cls)
        if fixed is not None and len(payload) == fixed[1]:
            # Fast path for all-integer messages of the right size: one unpack, then the range checks.
            unpacked = struct.unpack(fixed[0], payload)
            checked: list[Any] = []
            for i, (name, kind, lo, hi) in enumerate(cls.FIELDS):
                checked.append(_check_int(name, kind, unpacked[i], lo, hi))
            return cls(*checked)
        # General path (variable-length fields, and every malformed payload: precise errors).
        values: list[Any] = []
        pos = 0
        n = len(payload)
        for name, kind, lo, hi in cls.FIELDS:
            size = _INT_SIZES.get(kind, 0)
            if size:
                if pos + size > n:
                    raise ProtocolError(TRUNCATED, cls.NAME + "." + name + " truncated")
                value = struct.unpack_from(">" + kind, payload, pos)[0]
                pos += size
                values.append(_check_int(name, kind, value, lo, hi))
            else:
                if pos >= n:
                    raise ProtocolError(TRUNCATED, cls.NAME + "." + name + " truncated")
                length = payload[pos]
                pos += 1
                if pos + length > n:
                    raise ProtocolError(TRUNCATED, cls.NAME + "." + name + " truncated")
                raw = bytes(payload[pos : pos + length])
                pos += length
                if kind == "S":
                    for c in raw:
                        if c < 0x20 or c > 0x7E:
                            raise ProtocolError(BAD_FIELD, name + " must be printable ASCII")
                    text = raw.decode()
                    _check_var(name, kind, text)  # returns the encoded bytes; the field holds the str
                    values.append(text)
                else:
                    values.append(_check_var(name, kind, raw))
        if pos != n:
            raise ProtocolError(BAD_LENGTH, cls.NAME + " has " + str(n - pos) + " trailing bytes")
        return cls(*values)

    def to_dict(self) -> "dict[str, Any]":
        """JSON-friendly form: {"type": name, field: value...}; EPC bytes as lowercase hex."""
        d: dict[str, Any] = {"type": self.NAME}
        for name, kind, _lo, _hi in self.FIELDS:
            value = getattr(self, name)
            d[name] = bytes(value).hex() if kind == "E" else value
        return d

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return False
        return all(getattr(self, name) == getattr(other, name) for name, _kind, _lo, _hi in self.FIELDS)

    def __repr__(self) -> str:
        return "<" + self.NAME + " " + str(self.to_dict()) + ">"


class Hello(Message):
    """Sent at boot and until acknowledged: who the node is and which boot this is."""

    TYPE = HELLO
    NAME = "hello"
    FIELDS = (
        ("fw_major", "B", 0, 255),
        ("fw_minor", "B", 0, 255),
        ("fw_patch", "B", 0, 255),
        ("boot_count", "I", 1, 0xFFFFFFFF),
        ("lane_count", "B", 1, 32),
        ("layout_hash", "I", 0, 0xFFFFFFFF),
    )

    def __init__(
        self, fw_major: int, fw_minor: int, fw_patch: int, boot_count: int, lane_count: int, layout_hash: int
    ) -> None:
        self.fw_major = fw_major
        self.fw_minor = fw_minor
        self.fw_patch = fw_patch
        self.boot_count = boot_count
        self.lane_count = lane_count
        self.layout_hash = layout_hash


class LaneState(Message):
    """A lane's counters; lets the hub detect and book events lost beyond the outbox ("sensor gap")."""

    TYPE = LANE_STATE
    NAME = "lane_state"
    FIELDS = (
        ("lane", "B", 0, 31),
        ("count", "i", -0x80000000, 0x7FFFFFFF),
        ("removed_total", "I", 0, 0xFFFFFFFF),
        ("added_total", "I", 0, 0xFFFFFFFF),
        ("weight_dg", "i", -0x80000000, 0x7FFFFFFF),
        ("flags", "H", 0, 0xFFFF),
        ("last_event", "I", 0, 0xFFFFFFFF),
    )

    def __init__(
        self,
        lane: int,
        count: int,
        removed_total: int,
        added_total: int,
        weight_dg: int,
        flags: int,
        last_event: int,
    ) -> None:
        self.lane = lane
        self.count = count
        self.removed_total = removed_total
        self.added_total = added_total
        self.weight_dg = weight_dg
        self.flags = flags
        self.last_event = last_event


class Event(Message):
    """A counted change on a lane. ``event_seq`` numbers events per node, contiguously from 1."""

    TYPE = EVENT
    NAME = "event"
    FIELDS = (
        ("event_seq", "I", 1, 0xFFFFFFFF),
        ("lane", "B", 0, 31),
        ("kind", "B", KIND_PICK, KIND_COUNT),
        ("count_delta", "h", -0x8000, 0x7FFF),
        ("weight_delta_dg", "i", -0x80000000, 0x7FFFFFFF),
        ("confidence", "B", 0, 100),
        ("age_ms", "I", 0, 0xFFFFFFFF),
    )

    def __init__(
        self,
        event_seq: int,
        lane: int,
        kind: int,
        count_delta: int,
        weight_delta_dg: int,
        confidence: int,
        age_ms: int,
    ) -> None:
        self.event_seq = event_seq
        self.lane = lane
        self.kind = kind
        self.count_delta = count_delta
        self.weight_delta_dg = weight_delta_dg
        self.confidence = confidence
        self.age_ms = age_ms


class CommandResult(Message):
    """The node's answer to a command frame, naming it by the command frame's sequence number."""

    TYPE = COMMAND_RESULT
    NAME = "command_result"
    FIELDS = (
        ("command_seq", "I", 1, 0xFFFFFFFF),
        ("status", "B", STATUS_OK, STATUS_FAILED),
        ("value", "i", -0x80000000, 0x7FFFFFFF),
    )

    def __init__(self, command_seq: int, status: int, value: int) -> None:
        self.command_seq = command_seq
        self.status = status
        self.value = value


class Health(Message):
    """Periodic node health: uptime, memory, achieved sampling rate, link and outbox counters."""

    TYPE = HEALTH
    NAME = "health"
    FIELDS = (
        ("uptime_s", "I", 0, 0xFFFFFFFF),
        ("free_heap", "I", 0, 0xFFFFFFFF),
        ("sample_rate_chz", "H", 0, 0xFFFF),
        ("tx_frames", "I", 0, 0xFFFFFFFF),
        ("rx_frames", "I", 0, 0xFFFFFFFF),
        ("rx_rejected", "I", 0, 0xFFFFFFFF),
        ("outbox_depth", "H", 0, 0xFFFF),
        ("outbox_dropped", "I", 0, 0xFFFFFFFF),
        ("outbox_first", "I", 0, 0xFFFFFFFF),
    )

    def __init__(
        self,
        uptime_s: int,
        free_heap: int,
        sample_rate_chz: int,
        tx_frames: int,
        rx_frames: int,
        rx_rejected: int,
        outbox_depth: int,
        outbox_dropped: int,
        outbox_first: int,
    ) -> None:
        self.uptime_s = uptime_s
        self.free_heap = free_heap
        self.sample_rate_chz = sample_rate_chz
        self.tx_frames = tx_frames
        self.rx_frames = rx_frames
        self.rx_rejected = rx_rejected
        self.outbox_depth = outbox_depth
        self.outbox_dropped = outbox_dropped
        # Lowest event_seq still held for retransmission (0 = outbox empty). Events below it that the hub
        # never received were dropped by an overflowing outbox: the hub books them as a sensor gap.
        self.outbox_first = outbox_first


class RfidSeen(Message):
    """v1.0, unsequenced: a tag came into view of the reader (antenna) serving ``lane``. No firmware sends it; a v1.2
    node sends ``tag_seen`` instead, which is delivered through the outbox like an event."""

    TYPE = RFID_SEEN
    NAME = "rfid_seen"
    FIELDS = (("lane", "B", 0, 31), ("rssi", "b", -128, 127), ("epc", "E", 0, 0))

    def __init__(self, lane: int, rssi: int, epc: bytes) -> None:
        self.lane = lane
        self.rssi = rssi
        self.epc = epc


class RfidLost(Message):
    """v1.0, unsequenced: a tag previously seen has not been read for the node's loss timeout (see ``TagLost``)."""

    TYPE = RFID_LOST
    NAME = "rfid_lost"
    FIELDS = (("lane", "B", 0, 31), ("epc", "E", 0, 0))

    def __init__(self, lane: int, epc: bytes) -> None:
        self.lane = lane
        self.epc = epc


class TagSeen(Message):
    """v1.2: a tag is present on ``lane`` (the node's debounce says so). ``event_seq`` is from the same sequence as
    ``event``: it is kept in the outbox, re-sent until acknowledged and booked once. ``rssi`` is the strongest read
    of the debounce window in the reader's units (dBm on R200-class modules); ``age_ms`` is the time since the tag's
    first read of that window (its arrival), as ``event``'s age (``AGE_UNKNOWN`` from an earlier boot)."""

    TYPE = TAG_SEEN
    NAME = "tag_seen"
    FIELDS = (
        ("event_seq", "I", 1, 0xFFFFFFFF),
        ("lane", "B", 0, 31),
        ("rssi", "b", -128, 127),
        ("age_ms", "I", 0, 0xFFFFFFFF),
        ("epc", "E", 0, 0),
    )

    def __init__(self, event_seq: int, lane: int, rssi: int, age_ms: int, epc: bytes) -> None:
        self.event_seq = event_seq
        self.lane = lane
        self.rssi = rssi
        self.age_ms = age_ms
        self.epc = epc


class TagLost(Message):
    """v1.2: a tag present on ``lane`` has not been read there for the node's loss time (it left, or it moved to
    another lane: then a ``tag_seen`` on that lane follows). Sequenced like ``tag_seen``; ``age_ms`` is the time since
    the tag's last read on ``lane`` (its departure), not since the decision, which comes ``lost_s`` later."""

    TYPE = TAG_LOST
    NAME = "tag_lost"
    FIELDS = (
        ("event_seq", "I", 1, 0xFFFFFFFF),
        ("lane", "B", 0, 31),
        ("age_ms", "I", 0, 0xFFFFFFFF),
        ("epc", "E", 0, 0),
    )

    def __init__(self, event_seq: int, lane: int, age_ms: int, epc: bytes) -> None:
        self.event_seq = event_seq
        self.lane = lane
        self.age_ms = age_ms
        self.epc = epc


class ReaderHealth(Message):
    """v1.2: one RFID reader's state and counters, sent with ``health`` (not sequenced: the next one replaces it)."""

    TYPE = READER_HEALTH
    NAME = "reader_health"
    FIELDS = (
        ("reader", "B", 0, 7),
        ("state", "B", READER_OK, READER_STARTING),
        ("reads", "I", 0, 0xFFFFFFFF),
        ("bad_frames", "I", 0, 0xFFFFFFFF),
        ("resets", "H", 0, 0xFFFF),
        ("silences", "H", 0, 0xFFFF),
        ("present", "H", 0, 0xFFFF),
    )

    def __init__(
        self, reader: int, state: int, reads: int, bad_frames: int, resets: int, silences: int, present: int
    ) -> None:
        self.reader = reader
        self.state = state
        self.reads = reads  # tag reads accepted (valid frame, valid EPC), all antennas
        self.bad_frames = bad_frames  # frames dropped: bad checksum, bad length, garbage resynchronised past
        self.resets = resets  # times the reader was found reset (settings lost) and configured again
        self.silences = silences  # times the reader stopped answering
        self.present = present  # tags present now on this reader's lanes


class Ack(Message):
    """Hub -> node: every event with ``event_seq`` <= this is in the ledger (0 = none yet)."""

    TYPE = ACK
    NAME = "ack"
    DIRECTION = DOWNLINK
    FIELDS = (("event_seq", "I", 0, 0xFFFFFFFF),)

    def __init__(self, event_seq: int) -> None:
        self.event_seq = event_seq


class Tare(Message):
    TYPE = CMD_TARE
    NAME = "tare"
    DIRECTION = DOWNLINK
    FIELDS = (("lane", "B", 0, 31),)

    def __init__(self, lane: int) -> None:
        self.lane = lane


class Calibrate(Message):
    """Calibrate ``lane`` with a known weight now on it (tenths of grams, 0.1 g .. 100 kg)."""

    TYPE = CMD_CALIBRATE
    NAME = "calibrate"
    DIRECTION = DOWNLINK
    FIELDS = (("lane", "B", 0, 31), ("known_weight_dg", "I", 1, 1000000))

    def __init__(self, lane: int, known_weight_dg: int) -> None:
        self.lane = lane
        self.known_weight_dg = known_weight_dg


class SetLane(Message):
    """Assign a SKU to a lane with its unit weight (0.1 g) and unit-weight spread (per mille)."""

    TYPE = CMD_SET_LANE
    NAME = "set_lane"
    DIRECTION = DOWNLINK
    FIELDS = (
        ("lane", "B", 0, 31),
        ("unit_weight_dg", "I", 1, 1000000),
        ("spread_permille", "H", 0, 1000),
        ("sku", "S", 0, 0),
    )

    def __init__(self, lane: int, unit_weight_dg: int, spread_permille: int, sku: str) -> None:
        self.lane = lane
        self.unit_weight_dg = unit_weight_dg
        self.spread_permille = spread_permille
        self.sku = sku


class Identify(Message):
    """Blink the node's LED for ``seconds`` so staff can find it (0 stops)."""

    TYPE = CMD_IDENTIFY
    NAME = "identify"
    DIRECTION = DOWNLINK
    FIELDS = (("seconds", "B", 0, 255),)

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds


class SetConfig(Message):
    """Set a numbered node setting; keys are assigned in ``firmware/`` (see the protocol README)."""

    TYPE = CMD_SET_CONFIG
    NAME = "set_config"
    DIRECTION = DOWNLINK
    FIELDS = (("key", "B", 1, 255), ("value", "i", -0x80000000, 0x7FFFFFFF))

    def __init__(self, key: int, value: int) -> None:
        self.key = key
        self.value = value


class RequestState(Message):
    """Ask for LaneState of one lane, or of all lanes with lane = 255."""

    TYPE = CMD_REQUEST_STATE
    NAME = "request_state"
    DIRECTION = DOWNLINK
    FIELDS = (("lane", "B", 0, 255),)

    def __init__(self, lane: int) -> None:
        self.lane = lane


class SetCount(Message):
    """v1.1: the lane holds ``count`` units, as counted by staff (an installation or a recount). The node sets its
    lane counter to it and records the difference as ``KIND_COUNT`` events, so it reaches the ledger exactly once
    through the outbox, at its place among the lane's other events."""

    TYPE = CMD_SET_COUNT
    NAME = "set_count"
    DIRECTION = DOWNLINK
    FIELDS = (("lane", "B", 0, 31), ("count", "i", 0, MAX_COUNT))

    def __init__(self, lane: int, count: int) -> None:
        self.lane = lane
        self.count = count


MESSAGE_CLASSES = (
    Hello,
    LaneState,
    Event,
    CommandResult,
    Health,
    RfidSeen,
    RfidLost,
    TagSeen,
    TagLost,
    ReaderHealth,
    Ack,
    Tare,
    Calibrate,
    SetLane,
    Identify,
    SetConfig,
    RequestState,
    SetCount,
)
BY_TYPE = {}
BY_NAME = {}
for _cls in MESSAGE_CLASSES:
    BY_TYPE[_cls.TYPE] = _cls
    BY_NAME[_cls.NAME] = _cls


def class_for(msg_type: int, direction: int) -> "type[Message]":
    cls = BY_TYPE.get(msg_type)
    if cls is None:
        raise ProtocolError(BAD_TYPE, "unknown message type " + str(msg_type))
    if direction != cls.DIRECTION:
        raise ProtocolError(BAD_TYPE, cls.NAME + " does not travel in this direction")
    return cls


def from_dict(d: "dict[str, Any]") -> Message:
    """Inverse of ``Message.to_dict``."""
    type_name = d.get("type", "")
    cls = BY_NAME.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ProtocolError(BAD_TYPE, "unknown message name " + str(d.get("type")))
    args: list[Any] = []
    for name, kind, _lo, _hi in cls.FIELDS:
        if name not in d:
            raise ProtocolError(BAD_FIELD, cls.NAME + " needs " + name)
        value = d[name]
        if kind == "E":
            if not isinstance(value, str):
                raise ProtocolError(BAD_FIELD, name + " must be hex")
            value = _unhex(name, value)
        args.append(value)
    return cls(*args)
