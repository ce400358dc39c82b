"""The hub as a Raspberry Pi service: ``smartshelf hub install-service`` (unit, udev rules, hub.toml, nodes file),
the unit checked by ``systemd-analyze verify``, the rules parsed by udev itself (``udevadm test`` with the rules in a
private mount namespace), and the hub speaking systemd's notify protocol: ready, a fed watchdog, stopping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from hub.config.web import WebConfig
from hub.service.install import BOARDS, NODES_FILE, RULES, UNIT
from tools.mpy_runtime import REPO_ROOT


def needs(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = f"{', '.join(missing)} missing (make bootstrap installs them)"
        if os.environ.get("SMARTSHELF_ALLOW_NO_SYSTEMD") == "1":
            pytest.skip(f"{msg}; SMARTSHELF_ALLOW_NO_SYSTEMD=1")
        pytest.fail(msg, pytrace=False)


def install_service(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "hub", "install-service", "--root", str(root), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def test_install_service_writes_the_unit_rules_config_and_nodes_file_and_keeps_what_exists(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = install_service(root)
    assert r.returncode == 0, r
    unit = root / "etc/systemd/system" / UNIT
    rules = root / "etc/udev/rules.d" / RULES
    config = root / "etc/smartshelf/hub.toml"
    nodes = root / NODES_FILE.relative_to("/")
    for path, mode in ((unit, 0o644), (rules, 0o644), (config, 0o640), (nodes, 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    text = unit.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30",
        "TimeoutStartSec=15min",  # a large ledger's migrations run before READY
        "Restart=on-failure",
        "StateDirectory=smartshelf",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyACM rw",
        "DeviceAllow=char-ttyUSB rw",
        "SupplementaryGroups=dialout",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "After=network.target bluetooth.target",
        f"ExecStart={Path(sys.executable).with_name('smartshelf')} hub run --config /etc/smartshelf/hub.toml",
    ):
        assert line in text.splitlines(), line  # fmt: skip
    hub = tomllib.loads(config.read_text())["hub"]
    assert hub["nodes_files"] == [str(NODES_FILE)] and hub["database"].startswith("/var/lib/smartshelf/")
    web = tomllib.loads(config.read_text())["web"]  # the page as the hub serves it: HTTPS on its default port
    assert (web["host"], web["port"], web.get("tls", "auto")) == ("127.0.0.1", WebConfig().port, WebConfig().tls)
    for vid, pid, name, _ in BOARDS:
        (line,) = [x for x in rules.read_text().splitlines() if f'ATTRS{{idVendor}}=="{vid}"' in x]
        assert (f'ATTRS{{idProduct}}=="{pid}"' in line) == bool(pid)
        assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in line and f'SYMLINK+="smartshelf/{name}-' in line

    config.write_text(config.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"'))
    nodes.write_text(nodes.read_text() + "\n# a node\n")
    r = install_service(root)
    assert r.returncode == 0 and f"kept {config}" in r.stdout and f"kept {nodes}" in r.stdout, r
    assert 'host = "0.0.0.0"' in config.read_text() and "# a node" in nodes.read_text()

    r = install_service(root, "--executable", "bin/smartshelf")
    assert r.returncode == 2 and "--executable: bin/smartshelf is not an executable file" in r.stderr, r


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    needs("systemd-analyze")
    root = tmp_path / "root"
    assert install_service(root).returncode == 0
    r = subprocess.run(["systemd-analyze", "verify", str(root / "etc/systemd/system" / UNIT)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r
    assert UNIT not in r.stdout + r.stderr, r  # no warning about our unit


def test_udev_parses_the_rules(tmp_path: Path) -> None:
    needs("udevadm", "unshare", "mount")
    if os.geteuid() != 0:
        msg = "udev's rule check needs root (a private mount namespace over /etc/udev/rules.d)"
        if os.environ.get("SMARTSHELF_ALLOW_NO_SYSTEMD") == "1":
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)
    root = tmp_path / "root"
    assert install_service(root).returncode == 0
    rules_dir = root / "etc/udev/rules.d"
    script = f"mount --bind {rules_dir} /etc/udev/rules.d && udevadm test --action=add /sys/class/tty/tty0"
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert f"Reading rules file: /etc/udev/rules.d/{RULES}" in out, out
    assert [line for line in out.splitlines() if RULES in line and "Reading rules file" not in line] == [], out


def test_the_hub_is_ready_feeds_the_watchdog_and_says_it_stops(tmp_path: Path) -> None:
    (tmp_path / "hub.toml").write_text('[hub]\ndatabase = "ledger.db"\n')
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify), WATCHDOG_USEC="400000")
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "hub", "run", "--config", str(tmp_path / "hub.toml")],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        first = sock.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=0 node(s), database "), first
        t0 = time.monotonic()
        feeds = [sock.recv(4096).decode() for _ in range(4)]
        assert feeds == ["WATCHDOG=1"] * 4 and time.monotonic() - t0 < 3.0  # every 0.2 s: half of WATCHDOG_USEC
        proc.send_signal(signal.SIGTERM)
        rest = []
        while "STOPPING=1" not in rest:
            rest.append(sock.recv(4096).decode())
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
