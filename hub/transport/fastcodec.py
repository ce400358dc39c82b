"""The hub's CPython fast path for the uplink: splitting at 0x00, COBS and frame decoding (issue 13).

``shared_protocol`` stays pure Python that MicroPython runs unchanged; the hub (CPython only) decodes the same bytes
with what CPython does in C: ``bytes.split`` for the delimiters, one pass over the COBS codes, HMAC-SHA256 from
copies of the SHA-256 states after the key's pads (kept per node), one precompiled ``struct.Struct`` per all-integer
message. The rule that keeps the two byte for byte the same: the fast path only ever *accepts*, and only what it has
checked the way the shared code checks it; anything else (a frame it is unsure of, every malformed, forged, replayed
or unknown one, a COBS block of 254 bytes) goes to the shared code, which decides, counts and raises its own error.
So the results and the errors are the shared code's by construction, and ``tests/test_fastcodec.py`` feeds both the
same golden, random and malformed input and compares results, errors and counters.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import Any

from shared_protocol import PROTOCOL_VERSION
from shared_protocol.auth import TAG_LEN, Key
from shared_protocol.errors import BAD_LENGTH, ProtocolError
from shared_protocol.frame import HEADER_LEN, MIN_FRAME, Frame, UplinkReceiver
from shared_protocol.messages import MESSAGE_CLASSES, UPLINK, Message
from shared_protocol.serial_framing import MAX_CHUNK, SerialDecoder, cobs_decode
from shared_protocol.splitter import Splitter

_HEADER = struct.Struct(">BIIB")  # type, node_id, seq, payload length (after the version byte)
_RANGES = {"B": (0, 0xFF), "b": (-0x80, 0x7F), "H": (0, 0xFFFF), "h": (-0x8000, 0x7FFF)}
_RANGES.update({"I": (0, 0xFFFFFFFF), "i": (-0x80000000, 0x7FFFFFFF)})
Decoder = Callable[[bytes], Message | None]


def fast_cobs_decode(data: bytes) -> bytes:
    """``shared_protocol.serial_framing.cobs_decode``: the same bytes, the same errors (raised by it)."""
    n = len(data)
    if type(data) is not bytes or 0 in data:
        return cobs_decode(data)
    out = bytearray(data)
    i = data[0] if n else 0
    while i < n:  # each code byte after the first stands where the frame had a zero
        code = data[i]
        if code == 0xFF or i + code > n:  # a full block (no zero follows) or a block past the end
            return cobs_decode(data)
        out[i] = 0
        i += code
    if i > n or (n and data[0] == 0xFF):
        return cobs_decode(data)
    return bytes(out[1:])


class FastSplitter(Splitter):
    """``Splitter`` with ``bytes.split`` when nothing is buffered (the usual case: a read ends on a delimiter)."""

    def split(self, data: bytes) -> list[bytes]:
        if self._buf or self._skipping or type(data) is not bytes:
            return super().split(data)
        pieces = data.split(self._delim)
        tail = pieces.pop()
        chunks = []
        for piece in pieces:
            if len(piece) > self._max:
                self.overlong += 1
                self.dropped_bytes += len(piece)
            elif piece:
                chunks.append(piece)
        if tail:
            super().split(tail)  # buffered (or skipped, if already too long) until its delimiter
        return chunks


class FastSerialDecoder(SerialDecoder):
    """``SerialDecoder`` on the fast splitter and COBS decoder: the same frames, counters and last error."""

    def __init__(self) -> None:
        super().__init__()
        self._split = FastSplitter(0x00, MAX_CHUNK)

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        overlong = self._split.overlong
        for chunk in self._split.split(data):
            try:
                frames.append(fast_cobs_decode(chunk))
            except ProtocolError as err:
                self._bad_chunks += 1
                self._bad_bytes += len(chunk)
                self.last_error = err
        if self._split.overlong != overlong:  # the shared decoder's error, word for word
            self.last_error = ProtocolError(BAD_LENGTH, "chunk longer than " + str(MAX_CHUNK) + " bytes")
        return frames


def _fixed_decoder(cls: type[Message]) -> Decoder | None:
    """One unpack and the narrower range checks of an all-integer message; None: not all-integer."""
    if not cls.FIELDS or any(kind not in _RANGES for _name, kind, _lo, _hi in cls.FIELDS):
        return None
    layout = struct.Struct(">" + "".join(kind for _name, kind, _lo, _hi in cls.FIELDS))
    checks = tuple(
        (i, max(lo, _RANGES[kind][0]), min(hi, _RANGES[kind][1]))
        for i, (_name, kind, lo, hi) in enumerate(cls.FIELDS)
        if lo > _RANGES[kind][0] or hi < _RANGES[kind][1]
    )
    size, unpack = layout.size, layout.unpack

    def decode(payload: bytes) -> Message | None:
        if len(payload) != size:
            return None
        values = unpack(payload)
        for i, lo, hi in checks:
            if not lo <= values[i] <= hi:
                return None
        return cls(*values)

    return decode


def _general_decoder(cls: type[Message]) -> Decoder:
    def decode(payload: bytes) -> Message | None:
        try:
            return cls.decode_payload(payload)
        except ProtocolError:
            return None

    return decode


_DECODERS: dict[int, Decoder] = {
    cls.TYPE: _fixed_decoder(cls) or _general_decoder(cls) for cls in MESSAGE_CLASSES if cls.DIRECTION == UPLINK
}


def _pads(key: Key) -> tuple[Any, Any]:
    """SHA-256 states after the key's inner and outer pads (those ``Key`` keeps): a tag then costs two copies and
    the message, where ``hmac.digest`` hashes both pads again on every call."""
    return hashlib.sha256(key._ipad), hashlib.sha256(key._opad)


class FastUplinkReceiver(UplinkReceiver):
    """``UplinkReceiver`` whose accepted frames are decoded by the fast path; the rest by the shared code."""

    def __init__(self, keys: dict[int, Key]) -> None:
        super().__init__(keys)
        self._pads: dict[int, tuple[Key, Any, Any]] = {}

    def accept(self, data: bytes) -> Frame:
        n = len(data)
        if type(data) is bytes and n >= MIN_FRAME and data[0] == PROTOCOL_VERSION:
            msg_type, node_id, seq, plen = _HEADER.unpack_from(data, 1)
            key = self.keys.get(node_id)
            decode = _DECODERS.get(msg_type)
            fits = n == HEADER_LEN + plen + TAG_LEN and node_id and seq > self.last_seq.get(node_id, 0)
            if fits and key is not None and decode is not None:
                known = self._pads.get(node_id)
                if known is None or known[0] is not key:
                    known = self._pads[node_id] = (key, *_pads(key))
                body = data[: n - TAG_LEN]
                inner = known[1].copy()
                inner.update(body)
                outer = known[2].copy()
                outer.update(inner.digest())
                if hmac.compare_digest(outer.digest()[:TAG_LEN], data[n - TAG_LEN :]):
                    message = decode(body[HEADER_LEN:])
                    if message is not None:
                        self.last_seq[node_id] = seq
                        return Frame(node_id, seq, message)
        return super().accept(data)
