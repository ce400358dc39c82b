"""``smartshelf bench fleet``: many stores' movements through MQTT into PostgreSQL, with bare inserts beside them.

**What runs.** A real Mosquitto (TLS listener, password file, the fleet ACL) and a real PostgreSQL (a throw-away
cluster, ``fsync=off``, ``track_commit_timestamp=on``), both from ``tools/servers``, and the real central consumer:
``smartshelf central run`` as a subprocess with central.toml's default batching (50 messages / 20,000 rows per
transaction, Receive Maximum 100). The hubs are simulated in this process, honestly lighter than 100
``HubService``s: each is one MQTT 5 connection over TLS with the hub's own credentials and client id, made by the
hub's own client class (``hub.fleet.client.PubackClient``, as ``FleetPublisher`` makes it: ``clean_start`` false, a
session expiry, a will, ``TCP_NODELAY``), publishing QoS 1 batches encoded by the contract's own encoder
(``hub.fleet.messages.encode_movements``), in id order, with at most the hub's default ``max_in_flight`` (10)
awaiting their PUBACK, a PUBACK with a failure code being an error. Each hub has 200 lanes (25 nodes x 8): its
movements are sensor picks (and now and then a restocking put) on those lanes, as its ledger would hold them.

**Measured, per number of hubs (10, 30, 100; ``--quick``: 10 and 30, fewer movements), in one run.**
(1) *Sustained*: every hub publishes its backlog in batches of 500 (the hub's default ``batch_size``, encoded
before the clock starts: a hub's CPU is its own Pi's); movements/s = movements / (last commit - first publish).
(2) *Latency*: per batch, publish (the hub's wall clock just before the PUBLISH) -> the commit of the transaction
that stored it, read from PostgreSQL itself (``pg_xact_commit_timestamp`` of the row's ``xmin``): under (1), where
it is mostly queueing, and (3) *paced*: every hub publishing what it booked every 0.5 s (encoded then, as the
publisher does), together at half the sustained rate. (4) *References*, after (1), the consumer idle: the same rows
into a fresh database with the same schema (``hub.central.schema``) on the same server, in transactions of the
consumer's mean rows per commit, by a bare binary ``COPY`` and by a batched ``INSERT`` (asyncpg ``executemany``).
The ratios are movements/s through the tier over rows/s of each. CPU per movement of the consumer process, the
broker and this process (the simulated hubs: TLS, paho) is shown: on a loaded two-core machine they compete.

The broker's ``max_queued_messages`` is raised to 10,000: the broker acknowledges a hub's publish as soon as it has
queued it for central, so a burst of 100 hubs x 10 in flight would overflow Mosquitto's default (1,000) on
central's session, and the messages dropped would come back only through rewinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.central.consumer import load_asyncpg
from hub.central.schema import migrate
from hub.fleet.client import FAILURE, PubackClient
from hub.fleet.messages import MOVEMENT_COLUMNS, encode_movements, encode_status, topic
from tools.bench import host_figures
from tools.servers.mosquitto import Broker
from tools.servers.postgres import Postgres
from tools.servers.process import ServerUnavailable

PREFIX = "smartshelf/v1"
LANES, LANES_PER_NODE = 200, 8
BATCH = 500  # the hub's default batch_size
WINDOW = 10  # the hub's default max_in_flight
STEPS, QUICK_STEPS = (10, 30, 100), (10, 30)
MOVEMENTS, QUICK_MOVEMENTS = 300_000, 20_000  # per step, about
PACED_S, QUICK_PACED_S, TICK_S, PACED_LOAD = 6.0, 1.5, 0.5, 0.5
CENTRAL, CENTRAL_PW = "central", "bench-central-pw"
ROOT = Path(__file__).resolve().parents[2]
_TABLE_COLUMNS = (
    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
    " AND table_name = 'movements' ORDER BY ordinal_position"
)
TABLES = "hubs, movements, stock, movement_ranges, alerts, snapshot_skus, snapshot_lanes, snapshot_nodes, snapshot_book"


def rows(hub: str, first: int, last: int, base_ms: int) -> list[tuple[Any, ...]]:
    """Movements ``first..last`` of a hub with 200 lanes, in the wire's columns (deterministic)."""
    out = []
    for i in range(first, last + 1):
        lane, sweep = (i - 1) % LANES, (i - 1) // LANES
        node, index = lane // LANES_PER_NODE + 1, lane % LANES_PER_NODE
        qty = 3 if sweep % 5 == 4 else -1
        seq = sweep * LANES_PER_NODE + index + 1
        out.append((i, base_ms + i * 10, base_ms + i * 10 + 40, f"SKU-{lane:03d}", f"sensor:{hub}-n{node}-l{index}",
                    qty, "sensor_put" if qty > 0 else "sensor_pick", f"node:{node}:ev:{seq}", 0, f"node:{node}",
                    None, None, node, seq, qty * 3500, 95))  # fmt: skip
    return out


@dataclass
class SimHub:
    hub_id: str
    client: PubackClient
    next_id: int = 1
    stamps: list[tuple[str, int, float]] = field(default_factory=list)  # (hub, first id, publish wall ms)

    async def publish(self, batches: list[tuple[int, bytes]], window: int) -> None:
        """In id order, at most ``window`` awaiting their PUBACK (the publisher's discipline)."""
        inflight: deque[asyncio.Future[int]] = deque()
        where = topic(PREFIX, self.hub_id, "movements")
        for first, payload in batches:
            while len(inflight) >= window:
                _check(await inflight.popleft(), self.hub_id)
            self.stamps.append((self.hub_id, first, time.time() * 1000))
            inflight.append(self.client.send(where, payload))
        for ack in inflight:
            _check(await ack, self.hub_id)


def _check(code: int, hub: str) -> None:
    if code >= FAILURE:
        raise RuntimeError(f"bench fleet: the broker refused a batch of {hub} (reason code 0x{code:02X})")


def _client(broker: Broker, hub: str, tls: ssl.SSLContext) -> PubackClient:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    will = aiomqtt.Will(topic(PREFIX, hub, "status"), encode_status(hub, "offline", int(time.time() * 1000)), 1, True)
    return PubackClient(
        broker.host, broker.port, username=hub, password=f"pw-{hub}", identifier=f"smartshelf-hub-{hub}",
        protocol=aiomqtt.ProtocolVersion.V5, will=will, clean_start=False, properties=props, tls_context=tls,
        keepalive=60, max_inflight_messages=WINDOW, timeout=30,
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
    )  # fmt: skip


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process and its children (PostgreSQL: the postmaster and its backends)."""
    total = _cpu_s(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if stat.read_text().rpartition(")")[2].split()[1] == str(pid):
                total += _cpu_s(int(stat.parent.name))
    return total


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


class Central:
    """``smartshelf central run`` as a subprocess; its log in ``directory``."""

    def __init__(self, directory: Path, broker: Broker, dsn: str) -> None:
        pw = directory / "central-password"
        pw.write_text(CENTRAL_PW + "\n")
        pw.chmod(0o600)
        self.config = directory / "central.toml"
        self.config.write_text(
            f'[central]\nstatus_interval_s = 3600\n\n[database]\ndsn = "{dsn}"\n\n[broker]\nhost = "{broker.host}"\n'
            f'port = {broker.port}\ncafile = "{broker.ca_file}"\nusername = "{CENTRAL}"\npassword_file = '
            '"central-password"\nclient_id = "bench-central"\nreconnect_min_s = 0.1\nreconnect_max_s = 1\n'
        )
        self.config.chmod(0o600)
        self.log = directory / "central.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        argv = [sys.executable, "-m", "hub.cli", "central", "run", "--config", str(self.config)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "subscribed to" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench fleet: the central consumer did not start:\n{self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def _stored(db: Any) -> int:
    return int(await db.fetchval("SELECT coalesce(sum(movements_stored), 0) FROM hubs"))


async def _wait_stored(db: Any, n: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := await _stored(db)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench fleet: {got} of {n} movements reached PostgreSQL in {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


_COMMITTED = """
SELECT t.sent, extract(epoch FROM pg_xact_commit_timestamp(m.xmin)) * 1000 AS committed
FROM unnest($1::text[], $2::bigint[], $3::float8[]) AS t(hub, first, sent)
JOIN movements m ON m.hub_id = t.hub AND m.id = t.first
"""


async def _latencies(db: Any, stamps: list[tuple[str, int, float]]) -> tuple[list[float], float]:
    """Publish -> commit of each batch (ms), and the last commit (wall ms)."""
    hubs, firsts, sent = (list(c) for c in zip(*stamps, strict=True))
    got = await db.fetch(_COMMITTED, hubs, firsts, sent)
    if len(got) != len(stamps):
        raise RuntimeError(f"bench fleet: {len(stamps) - len(got)} batches missing at central")
    return [float(r["committed"]) - r["sent"] for r in got], max(float(r["committed"]) for r in got)


async def _columns(ref: Any) -> tuple[str, ...]:
    """The central ``movements`` columns a row fills, in the table's order: the hub, its ledger incarnation (1: never
    restored) when the schema has one, the wire's columns, and the time received."""
    known = {"hub_id", "incarnation", *MOVEMENT_COLUMNS, "received_ms"}
    return tuple(r[0] for r in await ref.fetch(_TABLE_COLUMNS) if r[0] in known)


def _as_row(columns: tuple[str, ...], hub: str, movement: tuple[Any, ...], received_ms: int) -> tuple[Any, ...]:
    values = dict(zip(MOVEMENT_COLUMNS, movement, strict=True))
    values.update(hub_id=hub, incarnation=1, received_ms=received_ms)
    return tuple(values[c] for c in columns)


async def _reference(
    ref: Any, how: str, columns: tuple[str, ...], chunks: list[list[tuple[Any, ...]]]
) -> dict[str, Any]:
    """The rows into the reference database, one transaction per chunk; only the database calls are timed."""
    await ref.execute("TRUNCATE movements")
    params = ", ".join(f"${i + 1}" for i in range(len(columns)))
    insert = f"INSERT INTO movements ({', '.join(columns)}) VALUES ({params})"
    seconds = 0.0
    for chunk in chunks:
        t0 = time.perf_counter()
        async with ref.transaction():
            if how == "copy":
                await ref.copy_records_to_table("movements", records=chunk, columns=columns)
            else:
                await ref.executemany(insert, chunk)
        seconds += time.perf_counter() - t0
    n = sum(len(c) for c in chunks)
    return {
        "rows": n,
        "rows_per_commit": len(chunks[0]),
        "seconds": round(seconds, 3),
        "rows_per_s": round(n / seconds),
    }


async def _step(
    n_hubs: int, quick: bool, broker: Broker, pg: Postgres, central: Central, db: Any, ref: Any
) -> dict[str, Any]:
    per_hub = max(1, round((QUICK_MOVEMENTS if quick else MOVEMENTS) / (n_hubs * BATCH))) * BATCH
    total = per_hub * n_hubs
    ids = [f"n{n_hubs}-h{i:03d}" for i in range(n_hubs)]
    base_ms = int(time.time() * 1000) - 86_400_000
    await db.execute(f"TRUNCATE {TABLES}")
    tls = ssl.create_default_context(cafile=str(broker.ca_file))
    async with contextlib.AsyncExitStack() as stack:
        gate = asyncio.Semaphore(10)

        async def connect(hub: str) -> SimHub:
            async with gate:
                return SimHub(hub, await stack.enter_async_context(_client(broker, hub, tls)))

        hubs = list(await asyncio.gather(*(connect(h) for h in ids)))
        window = min(WINDOW, *(h.client.receive_maximum for h in hubs))
        backlog = {
            h.hub_id: [(f, encode_movements(h.hub_id, rows(h.hub_id, f, f + BATCH - 1, base_ms), base_ms))
                       for f in range(1, per_hub + 1, BATCH)]
            for h in hubs
        }  # fmt: skip
        # (1) sustained: every hub's backlog, as fast as the tier takes it
        cpu0 = (_cpu_s(central.pid), _tree_cpu_s(pg.pid), _cpu_s(broker.pid), time.process_time())
        t0 = time.time() * 1000
        await asyncio.gather(*(h.publish(backlog[h.hub_id], window) for h in hubs))
        await _wait_stored(db, total)
        cpu1 = (_cpu_s(central.pid), _tree_cpu_s(pg.pid), _cpu_s(broker.pid), time.process_time())
        del backlog
        lat, last_commit = await _latencies(db, [s for h in hubs for s in h.stamps])
        rate = total / ((last_commit - t0) / 1000)
        commits = int(await db.fetchval("SELECT count(DISTINCT xmin::text) FROM movements"))
        # (3) paced: at half that rate, each hub publishing what it booked every TICK_S
        paced_s = QUICK_PACED_S if quick else PACED_S
        k = max(1, round(rate * PACED_LOAD * TICK_S / n_hubs))
        for h in hubs:
            h.stamps.clear()
            h.next_id = per_hub + 1
        start = asyncio.get_running_loop().time() + 0.2

        async def paced(h: SimHub, offset: float) -> None:
            loop = asyncio.get_running_loop()
            acks = []
            for tick in range(int(paced_s / TICK_S)):
                await asyncio.sleep(max(0.0, start + offset + tick * TICK_S - loop.time()))
                now = int(time.time() * 1000)
                for first in range(h.next_id, h.next_id + k, BATCH):  # a fast run's k can pass a message's MAX_ROWS
                    last = min(first + BATCH, h.next_id + k) - 1
                    payload = encode_movements(h.hub_id, rows(h.hub_id, first, last, base_ms), now)
                    h.stamps.append((h.hub_id, first, time.time() * 1000))
                    acks.append(h.client.send(topic(PREFIX, h.hub_id, "movements"), payload))
                h.next_id += k
            for ack in acks:
                _check(await ack, h.hub_id)

        await asyncio.gather(*(paced(h, TICK_S * i / n_hubs) for i, h in enumerate(hubs)))
        paced_total = sum(h.next_id - 1 - per_hub for h in hubs)
        await _wait_stored(db, total + paced_total)
        paced_lat, _ = await _latencies(db, [s for h in hubs for s in h.stamps])
    # (4) the same rows of (1), bare, in the consumer's mean transaction size
    per_commit = max(1, round(total / max(1, commits)))
    columns = await _columns(ref)
    flat = [
        _as_row(columns, h, r, base_ms)
        for j in range(1, per_hub + 1, BATCH)
        for h in ids
        for r in rows(h, j, j + BATCH - 1, base_ms)
    ]
    chunks = [flat[i : i + per_commit] for i in range(0, len(flat), per_commit)]
    del flat
    copy = await _reference(ref, "copy", columns, chunks)
    insert = await _reference(ref, "insert", columns, chunks)
    return {
        "hubs": n_hubs,
        "lanes_per_hub": LANES,
        "movements": total,
        "batches": total // BATCH,
        "seconds": round((last_commit - t0) / 1000, 3),
        "movements_per_s": round(rate),
        "commits": commits,
        "rows_per_commit": per_commit,
        "latency_p50_ms": _pct(lat, 0.50),
        "latency_p95_ms": _pct(lat, 0.95),
        "paced": {
            "offered_per_s": round(k * n_hubs / TICK_S),
            "batch_rows": min(k, BATCH),  # rows per message (a tick of k rows is split into these)
            "rows_per_tick": k,
            "batches": len(paced_lat),
            "p50_ms": _pct(paced_lat, 0.50),
            "p95_ms": _pct(paced_lat, 0.95),
        },
        "bare_copy": copy,
        "batched_insert": insert,
        "ratio_to_copy": round(rate / copy["rows_per_s"], 3),
        "ratio_to_insert": round(rate / insert["rows_per_s"], 3),
        "cpu_us_per_movement": {
            name: round((b - a) / total * 1e6, 1)
            for name, a, b in zip(("central", "postgres", "broker", "hubs"), cpu0, cpu1, strict=True)
        },
    }


async def _bench(directory: Path, quick: bool, broker: Broker, pg: Postgres) -> list[dict[str, Any]]:
    asyncpg = load_asyncpg()
    dsn = pg.create_database("fleet_bench")
    ref = await asyncpg.connect(pg.create_database("fleet_reference"))
    central = Central(directory, broker, dsn)
    try:
        await migrate(ref)
        await central.start()  # migrates its database
        db = await asyncpg.connect(dsn)
        try:
            return [await _step(n, quick, broker, pg, central, db, ref) for n in (QUICK_STEPS if quick else STEPS)]
        finally:
            await db.close()
    finally:
        central.stop()
        await ref.close()


def run(quick: bool = False, as_json: bool = False) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="smartshelf-bench-fleet-"))
    hubs = [f"n{n}-h{i:03d}" for n in (QUICK_STEPS if quick else STEPS) for i in range(n)]
    users = {h: f"pw-{h}" for h in hubs} | {CENTRAL: CENTRAL_PW}
    # servers from this (the main) thread: they die with the thread that started them
    broker: Broker | None = None
    try:
        broker = Broker(users=users, central_users={CENTRAL}, max_inflight_messages=100, max_queued_messages=10_000)
        pg = Postgres(settings={"track_commit_timestamp": "on"})
    except ServerUnavailable as exc:
        if broker is not None:
            broker.close()
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"smartshelf bench fleet: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        broker.start()
        pg.start()
        steps = asyncio.run(_bench(tmp, quick, broker, pg))
    finally:
        broker.close()
        pg.close()
        shutil.rmtree(tmp, ignore_errors=True)
    figures: dict[str, Any] = {
        "broker": f"mosquitto {broker.version}",
        "postgres": f"PostgreSQL {pg.version} (fsync off)",
        "batch_rows": BATCH,
        "max_in_flight": WINDOW,
        "steps": steps,
        **host_figures(),
    }
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        _print(figures, quick)
    return figures


def _print(f: dict[str, Any], quick: bool) -> None:
    print(f"fleet benchmark{' (quick)' if quick else ''}: simulated hubs x {LANES} lanes, each one TLS connection "
          f"(QoS 1, batches of {BATCH}, {WINDOW} in flight) -> {f['broker']} ->")  # fmt: skip
    print(f"  smartshelf central run (subprocess, default batching) -> {f['postgres']}; one run, figures side by side")
    head = (" hubs  movements  into PG /s  commits  rows/commit | bare COPY /s  ratio | batched INSERT /s  ratio |"
            " CPU us/movement: central postgres broker hubs")  # fmt: skip
    print(head)
    for s in f["steps"]:
        c, i, cpu = s["bare_copy"], s["batched_insert"], s["cpu_us_per_movement"]
        print(
            f" {s['hubs']:>4} {s['movements']:>10,} {s['movements_per_s']:>11,} {s['commits']:>8,} "
            f"{s['rows_per_commit']:>12,} | {c['rows_per_s']:>12,} {s['ratio_to_copy']:>6.2f} | "
            f"{i['rows_per_s']:>17,} {s['ratio_to_insert']:>6.2f} | {cpu['central']:>24} {cpu['postgres']:>8} "
            f"{cpu['broker']:>6} {cpu['hubs']:>4}"
        )
    print("latency, publish -> central commit (PostgreSQL's commit timestamp of the batch's transaction), ms:")
    left, right = "draining the backlog above (queueing): p50", "paced at half that rate: offered/s"
    print(f" hubs | {left}     p95 | {right}  batch     p50     p95")
    for s in f["steps"]:
        p = s["paced"]
        print(
            f" {s['hubs']:>4} | {s['latency_p50_ms']:>{len(left)}} {s['latency_p95_ms']:>7} | "
            f"{p['offered_per_s']:>{len(right)},} {p['batch_rows']:>6} {p['p50_ms']:>7} {p['p95_ms']:>7}"
        )
    print(f"host: {f['host']}, Python {f['python']}, {f['cpus']} CPUs (shared: the ratios are what count)")
