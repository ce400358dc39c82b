"""The outbox's events on the wire: first transmission, retransmission rounds and acknowledgements.

Events are sent as soon as they are recorded, oldest first. Unacknowledged events are sent again, up to
``BURST`` (8) per round in order (new frames, new seq), when an ack has not advanced for ``retransmit_ms``
(2 s); each round without progress doubles that wait, up to 30 s. An ack that covers everything sent starts
the next round at once, so a backlog (after a reboot or an outage) drains at the hub's pace. When a session
starts, whatever waits is sent again at once (the hub may not have been listening).

The hub acknowledges the highest contiguous ``event_seq`` it has committed (shared_protocol/README.md
section 4.3); re-sending an acknowledged event is harmless (the hub dedupes by ``event_seq``).
"""

from firmware.ticks import ticks_add, ticks_diff
from shared_protocol.compat import const

TYPE_CHECKING = False
if TYPE_CHECKING:
    from firmware.outbox import Outbox
    from firmware.session import Session

RETRANSMIT_MAX_MS = const(30000)
BURST = const(8)  # events per retransmission round


class Delivery:
    """``last_progress``: when an ack last released events (the outbox's compaction waits for quiet)."""

    def __init__(self, outbox: "Outbox", session: "Session", retransmit_ms: int, now: int) -> None:
        self._ob = outbox
        self._session = session
        self._retransmit_ms = retransmit_ms
        self._sent = (outbox.first_seq() if outbox.depth else outbox.next_seq) - 1  # a backlog goes out in rounds
        self._gap = retransmit_ms
        self._at = now
        self._armed = outbox.depth > 0
        self.last_progress = now

    def recorded(self, seq: int, now: int) -> None:
        """Event ``seq`` (the outbox's newest) was just recorded: send it now unless older ones wait first."""
        ob = self._ob
        if seq == self._sent + 1:  # nothing older is waiting for a first transmission: send it now
            if self._session.send(ob.message(ob.depth - 1, now)):
                self._sent = seq
            if not self._armed:  # wait for progress, then re-send; each wait doubles the next
                self._armed = True
                self._at = ticks_add(now, self._gap)
                self._gap = min(self._gap * 2, RETRANSMIT_MAX_MS)
        elif not self._armed:
            self._armed = True
            self._at = now

    def acked(self, upto: int, now: int) -> None:
        """The hub has every event up to ``upto``."""
        ob = self._ob
        before = ob.acked
        ob.ack(upto)
        if ob.acked == before:
            return
        self.last_progress = now
        self._gap = self._retransmit_ms
        if not ob.depth:
            self._armed = False
        elif ob.acked >= self._sent:  # everything sent is in: send the next round of the backlog now
            self._armed = True
            self._at = now
        else:
            self._armed = True
            self._at = ticks_add(now, self._gap)

    def resume(self, now: int) -> None:
        """A session started: re-send what waits now."""
        if self._ob.depth:
            self._armed = True
            self._at = now

    def tick(self, now: int) -> None:
        if self._armed and ticks_diff(now, self._at) >= 0:
            self._round(now)

    def _round(self, now: int) -> None:
        """(Re)send the oldest unacknowledged events, in order, at most BURST of them."""
        ob = self._ob
        if not ob.depth:
            self._armed = False
            return
        k = ob.depth if ob.depth < BURST else BURST
        for i in range(k):
            m = ob.message(i, now)
            if self._session.send(m) and m.event_seq > self._sent:
                self._sent = m.event_seq
        self._at = ticks_add(now, self._gap)
        self._gap = min(self._gap * 2, RETRANSMIT_MAX_MS)
