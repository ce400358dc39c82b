"""Sensor-gap detection (hub/link/gaps.py) as pure functions: lane counters, tallies and marks -> a gap or nothing."""

from __future__ import annotations

import pytest

from hub.link.gaps import Gap, lane_gap, outbox_overclaim, outbox_skip, shown
from hub.link.marks import EventMarks, LaneTally
from shared_protocol.messages import LaneState


def state(lane: int = 0, count: int = 0, last_event: int = 0) -> LaneState:
    return LaneState(lane, count, max(0, -count), max(0, count), count * 3500, 0, last_event)


def test_counters_that_match_the_ledger_are_no_gap() -> None:
    assert lane_gap(state(count=-2, last_event=2), LaneTally(-2, 2), EventMarks(2), 0, 9) is None


def test_the_first_report_of_a_lane_books_what_is_on_it() -> None:
    gap = lane_gap(state(lane=3, count=12), LaneTally(), EventMarks(), 0, 7)
    assert gap == Gap(3, 12, "f7:lane3", "lane counters say 12 (up to event 0), the ledger had 0")


def test_a_difference_becomes_a_gap_of_that_many_units() -> None:
    gap = lane_gap(state(count=-5, last_event=4), LaneTally(-3, 4), EventMarks(4), 0, 40)
    assert gap is not None and (gap.diff, gap.skip_to, gap.ref) == (-2, 0, "f40:lane0")


def test_counters_that_count_events_not_received_yet_are_compared_later() -> None:
    marks = EventMarks(3, {5})  # 4 not committed yet
    assert lane_gap(state(count=-5, last_event=5), LaneTally(-4, 3), marks, 0, 11) is None


def test_counters_older_than_the_ledger_are_ignored() -> None:
    # the ledger already holds event 6 of this lane; these counters stop at 5
    assert lane_gap(state(count=-5, last_event=5), LaneTally(-6, 6), EventMarks(6), 0, 12) is None


def test_a_pending_outbox_skip_lets_the_counters_cover_the_dropped_events() -> None:
    marks = EventMarks(2, {7, 8})  # 3..6 dropped by the node's full outbox
    gap = lane_gap(state(count=-6, last_event=8), LaneTally(-2, 8), marks, 6, 20)
    assert gap is not None
    assert (gap.diff, gap.skip_to, gap.ref) == (-4, 6, "ev3-6:f20:lane0")
    assert gap.note.endswith("events 3..6 were dropped by the node's full outbox")


def test_a_skip_is_booked_even_when_the_lane_lost_nothing() -> None:
    gap = lane_gap(state(lane=1, count=3, last_event=8), LaneTally(3, 8), EventMarks(2, {7, 8}), 6, 21)
    assert gap is not None and (gap.diff, gap.skip_to) == (0, 6)


def test_a_skip_the_mark_already_passed_is_not_repeated() -> None:
    assert lane_gap(state(count=-2, last_event=7), LaneTally(-2, 7), EventMarks(7), 6, 22) is None


def test_after_a_skip_a_missing_later_event_still_waits() -> None:
    marks = EventMarks(2, {8})  # 3..6 dropped, 7 still on its way
    assert lane_gap(state(count=-6, last_event=8), LaneTally(-2, 8), marks, 6, 23) is None


@pytest.mark.parametrize(
    ("outbox_first", "contiguous", "max_last_event", "pending", "expected"),
    [
        (3, 2, 0, 0, 0),  # the outbox starts right after the mark: nothing dropped
        (7, 2, 8, 0, 6),  # the outbox starts at 7 (a lane counted up to 8): 3..6 will never arrive
        (0, 2, 0, 0, 0),  # empty outbox, no lane counted past the mark
        (0, 2, 9, 0, 9),  # empty outbox, a lane counted up to 9: 3..9 will never arrive
        (5, 2, 9, 6, 6),  # a larger skip is already pending: kept
        (9, 2, 9, 6, 8),  # a larger skip than the pending one
        (1, 0, 0, 0, 0),  # a fresh node
        (7, 2, 0, 0, 0),  # the node has shown nothing past the mark: no skip (yet)
        (7, 2, 4, 0, 4),  # a lane counted up to 4 only: 3..4 will never arrive, 5..6 not known yet
        (2**31, 2, 9, 0, 9),  # an absurd outbox start: the skip stops at what the node has shown
        (2**31, 2, 9, 9, 9),  # ... and never grows past it
    ],
)
def test_outbox_skip(outbox_first: int, contiguous: int, max_last_event: int, pending: int, expected: int) -> None:
    assert outbox_skip(outbox_first, EventMarks(contiguous), max_last_event, pending) == expected


def test_the_skip_goes_as_far_as_the_highest_committed_event() -> None:
    marks = EventMarks(2, {7, 8})  # the outbox starts at 7; 7 and 8 committed, no lane state yet
    assert outbox_skip(7, marks, 0, 0) == 6 and not outbox_overclaim(7, marks, 0)
    assert outbox_skip(2**31, marks, 0, 0) == 8 and outbox_overclaim(2**31, marks, 0)
    assert shown(marks, 5) == 8 and shown(marks, 12) == 12
    assert not outbox_overclaim(0, marks, 0) and not outbox_overclaim(3, marks, 0)  # empty / nothing dropped
