"""``smartshelf bench rfid``: what UHF RFID adds to the weight, and what its poller costs the sampler (issue #12).

**1. Alerts: weight alone and weight + RFID, side by side.** ``Plan.scenarios`` seeded store scenarios with ground
truth (``tools/emulation/scenarios.py``'s ``ScenarioBuilder`` with tags on): one shelf node of four 80 SPS lanes,
two of them tagged (an SGTIN-96 on every unit), from one of ``LAYOUTS`` (each has an untagged lane whose unit weighs
what a tagged SKU's does, so a misplaced tagged item can pass the weight check). Every lane gets honest shoppers for
``active_s`` (``_lane_story``, as ``ScenarioBuilder.shoppers``: a shopper every ``mean_gap_s`` on average, picks of
1-3 paid 40-120 s later, a fifth partly put back 5-20 s later, hands leaning on the shelf, staff restocking 1-3
minutes after the reorder point) and, drawn per lane, at most one of each incident: a theft (1-2 units never paid),
a damaged item (25-60 % of its weight lost), on tagged lanes a substitution (a unit swapped for an object of the same
weight: only its tag leaves), and a misplaced item of another SKU (tagged or not), which is the lane's last action
(the emulated shelf would let a later shopper pick the foreign item as one of the lane's units, and its truth row
and sale would count it as the lane's SKU). 0-6 tagged items sit on the next shelf (strays, read weakly by every
antenna) until ``STRAY_CLEAR_S`` before the node stops, so no cross-read is cut off by the end of the run (one long
enough during the run is the product's to judge).

Each scenario runs the real firmware (``firmware/node.py``'s ``Node``, its RFID task included) on the emulated board
(pin-level HX711s, the byte-level UHF module and its tags: ``tools/emulation/board.py``) under CPython on virtual
time, every task stepped every ``STEP_MS`` (10 ms: each 80 SPS conversion is read before the next one), with a hub
that acknowledges every record at once; each uplink frame is kept with its time. The frames then go, at their
times, into two real hubs (``HubService`` without ports: ``Ingest`` verifies and books them exactly as frames from a
serial port, each arrival committed and the node's checks run before the next, on a fresh SQLite ledger each)
opened with the scenario's store (``tools/emulation/store.py`` ``open_store``, plus the next shelf's SKU so its tags
have a name), the POS sales of the ground truth at their pay times, the staff's restocks (received and shelved) when
they are on the lane, and ``Reconciler.run_once`` (the production ``ReconcileConfig``) every ``interval_s`` of
virtual time until every pick has settled (``window_s + grace_s`` after the node stops). *Weight + RFID* gets every
frame; *weight alone* gets the same frames without ``tag_seen`` / ``tag_lost`` / ``reader_health``, the records
renumbered (``event_seq``, ``lane_state.last_event``, ``health.outbox_first``) and signed again: what the same node
without a reader sends (``tests/test_rfid_bench.py`` checks that).

Scoring, per alert kind: ground truth says which ``(kind, cause key)`` must be raised (one alert per cause key,
``lane:<lane>/<sku>``): a theft -> ``shrinkage``, a damage -> ``damage``, a misplaced item -> ``misplaced``, a
substitution -> ``tamper`` (``store.expected_outcome``; tamper from its ``substituted``). Every alert of those kinds
that a hub raised (open or resolved) is matched on its key: precision = matched / raised, recall = matched /
expected; also how many matched alerts name the cause in their evidence (the pick or event at its time, the tag).
``sensor`` and ``reorder`` alerts are counted, not scored (a node that stops sending is ``silent`` at the end of
every run). Also: the picks whose count the tags settled (``recon_pick_rfid.units_by_tags``) against the truth,
what became of each theft's pick (unexplained, explained by a sale or a put, uncertain), how the node reported each
incident and the verdict on each substituted tag, and the unexpected and missing alerts with the scenario that
reproduces them (``make_scenario(seed, index, plan)``).

**2. Sampler cost, in real time.** One node plan (the first layout, its tags on the shelf and being read, four
strays, shoppers) is served with ``Node.serve`` on the board's **wall clock** with and without an ``rfid`` config
section, the two runs at once (one core each) for ``sampler_s`` seconds after a ``WARMUP_S`` boot, under the real
MicroPython (the WebAssembly build, ``tools/mpy_runtime``, with the emulated board's 2 MiB heap), then under
CPython (a fresh interpreter each): the body is ``tools/bench/portable/rfid_sampler.py``. A late sampler finds
conversions overwritten (``HX711Chip.missed``): missed conversions (per hour), conversions, tag reads per second,
the sampler's share of the time and the interval between its calls (p99, max), the poller's own time per call
(p50 / p99 / max, the emulated module's time taken out) and share. The emulated hardware runs on the node's
interpreter (the HX711s inside the sampler's pin accesses), and WebAssembly MicroPython on this host and CPython are
not an ESP32: the figures compare the two runs of one runtime, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import logging
import math
import multiprocessing
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firmware import config as node_config
from firmware import node as node_mod
from hub.config import HubConfig, NodeConfig
from hub.ledger.causes import Cause
from hub.ledger.models import Sku as LedgerSku
from hub.ledger.service import LedgerService
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.reconciler import Reconciler
from hub.service import HubService
from shared_protocol.auth import Key
from shared_protocol.downlink_text import encode_line
from shared_protocol.frame import DownlinkSender, UplinkReceiver, UplinkSender
from shared_protocol.messages import Ack, Event, Health, LaneState, Message
from shared_protocol.serial_framing import SerialDecoder
from tools.bench import host_figures
from tools.emulation.board import EmulatedBoard
from tools.emulation.provision import provision
from tools.emulation.scenarios import (
    CATALOG,
    FIRST_ACTION_S,
    GAP_S,
    STRAY_SKU,
    LaneSetup,
    Scenario,
    ScenarioBuilder,
    Sku,
)
from tools.emulation.store import STAFF, expected_outcome, lane_id, open_store
from tools.mpy_runtime import REPO_ROOT, ROM_PACKAGES, MicroPythonRuntime

NODE = 1
KEY = bytes(range(1, 33))
STEP_MS = 10  # every task of the node, stepped on virtual time (80 SPS: a conversion every 12.5 ms)
TAIL_S = 40.0  # the node runs this long after the last action ends (tags lost, lane states sent)
STRAY_CLEAR_S = 40.0  # strays leave the next shelf this long before the node stops
INCIDENT_MARGIN_S = 45.0  # incidents start at least this long before the shoppers stop
SCORED = ("shrinkage", "tamper", "misplaced", "damage")
FIELDS = ("expected", "raised", "matched", "evidence_names_cause")
TAG_MESSAGES = ("tag_seen", "tag_lost", "reader_health")
POS = "bench-pos"
WARMUP_S = 5.0  # sampler runs: the boot's conversions are not counted
MPY_HEAP_BYTES = 2 * 1024 * 1024  # as the emulated board's (tools/mpy_runtime NodeProcess)

# Lanes of the bench: two tagged SKUs of the catalogue, and an untagged SKU weighing what one of them weighs (another
# brand of nuts beside the chips, of beans beside the coffee), so a misplaced tagged unit can fit the lane's weight.
NUTS = Sku("NUTS-165", 165.0, 0.02)
BEANS = Sku("BEANS-262", 262.0, 0.02)
LAYOUTS: tuple[tuple[LaneSetup, ...], ...] = (
    (
        LaneSetup(CATALOG["CHIPS-150"], 24, 6),
        LaneSetup(NUTS, 24, 6),
        LaneSetup(CATALOG["COFFEE-250"], 18, 5),
        LaneSetup(CATALOG["COLA-330"], 24, 6),
    ),
    (
        LaneSetup(CATALOG["COFFEE-250"], 18, 5),
        LaneSetup(BEANS, 18, 5),
        LaneSetup(CATALOG["SOUP-400"], 18, 5),
        LaneSetup(CATALOG["CHIPS-150"], 24, 6),
    ),
)
# What a shopper may leave on a lane of each SKU (catalogue SKUs: tagged ones carry their tag there).
MISPLACED = {
    "CHIPS-150": ("COFFEE-250", "CHOC-100", "COLA-330"),
    "NUTS-165": ("CHIPS-150", "CHIPS-150", "COFFEE-250"),
    "COFFEE-250": ("CHIPS-150", "COLA-330", "SNACK-45"),
    "COLA-330": ("CHIPS-150", "COFFEE-250", "SOUP-400"),
    "BEANS-262": ("COFFEE-250", "COFFEE-250", "CHIPS-150"),
    "SOUP-400": ("CHIPS-150", "COFFEE-250", "TEA-100"),
}
P_THEFT, P_DAMAGE, P_MISPLACED, P_SUBSTITUTION = 0.4, 0.25, 0.35, 0.5


@dataclass(frozen=True)
class Plan:
    scenarios: int
    active_s: float  # shoppers come for this long (from FIRST_ACTION_S)
    mean_gap_s: float  # between two shoppers at one lane
    sampler_s: float  # real-time seconds of each sampler run (after WARMUP_S)


FULL = Plan(scenarios=16, active_s=420.0, mean_gap_s=45.0, sampler_s=60.0)
QUICK = Plan(scenarios=4, active_s=240.0, mean_gap_s=45.0, sampler_s=15.0)


# ------------------------------------------------------------------------------------------------------ scenarios


@dataclass
class Spec:
    """What was drawn for one scenario (for the report and to reproduce it)."""

    index: int
    seed: int
    layout: int
    strays: int
    incidents: list[tuple[int, str, float, str]] = field(default_factory=list)  # (lane, kind, t, detail)
    node_end_s: float = 0.0


def make_scenario(seed: int, index: int, plan: Plan) -> tuple[Scenario, Spec]:
    """Scenario ``index`` of the bench with ``seed``: a layout, strays, and per lane shoppers and incidents."""
    rng = random.Random(f"bench-rfid:{seed}:{index}")
    layout_no = index % len(LAYOUTS)
    b = ScenarioBuilder([NODE], seed=rng.randrange(1 << 30), layouts=(LAYOUTS[layout_no],), tagged=True)
    active_end = FIRST_ACTION_S + plan.active_s
    spec = Spec(index, seed, layout_no, rng.choice((0, 2, 4, 6)))
    if spec.strays:
        b.stray(NODE, spec.strays, t_on=0.0, t_off=active_end)
    for lane, setup in enumerate(LAYOUTS[layout_no]):
        incidents: list[tuple[float, str, str]] = []
        window = (FIRST_ACTION_S + 10.0, active_end - INCIDENT_MARGIN_S)
        if rng.random() < P_THEFT:
            incidents.append((rng.uniform(*window), "theft", str(rng.choice((1, 1, 2)))))
        if rng.random() < P_DAMAGE:
            incidents.append((rng.uniform(*window), "damage", f"{rng.uniform(0.25, 0.6):.2f}"))
        if setup.sku.gtin is not None and rng.random() < P_SUBSTITUTION:
            incidents.append((rng.uniform(*window), "substitution", ""))
        incidents.sort()
        if rng.random() < P_MISPLACED:  # the lane's last action (see _lane_story)
            late = (max(window[0], window[1] - (window[1] - window[0]) / 3), window[1])
            incidents.append((rng.uniform(*late), "misplaced", rng.choice(MISPLACED[setup.sku.sku])))
        _lane_story(b, rng, lane, active_end, incidents, plan.mean_gap_s, spec)
    scenario = b.build(f"bench-rfid-{seed}-{index}")
    last = max(r.t_end for r in scenario.truth)
    spec.node_end_s = max(active_end, last) + TAIL_S
    if spec.strays:  # the next shelf is cleared STRAY_CLEAR_S before the end (see the module docstring)
        for tag in scenario.nodes[NODE].tags:
            for span in tag["spans"]:
                if span[0] is None:
                    span[2] = min(span[2] if span[2] is not None else math.inf, spec.node_end_s - STRAY_CLEAR_S)
    return scenario, spec


def _lane_story(
    b: ScenarioBuilder,
    rng: random.Random,
    lane: int,
    t_to: float,
    incidents: list[tuple[float, str, str]],
    mean_gap_s: float,
    spec: Spec,
) -> None:
    """Honest shoppers on one lane (as ``ScenarioBuilder.shoppers``) with the lane's incidents among them, in time
    order (the builder starts each action once the lane is quiet). A misplaced item is the lane's last action: the
    emulation's shelf lets a later pick take the foreign item as one of the lane's units (its truth row would count
    it as the lane's SKU, and its sale too), which would blur the truth of every later action on the lane."""
    sim = b.lane(NODE, lane)
    t = FIRST_ACTION_S + rng.uniform(0.0, mean_gap_s)
    restock_at: float | None = None
    pending = list(incidents)
    while t < t_to or pending:
        if pending and (pending[0][0] <= t or t >= t_to):
            at, kind, detail = pending.pop(0)
            at = max(at, sim.free_at)
            if kind == "theft" and sim.stock > 1:
                row = b.pick(NODE, lane, at, min(int(detail), sim.stock - 1), paid=False)
            elif kind == "damage":
                row = b.damage(NODE, lane, at, float(detail))
            elif kind == "misplaced":
                row = b.misplaced(NODE, lane, at, detail)
            elif kind == "substitution" and any(e is not None for e in sim.epcs):
                row = b.substitution(NODE, lane, at)
            else:
                continue
            spec.incidents.append((lane, kind, round(row.t, 3), detail))
            if kind == "misplaced":  # nobody touches the lane afterwards (see the docstring)
                return
            continue
        if restock_at is not None and t >= restock_at:
            target = max(sim.setup.initial, 2 * sim.setup.reorder_point)
            if target > sim.stock:
                b.restock(NODE, lane, t, target - sim.stock)
            restock_at = None
        r = rng.random()
        if r < 0.8 and sim.stock > 1:
            k = min(rng.choice((1, 1, 1, 2, 2, 3)), sim.stock - 1)
            row = b.pick(NODE, lane, t, k)
            if rng.random() < 0.2:
                b.put_back(row, row.t_end + rng.uniform(5.0, 20.0), rng.randint(1, k))
        elif r < 0.9:
            b.press(NODE, lane, t)
        if restock_at is None and sim.stock <= sim.setup.reorder_point:
            restock_at = sim.free_at + rng.uniform(60.0, 180.0)
        t = max(t, sim.free_at) + GAP_S + rng.expovariate(1.0 / mean_gap_s)


def node_files(scenario: Scenario, with_reader: bool = True) -> tuple[dict[str, Any], str]:
    """The board plan and the node's config text (with the ``rfid`` section, or without: no reader)."""
    npl = scenario.nodes[NODE]
    extra: dict[str, Any] = {}
    rfid = npl.rfid_config()
    if with_reader and rfid is not None:
        extra["rfid"] = rfid
    return npl.plan(), node_config.dumps(NODE, KEY, npl.config_lanes(), **extra)


# ---------------------------------------------------------------------------------------- the node, virtual time


@dataclass
class Uplink:
    t_ms: int  # when the frame left the node (scenario time)
    raw: bytes  # the frame as sent (authenticated)
    msg: Message


@dataclass
class NodeRun:
    uplinks: list[Uplink]
    virtual_s: float
    cpu_s: float
    conversions: int
    missed: int
    reader: dict[str, int]
    module: dict[str, int]


def run_node(scenario: Scenario, until_s: float, root: str, with_reader: bool = True) -> NodeRun:
    """The real firmware on the emulated board, every task stepped every ``STEP_MS`` of virtual time until
    ``until_s``; a hub acknowledges every record as it arrives. Returns the frames with their times."""
    plan, cfg = node_files(scenario, with_reader)
    provision(root, cfg, plan)
    up = bytearray()
    down = bytearray()

    class IO:
        def write(self, data: bytes) -> None:
            up.extend(data)

        def read_available(self) -> bytes:
            d = bytes(down)
            down.clear()
            return d

    t = [0]
    board = EmulatedBoard(plan, IO(), lambda: t[0], root)
    with contextlib.redirect_stdout(io.StringIO()):  # the boot's console lines
        node = node_mod.boot(board)
    if node is None:
        raise RuntimeError("bench rfid: the node did not boot")
    rx = UplinkReceiver({NODE: Key(KEY)})
    tx = DownlinkSender(NODE, Key(KEY))
    dec = SerialDecoder()
    uplinks: list[Uplink] = []
    acked = 0
    until_ms = round(until_s * 1000)
    cpu0 = time.process_time()
    while t[0] < until_ms:
        t[0] += STEP_MS
        node.step(board.now_ms())
        if not up:
            continue
        hi = acked
        hello = False
        for raw in dec.feed(bytes(up)):
            msg = rx.accept(raw).message
            uplinks.append(Uplink(t[0], raw, msg))
            if msg.NAME == "hello":
                tx.new_session(getattr(msg, "boot_count"))  # noqa: B009
                hello = True
            seq = getattr(msg, "event_seq", 0)
            if seq > hi:
                hi = seq
        up.clear()
        if hello or hi > acked:
            acked = hi
            down.extend(encode_line(tx.encode(Ack(hi))))
    cpu = time.process_time() - cpu0
    reader: dict[str, int] = {}
    module: dict[str, int] = {}
    if node.rfid is not None and node.rfid.readers:
        r = node.rfid.readers[0]
        reader = {"reads": r.reads, "bad_frames": r.bad_frames, "dwells": r.dwells, "errors": node.rfid.errors}
        module = board.readers[0].stats()
    return NodeRun(
        uplinks, until_ms / 1000, cpu, sum(c.conversions for c in board.chips), sum(c.missed for c in board.chips),
        reader, module,
    )  # fmt: skip


def weight_only(uplinks: Sequence[Uplink]) -> list[tuple[int, bytes]]:
    """The frames a node without a reader would have sent: tag records and reader health left out, the records'
    sequence renumbered (``event_seq``, ``lane_state.last_event``, ``health.outbox_first``), signed again."""
    tag_seqs = sorted(u.msg.event_seq for u in uplinks if u.msg.NAME in ("tag_seen", "tag_lost"))  # type: ignore[attr-defined]

    def renumber(seq: int) -> int:
        """The weight-only number of the record ``seq`` (or of the first weight record after it)."""
        lo, hi = 0, len(tag_seqs)
        while lo < hi:
            mid = (lo + hi) // 2
            if tag_seqs[mid] < seq:
                lo = mid + 1
            else:
                hi = mid
        return seq - lo

    frame_seq = [0]

    def next_seq() -> int:
        frame_seq[0] += 1
        return frame_seq[0]

    sender = UplinkSender(NODE, Key(KEY), next_seq)
    out: list[tuple[int, bytes]] = []
    for u in uplinks:
        msg = u.msg
        if msg.NAME in TAG_MESSAGES:
            continue
        msg = copy.copy(msg)
        if isinstance(msg, Event):
            msg.event_seq = renumber(msg.event_seq)
        elif isinstance(msg, LaneState) and msg.last_event:
            msg.last_event = renumber(msg.last_event)
        elif isinstance(msg, Health) and msg.outbox_first:
            msg.outbox_first = renumber(msg.outbox_first)
        out.append((u.t_ms, sender.encode(msg)))
    return out


# ---------------------------------------------------------------------------------------------------- the hub side


class BenchLink:
    """The hub's link to the node: what it sends down (acks, lane assignments) is counted and dropped, the node
    having run already (it was acknowledged at once)."""

    name = "bench-node-1"
    connected = True

    def __init__(self) -> None:
        self.frames = 0

    def send_frame(self, frame: bytes) -> bool:
        self.frames += 1
        return True


@dataclass
class HubOutcome:
    alerts: list[dict[str, Any]]
    verdicts: dict[str, int]
    tag_picks: list[dict[str, Any]]  # picks whose count the tags settled
    picks: list[dict[str, Any]]  # every settled pick: lane, time, units, put back, sold, unexplained, status
    steps: list[dict[str, Any]]  # every sensor pick, put and anomaly: lane, time, kind, count, confidence
    departures: dict[str, list[str]]  # EPC -> the verdicts on its departures, in time order
    frames: int
    seconds: float
    epoch_ms: int
    warnings: list[str]  # what the hub logged at warning level or above


class _Warnings(logging.Handler):
    """The hub's warnings during a replay, kept (for the report) instead of printed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._logger = logging.getLogger("hub")
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def close(self) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate
        super().close()


async def replay_hub(
    scenario: Scenario, frames: Sequence[tuple[int, bytes]], node_end_s: float, directory: Path
) -> HubOutcome:
    """Book ``frames`` (scenario ms, raw frame) into a real hub at their times beside the POS's sales and the
    staff's restocks, reconciling every ``interval_s`` of virtual time until every pick has settled."""
    started = time.monotonic()
    cfg = ReconcileConfig()
    hub_cfg = HubConfig(
        path=directory / "hub.toml",
        database=directory / "ledger.db",
        synchronous="NORMAL",
        nodes=(NodeConfig(NODE, KEY, BenchLink.name),),
    )
    hub = HubService(hub_cfg, control=False, open_ports=False, reconcile=False)
    warnings = _Warnings()
    await hub.start()
    try:
        ledger, ingest = hub.ledger, hub.ingest
        assert ledger is not None and ingest is not None
        await open_store(ledger, scenario)
        stray = CATALOG[STRAY_SKU]  # the next shelf's SKU: the store sells it, so its tags have a name
        await ledger.add_sku(
            LedgerSku(stray.sku, stray.sku.title(), round(stray.unit_g * 10), round(stray.spread * 1000),
                      gtin=stray.gtin), actor=STAFF,
        )  # fmt: skip
        epoch_ms = (time.time_ns() // 60_000_000_000) * 60_000  # whole minute: the opening books come just before
        link = BenchLink()
        rec = Reconciler(ledger, cfg)
        business = _business(scenario)
        step_ms = round(cfg.interval_s * 1000)
        end_ms = round((node_end_s + cfg.window_s + cfg.grace_s) * 1000) + 2 * step_ms
        # One timeline: frames as they leave the node, sales and restocks as they are made, a reconcile run every
        # interval_s. Each arrival is booked (and the node's checks have run) before the next one: the frames of a
        # node come some milliseconds apart, never a minute's worth at once.
        timeline: list[tuple[int, int, Any]] = [(t, 1, raw) for t, raw in frames]
        timeline += [(t, 0, fn) for t, fn in business]
        timeline += [(t, 2, None) for t in range(step_ms, end_ms + 1, step_ms)]
        timeline.sort(key=lambda x: (x[0], x[1]))
        enqueued = 0
        i = 0
        while i < len(timeline):
            t, what, item = timeline[i]
            if what == 1:  # every frame of this instant (one read of the port)
                while i < len(timeline) and timeline[i][0] == t and timeline[i][1] == 1:
                    wall_offset = time.time_ns() - time.monotonic_ns()
                    ingest.enqueue(link, timeline[i][2], (epoch_ms + t) * 1_000_000 - wall_offset)
                    enqueued += 1
                    i += 1
                await _settle(ledger, ingest, enqueued)
                continue
            if what == 0:
                await item(ledger, epoch_ms)
            else:
                await rec.run_once(epoch_ms + t)
            i += 1
        alerts = await _alerts(hub_cfg.database)
        verdicts, tag_picks, picks, steps, departures = _tables(hub_cfg.database, epoch_ms)
    finally:
        await hub.stop()
        warnings.close()
    return HubOutcome(
        alerts, verdicts, tag_picks, picks, steps, departures, len(frames), time.monotonic() - started, epoch_ms,
        warnings.messages,
    )  # fmt: skip


async def _nothing(_tx: object) -> None:
    return None


async def _settle(ledger: LedgerService, ingest: Any, enqueued: int) -> None:
    """Until ingest has handled every frame given to it, what it submitted has committed, and the node's checks
    that waited for that commit (lane and outbox checks, a sensor gap they book) have had their turn."""
    for _ in range(10000):
        if ingest.stats.frames >= enqueued:
            break
        await asyncio.sleep(0)
    for _ in range(2):
        await ledger.transact(_nothing)  # after everything submitted before it
        for _ in range(4):
            await asyncio.sleep(0)


def _business(scenario: Scenario) -> list[tuple[int, Any]]:
    """The POS's sales (paid units at their pay time) and the staff's restocks (received and shelved when the
    items are on the lane), as ``(scenario ms, coroutine function(ledger, epoch_ms))``, in time order."""
    out: list[tuple[int, Any]] = []
    for i, row in enumerate(scenario.truth):
        lid = lane_id(row.node, row.lane)
        if row.paid_units and row.pay_t is not None:
            at = round(row.pay_t * 1000)

            async def sale(ledger: LedgerService, epoch: int, r: Any = row, k: int = i, ms: int = at) -> None:
                await ledger.record_sale(r.sku, r.paid_units, actor=POS, ref=f"pos:{k}", ts=epoch + ms)

            out.append((at, sale))
        elif row.action == "restock":
            at = round(row.t_end * 1000)

            async def restock(
                ledger: LedgerService, epoch: int, r: Any = row, k: int = i, ms: int = at, lid: str = lid
            ) -> None:
                await ledger.record_receipt(r.sku, r.units, actor=STAFF, ref=f"delivery:{k}", ts=epoch + ms)
                await ledger.restock(r.sku, lid, r.units, actor=STAFF, ref=f"restock:{k}", ts=epoch + ms)

            out.append((at, restock))
    out.sort(key=lambda x: x[0])
    return out


async def _alerts(database: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute("SELECT kind, cause_key, status, evidence FROM alerts ORDER BY id").fetchall()
    finally:
        conn.close()
    return [{"kind": k, "cause": c, "status": s, "evidence": json.loads(e)} for k, c, s, e in rows]


def _tables(
    database: Path, epoch_ms: int
) -> tuple[dict[str, int], list[Any], list[Any], list[Any], dict[str, list[str]]]:
    """From the ledger: the verdicts on tag departures (counted), the picks of tagged lanes (what the tags said),
    every settled pick, every sensor step, each EPC's verdicts."""
    conn = sqlite3.connect(database)
    try:
        verdicts = dict(conn.execute("SELECT verdict, count(*) FROM recon_tags GROUP BY verdict").fetchall())
        rows = conn.execute(
            "SELECT p.lane_id, p.ts_ms, r.counted, r.confidence, r.tags_left, r.units_by_tags"
            " FROM recon_pick_rfid r JOIN recon_picks p ON p.movement_id = r.pick_id ORDER BY p.ts_ms"
        ).fetchall()
        settled = conn.execute(
            "SELECT lane_id, ts_ms, units, put_back, sold, unexplained, status FROM recon_picks ORDER BY ts_ms"
        ).fetchall()
        moves = conn.execute(
            "SELECT location, ts_ms, reason, qty, weight_delta_dg, confidence FROM movements WHERE reason IN"
            " ('sensor_pick', 'sensor_put', 'sensor_anomaly') ORDER BY ts_ms, id"
        ).fetchall()
        judged = conn.execute("SELECT epc, verdict FROM recon_tags ORDER BY ts_ms, event_id").fetchall()
    finally:
        conn.close()
    tag_picks = [
        {"lane": lane, "t": (ts - epoch_ms) / 1000, "counted": c, "confidence": conf, "tags_left": n, "by_tags": u}
        for lane, ts, c, conf, n, u in rows
    ]
    picks = [
        {"lane": lane, "t": (ts - epoch_ms) / 1000, "units": u, "put_back": pb, "sold": so, "unexplained": ux,
         "status": st}
        for lane, ts, u, pb, so, ux, st in settled
    ]  # fmt: skip
    steps = [
        {"lane": loc.split(":", 1)[1], "t": (ts - epoch_ms) / 1000, "kind": reason.removeprefix("sensor_"),
         "count": q, "weight_dg": w, "confidence": conf}
        for loc, ts, reason, q, w, conf in moves
    ]  # fmt: skip
    departures: dict[str, list[str]] = {}
    for epc, verdict in judged:
        departures.setdefault(epc.upper(), []).append(verdict)
    return {str(k): int(v) for k, v in verdicts.items()}, tag_picks, picks, steps, departures


# -------------------------------------------------------------------------------------------------------- scoring


def expected_alerts(scenario: Scenario) -> set[tuple[str, str]]:
    """What ground truth says must be raised: ``(kind, cause key)`` of the scored kinds."""
    exp = expected_outcome(scenario.truth, math.inf)
    out = {a for a in exp.alerts if a[0] in SCORED}
    skus = {lane_id(r.node, r.lane): r.sku for r in scenario.truth}
    for lid, _epc in exp.substituted:
        out.add(("tamper", str(Cause.lane_sku(lid, skus[lid]))))
    return out


def score(scenario: Scenario, outcome: HubOutcome) -> dict[str, Any]:
    """Raised against expected per kind, and for each alert that matched, whether its evidence names the cause: a
    pick, damage or put event at the time of the theft / damage / misplaced item, the misplaced unit's tag, the
    substituted unit's tag."""
    expected = expected_alerts(scenario)
    raised = {(a["kind"], a["cause"]) for a in outcome.alerts if a["kind"] in SCORED}
    evidence = {(a["kind"], a["cause"]): a["evidence"] for a in outcome.alerts if a["kind"] in SCORED}
    per_kind = {}
    for kind in SCORED:
        e = {a for a in expected if a[0] == kind}
        r = {a for a in raised if a[0] == kind}
        named = sum(1 for a in e & r if _names_cause(scenario, a, evidence[a], outcome.epoch_ms))
        per_kind[kind] = {"expected": len(e), "raised": len(r), "matched": len(e & r), "evidence_names_cause": named}
    others = Counter(
        f"{a['kind']}:{a['evidence'].get('problem', '')}" if a["kind"] == "sensor" else a["kind"]
        for a in outcome.alerts
        if a["kind"] not in SCORED
    )
    return {
        "per_kind": per_kind,
        "unexpected": sorted(raised - expected),
        "missing": sorted(expected - raised),
        "other_alerts": dict(others),
    }


CAUSE_ACTION = {"shrinkage": "theft", "damage": "damage", "misplaced": "misplaced", "tamper": "substitution"}


def _names_cause(scenario: Scenario, alert: tuple[str, str], ev: dict[str, Any], epoch_ms: int) -> bool:
    kind, cause = alert
    rows = [
        r for r in scenario.truth
        if r.action == CAUSE_ACTION[kind] and str(Cause.lane_sku(lane_id(r.node, r.lane), r.sku)) == cause
    ]  # fmt: skip
    epcs = {e.upper() for r in rows for e in r.epcs}
    if kind == "tamper":
        return any(t.get("epc", "").upper() in epcs for t in ev.get("tags", []))
    if kind == "misplaced" and any(t.get("epc", "").upper() in epcs for t in ev.get("tags", [])):
        return True
    items = ev.get("picks", []) if kind == "shrinkage" else ev.get("events", [])
    times = [(i.get("ts_ms") or 0) - epoch_ms for i in items]
    return any(r.t * 1000 - 2000 <= t <= r.t_end * 1000 + 5000 for r in rows for t in times)


def _count_check(scenario: Scenario, picks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Picks whose count the tags settled, each with the truth's units (the nearest pick of the lane in time)."""
    out = []
    for p in picks:
        if p["by_tags"] is None:
            continue
        rows = [
            r
            for r in scenario.truth
            if lane_id(r.node, r.lane) == p["lane"]
            and r.action in ("pick", "theft")
            and r.t - 2 <= p["t"] <= r.t_end + 5
        ]
        truth = -rows[0].units if rows else None
        out.append(dict(p, truth=truth))
    return out


def _incidents(scenario: Scenario, outcome: HubOutcome) -> Counter[str]:
    """How the node reported each incident (the lane's sensor step at its time: kind and count), and for a
    substitution the hub's verdict on its tag's departure: the reasons behind the recall figures."""
    out: Counter[str] = Counter()
    for r in scenario.truth:
        if r.action not in ("theft", "damage", "misplaced", "substitution"):
            continue
        lid = lane_id(r.node, r.lane)
        near = [s for s in outcome.steps if s["lane"] == lid and r.t - 2 <= s["t"] <= r.t_end + 5]
        if r.action == "substitution":
            verdicts = [v for e in r.epcs for v in outcome.departures.get(e.upper(), [])]
            out[f"substitution: {verdicts[0] if verdicts else 'not judged'}"] += 1
            if near:
                out["substitution: weight step reported"] += 1
            continue
        if not near:
            out[f"{r.action}: nothing reported"] += 1
            continue
        s = near[0]
        count = "count 0" if s["count"] == 0 else f"count {s['count']:+d}"
        out[f"{r.action}: {s['kind']}, {count}" + (", low confidence" if s["confidence"] < 60 else "")] += 1
    return out


def _thefts(scenario: Scenario, picks: list[dict[str, Any]]) -> Counter[str]:
    """What became of each theft's pick in the hub: ``unexplained`` (a shrinkage alert), ``uncertain`` (counted
    with low confidence), ``put_back`` (a later put on the lane, a restock too, taken for its return), ``sold``
    (another pick's sale explained it), ``not_reported`` (no pick of the lane at that time)."""
    out: Counter[str] = Counter()
    for r in scenario.truth:
        if r.action != "theft":
            continue
        lid = lane_id(r.node, r.lane)
        near = [p for p in picks if p["lane"] == lid and r.t - 2 <= p["t"] <= r.t_end + 5]
        if not near:
            out["not_reported"] += 1
        elif near[0]["status"] == "uncertain":
            out["uncertain"] += 1
        elif near[0]["unexplained"]:
            out["unexplained"] += 1
        elif near[0]["put_back"]:
            out["put_back"] += 1
        else:
            out["sold"] += 1
    return out


# -------------------------------------------------------------------------------------------- one scenario, worker


def _opening_gap(message: str) -> bool:
    """The first lane states book each lane's opening count as a sensor gap (the node counts from its installer's
    count, the ledger from 0): expected, not reported."""
    return "sensor gap" in message and "(up to event 0), the ledger had 0)" in message


def run_scenario(job: tuple[int, int, Plan]) -> dict[str, Any]:
    """Everything for one scenario: the node, both hubs, the scores (a worker process's job)."""
    seed, index, plan = job
    scenario, spec = make_scenario(seed, index, plan)
    tmp = Path(tempfile.mkdtemp(prefix="ssb-rfid-"))
    try:
        node = run_node(scenario, spec.node_end_s, str(tmp / "flash"))
        full = [(u.t_ms, u.raw) for u in node.uplinks]
        alone = weight_only(node.uplinks)
        results = {}
        for name, frames in (("weight", alone), ("rfid", full)):
            d = tmp / name
            d.mkdir()
            outcome = asyncio.run(replay_hub(scenario, frames, spec.node_end_s, d))
            results[name] = {
                "score": score(scenario, outcome),
                "verdicts": outcome.verdicts,
                "counts_by_tags": _count_check(scenario, outcome.tag_picks),
                "tag_picks": len(outcome.tag_picks),
                "thefts": dict(_thefts(scenario, outcome.picks)),
                "incidents": dict(_incidents(scenario, outcome)),
                "frames": outcome.frames,
                "hub_s": round(outcome.seconds, 2),
                "hub_warnings": [w for w in outcome.warnings if not _opening_gap(w)],
                "alerts": [
                    {"kind": a["kind"], "cause": a["cause"], "status": a["status"]}
                    for a in outcome.alerts
                    if a["kind"] in SCORED
                ],
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kinds = Counter(u.msg.NAME for u in node.uplinks)
    truth = Counter(r.action for r in scenario.truth if r.action != "initial")
    return {
        "spec": asdict(spec),
        "truth": dict(truth),
        "node": {
            "virtual_s": node.virtual_s,
            "cpu_s": round(node.cpu_s, 2),
            "frames": dict(kinds),
            "conversions": node.conversions,
            "missed": node.missed,
            "reader": node.reader,
            "module_reads": node.module.get("reads", 0),
        },
        "weight": results["weight"],
        "rfid": results["rfid"],
    }


# ----------------------------------------------------------------------------------------------- the sampler cost


def sampler_plan(seed: int, seconds: float) -> tuple[dict[str, Any], str, str]:
    """The sampler runs' node: the first layout, its tags on the shelf, four strays on the next shelf and shoppers
    throughout; the plan and the config with and without the reader."""
    rng = random.Random(f"bench-rfid-sampler:{seed}")
    b = ScenarioBuilder([NODE], seed=rng.randrange(1 << 30), layouts=(LAYOUTS[0],), tagged=True)
    b.stray(NODE, 4)
    for lane in range(len(LAYOUTS[0])):
        b.shoppers(NODE, lane, FIRST_ACTION_S, WARMUP_S + seconds, mean_gap_s=20.0)
    scenario = b.build("bench-rfid-sampler")
    plan, with_reader = node_files(scenario, True)
    _, without = node_files(scenario, False)
    return plan, with_reader, without


def _mpy_sampler(args: tuple[str, str, float]) -> dict[str, Any]:
    plan_json, cfg, seconds = args
    packages = (*ROM_PACKAGES, (REPO_ROOT / "tools" / "bench", "tools/bench"))
    # the emulated board's heap (tools/mpy_runtime NodeProcess): the firmware and the emulated hardware share it
    rt = MicroPythonRuntime(packages=packages, heap_bytes=MPY_HEAP_BYTES, timeout_s=seconds + WARMUP_S + 120)
    with rt:
        out: dict[str, Any] = rt.call(
            "tools.bench.portable.rfid_sampler", "run", plan_json, cfg, "/bench-node", seconds, WARMUP_S
        )
        return out


def _cpython_sampler(args: tuple[str, str, float]) -> dict[str, Any]:
    """The same body on CPython, in a fresh interpreter of its own (``rfid_sampler.main``)."""
    plan_json, cfg, seconds = args
    proc = subprocess.run(
        [sys.executable, "-m", "tools.bench.portable.rfid_sampler"],
        input=json.dumps([plan_json, cfg, seconds, WARMUP_S]),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=seconds + WARMUP_S + 120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the CPython sampler run failed:\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _side_by_side(fn: Any, jobs: list[tuple[str, str, float]]) -> dict[str, Any]:
    """Both runs at once, one thread each waiting on its own process (Node.js or Python)."""
    try:
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(fn, jobs))
    except Exception as exc:  # report, do not hide: the other runtime's figures are still valid
        return {"error": f"{type(exc).__name__}: {exc}"}
    w, wo = _sampler_figures(done[0]), _sampler_figures(done[1])
    return {"with_reader": w, "without_reader": wo, "ratios": _sampler_ratios(w, wo)}


def sampler_cost(seed: int, seconds: float) -> dict[str, Any]:
    """With and without the reader side by side (concurrently), under MicroPython (WebAssembly), then CPython."""
    plan, with_reader, without = sampler_plan(seed, seconds)
    plan_json = json.dumps(plan)
    jobs = [(plan_json, with_reader, seconds), (plan_json, without, seconds)]
    return {
        "seconds": seconds,
        "warmup_s": WARMUP_S,
        "micropython": _side_by_side(_mpy_sampler, jobs),
        "cpython": _side_by_side(_cpython_sampler, jobs),
    }


def _sampler_figures(r: dict[str, Any]) -> dict[str, Any]:
    secs = r["elapsed_s"]
    reader = r.get("reader") or {}
    return {
        **r,
        "missed_per_hour": round(r["missed"] * 3600 / secs) if secs else None,
        "conversions_per_s": round(r["conversions"] / secs, 1) if secs else None,
        "reads_per_s": round(r["reads"] / secs, 1) if reader and secs else None,
        "sampler_busy": round(r["sampler"]["total_ms"] / (secs * 1000), 4) if secs else None,
        "poller_busy": round(r["poller"]["total_ms"] / (secs * 1000), 4) if secs else None,
        "poller_own_busy": round(r["poller_own"]["total_ms"] / (secs * 1000), 4) if secs else None,
    }


def _sampler_ratios(w: dict[str, Any], wo: dict[str, Any]) -> dict[str, Any]:
    """With the reader over without it (None where the run without it has 0)."""
    return {
        "missed": _ratio(w["missed"], wo["missed"]),
        "sampler_busy": _ratio(w["sampler_busy"] or 0, wo["sampler_busy"] or 0),
        "sampler_interval_p99": _ratio(w["sampler_interval"]["p99_us"], wo["sampler_interval"]["p99_us"]),
        "sampler_interval_max": _ratio(w["sampler_interval"]["max_us"], wo["sampler_interval"]["max_us"]),
    }


# ---------------------------------------------------------------------------------------------------------- report


def collect(plan: Plan, seed: int, workers: int = 2) -> list[dict[str, Any]]:
    jobs = [(seed, i, plan) for i in range(plan.scenarios)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(run_scenario, jobs, chunksize=1)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _figures(expected: int, raised: int, matched: int, named: int) -> dict[str, Any]:
    return {
        "expected": expected,
        "raised": raised,
        "matched": matched,
        "evidence_names_cause": named,
        "precision": round(matched / raised, 4) if raised else None,
        "recall": round(matched / expected, 4) if expected else None,
    }


def summarize(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    results = list(results)
    sides: dict[str, Any] = {}
    for side in ("weight", "rfid"):
        kinds: dict[str, Any] = {}
        for kind in SCORED:
            cells = [r[side]["score"]["per_kind"][kind] for r in results]
            kinds[kind] = _figures(*(sum(c[f] for c in cells) for f in FIELDS))
        kinds["all"] = _figures(*(sum(kinds[k][f] for k in SCORED) for f in FIELDS))
        others: Counter[str] = Counter()
        verdicts: Counter[str] = Counter()
        for r in results:
            others.update(r[side]["score"]["other_alerts"])
            verdicts.update(r[side]["verdicts"])
        counted = [c for r in results for c in r[side]["counts_by_tags"]]
        thefts: Counter[str] = Counter()
        incidents: Counter[str] = Counter()
        for r in results:
            thefts.update(r[side]["thefts"])
            incidents.update(r[side]["incidents"])
        sides[side] = {
            "alerts": kinds,
            "other_alerts": dict(others),
            "tag_verdicts": dict(verdicts),
            "theft_picks": dict(thefts),
            "incidents": dict(sorted(incidents.items())),
            "counts_by_tags": len(counted),
            "counts_by_tags_right": sum(1 for c in counted if c["truth"] == c["by_tags"]),
            "counts_by_tags_node_right": sum(1 for c in counted if c["truth"] == c["counted"]),
            "unexpected": [
                {"seed": r["spec"]["seed"], "scenario": r["spec"]["index"], "kind": k, "cause": c}
                for r in results
                for k, c in r[side]["score"]["unexpected"]
            ],
            "missing": [
                {"seed": r["spec"]["seed"], "scenario": r["spec"]["index"], "kind": k, "cause": c}
                for r in results
                for k, c in r[side]["score"]["missing"]
            ],
        }
    ratios = {}
    for kind in (*SCORED, "all"):
        w, f = sides["weight"]["alerts"][kind], sides["rfid"]["alerts"][kind]
        ratios[kind] = {
            "recall": _ratio(f["recall"] or 0.0, w["recall"] or 0.0) if w["recall"] is not None else None,
            "precision": _ratio(f["precision"] or 0.0, w["precision"] or 0.0) if w["precision"] else None,
        }
    truth: Counter[str] = Counter()
    for r in results:
        truth.update(r["truth"])
    node_cpu = sum(r["node"]["cpu_s"] for r in results)
    virtual = sum(r["node"]["virtual_s"] for r in results)
    return {
        "scenarios": len(results),
        "virtual_s": round(virtual, 1),
        "truth_actions": dict(truth),
        "weight": sides["weight"],
        "rfid": sides["rfid"],
        "rfid_over_weight": ratios,
        "node": {
            "cpu_s": round(node_cpu, 1),
            "virtual_per_cpu": round(virtual / node_cpu, 1) if node_cpu else None,
            "missed_conversions": sum(r["node"]["missed"] for r in results),
            "tag_records": sum(
                r["node"]["frames"].get("tag_seen", 0) + r["node"]["frames"].get("tag_lost", 0) for r in results
            ),
            "reader_reads": sum(r["node"]["reader"].get("reads", 0) for r in results),
        },
        "hub_s": round(sum(r["weight"]["hub_s"] + r["rfid"]["hub_s"] for r in results), 1),
    }


def _recall_ratio(w: dict[str, Any], f: dict[str, Any], r: float | None) -> str:
    if r is not None:
        return f"{r:.3f}"
    if w["recall"] == 0 and f["recall"]:
        return "0 -> " + f"{f['recall']:.2f}"
    return "-"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _print(report: dict[str, Any], quick: bool) -> None:
    s = report["alerts"]
    plan = report["plan"]
    print(
        f"RFID benchmark, seed {report['seed']}{' (quick)' if quick else ''}: {s['scenarios']} scenarios x"
        f" {plan['active_s']:g} s of shoppers ({s['virtual_s']:,.0f} s of store time), {report['elapsed_s']:.0f} s"
    )
    print(
        "  real firmware (node + RFID task) on the emulated board, CPython, virtual time stepped every"
        f" {STEP_MS} ms ({s['node']['virtual_per_cpu']}x real time); frames booked by a real hub (Ingest, SQLite"
        " ledger) and reconciled every 60 s with the production settings"
    )
    print(
        "  weight alone = the same frames without tag_seen / tag_lost / reader_health (renumbered, signed again);"
        " weight + RFID = all of them"
    )
    ta = s["truth_actions"]
    print("  ground truth: " + ", ".join(f"{k} {v}" for k, v in sorted(ta.items())))
    print()
    print(
        f"{'alert kind':<12}{'expected':>9}  {'weight: raised':>14}{'prec':>7}{'recall':>7}"
        f"  {'+RFID: raised':>14}{'prec':>7}{'recall':>7}  {'recall ratio':>12}"
    )
    for kind in (*SCORED, "all"):
        w, f = s["weight"]["alerts"][kind], s["rfid"]["alerts"][kind]
        r = s["rfid_over_weight"][kind]["recall"]
        print(
            f"{kind:<12}{w['expected']:>9}  {w['raised']:>14}{_pct(w['precision']):>7}{_pct(w['recall']):>7}"
            f"  {f['raised']:>14}{_pct(f['precision']):>7}{_pct(f['recall']):>7}  {_recall_ratio(w, f, r):>12}"
        )
    fr = s["rfid"]
    print(
        f"counts settled by tags (low-confidence picks): {fr['counts_by_tags']}, right {fr['counts_by_tags_right']}"
        f" (the node's own count right: {fr['counts_by_tags_node_right']})"
    )
    print("tag departures judged: " + ", ".join(f"{k} {v}" for k, v in sorted(fr["tag_verdicts"].items())))
    print("each theft's pick at the hub: " + ", ".join(f"{k} {v}" for k, v in sorted(fr["theft_picks"].items())))
    by_action: dict[str, list[str]] = {}
    for key, n in fr["incidents"].items():
        action, how = key.split(": ", 1)
        by_action.setdefault(action, []).append(f"{how} {n}")
    for action, hows in sorted(by_action.items()):
        print(f"  {action}: " + ", ".join(hows))
    for side, label in (("weight", "weight alone"), ("rfid", "weight + RFID")):
        oth = s[side]["other_alerts"]
        if oth:
            print(f"not scored, {label}: " + ", ".join(f"{k} {v}" for k, v in sorted(oth.items())))
    for side, label in (("weight", "weight alone"), ("rfid", "weight + RFID")):
        for what in ("unexpected", "missing"):
            items = s[side][what]
            if items:
                print(
                    f"{what} alerts, {label}: "
                    + "; ".join(f"{i['kind']} {i['cause']} (scenario {i['scenario']})" for i in items)
                )
    n = s["node"]
    print(
        f"node: {n['tag_records']} tag records, {n['reader_reads']:,} tag reads, {n['missed_conversions']} missed"
        f" conversions (virtual time); firmware CPU {n['cpu_s']} s, hubs {s['hub_s']} s"
    )
    sc = report.get("sampler")
    if sc:
        _print_sampler(sc)


def _print_sampler(sc: dict[str, Any]) -> None:
    print()
    print(
        f"sampler cost, real time: the node served {sc['seconds']:g} s (after a {sc['warmup_s']:g} s boot, not counted)"
        " with and without its reader, both runs at once (one core each)"
    )
    print(
        "  WebAssembly MicroPython and CPython on this host are not an ESP32: compare the two runs of a runtime,"
        " not the runtimes with a board"
    )
    head = (
        f"{'':<30}{'missed/h':>9}{'missed':>7}{'convs':>7}{'reads/s':>8}{'sampler busy':>13}"
        f"{'interval p99/max ms':>20}{'poller p50/p99/max us':>22}{'poller busy':>12}"
    )
    print(head)
    for rt, label in (("micropython", "MicroPython (WebAssembly)"), ("cpython", "CPython")):
        part = sc.get(rt) or {}
        if "error" in part:
            print(f"{label}: {part['error']}")
            continue
        for side in ("without_reader", "with_reader"):
            f = part[side]
            p = f["poller_own"]
            iv = f["sampler_interval"]
            poller = f"{p['p50_us']:.0f}/{p['p99_us']:.0f}/{p['max_us']:.0f}" if p["calls"] else "-"
            busy = f"{100 * f['poller_own_busy']:.1f} %" if p["calls"] else "-"
            print(
                f"{label + ', ' + side.replace('_', ' '):<30}{f['missed_per_hour']:>9,}{f['missed']:>7}"
                f"{f['conversions']:>7,}{(f['reads_per_s'] or 0):>8.1f}{100 * f['sampler_busy']:>11.1f} %"
                f"{iv['p99_us'] / 1000:>13.1f}/{iv['max_us'] / 1000:<6.1f}{poller:>22}{busy:>12}"
            )
        r = part["ratios"]
        print(
            f"  {label}, with / without the reader: missed {_pct(r['missed'])}, sampler busy"
            f" {_pct(r['sampler_busy'])}, interval p99 {_pct(r['sampler_interval_p99'])}, max"
            f" {_pct(r['sampler_interval_max'])}"
        )


def run(
    seed: int = 1, quick: bool = False, as_json: bool = False, workers: int = 2, plan: Plan | None = None
) -> dict[str, Any]:
    """The whole bench (``plan``: ``QUICK`` or ``FULL`` unless given), printed as a table or JSON."""
    plan = plan or (QUICK if quick else FULL)
    t0 = time.monotonic()
    results = collect(plan, seed, workers)
    t1 = time.monotonic()
    sampler = sampler_cost(seed, plan.sampler_s)
    report: dict[str, Any] = {
        "seed": seed,
        "plan": asdict(plan),
        "alerts": summarize(results),
        "scenarios": results,
        "sampler": sampler,
        "alerts_elapsed_s": round(t1 - t0, 1),
        "sampler_elapsed_s": round(time.monotonic() - t1, 1),
        "elapsed_s": round(time.monotonic() - t0, 1),
        **host_figures(),
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, quick)
    return report
