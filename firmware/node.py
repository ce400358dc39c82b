"""The shelf node: ``await run(board)`` boots and serves it on any board (``firmware/main.py`` on a real one).

A *board* gives the node its hardware (see ``Board`` below): pins for each load cell, the clock, the serial
link's byte I/O, the LED, free memory, the watchdog, the flash root, and for RFID readers a UART each and the
antenna switches' output pins. ``firmware/main.py`` builds one from
``machine.Pin``; ``tools/emulation/board.py`` builds one from emulated HX711s. The *link* the node talks to the
hub over is given to it too (``open_link``: the serial link on the board's byte I/O), so another link can take
its place with the same session, outbox and ack rules. Everything else is the same on every board.

Boot: read and validate ``<root>/config.json`` (a bad config is reported on the console and nothing runs),
make ``<root>/state/`` this identity's (``identity.py``: a board provisioned under a new id starts afresh), count
the boot (``seq_store.next_boot``: it is the downlink session), restore the frame sequence, the lanes'
calibrations and SKU assignments, the outbox and the counters from ``<root>/state/``.

Three asyncio tasks (four with RFID readers), none of which blocks for long:

* **sampler** (every 4 ms, here): a lane is sampled only when all its cells have a conversion ready, so a
  read never waits; a lane whose cells stay silent past 200 ms (80 SPS) / 800 ms (10 SPS) is read anyway,
  the read times out after 2 ms and the lane reports a sensor fault. The per-sample path allocates nothing;
  an event (rare) is journalled, counted and sent at once, followed by its lane's state.
* **link** (every 20 ms): downlink frames are authenticated (``session.py``); acks release outbox events
  (``delivery.py``); commands are executed and answered (``commands.py``). Timers: ``hello`` (session),
  retransmission (delivery), ``lane_state`` and ``health`` (``reports.py``).
* **housekeeping** (every 250 ms, ``housekeeping.py``): uptime, the identify LED, outbox compaction, garbage
  collection and the watchdog (fed only while the other tasks make progress).
* **rfid** (every 10 ms, only with an ``rfid`` config section: ``rfid/poller.py``): each reader's UART is read
  without waiting and its inventory cycle advanced; tag reads update the presence table, and a tag that appears
  on or leaves a lane becomes a ``tag_seen`` / ``tag_lost`` record in the outbox (the events' sequence, journalled,
  delivered and acknowledged like an event); ``reader_health`` goes up with ``health`` and when a reader's state
  changes. It allocates nothing per tag read, and its per-poll work is bounded (a few ms), so the sampler keeps
  its timing. A node without readers never imports ``firmware/rfid/``.

Nothing here runs in an interrupt handler; a board that adds one (a button, say) must only set a flag.

Where each part lives::

    node.py          the node: wiring from config + board + link, the sampler, the three tasks, boot
    session.py       Session: uplink tags and frame seq, downlink checks, hello and session up / lost
    delivery.py      Delivery: events on the wire: first send, retransmission rounds, acks
    reports.py       Reports: lane_state and health on timers, the health message
    commands.py      Commands: tare, calibrate, set_lane, identify, set_config, request_state, set_count
    settings.py      Settings: set_config's keys, kept on flash
    assignment.py    a lane's SKU assignment on flash
    identity.py      the state on flash belongs to one node id; another's is removed at boot
    housekeeping.py  Uptime, IdentifyLed, Housekeeping (compaction, gc, watchdog)
    link_serial.py   SerialLink: frames over the USB console; StdioIO
    link_ble.py      BleLink: frames over one GATT service (notify up, write down), advertising
    beacons.py       Beacons: the lanes' counts advertised as an authenticated beacon (BLE)
    rfid/            UHF RFID: the reader driver (uhf.py), tag presence per lane (presence.py), the task (poller.py)
    standby.py       the lanes' levels kept across a stop (Ctrl-C), so the next boot counts what changed meanwhile
    shelf.py, lane.py, detector.py, hx711.py, outbox.py, counters.py, ...: the sensing pipeline and its state
"""

import os
from array import array

from firmware import FW_VERSION, standby
from firmware.assignment import assignment_path, load_assignment
from firmware.beacons import Beacons
from firmware.calibration import CalibrationStore
from firmware.commands import Commands
from firmware.config import CONFIG_FILE, Config, ConfigError, load
from firmware.counters import CountersStore
from firmware.delivery import Delivery
from firmware.detector import Detector
from firmware.housekeeping import LINK_ALIVE, RFID_ALIVE, SAMPLER_ALIVE, Housekeeping, IdentifyLed, Uptime
from firmware.hx711 import HX711
from firmware.identity import adopt
from firmware.lane import Lane
from firmware.link_serial import SerialLink
from firmware.outbox import Outbox
from firmware.reports import Reports
from firmware.seq_store import SeqStore, next_boot
from firmware.session import Session
from firmware.settings import Settings
from firmware.shelf import Shelf
from firmware.ticks import ticks_diff
from shared_protocol.auth import Key
from shared_protocol.compat import const
from shared_protocol.messages import MAX_STEP, Ack, Hello

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from firmware.link_serial import ByteIO
    from firmware.rfid.poller import RfidPoller
    from firmware.session import Link

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
        def uart(self, index: int, tx: int, rx: int, baud: int) -> "Any":
            """A machine.UART-like object on those pins (``write``, ``any``, ``readinto(buf, n)``), non-blocking:
            an RFID reader's link (``firmware/rfid/``)."""
            ...

        def pin_out(self, n: int) -> "Any":
            """A machine.Pin-like output (``value(v)``), low at first: an RFID antenna switch's line."""
            ...

        def mem_free(self) -> int: ...
        def set_led(self, on: bool) -> None: ...
        def feed_watchdog(self) -> None: ...


UNWATCHED_MS = const(60000)  # after a stop, lanes are compared with their levels within this time of the boot
PROVEN_MS = const(600000)  # a new image that ran this long without a reset has proven itself (firmware/trial.py)
SAMPLE_POLL_MS = const(4)
LINK_POLL_MS = const(20)
RFID_POLL_MS = const(10)
HOUSEKEEPING_MS = const(250)
READ_TIMEOUT_MS = const(2)  # a read is only started when the cell is ready (or has stalled)


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except OSError:
        pass


def _sleep_ms(ms: int) -> "Any":
    import asyncio

    s = getattr(asyncio, "sleep_ms", None)
    if s is not None:
        return s(ms)
    return asyncio.sleep(ms / 1000)


class Node:
    """One booted node. ``sample_once``, ``service_link`` and ``housekeeping`` are the bodies of the three
    tasks; tests call them directly on virtual time, ``serve`` runs them as asyncio tasks."""

    def __init__(self, cfg: Config, board: "Board", link: "Link", root: str = "") -> None:
        self.cfg = cfg
        self.board = board
        self.link = link
        st = root + "/state"
        _mkdir(st)
        cleared = adopt(st, cfg.node_id)  # another identity's counters and events are not this node's
        self.boot = next_boot(st + "/boot")  # persisted before any frame depends on it
        self._seqs = SeqStore(st + "/seq")
        n = len(cfg.lanes)
        lanes = []
        self._cells: list[list[HX711]] = []
        cal_stores: list[CalibrationStore] = []
        self.notes: list[str] = []
        if cleared:
            self.notes.append("new identity: " + str(cleared) + " state files of the previous one removed")
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
            unit, spread, sku = load_assignment(assignment_path(st, i))
            if not unit:
                self.notes.append("lane " + str(i) + ": no SKU assigned (events carry no count)")
            lane = Lane(i, cells, cal, Detector(unit, spread))
            lane.sku = sku
            lanes.append(lane)
            self._cells.append(cells)
            cal_stores.append(store)
            stall.append(200 if lc.rate_sps == 80 else 800)
        self._stall = array("i", stall)
        outbox = Outbox(st + "/outbox", self.boot, cfg.outbox)
        self.shelf = Shelf(lanes, outbox, CountersStore(st + "/counters", n))
        self._levels_path = st + "/levels"
        before = standby.take(self._levels_path, n)  # [level, c10] per lane at the last stop, if it was one
        self._before = before
        self._unwatched = 0  # lanes still to compare with them
        if before is not None:
            for i in range(n):
                if before[2 * i] != standby.UNKNOWN:
                    self._unwatched += 1
        if self.shelf.counters.error:
            self.notes.append(self.shelf.counters.error)
        self.settings = Settings(st + "/settings", cfg.lane_state_s, cfg.health_s)
        now = board.now_ms()
        self._since = array("i", [now] * n)
        self.started_ms = now
        self.running = False
        self.events = 0
        # called once: when the hub first answers, or after PROVEN_MS of running (the image works, hub or not)
        self.on_proven: Callable[[], None] | None = None
        hello = Hello(FW_VERSION[0], FW_VERSION[1], FW_VERSION[2], self.boot, n, cfg.layout_hash())
        self.session = Session(link, cfg.node_id, Key(cfg.key), self.boot, self._seqs.next, hello, now)
        self.delivery = Delivery(self.shelf.outbox, self.session, cfg.retransmit_ms, now)
        self.uptime = Uptime(now)
        self.reports = Reports(self.shelf, self.session, self.settings, self.uptime, board.mem_free, now)
        self.led = IdentifyLed(board.set_led, now)
        self.commands = Commands(
            self.shelf, cal_stores, st, self.session, self.reports, self.settings, self.led, self._deliver
        )
        self.keeper = Housekeeping(self.shelf.outbox, self.delivery, self.uptime, self.led, board.feed_watchdog, now)
        self.rfid: RfidPoller | None = None
        if cfg.rfid is not None:
            from firmware.rfid import poller

            self.shelf.outbox.enable_tags()  # the EPC ring, allocated now while the heap is whole
            self.rfid = poller.RfidPoller(cfg.rfid, board, self.shelf.outbox, self._deliver, self.session.send, now)
            self.notes.extend(self.rfid.notes)
            self.reports.rfid = self.rfid
            self.keeper.need |= RFID_ALIVE
        self.beacons: Beacons | None = None
        advertise = getattr(link, "advertise", None)
        if advertise is not None:  # a radio link: the lanes' state is advertised (firmware/beacons.py) instead
            self.beacons = Beacons(self.shelf, cfg.node_id, Key(cfg.key), self._seqs.next, advertise, now)
            self.reports.periodic_lanes = False

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
                elif self._unwatched and lane.det.stable:
                    n += self._compare_with_stop(lane, now)
            i += 1
        self.keeper.alive |= SAMPLER_ALIVE
        return n

    def _compare_with_stop(self, lane: Lane, now: int) -> int:
        """A lane's first stable level after a boot that followed a stop (``standby.py``): what changed while the
        firmware was stopped becomes an anomaly. Once per lane, within UNWATCHED_MS of the boot (a lane that does
        not settle by then is not compared); 1 when it recorded one."""
        before = self._before
        i = lane.index
        if before is None or ticks_diff(now, self.started_ms) > UNWATCHED_MS:
            self._unwatched = 0
            return 0
        level, c10 = before[2 * i], before[2 * i + 1]
        if level == standby.UNKNOWN:
            return 0
        before[2 * i] = standby.UNKNOWN
        self._unwatched -= 1
        unit = lane.det.unit_dg()
        if unit <= 0 or lane.fault or not lane.cal.calibrated or lane.cal.c10 != c10:
            return 0  # no count to give, or another scale than the level was measured with
        d = lane.det.level_dg() - level
        ad = d if d >= 0 else -d
        floor = 5 * lane.det.noise_dg()
        if ad < (floor if floor > 20 else 20) or 2 * ad < unit:
            return 0
        k = standby.unwatched_count(d, unit)
        if k > MAX_STEP or k < -MAX_STEP:
            k = 0  # not a count a shelf can have changed by: the weight only
        self._deliver(self.shelf.record_unwatched(i, k, d, now), now)
        self.reports.lane_state(i)
        return 1

    def save_levels(self) -> None:
        """The firmware stops on purpose (Ctrl-C: mpremote, smartshelf flash): keep the lanes' levels so the next
        boot counts what changes meanwhile (``standby.py``)."""
        try:
            standby.save(self._levels_path, self.shelf.lanes)
        except Exception as err:  # never instead of the Ctrl-C that asked the node to stop
            print("smartshelf: lane levels not kept: " + repr(err))

    def _on_event(self, lane: Lane, now: int) -> None:
        self._deliver(self.shelf.record(lane), now)
        self.reports.lane_state(lane.index)

    def _deliver(self, seq: int, now: int) -> None:
        """Record ``seq`` (the outbox's newest: an event, or a tag record from the RFID task) is kept: send it."""
        self.events += 1
        self.delivery.recorded(seq, now)

    # -- link task --------------------------------------------------------------------------------
    def service_link(self, now: int) -> None:
        session = self.session
        frames = session.poll()
        if frames:
            self.link.vouch()  # authenticated: the one talking to the node is the hub
        if self.link.fresh():  # a hub has just connected (BLE): hello now, so what waits goes on this connection
            session.restart(now)
        for frame in frames:
            if session.heard(now):  # the hub answered: tell it where the node stands, re-send what waits
                self.reports.session_started(now)
                self.delivery.resume(now)
                self._proven()
            msg = frame.message
            if isinstance(msg, Ack):
                self.delivery.acked(msg.event_seq, now)
            else:
                self.commands.answer(frame, now)
        session.tick(now, self.shelf.outbox.depth > 0)
        self.delivery.tick(now)
        self.reports.tick(now)
        if self.beacons is not None:
            self.beacons.tick(now)
        self.keeper.alive |= LINK_ALIVE

    # -- rfid task --------------------------------------------------------------------------------
    def poll_rfid(self, now: int) -> None:
        rfid = self.rfid
        if rfid is not None:
            rfid.poll(now)
            self.keeper.alive |= RFID_ALIVE

    # -- housekeeping task ------------------------------------------------------------------------
    def housekeeping(self, now: int) -> None:
        self.keeper.run(now)
        if self.on_proven is not None and self.uptime.ms(now) >= PROVEN_MS:
            self._proven()

    def _proven(self) -> None:
        hook, self.on_proven = self.on_proven, None
        if hook is not None:
            hook()

    def step(self, now: int) -> None:
        """One round of every task (tests drive the node with this on virtual time)."""
        self.sample_once(now)
        self.poll_rfid(now)
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

    async def _rfid_poller(self) -> None:
        board = self.board
        while self.running:
            self.poll_rfid(board.now_ms())
            await _sleep_ms(RFID_POLL_MS)

    async def _housekeeper(self) -> None:
        board = self.board
        while self.running:
            self.housekeeping(board.now_ms())
            await _sleep_ms(HOUSEKEEPING_MS)

    async def serve(self) -> None:
        """Run the tasks until ``running`` is cleared (a board runs until reset)."""
        import asyncio

        self.running = True
        tasks = [
            asyncio.create_task(self._stoppable(self._sampler())),
            asyncio.create_task(self._stoppable(self._linker())),
            asyncio.create_task(self._stoppable(self._housekeeper())),
        ]
        if self.rfid is not None:
            tasks.append(asyncio.create_task(self._stoppable(self._rfid_poller())))
        try:
            await asyncio.gather(*tasks)
        finally:
            self.running = False

    async def _stoppable(self, body: "Any") -> None:
        """A task's body; a Ctrl-C raised in it (someone takes the board over: mpremote, smartshelf flash) keeps
        the lanes' levels. On a board the KeyboardInterrupt then leaves ``asyncio.run`` (MicroPython's asyncio
        catches only Exception around a task), where ``firmware/app.py`` keeps them too (harmless: the same
        levels); the emulated board's ROM stops the program at the task, so only this one runs there."""
        try:
            await body
        except KeyboardInterrupt:
            self.save_levels()
            raise


CURRENT: "Node | None" = None  # the node ``run`` serves (``firmware/app.py`` keeps its levels on a Ctrl-C)


def open_link(cfg: Config, board: "Board") -> "Link":
    """The link ``cfg`` asks for on ``board``: the serial link on the board's byte I/O, or BLE on the board's radio
    (``board.ble()`` when the board has one, else ``bluetooth.BLE()``)."""
    if cfg.link == "ble":
        from firmware.link_ble import BleLink

        radio = getattr(board, "ble", None)
        if radio is not None:
            ble = radio()
        else:
            import bluetooth  # type: ignore[import-not-found, unused-ignore]

            ble = bluetooth.BLE()
        return BleLink(ble, cfg.ble_mtu, cfg.adv_ms * 1000, "shelf-" + str(cfg.node_id), board.now_ms)
    return SerialLink(board.link_io())


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
    node = Node(cfg, board, open_link(cfg, board), board.root)
    print(
        "smartshelf: node "
        + str(cfg.node_id)
        + " boot "
        + str(node.boot)
        + ", "
        + str(len(cfg.lanes))
        + " lanes, "
        + (str(len(node.rfid.readers)) + " RFID reader(s), " if node.rfid is not None else "")
        + str(node.shelf.outbox.depth)
        + " events waiting"
    )
    if node.shelf.outbox.migrated:
        print("smartshelf: outbox journal rewritten in the v2 format (tag records)")
    if node.shelf.outbox.torn_records:
        print("smartshelf: outbox journal: a record cut short (its write was interrupted) failed its CRC: dropped")
    for note in node.notes:
        print("smartshelf: " + note)
    return node


async def run(board: "Board", on_proven: "Callable[[], None] | None" = None) -> "Node | None":
    """Boot and serve; returns None at once when the config is bad. ``on_proven`` is called once, when the hub first
    answers or after PROVEN_MS of running (``firmware/app.py``: the installed image's trial ends)."""
    global CURRENT
    node = boot(board)
    if node is None:
        return None
    node.on_proven = on_proven
    CURRENT = node
    await node.serve()
    return node
