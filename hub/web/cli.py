"""smartshelf users add USERNAME --role ROLE [--password-stdin] [--db PATH]"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sqlite3
import sys
from pathlib import Path
from typing import Any

from hub.ledger import LedgerService
from hub.ledger.cli import DB_ENV, DEFAULT_DB, default_actor, default_db
from hub.ledger.models import LedgerError
from hub.web.users import ROLES, add_user, hash_password


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise LedgerError("the passwords differ")
    return first


def _add(args: argparse.Namespace) -> int:
    try:
        password_hash = hash_password(_read_password(args))

        async def run() -> None:
            async with LedgerService(args.db) as ledger:
                await ledger.transact(
                    lambda tx: add_user(tx, args.username, password_hash, args.role, actor=args.actor)
                )

        asyncio.run(run())
    except (LedgerError, OSError, sqlite3.Error) as exc:
        print(f"smartshelf users: {exc}", file=sys.stderr)
        return 2
    print(f"user {args.username} added with role {args.role}")
    return 0


def add_users_parser(sub: Any) -> None:
    users = sub.add_parser("users", help="staff accounts of the status page")
    cmds = users.add_subparsers(dest="users_command", required=True, metavar="USERS_COMMAND")
    p = cmds.add_parser("add", help="add a user (prompts for the password twice)")
    p.add_argument("username")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument(
        "--db", type=Path, default=default_db(), help=f"ledger database (default: ${DB_ENV} or ./{DEFAULT_DB})"
    )
    p.add_argument("--actor", default=default_actor(), help="who is adding (default: cli:<login>)")
    p.set_defaults(func=_add)
