"""Bounded, persistent outbox of events awaiting the hub's acknowledgement.

Events are kept in preallocated arrays (``capacity`` slots) and journalled to flash, one fixed-size record
with a CRC per event, appended as the event is created: an event the node counted survives a power cut.
Acknowledgements are not journalled one by one (re-sending an acknowledged event is harmless: the hub
dedupes by ``event_seq``); they are folded in when the journal is compacted, which rewrites it with only
the unacknowledged events (atomic replace). A torn last record is detected by its CRC and dropped at load.

When the outbox is full the oldest event is dropped and counted in ``dropped``; the hub learns of the loss
from ``first_seq`` (sent as ``health.outbox_first``) and books a sensor gap from the lane counters.
Before anything is forgotten (dropped or compacted away) ``before_forget`` is called so the owner can
checkpoint the lane counters that include those events.
"""

import binascii
import os
import struct
from array import array

from firmware.persist import Record, replace
from firmware.ticks import TICKS_MAX, ticks_diff
from shared_protocol.compat import const
from shared_protocol.messages import AGE_UNKNOWN, Event

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_CAPACITY = const(256)
_REC_FMT = ">IBBhiBxI"  # event_seq, lane, kind, count_delta, weight_delta_dg, confidence, pad, boot
_REC_LEN = const(18)  # struct.calcsize(_REC_FMT), checked by the tests
_LINE = const(22)  # record + crc32
_HEAD_FMT = ">IIII"  # next_seq, acked, dropped, boot


def _age(now_ms: int, t_ms: int) -> int:
    d = ticks_diff(now_ms, t_ms)
    return d if d > 0 else 0


class Outbox:
    def __init__(self, path: str, boot: int, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._journal = path + ".log"
        self._head = Record(path + ".head")
        self._boot = boot
        self.capacity = capacity
        self._seq = array("I", [0] * capacity)
        self._lane = bytearray(capacity)
        self._kind = bytearray(capacity)
        self._count = array("h", [0] * capacity)
        self._weight = array("i", [0] * capacity)
        self._conf = bytearray(capacity)
        self._t = array("i", [0] * capacity)
        self._evboot = array("I", [0] * capacity)
        self._start = 0
        self.depth = 0
        self.next_seq = 1
        self.acked = 0
        self.dropped = 0
        self.journal_records = 0
        self.torn_records = 0
        self.before_forget: Callable[[], None] | None = None
        self._load()

    # -- queries ------------------------------------------------------------------------------
    def first_seq(self) -> int:
        """Lowest event_seq held (0 when empty)."""
        return self._seq[self._start] if self.depth else 0

    def seq_at(self, i: int) -> int:
        return self._seq[(self._start + i) % self.capacity]

    def message(self, i: int, now_ms: int) -> Event:
        """The i-th pending event (0 = oldest) as a protocol message, with its age now."""
        j = (self._start + i) % self.capacity
        age = _age(now_ms, self._t[j]) if self._evboot[j] == self._boot else AGE_UNKNOWN
        return Event(self._seq[j], self._lane[j], self._kind[j], self._count[j], self._weight[j], self._conf[j], age)

    # -- changes ------------------------------------------------------------------------------
    def add(self, lane: int, kind: int, count_delta: int, weight_delta_dg: int, confidence: int, t_ms: int) -> int:
        """Record a new event (journalled before returning); returns its event_seq."""
        seq = self.next_seq
        # Validate through the protocol's own range checks before anything is stored.
        Event(seq, lane, kind, count_delta, weight_delta_dg, confidence, 0).encode_payload()
        if self.depth == self.capacity:
            self._forget_oldest()
        self._put(seq, lane, kind, count_delta, weight_delta_dg, confidence, t_ms & TICKS_MAX, self._boot)
        self.next_seq = seq + 1
        self._append(seq, lane, kind, count_delta, weight_delta_dg, confidence, self._boot)
        if self.journal_records >= 2 * self.capacity:
            self.compact()
        return seq

    def ack(self, upto: int) -> int:
        """The hub has every event_seq <= upto; returns how many events that released."""
        if upto >= self.next_seq:
            upto = self.next_seq - 1  # an ack for events never sent is ignored beyond what exists
        if upto <= self.acked:
            return 0
        self.acked = upto
        n = 0
        while self.depth and self._seq[self._start] <= upto:
            self._start = (self._start + 1) % self.capacity
            self.depth -= 1
            n += 1
        return n

    def compact(self) -> None:
        """Rewrite the journal with only unacknowledged events (atomic replace)."""
        if self.before_forget is not None:
            self.before_forget()
        tmp = self._journal + ".tmp"
        with open(tmp, "wb") as f:
            for i in range(self.depth):
                j = (self._start + i) % self.capacity
                f.write(
                    _line(
                        self._seq[j], self._lane[j], self._kind[j], self._count[j], self._weight[j],
                        self._conf[j], self._evboot[j],
                    )
                )  # fmt: skip
        self._head.save(struct.pack(_HEAD_FMT, self.next_seq, self.acked, self.dropped, self._boot))
        replace(tmp, self._journal)
        self.journal_records = self.depth

    # -- internals ----------------------------------------------------------------------------
    def _forget_oldest(self) -> None:
        if self.before_forget is not None:
            self.before_forget()
        self._start = (self._start + 1) % self.capacity
        self.depth -= 1
        self.dropped += 1

    def _put(self, seq: int, lane: int, kind: int, count: int, weight: int, conf: int, t: int, boot: int) -> None:
        j = (self._start + self.depth) % self.capacity
        self._seq[j] = seq
        self._lane[j] = lane
        self._kind[j] = kind
        self._count[j] = count
        self._weight[j] = weight
        self._conf[j] = conf
        self._t[j] = t
        self._evboot[j] = boot
        self.depth += 1

    def _append(self, seq: int, lane: int, kind: int, count: int, weight: int, conf: int, boot: int) -> None:
        with open(self._journal, "ab") as f:
            f.write(_line(seq, lane, kind, count, weight, conf, boot))
        self.journal_records += 1

    def _load(self) -> None:
        head = self._head.load()
        if head is not None and len(head) == struct.calcsize(_HEAD_FMT):
            self.next_seq, self.acked, self.dropped, _boot = struct.unpack(_HEAD_FMT, head)
            if self.next_seq < 1:
                self.next_seq = 1
        try:
            os.stat(self._journal)
        except OSError:
            return
        torn = False
        with open(self._journal, "rb") as f:
            while True:
                line = f.read(_LINE)
                if not line:
                    break
                if len(line) < _LINE or struct.unpack(">I", line[_REC_LEN:])[0] != _crc(line[:_REC_LEN]):
                    torn = True
                    break
                self.journal_records += 1
                seq, lane, kind, count, weight, conf, boot = struct.unpack(_REC_FMT, line[:_REC_LEN])
                if seq >= self.next_seq:
                    self.next_seq = seq + 1
                if seq <= self.acked:
                    continue
                if self.depth == self.capacity:
                    self._start = (self._start + 1) % self.capacity
                    self.depth -= 1
                    self.dropped += 1
                self._put(seq, lane, kind, count, weight, conf, 0, boot)
        if torn:
            # Appends after a torn record would be unreadable: rewrite the journal cleanly now.
            self.torn_records += 1
            self.compact()


def _crc(data: bytes) -> int:
    return int(binascii.crc32(data)) & 0xFFFFFFFF


def _line(seq: int, lane: int, kind: int, count: int, weight: int, conf: int, boot: int) -> bytes:
    rec = struct.pack(_REC_FMT, seq, lane, kind, count, weight, conf, boot)
    return rec + struct.pack(">I", _crc(rec))
