"""``smartshelf flash``'s command line; what it does is ``hub/provisioning/flash.py``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hub.cli.args import number
from hub.config import ConfigError
from hub.provisioning import image as images
from hub.provisioning.device import DeviceError
from hub.provisioning.flash import Request, UsageError, flash
from hub.provisioning.image import ARCHS, ImageError

_seconds = number(float, lambda v: 1.0 <= v <= 3600.0, "must be 1 .. 3600 s")
_node_id = number(int, lambda n: 1 <= n <= 0xFFFFFFFF, "must be 1..4294967295", "a whole number")


def add_flash_parser(sub: Any) -> None:
    p = sub.add_parser(
        "flash",
        help="install the firmware on a shelf node over USB (mpremote) and provision it for this hub",
        description="Install the node firmware on a MicroPython board (ESP32, RP2040) over USB with mpremote: "
        "compiled for its architecture, staged, verified and switched in one step (an interrupted install leaves "
        "the old firmware booting). A new node (--node-id, --layout) gets a fresh key, registered in --nodes-file.",
    )
    p.add_argument("port", nargs="?", help="the board's serial port (default: the one board plugged in)")
    p.add_argument("--node-id", type=_node_id, help="provision a new node with this id (a new key)")
    p.add_argument("--layout", metavar="JSON", help='the new node\'s config.json without node_id and key, e.g. '
                   '{"lanes": [{"cells": [[4, 5]], "rate_sps": 80}]}')  # fmt: skip
    p.add_argument(
        "--replaces",
        type=_node_id,
        metavar="OLD_ID",
        help="the new node takes over node OLD_ID's lanes (a board replaced, or wiped): needs --config",
    )
    p.add_argument("--nodes-file", metavar="TOML", help="the nodes file the hub reads (hub.toml nodes_files)")
    p.add_argument("--config", metavar="HUB_TOML", help="hub.toml, to find an installed node's key")
    p.add_argument("--no-mpy", action="store_true", help="copy sources instead of .mpy compiled with mpy-cross")
    p.add_argument("--source", metavar="DIR", help="a checkout whose firmware/ and shared_protocol/ to install")
    p.add_argument("--arch", choices=sorted(ARCHS.values()), metavar="ARCH",
                   help="mpy-cross -march: " + ", ".join(sorted(ARCHS.values())) + " (default: the board's own; "
                   "a mismatch is refused)")  # fmt: skip
    p.add_argument("--wait", type=_seconds, default=30.0, help="seconds to wait for the node's hello (default 30)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the node's hello")
    p.add_argument("--timeout", type=_seconds, default=300.0, help="seconds for each mpremote session (default 300)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        request = Request(
            node_id=args.node_id,
            replaces=args.replaces,
            layout=Path(args.layout) if args.layout else None,
            nodes_file=Path(args.nodes_file) if args.nodes_file else None,
            hub_config=Path(args.config) if args.config else None,
            compiled=not args.no_mpy,
            arch=args.arch,
            source=Path(args.source) if args.source else images.SOURCE,
            wait_s=None if args.no_wait else args.wait,
            timeout_s=args.timeout,
        )
        flash(args.port, request)
    except (UsageError, ConfigError) as err:
        print(f"smartshelf flash: {err}", file=sys.stderr)
        return 2
    except (DeviceError, ImageError, OSError) as err:
        print(f"smartshelf flash: {err}", file=sys.stderr)
        return 1
    return 0
