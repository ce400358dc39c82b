"""Fixtures for the fleet tier's tests: a real Mosquitto and a real PostgreSQL on loopback (tools/servers/).

* ``mosquitto`` (function): a started ``Broker`` (TLS listener ``port`` + plain listener ``plain_port``, no users
  yet: ``add_user(name, password, central=False)`` reloads it, up to 100 ms each), closed after the test.
* ``broker_factory`` (function): ``broker_factory(**Broker kwargs)`` starts a broker with its users
  (``users={name: password}, central_users={name}``) or other settings (``plain=True``,
  ``max_queued_messages=...``, ``autosave_on_changes=True``...), as many as the test wants; closed after it.
* ``postgres_server`` (session): one started ``Postgres`` (initdb once per session, about a second).
* ``postgres_db`` (function): a fresh, empty database on it, owned by the server's login role: a ``FreshDatabase``
  (``.dsn`` for asyncpg, ``.name``, ``.server``); dropped after the test. If a test stopped or killed the
  session's server, the next ``postgres_db`` starts it again.
* ``MqttTestClient``: a plain paho MQTT 5 client (its network loop in a thread) for asserting what the broker
  answers: CONNACK, SUBACK and PUBACK reason codes (aiomqtt 2.5's ``publish()`` drops the PUBACK's reason code).

Like MicroPython's, these tests **fail** when Mosquitto or PostgreSQL is not installed, so CI cannot go green
without them (``make bootstrap`` installs both); ``SMARTSHELF_ALLOW_NO_FLEET=1`` skips them instead.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tools.servers.mosquitto import Broker
from tools.servers.postgres import Postgres
from tools.servers.process import ALLOW_NO_FLEET, ServerUnavailable

FLEET_FIXTURES = frozenset({"mosquitto", "broker_factory", "postgres_server", "postgres_db"})
_db_numbers = itertools.count(1)


def unavailable(exc: ServerUnavailable) -> NoReturn:
    if os.environ.get(ALLOW_NO_FLEET) == "1":
        pytest.skip(f"fleet servers unavailable and {ALLOW_NO_FLEET}=1: {exc}")
    pytest.fail(f"fleet servers unavailable: {exc} (or set {ALLOW_NO_FLEET}=1 to skip these tests)", pytrace=False)


@pytest.fixture
def broker_factory() -> Iterator[Callable[..., Broker]]:
    brokers: list[Broker] = []

    def make(**kwargs: Any) -> Broker:
        try:
            broker = Broker(**kwargs)
        except ServerUnavailable as exc:
            unavailable(exc)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def mosquitto(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory(plain=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    try:
        server = Postgres()
    except ServerUnavailable as exc:
        unavailable(exc)
    try:
        yield server.start()
    finally:
        server.close()


@dataclass(frozen=True, slots=True)
class FreshDatabase:
    server: Postgres
    name: str
    dsn: str  # the server's login role (owner of the database), over TCP on loopback


@pytest.fixture
def postgres_db(postgres_server: Postgres, request: pytest.FixtureRequest) -> Iterator[FreshDatabase]:
    if not postgres_server.running:  # an earlier test stopped or killed it
        postgres_server.start()
    test = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())
    name = f"t{next(_db_numbers)}_{test}"[:63].rstrip("_")
    dsn = postgres_server.create_database(name)
    yield FreshDatabase(postgres_server, name, dsn)
    if not postgres_server.running:
        postgres_server.start()
    postgres_server.drop_database(name)


class MqttTestClient:
    """One MQTT 5 connection to ``broker`` (TLS trusting its CA, or its plain listener with ``tls=False``).
    The constructor connects and waits for the CONNACK: ``connack`` (its reason code as an int, 0 = accepted) and
    ``session_present``; a TLS failure raises from the constructor."""

    def __init__(
        self,
        broker: Broker,
        username: str | None,
        password: str | None,
        *,
        client_id: str = "",
        clean_start: bool = True,
        session_expiry_s: int | None = None,
        tls: bool = True,
        timeout_s: float = 5,
    ) -> None:
        self.timeout_s = timeout_s
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set_context(broker.tls_context())
        port = broker.port if tls else broker.plain_port
        assert port, "the broker has no plain listener (Broker(plain=True))"
        self._cond = threading.Condition()
        self._connack: list[tuple[ReasonCode, bool]] = []
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, m: self.inbox.put((m.topic, bytes(m.payload)))
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if session_expiry_s is not None:
            props.SessionExpiryInterval = session_expiry_s
        self.client.connect(broker.host, port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        code, self.session_present = self._wait(lambda: self._connack[0] if self._connack else None, "CONNACK")
        self.connack = code.value

    def _on_connect(self, _c: Any, _u: Any, flags: Any, code: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._connack.append((code, bool(flags.session_present)))
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, code: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._acks[mid] = code
            self._cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        with self._cond:
            self._subacks[mid] = codes
            self._cond.notify_all()

    def _wait(self, get: Callable[[], Any], what: str) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: get() is not None, self.timeout_s):
                raise TimeoutError(f"no {what} within {self.timeout_s} s")
            return get()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Publish and wait for the broker's PUBACK: its reason code (0 success, 0x10 no matching subscribers,
        0x87 not authorized)."""
        info = self.client.publish(topic, payload, qos)
        code: ReasonCode = self._wait(lambda: self._acks.get(info.mid), f"PUBACK for {topic}")
        return int(code.value)

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe and wait for the SUBACK: its reason code (the granted QoS, or >= 0x80 refused)."""
        _, mid = self.client.subscribe(topic, qos)
        assert mid is not None
        codes: list[ReasonCode] = self._wait(lambda: self._subacks.get(mid), f"SUBACK for {topic}")
        return int(codes[0].value)

    def expect(self, n: int, timeout_s: float | None = None) -> list[tuple[str, bytes]]:
        """The next ``n`` messages received (TimeoutError if fewer arrive in time)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        out: list[tuple[str, bytes]] = []
        while len(out) < n:
            try:
                out.append(self.inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise TimeoutError(f"{len(out)} of {n} messages arrived: {out}") from None
        return out

    def quiet(self, wait_s: float = 0.3) -> list[tuple[str, bytes]]:
        """Whatever arrives within ``wait_s`` (an empty list proves nothing came)."""
        time.sleep(wait_s)
        out: list[tuple[str, bytes]] = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out

    def close(self) -> None:
        """A normal DISCONNECT (the session lives on for ``session_expiry_s``)."""
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttTestClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
