"""The bleak client of the Bumble backend: one GATT connection made through a ``BumbleAdapter``'s host Device.

It does at connect what BlueZ does for bleak's own backend, so hub code sees no difference:

* **MTU.** bleak has no call to request an MTU; BlueZ exchanges it by itself. This client requests the adapter's
  MTU right after the link comes up (the peer may answer smaller) and reports ``mtu_size`` and each
  characteristic's ``max_write_without_response_size`` (= MTU - 3) from the live value.
* **Discovery.** Every service, characteristic and descriptor is read into bleak's ``BleakGATTServiceCollection``
  before ``connect`` returns (bleak's contract). Characteristic handles are value handles (what ATT uses).
* **Notifications** subscribe through the CCCD; the callback gets a ``bytearray`` and runs inline on the loop (the
  hub's callbacks only enqueue).
* **Errors** come out as bleak's: ``BleakGATTProtocolError`` for ATT errors, ``BleakError`` when the link is gone.

The connect itself (serialised, cancel-safe, slot errors worded for bleak-retry-connector) belongs to the adapter
(``bumble_backend.py``), reached through the small ``ClientHost`` interface so this module never imports it.
Bumble is imported lazily (``bumble.core`` only, which is light): a BlueZ hub never loads Bumble's HCI layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_str
from bumble import core

if TYPE_CHECKING:
    from bumble.device import Connection
    from bumble.gatt_client import Client
    from bumble.hci import Address

log = logging.getLogger(__name__)

ATT_DEFAULT_MTU = 23
DISCONNECT_TIMEOUT_S = 3.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class BumbleDeviceDetails:
    """``BLEDevice.details`` of this backend: the peer's Bumble address, with its type (public or random).

    Deliberately not a dict with a ``"path"``: bleak-retry-connector takes such details for a BlueZ device and
    goes to D-Bus.
    """

    address: Address


class ClientHost(Protocol):
    """What a client needs from its adapter (``BumbleAdapter`` provides it)."""

    mtu: int

    async def connect_le(self, peer: Address | str, timeout: float) -> Connection:
        """An LE link to ``peer`` within ``timeout`` s, or a bleak-style error (TimeoutError, BleakError)."""
        ...


def bleak_uuid(value: core.UUID) -> str:
    """A Bumble UUID as bleak writes UUIDs: the 128-bit form, lower case."""
    return str(uuidlib.UUID(bytes=bytes(reversed(value.to_bytes(force_128=True)))))


def _properties(bits: int) -> list[CharacteristicPropertyName]:
    return [name for bit, name in CHARACTERISTIC_PROPERTIES.items() if bits & bit]


class BumbleClient(BaseBleakClient):
    """A bleak client backend on a shared Bumble Device; use ``BumbleAdapter.client_backend`` (bound to one adapter)."""

    _host: ClassVar[ClientHost | None] = None

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        disconnected_callback: Callable[[], None] | None = None,
        services: set[str] | None = None,
        *,
        timeout: float = 10.0,
        **kwargs: Any,  # bluez=, winrt=, pair=, _is_retry_client=... mean nothing here
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        if self._host is None:
            raise BleakError("BumbleClient is used through BumbleAdapter.client_backend, which binds it to an adapter")
        self._adapter: ClientHost = self._host
        self._peer: Address | str = self.address
        self._name = self.address
        if isinstance(address_or_ble_device, BLEDevice):
            self._name = address_or_ble_device.name or self.address
            if isinstance(address_or_ble_device.details, BumbleDeviceDetails):
                self._peer = address_or_ble_device.details.address
        self._wanted = {normalize_uuid_str(u) for u in services} if services else None
        self._connection: Connection | None = None
        self._established = False  # connect() returned: a drop from now on is news for the disconnected callback
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    # -- connection ---------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else ATT_DEFAULT_MTU

    def _max_write_without_response(self) -> int:
        return self.mtu_size - 3

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Link, MTU exchange and full discovery, all within ``timeout`` (kwarg, else the constructor's)."""
        if pair:
            raise NotImplementedError("pairing is not supported by the Bumble backend")
        if self._connection is not None:
            return
        timeout = float(kwargs.get("timeout", self._timeout))
        deadline = asyncio.get_running_loop().time() + timeout
        connection = await self._adapter.connect_le(self._peer, timeout)
        self._connection = connection
        connection.on(connection.EVENT_DISCONNECTION, lambda reason: self._on_disconnection(connection, reason))
        try:
            async with asyncio.timeout_at(deadline):
                await self._exchange_mtu(connection.gatt_client, self._adapter.mtu)
                self.services = await self._discover(connection.gatt_client)
            self._established = True
        except BaseException as exc:
            await self.disconnect()
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"{self.address}: MTU exchange and discovery not done within {timeout:g} s") from exc
            raise

    async def _exchange_mtu(self, client: Client, mtu: int) -> None:
        if mtu <= ATT_DEFAULT_MTU:
            return
        try:
            await self._gatt(client.request_mtu(mtu))
        except BleakGATTProtocolError as exc:  # the peer does not support the exchange: stay at 23
            log.info("%s: MTU exchange refused (%s), staying at %d", self.address, exc, ATT_DEFAULT_MTU)

    async def _discover(self, client: Client) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service in await self._gatt(client.discover_services()):
            uuid = bleak_uuid(service.uuid)
            if self._wanted is not None and uuid not in self._wanted:
                continue
            bleak_service = BleakGATTService(service, service.handle, uuid)
            collection.add_service(bleak_service)
            for char in await self._gatt(client.discover_characteristics((), service)):
                bleak_char = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    bleak_uuid(char.uuid),
                    _properties(char.properties),
                    self._max_write_without_response,
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)
                for descriptor in await self._gatt(client.discover_descriptors(char)):
                    collection.add_descriptor(
                        BleakGATTDescriptor(descriptor, descriptor.handle, bleak_uuid(descriptor.type), bleak_char)
                    )
        return collection

    def _on_disconnection(self, connection: Connection, reason: int) -> None:
        """A link ended: the peer, a supervision timeout or the adapter (our own ``disconnect`` forgot it first)."""
        if connection is not self._connection:
            return
        self._connection = None
        self._subscribers.clear()
        established, self._established = self._established, False
        log.info("%s: disconnected (HCI reason 0x%02X)", self.address, reason)
        if established and self._disconnected_callback is not None:
            asyncio.get_running_loop().call_soon(self._disconnected_callback)

    async def disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._established = False
        self._subscribers.clear()
        if connection is None:
            return
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await connection.disconnect()
        except (core.BaseBumbleError, TimeoutError) as exc:  # link or adapter already gone: nothing left to end
            log.debug("%s: disconnect: %s", self.address, exc)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("pairing is not supported by the Bumble backend")

    async def unpair(self) -> None:
        raise NotImplementedError("pairing is not supported by the Bumble backend")

    # -- GATT ---------------------------------------------------------------------------------------------------

    def _client(self) -> Client:
        if self._connection is None:
            raise BleakError(f"{self.address}: not connected")
        return self._connection.gatt_client

    async def _gatt(self, operation: Awaitable[_T]) -> _T:
        """Run one GATT operation, with Bumble's errors turned into bleak's."""
        try:
            return await operation
        except core.ProtocolError as exc:
            if exc.error_namespace == "att" and exc.error_code is not None:
                raise BleakGATTProtocolError(exc.error_code) from exc
            raise BleakError(f"{self.address}: {exc}") from exc
        except core.TimeoutError as exc:
            raise TimeoutError(f"{self.address}: GATT request timed out") from exc
        except asyncio.CancelledError:
            # Bumble cancels a pending request when the link drops; only a real cancellation propagates as such.
            task = asyncio.current_task()
            if self._connection is None and task is not None and task.cancelling() == 0:
                raise BleakError(f"{self.address}: disconnected during a GATT operation") from None
            raise

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        client = self._client()
        if use_cached and characteristic.handle in client.cached_values:
            return bytearray(client.cached_values[characteristic.handle][1])
        return bytearray(await self._gatt(client.read_value(characteristic.handle)))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        client = self._client()
        if use_cached and descriptor.handle in client.cached_values:
            return bytearray(client.cached_values[descriptor.handle][1])
        return bytearray(await self._gatt(client.read_value(descriptor.handle)))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        client = self._client()
        value = bytes(data)
        if not response and len(value) > self._max_write_without_response():
            raise BleakError(
                f"{self.address}: {len(value)} B do not fit a write without response (at most "
                f"{self._max_write_without_response()} B at MTU {self.mtu_size})"
            )
        await self._gatt(client.write_value(characteristic.handle, value, with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        await self._gatt(self._client().write_value(descriptor.handle, bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        client = self._client()

        def on_value(value: bytes) -> None:
            try:
                callback(bytearray(value))
            except Exception:  # a failing handler must not break Bumble's PDU dispatch
                log.exception("%s: notification handler failed", self.address)

        old = self._subscribers.pop(characteristic.handle, None)
        if old is not None:
            with contextlib.suppress(BleakError):
                await self._gatt(client.unsubscribe(characteristic.obj, old))
        self._subscribers[characteristic.handle] = on_value
        await self._gatt(client.subscribe(characteristic.obj, on_value, prefer_notify=True))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        client = self._client()
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._gatt(client.unsubscribe(characteristic.obj, subscriber, force=subscriber is None))
