"""Invariants under random operations, and readers that see consistent snapshots while the writer runs."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest

from hub.ledger import Applied, LedgerError, LedgerReader, LedgerService, Reason, SensorEvent, SensorGap, Sku
from hub.schema import MIGRATIONS
from shared_protocol.messages import KIND_PICK, KIND_PUT

SKUS = ("COLA", "TEA", "SOAP")
LANES = {"A1": (1, 0, "COLA"), "A2": (1, 1, "COLA"), "B1": (2, 0, "TEA")}
BOOK_LOCATIONS = ("backroom", "warehouse", "lane:A1", "lane:A2", "lane:B1")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_balances_equal_the_sum_of_movements_after_random_operations(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    model: dict[tuple[str, str], int] = defaultdict(int)  # independent expectation of book and observed stock
    # NORMAL: this test is about logic, not durability, and stays fast.
    ledger = LedgerService(
        tmp_path / "l.db", migrations=MIGRATIONS, max_batch=rng.choice([1, 7, 1000]), synchronous="NORMAL"
    )
    async with ledger, await LedgerReader.open(ledger.path) as reader:
        for sku in SKUS:
            await ledger.add_sku(Sku(sku, sku.title(), 1000), actor="setup")
        for lane_id, (node, index, sku) in LANES.items():
            await ledger.assign_lane(node, index, sku, actor="setup", lane_id=lane_id)
        # a plain location is opened by stock entering it (sales from one that never held stock are refused)
        await ledger.record_receipt(SKUS[0], 1, actor="setup", ref="open-warehouse", location="warehouse")
        model[(SKUS[0], "warehouse")] += 1
        event_seq = {1: 0, 2: 0}
        posted: list[int] = []
        for step in range(300):
            op = rng.choice(["receipt", "sale", "restock", "transfer", "writeoff", "count", "reverse", "sensor"])
            sku = rng.choice(SKUS)
            qty = rng.randint(1, 9)
            ref = f"{step}"
            try:
                if op == "receipt":
                    r = await ledger.record_receipt(sku, qty, actor="t", ref=ref)
                    model[(sku, "backroom")] += qty
                elif op == "sale":
                    loc = rng.choice(BOOK_LOCATIONS)
                    r = await ledger.record_sale(sku, qty, actor="t", ref=ref, location=loc)
                    model[(sku, loc)] -= qty
                elif op == "restock":
                    lane_id = rng.choice(list(LANES))
                    sku = LANES[lane_id][2]
                    r = await ledger.restock(sku, lane_id, qty, actor="t", ref=ref)
                    model[(sku, "backroom")] -= qty
                    model[(sku, f"lane:{lane_id}")] += qty
                elif op == "transfer":
                    src, dst = rng.sample(BOOK_LOCATIONS, 2)
                    r = await ledger.transfer(sku, qty, src, dst, actor="t", ref=ref)
                    model[(sku, src)] -= qty
                    model[(sku, dst)] += qty
                elif op == "writeoff":
                    reason = rng.choice([Reason.DAMAGE, Reason.SHRINKAGE])
                    r = await ledger.write_off(sku, qty, reason, actor="t", ref=ref)
                    model[(sku, "backroom")] -= qty
                elif op == "count":
                    loc = rng.choice(BOOK_LOCATIONS)
                    counted = rng.randint(0, 20)
                    await ledger.record_count(sku, counted, actor="t", ref=ref, location=loc)
                    model[(sku, loc)] = counted
                    continue
                elif op == "reverse" and posted:
                    target = posted.pop(rng.randrange(len(posted)))
                    original = await reader.movement(target)
                    assert original is not None
                    legs = (await reader.movements(source_ref=original.source_ref)).items
                    await ledger.reverse(target, actor="t", why="random")
                    for leg in legs:
                        assert leg.sku is not None
                        model[(leg.sku, leg.location)] -= leg.qty
                    continue
                else:
                    node = rng.choice([1, 2])
                    futures = []
                    new = 0
                    for i in range(rng.randint(1, 20)):  # queued together: applied in one batch
                        lane_index = rng.choice([0, 1]) if node == 1 else 0
                        lane_id = next(k for k, v in LANES.items() if v[:2] == (node, lane_index))
                        key = (LANES[lane_id][2], f"sensor:{lane_id}")
                        new += 1
                        if rng.random() < 0.1:
                            futures.append(ledger.submit(SensorGap(node, lane_index, -qty, f"g{step}-{i}", 1)))
                            model[key] -= qty
                            continue
                        event_seq[node] += 1
                        kind = rng.choice([KIND_PICK, KIND_PUT])
                        delta = -qty if kind == KIND_PICK else qty
                        model[key] += delta
                        for _ in range(rng.choice([1, 1, 2])):  # some are re-delivered: they count once
                            ev = SensorEvent(node, event_seq[node], lane_index, kind, delta, delta * 1000, 90, 1)
                            futures.append(ledger.submit(ev))
                    results = await asyncio.gather(*futures)
                    assert sum(isinstance(res, Applied) for res in results) == new
                    continue
            except LedgerError as exc:
                pytest.fail(f"step {step} {op}: {exc}")
            assert isinstance(r, Applied)
            posted.append(r.movement_ids[-1])

        async with reader.snapshot():
            assert await reader.consistency_errors() == []
            actual = {(b.sku, b.location): b.qty for b in await reader.book_stock()}
            actual.update({(o.sku, f"sensor:{o.lane_id}"): o.qty for o in await reader.observed_stock()})
            assert {k: v for k, v in actual.items() if v} == {k: v for k, v in model.items() if v}
            for node in (1, 2):
                state = await reader.node(node)
                assert state is not None and state.highest_contiguous_event_seq == event_seq[node]


async def test_readers_see_consistent_snapshots_while_the_writer_runs(tmp_path: Path) -> None:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS) as ledger:
        await ledger.add_sku(Sku("COLA", "Cola", 3500), actor="setup")
        await ledger.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
        await ledger.record_receipt("COLA", 1000, actor="setup", ref="R0")
        stop = asyncio.Event()
        done = [0, 0, 0, 0]  # how far each task got (the writer's transfers, each reader's checks), for the wait below

        async def writer() -> int:
            n = 0
            while not stop.is_set():
                n += 1
                done[0] = n
                # Book total stays 1000; the sensor ledger gets balanced pick/put pairs in one batch.
                await ledger.transfer("COLA", 1 + n % 5, "backroom", "lane:A1", actor="w", ref=f"T{n}")
                await asyncio.gather(
                    ledger.submit(SensorEvent(1, 2 * n - 1, 0, KIND_PICK, -1, -3500, 90, n)),
                    ledger.submit(SensorEvent(1, 2 * n, 0, KIND_PUT, 1, 3500, 90, n)),
                )
            return n

        async def read_snapshots(i: int) -> int:
            checks = 0
            async with await ledger.reader() as reader:
                while not stop.is_set():
                    async with reader.snapshot():
                        count = await reader.movement_count()
                        assert await reader.book_total("COLA") == 1000
                        assert await reader.consistency_errors() == []
                        assert [o.qty for o in await reader.observed_stock()] in ([], [0])
                        await asyncio.sleep(0.005)  # the writer commits meanwhile
                        assert await reader.movement_count() == count  # still the same snapshot
                    checks += 1
                    done[1 + i] = checks
            return checks

        writer_task = asyncio.create_task(writer())
        readers = [asyncio.create_task(read_snapshots(i)) for i in range(3)]
        # at least 0.6 s of both running, and until each has done enough (longer on a loaded machine)
        started = time.monotonic()
        while time.monotonic() - started < 0.6 or done[0] <= 10 or min(done[1:]) <= 5:
            if time.monotonic() - started > 60 or writer_task.done() or any(r.done() for r in readers):
                break  # a task that failed (its assertion is raised below) or one that never gets on
            await asyncio.sleep(0.05)
        stop.set()
        transfers = await writer_task
        checks = await asyncio.gather(*readers)
        assert transfers > 10 and min(checks) > 5
