"""smartshelf users add USERNAME --role ROLE [--password-stdin] [--db PATH | --config hub.toml]

smartshelf api-clients add NAME --scopes read,sales,... [--db PATH]   (prints the bearer token once, on stdout)
smartshelf api-clients list [--db PATH]
smartshelf api-clients disable NAME [--db PATH]

Each takes ``--config hub.toml`` for the hub's database, and refuses (exit 2) a database that is not there: only
``smartshelf ledger init`` (and the hub) make one (``hub.ledger.cli_common.existing_ledger``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sqlite3
import sys
from datetime import UTC, datetime
from typing import Any

from hub.ledger import LedgerService, origin
from hub.ledger.cli_common import add_db_options, default_actor, existing_ledger
from hub.ledger.models import LedgerError
from hub.web.accounts.clients import (
    SCOPES,
    add_client,
    disable_client,
    list_clients,
    new_token,
    parse_scopes,
    token_sha256,
)
from hub.web.accounts.users import ROLES, add_user, hash_password
from hub.web.db import open_ro


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:  # without a terminal getpass reads stdin, and ends in EOFError when it is empty
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Password (again): ")
    except EOFError:
        raise LedgerError("no terminal to ask for the password on: give it with --password-stdin") from None
    if again != first:
        raise LedgerError("the passwords differ")
    return first


def _add(args: argparse.Namespace) -> int:
    try:
        existing_ledger(args)  # before the password is asked for
        password_hash = hash_password(_read_password(args))

        async def run() -> None:
            async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
                await ledger.transact(
                    lambda tx: add_user(tx, args.username, password_hash, args.role, actor=args.actor)
                )

        asyncio.run(run())
    except (LedgerError, OSError, sqlite3.Error) as exc:
        print(f"smartshelf users: {exc}", file=sys.stderr)
        return 2
    print(f"user {args.username} added with role {args.role} (ledger {args.db})")
    return 0


def add_users_parser(sub: Any) -> None:
    users = sub.add_parser("users", help="staff accounts of the status page")
    cmds = users.add_subparsers(dest="users_command", required=True, metavar="USERS_COMMAND")
    p = cmds.add_parser("add", help="add a user (prompts for the password twice)")
    p.add_argument("username")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add_db_options(p)
    p.add_argument("--actor", default=default_actor(), help="who is adding (default: cli:<login>)")
    p.set_defaults(func=_add)


# ------------------------------------------------------------------------------------------------ api-clients


def _api_err(exc: Exception) -> int:
    print(f"smartshelf api-clients: {exc}", file=sys.stderr)
    return 2


def _api_add(args: argparse.Namespace) -> int:
    token = new_token()
    try:
        existing_ledger(args)
        scopes = parse_scopes(args.scopes)

        async def run() -> None:
            async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
                await ledger.transact(
                    lambda tx: add_client(tx, args.name, token_sha256(token), scopes, actor=args.actor)
                )

        asyncio.run(run())
    except (LedgerError, OSError, sqlite3.Error) as exc:
        return _api_err(exc)
    print(
        f"API client {args.name} added with scopes {','.join(scopes)} (ledger {args.db}). Its bearer token (shown"
        " only now; the ledger keeps only its SHA-256):",
        file=sys.stderr,
    )
    print(token)
    return 0


def _api_disable(args: argparse.Namespace) -> int:
    try:
        existing_ledger(args)

        async def run() -> None:
            async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
                await ledger.transact(lambda tx: disable_client(tx, args.name, actor=args.actor))

        asyncio.run(run())
    except (LedgerError, OSError, sqlite3.Error) as exc:
        return _api_err(exc)
    print(f"API client {args.name} disabled (ledger {args.db}): its token is refused from now on")
    return 0


def _fmt(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _api_list(args: argparse.Namespace) -> int:
    try:
        db = existing_ledger(args)
    except LedgerError as exc:
        return _api_err(exc)
    try:
        conn = open_ro(db)
        try:
            clients = list_clients(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return _api_err(OSError(f"{db}: {exc} (an older ledger: open it with the hub once to upgrade it)"))
    if not clients:
        print("no API clients")
        return 0
    print(f"{'name':<24} {'scopes':<40} {'created':<21} {'by':<16} status")
    for c in clients:
        status = f"disabled {_fmt(c.disabled_ms)}" if c.disabled else "active"
        scopes = ",".join(s for s in SCOPES if s in c.scopes)
        print(f"{c.name:<24} {scopes:<40} {_fmt(c.created_ms):<21} {c.created_by:<16} {status}")
    return 0


def add_api_clients_parser(sub: Any) -> None:
    clients = sub.add_parser("api-clients", help="clients (POS, WMS) of the HTTP API and their bearer tokens")
    cmds = clients.add_subparsers(dest="api_clients_command", required=True, metavar="API_CLIENTS_COMMAND")
    p = cmds.add_parser("add", help="add a client and print its bearer token (once)")
    p.add_argument("name")
    p.add_argument("--scopes", required=True, help=f"comma-separated, from: {','.join(SCOPES)}")
    add_db_options(p)
    p.add_argument("--actor", default=default_actor(), help="who is adding (default: cli:<login>)")
    p.set_defaults(func=_api_add)
    p = cmds.add_parser("list", help="list the clients (never their tokens)")
    add_db_options(p)
    p.set_defaults(func=_api_list)
    p = cmds.add_parser("disable", help="disable a client: its token is refused from then on")
    p.add_argument("name")
    add_db_options(p)
    p.add_argument("--actor", default=default_actor(), help="who is disabling (default: cli:<login>)")
    p.set_defaults(func=_api_disable)
