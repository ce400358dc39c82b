"""``FleetPublisher``: the hub's ledger to the chain's MQTT broker (``README.md``: the wire contract, *Delivery*).

One task keeps a connection (MQTT 5 over TLS, client id ``smartshelf-hub-<hub>``, ``clean_start`` false and a
session expiry, user name and password, a retained ``offline`` status as the last will and a retained ``online``
at connect) and reconnects with back-off (1 s doubling to 60 s, jittered) whatever went wrong. While connected:

* a ``snapshot`` at connect and every ``snapshot_interval_s``;
* the alert outbox, oldest change first, and the movements after the cursor, in batches of ``batch_size``, with up
  to ``max_in_flight`` QoS 1 publishes awaiting their PUBACK (fewer if the broker's Receive Maximum says so);
* the cursor advances only past movement batches the broker acknowledged, in order, and an alert's outbox row is
  deleted only when the message with its latest rev was acknowledged: both written by the ledger's writer
  (``outbox.advance``), coalesced (one write however many PUBACKs came meanwhile);
* a PUBACK with a failure reason code (MQTT 5: e.g. 0x87 not authorized, an ACL that does not let this user write
  the topic) acknowledges nothing: it is logged, the kind's batches are published again from the cursor after a
  back-off; the connection stays up; so does 0x10 (no matching subscribers: a success in MQTT, but no one took
  it, e.g. central's shared subscription lost with a broker restart) for movements and alerts;
* a ``rewind`` from central (``<prefix>/<hub>/rewind``) lowers the cursor and/or queues every alert again.

After any reconnect or restart it publishes again from the stored cursor: what was in flight is sent twice, which
the consumer's unique keys make harmless; nothing depends on the broker's queue.

The hub never waits for any of it: reads and encoding run in the reader's thread (``outbox.FleetReader``), the
connect (DNS, TCP, TLS) in a worker thread (aiomqtt), the writes queue behind ingest's batches. New movements and
alert changes wake the publisher through the ledger's commit listener, and it looks every second anyway (writes of
other processes: ``smartshelf ledger ...``).

What it relies on of aiomqtt 2.5 and paho: ``client.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.config.fleet import FleetConfig
from hub.fleet import messages, outbox
from hub.fleet.client import FAILURE, NO_SUBSCRIBERS, PubackClient, reason
from hub.fleet.outbox import Backlog, Batch, FleetReader
from hub.ledger.changes import Changes
from hub.ledger.models import LedgerError
from hub.ledger.service import LedgerService

log = logging.getLogger(__name__)

REFUSED_BACKOFF_S = (2.0, 60.0)
PUBACK_TIMEOUT_S = 60.0  # a connection that stops acknowledging (keepalive still answered) is dropped and made again


def _ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class _Flight:
    batch: Batch
    ack: asyncio.Future[int]
    sent: float  # loop time


@dataclass(slots=True)
class _Hold:
    """A kind the broker refused: not published again before ``until`` (loop time)."""

    until: float = 0.0
    delay_s: float = REFUSED_BACKOFF_S[0]

    def refused(self, now: float) -> float:
        self.until = now + self.delay_s
        delay, self.delay_s = self.delay_s, min(self.delay_s * 2, REFUSED_BACKOFF_S[1])
        return delay


@dataclass(slots=True)
class FleetCounters:
    connects: int = 0
    movements: int = 0  # acknowledged (a movement sent again after a reconnect counts again)
    movement_batches: int = 0
    alert_states: int = 0
    snapshots: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # kind -> PUBACKs with a failure reason code
    untaken: dict[str, int] = field(default_factory=dict)  # kind -> PUBACKs 0x10: no subscriber took it (kept)
    rewinds: int = 0
    cursor_writes: int = 0


class FleetPublisher:
    def __init__(
        self,
        cfg: FleetConfig,
        ledger: LedgerService,
        database: Path | str,
        *,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        poll_s: float = 1.0,
        status_refresh_s: float = 5.0,
        drain_s: float = 2.0,
    ) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.database = Path(database)
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.poll_s = poll_s
        self.status_refresh_s = status_refresh_s
        self.drain_s = drain_s
        self.counters = FleetCounters()
        self.connected = False
        self.acked = 0  # every movement up to this id was acknowledged (the cursor, ahead of its write)
        self.incarnation = 0  # the ledger's (hub.ledger.identity), read at start
        self.committed = 0  # the cursor as last written
        self.last_puback_ms: int | None = None
        self.last_error: str | None = None
        self.backlog: Backlog | None = None
        self._reader: FleetReader | None = None
        self._password = ""
        self._tls: ssl.SSLContext | None = None
        self._session_ms = 0  # when this connection's client was made: its will's and its online's time
        self._revs_done: list[int] = []
        self._rewinds: deque[messages.Rewind] = deque()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._commit = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unlisten: Callable[[], None] | None = None
        self._holds = {"movements": _Hold(), "alerts": _Hold()}

    def topic(self, kind: messages.Kind) -> str:
        return messages.topic(self.cfg.topic_prefix, self.cfg.hub_id, kind)

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> FleetPublisher:
        """Read the password (``ExposedSecret`` / ``ConfigError`` when its file is open to others or unreadable),
        load the CA, read the cursor, and start publishing in the background. Never waits for the broker."""
        cfg = self.cfg
        self._password = await asyncio.to_thread(cfg.read_password)
        if cfg.tls:
            self._tls = await asyncio.to_thread(ssl.create_default_context, cafile=cfg.cafile)
        self._reader = FleetReader(self.database, cfg.hub_id)
        state = await self._reader.state()
        self.incarnation = state.incarnation
        self.acked = self.committed = await outbox.resume(self.ledger, state)
        self._unlisten = self.ledger.changes.listen(self._on_commit)
        for name, job in (("fleet-publisher", self._run()), ("fleet-cursor", self._commits()),
                          ("fleet-backlog", self._watch_backlog())):  # fmt: skip
            self._tasks.append(asyncio.create_task(job, name=name))
        log.info(
            "fleet: publishing as %s to %s:%d (%s), incarnation %d, movements acknowledged up to %d",
            cfg.hub_id, cfg.host, cfg.port, "TLS" if cfg.tls else "plain", self.incarnation, self.acked,
        )  # fmt: skip
        return self

    async def stop(self) -> None:
        """Stop publishing: wait up to ``drain_s`` for what is in flight, say ``offline``, disconnect, write the
        cursor. Call before the ledger closes."""
        if not self._tasks:
            return
        self._stop.set()
        self._wake.set()
        if self._unlisten is not None:
            self._unlisten()
        run, others = self._tasks[0], self._tasks[1:]
        if self.connected:  # let it drain, say offline and disconnect; otherwise there is nothing to wait for
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(run), self.drain_s + 3.0)
        for task in (run, *others):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._flush()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    def _on_commit(self, changes: Changes) -> None:
        if changes.locations or changes.alerts:
            self._wake.set()

    # ---------------------------------------------------------------------------------------- connection

    def _client(self) -> PubackClient:
        cfg = self.cfg
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = cfg.session_expiry_s
        # the will and this session's ``online`` carry one time: central keeps the newer status and lets
        # ``offline`` win a tie, so a will stamped before ``online`` would never show the hub offline
        self._session_ms = _ms()
        offline = messages.encode_status(cfg.hub_id, "offline", self._session_ms)
        will = aiomqtt.Will(self.topic("status"), offline, 1, True)
        return PubackClient(
            cfg.host,
            cfg.port,
            username=cfg.user,
            password=self._password,
            identifier=cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=False,
            properties=props,
            tls_context=self._tls,
            keepalive=cfg.keepalive_s,
            max_inflight_messages=cfg.max_in_flight,
            timeout=10,
            logger=logging.getLogger("hub.fleet.mqtt"),
            # paho leaves Nagle on: a publish's last TCP segment would wait for the ACK the broker delays (40 ms)
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.reconnect_min_s
        failures = 0
        while not self._stop.is_set():
            began = loop.time()
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self._failed(f"broker {self.cfg.host}:{self.cfg.port}: {exc}", failures)
            except (OSError, ssl.SSLError) as exc:
                self._failed(f"broker {self.cfg.host}:{self.cfg.port}: {exc}", failures)
            except Exception as exc:  # a bug must not end publishing for good: logged, retried
                log.exception("fleet: unexpected error")
                self.last_error = repr(exc)
            finally:
                if self.connected:
                    log.info("fleet: disconnected from %s:%d", self.cfg.host, self.cfg.port)
                self.connected = False
            if self._stop.is_set():
                return
            if loop.time() - began > 30:
                delay, failures = self.reconnect_min_s, 0  # it was up a while: start the back-off again
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay * random.uniform(0.75, 1.0))
            delay = min(delay * 2, self.reconnect_max_s)

    def _failed(self, why: str, failures: int) -> None:
        self.last_error = why
        # every failure while it is new, then one line in ten: a broker down for hours logs a few lines an hour
        if failures < 3 or failures % 10 == 0:
            log.warning("fleet: %s (publishing waits; retrying with back-off up to %g s)", why, self.reconnect_max_s)

    async def _session(self) -> None:
        client = self._client()
        async with client:
            self.connected = True
            self.counters.connects += 1
            self.last_error = None
            window = max(1, min(self.cfg.max_in_flight, client.receive_maximum))
            log.info(
                "fleet: connected to %s:%d as %s (session %s, %d in flight at most)", self.cfg.host, self.cfg.port,
                self.cfg.user, "resumed" if client.session_present else "new", window,
            )  # fmt: skip
            await client.subscribe(self.topic("rewind"), qos=1)
            online = messages.encode_status(self.cfg.hub_id, "online", self._session_ms)
            client.send(self.topic("status"), online, retain=True)
            watch = asyncio.create_task(self._watch(client), name="fleet-rewinds")
            pump = asyncio.create_task(self._pump(client, window), name="fleet-pump")
            try:
                done, _ = await asyncio.wait((watch, pump), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (watch, pump):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await task
            for task in done:
                if not task.cancelled():
                    task.result()  # raises what ended the session
            if self._stop.is_set():  # a clean stop: say so (a DISCONNECT suppresses the will)
                bye = client.send(
                    self.topic("status"), messages.encode_status(self.cfg.hub_id, "offline", _ms()), retain=True
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(bye, 1.0)

    async def _watch(self, client: PubackClient) -> None:
        """Rewinds from central; raises ``MqttError`` when the connection is lost (aiomqtt's iterator does)."""
        async for message in client.messages:
            body = message.payload
            try:
                if not isinstance(body, bytes | bytearray):
                    raise messages.FleetMessageError("rewind: the payload is not bytes")
                got = messages.decode(self.cfg.hub_id, "rewind", bytes(body))
            except messages.FleetMessageError as exc:
                log.warning("fleet: ignored a message on %s: %s", message.topic, exc)
                continue
            assert isinstance(got, messages.Rewind)
            self._rewinds.append(got)
            self._wake.set()
        raise aiomqtt.MqttError("the message stream ended")

    # ----------------------------------------------------------------------------------------- publishing

    async def _pump(self, client: PubackClient, window: int) -> None:
        loop = asyncio.get_running_loop()
        reader = self._reader
        assert reader is not None
        flights: dict[str, deque[_Flight]] = {"movements": deque(), "alerts": deque(), "snapshot": deque()}
        position = self.acked  # the highest movement id sent in this session
        alert_rev = 0  # the highest outbox rev sent in this session
        next_snapshot = loop.time()
        while True:
            self._wake.clear()
            if self._rewinds:
                for queue in flights.values():
                    queue.clear()  # sent before the rewind: their PUBACKs must not move the cursor past it
                position, alert_rev = await self._apply_rewinds(), 0
            for kind, queue in flights.items():
                while queue and queue[0].ack.done():
                    if not self._settle(kind, queue.popleft()):
                        queue.clear()
                        if kind == "movements":
                            position = self.acked
                        elif kind == "alerts":
                            alert_rev = 0
                if queue and loop.time() - queue[0].sent > PUBACK_TIMEOUT_S:
                    raise aiomqtt.MqttError(f"no PUBACK for {kind} in {PUBACK_TIMEOUT_S:.0f} s")
            if self._stop.is_set():
                await self._drain(flights)
                return
            now = loop.time()
            while sum(len(q) for q in flights.values()) < window:
                batch: Batch | None = None
                if now >= next_snapshot:
                    next_snapshot = now + self.cfg.snapshot_interval_s
                    batch = await reader.snapshot(_ms())
                if batch is None and now >= self._holds["alerts"].until:
                    batch = await reader.alerts(alert_rev, self.cfg.batch_size, _ms())
                    alert_rev = batch.last if batch is not None else alert_rev
                if batch is None and now >= self._holds["movements"].until:
                    batch = await reader.movements(position, self.cfg.batch_size, _ms())
                    position = batch.last if batch is not None else position
                if batch is None:
                    break
                ack = client.send(self.topic(batch.kind), batch.payload)
                ack.add_done_callback(lambda _: self._wake.set())
                flights[batch.kind].append(_Flight(batch, ack, now))
            wait_s = max(0.0, min(self.poll_s, next_snapshot - now))
            for hold in self._holds.values():
                if hold.until > now:
                    wait_s = min(wait_s, hold.until - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait_s, 0.005))

    def _settle(self, kind: str, flight: _Flight) -> bool:
        """A PUBACK at the head of its kind: what it acknowledges. False when the broker refused it."""
        code = flight.ack.result()
        batch = flight.batch
        if code == NO_SUBSCRIBERS and kind in self._holds:
            # A success in MQTT, but nobody took it: central is away without a session, or the broker lost central's
            # shared subscription (Mosquitto does not persist those across its restart). Kept, published again.
            self.counters.untaken[kind] = self.counters.untaken.get(kind, 0) + 1
            self.last_error = f"no subscriber took {kind} on {self.topic(batch.kind)} (central away?): kept"
            delay = self._holds[kind].refused(asyncio.get_running_loop().time())
            level = logging.INFO if self.counters.untaken[kind] > 1 else logging.WARNING
            log.log(level, "fleet: %s, published again in %.0f s", self.last_error, delay)
            return False
        if code >= FAILURE:
            self.counters.refused[kind] = self.counters.refused.get(kind, 0) + 1
            why = reason(code)
            self.last_error = f"the broker refused {kind} on {self.topic(batch.kind)}: {why}"
            hold = self._holds.get(kind)
            again = f"; published again in {hold.refused(asyncio.get_running_loop().time()):.0f} s" if hold else ""
            log.warning("fleet: %s (0x%02X)%s", self.last_error, code, again)
            return False
        self.last_puback_ms = _ms()
        if kind in self._holds:
            self._holds[kind] = _Hold()
        if kind == "movements":
            if batch.first <= self.acked + 1 < batch.last + 1:
                self.acked = batch.last
                self.counters.movements += batch.count
                self.counters.movement_batches += 1
                self._commit.set()
        elif kind == "alerts":
            self._revs_done.extend(batch.revs)
            self.counters.alert_states += batch.count
            self._commit.set()
        else:
            self.counters.snapshots += 1
        return True

    async def _drain(self, flights: dict[str, deque[_Flight]]) -> None:
        """At stop: take the PUBACKs that come within ``drain_s``."""
        pending = [f.ack for q in flights.values() for f in q]
        if pending:
            await asyncio.wait(pending, timeout=self.drain_s)
        for kind, queue in flights.items():
            while queue and queue[0].ack.done() and self._settle(kind, queue.popleft()):
                pass

    async def _apply_rewinds(self) -> int:
        """Central's rewinds, through the writer; the position to publish from."""
        after: int | None = None
        alerts = False
        while self._rewinds:
            r = self._rewinds.popleft()
            if r.movements_after is not None:
                after = r.movements_after if after is None else min(after, r.movements_after)
            alerts = alerts or r.alerts
        if after is not None:
            self.acked = min(self.acked, after)  # before the write: a cursor write queued later never undoes it
        self.counters.rewinds += 1
        cursor = await self.ledger.transact(lambda tx: outbox.rewind(tx, after, alerts))
        self.acked = self.committed = cursor
        log.info("fleet: central asked to publish again: movements after %s%s; from %d", after,
                 ", every alert" if alerts else "", cursor)  # fmt: skip
        return cursor

    # ------------------------------------------------------------------------------------ cursor and status

    async def _commits(self) -> None:
        while True:
            await self._commit.wait()
            self._commit.clear()
            await self._flush()

    async def _flush(self) -> None:
        acked, revs = self.acked, self._revs_done
        if acked <= self.committed and not revs:
            return
        self._revs_done = []
        try:
            await self.ledger.transact(lambda tx: outbox.advance(tx, acked, revs))
        except LedgerError as exc:  # the ledger is closing, or failing: the PUBACKs are taken again after a restart
            self._revs_done = revs + self._revs_done
            log.warning("fleet: could not write the publish cursor: %s", exc)
            return
        self.committed = max(self.committed, acked)
        self.counters.cursor_writes += 1

    async def _watch_backlog(self) -> None:
        reader = self._reader
        assert reader is not None
        while True:
            try:
                self.backlog = await reader.backlog(self.acked)
            except Exception as exc:
                log.debug("fleet: backlog read failed: %r", exc)
            await asyncio.sleep(self.status_refresh_s)

    def status(self) -> dict[str, Any]:
        """JSON-ready: ``smartshelf hub status`` and the nodes page."""
        b = self.backlog
        now = _ms()
        last = max(b.last_movement_id, self.acked) if b is not None else None
        oldest = b.oldest_unsent_ms if b is not None and b.last_movement_id > self.acked else None
        return {
            "hub_id": self.cfg.hub_id,
            "incarnation": self.incarnation,
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "connected": self.connected,
            "movements_acked": self.acked,
            "last_movement_id": last,
            "lag_movements": max(0, last - self.acked) if last is not None else None,
            "oldest_unpublished_age_s": round(max(0, now - oldest) / 1000, 1) if oldest is not None else None,
            "alerts_waiting": b.alerts_waiting if b is not None else None,
            "last_puback_ms": self.last_puback_ms,
            "last_puback_age_s": round((now - self.last_puback_ms) / 1000, 1) if self.last_puback_ms else None,
            "connects": self.counters.connects,
            "published": {"movements": self.counters.movements, "batches": self.counters.movement_batches,
                          "alert_states": self.counters.alert_states, "snapshots": self.counters.snapshots},
            "refused": dict(self.counters.refused),
            "untaken": dict(self.counters.untaken),
            "rewinds": self.counters.rewinds,
            "last_error": self.last_error,
        }  # fmt: skip

    def line(self) -> str:
        """The status line's part: ``fleet up, lag 0, last PUBACK 0.4s ago``."""
        s = self.status()
        parts = [f"fleet {'up' if s['connected'] else 'down'}"]
        if s["lag_movements"] is not None:
            parts.append(f"lag {s['lag_movements']} movements")
        if s["oldest_unpublished_age_s"] is not None:
            parts.append(f"oldest {s['oldest_unpublished_age_s']:.0f}s")
        if s["alerts_waiting"]:
            parts.append(f"{s['alerts_waiting']} alert(s) waiting")
        parts.append(
            f"last PUBACK {s['last_puback_age_s']:.1f}s ago" if s["last_puback_age_s"] is not None else "no PUBACK yet"
        )
        if not s["connected"] and s["last_error"]:
            parts.append(s["last_error"])
        return ", ".join(parts)
