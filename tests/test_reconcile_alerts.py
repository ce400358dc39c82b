"""Reconciliation against a real ledger (SQLite in tmp_path): matching with late and out-of-order sales, put-backs,
shrinkage / damage / misplaced / sensor / reorder alerts, resolutions and the entries they post, idempotence."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.ledger import Alert, AlertStatus, LedgerService, NodeUpdate, Reason, SensorEvent, Sku
from hub.ledger.models import AlertStateError, InvalidArgument
from hub.reconcile import ReconcileConfig, ReconcileConflict, Reconciler, resolve
from hub.reconcile.apply import apply_plan
from hub.reconcile.plan import build_plan
from hub.schema import MIGRATIONS
from shared_protocol.messages import KIND_ANOMALY, KIND_PICK, KIND_PUT

T0 = 1_700_000_000_000
NODE = 7
SETTLE = 900 + 300  # window + grace, seconds
COLA = Sku("COLA", "Cola 330 ml", 3500, 15)
CHIPS = Sku("CHIPS", "Chips 150 g", 1500, 20)
LANES = {"A1": (NODE, 0, "COLA"), "A2": (NODE, 1, "COLA"), "B1": (NODE, 2, "CHIPS")}


class Shop:
    """A ledger with two COLA lanes and a CHIPS lane on node 7, stocked; helpers in seconds after T0."""

    def __init__(self, ledger: LedgerService, config: ReconcileConfig | None = None) -> None:
        self.ledger = ledger
        self.rec = Reconciler(ledger, config)
        self.seq: dict[int, int] = {}
        self.refs = 0
        self.units = {"COLA": 3500, "CHIPS": 1500}
        self.lane_sku = {index: sku for _, (_, index, sku) in LANES.items()}
        self.lane_index = {lane: index for lane, (_, index, _) in LANES.items()}

    async def setup(self) -> Shop:
        for sku in (COLA, CHIPS):
            await self.ledger.add_sku(sku, actor="setup")
        for lane_id, (node, index, sku) in LANES.items():
            await self.ledger.assign_lane(node, index, sku, actor="setup", lane_id=lane_id)
        for sku in ("COLA", "CHIPS"):
            await self.ledger.record_receipt(sku, 100, actor="setup", ref=f"R-{sku}", ts=T0 - 86_400_000)
        for lane_id, (_, _, sku) in LANES.items():
            await self.ledger.restock(sku, lane_id, 20, actor="setup", ref=f"S-{lane_id}", ts=T0 - 86_400_000)
        return self

    async def event(
        self,
        lane: str,
        kind: int,
        count: int,
        t: float,
        *,
        weight: int | None = None,
        confidence: int = 96,
        node: int = NODE,
    ) -> int:
        seq = self.seq[node] = self.seq.get(node, 0) + 1
        sku = self.lane_sku[self.lane_index[lane]] if lane in self.lane_index else "COLA"
        w = weight if weight is not None else count * self.units[sku]
        index = self.lane_index.get(lane, 0)
        result = await self.ledger.submit(SensorEvent(node, seq, index, kind, count, w, confidence, ms(t)))
        assert result.movement_ids or result.duplicate
        return result.movement_ids[0]

    async def pick(self, lane: str, n: int, t: float, **kw: Any) -> int:
        return await self.event(lane, KIND_PICK, -n, t, **kw)

    async def put(self, lane: str, n: int, t: float, **kw: Any) -> int:
        return await self.event(lane, KIND_PUT, n, t, **kw)

    async def sale(self, sku: str, n: int, t: float, ref: str | None = None) -> int:
        self.refs += 1
        result = await self.ledger.record_sale(sku, n, actor="pos", ref=ref or f"T-{self.refs}", ts=ms(t))
        return result.movement_ids[0]

    async def run(self, t: float) -> Any:
        return await self.rec.run_once(ms(t))

    async def alerts(self, kind: str | None = None, status: str | None = None) -> list[Alert]:
        async with await self.ledger.reader() as reader:
            found = await reader.alerts(kind=kind, limit=1000)
        return sorted((a for a in found if status is None or a.status == status), key=lambda a: a.id)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.ledger.path)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()


def ms(t: float) -> int:
    return T0 + round(t * 1000)


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
        yield await Shop(ledger).setup()


def reconciliation_kinds(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.kind in ("shrinkage", "damage", "misplaced", "sensor", "reorder")]


# ------------------------------------------------------------------------------------------------- matching


async def test_honest_shoppers_with_late_sales_raise_no_alert(shop: Shop) -> None:
    a = await shop.pick("A1", 1, 0)
    b = await shop.pick("A1", 2, 10)
    c = await shop.pick("A2", 1, 20)  # the same SKU on another lane
    d = await shop.pick("B1", 1, 30)
    first = await shop.run(400)  # nothing has been sold yet, but the window is still open: no verdict
    assert first.stats["picks_settled"] == 0 and first.stats["picks_open"] == 4
    # The POS delivers late, in one batch, out of order; shopper 2 paid for COLA picked from two lanes.
    s2 = await shop.sale("COLA", 3, 500, "T-2")
    s1 = await shop.sale("COLA", 1, 200, "T-1")
    s3 = await shop.sale("CHIPS", 1, 450, "T-3")
    await shop.run(900)
    report = await shop.run(30 + SETTLE + 1)
    assert report.stats["picks_settled"] == 4 and report.stats["units_unexplained"] == 0
    assert reconciliation_kinds(await shop.alerts()) == []
    assert shop.sql("SELECT movement_id, status, sold FROM recon_picks ORDER BY movement_id") == [
        (a, "explained", 1),
        (b, "explained", 2),
        (c, "explained", 1),
        (d, "explained", 1),
    ]
    assert shop.sql("SELECT pick_id, by_id, kind, units, late FROM recon_matches ORDER BY pick_id, by_id") == [
        (a, s1, "sale", 1, 0),
        (b, s2, "sale", 2, 0),
        (c, s2, "sale", 1, 0),
        (d, s3, "sale", 1, 0),
    ]


async def test_theft_opens_one_shrinkage_alert_and_confirming_it_writes_the_units_off(shop: Shop) -> None:
    await shop.pick("A1", 1, 0)
    await shop.sale("COLA", 1, 120)
    stolen = await shop.pick("A1", 2, 60, weight=-7012, confidence=93)
    await shop.run(60 + SETTLE - 1)  # window + grace not over yet: no alert
    assert await shop.alerts("shrinkage") == []
    await shop.run(60 + SETTLE + 1)
    [alert] = await shop.alerts("shrinkage")
    assert (alert.cause_key, alert.status) == ("lane:A1/COLA", AlertStatus.OPEN)
    ev = alert.evidence
    assert (ev["lane_id"], ev["sku"], ev["location"], ev["node_id"], ev["unexplained_units"]) == (
        "A1",
        "COLA",
        "lane:A1",
        NODE,
        2,
    )
    [p] = ev["picks"]
    assert (p["movement_id"], p["units"], p["unexplained"], p["weight_delta_dg"], p["confidence"]) == (
        stolen,
        2,
        2,
        -7012,
        93,
    )
    assert p["ts_ms"] == ms(60) and p["ts"] == "2023-11-14T22:14:20.000Z" and p["event_seq"] == 2
    assert p["source_ref"] == "node:7:ev:2" and p["explained_by"] == []

    async with await shop.ledger.reader() as reader:
        book_before = await reader.book_total("COLA")
    done = await resolve(shop.ledger, alert.id, "theft", actor="manager")
    assert done.status == AlertStatus.RESOLVED and done.resolution == "theft confirmed: 2 written off"
    assert done.resolution_movement_id is not None
    async with await shop.ledger.reader() as reader:
        m = await reader.movement(done.resolution_movement_id)
        assert m is not None and (m.reason, m.qty, m.location, m.sku) == (Reason.SHRINKAGE, -2, "lane:A1", "COLA")
        assert m.source_ref == f"writeoff:alert{alert.id}"
        assert await reader.book_total("COLA") == book_before - 2
        assert await reader.consistency_errors() == []


@pytest.mark.parametrize(
    ("offset_s", "explained"),
    [(900, True), (901, False), (-120, True), (-121, False), (450, True)],
    ids=["window-edge", "just-after-window", "lead-edge", "just-before-lead", "inside"],
)
async def test_a_sale_explains_a_pick_only_within_the_window(shop: Shop, offset_s: int, explained: bool) -> None:
    await shop.pick("A1", 1, 1000)
    await shop.sale("COLA", 1, 1000 + offset_s)
    report = await shop.run(1000 + SETTLE + 1)
    assert report.stats["picks_settled"] == 1
    assert report.stats["units_unexplained"] == (0 if explained else 1)
    assert len(await shop.alerts("shrinkage")) == (0 if explained else 1)


async def test_a_put_back_cancels_the_pick_and_a_restock_does_not(shop: Shop) -> None:
    taken = await shop.pick("A1", 1, 0)
    back = await shop.put("A1", 1, 40)
    await shop.run(SETTLE + 100)
    assert await shop.alerts("shrinkage") == []
    assert shop.sql("SELECT pick_id, by_id, kind, units FROM recon_matches") == [(taken, back, "put_back", 1)]
    assert shop.sql("SELECT status, put_back, sold FROM recon_picks") == [("explained", 1, 0)]

    await shop.pick("A2", 1, 2000)
    await shop.put("A2", 12, 2030)  # someone restocked 12: not a put-back of the one just taken
    await shop.run(2000 + SETTLE + 1)
    [alert] = await shop.alerts("shrinkage")
    assert alert.cause_key == "lane:A2/COLA" and alert.evidence["unexplained_units"] == 1


async def test_a_put_back_on_another_lane_does_not_cancel(shop: Shop) -> None:
    await shop.pick("A1", 1, 0)
    await shop.put("A2", 1, 30)
    await shop.run(SETTLE + 1)
    assert [a.cause_key for a in await shop.alerts("shrinkage")] == ["lane:A1/COLA"]


async def test_order_picks_from_the_shelf_explain_picks_and_ones_from_the_warehouse_do_not(shop: Shop) -> None:
    await shop.ledger.record_receipt("COLA", 10, actor="wms", ref="R-WH", location="warehouse")
    first = await shop.pick("A1", 2, 0)
    await shop.pick("A2", 1, 3000)
    order = await shop.ledger.record_order_pick("COLA", 2, "ORD-5", actor="picker", ref="ORD-5/1", ts=ms(-60))
    await shop.ledger.record_order_pick(
        "COLA", 1, "ORD-6", actor="picker", ref="ORD-6/1", ts=ms(3100), location="warehouse"
    )
    await shop.run(3000 + SETTLE + 1)
    assert shop.sql("SELECT pick_id, by_id, kind, units FROM recon_matches") == [
        (first, order.movement_ids[0], "order_pick", 2)
    ]
    [alert] = await shop.alerts("shrinkage")
    assert alert.cause_key == "lane:A2/COLA"


async def test_sales_delivered_late_in_shuffled_batches_give_the_same_result(tmp_path: Path) -> None:
    rng = random.Random(11)
    picks = sorted((rng.uniform(0, 3600), rng.choice(["A1", "A2"]), rng.randint(1, 2)) for _ in range(40))
    sales = []
    for i, (t, _, n) in enumerate(picks):
        if i % 10 != 3:  # every tenth shopper leaves without paying
            sales.append((t + rng.uniform(30, 800), n, f"T-{i}"))

    async def scenario(name: str, delay_s: float, shuffle: bool) -> tuple[list[Any], list[Any], list[Any]]:
        async with LedgerService(tmp_path / f"{name}.db", migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
            shop = await Shop(ledger).setup()
            pending = sorted(sales)
            for now in range(0, 3600 + 2 * SETTLE, 60):
                for t, lane, n in picks:
                    if now - 60 < t <= now:
                        await shop.pick(lane, n, t)
                due = [s for s in pending if s[0] + delay_s <= now]
                pending = [s for s in pending if s[0] + delay_s > now]
                if shuffle:
                    rng.shuffle(due)
                for t, n, ref in due:
                    await shop.sale("COLA", n, t, ref)
                await shop.run(now)
            matches = shop.sql(
                "SELECT p.ts_ms, s.source_ref, c.kind, c.units, c.late FROM recon_matches AS c"
                " JOIN movements AS p ON p.id = c.pick_id JOIN movements AS s ON s.id = c.by_id ORDER BY 1, 2"
            )
            status = shop.sql("SELECT ts_ms, lane_id, units, unexplained, status FROM recon_picks ORDER BY ts_ms")
            alerts = [(a.cause_key, a.status, a.evidence["unexplained_units"]) for a in await shop.alerts("shrinkage")]
            return matches, status, alerts

    prompt = await scenario("prompt", 0, False)
    late = await scenario("late", 290, True)  # up to grace_s late, batches in random order
    assert late == prompt
    unexplained = sum(n for i, (_, _, n) in enumerate(picks) if i % 10 == 3)
    assert sum(row[3] for row in prompt[1]) == unexplained
    assert sum(a[2] for a in prompt[2]) == unexplained


async def test_a_late_sale_explains_a_reported_pick_and_resolves_the_alert(shop: Shop) -> None:
    pick = await shop.pick("A1", 1, 0)
    await shop.run(SETTLE + 1)
    [alert] = await shop.alerts("shrinkage")
    sold = await shop.sale("COLA", 1, 600, "T-LATE")  # the POS batch arrives after the alert was raised
    report = await shop.run(SETTLE + 120)
    assert report.stats["units_explained_late"] == 1
    [done] = await shop.alerts("shrinkage")
    assert done.id == alert.id and done.status == AlertStatus.RESOLVED
    assert done.resolution == "explained late by sale:T-LATE" and done.resolution_movement_id is None
    assert shop.sql("SELECT pick_id, by_id, late FROM recon_matches") == [(pick, sold, 1)]
    assert shop.sql("SELECT status, sold, unexplained FROM recon_picks") == [("explained", 1, 0)]


async def test_a_late_sale_does_not_undo_a_confirmed_theft(shop: Shop) -> None:
    await shop.pick("A1", 1, 0)
    await shop.run(SETTLE + 1)
    [alert] = await shop.alerts("shrinkage")
    await resolve(shop.ledger, alert.id, "theft", actor="manager")
    await shop.sale("COLA", 1, 600)
    report = await shop.run(SETTLE + 120)
    assert report.stats["units_explained_late"] == 0 and shop.sql("SELECT count(*) FROM recon_matches") == [(0,)]


async def test_one_open_alert_per_lane_with_later_evidence_appended(shop: Shop) -> None:
    first = await shop.pick("A1", 1, 0)
    await shop.run(SETTLE + 1)
    [alert] = await shop.alerts("shrinkage")
    await resolve(shop.ledger, alert.id, "found", actor="manager", note="was behind the front row")
    again = await shop.pick("A1", 1, 3000)
    more = await shop.pick("A1", 2, 3100)
    await shop.run(3000 + SETTLE + 1)
    await shop.ledger.acknowledge_alert((await shop.alerts("shrinkage", "open"))[0].id, actor="manager")
    await shop.run(3100 + SETTLE + 1)
    alerts = await shop.alerts("shrinkage")
    assert [(a.status, a.resolution) for a in alerts] == [
        (AlertStatus.RESOLVED, "found (was behind the front row)"),
        (AlertStatus.ACKNOWLEDGED, None),  # still in flight: the second theft went to it
    ]
    assert alerts[0].evidence["picks"][0]["movement_id"] == first and alerts[0].resolution_movement_id is None
    ev = alerts[1].evidence
    assert [p["movement_id"] for p in ev["picks"]] == [again, more]
    assert ev["unexplained_units"] == 3 and ev["picks_total"] == 2


async def test_rerunning_changes_nothing(shop: Shop) -> None:
    await shop.pick("A1", 1, 0)
    await shop.pick("A2", 1, 10)
    await shop.sale("COLA", 1, 100)
    await shop.pick("B1", 1, 20, weight=-2400)  # not whole units: damage
    await shop.put("A1", 1, 30, weight=1500)  # chips on the cola lane
    await shop.run(SETTLE + 100)

    def state() -> list[Any]:
        return [
            shop.sql(f"SELECT * FROM {t} ORDER BY 1")
            for t in ("recon_picks", "recon_matches", "alerts", "movements", "audit")
        ]

    before = state()
    assert {a.kind for a in await shop.alerts()} == {"shrinkage", "damage", "misplaced"}
    again = await shop.run(SETTLE + 100)
    assert not again.changed and state() == before
    later = await shop.run(SETTLE + 5000)  # nothing new happened since
    assert not later.changed and state() == before


async def test_two_reconcilers_cannot_write_the_same_run(shop: Shop) -> None:
    await shop.pick("A1", 1, 0)
    first = build_plan(shop.ledger.path, ms(SETTLE + 1), shop.rec.config)
    second = build_plan(shop.ledger.path, ms(SETTLE + 1), shop.rec.config)
    await shop.ledger.transact(lambda tx: apply_plan(tx, first, shop.rec.config))
    with pytest.raises(ReconcileConflict):
        await shop.ledger.transact(lambda tx: apply_plan(tx, second, shop.rec.config))
    assert shop.sql("SELECT count(*) FROM recon_picks") == [(1,)]
    assert len(await shop.alerts("shrinkage")) == 1


async def test_events_that_arrive_late_from_an_offline_node_are_still_reconciled(shop: Shop) -> None:
    await shop.run(5000)  # the marks move past t=0 before the node delivers
    await shop.pick("A1", 1, 0)
    await shop.pick("A1", 1, 100)
    await shop.sale("COLA", 1, 300)
    report = await shop.run(5100)
    assert report.stats["picks_settled"] == 2 and report.stats["units_unexplained"] == 1


# -------------------------------------------------------------------------------------------- damage, misplaced


async def test_damage_alert_for_non_whole_units_and_weight_loss_without_count(shop: Shop) -> None:
    await shop.pick("A1", 1, 0)  # a clean pick: no damage
    torn = await shop.pick("A1", 1, 10, weight=-5200, confidence=45)  # 1.49 units
    leak = await shop.event("A1", KIND_ANOMALY, 0, 20, weight=-900, confidence=10)
    await shop.sale("COLA", 2, 100)
    await shop.run(60)
    [alert] = await shop.alerts("damage")
    ev = alert.evidence
    assert alert.cause_key == "lane:A1/COLA" and ev["location"] == "lane:A1"
    assert [(e["movement_id"], e["rule"], e["weight_delta_dg"]) for e in ev["events"]] == [
        (torn, "not_whole_units", -5200),
        (leak, "weight_loss_without_count", -900),
    ]
    assert ev["suggested_units"] == 2 and ev["events_total"] == 2
    confident = await shop.pick("A1", 1, 200, weight=-7000, confidence=97)  # weight says 2, the node counted 1
    await shop.run(260)
    [alert] = await shop.alerts("damage")
    assert [e["rule"] for e in alert.evidence["events"]][-1] == "count_disagrees"
    assert alert.evidence["events"][-1]["movement_id"] == confident and alert.evidence["suggested_units"] == 3

    async with await shop.ledger.reader() as reader:
        before = await reader.balance("COLA", "lane:A1")
    done = await resolve(shop.ledger, alert.id, "damaged", actor="manager", qty=2)
    async with await shop.ledger.reader() as reader:
        m = await reader.movement(done.resolution_movement_id or 0)
        assert m is not None and (m.reason, m.qty, m.location) == (Reason.DAMAGE, -2, "lane:A1")
        assert await reader.balance("COLA", "lane:A1") == before - 2


async def test_a_put_of_another_skus_weight_is_misplaced_and_names_the_sku(shop: Shop) -> None:
    await shop.pick("A1", 1, 0)
    wrong = await shop.put("A1", 1, 30, weight=1490, confidence=20)  # a bag of chips, put back on the cola lane
    await shop.event("A1", KIND_ANOMALY, 0, 40, weight=777)  # something that is no SKU at all
    await shop.run(60)
    [alert] = await shop.alerts("misplaced")
    ev = alert.evidence
    assert alert.cause_key == "lane:A1/COLA" and ev["likely_sku"] == "CHIPS"
    assert ev["events"][0]["movement_id"] == wrong
    assert ev["events"][0]["likely_skus"][0] == {
        "sku": "CHIPS",
        "name": "Chips 150 g",
        "units": 1,
        "unit_weight_dg": 1500,
        "residual_dg": -10,
    }
    assert ev["events"][1]["likely_skus"] == []
    await shop.run(SETTLE + 1)  # and the chips did not cancel the cola pick
    [shrinkage] = await shop.alerts("shrinkage")
    assert shrinkage.evidence["unexplained_units"] == 1
    done = await resolve(shop.ledger, alert.id, "moved", actor="clerk")
    assert done.resolution == "moved" and done.resolution_movement_id is None


# ------------------------------------------------------------------------------------------------------ reorder


async def test_reorder_suggestion_opens_updates_and_resolves_after_a_receipt(shop: Shop) -> None:
    await shop.ledger.add_sku(Sku("TEA", "Tea", 1000, 10, reorder_point=5, reorder_qty=12), actor="setup")
    await shop.ledger.record_receipt("TEA", 8, actor="clerk", ref="R-TEA")
    await shop.run(0)
    assert await shop.alerts("reorder") == []
    await shop.ledger.record_sale("TEA", 4, actor="pos", ref="TEA-1")
    await shop.run(10)
    [alert] = await shop.alerts("reorder")
    assert alert.cause_key == "sku:TEA"
    assert (alert.evidence["available"], alert.evidence["suggested_qty"]) == (4, 12)
    await shop.ledger.record_sale("TEA", 3, actor="pos", ref="TEA-2")
    ordered = await resolve(shop.ledger, alert.id, "ordered", actor="manager")
    assert ordered.status == AlertStatus.ACKNOWLEDGED
    await shop.run(20)
    [alert] = await shop.alerts("reorder")
    assert alert.status == AlertStatus.ACKNOWLEDGED and alert.evidence["available"] == 1
    await shop.ledger.record_receipt("TEA", 12, actor="clerk", ref="R-TEA-2")
    await shop.run(30)
    [alert] = await shop.alerts("reorder")
    assert alert.status == AlertStatus.RESOLVED and alert.resolution == "stock recovered: 13 available"


async def test_reorder_counts_units_in_open_shrinkage_alerts_as_gone(shop: Shop) -> None:
    await shop.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 15, reorder_point=98, reorder_qty=24), actor="s")
    await shop.pick("A1", 2, 0)
    await shop.run(10)
    assert await shop.alerts("reorder") == []  # 100 owned
    await shop.run(SETTLE + 1)
    [alert] = await shop.alerts("reorder")
    ev = alert.evidence
    assert (ev["book_stock"], ev["pending_shrinkage"], ev["available"], ev["suggested_qty"]) == (100, 2, 98, 24)


# ------------------------------------------------------------------------------------------------ sensor health


async def test_a_silent_node_raises_a_sensor_alert_that_clears_when_it_reports(shop: Shop) -> None:
    await shop.ledger.add_sku(Sku("SOAP", "Soap", 1200, 10), actor="setup")
    await shop.ledger.assign_lane(9, 0, "SOAP", actor="setup", lane_id="C1")
    await shop.ledger.update_node(NodeUpdate(9, seen_ms=ms(0)))
    await shop.run(599)
    assert await shop.alerts("sensor") == []
    await shop.run(601)
    [alert] = await shop.alerts("sensor")
    assert alert.cause_key == "node:9/silent" and alert.evidence["lanes"] == ["C1"]
    assert alert.evidence["last_seen_ms"] == ms(0)
    await shop.run(700)  # still silent: the same alert, nothing new
    assert len(await shop.alerts("sensor")) == 1
    await shop.ledger.update_node(NodeUpdate(9, seen_ms=ms(800)))
    await shop.run(810)
    [alert] = await shop.alerts("sensor")
    assert alert.status == AlertStatus.RESOLVED and alert.resolution is not None
    assert alert.resolution.startswith("node 9 reporting again")


async def test_a_lane_that_sees_nothing_while_its_sku_sells_is_stuck(shop: Shop) -> None:
    await shop.ledger.add_sku(Sku("SOAP", "Soap", 1200, 10), actor="setup")
    await shop.ledger.assign_lane(9, 0, "SOAP", actor="setup", lane_id="C1")
    for i, t in enumerate((0, 200, 400)):
        await shop.ledger.record_sale("SOAP", 1, actor="pos", ref=f"SOAP-{i}", ts=ms(t))
    await shop.ledger.update_node(NodeUpdate(9, seen_ms=ms(3000)))  # alive, but the lane reports nothing
    await shop.run(3000)
    [alert] = await shop.alerts("sensor")
    assert alert.cause_key == "lane:C1/stuck" and alert.evidence["unseen_sale_units"] == 3
    await shop.pick("C1", 1, 3100, node=9, weight=-1200)
    await shop.run(3200)
    [alert] = await shop.alerts("sensor")
    assert alert.status == AlertStatus.RESOLVED


async def test_many_uncertain_events_make_a_lane_drift_and_are_not_shrinkage(shop: Shop) -> None:
    for i in range(5):
        await shop.pick("A2", 1, i * 60, confidence=30)
    await shop.run(300)
    [alert] = await shop.alerts("sensor")
    assert alert.cause_key == "lane:A2/drift" and alert.evidence["events_in_period"] == 5
    assert len(alert.evidence["events"]) == 5
    await shop.pick("A2", 1, 400, confidence=20)
    await shop.run(420)
    [alert] = await shop.alerts("sensor")
    assert alert.evidence["events_total"] == 6
    await shop.run(240 + SETTLE + 1)
    assert await shop.alerts("shrinkage") == []  # unexplained, but uncertain
    assert shop.sql("SELECT DISTINCT status FROM recon_picks") == [("uncertain",)]
    await shop.run(420 + 3601)  # a quiet hour
    [alert] = await shop.alerts("sensor")
    assert alert.status == AlertStatus.RESOLVED


# ---------------------------------------------------------------------------------------------- resolutions


async def test_count_resolution_posts_the_adjustment_and_records_it(shop: Shop) -> None:
    await shop.pick("A1", 2, 0)
    await shop.run(SETTLE + 1)
    [alert] = await shop.alerts("shrinkage")
    done = await resolve(shop.ledger, alert.id, "count", actor="clerk", counted=19)
    assert done.resolution == "counted 19 on the lane (book 20)"
    async with await shop.ledger.reader() as reader:
        m = await reader.movement(done.resolution_movement_id or 0)
        assert m is not None and (m.reason, m.qty, m.location) == (Reason.COUNT_ADJUSTMENT, -1, "lane:A1")


async def test_resolutions_that_do_not_fit_are_refused(shop: Shop) -> None:
    await shop.pick("A1", 1, 0)
    await shop.run(SETTLE + 1)
    [alert] = await shop.alerts("shrinkage")
    with pytest.raises(InvalidArgument, match="theft, found, count"):
        await resolve(shop.ledger, alert.id, "damaged", actor="x")
    with pytest.raises(InvalidArgument, match="counted"):
        await resolve(shop.ledger, alert.id, "count", actor="x")
    await resolve(shop.ledger, alert.id, "found", actor="x")
    with pytest.raises(InvalidArgument, match="already resolved"):
        await resolve(shop.ledger, alert.id, "theft", actor="x")
    with pytest.raises(AlertStateError):
        await shop.ledger.transact(lambda tx: tx.update_alert_evidence(alert.id, {}, actor="x"))


async def test_the_reconciler_runs_as_a_task(tmp_path: Path) -> None:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS) as ledger:
        shop = await Shop(ledger, ReconcileConfig(interval_s=0.01)).setup()
        await shop.pick("A1", 1, 0)
        async with shop.rec:
            for _ in range(200):
                if shop.rec.last_report is not None:
                    break
                await asyncio.sleep(0.01)
        assert shop.rec.last_report is not None
        assert shop.sql("SELECT run_seq >= 1 FROM recon_state") == [(1,)]
