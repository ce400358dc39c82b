"""The node's authenticated conversation with the hub, over whatever link it is given (serial or BLE).

``Session`` signs every uplink message (``UplinkSender``: node id, the next persistent frame seq, the node key)
and checks every downlink frame (``DownlinkReceiver``: own node id, session = this boot, tag, strictly
increasing seq); a frame that fails a check is dropped and counted (``rejected()``, reported as
``health.rx_rejected`` together with what the link itself dropped). The link only carries frames
(``firmware/link_serial.py`` describes the contract), so these rules are the same on every link.

Session state (shared_protocol/README.md sections 4.3 and 11): ``hello`` at boot, repeated after 2, 4, 8,
16 s then every 30 s until an authenticated downlink frame arrives (the hub answers every hello with an
ack). The session is considered lost, and hellos start again, after 60 s without an authenticated downlink
frame while events wait for an ack, or after 5 min without one at all (the hub may have restarted without
its state; the ack to a hello costs one frame).
"""

from firmware.ticks import ticks_add, ticks_diff
from shared_protocol.compat import const
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import DownlinkReceiver, UplinkSender

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from shared_protocol.auth import Key
    from shared_protocol.frame import Frame
    from shared_protocol.messages import Hello, Message

    class Link(Protocol):
        """What a session needs of a link (``firmware/link_serial.py``: ``SerialLink``)."""

        def send(self, frame: bytes) -> bool: ...
        def poll(self) -> "list[bytes]": ...
        def rejected(self) -> int: ...
        def fresh(self) -> bool: ...
        def vouch(self) -> None: ...


HELLO_MIN_MS = const(2000)
HELLO_MAX_MS = const(30000)
SESSION_PENDING_MS = const(60000)  # no downlink for this long while events wait: hello again
SESSION_IDLE_MS = const(300000)  # no downlink for this long at all: hello again


class Session:
    """``up``: the hub has answered since the last hello. Counters: ``tx_frames`` (frames the link took),
    ``rx_frames`` (downlink frames accepted), ``rejected()``."""

    def __init__(
        self,
        link: "Link",
        node_id: int,
        key: "Key",
        boot: int,
        next_seq: "Callable[[], int]",
        hello: "Hello",
        now: int,
    ) -> None:
        self.link = link
        self._tx = UplinkSender(node_id, key, next_seq)
        self._rx = DownlinkReceiver(node_id, key, boot)
        self._hello = hello
        self.up = False
        self.tx_frames = 0
        self.rx_frames = 0
        self._last_rx = now
        self._hello_at = now
        self._hello_gap = HELLO_MIN_MS

    def send(self, message: "Message") -> bool:
        """Tag and send one message (a new frame seq every time, sent or not); False if the link failed."""
        if self.link.send(self._tx.encode(message)):
            self.tx_frames += 1
            return True
        return False

    def poll(self) -> "list[Frame]":
        """The authenticated frames that arrived since the last poll, in order."""
        raws = self.link.poll()
        if not raws:
            return []
        frames = []
        for raw in raws:
            try:
                frames.append(self._rx.accept(raw))
            except ProtocolError:
                pass  # counted by the receiver
        self.rx_frames += len(frames)
        return frames

    def heard(self, now: int) -> bool:
        """An authenticated frame arrived at ``now``; True when it (re)starts the session."""
        self._last_rx = now
        if self.up:
            return False
        self.up = True
        self._hello_gap = HELLO_MIN_MS
        return True

    def restart(self, now: int) -> None:
        """A hub has just connected (BLE): say hello on this connection now, as after a boot; its answer starts the
        session again and sends what waits (``Node.service_link``)."""
        self.up = False
        self._hello_gap = HELLO_MIN_MS
        self._hello_at = now

    def tick(self, now: int, pending: bool) -> None:
        """Lose the session after a silence (shorter while events are ``pending``); hello while it is down."""
        if self.up:
            quiet = ticks_diff(now, self._last_rx)
            if quiet > SESSION_IDLE_MS or (quiet > SESSION_PENDING_MS and pending):
                self.up = False
                self._hello_gap = HELLO_MIN_MS
                self._hello_at = now
        if not self.up and ticks_diff(now, self._hello_at) >= 0:
            self.send(self._hello)
            self._hello_at = ticks_add(now, self._hello_gap)
            self._hello_gap = min(self._hello_gap * 2, HELLO_MAX_MS)

    def rejected(self) -> int:
        """Downlink input dropped: frames that failed a check plus what the link could not decode."""
        return self._rx.rejected + self.link.rejected()
