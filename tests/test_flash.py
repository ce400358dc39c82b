"""``smartshelf flash`` as a technician runs it (the CLI as a subprocess, stock mpremote under it) against emulated
blank boards: a new node provisioned and heard, a re-flash that sends only what changed, an install killed half
way that leaves the old firmware booting, and every refusal as one line that changes nothing on the board.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from hub.provisioning.device import DeviceError, Probe
from hub.provisioning.flash import check_board
from tools.emulation import host
from tools.emulation.scenarios import build
from tools.mpy_runtime import REPO_ROOT

pytestmark = [pytest.mark.micropython, pytest.mark.usefixtures("emulated_boards")]

LINE = re.compile(
    r"^node (\d+): firmware (\d+\.\d+\.\d+-[0-9a-f]{10}) \((bytecode \.mpy|sources), (\d+) modules\) installed on "
    r"(\S+): (\d+) files sent \(([\d.]+) KiB\); hello after [\d.]+ s \(boot (\d+)\)$"
)


def smartshelf_flash(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "flash", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )


def layout_file(tmp_path: Path) -> Path:
    lanes = build("idle", [1]).nodes[1].config_lanes()
    path = tmp_path / "layout.json"
    import json

    path.write_text(json.dumps({"lanes": [{"cells": [list(c) for c in cells], "rate_sps": r} for cells, r in lanes]}))
    return path


def snapshot(flash: Path) -> dict[str, bytes]:
    return {str(p.relative_to(flash)): p.read_bytes() for p in sorted(flash.rglob("*")) if p.is_file()}


def changed_firmware(tmp_path: Path, version: str = "(0, 1, 1)", module: str = "reports.py") -> Path:
    """A checkout whose firmware has a new version and one changed module."""
    src = tmp_path / "checkout"
    for pkg in ("firmware", "shared_protocol"):
        shutil.copytree(REPO_ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "firmware" / "__init__.py"
    init.write_text(re.sub(r"FW_VERSION = \(\d+, \d+, \d+\)", f"FW_VERSION = {version}", init.read_text()))
    (src / "firmware" / module).write_text(
        (src / "firmware" / module).read_text() + "\n\ndef _changed() -> int:\n    return 1\n"
    )
    return src


@pytest.fixture
def blank(tmp_path: Path) -> Iterator[host.Emulator]:
    emu = host.Emulator([1], build("idle", [1]), tmp_path / "emu", blank=True, out=lambda s: None)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def active_image(flash: Path) -> str:
    return (flash / "fw" / "active").read_text().strip()


def provisioned(node: host.EmulatedNode, tmp_path: Path, node_id: int) -> tuple[Path, str]:
    """A blank board provisioned as node ``node_id``: its nodes file and the image it runs."""
    nodes_file = tmp_path / "nodes.toml"
    r = smartshelf_flash(str(node.port), "--node-id", str(node_id), "--layout", str(layout_file(tmp_path)),
                         "--nodes-file", str(nodes_file))  # fmt: skip
    assert r.returncode == 0, r
    return nodes_file, active_image(node.flash_dir)


def test_a_blank_board_becomes_a_node_and_a_reflash_sends_only_what_changed(
    blank: host.Emulator, tmp_path: Path
) -> None:
    node = blank.nodes[0]
    nodes_file = tmp_path / "hub" / "provisioned-nodes.toml"
    r = smartshelf_flash(str(node.port), "--node-id", "7", "--layout", str(layout_file(tmp_path)),
                         "--nodes-file", str(nodes_file))  # fmt: skip
    assert r.returncode == 0, r
    m = LINE.match(r.stdout.strip())
    assert m, r.stdout
    assert (m[1], m[3], m[5], m[8]) == ("7", "bytecode .mpy", str(node.port), "1")
    first = m[2]
    assert int(m[6]) == int(m[4]) + 4  # every module, the manifest, the loader, the config, its identity record

    # The key: in the nodes file the hub reads (owner-only), on the node, nowhere else.
    assert stat.S_IMODE(nodes_file.stat().st_mode) == 0o600
    (entry,) = tomllib.loads(nodes_file.read_text())["node"]
    assert (entry["id"], entry["port"]) == (7, str(node.port)) and len(entry["key"]) == 64
    assert entry["key"] in (node.flash_dir / "config.json").read_text()
    for text in (r.stdout, r.stderr, node.log_path.read_text()):
        assert entry["key"] not in text
    assert active_image(node.flash_dir) == first
    assert not (node.flash_dir / "fw" / "previous").exists()

    # Its id cannot be given to another node (the hub's replay marks and event numbers are this node's).
    before = snapshot(node.flash_dir)
    r = smartshelf_flash(str(node.port), "--node-id", "7", "--layout", str(layout_file(tmp_path)),
                         "--nodes-file", str(nodes_file))  # fmt: skip
    assert r.returncode == 2 and "node 7 is already provisioned for this hub" in r.stderr, r
    assert {k: v for k, v in snapshot(node.flash_dir).items() if not k.startswith("state/")} == {
        k: v for k, v in before.items() if not k.startswith("state/")
    }

    # The same firmware again: nothing to send; the node keeps its config and key, boots again (boot 2 was the
    # reset after the refusal: the probe had stopped the firmware, and a refused flash leaves the node counting).
    r = smartshelf_flash(str(node.port), "--nodes-file", str(nodes_file))
    m = LINE.match(r.stdout.strip())
    assert m and (m[2], m[6], m[8]) == (first, "0", "3"), r

    # A new version with one module changed: the manifest, __init__ and that module go over the wire.
    r = smartshelf_flash(str(node.port), "--nodes-file", str(nodes_file), "--source", str(changed_firmware(tmp_path)))
    m = LINE.match(r.stdout.strip())
    assert m and m[2].startswith("0.1.1-") and m[6] == "3" and m[8] == "4", r
    assert active_image(node.flash_dir) == m[2]
    assert (node.flash_dir / "fw" / "previous").read_text().strip() == first
    assert tomllib.loads(nodes_file.read_text())["node"] == [entry]  # still the same node and key

    # The active image damaged on the board (a module gone): the loader boots the previous one.
    second = m[2]
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", str(node.port), "fs", "rm",
                        f":fw/{second}/firmware/reports.mpy", "+", "reset"], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r
    deadline = time.monotonic() + 20
    while node.log_path.read_text().count(f"firmware image {first}") < 4 and time.monotonic() < deadline:
        blank.poll()
        time.sleep(0.05)
    assert node.log_path.read_text().count(f"firmware image {first}") == 4  # three boots of the first, now this


def test_an_install_killed_half_way_leaves_the_old_firmware_booting_and_the_retry_completes(
    blank: host.Emulator, tmp_path: Path
) -> None:
    node = blank.nodes[0]
    nodes_file, old = provisioned(node, tmp_path, 3)
    before = snapshot(node.flash_dir)
    source = changed_firmware(tmp_path, "(0, 9, 0)")
    args = [sys.executable, "-m", "hub.cli", "flash", str(node.port), "--nodes-file", str(nodes_file), "--no-mpy",
            "--source", str(source)]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        staged: list[Path] = []
        while time.monotonic() < deadline and len(staged) < 5:  # a few of the new image's files are on the board
            blank.poll()
            staged = [p for p in (node.flash_dir / "fw").rglob("*.py") if old not in p.parts]
            time.sleep(0.05)
        assert len(staged) >= 5, "the install never started copying"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the technician pulls the cable: smartshelf flash and mpremote die
        proc.wait()
    assert active_image(node.flash_dir) == old
    after = snapshot(node.flash_dir)
    assert {k: v for k, v in after.items() if not k.startswith(("fw/0.9.0", "state/"))} == {
        k: v for k, v in before.items() if not k.startswith("state/")
    }

    # Power cycle: it boots the firmware it ran before (the staged copy is ignored) and says hello.
    boots = node.log_path.read_text().count(f"firmware image {old}")
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", str(node.port), "reset"], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r
    deadline = time.monotonic() + 20
    while node.log_path.read_text().count(f"firmware image {old}") == boots and time.monotonic() < deadline:
        blank.poll()
        time.sleep(0.05)
    assert node.log_path.read_text().count(f"firmware image {old}") == boots + 1

    r = smartshelf_flash(*args[4:])
    m = LINE.match(r.stdout.strip())
    assert m and m[2].startswith("0.9.0-") and m[3] == "sources", r
    assert active_image(node.flash_dir) == m[2]
    assert (node.flash_dir / "fw" / "previous").read_text().strip() == old


def test_a_firmware_that_installs_but_never_says_hello_is_switched_back(blank: host.Emulator, tmp_path: Path) -> None:
    node = blank.nodes[0]
    nodes_file, good = provisioned(node, tmp_path, 4)
    broken = changed_firmware(tmp_path, "(0, 3, 0)")
    app = broken / "firmware" / "app.py"
    app.write_text(
        app.read_text().replace(
            "def start() -> None:\n", "def start() -> None:\n    raise RuntimeError('broken build')\n"
        )
    )
    r = smartshelf_flash(str(node.port), "--nodes-file", str(nodes_file), "--source", str(broken), "--wait", "8")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r
    assert (
        "no hello from node 4 with firmware 0.3.0 within 8 s" in r.stderr
        and f"switched back to firmware {good}" in r.stderr
    )
    assert active_image(node.flash_dir) == good
    assert "RuntimeError: broken build" in node.log_path.read_text()

    def since_the_crash() -> str:
        return node.log_path.read_text().rpartition("RuntimeError: broken build")[2]

    deadline = time.monotonic() + 20
    while f"firmware image {good}" not in since_the_crash() and time.monotonic() < deadline:
        blank.poll()
        time.sleep(0.05)
    images = re.findall(r"firmware image (\S+)", since_the_crash())
    assert images and set(images) == {good}, images  # it runs the good firmware again (a loaded machine may reboot it)


def test_a_firmware_that_never_reaches_the_hub_is_given_up_by_the_loader(blank: host.Emulator, tmp_path: Path) -> None:
    """Installed without waiting for its hello (``--no-wait``), a firmware that crashes after it loads (the board
    resets every 5 s) is on trial: the loader gives it three boots, then switches back to the previous image for
    good, which runs again."""
    node = blank.nodes[0]
    nodes_file, good = provisioned(node, tmp_path, 5)
    assert not (node.flash_dir / "fw" / "trial").exists()  # a first install has nothing to go back to
    broken = changed_firmware(tmp_path, "(0, 4, 0)")
    code = broken / "firmware" / "node.py"
    code.write_text(
        code.read_text() + "\n\nasync def run(board, on_session_up=None):\n    raise RuntimeError('crash')\n"
    )
    r = smartshelf_flash(str(node.port), "--nodes-file", str(nodes_file), "--source", str(broken), "--no-wait")
    assert r.returncode == 0, r
    bad = active_image(node.flash_dir)
    assert bad != good and (node.flash_dir / "fw" / "trial").read_text().strip() == bad
    given_up = f"firmware image {bad} did not reach the hub in 3 boots: back to {good}"
    deadline = time.monotonic() + 90
    while given_up not in node.log_path.read_text() and time.monotonic() < deadline:
        blank.poll()
        time.sleep(0.1)
    log = node.log_path.read_text()
    assert given_up in log, log[-2000:]
    assert log.count("RuntimeError: crash") == 3
    blank.poll()
    deadline = time.monotonic() + 20
    while node.log_path.read_text().count(f"firmware image {good}") < 2 and time.monotonic() < deadline:
        blank.poll()
        time.sleep(0.05)
    assert active_image(node.flash_dir) == good
    assert not (node.flash_dir / "fw" / "trial").exists() and not (node.flash_dir / "fw" / "previous").exists()


def test_a_reflash_while_an_image_is_on_trial_keeps_the_confirmed_one_as_the_fallback(
    blank: host.Emulator, tmp_path: Path
) -> None:
    """Image A installed (no hub here: it stays on trial), then image B before A proved itself: the fallback is the
    last confirmed image, not A, which goes."""
    node = blank.nodes[0]
    nodes_file, good = provisioned(node, tmp_path, 6)
    a = changed_firmware(tmp_path / "a", "(0, 5, 0)")
    r = smartshelf_flash(str(node.port), "--nodes-file", str(nodes_file), "--source", str(a), "--no-mpy")
    assert r.returncode == 0, r
    image_a = active_image(node.flash_dir)
    assert (node.flash_dir / "fw" / "trial").read_text().strip() == image_a
    b = changed_firmware(tmp_path / "b", "(0, 6, 0)", "delivery.py")
    r = smartshelf_flash(str(node.port), "--nodes-file", str(nodes_file), "--source", str(b), "--no-mpy")
    assert r.returncode == 0, r
    image_b = active_image(node.flash_dir)
    assert image_b.startswith("0.6.0-")
    assert (node.flash_dir / "fw" / "previous").read_text().strip() == good
    assert (node.flash_dir / "fw" / "trial").read_text().strip() == image_b
    assert sorted(p.name for p in (node.flash_dir / "fw").iterdir() if p.is_dir()) == sorted([good, image_b])


def _talker(fd: int, stop: threading.Event) -> None:
    """Something on a serial port that is not MicroPython: it chatters and never answers."""
    while not stop.is_set():
        try:
            os.write(fd, b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")
            while True:
                os.read(fd, 4096)
        except BlockingIOError:
            pass
        except OSError:
            return
        stop.wait(0.2)


def test_every_refusal_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    emu = host.Emulator([1], build("idle", [1]), tmp_path / "emu", blank=True, flash_bytes=48 * 1024,
                        out=lambda s: None)  # fmt: skip
    emu.start()
    master, slave = os.openpty()
    os.set_blocking(master, False)
    stop = threading.Event()
    talker = threading.Thread(target=_talker, args=(master, stop), daemon=True)
    talker.start()
    try:
        node = emu.nodes[0]
        port = str(node.port)
        layout = layout_file(tmp_path)
        nodes_file = tmp_path / "nodes.toml"
        before = snapshot(node.flash_dir)

        def refused(rc: int, message: str, *args: str) -> None:
            r = smartshelf_flash(*args)
            assert r.returncode == rc, r
            assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r
            assert r.stderr.startswith("smartshelf flash: ") and message in r.stderr, r
            assert snapshot(node.flash_dir) == before
            assert not nodes_file.exists()

        new = ("--node-id", "5", "--layout", str(layout), "--nodes-file", str(nodes_file))
        refused(1, "no such port: /dev/ttyNOPE", "/dev/ttyNOPE", *new)
        with serial.Serial(port, 115200, exclusive=True):
            refused(1, "port busy", port, *new)
        refused(1, "not MicroPython", os.ttyname(slave), *new)
        refused(1, "flash full: the firmware needs", port, *new)
        refused(
            1, "wrong arch: the board is bytecode only, --arch asks for xtensawin", port, "--arch", "xtensawin", *new
        )
        refused(2, "--nodes-file is needed", port, "--node-id", "5", "--layout", str(layout))
        refused(2, "a new node needs both --node-id and --layout", port, "--node-id", "5")
        refused(2, "the board has no node config", port, "--nodes-file", str(nodes_file))
        bad = tmp_path / "bad.json"
        bad.write_text('{"lanes": [{"cells": [[4, 5]]}, {"cells": [[5, 6]]}]}')
        refused(2, f"{bad}: lanes[1].cells[0]: pin 5 is already used", port, "--node-id", "5", "--layout", str(bad),
                "--nodes-file", str(nodes_file))  # fmt: skip
    finally:
        stop.set()
        os.close(master)
        os.close(slave)
        emu.stop()


def probe_of(version: tuple[int, int, int], mpy: int, sysname: str) -> Probe:
    """What a board of that MicroPython version and .mpy word would answer to the probe (no image, no config)."""
    return Probe("micropython", version, mpy, sysname, sysname, 4096, 500, 400, "", "", "", {}, "", None, ())


def test_unsupported_micropython_is_refused() -> None:
    with pytest.raises(DeviceError, match=r"unsupported MicroPython 1\.19\.1 \(needs 1\.22 or newer\)"):
        check_board("/dev/ttyUSB0", probe_of((1, 19, 1), 6 | (10 << 10), "esp32"), True, None)
    v5 = probe_of((1, 22, 0), 5, "rp2")
    with pytest.raises(DeviceError, match=r"loads \.mpy v5"):
        check_board("/dev/ttyACM0", v5, True, None)
    assert check_board("/dev/ttyACM0", v5, False, None) == ""  # sources still go
    assert check_board("/dev/ttyUSB0", probe_of((1, 27, 0), 6 | (10 << 10), "esp32"), True, None) == "xtensawin"
    assert check_board("/dev/ttyACM0", probe_of((1, 27, 0), 6 | (4 << 10), "rp2"), True, None) == "armv6m"


def test_a_replacement_is_checked_before_the_board_is_touched(tmp_path: Path) -> None:
    """``--replaces`` needs the new node, a nodes file and the hub's config, an id of its own, and an old node with
    lanes in the ledger; each refusal is one line, before any port is opened."""
    from hub.ledger import LedgerService, Sku
    from hub.provisioning.flash import Request, UsageError, flash
    from hub.schema import MIGRATIONS

    db = tmp_path / "ledger.db"
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'[hub]\ndatabase = "{db}"\n')

    async def seed() -> None:
        async with LedgerService(db, migrations=MIGRATIONS) as ledger:
            await ledger.add_sku(Sku("TEA", "Tea", 420), actor="t")
            await ledger.assign_lane(7, 0, "TEA", actor="t")
            await ledger.register_node(9, actor="t")

    asyncio.run(seed())
    layout, nodes = layout_file(tmp_path), tmp_path / "nodes.toml"
    stray = tmp_path / "x" / "provisioned-nodes.toml"  # not a file the hub reads
    nodes.write_text("")
    cfg.write_text(f'[hub]\ndatabase = "{db}"\nnodes_files = ["nodes.toml"]\n')
    new = Request(node_id=8, layout=layout, nodes_file=nodes, hub_config=cfg, replaces=7)
    cases = [
        (Request(node_id=8, layout=layout, nodes_file=nodes, replaces=7), "needs the new node .* --config"),
        (Request(replaces=7, hub_config=cfg, nodes_file=nodes), "needs the new node"),
        (Request(node_id=7, layout=layout, nodes_file=nodes, hub_config=cfg, replaces=7), "an id of its own"),
        (Request(node_id=8, layout=layout, nodes_file=nodes, hub_config=cfg, replaces=9), "node 9 has no lanes"),
        (Request(node_id=8, layout=layout, nodes_file=nodes, hub_config=cfg, replaces=5), "node 5 has no lanes"),
        (Request(node_id=8, layout=layout, nodes_file=stray, hub_config=cfg, replaces=7), "not listed in hub.nodes_"),
    ]
    for req, message in cases:
        with pytest.raises(UsageError, match=message):
            flash("/dev/does-not-exist", req)
    # Checked, it gets as far as the port.
    with pytest.raises(DeviceError, match="does-not-exist"):
        flash("/dev/does-not-exist", new)
