"""Synthetic BLE shelf nodes: Bumble peripherals on the emulated air that speak the protocol, without MicroPython.

Each ``BleFakeNode`` is a Bumble host ``Device`` on its own controller of an ``Air`` (``air.py``) with the smart-shelf
GATT service, written from the protocol alone (shared_protocol: frames, fragments, beacons, the poke), so the hub's
BLE side can be tested (tests/test_ble_central.py) and measured (``smartshelf bench ble``) against the spec with a
real BLE host stack on both sides, many nodes at once, in one process. The firmware's own BLE link runs end to end
on emulated boards (tests/test_ble_hub.py, ``smartshelf emulate --link ble``).

For measurements each node keeps ``time.monotonic()`` stamps: when each event was picked (``picked_at``) and
acknowledged (``acked_at``), when each connection came up (``connected_at``) and when the hub poked it
(``poked_at``). Its outbox is simple: an event picked while connected is sent at once, and everything waiting is
sent again at any ack that does not advance the mark (the hub's answer to a hello is one); nothing else is resent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service

from shared_protocol import beacon as bc
from shared_protocol.auth import Key
from shared_protocol.ble_fragments import Reassembler, fragment
from shared_protocol.ble_gatt import DOWNLINK_UUID, POKE, SERVICE_UUID, UPLINK_UUID
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import DownlinkReceiver, Frame, UplinkSender
from shared_protocol.messages import (
    KIND_PICK,
    STATUS_OK,
    Ack,
    CommandResult,
    Event,
    Hello,
    LaneState,
    Message,
    RequestState,
)
from tools.emulation.radio.air import Air, static_address

LANES = 2
ADVERTISE_TIMEOUT_S = 5.0
UNIT_DG = 3500


@dataclass
class Watch:
    """What the air saw: connections open now and the most at once."""

    open: int = 0
    most: int = 0
    connects: dict[int, int] = field(default_factory=dict)

    def up(self, node_id: int) -> None:
        self.open += 1
        self.most = max(self.most, self.open)
        self.connects[node_id] = self.connects.get(node_id, 0) + 1

    def down(self) -> None:
        self.open -= 1


class BleFakeNode:
    """``stock``: units on each lane at the start (counts in beacons and lane states; picks take from it);
    ``adv_ms``: the advertising interval (the firmware's default is 250 ms; 20 finds a node sooner in tests)."""

    def __init__(
        self, node_id: int, key: bytes, device: Device, watch: Watch, stock: int = 0, adv_ms: int = 20
    ) -> None:
        self.node_id = node_id
        self.key = key
        self.device = device
        self.watch = watch
        self.address = str(device.random_address)
        self.boot = 1
        self.seq = 0
        self.event_seq = 0
        self.acked = 0
        self.outbox: list[Event] = []
        self.counts = [stock] * LANES
        self.added = [stock] * LANES
        self.removed = [0] * LANES
        self.picked_at: dict[int, float] = {}  # event_seq -> time.monotonic() of the pick
        self.acked_at: dict[int, float] = {}  # event_seq -> when the ack covering it arrived
        self.connected_at: list[float] = []
        self.poked_at: list[float] = []
        self.sender = UplinkSender(node_id, Key(key), self._next_seq)
        self.receiver = DownlinkReceiver(node_id, Key(key), self.boot)
        self.reasm = Reassembler()
        self.received: list[Frame] = []
        self.rejected = 0
        self.conn: Connection | None = None
        self.mtu = 23
        self.msg_id = 0
        self.beacons = 0
        self.adv_ms = adv_ms
        self._advertising = asyncio.Lock()  # one advertise() at a time: a pick's and a disconnection's may overlap
        self.last_adv = b""
        self._tasks: set[asyncio.Task[object]] = set()
        self._out: asyncio.Queue[tuple[Connection, bytes]] = asyncio.Queue()
        self._pump: asyncio.Future[None] | None = None
        self.uplink: Characteristic[bytes] = Characteristic(
            UPLINK_UUID, Characteristic.Properties.NOTIFY | Characteristic.Properties.READ, Characteristic.READABLE, b""
        )
        downlink: Characteristic[bytes] = Characteristic(
            DOWNLINK_UUID,
            Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_write),
        )
        device.add_service(Service(SERVICE_UUID, [self.uplink, downlink]))
        device.on(device.EVENT_CONNECTION, self._on_connection)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------------------------------------ the node

    def reboot(self, boot: int) -> None:
        """A new boot: a new downlink session (seq and events continue: the node keeps them on flash)."""
        self.boot = boot
        self.receiver = DownlinkReceiver(self.node_id, Key(self.key), boot)

    def pick(self, lane: int, units: int = 1) -> Event:
        """Units leave a lane: an event kept in the outbox until acknowledged (sent now when connected)."""
        self.event_seq += 1
        self.picked_at[self.event_seq] = time.monotonic()
        self.counts[lane] -= units
        self.removed[lane] += units
        ev = Event(self.event_seq, lane, KIND_PICK, -units, -units * UNIT_DG, 97, 100)
        self.outbox.append(ev)
        if self.conn is not None:
            self.send(ev)
        return ev

    def beacon_adv(self) -> bytes:
        entries = [bc.lane_entry(self.counts[i], False, False) if i < LANES else 0 for i in range(bc.LANES)]
        flags = bc.WAITING if self.outbox else 0
        return bc.Beacon(self.node_id, self._next_seq(), flags, 0, LANES, entries).advertisement(Key(self.key))

    async def advertise(self) -> None:
        """Advertise the current beacon (a new counter each time), as the firmware does when its state changes."""
        async with self._advertising:
            adv = self.beacon_adv()
            self.last_adv = adv
            self.beacons += 1
            # The node advertises again itself after a disconnection (as the firmware does), so Bumble's own
            # auto-restart stays off: both at once race on the advertising set. Bounded: a stack that does not
            # answer must not hold the lock for ever.
            if self.device.is_advertising:
                await asyncio.wait_for(self.device.stop_advertising(), ADVERTISE_TIMEOUT_S)
            await asyncio.wait_for(
                self.device.start_advertising(
                    advertising_data=adv,
                    advertising_interval_min=self.adv_ms,
                    advertising_interval_max=self.adv_ms,
                    auto_restart=False,
                ),
                ADVERTISE_TIMEOUT_S,
            )

    def send(self, message: Message) -> None:
        frame = self.sender.encode(message)
        conn = self.conn
        if conn is None:
            return
        for part in fragment(frame, self.mtu, self.msg_id):
            self._out.put_nowait((conn, part))
        self.msg_id = (self.msg_id + 1) & 0xFF
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._notify_in_order())

    async def _notify_in_order(self) -> None:
        while not self._out.empty():
            conn, part = self._out.get_nowait()
            if conn is self.conn:
                await self.device.notify_subscriber(conn, self.uplink, part, force=True)

    # ------------------------------------------------------------------------------------------ the link

    def _on_connection(self, connection: Connection) -> None:
        self.conn = connection
        self.connected_at.append(time.monotonic())
        self.mtu = 23
        self.reasm = Reassembler()
        self.watch.up(self.node_id)
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        connection.on("connection_att_mtu_update", lambda: setattr(self, "mtu", connection.att_mtu))

    def _on_disconnection(self, _reason: int) -> None:
        self.conn = None
        self.watch.down()
        self._spawn(self.advertise())

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_write(self, _connection: Connection, value: bytes) -> None:
        if bytes(value) == POKE:
            self.poked_at.append(time.monotonic())
            self.send(Hello(1, 2, 3, self.boot, LANES, 0xC0FFEE))
            return
        try:
            raw = self.reasm.feed(bytes(value))
        except ProtocolError:
            self.rejected += 1
            return
        if raw is None:
            return
        try:
            frame = self.receiver.accept(raw)
        except ProtocolError:
            self.rejected += 1
            return
        self.received.append(frame)
        m = frame.message
        if isinstance(m, Ack):
            if m.event_seq > self.acked:
                now = time.monotonic()
                for seq in range(self.acked + 1, m.event_seq + 1):
                    self.acked_at[seq] = now
                self.acked = m.event_seq
                self.outbox = [e for e in self.outbox if e.event_seq > m.event_seq]
            else:  # the hub's answer to hello: send what waits
                for e in self.outbox:
                    self.send(e)
            return
        if isinstance(m, RequestState):
            for lane in range(LANES) if m.lane == 255 else [m.lane]:
                c = self.counts[lane]
                self.send(LaneState(lane, c, self.removed[lane], self.added[lane], c * UNIT_DG, 0, self.event_seq))
        self.send(CommandResult(frame.seq, STATUS_OK, 0))


async def add_nodes(
    air: Air, keys: dict[int, bytes], watch: Watch, *, mtu: int = 247, stock: int = 0, adv_ms: int = 20
) -> dict[int, BleFakeNode]:
    """One node per key on ``air``; ``mtu``: the largest ATT MTU each node's GATT server accepts."""
    nodes = {}
    for nid, key in keys.items():
        device = await air.new_device(f"shelf-{nid}", node_address(nid))
        device.gatt_server.max_mtu = mtu
        nodes[nid] = BleFakeNode(nid, key, device, watch, stock, adv_ms)
    return nodes


def node_address(node_id: int) -> str:
    return static_address(f"02:5E:5E:00:00:{node_id:02X}")
