"""A node's lanes with their outbox and counters: where a detected event becomes a kept, counted fact.

Order matters for power cuts: an event is journalled in the outbox first, then applied to the lane counters.
At start-up the counters are rebuilt from their last checkpoint plus the journalled events after it, so a
power cut between the two steps loses nothing. The outbox checkpoints the counters before it forgets any
event (overflow or compaction), which keeps that rebuild exact.
"""

from firmware.counters import CountersStore
from firmware.lane import Lane
from firmware.outbox import Outbox
from firmware.ticks import ticks_add
from shared_protocol.compat import const
from shared_protocol.messages import FLAG_OUTBOX_OVERFLOW, KIND_ANOMALY, KIND_COUNT, MAX_STEP, Event, LaneState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from shared_protocol.messages import TagLost, TagSeen

NO_ROOM = -1  # set_count: the outbox cannot take the count's events without dropping one
UNWATCHED_CONFIDENCE = const(40)  # a change made while the firmware was stopped (as after a sensor fault)


class Shelf:
    def __init__(self, lanes: "list[Lane]", outbox: Outbox, counters: CountersStore) -> None:
        if len(counters.lanes) != len(lanes):
            raise ValueError("counters are for " + str(len(counters.lanes)) + " lanes")
        self.lanes = lanes
        self.outbox = outbox
        self.counters = counters
        outbox.before_forget = counters.checkpoint
        for i in range(outbox.depth):
            if not outbox.is_event(i):
                continue  # a tag record (firmware/rfid/): it moves no counter
            m = outbox.message(i, 0)
            if isinstance(m, Event) and m.lane < len(lanes):
                counters.apply(m.lane, m.event_seq, m.kind, m.count_delta)

    def poll(self, t_ms: int) -> int:
        """Sample every lane once; returns the number of events recorded."""
        n = 0
        for lane in self.lanes:
            if lane.sample(t_ms):
                self._record(lane)
                n += 1
        return n

    def record(self, lane: Lane) -> int:
        """Keep the event the lane's detector just confirmed (journal, then counters); returns its event_seq."""
        return self._record(lane)

    def _record(self, lane: Lane) -> int:
        d = lane.det
        t_start = ticks_add(d.ev_t_ms, -d.ev_duration_ms)
        seq = self.outbox.add(lane.index, d.ev_kind, d.ev_count, d.ev_delta_dg, d.ev_confidence, t_start)
        self.counters.apply(lane.index, seq, d.ev_kind, d.ev_count)
        return seq

    def record_unwatched(self, i: int, count: int, delta_dg: int, t_ms: int) -> int:
        """Lane ``i`` changed by ``delta_dg`` (``count`` units) while the firmware was stopped
        (``firmware/standby.py``): kept as an anomaly of low confidence; returns its event_seq."""
        seq = self.outbox.add(i, KIND_ANOMALY, count, delta_dg, UNWATCHED_CONFIDENCE, t_ms)
        self.counters.apply(i, seq, KIND_ANOMALY, count)
        return seq

    def set_count(self, i: int, count: int, t_ms: int, recorded: "Callable[[int], None]") -> int:
        """Staff counted ``count`` units on lane ``i``: record the difference from the lane's count as count
        events (each at most MAX_STEP units, kept like any event: journal, then counters), calling ``recorded``
        with each one's event_seq. Returns the last event_seq, 0 when the count already agreed, or NO_ROOM
        (nothing recorded) when the outbox would have to drop an unacknowledged event to take them."""
        d = count - self.counters.lanes[i].count
        if d == 0:
            return 0
        ob = self.outbox
        steps = ((d if d > 0 else -d) + MAX_STEP - 1) // MAX_STEP
        if ob.capacity - ob.depth < steps:
            return NO_ROOM
        seq = 0
        while d:
            step = d
            if step > MAX_STEP:
                step = MAX_STEP
            elif step < -MAX_STEP:
                step = -MAX_STEP
            seq = ob.add(i, KIND_COUNT, step, 0, 100, t_ms)
            self.counters.apply(i, seq, KIND_COUNT, step)
            d -= step
            recorded(seq)
        return seq

    def lane_state(self, i: int) -> LaneState:
        lane = self.lanes[i]
        c = self.counters.lanes[i]
        flags = lane.flags()
        if self.outbox.dropped:
            flags |= FLAG_OUTBOX_OVERFLOW
        return LaneState(i, c.count, c.removed_total, c.added_total, lane.weight_dg, flags, c.last_event)

    def pending(self, now_ms: int, limit: int) -> "list[Event | TagSeen | TagLost]":
        """Up to ``limit`` unacknowledged records (events and tag records), oldest first, for (re)transmission."""
        n = self.outbox.depth if self.outbox.depth < limit else limit
        return [self.outbox.message(i, now_ms) for i in range(n)]
