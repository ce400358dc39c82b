"""The `smartshelf` command."""

from __future__ import annotations

import argparse
import sys


def _bench(args: argparse.Namespace) -> int:
    if args.target == "protocol":
        from tools.bench import protocol

        protocol.run(min_ms=args.min_ms, as_json=args.json)
        return 0
    raise AssertionError(args.target)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartshelf", description="Smart-shelf perpetual inventory tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="print benchmark figures measured side by side in one run")
    bench.add_argument("target", choices=["protocol"], help="what to benchmark")
    bench.add_argument("--min-ms", type=int, default=1000, help="minimum time per measured stage (default 1000)")
    bench.add_argument("--json", action="store_true", help="print machine-readable JSON")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
