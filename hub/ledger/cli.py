"""``smartshelf ledger ...``: create, back up, restore, import into and inspect the ledger database.

The database is ``--db PATH``, else ``--config hub.toml``'s (the hub's), else ``$SMARTSHELF_DB``, else
``./smartshelf.db``; only ``init`` (and ``restore``) make one: every other command refuses a missing database
(``hub.ledger.cli_common.existing_ledger``). Its migrations (every subsystem's) are ``args.migrations``, set by the
root command (``hub.cli``: ``hub.schema.MIGRATIONS``).
``backup``, ``backup-key`` and ``restore`` are ``hub.ledger.backup_cli``'s. ``import --url`` goes through a running
hub's HTTP API (``hub.ledger.hub_api``); without it, an import into a ledger a running hub has open is refused.
Exit codes: 0 ok; 2 refused (a rejected import with its per-line report on stderr, an import beside a running hub,
a hub certificate not trusted, a restore refused, bad arguments); 1 any other failure (the hub not reached, an HTTP
error other than the file's).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from hub.ledger import hub_api, origin, schema
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
    configured_nodes,
    default_actor,
    default_db,
    directory_problem,
    existing_ledger,
    ledger_db,
    read_hub_toml,
)
from hub.ledger.cli_common import err as _err
from hub.ledger.dblock import DbLock, LedgerBusy
from hub.ledger.hub_api import TOKEN_ENV
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

NO_SKU = "(no SKU)"  # ledger stock's sku for units a node counted on a lane nobody assigned
NO_SKU_NOTE = (
    "units counted on a lane with no SKU, in no product's stock until the lane gets one"
    " (smartshelf hub command ... set-lane, or smartshelf ledger assign-lane)"
)


def _init(args: argparse.Namespace) -> int:

    if (problem := directory_problem(ledger_db(args))) is not None:
        raise Refused(problem)
    old, new = schema.open_and_migrate(args.db, args.migrations)
    print(f"{args.db}: schema version {new}" + (f" (upgraded from {old})" if old and old != new else ""))
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:

    path = Path(args.file)
    if not path.is_file():
        _err(f"{path}: no such file")
        return EXIT_FAILED
    if args.url:
        return _import_remote(args, path)
    existing_ledger(args)
    _no_hub_running(args)

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


def _no_hub_running(args: argparse.Namespace) -> None:
    """Refuse (``Refused``) an import into a ledger a running hub has open (it holds ``<db>.lock``, as every writer
    does; ``hub.ledger.dblock``): the hub is the one writer while it runs, and a file imported beside it would hold
    SQLite's write lock for the whole file (the hub's batches, acks and page wait behind it), as an API client it is
    not, without the page's live updates. The check takes the lock exclusively and lets go before the import opens
    the ledger (as ``flash --replaces`` does): a hub started in between runs beside the import, which SQLite's
    locking keeps consistent (one transaction)."""
    try:
        DbLock(args.db).acquire(exclusive=True).release()
    except LedgerBusy:
        raise Refused(
            f"{args.db} is open by a running hub (or another smartshelf command): while the hub runs, import"
            f" through it: --url {_hub_url(args)} --token-file TOKEN --cafile {args.db}.tls/cert.pem (an API"
            " client's token: smartshelf api-clients add), or stop the hub first; nothing was imported"
        ) from None


def _hub_url(args: argparse.Namespace) -> str:
    """The running hub's address for the hint: ``--config``'s ``[web] port`` (the hub's default 8443)."""
    web = read_hub_toml(args.config).get("web") if getattr(args, "config", None) is not None else None
    port = web.get("port", 8443) if isinstance(web, dict) else 8443
    return f"https://<hub>:{port if isinstance(port, int) and port > 0 else 8443}/"


def _import_remote(args: argparse.Namespace, path: Path) -> int:
    """POST the file to a running hub's HTTP API (``/api/v1/imports/<kind>``): its single writer imports it, all or
    nothing, as the API client the token belongs to (``hub.ledger.hub_api``: TLS, errors as one line)."""
    try:
        token = hub_api.read_token(args.token_file)
    except OSError as exc:
        _err(f"--token-file {args.token_file}: cannot be read ({exc.strerror or exc})")
        return EXIT_REFUSED
    if not token and args.token_file is not None:
        _err(f"--token-file {args.token_file}: empty (it holds the token smartshelf api-clients add printed)")
        return EXIT_REFUSED
    if not token:
        _err(f"--url needs an API client's token: --token-file PATH or ${TOKEN_ENV} (smartshelf api-clients add)")
        return EXIT_REFUSED
    parts = urllib.parse.urlsplit(args.url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        _err(f"--url {args.url}: not the hub's address (e.g. https://hub.local:8443/)")
        return EXIT_REFUSED
    if parts.scheme != "https" and not origin.is_loopback(parts.hostname):
        _err(f"{args.url}: the token would cross the network in clear text: use the hub's https:// address")
        return EXIT_REFUSED
    query = urllib.parse.urlencode({"name": path.name})
    url = urllib.parse.urljoin(args.url if args.url.endswith("/") else args.url + "/", f"api/v1/imports/{args.kind}")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}
    try:
        tls = hub_api.client_context(args.cafile)
        report = hub_api.post(
            f"{url}?{query}",
            path.read_bytes(),
            headers=headers,
            tls=tls,
            timeout=args.timeout,
            cafile=args.cafile,
            local_cert=_local_cert(args),
        )
    except hub_api.ClientRefused as exc:
        _err(f"{exc}; nothing was sent")
        return EXIT_REFUSED
    except hub_api.HubUnreachable as exc:
        _err(str(exc))
        return EXIT_FAILED
    except hub_api.HubError as exc:
        return _import_refused(exc, path, url)
    try:
        rows, applied, dup = (int(report[k]) for k in ("rows", "applied", "duplicates"))
    except (TypeError, KeyError, ValueError):
        _err(f"{url}: the answer is not the hub's import report: is --url the hub's address? ({str(report)[:80]})")
        return EXIT_FAILED
    if rows and applied == 0:
        print(f"{path.name}: {rows} {args.kind} rows, all already in the ledger: nothing changed")
    else:
        print(f"{path.name}: {rows} {args.kind} rows: {applied} applied, {dup} already in the ledger")
    return EXIT_OK


def _import_refused(exc: hub_api.HubError, path: Path, url: str) -> int:
    """The hub's error answer to an import, as the local import reports it (exit 2: nothing was written)."""
    if exc.status == 422:  # the file's problems, by line
        for e in exc.problems:
            line = str(e.get("field", "")).removeprefix("line ")
            print(f"{path.name}:{line}: {e.get('message')}", file=sys.stderr)
        n = len(exc.problems)
        print(f"{path.name}: rejected, nothing was written ({n} problem{'s' if n != 1 else ''})", file=sys.stderr)
        return EXIT_REFUSED
    if exc.status == 400:  # the request itself refused (an empty file, a bad name): nothing was written
        _err(f"{path.name}: refused by the hub, nothing was written: {exc.detail()}")
        return EXIT_REFUSED
    if exc.status == 413:
        _err(f"{path.name}: too large for one import through the hub, nothing was written: {exc.detail()}")
        _err(f"split {path.name} into smaller files (each with the header row) and import them one by one")
        return EXIT_REFUSED
    if exc.status == 401:  # the token: not one of the hub's clients, or a disabled one
        _err(f"{exc}: check the token (--token-file or ${TOKEN_ENV}) against smartshelf api-clients list")
        return EXIT_FAILED
    _err(str(exc))
    return EXIT_FAILED


def _local_cert(args: argparse.Namespace) -> Path | None:
    """The hub certificate on this machine, for the hint when the hub's is not trusted: the command's ledger's
    (``--config`` / ``--db``, else the default), else a Pi's; None when neither is here."""
    try:
        db = ledger_db(args)
    except Refused:
        db = None
    for cert in (Path(f"{db}.tls") / "cert.pem" if db is not None else None, hub_api.PI_CERT):
        if cert is not None and cert.is_file():
            return cert
    return None


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
    if getattr(args, "config", None) is not None and args.node not in (nodes := configured_nodes(args.config)):
        have = ", ".join(map(str, sorted(nodes))) or "none"
        raise Refused(
            f"node {args.node} is not one of {args.config}'s nodes (its [[node]] tables and hub.nodes_files: {have}):"
            " nothing assigned"
        )

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
            observed: list[tuple[str, str | None, int]] = [
                (o.lane_id, o.sku, o.qty) for o in await reader.observed_stock(sku=args.sku)
            ]
            if args.sku is None:  # units counted on a lane nobody assigned are of no SKU: not one --sku names
                observed += [(lane, None, units) for lane, units in await reader.no_sku_stock()]
            if observed:
                print(f"\n{'sku':<20}{'lane (sensor ledger)':<28}{'observed':>8}")
                for lane, sku, qty in sorted(observed, key=lambda row: row[0]):  # stable: a lane's SKUs stay sorted
                    print(f"{sku or NO_SKU:<20}{lane:<28}{qty:>8}")
            if any(sku is None for _lane, sku, _qty in observed):
                print(f"\n{NO_SKU}: {NO_SKU_NOTE}")
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
        help="the hub's certificate, to trust for --url: a hub's own self-signed one is <ledger db>.tls/cert.pem"
        f" ({hub_api.PI_CERT} on a Pi; the hub logs its SHA-256 at every start); default: the system's authorities",
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

    p = cmd("stock", "print book stock per location and observed stock per lane (and lanes with no SKU)", _stock)
    p.add_argument("--sku", default=None, help="only this SKU's stock (lanes with no SKU left out)")
