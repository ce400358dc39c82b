"""``smartshelf central install-service [run] [serve]``: the central tier's consumer and page as systemd services.

Writes (under ``--root``, ``/`` by default), with the hub's unit-writing pieces (``hub.service.install``):

* ``/etc/systemd/system/smartshelf-central.service``: ``smartshelf central run --config <central.toml>``, the
  consumer (MQTT -> PostgreSQL);
* ``/etc/systemd/system/smartshelf-central-web.service``: ``smartshelf central serve --config <central.toml>``, the
  page and API, with write access to ``central-web.tls/`` beside central.toml only (where ``tls = "auto"`` keeps the
  certificate it generates; created here, the service user's, 0700).

Each runs as the system user ``smartshelf-central`` (created when installing as root on ``/``), after
``network-online.target`` (wanted) and, when they run on this machine, ``postgresql.service`` and (the consumer)
``mosquitto.service``; with the hub's sandboxing (``HARDENING``) and no devices. ``Restart=on-failure``, never given
up (``StartLimitIntervalSec=0``): from 5 s doubling to 5 min between restarts on systemd >= 254
(``RestartSteps=``), a fixed 30 s on older ones (Debian 12 has 252), which ignore those settings; exit status 2 (a
configuration error, a database of a newer schema, a missing extra: a restart cannot fix it) is not restarted.
Either command rides out PostgreSQL or the broker being away on its own (reconnecting with back-off), so a restart
means a crash or an error no retry fixes.

central.toml is the operator's (its database and broker settings cannot be guessed): it is never written; as root
on ``/`` an existing one is made ``root:smartshelf-central 0640`` (the default directory ``/etc/smartshelf-central``
too, ``0750``; another one is left as it is), the layout the secrets' check accepts (``hub.private_files``).
``--enable`` refuses while it is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hub.service.install import (
    HARDENING,
    default_executable,
    ensure_system_user,
    finish,
    is_real_root,
    under_root,
    write_file,
)

USER = "smartshelf-central"
CONFIG = Path("/etc/smartshelf-central/central.toml")
UNITS = {"run": "smartshelf-central.service", "serve": "smartshelf-central-web.service"}
RESTART_STEPS_SINCE = 254  # systemd's RestartSteps= / RestartMaxDelaySec=
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2

_WHAT = {
    "run": ("Smart-shelf central consumer: every store's ledger from the MQTT broker into PostgreSQL",
            "postgresql.service mosquitto.service"),
    "serve": ("Smart-shelf central page and API: every store's stock, alerts, shrink and reorders",
              "postgresql.service"),
}  # fmt: skip


def tls_dir(config: Path) -> Path:
    """Where ``central serve`` keeps a self-signed certificate: ``central-web.tls/`` beside central.toml
    (``hub.central.web.config.CentralWebConfig.self_signed_base``)."""
    return config.with_name("central-web.tls")


def systemd_version() -> int | None:
    """This machine's systemd (``systemctl --version``), None when there is none."""
    try:
        done = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    found = re.match(r"systemd (\d+)", done.stdout)
    return int(found.group(1)) if found else None


def restart_lines(systemd: int | None) -> str:
    """Restart on failure, never given up; a back-off where systemd has one (unknown settings would be warned of)."""
    lines = "Restart=on-failure\nRestartPreventExitStatus=2\n"
    if systemd is not None and systemd >= RESTART_STEPS_SINCE:
        return lines + "RestartSec=5s\nRestartSteps=6\nRestartMaxDelaySec=5min\n"
    return lines + f"# systemd < {RESTART_STEPS_SINCE} has no back-off (RestartSteps=): a fixed delay\nRestartSec=30s\n"


def unit_text(which: str, executable: Path, config: Path = CONFIG, *, user: str = USER,
              systemd: int | None = None) -> str:  # fmt: skip
    """The unit of ``central run`` (``which`` = "run") or ``central serve`` ("serve")."""
    description, servers = _WHAT[which]
    writable = f"ReadWritePaths=-{tls_dir(config)}\n" if which == "serve" else ""  # "-": fine when removed
    return f"""# {description.split(":")[0]} (smartshelf central install-service {which})
[Unit]
Description={description}
Wants=network-online.target
After=network-online.target {servers}
StartLimitIntervalSec=0

[Service]
Type=exec
ExecStart={executable} central {which} --config {config}
User={user}
Group={user}
{restart_lines(systemd)}TimeoutStopSec=60
WorkingDirectory=/
{HARDENING}PrivateDevices=yes
{writable}
[Install]
WantedBy=multi-user.target
"""


def install(root: Path, executable: Path, which: Sequence[str], config: Path = CONFIG, *, enable: bool = False,
            systemd: int | None = None, out: Callable[[str], None] = print) -> None:  # fmt: skip
    """Write the units of ``which`` under ``root`` (and ``central-web.tls/`` for serve); on the real root as root,
    create the user and hand it central.toml; ``enable``: reload systemd and start them."""
    units = [UNITS[w] for w in which]
    for w in which:
        text = unit_text(w, executable, config, systemd=systemd)
        write_file(under_root(root, Path("/etc/systemd/system") / UNITS[w]), text, 0o644, keep=False, out=out)
    staged_config = under_root(root, config)
    staged_config.parent.mkdir(parents=True, exist_ok=True)
    if "serve" in which:
        staged_tls = under_root(root, tls_dir(config))
        staged_tls.mkdir(mode=0o700, exist_ok=True)
        os.chmod(staged_tls, 0o700)
    if is_real_root(root):
        ensure_system_user(USER, Path("/nonexistent"), out=out)
        if config.parent == CONFIG.parent:  # ours: another directory (/etc itself?) is left as it is
            shutil.chown(config.parent, "root", USER)
            os.chmod(config.parent, 0o750)
        if config.is_file():
            shutil.chown(config, "root", USER)
            os.chmod(config, 0o640)
            out(f"{config}: root:{USER} 0640")
        if "serve" in which:
            shutil.chown(tls_dir(config), USER, USER)
    if not staged_config.is_file():
        out(f"no {config} yet: write it before starting (hub/central/README.md)")
    finish(root, [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", *units]], enable=enable, out=out)


def _install_service(args: argparse.Namespace) -> int:
    def err(message: str) -> int:
        print(f"smartshelf central: install-service: {message}", file=sys.stderr)
        return EXIT_REFUSED

    unknown = [w for w in args.which if w not in UNITS]
    if unknown:
        return err(f"{', '.join(unknown)}: the services are {' and '.join(UNITS)}")
    executable = Path(args.executable) if args.executable else default_executable()
    if not executable.is_absolute() or not os.access(executable, os.X_OK):
        return err(f"--executable: {executable} is not an executable file given by its absolute path")
    config = Path(args.config)
    if not config.is_absolute():
        return err(f"--config: {config} must be an absolute path (the service's view of it)")
    root = Path(args.root)
    if args.enable and not under_root(root, config).is_file():
        return err(f"--enable: {config} does not exist; write it first (hub/central/README.md)")
    which = sorted(set(args.which or UNITS), key=list(UNITS).index)
    try:
        install(root, executable, which, config, enable=args.enable, systemd=systemd_version())
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"smartshelf central: install-service: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def add_install_parser(verbs: Any) -> None:
    """``smartshelf central install-service``."""
    svc = verbs.add_parser(
        "install-service",
        help="install central run (the consumer) and/or central serve (the page) as systemd services",
        description="Write the systemd units of the consumer (run) and the page (serve), both by default; as root "
        "on / also create the smartshelf-central user and give it central.toml (root:smartshelf-central 0640). "
        "--enable then reloads systemd and starts them. central.toml itself is never written.",
    )
    # no choices=: argparse refuses an empty list against them
    svc.add_argument("which", nargs="*", metavar="{run,serve}", help="run, serve (default: both)")
    svc.add_argument("--config", default=str(CONFIG), help=f"central.toml as the services read it (default {CONFIG})")
    svc.add_argument("--root", default="/", help="install under this directory instead of / (to stage or inspect)")
    svc.add_argument("--executable", help="the smartshelf command the units run (default: the one beside this Python)")
    svc.add_argument("--enable", action="store_true", help="reload systemd, enable and start the services")
    svc.set_defaults(func=_install_service)
