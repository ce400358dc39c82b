"""``BleCentral``: the hub's BLE side. Scans for beacons, and shares a few connection slots among many nodes.

Connections are the scarce resource (a Pi's adapter holds 5..7 reliably; ``[ble] slots``, default 5), adverts the
cheap one. So:

* **Scan always.** Every advertisement with a beacon goes to the ``BeaconBook`` (verified, counted); an accepted one
  also tells the manager where the node is (its ``BLEDevice``) and whether events wait on it.
* **Connect only for a reason, and only to a node that is there.** A node whose beacon was heard within
  ``REPEAT_S`` wants a slot when its beacon says events wait (a beacon newer than the one heard when its last
  connection drained it), when its ``NodeSession`` has something to send (an ack, a command: ``wants(node_id)``),
  or when it has not been visited for ``visit_s`` (health and lane states come over a connection). Waiting nodes
  get free slots in the order they started waiting; connections already closing count as free.
* **Hold a slot only while it carries something.** A connection with nothing either way for ``idle_s`` (while
  more nodes wait than slots are free: ``QUEUED_IDLE_S``, counted from the poke) is closed; a connection that
  carried frames is then drained (its beacon's "waiting" as it was then is history), one that carried nothing
  is wanted again at once. When more nodes wait than slots are free, the
  connections held longest beyond ``hold_s`` are closed to make room, and those nodes wait again at the back of the
  queue (their beacons still say events wait), so a node with events waiting never starves and no node holds a
  slot while idle.
* **Retries never block the loop.** Each connection is a task (``bleak_retry_connector.establish_connection``, two
  attempts); a failure (any exception: the unexpected ones are logged with their traceback) backs the node off
  exponentially (0.5 s doubling to 30 s), and the scheduler runs on. A failed downlink write ends the connection.

A connection: connect (the backend exchanges the MTU), find the smart-shelf service's characteristics, subscribe to
uplink notifications, then write the one-byte *poke* (protocol section 8.1): the node says hello on this
connection, the hub's ack starts its session and the node sends what waits. Frames then flow through
``BleNodeLink`` (``node_link.py``) into ingest like any link's.

The adapter (``[ble] adapter``) is bleak's default backend (BlueZ on a Pi) or Bumble over an HCI transport
(``backend.py``); a missing adapter is retried with back-off like an unplugged serial device, never fatal, and an
open one is reopened when its transport goes away or it reports no advertisement at all for ``SCAN_STALL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from hub.config import BleConfig, NodeConfig
from hub.transport import FrameSink
from hub.transport.ble.backend import BleBackend, open_backend
from hub.transport.ble.beacons import REPEAT_S, BeaconBook
from hub.transport.ble.node_link import BleNodeLink
from shared_protocol.beacon import COMPANY_ID
from shared_protocol.ble_gatt import DOWNLINK_UUID, POKE, SERVICE_UUID, UPLINK_UUID

log = logging.getLogger(__name__)

TICK_S = 0.1
CONNECT_TIMEOUT_S = 10.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
ADAPTER_RETRY_MAX_S = 10.0
ADAPTER_OP_S = 10.0  # opening, starting or stopping the adapter's scan: an adapter silent this long is given up
QUEUED_IDLE_S = 1.0  # while nodes wait for a slot, a connection quiet this long is done (instead of idle_s)
SCAN_STALL_S = 120.0  # no advertisement at all this long while nodes are configured: the scan is dead, reopen


@dataclass(slots=True)
class _Node:
    config: NodeConfig
    link: BleNodeLink
    device: BLEDevice | None = None
    task: asyncio.Task[None] | None = None
    connected_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: str = ""
    want_since: float | None = None
    want_reason: str = ""
    backoff_until: float = 0.0
    failures: int = 0
    last_visit: float = float("-inf")
    drained_counter: int = -1
    idle_counter: int = -1  # the beacon counter when the connection was found idle (drained up to there)
    last_error: str = ""
    rotations: int = 0

    @property
    def state(self) -> str:
        if self.connected_at is not None:
            return "connected"
        if self.task is not None:
            return "connecting"
        if self.device is None:
            return "waiting for its beacon"
        if time.monotonic() < self.backoff_until:
            return "backing off"
        return "queued" if self.want_since is not None else "idle"


class BleCentral:
    """``sink``: ingest's enqueue; ``wants(node_id)``: the node's session has something to send."""

    def __init__(self, cfg: BleConfig, sink: FrameSink, wants: Callable[[int], bool]) -> None:
        self.cfg = cfg
        self.book = BeaconBook()
        self._sink = sink
        self._wants = wants
        self._nodes: dict[int, _Node] = {}
        self._backend: BleBackend | None = None
        self._scanner: BleakScanner | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._opened_at = 0.0
        self._last_advert = 0.0
        self.adapter_error = ""
        self.connects = 0
        self.connect_failures = 0
        self.slot_refusals = 0

    # ------------------------------------------------------------------------------------------- nodes

    def add_node(self, node: NodeConfig) -> BleNodeLink:
        link = BleNodeLink(node.node_id, self._sink)
        link.address = node.address
        self._nodes[node.node_id] = _Node(node, link)
        self.book.add_node(node.node_id, node.key, node.address)
        return link

    async def remove_node(self, node_id: int) -> None:
        n = self._nodes.pop(node_id, None)
        self.book.remove_node(node_id)
        if n is not None and n.task is not None:
            n.close_reason = "no longer configured"
            n.done.set()
            if n.connected_at is None:
                n.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await n.task

    def link(self, node_id: int) -> BleNodeLink:
        return self._nodes[node_id].link

    @property
    def node_ids(self) -> list[int]:
        return list(self._nodes)

    # --------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ble central")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:  # first: nothing schedules a new connection from here on
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connections("hub stopping")
        await self._close_adapter()

    async def _close_adapter(self) -> None:
        """Stop scanning and close the adapter; an adapter that does not answer is given up after ADAPTER_OP_S."""
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(scanner.stop(), ADAPTER_OP_S)
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(backend.close(), ADAPTER_OP_S)

    async def _open_adapter(self) -> None:
        backend = await asyncio.wait_for(open_backend(self.cfg.adapter, mtu=self.cfg.mtu), ADAPTER_OP_S)
        try:
            scanner = BleakScanner(detection_callback=self._on_advert, backend=backend.scanner)
            await asyncio.wait_for(scanner.start(), ADAPTER_OP_S)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(backend.close(), ADAPTER_OP_S)
            raise
        self._backend, self._scanner = backend, scanner
        self._opened_at = time.monotonic()
        self.adapter_error = ""
        log.info("BLE: adapter %s open, scanning", backend.name)

    async def _run(self) -> None:
        delay = BACKOFF_MIN_S
        while not self._closing:
            try:
                if self._backend is None:
                    try:
                        await self._open_adapter()
                        delay = BACKOFF_MIN_S
                    except (OSError, BleakError, ValueError, TimeoutError) as exc:
                        if not self.adapter_error:
                            log.warning("BLE: adapter %s not available (%s): retrying", self.cfg.adapter, exc)
                        self.adapter_error = str(exc) or type(exc).__name__
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, ADAPTER_RETRY_MAX_S)
                        continue
                lost = self._adapter_lost(time.monotonic())
                if lost:
                    log.warning("BLE: adapter %s %s: reopening", self.cfg.adapter, lost)
                    self.adapter_error = lost
                    await self._drop_connections(lost)
                    await self._close_adapter()
                    for n in self._nodes.values():  # found again by their next beacons on the new adapter
                        n.device = None
                    continue
                self._schedule(time.monotonic())
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or an adapter error nobody foresaw: logged, the adapter reopened, never fatal
                log.exception("BLE: unexpected error; reopening the adapter")
                self.adapter_error = "unexpected error"
                await self._drop_connections("unexpected error")
                await self._close_adapter()
                await asyncio.sleep(delay)
                delay = min(delay * 2, ADAPTER_RETRY_MAX_S)
                continue
            await asyncio.sleep(TICK_S)

    def _adapter_lost(self, now: float) -> str:
        """Why the open adapter must be reopened ("" when it is fine): its transport went away (Bumble: a dongle
        unplugged, an emulator restarted), or it has reported no advertisement at all for ``SCAN_STALL_S`` while
        nodes are configured and none is connected (BlueZ: bluetoothd restarted, the adapter powered down; bleak says
        nothing then)."""
        if self._backend is not None and not self._backend.is_open:
            return "lost"
        connected = any(n.connected_at is not None for n in self._nodes.values())  # a connected node is quiet
        if self._nodes and not connected and now - max(self._last_advert, self._opened_at) > SCAN_STALL_S:
            return f"silent for {SCAN_STALL_S:.0f} s (no advertisement at all)"
        return ""

    async def _drop_connections(self, reason: str) -> None:
        """End every connection (and cancel every connect still under way), and wait for their tasks."""
        tasks = []
        for n in self._nodes.values():
            if n.task is not None:
                n.close_reason = reason
                n.done.set()
                if n.connected_at is None:
                    n.task.cancel()
                tasks.append(n.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------------------------------ beacons

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self._last_advert = time.monotonic()
        payload = adv.manufacturer_data.get(COMPANY_ID)
        if payload is None:
            return
        node_id = self.book.heard(device.address, bytes(payload), adv.rssi)
        if node_id is not None:
            n = self._nodes.get(node_id)
            if n is not None:
                n.device = device

    # -------------------------------------------------------------------------------------- scheduling

    def _want(self, n: _Node, now: float) -> str:
        """Why the node needs a slot now ("" when it does not, or when its beacon has not been heard lately: a node
        that is off or out of range would only hold a slot while the connect times out)."""
        node_id = n.config.node_id
        seen = self.book.nodes.get(node_id)
        if seen is None or now - seen.heard > REPEAT_S:
            return ""
        if self._wants(node_id):
            return "downlink"
        if seen.waiting and seen.counter > n.drained_counter:
            return "events waiting"
        if now - n.last_visit >= self.cfg.visit_s:
            return "visit"
        return ""

    def _schedule(self, now: float) -> None:
        queued: list[_Node] = []
        busy = 0
        for n in self._nodes.values():
            if n.task is not None:
                busy += 1
                continue
            reason = "" if n.device is None or now < n.backoff_until else self._want(n, now)
            if not reason:
                n.want_since = None
                continue
            if n.want_since is None:
                n.want_since = now
            n.want_reason = reason
            queued.append(n)
        held: list[_Node] = []
        closing = sum(1 for n in self._nodes.values() if n.task is not None and n.done.is_set())
        free = self.cfg.slots - busy
        # More nodes wait than slots are free: a connection with nothing left to carry lets go sooner than idle_s.
        idle_s = min(self.cfg.idle_s, QUEUED_IDLE_S) if len(queued) > free + closing else self.cfg.idle_s
        for n in self._nodes.values():  # connected ones: close when idle; held long enough: may be rotated
            if n.connected_at is None or n.done.is_set():
                continue
            if not self._wants(n.config.node_id) and not n.link.writing and n.link.idle_for >= idle_s:
                n.close_reason = "idle"
                seen = self.book.nodes.get(n.config.node_id)
                n.idle_counter = seen.counter if seen is not None else n.drained_counter  # before any await
                n.done.set()
                closing += 1
            elif now - n.connected_at >= self.cfg.hold_s:
                held.append(n)
        excess = len(queued) - free - closing  # connections already closing free their slots soon
        if excess > 0 and held:  # more nodes wait than slots are (about to be) free: the longest-held make room
            held.sort(key=lambda h: h.connected_at or 0.0)
            for n in held[:excess]:
                n.close_reason = "slot rotated to a waiting node"
                n.rotations += 1
                n.done.set()
        if free <= 0 or not queued:
            return
        queued.sort(key=lambda q: q.want_since or 0.0)
        for n in queued[:free]:
            n.want_since = None
            n.done = asyncio.Event()
            n.close_reason = ""
            task = asyncio.create_task(self._connection(n), name=f"ble node {n.config.node_id}")
            n.task = task
            task.add_done_callback(functools.partial(self._ended, n))

    @staticmethod
    def _ended(n: _Node, task: asyncio.Task[None]) -> None:
        """A connection task is over: however it ended (a task cancelled before it ever ran skips its ``finally``),
        the node's slot is free again."""
        if n.task is task:
            n.task = None
            n.connected_at = None

    # ------------------------------------------------------------------------------------- connections

    async def _connection(self, n: _Node) -> None:
        node_id = n.config.node_id
        device = n.device
        assert device is not None and self._backend is not None
        kwargs: dict[str, Any] = {}
        if self._backend.client is not None:
            kwargs["backend"] = self._backend.client
        client: BleakClient | None = None
        frames_before = n.link.stats.frames_in
        done = n.done  # this connection's: a late callback of an earlier client must not end a newer connection

        def write_failed(reason: str) -> None:
            n.close_reason = reason
            done.set()

        try:
            try:
                client = await establish_connection(
                    BleakClient,
                    device,
                    f"node {node_id}",
                    disconnected_callback=lambda _c: done.set(),
                    max_attempts=2,
                    timeout=CONNECT_TIMEOUT_S,
                    **kwargs,
                )
                uplink = client.services.get_characteristic(UPLINK_UUID)
                downlink = client.services.get_characteristic(DOWNLINK_UUID)
                if uplink is None or downlink is None:
                    raise BleakError(f"{device.address} has no smart-shelf service {SERVICE_UUID}")
                # The MTU as the stack reports it for writes (BlueZ exchanges it itself; bleak's mtu_size there is
                # only known after an explicit acquire): the largest write without response, plus the ATT header.
                mtu = downlink.max_write_without_response_size + 3
                n.link.attach(client, downlink, mtu, device.address, write_failed)
                n.connected_at = time.monotonic()
                await asyncio.wait_for(client.start_notify(uplink, n.link.on_notify), CONNECT_TIMEOUT_S)
                await asyncio.wait_for(client.write_gatt_char(downlink, POKE, response=True), CONNECT_TIMEOUT_S)
                n.link.last_activity = time.monotonic()  # idle from the poke on: the node says hello now
            except (BleakError, TimeoutError, OSError, EOFError) as exc:
                self._failed(n, exc)
                return
            except Exception as exc:  # a backend error bleak does not map: logged, backed off like any failure
                log.exception("BLE: node %d: unexpected error while connecting", node_id)
                self._failed(n, exc)
                return
            n.failures = 0
            self.connects += 1
            log.info("BLE: node %d connected (%s, MTU %d)", node_id, device.address, n.link.mtu)
            await done.wait()
            log.info("BLE: node %d disconnected (%s)", node_id, n.close_reason or "dropped by the node or the air")
        finally:
            await n.link.detach()
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), 5.0)
            if n.close_reason == "idle" and n.link.stats.frames_in > frames_before:  # drained: its beacon as it
                n.drained_counter = n.idle_counter  # was then says nothing new (a connection that carried nothing
                # drained nothing: the node is wanted again at once)
            n.last_visit = time.monotonic()
            n.connected_at = None
            n.task = None

    def _failed(self, n: _Node, exc: BaseException) -> None:
        text = str(exc) or type(exc).__name__
        self.connect_failures += 1
        if "slot" in text.lower():
            self.slot_refusals += 1
        n.failures += 1
        n.backoff_until = time.monotonic() + min(BACKOFF_MIN_S * 2 ** min(n.failures - 1, 16), BACKOFF_MAX_S)
        n.last_error = text
        log.warning("BLE: node %d: connection failed (%s); next try in %.1f s", n.config.node_id, text,
                    n.backoff_until - time.monotonic())  # fmt: skip

    # ------------------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        return {
            "adapter": self.cfg.adapter,
            "adapter_up": self._backend is not None,
            "adapter_error": self.adapter_error or None,
            "slots": self.cfg.slots,
            "slots_used": sum(1 for n in self._nodes.values() if n.task is not None),
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "slot_refusals": self.slot_refusals,
            "beacons": self.book.status(),
        }

    def node_status(self, node_id: int) -> dict[str, Any] | None:
        n = self._nodes.get(node_id)
        if n is None:
            return None
        now = time.monotonic()
        seen = self.book.nodes.get(node_id)
        return {
            "state": n.state,
            "address": (seen.address if seen is not None and seen.address else n.config.address) or None,
            "rssi": seen.rssi if seen is not None else None,
            "beacon": seen.status(now) if seen is not None and seen.accepted else None,
            "connected_s": round(now - n.connected_at, 1) if n.connected_at is not None else None,
            "failures": n.failures,
            "rotations": n.rotations,
            "last_error": n.last_error or None,
            "link": n.link.status(),
        }
