"""The real servers the fleet tier's tests start (tools/servers/, tests/fleet_support.py), and the broker and
database behaviour the hub's publisher and the central consumer rely on, checked with real MQTT 5 clients
(aiomqtt, and paho where the reason codes matter) and asyncpg.

Mosquitto 2.0.11 (Debian 12) facts pinned here:
* a refused login (wrong password, unknown user, no user) gets CONNACK 0x87 "Not authorized" (not 0x86);
* a QoS 1 publish the ACL denies gets PUBACK 0x87 "Not authorized" and the connection stays up; a publish nobody
  subscribes to gets PUBACK 0x10 "No matching subscribers" (the message is gone). aiomqtt 2.5's ``publish()``
  returns normally either way: the hub must read the PUBACK's reason code itself;
* every SUBSCRIBE is granted (the ACL file's check is on delivery: a hub subscribed to ``smartshelf/v1/#`` gets
  nothing of other hubs);
* a persistent session's plain subscriptions and queued QoS 1 messages survive ``stop()``/``start()``; its
  **shared** subscriptions do not (they are never written to the persistence file): after a broker restart the
  consumer must subscribe again on every connect, even with session_present;
* a shared subscription hands messages round robin to its members, offline ones (persistent sessions) included:
  they wait in that member's queue until it returns;
* beyond ``max_queued_messages`` an offline session's new messages are dropped, every PUBACK still 0;
* SIGKILL: the broker restarts from its last save (every ``autosave_interval`` s; at a clean stop; on SIGUSR1):
  messages queued since are lost, messages delivered since are delivered again. ``autosave_on_changes`` saves
  after every loop with changes.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from collections.abc import Callable

import aiomqtt
import asyncpg
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.fleet_support import FreshDatabase, MqttTestClient, unavailable
from tools.mpy_runtime import REPO_ROOT
from tools.servers.mosquitto import MOSQUITTO_ENV, Broker
from tools.servers.postgres import PG_BINDIR_ENV, Postgres
from tools.servers.process import ALLOW_NO_FLEET, ServerUnavailable

PREFIX = "smartshelf/v1"
SHARED = f"$share/central/{PREFIX}/#"
SUCCESS, NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED = 0x00, 0x10, 0x87
PASSWORDS = {"store-a": "pw-a", "store-b": "pw-b", "central": "pw-central"}


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    """The function's broker with two hubs and a central consumer."""
    return broker_factory(plain=True, users=PASSWORDS, central_users={"central"})


def login(broker: Broker, user: str | None, **kw: object) -> MqttTestClient:
    return MqttTestClient(broker, user, PASSWORDS.get(user or ""), **kw)  # type: ignore[arg-type]


def consumer(broker: Broker, client_id: str = "central-1") -> MqttTestClient:
    """The central consumer's persistent session (fixed id, clean_start false, one hour's session expiry)."""
    return login(broker, "central", client_id=client_id, clean_start=False, session_expiry_s=3600)


def uid_of(pid: int | None) -> int:
    assert pid is not None
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))


# --- Mosquitto -------------------------------------------------------------------------------------------------


def test_the_broker_runs_unprivileged_on_loopback_and_restarts_on_its_ports(broker: Broker) -> None:
    assert broker.version == "2.0.11" or broker.version.startswith("2.")
    if os.geteuid() == 0:
        assert uid_of(broker.pid) != 0
    port, plain_port = broker.port, broker.plain_port
    assert port not in (1883, 8883) and plain_port not in (1883, 8883)
    broker.restart()
    assert (broker.port, broker.plain_port) == (port, plain_port)
    broker.restart(kill=True)
    with login(broker, "store-a") as hub:
        assert hub.connack == SUCCESS


async def test_tls_with_the_test_ca_works_and_a_client_not_trusting_it_is_refused(broker: Broker) -> None:
    def client(tls_context: ssl.SSLContext | None, port: int, timeout: float = 5) -> aiomqtt.Client:
        return aiomqtt.Client(
            broker.host,
            port,
            username="store-a",
            password=PASSWORDS["store-a"],
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=tls_context,
            timeout=timeout,
        )

    async with client(broker.tls_context(), broker.port) as c:
        await c.publish(f"{PREFIX}/store-a/status", b"online", qos=1)
    with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED"):
        async with client(ssl.create_default_context(), broker.port):  # the system's CAs only
            pass
    with pytest.raises(aiomqtt.MqttError):  # MQTT without TLS on the TLS listener: no CONNACK ever
        async with client(None, broker.port, timeout=1):
            pass


async def test_a_wrong_password_an_unknown_user_and_anonymous_are_refused(broker: Broker) -> None:
    with login(broker, "store-a") as ok:
        assert ok.connack == SUCCESS
    for user, password in [("store-a", "wrong"), ("nobody-here", "x"), (None, None)]:
        refused = MqttTestClient(broker, user, password)
        refused.close()
        assert refused.connack == NOT_AUTHORIZED, (user, refused.connack)
    with pytest.raises(MqttConnectError) as err:
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            username="store-a",
            password="wrong",
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=broker.tls_context(),
        ):
            pass
    assert err.value.rc == NOT_AUTHORIZED


def test_a_user_added_to_a_running_broker_can_log_in_at_once(mosquitto: Broker) -> None:
    mosquitto.add_user("store-c", "pw-c")
    with MqttTestClient(mosquitto, "store-c", "pw-c") as hub:
        assert hub.connack == SUCCESS
        assert hub.publish(f"{PREFIX}/store-c/movements", b"{}") == NO_MATCHING_SUBSCRIBERS
    with MqttTestClient(mosquitto, "store-c", "pw-c", tls=False) as hub:  # the plain listener
        assert hub.connack == SUCCESS


def test_a_hub_writes_only_its_own_topics_and_reads_nothing(broker: Broker) -> None:
    with consumer(broker) as central, login(broker, "store-a") as hub_a, login(broker, "store-b") as hub_b:
        assert central.subscribe(SHARED) == 1  # granted QoS 1
        assert hub_b.subscribe(f"{PREFIX}/#") == 1  # granted too: reading is checked message by message
        assert hub_a.publish(f"{PREFIX}/store-a/movements", b"mine") == SUCCESS
        assert hub_a.publish(f"{PREFIX}/store-b/movements", b"forged") == NOT_AUTHORIZED
        assert hub_a.publish("elsewhere/store-a", b"outside the prefix") == NOT_AUTHORIZED
        assert hub_a.client.is_connected()  # a denied publish does not cost the connection
        assert central.expect(1) == [(f"{PREFIX}/store-a/movements", b"mine")]
        assert central.quiet() == []
        assert hub_b.quiet(0) == []


async def test_aiomqtt_publish_does_not_report_a_denied_publish(broker: Broker) -> None:
    """aiomqtt 2.5 drops the PUBACK's reason code: a hub that trusts ``publish()`` returning would advance its
    cursor past a message the broker threw away."""
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username="store-a",
        password=PASSWORDS["store-a"],
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=broker.tls_context(),
    ) as c:
        await c.publish(f"{PREFIX}/store-b/movements", b"denied", qos=1)  # returns; PUBACK said 0x87


async def test_a_persistent_session_keeps_its_queued_messages_across_a_broker_restart(broker: Broker) -> None:
    def central() -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        return aiomqtt.Client(
            broker.host,
            broker.port,
            username="central",
            password=PASSWORDS["central"],
            identifier="central-1",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # aiomqtt's default (paho's FIRST_ONLY) would drop the session at every start
            properties=props,
            tls_context=broker.tls_context(),
        )

    async with central() as c:
        await c.subscribe(f"{PREFIX}/+/movements", qos=1)
    with login(broker, "store-a") as hub:
        assert [hub.publish(f"{PREFIX}/store-a/movements", b"%d" % i) for i in range(3)] == [SUCCESS] * 3
    broker.stop()  # SIGTERM: saved
    broker.start()
    async with central() as c:
        got: list[bytes] = []
        async with asyncio.timeout(5):
            async for message in c.messages:
                assert message.qos == 1
                got.append(bytes(message.payload))
                if len(got) == 3:
                    break
    assert got == [b"0", b"1", b"2"]


def test_shared_subscriptions_do_not_survive_a_broker_restart(broker: Broker) -> None:
    with consumer(broker) as central:
        assert central.subscribe(SHARED) == 1
    broker.restart()
    with consumer(broker) as central, login(broker, "store-a") as hub:
        assert central.session_present
        assert hub.publish(f"{PREFIX}/store-a/movements", b"lost") == NO_MATCHING_SUBSCRIBERS
        assert central.subscribe(SHARED) == 1  # what the consumer must do at every connect
        assert hub.publish(f"{PREFIX}/store-a/movements", b"kept") == SUCCESS
        assert central.expect(1) == [(f"{PREFIX}/store-a/movements", b"kept")]


def test_a_shared_subscription_queues_for_its_offline_members(broker: Broker) -> None:
    with consumer(broker, "central-2") as second:
        assert second.subscribe(SHARED) == 1
    with consumer(broker, "central-1") as first, login(broker, "store-a") as hub:
        assert first.subscribe(SHARED) == 1
        assert [hub.publish(f"{PREFIX}/store-a/movements", b"%d" % i) for i in range(6)] == [SUCCESS] * 6
        first_got = [payload for _, payload in first.expect(3)]
        assert first.quiet() == []
    with consumer(broker, "central-2") as second:
        second_got = [payload for _, payload in second.expect(3)]
    assert sorted(first_got + second_got) == [b"%d" % i for i in range(6)]


def test_beyond_max_queued_messages_an_offline_session_loses_new_messages(
    broker_factory: Callable[..., Broker],
) -> None:
    broker = broker_factory(max_queued_messages=5, users=PASSWORDS, central_users={"central"})
    with consumer(broker) as central:
        central.subscribe(f"{PREFIX}/#")
    with login(broker, "store-a") as hub:
        assert [hub.publish(f"{PREFIX}/store-a/movements", b"%d" % i) for i in range(8)] == [SUCCESS] * 8
    with consumer(broker) as central:
        assert [p for _, p in central.expect(5)] == [b"0", b"1", b"2", b"3", b"4"]
        assert central.quiet() == []
    assert "Outgoing messages are being dropped for client central-1" in broker.log_text()


def test_sigkill_brings_the_broker_back_to_its_last_save(broker: Broker) -> None:
    topic = f"{PREFIX}/store-a/movements"
    with consumer(broker) as central:
        central.subscribe(topic)
    with login(broker, "store-a") as hub:
        hub.publish(topic, b"before-save")
    broker.save()  # SIGUSR1 (a clean stop or the autosave timer would do the same)
    with consumer(broker) as central:
        assert central.expect(1) == [(topic, b"before-save")]
    with login(broker, "store-a") as hub:
        assert hub.publish(topic, b"after-save") == SUCCESS
    broker.restart(kill=True)
    with consumer(broker) as central:
        # delivered after the save: delivered again; queued after the save: lost
        assert central.expect(1) == [(topic, b"before-save")]
        assert central.quiet() == []


def test_autosave_on_changes_keeps_queued_messages_across_sigkill(broker_factory: Callable[..., Broker]) -> None:
    broker = broker_factory(autosave_on_changes=True, autosave_interval=1, users=PASSWORDS, central_users={"central"})
    topic = f"{PREFIX}/store-a/movements"
    with consumer(broker) as central:
        central.subscribe(topic)
    with login(broker, "store-a") as hub:
        assert [hub.publish(topic, b"%d" % i) for i in range(3)] == [SUCCESS] * 3
        # The broker saves at the top of the loop that follows a change, before it reads anything else: once a
        # later publish (no subscriber, so no change) is acknowledged, the save is on disk.
        for _ in range(2):
            assert hub.publish(f"{PREFIX}/store-a/probe", b"") == NO_MATCHING_SUBSCRIBERS
    broker.restart(kill=True)
    with consumer(broker) as central:
        assert [p for _, p in central.expect(3)] == [b"0", b"1", b"2"]


# --- PostgreSQL ------------------------------------------------------------------------------------------------

_previous_database: list[str] = []


async def test_asyncpg_connects_to_a_fresh_database_with_scram(postgres_db: FreshDatabase) -> None:
    server = postgres_db.server
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        assert await conn.fetchval("SELECT current_user") == server.role
        assert await conn.fetchval("SELECT current_database()") == postgres_db.name
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        await conn.execute("CREATE TABLE movements (hub text, id bigint, PRIMARY KEY (hub, id))")
        await conn.execute("INSERT INTO movements VALUES ('store-a', 1) ON CONFLICT DO NOTHING")
    finally:
        await conn.close()
    stored = server.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{server.role}'")
    assert stored.startswith("SCRAM-SHA-256$")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres_db.dsn.replace(server.password, "wrong"))
    _previous_database.append(postgres_db.name)


async def test_the_next_test_gets_a_database_of_its_own(postgres_db: FreshDatabase) -> None:
    databases = postgres_db.server.databases()
    assert postgres_db.name in databases
    assert not set(_previous_database) & set(databases)  # dropped after its test
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('public.movements')") is None
    finally:
        await conn.close()


def test_postgres_runs_unprivileged_on_loopback(postgres_server: Postgres) -> None:
    if os.geteuid() == 0:
        assert uid_of(postgres_server.pid) != 0
    assert postgres_server.port != 5432
    assert postgres_server.psql("SHOW listen_addresses").strip() == "127.0.0.1"
    assert postgres_server.psql("SHOW password_encryption").strip() == "scram-sha-256"


async def test_committed_rows_survive_a_postgres_kill(postgres_db: FreshDatabase) -> None:
    conn = await asyncpg.connect(postgres_db.dsn)
    await conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)")
    postgres_db.server.kill()
    with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    postgres_db.server.start()  # crash recovery
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        assert await conn.fetchval("SELECT sum(v) FROM t") == 3
    finally:
        await conn.close()


# --- missing servers: fail unless allowed -------------------------------------------------------------------------


def test_missing_servers_fail_the_tests_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MOSQUITTO_ENV, "/nonexistent/mosquitto")
    monkeypatch.setenv(PG_BINDIR_ENV, "/nonexistent")
    for server in (Broker, Postgres):
        with pytest.raises(ServerUnavailable) as missing:
            server()
        monkeypatch.delenv(ALLOW_NO_FLEET, raising=False)
        with pytest.raises(pytest.fail.Exception):
            unavailable(missing.value)
        monkeypatch.setenv(ALLOW_NO_FLEET, "1")
        with pytest.raises(pytest.skip.Exception):
            unavailable(missing.value)


def test_the_bootstrap_finds_the_installed_servers() -> None:
    script = REPO_ROOT / "tools" / "bootstrap" / "install-fleet-servers.sh"
    env = {k: v for k, v in os.environ.items() if k != PG_BINDIR_ENV}
    assert subprocess.run([script], env=env, capture_output=True, timeout=60).returncode == 0
    wrong = subprocess.run([script], env={**env, PG_BINDIR_ENV: "/nonexistent"}, capture_output=True, timeout=60)
    assert wrong.returncode == 1 and b"no postgres there" in wrong.stderr
