"""What ``tests/test_fleet_faults.py`` is built of: a TCP relay the test can cut like a network, a store (a real
``HubService`` with its own SQLite ledger and ``[fleet]``, fed by a fake node on a real pty and by its staff), and
the comparison of every hub's ledger with what central holds, as readable differences.

* ``NetworkCut``: a TCP relay on loopback between a hub and the broker. ``cut()`` is a network partition: every
  connection open then or made during it is blackholed (bytes either way are read and thrown away: no answer, no
  RST, no FIN; a new connection gets its TCP handshake and nothing after it). ``heal()`` resets the blackholed
  connections (both ends have given up on them by then) and relays new ones again. ``accepts`` records when each
  connection came and whether the network was cut then: the hub's reconnect attempts, hence its back-off.
* ``Store``: ``start()`` writes ``hub.toml`` (``[hub]``, ``[reconcile]`` with short windows so alerts come within
  seconds, ``[fleet]`` with TLS and the hub's own password, ``[[node]]``) and starts the ``HubService`` (its
  publisher with the production reconnect back-off: 1 s doubling to 60 s, jittered); then
  ``feed`` (node events: picks, puts, picks whose weight is not whole units, lane states) and ``staff`` (sales,
  receipts, restocks, alerts acknowledged and resolved, shrinkage written off) run until told to stop.
* ``CentralProcess`` (``smartshelf central run`` as a subprocess: start, SIGKILL, SIGSTOP / SIGCONT, SIGTERM) and
  ``CentralInProcess`` (``Consumer.run`` on the test's loop, stopped and started again at will). Not SIGSTOP: a
  consumer frozen inside its transaction holds its hubs' rows, and every other consumer waits on them meanwhile.
* ``hub_state(db)`` / ``central_state(conn, hub)`` read the same three things from either side (movements in the
  wire's columns, balances per SKU and location, alerts' latest state); ``differences`` says how they differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.central.config import load_central_config
from hub.central.consumer import Consumer
from hub.config import load_config
from hub.fleet.messages import ALERT_COLUMNS, MOVEMENT_COLUMNS
from hub.ledger.models import LedgerError, Sku
from hub.ledger.postings.alerts import WriteOff
from hub.service import HubService
from tests.hub_support import FakeNode
from tools.servers.process import LOOPBACK

SKUS = (("COLA-330", 3500), ("CHIPS-150", 1500), ("SOAP-90", 900), ("TEA-25", 500))
RECONCILE = {"window_s": 2.0, "lead_s": 1.0, "grace_s": 1.0, "putback_s": 1.0, "interval_s": 1.0}
ROOT = Path(__file__).resolve().parents[1]


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def true(value: bool) -> bool:
    return value


def out_of_order(stream: Sequence[int], wanted: Iterable[int]) -> tuple[list[int], list[int]]:
    """``(missing, early)``: the ``wanted`` values that never appear in ``stream``, and those that first appear
    before a lower wanted value first did (``stream`` may repeat values: a message published again)."""
    first: dict[int, int] = {}
    for i, value in enumerate(stream):
        first.setdefault(value, i)
    missing, early, latest = [], [], -1
    for value in sorted(set(wanted)):
        if value not in first:
            missing.append(value)
        elif first[value] < latest:
            early.append(value)
        else:
            latest = first[value]
    return missing, early


# ------------------------------------------------------------------------------------------------ the network


class NetworkCut:
    """A TCP relay ``127.0.0.1:<port>`` -> ``target_port`` that can be cut and healed (see the module's doc)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.is_cut = False
        self.connections = 0
        self.dropped_bytes = 0
        self.blackholed = 0
        self.accepts: list[tuple[float, bool]] = []  # (time.monotonic(), cut then) of every connection, in order
        self._server: asyncio.Server | None = None
        self._doomed: set[asyncio.StreamWriter] = set()  # the client sides of connections a cut has swallowed
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> NetworkCut:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self.is_cut = True
        self._doomed |= self._open

    def heal(self) -> None:
        self.is_cut = False
        for writer in self._doomed:
            _reset(writer)
        self.blackholed += len(self._doomed)
        self._doomed.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._open | self._doomed:
            _reset(writer)
        if self._handlers:  # each ends once its sockets are reset
            _, late = await asyncio.wait(self._handlers, timeout=5)
            for task in late:
                task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.accepts.append((time.monotonic(), self.is_cut))
        self._open.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            if self.is_cut:  # the SYN got through to the relay, nothing else will
                self._doomed.add(writer)
                await self._pipe(reader, None, writer)
                return
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
            self._open.add(up_writer)
            try:
                await asyncio.gather(self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, up_writer))
            finally:
                self._open.discard(up_writer)
                self._doomed.discard(up_writer)
                _reset(up_writer)
        except OSError:
            pass
        finally:
            self._open.discard(writer)
            self._doomed.discard(writer)
            _reset(writer)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None, own: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                data = await src.read(65536)
            except OSError:
                data = b""
            if not data:
                if dst is not None and own not in self._doomed:
                    _reset(dst)  # one side closed: so does the other (a dead blackholed one says nothing)
                return
            if self.is_cut or own in self._doomed or dst is None:
                self.dropped_bytes += len(data)
                continue
            dst.write(data)
            with contextlib.suppress(OSError):
                await dst.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


# --------------------------------------------------------------------------------------------------- a store


@dataclass
class Store:
    hub_id: str
    directory: Path
    password: str
    seed: int
    node: FakeNode = field(init=False)
    service: HubService = field(init=False)
    events_sent: int = 0
    staff_errors: list[str] = field(default_factory=list)
    resolved: int = 0
    acknowledged: int = 0

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db = self.directory / "hub.db"
        self.node = FakeNode(1, bytes(range(self.seed, self.seed + 16)), self.directory / "node-1")
        self.rng = random.Random(self.seed)

    async def start(self, broker_port: int, cafile: Path) -> Store:
        pw = self.directory / "fleet-password"
        pw.write_text(self.password + "\n")
        pw.chmod(0o600)
        reconcile = "".join(f"{k} = {v}\n" for k, v in RECONCILE.items())
        path = self.directory / "hub.toml"
        path.write_text(
            f'[hub]\ndatabase = "hub.db"\nstatus_interval_s = 3600\n\n[reconcile]\n{reconcile}\n'
            f'[fleet]\nhub_id = "{self.hub_id}"\nhost = "{LOOPBACK}"\nport = {broker_port}\ncafile = "{cafile}"\n'
            'password_file = "fleet-password"\nsnapshot_interval_s = 5\nbatch_size = 50\nmax_in_flight = 4\n'
            f'keepalive_s = 5\n\n[[node]]\nid = 1\nkey = "{self.node.key.hex()}"\nport = "{self.node.path}"\n'
        )
        path.chmod(0o600)
        self.node.plug()
        self.service = await HubService(load_config(path), control=False, reopen_min_s=0.05, reopen_max_s=0.2).start()
        ledger = self.service.ledger
        assert ledger is not None and self.service.fleet is not None
        for lane, (sku, unit) in enumerate(SKUS):
            await ledger.add_sku(_sku(sku, unit), actor="setup")
            await ledger.assign_lane(1, lane, sku, actor="setup")
            await ledger.record_receipt(sku, 40, actor="setup")
        self.node.hello()
        await self.node.wait_for(lambda: self.node.acks, 10)
        return self

    async def stop(self) -> None:
        await self.service.stop()
        self.node.unplug()

    @property
    def publisher_status(self) -> dict[str, Any]:
        fleet = self.service.fleet
        return fleet.status() if fleet is not None else {}

    async def feed(self, stop: asyncio.Event) -> None:
        """A shelf in use: ~15 node events a second (70 % picks, some puts, some picks whose weight is not whole
        units: damage; now and then a lane's state)."""
        rng, node = self.rng, self.node
        while not stop.is_set():
            lane = rng.randrange(len(SKUS))
            unit = SKUS[lane][1]
            r = rng.random()
            if r < 0.70:
                node.send(node.make_event(lane, -rng.choice((1, 1, 1, 2)), unit_dg=unit))
            elif r < 0.88:
                node.send(node.make_event(lane, 1, unit_dg=unit))
            elif r < 0.93:
                node.send(node.make_event(lane, -1, unit_dg=unit * 6 // 10))  # not whole units
            else:
                node.send(node.lane_state(lane))
                continue
            self.events_sent += 1
            await asyncio.sleep(rng.uniform(0.03, 0.1))

    async def staff(self, stop: asyncio.Event) -> None:
        """The store's people and systems: sales, receipts, restocks; alerts acknowledged, then resolved (shrinkage
        written off, which books a movement the alert names)."""
        ledger = self.service.ledger
        assert ledger is not None
        rng = self.rng
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.15, 0.4))
            sku = rng.choice(SKUS)[0]
            r = rng.random()
            try:
                if r < 0.45:
                    await ledger.record_sale(sku, rng.randint(1, 2), actor="pos")
                elif r < 0.55:
                    await ledger.record_receipt(sku, rng.randint(5, 12), actor="wms")
                elif r < 0.65:
                    lane = f"node1-lane{[s for s, _ in SKUS].index(sku)}"
                    await ledger.restock(sku, lane, rng.randint(1, 3), actor="staff")
                else:
                    await self._work_on_an_alert(rng)
            except LedgerError as exc:  # e.g. the reconciler resolved it first: staff just move on
                self.staff_errors.append(f"{type(exc).__name__}: {exc}")

    async def _work_on_an_alert(self, rng: random.Random) -> None:
        ledger = self.service.ledger
        assert ledger is not None
        rows = await ledger.transact(lambda tx: tx.rows("SELECT id, kind, cause_key, status FROM alerts"
                                                        " WHERE status != 'resolved' ORDER BY id"))  # fmt: skip
        if not rows:
            return
        alert_id, kind, cause, status = rng.choice(rows)
        if status == "open":
            await ledger.acknowledge_alert(alert_id, actor="alice")
            self.acknowledged += 1
            return
        write_off = None
        if kind == "shrinkage":
            write_off = WriteOff(cause.rpartition("/")[2], 1)
        await ledger.resolve_alert(alert_id, actor="bob", resolution=f"checked the shelf ({kind})", write_off=write_off)
        self.resolved += 1


def _sku(sku: str, unit: int) -> Sku:
    return Sku(sku, f"{sku} item", unit, reorder_point=30, reorder_qty=24)


# --------------------------------------------------------------------------------------------------- central


class CentralProcess:
    """``smartshelf central run`` as a subprocess, its output appended to ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.argv = [sys.executable, "-m", "hub.cli", "central", "run", "--config", str(config)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        await until(lambda: true("subscribed to" in self.text()[offset:]), f"{self.argv[-1]} subscribed", 60)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM (after a SIGCONT, in case it is stopped); its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


class CentralInProcess:
    """The consumer on this loop; ``runs`` keeps every ``Consumer`` started (their stats)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.runs: list[Consumer] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = Consumer(load_central_config(self.config))
        self.runs.append(consumer)
        self._stop = asyncio.Event()
        task = self._task = asyncio.create_task(consumer.run(self._stop), name="central-a")
        await until(lambda: true(consumer.subscribed.is_set() or task.done()), "central-a subscribed", 30)
        if task.done():
            task.result()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise AssertionError("central-a did not stop within 30 s")
        task.result()

    def total(self, name: str) -> int:
        return sum(int(getattr(c.stats, name)) for c in self.runs)


# ------------------------------------------------------------------------------------------ the comparison


@dataclass
class LedgerState:
    movements: dict[int, tuple[Any, ...]]  # id -> the wire's columns
    balances: dict[tuple[str, str], int]  # (sku, location) -> qty
    alerts: dict[int, tuple[Any, ...]]  # id -> ALERT_COLUMNS but rev

    @property
    def last_id(self) -> int:
        return max(self.movements, default=0)


_MOVEMENTS = f"SELECT {', '.join(MOVEMENT_COLUMNS)} FROM movements"
_ALERTS = f"SELECT {', '.join(c for c in ALERT_COLUMNS if c != 'rev')} FROM alerts"  # rev: the hub's outbox


def hub_state(db: Path) -> LedgerState:
    """The hub's own ledger, read beside the running hub (one read transaction)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("BEGIN")
        movements = {r[0]: tuple(r) for r in conn.execute(_MOVEMENTS)}
        balances = {(r[0], r[1]): r[2] for r in conn.execute("SELECT sku, location, qty FROM balances")}
        alerts = {r[0]: tuple(r) for r in conn.execute(_ALERTS)}
        conn.execute("COMMIT")
    finally:
        conn.close()
    return LedgerState(movements, balances, alerts)


async def central_state(conn: Any, hub: str) -> LedgerState:
    """The same, as central holds it for ``hub`` (asyncpg connection)."""
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        movements = {r[0]: tuple(r) for r in await conn.fetch(f"{_MOVEMENTS} WHERE hub_id = $1", hub)}
        stock = await conn.fetch("SELECT sku, location, qty FROM stock WHERE hub_id = $1", hub)
        alerts = {r[0]: tuple(r) for r in await conn.fetch(f"{_ALERTS} WHERE hub_id = $1", hub)}
    return LedgerState(movements, {(r[0], r[1]): r[2] for r in stock}, alerts)


def _diff(what: str, hub: dict[Any, Any], central: dict[Any, Any], limit: int = 8) -> list[str]:
    missing = sorted(set(hub) - set(central))
    extra = sorted(set(central) - set(hub))
    changed = sorted(k for k in set(hub) & set(central) if hub[k] != central[k])
    out = []
    if missing:
        runs = f": {_ranges(missing)}" if what == "movements" else ""
        out.append(f"  {what}: {len(missing)} missing at central{runs}")
        out += [f"    hub     {k}: {hub[k]}" for k in missing[:limit]]
    if extra:
        out.append(f"  {what}: {len(extra)} at central that the hub does not have")
        out += [f"    central {k}: {central[k]}" for k in extra[:limit]]
    if changed:
        out.append(f"  {what}: {len(changed)} differ")
        for k in changed[:limit]:
            out += [f"    hub     {k}: {hub[k]}", f"    central {k}: {central[k]}"]
    return out


def _ranges(ids: list[int]) -> str:
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in runs[:10])
    return text + (f" (+{len(runs) - 10} more runs)" if len(runs) > 10 else "")


def differences(hub_id: str, hub: LedgerState, central: LedgerState) -> list[str]:
    """Readable lines, empty when central holds exactly the hub's ledger."""
    lines = _diff("movements", hub.movements, central.movements)
    lines += _diff("stock", hub.balances, central.balances)
    lines += _diff("alerts", hub.alerts, central.alerts)
    if not lines:
        return []
    return [f"{hub_id}: {len(hub.movements)} movements at the hub, {len(central.movements)} at central", *lines]
