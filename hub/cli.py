"""The `smartshelf` command."""

from __future__ import annotations

import argparse
import sys

from hub.argtypes import number
from hub.schema import MIGRATIONS


def _bench(args: argparse.Namespace) -> int:
    if args.target == "protocol":
        from tools.bench import protocol

        protocol.run(min_ms=args.min_ms, as_json=args.json)
        return 0
    if args.target == "sensing":
        from tools.bench import sensing

        sensing.run(seed=args.seed, quick=args.quick, as_json=args.json)
        return 0
    if args.target == "hub":
        from tools.bench import hub

        hub.run(quick=args.quick, as_json=args.json)
        return 0
    if args.target == "web":
        from tools.bench import web

        web.run(quick=args.quick, as_json=args.json)
        return 0
    raise AssertionError(args.target)


def _replay(args: argparse.Namespace) -> int:
    from tools import replay

    return replay.run(args.trace, args.unit_weight, args.spread, args.runtime)


_grams = number(float, lambda v: 1.0 <= v <= 100000.0, "unit weight must be between 1 g and 100 kg")
_percent = number(float, lambda v: 0.0 <= v <= 30.0, "spread must be between 0 and 30 %")
_duration = number(float, lambda v: v > 0, "duration must be positive", "a number of seconds")


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tools import demo

    return demo.main(Path(args.dir), args.nodes, args.duration, args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartshelf", description="Smart-shelf perpetual inventory tools")
    parser.set_defaults(migrations=MIGRATIONS)  # the database's schema, for every subcommand that opens it
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="print benchmark figures measured side by side in one run")
    bench.add_argument("target", choices=["protocol", "sensing", "hub", "web"], help="what to benchmark")
    bench.add_argument(
        "--min-ms", type=int, default=1000, help="protocol: minimum time per measured stage (default 1000)"
    )
    bench.add_argument("--seed", type=int, default=1, help="sensing: scenario generator seed (default 1)")
    bench.add_argument("--quick", action="store_true", help="sensing, hub, web: a small set (a few seconds)")
    bench.add_argument("--json", action="store_true", help="print machine-readable JSON")
    bench.set_defaults(func=_bench)

    replay = sub.add_parser(
        "replay",
        help="feed a recorded weight trace (CSV) through the node's detector, one JSON event per line",
        description="Rows 'timestamp_seconds,grams' (optional header, # comments, any sample rate; '-' reads "
        "stdin). Bad input: a message naming the line, exit status 2, no events printed.",
    )
    replay.add_argument("trace", metavar="TRACE.csv", help="the trace file, or - for standard input")
    replay.add_argument("--unit-weight", type=_grams, metavar="GRAMS", help="the SKU's unit weight: events get a count")
    replay.add_argument(
        "--spread", type=_percent, default=2.0, metavar="PERCENT", help="unit weight spread, 1 sigma (default 2)"
    )
    replay.add_argument(
        "--runtime",
        choices=["cpython", "micropython"],
        default="cpython",
        help="run the detector on CPython or on the real MicroPython runtime (same events)",
    )
    replay.set_defaults(func=_replay)

    demo = sub.add_parser(
        "demo",
        help="emulated shelves + hub + SQLite ledger playing a store scenario; prints live progress",
        description="Runs emulated nodes (MicroPython on ptys), the hub and reconciliation on a fresh ledger. "
        "With --duration it stops by itself and compares the ledger with the scenario's ground truth "
        "(exit status 0 when they match).",
    )
    demo.add_argument("--duration", type=_duration, metavar="SECONDS", help="stop after this long (at least 75)")
    demo.add_argument("--nodes", type=int, default=3, choices=range(1, 4), metavar="N", help="shelf nodes (1-3)")
    demo.add_argument("--dir", default=".demo", help="working directory, recreated each run (default .demo)")
    demo.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    demo.set_defaults(func=_demo)

    from hub.ledger.cli import add_ledger_parser

    add_ledger_parser(sub)

    from hub.reconcile.cli import add_reconcile_parser

    add_reconcile_parser(sub)

    from hub.web.cli import add_api_clients_parser, add_users_parser

    add_users_parser(sub)
    add_api_clients_parser(sub)

    from hub.hub_cli import add_hub_parser

    add_hub_parser(sub)

    from tools.emulation.host import add_emulate_parser

    add_emulate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
