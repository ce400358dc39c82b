"""The node's end of the USB serial link: frames up as ``00 | COBS | 00``, hub lines down.

A *link* carries frames and nothing else: it neither tags nor checks them. ``firmware/session.py`` signs what
goes up and authenticates what comes down (own node id, session = this boot, tag, strictly increasing seq), so
every link (this one; ``link_ble.py``) gets the same replay rules, outbox and acks. The contract a link meets:

* ``send(frame: bytes) -> bool``: write one frame; False if it could not be written;
* ``poll() -> list[bytes]``: the frames that arrived since the last poll, in order, not yet checked;
* ``rejected() -> int``: input dropped before it became a frame (reported in ``health.rx_rejected``);
* ``fresh() -> bool``: True once when a hub has just connected (BLE), so the node says hello on that connection;
* ``vouch()``: an authenticated frame arrived (BLE: the central is the hub; one that never vouches is dropped).

The byte I/O is an injected object with two methods, so the same code runs on a board and under emulation:

* ``write(data: bytes)``: write raw bytes, one call per frame (a board: ``sys.stdout.buffer.write``, which
  does not translate LF into CRLF inside the COBS data);
* ``read_available() -> bytes``: whatever has arrived, without blocking (``b""`` when nothing has).

``StdioIO`` is that object on a board: the serial line is the MicroPython console (USB CDC), shared with
``print``; the hub's decoder skips anything that is not a frame. The downlink arrives as text lines
(``"!" + base64(frame)``) that never contain a REPL control byte, so mpremote can still interrupt the node.
A line that is not well-formed base64 is dropped and counted (``rejected()``); console typing (a line
without the ``!`` marker) is ignored and not counted.
"""

from shared_protocol.compat import const
from shared_protocol.downlink_text import LineDecoder
from shared_protocol.serial_framing import encode_serial

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class ByteIO(Protocol):
        def write(self, data: bytes) -> object: ...
        def read_available(self) -> bytes: ...


MAX_READ = const(512)  # bytes taken from the line per poll: bounds the time one poll can take


class SerialLink:
    """Frames over a byte stream. ``tx_errors`` counts writes that raised."""

    def __init__(self, io: "ByteIO") -> None:
        self.io = io
        self.decoder = LineDecoder()
        self.tx_errors = 0

    def send(self, frame: bytes) -> bool:
        """Delimit and write one frame; False if the write failed."""
        data = encode_serial(frame)
        try:
            self.io.write(data)
        except OSError:
            self.tx_errors += 1
            return False
        return True

    def poll(self) -> "list[bytes]":
        """The frames of the well-formed lines that arrived since the last poll, in order."""
        data = self.io.read_available()
        if not data:
            return []
        return self.decoder.feed(data)

    def rejected(self) -> int:
        return self.decoder.bad_lines

    def fresh(self) -> bool:
        """A cable has no connections: the session alone decides when to say hello (``link_ble.py`` differs)."""
        return False

    def vouch(self) -> None:
        """An authenticated frame arrived (a radio link keeps the central that sent it; a cable has nothing to do)."""


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
