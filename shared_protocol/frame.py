"""Frames: header + payload + truncated HMAC tag; senders and receivers that enforce the replay rules.

Layout (big-endian)::

    version u8 | type u8 | node_id u32 | seq u32 | payload_len u8 | payload | tag (8 bytes)

Uplink tag  = HMAC-SHA256(node key, header | payload)[:8]
Downlink tag = HMAC-SHA256(node key, session u32 | header | payload)[:8], session = the node's boot count

Uplink sequence numbers strictly increase per node for the life of its key (across reboots: see
``firmware/seq_store.py``). Downlink sequence numbers strictly increase within one node boot; binding the
tag to the boot count makes frames of an earlier boot fail authentication, so the node needs no flash
writes to reject replayed commands.
"""

import struct

from shared_protocol import PROTOCOL_VERSION
from shared_protocol.auth import TAG_LEN, Key
from shared_protocol.compat import const
from shared_protocol.errors import (
    BAD_FIELD,
    BAD_LENGTH,
    BAD_TAG,
    BAD_VERSION,
    REPLAY,
    TRUNCATED,
    UNKNOWN_NODE,
    ProtocolError,
)
from shared_protocol.messages import DOWNLINK, UPLINK, Message, class_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

HEADER_LEN = const(11)
MAX_PAYLOAD = const(255)
MIN_FRAME = const(19)  # HEADER_LEN + TAG_LEN
MAX_FRAME = const(274)  # HEADER_LEN + MAX_PAYLOAD + TAG_LEN
_HEADER_FMT = ">BBIIB"
MAX_U32 = const(0xFFFFFFFF)


class Frame:
    """A verified, decoded frame."""

    def __init__(self, node_id: int, seq: int, message: Message) -> None:
        self.node_id = node_id
        self.seq = seq
        self.message = message

    def __repr__(self) -> str:
        return "<Frame node=" + str(self.node_id) + " seq=" + str(self.seq) + " " + repr(self.message) + ">"


def _check_u32(name: str, value: int, lo: int) -> None:
    # bool is an int on CPython but not on MicroPython: reject it on both.
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or value > MAX_U32:
        raise ProtocolError(BAD_FIELD, name + "=" + str(value) + " outside " + str(lo) + "..4294967295")


def _aad(direction: int, session: int) -> bytes:
    if direction == DOWNLINK:
        _check_u32("session", session, 1)
        return struct.pack(">I", session)
    return b""


def encode_frame(message: Message, node_id: int, seq: int, key: Key, session: int = 0) -> bytes:
    """Encode and tag one frame. ``session`` (the node's boot count) is required for downlink types."""
    _check_u32("node_id", node_id, 1)
    _check_u32("seq", seq, 1)
    payload = message.encode_payload()
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(BAD_LENGTH, "payload of " + str(len(payload)) + " bytes exceeds 255")
    body = struct.pack(_HEADER_FMT, PROTOCOL_VERSION, message.TYPE, node_id, seq, len(payload)) + payload
    return body + key.tag(_aad(message.DIRECTION, session), body)


def peek_header(data: bytes) -> "tuple[int, int, int]":
    """Check the frame's structure and return (type, node_id, seq) without authenticating it."""
    n = len(data)
    if n < 1:
        raise ProtocolError(TRUNCATED, "empty frame")
    if data[0] != PROTOCOL_VERSION:
        raise ProtocolError(
            BAD_VERSION,
            "protocol version " + str(data[0]) + " not supported (this side speaks " + str(PROTOCOL_VERSION) + ")",
        )
    if n < MIN_FRAME:
        raise ProtocolError(TRUNCATED, "frame of " + str(n) + " bytes is shorter than " + str(MIN_FRAME))
    _version, msg_type, node_id, seq, plen = struct.unpack_from(_HEADER_FMT, data, 0)
    expected = HEADER_LEN + plen + TAG_LEN
    if n != expected:
        raise ProtocolError(
            TRUNCATED if n < expected else BAD_LENGTH,
            "frame has " + str(n) + " bytes, header says " + str(expected),
        )
    return msg_type, node_id, seq


def decode_frame(data: bytes, direction: int, key: "Key | None", session: int = 0) -> Frame:
    """Parse, authenticate and decode one frame travelling in ``direction`` (UPLINK or DOWNLINK)."""
    msg_type, node_id, seq = peek_header(data)
    cls = class_for(msg_type, direction)
    if key is None:
        raise ProtocolError(UNKNOWN_NODE, "no key for node " + str(node_id))
    body_end = len(data) - TAG_LEN
    body = bytes(data[:body_end])
    if not key.check(data[body_end:], _aad(direction, session), body):
        raise ProtocolError(BAD_TAG, "authentication tag mismatch for node " + str(node_id) + " seq " + str(seq))
    if node_id == 0 or seq == 0:
        raise ProtocolError(BAD_FIELD, "node_id and seq must be non-zero")
    return Frame(node_id, seq, cls.decode_payload(body[HEADER_LEN:]))


class RejectCounter:
    """Counts rejected frames by (node_id, reason); node 0 when the header was unreadable or the node unknown."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int], int] = {}
        self.last_error: ProtocolError | None = None

    def record(self, node_id: int, err: ProtocolError) -> None:
        k = (node_id, err.reason)
        self.counts[k] = self.counts.get(k, 0) + 1
        self.last_error = err

    def total(self, node_id: "int | None" = None, reason: "int | None" = None) -> int:
        n = 0
        for (nid, why), count in self.counts.items():
            if (node_id is None or nid == node_id) and (reason is None or why == reason):
                n += count
        return n


def _node_of(data: bytes) -> int:
    if len(data) >= 6:
        return int(struct.unpack_from(">I", data, 2)[0])
    return 0


class UplinkReceiver:
    """Hub side: accepts frames from provisioned nodes, strictly increasing ``seq`` per node."""

    def __init__(self, keys: "dict[int, Key]") -> None:
        self.keys = keys
        self.last_seq: dict[int, int] = {}
        self.rejected = RejectCounter()

    def accept(self, data: bytes) -> Frame:
        try:
            _msg_type, node_id, seq = peek_header(data)
            frame = decode_frame(data, UPLINK, self.keys.get(node_id))
            last = self.last_seq.get(node_id, 0)
            if seq <= last:
                raise ProtocolError(REPLAY, "node " + str(node_id) + " seq " + str(seq) + " <= " + str(last))
        except ProtocolError as err:
            # Count under the node only when it is provisioned: ids read from unauthenticated bytes must
            # not be able to grow the table without bound.
            nid = _node_of(data)
            self.rejected.record(nid if nid in self.keys else 0, err)
            raise
        self.last_seq[node_id] = seq
        return frame


class DownlinkReceiver:
    """Node side: accepts hub frames addressed to this node, for this boot, strictly increasing ``seq``."""

    def __init__(self, node_id: int, key: Key, session: int) -> None:
        self.node_id = node_id
        self.key = key
        self.session = session
        self.last_seq = 0
        self.rejected = 0
        self.last_error: ProtocolError | None = None

    def accept(self, data: bytes) -> Frame:
        try:
            _msg_type, node_id, seq = peek_header(data)
            if node_id != self.node_id:
                raise ProtocolError(UNKNOWN_NODE, "frame for node " + str(node_id))
            frame = decode_frame(data, DOWNLINK, self.key, self.session)
            if seq <= self.last_seq:
                raise ProtocolError(REPLAY, "seq " + str(seq) + " <= " + str(self.last_seq))
        except ProtocolError as err:
            self.rejected += 1
            self.last_error = err
            raise
        self.last_seq = seq
        return frame


class UplinkSender:
    """Node side: tags messages with the node key and the next persistent sequence number."""

    def __init__(self, node_id: int, key: Key, next_seq: "Callable[[], int]") -> None:
        self.node_id = node_id
        self.key = key
        self.next_seq = next_seq

    def encode(self, message: Message) -> bytes:
        return encode_frame(message, self.node_id, self.next_seq(), self.key)


class DownlinkSender:
    """Hub side, one per node: restarts its sequence at 1 whenever the node reports a new boot."""

    def __init__(self, node_id: int, key: Key) -> None:
        self.node_id = node_id
        self.key = key
        self.session = 0
        self.seq = 0

    def new_session(self, boot_count: int) -> None:
        if boot_count != self.session:
            self.session = boot_count
            self.seq = 0

    def encode(self, message: Message) -> bytes:
        if self.session == 0:
            raise ProtocolError(BAD_FIELD, "no session yet: wait for the node's hello")
        self.seq += 1
        return encode_frame(message, self.node_id, self.seq, self.key, self.session)
