"""The emulated board's console is a board's USB serial port: stock mpremote (a subprocess, as a technician types
it) against ``smartshelf emulate`` nodes, a person at ``mpremote repl`` (on a pty), and a hub that sees the node
go quiet while mpremote has it and come back after a reset. Real time: a few seconds per test.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import subprocess
import sys
import termios
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from shared_protocol.auth import Key
from shared_protocol.downlink_text import encode_line
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import DownlinkSender, UplinkReceiver
from shared_protocol.messages import Ack
from shared_protocol.serial_framing import SerialDecoder
from tests.emulation_support import wait_until
from tools.emulation import host
from tools.emulation.scenarios import build
from tools.mpy_runtime import REPO_ROOT

pytestmark = [pytest.mark.micropython, pytest.mark.usefixtures("emulated_boards")]


def mpremote(port: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Stock mpremote from PyPI, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def boots(node: host.EmulatedNode) -> int:
    """How many times the firmware announced itself on the node's console."""
    return node.log_path.read_text(errors="replace").count(f"smartshelf: node {node.node_id} boot ")


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[host.Emulator]:
    lines: list[str] = []
    e = host.Emulator([1], build("idle", [1]), tmp_path / "emu", out=lines.append)
    e.start()
    try:
        wait_until(lambda: boots(e.nodes[0]) == 1, e)
        yield e
    finally:
        e.stop()


def test_mpremote_exec_fs_and_resets_against_a_counting_node(emu: host.Emulator, tmp_path: Path) -> None:
    node = emu.nodes[0]
    r = mpremote(node.port, "exec", "import sys; print(sys.implementation.name)")
    assert (r.returncode, r.stdout.strip()) == (0, "micropython"), r
    wait_until(lambda: node.stopped.startswith("interrupted (Ctrl-C)"), emu)  # Ctrl-C stopped the firmware
    assert "KeyboardInterrupt" in node.log_path.read_text()

    # The flash as a board lists it: what the factory put there, with sizes.
    r = mpremote(node.port, "fs", "ls", ":")
    assert r.returncode == 0, r
    listing = dict(line.split()[::-1] for line in r.stdout.splitlines()[1:])
    assert listing["main.py"] == str(len((REPO_ROOT / "firmware" / "main.py").read_bytes()))
    assert {"config.json", "fw/", "state/"} <= set(listing)

    blob = os.urandom(3000) + b"\x00\x03\x04\r\n"  # bytes a console must carry unchanged: NUL, Ctrl-C, Ctrl-D, CRLF
    local = tmp_path / "blob.bin"
    local.write_bytes(blob)
    r = mpremote(node.port, "fs", "cp", str(local), ":blob.bin")
    assert r.returncode == 0, r
    assert (node.flash_dir / "blob.bin").read_bytes() == blob  # mirrored to the host's flash directory
    r = mpremote(node.port, "fs", "sha256sum", ":blob.bin")
    assert r.stdout.split()[-1] == hashlib.sha256(blob).hexdigest(), r
    r = mpremote(node.port, "fs", "cp", str(local), ":blob.bin")
    assert "Up to date" in r.stdout, r  # mpremote hashed the board's copy and skipped it
    r = mpremote(node.port, "fs", "cat", ":config.json")
    assert r.returncode == 0 and '"node_id": 1' in r.stdout.replace(" ", "").replace('"node_id":1', '"node_id": 1')

    # Errors as a board reports them: MicroPython's errno numbers, which mpremote turns into its messages.
    r = mpremote(node.port, "fs", "ls", ":nope")
    assert r.returncode == 1 and "No such file or directory" in r.stderr, r
    r = mpremote(node.port, "fs", "mkdir", ":fw")
    assert r.returncode == 1 and "File exists" in r.stderr, r
    r = mpremote(node.port, "fs", "rm", ":blob.bin")
    assert r.returncode == 0, r
    assert not (node.flash_dir / "blob.bin").exists()

    r = mpremote(node.port, "exec", "import os, machine; print(os.uname().sysname, machine.reset_cause())")
    assert r.stdout.split() == ["smartshelf-emu", "5"], r  # every mpremote session began with a soft reset
    r = mpremote(node.port, "soft-reset")
    assert r.returncode == 0, r
    assert boots(node) == 1  # a soft reset from the raw REPL does not run main.py, as on a board

    r = mpremote(node.port, "reset")  # machine.reset(): a hard reset runs main.py, the firmware counts again
    assert r.returncode == 0, r
    wait_until(lambda: boots(node) == 2, emu)
    wait_until(lambda: node.stopped == "", emu)
    r = mpremote(node.port, "exec", "import machine; print(machine.reset_cause())")
    assert r.stdout.split() == ["5"], r
    r = mpremote(node.port, "exec", "import machine; print(machine.unique_id().hex())")
    assert r.stdout.strip() == host.unique_id(1).hex(), r


def test_mpremote_repl_ctrl_c_then_leave(emu: host.Emulator) -> None:
    """A person at `mpremote repl` on a counting node: Ctrl-C, a line of Python, Ctrl-] to leave."""
    node = emu.nodes[0]
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.execv(sys.executable, [sys.executable, "-m", "mpremote", "connect", str(node.port), "repl"])
    screen = b""

    def read_until(marker: bytes, timeout: float = 10.0) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while marker not in screen and time.monotonic() < deadline:
            emu.poll()
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    screen += os.read(fd, 4096)
                except OSError:
                    break
        assert marker in screen, screen

    try:
        read_until(b"Use Ctrl-] or Ctrl-x to exit this shell")
        # mpremote puts its terminal in raw mode just after that line; before it, Ctrl-C would be mpremote's SIGINT
        deadline = time.monotonic() + 10
        while termios.tcgetattr(fd)[3] & termios.ISIG and time.monotonic() < deadline:
            time.sleep(0.02)
        os.write(fd, b"\x03")
        read_until(b"KeyboardInterrupt")
        read_until(b">>> ")
        os.write(fd, b"print(6 * 7)\r")
        read_until(b"42\r\n>>> ")
        os.write(fd, b"\x1d")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert node.stopped.startswith("interrupted (Ctrl-C)")


def test_the_hub_sees_the_node_go_quiet_under_mpremote_and_resume_after_a_reset(emu: host.Emulator) -> None:
    node = emu.nodes[0]
    cfg = tomllib.loads((emu.directory / "nodes.toml").read_text())["node"][0]
    key = Key(bytes.fromhex(cfg["key"]))

    def listen(seconds: float, until_hello: bool = False) -> tuple[list[dict[str, object]], int]:
        """Frames as the hub reads them (what is not a good frame is counted and skipped, as the hub does): the
        messages and the count of bytes or chunks that were not frames."""
        rx = UplinkReceiver({1: key})
        dec = SerialDecoder()
        tx = DownlinkSender(1, key)
        out: list[dict[str, object]] = []
        rejected = 0
        with serial.Serial(str(node.port), 115200, timeout=0) as port:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                emu.poll()
                for raw in dec.feed(port.read(4096)):
                    try:
                        msg = rx.accept(raw).message.to_dict()
                    except ProtocolError:  # e.g. what mpremote left unread on the console, between two delimiters
                        rejected += 1
                        continue
                    out.append(msg)
                    if msg["type"] == "hello":
                        tx.new_session(int(msg["boot_count"]))  # type: ignore[call-overload]
                        port.write(encode_line(tx.encode(Ack(0))))
                        if until_hello:
                            return out, rejected + dec.garbage_chunks
                time.sleep(0.02)
        return out, rejected + dec.garbage_chunks

    frames, _ = listen(10.0, until_hello=True)
    assert [f["boot_count"] for f in frames if f["type"] == "hello"] == [1]
    assert mpremote(node.port, "exec", "print('technician was here')").stdout.strip() == "technician was here"
    quiet, garbage = listen(2.0)
    assert quiet == [] and garbage == 0  # at the REPL the node says nothing a hub could misread
    assert mpremote(node.port, "reset").returncode == 0
    frames, _ = listen(10.0, until_hello=True)
    assert [f["boot_count"] for f in frames if f["type"] == "hello"] == [2]


def test_a_blank_board_takes_the_firmware_with_plain_mpremote_and_boots_it(tmp_path: Path) -> None:
    """MicroPython and nothing else: the REPL; install the firmware and a config with mpremote, reset, it counts.
    A flash too small for a file says so as a board does (ENOSPC) and keeps what it had."""
    lines: list[str] = []
    # 512 KiB: the firmware as sources (.py, as the factory installs it here) takes about 380 KB in 4 KiB blocks
    emu = host.Emulator([1], build("idle", [1]), tmp_path / "emu", blank=True, flash_bytes=512 * 1024, out=lines.append)
    emu.start()
    try:
        node = emu.nodes[0]
        assert "[[node]]" not in (emu.directory / "nodes.toml").read_text()  # no key until it is installed
        wait_until(lambda: ">>> " in node.log_path.read_text(), emu)  # no main.py: the REPL, at once
        assert list(node.flash_dir.iterdir()) == []
        r = mpremote(node.port, "fs", "ls", ":")
        assert r.returncode == 0 and r.stdout.splitlines()[1:] == [], r

        # The factory image, copied the plain way (smartshelf flash does it atomically, with .mpy files).
        image = tmp_path / "image"
        host.install_factory_image(image)
        sc = build("idle", [1]).nodes[1]
        from firmware import config as node_config

        (image / "config.json").write_text(node_config.dumps(1, bytes(range(32)), sc.config_lanes()))
        r = mpremote(node.port, "fs", "cp", "-r", *[str(p) for p in sorted(image.iterdir())], ":")
        assert r.returncode == 0, r
        r = mpremote(node.port, "df")
        assert r.returncode == 0 and "524288" in r.stdout, r

        fill = "import os\ns = os.statvfs('/')\nopen('fill.bin', 'wb').write(bytes(s[0] * (s[3] - 1)))\n"
        r = mpremote(node.port, "exec", fill + "print(os.statvfs('/')[3])")
        assert r.stdout.split() == ["1"], r  # one 4 KiB block left
        two_blocks = tmp_path / "two.bin"
        two_blocks.write_bytes(os.urandom(8000))
        r = mpremote(node.port, "fs", "cp", str(two_blocks), ":two.bin")
        assert r.returncode == 1 and "No space left on device" in r.stderr, r
        r = mpremote(node.port, "exec", "open('x.bin', 'wb').write(bytes(9000))")
        assert r.returncode == 1 and "OSError: 28" in r.stdout + r.stderr, r  # as an ESP32 prints ENOSPC
        assert mpremote(node.port, "fs", "rm", ":fill.bin", ":two.bin").returncode == 0  # no room was left for x.bin

        assert mpremote(node.port, "reset").returncode == 0
        wait_until(lambda: boots(node) == 1, emu)
        active = (node.flash_dir / "fw" / "active").read_text().strip()
        assert (node.flash_dir / "fw" / active / "firmware" / "node.py").is_file()
        assert f"smartshelf: firmware image {active}" in node.log_path.read_text()
    finally:
        emu.stop()
