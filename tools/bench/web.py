"""``smartshelf bench web``: the status page and HTTP API on a store-sized ledger, with bare SQLite beside them.

**The ledger.** A fresh database migrated by the hub's own code (``schema.open_and_migrate``), then filled in one
transaction with ``executemany``: 250 nodes x 8 lanes = 2,000 lanes over 1,000 SKUs, 1,000,000 movements over 30
days (sensor picks and restocking puts per lane, with the book side a store posts beside them: sales out of the
lane, restocks from the backroom, receipts into it), the balances kept by the schema's own trigger, each lane's
assignment to its SKU in the audit (as ``assign_lane`` audits it), 1,000 resolved and ~60 unresolved alerts, a
manager and an API client (scopes ``read sales``). ``--quick``: 200 lanes, 20,000 movements.

**The server.** What ``HubService`` runs: a ``LedgerService`` (``synchronous=FULL``) on an asyncio loop in its own
thread, and ``WebServer.start`` (the hub's HTTP server, the Flask app, ``LoopWriter`` into that loop), on 127.0.0.1.

**Measured, in one run.**
(1) ``GET /`` (the overview, signed in through ``/login``), ``/lanes.json``, ``/api/v1/lanes`` and
``/api/v1/stock`` (bearer token): one client, keep-alive, sequential requests; p50/p95 of the full request.
(2) Interleaved with them (round robin, so the machine's other work weighs on each alike): the same overview
rendered by the Flask test client in process (no HTTP), and the page's own lanes query
(``hub.web.lanes.lanes``) and the stock endpoint's three queries on a bare read-only ``sqlite3`` connection: the
references the ratios are taken against.
(3) SSE fan-out: 50 ``/events`` clients (one asyncio process of their own, so they do not share the server's GIL)
while an ingest task on the hub's loop commits sensor events through the ``LedgerService`` at a steady rate, each
a pick on a different lane. Latency = a client's receipt of the lane's new count - the commit (the future of
``submit`` resolving; both ``time.monotonic``, one clock for both processes on Linux). Every client must receive
every change. The overview is fetched sequentially during this phase too.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import multiprocessing
import random
import re
import secrets
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from hub.ledger import LedgerService, lane_activity, schema, sold_hours
from hub.ledger.causes import Cause
from hub.ledger.models import SensorEvent, now_ms
from hub.ledger.reader import BOOK_STOCK, OBSERVED_STOCK, SKUS
from hub.schema import MIGRATIONS
from hub.service import heap
from shared_protocol.messages import KIND_PICK
from tools.bench import host_figures, web_reports

T = TypeVar("T")

DAY_MS = 86_400_000
PASSWORD = "bench-password"
OVERVIEW_P95_TARGET_MS = 50.0


@dataclass(frozen=True)
class Scale:
    nodes: int
    lanes_per_node: int
    movements: int
    resolved_alerts: int
    requests: int  # timed requests per endpoint
    sse_clients: int
    ingest_rate: float  # sensor events per second during the fan-out phase
    ingest_s: float
    report_requests: int = 20  # timed requests per report page
    walk_repeats: int = 3  # runs of the out-of-stock walk of before

    @property
    def lanes(self) -> int:
        return self.nodes * self.lanes_per_node


FULL = Scale(250, 8, 1_000_000, 1000, 200, 50, 50.0, 10.0)
QUICK = Scale(25, 8, 20_000, 50, 20, 10, 20.0, 2.0, 5, 1)


# -------------------------------------------------------------------------------------------------- the ledger


@dataclass
class Store:
    lanes: list[tuple[str, int, int, str]]  # lane_id, node_id, lane_index, sku
    counts: dict[str, int]  # observed count per lane (the sensor balance)
    event_seq: dict[int, int]  # node -> last event_seq
    movements: int
    open_alerts: int
    seconds: float
    token: str
    user: str = "bench-manager"


_MOVEMENT = (
    "INSERT INTO movements (id, ts_ms, recorded_ms, sku, location, qty, reason, source_ref, leg, actor, note,"
    " reverses_id, node_id, event_seq, weight_delta_dg, confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL,"
    " ?, ?, ?, ?)"
)


def _fast_hash(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="pbkdf2:sha256:1000")


def build_ledger(path: Path, scale: Scale, seed: int = 1) -> Store:
    """A store-sized ledger: schema by the hub's migrations, rows by ``executemany`` in one transaction."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    schema.open_and_migrate(path, MIGRATIONS, synchronous="NORMAL")
    conn = schema.connect(path, synchronous="NORMAL")
    # for the build only: a rollback journal in memory and no fsync (a crash just means building again),
    # back to the ledger's WAL before the server opens it
    conn.execute("PRAGMA journal_mode = MEMORY")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    now = now_ms()
    start = now - 30 * DAY_MS
    n_skus = max(1, scale.lanes // 2)
    skus = [
        (f"SKU{i:05d}", f"Item {i:05d} {rng.choice(['cola', 'tea', 'soup', 'chips', 'water', 'juice'])}",
         rng.randint(500, 20000), rng.randint(2, 6), rng.randint(12, 40))
        for i in range(n_skus)
    ]  # fmt: skip
    capacity = {s[0]: s[4] for s in skus}
    lanes = [
        (f"N{node:03d}-{index}", node, index, skus[((node - 1) * scale.lanes_per_node + index) // 2][0])
        for node in range(1, scale.nodes + 1)
        for index in range(scale.lanes_per_node)
    ]
    counts = {lane_id: 0 for lane_id, *_ in lanes}
    event_seq = dict.fromkeys(range(1, scale.nodes + 1), 0)
    weight = {s[0]: s[2] for s in skus}
    token = "ssk_bench_" + secrets.token_urlsafe(24)

    def rows() -> Iterator[tuple[Any, ...]]:
        mid = 0
        ref = 0
        step = (now - 60_000 - start) / scale.movements

        def sensor(lane: tuple[str, int, int, str], qty: int, ts: int) -> tuple[Any, ...]:
            nonlocal mid
            lane_id, node, _, sku = lane
            mid += 1
            event_seq[node] += 1
            seq = event_seq[node]
            counts[lane_id] += qty
            reason = "sensor_pick" if qty < 0 else "sensor_put"
            return (mid, ts, ts + 150, sku, f"sensor:{lane_id}", qty, reason, f"node:{node}:ev:{seq}", 0,
                    f"node:{node}", node, seq, qty * weight[sku], 97)  # fmt: skip

        def book(sku: str, location: str, qty: int, reason: str, ts: int, leg: int = 0) -> tuple[Any, ...]:
            nonlocal mid
            mid += 1
            return (mid, ts, ts + 400, sku, location, qty, reason, f"bench:{ref}", leg, "pos", None, None, None, None)

        for lane in lanes:  # first stocking: the shelf filled, observed by its sensor
            lane_id, _, _, sku = lane
            ref += 1
            yield book(sku, "backroom", capacity[sku], "receipt", start)
            ref += 1
            yield book(sku, "backroom", -capacity[sku], "restock", start)
            yield book(sku, f"lane:{lane_id}", capacity[sku], "restock", start, leg=1)
            yield sensor(lane, capacity[sku], start)
        while mid < scale.movements:
            ts = start + int(mid * step)
            lane = lanes[rng.randrange(len(lanes))]
            lane_id, _, _, sku = lane
            if counts[lane_id] > 0 and rng.random() < 0.93:
                yield sensor(lane, -1, ts)
                if rng.random() < 0.85:  # most picks are sold a little later
                    ref += 1
                    yield book(sku, f"lane:{lane_id}", -1, "sale", ts + rng.randint(5_000, 600_000))
            else:
                qty = capacity[sku] - counts[lane_id]
                if qty <= 0:
                    continue
                ref += 1
                yield book(sku, "backroom", qty, "receipt", ts - 3_600_000)
                ref += 1
                yield book(sku, "backroom", -qty, "restock", ts)
                yield book(sku, f"lane:{lane_id}", qty, "restock", ts, leg=1)
                yield sensor(lane, qty, ts)

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO skus (sku, name, unit_weight_dg, reorder_point, capacity) VALUES (?, ?, ?, ?, ?)", skus
    )
    conn.executemany(
        "INSERT INTO nodes (node_id, label, fw_version, first_seen_ms, last_seen_ms) VALUES (?, ?, '1.0.0', ?, ?)",
        [(n, f"shelf {n}", start, now) for n in range(1, scale.nodes + 1)],
    )
    conn.executemany("INSERT INTO lanes (lane_id, node_id, lane_index, sku) VALUES (?, ?, ?, ?)", lanes)
    # each lane assigned its SKU before the first stocking, audited as ``assign_lane`` audits it (the reports read
    # the lanes' assignment history)
    conn.executemany(
        "INSERT INTO audit (ts_ms, actor, action, details, origin)"
        " VALUES (?, 'bench', 'assign_lane', ?, 'cli:bench@hub')",
        [
            (start - 60_000, json.dumps({"lane_id": lane_id, "node_id": node, "lane_index": index, "old_sku": None,
                                         "sku": sku}))
            for lane_id, node, index, sku in lanes
        ],
    )  # fmt: skip
    # the movements' secondary indexes are built once after the rows (same definitions, read from the schema)
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'movements' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.executemany(_MOVEMENT, rows())
    for _, sql in indexes:
        conn.execute(sql)
    lane_activity.rebuild(conn)  # what the writer keeps beside the movements: sensor spans, lane activity,
    sold_hours.rebuild(conn)  # out-of-stock stretches, units sold per hour
    movements = int(conn.execute("SELECT count(*) FROM movements").fetchone()[0])
    conn.executemany(
        "UPDATE nodes SET highest_contiguous_event_seq = ?, last_uplink_seq = ? WHERE node_id = ?",
        [(seq, seq, node) for node, seq in event_seq.items()],
    )
    # alerts: resolved history, and unresolved ones on a few lanes and SKUs
    kinds = ["shrinkage", "damage", "misplaced", "sensor"]
    alerts: list[tuple[str, str, str, int, int | None, str | None, str | None]] = []
    for i in range(scale.resolved_alerts):
        lane_id, _, _, sku = lanes[rng.randrange(len(lanes))]
        opened = start + rng.randrange(29 * DAY_MS)
        alerts.append(
            (kinds[i % 4], str(Cause.lane_sku(lane_id, sku)), "resolved", opened, opened + 3_600_000, "bench", "ok")
        )
    open_lanes = rng.sample(lanes, max(3, len(lanes) // 40))
    for i, (lane_id, _, _, sku) in enumerate(open_lanes):
        kind = kinds[i % 4]
        cause = Cause.lane(lane_id) if kind == "sensor" else Cause.lane_sku(lane_id, sku)
        alerts.append((kind, str(cause), "open", now - rng.randrange(DAY_MS), None, None, None))
    for sku in rng.sample([s[0] for s in skus], max(1, len(skus) // 50)):
        alerts.append(("reorder", str(Cause.of_sku(sku)), "open", now - rng.randrange(DAY_MS), None, None, None))
    conn.executemany(
        "INSERT INTO alerts (kind, cause_key, status, opened_ms, resolved_ms, resolved_by, resolution, evidence)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, '{}')",
        alerts,
    )
    open_alerts = sum(1 for a in alerts if a[2] == "open")
    conn.execute(
        "INSERT INTO users (username, password_hash, role, created_ms) VALUES (?, ?, 'manager', ?)",
        ("bench-manager", _fast_hash(PASSWORD), now),
    )
    conn.execute(
        "INSERT INTO api_clients (name, token_sha256, scopes, created_ms, created_by) VALUES (?, ?, ?, ?, ?)",
        ("bench-pos", _sha256(token), "read sales", now, "bench"),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return Store(lanes, counts, event_seq, movements, open_alerts, time.perf_counter() - t0, token)


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ HTTP clients


class Client:
    """One keep-alive HTTP/1.1 connection with a cookie jar of one cookie (the session)."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.cookie = ""
        self.headers: dict[str, str] = {}

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        h = dict(self.headers, **(headers or {}))
        if self.cookie:
            h["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        for value in resp.headers.get_all("Set-Cookie") or []:
            self.cookie = value.split(";", 1)[0]
        return resp.status, data

    def login(self, user: str, password: str) -> None:
        status, page = self.request("GET", "/login")
        match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
        if status != 200 or match is None:
            raise RuntimeError(f"GET /login: {status}")
        form = urllib.parse.urlencode({"username": user, "password": password, "csrf_token": match.group(1).decode()})
        status, _ = self.request("POST", "/login", form.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 302:
            raise RuntimeError(f"POST /login: {status} (expected a redirect after signing in)")

    def close(self) -> None:
        self.conn.close()


def _summary(seconds: list[float], size: int | None = None) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    out: dict[str, Any] = {
        "n": len(ms),
        "p50_ms": round(_pct(ms, 0.50), 2),
        "p95_ms": round(_pct(ms, 0.95), 2),
        "max_ms": round(ms[-1], 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
    }
    if size is not None:
        out["bytes"] = size
    return out


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def getter(
    client: Client,
    path: str,
    check: Callable[[bytes], str | None] = lambda _: None,
    headers: dict[str, str] | None = None,
) -> Callable[[], int]:
    """A GET of ``path`` that fails unless it answers 200 and ``check(body)`` finds nothing wrong (a fast wrong
    answer is no figure); returns the body's size."""

    def get() -> int:
        status, body = client.request("GET", path, headers=headers)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        problem = check(body)
        if problem is not None:
            raise RuntimeError(f"GET {path}: {problem}")
        return len(body)

    return get


def interleaved(calls: dict[str, Callable[[], object]], n: int, warmup: int = 3) -> dict[str, dict[str, Any]]:
    """Time every call ``n`` times, round robin (call 1, call 2, ..., call 1, ...), so that whatever else the
    machine does at the time weighs on each of them alike: their ratios are measured side by side."""
    sizes: dict[str, int | None] = {}
    for name, fn in calls.items():
        for _ in range(warmup):
            result = fn()
        sizes[name] = result if isinstance(result, int) else None
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: _summary(times[name], sizes[name]) for name in calls}


# ---------------------------------------------------------------------------------------------- SSE clients


def sse_clients(host: str, port: int, cookie: str, n: int, pipe: Connection) -> None:
    """Child process: ``n`` /events clients. Sends "ready" once each has its snapshot, and on "stop" the
    first time each client saw each (lane, count): {client: [[lane, count, t_monotonic], ...]}, plus errors."""
    asyncio.run(_sse_main(host, port, cookie, n, pipe))


@dataclass
class _Seen:
    snapshot: bool = False
    events: int = 0
    first: dict[tuple[str, int], float] = field(default_factory=dict)
    error: str | None = None


async def _sse_one(host: str, port: int, cookie: str, seen: _Seen, stop: asyncio.Event) -> None:
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=16 * 1024 * 1024)
        # HTTP/1.0: the body ends when the server closes (no chunked framing to undo)
        request = (
            f"GET /events HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"GET /events: {status.decode(errors='replace').strip()}")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        event, data = "message", list[bytes]()
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                if not stop.is_set():
                    raise RuntimeError("the server closed the event stream")
                return
            t = time.monotonic()
            line = line.rstrip(b"\r\n")
            if not line:
                if data and event in ("snapshot", "lanes"):
                    payload = json.loads(b"\n".join(data))
                    for lane in payload.get("lanes", ()):
                        seen.first.setdefault((lane["lane_id"], lane["count"]), t)
                    seen.events += 1
                    if event == "snapshot":
                        seen.snapshot = True
                event, data = "message", []
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip())
    except Exception as exc:
        seen.error = f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _sse_main(host: str, port: int, cookie: str, n: int, pipe: Connection) -> None:
    stop = asyncio.Event()
    seen = [_Seen() for _ in range(n)]
    tasks = [asyncio.create_task(_sse_one(host, port, cookie, s, stop)) for s in seen]
    ready_sent = False
    deadline = time.monotonic() + 60
    while True:
        if not ready_sent and all(s.snapshot or s.error for s in seen):
            pipe.send(("ready", [s.error for s in seen if s.error]))
            ready_sent = True
        if not ready_sent and time.monotonic() > deadline:
            pipe.send(("ready", ["timed out waiting for the snapshots"]))
            ready_sent = True
        if pipe.poll() and pipe.recv() == "stop":
            break
        await asyncio.sleep(0.01)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(
        (
            "result",
            [
                {"events": s.events, "error": s.error, "seen": [[k[0], k[1], t] for k, t in s.first.items()]}
                for s in seen
            ],
        )
    )


# ---------------------------------------------------------------------------------------------------- the run


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hub-loop", daemon=True)
        self.thread.start()

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _ingest(
    ledger: LedgerService, store: Store, order: list[tuple[str, int, int, str]], rate: float
) -> dict[tuple[str, int], float]:
    """One sensor pick per lane of ``order``, ``rate`` per second; the commit time of each lane's new count."""
    committed: dict[tuple[str, int], float] = {}
    futures = []
    start = time.monotonic()
    for k, (lane_id, node, index, _) in enumerate(order):
        await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
        store.event_seq[node] += 1
        store.counts[lane_id] -= 1
        key = (lane_id, store.counts[lane_id])
        event = SensorEvent(node, store.event_seq[node], index, KIND_PICK, -1, -3500, 97, now_ms())
        future = ledger.submit(event)
        future.add_done_callback(lambda _f, key=key: committed.setdefault(key, time.monotonic()))  # type: ignore[misc]
        futures.append(future)
    for f in futures:
        await f
    return committed


def _fanout(
    hub: LoopThread, ledger: LedgerService, store: Store, host: str, port: int, cookie: str, scale: Scale
) -> tuple[dict[str, Any], list[float]]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=sse_clients, args=(host, port, cookie, scale.sse_clients, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(90):
            raise RuntimeError("the SSE clients did not start")
        tag, errors = parent.recv()
        if errors:
            raise RuntimeError(f"SSE clients failed to connect: {errors[:3]}")
        rng = random.Random(7)
        total = int(scale.ingest_rate * scale.ingest_s)
        order = rng.sample(store.lanes, min(total, len(store.lanes)))  # each a different lane: no change coalesces
        # the overview, fetched sequentially while the clients listen and the ingest commits
        under_load: list[float] = []
        stop_fetch = threading.Event()

        def fetch() -> None:
            client = Client(host, port)
            client.cookie = cookie
            while not stop_fetch.is_set():
                t = time.perf_counter()
                client.request("GET", "/")
                under_load.append(time.perf_counter() - t)
            client.close()

        fetcher = threading.Thread(target=fetch, name="overview-under-load")
        fetcher.start()
        try:
            t0 = time.monotonic()
            committed = hub.call(lambda: _ingest(ledger, store, order, scale.ingest_rate))
            ingest_s = time.monotonic() - t0
            time.sleep(3.0)  # let the last changes reach every client
        finally:
            stop_fetch.set()
            fetcher.join(30)
        parent.send("stop")
        if not parent.poll(60):
            raise RuntimeError("the SSE clients did not report")
        tag, results = parent.recv()
        assert tag == "result"
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    latencies: list[float] = []
    missing = 0
    complete = 0
    errors = [r["error"] for r in results if r["error"]]
    for r in results:
        seen = {(lane, count): t for lane, count, t in r["seen"]}
        got = 0
        for key, t_commit in committed.items():
            t = seen.get(key)
            if t is None:
                missing += 1
            else:
                got += 1
                latencies.append(t - t_commit)
        complete += got == len(committed)
    figures = {
        "clients": scale.sse_clients,
        "changes": len(committed),
        "rate_per_s": scale.ingest_rate,
        "ingest_s": round(ingest_s, 2),
        "deliveries": len(latencies),
        "missing": missing,
        "clients_with_every_change": complete,
        "errors": errors[:3],
        "events_per_client_mean": round(statistics.fmean(r["events"] for r in results), 1) if results else 0,
        **{k: v for k, v in _summary(latencies).items() if k != "n"},
    }
    return figures, under_load


def _bench(directory: Path, scale: Scale) -> dict[str, Any]:
    from hub.web import LoopWriter, WebServer, create_app
    from hub.web.db import fetch_all
    from hub.web.lanes import lanes
    from hub.web.serving.connections import Limits

    db = directory / "bench.db"
    store = build_ledger(db, scale)
    hub = LoopThread()
    ledger = LedgerService(db, migrations=MIGRATIONS, synchronous="FULL")
    hub.call(ledger.start)
    web: WebServer | None = None
    restore = contextlib.ExitStack()
    try:
        # the fan-out's clients share one signed-in session and one address: the per-session and per-user stream
        # caps and the per-address connection cap let them all in (with the page and API clients beside them)
        n = scale.sse_clients
        web = WebServer.start(
            db, ledger, hub.loop, host="127.0.0.1", port=0, live={"LIVE_MAX_PER_SESSION": n, "LIVE_MAX_PER_USER": n},
            limits=Limits(max_per_client=n + 16),
        )  # fmt: skip
        restore.enter_context(heap.settled())  # as `smartshelf hub run` does once its ledger and server have started
        parsed = urllib.parse.urlsplit(web.url)
        host, port = parsed.hostname or "127.0.0.1", int(parsed.port or 80)
        client = Client(host, port)
        client.login(store.user, PASSWORD)
        bearer = {"Authorization": f"Bearer {store.token}"}
        api = Client(host, port)
        lanes_n = scale.lanes

        def every_lane_row(body: bytes) -> str | None:
            rows = body.count(b'<tr id="lane-')
            return None if rows == lanes_n else f"{rows} lane rows, not {lanes_n}"

        def every_lane_json(body: bytes) -> str | None:
            data = json.loads(body)
            items = data.get("lanes", data.get("items")) if isinstance(data, dict) else data
            n = len(items) if isinstance(items, list) else -1
            return None if n == lanes_n else f"{n} lanes, not {lanes_n}"

        # references: the same page without HTTP (Flask test client), the queries on a bare sqlite3 connection
        app = create_app(db, LoopWriter(ledger, hub.loop), config={"TESTING": True})
        test_client = app.test_client()
        with test_client.session_transaction() as sess:
            sess["user"] = store.user
            sess["epoch"] = 0  # a new user's session epoch (hub/web/access.py)
        bare = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

        def stock_queries() -> None:  # what /api/v1/stock reads: SKUs, book stock, observed stock
            fetch_all(bare, SKUS)  # the ledger's query definitions, as the endpoint runs them
            fetch_all(bare, BOOK_STOCK)
            fetch_all(bare, OBSERVED_STOCK)

        def in_process() -> None:
            if test_client.get("/").status_code != 200:
                raise RuntimeError("GET / in process: not 200")

        timed = interleaved(
            {
                "overview": getter(client, "/", every_lane_row),
                "lanes_json": getter(client, "/lanes.json", every_lane_json),
                "api_lanes": getter(api, "/api/v1/lanes", every_lane_json, bearer),
                "api_stock": getter(api, "/api/v1/stock", headers=bearer),
                "overview_in_process": in_process,
                "lanes_query": lambda: lanes(bare),
                "stock_query": stock_queries,
            },
            scale.requests,
        )
        reports = interleaved(web_reports.calls(lambda path: getter(client, path), bare), scale.report_requests)
        api.close()
        bare.close()
        http_figures = {k: timed[k] for k in ("overview", "lanes_json", "api_lanes", "api_stock")}
        in_process_figures = timed["overview_in_process"]
        lanes_query, stock_query = timed["lanes_query"], timed["stock_query"]
        fanout, under_load = _fanout(hub, ledger, store, host, port, client.cookie, scale)
        client.close()
    finally:
        restore.close()
        if web is not None:
            hub.call(web.stop)
        hub.call(ledger.close)
        hub.close()
    overview = http_figures["overview"]
    before = web_reports.before_and_after(db, scale.walk_repeats)  # server stopped: nothing else reads or writes
    pages = [reports[name]["p95_ms"] for name in web_reports.PAGES]
    return {
        "reports": reports,
        "reports_before": before,
        "target_report_p95_ms": web_reports.REPORT_P95_TARGET_MS,
        "reports_p95_within_target": max(pages) <= web_reports.REPORT_P95_TARGET_MS,
        "ledger": {
            "lanes": scale.lanes,
            "nodes": scale.nodes,
            "skus": max(1, scale.lanes // 2),
            "movements": store.movements,
            "open_alerts": store.open_alerts,
            "build_s": round(store.seconds, 1),
            "db_mib": round(db.stat().st_size / 2**20, 1),
        },
        "http": http_figures,
        "overview_in_process": in_process_figures,
        "bare_sqlite": {"lanes_query": lanes_query, "stock_query": stock_query},
        "overview_under_fanout": _summary(under_load),
        "ratios": {
            "overview_http_to_lanes_query_p50": round(overview["p50_ms"] / lanes_query["p50_ms"], 2),
            "overview_in_process_to_lanes_query_p50": round(in_process_figures["p50_ms"] / lanes_query["p50_ms"], 2),
            "api_stock_to_stock_query_p50": round(
                http_figures["api_stock"]["p50_ms"] / max(stock_query["p50_ms"], 0.001), 2
            ),
        },
        "sse": fanout,
        "target_overview_p95_ms": OVERVIEW_P95_TARGET_MS,
        "overview_p95_within_target": overview["p95_ms"] <= OVERVIEW_P95_TARGET_MS,
    }


def run(quick: bool = False, as_json: bool = False, directory: str | None = None) -> dict[str, Any]:
    scale = QUICK if quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="smartshelf-bench-web-", dir=directory))
    try:
        figures = _bench(tmp, scale)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures.update(host_figures())
    figures["sqlite"] = sqlite3.sqlite_version
    if as_json:
        print(json.dumps(figures, indent=2))
        return figures
    _print(figures, quick)
    return figures


def _fmt(f: dict[str, Any]) -> str:
    return f"p50 {f['p50_ms']:7.2f} ms  p95 {f['p95_ms']:7.2f} ms"


def _print(f: dict[str, Any], quick: bool) -> None:
    led, h, b, s, r = f["ledger"], f["http"], f["bare_sqlite"], f["sse"], f["ratios"]
    print(
        f"status page benchmark{' (quick)' if quick else ''}: {led['lanes']:,} lanes ({led['nodes']} nodes), "
        f"{led['skus']:,} SKUs, {led['movements']:,} movements, {led['open_alerts']} open alerts "
        f"({led['db_mib']} MiB, built in {led['build_s']} s)"
    )
    print("  hypercorn (h11) + Flask in the hub's shape (LedgerService on its loop thread), 127.0.0.1, one run")
    print(f"GET /  (overview, signed in)     {_fmt(h['overview'])}  ({h['overview']['bytes']:,} bytes)")
    print(f"GET /lanes.json                  {_fmt(h['lanes_json'])}  ({h['lanes_json']['bytes']:,} bytes)")
    print(f"GET /api/v1/lanes  (token)       {_fmt(h['api_lanes'])}  ({h['api_lanes']['bytes']:,} bytes)")
    print(f"GET /api/v1/stock  (token)       {_fmt(h['api_stock'])}  ({h['api_stock']['bytes']:,} bytes)")
    print(f"overview in process (no HTTP)    {_fmt(f['overview_in_process'])}")
    print(f"bare SQLite: the lanes query     {_fmt(b['lanes_query'])}")
    print(f"bare SQLite: the stock queries   {_fmt(b['stock_query'])}")
    print(
        f"ratios (p50): overview over HTTP / lanes query = {r['overview_http_to_lanes_query_p50']}, "
        f"in process / lanes query = {r['overview_in_process_to_lanes_query_p50']}, "
        f"API stock / its queries = {r['api_stock_to_stock_query_p50']}"
    )
    print(
        f"SSE fan-out: {s['clients']} /events clients, {s['changes']} sensor commits at {s['rate_per_s']:g}/s: "
        f"commit -> client p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, max {s['max_ms']} ms"
    )
    print(
        f"  every change to every client: {s['clients_with_every_change']}/{s['clients']} clients complete, "
        f"{s['missing']} missing deliveries{', errors: ' + '; '.join(s['errors']) if s['errors'] else ''}"
    )
    print(f"GET / during the fan-out           {_fmt(f['overview_under_fanout'])}")
    ok = "met" if f["overview_p95_within_target"] else "NOT met"
    print(f"target: overview p95 <= {f['target_overview_p95_ms']:g} ms ({ok})")
    rep, bef = f["reports"], f["reports_before"]
    for name, path in web_reports.PAGES.items():
        print(f"GET {path:<27}  {_fmt(rep[name])}  ({rep[name]['bytes']:,} bytes)")
    print(f"bare SQLite: out-of-stock, 90 days  {_fmt(rep['outages_90d_query'])}  (metrics.lane_outages, stretches)")
    print(f"bare SQLite: 90 days' sensor rows   {_fmt(rep['sensor_rows_90d'])}  (read once: the least the walk read)")
    print(
        f"out-of-stock figures, 90 days, before / now (same ledger, same figures, best of {bef['repeats']}): walk of "
        f"every movement {bef['walk_ms']:,} ms, stretches {bef['stretches_ms']} ms = {bef['ratio']:g}x "
        f"({bef['lanes_out_in_period']} lanes out at some time)"
    )
    ok = "met" if f["reports_p95_within_target"] else "NOT met"
    print(f"target: every report page p95 <= {f['target_report_p95_ms']:g} ms ({ok})")
