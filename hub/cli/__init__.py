"""The ``smartshelf`` command: the hub's own commands, plus the ones other installed packages register.

The hub's commands (``hub``, ``flash``, ``ledger``, ``reconcile``, ``users``, ``api-clients``, ``central``) are
defined beside their subsystems (``hub.cli.hub_commands``, ``hub.cli.flash_command``, ``hub.ledger.cli``,
``hub.reconcile.cli``, ``hub.web.cli``, ``hub.central.cli``) and always present (``central`` needs the ``central``
extra to run, and says so without it). Developer
commands (``emulate``, ``demo``, ``bench``, ``replay``) live in ``tools/`` and are registered only where the
``smartshelf-tools`` distribution is installed (a development checkout: ``make bootstrap``): it names a function
``register(subparsers)`` in the ``smartshelf.commands`` entry-point group. A hub installed on a Raspberry Pi has no
tools, and no such commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, cast

from hub.central.cli import add_central_parser
from hub.cli.flash_command import add_flash_parser
from hub.cli.hub_commands import add_hub_parser
from hub.ledger.cli import add_ledger_parser
from hub.reconcile.cli import add_reconcile_parser
from hub.schema import MIGRATIONS
from hub.web.cli import add_api_clients_parser, add_users_parser

PLUGIN_GROUP = "smartshelf.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartshelf", description="Smart-shelf perpetual inventory")
    parser.set_defaults(migrations=MIGRATIONS)  # the database's schema, for every subcommand that opens it
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_hub_parser(sub)
    add_ledger_parser(sub)
    add_reconcile_parser(sub)
    add_users_parser(sub)
    add_api_clients_parser(sub)
    add_flash_parser(sub)
    add_central_parser(sub)
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        register = cast(Callable[[Any], None], ep.load())
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc
