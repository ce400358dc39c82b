"""``smartshelf hub ...``: run the hub service, and talk to the running one.

* ``smartshelf hub run --config hub.toml [--status-interval S] [--log-level L]``: runs until SIGINT / SIGTERM,
  then stops reading, flushes the ledger, closes the ports and exits 0. ``hub run hub.toml`` is the same (a path
  given both ways must name the same file).
* ``smartshelf hub command --config hub.toml NODE tare LANE | calibrate LANE GRAMS | set-lane LANE SKU |
  identify SECONDS | set-count LANE COUNT``: sends the command through the running hub's control socket and prints
  the node's answer (for set-count also the physical count booked: book vs counted).
* ``smartshelf hub status --config hub.toml``: the running hub's status as JSON.
* ``smartshelf hub replace-node --config hub.toml OLD NEW``: node NEW (a board provisioned in OLD's place) takes
  over OLD's lanes (``smartshelf flash --replaces`` does this itself).

Exit codes: 0 ok; 1 the command failed (the node answered with an error status, or did not answer in time);
2 a configuration error (one line naming the setting), bad arguments (also those the running hub refuses before
sending anything: a node it does not have, a lane beyond the lanes the node reported in its hello, a set-lane for a
node not heard since the hub started), or no hub running / one already running. ``set-lane`` assigns the SKU in the
ledger only once the node has taken it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from hub.cli.args import number
from hub.config import ConfigError, HubConfig, load_config
from hub.ledger.cli import default_actor
from hub.ledger.models import LedgerError
from hub.service import HubService, heap
from hub.service.control import HubNotRunning, HubRunning, request
from hub.service.install import default_executable, install
from hub.service.watchdog import Watchdog
from hub.web.serving.tls import TlsError
from shared_protocol.messages import MAX_COUNT

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
DEFAULT_CONFIG = "hub.toml"

log = logging.getLogger("hub")


def _err(message: str) -> None:
    print(f"smartshelf hub: {message}", file=sys.stderr)


def _config(args: argparse.Namespace) -> HubConfig | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return None


# ------------------------------------------------------------------------------------------------------ run


async def _serve(cfg: HubConfig, status_interval_s: float | None) -> int:
    service = HubService(cfg)
    try:
        await service.start()
    except (HubRunning, LedgerError, OSError, ConfigError, TlsError) as exc:  # OSError: also ExposedSecret
        _err(str(exc))
        return EXIT_REFUSED
    heap.settle()  # everything the process keeps is built: the collector need not walk it again
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog = Watchdog(service.healthy)
    watchdog.ready(f"{len(cfg.nodes)} node(s), database {cfg.database}")
    feeding = asyncio.create_task(watchdog.run(stop), name="systemd-watchdog")
    try:
        await service.run(stop, status_interval_s)
        log.info("stopping: finishing the ledger's work")
    finally:
        watchdog.stopping()
        stop.set()
        await feeding
        await service.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("hub stopped")
    return EXIT_OK


def _run_config(args: argparse.Namespace) -> bool:
    """``hub run hub.toml`` means ``--config hub.toml``; both at once only when they name the same file."""
    given = args.config_file
    if given is None:
        args.config = args.config or Path(DEFAULT_CONFIG)
        return True
    if args.config is not None and args.config.resolve() != given.resolve():
        _err(f"run: {given} and --config {args.config} are two different files: give the hub's configuration once")
        return False
    args.config = given
    return True


def _run(args: argparse.Namespace) -> int:
    if not _run_config(args):
        return EXIT_REFUSED
    cfg = _config(args)
    if cfg is None:
        return EXIT_REFUSED
    level = (args.log_level or cfg.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    return asyncio.run(_serve(cfg, args.status_interval))


# ------------------------------------------------------------------------------------------------- command


def _request(args: argparse.Namespace) -> dict[str, Any]:
    req: dict[str, Any] = {"op": "command", "node": args.node, "command": args.verb, "timeout_s": args.timeout}
    req["actor"] = args.actor or default_actor()
    if args.verb in ("tare", "calibrate", "set-lane", "set-count"):
        req["lane"] = args.lane
    if args.verb == "set-count":
        req["count"] = args.count
    if args.verb == "calibrate":
        req["grams"] = args.grams
    if args.verb == "set-lane":
        req["sku"] = args.sku
    if args.verb == "identify":
        req["seconds"] = args.seconds
    return req


def _command(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return EXIT_REFUSED
    reply = _ask(cfg, _request(args), args.timeout + 5)
    if isinstance(reply, int):
        return reply
    args_text = " ".join(f"{k} {v}" for k, v in sorted(reply.get("args", {}).items()))
    print(
        f"node {reply['node']}: {reply['command']} {args_text}: {reply['status']} (value {reply['value']}, "
        f"{reply['elapsed_s']} s)"
    )
    count = reply.get("count")
    if isinstance(count, dict):
        print(count.get("summary"))
    return EXIT_OK if reply.get("status") == "ok" else EXIT_FAILED


def _ask(cfg: HubConfig, payload: dict[str, Any], timeout_s: float, retry: str = "") -> dict[str, Any] | int:
    """The running hub's reply to one control request, or the exit status after saying why there is none (no hub,
    no answer in time: ``retry`` is appended, or the hub refused)."""
    try:
        reply = asyncio.run(request(cfg.control_socket, payload, timeout_s=timeout_s))
    except HubNotRunning as exc:
        _err(str(exc))
        return EXIT_REFUSED
    except (TimeoutError, OSError, ValueError) as exc:
        _err(f"no answer from the hub: {exc or type(exc).__name__}{retry}")
        return EXIT_FAILED
    if not reply.get("ok"):
        _err(str(reply.get("error")))
        return EXIT_REFUSED if reply.get("bad_args") else EXIT_FAILED
    return reply


def _replace_node(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return EXIT_REFUSED
    payload = {"op": "replace-node", "old": args.old, "new": args.new, "actor": args.actor or default_actor()}
    reply = _ask(cfg, payload, 120.0, " (run it again: it says so if the lanes have moved)")
    if isinstance(reply, int):
        return reply
    print(f"node {args.new} took over the lanes of node {args.old}: {', '.join(reply['lanes'])}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return EXIT_REFUSED
    reply = _ask(cfg, {"op": "status"}, 10.0)
    if isinstance(reply, int):
        return reply
    print(json.dumps(reply.get("status"), indent=2, sort_keys=True))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------- parser


_positive = number(float, lambda v: v > 0, "must be greater than 0")
_grams = number(float, lambda v: 0.1 <= v <= 100_000, "the known weight must be 0.1 g .. 100 kg")
_lane = number(int, lambda v: 0 <= v <= 31, "a lane is 0..31", "a lane number")
_seconds = number(int, lambda v: 0 <= v <= 255, "identify takes 0..255 seconds (0 stops)", "a whole number of seconds")
_node = number(int, lambda v: 1 <= v <= 0xFFFFFFFF, "a node id is 1..4294967295", "a node id")
_count = number(int, lambda v: 0 <= v <= MAX_COUNT, f"a count is 0..{MAX_COUNT:,} units", "a whole number of units")


def _install_service(args: argparse.Namespace) -> int:
    executable = Path(args.executable) if args.executable else default_executable()
    if not executable.is_absolute() or not os.access(executable, os.X_OK):
        _err(f"--executable: {executable} is not an executable file given by its absolute path")
        return EXIT_REFUSED
    try:
        install(Path(args.root), executable, enable=args.enable)
    except (OSError, subprocess.CalledProcessError) as exc:
        _err(f"install-service: {exc}")
        return EXIT_FAILED
    return EXIT_OK


def add_hub_parser(sub: Any) -> None:
    hub = sub.add_parser("hub", help="run the hub service, or send commands to the running hub")
    verbs = hub.add_subparsers(dest="hub_command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG), help="hub.toml (default ./hub.toml)")

    run = verbs.add_parser(
        "run",
        help="run the hub: serial ports and BLE -> ingest -> ledger, until SIGINT/SIGTERM",
        description="Opens the configured serial ports (waiting for unplugged ones) and, for nodes with link = ble, "
        "the BLE adapter (scanning for their beacons, connecting when there is something to carry), completes each "
        "node's hello, "
        "books verified events in the ledger and acknowledges them after commit. Stops cleanly on SIGINT/SIGTERM.",
    )
    run.add_argument("--config", type=Path, help="hub.toml (default ./hub.toml)")
    run.add_argument("config_file", nargs="?", type=Path, metavar="HUB_TOML", help="the same as --config HUB_TOML")
    run.add_argument("--status-interval", type=_positive, metavar="S", help="log a status line every S seconds")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides hub.log_level")
    run.set_defaults(func=_run)

    cmd = verbs.add_parser(
        "command",
        help="send a command to a node through the running hub and print its answer",
        description="tare LANE | calibrate LANE GRAMS | set-lane LANE SKU (assigns the SKU in the ledger too, once "
        "the node has taken it; a lane the node does not have is refused) | "
        "identify SECONDS | set-count LANE COUNT (the units staff counted on the lane: the node's count, and a "
        "physical count of the lane's book stock)",
    )
    with_config(cmd)
    cmd.add_argument("--timeout", type=_positive, default=10.0, metavar="S", help="wait this long (default 10)")
    cmd.add_argument("--actor", help="who asks (recorded in the audit trail; default cli:<user>)")
    cmd.add_argument("node", type=int, metavar="NODE", help="node id")
    actions = cmd.add_subparsers(dest="verb", required=True, metavar="ACTION")
    tare = actions.add_parser("tare", help="zero a lane")
    tare.add_argument("lane", type=_lane, metavar="LANE")
    cal = actions.add_parser("calibrate", help="calibrate a lane with a known weight now on it")
    cal.add_argument("lane", type=_lane, metavar="LANE")
    cal.add_argument("grams", type=_grams, metavar="GRAMS")
    setl = actions.add_parser("set-lane", help="assign a SKU to a lane and send its unit weight")
    setl.add_argument("lane", type=_lane, metavar="LANE")
    setl.add_argument("sku", metavar="SKU")
    ident = actions.add_parser("identify", help="blink the node's LED")
    ident.add_argument("seconds", type=_seconds, metavar="SECONDS")
    setc = actions.add_parser(
        "set-count",
        help="the lane holds COUNT units, counted by staff (installation, recount): sets the node's count and "
        "books a physical count (book vs counted)",
    )
    setc.add_argument("lane", type=_lane, metavar="LANE")
    setc.add_argument("count", type=_count, metavar="COUNT")
    cmd.set_defaults(func=_command)

    repl = verbs.add_parser(
        "replace-node",
        help="node NEW (a board provisioned in place of OLD: replaced, or wiped) takes over OLD's lanes",
        description="The lanes keep their ids, SKUs, stock and history. NEW starts counting from 0: its first report "
        "of each lane books the lane down to its count as a sensor gap (nothing of OLD's is merged into NEW's events); "
        "then count the lanes (command NEW set-count LANE COUNT). smartshelf flash --replaces OLD does this itself.",
    )
    with_config(repl)
    repl.add_argument("--actor", help="who asks (recorded in the audit trail; default cli:<user>)")
    repl.add_argument("old", type=_node, metavar="OLD")
    repl.add_argument("new", type=_node, metavar="NEW")
    repl.set_defaults(func=_replace_node)

    status = verbs.add_parser("status", help="print the running hub's status (JSON)")
    with_config(status)
    status.set_defaults(func=_status)

    svc = verbs.add_parser(
        "install-service",
        help="install the hub as a systemd service with udev rules for the node boards (Raspberry Pi)",
        description="Write the systemd unit, the udev rules for shelf-node boards, /etc/smartshelf/hub.toml and the "
        "nodes file (the last two only if missing); as root on / also create the smartshelf user. --enable then "
        "reloads systemd and udev and starts the hub.",
    )
    svc.add_argument("--root", default="/", help="install under this directory instead of / (to stage or inspect)")
    svc.add_argument("--executable", help="the smartshelf command the unit runs (default: the one beside this Python)")
    svc.add_argument("--enable", action="store_true", help="reload systemd and udev, enable and start the hub")
    svc.set_defaults(func=_install_service)
