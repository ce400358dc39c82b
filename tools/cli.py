"""Developer commands of the ``smartshelf`` command, registered where these tools are installed.

``tools/pyproject.toml`` (the ``smartshelf-tools`` distribution, installed by ``make bootstrap``) names each
``register`` function below in the ``smartshelf.commands`` entry-point group; ``hub.cli`` calls them when it builds
its parser. A hub installed without the tools has none of these commands.

* ``smartshelf emulate``  emulated shelf nodes on ptys (``tools.emulation.host``)
* ``smartshelf demo``     the store story end to end, compared with its ground truth (``tools.demo``)
* ``smartshelf bench``    benchmark figures measured side by side in one run (``tools.bench``)
* ``smartshelf replay``   a recorded weight trace through the node's detector (``tools.replay``)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hub.cli.args import number
from tools.emulation.host import add_emulate_parser

BENCH_TARGETS = ("protocol", "sensing", "hub", "ble", "web", "flash", "rfid", "fleet")

_grams = number(float, lambda v: 1.0 <= v <= 100000.0, "unit weight must be between 1 g and 100 kg")
_percent = number(float, lambda v: 0.0 <= v <= 30.0, "spread must be between 0 and 30 %")
_duration = number(float, lambda v: v > 0, "duration must be positive", "a number of seconds")


def register_emulate(sub: Any) -> None:
    add_emulate_parser(sub)


def register_bench(sub: Any) -> None:
    bench = sub.add_parser("bench", help="print benchmark figures measured side by side in one run")
    bench.add_argument("target", choices=BENCH_TARGETS, help="what to benchmark")
    bench.add_argument(
        "--min-ms", type=int, default=1000, help="protocol: minimum time per measured stage (default 1000)"
    )
    bench.add_argument("--seed", type=int, default=1, help="sensing, rfid: scenario generator seed (default 1)")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="sensing, hub, ble, web, rfid, fleet: a small set (a few seconds; ble: about 30; rfid: about 90)",
    )
    bench.add_argument("--json", action="store_true", help="print machine-readable JSON")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    # Each benchmark imports what it measures (the web one needs the status page, the sensing one MicroPython):
    # import only the one asked for.
    if args.target == "protocol":
        from tools.bench import protocol

        protocol.run(min_ms=args.min_ms, as_json=args.json)
    elif args.target == "sensing":
        from tools.bench import sensing

        sensing.run(seed=args.seed, quick=args.quick, as_json=args.json)
    elif args.target == "hub":
        from tools.bench import hub

        hub.run(quick=args.quick, as_json=args.json)
    elif args.target == "ble":
        from tools.bench import ble

        ble.run(quick=args.quick, as_json=args.json)
    elif args.target == "web":
        from tools.bench import web

        web.run(quick=args.quick, as_json=args.json)
    elif args.target == "rfid":
        from tools.bench import rfid

        rfid.run(seed=args.seed, quick=args.quick, as_json=args.json)
    elif args.target == "fleet":
        from tools.bench import fleet

        fleet.run(quick=args.quick, as_json=args.json)
    else:
        from tools.bench import flash

        flash.run(as_json=args.json)
    return 0


def register_replay(sub: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help="feed a recorded weight trace (CSV) through the node's detector, one JSON event per line",
        description="Rows 'timestamp_seconds,grams' (optional header, # comments, any sample rate; '-' reads "
        "stdin). Timestamps may step back (put back in order within 0.1 s), repeat (exact duplicate rows dropped) "
        "and gap: what was done is said on stderr, one line per kind. Input that is not a trace: a message naming "
        "the line, exit status 2, no events printed.",
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


def _replay(args: argparse.Namespace) -> int:
    from tools import replay

    return replay.run(args.trace, args.unit_weight, args.spread, args.runtime)


def register_demo(sub: Any) -> None:
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
    demo.add_argument(
        "--link", choices=("serial", "ble"), default="serial", help="how the nodes reach the hub (default serial)"
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from tools import demo

    return demo.main(Path(args.dir), args.nodes, args.duration, args.seed, args.link)
