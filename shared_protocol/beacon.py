"""The lane-state beacon: what a BLE node advertises so the hub learns its counts without a connection.

A legacy advertisement holds 31 bytes. The beacon fills them exactly: the Flags AD structure (3 bytes) and one
Manufacturer Specific Data structure (28 bytes: length, type 0xFF, company id, then the 24-byte beacon below).
All integers are big-endian, as in frames (shared_protocol/README.md section 8.2).

| Offset | Size | Field |
|--------|------|-------|
| 0 | 1 | format, 1 |
| 1 | 4 | node id |
| 5 | 4 | counter: strictly increasing per node, drawn from the node's uplink frame sequence |
| 9 | 1 | flags: bit 0 WAITING (events not yet acknowledged), bit 1 FAULT (a lane has a sensor fault) |
| 10 | 1 | first lane in this beacon, 0..31 |
| 11 | 1 | the node's lane count, 1..32 |
| 12 | 8 | 4 lane entries, u16 each: bit 15 fault, bit 14 moving, bits 0..13 count (16383 = 16383 or more) |
| 20 | 4 | tag: HMAC-SHA256(node key, "SSB1" + bytes 0..19), first 4 bytes |

Lanes past the node's lane count are zero. A node with more than four lanes rotates ``first`` through them.
The tag is short because an advertisement is: a forger has one chance in 2**32 per try, each try costs an
advertisement on air, and a beacon can only change what the page shows until the next connection and cause a
connection to be made. Nothing in the ledger comes from a beacon. The "SSB1" prefix keeps beacon tags apart
from frame tags made with the same key.

Runs unchanged under MicroPython and CPython. ``Beacon.write`` fills a preallocated advertisement buffer.
"""

from shared_protocol.auth import Key
from shared_protocol.compat import const, ct_equal
from shared_protocol.errors import BAD_FIELD, BAD_LENGTH, BAD_TAG, BAD_VERSION, ProtocolError

COMPANY_ID = const(0xFFFF)  # Bluetooth SIG: reserved for testing; a product registers its own id
FORMAT = const(1)
ADV_LEN = const(31)
PAYLOAD_LEN = const(24)  # the manufacturer data after the company id
LANES = const(4)  # lane entries per beacon
BEACON_TAG_LEN = const(4)
MAX_LANE_COUNT = const(16383)  # a lane entry's count field saturates here
WAITING = const(1)
FAULT = const(2)
LANE_FAULT = const(0x8000)
LANE_MOVING = const(0x4000)
_MAX_LANES = const(32)
_BODY = const(20)  # the tagged bytes
_DOMAIN = b"SSB1"
_HEAD = b"\x02\x01\x06\x1b\xff\xff\xff"  # Flags (LE general discoverable, no BR/EDR); manufacturer data, company


def lane_entry(count: int, fault: bool, moving: bool) -> int:
    """One lane's u16: the count (saturated to 0..16383) and its two flags."""
    if count < 0:
        count = 0
    elif count > MAX_LANE_COUNT:
        count = MAX_LANE_COUNT
    return count | (LANE_FAULT if fault else 0) | (LANE_MOVING if moving else 0)


def _u32(b: "bytes | bytearray | memoryview", i: int) -> int:
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


def _put32(b: bytearray, i: int, v: int) -> None:
    b[i] = (v >> 24) & 0xFF
    b[i + 1] = (v >> 16) & 0xFF
    b[i + 2] = (v >> 8) & 0xFF
    b[i + 3] = v & 0xFF


class Beacon:
    """One beacon's fields. ``entries`` holds ``LANES`` u16 lane entries (``lane_entry``)."""

    def __init__(
        self, node_id: int, counter: int, flags: int, first: int, lane_count: int, entries: "list[int]"
    ) -> None:
        self.node_id = node_id
        self.counter = counter
        self.flags = flags
        self.first = first
        self.lane_count = lane_count
        self.entries = entries

    def check(self) -> None:
        """Raise ProtocolError(bad_field) unless every field is in range."""
        if not 1 <= self.node_id <= 0xFFFFFFFF or not 0 <= self.counter <= 0xFFFFFFFF:
            raise ProtocolError(BAD_FIELD, "beacon node id or counter out of range")
        if self.flags & ~(WAITING | FAULT):
            raise ProtocolError(BAD_FIELD, "beacon flags " + str(self.flags) + " has reserved bits set")
        if not 1 <= self.lane_count <= _MAX_LANES or not 0 <= self.first < self.lane_count:
            raise ProtocolError(BAD_FIELD, "beacon lanes: first " + str(self.first) + " of " + str(self.lane_count))
        if len(self.entries) != LANES:
            raise ProtocolError(BAD_FIELD, "beacon needs " + str(LANES) + " lane entries")
        for i in range(LANES):
            e = self.entries[i]
            if not 0 <= e <= 0xFFFF or (self.first + i >= self.lane_count and e):
                raise ProtocolError(BAD_FIELD, "beacon lane entry " + str(i) + " invalid")

    def lanes(self) -> "list[tuple[int, int, bool, bool]]":
        """(lane, count, fault, moving) of the lanes this beacon carries."""
        out = []
        for i in range(LANES):
            lane = self.first + i
            if lane >= self.lane_count:
                break
            e = self.entries[i]
            out.append((lane, e & MAX_LANE_COUNT, bool(e & LANE_FAULT), bool(e & LANE_MOVING)))
        return out

    def write(self, key: Key, adv: bytearray) -> None:
        """Fill ``adv`` (a ``bytearray(ADV_LEN)``) with the advertisement: AD structures and the tagged beacon."""
        self.check()
        adv[0:7] = _HEAD
        p = 7
        adv[p] = FORMAT
        _put32(adv, p + 1, self.node_id)
        _put32(adv, p + 5, self.counter)
        adv[p + 9] = self.flags
        adv[p + 10] = self.first
        adv[p + 11] = self.lane_count
        for i in range(LANES):
            e = self.entries[i]
            adv[p + 12 + 2 * i] = e >> 8
            adv[p + 13 + 2 * i] = e & 0xFF
        tag = key.digest(_DOMAIN, bytes(adv[p : p + _BODY]))
        adv[p + _BODY : p + PAYLOAD_LEN] = tag[:BEACON_TAG_LEN]

    def advertisement(self, key: Key) -> bytes:
        adv = bytearray(ADV_LEN)
        self.write(key, adv)
        return bytes(adv)


def decode(payload: "bytes | bytearray") -> Beacon:
    """The beacon in a manufacturer-data payload (the 24 bytes after the company id), not yet authenticated:
    ``node_id`` says whose key checks it (``verify``)."""
    if len(payload) != PAYLOAD_LEN:
        raise ProtocolError(BAD_LENGTH, "beacon of " + str(len(payload)) + " bytes, expected " + str(PAYLOAD_LEN))
    if payload[0] != FORMAT:
        raise ProtocolError(BAD_VERSION, "beacon format " + str(payload[0]))
    entries = []
    for i in range(LANES):
        entries.append((payload[12 + 2 * i] << 8) | payload[13 + 2 * i])
    b = Beacon(_u32(payload, 1), _u32(payload, 5), payload[9], payload[10], payload[11], entries)
    b.check()
    return b


def verify(payload: "bytes | bytearray", key: Key) -> bool:
    """True when the payload's tag is the node key's."""
    if len(payload) != PAYLOAD_LEN:
        return False
    tag = key.digest(_DOMAIN, bytes(payload[:_BODY]))[:BEACON_TAG_LEN]
    return ct_equal(tag, bytes(payload[_BODY:PAYLOAD_LEN]))


def payload_of(adv: "bytes | bytearray") -> "bytes | None":
    """The beacon payload in raw advertising data (AD structures), or None when it has none of ours."""
    i = 0
    n = len(adv)
    while i < n:
        length = adv[i]
        if length == 0 or i + 1 + length > n:
            return None
        if adv[i + 1] == 0xFF and length == 3 + PAYLOAD_LEN and adv[i + 2] == 0xFF and adv[i + 3] == 0xFF:
            return bytes(adv[i + 4 : i + 4 + PAYLOAD_LEN])
        i += 1 + length
    return None


def open_beacon(payload: "bytes | bytearray", key: Key) -> Beacon:
    """Decode and authenticate; ProtocolError(bad_tag) when the tag is not the key's."""
    b = decode(payload)
    if not verify(payload, key):
        raise ProtocolError(BAD_TAG, "beacon tag does not match node " + str(b.node_id) + "'s key")
    return b
