"""smartshelf users add USERNAME --role ROLE [--password-stdin] [--db PATH | --config hub.toml]
smartshelf users list [--json] [--db PATH | --config hub.toml]
smartshelf users disable USERNAME | enable USERNAME [--db PATH | --config hub.toml]
smartshelf users reset-password USERNAME [--password-stdin] [--db PATH | --config hub.toml]

smartshelf api-clients add NAME --scopes read,sales,... [--db PATH]   (prints the bearer token once, on stdout)
smartshelf api-clients list [--db PATH]
smartshelf api-clients disable NAME [--db PATH]

Each takes ``--config hub.toml`` for the hub's database, and refuses (exit 2) a database that is not there: only
``smartshelf ledger init`` (and the hub) make one (``hub.ledger.cli_common.existing_ledger``).

``users disable | enable | reset-password`` are the users page's admin actions from the Pi's shell (the only admin
forgot the password, or is gone): the same functions (``hub.web.accounts.users.update_user``) in one transaction of
the command's own writer (beside a running hub's: SQLite's locking keeps them apart), with the same rules (the last
enabled admin is never disabled) and the same effect (every session of the user ends, a live stream within seconds,
since each request and stream re-reads the user's session epoch from the ledger), audited with the actor
``cli:<login>`` (``--actor``) and the origin ``cli:<user>@<host>``.
Exit codes of every ``users`` and ``api-clients`` command: 0 done; 1 the ledger could not be read or written; 2
refused (no such user, the last enabled admin, a short password, an unknown scope, no ledger), said in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

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
from hub.web.accounts.users import (
    ROLES,
    UnknownUser,
    User,
    add_user,
    get_user,
    hash_password,
    list_users,
    update_user,
)
from hub.web.db import open_ro

T = TypeVar("T")


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
        return _exit_code(exc)
    print(f"user {args.username} added with role {args.role} (ledger {args.db})")
    return 0


def _exit_code(exc: Exception) -> int:
    """2: refused (a ``LedgerError``: no ledger, bad input, the rules); 1: the ledger could not be read or written
    (``OSError``, ``sqlite3.Error``)."""
    return 2 if isinstance(exc, LedgerError) else 1


def _fmt(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _users_err(exc: Exception | str) -> None:
    print(f"smartshelf users: {exc}", file=sys.stderr)


def _users_command(command: Callable[[argparse.Namespace], str]) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` (it returns the line to print): a refusal is one line and exit 2, a ledger that could not be
    read or written one line and exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            line = command(args)
        except LedgerError as exc:  # Refused (no ledger), InvalidArgument (no such user, the last admin, ...)
            _users_err(exc)
            return 2
        except OSError as exc:
            _users_err(exc)
            return 1
        except sqlite3.Error as exc:
            _users_err(f"ledger {getattr(args, 'db', '?')}: {exc}")
            return 1
        print(line)
        return 0

    return run


def _read_users(args: argparse.Namespace, read: Callable[[sqlite3.Connection], T]) -> T:
    """``read(conn)`` on a read-only connection to the ledger (never made here)."""
    db = existing_ledger(args)
    conn = open_ro(db)
    try:
        return read(conn)
    except sqlite3.OperationalError as exc:
        if "no such" not in str(exc):  # locked, I/O: said as it is
            raise
        raise sqlite3.OperationalError(f"{exc} (an older ledger: open it with the hub once to upgrade it)") from None
    finally:
        conn.close()


def _list(args: argparse.Namespace) -> str:
    users = _read_users(args, list_users)
    if args.json:
        return json.dumps([{**asdict(u), "enabled": u.disabled_ms is None} for u in users], indent=2, sort_keys=True)
    if not users:
        return f"no users in {args.db}: add one with smartshelf users add NAME --role admin {args.db_given_as}"
    lines = [f"{'username':<24} {'role':<8} {'status':<27} last sign-in"]
    for u in users:
        status = "enabled" if u.disabled_ms is None else f"disabled {_fmt(u.disabled_ms)}"
        lines.append(f"{u.username:<24} {u.role:<8} {status:<27} {_fmt(u.last_login_ms)}")
    return "\n".join(lines)


def _change(args: argparse.Namespace, action: str, password_hash: str | None = None) -> list[str]:
    """One of the users page's admin actions (``update_user``), by the command line: one audited transaction."""

    async def run() -> list[str]:
        async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
            return await ledger.transact(
                lambda tx: update_user(
                    tx, args.username, actor=args.actor, by=None, action=action, password_hash=password_hash
                )
            )

    return asyncio.run(run())


def _known_user(args: argparse.Namespace) -> User:
    """The user named, from the ledger (refused when there is none: before a password is asked for)."""
    user = _read_users(args, lambda conn: get_user(conn, args.username))
    if user is None:
        raise UnknownUser(f"no user {args.username!r} in {args.db} (smartshelf users list {args.db_given_as})")
    return user


def _disable(args: argparse.Namespace) -> str:
    _known_user(args)
    _change(args, "disable")
    return (
        f"user {args.username} disabled (ledger {args.db}): signed out everywhere (a live page within seconds),"
        " and cannot sign in until enabled"
    )


def _enable(args: argparse.Namespace) -> str:
    _known_user(args)
    _change(args, "enable")
    return f"user {args.username} enabled (ledger {args.db}): they can sign in again"


def _reset_password(args: argparse.Namespace) -> str:
    user = _known_user(args)
    password_hash = hash_password(_read_password(args))
    _change(args, "reset_password", password_hash)
    still = f"; still disabled: smartshelf users enable {args.username}" if user.disabled else ""
    return f"user {args.username}: password reset (ledger {args.db}), signed out everywhere{still}"


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
    p = cmds.add_parser("list", help="list the users: role, enabled or disabled, last sign-in")
    p.add_argument("--json", action="store_true", help="print the users as a JSON array (times in ms since 1970)")
    add_db_options(p)
    p.set_defaults(func=_users_command(_list))
    for name, command, what in (
        ("disable", _disable, "disable a user: signed out everywhere, cannot sign in (never the last enabled admin)"),
        ("enable", _enable, "enable a disabled user again"),
        ("reset-password", _reset_password, "set a new password (prompts twice) and sign the user out everywhere"),
    ):
        p = cmds.add_parser(name, help=what)
        p.add_argument("username")
        if name == "reset-password":
            p.add_argument(
                "--password-stdin", action="store_true", help="read the password from the first line of stdin"
            )
        add_db_options(p)
        p.add_argument("--actor", default=default_actor(), help="who does it, for the audit (default: cli:<login>)")
        p.set_defaults(func=_users_command(command))


# ------------------------------------------------------------------------------------------------ api-clients


def _api_err(exc: Exception) -> int:
    print(f"smartshelf api-clients: {exc}", file=sys.stderr)
    return _exit_code(exc)


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
    except (OSError, sqlite3.Error) as exc:
        older = " (an older ledger: open it with the hub once to upgrade it)" if "no such" in str(exc) else ""
        return _api_err(OSError(f"{db}: {exc}{older}"))
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
