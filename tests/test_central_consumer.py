"""The central consumer (hub/central/) against a real Mosquitto and a real PostgreSQL (tests/fleet_support.py).

Exactly once under duplicate deliveries and two consumers of one shared group; a consumer that dies between its
commit and its acknowledgements; malformed and forged payloads refused, recorded and acknowledged; migrations from
empty, refusing a newer schema, all or nothing; PostgreSQL down: nothing acknowledged, everything there once it is
back; holes found, a rewind asked for, ``central check``; central.toml's one-line errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hub.central.check import format_report, report
from hub.central.config import CentralConfig, ConfigError, load_central_config
from hub.central.consumer import Consumer
from hub.central.mqtt import Delivery
from hub.central.schema import MIGRATIONS, check_current, migrate
from hub.central.store import Outcome, apply_batch, receive
from hub.cli import main
from hub.fleet.messages import decode, encode_alerts, encode_movements, encode_snapshot, encode_status
from hub.ledger.models import SchemaError
from hub.ledger.schema import Migration
from tests.fleet_support import FreshDatabase, MqttTestClient
from tools.servers.mosquitto import Broker, BrokerUser

PREFIX = "smartshelf/v1"
CENTRAL_USER, CENTRAL_PW = "central", "central-secret"
ROOT = Path(__file__).resolve().parents[1]
# central publishes rewinds on the hubs' topics; a hub reads its own
REWIND_ACL = f"pattern read {PREFIX}/%u/rewind\nuser {CENTRAL_USER}\ntopic write {PREFIX}/+/rewind\n"


# ---------------------------------------------------------------------------------------------------- helpers


def movement(i: int, sku: str = "COLA-330", qty: int = -1, location: str = "shelf:A1") -> tuple[Any, ...]:
    reason = "sensor_pick" if location.startswith("sensor:") else "sale"
    return (i, 1_790_000_000_000 + i, 1_790_000_000_100 + i, sku, location, qty, reason, f"ref:{i}", 0, "pos:1",
            None, None, None, None, None, None)  # fmt: skip


def batch(
    hub: str, first: int, last: int, sent_ms: int = 1_790_000_001_000, qty: int | Callable[[int], int] = -1, **kw: Any
) -> bytes:
    def q(i: int) -> int:
        return qty(i) if callable(qty) else qty

    return encode_movements(hub, [movement(i, qty=q(i), **kw) for i in range(first, last + 1)], sent_ms)


def write_config(tmp: Path, broker: Broker, db: FreshDatabase, client_id: str = "central-1", **central: Any) -> Path:
    settings = {"batch_delay_s": 0.02, "status_interval_s": 3600, **central}
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    (tmp / "broker-password").write_text(CENTRAL_PW + "\n")
    (tmp / "broker-password").chmod(0o600)
    path = tmp / f"{client_id}.toml"
    path.write_text(
        f"[central]\n{table}\n"
        f'[database]\ndsn = "{db.dsn}"\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\ncafile = "{broker.ca_file}"\n'
        f'username = "{CENTRAL_USER}"\npassword_file = "broker-password"\nclient_id = "{client_id}"\n'
        f"reconnect_min_s = 0.1\nreconnect_max_s = 1\nsession_expiry_s = 600\n"
    )
    path.chmod(0o600)  # the dsn holds a password
    return path


def config(tmp: Path, broker: Broker, db: FreshDatabase, client_id: str = "central-1", **central: Any) -> CentralConfig:
    return load_central_config(write_config(tmp, broker, db, client_id, **central))


def broker_with_users(factory: Callable[..., Broker], hubs: Sequence[str], **kw: Any) -> Broker:
    broker = factory(plain=True, extra_acl=REWIND_ACL, **kw)
    # one reload for all of them: a SIGHUP that lands while Mosquitto 2.0.11 is still reloading is lost
    for hub in hubs:
        broker.users[hub] = BrokerUser(hub, f"pw-{hub}", central=False)
    broker.add_user(CENTRAL_USER, CENTRAL_PW, central=True)
    return broker


def hub_client(broker: Broker, hub: str) -> MqttTestClient:
    return MqttTestClient(broker, hub, f"pw-{hub}", client_id=f"smartshelf-hub-{hub}", tls=False)


async def publish(client: MqttTestClient, hub: str, kind: str, payload: bytes) -> None:
    code = await asyncio.to_thread(client.publish, f"{PREFIX}/{hub}/{kind}", payload)
    assert code in (0, 0x10), f"PUBACK {code:#x}"


@contextlib.asynccontextmanager
async def running(cfg: CentralConfig, **kw: Any) -> AsyncIterator[Consumer]:
    consumer = Consumer(cfg, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(20):
            while not consumer.subscribed.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


async def count(db: FreshDatabase, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(db.dsn)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def rows(db: FreshDatabase, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db.dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def stored(db: FreshDatabase, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await count(db, "SELECT count(*) FROM movements") >= n

    return check


# ---------------------------------------------------------------------------------------------------- config


def test_config_errors_are_one_line_naming_the_setting(tmp_path: Path) -> None:
    def error(text: str, mode: int = 0o600) -> str:
        path = tmp_path / "central.toml"
        path.write_text(text)
        path.chmod(mode)
        with pytest.raises(ConfigError) as info:
            load_central_config(path)
        assert "\n" not in str(info.value)
        return str(info.value)

    ok = '[database]\nhost = "127.0.0.1"\n'
    assert "database: missing" in error("[broker]\n")
    assert "database.host: give either database.dsn or its parts" in error(
        '[database]\ndsn = "postgresql://a@b/c"\nhost = "x"\n'
    )
    assert "database.dsn: must be a postgresql:// URL" in error('[database]\ndsn = "mysql://a@b/c"\n')
    assert "broker.port: must be a port 1..65535, not 0" in error(ok + "[broker]\nport = 0\n")
    assert "broker.colour: unknown setting" in error(ok + '[broker]\ncolour = "red"\n')
    assert "broker.topic_prefix: must be topic levels" in error(ok + '[broker]\ntopic_prefix = "a/#"\n')
    assert "broker.group: must be 1..64" in error(ok + '[broker]\ngroup = "a/b"\n')
    assert "broker.cafile: no such file" in error(ok + '[broker]\ncafile = "nope.pem"\n')
    assert "broker.username: missing" in error(ok + '[broker]\npassword = "x"\n')
    assert "central.batch_messages: must be at most broker.receive_maximum (10)" in error(
        ok + "[central]\nbatch_messages = 11\n[broker]\nreceive_maximum = 10\n"
    )
    # a password in the file itself: the file must be private
    assert "database.dsn: " in error('[database]\ndsn = "postgresql://a:secret@127.0.0.1/c"\n', 0o644)
    assert "readable by other users (mode 0644)" in error(
        '[database]\ndsn = "postgresql://a:secret@127.0.0.1/c"\n', 0o644
    )
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    assert "database.password_file: " in error(f'[database]\nhost = "127.0.0.1"\npassword_file = "{secret}"\n')
    secret.chmod(0o600)
    path = tmp_path / "central.toml"
    path.write_text(f'[database]\nhost = "127.0.0.1"\npassword_file = "{secret}"\n[broker]\ncafile = "{secret}"\n')
    cfg = load_central_config(path)
    assert cfg.database.password == "hunter2" and cfg.database.connect_kwargs()["password"] == "hunter2"
    assert cfg.broker.tls and cfg.broker.port == 8883 and "hunter2" not in repr(cfg)
    assert cfg.broker.subscription == "$share/central/smartshelf/v1/+/+"
    # TLS wherever the network is crossed: to the broker by default, to a remote database by a verifying dsn
    assert "broker.tls: false to mqtt.example would send" in error(
        ok + '[broker]\nhost = "mqtt.example"\ntls = false\n'
    )
    path.write_text(ok + '[broker]\nhost = "127.0.0.1"\ntls = false\n')
    assert not load_central_config(path).broker.tls
    remote = "postgresql://c@db.example/x"
    assert "database.dsn: to db.example: add sslmode=verify-full" in error(f'[database]\ndsn = "{remote}"\n')
    assert "database.host: db.example is not this machine" in error('[database]\nhost = "db.example"\n')
    path.write_text(f'[database]\ndsn = "{remote}?sslmode=verify-full&sslrootcert=/etc/ca.pem"\n')
    assert load_central_config(path).database.dsn is not None


def test_without_asyncpg_central_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "from hub.cli import main\n"
        f"sys.exit(main(['central', 'run', '--config', {str(tmp_path / 'central.toml')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert "install smartshelf[central]" in done.stderr


# ------------------------------------------------------------------------------------------------ migrations


async def test_migrations_apply_from_empty_refuse_newer_and_are_all_or_nothing(postgres_db: FreshDatabase) -> None:
    latest = MIGRATIONS[-1].version
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        assert await migrate(conn) == (0, latest)
        assert await migrate(conn) == (latest, latest)
        assert await check_current(conn) == latest
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"hubs", "stores", "regions", "movements", "stock", "alerts", "movement_ranges", "rejected"} <= tables
        # a step that fails leaves the database as it was
        broken = Migration(latest + 1, "broken", ("CREATE TABLE half_done (a int)", "SELECT * FROM no_such_table"))
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, (*MIGRATIONS, broken))
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == latest
        # an older database is upgraded step by step: the steps after the first, in one transaction
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        assert await migrate(conn, MIGRATIONS[:1]) == (0, 1)
        with pytest.raises(SchemaError, match="run smartshelf central migrate"):
            await check_current(conn)
        assert await migrate(conn) == (1, latest)
        # written by a newer smartshelf: refused
        await conn.execute(
            "INSERT INTO schema_version (version, description) VALUES ($1, 'from the future')", latest + 1
        )
        with pytest.raises(SchemaError, match="newer than this smartshelf supports"):
            await migrate(conn)
        with pytest.raises(SchemaError, match="newer"):
            await check_current(conn)
        # not ours at all
        await conn.execute("DROP TABLE schema_version")
        with pytest.raises(SchemaError, match="not a smartshelf central database"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_migrate_and_check_commands(tmp_path: Path, mosquitto: Broker, postgres_db: FreshDatabase) -> None:
    path = write_config(tmp_path, mosquitto, postgres_db)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert await asyncio.to_thread(main, ["central", "migrate", "--config", str(path)]) == 0
        assert await asyncio.to_thread(main, ["central", "migrate", "--config", str(path)]) == 0
        assert await asyncio.to_thread(main, ["central", "check", "--config", str(path)]) == 0
    assert f"schema version 0 -> {MIGRATIONS[-1].version}" in out.getvalue() and "up to date" in out.getvalue()
    assert "no hub has been heard from yet" in out.getvalue()


# ----------------------------------------------------------------------------------------------- exactly once


async def test_two_consumers_and_duplicate_deliveries_store_every_movement_once(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    hubs = ["s1", "s2", "s3"]
    broker = broker_with_users(broker_factory, hubs)
    a = config(tmp_path, broker, postgres_db, "central-a", batch_messages=8)
    b = config(tmp_path, broker, postgres_db, "central-b", batch_messages=8)
    per_hub = 40 * 25

    def qty_of(i: int) -> int:
        return -1 if (i - 1) // 25 % 2 else 3

    async with running(a) as ca, running(b) as cb:
        clients = {h: hub_client(broker, h) for h in hubs}
        try:
            for n in range(40):
                for h in hubs:
                    payload = batch(h, n * 25 + 1, n * 25 + 25, qty=qty_of)
                    await publish(clients[h], h, "movements", payload)
                    if n % 3 == 0:
                        await publish(clients[h], h, "movements", payload)  # a hub republishing after a reconnect
            # and the whole history once more, as after a rewind from id 1 in other batch sizes
            for h in hubs:
                for first in range(1, per_hub + 1, 400):
                    await publish(clients[h], h, "movements", batch(h, first, min(first + 399, per_hub), qty=qty_of))
            await until(stored(postgres_db, per_hub * len(hubs)), "every movement stored")
            await until(lambda: _acked(ca, cb, 40 * 3 + 14 * 3 + 3 * 3), "every message acknowledged")
        finally:
            for c in clients.values():
                c.close()
    assert ca.stats.batches > 0 and cb.stats.batches > 0, "the shared group spreads the messages"
    assert ca.stats.movements_inserted + cb.stats.movements_inserted == per_hub * len(hubs)
    assert ca.stats.movements_duplicate + cb.stats.movements_duplicate == 3 * (14 * 25 + per_hub)
    assert await count(postgres_db, "SELECT count(*) FROM (SELECT DISTINCT hub_id, id FROM movements) d") == 3000
    expected = sum(qty_of(i) for i in range(1, per_hub + 1))
    for h in hubs:
        assert await rows(postgres_db, "SELECT qty FROM stock WHERE hub_id = $1", h) == [{"qty": expected}]
        assert await rows(postgres_db, "SELECT first_id, last_id FROM movement_ranges WHERE hub_id = $1", h) == [
            {"first_id": 1, "last_id": per_hub}
        ]
        hub = (await rows(postgres_db, "SELECT * FROM hubs WHERE hub_id = $1", h))[0]
        assert (hub["movements_stored"], hub["movements_max_id"], hub["movements_complete_to"]) == (
            per_hub, per_hub, per_hub
        )  # fmt: skip
    assert await count(postgres_db, "SELECT count(*) FROM movement_gaps") == 0


async def _acked(ca: Consumer, cb: Consumer, n: int) -> bool:
    return ca.stats.acked + cb.stats.acked >= n


async def test_a_consumer_dying_between_commit_and_ack_loses_and_duplicates_nothing(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    broker = broker_with_users(broker_factory, ["s1"])
    crashed: list[int] = []

    async def crash_once(deliveries: Sequence[Delivery], outcome: Outcome) -> None:
        if not crashed and outcome.movements_inserted:
            crashed.append(outcome.movements_inserted)
            deliveries[0].connection.abort("crash between commit and ack")  # the TCP connection dies, no PUBACK

    cfg = config(tmp_path, broker, postgres_db, batch_messages=5)
    hub = hub_client(broker, "s1")
    try:
        async with running(cfg, after_commit=crash_once) as consumer:
            for n in range(20):
                await publish(hub, "s1", "movements", batch("s1", n * 10 + 1, n * 10 + 10))
            await until(stored(postgres_db, 200), "every movement stored")
            await until(lambda: _acked(consumer, consumer, 20), "every message acknowledged")
    finally:
        hub.close()
    assert crashed, "the crash happened"
    s = consumer.stats
    assert s.broker_connects >= 2 and s.not_acked >= 1
    assert s.movements_inserted == 200 and s.movements_duplicate >= crashed[0], "redelivered, stored once"
    assert await count(postgres_db, "SELECT count(*) FROM movements") == 200
    assert await rows(postgres_db, "SELECT qty FROM stock") == [{"qty": -200}]


async def test_central_run_killed_mid_stream_and_restarted_stores_everything_once(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    broker = broker_with_users(broker_factory, ["s1", "s2"])
    path = write_config(tmp_path, broker, postgres_db, batch_messages=4, batch_delay_s=0.001)
    argv = [sys.executable, "-m", "hub.cli", "central", "run", "--config", str(path), "--log-level", "info"]
    log = tmp_path / "central.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)

    proc = start()
    clients = {h: hub_client(broker, h) for h in ("s1", "s2")}
    try:
        await until(lambda: _logged(log, "subscribed to"), "the consumer subscribed", 30)
        for n in range(60):
            for h, c in clients.items():
                await publish(c, h, "movements", batch(h, n * 50 + 1, n * 50 + 50))
            if n == 30:
                await until(stored(postgres_db, 1), "some committed", 30)
                proc.send_signal(signal.SIGKILL)  # mid-stream: batches committed, acknowledged or neither
                proc.wait(10)
                proc = start()
        try:
            await until(stored(postgres_db, 6000), "every movement stored after the restart", 60)
        except AssertionError as exc:
            ranges = await rows(postgres_db, "SELECT * FROM movement_ranges ORDER BY 1, 2")
            raise AssertionError(f"{exc}; ranges {ranges}; consumer log:\n{log.read_text()[-4000:]}") from None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        for c in clients.values():
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert await count(postgres_db, "SELECT count(*) FROM movements") == 6000
    assert await rows(postgres_db, "SELECT hub_id, qty FROM stock ORDER BY 1") == [
        {"hub_id": "s1", "qty": -3000},
        {"hub_id": "s2", "qty": -3000},
    ]
    assert await count(postgres_db, "SELECT count(*) FROM movement_gaps") == 0


async def _logged(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


# ---------------------------------------------------------------------------------------------- rejections


async def test_malformed_and_forged_payloads_are_rejected_recorded_and_acknowledged(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    broker = broker_with_users(broker_factory, ["s1", "s2"])
    cfg = config(tmp_path, broker, postgres_db)
    bad = [
        ("s2", "movements", batch("s1", 1, 5)),  # forged: s2 publishes s1's movements
        ("s2", "movements", b"{not json"),
        ("s2", "movements", batch("s2", 1, 5).replace(b'"v":1', b'"v":2')),
        ("s2", "alerts", b'{"v":1,"hub":"s2","kind":"alerts","sent_ms":1.5,"rows":[]}'),
        ("s2", "gossip", b"{}"),
    ]
    s1, s2 = hub_client(broker, "s1"), hub_client(broker, "s2")
    try:
        async with running(cfg) as consumer:
            for hub, kind, payload in bad:
                await publish(s2, hub, kind, payload)
            await publish(s1, "s1", "movements", batch("s1", 1, 5))
            await until(stored(postgres_db, 5), "the good batch stored")
            await until(lambda: _acked(consumer, consumer, len(bad) + 1), "all acknowledged")
        assert consumer.stats.rejected == len(bad) and consumer.stats.not_acked == 0
        async with running(cfg) as again:  # nothing comes back: they were acknowledged
            await asyncio.sleep(0.5)
            assert again.stats.messages == again.stats.ignored  # at most central's own rewind, echoed late
            assert again.stats.rejected == again.stats.movements_duplicate == 0
    finally:
        s1.close()
        s2.close()
    got = await rows(postgres_db, "SELECT topic, hub_id, reason, payload_bytes FROM rejected ORDER BY id")
    assert [r["hub_id"] for r in got] == ["s2"] * 4 + [None]
    reasons = " | ".join(r["reason"] for r in got)
    assert "movements.hub: 's1' is not the topic's hub 's2'" in reasons
    assert "not JSON" in reasons and "movements.v: must be 1" in reasons and "integers" in reasons
    assert "gossip" in got[4]["topic"]
    assert await rows(postgres_db, "SELECT DISTINCT hub_id FROM movements") == [{"hub_id": "s1"}]
    assert await count(postgres_db, "SELECT count(*) FROM hubs WHERE hub_id = 's2'") == 0


# ---------------------------------------------------------------------------------------------- PostgreSQL down


async def test_postgres_down_means_no_ack_and_everything_arrives_once_it_is_back(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    broker = broker_with_users(broker_factory, ["s1"])
    cfg = config(tmp_path, broker, postgres_db)
    server = postgres_db.server
    hub = hub_client(broker, "s1")
    try:
        # 1. down while the consumer runs: it keeps the batch, retries, commits once the server is back
        async with running(cfg) as consumer:
            await publish(hub, "s1", "movements", batch("s1", 1, 10))
            await until(stored(postgres_db, 10), "first batch")
            # its first-contact rewind comes back through the shared subscription (ignored, acknowledged)
            await until(lambda: _true(consumer.stats.ignored == 1 and consumer.stats.acked == 2), "rewind echo")
            server.stop()
            await publish(hub, "s1", "movements", batch("s1", 11, 20))
            await until(lambda: _true(consumer.stats.db_errors > 0), "the consumer met the outage")
            acked = consumer.stats.acked
            await asyncio.sleep(0.5)
            assert consumer.stats.acked == acked == 2, "nothing acknowledged while the database is down"
            server.start()  # from the main thread: the server dies with the thread that started it
            await until(stored(postgres_db, 20), "second batch after the restart")
            await until(lambda: _acked(consumer, consumer, 3), "acknowledged after the commit")
        # 2. down, and the consumer stops meanwhile: unacknowledged, the broker sends it again to the next run
        async with running(cfg) as consumer:
            server.stop()
            await publish(hub, "s1", "movements", batch("s1", 21, 30))
            await until(lambda: _true(consumer.stats.db_errors > 0), "the consumer met the outage")
        assert consumer.stats.acked == 0
        server.start()  # from the main thread: the server dies with the thread that started it
        async with running(cfg) as consumer:
            await until(stored(postgres_db, 30), "redelivered after the restart")
            await until(lambda: _acked(consumer, consumer, 1), "acknowledged")
    finally:
        hub.close()
        if not server.running:
            server.start()
    assert await count(postgres_db, "SELECT count(*) FROM movements") == 30


async def _true(value: bool) -> bool:
    return value


# ---------------------------------------------------------------------------------- alerts, snapshots, holes


async def test_alerts_snapshots_status_holes_rewind_and_check(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    broker = broker_with_users(broker_factory, ["s1"])
    path = write_config(tmp_path, broker, postgres_db)
    cfg = load_central_config(path)
    hub = hub_client(broker, "s1")
    assert hub.subscribe(f"{PREFIX}/s1/rewind") == 1

    def alert(rev: int, status: str) -> tuple[Any, ...]:
        resolved = 1_790_000_009_000 if status == "resolved" else None
        return (7, "shrinkage", "lane:3:0", status, 1_790_000_000_000, None, None, resolved, "ann" if resolved else
                None, "write-off" if resolved else None, None, rev)  # fmt: skip

    def snapshot(sent: int, last: int, book_qty: int) -> bytes:
        return encode_snapshot(
            "s1", sent, last_movement_id=last,
            skus=[("COLA-330", "Cola 330 ml", 3450, 6, 24, 48, "05449000000996")],
            lanes=[("7:0", 7, 0, "COLA-330", 12, 41400, 1_790_000_000_000)],
            nodes=[(7, "aisle 3", "1.2.0", 1_790_000_000_000)],
            book=[("COLA-330", "shelf:A1", book_qty)],
        )  # fmt: skip

    try:
        async with running(cfg) as consumer:
            await publish(hub, "s1", "status", encode_status("s1", "online", 1_790_000_000_000))
            await publish(hub, "s1", "alerts", encode_alerts("s1", [alert(5, "resolved")], 1_790_000_000_500))
            await publish(hub, "s1", "alerts", encode_alerts("s1", [alert(3, "open")], 1_790_000_000_400))  # older
            await publish(hub, "s1", "movements", batch("s1", 1, 10))
            await publish(hub, "s1", "movements", batch("s1", 21, 30))  # 11..20 lost on the way
            await publish(hub, "s1", "snapshot", snapshot(1_790_000_001_000, 30, -30))
            await until(stored(postgres_db, 20), "movements")
            # first contact: central asks for every alert again
            first = await asyncio.to_thread(hub.expect, 1)
            rewind = decode("s1", "rewind", first[0][1])
            assert rewind.alerts is True and rewind.movements_after is None  # type: ignore[union-attr]
            await publish(hub, "s1", "snapshot", snapshot(1_790_000_002_000, 30, -30))
            asked = await asyncio.to_thread(hub.expect, 1)
            assert asked[0][0] == f"{PREFIX}/s1/rewind"
            rewind = json.loads(asked[0][1])
            assert (rewind["movements_after"], rewind["alerts"]) == (10, True)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert await asyncio.to_thread(main, ["central", "check", "--config", str(path)]) == 1
            assert "10 movement(s) missing in 1 hole(s)" in out.getvalue()
            # the hub publishes again after 10: the hole closes, the books agree
            await publish(hub, "s1", "movements", batch("s1", 11, 30))
            await until(stored(postgres_db, 30), "the hole filled")
            await publish(hub, "s1", "snapshot", snapshot(1_790_000_003_000, 30, -30))
            await until(lambda: _snapshot_at(postgres_db, 1_790_000_003_000), "the newest snapshot")
            assert consumer.stats.rewinds == 2
    finally:
        hub.close()
    got = await rows(postgres_db, "SELECT id, rev, status, resolution FROM alerts")
    assert got == [{"id": 7, "rev": 5, "status": "resolved", "resolution": "write-off"}]
    h = (await rows(postgres_db, "SELECT * FROM hubs"))[0]
    assert (h["status"], h["movements_complete_to"], h["snapshot_last_movement_id"]) == ("online", 30, 30)
    assert await rows(postgres_db, "SELECT lane_id, count FROM snapshot_lanes") == [{"lane_id": "7:0", "count": 12}]
    assert await rows(postgres_db, "SELECT sku, qty FROM book_stock") == [{"sku": "COLA-330", "qty": -30}]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert await asyncio.to_thread(main, ["central", "check", "--config", str(path), "--json"]) == 0
    report = json.loads(out.getvalue())
    assert report[0]["book_compared"] is True and report[0]["problems"] == []


async def _snapshot_at(db: FreshDatabase, sent_ms: int) -> bool:
    return await count(db, "SELECT count(*) FROM hubs WHERE snapshot_sent_ms = $1", sent_ms) == 1


# ------------------------------------------------------------------------------------ a hub restored from a backup


async def test_a_hub_restored_from_an_older_backup_loses_nothing_here_and_counts_nothing_twice(
    postgres_db: FreshDatabase,
) -> None:
    """Incarnation 1 booked movements 1..30; the store restored a backup taken at 20 (incarnation 2, hub/ledger/
    identity.py), booked 21..25 anew (ids central holds for other movements), booked lost movement 28 again (as 26)
    and, as 27, a movement under lost 29's reference with other content; then published its whole ledger again.
    Central stores every new movement, none of the republished ones twice, records the conflict, and reports what the
    store lost: its stock is the restored hub's balances plus the movements lost at the store, less the conflict.
    The lost ledger's last batch arrives late, in the same batch as the restored one's (rounds keep them apart)."""
    t = 1_790_000_000_000

    def row(i: int, ref: str | None = None, qty: int = -1) -> tuple[Any, ...]:
        r = movement(i, qty=qty)
        return (*r[:7], ref or r[7], *r[8:])

    def moves(incarnation: int, rows: list[tuple[Any, ...]], sent: int) -> tuple[str, bytes]:
        return "movements", encode_movements("s1", rows, t + sent, incarnation=incarnation)

    def snapshot(incarnation: int, sent: int, last: int, qty: int) -> tuple[str, bytes]:
        book = [("COLA-330", "shelf:A1", qty)]
        return "snapshot", encode_snapshot("s1", t + sent, incarnation=incarnation, last_movement_id=last, skus=[],
                                           lanes=[], nodes=[], book=book)  # fmt: skip

    def alert(incarnation: int, rev: int, status: str) -> tuple[str, bytes]:
        a = (7, "shrinkage", "lane:3:0", status, t, None, None, t if status == "resolved" else None, None, None, None)
        return "alerts", encode_alerts("s1", [(*a, rev)], t + rev, incarnation=incarnation)

    restored = [row(i) for i in range(1, 21)] + [row(i, f"new:{i}", -2) for i in range(21, 26)]
    restored += [row(26, "ref:28"), row(27, "ref:29", 5)]  # 28 booked again; 29's reference, other content
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        await migrate(conn)

        async def apply(*messages: tuple[str, bytes]) -> Outcome:
            batch = [receive(PREFIX, f"{PREFIX}/s1/{kind}", payload) for kind, payload in messages]
            assert [r.reason for r in batch if r.message is None] == []
            return await apply_batch(conn, batch, t + 10_000)

        first = await apply(
            moves(1, [row(i) for i in range(1, 21)], 100), snapshot(1, 200, 30, -30), alert(1, 5, "open")
        )
        assert first.movements_inserted == 20
        second_batch = (
            moves(1, [row(i) for i in range(21, 31)], 150),  # the lost ledger's, delivered late
            moves(2, restored, 300),
            alert(2, 2, "resolved"),  # a lower rev, but the newer incarnation: it wins
            snapshot(2, 400, 27, -26),
            snapshot(1, 500, 30, -30),  # the lost ledger's, later still: ignored
        )
        out = await apply(*second_batch)
        assert (out.movements_inserted, out.movements_matched, out.movements_conflicting) == (15, 21, 1)
        again = await apply(*second_batch)  # redelivered: nothing new, nothing recorded twice
        assert (again.movements_inserted, again.movements_matched, again.movements_conflicting) == (0, 0, 0)

        assert await conn.fetchval("SELECT qty FROM stock WHERE hub_id = 's1'") == -40  # = -26 + 9 lost - 5 conflict
        assert await conn.fetchval("SELECT count(*) FROM movements WHERE incarnation = 2") == 5
        hub = await conn.fetchrow("SELECT * FROM hubs WHERE hub_id = 's1'")
        assert (hub["incarnation"], hub["snapshot_incarnation"], hub["snapshot_last_movement_id"]) == (2, 2, 27)
        assert (hub["movements_stored"], hub["movements_complete_to"], hub["movements_max_id"]) == (35, 27, 27)
        ranges = await conn.fetch("SELECT incarnation, first_id, last_id FROM movement_ranges ORDER BY 1, 2")
        assert [tuple(r) for r in ranges] == [(1, 1, 30), (2, 1, 27)]
        assert await conn.fetchval("SELECT count(*) FROM movement_gaps") == 0
        got = await conn.fetch("SELECT id, incarnation, rev, status FROM alerts ORDER BY incarnation")
        assert [tuple(r) for r in got] == [(7, 1, 5, "open"), (7, 2, 2, "resolved")]  # each incarnation's kept
        assert h_lost_alerts(await report(conn)) == 0  # alert 7 is carried on (resolved) by incarnation 2

        (h,) = await report(conn)
        assert (h.incarnation, h.book_compared, h.book_differences, h.lost_compared) == (2, True, [], True)
        assert h.lost == 9 and [(m["incarnation"], m["id"]) for m in h.lost_movements] == [
            (1, i) for i in (21, 22, 23, 24, 25, 26, 27, 29, 30)
        ]  # fmt: skip
        assert h.conflicts == 1 and h.conflicting[0]["held_incarnation"] == 1 and h.conflicting[0]["held_id"] == 29
        assert len(h.problems) == 2
        text = "\n".join(format_report([h], t + 20_000))
        assert (
            "s1: unknown, last contact 10 s ago, 35 movement(s), incarnation 2, complete to 27: 9 book movement(s)"
            in text
        )
        assert "lost at the store: incarnation 1 movement 21: sale -1 COLA-330 at shelf:A1 (ref:21, leg 0)" in text
        assert "not stored: incarnation 2 movement 27 (ref:29, leg 0: +5 COLA-330 at shelf:A1) is held by " in text

        # the store books lost movement 21 again under its own reference: central knows it, counts it once
        out = await apply(moves(2, [row(28, "ref:21")], 600), snapshot(2, 700, 28, -27))
        assert (out.movements_inserted, out.movements_matched) == (0, 1)
        (h,) = await report(conn)
        assert (h.lost, h.book_differences) == (8, [])
        assert await conn.fetchval("SELECT qty FROM stock WHERE hub_id = 's1'") == -40
    finally:
        await conn.close()


def h_lost_alerts(hubs: Sequence[Any]) -> int:
    return int(sum(h.lost_alerts for h in hubs))


async def test_alert_ids_reused_by_a_restored_ledger_are_kept_apart_and_the_lost_one_reported(
    postgres_db: FreshDatabase,
) -> None:
    """Incarnation 1 opened shrinkage alert 3 after the backup; the ledger restored from it (incarnation 2) gives id 3
    to a reorder alert. Both are kept; the store's open alerts are incarnation 2's (3, and 2 which was in the backup
    and is carried on); incarnation 1's alert 3 is lost at the store: ``central check`` and the stores list say so.
    Incarnation 1's messages arrive last, with higher revs: they change nothing of incarnation 2's."""
    from hub.central.web import queries as q
    from hub.central.web.accounts import EVERY_STORE

    t = 1_790_000_000_000

    def alert(i: int, kind: str, cause: str, opened: int, rev: int) -> tuple[Any, ...]:
        return (i, kind, cause, "open", t + opened, None, None, None, None, None, None, rev)

    carried = alert(2, "reorder", "sku:TEA", 0, 1)  # opened before the backup: in both ledgers
    lost = alert(3, "shrinkage", "lane:7:0", 100, 9)  # opened after the backup: lost with the ledger
    reused = alert(3, "reorder", "sku:COLA-330", 500, 2)  # the restored ledger's alert 3
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        await migrate(conn)

        async def apply(incarnation: int, rows: list[tuple[Any, ...]], sent: int) -> Outcome:
            payload = encode_alerts("s1", rows, t + sent, incarnation=incarnation)
            return await apply_batch(conn, [receive(PREFIX, f"{PREFIX}/s1/alerts", payload)], t + 10_000)

        await apply(2, [(*carried[:-1], 1), reused], 600)
        await apply(1, [(*carried[:-1], 5), lost], 300)  # the lost ledger's, delivered late
        await apply(1, [(*lost[:-1], 10)], 310)  # and its later rev of alert 3: still incarnation 1's
        got = await conn.fetch("SELECT incarnation, id, kind, rev FROM alerts ORDER BY 1, 2")
        assert [tuple(r) for r in got] == [
            (1, 2, "reorder", 5), (1, 3, "shrinkage", 10), (2, 2, "reorder", 1), (2, 3, "reorder", 2)
        ]  # fmt: skip
        assert await conn.fetchval("SELECT incarnation FROM hubs WHERE hub_id = 's1'") == 2

        # the store's alerts: incarnation 2's only, and the API's cursor walks them page by page
        f = q.Filters(EVERY_STORE)
        listed, after = [], None
        for _ in range(4):
            page = await q.alerts(conn, f, "unresolved", None, after, 1)
            listed += [(a.incarnation, a.id, a.kind) for a in page.rows]
            if page.next_key is None:
                break
            after = q.decode_cursor("alerts", q.encode_cursor("alerts", page.next_key), q.ALERT_CURSOR)
        assert listed == [(2, 3, "reorder"), (2, 2, "reorder")]
        (store,) = (await q.stores(conn, f, None, 10, t + 10_000, q.OFFLINE_AFTER_MS)).rows
        assert (store.open_alerts, store.lost_alerts) == (2, 1)

        (h,) = await report(conn)
        assert h.lost_alerts == 1
        assert [(a["incarnation"], a["id"], a["kind"]) for a in h.lost_alert_list] == [(1, 3, "shrinkage")]
        assert "1 unresolved alert(s) of an earlier incarnation lost at the store" in h.problems
        text = "\n".join(format_report([h], t + 20_000))
        assert "alert lost at the store: incarnation 1 alert 3: shrinkage lane:7:0 (open)" in text

        # incarnation 1 had resolved it before the loss (that message arriving late): nothing unresolved is lost
        await apply(1, [(*lost[:3], "resolved", t + 100, None, None, t + 200, "ann", "gone", None, 11)], 320)
        (h,) = await report(conn)
        assert (h.lost_alerts, h.problems) == (0, [])
    finally:
        await conn.close()


# ----------------------------------------------------------------------------------------------- throughput


async def test_throughput_into_postgres_from_the_local_broker(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    """Movements/s into PostgreSQL (10 hubs x 20 batches of 500): live (publish -> commit, the hubs publishing
    meanwhile), then draining a backlog the broker queued while the consumer was away. Printed, not asserted: the
    cores are shared."""
    hubs = [f"h{i:02d}" for i in range(10)]
    broker = broker_with_users(broker_factory, hubs, max_inflight_messages=100)
    cfg = config(tmp_path, broker, postgres_db)  # the defaults: 50 messages a batch, receive maximum 100
    clients = {h: hub_client(broker, h) for h in hubs}

    async def publish_all(rounds: range) -> None:
        def one_hub(h: str) -> None:
            for n in rounds:
                p = batch(h, n * 500 + 1, n * 500 + 500, sku=f"SKU-{n % 7}")
                assert clients[h].publish(f"{PREFIX}/{h}/movements", p) in (0, 0x10)

        await asyncio.gather(*(asyncio.to_thread(one_hub, h) for h in hubs))

    try:
        async with running(cfg) as consumer:
            started = time.perf_counter()
            await publish_all(range(0, 20))
            await until(stored(postgres_db, 100_000), "every movement", timeout_s=120)
            live = time.perf_counter() - started
            live_commits = consumer.stats.batches
        await publish_all(range(20, 40))  # the consumer is away: its session queues them
        async with running(cfg) as consumer:
            started = time.perf_counter()
            await until(stored(postgres_db, 200_000), "the backlog", timeout_s=120)
            drain = time.perf_counter() - started
            drain_commits = consumer.stats.batches
    finally:
        for c in clients.values():
            c.close()
    print(
        f"\ncentral consumer: live {100_000 / live:.0f} movements/s ({live:.2f} s, {live_commits} commits); "
        f"backlog {100_000 / drain:.0f} movements/s ({drain:.2f} s, {drain_commits} commits)"
    )
    assert await count(postgres_db, "SELECT count(*) FROM stock") == 70


async def test_a_value_the_database_refuses_on_a_fresh_connection_rejects_that_message_alone(
    postgres_db: FreshDatabase,
) -> None:
    """A batch whose first try on a new connection fails on a value PostgreSQL refuses is applied again message by
    message: the staging table the failed try made is gone with its rollback and must be made again (a mark kept
    per connection once wedged every retry, and so the consumer, on "relation does not exist")."""
    from hub.central.store import Received
    from hub.fleet.messages import SkuInfo, Snapshot

    conn = await asyncpg.connect(postgres_db.dsn)
    await migrate(conn)
    await conn.close()
    t = 1_790_000_000_000
    rows = [(i, t + i, t + i, "COLA", "shelf:A1", -1, "sale", f"till:{i}", 0, "pos:1", *(None,) * 6) for i in (1, 2)]
    moves = receive(PREFIX, f"{PREFIX}/s1/movements", encode_movements("s1", rows, t))
    sku = SkuInfo("COLA", "Cola", 100, 1, 1, None, None)
    # a key twice: the decoder refuses that since; built by hand, as any value it might let through and PostgreSQL not
    bad = Received(f"{PREFIX}/s1/snapshot", b"{}", "s1", Snapshot("s1", t, 1, 2, (sku, sku), (), (), ()))
    conn = await asyncpg.connect(postgres_db.dsn)  # fresh: no staging table yet in its session
    try:
        out = await apply_batch(conn, [moves, bad], t)
        assert out.movements_inserted == 2 and [r.reason for r in out.rejected] != []
        assert "the database refused it" in out.rejected[0].reason
        assert await conn.fetchval("SELECT count(*) FROM movements WHERE hub_id = 's1'") == 2
        assert await conn.fetchval("SELECT count(*) FROM rejected") == 1
    finally:
        await conn.close()
