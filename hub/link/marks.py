"""What the hub knows a node's events have reached in the ledger: the contiguous mark and each lane's tally.

* ``EventMarks`` mirrors the ledger's highest contiguous ``event_seq`` for a node from *committed* outcomes only
  (an event's future resolved ``Applied`` or ``Duplicate``), with the same rule as ``hub.ledger.sensor``, so an
  ack built from it never covers an event that is not durable.
* ``LaneTally`` is what the ledger holds for one lane (observed units and the highest event among them), kept
  from committed outcomes after being loaded once at start; the lane counters a node reports are compared with it
  (``gaps.lane_gap``).
"""

from __future__ import annotations

from dataclasses import dataclass


class EventMarks:
    """Highest contiguous committed ``event_seq`` of one node, plus committed ones above it."""

    __slots__ = ("above", "contiguous")

    def __init__(self, contiguous: int = 0, above: set[int] | None = None) -> None:
        self.contiguous = contiguous
        self.above: set[int] = set(above or ())
        self._advance()

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

    total: int = 0  # observed units: events + gaps (+ reversals present at start)
    max_event: int = 0  # highest event_seq of this lane in the ledger
