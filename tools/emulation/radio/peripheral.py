"""One emulated board's radio on the air: the host side of its ``bluetooth`` module, as a real Bumble peripheral.

An emulated board with a radio (``NodeProcess(..., radio_fd=...)``) speaks MicroPython's ``bluetooth`` API to its
ROM (``tools/emulation/bluetooth.py``), which sends what the stack must do over a SOCK_SEQPACKET socket, one
frame per message (a type byte, little-endian fields, the ``MSG_*`` constants of that module). ``NodePeripheral``
is the socket's other end, on the radio's asyncio loop:

* **The stack's life.** ``MSG_ACTIVE`` on puts a fresh Bumble host on a fresh controller on the air
  (``Air.new_device``), with the board's static random address (``ble_address``); off, or a board reset
  (``MSG_RESET``, written by the board runner before every new interpreter), or the board's process ending (the
  socket's end) takes the controller off the air (``Air.remove``): the centrals' links end with reason 0x08, as
  when a board's radio stops, and advertising stops until the new firmware advertises. ``MSG_READY`` answers every
  reset, so the board knows which events are its own.
* **GATT.** The board's services (``MSG_SERVICES``: UUIDs, flags, the board's value handles) become Bumble
  services; each board value handle maps to its characteristic or descriptor. The values a central reads are a
  mirror of the board's database, kept as the board's is (``MSG_BUFFER``: size and append mode, 20 bytes at
  first; ``MSG_VALUE``: local writes; a central's write cut to the size, or appended). A central's write goes to
  the board (``MSG_WRITE``, whole: the board cuts its own copy the same way); ``MSG_VALUE`` with its update flag
  notifies the subscribed centrals, as ``gatts_write(..., send_update=True)`` does.
* **Advertising.** ``MSG_ADVERTISE`` advertises the board's payload (legacy PDUs: ADV_IND when connectable, else
  ADV_SCAN_IND with a scan response or ADV_NONCONN_IND) at its interval; a connection ends it, as NimBLE's does.
* **Notifications.** ``MSG_NOTIFY`` is sent to the connection whether it subscribed or not (``force``, as
  documented for ``gatts_notify``), cut to MTU - 3 by Bumble as the air would; each one, sent or not (the central
  gone), gives the board its tx credit back (``MSG_SENT``).
* **Events.** A central's connection, disconnection (its reason is not passed on: MicroPython has none) and MTU
  exchange go to the board (``MSG_CONNECTED``, ``MSG_DISCONNECTED``, ``MSG_MTU_EXCHANGED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass

from bumble import gatt, hci
from bumble.att import Attribute
from bumble.core import UUID
from bumble.device import AdvertisingType, Connection, Device
from bumble.profiles.gap import GenericAccessService

from tools.emulation import bluetooth as wire
from tools.emulation.radio.air import Air, static_address

log = logging.getLogger(__name__)

FRAME_MAX = 64 * 1024
_REMOTE_USER_TERMINATED = hci.HCI_ErrorCode.REMOTE_USER_TERMINATED_CONNECTION_ERROR  # gap_disconnect (NimBLE)
_PERMISSIONS = (  # the board's flag -> Bumble's attribute permission
    (wire.FLAG_READ, Attribute.Permissions.READABLE),
    (wire.FLAG_WRITE | wire.FLAG_WRITE_NO_RESPONSE, Attribute.Permissions.WRITEABLE),
    (0x0200, Attribute.Permissions.READ_REQUIRES_ENCRYPTION),
    (0x0400, Attribute.Permissions.READ_REQUIRES_AUTHENTICATION),
    (0x0800, Attribute.Permissions.READ_REQUIRES_AUTHORIZATION),
    (0x1000, Attribute.Permissions.WRITE_REQUIRES_ENCRYPTION),
    (0x2000, Attribute.Permissions.WRITE_REQUIRES_AUTHENTICATION),
    (0x4000, Attribute.Permissions.WRITE_REQUIRES_AUTHORIZATION),
)


def ble_address(node_id: int) -> str:
    """The emulated node's static random address: its board's ``machine.unique_id()`` (``02:5E:5E`` and the node
    id's three low bytes, ``tools/emulation/host.py``) with the two top bits set, as MicroPython on an ESP32 makes
    its static address from the MAC: ``C2:5E:5E:00:00:07`` for node 7."""
    return static_address(b"\x02\x5e\x5e" + (node_id & 0xFFFFFF).to_bytes(3, "big"))


@dataclass
class _Mirror:
    """A board value handle: its attribute on the Bumble server and a copy of the board's value."""

    attribute: gatt.Characteristic[bytes] | gatt.Descriptor
    size: int = wire.DEFAULT_BUFFER
    append: bool = False
    value: bytes = b""

    def write(self, data: bytes) -> None:
        """A central's write, as the board's stack keeps it: cut to the buffer, or appended up to it."""
        if self.append:
            self.value = (self.value + data)[: self.size]
        else:
            self.value = data[: self.size]


class NodePeripheral:
    """The radio of one emulated board process: ``run()`` serves the board's socket until it closes (or
    ``close()``); ``name`` is the node's controller name on the air, ``address`` its static random address."""

    def __init__(self, air: Air, name: str, address: str, sock: socket.socket) -> None:
        self.air = air
        self.name = name
        self.address = address
        self.sock = sock
        sock.setblocking(False)
        self.device: Device | None = None  # while the board's BLE is active
        self.connections: dict[int, Connection] = {}
        self.mirrors: dict[int, _Mirror] = {}
        self.gap_name = wire.DEFAULT_NAME.encode()
        self.mtu = wire.DEFAULT_MTU
        self.generation = 0
        self._baseline = (0, 0)  # the server's attributes and services before the board's
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    # -- the socket ----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._sender = asyncio.create_task(self._send_loop())
        try:
            while not self._closed:
                try:
                    frame = await loop.sock_recv(self.sock, FRAME_MAX)
                except OSError:
                    break
                if not frame:
                    break  # the board's process ended
                try:
                    await self._handle(frame)
                except Exception:  # a bad frame must not take the node's radio down
                    log.exception("radio %s: frame %s failed", self.name, frame[:1].hex())
        finally:
            await self.close()

    async def close(self) -> None:
        """The board's radio goes away for good (its process ended, or the emulator stops)."""
        if self._closed:
            return
        self._closed = True
        self._radio_off()
        self._out.put_nowait(None)
        if self._sender is not None and self._sender is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._sender, 1.0)
        self.sock.close()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while (frame := await self._out.get()) is not None:
            try:
                await loop.sock_sendall(self.sock, frame)
            except OSError:
                return

    def _send(self, kind: int, payload: bytes = b"") -> None:
        if not self._closed:
            self._out.put_nowait(bytes([kind]) + payload)

    # -- the board's frames -----------------------------------------------------------------------------------------
    async def _handle(self, frame: bytes) -> None:
        kind, body = frame[0], frame[1:]
        if kind == wire.MSG_RESET:
            self._radio_off()
            self.gap_name = wire.DEFAULT_NAME.encode()
            self.mtu = wire.DEFAULT_MTU
            (self.generation,) = struct.unpack_from("<I", body)
            self._send(wire.MSG_READY, struct.pack("<IB", self.generation, 1) + _display_bytes(self.address))
        elif kind == wire.MSG_ACTIVE:
            if body[0]:
                await self._radio_on()
            else:
                self._radio_off()
        elif kind == wire.MSG_NAME:
            self.gap_name = bytes(body)
            self._apply_name()
        elif kind == wire.MSG_MTU:
            (self.mtu,) = struct.unpack_from("<H", body)
            if self.device is not None:
                self.device.gatt_server.max_mtu = self.mtu
        elif kind == wire.MSG_SERVICES:
            self._register(body)
        elif kind == wire.MSG_BUFFER:
            vh, size, append = struct.unpack_from("<HHB", body)
            if (mirror := self.mirrors.get(vh)) is not None:
                mirror.size, mirror.append, mirror.value = size, bool(append), b""
        elif kind == wire.MSG_VALUE:
            vh, update = struct.unpack_from("<HB", body)
            if (mirror := self.mirrors.get(vh)) is not None:
                mirror.value = bytes(body[3:])
                mirror.size = max(mirror.size, len(mirror.value))
                if update and self.device is not None and isinstance(mirror.attribute, gatt.Characteristic):
                    await self.device.notify_subscribers(mirror.attribute, mirror.value)
        elif kind == wire.MSG_ADVERTISE:
            units, connectable, adv_len = struct.unpack_from("<HBB", body)
            adv = bytes(body[4 : 4 + adv_len])
            await self._advertise(units, bool(connectable), adv, bytes(body[4 + adv_len :]))
        elif kind == wire.MSG_ADV_STOP:
            if self.device is not None:
                await self.device.stop_advertising()
        elif kind == wire.MSG_NOTIFY:
            conn, vh = struct.unpack_from("<HH", body)
            await self._notify(conn, vh, bytes(body[4:]))
        elif kind == wire.MSG_DISCONNECT:
            (conn,) = struct.unpack_from("<H", body)
            if (connection := self.connections.get(conn)) is not None:
                with contextlib.suppress(Exception):  # already gone: its disconnection event is on its way
                    await connection.disconnect(_REMOTE_USER_TERMINATED)
        else:
            log.warning("radio %s: unknown frame type 0x%02x", self.name, kind)

    # -- the stack's life ---------------------------------------------------------------------------------------
    async def _radio_on(self) -> None:
        if self.device is not None:
            return
        device = await self.air.new_device(self.name, self.address)
        if self._closed:  # the board went away meanwhile
            with contextlib.suppress(KeyError):
                self.air.remove(self.air.controller(self.name))
            return
        self.device = device
        server = device.gatt_server
        self._baseline = (len(server.attributes), len(server.services))
        server.max_mtu = self.mtu
        self._apply_name()
        device.on(device.EVENT_CONNECTION, lambda connection: self._on_connection(device, connection))

    def _radio_off(self) -> None:
        """The controller leaves the air: the centrals see a supervision timeout (0x08), the board hears nothing
        (its stack is gone, or about to be)."""
        device, self.device = self.device, None
        self.connections.clear()
        self.mirrors.clear()
        if device is not None:
            device.remove_all_listeners(device.EVENT_CONNECTION)
            with contextlib.suppress(KeyError):  # already off the air (the air closed first)
                self.air.remove(self.air.controller(self.name))

    def _apply_name(self) -> None:
        if self.device is None:
            return
        self.device.name = self.gap_name.decode(errors="replace")
        for service in self.device.gatt_server.services:
            if isinstance(service, GenericAccessService):
                service.device_name_characteristic.value = self.gap_name

    # -- GATT -------------------------------------------------------------------------------------------------------
    def _register(self, body: bytes) -> None:
        """The board's services replace any earlier ones (the board allows it only while nothing is connected and
        nothing advertised)."""
        device = self.device
        if device is None:
            return
        self.mirrors.clear()
        services: list[gatt.Service] = []
        off = 1
        for _ in range(body[0]):
            service_uuid, off = _uuid(body, off)
            characteristics: list[gatt.Characteristic[bytes]] = []
            n_chars = body[off]
            off += 1
            for _ in range(n_chars):
                char_uuid, off = _uuid(body, off)
                flags, vh, n_desc = struct.unpack_from("<HHB", body, off)
                off += 5
                descriptors: list[gatt.Descriptor] = []
                for _ in range(n_desc):
                    desc_uuid, off = _uuid(body, off)
                    d_flags, dh = struct.unpack_from("<HH", body, off)
                    off += 4
                    descriptor = gatt.Descriptor(desc_uuid, _permissions(d_flags), self._value(dh))
                    descriptors.append(descriptor)
                    self.mirrors[dh] = _Mirror(descriptor)
                characteristic: gatt.Characteristic[bytes] = gatt.Characteristic(
                    char_uuid,
                    gatt.Characteristic.Properties(flags & 0x7F),
                    _permissions(flags),
                    self._value(vh),
                    descriptors,
                )
                characteristics.append(characteristic)
                self.mirrors[vh] = _Mirror(characteristic)
            services.append(gatt.Service(service_uuid, characteristics))
        server = device.gatt_server
        n_attributes, n_services = self._baseline
        del server.attributes[n_attributes:]
        del server.services[n_services:]
        server.attributes_by_handle = {a.handle: a for a in server.attributes}
        server.add_services(services)

    def _value(self, vh: int) -> gatt.CharacteristicValue[bytes]:
        def read(connection: Connection) -> bytes:
            mirror = self.mirrors.get(vh)
            return mirror.value if mirror is not None else b""

        def write(connection: Connection, value: bytes) -> None:
            mirror = self.mirrors.get(vh)
            if mirror is None or self.connections.get(connection.handle) is not connection:
                return
            mirror.write(bytes(value))
            self._send(wire.MSG_WRITE, struct.pack("<HH", connection.handle, vh) + bytes(value))

        return gatt.CharacteristicValue(read=read, write=write)

    async def _notify(self, conn: int, vh: int, data: bytes) -> None:
        try:
            connection = self.connections.get(conn)
            mirror = self.mirrors.get(vh)
            if self.device is not None and connection is not None and mirror is not None:
                await self.device.notify_subscriber(connection, mirror.attribute, data, force=True)
        except Exception as err:  # the connection ended meanwhile: a notification lost on the air
            log.debug("radio %s: notify on %d failed: %s", self.name, conn, err)
        finally:
            self._send(wire.MSG_SENT, struct.pack("<H", 1))

    # -- GAP --------------------------------------------------------------------------------------------------------
    async def _advertise(self, units: int, connectable: bool, adv: bytes, resp: bytes) -> None:
        if self.device is None:
            return
        if connectable:
            kind = AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
        elif resp:
            kind = AdvertisingType.UNDIRECTED_SCANNABLE
        else:
            kind = AdvertisingType.UNDIRECTED
        interval_ms = units * 0.625
        await self.device.start_advertising(
            advertising_type=kind,
            advertising_data=adv,
            scan_response_data=resp,
            advertising_interval_min=interval_ms,
            advertising_interval_max=interval_ms,
        )

    def _on_connection(self, device: Device, connection: Connection) -> None:
        if device is not self.device or connection.role != hci.Role.PERIPHERAL:
            return
        self.connections[connection.handle] = connection
        connection.on(connection.EVENT_DISCONNECTION, lambda reason: self._on_disconnection(device, connection))
        connection.on(connection.EVENT_CONNECTION_ATT_MTU_UPDATE, lambda: self._on_mtu(device, connection))
        self._send(wire.MSG_CONNECTED, _conn_payload(connection))

    def _on_disconnection(self, device: Device, connection: Connection) -> None:
        if device is not self.device or self.connections.get(connection.handle) is not connection:
            return
        del self.connections[connection.handle]
        self._send(wire.MSG_DISCONNECTED, _conn_payload(connection))

    def _on_mtu(self, device: Device, connection: Connection) -> None:
        if device is self.device and self.connections.get(connection.handle) is connection:
            self._send(wire.MSG_MTU_EXCHANGED, struct.pack("<HH", connection.handle, connection.att_mtu))


def _uuid(body: bytes, off: int) -> tuple[UUID, int]:
    n = body[off]
    return UUID.from_bytes(bytes(body[off + 1 : off + 1 + n])), off + 1 + n


def _permissions(flags: int) -> Attribute.Permissions:
    permissions = Attribute.Permissions(0)
    for flag, permission in _PERMISSIONS:
        if flags & flag:
            permissions |= permission
    return permissions


def _display_bytes(address: str) -> bytes:
    """``C2:5E:5E:00:00:07`` -> its 6 bytes in that order (MicroPython's order; Bumble keeps them reversed)."""
    return bytes.fromhex(address.replace(":", ""))


def _conn_payload(connection: Connection) -> bytes:
    peer = connection.peer_address
    return struct.pack("<HB", connection.handle, peer.address_type & 1) + _display_bytes(
        peer.to_string(with_type_qualifier=False)
    )
