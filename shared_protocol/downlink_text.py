"""Hub -> node framing over USB serial, safe for a MicroPython REPL console.

A frame travels as one text line: ``!`` + base64(frame) + ``\\n``. Every byte is printable ASCII or
``\\n``: never 0x03 (Ctrl-C), 0x04 (Ctrl-D), 0x01/0x02 (raw REPL) or any other control byte, so mpremote can
always interrupt and reflash a running node, and a person typing at the console cannot be mistaken for
the hub. The decoder ignores lines without the marker, ``\\r``, and bounds its line buffer.

Base64 is checked against the strict alphabet here because CPython's ``a2b_base64`` skips characters
outside it while MicroPython's rejects them; both runtimes must accept exactly the same lines.
"""

import binascii

from shared_protocol.compat import const
from shared_protocol.errors import BAD_ENCODING, BAD_LENGTH, ProtocolError
from shared_protocol.frame import MAX_FRAME
from shared_protocol.splitter import Splitter

MARKER = const(0x21)  # "!"
MAX_LINE = const(370)  # marker + base64 of MAX_FRAME (368) + slack
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def encode_line(frame: bytes) -> bytes:
    if len(frame) > MAX_FRAME:
        raise ProtocolError(BAD_LENGTH, "frame of " + str(len(frame)) + " bytes exceeds " + str(MAX_FRAME))
    return b"!" + binascii.b2a_base64(frame).rstrip(b"\n") + b"\n"


def decode_line(line: bytes) -> bytes:
    """Decode one line (without its newline; a trailing ``\\r`` is allowed)."""
    if line and line[-1] == 0x0D:
        line = line[:-1]
    if not line or line[0] != MARKER:
        raise ProtocolError(BAD_ENCODING, "line does not start with '!'")
    body = line[1:]
    n = len(body)
    if n == 0 or n % 4:
        raise ProtocolError(BAD_ENCODING, "base64 length " + str(n) + " is not a positive multiple of 4")
    pad = 0
    for i in range(n):
        c = body[i]
        if c == 0x3D:  # "="
            if i < n - 2:
                raise ProtocolError(BAD_ENCODING, "base64 padding in the middle")
            pad += 1
        elif pad or c not in _B64:
            raise ProtocolError(BAD_ENCODING, "byte " + str(c) + " is not base64")
    data = binascii.a2b_base64(body)
    # Canonical form only: the same frame must always be the same line.
    if binascii.b2a_base64(data).rstrip(b"\n") != bytes(body):
        raise ProtocolError(BAD_ENCODING, "non-canonical base64")
    return data


class LineDecoder:
    """Splits a byte stream into lines and returns the frames of the well-formed ``!`` lines."""

    def __init__(self) -> None:
        self._split = Splitter(0x0A, MAX_LINE)
        self._bad = 0
        self.ignored_lines = 0
        self.last_error: ProtocolError | None = None

    @property
    def bad_lines(self) -> int:
        return self._bad + self._split.overlong

    def feed(self, data: bytes) -> "list[bytes]":
        frames: list[bytes] = []
        overlong = self._split.overlong
        for line in self._split.split(data):
            if line[0] != MARKER:
                self.ignored_lines += 1
                continue
            try:
                frames.append(decode_line(line))
            except ProtocolError as err:
                self._bad += 1
                self.last_error = err
        if self._split.overlong != overlong:
            self.last_error = ProtocolError(BAD_LENGTH, "line longer than " + str(MAX_LINE))
        return frames
