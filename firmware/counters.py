"""Per-lane counters: the lane's item count and monotonic removed/added totals, persisted with bounded wear.

Counters change with every event, but flash is written only at checkpoints: every ``CHECKPOINT_EVERY``
events, and whenever the outbox is about to forget events (drop or compaction). Each checkpoint records
the highest ``event_seq`` it includes; at boot the events after it are re-applied from the outbox journal,
so the counters come back exact after a power cut while flash sees one write per dozens of events.
"""

import struct

from firmware.persist import Record
from shared_protocol.compat import const
from shared_protocol.messages import KIND_ANOMALY, KIND_COUNT, KIND_PICK, KIND_PUT

CHECKPOINT_EVERY = const(32)
_LANE_FMT = ">iII"  # count, removed_total, added_total
_LANE_LEN = const(12)
_MAX_TOTAL = const(0xFFFFFFFF)


class LaneCounters:
    def __init__(self) -> None:
        self.count = 0
        self.removed_total = 0
        self.added_total = 0
        self.last_event = 0

    def apply(self, seq: int, kind: int, count_delta: int) -> None:
        """Apply one event. Anomalies carry their best count estimate and are applied like picks/puts:
        the hub decides what to believe; the totals must still add up to the count. A count event (staff
        counted the lane) moves the count to what was counted, through the totals like any other change."""
        if kind != KIND_PICK and kind != KIND_PUT and kind != KIND_ANOMALY and kind != KIND_COUNT:
            raise ValueError("unknown event kind")
        if count_delta < 0:
            self.removed_total = (self.removed_total - count_delta) & _MAX_TOTAL
        else:
            self.added_total = (self.added_total + count_delta) & _MAX_TOTAL
        self.count += count_delta
        if seq > self.last_event:
            self.last_event = seq


class CountersStore:
    """All lanes' counters in one record on flash."""

    def __init__(self, path: str, lanes: int) -> None:
        self._record = Record(path)
        self.lanes = [LaneCounters() for _ in range(lanes)]
        self.checkpoint_seq = 0  # highest event_seq included in the last checkpoint
        self._since = 0
        self.error = ""
        self._load()

    def _load(self) -> None:
        data = self._record.load()
        if data is None:
            return
        n = len(self.lanes)
        if len(data) != 4 + n * _LANE_LEN:
            self.error = "counters record is for another lane layout"
            return
        self.checkpoint_seq = struct.unpack_from(">I", data, 0)[0]
        for i in range(n):
            c = self.lanes[i]
            c.count, c.removed_total, c.added_total = struct.unpack_from(_LANE_FMT, data, 4 + i * _LANE_LEN)
            c.last_event = self.checkpoint_seq

    def apply(self, lane: int, seq: int, kind: int, count_delta: int) -> None:
        """Apply a new event; checkpoints to flash every CHECKPOINT_EVERY events."""
        if seq <= self.checkpoint_seq:
            return  # already included (re-applied from the journal after a checkpoint)
        self.lanes[lane].apply(seq, kind, count_delta)
        self._since += 1
        if self._since >= CHECKPOINT_EVERY:
            self.checkpoint()

    def highest_seq(self) -> int:
        hi = self.checkpoint_seq
        for c in self.lanes:
            if c.last_event > hi:
                hi = c.last_event
        return hi

    def checkpoint(self) -> None:
        seq = self.highest_seq()
        buf = bytearray(struct.pack(">I", seq))
        for c in self.lanes:
            buf += struct.pack(_LANE_FMT, c.count, c.removed_total, c.added_total)
        self._record.save(bytes(buf))
        self.checkpoint_seq = seq
        self._since = 0

    @property
    def writes(self) -> int:
        return self._record.writes
