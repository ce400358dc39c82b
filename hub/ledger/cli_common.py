"""What every command on the ledger shares (``smartshelf ledger``, ``reconcile``, ``users``, ``api-clients``): the
database (``--db``, else ``--config hub.toml``'s ``[hub] database``, else ``$SMARTSHELF_DB``, else
``./smartshelf.db``), the refusal of a missing one (only ``ledger init``, ``ledger restore`` and the hub create a
ledger), the actor, exit codes, the error line."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from hub.ledger.models import LedgerError

DEFAULT_DB = "smartshelf.db"
DB_ENV = "SMARTSHELF_DB"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
DB_HELP = f"ledger database (default: --config's, else ${DB_ENV}, else ./{DEFAULT_DB})"
CONFIG_HELP = "the hub's hub.toml: use its database ([hub] database) when --db is not given"


class Refused(LedgerError):
    """A command's arguments, ``--config`` or database were refused; ``str()`` is the one line to show (exit 2)."""


def default_db() -> Path:
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers)
        user = "unknown"
    return f"cli:{user}"


def err(message: str) -> None:
    print(f"smartshelf ledger: {message}", file=sys.stderr)


def add_db_options(p: argparse.ArgumentParser, *, inherit: bool = False, config_help: str = CONFIG_HELP) -> None:
    """``--db`` and ``--config`` (read by ``ledger_db``). ``inherit``: a subcommand's copy of its group's options,
    which leaves the group's value when not given."""
    default = argparse.SUPPRESS if inherit else None
    p.add_argument("--db", type=Path, default=default, help=DB_HELP)
    p.add_argument("--config", type=Path, default=default, metavar="HUB_TOML", help=config_help)


def read_hub_toml(config: Path) -> dict[str, Any]:
    """``config`` as read with ``tomllib`` (not ``hub.config``: that imports subsystems the ledger must not)."""
    try:
        with open(config, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Refused(f"--config {config}: {exc}") from None


def hub_database(config: Path, top: dict[str, Any]) -> Path:
    """The database a hub with this ``hub.toml`` (read as ``top``) opens: relative to the file's directory."""
    hub = top.get("hub")
    db = (hub if isinstance(hub, dict) else {}).get("database", DEFAULT_DB)
    if not isinstance(db, str) or not db.strip():
        raise Refused(f"{config}: hub.database: must be a file name")
    return config.parent / Path(os.path.expanduser(db))  # an absolute path stays as it is


def configured_nodes(config: Path) -> set[int]:
    """The node ids a hub with this ``hub.toml`` serves: its ``[[node]]`` tables and those of its ``nodes_files``
    (read as the hub reads them, relative to the file; one the hub would refuse is ``Refused``)."""
    top = read_hub_toml(config)
    hub = top.get("hub")
    files = (hub if isinstance(hub, dict) else {}).get("nodes_files", [])
    tables = [top.get("node", [])]
    for name in files if isinstance(files, list) else []:
        if isinstance(name, str):
            tables.append(read_hub_toml(config.parent / Path(os.path.expanduser(name))).get("node", []))
    return {n["id"] for t in tables if isinstance(t, list) for n in t if isinstance(n, dict) and "id" in n}


def ledger_db(args: argparse.Namespace) -> Path:
    """The database the command means (``args.db`` is set to it): ``--db``, else ``--config``'s, else the default.
    ``args.db_given_as`` is how to name it again (``--config hub.toml`` or ``--db PATH``), for messages."""
    if getattr(args, "db", None) is None:
        config = getattr(args, "config", None)
        if config is not None:
            args.db, args.db_given_as = hub_database(config, read_hub_toml(config)), f"--config {config}"
        else:
            args.db = default_db()
    if getattr(args, "db_given_as", None) is None:
        args.db_given_as = f"--db {args.db}"
    return Path(args.db)


def directory_problem(path: Path) -> str | None:
    """Why a file cannot be made at ``path`` (its directory is missing), as one line; None when it can."""
    parent = Path(path).parent
    if parent.is_dir():
        return None
    return f"{parent}: {'not a directory' if parent.exists() else 'no such directory'}"


def existing_ledger(args: argparse.Namespace) -> Path:
    """``ledger_db``, refused (``Refused``) when there is no ledger there: only ``ledger init`` makes one."""
    db = ledger_db(args)
    if (problem := directory_problem(db)) is not None:
        raise Refused(problem)
    if not db.is_file():
        given = args.db_given_as
        if given.startswith("--config") and looks_like_nodes_file(read_hub_toml(args.config)):
            raise Refused(
                f"no ledger database at {db}, and {given} holds only [[node]] tables, like a nodes file (the kind"
                " hub.toml lists in [hub] nodes_files): check that --config is the hub's hub.toml; if it is, create"
                f" its ledger with smartshelf ledger init {given}"
            )
        hint = "" if given.startswith("--config") else " (or give --config hub.toml to use the hub's)"
        raise Refused(f"no ledger database at {db}: create it with smartshelf ledger init {given}{hint}")
    return db


def looks_like_nodes_file(top: dict[str, Any]) -> bool:
    """``[[node]]`` tables and nothing else a hub.toml has: a nodes file (``[hub] nodes_files``), or a hub.toml that
    keeps every default (the hub runs on one: ``hub.config``), so it is not refused, but a missing ledger beside it
    is not advised to be made there without a look (a nodes file given as --config would make a stray ledger)."""
    return set(top) == {"node"}
