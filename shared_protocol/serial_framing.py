"""Uplink framing over a serial line: each frame is sent as ``00 | COBS(frame) | 00``.

COBS removes every 0x00 from the frame, so 0x00 only ever delimits. The leading delimiter means text
the node printed before a frame (log lines, tracebacks) is a separate chunk, discarded on its own,
instead of corrupting the frame that follows. The decoder keeps a bounded buffer and resynchronises at
the next 0x00 after garbage or an over-long chunk.
"""

from shared_protocol.compat import const
from shared_protocol.errors import BAD_ENCODING, BAD_LENGTH, ProtocolError
from shared_protocol.frame import MAX_FRAME
from shared_protocol.splitter import Splitter

# COBS adds one byte per 254 bytes plus one: the longest chunk a valid frame can produce.
MAX_CHUNK = const(277)  # MAX_FRAME + MAX_FRAME // 254 + 2


def cobs_encode(data: bytes) -> bytes:
    out = bytearray(1)
    code_at = 0
    code = 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = len(out)
                out.append(0)
                code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    if not isinstance(data, bytes):
        data = bytes(data)  # MicroPython cannot test ``int in bytearray``
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError(BAD_ENCODING, "zero byte inside COBS data")
        end = i + code
        if end > n:
            raise ProtocolError(BAD_ENCODING, "COBS block runs past the end")
        block = data[i + 1 : end]
        if 0 in block:
            raise ProtocolError(BAD_ENCODING, "zero byte inside COBS data")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_serial(frame: bytes) -> bytes:
    """Bytes to write to the serial line for one frame."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(BAD_LENGTH, "frame of " + str(len(frame)) + " bytes exceeds " + str(MAX_FRAME))
    return b"\x00" + cobs_encode(frame) + b"\x00"


class SerialDecoder:
    """Feed it whatever the line delivers; ``feed`` returns the COBS-decoded frames it completed.

    Chunks that are not valid COBS (log text, line noise) or longer than any frame are counted in
    ``garbage_chunks`` / ``garbage_bytes`` and dropped; the caller authenticates what comes out. Memory is
    bounded by ``MAX_CHUNK`` bytes.
    """

    def __init__(self) -> None:
        self._split = Splitter(0x00, MAX_CHUNK)
        self._bad_chunks = 0
        self._bad_bytes = 0
        self.last_error: ProtocolError | None = None

    @property
    def garbage_chunks(self) -> int:
        return self._bad_chunks + self._split.overlong

    @property
    def garbage_bytes(self) -> int:
        return self._bad_bytes + self._split.dropped_bytes

    def feed(self, data: bytes) -> "list[bytes]":
        frames: list[bytes] = []
        overlong = self._split.overlong
        for chunk in self._split.split(data):
            try:
                frames.append(cobs_decode(chunk))
            except ProtocolError as err:
                self._bad_chunks += 1
                self._bad_bytes += len(chunk)
                self.last_error = err
        if self._split.overlong != overlong:
            self.last_error = ProtocolError(BAD_LENGTH, "chunk longer than " + str(MAX_CHUNK) + " bytes")
        return frames
