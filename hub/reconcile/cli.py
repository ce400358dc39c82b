"""``smartshelf reconcile ...``: run reconciliation once, list its alerts, resolve one.

``smartshelf reconcile [run] [--db PATH | --config hub.toml] [--now ISO8601]`` reconciles the ledger as of now (or
``--now``), prints what it did and the alerts it opened or resolved. ``alerts`` lists the unresolved alerts of every
kind the ledger defines (``AlertKind``; ``--all``: resolved ones too; ``--json``: as a JSON array), ``resolve ID
OUTCOME`` closes one (outcomes per kind: ``hub/reconcile/README.md``).
Exit codes as ``smartshelf ledger``: 0 ok, 2 refused (bad arguments, an outcome that does not fit, no ledger at the
database's path: only ``smartshelf ledger init`` makes one), 1 failure.
The database's migrations are ``args.migrations``, set by the root command (``hub.cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sqlite3
import sys
from datetime import datetime
from typing import Any

from hub.ledger import origin
from hub.ledger.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    Refused,
    add_db_options,
    default_actor,
    existing_ledger,
)
from hub.ledger.models import Alert, AlertKind, AlertStatus, InvalidArgument, LedgerError, SchemaError, UnknownAlert
from hub.ledger.reader import LedgerReader
from hub.ledger.service import LedgerService
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.plan import ReconcileConflict
from hub.reconcile.reconciler import Reconciler
from hub.reconcile.resolve import resolve

KINDS = tuple(kind.value for kind in AlertKind)  # the ledger's list: a kind added there is listed here


def _err(message: str) -> None:
    print(f"smartshelf reconcile: {message}", file=sys.stderr)


def _timestamp(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone (e.g. 2025-11-27T14:03:00Z)")
    return ts


def _config(args: argparse.Namespace) -> Any:

    values = {k: getattr(args, k) for k in ("window_s", "lead_s", "grace_s") if getattr(args, k, None) is not None}
    return ReconcileConfig(**values)


def _run(args: argparse.Namespace) -> int:

    existing_ledger(args)
    cfg = _config(args)

    async def run() -> Any:
        async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
            return await Reconciler(ledger, cfg).run_once(args.now)

    report = asyncio.run(run())
    print(report.summary())
    for verb, alerts in (("opened", report.opened), ("updated", report.updated), ("resolved", report.resolved)):
        for kind, cause, alert_id in alerts:
            print(f"  {verb} alert {alert_id}: {kind} {cause}")
    return EXIT_OK


def _describe(kind: str, ev: dict[str, Any]) -> str:
    if kind == "shrinkage":
        return f"{ev.get('unexplained_units')} units unexplained ({ev.get('picks_total')} picks)"
    if kind == "damage":
        return f"{ev.get('events_total')} events, suggested write-off {ev.get('suggested_units')}"
    if kind == "misplaced":
        return f"{ev.get('events_total')} puts, likely {ev.get('likely_sku') or 'unknown item'}"
    if kind == "reorder":
        return f"available {ev.get('available')} <= {ev.get('reorder_point')}: order {ev.get('suggested_qty')}"
    if kind == "tamper":
        return f"{ev.get('tags_total')} tags left without a pick"
    if kind == "unassigned_lane":
        return f"events from node {ev.get('node_id')} lane {ev.get('lane_index')}, which has no SKU"
    return str(ev.get("problem", ""))


def _alerts(args: argparse.Namespace) -> int:

    existing_ledger(args)

    async def run() -> list[Alert]:
        async with await LedgerReader.open(args.db) as reader, reader.snapshot():
            shown = []
            for kind in KINDS:
                for a in await reader.alerts(kind=kind, limit=10_000):
                    if args.all or a.status != AlertStatus.RESOLVED:
                        shown.append(a)
            return sorted(shown, key=lambda a: a.id)

    shown = asyncio.run(run())
    if args.json:
        print(json.dumps([dataclasses.asdict(a) for a in shown], indent=2, sort_keys=True))
        return EXIT_OK
    if not shown:
        print(f"no {'' if args.all else 'unresolved '}alerts in {args.db}")
    for a in shown:
        line = f"{a.id:>6}  {a.kind:<15} {a.status:<13} {a.cause_key:<32} {_describe(a.kind, a.evidence)}"
        if a.resolution:
            line += f"  -> {a.resolution}"
        print(line)
    return EXIT_OK


def _resolve(args: argparse.Namespace) -> int:

    existing_ledger(args)
    given = getattr(args, "config", None)
    config = str(given) if given is not None else None  # named in an unassigned_lane alert's refusal

    async def run() -> Any:
        async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
            return await resolve(
                ledger,
                args.alert_id,
                args.outcome,
                actor=args.actor,
                qty=args.qty,
                counted=args.counted,
                note=args.note,
                config=config,
            )

    alert = asyncio.run(run())
    entry = f" (movement {alert.resolution_movement_id})" if alert.resolution_movement_id else ""
    print(f"alert {alert.id} {alert.status}: {alert.resolution or ''}{entry}")
    return EXIT_OK


def _main(args: argparse.Namespace) -> int:

    try:
        rc: int = args.reconcile_func(args)
    except (Refused, InvalidArgument, UnknownAlert, SchemaError, ValueError) as exc:
        _err(str(exc))
        return EXIT_REFUSED
    except (LedgerError, ReconcileConflict, OSError, sqlite3.Error) as exc:
        _err(str(exc))
        return EXIT_FAILED
    return rc


def add_reconcile_parser(sub: Any) -> None:
    """Add ``reconcile`` and its subcommands to the top-level subparsers ``sub``."""
    group = sub.add_parser(
        "reconcile",
        help="match sensor picks to sales, raise and resolve shrinkage / damage / misplaced / sensor / reorder alerts",
        description="Without a subcommand: reconcile once (as 'run').",
    )

    def db_option(p: argparse.ArgumentParser, sub_level: bool) -> None:
        add_db_options(p, inherit=sub_level)

    def run_options(p: argparse.ArgumentParser, sub_level: bool) -> None:
        default = argparse.SUPPRESS if sub_level else None
        p.add_argument("--now", type=_timestamp, default=default, help="reconcile as of this time (default: now)")
        for name, what in (
            ("window-s", "a sale explains picks up to this long before it (default 900)"),
            ("lead-s", "... and up to this long after it (default 120)"),
            ("grace-s", "wait this long after the window for late sales (default 300)"),
        ):
            p.add_argument(f"--{name}", type=float, default=default, metavar="SECONDS", help=what)

    db_option(group, False)
    run_options(group, False)
    group.set_defaults(func=_main, reconcile_func=_run)
    cmds = group.add_subparsers(dest="reconcile_command", metavar="RECONCILE_COMMAND")

    p = cmds.add_parser("run", help="reconcile once and print what changed")
    db_option(p, True)
    run_options(p, True)
    p.set_defaults(reconcile_func=_run)

    p = cmds.add_parser("alerts", help="list unresolved reconciliation alerts")
    db_option(p, True)
    p.add_argument("--all", action="store_true", help="resolved alerts too")
    p.add_argument("--json", action="store_true", help="print the alerts (with their evidence) as a JSON array")
    p.set_defaults(reconcile_func=_alerts)

    p = cmds.add_parser("resolve", help="resolve an alert with an outcome (posting its write-off or count)")
    db_option(p, True)
    p.add_argument("alert_id", type=int, metavar="ALERT_ID")
    p.add_argument(
        "outcome",
        help="shrinkage: theft|found|count; damage: damaged|no_damage; tamper: tag_removed|no_tamper|theft;"
        " misplaced: moved|kept; sensor: fixed; reorder: ordered|dismissed; unassigned_lane: none (it resolves"
        " itself when the lane is assigned a SKU: hub command ... set-lane, or ledger assign-lane)",
    )
    p.add_argument("--qty", type=int, default=None, help="units to write off (default: from the evidence)")
    p.add_argument("--counted", type=int, default=None, help="outcome count: units counted on the lane")
    p.add_argument("--note", default=None)
    p.add_argument("--actor", default=default_actor())
    p.set_defaults(reconcile_func=_resolve)
