"""Bounded, persistent outbox of the records awaiting the hub's acknowledgement: weight events and RFID tag records.

Both kinds share one sequence (``event_seq``, shared_protocol/README.md section 4.3) and one queue, in the order
they happened: an ``event`` (pick, put, anomaly, count) or a ``tag_seen`` / ``tag_lost`` (``firmware/rfid/``).
``message(i, now)`` gives the i-th pending record as its protocol message; delivery (``delivery.py``) sends and
re-sends them alike, and one ``ack`` releases both.

Records are kept in preallocated arrays (``capacity`` slots) and journalled to flash, one record with a CRC per
event, appended as the record is created: a record the node made survives a power cut. Acknowledgements are not
journalled one by one (re-sending an acknowledged record is harmless: the hub dedupes by ``event_seq``); they are
folded in when the journal is compacted, which rewrites it with only the unacknowledged records (atomic replace).
A torn last record is detected by its CRC and dropped at load.

**Tag EPCs.** A tag record carries its EPC (1..32 bytes). The EPCs of the records held live in one preallocated
ring of ``capacity * EPC_PER_SLOT`` bytes (4 KiB for 256 slots: every slot a 128-bit EPC), in record order, so
releasing the oldest record releases the oldest EPC. The ring is allocated only when tags are enabled
(``enable_tags``, a node with RFID readers) or when a journal holds tag records: a node without RFID keeps the
RAM it had. When the ring cannot take a new EPC the oldest records are dropped, as on a full outbox.

When the outbox is full the oldest record is dropped and counted in ``dropped``; the hub learns of the loss
from ``first_seq`` (sent as ``health.outbox_first``) and books a sensor gap from the lane counters.
Before anything is forgotten (dropped or compacted away) ``before_forget`` is called so the owner can
checkpoint the lane counters that include those events.

**Journal format (v2).** ``MAGIC`` (4 bytes: ``a5 4f 42 02``) once at the start of the file, then records::

    kind u8 | n u8 | body (n bytes) | crc32 u32 of kind, n and body

    kind 1..4 (event kinds)  body ">IBhiBI": event_seq, lane, count_delta, weight_delta_dg, confidence, boot  (n = 16)
    kind 8 / 9 (TAG_SEEN / TAG_LOST, the message types)
                             body ">IBbI" + EPC: event_seq, lane, rssi, boot, then the EPC  (n = 10 + EPC length)

An event's line is 22 bytes, as in v1; a 96-bit EPC's tag line 28. **v1** (firmware before RFID) wrote fixed
22-byte lines with no file header (``">IBBhiBxI"`` + crc32: event_seq, lane, kind, count_delta, weight_delta_dg,
confidence, pad, boot). A journal that does not start with ``MAGIC`` is read as v1 and rewritten as v2 at once
(``migrated`` is then 1): the rewrite is the compaction's atomic replace, so a power cut leaves either journal
whole. (A v1 journal starting with ``MAGIC`` would need an ``event_seq`` above 2.7e9.)
"""

import binascii
import os
import struct
from array import array

from firmware.persist import Record, replace
from firmware.ticks import TICKS_MAX, ticks_diff
from shared_protocol.compat import const
from shared_protocol.messages import AGE_UNKNOWN, KIND_COUNT, MAX_VAR_LEN, TAG_LOST, TAG_SEEN, Event, TagLost, TagSeen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEFAULT_CAPACITY = const(256)
EPC_PER_SLOT = const(16)  # bytes of the EPC ring per slot (a 128-bit EPC each)
MAGIC = b"\xa5OB\x02"  # the v2 journal's first 4 bytes
_EV_FMT = ">IBhiBI"  # event_seq, lane, count_delta, weight_delta_dg, confidence, boot
_EV_LEN = const(16)
_TAG_FMT = ">IBbI"  # event_seq, lane, rssi, boot; the EPC follows
_TAG_LEN = const(10)
_V1_FMT = ">IBBhiBxI"  # event_seq, lane, kind, count, weight, confidence, pad, boot
_V1_LEN = const(18)
_V1_LINE = const(22)  # v1 record + crc32
_HEAD_FMT = ">IIII"  # next_seq, acked, dropped, boot


def _age(now_ms: int, t_ms: int) -> int:
    d = ticks_diff(now_ms, t_ms)
    return d if d > 0 else 0


def is_tag_kind(kind: int) -> bool:
    return kind in (TAG_SEEN, TAG_LOST)


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
        self._kind = bytearray(capacity)  # event kind 1..4, or TAG_SEEN / TAG_LOST
        self._count = array("h", [0] * capacity)
        self._weight = array("i", [0] * capacity)  # a tag record's rssi
        self._conf = bytearray(capacity)  # a tag record's EPC length
        self._t = array("i", [0] * capacity)
        self._evboot = array("I", [0] * capacity)
        self._eoff = array("H", [0] * capacity)  # a tag record's EPC offset in the ring
        self._epc: bytearray | None = None  # the EPC ring (enable_tags)
        self._ehead = 0  # ring offset of the oldest EPC held
        self._eused = 0  # ring bytes held
        self._start = 0
        self.depth = 0
        self.next_seq = 1
        self.acked = 0
        self.dropped = 0
        self.journal_records = 0
        self.torn_records = 0
        self.migrated = 0  # 1 when this boot rewrote a v1 journal as v2
        self._need_magic = True  # the journal file does not start with MAGIC yet (absent or v1)
        self.before_forget: Callable[[], None] | None = None
        self._load()

    # -- queries ------------------------------------------------------------------------------
    def first_seq(self) -> int:
        """Lowest event_seq held (0 when empty)."""
        return self._seq[self._start] if self.depth else 0

    def seq_at(self, i: int) -> int:
        return self._seq[(self._start + i) % self.capacity]

    def kind_at(self, i: int) -> int:
        """The i-th pending record's kind: an event kind (1..4) or TAG_SEEN / TAG_LOST."""
        return self._kind[(self._start + i) % self.capacity]

    def is_event(self, i: int) -> bool:
        """The i-th pending record is a weight event (it counts in the lane counters; a tag record does not)."""
        return self._kind[(self._start + i) % self.capacity] <= KIND_COUNT

    def message(self, i: int, now_ms: int) -> "Event | TagSeen | TagLost":
        """The i-th pending record (0 = oldest) as a protocol message (``Event``, ``TagSeen`` or ``TagLost``), with
        its age now."""
        j = (self._start + i) % self.capacity
        age = _age(now_ms, self._t[j]) if self._evboot[j] == self._boot else AGE_UNKNOWN
        kind = self._kind[j]
        if kind == TAG_SEEN:
            return TagSeen(self._seq[j], self._lane[j], self._weight[j], age, self._epc_of(j))
        if kind == TAG_LOST:
            return TagLost(self._seq[j], self._lane[j], age, self._epc_of(j))
        return Event(self._seq[j], self._lane[j], kind, self._count[j], self._weight[j], self._conf[j], age)

    def epc_bytes(self) -> int:
        """Size of the EPC ring (0 until tags are enabled)."""
        ring = self._epc
        return len(ring) if ring is not None else 0

    # -- changes ------------------------------------------------------------------------------
    def enable_tags(self) -> None:
        """Allocate the EPC ring now (at boot, while the heap is whole) rather than at the first tag record."""
        if self._epc is None:
            self._epc = bytearray(max(self.capacity * EPC_PER_SLOT, 2 * MAX_VAR_LEN))

    def add(self, lane: int, kind: int, count_delta: int, weight_delta_dg: int, confidence: int, t_ms: int) -> int:
        """Record a new event (journalled before returning); returns its event_seq."""
        seq = self.next_seq
        # Validate through the protocol's own range checks before anything is stored.
        Event(seq, lane, kind, count_delta, weight_delta_dg, confidence, 0).encode_payload()
        if self.depth == self.capacity:
            self._forget_oldest()
        self._put(seq, lane, kind, count_delta, weight_delta_dg, confidence, t_ms & TICKS_MAX, self._boot)
        self.next_seq = seq + 1
        self._append(_event_line(seq, lane, kind, count_delta, weight_delta_dg, confidence, self._boot))
        self._maybe_compact()
        return seq

    def add_tag(self, kind: int, lane: int, rssi: int, epc: "bytes | bytearray", off: int, n: int, t_ms: int) -> int:
        """Record a ``tag_seen`` (``kind`` TAG_SEEN, with the strongest ``rssi``) or a ``tag_lost`` (TAG_LOST, rssi
        ignored) of the EPC ``epc[off:off + n]`` on ``lane`` (journalled before returning); returns its event_seq."""
        if kind != TAG_SEEN and kind != TAG_LOST:
            raise ValueError("not a tag record kind")
        raw = bytes(epc[off : off + n])
        if kind == TAG_LOST:
            rssi = 0
        seq = self.next_seq
        TagSeen(seq, lane, rssi, 0, raw).encode_payload()  # the protocol's range checks, before anything is kept
        self.enable_tags()
        self._room_for_epc(n)
        if self.depth == self.capacity:
            self._forget_oldest()
        self._put(seq, lane, kind, 0, rssi, n, t_ms & TICKS_MAX, self._boot, raw)
        self.next_seq = seq + 1
        self._append(_tag_line(kind, seq, lane, rssi, self._boot, raw))
        self._maybe_compact()
        return seq

    def ack(self, upto: int) -> int:
        """The hub has every event_seq <= upto; returns how many records that released."""
        if upto >= self.next_seq:
            upto = self.next_seq - 1  # an ack for records never sent is ignored beyond what exists
        if upto <= self.acked:
            return 0
        self.acked = upto
        n = 0
        while self.depth and self._seq[self._start] <= upto:
            self._pop()
            n += 1
        return n

    def compact(self) -> None:
        """Rewrite the journal with only unacknowledged records (atomic replace)."""
        if self.before_forget is not None:
            self.before_forget()
        tmp = self._journal + ".tmp"
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            for i in range(self.depth):
                f.write(self._line_of((self._start + i) % self.capacity))
        self._head.save(struct.pack(_HEAD_FMT, self.next_seq, self.acked, self.dropped, self._boot))
        replace(tmp, self._journal)
        self._need_magic = False
        self.journal_records = self.depth

    # -- internals ----------------------------------------------------------------------------
    def _maybe_compact(self) -> None:
        if self.journal_records >= 2 * self.capacity:
            self.compact()

    def _pop(self) -> None:
        """Release the oldest record (and its EPC)."""
        j = self._start
        if is_tag_kind(self._kind[j]):
            ring = self._epc
            if ring is not None:
                self._ehead = (self._ehead + self._conf[j]) % len(ring)
                self._eused -= self._conf[j]
        self._start = (j + 1) % self.capacity
        self.depth -= 1

    def _forget_oldest(self) -> None:
        if self.before_forget is not None:
            self.before_forget()
        self._pop()
        self.dropped += 1

    def _room_for_epc(self, n: int) -> None:
        """Drop the oldest records until the ring takes ``n`` more bytes (always possible: it holds 2 EPCs)."""
        ring = self._epc
        if ring is None:
            return
        while self.depth and self._eused + n > len(ring):
            self._forget_oldest()

    def _put(
        self, seq: int, lane: int, kind: int, count: int, weight: int, conf: int, t: int, boot: int,
        epc: "bytes | None" = None,
    ) -> None:  # fmt: skip
        j = (self._start + self.depth) % self.capacity
        self._seq[j] = seq
        self._lane[j] = lane
        self._kind[j] = kind
        self._count[j] = count
        self._weight[j] = weight
        self._conf[j] = conf
        self._t[j] = t
        self._evboot[j] = boot
        if epc is not None:
            ring = self._epc
            if ring is None:  # callers make room first
                raise ValueError("no EPC ring")
            size = len(ring)
            pos = (self._ehead + self._eused) % size
            self._eoff[j] = pos
            for b in epc:
                ring[pos] = b
                pos += 1
                if pos == size:
                    pos = 0
            self._eused += len(epc)
        self.depth += 1

    def _epc_of(self, j: int) -> bytes:
        ring = self._epc
        n = self._conf[j]
        out = bytearray(n)
        if ring is not None:
            size = len(ring)
            pos = self._eoff[j]
            for k in range(n):
                out[k] = ring[pos]
                pos += 1
                if pos == size:
                    pos = 0
        return bytes(out)

    def _line_of(self, j: int) -> bytes:
        kind = self._kind[j]
        if is_tag_kind(kind):
            return _tag_line(kind, self._seq[j], self._lane[j], self._weight[j], self._evboot[j], self._epc_of(j))
        return _event_line(
            self._seq[j], self._lane[j], kind, self._count[j], self._weight[j], self._conf[j], self._evboot[j]
        )

    def _append(self, line: bytes) -> None:
        with open(self._journal, "ab") as f:
            if self._need_magic:
                f.write(MAGIC)
            f.write(line)
        self._need_magic = False
        self.journal_records += 1

    def _keep(
        self, seq: int, lane: int, kind: int, count: int, weight: int, conf: int, boot: int, epc: "bytes | None"
    ) -> None:
        """A record read from the journal: held unless acknowledged (overflow drops the oldest, as ``add`` does)."""
        self.journal_records += 1
        if seq >= self.next_seq:
            self.next_seq = seq + 1
        if seq <= self.acked:
            return
        if epc is not None:
            self.enable_tags()
            self._room_for_epc(len(epc))
        if self.depth == self.capacity:
            self._pop()
            self.dropped += 1
        self._put(seq, lane, kind, count, weight, conf, 0, boot, epc)

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
        with open(self._journal, "rb") as f:
            first = f.read(len(MAGIC))
            if first == MAGIC:
                self._need_magic = False
                torn = self._load_v2(f)
            else:
                torn = False
        if first != MAGIC:  # v1 (or empty): read it from the start, then rewrite it as v2 at once
            with open(self._journal, "rb") as f:
                torn = self._load_v1(f)
            if first:
                self.migrated = 1
        if torn:
            self.torn_records += 1
        if torn or first != MAGIC:
            # Appends after a torn record would be unreadable, and a v1 journal takes no v2 appends: rewrite it now.
            self.compact()

    def _load_v2(self, f: "Any") -> bool:
        """Records up to the end or the first that does not check; True when one did not (torn)."""
        read = f.read
        while True:
            hdr = read(2)
            if not hdr:
                return False
            if len(hdr) < 2:
                return True
            kind, n = hdr[0], hdr[1]
            if is_tag_kind(kind):
                if n < _TAG_LEN + 1 or n > _TAG_LEN + MAX_VAR_LEN:
                    return True
            elif kind < 1 or kind > KIND_COUNT or n != _EV_LEN:
                return True
            rest = read(n + 4)
            if len(rest) < n + 4 or struct.unpack(">I", rest[n:])[0] != _crc(hdr + rest[:n]):
                return True
            if is_tag_kind(kind):
                seq, lane, rssi, boot = struct.unpack(_TAG_FMT, rest[:_TAG_LEN])
                self._keep(seq, lane, kind, 0, rssi, n - _TAG_LEN, boot, bytes(rest[_TAG_LEN:n]))
            else:
                seq, lane, count, weight, conf, boot = struct.unpack(_EV_FMT, rest[:n])
                self._keep(seq, lane, kind, count, weight, conf, boot, None)

    def _load_v1(self, f: "Any") -> bool:
        read = f.read
        while True:
            line = read(_V1_LINE)
            if not line:
                return False
            if len(line) < _V1_LINE or struct.unpack(">I", line[_V1_LEN:])[0] != _crc(line[:_V1_LEN]):
                return True
            seq, lane, kind, count, weight, conf, boot = struct.unpack(_V1_FMT, line[:_V1_LEN])
            self._keep(seq, lane, kind, count, weight, conf, boot, None)


def _crc(data: bytes) -> int:
    return int(binascii.crc32(data)) & 0xFFFFFFFF


def _record(kind: int, body: bytes) -> bytes:
    rec = bytes((kind, len(body))) + body
    return rec + struct.pack(">I", _crc(rec))


def _event_line(seq: int, lane: int, kind: int, count: int, weight: int, conf: int, boot: int) -> bytes:
    return _record(kind, struct.pack(_EV_FMT, seq, lane, count, weight, conf, boot))


def _tag_line(kind: int, seq: int, lane: int, rssi: int, boot: int, epc: bytes) -> bytes:
    return _record(kind, struct.pack(_TAG_FMT, seq, lane, rssi, boot) + epc)


def v1_line(seq: int, lane: int, kind: int, count: int, weight: int, conf: int, boot: int) -> bytes:
    """A v1 journal line (firmware before RFID): what the migration reads; the tests write old journals with it."""
    rec = struct.pack(_V1_FMT, seq, lane, kind, count, weight, conf, boot)
    return rec + struct.pack(">I", _crc(rec))
