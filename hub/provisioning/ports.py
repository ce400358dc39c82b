"""Serial ports a shelf node can be on: whether a port is there and free, its stable name, and the boards plugged
in (USB VID:PID of MicroPython on an RP2040 and of the ESP32 USB bridges and native USB)."""

from __future__ import annotations

import os
from pathlib import Path

import serial
from serial.tools import list_ports

from hub.provisioning.device import DeviceError

# (vid, pid or None for any) -> what it is
BOARDS: dict[tuple[int, int | None], str] = {
    (0x2E8A, 0x0005): "RP2040 (Pico / Pico W) running MicroPython",
    (0x10C4, 0xEA60): "ESP32 behind a CP210x bridge",
    (0x1A86, 0x7523): "ESP32 behind a CH340 bridge",
    (0x303A, None): "ESP32 with native USB",
}
STABLE_DIRS = (Path("/dev/serial/by-id"), Path("/dev/serial/by-path"))


def check_port(port: str, *, hub_running: bool = False) -> None:
    """Raises DeviceError (one line) unless ``port`` exists and no other program holds it."""
    if not os.path.exists(port):
        raise DeviceError(f"no such port: {port}")
    try:
        with serial.Serial(port, 115200, timeout=0, exclusive=True):
            pass
    except serial.SerialException as err:
        if "lock" in str(err).lower() or "busy" in str(err).lower():
            hint = "another program has it" if hub_running else "the hub? give --config hub.toml to have it let go"
            raise DeviceError(f"port busy: {port} is open in another program ({hint})") from None
        raise DeviceError(f"cannot open {port}: {err}") from None


def stable_name(port: str) -> str:
    """The /dev/serial/by-id (else by-path) link to the same device, which survives replugging; else ``port``."""
    real = os.path.realpath(port)
    for d in STABLE_DIRS:
        if d.is_dir():
            for link in sorted(d.iterdir()):
                if os.path.realpath(link) == real:
                    return str(link)
    return port


def find_boards() -> list[tuple[str, str]]:
    """(port, what it is) for every plugged-in USB serial device that looks like a shelf node's board."""
    found = []
    for p in list_ports.comports():
        if p.vid is None:
            continue
        what = BOARDS.get((p.vid, p.pid)) or BOARDS.get((p.vid, None))
        if what:
            found.append((stable_name(p.device), f"{what} ({p.vid:04x}:{p.pid:04x})"))
    return found


def choose_port(port: str | None) -> str:
    """``port`` if given, else the one board plugged in; raises DeviceError when there is none or several."""
    if port:
        return port
    boards = find_boards()
    if not boards:
        raise DeviceError("no board found: plug one in, or give its port (smartshelf flash PORT ...)")
    if len(boards) > 1:
        listed = "; ".join(f"{p}: {what}" for p, what in boards)
        raise DeviceError(f"several boards plugged in, give the port: {listed}")
    return boards[0][0]
