"""The node's end of the USB serial link: authenticated frames up as ``00 | COBS | 00``, hub lines down.

The byte I/O is an injected object with two methods, so the same code runs on a board and under emulation:

* ``write(data: bytes)``: write raw bytes, one call per frame (a board: ``sys.stdout.buffer.write``, which
  does not translate LF into CRLF inside the COBS data);
* ``read_available() -> bytes``: whatever has arrived, without blocking (``b""`` when nothing has).

``StdioIO`` is that object on a board: the serial line is the MicroPython console (USB CDC), shared with
``print``; the hub's decoder skips anything that is not a frame. The downlink arrives as text lines
(``"!" + base64(frame)``) that never contain a REPL control byte, so mpremote can still interrupt the node.

Every downlink frame goes through the frame checks (``DownlinkReceiver``: own node id, session = this boot,
tag, strictly increasing seq); a line that is not well-formed base64 or a frame that fails a check is dropped
and counted (``rejected()``, reported as ``health.rx_rejected``).
"""

from shared_protocol.compat import const
from shared_protocol.downlink_text import LineDecoder
from shared_protocol.errors import ProtocolError
from shared_protocol.serial_framing import encode_serial

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from shared_protocol.frame import DownlinkReceiver, Frame, UplinkSender
    from shared_protocol.messages import Message

    class ByteIO(Protocol):
        def write(self, data: bytes) -> object: ...
        def read_available(self) -> bytes: ...


MAX_READ = const(512)  # bytes taken from the line per poll: bounds the time one poll can take


class SerialLink:
    """Counters: ``tx_frames``, ``tx_errors`` (writes that raised), ``rx_frames`` (accepted frames) and
    ``rejected()`` (bad lines + frames that failed a check)."""

    def __init__(self, io: "ByteIO", uplink: "UplinkSender", downlink: "DownlinkReceiver") -> None:
        self.io = io
        self.uplink = uplink
        self.downlink = downlink
        self.decoder = LineDecoder()
        self.tx_frames = 0
        self.tx_errors = 0
        self.rx_frames = 0

    def send(self, message: "Message") -> bool:
        """Tag, frame and write one message (a new frame seq every time); False if the write failed."""
        data = encode_serial(self.uplink.encode(message))
        try:
            self.io.write(data)
        except OSError:
            self.tx_errors += 1
            return False
        self.tx_frames += 1
        return True

    def poll(self) -> "list[Frame]":
        """The authenticated frames that arrived since the last poll, in order."""
        data = self.io.read_available()
        if not data:
            return []
        frames = []
        for raw in self.decoder.feed(data):
            try:
                frames.append(self.downlink.accept(raw))
            except ProtocolError:
                pass  # counted by the receiver
        self.rx_frames += len(frames)
        return frames

    def rejected(self) -> int:
        return self.downlink.rejected + self.decoder.bad_lines


class StdioIO:
    """The console of a board (USB CDC or UART REPL) as the link's byte I/O."""

    def __init__(self) -> None:
        import select
        import sys

        self._out = sys.stdout.buffer
        self._in = sys.stdin.buffer
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def read_available(self) -> bytes:
        buf = bytearray()
        poll = self._poll.poll
        read = self._in.read
        while len(buf) < MAX_READ and poll(0):
            b = read(1)
            if not b:
                break
            buf += b
        return bytes(buf)
