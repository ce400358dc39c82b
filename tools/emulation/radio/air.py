"""The emulated air: a Bumble ``LocalLink`` joining one controller per emulated node and the hub's adapter controller.

The emulator host (one asyncio loop) and in-process tests build one ``Air``; the hub reaches its controller over a
unix socket (``serve_hci``) with its ordinary Bumble backend (``bumble:unix:<path>``), exactly as it would reach a
USB dongle. Node controllers are driven in-process: by a Bumble host ``Device`` (``new_device``) or by the
MicroPython ``bluetooth`` bridge beside this module.

Deviations from the stock Bumble 0.0.236 controller (``bumble/controller.py``), all in ``AirController``:

1. **Connection limit.** LE (Extended) Create Connection is answered with Command Status 0x09 (Connection Limit
   Exceeded) when the controller already holds ``max_le_connections`` links (the hub's: ``hub_slots``; stock:
   unlimited). A Pi's adapter holds 5-7, an ESPHome proxy 3.
2. **LE Create Connection Cancel cancels.** Stock answers success and keeps the pending connect, so a connect to an
   absent node hangs and every later connect fails 0x0C. Here the pending connect is dropped and LE Connection
   Complete with status 0x02 follows the Command Complete (as the spec says), so Bumble's own connect timeout
   ends cleanly and the next connect works. Without a pending connect the answer is 0x0C, as on silicon.
3. **Supervision timeout.** Stock has none: a controller taken off the link leaves its peers connected forever.
   ``Air.remove`` ends each of its links on both sides with reason 0x08 (Connection Timeout), after
   ``supervision_timeout_s`` on the surviving side (0 by default: tests need no real waiting).
4. **HCI Reset resets.** Stock keeps links, the pending connect, scanning and advertising across a reset. Here a
   reset (and a hub client leaving the socket) drops them; the peers see 0x08, as they would when a radio resets.
5. **Adverts as received.** Stock reports every advert as connectable with a "scan response" that repeats the
   advert data, in passive scanning too, and connects to non-connectable advertisers. Here the report carries
   the advertiser's real event properties (connectable, scannable, legacy), the scan response is the advertiser's
   scan response data and comes only to an active scanner of a scannable advert, a connect needs a connectable
   advert, and the RSSI is the advertiser's ``rssi`` (stock: -50 always).
6. **Legacy advertising.** Stock sends only ADV_IND and reads the interval in ms instead of 0.625 ms units; here
   every undirected type is sent, at the interval asked for. (A Bumble ``Device`` uses extended advertising
   commands with legacy PDUs, which stock already handles; this is for hosts that use the legacy commands.)
7. **Static random addresses.** Nodes get a static random address (two top bits set) as their own address:
   ``LocalLink`` routes ACL by random address, so a public own address mis-routes data. ``static_address``
   turns any 6-byte id (e.g. the 02:5E:5E:... of an emulated board's unique_id) into one.

No air timing: no connection intervals, no loss; notifies pass as fast as the CPU allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from dataclasses import dataclass

from bumble import hci, ll
from bumble.controller import Connection, Controller, LegacyAdvertiser
from bumble.core import InvalidPacketError
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, PacketParser

log = logging.getLogger(__name__)

# Advertising event properties (HCI LE Set Extended Advertising Parameters), also used for legacy advertising types
CONNECTABLE, SCANNABLE, DIRECTED, LEGACY = 0x01, 0x02, 0x04, 0x10
SCAN_RESPONSE = 0x08  # extended advertising report event type bit
LEGACY_TYPE_PROPERTIES = {  # HCI LE Set Advertising Parameters advertising_type -> properties
    0: CONNECTABLE | SCANNABLE | LEGACY,  # ADV_IND
    1: CONNECTABLE | DIRECTED | LEGACY,  # ADV_DIRECT_IND (high duty cycle)
    2: SCANNABLE | LEGACY,  # ADV_SCAN_IND
    3: LEGACY,  # ADV_NONCONN_IND
    4: CONNECTABLE | DIRECTED | LEGACY,  # ADV_DIRECT_IND (low duty cycle)
}
SUPERVISION_TIMEOUT = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR  # 0x08
DEFAULT_RSSI = -50


def static_address(node_id: bytes | str) -> str:
    """A static random address for a 6-byte id (bytes, or hex with or without colons): its two top bits set."""
    raw = bytes.fromhex(node_id.replace(":", "")) if isinstance(node_id, str) else bytes(node_id)
    if len(raw) != 6:
        raise ValueError(f"a BLE address has 6 bytes, not {len(raw)}")
    return ":".join(f"{b:02X}" for b in bytes([raw[0] | 0xC0]) + raw[1:])


@dataclass(frozen=True)
class Advert:
    """What a scanner receives from one advertiser besides the advert's data."""

    properties: int
    scan_response: bytes
    rssi: int


class AirLegacyAdvertiser(LegacyAdvertiser):
    """Stock's legacy advertiser, sending every undirected type at the interval in 0.625 ms units (deviation 6)."""

    def _on_timer_fired(self) -> None:
        self.send_advertising_data()
        interval_s = max(self.advertising_interval_min * 0.000625, 0.02)
        self.timer_handle = asyncio.get_running_loop().call_later(interval_s, self._on_timer_fired)

    def send_advertising_data(self) -> None:
        if self.enabled and not LEGACY_TYPE_PROPERTIES.get(self.advertising_type, DIRECTED) & DIRECTED:
            self.controller.send_advertising_pdu(ll.AdvInd(advertiser_address=self.address, data=self.advertising_data))


class AirController(Controller):
    """A Bumble controller with the deviations listed in the module docstring."""

    def __init__(
        self,
        name: str,
        link: LocalLink,
        *,
        address: str | None = None,
        max_le_connections: int | None = None,
        rssi: int = DEFAULT_RSSI,
    ) -> None:
        super().__init__(name, link=link)
        self.max_le_connections = max_le_connections
        self.rssi = rssi  # what scanners on the air report for this controller's adverts
        self.le_legacy_advertiser = AirLegacyAdvertiser(self)
        self.silenced = False
        if address is not None:
            self.random_address = hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS)

    # -- 1. connection limit ------------------------------------------------------------------------------------

    def _refuse_if_full(self, op_code: int) -> bool:
        if self.max_le_connections is None or len(self.le_connections) < self.max_le_connections:
            return False
        self._send_hci_command_status(hci.HCI_ErrorCode.CONNECTION_LIMIT_EXCEEDED_ERROR, op_code)
        return True

    def on_hci_le_create_connection_command(self, command: hci.HCI_LE_Create_Connection_Command) -> None:
        if not self._refuse_if_full(command.op_code):
            super().on_hci_le_create_connection_command(command)

    def on_hci_le_extended_create_connection_command(
        self, command: hci.HCI_LE_Extended_Create_Connection_Command
    ) -> None:
        if not self._refuse_if_full(command.op_code):
            super().on_hci_le_extended_create_connection_command(command)

    # -- 2. cancel ----------------------------------------------------------------------------------------------

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending, self.pending_le_connection = self.pending_le_connection, None
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        cancelled = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # the caller sends our Command Complete right after this returns; the failed connect follows it
        asyncio.get_running_loop().call_soon(self.send_hci_packet, cancelled)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    # -- 3. / 4. links ending without a word: supervision timeout, reset ----------------------------------------

    def silence(self) -> None:
        """The radio stops: no advertising, no scanning, no connecting; its links are left to the caller."""
        self.silenced = True
        self.pending_le_connection = None
        self.le_scan_enable = False
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()

    def drop_links(self) -> None:
        """Every link ends: the peers see a supervision timeout, this controller's host hears nothing (reset)."""
        for connection in list(self.le_connections.values()):
            if (peer := _peer(self, connection)) is not None:
                peer[0].on_le_disconnected(peer[1], SUPERVISION_TIMEOUT)
            self.le_connections.pop(connection.peer_address, None)

    def reset_radio(self) -> None:
        """What a reset does to the radio: no connect pending, no scanning or advertising, no links (peers: 0x08)."""
        self.silence()
        self.silenced = False
        self.advertising_sets.clear()
        self.drop_links()

    def on_hci_reset_command(self, command: hci.HCI_Reset_Command) -> hci.HCI_StatusReturnParameters:
        self.reset_radio()
        return super().on_hci_reset_command(command)

    def send_advertising_pdu(self, packet: ll.AdvertisingPdu) -> None:
        if not self.silenced:
            super().send_advertising_pdu(packet)

    def on_ll_advertising_pdu(self, packet: ll.AdvertisingPdu) -> None:
        if not self.silenced:
            super().on_ll_advertising_pdu(packet)

    # -- 5. adverts as received ---------------------------------------------------------------------------------

    def on_hci_le_set_extended_scan_parameters_command(
        self, command: hci.HCI_LE_Set_Extended_Scan_Parameters_Command
    ) -> hci.HCI_StatusReturnParameters:
        self.le_scan_type = command.scan_types[0] if command.scan_types else 0  # stock forgets active/passive
        return super().on_hci_le_set_extended_scan_parameters_command(command)

    def advert_of(self, address: hci.Address) -> Advert:
        """How the controller advertising as ``address`` advertises (stock PDUs carry only the data)."""
        for other in self.link.controllers:
            if other is self:
                continue
            legacy = other.le_legacy_advertiser
            rssi = getattr(other, "rssi", DEFAULT_RSSI)
            if legacy.enabled and legacy.address == address:
                properties = LEGACY_TYPE_PROPERTIES.get(legacy.advertising_type, LEGACY)
                return Advert(properties, bytes(legacy.scan_response_data), rssi)
            for advertising_set in other.advertising_sets.values():
                if advertising_set.enabled and advertising_set.address == address and advertising_set.parameters:
                    properties = int(advertising_set.parameters.advertising_event_properties)
                    return Advert(properties, bytes(advertising_set.scan_response_data), rssi)
        return Advert(CONNECTABLE | SCANNABLE | LEGACY, b"", DEFAULT_RSSI)

    def on_advertising_pdu(self, pdu: ll.AdvInd | ll.AdvExtInd) -> None:
        advert = self.advert_of(pdu.advertiser_address)
        if self.le_scan_enable:
            self._report(pdu, advert)
        pending = self.pending_le_connection
        if pending is not None and pending.peer_address == pdu.advertiser_address and advert.properties & CONNECTABLE:
            self.create_le_connection(pdu.advertiser_address)

    def _report(self, pdu: ll.AdvInd | ll.AdvExtInd, advert: Advert) -> None:
        scan_response = self.le_scan_type == 1 and bool(advert.properties & SCANNABLE)
        address = pdu.advertiser_address
        if not self.le_features & hci.LeFeatureMask.LE_EXTENDED_ADVERTISING:
            legacy_type = hci.HCI_LE_Advertising_Report_Event.EventType
            if advert.properties & CONNECTABLE:
                kind = legacy_type.ADV_DIRECT_IND if advert.properties & DIRECTED else legacy_type.ADV_IND
            else:
                kind = legacy_type.ADV_SCAN_IND if advert.properties & SCANNABLE else legacy_type.ADV_NONCONN_IND
            legacy_reports = [(kind, pdu.data)]
            if scan_response:
                legacy_reports.append((legacy_type.SCAN_RSP, advert.scan_response))
            for event_type, data in legacy_reports:
                report = hci.HCI_LE_Advertising_Report_Event.Report(
                    event_type=event_type,
                    address_type=address.address_type,
                    address=address,
                    data=data,
                    rssi=advert.rssi,
                )
                self.send_hci_packet(hci.HCI_LE_Advertising_Report_Event([report]))
            return
        kind_bits = advert.properties & (CONNECTABLE | SCANNABLE | DIRECTED | LEGACY)
        ext_reports = [(kind_bits, pdu.data)]
        if scan_response:
            ext_reports.append((kind_bits | SCAN_RESPONSE, advert.scan_response))
        for bits, payload in ext_reports:
            ext_report = hci.HCI_LE_Extended_Advertising_Report_Event.Report(
                event_type=bits,
                address_type=address.address_type,
                address=address,
                primary_phy=hci.Phy.LE_1M,
                secondary_phy=0 if advert.properties & LEGACY else hci.Phy.LE_1M,
                advertising_sid=0xFF if advert.properties & LEGACY else getattr(pdu, "sid", 0),
                tx_power=hci.HCI_LE_Extended_Advertising_Report_Event.TX_POWER_INFORMATION_NOT_AVAILABLE,
                rssi=advert.rssi,
                periodic_advertising_interval=0,
                direct_address_type=0,
                direct_address=hci.Address.ANY,
                data=payload,
            )
            self.send_hci_packet(hci.HCI_LE_Extended_Advertising_Report_Event([ext_report]))


class _HciSession(asyncio.Protocol):
    """One client of the served hub controller: its own packet parser, so a reconnect starts clean."""

    def __init__(self, air: Air) -> None:
        self.air = air
        self.transport: asyncio.Transport | None = None
        self.parser = PacketParser()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self.air.attach(self):
            log.warning("air: a second HCI client was refused (one hub at a time)")
            transport.close()
            return
        self.transport = transport
        self.parser.set_packet_sink(self.air.hub)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        try:
            self.parser.feed_data(data)
        except InvalidPacketError as exc:
            log.warning("air: bad HCI from the hub (%s), closing its connection", exc)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport = None
            self.air.detach(self)

    def on_packet(self, packet: bytes) -> None:
        """Controller -> hub (the controller's host sink)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(packet)


class Air:
    """A Bumble LocalLink joining one controller per emulated node and the hub's adapter controller.

    Build it inside the running loop (Bumble controllers need one).
    """

    def __init__(self, *, hub_slots: int = 5, supervision_timeout_s: float = 0.0) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]  # (bumble 0.0.236 leaves it unannotated)
        self.hub = AirController("hub", self.link, max_le_connections=hub_slots)
        self.supervision_timeout_s = supervision_timeout_s
        self._nodes: dict[str, AirController] = {}
        self._devices: dict[str, Device] = {}  # by node name, while its controller is on the air
        self._server: asyncio.AbstractServer | None = None
        self._socket_path: str | None = None
        self._session: _HciSession | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    def node_controller(self, name: str, address: str) -> AirController:
        """A controller on the link for a node, owning the static random ``address``."""
        if name in self._nodes:
            raise ValueError(f"node {name!r} is already on the air")
        if int(address.split(":")[0], 16) >> 6 != 0b11:
            raise ValueError(f"{address} is not a static random address (first byte 0xC0-0xFF); see static_address()")
        controller = AirController(name, self.link, address=address)
        self._nodes[name] = controller
        return controller

    def controller(self, name: str) -> AirController:
        """The controller of node ``name``."""
        return self._nodes[name]

    async def new_device(self, name: str, address: str) -> Device:
        """A powered-on Bumble host Device on a new node controller (in-process peripherals, the bridge)."""
        controller = self.node_controller(name, address)
        host = Host(controller, AsyncPipeSink(controller))
        device = Device(name=name, address=hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS), host=host)
        await device.power_on()
        self._devices[name] = device
        return device

    def remove(self, controller: Controller) -> None:
        """A node's radio goes away (board reset or exit): its links end with reason 0x08 on both sides."""
        if isinstance(controller, AirController):
            controller.silence()
        ends: list[tuple[Controller, Connection]] = []
        for connection in list(controller.le_connections.values()):
            if (peer := _peer(controller, connection)) is not None:
                ends.append(peer)
            controller.on_le_disconnected(connection, SUPERVISION_TIMEOUT)
        if controller in self.link.controllers:
            self.link.remove_controller(controller)
        for name in [name for name, c in self._nodes.items() if c is controller]:
            del self._nodes[name]
            self._devices.pop(name, None)  # its host stays with the caller, which may power it off

        def expire() -> None:
            for peer, theirs in ends:
                if peer.le_connections.get(theirs.peer_address) is theirs:
                    peer.on_le_disconnected(theirs, SUPERVISION_TIMEOUT)

        if self.supervision_timeout_s > 0:
            timer = asyncio.get_running_loop().call_later(self.supervision_timeout_s, expire)
            self._timers.add(timer)
        else:
            expire()

    # -- the hub's controller over a unix socket ----------------------------------------------------------------

    async def serve_hci(self, path: str) -> None:
        """Serve the hub's controller at ``path`` (one client at a time) until ``close``; returns once listening."""
        if self._server is not None:
            raise RuntimeError(f"already serving HCI at {self._socket_path}")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket of an earlier run
        self._server = await asyncio.get_running_loop().create_unix_server(lambda: _HciSession(self), path)
        self._socket_path = path

    def attach(self, session: _HciSession) -> bool:
        if self._session is not None:
            return False
        self._session = session
        self.hub.host = session
        return True

    def detach(self, session: _HciSession) -> None:
        """The hub went away: its controller resets (links end with 0x08 on the nodes' side)."""
        if self._session is session:
            self._session = None
            self.hub.host = None
            self.hub.reset_radio()

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._server is not None:
            self._server.close()
            if self._session is not None and self._session.transport is not None:
                self._session.transport.close()
            await self._server.wait_closed()
            self._server = None
            if self._socket_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._socket_path)
        self.hub.silence()
        for controller in self._nodes.values():
            controller.silence()
        for device in self._devices.values():
            with contextlib.suppress(Exception):
                await device.power_off()
        self._devices.clear()


def _peer(controller: Controller, connection: Connection) -> tuple[Controller, Connection] | None:
    """The other end of one of ``controller``'s links, if that end is still on the air."""
    for other in controller.link.controllers:
        if other is not controller:
            theirs = other.le_connections.get(connection.self_address)
            if theirs is not None and theirs.self_address == connection.peer_address:
                return other, theirs
    return None
