"""``smartshelf central ...``: the central tier's consumer and its database.

* ``smartshelf central run --config central.toml [--log-level L]``: the consumer (``hub.central.consumer``) until
  SIGINT / SIGTERM; migrates the database first.
* ``smartshelf central migrate --config central.toml``: creates or upgrades the schema, prints the versions.
* ``smartshelf central check --config central.toml [--json]``: every hub's completeness and consistency
  (``hub.central.check``).
* ``smartshelf central serve | user | token | region | store``: the central page and API, its users, API clients,
  regions and stores (``hub.central.web.cli``).
* ``smartshelf central install-service [run] [serve]``: both as systemd services (``hub.central.service``).

PostgreSQL's driver (asyncpg) comes with the ``central`` extra; without it every ``central`` command says to
install ``smartshelf[central]`` and exits 2. Exit codes (``_CODES``: each command's help):

* 0: ok (check: no hub has a problem; run: stopped by SIGINT / SIGTERM);
* 1: check: a problem found (a hole, a missing tail, a book difference, movements or alerts lost at the store,
  conflicts, rejected messages); run: stopped by a database error no retry fixes (``hub.central.errors``: logged
  with its SQLSTATE; nothing of that batch acknowledged, the broker keeps it; a connection refused for its
  settings: a wrong password, role or database name), for the service manager to restart it after its delay;
* 2: usage or configuration: a bad argument or ``central.toml``, the extra missing, a database of a newer schema
  (or not smartshelf's; check: one not migrated yet);
* 3: the database could not be reached, or failed while read or migrated (migrate, check; run retries instead).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from hub.central.check import format_report, report
from hub.central.config import CentralConfig, ConfigError, load_central_config
from hub.central.consumer import CentralUnavailable, Consumer, load_asyncpg, now_ms
from hub.central.errors import PermanentDatabaseError, describe
from hub.central.schema import check_current, migrate
from hub.central.service import add_install_parser
from hub.central.web.cli import add_web_commands
from hub.ledger.models import SchemaError

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3
_CODES = {
    "run": "exit 0 after SIGINT/SIGTERM; 1 stopped by a database error no retry fixes (logged with its SQLSTATE: "
    "e.g. a wrong password, role or database name; let the service manager restart it); 2 configuration, extra "
    "missing or a newer schema",
    "migrate": "exit 0 migrated or up to date; 2 configuration, extra missing, a newer or foreign schema; "
    "3 the database unreachable or the migration failed there",
    "check": "exit 0 every hub ok; 1 a problem found; 2 configuration, extra missing or schema not current; "
    "3 the database unreachable or failed while read",
}
DEFAULT_CONFIG = "central.toml"

log = logging.getLogger("hub.central")


def _err(message: str) -> None:
    print(f"smartshelf central: {message}", file=sys.stderr)


def _prepare(args: argparse.Namespace) -> tuple[CentralConfig, Any] | int:
    """The configuration and asyncpg, or the exit status after saying what is wrong."""
    try:
        asyncpg = load_asyncpg()
    except CentralUnavailable as exc:
        _err(str(exc))
        return EXIT_REFUSED
    try:
        return load_central_config(args.config), asyncpg
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_REFUSED


async def _serve(cfg: CentralConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Consumer(cfg).run(stop)
    except SchemaError as exc:
        _err(str(exc))
        return EXIT_REFUSED
    except PermanentDatabaseError:  # the consumer logged it, with its SQLSTATE
        return EXIT_FAILED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    cfg, _ = prepared
    level = (args.log_level or cfg.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    log.info("central consumer starting: database %s, broker %s:%d", cfg.database.display(), cfg.broker.host,
             cfg.broker.port)  # fmt: skip
    return asyncio.run(_serve(cfg))


async def _once(cfg: CentralConfig, asyncpg: Any, what: str, args: argparse.Namespace) -> int:
    try:
        conn = await asyncpg.connect(**cfg.database.connect_kwargs())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _err(f"PostgreSQL {cfg.database.display()}: cannot connect: {exc}")
        return EXIT_UNREACHABLE
    try:
        if what == "migrate":
            old, new = await migrate(conn)
            print(f"{cfg.database.display()}: schema version {old} -> {new}" if old != new else
                  f"{cfg.database.display()}: schema version {new}, up to date")  # fmt: skip
            return EXIT_OK
        await check_current(conn)
        hubs = await report(conn)
        if args.json:
            print(json.dumps([h.as_json() for h in hubs], indent=2))
        else:
            print("\n".join(format_report(hubs, now_ms())))
        return EXIT_FAILED if any(h.problems for h in hubs) else EXIT_OK
    except SchemaError as exc:
        _err(str(exc))
        return EXIT_REFUSED
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _err(f"PostgreSQL {cfg.database.display()}: {describe(exc)}")
        return EXIT_UNREACHABLE
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 5)
        if not conn.is_closed():
            conn.terminate()


def _database_command(args: argparse.Namespace) -> int:
    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    cfg, asyncpg = prepared
    return asyncio.run(_once(cfg, asyncpg, args.central_command, args))


def add_central_parser(sub: Any) -> None:
    central = sub.add_parser(
        "central",
        help="the multi-store tier's central consumer: MQTT -> PostgreSQL (needs smartshelf[central])",
        description="Consumes every hub's messages from the broker into PostgreSQL (hub/central/README.md).",
    )
    verbs = central.add_subparsers(dest="central_command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config", type=Path, default=Path(DEFAULT_CONFIG), help="central.toml (default ./central.toml)"
        )

    run = verbs.add_parser(
        "run",
        help="consume the broker's messages into PostgreSQL until SIGINT/SIGTERM",
        description="Migrates the database, takes the shared subscription and writes each batch of messages in one "
        "transaction, acknowledging them only after it commits. A database that is down, restarting or busy is "
        "waited for; an error no retry fixes stops it.",
        epilog=_CODES["run"],
    )
    with_config(run)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides central.log_level")
    run.set_defaults(func=_run)

    mig = verbs.add_parser("migrate", help="create or upgrade the central database's schema", epilog=_CODES["migrate"])
    with_config(mig)
    mig.set_defaults(func=_database_command)

    chk = verbs.add_parser(
        "check",
        help="every hub's completeness (holes, tail) and book consistency; exit 1 on a problem, 3 database unreachable",
        description="Per hub: holes, the tail not received yet, book stock vs the hub's own, movements and alerts lost "
        "at the store, conflicts, rejected messages (hub/central/README.md).",
        epilog=_CODES["check"],
    )
    with_config(chk)
    chk.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    chk.set_defaults(func=_database_command)

    # the central page and its users (hub/central/web/cli.py): serve, user, token, region, store
    add_web_commands(verbs, with_config)
    add_install_parser(verbs)  # install-service (hub/central/service.py): the systemd units of run and serve
