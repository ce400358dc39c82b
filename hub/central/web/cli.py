"""``smartshelf central serve | user | token | region | store``: the central page and who may use it.

* ``central serve --config central.toml``: the page and API over HTTPS (``[web]``, ``config.py``) until SIGINT /
  SIGTERM. A process of its own, beside ``central run`` (the consumer): the page is read-only and may run as
  several replicas (sessions are signed with a key kept in PostgreSQL), and restarting one never pauses the other.
* ``central user add NAME --role ROLE [--region R ...] [--password-stdin]`` (prompts twice otherwise),
  ``central user list``, ``central user set NAME [--role ROLE] [--region R ... | --no-regions] [--disable |
  --enable | --reset-password [--password-stdin]]``.
* ``central token add NAME --scopes stock,alerts,... (--region R ... | --all-stores)`` prints the bearer token
  once, on stdout (only its SHA-256 is kept); ``central token list``; ``central token disable NAME``.
* ``central region add REGION [--name N]``, ``central region list``; ``central store add STORE --name N
  [--region R] [--hub HUB ...]``, ``central store list``, ``central store assign HUB (STORE | --none)``,
  ``central store move STORE (--region R | --none)``.

Every change is audited (``web_audit``) with the actor ``cli:<login>`` (``--actor``). Exit codes as ``central``'s:
0 done; 1 the database could not be reached; 2 refused (a bad argument, configuration or schema, said in one line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from hub.central.config import ConfigError
from hub.central.consumer import CentralUnavailable, load_asyncpg
from hub.central.schema import check_current
from hub.central.web import accounts, directory
from hub.central.web.config import load_web_config
from hub.central.web.schema import ROLES, SCOPES
from hub.central.web.server import CentralWebServer
from hub.ledger.cli import default_actor
from hub.ledger.models import LedgerError, SchemaError
from hub.web.accounts.clients import token_sha256
from hub.web.accounts.users import PRUNE_INTERVAL_S, check_username, hash_password
from hub.web.cli import _read_password
from hub.web.serving.tls import TlsError

if TYPE_CHECKING:
    import asyncpg

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
log = logging.getLogger("hub.central.web")
Command = Callable[["asyncpg.Connection", argparse.Namespace], Awaitable[str | None]]


def _err(message: str) -> None:
    print(f"smartshelf central: {message}", file=sys.stderr)


def _with_database(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run ``command(conn, args)`` on a connection to central.toml's database (schema checked); print its answer."""

    def run(args: argparse.Namespace) -> int:
        try:
            asyncpg = load_asyncpg()
            cfg = load_web_config(args.config)
        except (CentralUnavailable, ConfigError) as exc:
            _err(str(exc))
            return EXIT_REFUSED

        async def go() -> int:
            try:
                conn = await asyncpg.connect(**cfg.central.database.connect_kwargs())
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _err(f"PostgreSQL {cfg.central.database.display()}: cannot connect: {exc}")
                return EXIT_FAILED
            try:
                await check_current(conn)
                answer = await command(conn, args)
            except (LedgerError, SchemaError) as exc:
                _err(str(exc))
                return EXIT_REFUSED
            finally:
                await conn.close()
            if answer:
                print(answer)
            return EXIT_OK

        return asyncio.run(go())

    return run


# ------------------------------------------------------------------------------------------------------ serve


def _serve(args: argparse.Namespace) -> int:
    try:
        load_asyncpg()
        cfg = load_web_config(args.config)
    except (CentralUnavailable, ConfigError) as exc:
        _err(str(exc))
        return EXIT_REFUSED
    level = (args.log_level or cfg.central.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:
        server = CentralWebServer.start(cfg)
    except (SchemaError, TlsError, ValueError) as exc:
        _err(str(exc))
        return EXIT_REFUSED
    except OSError as exc:
        _err(f"cannot serve on {cfg.web.host}:{cfg.web.port} or reach {cfg.central.database.display()}: {exc}")
        return EXIT_FAILED
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info("central web: serving %s (database %s)%s", server.url, cfg.central.database.display(),
             f", certificate SHA-256 {server.fingerprint}" if server.fingerprint else "")  # fmt: skip
    try:
        while not stop.wait(PRUNE_INTERVAL_S):
            try:
                server.prune()
            except Exception:
                log.exception("central web: pruning old sign-in attempts failed")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------ users


async def _user_add(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    check_username(args.username)
    accounts.check_regions(args.role, args.region or ())  # before asking for a password
    password_hash = hash_password(_read_password(args))
    await accounts.add_user(conn, args.username, password_hash, args.role, args.region or (), actor=args.actor)
    where = f" of {', '.join(args.region)}" if args.region else ""
    return f"user {args.username} added with role {args.role}{where}"


async def _user_list(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    users = await accounts.list_users(conn)
    if args.json:
        return json.dumps([asdict(u) for u in users], indent=2)
    lines = []
    for u in users:
        regions = f" ({', '.join(u.regions)})" if u.regions else ""
        lines.append("\t".join([u.username, u.role + regions, *(["disabled"] if u.disabled_ms is not None else [])]))
    return "\n".join(lines) or "no users yet"


async def _user_set(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    action = "disable" if args.disable else "enable" if args.enable else "reset_password" if args.reset else None
    password_hash = hash_password(_read_password(args)) if action == "reset_password" else None
    regions: list[str] | None = [] if args.no_regions else args.region
    done = await accounts.update_user(
        conn, args.username, actor=args.actor, role=args.role, regions=regions, action=action,
        password_hash=password_hash,
    )  # fmt: skip
    return f"user {args.username}: {', '.join(done)}"


# ------------------------------------------------------------------------------------------------ API clients


async def _token_add(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    scopes = accounts.parse_scopes(args.scopes)
    token = accounts.new_token()
    regions = None if args.all_stores else args.region
    await accounts.add_client(conn, args.name, token_sha256(token), scopes, regions, actor=args.actor)
    print(f"API client {args.name} added ({', '.join(scopes)}); its token, shown once:", file=sys.stderr)
    return token


async def _token_list(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    lines = []
    for c in await accounts.list_clients(conn):
        stores = "every store" if c.all_stores else "regions " + ",".join(c.regions)
        lines.append("\t".join([c.name, ",".join(sorted(c.scopes)), stores, *(["disabled"] if c.disabled else [])]))
    return "\n".join(lines) or "no API clients yet"


async def _token_disable(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    await accounts.disable_client(conn, args.name, actor=args.actor)
    return f"API client {args.name} disabled"


# ---------------------------------------------------------------------------------------------- regions, stores


async def _region_add(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    await directory.add_region(conn, args.region, args.name, actor=args.actor)
    return f"region {args.region} added"


async def _region_list(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    return "\n".join(f"{r}\t{n}" for r, n in await directory.list_regions(conn)) or "no regions yet"


async def _store_add(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    await directory.add_store(conn, args.store, args.name, args.region, tuple(args.hub or ()), actor=args.actor)
    return f"store {args.store} added{' in ' + args.region if args.region else ''}"


async def _store_list(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    lines = [f"{s.store_id}\t{s.name}\t{s.region or '-'}\t{','.join(s.hubs) or '-'}"
             for s in await directory.list_stores(conn)]  # fmt: skip
    unassigned = await directory.unassigned_hubs(conn)
    if unassigned:
        lines.append(f"hubs without a store: {', '.join(unassigned)}")
    return "\n".join(lines) or "no stores yet"


async def _store_assign(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    await directory.assign_hub(conn, args.hub, None if args.none else args.store, actor=args.actor)
    return f"hub {args.hub} serves {'no store' if args.none else args.store}"


async def _store_move(conn: asyncpg.Connection, args: argparse.Namespace) -> str:
    await directory.set_store_region(conn, args.store, None if args.none else args.region, actor=args.actor)
    return f"store {args.store} is in {'no region' if args.none else 'region ' + args.region}"


# ------------------------------------------------------------------------------------------------- the parser


def add_web_commands(verbs: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``serve``, ``user``, ``token``, ``region`` and ``store`` to ``smartshelf central``'s commands."""

    def command(parent: Any, name: str, help_: str, fn: Command, actor: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_)
        with_config(p)
        if actor:
            p.add_argument("--actor", default=default_actor(), help="who does it, for the audit (default cli:<login>)")
        p.set_defaults(func=_with_database(fn))
        return p

    serve = verbs.add_parser(
        "serve",
        help="the central page and API over HTTPS ([web] of central.toml) until SIGINT/SIGTERM",
        description="Serves every store's stock, alerts, shrink, reorders and last contact (hub/central/web/).",
    )
    with_config(serve)
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides central.log_level")
    serve.set_defaults(func=_serve)

    user = verbs.add_parser("user", help="people who sign in to the central page").add_subparsers(
        dest="central_user_command", required=True, metavar="USER_COMMAND"
    )
    p = command(user, "add", "add a user (prompts for the password twice)", _user_add)
    p.add_argument("username")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--region", action="append", help="a region manager's region (repeat for several)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p = command(user, "list", "list the users", _user_list, actor=False)
    p.add_argument("--json", action="store_true")
    p = command(user, "set", "change a user's role, regions, or disable / enable / reset the password", _user_set)
    p.add_argument("username")
    p.add_argument("--role", choices=ROLES)
    regions = p.add_mutually_exclusive_group()
    regions.add_argument("--region", action="append", help="the user's regions from now on (repeat for several)")
    regions.add_argument("--no-regions", action="store_true", help="no region (for a role that is no region manager)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--disable", action="store_true")
    what.add_argument("--enable", action="store_true")
    what.add_argument("--reset-password", dest="reset", action="store_true", help="prompts for the new password")
    p.add_argument("--password-stdin", action="store_true", help="read the new password from the first line of stdin")

    token = verbs.add_parser("token", help="API clients of the central API (an ERP) and their tokens")
    tokens = token.add_subparsers(dest="central_token_command", required=True, metavar="TOKEN_COMMAND")
    p = command(tokens, "add", "add an API client; prints its token once", _token_add)
    p.add_argument("name")
    p.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    stores = p.add_mutually_exclusive_group(required=True)
    stores.add_argument("--region", action="append", help="it reads only the stores of this region (repeat)")
    stores.add_argument("--all-stores", action="store_true", help="it reads every store")
    command(tokens, "list", "list the API clients", _token_list, actor=False)
    p = command(tokens, "disable", "disable an API client (its token stops working at once)", _token_disable)
    p.add_argument("name")

    region = verbs.add_parser("region", help="the chain's regions").add_subparsers(
        dest="central_region_command", required=True, metavar="REGION_COMMAND"
    )
    p = command(region, "add", "add a region", _region_add)
    p.add_argument("region")
    p.add_argument("--name", default="", help="its display name")
    command(region, "list", "list the regions", _region_list, actor=False)

    store = verbs.add_parser("store", help="the chain's stores and the hubs serving them").add_subparsers(
        dest="central_store_command", required=True, metavar="STORE_COMMAND"
    )
    p = command(store, "add", "add a store", _store_add)
    p.add_argument("store", help="its id")
    p.add_argument("--name", required=True)
    p.add_argument("--region")
    p.add_argument("--hub", action="append", help="a hub serving it (central must have heard from it; repeat)")
    command(store, "list", "list the stores and their hubs", _store_list, actor=False)
    p = command(store, "assign", "the store a hub serves", _store_assign)
    p.add_argument("hub")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("store", nargs="?")
    target.add_argument("--none", action="store_true", help="no store")
    p = command(store, "move", "move a store to another region", _store_move)
    p.add_argument("store")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--region")
    dest.add_argument("--none", action="store_true", help="no region")
