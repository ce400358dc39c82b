"""The node's RFID task: its readers, their antenna switches and one presence table, turned into outbox records.

``RfidPoller(cfg.rfid, board, outbox, deliver, send, now)`` opens each reader's UART (``board.uart``) and switch
lines (``board.pin_out``), and ``poll(now)`` (every ``POLL_MS`` = 10 ms, ``firmware/node.py``) polls every reader
(``uhf.py``: reads, parses, advances its cycle; never blocks). A tag notice goes, with the lane of the antenna that
read it (``antennas[i]`` of the reader's config), to the node's one ``Presence`` table (``presence.py``: a tag
cross-read by two readers' antennas is still one tag); a presence change becomes an outbox record (``tag_seen`` /
``tag_lost``, journalled, ``event_seq`` from the events' sequence) and is delivered like an event (``deliver``:
``Node._deliver``). Lane counters are not touched: tags do not count items.

The table waits ``cfg.cycle_ms`` (the longest round of a reader's antennas) before it places a new tag, so that every
antenna has had its turn to read it (``presence.py``). Every ``TICK_MS`` the table places, forgets and loses tags
(``Presence.tick``); the tags on the lanes of a reader that is not reading (starting, silent, with a command
unanswered: ``UhfReader.reading``, or failing, below) are held meanwhile (it cannot see them leave).
``reader_health`` goes up for every reader with each ``health`` (``reports.py``) and at once when a reader's state
changes (``send``).

An exception from a reader's poll (a driver bug, a UART that raises) or from the table's timers is counted in
``errors`` (the first one printed) and the task carries on: nothing it does stops the node. A reader whose poll
raised ``FAIL_POLLS`` times, each within ``RECOVER_MS`` of the one before, is *failing*: not reading (its lanes
held) and ``READER_SILENT`` in ``reader_health`` (sent at the change), until its polls have gone ``RECOVER_MS``
without an exception. A presence change the outbox cannot record (``add_tag`` raises: the flash write failed) is
counted in ``errors`` too, and the table is left as it was, so the next read or tick records it (``presence.py``);
the reader is not to blame, its state is untouched. A UART or pin the board cannot open (pins its port
cannot route to that UART: the RP2040 has fixed pairs, the config cannot know the port) leaves that reader with no
UART: it is ``READER_SILENT`` in ``reader_health`` and the reason is in ``notes``; the node counts weights as ever.
"""

from firmware.rfid.presence import MAX_LANES, Presence
from firmware.rfid.uhf import UhfReader
from firmware.ticks import ticks_add, ticks_diff
from shared_protocol.compat import const
from shared_protocol.messages import READER_SILENT, ReaderHealth

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from firmware.config import RfidConfig
    from firmware.outbox import Outbox
    from shared_protocol.messages import Message

POLL_MS = const(10)
TICK_MS = const(200)
FAIL_POLLS = const(5)  # polls that raised, each within RECOVER_MS of the one before: the reader is failing
RECOVER_MS = const(1000)  # a failing reader is back after this long without an exception from its poll
_U16 = const(0xFFFF)


class AntennaSwitch:
    """An RF switch driven by GPIO outputs: value ``i`` selects antenna ``i``, the first pin is bit 0."""

    def __init__(self, pins: "list[Any]") -> None:
        self._pins = pins
        self.value = -1
        self.select(0)

    def select(self, i: int) -> None:
        if i == self.value:
            return
        pins = self._pins
        k = 0
        n = len(pins)
        while k < n:
            pins[k].value((i >> k) & 1)
            k += 1
        self.value = i


class _NoUart:
    """A reader's UART that could not be opened: nothing goes out, nothing comes in."""

    def write(self, data: bytes) -> int:
        return len(data)

    def any(self) -> int:
        return 0

    def readinto(self, buf: bytearray, n: int) -> None:
        return None


class _Antennas:
    """A reader's sink: its antenna ``i`` covers lane ``lanes[i]``. An exception from the table (its sink: the outbox
    cannot write) is the poller's to count, not the reader's: the reader's parsing and its cycle go on."""

    def __init__(self, poller: "RfidPoller", lanes: bytes) -> None:
        self._poller = poller
        self._presence = poller.presence
        self._lanes = lanes

    def tag(self, antenna: int, rssi: int, buf: bytearray, off: int, n: int) -> None:
        try:
            self._presence.read(self._lanes[antenna], rssi, buf, off, n)
        except Exception as err:  # the table is as it was: the next read of the tag tries again
            self._poller._error("rfid presence", err)


class RfidPoller:
    """``readers``: the ``UhfReader`` of each configured reader; ``presence``: the table; ``errors``: exceptions
    caught from the readers' polls."""

    def __init__(
        self,
        cfg: "RfidConfig",
        board: "Any",
        outbox: "Outbox",
        deliver: "Callable[[int, int], None]",
        send: "Callable[[Message], object]",
        now: int,
    ) -> None:
        self._outbox = outbox
        self._deliver = deliver
        self._send = send
        self.presence = Presence(self, cfg.seen_n, cfg.window_ms, cfg.lost_s, cycle_ms=cfg.cycle_ms)
        self.errors = 0
        self.readers: list[UhfReader] = []
        self.notes: list[str] = []
        self._lanes: list[bytearray] = []  # per reader: its lanes flagged
        for i in range(len(cfg.readers)):
            rc = cfg.readers[i]
            switch = None
            try:
                uart = board.uart(rc.uart, rc.tx, rc.rx, rc.baud)
                if rc.switch:
                    switch = AntennaSwitch([board.pin_out(p) for p in rc.switch])
            except Exception as err:  # ValueError / OSError from machine: a wiring the port cannot do
                self.notes.append("rfid reader " + str(i) + ": cannot open UART " + str(rc.uart) + ": " + repr(err))
                uart = _NoUart()
                switch = None
            sink = _Antennas(self, bytes(rc.antennas))
            reader = UhfReader(uart, sink, rc.region, rc.power_dbm * 100, len(rc.antennas), switch, cfg.dwell_ms, now)
            self.readers.append(reader)
            flags = bytearray(MAX_LANES)
            for lane in rc.antennas:
                flags[lane] = 1
            self._lanes.append(flags)
        n = len(self.readers)
        self._fails = bytearray(n)  # per reader: polls that raised, each within RECOVER_MS of the one before
        self._failed_at = [now] * n  # per reader: when its poll last raised
        self._states = bytearray([self.state(i) for i in range(n)])
        self._held = bytearray(MAX_LANES)
        self._tick_at = ticks_add(now, TICK_MS)

    def poll(self, now: int) -> None:
        """Poll every reader (their tags reach the presence table), then the table's timers and the readers'
        states."""
        self.presence.now = now
        readers = self.readers
        fails = self._fails
        n = len(readers)
        i = 0
        while i < n:
            r = readers[i]
            try:
                r.poll(now)
                if fails[i] and ticks_diff(now, self._failed_at[i]) >= RECOVER_MS:
                    fails[i] = 0
            except Exception as err:  # never the node's end: counted, printed once, polled again next time
                self._error("rfid reader " + str(i), err)
                if fails[i] and ticks_diff(now, self._failed_at[i]) >= RECOVER_MS:
                    fails[i] = 0  # the last one was long ago: a new run
                if fails[i] < FAIL_POLLS:
                    fails[i] += 1
                self._failed_at[i] = now
            state = self.state(i)
            if state != self._states[i]:
                self._states[i] = state
                self._send(self.health(i))
            i += 1
        if ticks_diff(now, self._tick_at) >= 0:
            self._tick_at = ticks_add(now, TICK_MS)
            try:
                self._timers(now)
            except Exception as err:
                self._error("rfid presence", err)

    def _error(self, where: str, err: Exception) -> None:
        self.errors += 1
        if self.errors == 1:
            print("smartshelf: " + where + ": " + repr(err))

    def state(self, i: int) -> int:
        """Reader ``i``'s state as reported: its own, or ``READER_SILENT`` while its polls keep raising."""
        if self._fails[i] >= FAIL_POLLS:
            return READER_SILENT
        return self.readers[i].state

    def reading(self, i: int) -> bool:
        """Reader ``i`` reads: a tag it does not read is not in front of its antennas (else its lanes are held)."""
        return self._fails[i] < FAIL_POLLS and self.readers[i].reading

    def _timers(self, now: int) -> None:
        held = self._held
        any_held = False
        k = 0
        while k < MAX_LANES:
            held[k] = 0
            k += 1
        i = 0
        while i < len(self.readers):
            if not self.reading(i):
                flags = self._lanes[i]
                k = 0
                while k < MAX_LANES:
                    if flags[k]:
                        held[k] = 1
                        any_held = True
                    k += 1
            i += 1
        if any_held:
            self.presence.hold(held, now)
        self.presence.tick(now)

    # -- the presence table's sink ----------------------------------------------------------------
    def tag_changed(self, kind: int, lane: int, rssi: int, epc: bytearray, off: int, n: int, t: int) -> None:
        """A tag appeared on or left ``lane`` at ``t`` (its arrival or its last read, earlier than now): kept in the
        outbox (journalled) with that time, and sent now (its ``age_ms`` then says how long ago ``t`` was). When the
        outbox cannot keep it, the exception goes back to the table, which then stays as it was and tries again; once
        kept, a failure to send it now is only counted (the outbox re-sends what is not acknowledged)."""
        seq = self._outbox.add_tag(kind, lane, rssi, epc, off, n, t)
        try:
            self._deliver(seq, self.presence.now)
        except Exception as err:
            self._error("rfid delivery", err)

    # -- health -----------------------------------------------------------------------------------
    def health(self, i: int) -> ReaderHealth:
        r = self.readers[i]
        return ReaderHealth(
            i,
            self.state(i),
            r.reads & 0xFFFFFFFF,
            r.bad_frames & 0xFFFFFFFF,
            min(r.resets, _U16),
            min(r.silences, _U16),
            min(self.presence.count(self._lanes[i]), _U16),
        )

    def healths(self) -> "list[ReaderHealth]":
        return [self.health(i) for i in range(len(self.readers))]
