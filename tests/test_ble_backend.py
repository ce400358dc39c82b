"""The hub's Bumble backend for bleak against the emulated air, with real Bumble on both sides.

Peripherals are Bumble host Devices on node controllers of an ``Air``; the hub side is always reached the way the
hub reaches it: ``open_backend("bumble:unix:<socket>")`` on the air's served HCI socket, then bleak's own
``BleakScanner`` / ``BleakClient`` and bleak-retry-connector's ``establish_connection`` with ``backend=``.
One test runs the hub side in a separate process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import bleak_retry_connector
import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import BleakOutOfConnectionSlotsError, establish_connection
from bumble.core import AdvertisingData
from bumble.device import AdvertisingType, Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address, LeFeatureMask
from bumble.host import Host
from bumble.transport.common import AsyncPipeSink

from hub.transport.ble.backend import BleAdapterError, BleBackend, open_backend
from hub.transport.ble.bumble_client import BumbleDeviceDetails
from tools.emulation.radio.air import Air, static_address

REPO = Path(__file__).resolve().parents[1]
SERVICE = "5e1f0001-5e1f-4c0d-9e5a-000000000001"
NOTIFY = "5e1f0002-5e1f-4c0d-9e5a-000000000001"
WRITE = "5e1f0003-5e1f-4c0d-9e5a-000000000001"
COMPANY = 0xFFFF
ABSENT = "C0:00:00:00:00:77"


def node_address(i: int) -> str:
    return static_address(f"02:5E:5E:00:00:{i:02X}")


class Peripheral:
    """A Bumble peripheral like a node: a notify and a write characteristic, an advert with manufacturer data."""

    def __init__(self, device: Device, payload: bytes) -> None:
        self.device = device
        self.payload = payload
        self.writes: asyncio.Queue[bytes] = asyncio.Queue()
        self.disconnects: asyncio.Queue[int] = asyncio.Queue()
        self.notify_char: Characteristic[bytes] = Characteristic(
            NOTIFY, Characteristic.Properties.READ | Characteristic.Properties.NOTIFY, Characteristic.READABLE, b"hi"
        )
        write_char: Characteristic[bytes] = Characteristic(
            WRITE,
            Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=lambda _connection, value: self.writes.put_nowait(bytes(value))),
        )
        device.add_service(Service(SERVICE, [self.notify_char, write_char]))
        device.on(device.EVENT_CONNECTION, self._on_connection)

    def _on_connection(self, connection: Connection) -> None:
        connection.on(connection.EVENT_DISCONNECTION, self.disconnects.put_nowait)

    async def advertise(self) -> None:
        advert = AdvertisingData(
            [
                (AdvertisingData.Type.FLAGS, bytes([0x06])),
                (AdvertisingData.Type.MANUFACTURER_SPECIFIC_DATA, struct.pack("<H", COMPANY) + self.payload),
                (AdvertisingData.Type.TX_POWER_LEVEL, struct.pack("b", -4)),
            ]
        )
        response = AdvertisingData([(AdvertisingData.Type.COMPLETE_LOCAL_NAME, self.device.name.encode())])
        await self.device.start_advertising(
            advertising_data=bytes(advert),
            scan_response_data=bytes(response),
            advertising_interval_min=20,
            advertising_interval_max=20,
            auto_restart=True,  # like the firmware: advertise again after a disconnection
        )

    def connection(self) -> Connection:
        (connection,) = self.device.connections.values()
        return connection


@pytest.fixture
def socket_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="ble", dir="/tmp")  # AF_UNIX paths are short; pytest's tmp_path may not be
    yield os.path.join(directory, "hci.sock")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def air(socket_path: str) -> AsyncIterator[Air]:
    the_air = Air(hub_slots=5)
    await the_air.serve_hci(socket_path)
    yield the_air
    await the_air.close()


@pytest.fixture
async def backend(air: Air, socket_path: str) -> AsyncIterator[BleBackend]:
    opened = await open_backend(f"bumble:unix:{socket_path}")
    yield opened
    await opened.close()


async def add_peripheral(air: Air, i: int, *, max_mtu: int = 247) -> Peripheral:
    device = await air.new_device(f"n{i}", node_address(i))
    device.gatt_server.max_mtu = max_mtu
    peripheral = Peripheral(device, payload=bytes([i]) * 4)
    await peripheral.advertise()
    return peripheral


async def find(
    backend: BleBackend, address: str, *, mode: Literal["active", "passive"] = "active"
) -> tuple[BLEDevice, AdvertisementData]:
    found: asyncio.Future[tuple[BLEDevice, AdvertisementData]] = asyncio.get_running_loop().create_future()

    def seen(device: BLEDevice, adv: AdvertisementData) -> None:
        if device.address == address and not found.done():
            found.set_result((device, adv))

    async with BleakScanner(seen, scanning_mode=mode, backend=backend.scanner):
        return await asyncio.wait_for(found, 10.0)  # adverts every 20 ms: seconds only on a loaded machine


async def until_true(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.01)


async def connect(backend: BleBackend, address: str, **kwargs: Any) -> BleakClient:
    device, _ = await find(backend, address)
    return await establish_connection(BleakClient, device, address, backend=backend.client, **kwargs)


# -- opening ------------------------------------------------------------------------------------------------------


async def test_backend_specs(socket_path: str) -> None:
    bluez = await open_backend("bluez")
    assert (bluez.name, bluez.scanner, bluez.client) == ("bluez", None, None)
    assert (await open_backend("")).name == "bluez"
    with pytest.raises(ValueError, match="bumble:") as bad:
        await open_backend("hci0")
    assert "\n" not in str(bad.value)
    with pytest.raises(BleAdapterError) as absent:  # no emulator serving the socket
        await open_backend(f"bumble:unix:{socket_path}")
    assert isinstance(absent.value, OSError) and "\n" not in str(absent.value)


# -- scanning -----------------------------------------------------------------------------------------------------


async def test_scanners_see_the_advert_with_its_manufacturer_data(air: Air, backend: BleBackend) -> None:
    await add_peripheral(air, 1)
    address = node_address(1)
    device, adv = await find(backend, address)
    assert adv.manufacturer_data == {COMPANY: b"\x01" * 4}
    assert adv.local_name == "n1"  # from the scan response: the air delivers it to an active scanner
    assert adv.tx_power == -4 and adv.rssi == -50
    assert isinstance(device.details, BumbleDeviceDetails)  # not a BlueZ dict: bleak-retry-connector stays off D-Bus
    assert device.name == "n1"

    _, passive = await find(backend, address, mode="passive")  # no scan request, so no scan response
    assert passive.local_name is None and passive.manufacturer_data == {COMPANY: b"\x01" * 4}

    # two scanners on one adapter: stopping one leaves the other scanning
    counts = {"a": 0, "b": 0}
    a = BleakScanner(lambda d, _: counts.__setitem__("a", counts["a"] + 1), backend=backend.scanner)
    b = BleakScanner(lambda d, _: counts.__setitem__("b", counts["b"] + 1), backend=backend.scanner)
    await a.start()
    await b.start()
    await until_true(lambda: counts["a"] > 0 and counts["b"] > 0, "both scanners saw the advert")
    await a.stop()
    seen_a, seen_b = counts["a"], counts["b"]
    await until_true(lambda: counts["b"] >= seen_b + 5, "b kept scanning")  # a's window: five adverts to b
    assert counts["a"] == seen_a
    await b.stop()


async def test_adverts_as_advertised_non_connectable_legacy_commands_rssi(air: Air, backend: BleBackend) -> None:
    beacon = await air.new_device("beacon", node_address(1))  # extended advertising commands, ADV_NONCONN_IND
    await beacon.start_advertising(
        advertising_type=AdvertisingType.UNDIRECTED,
        advertising_data=bytes(AdvertisingData([(AdvertisingData.Type.MANUFACTURER_SPECIFIC_DATA, b"\xff\xff\x01")])),
        advertising_interval_min=20,
        advertising_interval_max=20,
    )
    controller = air.node_controller("legacy", node_address(2))  # a host on the legacy advertising commands
    controller.le_features &= ~LeFeatureMask.LE_EXTENDED_ADVERTISING
    controller.rssi = -71
    legacy = Device(name="legacy", address=Address(node_address(2)), host=Host(controller, AsyncPipeSink(controller)))
    await legacy.power_on()
    await Peripheral(legacy, payload=b"\x02").advertise()

    _, beacon_adv = await find(backend, node_address(1))
    assert beacon_adv.manufacturer_data == {COMPANY: b"\x01"} and beacon_adv.local_name is None
    _, legacy_adv = await find(backend, node_address(2))
    assert legacy_adv.local_name == "legacy" and legacy_adv.rssi == -71
    with pytest.raises(TimeoutError):  # the air does not connect to a non-connectable advertiser
        await BleakClient(node_address(1), backend=backend.client, timeout=0.3).connect()
    client = await connect(backend, node_address(2))
    assert client.mtu_size == 247
    await client.disconnect()
    await legacy.power_off()


# -- connecting ---------------------------------------------------------------------------------------------------


async def test_connect_exchanges_mtu_notifies_and_writes(air: Air, backend: BleBackend) -> None:
    peripheral = await add_peripheral(air, 1)
    client = await connect(backend, node_address(1))
    try:
        assert client.is_connected and client.mtu_size == 247
        assert peripheral.connection().att_mtu == 247
        notify_char = client.services.get_characteristic(NOTIFY)
        write_char = client.services.get_characteristic(WRITE)
        assert notify_char is not None and write_char is not None
        assert write_char.max_write_without_response_size == 244
        assert {"write", "write-without-response"} <= set(write_char.properties)
        assert any(d.uuid == "00002902-0000-1000-8000-00805f9b34fb" for d in notify_char.descriptors)  # the CCCD
        assert await client.read_gatt_char(notify_char) == bytearray(b"hi")

        received: asyncio.Queue[bytearray] = asyncio.Queue()
        await client.start_notify(notify_char, lambda _c, data: received.put_nowait(data))
        await peripheral.device.notify_subscriber(peripheral.connection(), peripheral.notify_char, b"\xab" * 244)
        value = await asyncio.wait_for(received.get(), 10.0)
        assert isinstance(value, bytearray) and value == b"\xab" * 244

        await client.write_gatt_char(write_char, b"with-response", response=True)
        assert await asyncio.wait_for(peripheral.writes.get(), 10.0) == b"with-response"
        await client.write_gatt_char(write_char, b"\x01" * 244, response=False)
        assert await asyncio.wait_for(peripheral.writes.get(), 10.0) == b"\x01" * 244
        with pytest.raises(BleakError, match="do not fit"):
            await client.write_gatt_char(write_char, b"\x01" * 245, response=False)

        await client.stop_notify(notify_char)
    finally:
        await client.disconnect()
    assert not client.is_connected
    assert await asyncio.wait_for(peripheral.disconnects.get(), 10.0) == 0x13  # remote user terminated


async def test_mtu_is_what_the_peripheral_accepts(air: Air, backend: BleBackend) -> None:
    await add_peripheral(air, 1, max_mtu=23)
    client = await connect(backend, node_address(1))
    try:
        write_char = client.services.get_characteristic(WRITE)
        assert client.mtu_size == 23 and write_char is not None and write_char.max_write_without_response_size == 20
    finally:
        await client.disconnect()


async def test_absent_node_times_out_and_the_adapter_still_connects(air: Air, backend: BleBackend) -> None:
    await add_peripheral(air, 1)
    absent = BleakClient(ABSENT, backend=backend.client, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5):  # fail rather than hang if the controller never ends the connect
            await absent.connect()
    assert time.monotonic() - started < 3.0  # its own 0.5 s (plus a loaded machine's delays), not the guard's 5 s
    assert air.hub.pending_le_connection is None  # cancelled on the controller, not just given up on the host
    client = await connect(backend, node_address(1))
    assert client.is_connected
    await client.disconnect()


async def test_a_cancelled_connect_leaves_the_adapter_usable(air: Air, backend: BleBackend) -> None:
    await add_peripheral(air, 1)
    absent = BleakClient(ABSENT, backend=backend.client, timeout=10)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):  # the caller gives up: the backend must cancel the controller's connect
            await absent.connect()
    client = await connect(backend, node_address(1))
    assert client.is_connected
    await client.disconnect()


async def test_out_of_connection_slots(socket_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bleak_retry_connector, "BLEAK_OUT_OF_SLOTS_BACKOFF_TIME", 0.0)  # 4 s x 9 attempts otherwise
    air = Air(hub_slots=2)
    await air.serve_hci(socket_path)
    backend = await open_backend(f"bumble:unix:{socket_path}")
    try:
        for i in (1, 2, 3):
            await add_peripheral(air, i)
        devices = [(await find(backend, node_address(i)))[0] for i in (1, 2, 3)]
        clients = [BleakClient(d, backend=backend.client, timeout=2) for d in devices]
        results = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and isinstance(failed[0], BleakError) and "connection slot" in str(failed[0])
        spare = next(d for d, r in zip(devices, results, strict=True) if isinstance(r, BaseException))
        with pytest.raises(BleakOutOfConnectionSlotsError):
            await establish_connection(BleakClient, spare, "n", backend=backend.client)
        # a slot freed is a slot usable
        await next(c for c, r in zip(clients, results, strict=True) if r is None).disconnect()
        client = await establish_connection(BleakClient, spare, "n", backend=backend.client)
        assert client.is_connected
    finally:
        await backend.close()
        await air.close()


async def test_a_node_leaving_the_air_fires_the_disconnected_callback(air: Air, backend: BleBackend) -> None:
    peripheral = await add_peripheral(air, 1)
    lost: asyncio.Future[BleakClient] = asyncio.get_running_loop().create_future()
    client = await connect(backend, node_address(1), disconnected_callback=lost.set_result)
    air.remove(air.controller("n1"))  # the board resets: its radio is gone
    assert await asyncio.wait_for(lost, 10.0) is client
    assert not client.is_connected
    assert await asyncio.wait_for(peripheral.disconnects.get(), 10.0) == 0x08  # supervision timeout, on its side too
    with pytest.raises(BleakError):
        await client.read_gatt_char(NOTIFY)


async def test_the_emulator_going_away_ends_every_link(air: Air, backend: BleBackend) -> None:
    await add_peripheral(air, 1)
    lost: asyncio.Future[BleakClient] = asyncio.get_running_loop().create_future()
    await connect(backend, node_address(1), disconnected_callback=lost.set_result)
    await air.close()  # the emulator exits: the hub's HCI transport is lost
    await asyncio.wait_for(lost, 10.0)
    assert not backend.is_open
    with pytest.raises(BleakError, match="not open"):
        await BleakScanner(backend=backend.scanner).start()
    started = time.monotonic()
    await backend.close()
    assert time.monotonic() - started < 2.0  # nothing left to wait for on a lost transport (not CLOSE_TIMEOUT_S, 3 s)


# -- across processes ---------------------------------------------------------------------------------------------

HUB_PROCESS = """
import asyncio, json, sys
from bleak import BleakClient, BleakScanner
from bleak_retry_connector import establish_connection
from hub.transport.ble.backend import open_backend

async def main(path, address, notify):
    backend = await open_backend("bumble:unix:" + path)
    device = await BleakScanner.find_device_by_address(address, timeout=10, backend=backend.scanner)
    client = await establish_connection(BleakClient, device, "n1", backend=backend.client)
    value = await client.read_gatt_char(notify)
    print(json.dumps({"mtu": client.mtu_size, "value": value.hex()}), flush=True)
    sys.stdout.close()
    await asyncio.sleep(30)  # killed while connected, like a hub that crashes

asyncio.run(main(*sys.argv[1:]))
"""


async def test_hub_in_another_process_then_a_restarted_hub(air: Air, socket_path: str) -> None:
    peripheral = await add_peripheral(air, 1)
    hub = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HUB_PROCESS,
        socket_path,
        node_address(1),
        NOTIFY,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert hub.stdout is not None
        line = await asyncio.wait_for(hub.stdout.readline(), 60.0)  # a process start: slow when loaded
        assert json.loads(line) == {"mtu": 247, "value": b"hi".hex()}
        with pytest.raises(BleAdapterError, match="another hub"):  # one hub on the controller at a time
            await open_backend(f"bumble:unix:{socket_path}")
    finally:
        hub.kill()
        await hub.wait()
    # the dead hub's link ends on the node's side; a new hub gets a clean controller and connects again
    assert await asyncio.wait_for(peripheral.disconnects.get(), 10.0) == 0x08
    for _ in range(2):
        backend = await open_backend(f"bumble:unix:{socket_path}")
        try:
            client = await connect(backend, node_address(1))
            assert client.mtu_size == 247
        finally:
            await backend.close()  # ends the link: the next open finds the node advertising again
        assert await asyncio.wait_for(peripheral.disconnects.get(), 10.0) in (0x08, 0x13)
