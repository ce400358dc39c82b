"""``smartshelf bench ble``: the hub's BLE link on the emulated stack, with the serial link measured beside it in
the same run: events/s through one connection (ATT MTU 23 and 247), pick -> ledger latency with 12 nodes sharing 5
connection slots, and beacon -> page count latency.

**What runs.** BLE: a real ``HubService`` (ledger ``synchronous=FULL`` on a fresh database in a temporary
directory) whose ``[ble] adapter = "bumble:unix:<socket>"`` reaches an in-process emulated air
(``tools/emulation/radio/air.py``: Bumble ``LocalLink``, the hub's controller holding ``slots`` links) as it would
reach a USB dongle; the nodes are ``BleFakeNode``s (``tools/emulation/radio/synthetic.py``): Bumble peripherals with
the smart-shelf GATT service speaking protocol v1 (beacons, poke, fragments, frames). Serial: a second real
``HubService`` (same settings, its own fresh database) whose nodes are on real ptys (``PtyNode`` below: the same
protocol behaviour as ``BleFakeNode``), so its ``SerialLink``s read and write real file descriptors (no baud limit).
Both hubs use the production ``[ble]`` defaults (``BleConfig``: slots, idle_s, hold_s, visit_s) and have every lane
assigned to one SKU before the nodes say hello. The 12 pick nodes start with ``STOCK`` units per lane: their first
lane reports book a +``STOCK`` sensor gap per lane during the warm-up, before anything is measured (those warnings
are muted and counted instead). BLE nodes advertise at the firmware's default interval (``ADV_MS``); a connect
completes at the node's next advertisement, as on a real controller. The throughput nodes start empty, so their
lane reports agree with the ledger and the measured window holds events only. BLE runs first, then serial, in one
process on one event loop.

**Emulated, not radio.** The air has no air timing: no connection intervals, no radio loss, notifications pass as
fast as the CPU allows; and the nodes' Bumble hosts and controllers run on the hub's own event loop, so BLE figures
include the emulation's CPU. Real BLE is slower: every ATT round trip waits for a connection interval (7.5..30 ms).

**Phases** (timestamps ``time.monotonic()``; the nodes take theirs themselves, see ``synthetic.py``).

1. *Throughput through one connection* (BLE at MTU 23 and 247: the node's GATT server caps the exchange with
   ``gatt_server.max_mtu``; serial on a pty): one node with ``events`` events in its outbox advertises "events
   waiting" (serial: says hello). From the connection coming up on the node (serial: the hello written) until the
   ack covering the last event arrives at the node: events/s; also the setup (connection -> the hub's poke: MTU
   exchange, discovery, subscription) and the rate after the poke. The outbox behaviour is the synthetic node's:
   everything waiting is sent at once when the hub acks the hello, nothing is resent. ``runs`` runs per MTU on
   fresh nodes, MTUs alternating; the median run is reported. CPU: process CPU time per event (hub, emulated stack
   and node together; serial: hub and pty node).
2. *Pick -> ledger latency*: ``rate`` picks/s for ``seconds``, round-robin over the 12 nodes (lanes alternating);
   each BLE pick is followed by the node's new beacon (WAITING), so the hub connects unless the node still holds a
   connection. Latency = from the pick on the node to the moment the hub's event loop learns the event committed: a
   done callback on the future ``ledger.submit`` returns for the ``SensorEvent`` (it resolves after the batch's
   COMMIT; first ``Applied`` only). That probe wraps the ledger instance's ``submit``; no hub code is changed. Also
   pick -> the covering ack arriving at the node. p50/p95/max; for BLE also the connections made, slot rotations,
   refused and failed connects, and the most simultaneous connections seen on the air (must be <= slots).
3. *Beacon -> page count* (BLE only): a node picks one unit and advertises its new beacon; from the advertise call
   (the node's HCI commands included) until ``HubService.status()`` (what the nodes page shows) gives that lane's
   new count, polled every ~1 ms (the mean cost of one ``status()`` call is reported). The picks make the hub
   connect meanwhile.

**Checks.** Every node event is in the ledger's ``movements`` exactly once (``(node_id, event_seq)`` 1..last of
every node, nothing else); the command fails otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import tty
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from hub.config import BleConfig, HubConfig, NodeConfig
from hub.ledger.models import Applied, SensorEvent, Sku
from hub.ledger.service import LedgerService
from hub.ledger.workqueue import Completion
from hub.service import HubService
from shared_protocol.auth import Key
from shared_protocol.ble_fragments import fragment
from shared_protocol.downlink_text import LineDecoder
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import DownlinkReceiver, UplinkSender
from shared_protocol.messages import (
    KIND_PICK,
    STATUS_OK,
    Ack,
    CommandResult,
    Event,
    Hello,
    LaneState,
    Message,
    RequestState,
)
from shared_protocol.serial_framing import encode_serial
from tools.bench import host_figures
from tools.emulation.radio.air import Air
from tools.emulation.radio.synthetic import LANES, UNIT_DG, BleFakeNode, Watch, add_nodes, node_address

HEADER = "emulated BLE stack (Bumble, no air timing: no connection intervals or radio loss; real BLE is slower)"
PICK_NODES = tuple(range(1, 13))
BLE_THROUGHPUT_FIRST = 101  # throughput nodes: fresh ones per run, never advertising before their run
SERIAL_THROUGHPUT_FIRST = 201
STOCK = 1000  # units per lane at the start
ADV_MS = 250  # the nodes' advertising interval: the firmware's default (firmware/config.py adv_ms)
MTUS = (23, 247)
SKU = "BENCH"
POLL_S = 0.001
DRAIN_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Sizes:
    events: int = 500  # throughput: events waiting on the node
    runs: int = 3  # throughput runs per MTU (and serial), alternating
    rate: float = 3.0  # picks/s over the 12 nodes
    seconds: float = 60.0  # pick phase length
    beacons: int = 30  # beacon -> page trials
    beacon_gap_s: float = 0.5


DEFAULT = Sizes()
QUICK = Sizes(events=100, runs=1, seconds=4.0, beacons=5, beacon_gap_s=0.3)


def _key(node_id: int) -> bytes:
    return bytes([node_id & 0xFF]) * 16


# ------------------------------------------------------------------------------------------------- measuring


class Commits:
    """When the hub's event loop learned that a node event committed: a done callback on what ``ledger.submit``
    returns, or on the completion ``ledger.submit_then`` calls back (the ingest's path), for each ``SensorEvent``
    (resolved after the batch's COMMIT), first ``Applied`` only."""

    def __init__(self, ledger: LedgerService) -> None:
        self.at: dict[tuple[int, int], float] = {}
        submit = ledger.submit

        def probe(item: Any) -> asyncio.Future[Any]:
            fut = submit(item)
            if isinstance(item, SensorEvent):
                key = (item.node_id, item.event_seq)

                def done(f: asyncio.Future[Any]) -> None:
                    if not f.cancelled() and f.exception() is None and isinstance(f.result(), Applied):
                        self.at.setdefault(key, time.monotonic())

                fut.add_done_callback(done)
            return fut

        submit_then = ledger.submit_then  # the ingest's hot path: a completion callback instead of a future

        def probe_then(item: Any, on_done: Callable[[Completion], None]) -> None:
            if not isinstance(item, SensorEvent):
                submit_then(item, on_done)
                return
            key = (item.node_id, item.event_seq)

            def done(c: Completion) -> None:
                if c.exception() is None and isinstance(c.result(), Applied):
                    self.at.setdefault(key, time.monotonic())
                on_done(c)

            submit_then(item, done)

        # the instance attributes shadow the methods for the hub's calls
        setattr(ledger, "submit", probe)  # noqa: B010
        setattr(ledger, "submit_then", probe_then)  # noqa: B010


def _ms(values_s: Sequence[float]) -> dict[str, Any]:
    """p50/p95/max in ms of durations in seconds."""
    if not values_s:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    s = sorted(values_s)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 1)

    return {"n": len(s), "p50_ms": q(0.50), "p95_ms": q(0.95), "max_ms": round(s[-1] * 1000, 1)}


async def _until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench ble: timed out waiting for {what}")
        await asyncio.sleep(0.005)


class BenchNode(Protocol):
    node_id: int
    event_seq: int
    acked: int
    counts: list[int]
    picked_at: dict[int, float]
    acked_at: dict[int, float]

    def pick(self, lane: int, units: int = 1) -> Event: ...


def _all_acked(nodes: Sequence[BenchNode]) -> bool:
    return all(n.acked == n.event_seq for n in nodes)


async def _paced_picks(
    nodes: Sequence[BenchNode], sizes: Sizes, after: Callable[[BenchNode], Awaitable[None]] | None
) -> tuple[list[tuple[BenchNode, int]], int]:
    """``rate`` picks/s round-robin over ``nodes`` for ``seconds``; ``after``: what the node does next (advertise).
    Returns the picks and how many found their node already holding a connection (``conn``)."""
    total = max(1, int(sizes.rate * sizes.seconds))
    picks: list[tuple[BenchNode, int]] = []
    connected = 0
    start = time.monotonic()
    for k in range(total):
        await asyncio.sleep(max(0.0, start + k / sizes.rate - time.monotonic()))
        node = nodes[k % len(nodes)]
        connected += getattr(node, "conn", None) is not None  # a BLE node's connection (serial: always 0)
        ev = node.pick((k // len(nodes)) % LANES)
        picks.append((node, ev.event_seq))
        if after is not None:
            await after(node)
    await _until(lambda: _all_acked(nodes), DRAIN_TIMEOUT_S, "every pick acknowledged")
    return picks, connected


def _latencies(picks: list[tuple[BenchNode, int]], commits: Commits) -> dict[str, Any]:
    to_commit = [commits.at[(n.node_id, s)] - n.picked_at[s] for n, s in picks if (n.node_id, s) in commits.at]
    to_ack = [n.acked_at[s] - n.picked_at[s] for n, s in picks]
    return {"picks": len(picks), "pick_to_commit": _ms(to_commit), "pick_to_ack": _ms(to_ack)}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median events/s (runs listed too)."""
    ranked = sorted(runs, key=lambda r: r["events_per_s"])
    best = dict(ranked[len(ranked) // 2])
    best["runs_events_per_s"] = [r["events_per_s"] for r in runs]
    return best


def _throughput(events: int, start: float, poke: float, end: float, cpu_s: float) -> dict[str, Any]:
    return {
        "events": events,
        "seconds": round(end - start, 3),
        "events_per_s": round(events / (end - start)),
        "setup_ms": round((poke - start) * 1000, 1),
        "transfer_events_per_s": round(events / (end - poke)),
        "cpu_us_per_event": round(cpu_s / events * 1e6),
    }


def _booked(database: Path, expected: dict[int, int]) -> dict[str, Any]:
    """Every node event once: (node_id, event_seq) for 1..last of each node, nothing else."""
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute("SELECT node_id, event_seq FROM movements WHERE event_seq IS NOT NULL").fetchall()
    finally:
        conn.close()
    want = {(nid, s) for nid, last in expected.items() for s in range(1, last + 1)}
    got = [(int(a), int(b)) for a, b in rows]
    return {
        "events": len(want),
        "rows": len(got),
        "missing": len(want - set(got)),
        "unexpected": len(set(got) - want),
        "repeated": len(got) - len(set(got)),
        "ok": set(got) == want and len(got) == len(want),
    }


async def _assign_lanes(hub: HubService, node_ids: Sequence[int]) -> None:
    assert hub.ledger is not None
    await hub.ledger.add_sku(Sku(SKU, "Benchmark item", UNIT_DG, 10), actor="bench")
    for nid in node_ids:
        for lane in range(LANES):
            await hub.ledger.assign_lane(nid, lane, SKU, actor="bench")


def _hub_config(directory: Path, name: str, nodes: tuple[NodeConfig, ...], ble: BleConfig) -> HubConfig:
    return HubConfig(
        path=directory / f"{name}.toml",
        database=directory / f"{name}.db",
        synchronous="FULL",
        control_socket=directory / f"{name}.sock",
        nodes=nodes,
        ble=ble,
    )


# ------------------------------------------------------------------------------------------------------ BLE


def _slots_used(hub: HubService) -> int:
    return hub.ble.status()["slots_used"] if hub.ble is not None else 0


def _rotations(hub: HubService) -> int:
    return sum(n["ble"]["rotations"] for n in hub.status()["nodes"] if n.get("ble"))


def _page_count(hub: HubService, node_id: int, lane: int) -> int | None:
    for n in hub.status()["nodes"]:
        if n["node_id"] == node_id:
            beacon = (n.get("ble") or {}).get("beacon") or {}
            entry = beacon.get("lanes", {}).get(str(lane))
            return int(entry["count"]) if entry else None
    return None


async def _ble_beacons(hub: HubService, nodes: list[BleFakeNode], sizes: Sizes) -> dict[str, Any]:
    lat: list[float] = []
    status_s: list[float] = []
    missed = 0
    for k in range(sizes.beacons):
        node = nodes[k % len(nodes)]
        lane = (k // len(nodes)) % LANES
        node.pick(lane)
        want = node.counts[lane]
        t0 = time.monotonic()
        await node.advertise()
        while True:
            s0 = time.monotonic()
            shown = _page_count(hub, node.node_id, lane)
            now = time.monotonic()
            status_s.append(now - s0)
            if shown == want:
                lat.append(now - t0)
                break
            if now - t0 > 10.0:
                missed += 1
                break
            await asyncio.sleep(POLL_S)
        await asyncio.sleep(sizes.beacon_gap_s)
    await _until(lambda: _all_acked(nodes), DRAIN_TIMEOUT_S, "the beacon phase's picks acknowledged")
    out = _ms(lat)
    out["missed"] = missed
    out["status_call_ms"] = round(statistics.fmean(status_s) * 1000, 2) if status_s else None
    return out


async def _ble_throughput(
    hub: HubService, runs: dict[int, list[BleFakeNode]], sizes: Sizes, idle_s: float
) -> dict[str, Any]:
    results: dict[int, list[dict[str, Any]]] = {mtu: [] for mtu in runs}
    order = [(r, mtu) for r in range(sizes.runs) for mtu in (MTUS if r % 2 == 0 else MTUS[::-1])]
    for k, (r, mtu) in enumerate(order):
        if k:  # the previous run's connection is let go when idle
            await _until(lambda: _slots_used(hub) == 0, idle_s + 30, "the connection closed when idle")
        node = runs[mtu][r]
        for i in range(sizes.events):
            node.pick(i % LANES)
        cpu0 = time.process_time()
        await node.advertise()
        await _until(functools.partial(_all_acked, [node]), DRAIN_TIMEOUT_S, f"node {node.node_id} drained")
        cpu = time.process_time() - cpu0
        res = _throughput(sizes.events, node.connected_at[0], node.poked_at[0], node.acked_at[node.event_seq], cpu)
        res["mtu"] = node.mtu
        results[mtu].append(res)
    return {str(mtu): _median_run(rs) for mtu, rs in results.items()}


async def bench_ble(directory: Path, sizes: Sizes, ble: BleConfig) -> dict[str, Any]:
    """The BLE half: one hub, one air; ``ble.adapter`` is replaced by the air's socket."""
    sock = directory / "hci.sock"
    air = Air(hub_slots=ble.slots)
    await air.serve_hci(str(sock))
    watch = Watch()
    try:
        nodes = await add_nodes(air, {nid: _key(nid) for nid in PICK_NODES}, watch, stock=STOCK, adv_ms=ADV_MS)
        tp: dict[int, list[BleFakeNode]] = {}
        for i, mtu in enumerate(MTUS):
            ids = [BLE_THROUGHPUT_FIRST + len(MTUS) * r + i for r in range(sizes.runs)]
            added = await add_nodes(air, {nid: _key(nid) for nid in ids}, watch, mtu=mtu, adv_ms=ADV_MS)
            tp[mtu] = [added[nid] for nid in ids]
            nodes.update(added)
        configs = tuple(NodeConfig(nid, _key(nid), "", link="ble", address=node_address(nid)) for nid in nodes)
        cfg = _hub_config(directory, "ble", configs, replace(ble, adapter=f"bumble:unix:{sock}"))
        pickers = [nodes[nid] for nid in PICK_NODES]
        hub = HubService(cfg, control=False, reconcile=False)
        await hub.start()
        try:
            assert hub.ledger is not None and hub.ble is not None
            await _assign_lanes(hub, list(nodes))
            commits = Commits(hub.ledger)
            # Every node is visited once when first heard (visit_s): let that pass before measuring.
            for n in pickers:
                await n.advertise()
            await _until(
                lambda: all(n.poked_at for n in pickers) and _slots_used(hub) == 0,
                60 + 3 * ble.idle_s * len(pickers),
                "the first visit of every node",
            )
            connects0, rotations0 = hub.ble.connects, _rotations(hub)
            refused0, failed0 = hub.ble.slot_refusals, hub.ble.connect_failures
            most_at_start, watch.most = watch.most, watch.open
            cpu0, t0 = time.process_time(), time.monotonic()

            async def advertise(node: BenchNode) -> None:
                assert isinstance(node, BleFakeNode)
                await node.advertise()

            picks, found_connected = await _paced_picks(pickers, sizes, advertise)
            lat = _latencies(picks, commits)
            lat.update(
                seconds=round(time.monotonic() - t0, 1),
                cpu_s=round(time.process_time() - cpu0, 1),
                picks_found_node_connected=found_connected,
                connections=hub.ble.connects - connects0,
                rotations=_rotations(hub) - rotations0,
                slot_refusals=hub.ble.slot_refusals - refused0,
                connect_failures=hub.ble.connect_failures - failed0,
                most_simultaneous=watch.most,
            )
            beacons = await _ble_beacons(hub, pickers, sizes)
            await _until(lambda: _slots_used(hub) == 0, DRAIN_TIMEOUT_S, "every slot free")
            throughput = await _ble_throughput(hub, tp, sizes, ble.idle_s)
            st = hub.status()
        finally:
            await hub.stop()
            await asyncio.sleep(0.3)  # the nodes' disconnect handlers restart advertising: let them finish
    finally:
        await air.close()
    return {
        "throughput": throughput,
        "picks": lat,
        "beacon_to_page": beacons,
        "most_simultaneous_overall": max(most_at_start, watch.most),
        "beacons": st["ble"]["beacons"],
        "duplicates": st["totals"]["duplicates"],
        "sensor_gaps": st["totals"]["gaps"],
        "booked": _booked(cfg.database, {nid: n.event_seq for nid, n in nodes.items()}),
    }


# --------------------------------------------------------------------------------------------------- serial


class PtyNode:
    """A serial shelf node on a real pty, with ``BleFakeNode``'s protocol behaviour: hello (on demand), events from
    an outbox (all of it sent at an ack that does not advance the mark, e.g. the answer to hello; a pick after the
    hello is sent at once), lane states on request, OK to every other command; stamps as ``BleFakeNode``'s. The
    hub opens ``port`` (the pty's slave)."""

    def __init__(self, node_id: int, key: bytes, stock: int) -> None:
        self.node_id = node_id
        self.seq = 0
        self.event_seq = 0
        self.acked = 0
        self.outbox: list[Event] = []
        self.counts = [stock] * LANES
        self.added = [stock] * LANES
        self.removed = [0] * LANES
        self.picked_at: dict[int, float] = {}
        self.acked_at: dict[int, float] = {}
        self.hello_at: list[float] = []
        self.answered = False  # the hub answered the hello
        self.rejected = 0
        self.sender = UplinkSender(node_id, Key(key), self._next_seq)
        self.receiver = DownlinkReceiver(node_id, Key(key), 1)
        self.lines = LineDecoder()
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self._slave)
        self._pending = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.master)
            self._loop.remove_writer(self.master)
            self._loop = None
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def hello(self) -> None:
        self.hello_at.append(time.monotonic())
        self._send(Hello(1, 2, 3, 1, LANES, 0xC0FFEE))

    def pick(self, lane: int, units: int = 1) -> Event:
        self.event_seq += 1
        self.picked_at[self.event_seq] = time.monotonic()
        self.counts[lane] -= units
        self.removed[lane] += units
        ev = Event(self.event_seq, lane, KIND_PICK, -units, -units * UNIT_DG, 97, 100)
        self.outbox.append(ev)
        if self.answered:
            self._send(ev)
        return ev

    def _send(self, message: Message) -> None:
        self._pending += encode_serial(self.sender.encode(message))
        self._flush()

    def _flush(self) -> None:
        while self._pending:
            try:
                n = os.write(self.master, self._pending)
            except BlockingIOError:
                break
            del self._pending[:n]
        if self._loop is not None:
            if self._pending:
                self._loop.add_writer(self.master, self._flush)
            else:
                self._loop.remove_writer(self.master)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # the hub closed the port
            if self._loop is not None:
                self._loop.remove_reader(self.master)
            return
        for raw in self.lines.feed(data):
            try:
                frame = self.receiver.accept(raw)
            except ProtocolError:
                self.rejected += 1
                continue
            m = frame.message
            if isinstance(m, Ack):
                self.answered = True
                if m.event_seq > self.acked:
                    now = time.monotonic()
                    for seq in range(self.acked + 1, m.event_seq + 1):
                        self.acked_at[seq] = now
                    self.acked = m.event_seq
                    self.outbox = [e for e in self.outbox if e.event_seq > m.event_seq]
                else:
                    for e in self.outbox:
                        self._send(e)
            elif isinstance(m, RequestState):
                for lane in range(LANES) if m.lane == 255 else [m.lane]:
                    c = self.counts[lane]
                    self._send(LaneState(lane, c, self.removed[lane], self.added[lane], c * UNIT_DG, 0, self.event_seq))
                self._send(CommandResult(frame.seq, STATUS_OK, 0))
            else:
                self._send(CommandResult(frame.seq, STATUS_OK, 0))


async def bench_serial(directory: Path, sizes: Sizes) -> dict[str, Any]:
    """The serial half: one hub, 12 pty nodes for the picks, fresh pty nodes for throughput."""
    pickers = [PtyNode(nid, _key(nid), STOCK) for nid in PICK_NODES]
    tp = [PtyNode(SERIAL_THROUGHPUT_FIRST + r, _key(SERIAL_THROUGHPUT_FIRST + r), 0) for r in range(sizes.runs)]
    every = pickers + tp
    cfg = _hub_config(
        directory, "serial", tuple(NodeConfig(n.node_id, _key(n.node_id), n.port) for n in every), BleConfig()
    )
    try:
        for n in every:
            n.open()
        hub = HubService(cfg, control=False, reconcile=False)
        await hub.start()
        try:
            assert hub.ledger is not None
            await _assign_lanes(hub, [n.node_id for n in every])
            commits = Commits(hub.ledger)
            await _until(lambda: all(link["connected"] for link in hub.status()["links"]), 30, "every port open")
            for n in pickers:
                n.hello()
            await _until(lambda: all(n.answered for n in pickers), 30, "every hello answered")
            await asyncio.sleep(0.5)  # the hello's commands and their answers
            cpu0, t0 = time.process_time(), time.monotonic()
            picks, _ = await _paced_picks(pickers, sizes, None)
            lat = _latencies(picks, commits)
            lat.update(seconds=round(time.monotonic() - t0, 1), cpu_s=round(time.process_time() - cpu0, 1))
            runs: list[dict[str, Any]] = []
            for node in tp:
                for i in range(sizes.events):
                    node.pick(i % LANES)
                cpu0 = time.process_time()
                node.hello()
                await _until(functools.partial(_all_acked, [node]), DRAIN_TIMEOUT_S, f"node {node.node_id} drained")
                cpu = time.process_time() - cpu0
                start = node.hello_at[0]
                runs.append(_throughput(sizes.events, start, start, node.acked_at[node.event_seq], cpu))
                await asyncio.sleep(0.2)
            st = hub.status()
        finally:
            await hub.stop()
    finally:
        for n in every:
            n.close()
    return {
        "throughput": _median_run(runs),
        "picks": lat,
        "duplicates": st["totals"]["duplicates"],
        "sensor_gaps": st["totals"]["gaps"],
        "booked": _booked(cfg.database, {n.node_id: n.event_seq for n in every}),
    }


# ------------------------------------------------------------------------------------------------------ run


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


@contextlib.contextmanager
def _gap_warnings_muted() -> Iterator[None]:
    """The stocked lanes' first reports each book a sensor gap (a warning per lane): counted, not printed."""
    booking = logging.getLogger("hub.link.booking")
    level = booking.level
    booking.setLevel(logging.ERROR)
    try:
        yield
    finally:
        booking.setLevel(level)


async def bench(directory: Path, sizes: Sizes, ble: BleConfig | None = None) -> dict[str, Any]:
    """Both halves in one run (BLE first), their ratios and the frame sizes behind them."""
    ble = ble or BleConfig()
    with _gap_warnings_muted():
        b = await bench_ble(directory, sizes, ble)
        s = await bench_serial(directory, sizes)
    frame = len(UplinkSender(1, Key(_key(1)), lambda: 1).encode(Event(1, 0, KIND_PICK, -1, -UNIT_DG, 97, 100)))
    ratios: dict[str, Any] = {
        f"events_per_s_mtu{mtu}": _ratio(b["throughput"][str(mtu)]["events_per_s"], s["throughput"]["events_per_s"])
        for mtu in MTUS
    }
    for what in ("pick_to_commit", "pick_to_ack"):
        for q in ("p50_ms", "p95_ms"):
            ratios[f"{what}_{q}"] = _ratio(b["picks"][what][q], s["picks"][what][q])
    ok = b["booked"]["ok"] and s["booked"]["ok"]
    return {
        "stack": HEADER,
        "sizes": asdict(sizes),
        "ble_config": {k: getattr(ble, k) for k in ("slots", "mtu", "idle_s", "hold_s", "visit_s")},
        "nodes": len(PICK_NODES),
        "stock_per_lane": STOCK,
        "adv_ms": ADV_MS,
        "event_frame_bytes": frame,
        "event_fragments": {str(mtu): len(fragment(b"\0" * frame, mtu, 0)) for mtu in MTUS},
        "ble": b,
        "serial": s,
        "ble_over_serial": ratios,
        "booked_once": ok,
    }


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _print(f: dict[str, Any], quick: bool) -> None:
    b, s, r, sz = f["ble"], f["serial"], f["ble_over_serial"], f["sizes"]
    cfg = f["ble_config"]
    bp, sp = b["picks"], s["picks"]
    print(f"BLE link benchmark{' (quick)' if quick else ''}: {f['stack']}")
    print(
        f"  real HubService (synchronous=FULL, fresh ledger) <- bumble:unix socket <- in-process Air, nodes on the"
        f" same event loop; [ble] slots {cfg['slots']}, hub MTU {cfg['mtu']}, idle_s {cfg['idle_s']}, hold_s"
        f" {cfg['hold_s']}"
    )
    print("  serial beside it, same run: a second HubService, nodes on real ptys (no baud limit)")
    print(
        f"  nodes advertise every {f['adv_ms']} ms; event frame {f['event_frame_bytes']} B ="
        f" {f['event_fragments']['23']} fragments at MTU 23, {f['event_fragments']['247']} at 247; synthetic outbox:"
        " all waiting events sent at the ack of its hello"
    )
    print(
        f"  events/s: one session's burst (median of {sz['runs']} runs), fixed costs included (hello, the downlink"
        " reservation commit, a few fsyncs); the hub's steady ingest rate is `bench hub`"
    )
    rows: list[tuple[str, str, str, str]] = []
    for mtu in MTUS:
        t = b["throughput"][str(mtu)]
        rows.append(
            (
                f"events/s through one connection, MTU {t['mtu']} ({sz['events']} events)",
                _fmt(t["events_per_s"]),
                _fmt(s["throughput"]["events_per_s"]),
                _times(r[f"events_per_s_mtu{mtu}"]),
            )
        )
    for mtu in MTUS:
        t = b["throughput"][str(mtu)]
        rows.append(
            (
                f"  MTU {mtu}: setup (connect -> poke) / after the poke",
                f"{_fmt(t['setup_ms'], ' ms')} / {_fmt(t['transfer_events_per_s'])}/s",
                "",
                "",
            )
        )
    rows.append(
        (
            "  CPU per event (whole process), MTU 23 / 247",
            f"{b['throughput']['23']['cpu_us_per_event']} / {b['throughput']['247']['cpu_us_per_event']} us",
            f"{s['throughput']['cpu_us_per_event']} us",
            "",
        )
    )
    rate = f"{sz['rate']:g}/s for {sz['seconds']:g} s, {f['nodes']} nodes"
    for what, label in (("pick_to_commit", "pick -> committed"), ("pick_to_ack", "pick -> ack at node")):
        for q in ("p50_ms", "p95_ms", "max_ms"):
            rows.append(
                (
                    f"{label} {q[:-3]} ({rate})" if q == "p50_ms" else f"{label} {q[:-3]}",
                    _fmt(bp[what][q], " ms"),
                    _fmt(sp[what][q], " ms"),
                    _times(r.get(f"{what}_{q}")),
                )
            )
    bb = b["beacon_to_page"]
    rows.append((f"beacon -> page count p50 ({bb['n']} beacons)", _fmt(bb["p50_ms"], " ms"), "-", ""))
    rows.append(
        ("beacon -> page count p95 / max", f"{_fmt(bb['p95_ms'], ' ms')} / {_fmt(bb['max_ms'], ' ms')}", "-", "")
    )
    w = max(len(x[0]) for x in rows)
    print(f"{'figure':<{w}}  {'BLE (emulated)':>20}  {'serial (pty)':>14}  {'BLE / serial':>12}")
    for name, bv, sv, rv in rows:
        print(f"{name:<{w}}  {bv:>20}  {sv:>14}  {rv:>12}")
    print(
        f"BLE pick phase: {bp['picks']} picks, {bp['picks_found_node_connected']} found their node connected;"
        f" {bp['connections']} connections, {bp['rotations']} rotations, {bp['slot_refusals']} refused by the"
        f" adapter, {bp['connect_failures']} failed; most simultaneous {bp['most_simultaneous']} (slots"
        f" {cfg['slots']}); CPU {bp['cpu_s']} s over {bp['seconds']} s (serial: {sp['cpu_s']} s over {sp['seconds']} s)"
    )
    bk = b["beacons"]
    print(
        f"beacons heard {bk['seen']:,} (accepted {bk['accepted']:,}, repeats {bk['repeated']:,}, forged"
        f" {bk['forged']}, replayed {bk['replayed']}); status() call {bb['status_call_ms']} ms; missed {bb['missed']}"
    )
    print(
        f"booked once: BLE {b['booked']['events']:,} events, {b['booked']['rows']:,} rows; serial"
        f" {s['booked']['events']:,} events, {s['booked']['rows']:,} rows -> {'ok' if f['booked_once'] else 'FAILED'}"
        f" (retransmissions seen as duplicates: BLE {b['duplicates']}, serial {s['duplicates']}; sensor gaps booked"
        f" at warm-up: BLE {b['sensor_gaps']}, serial {s['sensor_gaps']})"
    )


def run(quick: bool = False, as_json: bool = False, directory: str | None = None) -> dict[str, Any]:
    # a short directory: the air's unix socket path must fit in 107 bytes
    tmp = Path(tempfile.mkdtemp(prefix="ssb-ble-", dir=directory or "/tmp"))
    try:
        figures = asyncio.run(bench(tmp, QUICK if quick else DEFAULT))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures.update(host_figures())
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        _print(figures, quick)
    if not figures["booked_once"]:
        raise SystemExit("bench ble: events were not booked exactly once")
    return figures
