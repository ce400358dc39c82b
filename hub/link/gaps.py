"""Sensor gaps: when a node's own counters say the ledger is missing units (protocol section 11). Pure functions.

Events give the ledger its timeline; the lane counters a node reports (``lane_state``) make it self-healing. Two
checks, each a function of what the hub knows (the lane's tally, the node's event marks, an outbox skip already
pending) to a decision, with no I/O, so they are tested on their own (tests/test_link_gaps.py):

* ``outbox_skip``: a ``health`` frame whose ``outbox_first`` is above the contiguous mark + 1 (or an empty outbox
  while a lane's ``last_event`` is above it) means the node's full outbox dropped the events in between: they will
  never arrive. Returns the event up to which the mark may skip once the lane counters are booked. The skip never
  goes past what the node has shown it produced (``shown``: the highest ``last_event`` of its lane states, the
  highest of its events committed): a keyed node whose ``outbox_first`` is far above that (a bug, a corrupted
  flash: 2**31) would otherwise have every event up to there taken as dropped, and its real later events skipped
  as already accounted for. An honest node holds event ``outbox_first`` and sends it, so its skip follows as soon
  as the hub has seen it (or a lane state naming a later event); the caller counts and logs the claims beyond.
* ``lane_gap``: a ``lane_state`` whose ``count`` (up to ``last_event``) disagrees with the lane's tally is a gap
  for the difference — the first report of a lane included; with a skip pending, the gap also carries the skip
  (``skip_to``), so booking it moves the mark past the dropped events.
* ``skip_cause``: why the skipped events will never arrive, as the log and the gap's note say it. The same
  ``outbox_first`` above the mark also follows a **restore**: the ledger went back to a backup, the node had
  delivered the events after the backup's mark (the hub acknowledged them, so its outbox let them go), and they are
  not in the restored ledger. The restore point (``hub.ledger.identity``) holds for the whole incarnation, so a skip
  from the very mark the backup held for the node (``RestoreMark``) may still be an overflow (a node unplugged
  before the backup whose outbox filled later): the node's own ``outbox_dropped`` (kept on flash across boots) tells
  them apart. The restore's wording when it dropped nothing, both when it dropped some; any other skip is an overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.link.marks import EventMarks, LaneTally
from shared_protocol.messages import LaneState


@dataclass(frozen=True, slots=True)
class Gap:
    """A sensor gap to book for one lane: ``diff`` units, under ``ref`` (unique per node), with ``note``."""

    lane: int
    diff: int
    ref: str
    note: str
    skip_to: int = 0  # > 0: the events up to this one never arrive (skip_cause); the mark skips past them


OVERFLOW = "were dropped by the node's full outbox"


@dataclass(frozen=True, slots=True)
class RestoreMark:
    """A node's contiguous event mark in the backup the ledger was restored from, and that restore (described)."""

    contiguous: int
    restore: str  # e.g. "the ledger's restore from backups/x.db (2026-12-07 10:02 UTC)"


def skip_cause(marks: EventMarks, restored: RestoreMark | None, dropped: int) -> str:
    """Why the events after the contiguous mark that a skip passes will never arrive, ``dropped`` being the count of
    events the node says its outbox ever dropped (``health.outbox_dropped``). With the mark still the one the backup
    held for the node: delivered before the ledger's restore when the node dropped nothing, else either (the
    restore point holds for the whole incarnation: the mark may not have moved since). Otherwise: dropped by its
    full outbox."""
    if restored is None or marks.contiguous != restored.contiguous:
        return OVERFLOW
    if dropped == 0:
        return f"were delivered before {restored.restore}, so the restored ledger lacks them (no outbox overflow)"
    return f"were delivered before {restored.restore} or dropped by the node's full outbox"


def shown(marks: EventMarks, max_last_event: int) -> int:
    """The highest event a node has shown it produced: its lane states' highest ``last_event``, its highest event
    committed (the mark, or the highest committed above it)."""
    return max(max_last_event, marks.contiguous, max(marks.above, default=0))


def outbox_overclaim(outbox_first: int, marks: EventMarks, max_last_event: int) -> bool:
    """Does ``outbox_first`` say events were dropped beyond what the node has ``shown`` it produced?"""
    return outbox_first > marks.contiguous + 1 and outbox_first - 1 > shown(marks, max_last_event)


def outbox_skip(outbox_first: int, marks: EventMarks, max_last_event: int, pending: int) -> int:
    """The event up to which events will never arrive, given a ``health`` report's ``outbox_first`` (the lowest
    event the node still holds, 0 for an empty outbox), the highest ``last_event`` of the node's lane states and
    the skip already ``pending``; ``pending`` itself when the report shows nothing new. At most what the node has
    ``shown`` it produced."""
    c = marks.contiguous
    target = 0
    if outbox_first > c + 1:
        target = min(outbox_first - 1, shown(marks, max_last_event))
    elif outbox_first == 0 and max_last_event > c:
        target = max_last_event  # outbox empty: nothing up to the counters' last event will come
    return target if target > max(c, pending) else pending


def lane_gap(
    state: LaneState, tally: LaneTally, marks: EventMarks, pending_skip: int, frame_seq: int, cause: str = OVERFLOW
) -> Gap | None:
    """The gap a lane's counters show, or None: when they match the ledger, when they count events the hub has
    not received yet (compared again at the next report), or when the ledger already holds a later event of the
    lane than they do. ``cause``: why the events of a pending skip never arrive (``skip_cause``), for the note."""
    c = marks.contiguous
    skip = pending_skip if pending_skip > c else 0
    if marks.after_skip(skip) < state.last_event:
        return None
    if tally.max_event > state.last_event:
        return None
    diff = state.count - tally.total
    if diff == 0 and not skip:
        return None
    ref = f"f{frame_seq}:lane{state.lane}"
    note = f"lane counters say {state.count} (up to event {state.last_event}), the ledger had {tally.total}"
    if skip:
        ref = f"ev{c + 1}-{skip}:{ref}"
        note += f"; events {c + 1}..{skip} {cause}"
    return Gap(state.lane, diff, ref, note, skip)
