"""``smartshelf bench hub``: frames/s into the ledger through the hub's ingest path, latency to ack, and bare
SQLite inserts of the same rows in the same run as the reference.

**What runs.** A real ``HubService`` (ledger writer with ``synchronous=FULL``, ingest, per-node protocol state) on a
fresh database, without its reconciler (a run of it every minute over tens of thousands of fresh picks would land in one
round and not another; ``hub/reconcile/bench.py`` measures it), in a temporary directory; the serial ports are replaced
by in-process synthetic nodes. Each node speaks protocol v1: a ``hello`` and event frames built with ``UplinkSender`` +
``encode_serial`` (encoded before the clock starts: a real node's CPU is not the hub's), its bytes pass through
``SerialDecoder`` exactly as a port read would, and the hub's acks come back as downlink lines that the node decodes
(``LineDecoder``) and authenticates (``DownlinkReceiver``). Only the file-descriptor read of a real pty is not exercised
(the pty tests cover it).

**Phases.** (1) *Latency*: open loop at 2,000 frames/s spread over the nodes; p50/p95/p99 from a frame's arrival
(when its bytes are handed to the decoder) to the ack that covers it. (2) *Throughput*, in rounds: every node keeps
its outbox window (256 events) in flight; sustained frames/s = events acknowledged / time. (3) *Reference*, after
each round, while the hub waits: the rows that round put in the ledger, inserted with one ``executemany`` per
transaction in batches of the ledger's mean batch size into a fresh database with the same schema, triggers and
pragmas (``synchronous=FULL``), and into one with the schema as it was before issue 13 (the status page's index
``movements(location, ts_ms, sku, qty)`` over every movement). Rounds alternate hub and references, so whatever
else the machine does weighs on all of them alike; the ratios are of the sums. The hub writes what the page needs
beside the movements (sensor spans, lane activity: ``hub.ledger.lane_activity``); the references insert the
movement rows alone. The CPU time of each (the hub's event loop thread, the rest of its process, the reference's
thread) is measured too: on a machine whose other work leaves the hub less than its two cores, the frames/s ratio
understates what the hub does on two free cores, where its event loop and its SQLite thread run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.config import HubConfig, NodeConfig
from hub.ledger import schema
from hub.ledger.models import Sku
from hub.schema import MIGRATIONS
from hub.service import HubService, heap
from hub.transport.fastcodec import FastSerialDecoder
from shared_protocol.auth import Key
from shared_protocol.downlink_text import LineDecoder, encode_line
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import DownlinkReceiver, UplinkSender
from shared_protocol.messages import KIND_PICK, Ack, Event, Hello, LaneState
from shared_protocol.serial_framing import encode_serial
from tools.bench import host_figures

WINDOW = 256  # events in flight per node (the firmware outbox's default capacity)
LANES = 4
READ_FRAMES = 64  # frames per simulated port read in the throughput phase


@dataclass
class BenchNode:
    node_id: int
    key: bytes
    wire: list[bytes] = field(default_factory=list)  # wire[i] = serial bytes of event_seq i + 1
    sent: int = 0
    acked: int = 0
    arrival_ns: list[int] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    rejected: int = 0

    def __post_init__(self) -> None:
        self.seq = 0
        self.uplink = UplinkSender(self.node_id, Key(self.key), self._next)
        self.downlink = DownlinkReceiver(self.node_id, Key(self.key), 1)
        self.lines = LineDecoder()
        self.decoder = FastSerialDecoder()  # the hub side of a port read (hub.transport.serial)
        self.acked_event = asyncio.Event()
        self.count = [0] * LANES

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    # the hub's Link to this node
    @property
    def name(self) -> str:
        return f"bench-node-{self.node_id}"

    @property
    def connected(self) -> bool:
        return True

    def send_frame(self, frame: bytes) -> bool:
        now = time.monotonic_ns()
        for raw in self.lines.feed(encode_line(frame)):
            try:
                m = self.downlink.accept(raw).message
            except ProtocolError:
                self.rejected += 1
                continue
            if isinstance(m, Ack) and m.event_seq > self.acked:
                for seq in range(self.acked + 1, min(m.event_seq, len(self.arrival_ns)) + 1):
                    self.latencies_ns.append(now - self.arrival_ns[seq - 1])
                self.acked = m.event_seq
                self.acked_event.set()
        return True

    def prepare(self, events: int, lane_states: bool = False) -> None:
        """Encode the next ``events`` events; with ``lane_states`` each is followed by its lane's counters, as the
        firmware sends them (``wire[i]`` then holds both frames)."""
        start = len(self.wire)
        for i in range(start, start + events):
            lane = i % LANES
            ev = Event(i + 1, lane, KIND_PICK, -1, -3500, 97, 120)
            data = encode_serial(self.uplink.encode(ev))
            self.count[lane] -= 1
            if lane_states:
                c = self.count[lane]
                state = LaneState(lane, c, -c, 0, c * 3500, 0, i + 1)
                data += encode_serial(self.uplink.encode(state))
            self.wire.append(data)

    def hello(self) -> bytes:
        return encode_serial(self.uplink.encode(Hello(1, 0, 0, 1, LANES, 0)))


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] / 1e6


def _feed(hub: HubService, node: BenchNode, first: int, events: int) -> None:
    """One simulated port read: the bytes of events ``first`` .. ``first + events - 1`` (0-based)."""
    assert hub.ingest is not None
    frames = node.decoder.feed(b"".join(node.wire[first : first + events]))
    now = time.monotonic_ns()
    assert len(node.arrival_ns) == first
    node.arrival_ns.extend([now] * events)
    for f in frames:
        hub.ingest.enqueue(node, f, now)


async def _wait_acked(nodes: list[BenchNode], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(n.acked < n.sent for n in nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("the hub stopped acknowledging events")
        await asyncio.sleep(0.005)


async def _paced(hub: HubService, nodes: list[BenchNode], rate: float, seconds: float) -> dict[str, Any]:
    total = int(rate * seconds)
    for n in nodes:
        n.latencies_ns.clear()
    start = time.monotonic()
    k = 0
    while k < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while k < due:
            node = nodes[k % len(nodes)]
            _feed(hub, node, node.sent, 1)
            node.sent += 1
            k += 1
        await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
    await _wait_acked(nodes, 30)
    lat = [x for n in nodes for x in n.latencies_ns]
    return {
        "rate_frames_per_s": rate,
        "frames": total,
        "p50_ms": round(_percentile(lat, 0.50), 2),
        "p95_ms": round(_percentile(lat, 0.95), 2),
        "p99_ms": round(_percentile(lat, 0.99), 2),
        "max_ms": round(max(lat) / 1e6, 2) if lat else None,
    }


def _max_id(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM movements").fetchone()[0])
    finally:
        conn.close()


async def _flood(hub: HubService, nodes: list[BenchNode], per_node: int, frames_per_event: int) -> dict[str, Any]:
    assert hub.ledger is not None
    for n in nodes:
        n.latencies_ns.clear()
    goal = {n.node_id: n.sent + per_node for n in nodes}
    first_id = _max_id(hub.config.database) + 1
    stats0 = (hub.ledger.stats.sensor_batches, hub.ledger.stats.sensor_items)
    wake = asyncio.Event()
    for n in nodes:
        n.acked_event = wake
    t0 = time.perf_counter()
    while any(n.acked < goal[n.node_id] for n in nodes):
        progressed = False
        for n in nodes:
            room = min(n.acked + WINDOW, goal[n.node_id]) - n.sent
            if room > 0:
                k = min(room, READ_FRAMES)
                _feed(hub, n, n.sent, k)
                n.sent += k
                progressed = True
        if progressed:
            await asyncio.sleep(0)
        else:
            wake.clear()
            await asyncio.wait_for(wake.wait(), 30)
    elapsed = time.perf_counter() - t0
    events = sum(per_node for _ in nodes)
    batches = hub.ledger.stats.sensor_batches - stats0[0]
    items = hub.ledger.stats.sensor_items - stats0[1]
    lat = [x for n in nodes for x in n.latencies_ns]
    return {
        "events": events,
        "frames": events * frames_per_event,
        "seconds": round(elapsed, 3),
        "frames_per_s": round(events * frames_per_event / elapsed),
        "events_per_s": round(events / elapsed),
        "commits": batches,
        "mean_batch": round(items / max(1, batches), 1),
        "movement_ids": [first_id, _max_id(hub.config.database)],
        "p50_ms": round(_percentile(lat, 0.50), 2),
        "p95_ms": round(_percentile(lat, 0.95), 2),
    }


_INSERT = (
    "INSERT INTO movements (id, ts_ms, recorded_ms, sku, location, qty, reason, source_ref, leg, actor, note,"
    " reverses_id, node_id, event_seq, weight_delta_dg, confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL,"
    " ?, ?, ?, ?)"
)


class BareLedger:
    """A fresh ledger-schema database that the same movement rows are inserted into: one executemany + COMMIT per
    batch. ``old_index``: with the per-movement location index the status page had before issue 13."""

    def __init__(self, target: Path, source: Path, *, old_index: bool = False) -> None:
        src = sqlite3.connect(source)
        skus = src.execute("SELECT sku, name, unit_weight_dg FROM skus").fetchall()
        nodes = src.execute("SELECT node_id FROM nodes").fetchall()
        lanes = src.execute("SELECT lane_id, node_id, lane_index, sku FROM lanes").fetchall()
        src.close()
        schema.open_and_migrate(target, MIGRATIONS)
        self.conn = schema.connect(target, synchronous="FULL")
        self.conn.executemany("INSERT INTO skus (sku, name, unit_weight_dg) VALUES (?, ?, ?)", skus)
        self.conn.executemany("INSERT INTO nodes (node_id) VALUES (?)", nodes)
        self.conn.executemany("INSERT INTO lanes (lane_id, node_id, lane_index, sku) VALUES (?, ?, ?, ?)", lanes)
        if old_index:
            self.conn.execute("CREATE INDEX movements_location_ts ON movements(location, ts_ms, sku, qty)")
        self.rows = 0
        self.seconds = 0.0
        self.cpu_s = 0.0  # this thread's CPU time (the inserts run on it alone)

    def insert(self, rows: list[Any], batch: int) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(0, len(rows), batch):
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(_INSERT, rows[i : i + batch])
            self.conn.execute("COMMIT")
        self.seconds += time.perf_counter() - t0
        self.cpu_s += time.thread_time() - c0
        self.rows += len(rows)

    def figures(self, batch: int) -> dict[str, Any]:
        rate = round(self.rows / self.seconds) if self.seconds else 0
        cpu = round(self.cpu_s / max(1, self.rows) * 1e6, 1)
        return {"rows": self.rows, "batch": batch, "seconds": round(self.seconds, 3), "rows_per_s": rate, "cpu_us": cpu}

    def close(self) -> None:
        self.conn.close()


def _rows(source: Path, ids: list[int]) -> list[Any]:
    src = sqlite3.connect(source)
    try:
        return src.execute(
            "SELECT id, ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor, note, node_id, event_seq,"
            " weight_delta_dg, confidence FROM movements WHERE id BETWEEN ? AND ? ORDER BY id",
            ids,
        ).fetchall()
    finally:
        src.close()


async def _rounds(
    hub: HubService, nodes: list[BenchNode], per_node: int, rounds: int, directory: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Throughput rounds, each followed by the references inserting the round's rows (the hub idle meanwhile)."""
    db = hub.config.database
    bare = BareLedger(directory / "bare.db", db)
    old = BareLedger(directory / "bare-old-index.db", db, old_index=True)
    total: dict[str, Any] = {"events": 0, "seconds": 0.0, "commits": 0, "items": 0.0, "p50": [], "p95": []}
    cpu = {"main": 0.0, "process": 0.0}
    batch = 1
    try:
        for r in range(rounds):
            share = per_node // rounds + (1 if r < per_node % rounds else 0)
            m0, p0 = time.thread_time(), time.process_time()
            f = await _flood(hub, nodes, share, 1)
            cpu["main"] += time.thread_time() - m0  # the event loop: transports, ingest, the writer's Python
            cpu["process"] += time.process_time() - p0  # ... and the ledger's SQLite thread (aiosqlite), upkeep
            rows = _rows(db, f.pop("movement_ids"))
            batch = max(1, int(f["mean_batch"]))
            (bare.insert, old.insert)[r % 2](rows, batch)  # which reference goes first alternates too
            (old.insert, bare.insert)[r % 2](rows, batch)
            total["events"] += f["events"]
            total["seconds"] += f["seconds"]
            total["commits"] += f["commits"]
            total["items"] += f["mean_batch"] * f["commits"]
            total["p50"].append(f["p50_ms"])
            total["p95"].append(f["p95_ms"])
        flood = {
            "events": total["events"],
            "frames": total["events"],
            "rounds": rounds,
            "seconds": round(total["seconds"], 3),
            "frames_per_s": round(total["events"] / total["seconds"]),
            "events_per_s": round(total["events"] / total["seconds"]),
            "commits": total["commits"],
            "mean_batch": round(total["items"] / max(1, total["commits"]), 1),
            "p50_ms": max(total["p50"]),
            "p95_ms": max(total["p95"]),
            "cpu_us_main": round(cpu["main"] / total["events"] * 1e6, 1),
            "cpu_us_other": round((cpu["process"] - cpu["main"]) / total["events"] * 1e6, 1),
        }
        return flood, bare.figures(batch), old.figures(batch)
    finally:
        bare.close()
        old.close()


async def _bench(directory: Path, quick: bool, nodes_n: int) -> dict[str, Any]:
    paced_s = 0.5 if quick else 5.0
    per_node = 300 if quick else 8000
    nodes = [BenchNode(i, bytes([i]) * 32) for i in range(1, nodes_n + 1)]
    rate = 2000.0
    paced_each = int(rate * paced_s) // nodes_n + 1
    hellos = {n.node_id: n.hello() for n in nodes}  # first frame of each node: frame seq 1
    for n in nodes:
        n.prepare(paced_each + per_node)
        n.prepare(per_node, lane_states=True)
    cfg = HubConfig(
        path=directory / "hub.toml",
        database=directory / "bench.db",
        synchronous="FULL",
        nodes=tuple(NodeConfig(n.node_id, n.key, n.name) for n in nodes),
    )
    hub = HubService(cfg, control=False, open_ports=False, reconcile=False)
    await hub.start()
    restore = contextlib.ExitStack()
    restore.enter_context(heap.settled())  # as `smartshelf hub run` does once started
    try:
        assert hub.ledger is not None and hub.ingest is not None
        await hub.ledger.add_sku(Sku("BENCH", "Benchmark item", 3500, 10), actor="bench")
        for n in nodes:
            for lane in range(LANES):
                await hub.ledger.assign_lane(n.node_id, lane, "BENCH", actor="bench")
        for n in nodes:
            for f in n.decoder.feed(hellos[n.node_id]):
                hub.ingest.enqueue(n, f, time.monotonic_ns())
        deadline = time.monotonic() + 10
        while any(n.downlink.last_seq == 0 for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the hub did not answer the nodes' hellos")
            await asyncio.sleep(0.01)
        paced = await _paced(hub, nodes, rate, paced_s)
        flood, bare, old = await _rounds(hub, nodes, per_node, 2 if quick else 4, directory)
        mixed = await _flood(hub, nodes, per_node, 2)
        rejected = sum(n.rejected for n in nodes)
    finally:
        restore.close()
        await hub.stop()
    mixed.pop("movement_ids")
    return {
        "nodes": nodes_n,
        "synchronous": "FULL",
        "throughput": flood,
        "throughput_with_lane_states": mixed,
        "latency_at_2000": paced,
        "bare_sqlite": bare,
        "bare_sqlite_old_index": old,
        "ratio_to_bare": round(flood["frames_per_s"] / bare["rows_per_s"], 3),
        "ratio_to_bare_old_index": round(flood["frames_per_s"] / old["rows_per_s"], 3),
        # CPU per frame / row: on two free cores the hub's two threads overlap, its rate bounded by the busier one
        "cpu_ratio_two_cores": round(bare["cpu_us"] / max(flood["cpu_us_main"], flood["cpu_us_other"], 0.1), 3),
        "downlink_rejected_by_nodes": rejected,
    }


def run(quick: bool = False, as_json: bool = False, nodes: int = 16, directory: str | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="smartshelf-bench-hub-", dir=directory))
    try:
        figures = asyncio.run(_bench(tmp, quick, nodes))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures.update(host_figures())
    if as_json:
        print(json.dumps(figures, indent=2))
        return figures
    t, p, b = figures["throughput"], figures["latency_at_2000"], figures["bare_sqlite"]
    print(f"hub ingest benchmark{' (quick)' if quick else ''}: {nodes} synthetic nodes in process -> SerialDecoder ->")
    print("  ingest (verify, dedupe, apply, ack after commit) -> ledger, synchronous=FULL, one run (no reconciler)")
    o = figures["bare_sqlite_old_index"]
    print(
        f"sustained      {t['frames_per_s']:>9,} frames/s into the ledger, every index the page needs ({t['events']:,} "
        f"events in {t['rounds']} rounds, {t['seconds']} s, {t['commits']} commits, mean batch {t['mean_batch']})"
    )
    print(
        f"bare SQLite    {b['rows_per_s']:>9,} rows/s (the same {b['rows']:,} rows, batches of {b['batch']}, same"
        " schema)"
        f" -> hub / bare = {figures['ratio_to_bare']:.2f}"
    )
    print(
        f"  before       {o['rows_per_s']:>9,} rows/s (the same rows into the schema before issue 13: an index entry "
        f"per movement for the page) -> hub / that = {figures['ratio_to_bare_old_index']:.2f}"
    )
    print(
        f"CPU per frame: hub event loop {t['cpu_us_main']} us + ledger thread {t['cpu_us_other']} us; bare SQLite "
        f"{b['cpu_us']} us per row -> with two free cores (the busier hub thread sets the pace): "
        f"{figures['cpu_ratio_two_cores']:.2f} of bare"
    )
    print(
        f"latency at {p['rate_frames_per_s']:,.0f} frames/s (arrival -> ack, {p['frames']:,} frames): "
        f"p50 {p['p50_ms']} ms, p95 {p['p95_ms']} ms, p99 {p['p99_ms']} ms"
    )
    print(f"  (under full load: p50 {t['p50_ms']} ms, p95 {t['p95_ms']} ms with {WINDOW} events in flight per node)")
    m = figures["throughput_with_lane_states"]
    print(
        f"firmware pattern (each event followed by its lane_state): {m['frames_per_s']:,} frames/s = "
        f"{m['events_per_s']:,} events/s (mean batch {m['mean_batch']})"
    )
    print("targets: >= 40,000 frames/s, >= 0.5 of bare SQLite, p95 <= 50 ms at 2,000 frames/s")
    return figures
