"""``HomeAssistantBridge``: the hub's lanes, nodes and alerts as Home Assistant entities (MQTT discovery).

Optional (``[homeassistant]`` in ``hub.toml``) and additive: its own MQTT connection (aiomqtt) to the store's
broker, usually Home Assistant's own (the Mosquitto add-on), not the chain's central broker (``[fleet]``). What it
publishes is built by ``hub/homeassistant/payloads.py``; every message is retained, QoS 1.

**What the broker holds is a function of the ledger.** The bridge keeps the publications the hub wants on the
broker (topic -> payload: every discovery config and state) and what it has published on this connection, and
sends only the difference: a changed payload, and an empty retained payload for a topic no longer wanted (a lane
gone: its configs are emptied, so Home Assistant removes its entities, and its states cleared).

* **At connect** (and every reconnect): subscribe to Home Assistant's birth topic; *sweep*: subscribe to this hub's
  discovery configs (``<prefix>/+/<node_id>/+/config``) and ``<base_topic>/#``, collect what the broker kept
  retained until a marker published after the subscription comes back (or 3 s pass), unsubscribe; publish
  ``online`` (retained; ``offline`` retained is the connection's last will); read every lane, node and alert and
  publish everything, then empty every swept topic nobody wants any more (a lane removed while the hub was down or
  disconnected).
* **On every commit** that touches a lane (``hub/ledger/changes.py``: sensor movements, lane and SKU edits, tags,
  alerts by their cause keys) the listener, on the writer's loop, only adds the keys to pending sets and wakes the
  bridge: O(size of the change), nothing read, nothing awaited. The bridge re-reads only the lanes named (the live
  feed's rule, ``hub/web/live/lane_feed.py``) in one read transaction on a read-only connection in a worker thread,
  builds their payloads there too, and publishes what differs: at most once per ``state_interval_s`` (1 s), so a
  burst of picks on a lane is one state message.
* **Nodes**: every 5 s from the hub's live status (online = the link is up); a node's last-seen time is republished
  when it went on- or offline or moved by 60 s or more.
* **Home Assistant restarts** (its birth message ``online`` on ``birth_topic``, not a retained one): after a random
  delay of up to 2 s (Home Assistant's advice) everything is published again.
* **The broker away**: reconnect with backoff (1 s doubling to 60 s, with jitter); the hub counts, books and serves
  its page meanwhile; one warning per outage, not per attempt.

``stop()`` publishes ``offline`` (a clean disconnect sends no last will) and disconnects; the retained configs stay,
so Home Assistant keeps the entities, unavailable, until the hub comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import ssl
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiomqtt

from hub.config.checks import ConfigError
from hub.config.homeassistant import HomeAssistantConfig
from hub.homeassistant.model import Model, Pending, delta, node_views
from hub.homeassistant.payloads import OFFLINE, ONLINE, Naming
from hub.ledger.changes import Changes
from hub.ledger.origin import is_loopback
from hub.private_files import check_private
from hub.web.bridge import ChangeSource

log = logging.getLogger(__name__)

NODE_POLL_S = 5.0
SWEEP_TIMEOUT_S = 3.0
BIRTH_JITTER_S = 2.0
WINDOW = 64  # publishes in flight at once


def software_version() -> str:
    try:
        return version("smartshelf")
    except PackageNotFoundError:  # a checkout without the package installed
        return "0+unknown"


class HomeAssistantBridge:
    def __init__(
        self,
        config: HomeAssistantConfig,
        database: Path,
        changes: ChangeSource,
        status: Callable[[], Mapping[str, Any]],
        *,
        sw_version: str | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        node_poll_s: float = NODE_POLL_S,
    ) -> None:
        self.config = config
        self.naming = Naming.of(config, sw_version or software_version())
        self.model = Model(self.naming, database)
        self._changes = changes
        self._status = status
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.node_poll_s = node_poll_s
        self._pending = Pending()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._republish = False
        self._published: dict[str, bytes] = {}
        self._unlisten: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._password: str | None = None
        self._tls: ssl.SSLContext | None = None
        self.connected = False
        self.connects = 0
        self.messages = 0  # published (acknowledged) since start
        self.last_error: str | None = None

    # ------------------------------------------------------------------------------------------------ public

    def start(self) -> None:
        """Read the password file (refused when others can read it) and the CA file, listen to the ledger's
        commits and start connecting (in the background: a broker that is away never holds the hub up)."""
        cfg = self.config
        if cfg.password_file is not None:
            check_private(cfg.password_file, "the Home Assistant broker's password")
            try:
                self._password = cfg.password_file.read_text().strip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{cfg.where}.password_file: cannot read {cfg.password_file}: {exc}") from None
            if not self._password:
                raise ConfigError(f"{cfg.where}.password_file: {cfg.password_file} is empty")
        if cfg.tls:
            try:
                self._tls = ssl.create_default_context(cafile=str(cfg.cafile) if cfg.cafile is not None else None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"{cfg.where}.cafile: not a usable CA file: {exc}") from None
        elif not is_loopback(cfg.host):
            # allowed (Home Assistant's own broker add-on listens in plain MQTT on the LAN), but said once at start
            log.warning(
                "Home Assistant: plain MQTT to %s: the broker password%s and the shelves' counts cross the network in"
                " clear text; set %s.tls = true when the broker has TLS",
                cfg.host, "" if cfg.password_file is None else " (from password_file)", cfg.where,
            )  # fmt: skip
        self._unlisten = self._changes.listen(self._on_commit)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="homeassistant")

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await asyncio.to_thread(self.model.close)

    def status(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "broker": f"{cfg.host}:{cfg.port}",
            "connected": self.connected,
            "connects": self.connects,
            "messages": self.messages,
            "entities_topics": len(self.model.desired),
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------------------------ the writer's side

    def _on_commit(self, changes: Changes) -> None:
        """The ledger's commit listener, on the writer's loop: note the keys, wake the bridge, nothing else."""
        self._pending.add(changes)
        self._wake.set()

    # ------------------------------------------------------------------------------------------ connection

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=self._password,
            identifier=f"smartshelf-ha-{cfg.node_id}",
            will=aiomqtt.Will(self.naming.availability_topic, OFFLINE, qos=1, retain=True),
            clean_session=True,
            keepalive=30,
            timeout=10,
            tls_context=self._tls,
            max_inflight_messages=WINDOW,
            logger=log.getChild("mqtt"),  # paho's own lines, under this module's name
        )

    async def _run(self) -> None:
        backoff = self.reconnect_min_s
        warned = False
        while not self._stopping.is_set():
            try:
                async with self._client() as client:
                    self.connected, self.connects, backoff = True, self.connects + 1, self.reconnect_min_s
                    log.info("Home Assistant: connected to %s:%d", self.config.host, self.config.port)
                    warned = False
                    await self._session(client)
                    return  # stopping
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                if not warned:
                    log.warning("Home Assistant: broker %s:%d: %s; retrying in the background",
                                self.config.host, self.config.port, exc)  # fmt: skip
                    warned = True
                else:
                    log.debug("Home Assistant: broker still away: %s", exc)
            except sqlite3.Error as exc:  # the ledger unreadable for a moment (a restore): start again
                self.last_error = f"reading the ledger: {exc}"
                log.warning("Home Assistant: reading the ledger failed: %s", exc)
            except Exception as exc:  # a bug must not end the bridge for good, nor touch the hub: log, start again
                self.last_error = repr(exc)
                log.exception("Home Assistant: unexpected error; connecting again")
            finally:
                self.connected = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff * random.uniform(0.8, 1.2))
            backoff = min(self.reconnect_max_s, backoff * 2)

    async def _session(self, client: aiomqtt.Client) -> None:
        client.pending_calls_threshold = WINDOW + 16  # aiomqtt warns beyond this many calls in flight
        n = self.naming
        await client.subscribe(self.config.birth_topic, qos=1)
        swept = await self._sweep(client)
        self._published = {}
        self._republish = False
        await client.publish(n.availability_topic, ONLINE, qos=1, retain=True)
        listener = asyncio.get_running_loop().create_task(self._listen(client), name="homeassistant-birth")
        try:
            await self._publish_loop(client, swept, listener)
            if self._stopping.is_set():  # a clean disconnect sends no last will: say it
                await client.publish(n.availability_topic, OFFLINE, qos=1, retain=True, timeout=2)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await listener

    async def _sweep(self, client: aiomqtt.Client) -> set[str]:
        """The topics under this hub's config filter and base topic the broker keeps retained (non-empty)."""
        n = self.naming
        filters = [n.config_filter, f"{n.base_topic}/#"]
        marker = f"{n.base_topic}/sweep/{uuid.uuid4().hex}"
        await client.subscribe([(f, 1) for f in filters])
        await client.publish(marker, b"1", qos=1)
        found: set[str] = set()
        try:
            async with asyncio.timeout(SWEEP_TIMEOUT_S):
                async for message in client.messages:
                    topic = message.topic.value
                    if topic == marker:
                        break
                    if message.retain and message.payload and topic != n.availability_topic:
                        found.add(topic)
        except TimeoutError:
            log.debug("Home Assistant: sweep marker not back in %.0f s: %d retained topics seen", SWEEP_TIMEOUT_S,
                      len(found))  # fmt: skip
        await client.unsubscribe(filters)
        return found

    async def _listen(self, client: aiomqtt.Client) -> None:
        """Home Assistant's birth message: publish everything again (after a random delay, as it advises)."""
        async for message in client.messages:
            if message.topic.value != self.config.birth_topic or message.retain:
                continue  # the sweep's stragglers; a retained birth is an old one, not a restart
            if message.payload in (b"online", "online"):
                await asyncio.sleep(random.uniform(0, BIRTH_JITTER_S))
                log.info("Home Assistant came online: publishing the discovery configs again")
                self._republish = True
                self._wake.set()

    async def _publish_loop(self, client: aiomqtt.Client, swept: set[str], listener: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.state_interval_s
        full = True
        last_flush = -float("inf")
        while not self._stopping.is_set():
            if not full:  # wait for a commit, Home Assistant's birth or the next look at the nodes
                wake = loop.create_task(self._wake.wait())
                done, _ = await asyncio.wait({wake, listener}, timeout=self.node_poll_s, return_when=FIRST_COMPLETED)
                wake.cancel()
                if listener in done:
                    listener.result()  # raises what ended it (a lost connection)
                    raise aiomqtt.MqttError("the broker closed the connection")
                wait_s = last_flush + interval - loop.time()
                if wait_s > 0 and not self._stopping.is_set():  # one publication per interval: commits coalesce
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), wait_s)
                if self._stopping.is_set():
                    return
            self._wake.clear()
            work, self._pending = (None if full else self._pending), Pending()
            nodes = node_views(self._status())
            await asyncio.to_thread(self.model.update, work, nodes)
            if self._republish:
                self._republish = False
                self._published = {}
            await self._send(client, delta(self.model.desired, self._published, swept))
            swept = set()
            full = False
            last_flush = loop.time()

    async def _send(self, client: aiomqtt.Client, messages: list[tuple[str, bytes]]) -> None:
        """Publish in order of the list, ``WINDOW`` at a time in flight; ``_published`` follows each PUBACK."""
        window = asyncio.Semaphore(WINDOW)

        async def one(topic: str, payload: bytes) -> None:
            async with window:
                await client.publish(topic, payload, qos=1, retain=True)
                self._published[topic] = payload
                self.messages += 1

        for start in range(0, len(messages), 1024):  # bounded task batches; configs first, in order of the list
            await asyncio.gather(*(one(t, p) for t, p in messages[start : start + 1024]))
