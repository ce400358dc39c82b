"""``smartshelf ledger ...``: create, back up, restore, import into and inspect the ledger database.

The database is ``--db PATH``, else ``--config hub.toml``'s (the hub's), else ``$SMARTSHELF_DB``, else
``./smartshelf.db``; only ``init`` (and ``restore``) make one: every other command refuses a missing database
(``hub.ledger.cli_common.existing_ledger``). Its migrations (every subsystem's) are ``args.migrations``, set by the
root command (``hub.cli``: ``hub.schema.MIGRATIONS``).
``backup``, ``backup-key`` and ``restore`` are ``hub.ledger.backup_cli``'s.
Exit codes: 0 ok; 2 refused (a rejected import with its per-line report on stderr, a restore refused, bad
arguments); 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from hub.ledger import origin, schema
from hub.ledger.agefile import AgeRefused
from hub.ledger.backup import RestoreRefused
from hub.ledger.backup_cli import add_backup_commands
from hub.ledger.backup_signing import SignerRefused
from hub.ledger.cli_common import (
    CONFIG_HELP,
    DB_ENV,
    DEFAULT_DB,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    Refused,
    add_db_options,
    default_actor,
    default_db,
    directory_problem,
    existing_ledger,
    ledger_db,
)
from hub.ledger.cli_common import err as _err
from hub.ledger.dblock import LedgerBusy
from hub.ledger.models import LedgerError, SchemaError, Sku
from hub.ledger.postings.lanes import LaneAssigned
from hub.ledger.reader import LedgerReader
from hub.ledger.service import LedgerService

__all__ = [  # the shared ones (hub.ledger.cli_common) stay importable from here: other commands use them
    "DB_ENV",
    "DEFAULT_DB",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "add_ledger_parser",
    "default_actor",
    "default_db",
]


def _init(args: argparse.Namespace) -> int:

    if (problem := directory_problem(ledger_db(args))) is not None:
        raise Refused(problem)
    old, new = schema.open_and_migrate(args.db, args.migrations)
    print(f"{args.db}: schema version {new}" + (f" (upgraded from {old})" if old and old != new else ""))
    return EXIT_OK


TOKEN_ENV = "SMARTSHELF_API_TOKEN"


def _import(args: argparse.Namespace) -> int:

    path = Path(args.file)
    if not path.is_file():
        _err(f"{path}: no such file")
        return EXIT_FAILED
    if args.url:
        return _import_remote(args, path)
    existing_ledger(args)

    async def run() -> Any:
        async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
            return await ledger.import_file(args.kind, path, actor=args.actor)

    report = asyncio.run(run())
    if not report.ok:
        for line in report.error_lines():
            print(line, file=sys.stderr)
        print(report.summary(), file=sys.stderr)
        return EXIT_REFUSED
    print(f"{report.summary()} (ledger {args.db})")
    return EXIT_OK


def _import_remote(args: argparse.Namespace, path: Path) -> int:
    """POST the file to a running hub's HTTP API (``/api/v1/imports/<kind>``): its single writer imports it, all or
    nothing, as the API client the token belongs to."""
    import json
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            _err(f"cannot read the token: {exc}")
            return EXIT_FAILED
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        _err(f"--url needs an API client's token: --token-file PATH or ${TOKEN_ENV} (smartshelf api-clients add)")
        return EXIT_REFUSED
    parts = urllib.parse.urlsplit(args.url)
    if parts.scheme != "https" and not origin.is_loopback(parts.hostname or ""):
        _err(f"{args.url}: the token would cross the network in clear text: use the hub's https:// address")
        return EXIT_REFUSED
    try:
        tls = ssl.create_default_context(cafile=str(args.cafile) if args.cafile is not None else None)
    except (OSError, ssl.SSLError) as exc:
        _err(f"--cafile {args.cafile}: {exc}")
        return EXIT_FAILED
    query = urllib.parse.urlencode({"name": path.name})
    url = urllib.parse.urljoin(args.url if args.url.endswith("/") else args.url + "/", f"api/v1/imports/{args.kind}")
    request = urllib.request.Request(
        f"{url}?{query}",
        data=path.read_bytes(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout, context=tls) as resp:
            report = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            problems = json.loads(exc.read()).get("errors", [])
        except ValueError:
            problems = []
        if exc.code == 422:
            for e in problems:
                line = str(e.get("field", "")).removeprefix("line ")
                print(f"{path.name}:{line}: {e.get('message')}", file=sys.stderr)
            n = len(problems)
            print(f"{path.name}: rejected, nothing was written ({n} problem{'s' if n != 1 else ''})", file=sys.stderr)
            return EXIT_REFUSED
        detail = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problems) or exc.reason
        if exc.code == 400:  # the request itself refused (an empty file, a bad name): nothing was written
            _err(f"{path.name}: refused by the hub, nothing was written: {detail}")
            return EXIT_REFUSED
        if exc.code == 413:
            _err(f"{path.name}: too large for one import through the hub, nothing was written: {detail}")
            _err(f"split {path.name} into smaller files (each with the header row) and import them one by one")
            return EXIT_REFUSED
        _err(f"{url}: HTTP {exc.code}: {detail}")
        return EXIT_FAILED
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _err(f"{url}: {exc}")
        return EXIT_FAILED
    rows, applied, dup = report["rows"], report["applied"], report["duplicates"]
    if rows and applied == 0:
        print(f"{path.name}: {rows} {args.kind} rows, all already in the ledger: nothing changed")
    else:
        print(f"{path.name}: {rows} {args.kind} rows: {applied} applied, {dup} already in the ledger")
    return EXIT_OK


def _add_sku(args: argparse.Namespace) -> int:

    existing_ledger(args)
    sku = Sku(
        args.sku,
        args.name or args.sku,
        args.unit_weight_dg,
        args.spread_permille,
        args.reorder_point,
        args.reorder_qty,
        args.capacity,
        args.gtin or None,
    )

    async def run() -> bool:
        async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
            return await ledger.add_sku(sku, actor=args.actor)

    print(f"SKU {args.sku}: {'saved' if asyncio.run(run()) else 'unchanged'} (ledger {args.db})")
    return EXIT_OK


def _assign_lane(args: argparse.Namespace) -> int:

    existing_ledger(args)

    async def run() -> LaneAssigned:
        async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
            return await ledger.assign_lane(args.node, args.lane, args.sku, actor=args.actor, lane_id=args.lane_id)

    done = asyncio.run(run())
    print(f"lane {done.lane_id} (node {args.node}, lane {args.lane}): {done.sku or 'unassigned'} (ledger {args.db})")
    if done.moved:  # a lane's sensor units are its SKU's (hub.ledger.postings.settle): the assignment moved them
        units = sum(qty for _old, qty in done.moved)
        sources = ", ".join(f"{qty} from {old or 'no SKU'}" for old, qty in done.moved)
        print(f"moved {units} sensor unit(s) of lane {done.lane_id} to {done.sku or 'no SKU'}: {sources}")
    return EXIT_OK


def _stock(args: argparse.Namespace) -> int:

    existing_ledger(args)

    async def run() -> None:
        async with await LedgerReader.open(args.db) as reader, reader.snapshot():
            print(f"{'sku':<20}{'location':<28}{'book':>8}")
            for b in await reader.book_stock(sku=args.sku):
                print(f"{b.sku:<20}{b.location:<28}{b.qty:>8}")
            observed = await reader.observed_stock(sku=args.sku)
            if observed:
                print(f"\n{'sku':<20}{'lane (sensor ledger)':<28}{'observed':>8}")
                for o in observed:
                    print(f"{o.sku:<20}{o.lane_id:<28}{o.qty:>8}")
            bad = await reader.consistency_errors()
            if bad:
                print(f"\nINCONSISTENT: {len(bad)} balances differ from their movements", file=sys.stderr)

    asyncio.run(run())
    return EXIT_OK


def _ledger(args: argparse.Namespace) -> int:
    import sqlite3

    try:
        rc: int = args.ledger_func(args)
    except (RestoreRefused, LedgerBusy, SchemaError, AgeRefused, SignerRefused, Refused) as exc:
        _err(str(exc))
        return EXIT_REFUSED
    except (LedgerError, OSError, sqlite3.Error) as exc:
        _err(str(exc))
        return EXIT_FAILED
    return rc


def add_ledger_parser(sub: Any) -> None:
    """Add ``ledger`` and its subcommands to the top-level subparsers ``sub``."""
    ledger = sub.add_parser("ledger", help="the inventory ledger database: backups, restore, CSV imports")
    ledger.set_defaults(func=_ledger)
    cmds = ledger.add_subparsers(dest="ledger_command", required=True, metavar="LEDGER_COMMAND")

    def cmd(name: str, help: str, func: Any, config_help: str = CONFIG_HELP) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = cmds.add_parser(name, help=help, description=help)
        add_db_options(p, config_help=config_help)
        p.set_defaults(ledger_func=func)
        return p

    cmd("init", "create the ledger database, or upgrade it to this version's schema", _init)

    add_backup_commands(cmd)

    p = cmd(
        "import",
        "import a CSV file of business transactions (or the store's EPC -> SKU table), all or nothing",
        _import,
    )
    p.add_argument("kind", choices=["sales", "receipts", "picks", "returns", "counts", "epcs"])
    p.add_argument("file", type=Path, metavar="FILE.csv")
    p.add_argument("--actor", default=default_actor(), help="who is importing (default: cli:<login>)")
    p.add_argument(
        "--url",
        help="a running hub's status page (e.g. https://hub.local:8443/): import through its HTTP API, as the API"
        " client whose token is given, instead of opening --db (plain http:// only to a loopback address)",
    )
    p.add_argument(
        "--cafile",
        type=Path,
        help="the certificate to trust for --url (the hub's self-signed cert.pem, which it generates beside its"
        " database as <db>.tls/cert.pem); default: the system's trusted authorities",
    )
    p.add_argument("--token-file", type=Path, help=f"file holding the API client's token (default: ${TOKEN_ENV})")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the hub (default 120)")

    p = cmd("add-sku", "add a SKU or update its master data", _add_sku)
    p.add_argument("sku")
    p.add_argument("--name", default="")
    p.add_argument("--unit-weight-dg", type=int, required=True, help="weight of one item in tenths of a gram")
    p.add_argument("--spread-permille", type=int, default=0)
    p.add_argument("--reorder-point", type=int, default=0)
    p.add_argument("--reorder-qty", type=int, default=0)
    p.add_argument("--capacity", type=int, default=None)
    p.add_argument(
        "--gtin", default="", help="the SKU's GTIN-8/12/13/14 (check digit verified): SGTIN tags name it by it"
    )
    p.add_argument("--actor", default=default_actor())

    p = cmd("assign-lane", "register a node's lane and assign it a SKU", _assign_lane)
    p.add_argument("--node", type=int, required=True)
    p.add_argument("--lane", type=int, required=True, help="lane index on the node, 0..31")
    p.add_argument("--sku", default=None, help="SKU (omit to unassign)")
    p.add_argument("--lane-id", default=None, help="a name for a new lane (default node<N>-lane<I>)")
    p.add_argument("--actor", default=default_actor())

    p = cmd("stock", "print book stock per location and observed stock per lane", _stock)
    p.add_argument("--sku", default=None)
