"""Byte-level emulator of a UHF RFID reader module on a UART (R200 / YRM100 / JRD-4035 class), on virtual time.

``UhfModule(clock, field, antennas=[0, 1, 2, 3], switch=[pin0, pin1], seed=1, faults={...})`` is the module's
UART as the node's firmware sees it: an object with ``machine.UART``'s non-blocking subset (``write(buf)``,
``any()``, ``read(n=-1)``, ``readinto(buf, nbytes=None)``; ``None`` when nothing is there, never blocking), plus
``flush()``, ``txdone()``, ``init()`` and ``deinit()``. ``AbsentUart`` is a UART with no module behind it (never
answers); ``OutPin`` is a GPIO output (``machine.Pin``'s ``value()`` / ``value(v)`` / ``on()`` / ``off()``) such
as the RF switch lines. Time is the shared ``VirtualClock`` (``hx711_chip.py``) in microseconds: nothing depends
on the host's speed, and the same seed gives the same bytes under CPython and MicroPython (``prng.py``).

**Wire.** A byte takes ``ceil(10e6 / baud)`` us (start, 8 data, stop bits) in each direction, back to back
within a write or a frame. What the host writes reaches the module byte by byte at that rate; what the module
sends becomes readable at the time its last bit arrives, into a receive buffer of ``rxbuf`` bytes (256, the
ESP32 port's default) that loses what overflows it (``overrun``), as a real UART does when nobody reads. A host
UART opened at another baud rate (``set_host_baud``) garbles every byte both ways.

**Protocol** (section 6 of DESIGN.md). Frames are ``BB type cmd PL_hi PL_lo params... checksum 7E``; type 00 is
a command, 01 a response, 02 a notice; the checksum is the low byte of the sum of type, cmd, PL and params.

=====================================  ==================================================================
``BB 00 03 00 01 p CS 7E``             get info: p 00 hardware, 01 software, 02 manufacturer ->
                                       ``BB 01 03 PL p <ascii> CS 7E``
``BB 00 22 00 00 22 7E``               one inventory round on the selected antenna: a notice per tag read
                                       ``BB 02 22 00 11 RSSI PC(2) EPC(12) CRC(2) CS 7E``, or, when none,
                                       ``BB 01 FF 00 01 15 16 7E``
``BB 00 27 00 03 22 CNT(2) CS 7E``     CNT rounds back to back (1..65535; 0 is a parameter error); notices
                                       as above, nothing for an empty round, no other reply
``BB 00 28 00 00 28 7E``               stop -> ``BB 01 28 00 01 00 2A 7E`` (also when idle)
``BB 00 B6 00 02 hi lo CS 7E``         set TX power (0.01 dBm, 10.00..30.00 dBm) -> ``BB 01 B6 00 01 00 B8 7E``
``BB 00 B7 00 00 B7 7E``               get TX power -> ``BB 01 B7 00 02 hi lo CS 7E``
``BB 00 07 00 01 r CS 7E``             set region (01 China 900, 04 China 800, 02 US, 03 Europe, 06 Korea)
                                       -> ``BB 01 07 00 01 00 09 7E``
``BB 00 08 00 00 08 7E``               get region -> ``BB 01 08 00 01 r CS 7E``
=====================================  ==================================================================

The PC word gives the EPC length in 16-bit words in its top 5 bits (0x3000 for 96 bits), the CRC is
CRC-16/GENIBUS of PC + EPC as the tag backscatters it, RSSI a signed byte in dBm. A bad checksum, a bad end
byte, a type other than 00, a wrong parameter length or value and an unknown command are answered with
``BB 01 FF 00 01 17 18 7E``; the parser then resynchronises on the next 0xBB (inside the bad frame's bytes
too). Bytes between frames are skipped silently; a frame left incomplete for ``FRAME_GAP_US`` is dropped
silently (``timeouts``). Power-on defaults: 26 dBm, region 01; the module says nothing until asked.

Timing: a get/stop reply comes ~1.2 ms after the command's last byte, a set reply ~6 ms; an inventory round
starts 1 ms after the command and lasts ``8 ms + slots * 0.3 ms + reads * 1.5 ms + 8 ms`` (Q-algorithm: slots
the power of two >= 1.5 x the tags in the field, at least 4), each notice sent when its tag's slot ends, the
no-tag reply at the end of the round. Commands that arrive while the module is busy with a reply or a single
round wait their turn (up to 8; more are dropped, ``busy_dropped``). **During a multi inventory the module
accepts only stop**: it finishes the current round (its notices still come), then answers stop; any other
frame, valid or not, is dropped without a reply (``busy_dropped``), as R200-class modules do.

**Antennas.** ``antennas[i]`` is the lane covered by the antenna the RF switch selects with value ``i`` (None:
no antenna on that port, nothing is read). The value is read at the start of each round from ``switch`` (pins
with ``value()``, first pin = bit 0) or ``select()`` (a callable); without either, antenna 0. A round is
evaluated lazily, at the first UART access (or switch pin change) at or after its start, so ``select`` must not
depend on anything but the switch state.

**Field** (``TagField``): tags as JSON-able data, ``{"epc": "<hex>", "orient": 0..1, "spans": [[lane, t_on_s,
t_off_s or null], ...]}`` (lane null: on the next shelf; times in seconds of ``clock.now``; an optional ``"pc"``
replaces the PC word, e.g. 0x3400 for a tag with user memory). Per round the read
probability of each tag on the antenna's lane or a neighbouring one follows its link margin
``power - 10 dBm - distance loss - orientation loss`` (distance 0 dB on the lane, ``neighbour_db`` next to it,
``stray_db`` from the next shelf; orientation loss 20 dB x (1 - orient)) through ``MARGIN_PPM``; tags two
lanes away are never read. RSSI is ``power - 66 dBm - losses`` with 2 dB of noise. Faults (``faults`` dict,
all optional, seeded):

* ``miss_ppm``: a read that the physics granted is lost anyway (``missed``); ``dup_ppm``: a notice sent twice
  (``duplicates``); ``collision_ppm``: per other tag in the field, a read lost to a collision (``collisions``,
  at most 90 %);
* ``corrupt_ppm``: per frame sent, its checksum byte altered (``corrupted``); ``garbage_ppm``: per byte sent,
  a burst of 1..4 random bytes on the line before the frame (``garbage`` bytes);
* ``reboots``: times (s) at which the module resets: silent for 0.5..1 s (bytes sent to it meanwhile are
  lost, ``rx_lost``), a frame on the line is cut, power, region and a multi inventory are lost
  (``reboots``); ``vanish``: ``[[t0_s, t1_s or null], ...]`` unplugged spans: nothing answers, then a
  power-on (``vanishes``). ``reboot()``, ``unplug()`` and ``plug()`` do the same at the current time.

Counters (ints): ``commands`` (valid frames), ``bad_frames``, ``timeouts``, ``errors_sent`` (0x17 replies),
``no_tag_sent`` (0x15), ``busy_dropped``, ``rounds``, ``reads`` (distinct tag reads notified), ``notices``
(notice frames, duplicates included), ``duplicates``, ``missed``, ``collisions``, ``corrupted``, ``garbage``,
``reboots``, ``vanishes``, ``rx_bytes``, ``rx_lost``, ``tx_bytes``, ``overrun``; ``tag_reads[i]`` per tag of the
field. ``stats()`` returns them as a dict.

The byte path (delivery into the receive buffer, ``any``, ``readinto``, the parser) allocates nothing per
byte; a notice costs one bytearray (a copy of the tag's prebuilt frame). Times are small ints below 2**30 us
(17.9 min); later, long ints on 32-bit ports: still correct. Portable: CPython and MicroPython.
"""

import binascii

from tools.emulation.prng import XorShift32

TYPE_CHECKING = False
if TYPE_CHECKING:

    def const(x: int) -> int: ...

    from collections.abc import Callable
    from typing import Any

    from tools.emulation.hx711_chip import VirtualClock
else:
    from shared_protocol.compat import const

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

REGIONS = (0x01, 0x02, 0x03, 0x04, 0x06)
DEFAULT_POWER = const(2600)  # 0.01 dBm
DEFAULT_REGION = const(0x01)
POWER_MIN = const(1000)
POWER_MAX = const(3000)
INFO = (b"M100 26dBm V1.0", b"V2.3.5", b"MagicRF")  # hardware, software, manufacturer

MAX_PL = const(255)
FRAME_GAP_US = const(50000)
QUEUE_MAX = const(8)
REPLY_US = const(1200)
SET_US = const(6000)
START_US = const(1000)
SETUP_US = const(8000)
SLOT_US = const(300)
READ_US = const(1500)
TAIL_US = const(8000)
BOOT_MIN_US = const(500000)
BOOT_SPAN_US = const(500000)

# Link margin (0.01 dB) -> read probability per round (ppm), interpolated linearly between the points.
MARGIN_PPM = (
    (-1600, 0),
    (-1200, 1000),
    (-800, 5000),
    (-400, 30000),
    (0, 150000),
    (400, 450000),
    (800, 800000),
    (1200, 950000),
    (1600, 990000),
)
THRESHOLD_CDB = const(1000)  # the tag's wake-up threshold against the transmitted power
RSSI_OFFSET_CDB = const(6600)  # same lane, tag facing the antenna: power - 66 dB
RSSI_SIGMA = const(2)
STRAY = const(-1)  # the lane key of tags on the next shelf

_IDLE = const(0)
_BUSY = const(1)
_MULTI = const(2)
_BOOT = const(3)
_OFF = const(4)

_OP_ERROR = const(-1)  # a malformed frame: answered with the 0x17 error frame


def checksum(data: "bytes | bytearray", start: int = 1, end: int = -1) -> int:
    """Low byte of the sum of ``data[start:end]`` (default: type .. last parameter of a frame without its
    checksum and end byte, i.e. pass the frame up to the checksum)."""
    if end < 0:
        end = len(data)
    s = 0
    for i in range(start, end):
        s += data[i]
    return s & 0xFF


def frame(ftype: int, cmd: int, params: "bytes | bytearray" = b"") -> bytes:
    """A complete frame: ``BB type cmd PL_hi PL_lo params checksum 7E``."""
    n = len(params)
    f = bytearray(7 + n)
    f[0] = HEAD
    f[1] = ftype
    f[2] = cmd
    f[3] = n >> 8
    f[4] = n & 0xFF
    f[5 : 5 + n] = params
    f[5 + n] = checksum(f, 1, 5 + n)
    f[6 + n] = END
    return bytes(f)


def command(cmd: int, params: "bytes | bytearray" = b"") -> bytes:
    """A command frame (type 00), as the host sends it."""
    return frame(TYPE_COMMAND, cmd, params)


def crc16_genibus(data: "bytes | bytearray") -> int:
    """CRC-16/GENIBUS (EPC Gen2's CRC-16): polynomial 0x1021, initial 0xFFFF, not reflected, inverted."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc ^ 0xFFFF


def decode(data: "bytes | bytearray") -> "list[tuple[int, int, bytes, bool]]":
    """Split a byte stream into frames the host would see: ``(type, cmd, params, checksum_ok)`` per frame that
    starts with 0xBB, has its length's worth of bytes and ends with 0x7E; everything else is skipped (tests and
    benchmarks use it to read what the module sent)."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        if data[i] != HEAD or i + 7 > n:
            i += 1
            continue
        pl = (data[i + 3] << 8) | data[i + 4]
        j = i + 7 + pl
        if j > n or data[j - 1] != END:
            i += 1
            continue
        ok = checksum(data, i + 1, j - 2) == data[j - 2]
        out.append((data[i + 1], data[i + 2], bytes(data[i + 5 : j - 2]), ok))
        i = j
    return out


def _error(code: int) -> bytes:
    return frame(TYPE_RESPONSE, CMD_ERROR, bytes((code,)))


NO_TAG = _error(ERR_NO_TAG)
COMMAND_ERROR = _error(ERR_COMMAND)
STOP_OK = frame(TYPE_RESPONSE, CMD_STOP, b"\x00")
POWER_OK = frame(TYPE_RESPONSE, CMD_SET_POWER, b"\x00")
REGION_OK = frame(TYPE_RESPONSE, CMD_SET_REGION, b"\x00")


def _us(t_s: "Any") -> int:
    """Seconds (JSON number) to whole microseconds, via milliseconds so that a decimal parsed a hair differently
    by the two runtimes rounds the same way."""
    return int(float(t_s) * 1000.0 + 0.5) * 1000


class OutPin:
    """A GPIO output (``machine.Pin``'s digital API). Functions given to ``watch`` are called just before the
    level changes (an emulated device brings itself up to the current time, then sees the new level)."""

    def __init__(self, value: int = 0) -> None:
        self._v = 1 if value else 0
        self._watchers: list[Callable[[], object]] = []
        self.changes = 0

    def watch(self, fn: "Callable[[], object]") -> None:
        self._watchers.append(fn)

    def value(self, v: object = None) -> "int | None":
        if v is None:
            return self._v
        self._set(1 if v else 0)
        return None

    def __call__(self, v: object = None) -> "int | None":
        return self.value(v)

    def on(self) -> None:
        self._set(1)

    def off(self) -> None:
        self._set(0)

    def init(self, *args: object, **kwargs: object) -> None:
        """Accepted and ignored (the mode of an emulated pin is fixed)."""

    def _set(self, v: int) -> None:
        if v == self._v:
            return
        for fn in self._watchers:
            fn()
        self._v = v
        self.changes += 1


class _Timeline:
    """The spans of one lane (or the next shelf), sorted by start, and the ones active at the last query."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, int, int]] = []  # (t_on_us, t_off_us or -1, tag index)
        self.cursor = 0
        self.active: list[tuple[int, int, int]] = []
        self.t = -1

    def at(self, t: int) -> "list[tuple[int, int, int]]":
        if t < self.t:  # back in time (only a test does that): start over
            self.cursor = 0
            self.active = []
        self.t = t
        starts = self.starts
        n = len(starts)
        c = self.cursor
        act = self.active
        while c < n and starts[c][0] <= t:
            act.append(starts[c])
            c += 1
        self.cursor = c
        k = 0
        for i in range(len(act)):
            s = act[i]
            if s[1] < 0 or s[1] > t:
                act[k] = s
                k += 1
        while len(act) > k:
            act.pop()
        return act


class TagField:
    """Where the tags are over time: ``tags`` as JSON-able data (module docstring). ``active(lane, t_us)`` is
    O(spans active on that lane + spans started since the last query) when time moves forward."""

    def __init__(self, tags: "list[dict[str, Any]]") -> None:
        self.epcs: list[bytes] = []
        self.pcs: list[int] = []  # the PC word each tag backscatters
        self.orient: list[int] = []  # permille
        self._lanes: dict[int, _Timeline] = {}
        for i in range(len(tags)):
            tag = tags[i]
            epc = bytes(binascii.unhexlify(tag["epc"]))
            if not epc or len(epc) % 2 or len(epc) > 62:
                raise ValueError("tag " + str(i) + ": the EPC must be 2..62 bytes, whole 16-bit words")
            o = int(float(tag.get("orient", 1.0)) * 1000.0 + 0.5)
            pc = tag.get("pc")
            self.pcs.append((len(epc) // 2) << 11 if pc is None else int(pc) & 0xFFFF)
            self.epcs.append(epc)
            self.orient.append(0 if o < 0 else 1000 if o > 1000 else o)
            for span in tag.get("spans", []):
                key = STRAY if span[0] is None else int(span[0])
                t_on = _us(span[1])
                t_off = -1 if len(span) < 3 or span[2] is None else _us(span[2])
                if 0 <= t_off <= t_on:
                    continue
                tl = self._lanes.get(key)
                if tl is None:
                    tl = _Timeline()
                    self._lanes[key] = tl
                tl.starts.append((t_on, t_off, i))
        for key in self._lanes:
            self._lanes[key].starts.sort()  # tuples: a total order, the same on both runtimes

    def __len__(self) -> int:
        return len(self.epcs)

    def active(self, lane: int, t_us: int) -> "list[tuple[int, int, int]]":
        """The spans ``(t_on_us, t_off_us or -1, tag)`` on ``lane`` (``STRAY``: the next shelf) at ``t_us``;
        the list is the field's own, valid until the next query of that lane."""
        tl = self._lanes.get(lane)
        if tl is None:
            return []
        return tl.at(t_us)

    def on_lane(self, lane: "int | None", t_s: float) -> "list[str]":
        """The EPCs (hex) on ``lane`` (None: the next shelf) at ``t_s`` seconds, in field order."""
        key = STRAY if lane is None else lane
        tl = self._lanes.get(key)
        if tl is None:
            return []
        t = _us(t_s)
        idx = sorted(s[2] for s in tl.starts if s[0] <= t and (s[1] < 0 or s[1] > t))
        return [binascii.hexlify(self.epcs[i]).decode() for i in idx]


def _interp_ppm(margin: int) -> int:
    pts = MARGIN_PPM
    if margin <= pts[0][0]:
        return 0
    for i in range(1, len(pts)):
        m1, p1 = pts[i]
        if margin <= m1:
            m0, p0 = pts[i - 1]
            return p0 + (p1 - p0) * (margin - m0) // (m1 - m0)
    return pts[-1][1]


class AbsentUart:
    """A UART with nothing behind it: writes go nowhere, nothing ever arrives."""

    def __init__(self) -> None:
        self.written = 0

    def init(self, *args: object, **kwargs: object) -> None:
        """Accepted and ignored."""

    def deinit(self) -> None:
        """Accepted and ignored."""

    def write(self, buf: "bytes | bytearray | memoryview") -> int:
        self.written += len(buf)
        return len(buf)

    def any(self) -> int:
        return 0

    def read(self, n: int = -1) -> "bytes | None":
        return None

    def readinto(self, buf: "bytearray | memoryview", nbytes: "int | None" = None) -> "int | None":
        return None

    def flush(self) -> None:
        """Nothing to wait for."""

    def txdone(self) -> bool:
        return True


class UhfModule:
    """One reader module on one UART (module docstring). ``field``: a ``TagField`` or its JSON list; ``before``:
    called at every UART access before anything else (the emulated board catches its clock up with the wall
    clock there); ``neighbour_db`` / ``stray_db``: the distance losses of a neighbouring lane and the next
    shelf."""

    def __init__(
        self,
        clock: "VirtualClock",
        field: "TagField | list[dict[str, Any]] | None" = None,
        antennas: "list[int | None] | None" = None,
        switch: "list[Any] | None" = None,
        select: "Callable[[], int] | None" = None,
        seed: int = 1,
        baud: int = 115200,
        rxbuf: int = 256,
        faults: "dict[str, Any] | None" = None,
        before: "Callable[[], object] | None" = None,
        neighbour_db: int = 16,
        stray_db: int = 22,
    ) -> None:
        if field is None:
            field = TagField([])
        elif not isinstance(field, TagField):
            field = TagField(field)
        self.clock = clock
        self.field = field
        self.antennas: list[int | None] = [0] if antennas is None else list(antennas)
        self.switch = list(switch) if switch else []
        self.select = select
        self.baud = baud
        self.byte_us = (10000000 + baud - 1) // baud
        self.before = before
        self.neighbour_cdb = neighbour_db * 100
        self.stray_cdb = stray_db * 100
        f = faults or {}
        self.miss_ppm = int(f.get("miss_ppm", 0))
        self.dup_ppm = int(f.get("dup_ppm", 0))
        self.collision_ppm = int(f.get("collision_ppm", 0))
        self.corrupt_ppm = int(f.get("corrupt_ppm", 0))
        self.garbage_ppm = int(f.get("garbage_ppm", 0))
        t0 = clock.now
        faults_at: list[tuple[int, int]] = []  # (time, kind): 0 reboot, 1 unplug, 2 plug
        for t in f.get("reboots", []):
            faults_at.append((_us(t), 0))
        for span in f.get("vanish", []):
            faults_at.append((_us(span[0]), 1))
            if len(span) > 1 and span[1] is not None:
                faults_at.append((_us(span[1]), 2))
        faults_at.sort()
        unplugged = False
        for x in faults_at:  # what was due before power-on is history, but an unplugged module stays unplugged
            if x[0] < t0 and x[1]:
                unplugged = x[1] == 1
        self._faults = [x for x in faults_at if x[0] >= t0]
        self._fi = 0
        self._rng = XorShift32(seed)
        self._garble = False
        # counters
        self.commands = 0
        self.bad_frames = 0
        self.timeouts = 0
        self.errors_sent = 0
        self.no_tag_sent = 0
        self.busy_dropped = 0
        self.rounds = 0
        self.reads = 0
        self.notices = 0
        self.duplicates = 0
        self.missed = 0
        self.collisions = 0
        self.corrupted = 0
        self.garbage = 0
        self.reboots = 0
        self.vanishes = 0
        self.rx_bytes = 0
        self.rx_lost = 0
        self.tx_bytes = 0
        self.overrun = 0
        self.tag_reads = [0] * len(field)
        self.last_antenna = -1
        # host -> module: chunks [start_us, data, next index]
        self._in: list[list[Any]] = []
        self._host_free = t0
        # module -> host: frames [start_us, data, bytes that go out], the head's next byte, the line's free time
        self._out: list[list[Any]] = []
        self._out_pos = 0
        self._line_free = t0
        self._rb = bytearray(rxbuf)
        self._rh = 0
        self._rn = 0
        # parser
        self._pb = bytearray(7 + MAX_PL)
        self._pn = 0
        self._plast = 0
        # executor
        self._state = _IDLE
        self._next = -1  # time of the executor's next step, -1: none
        self._queue: list[tuple[int, bytes]] = []
        self._rounds_left = 0
        self._stop_pending = False
        self._tpl: list[Any] = [None] * len(field)  # prebuilt notice per tag: (bytearray, sum without RSSI)
        self._power = DEFAULT_POWER  # 0.01 dBm
        self._region = DEFAULT_REGION
        self._reset_settings()
        if unplugged:
            self._state = _OFF
        for pin in self.switch:
            w = getattr(pin, "watch", None)
            if w is not None:
                w(self._switching)

    # -- the UART ---------------------------------------------------------------------------------
    def init(self, *args: object, **kwargs: object) -> None:
        """Accepted and ignored (the emulated UART's settings come from the board's wiring)."""

    def deinit(self) -> None:
        """Accepted and ignored."""

    def write(self, buf: "bytes | bytearray | memoryview") -> int:
        now = self._now()
        n = len(buf)
        if n:
            start = self._host_free if self._host_free > now else now
            self._in.append([start, bytes(buf), 0])
            self._host_free = start + n * self.byte_us
        return n

    def any(self) -> int:
        self._now()
        return self._rn

    def read(self, n: int = -1) -> "bytes | None":
        self._now()
        k = self._rn
        if not k:
            return None
        if 0 <= n < k:
            k = n
        out = bytearray(k)
        self._take(out, k)
        return bytes(out)

    def readinto(self, buf: "bytearray | memoryview", nbytes: "int | None" = None) -> "int | None":
        self._now()
        k = len(buf) if nbytes is None else min(nbytes, len(buf))
        if k > self._rn:
            k = self._rn
        if not k:
            return None
        self._take(buf, k)
        return k

    def flush(self) -> None:
        """Wait (advance the clock) until everything written has left the host's TX line."""
        self._now()
        d = self._host_free - self.clock.now
        if d > 0:
            self.clock.advance(d)

    def txdone(self) -> bool:
        return self._host_free <= self.clock.now

    def set_host_baud(self, baud: int) -> None:
        """The baud rate the host's UART is set to: another rate than the module's garbles every byte."""
        self._garble = baud != self.baud

    # -- state a test may look at ---------------------------------------------------------------
    @property
    def power(self) -> int:
        """TX power in 0.01 dBm."""
        return self._power

    @property
    def region(self) -> int:
        return self._region

    @property
    def state(self) -> str:
        self.sync()
        return ("idle", "busy", "multi", "booting", "off")[self._state]

    def stats(self) -> "dict[str, int]":
        self.sync()
        return {
            "commands": self.commands, "bad_frames": self.bad_frames, "timeouts": self.timeouts,
            "errors_sent": self.errors_sent, "no_tag_sent": self.no_tag_sent, "busy_dropped": self.busy_dropped,
            "rounds": self.rounds, "reads": self.reads, "notices": self.notices, "duplicates": self.duplicates,
            "missed": self.missed, "collisions": self.collisions, "corrupted": self.corrupted,
            "garbage": self.garbage, "reboots": self.reboots, "vanishes": self.vanishes, "rx_bytes": self.rx_bytes,
            "rx_lost": self.rx_lost, "tx_bytes": self.tx_bytes, "overrun": self.overrun,
        }  # fmt: skip

    def sync(self) -> None:
        """Bring the module up to the clock's time (every UART access and switch change does this)."""
        now = self.clock.now
        self._sync(now)
        self._deliver(now)

    # -- fault injection now --------------------------------------------------------------------
    def reboot(self) -> None:
        """The module resets now (as a ``reboots`` entry would)."""
        self.sync()
        self._reboot(self.clock.now)

    def unplug(self) -> None:
        self.sync()
        self._unplug(self.clock.now)

    def plug(self) -> None:
        self.sync()
        self._plug(self.clock.now)

    # -- time -------------------------------------------------------------------------------------
    def _switching(self) -> None:
        """A switch line is about to change: what started before sees the old level."""
        self._now()

    def _now(self) -> int:
        if self.before is not None:
            self.before()
        now = self.clock.now
        self._sync(now)
        self._deliver(now)
        return now

    def _sync(self, now: int) -> None:
        """Run everything that happens up to ``now``, in time order: faults, the executor's steps, bytes
        arriving from the host (in that order when they coincide)."""
        faults = self._faults
        while True:
            tf = faults[self._fi][0] if self._fi < len(faults) else -1
            te = self._next
            tb = -1
            if self._in:
                c = self._in[0]
                tb = c[0] + (c[2] + 1) * self.byte_us
            t = tf
            if t < 0 or (0 <= te < t):
                t = te
            if t < 0 or (0 <= tb < t):
                t = tb
            if t < 0 or t > now:
                return
            if t == tf:
                kind = faults[self._fi][1]
                self._fi += 1
                if kind == 0:
                    self._reboot(t)
                elif kind == 1:
                    self._unplug(t)
                else:
                    self._plug(t)
            elif t == te:
                self._next = -1
                self._step(t)
            else:
                c = self._in[0]
                b = c[1][c[2]]
                c[2] += 1
                if c[2] == len(c[1]):
                    self._in.pop(0)
                self._rx(b, t)

    # -- module -> host ---------------------------------------------------------------------------
    def _emit(self, t: int, data: "bytes | bytearray") -> None:
        """Put a frame on the module's TX line at ``t`` (after what is already on it), with line faults."""
        rng = self._rng
        if self.garbage_ppm and rng.below(1000000) < self.garbage_ppm * len(data):
            k = 1 + rng.below(4)
            junk = bytearray(k)
            for i in range(k):
                junk[i] = rng.next() & 0xFF
            self.garbage += k
            self._line(t, junk)
        if self.corrupt_ppm and rng.below(1000000) < self.corrupt_ppm:
            bad = bytearray(data)
            bad[len(bad) - 2] ^= 1 + rng.below(255)
            data = bad
            self.corrupted += 1
        self._line(t, data)

    def _line(self, t: int, data: "bytes | bytearray") -> None:
        start = self._line_free if self._line_free > t else t
        n = len(data)
        self._out.append([start, data, n])
        self._line_free = start + n * self.byte_us
        self.tx_bytes += n

    def _cut(self, t: int) -> None:
        """Power lost at ``t``: frames not yet started never go out, the one on the line is cut short."""
        out = self._out
        bu = self.byte_us
        keep = 0
        for i in range(len(out)):
            f = out[i]
            if f[0] >= t:
                break
            done = (t - f[0]) // bu
            if done < f[2]:
                self.tx_bytes -= f[2] - done
                f[2] = done
            keep = i + 1
        for f in out[keep:]:
            self.tx_bytes -= f[2]
        del out[keep:]
        self._line_free = t

    def _deliver(self, now: int) -> None:
        """Move the bytes that have fully arrived by ``now`` into the host's receive buffer."""
        out = self._out
        bu = self.byte_us
        rb = self._rb
        size = len(rb)
        while out:
            f = out[0]
            start = f[0]
            data = f[1]
            lim = f[2]
            pos = self._out_pos
            while pos < lim and start + (pos + 1) * bu <= now:
                b = data[pos]
                if self._garble:
                    b = (b * 7 + 0x35) & 0xFF
                if self._rn < size:
                    i = self._rh + self._rn
                    if i >= size:
                        i -= size
                    rb[i] = b
                    self._rn += 1
                else:
                    self.overrun += 1
                pos += 1
            if pos < lim:
                self._out_pos = pos
                return
            out.pop(0)
            self._out_pos = 0

    def _take(self, buf: "Any", k: int) -> None:
        rb = self._rb
        size = len(rb)
        h = self._rh
        for i in range(k):
            buf[i] = rb[h]
            h += 1
            if h == size:
                h = 0
        self._rh = h
        self._rn -= k

    # -- host -> module: the parser -----------------------------------------------------------------
    def _rx(self, b: int, t: int) -> None:
        if self._state == _OFF or self._state == _BOOT:
            self.rx_lost += 1
            return
        self.rx_bytes += 1
        if self._garble:
            b = (b * 5 + 0x2B) & 0xFF
        if self._pn and t - self._plast > FRAME_GAP_US:
            self._pn = 0
            self.timeouts += 1
        self._plast = t
        self._feed(b, t)

    def _feed(self, b: int, t: int) -> None:
        pb = self._pb
        n = self._pn
        if n == 0 and b != HEAD:
            return  # between frames: skipped
        pb[n] = b
        n += 1
        self._pn = n
        if n < 5:
            return
        pl = (pb[3] << 8) | pb[4]
        if pl > MAX_PL:
            self._bad(t)
            return
        if n < 7 + pl:
            return
        if pb[n - 1] != END or pb[1] != TYPE_COMMAND or checksum(pb, 1, n - 2) != pb[n - 2]:
            self._bad(t)
            return
        self._pn = 0
        self.commands += 1
        self._dispatch(pb[2], bytes(pb[5 : 5 + pl]), t)

    def _bad(self, t: int) -> None:
        """A malformed frame: answered with the error frame; parsing resumes at the next 0xBB after its start."""
        self.bad_frames += 1
        pb = self._pb
        n = self._pn
        self._pn = 0
        self._dispatch(_OP_ERROR, b"", t)
        for i in range(1, n):
            if pb[i] == HEAD:
                rest = bytes(pb[i:n])
                for x in rest:
                    self._feed(x, t)
                return

    # -- the executor -------------------------------------------------------------------------------
    def _dispatch(self, cmd: int, params: bytes, t: int) -> None:
        st = self._state
        if st == _MULTI:
            if cmd == CMD_STOP and not params:
                self._stop_pending = True
            else:
                self.busy_dropped += 1
            return
        if st == _BUSY:
            if len(self._queue) < QUEUE_MAX:
                self._queue.append((cmd, params))
            else:
                self.busy_dropped += 1
            return
        self._execute(cmd, params, t)

    def _busy(self, until: int) -> None:
        self._state = _BUSY
        self._next = until

    def _reply(self, t: int, data: bytes) -> None:
        self._emit(t, data)
        self._busy(t)

    def _execute(self, cmd: int, p: bytes, t: int) -> None:
        n = len(p)
        if cmd == CMD_INVENTORY and n == 0:
            self._busy(self._round(t + START_US))
            return
        if cmd == CMD_MULTI and n == 3 and p[0] == 0x22 and (p[1] or p[2]):
            self._rounds_left = (p[1] << 8) | p[2]
            self._stop_pending = False
            self._state = _MULTI
            self._next = t + START_US
            return
        if cmd == CMD_STOP and n == 0:
            self._reply(t + REPLY_US, STOP_OK)
            return
        if cmd == CMD_GET_POWER and n == 0:
            pw = self._power
            self._reply(t + REPLY_US, frame(TYPE_RESPONSE, CMD_GET_POWER, bytes((pw >> 8, pw & 0xFF))))
            return
        if cmd == CMD_SET_POWER and n == 2:
            pw = (p[0] << 8) | p[1]
            if POWER_MIN <= pw <= POWER_MAX:
                self._power = pw
                self._reply(t + SET_US, POWER_OK)
                return
        if cmd == CMD_GET_REGION and n == 0:
            self._reply(t + REPLY_US, frame(TYPE_RESPONSE, CMD_GET_REGION, bytes((self._region,))))
            return
        if cmd == CMD_SET_REGION and n == 1 and p[0] in REGIONS:
            self._region = p[0]
            self._reply(t + SET_US, REGION_OK)
            return
        if cmd == CMD_INFO and n == 1 and p[0] <= 2:
            self._reply(t + REPLY_US, frame(TYPE_RESPONSE, CMD_INFO, bytes((p[0],)) + INFO[p[0]]))
            return
        self.errors_sent += 1
        self._reply(t + REPLY_US, COMMAND_ERROR)

    def _step(self, t: int) -> None:
        st = self._state
        if st == _MULTI:
            if self._stop_pending:
                self._stop_pending = False
                self._rounds_left = 0
                self._reply(t + REPLY_US, STOP_OK)
                return
            if self._rounds_left <= 0:
                self._state = _IDLE
                return
            self._rounds_left -= 1
            self._next = self._round(t)
            return
        # a reply or a single round is done, or the module has booted: next queued command, if any
        self._state = _IDLE
        if self._queue:
            cmd, params = self._queue.pop(0)
            self._execute(cmd, params, t)

    def _antenna(self) -> int:
        if self.select is not None:
            return int(self.select())
        v = 0
        for i in range(len(self.switch)):
            if self.switch[i].value():
                v |= 1 << i
        return v

    def _round(self, t0: int) -> int:
        """One inventory round from ``t0``: notices scheduled at their slots; returns the round's end."""
        self.rounds += 1
        multi = self._state == _MULTI
        ant = self._antenna()
        self.last_antenna = ant
        lane = self.antennas[ant] if 0 <= ant < len(self.antennas) else None
        power = self._power
        field = self.field
        orient = field.orient
        cand: list[tuple[int, int, int]] = []  # (tag, loss_cdb, ppm)
        if lane is not None:
            for key, dist in ((lane, 0), (lane - 1, self.neighbour_cdb), (lane + 1, self.neighbour_cdb),
                              (STRAY, self.stray_cdb)):  # fmt: skip
                for span in field.active(key, t0):
                    tag = span[2]
                    loss = dist + (1000 - orient[tag]) * 2
                    ppm = _interp_ppm(power - THRESHOLD_CDB - loss)
                    if ppm:
                        cand.append((tag, loss, ppm))
        nvis = len(cand)
        slots = 4
        while slots * 2 < nvis * 3:
            slots *= 2
        rng = self._rng
        coll = self.collision_ppm * (nvis - 1) if nvis > 1 else 0
        if coll > 900000:
            coll = 900000
        reads: list[tuple[int, int, int, int]] = []  # (slot, order, tag, rssi)
        for tag, loss, ppm in cand:
            if rng.below(1000000) >= ppm:
                continue
            if self.miss_ppm and rng.below(1000000) < self.miss_ppm:
                self.missed += 1
                continue
            if coll and rng.below(1000000) < coll:
                self.collisions += 1
                continue
            rssi = (power - RSSI_OFFSET_CDB - loss + 50) // 100 + rng.gauss(RSSI_SIGMA)
            if rssi < -100:
                rssi = -100
            elif rssi > -20:
                rssi = -20
            reads.append((rng.below(slots), len(reads), tag, rssi))
        reads.sort()  # by slot; ties by order (a total order: the same on both runtimes)
        t = t0 + SETUP_US
        for k in range(len(reads)):
            slot, _order, tag, rssi = reads[k]
            tn = t0 + SETUP_US + slot * SLOT_US + (k + 1) * READ_US
            f = self._notice(tag, rssi)
            self.reads += 1
            self.tag_reads[tag] += 1
            self._emit(tn, f)
            self.notices += 1
            if self.dup_ppm and rng.below(1000000) < self.dup_ppm:
                self._emit(tn, f)
                self.notices += 1
                self.duplicates += 1
        end = t + slots * SLOT_US + len(reads) * READ_US + TAIL_US
        if not reads and not multi:
            self.no_tag_sent += 1
            self._emit(end, NO_TAG)
        return end

    def _notice(self, tag: int, rssi: int) -> bytearray:
        tpl = self._tpl[tag]
        if tpl is None:
            epc = self.field.epcs[tag]
            pc = self.field.pcs[tag]
            body = bytes((pc >> 8, pc & 0xFF)) + epc
            crc = crc16_genibus(body)
            f = bytearray(frame(TYPE_NOTICE, CMD_INVENTORY, b"\x00" + body + bytes((crc >> 8, crc & 0xFF))))
            tpl = (f, checksum(f, 1, len(f) - 2))
            self._tpl[tag] = tpl
        f = bytearray(tpl[0])
        r = rssi & 0xFF
        f[5] = r
        f[len(f) - 2] = (tpl[1] + r) & 0xFF
        return f

    # -- power ------------------------------------------------------------------------------------
    def _reset_settings(self) -> None:
        self._power = DEFAULT_POWER
        self._region = DEFAULT_REGION
        self._pn = 0
        self._queue = []
        self._rounds_left = 0
        self._stop_pending = False

    def _reboot(self, t: int) -> None:
        if self._state == _OFF:
            return  # unplugged: nothing to reset
        self.reboots += 1
        self._cut(t)
        self._reset_settings()
        self._state = _BOOT
        self._next = t + BOOT_MIN_US + self._rng.below(BOOT_SPAN_US + 1)

    def _unplug(self, t: int) -> None:
        if self._state == _OFF:
            return
        self.vanishes += 1
        self._cut(t)
        self._reset_settings()
        self._state = _OFF
        self._next = -1

    def _plug(self, t: int) -> None:
        if self._state != _OFF:
            return
        self._state = _BOOT
        self._next = t + BOOT_MIN_US + self._rng.below(BOOT_SPAN_US + 1)
