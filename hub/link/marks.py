"""What the hub knows a node's events have reached in the ledger: the contiguous mark and each lane's tally.

* ``EventMarks`` mirrors the ledger's highest contiguous ``event_seq`` for a node from *committed* outcomes only
  (an event's future resolved ``Applied`` or ``Duplicate``), with the same rule as ``hub.ledger.sensor``, so an
  ack built from it never covers an event that is not durable.
* ``LaneTally`` is what the ledger holds for one lane from its node's reports (the units its events and sensor gaps
  booked, and the highest event among them), kept from committed outcomes after being loaded once at start; the
  lane counters a node reports are compared with it (``gaps.lane_gap``). It is per lane, whatever the SKU of the
  movements (a node counts units across a change of its lane's SKU). Staff corrections of sensor movements are not
  in it (``hub.ledger.postings.lanes``): no comparison undoes them; nor are the moves of a lane's units to the SKU it
  is assigned (``hub.ledger.postings.settle``: no node, and they sum to nothing at the lane), so assigning a lane
  changes no tally and the node's next counters agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ABOVE = 4096  # committed event_seqs remembered above the contiguous mark, per node


class EventMarks:
    """Highest contiguous committed ``event_seq`` of one node, plus committed ones above it (at most ``MAX_ABOVE``:
    beyond, the highest are forgotten and counted in ``forgotten``; forgetting one only delays the mark, since the
    node re-sends what is not acknowledged and the ledger answers ``Duplicate``, which adds it again)."""

    __slots__ = ("above", "contiguous", "forgotten")

    def __init__(self, contiguous: int = 0, above: set[int] | None = None) -> None:
        self.contiguous = contiguous
        self.above: set[int] = set(above or ())
        self.forgotten = 0
        self._advance()
        self._bound()

    def _bound(self) -> None:
        above = self.above
        while len(above) > MAX_ABOVE:
            above.discard(max(above))
            self.forgotten += 1

    def _advance(self) -> None:
        above = self.above
        while self.contiguous + 1 in above:
            self.contiguous += 1
            above.discard(self.contiguous)

    def add(self, event_seq: int) -> None:
        if event_seq == self.contiguous + 1:
            self.contiguous = event_seq
            if self.above:
                self._advance()
        elif event_seq > self.contiguous:
            self.above.add(event_seq)
            if len(self.above) > MAX_ABOVE:
                self._bound()

    def skip_to(self, event_seq: int) -> None:
        if event_seq > self.contiguous:
            self.contiguous = event_seq
            self.above = {s for s in self.above if s > event_seq}
            self._advance()

    def after_skip(self, event_seq: int) -> int:
        """The contiguous mark ``skip_to(event_seq)`` would give, without changing anything."""
        c = max(self.contiguous, event_seq)
        while c + 1 in self.above:
            c += 1
        return c


@dataclass(slots=True)
class LaneTally:
    """What the ledger holds for one lane, kept from committed outcomes (loaded once at start)."""

    total: int = 0  # the counter reference: units the node's reports booked (events + gaps, any SKU; no staff post)
    max_event: int = 0  # highest event_seq of this lane in the ledger
