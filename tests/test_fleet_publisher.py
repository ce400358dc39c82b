"""The hub's side of the fleet tier (hub/fleet/README.md): ``[fleet]`` in hub.toml, the publish cursor and the alert
outbox, and ``FleetPublisher`` against a real Mosquitto (tests/fleet_support.py): the cursor moves only on
successful PUBACKs, in order; nothing is lost or reordered across a broker down / up and a hub restart; the alert
outbox coalesces; a refused PUBACK (ACL) moves nothing and is retried; with no ``[fleet]`` table nothing changes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.config import ConfigError, load_config
from hub.config.fleet import FleetConfig
from hub.fleet import messages as m
from hub.fleet import outbox
from hub.fleet.publisher import FleetPublisher
from hub.ledger.backup import backup_database, restore_database
from hub.ledger.models import SensorEvent, Sku
from hub.ledger.service import LedgerService
from hub.private_files import ExposedSecret
from hub.schema import MIGRATIONS
from hub.service import HubService
from hub.web import create_app
from shared_protocol.messages import KIND_PICK
from tests.web_support import Env
from tools.servers.mosquitto import Broker
from tools.servers.process import free_port

PREFIX = "smartshelf/v1"
PASSWORD = "hub-secret-1"
CENTRAL = ("central", "central-secret")


# ------------------------------------------------------------------------------------------------- [fleet] config


def write_config(tmp_path: Path, fleet: str, *, password_mode: int = 0o600) -> Path:
    pw = tmp_path / "fleet-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(password_mode)
    (tmp_path / "ca.pem").write_text("not checked here\n")
    path = tmp_path / "hub.toml"
    path.write_text(f"[fleet]\n{fleet}")
    path.chmod(0o600)
    return path


MINIMAL = 'hub_id = "store-042"\nhost = "mqtt.example.com"\npassword_file = "fleet-password"\n'


def test_fleet_table_defaults(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, MINIMAL)).fleet
    assert cfg is not None
    assert (cfg.hub_id, cfg.host, cfg.port, cfg.tls, cfg.cafile, cfg.user, cfg.client_id) == (
        "store-042", "mqtt.example.com", 8883, True, None, "store-042", "smartshelf-hub-store-042",
    )  # fmt: skip
    assert (cfg.topic_prefix, cfg.session_expiry_s, cfg.snapshot_interval_s) == ("smartshelf/v1", 604800, 300.0)
    assert (cfg.max_in_flight, cfg.batch_size, cfg.keepalive_s) == (10, 500, 60)
    assert cfg.password_file == tmp_path / "fleet-password" and cfg.read_password() == PASSWORD
    assert PASSWORD not in repr(cfg)


def test_fleet_table_in_full(tmp_path: Path) -> None:
    cfg = load_config(
        write_config(
            tmp_path,
            'hub_id = "s_1"\nhost = "127.0.0.1"\ntls = false\nusername = "u1"\npassword = "pw"\n'
            'topic_prefix = "acme/v1"\nsession_expiry_s = 0\nsnapshot_interval_s = 30\nmax_in_flight = 3\n'
            "batch_size = 1000\nkeepalive_s = 10\n",
        )
    ).fleet
    assert cfg is not None and (cfg.port, cfg.tls, cfg.user, cfg.topic_prefix) == (1883, False, "u1", "acme/v1")
    assert cfg.secret_file == tmp_path / "hub.toml" and cfg.read_password() == "pw"


BASE = 'hub_id = "s"\nhost = "h"\npassword = "p"\n'
LOCAL = 'hub_id = "s"\nhost = "127.0.0.1"\ntls = false\npassword = "p"\n'


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('host = "h"\npassword = "p"\n', "fleet.hub_id: missing"),
        (BASE.replace('"s"', '"store 42"'), "fleet.hub_id: must be 1..64 of A-Z a-z 0-9 _ -, not 'store 42'"),
        (BASE.replace('"s"', '"' + "x" * 65 + '"'), "fleet.hub_id: must be 1..64"),
        ('hub_id = "s"\npassword = "p"\n', "fleet.host: missing"),
        (BASE.replace('"h"', '"mqtt.example.com"') + "tls = false\n", "plain MQTT is allowed only to a loopback"),
        (BASE + 'tls = "on"\n', "fleet.tls: must be true or false, not 'on'"),
        (BASE + "port = 0\n", "fleet.port: must be a TCP port 1..65535, not 0"),
        (BASE + 'cafile = "nope.pem"\n', "fleet.cafile: no such file"),
        (LOCAL + 'cafile = "ca.pem"\n', "fleet.cafile: needs tls = true"),
        ('hub_id = "s"\nhost = "h"\n', "fleet.password_file: missing"),
        (BASE + 'password_file = "fleet-password"\n', "give password or password_file, not both"),
        ('hub_id = "s"\nhost = "h"\npassword_file = "gone"\n', "fleet.password_file: no such file"),
        ('hub_id = "s"\nhost = "h"\npassword = ""\n', "fleet.password: must be a non-empty string"),
        (BASE + 'topic_prefix = "a/+/b"\n', "fleet.topic_prefix: must be"),
        (BASE + 'topic_prefix = "a//b"\n', "fleet.topic_prefix: must be"),
        (BASE + "batch_size = 1001\n", "fleet.batch_size: must be a whole number 1..1000"),
        (BASE + "max_in_flight = 0\n", "fleet.max_in_flight"),
        (BASE + "snapshot_interval_s = 1\n", "fleet.snapshot_interval_s: must be 5 .. 86400"),
        (BASE + "session_expiry_s = -1\n", "fleet.session_expiry_s"),
        (BASE + "qos = 2\n", "fleet.qos: unknown setting"),
    ],
)
def test_fleet_errors_are_one_line_naming_the_setting(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, body))
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'hub.toml'}: fleet") and says in text and "\n" not in text


def test_a_password_open_to_others_is_refused_at_start(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, MINIMAL, password_mode=0o644))
    assert cfg.fleet is not None
    with pytest.raises(ExposedSecret, match=r"fleet-password: holds the MQTT broker password and is readable by other"):
        cfg.fleet.read_password()
    (tmp_path / "hub.toml").write_text('[fleet]\nhub_id = "s"\nhost = "h"\npassword = "p"\n')
    (tmp_path / "hub.toml").chmod(0o644)
    inline = load_config(tmp_path / "hub.toml")
    with pytest.raises(ExposedSecret, match=r"hub.toml: holds the MQTT broker password"):
        asyncio.run(HubService(inline, control=False, open_ports=False, reconcile=False).start())
    assert not (tmp_path / "smartshelf.db").exists()  # refused before the ledger was opened


def test_no_fleet_table_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text("")
    cfg = load_config(path)
    assert cfg.fleet is None

    async def run() -> None:
        hub = await HubService(cfg, control=False, open_ports=False, reconcile=False).start()
        try:
            assert hub.fleet is None and hub.status()["fleet"] is None and "fleet" not in hub.status_line()
        finally:
            await hub.stop()

    asyncio.run(run())


# ------------------------------------------------------------------------------------------ the cursor and outbox


@dataclass
class Shop:
    """A ledger with one node and lane; ``movements(n)`` books n sensor picks."""

    ledger: LedgerService
    path: Path
    seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def movements(self, n: int) -> None:
        now = int(time.time() * 1000)
        futures = [
            self.ledger.submit(SensorEvent(7, next(self.seq), 0, KIND_PICK, -1, -3500, 90, now)) for _ in range(n)
        ]
        await asyncio.gather(*futures)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(query, args).fetchall()

    def cursor(self) -> int:
        return int(self.sql("SELECT movements_acked FROM fleet_cursor")[0][0])

    def last_id(self) -> int:
        return int(self.sql("SELECT coalesce(max(id), 0) FROM movements")[0][0])


@contextlib.asynccontextmanager
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    path = tmp_path / "ledger.db"
    async with LedgerService(path, migrations=MIGRATIONS, checkpoint_interval_s=None, prune_interval_s=None) as ledger:
        await ledger.add_sku(Sku("COLA-330", "Cola 330 ml", 3500, reorder_point=5), actor="test")
        await ledger.register_node(7, actor="test", label="aisle 3")
        await ledger.assign_lane(7, 0, "COLA-330", actor="test")
        yield Shop(ledger, path)


def test_alert_changes_coalesce_in_the_outbox(tmp_path: Path) -> None:
    async def run() -> None:
        async with shop(tmp_path) as s:
            a = await s.ledger.open_alert("shrinkage", "lane:7:0/COLA-330", {"units": 2}, actor="recon")
            b = await s.ledger.open_alert("reorder", "COLA-330", {}, actor="recon")
            await s.ledger.acknowledge_alert(a.alert_id, actor="alice")
            await s.ledger.resolve_alert(a.alert_id, actor="bob", resolution="found behind the shelf")
            # one row per alert, its rev the latest change; an evidence update alone is not published
            assert s.sql("SELECT alert_id, rev FROM fleet_outbox ORDER BY rev") == [(b.alert_id, 2), (a.alert_id, 4)]
            await s.ledger.transact(lambda tx: tx.update_alert_evidence(b.alert_id, {"more": 1}, actor="recon"))
            assert s.sql("SELECT alert_id, rev FROM fleet_outbox ORDER BY rev") == [(b.alert_id, 2), (a.alert_id, 4)]
            reader = outbox.FleetReader(s.path, "store-042")
            try:
                batch = await reader.alerts(0, 10, 1)
                assert batch is not None and batch.revs == (2, 4)
                got = m.decode("store-042", "alerts", batch.payload)
                assert isinstance(got, m.Alerts)
                assert [(r.id, r.status, r.resolution, r.rev) for r in got.rows] == [
                    (b.alert_id, "open", None, 2), (a.alert_id, "resolved", "found behind the shelf", 4),
                ]  # fmt: skip
                # acknowledged while a newer change of one of them was made: only the unchanged one goes
                await s.ledger.acknowledge_alert(b.alert_id, actor="alice")
                await s.ledger.transact(lambda tx: outbox.advance(tx, 0, batch.revs))
                assert s.sql("SELECT alert_id, rev FROM fleet_outbox") == [(b.alert_id, 5)]
                # a rewind queues every alert again (those waiting keep their row)
                await s.ledger.transact(lambda tx: outbox.rewind(tx, None, True))
                assert s.sql("SELECT alert_id FROM fleet_outbox ORDER BY rev") == [(b.alert_id,), (a.alert_id,)]
            finally:
                await reader.close()

    asyncio.run(run())


def test_cursor_advances_only_forwards_and_rewinds_lower_it(tmp_path: Path) -> None:
    async def run() -> None:
        async with shop(tmp_path) as s:
            await s.movements(30)
            await s.ledger.transact(lambda tx: outbox.advance(tx, 20, ()))
            await s.ledger.transact(lambda tx: outbox.advance(tx, 10, ()))  # late, stale: ignored
            assert s.cursor() == 20
            assert await s.ledger.transact(lambda tx: outbox.rewind(tx, 5, False)) == 5
            assert await s.ledger.transact(lambda tx: outbox.rewind(tx, 50, False)) == 5  # never raises it
            reader = outbox.FleetReader(s.path, "store-042")
            try:
                batch = await reader.movements(5, 10, 1)
                assert batch is not None and (batch.first, batch.last, batch.count) == (6, 15, 10)
                backlog = await reader.backlog(5)
                assert (backlog.last_movement_id, backlog.alerts_waiting) == (30, 0)
                assert backlog.oldest_unsent_ms is not None
                snap = m.decode("store-042", "snapshot", (await reader.snapshot(1)).payload)
                assert isinstance(snap, m.Snapshot) and (snap.incarnation, snap.last_movement_id) == (1, 30)
                assert await reader.state() == outbox.CursorState(5, 1, 1, 30)
                assert [(x.lane_id, x.sku) for x in snap.lanes] == [("node7-lane0", "COLA-330")]
                assert snap.nodes[0].label == "aisle 3" and snap.skus[0].reorder_point == 5
            finally:
                await reader.close()

    asyncio.run(run())


class FakeClient:
    """What the pump publishes through, with the PUBACKs in the test's hands."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, asyncio.Future[int]]] = []

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, payload, future))
        return future

    def of(self, kind: str) -> list[tuple[m.Message, asyncio.Future[int]]]:
        return [(m.decode("store-042", kind, p), f) for t, p, f in self.sent if t.endswith("/" + kind)]


def test_the_cursor_moves_only_past_acknowledged_batches_in_order(tmp_path: Path) -> None:
    async def run() -> None:
        async with shop(tmp_path) as s:
            await s.movements(300)
            cfg = FleetConfig(hub_id="store-042", host="h", password="p", batch_size=100, max_in_flight=4)
            pub = publisher(cfg, s)
            pub._reader = outbox.FleetReader(s.path, "store-042")
            committer = asyncio.create_task(pub._commits())
            fake = FakeClient()
            pump = asyncio.create_task(pub._pump(fake, 4))  # type: ignore[arg-type]
            try:
                await until(lambda: len(fake.of("movements")) == 3, 20, "three batches in flight")
                assert len(fake.of("snapshot")) == 1  # the window holds 4: a snapshot and three batches
                (b1, f1), (b2, f2), (b3, f3) = fake.of("movements")
                assert [(b.first, b.last) for b in (b1, b2, b3)] == [(1, 100), (101, 200), (201, 300)]  # type: ignore[union-attr]
                f2.set_result(0)
                f3.set_result(0)  # acknowledged out of order: the cursor cannot pass the first batch
                await asyncio.sleep(0.3)
                assert pub.acked == 0 and s.cursor() == 0
                f1.set_result(0)
                await until(lambda: s.cursor() == 300, 20, "the cursor past all three")
                assert pub.counters.cursor_writes == 1  # one write for the three PUBACKs
                await s.movements(50)
                await until(lambda: len(fake.of("movements")) == 4, 20, "the next batch")
                fake.of("movements")[3][1].set_result(0x87)  # not authorized: nothing moves, tried again later
                await until(lambda: len(fake.of("movements")) == 5, 20, "published again after a back-off")
                again, f5 = fake.of("movements")[4]
                assert isinstance(again, m.Movements) and (again.first, again.last) == (301, 350)
                assert s.cursor() == 300 and pub.counters.refused == {"movements": 1}
                # 0x10 "no matching subscribers": a success in MQTT, but no one took it (central away, or its shared
                # subscription lost with a broker restart): kept, published again
                f5.set_result(0x10)
                await until(lambda: len(fake.of("movements")) == 6, 20, "published again after 0x10")
                assert s.cursor() == 300 and pub.counters.untaken == {"movements": 1}
                fake.of("movements")[5][1].set_result(0)
                await until(lambda: s.cursor() == 350, 20, "acknowledged the third time")
            finally:
                for task in (pump, committer):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await pub._reader.close()

    run_async(run)


# ---------------------------------------------------------------------------------------- against a real broker


def fleet_acl(prefix: str = PREFIX) -> str:
    """Central may tell a hub to publish again (rewind); a hub reads only its own rewinds."""
    return f"pattern read {prefix}/%u/rewind\nuser {CENTRAL[0]}\ntopic write {prefix}/+/rewind\n"


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    b = broker_factory(extra_acl=fleet_acl())
    b.add_user("store-042", PASSWORD)
    b.add_user(*CENTRAL, central=True)
    return b


def fleet_config(broker: Broker, **changes: Any) -> FleetConfig:
    cfg = FleetConfig(
        hub_id="store-042",
        host=broker.host,
        port=broker.port,
        cafile=broker.ca_file,
        password=PASSWORD,
        batch_size=100,
        max_in_flight=4,
    )
    return replace(cfg, **changes)


def publisher(cfg: FleetConfig, s: Shop) -> FleetPublisher:
    return FleetPublisher(cfg, s.ledger, s.path, reconnect_min_s=0.1, reconnect_max_s=0.5, poll_s=0.1,
                          status_refresh_s=0.1, drain_s=1.0)  # fmt: skip


class Central:
    """A test consumer: every message under the prefix, strictly decoded, over a persistent session (the broker
    keeps what arrives while it is away), reconnecting when the broker goes away."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.got: list[m.Message] = []
        self.refused: list[str] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Central:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host, self.broker.port, username=CENTRAL[0], password=CENTRAL[1],
                    identifier="test-central", protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                    properties=props, tls_context=self.broker.tls_context(),
                ) as client:  # fmt: skip
                    await client.subscribe(f"{PREFIX}/+/+", qos=1)
                    self.client = client
                    self.connected.set()
                    async for msg in client.messages:
                        hub, kind = m.parse_topic(PREFIX, msg.topic.value)
                        try:
                            self.got.append(m.decode(hub, kind, bytes(msg.payload)))
                        except m.FleetMessageError as exc:
                            self.refused.append(str(exc))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.1)

    async def rewind(self, after: int | None, alerts: bool) -> None:
        payload = m.encode_rewind("store-042", int(time.time() * 1000), movements_after=after, alerts=alerts)
        await self.client.publish(f"{PREFIX}/store-042/rewind", payload, qos=1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def of(self, kind: type[Any]) -> list[Any]:
        return [x for x in self.got if isinstance(x, kind)]

    def movement_ids(self) -> list[int]:
        return [row.id for batch in self.of(m.Movements) for row in batch.rows]


async def until(check: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


def assert_every_movement_once_in_order(central: Central, last: int) -> None:
    ids = central.movement_ids()
    firsts = list(dict.fromkeys(ids))  # first arrival of each id, in arrival order
    assert firsts == list(range(1, last + 1)), "lost or reordered"
    assert not central.refused


def run_async(fn: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    asyncio.run(fn())


def test_publishes_in_order_and_the_cursor_follows_the_pubacks(tmp_path: Path, broker: Broker) -> None:
    async def run() -> None:
        central = Central(broker).start()
        await asyncio.wait_for(central.connected.wait(), 10)
        async with shop(tmp_path) as s:
            await s.movements(1234)
            alert = await s.ledger.open_alert("shrinkage", "lane:7:0/COLA-330", {}, actor="recon")
            pub = await publisher(fleet_config(broker), s).start()
            try:
                # the row is visible to another connection before the writer's await returns and sets `committed`
                await until(lambda: s.cursor() == 1234 == pub.committed, what="the cursor at the last movement")
                assert pub.acked == 1234 and pub.counters.movement_batches == 13
                await until(lambda: not s.sql("SELECT * FROM fleet_outbox"), what="the outbox emptied")
                await s.movements(10)  # published when the commit wakes the publisher (or at its next poll)
                await until(lambda: s.cursor() == 1244, 20, "new movements published")
                await until(lambda: pub.status()["lag_movements"] == 0, 20, "the status caught up")
                st = pub.status()
                assert st["connected"] and st["oldest_unpublished_age_s"] is None and st["last_puback_age_s"] < 5
                assert "fleet up, lag 0 movements" in pub.line()
            finally:
                await pub.stop()
            # a PUBACK says the broker has it, not that the subscriber got it yet
            await until(lambda: len(set(central.movement_ids())) == 1244, 30, "central has all")
            await until(lambda: [x.state for x in central.of(m.Status)][-1:] == ["offline"], 30, "offline")
            assert_every_movement_once_in_order(central, 1244)
            batches = central.of(m.Movements)
            assert all(b.last - b.first < 100 for b in batches)  # batch_size
            (alerts,) = central.of(m.Alerts)
            assert [(a.id, a.status) for a in alerts.rows] == [(alert.alert_id, "open")]
            snap = central.of(m.Snapshot)[0]
            assert snap.hub == "store-042" and snap.book == () and snap.lanes[0].lane_id == "node7-lane0"
            states = [x.state for x in central.of(m.Status)]
            assert states[-1] == "offline" and "online" in states
        await central.stop()

    run_async(run)


def test_nothing_lost_across_broker_down_up_and_a_hub_restart(tmp_path: Path, broker: Broker) -> None:
    async def run() -> None:
        central = Central(broker).start()
        await asyncio.wait_for(central.connected.wait(), 10)
        async with shop(tmp_path) as s:
            pub = await publisher(fleet_config(broker), s).start()
            await s.movements(500)
            await until(lambda: s.cursor() == 500, what="first 500")
            await asyncio.to_thread(broker.stop)  # SIGTERM: saves the sessions, central's queue included
            t0 = time.monotonic()
            await s.movements(700)  # the hub books at full speed while the broker is away
            assert time.monotonic() - t0 < 5
            await until(lambda: not pub.connected, 20, "disconnected")
            await until(lambda: (pub.status()["lag_movements"] or 0) == 700, 20, "lag shown")
            assert s.cursor() == 500 and pub.status()["oldest_unpublished_age_s"] is not None
            assert "fleet down" in pub.line()
            await asyncio.to_thread(broker.start)
            await until(lambda: s.cursor() == 1200, what="caught up after the broker came back")
            # the hub stops with publishes in flight, restarts, and goes on from its stored cursor
            await s.movements(2000)
            await until(lambda: s.cursor() > 1200, what="publishing")
            await pub.stop()
            stopped_at = s.cursor()
            assert stopped_at == pub.acked  # what was acknowledged was written before the stop returned
            await s.movements(300)
            pub2 = await publisher(fleet_config(broker), s).start()
            assert pub2.acked == stopped_at
            await until(lambda: s.cursor() == 3500, what="caught up after the restart")
            await pub2.stop()
        await until(lambda: len(set(central.movement_ids())) == 3500, 20, "central has all")
        assert_every_movement_once_in_order(central, 3500)
        await central.stop()

    run_async(run)


def test_a_broker_that_is_not_there_never_holds_the_hub_up(tmp_path: Path) -> None:
    async def run() -> None:
        async with shop(tmp_path) as s:
            cfg = FleetConfig(hub_id="store-042", host="127.0.0.1", port=free_port(), tls=False, password="p")
            pub = await publisher(cfg, s).start()
            t0 = time.monotonic()
            await s.movements(2000)
            booked_s = time.monotonic() - t0
            await until(lambda: "Connection refused" in (pub.last_error or ""), 20, "the failure seen")
            await until(lambda: pub.status()["lag_movements"] == 2000, 20, "the lag seen")
            assert not pub.connected and s.cursor() == 0 and "fleet down, lag 2000 movements" in pub.line()
            t0 = time.monotonic()
            await pub.stop()
            assert time.monotonic() - t0 < 1.0 and booked_s < 10

    run_async(run)


def test_a_refused_publish_moves_nothing_and_is_retried(tmp_path: Path, broker: Broker) -> None:
    """MQTT 5: Mosquitto answers a publish its ACL does not allow with PUBACK 0x87 (aiomqtt's own publish() would
    return as if delivered). The cursor stays; once the ACL allows it, the same movements go out."""

    async def run() -> None:
        broker.add_user("store-043", "other")
        central = Central(broker).start()  # someone takes them once allowed (else 0x10 keeps them at the hub too)
        await asyncio.wait_for(central.connected.wait(), 10)
        async with shop(tmp_path) as s:
            await s.movements(50)
            cfg = fleet_config(broker, username="store-043", password="other")  # may write store-043/# only
            pub = await publisher(cfg, s).start()
            try:
                await until(lambda: pub.counters.refused.get("movements", 0) >= 1, 30, "a refusal")
                assert s.cursor() == 0 and pub.acked == 0
                assert pub.connected and "Not authorized" in (pub.last_error or "")
                broker.extra_acl += f"user store-043\ntopic write {PREFIX}/store-042/#\n"
                await asyncio.to_thread(broker.add_user, "store-043", "other")  # rewrites the ACL, reloads
                await until(lambda: s.cursor() == 50, 20, "published once allowed")
            finally:
                await pub.stop()
        await central.stop()

    run_async(run)


def test_rewind_from_central_publishes_again(tmp_path: Path, broker: Broker) -> None:
    async def run() -> None:
        central = Central(broker).start()
        await asyncio.wait_for(central.connected.wait(), 10)
        async with shop(tmp_path) as s:
            await s.movements(300)
            await s.ledger.open_alert("reorder", "COLA-330", {}, actor="recon")
            pub = await publisher(fleet_config(broker), s).start()
            try:
                await until(lambda: len(central.movement_ids()) == 300 and len(central.of(m.Alerts)) == 1, what="all")
                before = len(central.movement_ids())
                await central.rewind(199, True)
                await until(lambda: pub.counters.rewinds == 1, 30, "the rewind taken")
                await until(lambda: len(central.movement_ids()) >= before + 101 and s.cursor() == 300, what="again")
                assert central.movement_ids()[before:before + 101] == list(range(200, 301))  # fmt: skip
                await until(lambda: len(central.of(m.Alerts)) == 2, 20, "the alert again")
                assert s.sql("SELECT rewinds FROM fleet_cursor") == [(1,)]
            finally:
                await pub.stop()
        await central.stop()

    run_async(run)


def test_after_a_restore_the_whole_ledger_is_published_again_under_the_new_incarnation(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A restored ledger's ids repeat ids the lost one published for other movements (hub.ledger.identity). The
    publisher finds its cursor counting in another incarnation than the ledger's: it starts again from 0 in the new
    one and publishes every movement and alert under it (its old cursor, from the backup, would skip ids 1..200)."""

    async def run() -> None:
        central = Central(broker).start()
        await asyncio.wait_for(central.connected.wait(), 10)
        backup = tmp_path / "monday.db"
        async with shop(tmp_path) as s:
            await s.movements(200)
            alert = await s.ledger.open_alert("reorder", "COLA-330", {}, actor="recon")
            pub = await publisher(fleet_config(broker), s).start()
            try:
                await until(lambda: s.cursor() == 200 and not s.sql("SELECT * FROM fleet_outbox"), what="published")
                await asyncio.to_thread(backup_database, s.path, backup)  # its cursor: 200, incarnation 1
                await s.movements(100)  # published, then lost with the SD card
                await until(lambda: s.cursor() == 300, what="the rest published")
            finally:
                await pub.stop()
        path = tmp_path / "ledger.db"
        inc = (await asyncio.to_thread(restore_database, backup, path, migrations=MIGRATIONS)).incarnation
        assert inc > 1
        async with LedgerService(path, migrations=MIGRATIONS, checkpoint_interval_s=None, prune_interval_s=None) as led:
            s = Shop(led, path, itertools.count(301))  # the node counts on
            await s.movements(50)  # ids 201..250 again, for other movements
            assert s.sql("SELECT movements_acked, incarnation FROM fleet_cursor") == [(200, 1)]
            caplog.set_level("WARNING", logger="hub.fleet.publisher")
            pub = await publisher(fleet_config(broker), s).start()
            try:
                assert pub.acked == 0 and pub.status()["incarnation"] == inc
                assert (
                    f"ledger is incarnation {inc} (restored), the publish cursor was in 1: publishing all 250"
                    in caplog.text
                )
                await until(lambda: s.cursor() == 250, what="the restored ledger published")
                assert s.sql("SELECT movements_acked, incarnation FROM fleet_cursor") == [(250, inc)]
                await until(lambda: not s.sql("SELECT * FROM fleet_outbox"), 20, "every alert again")
            finally:
                await pub.stop()
        await until(lambda: len({(b.incarnation, r.id) for b in central.of(m.Movements) for r in b.rows}) == 550, 10)
        first = [r for b in central.of(m.Movements) if b.incarnation == 1 for r in b.rows]
        second = [r for b in central.of(m.Movements) if b.incarnation == inc for r in b.rows]
        assert list(dict.fromkeys(r.id for r in first)) == list(range(1, 301))
        assert list(dict.fromkeys(r.id for r in second)) == list(range(1, 251))
        before, after = {r.id: r.source_ref for r in first}, {r.id: r.source_ref for r in second}
        assert all(before[i] == after[i] for i in range(1, 201))  # the backup's movements, the same again
        assert all(before[i] != after[i] for i in range(201, 251))  # same ids, other movements
        alerts = [(a.incarnation, r.id) for a in central.of(m.Alerts) for r in a.rows]
        assert alerts == [(1, alert.alert_id), (inc, alert.alert_id)]
        snaps = central.of(m.Snapshot)
        assert (snaps[-1].incarnation, snaps[-1].last_movement_id) == (inc, 250) and snaps[0].incarnation == 1
        assert not central.refused
        await central.stop()

    run_async(run)


def test_the_hub_service_runs_the_publisher(tmp_path: Path, broker: Broker) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    path = tmp_path / "hub.toml"
    path.write_text(
        f'[hub]\nstatus_interval_s = 1\n[fleet]\nhub_id = "store-042"\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'cafile = "{broker.ca_file}"\npassword_file = "pw"\n'
    )
    cfg = load_config(path)

    async def run() -> None:
        hub = await HubService(cfg, control=False, open_ports=False, reconcile=False).start()
        try:
            assert hub.fleet is not None
            await until(lambda: hub.fleet is not None and hub.fleet.connected, 30, "connected")
            await until(lambda: hub.fleet is not None and hub.fleet.counters.snapshots >= 1, 30, "a snapshot")
            status = hub.status()["fleet"]
            assert status["connected"] and status["hub_id"] == "store-042" and status["movements_acked"] == 0
            assert "; fleet up" in hub.status_line()
        finally:
            await hub.stop()
        assert hub.fleet is None

    run_async(run)
    os.chmod(pw, 0o644)
    with pytest.raises(ExposedSecret):
        run_async(lambda: HubService(cfg, control=False, open_ports=False, reconcile=False).start())


def test_the_nodes_page_shows_the_publishers_status(env: Env) -> None:
    fleet = {
        "hub_id": "store-042", "broker": "mqtt.example.com:8883", "connected": False, "lag_movements": 1250,
        "oldest_unpublished_age_s": 600.0, "last_puback_age_s": 620.0, "last_error": "broker <x>: refused",
    }  # fmt: skip
    status: dict[str, Any] = {"nodes": [], "links": [], "totals": {"uptime_s": 5.0}, "fleet": fleet}
    app = create_app(env.db, env.writer, config={"TESTING": True}, status=lambda: status)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["user"], sess["epoch"] = "viewer", 0
    html = client.get("/nodes").get_data(as_text=True)
    line = html.split('<p id="fleet-status">')[1].split("</p>")[0]
    assert "mqtt.example.com:8883 (as store-042)" in line and "not connected" in line
    assert "1250 movements not yet acknowledged (the oldest booked 10 min ago)" in line
    assert "last PUBACK 10 min ago" in line and "broker &lt;x&gt;: refused" in line
    status["fleet"] = None
    assert "fleet-status" not in client.get("/nodes").get_data(as_text=True)


def test_the_will_and_online_of_a_connection_carry_one_time(tmp_path: Path, broker: Broker) -> None:
    """Central keeps a hub's newer status and lets ``offline`` win a tie: a will stamped when the client is made,
    before the ``online`` sent after CONNACK, would be older than it, and a hub that lost power would stay online."""

    async def run() -> None:
        central = Central(broker).start()
        await asyncio.wait_for(central.connected.wait(), 10)
        async with shop(tmp_path) as s:
            pub = await publisher(fleet_config(broker), s).start()
            try:
                await until(lambda: any(x.state == "online" for x in central.of(m.Status)), what="online")
                (online,) = [x for x in central.of(m.Status) if x.state == "online"]
                assert online.sent_ms == pub._session_ms
                will = pub._client()._client._will_payload  # the will the next connection would carry
                assert m.decode("store-042", "status", will) == m.Status("store-042", pub._session_ms, "offline")
            finally:
                await pub.stop()
        await central.stop()

    run_async(run)
