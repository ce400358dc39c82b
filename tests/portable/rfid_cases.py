"""Portable RFID bodies (CPython and MicroPython): the reader driver (firmware/rfid/uhf.py) on hand-built byte
streams and against the byte-level module emulator (tools/emulation/uhf_module.py) on virtual time, the presence
table (firmware/rfid/presence.py) and the rfid config section. Each returns plain data for the test to assert on.
"""

import binascii
import json

from firmware import config as config_mod
from firmware.rfid import uhf
from firmware.rfid.poller import AntennaSwitch, RfidPoller
from firmware.rfid.presence import Presence
from shared_protocol.messages import READER_OK, READER_SILENT, READER_STARTING, TAG_LOST, TAG_SEEN

STATE_NAMES = {READER_OK: "ok", READER_SILENT: "silent", READER_STARTING: "starting"}
EPC_A = "3074257bf7194e4000001a85"
EPC_B = "3074257bf7194e4000001a86"


def _h(b):
    return binascii.hexlify(bytes(b)).decode()


def _u(s):
    return bytes(binascii.unhexlify(s))


# -- a UART fed by hand ------------------------------------------------------------------------------


class ScriptUart:
    """A UART the test feeds: ``feed(data)`` queues bytes for the driver (a ring: ``readinto`` and ``feed_from``
    allocate nothing); ``write`` records what the driver sent and, with ``answer``, answers it as a module would
    (power and region kept; a multi inventory answers nothing)."""

    def __init__(self, answer=True, size=4096):
        self._ring = bytearray(size)
        self._h = 0
        self._n = 0
        self.answer = answer
        self.power = 2600
        self.region = 1
        self.written = []
        self.multi = 0

    def write(self, data):
        data = bytes(data)
        self.written.append(data)
        if self.answer:
            cmd = data[2]
            if cmd == uhf.CMD_MULTI:
                self.multi += 1
            elif cmd == uhf.CMD_STOP:
                self.feed(uhf.frame(1, cmd, b"\x00"))
            elif cmd == uhf.CMD_SET_POWER:
                self.power = (data[5] << 8) | data[6]
                self.feed(uhf.frame(1, cmd, b"\x00"))
            elif cmd == uhf.CMD_SET_REGION:
                self.region = data[5]
                self.feed(uhf.frame(1, cmd, b"\x00"))
            elif cmd == uhf.CMD_GET_POWER:
                self.feed(uhf.frame(1, cmd, bytes((self.power >> 8, self.power & 0xFF))))
            elif cmd == uhf.CMD_GET_REGION:
                self.feed(uhf.frame(1, cmd, bytes((self.region,))))
        return len(data)

    def feed(self, data):
        self.feed_from(data, 0, len(data))

    def feed_from(self, src, off, n):
        ring = self._ring
        size = len(ring)
        i = self._h + self._n
        if i >= size:
            i -= size
        k = 0
        while k < n:
            ring[i] = src[off + k]
            i += 1
            if i == size:
                i = 0
            k += 1
        self._n += n

    def any(self):
        return self._n

    def readinto(self, buf, nbytes=None):
        k = len(buf) if nbytes is None else nbytes
        if k > self._n:
            k = self._n
        if not k:
            return None
        ring = self._ring
        size = len(ring)
        h = self._h
        i = 0
        while i < k:
            buf[i] = ring[h]
            h += 1
            if h == size:
                h = 0
            i += 1
        self._h = h
        self._n -= k
        return k


class Recorder:
    """A driver's sink: every tag read, as (time, antenna, rssi, EPC hex)."""

    def __init__(self, clock=None):
        self.reads = []
        self.clock = clock
        self.t = 0

    def tag(self, antenna, rssi, buf, off, n):
        t = self.clock.now // 1000 if self.clock is not None else self.t
        self.reads.append([t, antenna, rssi, _h(buf[off : off + n])])


class PinLog:
    """An output pin that records its levels."""

    def __init__(self):
        self.v = 0
        self.log = []

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0
        self.log.append(self.v)
        return None


def notice(epc_hex, rssi=-56, pc=None, crc=None, cs=None, end=0x7E, cmd=0x22):
    """A tag notice ``BB 02 22 PL RSSI PC EPC CRC CS 7E``; ``pc``, ``crc``, ``cs`` and ``end`` override the right
    values (to build bad ones)."""
    epc = _u(epc_hex)
    if pc is None:
        pc = (len(epc) // 2) << 11
    body = bytes((pc >> 8, pc & 0xFF)) + epc
    if crc is None:
        crc = uhf.crc16_genibus(body, 0, len(body))
    params = bytes((rssi & 0xFF,)) + body + bytes((crc >> 8, crc & 0xFF))
    f = bytearray(uhf.frame(2, cmd, params))
    if cs is not None:
        f[len(f) - 2] = cs
    f[len(f) - 1] = end
    return bytes(f)


# -- frames ------------------------------------------------------------------------------------------


def frames():
    """Every command the driver builds, and its CRC on the standard's check string, as hex."""
    return {
        "single": _h(uhf.SINGLE_INVENTORY),
        "multi": _h(uhf.multi_inventory(10000)),
        "multi_max": _h(uhf.multi_inventory(uhf.MULTI_ROUNDS)),
        "stop": _h(uhf.STOP),
        "set_power": _h(uhf.set_power(2000)),
        "get_power": _h(uhf.GET_POWER),
        "set_region": _h(uhf.set_region(uhf.REGION_EU)),
        "get_region": _h(uhf.GET_REGION),
        "info": _h(uhf.get_info(0)),
        "stop_ok": _h(uhf.frame(1, 0x28, b"\x00")),
        "no_tag": _h(uhf.frame(1, 0xFF, b"\x15")),
        "notice": _h(notice(EPC_A, -56)),
        "crc_check": uhf.crc16_genibus(b"123456789", 0, 9),
        "crc_epc": uhf.crc16_genibus(_u("3000" + EPC_A), 0, 14),
    }


# -- the driver on hand-built streams ----------------------------------------------------------------


def _configured(answer=True, dwell_ms=60000, antennas=1, switch=None):
    """A driver on a ScriptUart, configured and dwelling on antenna 0 (a long dwell: no commands meanwhile)."""
    uart = ScriptUart(answer)
    rec = Recorder()
    r = uhf.UhfReader(uart, rec, uhf.REGION_EU, 2000, antennas, switch, dwell_ms, 0)
    t = 0
    while t < 200:
        t += 10
        rec.t = t
        r.poll(t)
    return uart, rec, r, t


def _counters(r):
    return {
        "reads": r.reads, "bad_frames": r.bad_frames, "crc_errors": r.crc_errors, "skipped": r.skipped,
        "resets": r.resets, "silences": r.silences, "timeouts": r.timeouts, "cmd_errors": r.cmd_errors,
        "dwells": r.dwells, "verifies": r.verifies, "state": STATE_NAMES[r.state],
    }  # fmt: skip


def stream(chunks_hex, gap_ms=10, tail_ms=0):
    """Feed ``chunks`` (hex), one per poll ``gap_ms`` apart, to a configured driver; then poll ``tail_ms`` more.
    Returns the tags read (with the time each was read, from the first chunk) and the counters."""
    uart, rec, r, t = _configured()
    t0 = t
    reads0 = r.reads
    for c in chunks_hex:
        uart.feed(_u(c))
        t += gap_ms
        rec.t = t - t0
        r.poll(t)
    end = t + tail_ms
    while t < end:
        t += 10
        rec.t = t - t0
        r.poll(t)
    out = _counters(r)
    out["reads"] -= reads0
    out["tags"] = rec.reads
    out["state"] = STATE_NAMES[r.state]
    return out


def split_everywhere(epc_hex):
    """One notice cut in two at every offset (the halves in two polls): the tags read per cut."""
    f = notice(epc_hex, -61)
    out = []
    for cut in range(1, len(f)):
        r = stream([_h(f[:cut]), _h(f[cut:])])
        out.append([cut, [t[1:] for t in r["tags"]], r["bad_frames"]])
    return out


def lifecycle():
    """The commands a fresh driver sends to a module that answers, the switch lines per dwell, and its state."""
    pins = [PinLog(), PinLog()]
    sw = AntennaSwitch(pins)
    uart = ScriptUart()
    rec = Recorder()
    r = uhf.UhfReader(uart, rec, uhf.REGION_US, 2300, 3, sw, 100, 0)
    states = []
    ants = []
    t = 0
    while t < 1000:
        t += 10
        r.poll(t)
        if not states or states[-1][1] != STATE_NAMES[r.state]:
            states.append([t, STATE_NAMES[r.state]])
        if uart.written and uart.written[-1][2] == uhf.CMD_MULTI and (not ants or ants[-1][0] != len(uart.written)):
            ants.append([len(uart.written), r.antenna, sw.value, pins[0].v, pins[1].v, t])
    return {
        "written": [_h(w) for w in uart.written],
        "states": states,
        "antennas": [a[1:] for a in ants],
        "power": uart.power,
        "region": uart.region,
        "counters": _counters(r),
    }


def settings_lost():
    """A configured module loses its settings (as after a power glitch): found at the next verify."""
    uart, _rec, r, t = _configured(dwell_ms=100)
    uart.power = 2600
    uart.region = 1
    before = _counters(r)
    found = None
    while t < 8000:
        t += 10
        r.poll(t)
        if found is None and r.resets:
            found = t
    return {"before": before, "after": _counters(r), "found_at": found, "power": uart.power, "region": uart.region}


def silent_then_back(answer_again_at_ms):
    """A configured module stops answering (and forgets its settings) until ``answer_again_at_ms``; then answers.
    The state over time, the probes' times, the counters."""
    uart, _rec, r, t = _configured(dwell_ms=100)
    t0 = t
    uart.answer = False
    n0 = len(uart.written)
    states = [[0, STATE_NAMES[r.state]]]
    while t < t0 + 40000:
        t += 10
        if t - t0 == answer_again_at_ms:
            uart.answer = True
            uart.power = 2600
            uart.region = 1
        r.poll(t)
        name = STATE_NAMES[r.state]
        if states[-1][1] != name:
            states.append([t - t0, name])
    return {"states": states, "writes": len(uart.written) - n0, "counters": _counters(r)}


def silent_then_heard(heard_at_ms, frame_hex):
    """A configured module stops answering; at ``heard_at_ms`` (deep in a back-off pause) it answers again and sends
    ``frame_hex`` unasked (a late answer, a notice). The state over time and the commands written after that frame."""
    uart, _rec, r, t = _configured(dwell_ms=100)
    t0 = t
    uart.answer = False
    states = [[0, STATE_NAMES[r.state]]]
    after = []
    while t < t0 + 20000:
        t += 10
        if t - t0 == heard_at_ms:
            uart.answer = True
            uart.power = 2000
            uart.region = uhf.REGION_EU
            uart.feed(_u(frame_hex))
        n = len(uart.written)
        r.poll(t)
        if t - t0 >= heard_at_ms and len(uart.written) > n and len(after) < 4:
            after.append([t - t0, _h(uart.written[-1])])
        name = STATE_NAMES[r.state]
        if states[-1][1] != name:
            states.append([t - t0, name])
    return {"states": states, "after": after, "counters": _counters(r)}


def refused():
    """A module that refuses the power (an error 17 answer): cmd_errors, retried every RETRY_MS, never OK."""
    uart = ScriptUart()
    orig = uart.write

    def write(data):
        if data[2] == uhf.CMD_SET_POWER:
            uart.written.append(bytes(data))
            uart.feed(uhf.frame(1, 0xFF, b"\x17"))
            return len(data)
        return orig(data)

    uart.write = write
    r = uhf.UhfReader(uart, Recorder(), uhf.REGION_EU, 2000, 1, None, 100, 0)
    sets = []
    t = 0
    while t < 5000:
        t += 10
        n = len(uart.written)
        r.poll(t)
        if len(uart.written) > n and uart.written[-1][2] == uhf.CMD_SET_POWER:
            sets.append(t)
    return {"sets": sets, "counters": _counters(r)}


# -- the driver against the module emulator ------------------------------------------------------------


def _emu(tags, antennas, faults=None, seed=5, switch_pins=2, power=2000, region=uhf.REGION_EU, dwell_ms=200,
         absent=False):  # fmt: skip
    from tools.emulation.hx711_chip import VirtualClock
    from tools.emulation.uhf_module import AbsentUart, OutPin, UhfModule

    clk = VirtualClock()
    pins = [OutPin() for _ in range(switch_pins)]
    if absent:
        mod = AbsentUart()
    else:
        mod = UhfModule(clk, tags, antennas=antennas, switch=pins, seed=seed, faults=faults or {})
    rec = Recorder(clk)
    sw = AntennaSwitch(pins) if pins else None
    r = uhf.UhfReader(mod, rec, region, power, len(antennas), sw, dwell_ms, 0)
    return clk, mod, rec, r


def emu_run(tags, antennas, until_ms, faults=None, seed=5, power=2000, dwell_ms=200, switch_pins=2, absent=False):
    """The driver polled every 10 ms against an emulated module until ``until_ms``: state changes, the antenna of
    every dwell with its start, the reads per (antenna, EPC), the driver's and the module's counters."""
    clk, mod, rec, r = _emu(tags, antennas, faults, seed, switch_pins, power, dwell_ms=dwell_ms, absent=absent)
    states = [[0, STATE_NAMES[r.state]]]
    writes = []
    dwells = []
    last_dwells = 0
    t = 0
    while t < until_ms:
        t += 10
        clk.advance(10000)
        now = clk.ticks_ms()
        phase = r._phase
        if absent:
            n = mod.written
        r.poll(now)
        if absent and mod.written != n:
            writes.append(t)
        if r._phase == 2 and phase != 2:  # a dwell started
            dwells.append([t, r.antenna])
        name = STATE_NAMES[r.state]
        if states[-1][1] != name:
            states.append([t, name])
        last_dwells = r.dwells
    per = {}
    wrong = 0
    known = {}
    for tag in tags:
        known[tag["epc"]] = 1
    for _t, a, _rssi, epc in rec.reads:
        key = str(a) + ":" + epc
        per[key] = per.get(key, 0) + 1
        if epc not in known:
            wrong += 1
    return {
        "states": states,
        "dwells": dwells,
        "per": per,
        "wrong_epcs": wrong,
        "rssi": [x[2] for x in rec.reads],
        "counters": _counters(r),
        "dwells_done": last_dwells,
        "module": None if absent else mod.stats(),
        "module_power": None if absent else mod.power,
        "module_region": None if absent else mod.region,
        "writes": writes,
    }


# -- allocation (MicroPython) ----------------------------------------------------------------------------

ALLOC = """
import gc
import micropython
from tests.portable import rfid_cases as rc
from firmware.rfid.poller import RfidPoller
from firmware import config as config_mod

class Board:
    def __init__(self):
        self.uarts = []
    def uart(self, index, tx, rx, baud):
        u = rc.ScriptUart()
        self.uarts.append(u)
        return u
    def pin_out(self, n):
        return rc.PinLog()

class Outbox:
    def __init__(self):
        self.n = 0
    def add_tag(self, kind, lane, rssi, epc, off, n, t):
        self.n += 1
        return self.n

cfg = config_mod.parse({"node_id": 1, "key": "00" * 16, "lanes": [{"cells": [[4, 5]]}, {"cells": [[6, 7]]}],
    "rfid": {"readers": [{"uart": 1, "tx": 17, "rx": 16, "region": "eu", "switch": [25], "antennas": [0, 1]}],
             "dwell_ms": 5000, "lost_s": 60, "window_ms": 12000}})
board = Board()
ob = Outbox()
delivered = []
def deliver(seq, now):
    delivered.append(seq)
sent = []
poller = RfidPoller(cfg.rfid, board, ob, deliver, sent.append, 0)
uart = board.uarts[0]
N_TAGS = 12
stream = bytearray()
for k in range(N_TAGS):
    stream += rc.notice("3074257bf7194e40000%05x" % k, -50 - k)
L = len(stream) // N_TAGS
t = [0]
def step():
    t[0] += 1
    k = t[0] % N_TAGS
    uart.feed_from(stream, k * L, L)
    poller.poll(t[0])
for _ in range(300):  # configure; every tag read seen_n times: armed, waiting for the round (10.1 s)
    step()
reader = poller.readers[0]
def window(n):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    i = 0
    while i < n:
        step()
        i += 1
    b = gc.mem_alloc()
    gc.enable()
    return b - a
def locked_run(n):  # a function: a new global made under heap_lock would grow the globals dict, locked
    micropython.heap_lock()
    try:
        i = 0
        while i < n:
            step()
            i += 1
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True
waiting = poller.presence.present
wait_delta = window(400)  # reads and ticks of tags waiting to be placed
wait_locked = locked_run(200)
# The reader dwells on antenna 0 all along (no command in the windows): the round cut short, the tags are placed.
poller.presence.cycle_ms = 0
for _ in range(500):
    step()
r0 = reader.reads
delta = window(2000)
locked = locked_run(1000)
reads = reader.reads - r0
class Copying:  # a sink that keeps a copy of each EPC: what the measurement must catch
    def tag(self, antenna, rssi, buf, off, n):
        self.last = bytes(buf[off : off + n])
good_sink = reader._sink
reader._sink = Copying()
bad_delta = window(200)
bad_locked = locked_run(50)
reader._sink = good_sink
result = {"delta": delta, "locked": locked, "reads": reads, "bad_delta": bad_delta, "bad_locked": bad_locked,
          "wait_delta": wait_delta, "wait_locked": wait_locked, "waiting": waiting,
          "present": poller.presence.present,
          "changes": ob.n, "state": reader.state, "bad": reader.bad_frames, "phase": reader._phase,
          "ticks": t[0]}
"""


# -- presence ----------------------------------------------------------------------------------------------


class ChangeLog:
    """The presence table's sink: every change as [decided, "seen"/"lost", lane, rssi, EPC hex], where ``decided`` is
    the clock of the read or tick that decided it (``at``, kept by the runner); ``dated`` has the time each change is
    dated at (what becomes its ``age_ms``) as [kind, time]. ``fail``: [[t0, t1, ["seen", "lost"]], ...]: while ``at``
    is in [t0, t1) a change of those kinds raises (as an outbox whose flash write fails) and is not logged."""

    def __init__(self, fail=None):
        self.log = []
        self.dated = []
        self.at = 0
        self.fail = fail or []
        self.refused = 0

    def tag_changed(self, kind, lane, rssi, epc, off, n, t):
        name = "seen" if kind == TAG_SEEN else "lost" if kind == TAG_LOST else kind
        for f in self.fail:
            if f[0] <= self.at < f[1] and name in f[2]:
                self.refused += 1
                raise OSError(28)
        self.log.append([self.at, name, lane, rssi, _h(epc[off : off + n])])
        self.dated.append([name, t])


def presence_script(
    script, seen_n=2, window_ms=3000, lost_s=10, until_ms=None, max_tags=64, held=None, cycle_ms=0, fail=None
):
    """Run ``script``: [[t_ms, lane, rssi, EPC hex], ...] in time order, ``tick`` every 100 ms up to ``until_ms``.
    ``held``: [t0, t1, lanes] during which those lanes are held; ``cycle_ms``: the antennas' cycle (Presence's);
    ``fail``: when the sink refuses changes (``ChangeLog``): an exception from ``read`` or ``tick`` is counted in
    ``errors`` and the run goes on, as the poller does. The changes, the table's counters and what is present at the
    end."""
    log = ChangeLog(fail)
    p = Presence(log, seen_n, window_ms, lost_s, max_tags=max_tags, cycle_ms=cycle_ms)
    errors = 0
    end = until_ms if until_ms is not None else (script[-1][0] + 100 if script else 0)
    i = 0
    t = 0
    flags = bytearray(32)
    if held:
        for lane in held[2]:
            flags[lane] = 1
    while t <= end:
        while i < len(script) and script[i][0] <= t:
            s = script[i]
            p.now = s[0]
            log.at = s[0]
            e = _u(s[3])
            try:
                p.read(s[1], s[2], e, 0, len(e))
            except OSError:
                errors += 1
            i += 1
        if t % 100 == 0:
            log.at = t
            if held and held[0] <= t < held[1]:
                p.hold(flags, t)
            try:
                p.tick(t)
            except OSError:
                errors += 1
        t += 10
    return {
        "log": log.log,
        "dated": log.dated,
        "errors": errors,
        "refused": log.refused,
        "present": p.present,
        "overflows": p.overflows,
        "moves": p.moves,
        "tags": sorted([[_h(e), lane] for e, lane in p.tags()]),
    }


def presence_churn(max_tags, n_tags):
    """Tags come and go through a small table (its slots freed and reused, its index rebuilt many times): tag k is
    read on lane k % 3 every 100 ms from k s to k + 4 s; lost_s 2. Every change, and the counters."""
    log = ChangeLog()
    p = Presence(log, 2, 3000, 2, max_tags=max_tags)
    epcs = [_u("%024x" % (0x30740000 + 7919 * k)) for k in range(n_tags)]
    t = 0
    end = n_tags * 1000 + 7000
    while t <= end:
        p.now = t
        log.at = t
        k = t // 1000 - 4
        if k < 0:
            k = 0
        while k <= t // 1000 and k < n_tags:
            if t % 100 == 0 and k * 1000 <= t < k * 1000 + 4000:
                p.read(k % 3, -50 - k % 7, epcs[k], 0, 12)
            k += 1
        if t % 100 == 0:
            p.tick(t)
        t += 50
    return {"log": log.log, "overflows": p.overflows, "present": p.present}


def presence_overflow(max_tags):
    """``max_tags`` + 5 distinct tags read twice each, then 5 more later: overflow counted, nothing crashes, and a
    pending slot is reused before a present one."""
    log = ChangeLog()
    p = Presence(log, 2, 3000, 10, max_tags=max_tags)
    t = 0
    for k in range(max_tags + 5):
        e = _u("%024x" % (0xE2000000 + k))
        for _ in range(2):
            t += 1
            p.now = t
            log.at = t
            p.read(0, -50, e, 0, 12)
    full = [p.present, p.overflows]
    # a tag read once (pending) while the table is full of present ones: dropped too
    p.now = t + 1
    log.at = t + 1
    e = _u("%024x" % 0xF0000000)
    p.read(0, -50, e, 0, 12)
    return {"full": full, "after": [p.present, p.overflows], "seen": len(log.log)}


# -- config ------------------------------------------------------------------------------------------------


def config_errors(docs):
    """Each document parsed: the ConfigError text, or "" with the rfid section's values when it is valid."""
    out = []
    for text in docs:
        try:
            cfg = config_mod.parse(json.loads(text))
        except config_mod.ConfigError as err:
            out.append(str(err))
            continue
        rf = cfg.rfid
        if rf is None:
            out.append(["", None])
            continue
        out.append([
            "",
            {
                "seen_n": rf.seen_n, "window_ms": rf.window_ms, "lost_s": rf.lost_s, "dwell_ms": rf.dwell_ms,
                "cycle_ms": rf.cycle_ms,
                "readers": [[r.uart, r.tx, r.rx, r.baud, r.region, r.power_dbm, r.switch, r.antennas]
                            for r in rf.readers],
            },
        ])  # fmt: skip
    return out


def poller_health(broken=False):
    """A poller on a board with two readers (one answering, one absent; or, ``broken``, one whose UART the board
    cannot open): reader_health on each state change and for every reader on demand."""

    class Board:
        def __init__(self):
            self.n = 0

        def uart(self, index, tx, rx, baud):
            self.n += 1
            if broken and self.n == 2:
                raise ValueError("bad TX pin")
            return ScriptUart(answer=self.n == 1)

        def pin_out(self, n):
            return PinLog()

    class Outbox:
        def add_tag(self, *args):
            return 1

    cfg = config_mod.parse({
        "node_id": 1, "key": "00" * 16, "lanes": [{"cells": [[4, 5]]}, {"cells": [[6, 7]]}],
        "rfid": {"readers": [{"uart": 1, "tx": 17, "rx": 16, "region": "eu", "antennas": [0]},
                             {"uart": 2, "tx": 18, "rx": 19, "region": "us", "antennas": [1]}]},
    })  # fmt: skip
    sent = []
    p = RfidPoller(cfg.rfid, Board(), Outbox(), lambda seq, now: None, sent.append, 0)
    t = 0
    while t < 4000:
        t += 10
        p.poll(t)
    return {
        "sent": [[m.reader, STATE_NAMES[m.state]] for m in sent],
        "now": [h.to_dict() for h in p.healths()],
        "notes": p.notes,
        "errors": p.errors,
    }


class FlakyUart(ScriptUart):
    """A ScriptUart whose ``any`` raises while ``broken`` (a UART driver that fails, a port gone wrong)."""

    def __init__(self):
        ScriptUart.__init__(self)
        self.broken = False

    def any(self):
        if self.broken:
            raise OSError(5)
        return ScriptUart.any(self)


def poller_run(n_antennas, tags, until_ms, lost_s=5, dwell_ms=200, uart_broken=None, outbox_broken=None):
    """One reader with ``n_antennas`` antennas (antenna i on lane i) on a UART that answers, behind a real
    ``RfidPoller``; while the reader dwells, each tag is read every 30 ms by the antennas that see it: ``tags``
    [[EPC hex, [RSSI by antenna, or None], t_on, t_off or None], ...]. ``uart_broken`` [t0, t1]: the UART raises;
    ``outbox_broken`` [[t0, t1], ...]: the outbox's ``add_tag`` raises (a flash write that fails). The records kept
    [decided, kind, lane, rssi, EPC, dated], the reader_health sent [t, reader, state], errors, what is present."""

    class Board:
        def __init__(self):
            self.uarts = []

        def uart(self, index, tx, rx, baud):
            u = FlakyUart()
            self.uarts.append(u)
            return u

        def pin_out(self, n):
            return PinLog()

    class Outbox:
        def __init__(self):
            self.records = []
            self.now = 0

        def add_tag(self, kind, lane, rssi, epc, off, n, t):
            for span in outbox_broken or []:
                if span[0] <= self.now < span[1]:
                    raise OSError(28)
            name = "seen" if kind == TAG_SEEN else "lost"
            self.records.append([self.now, name, lane, rssi, _h(epc[off : off + n]), t])
            return len(self.records)

    lanes = [{"cells": [[4 + 2 * k, 5 + 2 * k]]} for k in range(n_antennas)]
    n_pins = 0
    while (1 << n_pins) < n_antennas:
        n_pins += 1
    switch = [25, 26, 27][:n_pins]
    cfg = config_mod.parse({
        "node_id": 1, "key": "00" * 16, "lanes": lanes,
        "rfid": {"readers": [{"uart": 1, "tx": 17, "rx": 16, "region": "eu", "switch": switch,
                              "antennas": list(range(n_antennas))}],
                 "lost_s": lost_s, "dwell_ms": dwell_ms},
    })  # fmt: skip
    board = Board()
    ob = Outbox()
    sent = []
    sent_t = []

    def send(msg):
        sent.append(msg)
        sent_t.append(t)

    t = 0
    p = RfidPoller(cfg.rfid, board, ob, lambda seq, now: None, send, 0)
    uart = board.uarts[0]
    r = p.readers[0]
    frames = [[_u(tag[0]), tag[1], tag[2], tag[3]] for tag in tags]
    while t < until_ms:
        t += 10
        uart.broken = bool(uart_broken and uart_broken[0] <= t < uart_broken[1])
        ob.now = t
        if r._phase == 2 and t % 30 == 0 and not uart.broken:
            for epc, rssi, on, off in frames:
                if on <= t and (off is None or t < off) and 0 <= r.antenna < len(rssi) and rssi[r.antenna] is not None:
                    uart.feed(notice(_h(epc), rssi[r.antenna]))
        p.poll(t)
    return {
        "records": ob.records,
        "health": [[sent_t[k], m.reader, STATE_NAMES[m.state]] for k, m in enumerate(sent)],
        "errors": p.errors,
        "present": sorted([[_h(e), lane] for e, lane in p.presence.tags()]),
        "state": STATE_NAMES[r.state],
        "cycle_ms": p.presence.cycle_ms,
    }
