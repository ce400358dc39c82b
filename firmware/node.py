"""The shelf node: the firmware entry point (``main(board)`` on a board, ``await run(board)`` anywhere).

A *board* gives the node its hardware (see ``Board`` below): pins for each load cell, the clock, the serial
link's byte I/O, the LED, free memory, the watchdog and the flash root. ``firmware/main.py`` builds one from
``machine.Pin``; ``tools/emulation/board.py`` builds one from emulated HX711s. Everything else is here and
is the same in both.

Boot: read and validate ``<root>/config.json`` (a bad config is reported on the console and nothing runs),
count the boot (``seq_store.next_boot``: it is the downlink session), restore the frame sequence, the lanes'
calibrations and SKU assignments, the outbox and the counters from ``<root>/state/``.

Three asyncio tasks, none of which blocks for long:

* **sampler** (every 4 ms): a lane is sampled only when all its cells have a conversion ready, so a read
  never waits; a lane whose cells stay silent past 200 ms (80 SPS) / 800 ms (10 SPS) is read anyway, the
  read times out after 2 ms and the lane reports a sensor fault. The per-sample path allocates nothing;
  an event (rare) is journalled, counted and sent at once.
* **link** (every 20 ms): downlink lines are decoded and authenticated; acks release outbox events;
  commands are executed and answered with ``command_result``. Timers: ``hello``, retransmission,
  ``lane_state`` and ``health``.
* **housekeeping** (every 250 ms): uptime, the identify LED, outbox compaction, garbage collection and the
  watchdog (fed only while the other two tasks make progress).

Nothing here runs in an interrupt handler; a board that adds one (a button, say) must only set a flag.

Link behaviour (shared_protocol/README.md sections 4.3 and 11):

* ``hello`` at boot, repeated after 2, 4, 8, 16 s then every 30 s until an authenticated downlink frame
  arrives (the hub answers every hello with an ack). The session is considered lost, and hellos start
  again, after 60 s without an authenticated downlink frame while events wait for an ack, or after 5 min
  without one at all (the hub may have restarted without its state; the ack to a hello costs one frame).
* Events are sent as soon as they are recorded, oldest first. Unacknowledged events are sent again, up to 8
  per round in order (new frames, new seq), when an ack has not advanced for ``retransmit_ms`` (2 s);
  each round without progress doubles that wait, up to 30 s. An ack that covers everything sent starts the
  next round at once, so a backlog (after a reboot or an outage) drains at the hub's pace.
* ``lane_state`` after each event of that lane and for every lane every ``lane_state_s`` (10 s, spread
  over the period); ``health`` every ``health_s`` (30 s) and when a session starts.
* The outbox journal is compacted when 32 acknowledged events are in it, or a minute after the last ack
  once nothing is pending.

Commands (answer ``command_result(command_seq = the command frame's seq, status, value)``):

==================  ==================================================================================
``tare``            OK, value = new zero offset (raw counts); BUSY while the lane moves or is faulted
``calibrate``       OK, value = counts per 10 g; BUSY as for tare; FAILED for an implausible result
``set_lane``        OK; the unit weight, spread and SKU are stored and used from the next sample
``identify``        OK; the LED blinks for ``seconds`` (0 stops)
``set_config``      OK; UNSUPPORTED for an unknown key; BAD_ARGS out of range (keys: ``SETTINGS``)
``request_state``   ``lane_state`` of the lane (255: all lanes), then OK
==================  ==================================================================================

A lane number the node does not have is BAD_ARGS; a flash error is FAILED.
"""

import os
import struct
from array import array

from firmware import FW_VERSION
from firmware.calibration import CalibrationError, CalibrationStore
from firmware.config import CONFIG_FILE, Config, ConfigError, load
from firmware.counters import CountersStore
from firmware.detector import Detector
from firmware.hx711 import HX711
from firmware.lane import Lane
from firmware.link_serial import SerialLink
from firmware.outbox import Outbox
from firmware.persist import Record
from firmware.seq_store import SeqStore, next_boot
from firmware.shelf import Shelf
from firmware.ticks import ticks_add, ticks_diff
from shared_protocol.auth import Key
from shared_protocol.compat import const
from shared_protocol.frame import DownlinkReceiver, UplinkSender
from shared_protocol.messages import (
    ALL_LANES,
    STATUS_BAD_ARGS,
    STATUS_BUSY,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_UNSUPPORTED,
    Ack,
    Calibrate,
    CommandResult,
    Health,
    Hello,
    Identify,
    RequestState,
    SetConfig,
    SetLane,
    Tare,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from firmware.link_serial import ByteIO
    from shared_protocol.frame import Frame
    from shared_protocol.messages import Message

    class Board(Protocol):
        root: str  # flash root: "" on a board (files at /config.json, /state/...)

        def setup(self, cfg: Config) -> None: ...
        def cell(self, sck: int, dout: int, rate_sps: int) -> "tuple[Any, Any, Any]":
            """(clock_pin, data_pin, clock) for one HX711; clock None means the time module."""
            ...

        def now_ms(self) -> int:
            """time.ticks_ms(): milliseconds modulo 2**30."""
            ...

        def link_io(self) -> ByteIO: ...
        def mem_free(self) -> int: ...
        def set_led(self, on: bool) -> None: ...
        def feed_watchdog(self) -> None: ...


HELLO_MIN_MS = const(2000)
HELLO_MAX_MS = const(30000)
RETRANSMIT_MAX_MS = const(30000)
BURST = const(8)  # events per retransmission round
SESSION_PENDING_MS = const(60000)  # no downlink for this long while events wait: hello again
SESSION_IDLE_MS = const(300000)  # no downlink for this long at all: hello again
SAMPLE_POLL_MS = const(4)
LINK_POLL_MS = const(20)
HOUSEKEEPING_MS = const(250)
READ_TIMEOUT_MS = const(2)  # a read is only started when the cell is ready (or has stalled)
COMPACT_ACKED = const(32)
COMPACT_IDLE_MS = const(60000)
GC_EVERY_MS = const(5000)
BLINK_MS = const(250)
_MAX_U32 = const(0xFFFFFFFF)

# set_config keys (protocol README, section 5.4): key -> (setting, lo, hi), values in seconds.
SETTINGS = {1: ("lane_state_s", 1, 3600), 2: ("health_s", 5, 3600)}
_ASSIGN_FMT = ">IH"  # unit_weight_dg, spread_permille, then the SKU's bytes


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except OSError:
        pass


def load_assignment(path: str) -> "tuple[int, int, str]":
    """(unit_weight_dg, spread_permille, sku) stored by set_lane; (0, 0, "") when none is valid."""
    data = Record(path).load()
    if data is None or len(data) < 7 or len(data) > 6 + 32:
        return 0, 0, ""
    unit, spread = struct.unpack(_ASSIGN_FMT, data[:6])
    raw = data[6:]
    for c in raw:
        if c < 0x20 or c > 0x7E:
            return 0, 0, ""
    if not 1 <= unit <= 1000000 or spread > 1000:
        return 0, 0, ""
    return unit, spread, raw.decode()


def save_assignment(path: str, unit_dg: int, spread_permille: int, sku: str) -> None:
    Record(path).save(struct.pack(_ASSIGN_FMT, unit_dg, spread_permille) + sku.encode())


def _sleep_ms(ms: int) -> "Any":
    import asyncio

    s = getattr(asyncio, "sleep_ms", None)
    if s is not None:
        return s(ms)
    return asyncio.sleep(ms / 1000)


class Node:
    """One booted node. ``sample_once``, ``service_link`` and ``housekeeping`` are the bodies of the three
    tasks; tests call them directly on virtual time, ``serve`` runs them as asyncio tasks."""

    def __init__(self, cfg: Config, board: "Board", root: str = "") -> None:
        self.cfg = cfg
        self.board = board
        st = root + "/state"
        _mkdir(st)
        self._st = st
        self.boot = next_boot(st + "/boot")  # persisted before any frame depends on it
        self._seqs = SeqStore(st + "/seq")
        key = Key(cfg.key)
        self.link = SerialLink(
            board.link_io(),
            UplinkSender(cfg.node_id, key, self._seqs.next),
            DownlinkReceiver(cfg.node_id, key, self.boot),
        )
        n = len(cfg.lanes)
        lanes = []
        self._cells: list[list[HX711]] = []
        self._cal: list[CalibrationStore] = []
        self.skus: list[str] = []
        self.notes: list[str] = []
        stall = []
        for i in range(n):
            lc = cfg.lanes[i]
            cells = []
            for sck, dout in lc.cells:
                clk_pin, data_pin, clock = board.cell(sck, dout, lc.rate_sps)
                cells.append(HX711(clk_pin, data_pin, clock=clock, ready_timeout_ms=READ_TIMEOUT_MS, poll_us=500))
            store = CalibrationStore(st + "/cal" + str(i), len(cells))
            cal = store.load()
            if store.error:
                self.notes.append("lane " + str(i) + ": " + store.error)
            unit, spread, sku = load_assignment(st + "/lane" + str(i))
            if not unit:
                self.notes.append("lane " + str(i) + ": no SKU assigned (events carry no count)")
            lanes.append(Lane(i, cells, cal, Detector(unit, spread)))
            self._cells.append(cells)
            self._cal.append(store)
            self.skus.append(sku)
            stall.append(200 if lc.rate_sps == 80 else 800)
        self._stall = array("i", stall)
        self.shelf = Shelf(lanes, Outbox(st + "/outbox", self.boot), CountersStore(st + "/counters", n))
        if self.shelf.counters.error:
            self.notes.append(self.shelf.counters.error)
        self.lane_state_ms = cfg.lane_state_s * 1000
        self.health_ms = cfg.health_s * 1000
        self._settings = Record(st + "/settings")
        self._load_settings()
        now = board.now_ms()
        self._since = array("i", [now] * n)
        self.started_ms = now
        self.running = False
        # link state
        self.session = False
        self._last_rx = now
        self._hello_at = now
        self._hello_gap = HELLO_MIN_MS
        ob = self.shelf.outbox
        self._sent = (ob.first_seq() if ob.depth else ob.next_seq) - 1  # a backlog goes out in rounds
        self._rtx_gap = cfg.retransmit_ms
        self._rtx_at = now
        self._rtx_armed = ob.depth > 0
        self._ls_lane = 0
        self._ls_at = ticks_add(now, self.lane_state_ms // n)
        self._health_at = ticks_add(now, self.health_ms)
        self._rate_samples = 0
        self._rate_at = now
        self._last_progress = now
        # housekeeping state
        self._up_ms = 0
        self._up_last = now
        self._gc_at = now
        self._ident_until = now
        self._ident = False
        self._led = False
        self._alive = 0
        self.events = 0
        self.compactions = 0

    # -- settings ---------------------------------------------------------------------------------
    def _load_settings(self) -> None:
        data = self._settings.load()
        if not data or len(data) % 5:
            return
        for i in range(0, len(data), 5):
            k, v = struct.unpack(">Bi", data[i : i + 5])
            self._apply_setting(k, v)

    def _apply_setting(self, key: int, value: int) -> int:
        spec = SETTINGS.get(key)
        if spec is None:
            return STATUS_UNSUPPORTED
        name, lo, hi = spec
        if value < lo or value > hi:
            return STATUS_BAD_ARGS
        if name == "lane_state_s":
            self.lane_state_ms = value * 1000
        else:
            self.health_ms = value * 1000
        return STATUS_OK

    def _store_settings(self) -> None:
        buf = bytearray()
        buf += struct.pack(">Bi", 1, self.lane_state_ms // 1000)
        buf += struct.pack(">Bi", 2, self.health_ms // 1000)
        self._settings.save(bytes(buf))

    # -- sampler task -----------------------------------------------------------------------------
    def sample_once(self, now: int) -> int:
        """Sample every lane whose cells all have data (or that has stalled); returns the events recorded.
        Allocates nothing unless an event is recorded."""
        n = 0
        i = 0
        since = self._since
        lanes = self.shelf.lanes
        count = len(lanes)
        while i < count:
            lane = lanes[i]
            ready = True
            for cell in self._cells[i]:
                if not cell.ready():
                    ready = False
                    break
            if ready or ticks_diff(now, since[i]) > self._stall[i]:
                since[i] = now
                if lane.sample(now):
                    self._on_event(lane, now)
                    n += 1
            i += 1
        self._alive |= 1
        return n

    def _on_event(self, lane: Lane, now: int) -> None:
        seq = self.shelf.record(lane)
        self.events += 1
        ob = self.shelf.outbox
        if seq == self._sent + 1:  # nothing older is waiting for a first transmission: send it now
            if self.link.send(ob.message(ob.depth - 1, now)):
                self._sent = seq
            if not self._rtx_armed:  # wait for progress, then re-send; each wait doubles the next
                self._rtx_armed = True
                self._rtx_at = ticks_add(now, self._rtx_gap)
                self._rtx_gap = min(self._rtx_gap * 2, RETRANSMIT_MAX_MS)
        elif not self._rtx_armed:
            self._rtx_armed = True
            self._rtx_at = now
        self.link.send(self.shelf.lane_state(lane.index))

    # -- link task --------------------------------------------------------------------------------
    def service_link(self, now: int) -> None:
        for frame in self.link.poll():
            self._handle(frame, now)
        self._timers(now)
        self._alive |= 2

    def _handle(self, frame: "Frame", now: int) -> None:
        self._last_rx = now
        msg = frame.message
        if not self.session:
            self.session = True
            self._hello_gap = HELLO_MIN_MS
            self._on_session(now)
        if isinstance(msg, Ack):
            self._on_ack(msg.event_seq, now)
            return
        try:
            status, value = self._command(msg, now)
        except (OSError, CalibrationError) as err:
            print("smartshelf: command " + msg.NAME + " failed: " + str(err))
            status, value = STATUS_FAILED, 0
        self.link.send(CommandResult(frame.seq, status, value))

    def _on_session(self, now: int) -> None:
        self.link.send(self.health(now))
        for i in range(len(self.shelf.lanes)):
            self.link.send(self.shelf.lane_state(i))
        if self.shelf.outbox.depth:  # the hub may not have been listening: re-send what waits now
            self._rtx_armed = True
            self._rtx_at = now

    def _on_ack(self, upto: int, now: int) -> None:
        ob = self.shelf.outbox
        before = ob.acked
        ob.ack(upto)
        if ob.acked == before:
            return
        self._last_progress = now
        self._rtx_gap = self.cfg.retransmit_ms
        if not ob.depth:
            self._rtx_armed = False
        elif ob.acked >= self._sent:  # everything sent is in: send the next round of the backlog now
            self._rtx_armed = True
            self._rtx_at = now
        else:
            self._rtx_armed = True
            self._rtx_at = ticks_add(now, self._rtx_gap)

    def _timers(self, now: int) -> None:
        if self.session:
            quiet = ticks_diff(now, self._last_rx)
            if quiet > SESSION_IDLE_MS or (quiet > SESSION_PENDING_MS and self.shelf.outbox.depth):
                self.session = False
                self._hello_gap = HELLO_MIN_MS
                self._hello_at = now
        if not self.session and ticks_diff(now, self._hello_at) >= 0:
            self.link.send(self.hello())
            self._hello_at = ticks_add(now, self._hello_gap)
            self._hello_gap = min(self._hello_gap * 2, HELLO_MAX_MS)
        if self._rtx_armed and ticks_diff(now, self._rtx_at) >= 0:
            self._round(now)
        n = len(self.shelf.lanes)
        if ticks_diff(now, self._ls_at) >= 0:
            self.link.send(self.shelf.lane_state(self._ls_lane))
            self._ls_lane = (self._ls_lane + 1) % n
            self._ls_at = ticks_add(now, self.lane_state_ms // n)
        if ticks_diff(now, self._health_at) >= 0:
            self.link.send(self.health(now))
            self._health_at = ticks_add(now, self.health_ms)

    def _round(self, now: int) -> None:
        """(Re)send the oldest unacknowledged events, in order, at most BURST of them."""
        ob = self.shelf.outbox
        if not ob.depth:
            self._rtx_armed = False
            return
        k = ob.depth if ob.depth < BURST else BURST
        for i in range(k):
            m = ob.message(i, now)
            if self.link.send(m) and m.event_seq > self._sent:
                self._sent = m.event_seq
        self._rtx_at = ticks_add(now, self._rtx_gap)
        self._rtx_gap = min(self._rtx_gap * 2, RETRANSMIT_MAX_MS)

    # -- messages ---------------------------------------------------------------------------------
    def hello(self) -> Hello:
        return Hello(
            FW_VERSION[0], FW_VERSION[1], FW_VERSION[2], self.boot, len(self.shelf.lanes), self.cfg.layout_hash()
        )

    def uptime_ms(self, now: int) -> int:
        d = ticks_diff(now, self._up_last)
        if d > 0:
            self._up_ms += d
            self._up_last = now
        return self._up_ms

    def health(self, now: int) -> Health:
        lanes = self.shelf.lanes
        total = 0
        for lane in lanes:
            total += lane.samples
        dt = ticks_diff(now, self._rate_at)
        rate = 0
        if dt > 0:
            rate = (total - self._rate_samples) * 100000 // (dt * len(lanes))
            self._rate_samples = total
            self._rate_at = now
        ob = self.shelf.outbox
        return Health(
            min(self.uptime_ms(now) // 1000, _MAX_U32),
            min(max(self.board.mem_free(), 0), _MAX_U32),
            min(rate, 0xFFFF),
            self.link.tx_frames & _MAX_U32,
            self.link.rx_frames & _MAX_U32,
            self.link.rejected() & _MAX_U32,
            min(ob.depth, 0xFFFF),
            ob.dropped & _MAX_U32,
            ob.first_seq(),
        )

    # -- commands ---------------------------------------------------------------------------------
    def _lane(self, i: int) -> "Lane | None":
        if 0 <= i < len(self.shelf.lanes):
            return self.shelf.lanes[i]
        return None

    def _command(self, msg: "Message", now: int) -> "tuple[int, int]":
        if isinstance(msg, RequestState):
            n = len(self.shelf.lanes)
            if msg.lane == ALL_LANES:
                for j in range(n):
                    self.link.send(self.shelf.lane_state(j))
            elif msg.lane < n:
                self.link.send(self.shelf.lane_state(msg.lane))
            else:
                return STATUS_BAD_ARGS, 0
            return STATUS_OK, 0
        if isinstance(msg, Identify):
            self._ident = msg.seconds > 0
            self._ident_until = ticks_add(now, msg.seconds * 1000)
            if not self._ident:
                self._set_led(False)
            return STATUS_OK, 0
        if isinstance(msg, SetConfig):
            status = self._apply_setting(msg.key, msg.value)
            if status == STATUS_OK:
                self._store_settings()
                self._ls_at = now
                self._health_at = ticks_add(now, self.health_ms)
            return status, 0
        if isinstance(msg, Tare):
            lane = self._lane(msg.lane)
            if lane is None:
                return STATUS_BAD_ARGS, 0
            offset = lane.tare()
            if offset is None:
                return STATUS_BUSY, 0
            self._cal[lane.index].save(lane.cal)
            return STATUS_OK, offset
        if isinstance(msg, Calibrate):
            lane = self._lane(msg.lane)
            if lane is None:
                return STATUS_BAD_ARGS, 0
            try:
                c10 = lane.calibrate(msg.known_weight_dg)
            except CalibrationError as err:
                print("smartshelf: lane " + str(lane.index) + " calibration refused: " + str(err))
                return STATUS_FAILED, 0
            if c10 is None:
                return STATUS_BUSY, 0
            self._cal[lane.index].save(lane.cal)
            return STATUS_OK, c10
        if isinstance(msg, SetLane):
            lane = self._lane(msg.lane)
            if lane is None:
                return STATUS_BAD_ARGS, 0
            save_assignment(self._st + "/lane" + str(lane.index), msg.unit_weight_dg, msg.spread_permille, msg.sku)
            lane.det.set_unit(msg.unit_weight_dg, msg.spread_permille)
            self.skus[lane.index] = msg.sku
            return STATUS_OK, 0
        return STATUS_UNSUPPORTED, 0

    # -- housekeeping task ------------------------------------------------------------------------
    def _set_led(self, on: bool) -> None:
        if on != self._led:
            self._led = on
            self.board.set_led(on)

    def housekeeping(self, now: int) -> None:
        self.uptime_ms(now)
        if self._ident:
            if ticks_diff(now, self._ident_until) >= 0:
                self._ident = False
                self._set_led(False)
            else:
                self._set_led((ticks_diff(now, self._ident_until) // BLINK_MS) & 1 == 0)
        ob = self.shelf.outbox
        acked_in_journal = ob.journal_records - ob.depth
        if acked_in_journal >= COMPACT_ACKED or (
            ob.journal_records and not ob.depth and ticks_diff(now, self._last_progress) >= COMPACT_IDLE_MS
        ):
            ob.compact()
            self.compactions += 1
        if ticks_diff(now, self._gc_at) >= 0:
            import gc

            gc.collect()
            self._gc_at = ticks_add(now, GC_EVERY_MS)
        if self._alive == 3:  # both other tasks ran since the last feed
            self._alive = 0
            self.board.feed_watchdog()

    def step(self, now: int) -> None:
        """One round of all three tasks (tests drive the node with this on virtual time)."""
        self.sample_once(now)
        self.service_link(now)
        self.housekeeping(now)

    # -- asyncio ----------------------------------------------------------------------------------
    async def _sampler(self) -> None:
        board = self.board
        while self.running:
            self.sample_once(board.now_ms())
            await _sleep_ms(SAMPLE_POLL_MS)

    async def _linker(self) -> None:
        board = self.board
        while self.running:
            self.service_link(board.now_ms())
            await _sleep_ms(LINK_POLL_MS)

    async def _housekeeper(self) -> None:
        board = self.board
        while self.running:
            self.housekeeping(board.now_ms())
            await _sleep_ms(HOUSEKEEPING_MS)

    async def serve(self) -> None:
        """Run the three tasks until ``running`` is cleared (a board runs until reset)."""
        import asyncio

        self.running = True
        tasks = [
            asyncio.create_task(self._sampler()),
            asyncio.create_task(self._linker()),
            asyncio.create_task(self._housekeeper()),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            self.running = False


def boot(board: "Board") -> "Node | None":
    """Load the config and boot; a bad config is reported on the console and nothing runs (None)."""
    path = board.root + CONFIG_FILE
    try:
        cfg = load(path)
    except ConfigError as err:
        print("smartshelf: config error: " + str(err))
        print("smartshelf: node not started; fix " + path + " and reset")
        return None
    board.setup(cfg)
    node = Node(cfg, board, board.root)
    print(
        "smartshelf: node "
        + str(cfg.node_id)
        + " boot "
        + str(node.boot)
        + ", "
        + str(len(cfg.lanes))
        + " lanes, "
        + str(node.shelf.outbox.depth)
        + " events waiting"
    )
    for note in node.notes:
        print("smartshelf: " + note)
    return node


async def run(board: "Board") -> "Node | None":
    """Boot and serve; returns None at once when the config is bad."""
    node = boot(board)
    if node is None:
        return None
    await node.serve()
    return node


def main(board: "Board | None" = None) -> None:
    """The firmware entry point on a board (``/main.py`` calls it)."""
    import asyncio

    if board is None:
        from firmware.main import MachineBoard

        board = MachineBoard()
    asyncio.run(run(board))
