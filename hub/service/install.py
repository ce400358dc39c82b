"""``smartshelf hub install-service``: the hub as a system service on a Raspberry Pi.

Writes (under ``--root``, ``/`` by default; an existing ``hub.toml`` or nodes file is never overwritten):

* ``/etc/systemd/system/smartshelf-hub.service``: ``Type=notify`` with the watchdog the hub feeds
  (``hub/service/watchdog.py``), a dedicated system user in ``dialout``, ``StateDirectory=smartshelf``
  (``/var/lib/smartshelf``: the ledger, backups, the nodes file), ``ProtectSystem=strict``, only the serial
  devices (``DevicePolicy=closed``, ttyACM / ttyUSB), D-Bus for Bluetooth (``AF_UNIX``), ``Restart=on-failure``;
* ``/etc/udev/rules.d/70-smartshelf.rules``: shelf-node boards (RP2040 MicroPython 2e8a:0005, ESP32 behind
  CP210x 10c4:ea60 or CH340 1a86:7523, native ESP32 USB 303a:*) in group ``dialout``, left alone by ModemManager
  (``ID_MM_DEVICE_IGNORE``), with a stable link ``/dev/smartshelf/<board>-<serial or USB path>``;
* ``/etc/smartshelf/hub.toml`` and ``/var/lib/smartshelf/provisioned-nodes.toml`` (what ``smartshelf flash``
  fills), if they are not there yet.

With ``--root /`` as root it also creates the user; ``--enable`` then reloads systemd and udev and starts the
hub. Everything else is printed as the commands to run.

The pieces any smartshelf unit is made of are shared with ``smartshelf central install-service``
(``hub/central/service.py``): ``HARDENING`` (the sandboxing every unit gets), ``write_file`` (atomic, with its mode;
``keep``: never overwrite), ``under_root``, ``ensure_system_user`` and ``finish`` (run the systemctl commands, or
print them).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

UNIT = "smartshelf-hub.service"
RULES = "70-smartshelf.rules"
USER = "smartshelf"
STATE = Path("/var/lib/smartshelf")
CONFIG = Path("/etc/smartshelf/hub.toml")
NODES_FILE = STATE / "provisioned-nodes.toml"
# (vid, pid or "" for any, name used in the stable link, the attribute that names one board)
BOARDS = (
    ("2e8a", "0005", "rp2040", "ID_SERIAL_SHORT"),
    ("10c4", "ea60", "esp32-cp210x", "ID_PATH"),  # CP210x bridges often carry no serial number: the USB path
    ("1a86", "7523", "esp32-ch340", "ID_PATH"),
    ("303a", "", "esp32", "ID_SERIAL_SHORT"),
)


# The sandboxing of every smartshelf unit: a read-only system but for the unit's own directories, no privileges, no
# capabilities, IP and Unix sockets only, kernel and clock out of reach. Units add what they need (the hub: devices).
HARDENING = """UMask=0077
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
NoNewPrivileges=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
CapabilityBoundingSet=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
"""


def unit_text(executable: Path, config: Path = CONFIG, user: str = USER) -> str:
    return f"""# The smart-shelf hub (smartshelf hub install-service)
[Unit]
Description=Smart-shelf hub: shelf nodes, perpetual-inventory ledger, status page
After=network.target bluetooth.target
Wants=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={executable} hub run --config {config}
User={user}
Group={user}
SupplementaryGroups=dialout
Restart=on-failure
RestartSec=5
WatchdogSec=30
# READY comes after the ledger's migrations: the first start after an upgrade may rebuild tables of a large ledger
# (migration 11: about 20 s per million movements on a desktop, several times that on a Pi's SD card)
TimeoutStartSec=15min
TimeoutStopSec=60
StateDirectory=smartshelf
StateDirectoryMode=0700
ConfigurationDirectory=smartshelf
ConfigurationDirectoryMode=0750
WorkingDirectory=/var/lib/smartshelf
{HARDENING}DevicePolicy=closed
DeviceAllow=char-ttyACM rw
DeviceAllow=char-ttyUSB rw

[Install]
WantedBy=multi-user.target
"""


def rules_text() -> str:
    lines = [
        "# Smart-shelf node boards (smartshelf hub install-service): group dialout for the hub, ModemManager keeps",
        "# off them, a stable link /dev/smartshelf/<board>-<serial or USB path> that survives replugging.",
    ]
    for vid, pid, name, ident in BOARDS:
        match = f'SUBSYSTEM=="tty", ATTRS{{idVendor}}=="{vid}"'
        if pid:
            match += f', ATTRS{{idProduct}}=="{pid}"'
        lines.append(
            f'{match}, ENV{{ID_MM_DEVICE_IGNORE}}="1", GROUP="dialout", MODE="0660", '
            f'SYMLINK+="smartshelf/{name}-$env{{{ident}}}"'
        )
    return "\n".join(lines) + "\n"


def hub_toml_text() -> str:
    return f"""# The smart-shelf hub (smartshelf hub install-service); the settings: hub/README.md
[hub]
database = "{STATE / "smartshelf.db"}"
backup_dir = "{STATE / "backups"}"
nodes_files = ["{NODES_FILE}"]   # smartshelf flash --nodes-file {NODES_FILE} adds the nodes it provisions

[web]
host = "127.0.0.1"   # "0.0.0.0" serves the status page to the shop's network
port = 8443          # HTTPS: a self-signed certificate made on first start (its fingerprint is logged), or
                     # certificate / private_key (PEM); tls = "off" (plain HTTP) is accepted only on loopback
"""


def write_file(path: Path, text: str, mode: int, *, keep: bool, out: Callable[[str], None]) -> None:
    """Write ``text`` to ``path`` with ``mode`` (whatever the umask) through a temporary file renamed over it;
    ``keep``: leave an existing file as it is."""
    if keep and path.exists():
        out(f"kept {path}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    out(f"wrote {path}")


def under_root(root: Path, path: Path) -> Path:
    """``path`` (absolute) as installed under ``root``."""
    return root / path.relative_to("/")


def is_real_root(root: Path) -> bool:
    """Installing onto this machine (not staging under a directory) as root: users, owners and systemctl apply."""
    return root.resolve() == Path("/") and os.geteuid() == 0


def ensure_system_user(name: str, home: Path, groups: Sequence[str] = (), *, out: Callable[[str], None]) -> None:
    """A system user (no login shell) named ``name``, created unless it exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        extra = ["--groups", ",".join(groups)] if groups else []
        useradd = ["useradd", "--system", "--home-dir", str(home), "--no-create-home", "--shell", "/usr/sbin/nologin"]
        subprocess.run([*useradd, *extra, name], check=True)
        out(f"created the system user {name}")


def finish(root: Path, commands: Sequence[Sequence[str]], *, enable: bool, out: Callable[[str], None]) -> None:
    """With ``enable`` on the real root: run ``commands`` (raising ``CalledProcessError``); else print them."""
    if enable and root.resolve() == Path("/"):
        for cmd in commands:
            subprocess.run(list(cmd), check=True)
            out("ran " + " ".join(cmd))
    else:
        out("then: " + "; ".join(" ".join(c) for c in commands))


def install(root: Path, executable: Path, *, enable: bool = False, out: Callable[[str], None] = print) -> None:
    """Write the unit, the udev rules, hub.toml and the nodes file under ``root``; on the real root as root,
    create the user and hand it the state; ``enable``: reload systemd and udev, start the hub."""
    write_file(under_root(root, Path("/etc/systemd/system") / UNIT), unit_text(executable), 0o644, keep=False, out=out)
    write_file(under_root(root, Path("/etc/udev/rules.d") / RULES), rules_text(), 0o644, keep=False, out=out)
    write_file(under_root(root, CONFIG), hub_toml_text(), 0o640, keep=True, out=out)
    nodes = "# Shelf nodes provisioned by `smartshelf flash`\n"
    write_file(under_root(root, NODES_FILE), nodes, 0o600, keep=True, out=out)
    commands = [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", UNIT],
        ["udevadm", "control", "--reload-rules"],
        ["udevadm", "trigger", "--subsystem-match=tty", "--action=add"],
    ]
    if is_real_root(root):
        ensure_system_user(USER, STATE, ["dialout"], out=out)
        for path in (STATE, NODES_FILE):
            shutil.chown(path, USER, USER)
        shutil.chown(CONFIG.parent, "root", USER)
        shutil.chown(CONFIG, "root", USER)
    finish(root, commands, enable=enable, out=out)


def default_executable() -> Path:
    """The ``smartshelf`` command beside this Python (the venv the hub is installed in)."""
    return Path(sys.executable).with_name("smartshelf")
