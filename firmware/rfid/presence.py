"""Which tag is on which lane: the reads of every antenna of a node, debounced into presence changes.

A tag is *present* once it was read ``seen_n`` times within ``window_ms`` (by any of the node's antennas) and every
antenna has had its turn to read it since: ``cycle_ms`` (the longest round of a reader's antennas, which it
inventories one at a time; 0 with one antenna each) after its first read of those ``seen_n``, at a read or at
``tick``. It is then on the lane whose antenna reads it strongest, and a ``TAG_SEEN`` goes to the sink. (Placed at
once, a tag would go to whichever antenna happened to be dwelling when it came.) It is *lost* once no antenna has
read it for ``lost_s``: a ``TAG_LOST`` for its lane goes to the sink and its slot is freed. (A reader
that cannot read, ``READER_SILENT`` or ``READER_STARTING``, cannot tell that a tag left: ``hold`` keeps the tags
of its lanes from being lost meanwhile; the poller calls it.)

The table lives in RAM only: after a reboot every tag on the shelf is seen afresh (a ``tag_seen`` again, with a
new ``event_seq``), and a tag taken away while the node was off gets no ``tag_lost`` from it. The hub learns of the
reboot from ``hello`` (a new boot count) and settles both.

**Cross-reads.** An antenna often reads tags of the neighbouring lanes too, more weakly. Per tag the table keeps up
to ``CANDIDATES`` lanes with a smoothed RSSI each (an exponential average, weight 1/4, in 1/16 dB; restarted when
that lane has not read the tag for the *freshness* span, ``max(window_ms, 2 * cycle_ms)``: an antenna reads its tags
only during its own turn, once a round). A present tag *moves* to another lane when that lane has read it ``seen_n``
times with gaps under that span and reads it stronger than its lane by ``hysteresis_db`` (6 dB), or its lane has
not read it for that span: a ``TAG_LOST`` on the old lane, then a ``TAG_SEEN`` on the new one. ``TAG_SEEN``
carries the strongest raw read of the lane that took it since that lane's average (re)started.

**A sink that fails.** The sink is called before the table changes: when it raises (the outbox cannot write), the
table is left as it was and the exception goes to the caller, so the next read or ``tick`` tries again (dated as
before). In a move, a ``TAG_LOST`` recorded and a ``TAG_SEEN`` refused leave the tag not present: the next read or
tick places it again, the ``TAG_SEEN`` dated at the move.

**Bounded.** ``max_tags`` slots (``MAX_TAGS``, 64) of up to ``MAX_EPC`` (32) bytes, all preallocated (about
4 KiB with ``seen_n`` 2). A new tag takes a free slot, else the slot of a tag not present yet that was read least
recently; when every slot holds a present tag the read is dropped and counted in ``overflows``. Tags not present
whose last read is older than ``window_ms`` are forgotten by ``tick`` (older than the freshness span once their
``seen_n`` reads are in and they wait to be placed).

**Cost.** ``read`` (one per tag notice) hashes the EPC, finds its slot through an index (open addressing on the
16-bit hash, at most half full: a probe or two), records the read and decides; it allocates nothing unless the
presence changes (the sink's outbox record allocates then). ``tick`` scans the slots, places the tags whose round
has passed, and rebuilds the index when it freed some: the poller calls it a few times a second, not per read.

The sink: ``sink.tag_changed(kind, lane, rssi, epc, off, n, t)`` with ``kind`` ``TAG_SEEN`` / ``TAG_LOST`` (the
message types), the EPC at ``epc[off:off + n]`` (valid during the call only) and ``t`` when the change happened, the
time the protocol's ``age_ms`` dates: a tag's arrival is its first read of the debounce window (however long it
then waits for the antennas' round), its departure its last read (``lost_s`` before the decision); a move is dated
when it is decided.
"""

from array import array

from firmware.ticks import ticks_diff
from shared_protocol.compat import const
from shared_protocol.messages import TAG_LOST, TAG_SEEN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Sink(Protocol):
        def tag_changed(self, kind: int, lane: int, rssi: int, epc: bytearray, off: int, n: int, now: int) -> None: ...


MAX_TAGS = const(64)
MAX_EPC = const(32)
MAX_SEEN_N = const(10)
CANDIDATES = const(4)  # lanes tracked per tag
HYSTERESIS_DB = const(6)
NO_LANE = const(255)
MAX_LANES = const(32)
MAX_SLOTS = const(254)  # the index holds slot + 1 in a byte
_MIN_SMOOTH = const(-32768)
_OLDEST = const(-0x20000001)  # below any ticks_diff
# A pending tag's placing (``_armed``): not yet ``seen_n`` reads in the window; in, waiting for the antennas' round
# since its arrival; due at once (a move whose TAG_SEEN the sink refused: placed again, dated at the move).
_WAITING = const(0)
_ARMED = const(1)
_DUE = const(2)


class Presence:
    """The table; ``now`` (ms ticks) is the time of the reads given to ``read`` (the poller sets it each poll).
    ``cycle_ms``: the longest round of a reader's antennas (``RfidConfig.cycle_ms``; 0: no wait).
    Counters: ``present`` (tags present now), ``overflows``, ``moves`` (moves whose TAG_LOST was recorded), ``seen``
    (tags placed), ``lost``."""

    def __init__(
        self,
        sink: "Sink",
        seen_n: int,
        window_ms: int,
        lost_s: int,
        hysteresis_db: int = HYSTERESIS_DB,
        max_tags: int = MAX_TAGS,
        cycle_ms: int = 0,
    ) -> None:
        if not 1 <= seen_n <= MAX_SEEN_N:
            raise ValueError("seen_n must be 1.." + str(MAX_SEEN_N))
        if not 1 <= max_tags <= MAX_SLOTS:
            raise ValueError("max_tags must be 1.." + str(MAX_SLOTS))
        if cycle_ms < 0:
            raise ValueError("cycle_ms must be >= 0")
        self._sink = sink
        self._seen_n = seen_n
        self._window = window_ms
        self.cycle_ms = cycle_ms
        # a lane's reads of a tag are fresh for this long: its antenna reads only in its turn, once a round
        self._fresh = window_ms if window_ms >= 2 * cycle_ms else 2 * cycle_ms
        self._lost_ms = lost_s * 1000
        self._hyst = hysteresis_db * 16
        self._max = max_tags
        self.now = 0
        self._epc = bytearray(max_tags * MAX_EPC)
        self._len = bytearray(max_tags)  # 0: a free slot
        self._hash = array("H", [0] * max_tags)
        size = 4
        while size < 2 * max_tags:
            size *= 2
        self._index = bytearray(size)  # slot + 1 by hash (0: empty), linear probing, at most half full
        self._imask = size - 1
        self._lane = bytearray([NO_LANE] * max_tags)  # the lane a present tag is on; NO_LANE: not present
        self._last = array("i", [0] * max_tags)  # last read by any antenna (a departure is dated at it)
        self._since = array("i", [0] * max_tags)  # absence counts from here: the last read, or the last hold
        self._times = array("i", [0] * (max_tags * seen_n))  # the last seen_n reads' times, a ring per slot
        self._ti = bytearray(max_tags)  # next write position in the ring (the oldest once it is full)
        self._tn = bytearray(max_tags)  # reads in the ring
        self._armed = bytearray(max_tags)  # a pending tag's placing: _WAITING, _ARMED or _DUE
        self._arrive = array("i", [0] * max_tags)  # _ARMED: its arrival (dated there); _DUE: the move's time
        nc = max_tags * CANDIDATES
        self._clane = bytearray([NO_LANE] * nc)
        self._crssi = array("h", [0] * nc)  # smoothed RSSI, 1/16 dB
        self._cmax = array("b", [0] * nc)  # strongest raw read since the average (re)started
        self._clast = array("i", [0] * nc)
        self._chits = bytearray(nc)  # reads since the average (re)started, up to 255
        self.present = 0
        self.overflows = 0
        self.moves = 0
        self.seen = 0
        self.lost = 0

    # -- reads ------------------------------------------------------------------------------------
    def read(self, lane: int, rssi: int, buf: "bytes | bytearray", off: int, n: int) -> None:
        """The antenna of ``lane`` read the EPC ``buf[off:off + n]`` (1..32 bytes) at ``rssi`` dBm, at ``now``."""
        now = self.now
        h = n
        k = off
        end = off + n
        while k < end:
            h = (h * 31 + buf[k]) & 0xFFFF
            k += 1
        s = self._find(h, buf, off, n)
        if s < 0:
            s = self._take(h, buf, off, n)
            if s < 0:
                self.overflows += 1
                return
        self._last[s] = now
        self._since[s] = now
        seen = self._seen_n
        i = self._ti[s]
        self._times[s * seen + i] = now
        i += 1
        if i == seen:
            i = 0
        self._ti[s] = i
        if self._tn[s] < seen:
            self._tn[s] += 1
        c = self._candidate(s, lane, now)
        r16 = rssi * 16
        if not self._chits[c] or ticks_diff(now, self._clast[c]) > self._fresh:
            self._crssi[c] = r16
            self._cmax[c] = rssi
            self._chits[c] = 1
        else:
            v = self._crssi[c]
            self._crssi[c] = v + ((r16 - v) >> 2)
            if rssi > self._cmax[c]:
                self._cmax[c] = rssi
            if self._chits[c] < 255:
                self._chits[c] += 1
        self._clast[c] = now
        self._decide(s, now)

    def _find(self, h: int, buf: "bytes | bytearray", off: int, n: int) -> int:
        idx = self._index
        mask = self._imask
        hs = self._hash
        ln = self._len
        epc = self._epc
        i = h & mask
        while True:
            e = idx[i]
            if not e:
                return -1
            s = e - 1
            if hs[s] == h and ln[s] == n:
                base = s * MAX_EPC
                k = 0
                while k < n and epc[base + k] == buf[off + k]:
                    k += 1
                if k == n:
                    return s
            i = (i + 1) & mask

    def _insert(self, s: int) -> None:
        idx = self._index
        mask = self._imask
        i = self._hash[s] & mask
        while idx[i]:
            i = (i + 1) & mask
        idx[i] = s + 1

    def _reindex(self) -> None:
        """Rebuild the index from the used slots (after slots were freed or taken over)."""
        idx = self._index
        k = 0
        while k < len(idx):
            idx[k] = 0
            k += 1
        s = 0
        while s < self._max:
            if self._len[s]:
                self._insert(s)
            s += 1

    def _take(self, h: int, buf: "bytes | bytearray", off: int, n: int) -> int:
        """A slot for a new tag: a free one, else the pending tag read least recently; -1 when all are present."""
        ln = self._len
        lanes = self._lane
        now = self.now
        best = -1
        age = _OLDEST
        s = 0
        m = self._max
        while s < m:
            if not ln[s]:
                best = s
                break
            if lanes[s] == NO_LANE:
                a = ticks_diff(now, self._last[s])
                if a > age:
                    age = a
                    best = s
            s += 1
        if best < 0:
            return -1
        s = best
        evicted = ln[s] != 0
        base = s * MAX_EPC
        k = 0
        while k < n:
            self._epc[base + k] = buf[off + k]
            k += 1
        ln[s] = n
        self._hash[s] = h
        lanes[s] = NO_LANE
        self._ti[s] = 0
        self._tn[s] = 0
        self._armed[s] = _WAITING
        c = s * CANDIDATES
        e = c + CANDIDATES
        while c < e:
            self._clane[c] = NO_LANE
            self._chits[c] = 0
            c += 1
        if evicted:
            self._reindex()  # its old hash's entry goes
        else:
            self._insert(s)
        return s

    def _candidate(self, s: int, lane: int, now: int) -> int:
        """The candidate entry of ``lane`` for slot ``s`` (taken over when new: a free entry, else the one read
        least recently, never the lane the tag is on)."""
        cl = self._clane
        c = s * CANDIDATES
        e = c + CANDIDATES
        here = self._lane[s]
        victim = -1
        age = _OLDEST
        free = False
        while c < e:
            x = cl[c]
            if x == lane:
                return c
            if x == NO_LANE:
                if not free:
                    victim = c
                    free = True  # a free entry beats any other
            elif x != here and not free:
                a = ticks_diff(now, self._clast[c])
                if a > age:
                    age = a
                    victim = c
            c += 1
        cl[victim] = lane
        self._chits[victim] = 0
        return victim

    def _decide(self, s: int, now: int) -> None:
        """Place a pending tag, or move a present one. The sink is called before anything changes (module docstring)."""
        here = self._lane[s]
        if here == NO_LANE:
            a = self._armed[s]
            if a == _WAITING:
                seen = self._seen_n
                oldest = self._times[s * seen + self._ti[s]]  # once the ring is full, ``_ti`` is the oldest
                if self._tn[s] < seen or ticks_diff(now, oldest) > self._window:
                    return  # not yet seen_n reads within the window
                self._armed[s] = _ARMED
                self._arrive[s] = oldest  # its arrival: the first of the seen_n reads
                a = _ARMED
            if a == _ARMED and ticks_diff(now, self._arrive[s]) < self.cycle_ms:
                return  # not every antenna has had its turn since it came
        fresh = self._fresh
        cl = self._clane
        hits = self._chits
        last = self._clast
        sm = self._crssi
        best = -1
        bv = _MIN_SMOOTH
        here_c = -1
        c = s * CANDIDATES
        e = c + CANDIDATES
        while c < e:
            x = cl[c]
            if x != NO_LANE and hits[c] and ticks_diff(now, last[c]) <= fresh:
                if x == here:
                    here_c = c
                if sm[c] > bv:
                    bv = sm[c]
                    best = c
            c += 1
        if best < 0:
            return
        base = s * MAX_EPC
        n = self._len[s]
        if here == NO_LANE:
            lane = cl[best]
            # dated at its arrival (or, placed again after a move, at the move)
            self._sink.tag_changed(TAG_SEEN, lane, self._cmax[best], self._epc, base, n, self._arrive[s])
            self._lane[s] = lane
            self._armed[s] = _WAITING
            self.present += 1
            self.seen += 1
            return
        if best == here_c or hits[best] < self._seen_n:
            return
        if here_c >= 0 and bv < sm[here_c] + self._hyst:
            return
        lane = cl[best]
        self._sink.tag_changed(TAG_LOST, here, 0, self._epc, base, n, now)
        self._lane[s] = NO_LANE  # until its TAG_SEEN is recorded too: placed again at once if the sink refuses it
        self._armed[s] = _DUE
        self._arrive[s] = now
        self.present -= 1
        self.moves += 1
        self._sink.tag_changed(TAG_SEEN, lane, self._cmax[best], self._epc, base, n, now)
        self._lane[s] = lane
        self._armed[s] = _WAITING
        self.present += 1

    # -- time -------------------------------------------------------------------------------------
    def tick(self, now: int) -> None:
        """Place the pending tags whose antennas' round has passed; lose the present tags unread for ``lost_s``;
        forget the pending ones unread for ``window_ms``. An exception from the sink ends the scan (the rest waits
        for the next tick), the table consistent."""
        ln = self._len
        lanes = self._lane
        last = self._last
        since = self._since
        armed = self._armed
        freed = False
        s = 0
        m = self._max
        try:
            while s < m:
                n = ln[s]
                if n:
                    lane = lanes[s]
                    if lane == NO_LANE and armed[s]:
                        self._decide(s, now)
                        lane = lanes[s]
                    age = ticks_diff(now, since[s])
                    if lane != NO_LANE:
                        if age >= self._lost_ms:
                            # dated at its departure: the last read, ``lost_s`` before this decision
                            self._sink.tag_changed(TAG_LOST, lane, 0, self._epc, s * MAX_EPC, n, last[s])
                            self.present -= 1
                            self.lost += 1
                            lanes[s] = NO_LANE
                            ln[s] = 0
                            freed = True
                    elif age > (self._fresh if armed[s] else self._window):
                        ln[s] = 0
                        freed = True
                s += 1
        finally:
            if freed:
                self._reindex()

    def hold(self, lanes: "bytes | bytearray", now: int) -> None:
        """The tags present on the lanes flagged in ``lanes`` (one byte per lane, non-zero: held) count as read
        ``now`` for their loss (their reader cannot read at the moment, so it cannot tell that they left); a departure
        found later is still dated at the last real read."""
        ln = self._len
        on = self._lane
        since = self._since
        s = 0
        m = self._max
        while s < m:
            lane = on[s]
            if ln[s] and lane != NO_LANE and lanes[lane]:
                since[s] = now
            s += 1

    # -- queries ----------------------------------------------------------------------------------
    def count(self, lanes: "bytes | bytearray") -> int:
        """Tags present on the lanes flagged in ``lanes`` (one byte per lane)."""
        n = 0
        s = 0
        while s < self._max:
            lane = self._lane[s]
            if self._len[s] and lane != NO_LANE and lanes[lane]:
                n += 1
            s += 1
        return n

    def tags(self) -> "list[tuple[bytes, int]]":
        """(EPC, lane) of every present tag (for tests and diagnostics; allocates)."""
        out = []
        for s in range(self._max):
            if self._len[s] and self._lane[s] != NO_LANE:
                base = s * MAX_EPC
                out.append((bytes(self._epc[base : base + self._len[s]]), self._lane[s]))
        return out
