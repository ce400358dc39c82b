"""Splitting frames into BLE notifications / writes of at most ``MTU - 3`` bytes, and joining them.

Each fragment starts with two bytes: ``msg_id`` (rolls over per frame) and ``index << 4 | (count - 1)``,
then up to ``MTU - 5`` bytes of the frame. A frame may span at most 16 fragments, which covers the
largest frame (274 bytes) even at the minimum ATT MTU of 23 (18 data bytes each). The link delivers in
order; the reassembler holds one frame at a time and drops a partial frame when a new one starts.
"""

from shared_protocol.compat import const
from shared_protocol.errors import BAD_FRAGMENT, BAD_LENGTH, ProtocolError
from shared_protocol.frame import MAX_FRAME

FRAG_HEADER = const(2)
MAX_FRAGMENTS = const(16)
MIN_MTU = const(23)
MAX_MTU = const(517)


def fragment(frame: bytes, mtu: int, msg_id: int) -> "list[bytes]":
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise ProtocolError(BAD_LENGTH, "MTU " + str(mtu) + " outside 23..517")
    if not 0 <= msg_id <= 255:
        raise ProtocolError(BAD_LENGTH, "msg_id must be 0..255")
    if not 1 <= len(frame) <= MAX_FRAME:
        raise ProtocolError(BAD_LENGTH, "frame of " + str(len(frame)) + " bytes outside 1.." + str(MAX_FRAME))
    size = mtu - 3 - FRAG_HEADER
    count = (len(frame) + size - 1) // size
    if count > MAX_FRAGMENTS:
        raise ProtocolError(BAD_LENGTH, "frame needs " + str(count) + " fragments, max 16")
    out = []
    for i in range(count):
        out.append(bytes([msg_id, (i << 4) | (count - 1)]) + frame[i * size : (i + 1) * size])
    return out


class Reassembler:
    """Feed fragments in arrival order; ``feed`` returns the whole frame when its last piece arrives."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._msg_id = -1
        self._count = 0
        self._size = 0
        self.dropped = 0

    def _reset(self) -> None:
        if self._parts:
            self.dropped += 1
        self._parts = []
        self._msg_id = -1
        self._count = 0
        self._size = 0

    def feed(self, piece: "bytes | bytearray | memoryview") -> "bytes | None":
        if len(piece) <= FRAG_HEADER:
            self._reset()
            raise ProtocolError(BAD_FRAGMENT, "fragment of " + str(len(piece)) + " bytes has no data")
        msg_id = piece[0]
        index = piece[1] >> 4
        count = (piece[1] & 0x0F) + 1
        data = bytes(piece[FRAG_HEADER:])
        if index == 0:
            self._reset()
            self._msg_id = msg_id
            self._count = count
        elif msg_id != self._msg_id or count != self._count or index != len(self._parts):
            self._reset()
            raise ProtocolError(BAD_FRAGMENT, "fragment " + str(index) + " of msg " + str(msg_id) + " out of order")
        if index >= count:
            self._reset()
            raise ProtocolError(BAD_FRAGMENT, "fragment index " + str(index) + " >= count " + str(count))
        self._size += len(data)
        if self._size > MAX_FRAME:
            self._reset()
            raise ProtocolError(BAD_FRAGMENT, "reassembled frame exceeds " + str(MAX_FRAME) + " bytes")
        self._parts.append(data)
        if index == count - 1:
            frame = b"".join(self._parts)
            self._parts = []
            self._reset()
            return frame
        return None
