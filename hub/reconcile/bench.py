"""Throughput of reconciliation: ``python -m hub.reconcile.bench [--picks N] [--db PATH]``.

Builds a ledger with N sensor picks and about as many sales (written straight into the tables for speed: 95 % of
shoppers pay 30 s .. 10 min later, 2 % put the item back, the rest leave without paying), then times
``run_once``: the catch-up over the whole history, a re-run with nothing new, and a steady-state run after one
more minute of trading.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from hub.ledger import LedgerService, Sku, lane_activity
from hub.reconcile import Reconciler
from hub.schema import MIGRATIONS

T0 = 1_700_000_000_000


def _fill(path: Path, picks: int, skus: int, seed: int) -> tuple[int, int, int]:
    """Write ``picks`` sensor picks, their sales and put-backs; returns (sales, puts, end time ms)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    rows: list[tuple[object, ...]] = []
    sales = puts = 0
    t = T0
    seq: dict[int, int] = {}
    for i in range(picks):
        t += rng.randint(1000, 11000)
        s = rng.randrange(skus)
        lane = 2 * s + rng.randrange(2)
        node = 1 + lane // 8
        n = 1 if rng.random() < 0.85 else 2
        seq[node] = seq.get(node, 0) + 1
        sku = f"SKU{s:03d}"
        lane_id = f"L{lane:03d}"
        rows.append(
            (t, t, sku, f"sensor:{lane_id}", -n, "sensor_pick", f"node:{node}:ev:{seq[node]}", f"node:{node}",
             node, seq[node], -n * 3500, 95)
        )  # fmt: skip
        fate = rng.random()
        if fate < 0.02:
            seq[node] += 1
            puts += 1
            rows.append(
                (t + 20_000, t + 20_000, sku, f"sensor:{lane_id}", n, "sensor_put", f"node:{node}:ev:{seq[node]}",
                 f"node:{node}", node, seq[node], n * 3500, 95)
            )  # fmt: skip
        elif fate < 0.97:
            sold = t + rng.randint(30_000, 600_000)
            sales += 1
            rows.append(
                (sold, sold + 60_000, sku, f"lane:L{2 * s:03d}", -n, "sale", f"sale:T{i}", "pos", None, None, None,
                 None)
            )  # fmt: skip
    rows.sort(key=lambda r: (int(str(r[1])), str(r[6])))  # recorded order
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor, node_id,"
        " event_seq, weight_delta_dg, confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("UPDATE nodes SET last_seen_ms = ?", (t,))
    lane_activity.rebuild(conn)  # what the writer keeps beside sensor movements (written here without it)
    conn.execute("COMMIT")
    conn.close()
    return sales, puts, t


async def _bench(path: Path, picks: int, skus: int, seed: int) -> None:
    async with LedgerService(path, migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
        for s in range(skus):
            await ledger.add_sku(Sku(f"SKU{s:03d}", f"Product {s}", 3500, 15), actor="bench")
            for k in range(2):
                lane = 2 * s + k
                await ledger.assign_lane(1 + lane // 8, lane % 8, f"SKU{s:03d}", actor="bench", lane_id=f"L{lane:03d}")
    started = time.perf_counter()
    sales, puts, end = await asyncio.to_thread(_fill, path, picks, skus, seed)
    took = time.perf_counter() - started
    print(f"ledger: {picks:,} sensor picks, {puts:,} put-backs, {sales:,} sales ({took:.1f} s)")
    async with LedgerService(path, migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
        rec = Reconciler(ledger)
        for label, now in (
            ("catch-up over the whole history", end + 3_600_000),
            ("re-run, nothing new", end + 3_600_000),
        ):
            report = await rec.run_once(now)
            print(f"{label}: {report.seconds:.2f} s -- {report.summary()}")
        t = end + 3_600_000
        for i in range(6):  # one more minute of trading: 6 picks, 6 sales
            t += 10_000
            await ledger.record_sale("SKU000", 1, actor="pos", ref=f"late-{i}", ts=t - 5_000)
        report = await rec.run_once(t + 60_000)
        print(f"steady state (one new minute): {report.seconds:.3f} s -- {report.summary()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=100_000)
    parser.add_argument("--skus", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", type=Path, default=None, help="where to build the ledger (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.db"
        asyncio.run(_bench(path, args.picks, args.skus, args.seed))


if __name__ == "__main__":
    main()
