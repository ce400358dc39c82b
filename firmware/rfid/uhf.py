"""UHF RFID reader modules on a UART (R200 / YRM100 / JRD-4035 class): frames, commands and the reader's life.

**Frames** (DESIGN.md section 6): ``BB type cmd PL_hi PL_lo params checksum 7E``; type 00 is a command, 01 a
response, 02 a notice; the checksum is the low byte of the sum from type to the last parameter. Commands used::

    22  single inventory   BB 00 22 00 00 22 7E -> a notice per tag, or the no-tag error BB 01 FF 00 01 15 16 7E
    27  multi inventory    BB 00 27 00 03 22 CNT_hi CNT_lo CS 7E -> notices until CNT rounds are done or stopped
    28  stop               BB 00 28 00 00 28 7E -> BB 01 28 00 01 00 2A 7E
    B6  set TX power       2 bytes, 0.01 dBm -> BB 01 B6 00 01 00 B8 7E;  B7 get power -> BB 01 B7 00 02 hi lo CS 7E
    07  set region         1 byte (REGION_*) -> BB 01 07 00 01 00 09 7E;  08 get region -> BB 01 08 00 01 r CS 7E
    03  get info           1 byte (0 hardware, 1 software, 2 manufacturer) -> the text
    FF  error (response)   BB 01 FF 00 01 code CS 7E: 15 no tag, 17 command error

A tag notice is ``BB 02 22 00 11 RSSI PC(2) EPC CRC(2) CS 7E``: RSSI a signed byte (dBm), the PC word's top 5 bits
the EPC length in 16-bit words, PL = 5 + the EPC length, and CRC the tag's CRC-16/GENIBUS over PC + EPC.

**Receiving.** ``poll(now)`` never blocks: it reads what ``uart.any()`` says is there (``readinto(buf, n)``, at most
``RX_BUDGET`` bytes per poll) into a preallocated buffer and parses whole frames in place: a frame counts only with
its length's worth of bytes, its checksum and its end byte; a notice only with its CRC. A bad frame, or bytes
between frames, is counted (``bad_frames``, once per run of garbage) and skipped: parsing resumes at the next 0xBB
after the bad frame's first byte, inside its bytes too. A frame left incomplete for ``FRAME_GAP_MS`` is dropped the
same way (a cut frame never holds up the next one). Frames may straddle polls. A notice hands its tag to the sink
as ``sink.tag(antenna, rssi, buf, off, n)`` (the EPC is ``buf[off:off + n]``, valid during the call only); the
steady state (notices, no command answered) allocates nothing on the heap.

**The reader's life**, a non-blocking state machine advanced by ``poll(now)``:

* ``READER_STARTING``: configure: stop (a multi inventory left running by an earlier boot), set region, set
  power, then read both back. Then ``READER_OK``.
* ``READER_OK``: the inventory cycle. For each antenna in turn: select it on the RF switch (``switch.select(i)``),
  start a multi inventory (``MULTI_ROUNDS`` rounds: until stopped), let it run ``dwell_ms``, stop it and wait for the
  stop's answer (the notices before it belong to that antenna), next antenna. Between two dwells, every
  ``VERIFY_MS`` and after a bad frame (at most once per ``VERIFY_MIN_MS``), verify: read power and region back. A
  value that differs means the module has reset (power cycled, brown-out): ``resets`` counts it and the reader is
  configured again.
* A command unanswered within ``CMD_TIMEOUT_MS`` counts in ``timeouts`` and is followed at once by a recheck: stop
  (a module still inventorying ignores every other command), then the verify (the module may have rebooted
  meanwhile). A reader that stays unanswered for ``SILENT_MS`` is ``READER_SILENT`` (``silences`` counts each spell;
  a reboot, under a second, is not one): it is probed (the recheck) after ``BACKOFF_MIN_MS``, the wait doubling up
  to ``BACKOFF_MAX_MS``. The first frame it sends again (any frame that checks: a late answer, a notice) makes
  it ``READER_STARTING`` and ends the pause: the recheck starts at once, and it is ``READER_STARTING`` until the
  verify (or the configuration its failure calls for) is done. A command error (17)
  retries the configuration or verify after ``RETRY_MS``. No exception escapes ``poll`` from the module's side.

Timing at 115200 baud: a 96-bit tag's notice is 24 bytes (2.1 ms on the wire); the module's inventory round takes
about 20-30 ms (R200 class), so an antenna dwell of ``dwell_ms`` (200 ms by default) reads each tag in front of it
several times; the stop's answer comes after the round in progress (up to ~30 ms) and is read at the next poll (the
node polls every 10 ms): about ``dwell_ms`` + 40 ms per antenna. Parsing a notice is a few hundred bytecodes (a
checksum and a table CRC over its bytes); the sink's lookup comes on top.

Counters (small ints, wrapping at 2**30): ``reads`` (notices accepted), ``bad_frames``, ``crc_errors`` (notices
whose CRC or EPC length is wrong: also in ``bad_frames``), ``skipped`` (bytes skipped), ``resets``, ``silences``,
``timeouts``, ``cmd_errors``, ``dwells`` (antenna dwells completed), ``verifies``, ``stray`` (notices before the first
dwell, when no antenna is known to be selected: dropped).
"""

from array import array

from firmware.ticks import COUNTER_MASK, ticks_add, ticks_diff
from shared_protocol.compat import const
from shared_protocol.messages import READER_OK, READER_SILENT, READER_STARTING

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Sink(Protocol):
        def tag(self, antenna: int, rssi: int, buf: bytearray, off: int, n: int) -> None: ...

    class Switch(Protocol):
        def select(self, i: int) -> None: ...


HEAD = const(0xBB)
END = const(0x7E)
TYPE_COMMAND = const(0x00)
TYPE_RESPONSE = const(0x01)
TYPE_NOTICE = const(0x02)

CMD_INFO = const(0x03)
CMD_SET_REGION = const(0x07)
CMD_GET_REGION = const(0x08)
CMD_INVENTORY = const(0x22)
CMD_MULTI = const(0x27)
CMD_STOP = const(0x28)
CMD_SET_POWER = const(0xB6)
CMD_GET_POWER = const(0xB7)
CMD_ERROR = const(0xFF)
ERR_NO_TAG = const(0x15)
ERR_COMMAND = const(0x17)

# Region codes of the set / get region commands, by the config's names.
REGION_CN900 = const(0x01)
REGION_US = const(0x02)
REGION_EU = const(0x03)
REGION_CN800 = const(0x04)
REGION_KR = const(0x06)

MAX_PARAMS = const(64)  # the longest PL accepted (a notice of a 32-byte EPC has 37; info texts are shorter)
MAX_EPC = const(32)  # the protocol's EPC limit (shared_protocol: 1..32 bytes)
MULTI_ROUNDS = const(0xFFFF)  # the multi inventory's round count: in effect, until stopped
DEFAULT_DWELL_MS = const(200)
CMD_TIMEOUT_MS = const(300)
SILENT_MS = const(2000)  # unanswered for this long: the reader is silent (a module reboots in under a second)
BACKOFF_MIN_MS = const(1000)
BACKOFF_MAX_MS = const(16000)
RETRY_MS = const(1000)
VERIFY_MS = const(5000)
VERIFY_MIN_MS = const(1000)
FRAME_GAP_MS = const(100)  # an incomplete frame older than this is dropped (a 71-byte frame takes 6 ms at 115200)
RX_CHUNK = const(64)
RX_BUDGET = const(192)  # bytes parsed per poll at most (115200 baud brings 115 per 10 ms): a few ms of work
_ACC_LEN = const(RX_CHUNK + 7 + MAX_PARAMS)

# Phases of the state machine.
_IDLE = const(0)  # nothing outstanding: the next step starts at the next poll
_WAIT = const(1)  # a command is outstanding (``_expect``) until ``_deadline``
_DWELL = const(2)  # a multi inventory runs on ``antenna`` until ``_deadline``
_PAUSE = const(3)  # waiting until ``_deadline`` (a silent reader's backoff, a retry)

_CONFIGURE = bytes((CMD_STOP, CMD_SET_REGION, CMD_SET_POWER, CMD_GET_POWER, CMD_GET_REGION))
_VERIFY = bytes((CMD_GET_POWER, CMD_GET_REGION))  # between two dwells: the module is idle
_RECHECK = bytes((CMD_STOP, CMD_GET_POWER, CMD_GET_REGION))  # after a timeout: it may still be inventorying
_NO_PLAN = b""


def checksum(buf: "bytes | bytearray", off: int, n: int) -> int:
    """Low byte of the sum of ``buf[off:off + n]``."""
    s = 0
    end = off + n
    while off < end:
        s += buf[off]
        off += 1
    return s & 0xFF


def frame(ftype: int, cmd: int, params: "bytes | bytearray" = b"") -> bytes:
    """A whole frame: ``BB type cmd PL_hi PL_lo params checksum 7E``."""
    n = len(params)
    f = bytearray(7 + n)
    f[0] = HEAD
    f[1] = ftype
    f[2] = cmd
    f[3] = n >> 8
    f[4] = n & 0xFF
    for i in range(n):
        f[5 + i] = params[i]
    f[5 + n] = checksum(f, 1, 4 + n)
    f[6 + n] = END
    return bytes(f)


def command(cmd: int, params: "bytes | bytearray" = b"") -> bytes:
    """A command frame (type 00)."""
    return frame(TYPE_COMMAND, cmd, params)


def _crc_table() -> "array[int]":
    t = array("H", [0] * 256)
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
        t[i] = c
    return t


_CRC = _crc_table()


def crc16_genibus(buf: "bytes | bytearray", off: int, n: int) -> int:
    """CRC-16/GENIBUS (EPC Gen2's CRC-16: polynomial 0x1021, initial 0xFFFF, not reflected, inverted) of
    ``buf[off:off + n]``; table-driven, allocation-free."""
    crc = 0xFFFF
    t = _CRC
    end = off + n
    while off < end:
        crc = ((crc << 8) & 0xFFFF) ^ t[((crc >> 8) ^ buf[off]) & 0xFF]
        off += 1
    return crc ^ 0xFFFF


SINGLE_INVENTORY = command(CMD_INVENTORY)
STOP = command(CMD_STOP)
GET_POWER = command(CMD_GET_POWER)
GET_REGION = command(CMD_GET_REGION)


def multi_inventory(rounds: int) -> bytes:
    return command(CMD_MULTI, bytes((0x22, rounds >> 8, rounds & 0xFF)))


def set_power(cdbm: int) -> bytes:
    """Set TX power, in 0.01 dBm."""
    return command(CMD_SET_POWER, bytes((cdbm >> 8, cdbm & 0xFF)))


def set_region(code: int) -> bytes:
    return command(CMD_SET_REGION, bytes((code,)))


def get_info(what: int) -> bytes:
    return command(CMD_INFO, bytes((what,)))


class UhfReader:
    """One module on ``uart`` (``write``, ``any``, ``readinto(buf, n)``; non-blocking), set to ``region`` (a
    ``REGION_*`` code) and ``power_cdbm`` (0.01 dBm), reading through ``antennas`` antennas selected by ``switch``
    (an object with ``select(i)``; None for a single antenna), ``dwell_ms`` each. Tags go to ``sink.tag``.
    ``state`` is ``READER_STARTING`` / ``READER_OK`` / ``READER_SILENT``; ``antenna`` the antenna selected now (-1
    before the first dwell)."""

    def __init__(
        self,
        uart: "Any",
        sink: "Sink",
        region: int,
        power_cdbm: int,
        antennas: int = 1,
        switch: "Switch | None" = None,
        dwell_ms: int = DEFAULT_DWELL_MS,
        now: int = 0,
    ) -> None:
        if antennas < 1:
            raise ValueError("antennas must be >= 1")
        self._uart = uart
        self._sink = sink
        self._region = region
        self._power = power_cdbm
        self._antennas = antennas
        self._switch = switch
        self._dwell_ms = dwell_ms
        # the commands, built once
        self._c_stop = STOP
        self._c_get_power = GET_POWER
        self._c_get_region = GET_REGION
        self._c_set_power = set_power(power_cdbm)
        self._c_set_region = set_region(region)
        self._c_multi = multi_inventory(MULTI_ROUNDS)
        # receiving
        self._rx = bytearray(RX_CHUNK)
        self._acc = bytearray(_ACC_LEN)
        self._alen = 0
        self._head_at = now  # when the frame at the start of ``_acc`` began to wait for its rest
        self._resync = False  # skipping bytes after a bad frame (counted once)
        # the state machine
        self.state = READER_STARTING
        self.antenna = -1  # none selected yet: the first dwell selects antenna 0
        self._phase = _IDLE
        self._expect = 0
        self._deadline = now
        self._plan = _CONFIGURE
        self._pi = 0
        self._configured = False  # configured (and verified) since the last time its settings were lost
        self._misses = 0  # commands unanswered in a row
        self._quiet_since = now  # when the first of them was sent
        self._backoff = BACKOFF_MIN_MS
        self._verify_at = now
        self._verified_at = now
        self._suspect = False  # a bad frame since the last verify
        # counters
        self.reads = 0
        self.bad_frames = 0
        self.crc_errors = 0
        self.skipped = 0
        self.resets = 0
        self.silences = 0
        self.timeouts = 0
        self.cmd_errors = 0
        self.dwells = 0
        self.verifies = 0
        self.stray = 0

    @property
    def reading(self) -> bool:
        """Configured and answering: a tag it does not read is not in front of its antennas. (False while it is
        starting or silent, and from its first unanswered command on: its tags should be held, not lost.)"""
        return self.state == READER_OK and not self._misses

    # -- the task ---------------------------------------------------------------------------------
    def poll(self, now: int) -> None:
        """Read and parse what arrived, then advance the state machine. Never blocks."""
        if self._uart.any():
            self._read(now)
        if self._alen and ticks_diff(now, self._head_at) > FRAME_GAP_MS:
            self._drop_head(now)
        ph = self._phase
        if ph == _IDLE:
            self._next(now)
        elif ticks_diff(now, self._deadline) >= 0:
            if ph == _WAIT:
                self._timeout(now)
            elif ph == _DWELL:
                self._send(CMD_STOP, now)
            else:
                self._phase = _IDLE
                self._next(now)

    # -- receiving ----------------------------------------------------------------------------------
    def _read(self, now: int) -> None:
        uart = self._uart
        rx = self._rx
        acc = self._acc
        budget = RX_BUDGET
        fresh = self._alen == 0
        while budget > 0:
            n = uart.any()
            if not n:
                break
            room = _ACC_LEN - self._alen
            if n > room:
                n = room
            if n > RX_CHUNK:
                n = RX_CHUNK
            a = self._alen
            if a:  # behind an incomplete frame: read aside, then append
                got = uart.readinto(rx, n)
                if not got:
                    break
                k = 0
                while k < got:
                    acc[a] = rx[k]
                    a += 1
                    k += 1
            else:  # nothing waiting: straight into the frame buffer
                got = uart.readinto(acc, n)
                if not got:
                    break
                a = got
            self._alen = a
            budget -= got
            if self._parse(now) or fresh:
                self._head_at = now
            fresh = self._alen == 0

    def _parse(self, now: int) -> bool:
        """Take every whole frame from the buffer; keep an incomplete one. True when the buffer's head moved."""
        acc = self._acc
        n = self._alen
        i = 0
        while i < n:
            if acc[i] != HEAD:
                self.skipped = (self.skipped + 1) & COUNTER_MASK
                if not self._resync:
                    self._bad()
                i += 1
                continue
            if n - i < 5:
                break
            t = acc[i + 1]
            pl = (acc[i + 3] << 8) | acc[i + 4]
            if (t != TYPE_RESPONSE and t != TYPE_NOTICE) or pl > MAX_PARAMS:
                self.skipped = (self.skipped + 1) & COUNTER_MASK  # no frame starts here: garbage
                if not self._resync:
                    self._bad()
                i += 1
                continue
            end = i + 5 + pl
            if end + 2 > n:
                break  # the rest is on its way
            s = 0
            k = i + 1
            while k < end:
                s += acc[k]
                k += 1
            if (s & 0xFF) != acc[end] or acc[end + 1] != END:
                self._bad()
                i += 1
                continue
            self._resync = False
            self._frame(i + 5, t, acc[i + 2], pl, now)
            i = end + 2
        if not i:
            return False
        k = 0
        while i < n:
            acc[k] = acc[i]
            k += 1
            i += 1
        self._alen = k
        return True

    def _drop_head(self, now: int) -> None:
        """The frame at the head never completed: drop its first byte and parse what follows it again."""
        self._bad()
        acc = self._acc
        n = self._alen
        k = 0
        i = 1
        while i < n:
            acc[k] = acc[i]
            k += 1
            i += 1
        self._alen = k
        self._parse(now)
        self._head_at = now

    def _bad(self) -> None:
        self.bad_frames = (self.bad_frames + 1) & COUNTER_MASK
        self._resync = True
        self._suspect = True

    def _frame(self, p: int, t: int, cmd: int, pl: int, now: int) -> None:
        """A frame that checks, its parameters at ``_acc[p:p + pl]``."""
        acc = self._acc
        self._misses = 0
        if self.state == READER_SILENT:
            self.state = READER_STARTING  # it talks again: verify (or configure) it before trusting it
            if self._phase == _PAUSE:
                self._phase = _IDLE  # at once (the plan: stop, then verify), not after the back-off's pause
        if t == TYPE_NOTICE:
            if cmd != CMD_INVENTORY and cmd != CMD_MULTI:
                return
            self._notice(p, pl)
            return
        if self._phase != _WAIT:
            return  # a late answer, or one nobody asked for
        if cmd == CMD_ERROR:
            if pl and acc[p] == ERR_NO_TAG:
                return  # an inventory round's "no tag", not an answer
            self.cmd_errors = (self.cmd_errors + 1) & COUNTER_MASK
            if self._expect == CMD_STOP:  # the module was not inventorying: stopped all the same
                self._phase = _IDLE
                self._next(now)
            else:
                self._retry(now)
            return
        if cmd != self._expect:
            return
        self._phase = _IDLE
        if cmd == CMD_GET_POWER:
            if pl != 2 or ((acc[p] << 8) | acc[p + 1]) != self._power:
                self._settings_lost(now)
                return
        elif cmd == CMD_GET_REGION:
            if pl != 1 or acc[p] != self._region:
                self._settings_lost(now)
                return
        elif cmd in (CMD_SET_POWER, CMD_SET_REGION):
            if pl != 1 or acc[p]:
                self.cmd_errors = (self.cmd_errors + 1) & COUNTER_MASK
                self._retry(now)
                return
        elif cmd == CMD_STOP and not self._plan:  # the stop that ends a dwell
            self.dwells = (self.dwells + 1) & COUNTER_MASK
        self._next(now)

    def _notice(self, p: int, pl: int) -> None:
        acc = self._acc
        if self.antenna < 0:
            # Before the first dwell (an inventory an earlier boot left running): no antenna is known to be selected.
            self.stray = (self.stray + 1) & COUNTER_MASK
            return
        if pl < 7:
            self.crc_errors = (self.crc_errors + 1) & COUNTER_MASK
            self.bad_frames = (self.bad_frames + 1) & COUNTER_MASK
            return
        n = (acc[p + 1] >> 3) << 1  # the PC word's top 5 bits: the EPC's length in 16-bit words
        if (
            n == 0
            or n > MAX_EPC
            or pl != 5 + n
            or crc16_genibus(acc, p + 1, n + 2) != ((acc[p + 3 + n] << 8) | acc[p + 4 + n])
        ):
            self.crc_errors = (self.crc_errors + 1) & COUNTER_MASK
            self.bad_frames = (self.bad_frames + 1) & COUNTER_MASK
            return
        rssi = acc[p]
        if rssi > 127:
            rssi -= 256
        self.reads = (self.reads + 1) & COUNTER_MASK
        self._sink.tag(self.antenna, rssi, acc, p + 3, n)

    # -- the state machine --------------------------------------------------------------------------
    def _send(self, cmd: int, now: int) -> None:
        if cmd == CMD_STOP:
            f = self._c_stop
        elif cmd == CMD_GET_POWER:
            f = self._c_get_power
        elif cmd == CMD_GET_REGION:
            f = self._c_get_region
        elif cmd == CMD_SET_POWER:
            f = self._c_set_power
        else:
            f = self._c_set_region
        self._uart.write(f)
        self._phase = _WAIT
        self._expect = cmd
        self._deadline = ticks_add(now, CMD_TIMEOUT_MS)

    def _next(self, now: int) -> None:
        """Nothing is outstanding: the plan's next command, or the next antenna's dwell."""
        plan = self._plan
        if self._pi < len(plan):
            cmd = plan[self._pi]
            self._pi += 1
            if cmd == CMD_GET_POWER and plan is not _CONFIGURE:
                self.verifies = (self.verifies + 1) & COUNTER_MASK
            self._send(cmd, now)
            return
        if plan:  # a configuration or a verify has just succeeded
            self._plan = _NO_PLAN
            self._pi = 0
            self._configured = True
            self.state = READER_OK
            self._backoff = BACKOFF_MIN_MS
            self._verified_at = now
            self._verify_at = ticks_add(now, VERIFY_MS)
            self._suspect = False
        if ticks_diff(now, self._verify_at) >= 0 or (
            self._suspect and ticks_diff(now, self._verified_at) >= VERIFY_MIN_MS
        ):
            self._plan = _VERIFY
            self._pi = 1
            self.verifies = (self.verifies + 1) & COUNTER_MASK
            self._send(CMD_GET_POWER, now)
            return
        a = self.antenna + 1
        if a >= self._antennas:
            a = 0
        self.antenna = a
        sw = self._switch
        if sw is not None:
            sw.select(a)
        self._uart.write(self._c_multi)
        self._phase = _DWELL
        self._deadline = ticks_add(now, self._dwell_ms)

    def _restart_plan(self) -> None:
        """After a timeout or a refusal: stop (whatever it is doing), then verify, or configure if never done."""
        self._plan = _RECHECK if self._configured else _CONFIGURE
        self._pi = 0

    def _settings_lost(self, now: int) -> None:
        """Power or region read back wrong: the module has reset since it was configured (or never took them)."""
        if self._configured:
            self.resets = (self.resets + 1) & COUNTER_MASK
        self._configured = False
        self.state = READER_STARTING
        self._plan = _CONFIGURE
        self._pi = 0
        self._next(now)

    def _retry(self, now: int) -> None:
        """The module refused a command: the configuration (or verify) again after RETRY_MS."""
        self._restart_plan()
        self._phase = _PAUSE
        self._deadline = ticks_add(now, RETRY_MS)

    def _timeout(self, now: int) -> None:
        self.timeouts = (self.timeouts + 1) & COUNTER_MASK
        if not self._misses:
            self._quiet_since = ticks_add(self._deadline, -CMD_TIMEOUT_MS)  # when the unanswered command went out
        self._misses += 1
        self._restart_plan()
        if self.state == READER_SILENT or ticks_diff(now, self._quiet_since) >= SILENT_MS:
            if self.state != READER_SILENT:
                self.state = READER_SILENT
                self.silences = (self.silences + 1) & COUNTER_MASK
                self._backoff = BACKOFF_MIN_MS
            self._phase = _PAUSE
            self._deadline = ticks_add(now, self._backoff)
            self._backoff = self._backoff * 2 if self._backoff < BACKOFF_MAX_MS // 2 else BACKOFF_MAX_MS
            return
        self._phase = _IDLE
        self._next(now)  # at once: has it rebooted? (stop, get power and compare)
