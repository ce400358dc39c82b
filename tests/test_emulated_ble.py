"""The emulated board's ``bluetooth`` module on the emulated air: a real MicroPython board (``NodeProcess`` with a
radio) running a small echo peripheral written against MicroPython's documented API, and a real Bumble central
on the same air (``Radio``'s loop) that scans, connects, exchanges the MTU, writes and subscribes, as the hub's
adapter would. Then ``smartshelf emulate --link ble`` writes the hub's BLE node tables. Real time: ~15 s.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import tomllib
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bumble.core import UUID
from bumble.device import Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy

from hub.config import load_config
from tools.emulation import host
from tools.emulation.radio.host import Radio
from tools.emulation.radio.peripheral import ble_address
from tools.mpy_runtime import NodeProcess

pytestmark = [pytest.mark.micropython, pytest.mark.usefixtures("emulated_boards")]

NODE = 7
ADDRESS = ble_address(NODE)
CENTRAL = "F0:00:00:00:00:01"
ADV = bytes([2, 1, 6, 27, 0xFF, 0xFF, 0xFF]) + bytes(range(24))  # flags + manufacturer data: 31 bytes, legacy max
SERVICE = "6E400001-B5A3-F393-E0A9-E50E24DCCA9E"
TX = "6E400003-B5A3-F393-E0A9-E50E24DCCA9E"
RX = "6E400002-B5A3-F393-E0A9-E50E24DCCA9E"
EMULATE = (sys.executable, "-m", "hub.cli", "emulate")
BIG = bytes(range(256)) + bytes(44)  # 300 bytes: more than MTU 247 - 3

# The board's main.py: an echo peripheral, MicroPython's documented API only. The IRQ handler records copies (the
# addr memoryview is kept once, to show it is only valid inside the handler); the loop acts on them.
SCRIPT = f"""
import asyncio
import bluetooth
import machine
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
ADV = {ADV!r}
SERVICE = (
    bluetooth.UUID({SERVICE!r}),
    (
        (bluetooth.UUID({TX!r}), bluetooth.FLAG_NOTIFY | bluetooth.FLAG_READ),
        (bluetooth.UUID({RX!r}), bluetooth.FLAG_WRITE | bluetooth.FLAG_WRITE_NO_RESPONSE),
    ),
)

ble = bluetooth.BLE()
ble.active(True)
ble.config(gap_name="echo", mtu=247)
((tx, rx),) = ble.gatts_register_services((SERVICE,))
addr_type, mac = ble.config("mac")
print("mac", addr_type, mac.hex(), ble.config("mtu"))
hr = bluetooth.UUID(0x180D)
print("uuid", hr, bytes(hr).hex(), bluetooth.UUID({SERVICE.lower()!r}) == SERVICE[0])
ble.gap_advertise(100_000, adv_data=ADV)
try:
    ble.gatts_register_services((SERVICE,))
except OSError as e:
    print("OK busy", e.errno)
events = []
held = []

def irq(event, data):
    if event == _IRQ_CENTRAL_CONNECT:
        conn, kind, addr = data
        held.append(addr)
        events.append(("connect", conn, kind, bytes(addr).hex()))
    elif event == _IRQ_CENTRAL_DISCONNECT:
        events.append(("disconnect", data[0], 0, ""))
    elif event == _IRQ_MTU_EXCHANGED:
        events.append(("mtu", data[0], data[1], ""))
    elif event == _IRQ_GATTS_WRITE:
        conn, handle = data
        events.append(("write", conn, handle, ble.gatts_read(handle)))

ble.irq(irq)
print("advertising")

def command(conn, value):
    if value == b"setbuf":
        ble.gatts_set_buffer(rx, 256)
        print("OK setbuf")
    elif value == b"big":
        ble.gatts_notify(conn, tx, {BIG!r})
        print("OK big")
    elif value == b"flood":
        n = 0
        try:
            while n < 50:
                ble.gatts_notify(conn, tx, b"F" * 10)
                n += 1
            print("OK flood", n, 0)
        except OSError as e:
            print("OK flood", n, e.errno)
    elif value == b"value":
        ble.gatts_write(tx, b"local value", True)  # send_update: the subscribed central is notified
        print("OK value")
    elif value == b"held":
        print("OK held", bytes(held[0]).hex())
    elif value == b"bye":
        print("OK bye", ble.gap_disconnect(conn))
    elif value == b"reset":
        machine.reset()
    else:
        print("EV write", len(value))
        ble.gatts_notify(conn, tx, value)

async def main():
    while True:
        while events:
            kind, conn, a, b = events.pop(0)
            if kind == "write":
                command(conn, b)
            elif kind == "disconnect":
                print("EV disconnect", conn)
                try:
                    ble.gatts_notify(conn, tx, b"late")
                except OSError as e:
                    print("OK notconn", e.errno)
                print("OK again", ble.gap_disconnect(conn))
                ble.gap_advertise(100_000)  # the last payload again
            else:
                print("EV", kind, conn, a, b)
        await asyncio.sleep_ms(5)

asyncio.run(main())
"""


class Board:
    """An emulated board with a radio, running ``SCRIPT``; ``expect`` reads its console in order."""

    def __init__(self, directory: Path, radio: Radio) -> None:
        flash = directory / "flash"
        flash.mkdir(parents=True)
        (flash / "main.py").write_text(SCRIPT)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        os.set_blocking(self.slave, False)
        radio_fd = radio.attach(NODE)
        self.proc = NodeProcess(
            self.master,
            flash,
            epoch_ms=time.time() * 1000.0,
            files={"/emu/plan.json": b"{}"},
            log_path=directory / "node.log",
            unique_id=host.unique_id(NODE),
            radio_fd=radio_fd,
        )
        try:
            self.proc.start()
        finally:
            os.close(radio_fd)
        self.proc.wait_ready()
        self.text = ""
        self.pos = 0

    def expect(self, pattern: str, timeout_s: float = 10.0) -> re.Match[str]:
        """The next console line (after the last one expected) matching ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            while (end := self.text.find("\n", self.pos)) >= 0:
                line = self.text[self.pos : end].rstrip("\r")
                self.pos = end + 1
                if m := rx.search(line):
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no console line matching {pattern!r}; console:\n{self.text!r}")
            try:
                self.text += os.read(self.slave, 4096).decode(errors="replace")
            except BlockingIOError:
                time.sleep(0.02)
            self.proc.status()

    def stop(self) -> None:
        self.proc.stop()
        os.close(self.master)
        os.close(self.slave)


class Central:
    """A Bumble central on the radio's air (its coroutines run on the radio's loop: ``radio.call``)."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.connection: Connection | None = None
        self.tx: CharacteristicProxy[bytes] | None = None
        self.rx: CharacteristicProxy[bytes] | None = None
        self.notes: list[bytes] = []
        self.disconnects: list[int] = []

    @classmethod
    async def on(cls, radio: Radio) -> Central:
        assert radio.air is not None
        return cls(await radio.air.new_device("central", CENTRAL))

    async def advert(self, address: str, timeout_s: float = 10.0) -> bytes:
        """The data of ``address``'s next advert, from a passive scan (no scan response merged in)."""
        seen: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def on_advertisement(advertisement: object) -> None:
            if str(getattr(advertisement, "address", "")) == address and not seen.done():
                seen.set_result(bytes(getattr(advertisement, "data_bytes", b"")))

        self.device.on(self.device.EVENT_ADVERTISEMENT, on_advertisement)
        await self.device.start_scanning(active=False, filter_duplicates=False)
        try:
            return await asyncio.wait_for(seen, timeout_s)
        finally:
            self.device.remove_listener(self.device.EVENT_ADVERTISEMENT, on_advertisement)
            await self.device.stop_scanning()

    async def connect(self, address: str) -> int:
        """Connect, exchange the MTU (asking for the largest), find the service, subscribe; the MTU."""
        connection = await self.device.connect(address)
        self.connection = connection
        connection.on(connection.EVENT_DISCONNECTION, self.disconnects.append)
        peer = Peer(connection)
        mtu = await peer.request_mtu(517)
        await peer.discover_services([UUID(SERVICE)])
        for service in peer.services:
            await service.discover_characteristics()
        (self.tx,) = peer.get_characteristics_by_uuid(UUID(TX))
        (self.rx,) = peer.get_characteristics_by_uuid(UUID(RX))
        await self.tx.subscribe(self.notes.append)
        return mtu

    async def read_tx(self) -> bytes:
        assert self.tx is not None
        return bytes(await self.tx.read_value())

    async def write(self, value: bytes, response: bool = True) -> None:
        assert self.rx is not None
        await self.rx.write_value(value, with_response=response)


def wait_for(cond: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.02)


@pytest.fixture
def radio(tmp_path: Path) -> Iterator[Radio]:
    r = Radio()
    r.start(tmp_path)
    try:
        yield r
    finally:
        r.stop()


def test_an_echo_peripheral_on_the_board_against_a_bumble_central(radio: Radio, tmp_path: Path) -> None:
    board = Board(tmp_path / "board", radio)
    try:
        m = board.expect(r"^mac (\d) ([0-9a-f]{12}) (\d+)$")
        assert (m[1], m[2], m[3]) == ("1", ADDRESS.replace(":", "").lower(), "247")
        board.expect(r"^uuid UUID\(0x180d\) 0d18 True$")
        board.expect(r"^OK busy 16$")  # services cannot be registered while advertising (NimBLE: EBUSY)
        board.expect(r"^advertising$")

        central = radio.call(Central.on(radio))
        assert radio.call(central.advert(ADDRESS)) == ADV  # the 31 bytes exactly
        assert radio.call(central.connect(ADDRESS)) == 247  # min(the board's 247, the central's 517)
        m = board.expect(r"^EV connect (\d+) (\d) ([0-9a-f]{12})$")
        conn = m[1]
        assert (m[2], m[3]) == ("1", CENTRAL.replace(":", "").lower())
        board.expect(rf"^EV mtu {conn} 247 $")

        # The default buffer is 20 bytes: a longer write is cut, as on a board; after gatts_set_buffer it is whole.
        radio.call(central.write(bytes(range(30))))
        board.expect(r"^EV write 20$")
        wait_for(lambda: central.notes[-1:] == [bytes(range(20))], what="the echo of 20 bytes")
        radio.call(central.write(b"setbuf", response=False))
        board.expect(r"^OK setbuf$")
        radio.call(central.write(bytes(range(30)), response=False))
        board.expect(r"^EV write 30$")
        wait_for(lambda: central.notes[-1:] == [bytes(range(30))], what="the echo of 30 bytes")

        radio.call(central.write(b"big"))
        board.expect(r"^OK big$")
        wait_for(lambda: central.notes[-1:] == [BIG[:244]], what="a notification cut to MTU - 3")

        # A burst runs out of the stack's buffers: ENOMEM after a few; those sent all arrive.
        before = len(central.notes)
        radio.call(central.write(b"flood"))
        m = board.expect(r"^OK flood (\d+) (\d+)$")
        sent = int(m[1])
        assert m[2] == "12" and 1 <= sent <= 8, m[0]
        wait_for(lambda: len(central.notes) - before == sent, what=f"{sent} flood notifications")
        assert central.notes[before:] == [b"F" * 10] * sent

        radio.call(central.write(b"value"))
        board.expect(r"^OK value$")
        wait_for(lambda: central.notes[-1:] == [b"local value"], what="the update of gatts_write")
        assert radio.call(central.read_tx()) == b"local value"

        radio.call(central.write(b"held"))
        board.expect(r"^OK held eeeeeeeeeeee$")  # the handler's addr memoryview is not valid after it

        # The board disconnects: the central hears 0x13; the board's IRQ follows; the handle is gone (ENOTCONN).
        radio.call(central.write(b"bye"))
        board.expect(r"^OK bye True$")
        wait_for(lambda: central.disconnects == [0x13], what="the central's disconnection")
        board.expect(rf"^EV disconnect {conn}$")
        board.expect(r"^OK notconn 107$")
        board.expect(r"^OK again False$")

        # Advertising again (the same payload); a hard reset is the radio going away: a supervision timeout.
        assert radio.call(central.advert(ADDRESS)) == ADV
        radio.call(central.connect(ADDRESS))
        board.expect(r"^EV connect \d+ 1 ")
        radio.call(central.write(b"reset"))
        wait_for(lambda: central.disconnects == [0x13, 0x08], what="the connection dropped by the reset")
        board.expect(r"^advertising$")  # the new interpreter's
        assert radio.call(central.advert(ADDRESS)) == ADV
    finally:
        board.stop()


def test_smartshelf_emulate_link_ble_writes_the_hubs_ble_nodes(tmp_path: Path) -> None:
    emu = tmp_path / "emu"
    r = subprocess.run(
        [*EMULATE, "--link", "ble", "--nodes", "1", "--scenario", "idle", "--dir", str(emu), "--seconds", "8"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert f"hub BLE adapter: bumble:unix:{emu / 'hci.sock'}" in r.stdout.splitlines()
    text = (emu / "nodes.toml").read_text()
    (node,) = tomllib.loads(text)["node"]
    assert set(node) == {"id", "key", "link", "address"}
    assert (node["id"], node["link"], node["address"]) == (1, "ble", "C2:5E:5E:00:00:01")
    assert '"link": "ble"' in (emu / "state" / "node-1" / "flash" / "config.json").read_text()
    (tmp_path / "hub.toml").write_text('[hub]\nnodes_files = ["emu/nodes.toml"]\n')
    (loaded,) = load_config(tmp_path / "hub.toml").nodes
    assert (loaded.link, loaded.address, loaded.key.hex()) == ("ble", "C2:5E:5E:00:00:01", node["key"])
    assert not (emu / "hci.sock").exists()  # the emulator took its adapter down with it
