"""A bleak backend on a Bumble host stack: the hub's BLE adapter without BlueZ.

``BumbleAdapter`` owns ONE HCI transport and ONE Bumble host ``Device`` on it. Any Bumble transport spec works:
``unix:/run/.../hci.sock`` (the emulated air, ``tools/emulation/radio/air.py``), ``usb:0`` or ``hci-socket:0`` (a
real dongle driven without BlueZ on a Pi), ``serial:/dev/ttyUSB0,1000000`` (an HCI UART controller). Every scanner
and client of the hub shares it, as they share one BlueZ adapter; ``scanner_backend`` / ``client_backend`` are
classes bound to this adapter, so hub code passes only ``backend=cls`` to bleak and bleak-retry-connector.

What the adapter does that a controller will not do by itself:

* **Scanning is reference counted.** Several scanners run on one adapter; scanning is active when any of them
  asked for active scanning, and stops with the last one. Adverts come out as bleak's ``AdvertisementData``,
  parsed from the AD structures (local name, manufacturer data ``{company_id: bytes}``, service data and UUIDs,
  TX power) with the controller's RSSI.
* **Connects are serialised.** A controller initiates one LE connection at a time, so a lock orders them; a
  connect that times out or is cancelled sends LE Create Connection Cancel (Bumble does that on its own timeout,
  not on a cancellation) and ends a link that completed in the same instant, so the adapter stays usable.
* **Errors read like bleak's.** HCI 0x09 Connection Limit Exceeded becomes a ``BleakError`` saying "connection
  slot" (bleak-retry-connector turns that into ``BleakOutOfConnectionSlotsError``); a timeout is ``TimeoutError``.
* **A lost transport** (the emulator or the dongle went away) ends every connection: Bumble's host flushes and
  each client's disconnected callback fires. The hub's manager then closes and reopens the adapter.

Bumble's HCI layer is imported in ``open`` only (it costs ~0.4 s): a hub on BlueZ never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError
from bumble import core

from hub.transport.ble.bumble_client import BumbleClient, BumbleDeviceDetails, bleak_uuid

if TYPE_CHECKING:
    from bumble.device import Advertisement, Connection, Device
    from bumble.hci import Address
    from bumble.transport.common import Transport

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 3.0
CANCEL_GRACE_S = 2.0  # how long a controller may take to confirm LE Create Connection Cancel
NO_RSSI = -127
HCI_CONNECTION_LIMIT_EXCEEDED = 0x09
HCI_COMMAND_DISALLOWED = 0x0C
_ids = itertools.count(1)


class BleAdapterError(ConnectionError):
    """The adapter could not be opened (no socket, no dongle, no answer); the message is one line."""


def advertisement_data(ad_structures: Iterable[tuple[int, bytes]], rssi: int, *platform: Any) -> AdvertisementData:
    """bleak's view of one advert (with its scan response, if any) from its AD structures."""
    names: dict[int, str] = {}
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    uuids: list[str] = []
    tx_power: int | None = None
    for ad_type, data in ad_structures:
        if ad_type in (0x08, 0x09):  # shortened / complete local name
            names[ad_type] = data.decode("utf-8", "replace")
        elif ad_type == 0xFF and len(data) >= 2:
            manufacturer[int.from_bytes(data[:2], "little")] = bytes(data[2:])
        elif ad_type in (0x16, 0x20, 0x21):  # service data, 16/32/128-bit UUID
            size = {0x16: 2, 0x20: 4, 0x21: 16}[ad_type]
            if len(data) >= size:
                service_data[bleak_uuid(core.UUID.from_bytes(data[:size]))] = bytes(data[size:])
        elif 0x02 <= ad_type <= 0x07:  # (in)complete lists of 16/32/128-bit service UUIDs
            size = {0x02: 2, 0x03: 2, 0x04: 4, 0x05: 4, 0x06: 16, 0x07: 16}[ad_type]
            for i in range(0, len(data) - size + 1, size):
                uuid = bleak_uuid(core.UUID.from_bytes(data[i : i + size]))
                if uuid not in uuids:
                    uuids.append(uuid)
        elif ad_type == 0x0A and len(data) == 1:
            tx_power = struct.unpack("b", data)[0]
    name = names.get(0x09, names.get(0x08))
    return AdvertisementData(name, manufacturer, service_data, uuids, tx_power, rssi, platform)


class BumbleScanner(BaseBleakScanner):
    """A bleak scanner backend on a shared adapter; use ``BumbleAdapter.scanner_backend`` (bound to one adapter)."""

    _adapter: ClassVar[BumbleAdapter | None] = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,  # bluez=, cb=: BlueZ / CoreBluetooth only
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        if self._adapter is None:
            raise BleakError(
                "BumbleScanner is used through BumbleAdapter.scanner_backend, which binds it to an adapter"
            )
        self.adapter: BumbleAdapter = self._adapter
        self.active = scanning_mode != "passive"

    async def start(self) -> None:
        self.seen_devices = {}
        await self.adapter.scan_join(self)

    async def stop(self) -> None:
        await self.adapter.scan_leave(self)

    def on_advertisement(self, advertisement: Advertisement) -> None:
        """One advert from the adapter's Device (called inline on the loop)."""
        rssi = advertisement.rssi
        adv = advertisement_data(
            advertisement.data.ad_structures,
            NO_RSSI if rssi == advertisement.RSSI_NOT_AVAILABLE else rssi,
            advertisement,
        )
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        address = advertisement.address.to_string(with_type_qualifier=False)
        name = adv.local_name
        if name is None and address in self.seen_devices:
            name = self.seen_devices[address][0].name  # keep the name a scan response or earlier advert gave
        device = self.create_or_update_device(address, address, name, BumbleDeviceDetails(advertisement.address), adv)
        self.call_detection_callbacks(device, adv)


class BumbleAdapter:
    """One HCI transport + one Bumble host Device, shared by every scanner and client of the hub."""

    def __init__(self, transport: str, *, mtu: int = 247, address: str = "F0:F1:F2:F3:F4:F5") -> None:
        first = int(address.split(":")[0], 16)
        if first >> 6 != 0b11:
            raise ValueError(f"adapter address {address} is not a static random address (first byte 0xC0-0xFF)")
        if not 23 <= mtu <= 517:
            raise ValueError(f"ATT MTU {mtu} outside 23..517")
        self.transport = transport
        self.mtu = mtu
        self.address = address
        self._hci: Transport | None = None
        self._device: Device | None = None
        self._scanners: set[BumbleScanner] = set()
        self._scan_mode: bool | None = None  # None: not scanning; else active?
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        n = next(_ids)
        self._scanner_cls = cast(type[BumbleScanner], type(f"BumbleScanner{n}", (BumbleScanner,), {"_adapter": self}))
        self._client_cls = cast(type[BumbleClient], type(f"BumbleClient{n}", (BumbleClient,), {"_host": self}))

    @property
    def scanner_backend(self) -> type[BaseBleakScanner]:
        return self._scanner_cls

    @property
    def client_backend(self) -> type[BaseBleakClient]:
        return self._client_cls

    @property
    def is_open(self) -> bool:
        """Open, and its transport not lost."""
        return self._hci is not None and not self._hci.source.terminated.done()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the transport and power the Device on (HCI Reset first: the controller starts clean)."""
        if self._hci is not None:
            if self.is_open:
                return
            await self.close()  # the transport was lost: start over
        from bumble.device import Device
        from bumble.hci import Address
        from bumble.transport import open_transport

        try:
            hci = await open_transport(self.transport)
        except Exception as exc:  # absent socket or dongle, bad spec, missing USB library: one line for the log
            raise BleAdapterError(f"cannot open HCI transport {self.transport!r}: {exc}") from exc
        device = Device.with_hci("smartshelf-hub", Address(self.address), hci.source, hci.sink)
        device.gatt_server.max_mtu = self.mtu  # also the answer when a node starts the MTU exchange
        power_on = asyncio.ensure_future(device.power_on())
        try:
            await asyncio.wait(
                {power_on, hci.source.terminated}, timeout=OPEN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if hci.source.terminated.done():
                raise BleAdapterError(
                    f"HCI transport {self.transport!r} was closed by the other side (another hub on it?)"
                )
            if not power_on.done():
                raise BleAdapterError(f"HCI controller on {self.transport!r}: no answer in {OPEN_TIMEOUT_S:g} s")
            power_on.result()
        except BaseException as exc:
            power_on.cancel()
            await hci.close()
            if isinstance(exc, BleAdapterError | asyncio.CancelledError):
                raise
            raise BleAdapterError(f"HCI controller on {self.transport!r} did not power on: {exc}") from exc
        device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
        hci.source.terminated.add_done_callback(lambda _: self._on_transport_lost(hci))
        self._hci, self._device = hci, device
        log.info("BLE: Bumble adapter on %s (%s, MTU %d)", self.transport, self.address, self.mtu)

    def _on_transport_lost(self, hci: Transport) -> None:
        if self._hci is hci:  # not our own close: the emulator exited, the dongle was pulled
            log.warning("BLE: HCI transport %s lost", self.transport)

    async def close(self) -> None:
        """End every connection, stop scanning, close the transport. The adapter can be opened again."""
        hci, device = self._hci, self._device
        if hci is None or device is None:
            return
        self._scanners.clear()
        try:
            if self.is_open:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    if self._scan_mode is not None:
                        await device.stop_scanning()
                    for connection in list(device.connections.values()):
                        await connection.disconnect()
        except (core.BaseBumbleError, TimeoutError) as exc:
            log.debug("BLE: closing %s: %s", self.transport, exc)
        finally:
            self._hci = self._device = None
            self._scan_mode = None
            device.on_flush()  # links not ended above end now, for their clients too
            await hci.close()

    def _require_device(self) -> Device:
        if self._device is None or not self.is_open:
            raise BleakError(f"BLE adapter {self.transport!r} is not open")
        return self._device

    # -- scanning -----------------------------------------------------------------------------------------------

    async def scan_join(self, scanner: BumbleScanner) -> None:
        async with self._scan_lock:
            self._require_device()
            self._scanners.add(scanner)
            try:
                await self._apply_scan()
            except BaseException:
                self._scanners.discard(scanner)
                raise

    async def scan_leave(self, scanner: BumbleScanner) -> None:
        async with self._scan_lock:
            self._scanners.discard(scanner)
            if self._device is not None and self.is_open:
                await self._apply_scan()

    async def _apply_scan(self) -> None:
        want = any(s.active for s in self._scanners) if self._scanners else None
        if want == self._scan_mode:
            return
        device = self._require_device()
        if self._scan_mode is not None:
            await device.stop_scanning()
            self._scan_mode = None
        if want is not None:
            await device.start_scanning(active=want, filter_duplicates=False)
            self._scan_mode = want

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for scanner in list(self._scanners):
            try:
                scanner.on_advertisement(advertisement)
            except Exception:  # a failing detection callback must not stop the others
                log.exception("BLE: detection callback failed")

    # -- connecting ---------------------------------------------------------------------------------------------

    async def connect_le(self, peer: Address | str, timeout: float) -> Connection:
        """An LE link to ``peer`` within ``timeout`` s; connects wait for each other (one pending per controller)."""
        device = self._require_device()
        label = peer if isinstance(peer, str) else peer.to_string(with_type_qualifier=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._connect_lock.acquire()
        except TimeoutError:
            raise TimeoutError(
                f"{label}: not connected within {timeout:g} s (the adapter was busy connecting)"
            ) from None
        before = list(device.connections.values())
        try:
            async with asyncio.timeout_at(deadline + CANCEL_GRACE_S):  # Bumble waits for the cancel without limit
                try:
                    return await device.connect(peer, timeout=max(deadline - loop.time(), 0.01))
                except asyncio.CancelledError:
                    await asyncio.shield(self._cancel_connect(device, before))
                    raise
        except TimeoutError:
            raise TimeoutError(
                f"{label}: not connected within {timeout:g} s (and the cancel was not confirmed)"
            ) from None
        except core.BaseBumbleError as exc:
            await self._end_orphans(device, before)
            raise self._connect_error(label, timeout, exc) from exc
        finally:
            self._connect_lock.release()

    async def _cancel_connect(self, device: Device, before: list[Connection]) -> None:
        from bumble import hci

        with contextlib.suppress(core.BaseBumbleError, TimeoutError):
            await device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
        await self._end_orphans(device, before)

    async def _end_orphans(self, device: Device, before: list[Connection]) -> None:
        """A link that completed while its connect was being given up: nobody owns it, so end it."""
        for connection in list(device.connections.values()):
            if not any(connection is known for known in before):
                with contextlib.suppress(core.BaseBumbleError, TimeoutError):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await connection.disconnect()

    @staticmethod
    def _connect_error(label: str, timeout: float, exc: core.BaseBumbleError) -> Exception:
        if isinstance(exc, core.TimeoutError):
            return TimeoutError(f"{label}: not connected within {timeout:g} s")
        code = exc.error_code if isinstance(exc, core.BaseError) else None
        if code == HCI_CONNECTION_LIMIT_EXCEEDED:
            return BleakError(f"{label}: no free connection slot on the adapter (HCI 0x09 Connection Limit Exceeded)")
        if code == HCI_COMMAND_DISALLOWED:
            return BleakError(f"{label}: the controller refused to connect now (HCI 0x0C Command Disallowed)")
        return BleakError(f"{label}: connect failed: {exc}")
