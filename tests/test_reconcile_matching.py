"""Reconciliation's pure parts: the allocation (put-backs, FIFO within the window) and the weight rules."""

from __future__ import annotations

import random

from hub.ledger.models import Reason, Sku
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.matching import PUT_BACK, Credit, Pick, allocate, apply_put_backs, apply_sales
from hub.reconcile.rules import (
    check_damage,
    check_misplaced,
    fit,
    likely_skus,
    put_fits_lane,
    reorder_quantity,
    tolerance_dg,
)

CFG = ReconcileConfig()
COLA = Sku("COLA", "Cola 330 ml", 3500, 15)
CHIPS = Sku("CHIPS", "Chips 150 g", 1500, 20)
SOAP = Sku("SOAP", "Soap", 1200, 10)
W, L = 900_000, 120_000  # window and lead in ms


def picks_(*specs: tuple[int, int, str, int]) -> list[Pick]:
    return [Pick(pid, ts, "COLA", lane, n) for pid, ts, lane, n in specs]


def sale(sid: int, ts: int, n: int) -> Credit:
    return Credit(sid, ts, "sale", "COLA", None, n)


def put(pid: int, ts: int, lane: str, n: int) -> Credit:
    return Credit(pid, ts, PUT_BACK, "COLA", lane, n)


def test_sales_explain_picks_fifo_within_the_window_inclusive() -> None:
    picks = picks_((1, 0, "A1", 1), (2, 10_000, "A2", 1), (3, 20_000, "A1", 1))
    sales = [sale(10, 900_000, 1), sale(11, 910_000, 1), sale(12, 920_001, 1)]
    apply_sales(picks, sales, W, L)
    assert [(p.id, p.remaining, [m.by_id for m in p.matches]) for p in picks] == [
        (1, 0, [10]),  # exactly at the window edge: explained
        (2, 0, [11]),
        (3, 1, []),  # 900.001 s later: outside
    ]
    assert sales[2].remaining == 1


def test_a_sale_may_come_up_to_lead_before_the_pick() -> None:
    picks = picks_((1, 200_000, "A1", 1), (2, 300_000, "A1", 1))
    sales = [sale(10, 80_000, 1), sale(11, 179_999, 1)]
    apply_sales(picks, sales, W, L)
    assert [p.remaining for p in picks] == [0, 1]  # 120 s before: yes; 120.001 s before the second pick: no
    assert [m.lag_ms for m in picks[0].matches] == [-120_000]


def test_one_sale_covers_units_picked_from_several_lanes_and_picks_of_several_units() -> None:
    picks = picks_((1, 0, "A1", 2), (2, 5_000, "A2", 1))
    sales = [sale(10, 100_000, 3)]
    apply_sales(picks, sales, W, L)
    assert [(m.pick_id, m.by_id, m.units) for p in picks for m in p.matches] == [(1, 10, 2), (2, 10, 1)]


def _maximum_matching(picks: list[Pick], sales: list[Credit]) -> int:
    """Unit picks and unit sales: the size of a maximum bipartite matching (augmenting paths)."""
    owner: dict[int, int] = {}  # pick index -> sale index

    def augment(si: int, seen: set[int]) -> bool:
        for pi, p in enumerate(picks):
            if pi not in seen and sales[si].ts_ms - W <= p.ts_ms <= sales[si].ts_ms + L:
                seen.add(pi)
                if pi not in owner or augment(owner[pi], seen):
                    owner[pi] = si
                    return True
        return False

    return sum(augment(si, set()) for si in range(len(sales)))


def test_greedy_explains_as_many_units_as_any_allocation() -> None:
    rng = random.Random(4)
    for _ in range(300):
        picks = [Pick(i, rng.randrange(0, 3_000_000, 50_000), "COLA", "A1", 1) for i in range(rng.randint(1, 8))]
        sales = [sale(100 + i, rng.randrange(0, 3_000_000, 50_000), 1) for i in range(rng.randint(1, 8))]
        best = _maximum_matching(picks, sales)
        apply_sales(picks, sales, W, L)
        assert sum(1 for p in picks if p.remaining == 0) == best


def test_a_put_back_cancels_the_newest_pick_on_its_lane() -> None:
    picks = picks_((1, 0, "A1", 1), (2, 30_000, "A1", 1), (3, 40_000, "A2", 1))
    apply_put_backs(picks, [put(20, 60_000, "A1", 1)], 600_000)
    assert [p.remaining for p in picks] == [1, 0, 1]
    assert picks[1].matches[0].kind == PUT_BACK


def test_a_put_bigger_than_the_recent_picks_is_a_restock_and_cancels_nothing() -> None:
    picks = picks_((1, 0, "A1", 1))
    apply_put_backs(picks, [put(20, 60_000, "A1", 12)], 600_000)
    assert picks[0].remaining == 1


def test_a_put_before_the_pick_or_too_late_cancels_nothing() -> None:
    picks = picks_((1, 100_000, "A1", 1))
    apply_put_backs(picks, [put(20, 50_000, "A1", 1), put(21, 700_001, "A1", 1)], 600_000)
    assert picks[0].remaining == 1


def test_put_backs_come_before_sales() -> None:
    # Two shoppers pick, one puts back, one pays: nothing is unexplained, and one sale unit is not used twice.
    picks = picks_((1, 0, "A1", 1), (2, 30_000, "A1", 1))
    sales = [sale(10, 300_000, 1)]
    allocate(picks, [put(20, 60_000, "A1", 1)], sales, window_ms=W, lead_ms=L, putback_ms=600_000)
    assert [p.remaining for p in picks] == [0, 0] and sales[0].remaining == 0


def test_allocation_does_not_depend_on_input_order() -> None:
    rng = random.Random(9)
    base_picks = [
        (i, rng.randrange(0, 2_000_000, 1000), rng.choice(["A1", "A2"]), rng.randint(1, 3)) for i in range(40)
    ]
    base_sales = [(100 + i, rng.randrange(0, 2_500_000, 1000), rng.randint(1, 3)) for i in range(30)]
    results = []
    for seed in range(3):
        order = random.Random(seed)
        ps = picks_(*base_picks)
        ss = [sale(*s) for s in base_sales]
        order.shuffle(ps)
        order.shuffle(ss)
        allocate(ps, [], ss, window_ms=W, lead_ms=L, putback_ms=600_000)
        results.append(sorted((m.pick_id, m.by_id, m.units) for p in ps for m in p.matches))
    assert results[0] == results[1] == results[2]


# ------------------------------------------------------------------------------------------------------- rules


def test_tolerance_grows_with_spread_and_units() -> None:
    assert tolerance_dg(COLA, 1, CFG) < tolerance_dg(COLA, 4, CFG)
    assert tolerance_dg(Sku("X", "x", 3500, 0), 1, CFG) < tolerance_dg(COLA, 1, CFG)
    assert fit(-7010, COLA, CFG).units == 2 and fit(-7010, COLA, CFG).whole
    assert not fit(-5200, COLA, CFG).whole


def test_damage_rules() -> None:
    assert check_damage(Reason.SENSOR_PICK, -1, -3520, 96, COLA, CFG) is None  # one whole unit
    not_whole = check_damage(Reason.SENSOR_PICK, -1, -5200, 40, COLA, CFG)
    assert not_whole is not None and not_whole.rule == "not_whole_units" and not_whole.suggested_units == 1
    loss = check_damage(Reason.SENSOR_ANOMALY, 0, -900, 10, COLA, CFG)
    assert loss is not None and loss.rule == "weight_loss_without_count"
    assert check_damage(Reason.SENSOR_ANOMALY, 0, -30, 10, COLA, CFG) is None  # noise
    disagree = check_damage(Reason.SENSOR_PICK, -1, -7000, 95, COLA, CFG)
    assert disagree is not None and disagree.rule == "count_disagrees" and disagree.suggested_units == 1
    assert check_damage(Reason.SENSOR_PICK, -1, -7000, 30, COLA, CFG) is None  # the node said it was unsure
    assert check_damage(Reason.SENSOR_PUT, 1, 3500, 90, COLA, CFG) is None


def test_misplaced_rules_name_the_sku_the_weight_fits() -> None:
    skus = [COLA, CHIPS, SOAP]
    found = check_misplaced(Reason.SENSOR_PUT, 1, 1510, COLA, skus, CFG)
    assert found is not None and found.detail["likely_skus"][0]["sku"] == "CHIPS"
    assert [s["sku"] for s in likely_skus(3000, skus, "COLA", CFG)] == ["CHIPS"]  # 2 chips (2.5 soaps fits nothing)
    assert check_misplaced(Reason.SENSOR_PUT, 2, 7030, COLA, skus, CFG) is None
    unknown = check_misplaced(Reason.SENSOR_ANOMALY, 0, 777, COLA, skus, CFG)
    assert unknown is not None and unknown.detail["likely_skus"] == []
    assert put_fits_lane(1, 3490, COLA, CFG) and not put_fits_lane(1, 1500, COLA, CFG)


def test_reorder_quantity() -> None:
    cases = Sku("T", "t", 100, 0, reorder_point=5, reorder_qty=12)
    assert reorder_quantity(cases, 5, 1) == 12
    assert reorder_quantity(cases, -10, 1) == 24  # whole cases, enough to get above the reorder point
    shelf = Sku("T", "t", 100, 0, reorder_point=4, capacity=20)
    assert reorder_quantity(shelf, 3, 2) == 37  # up to the capacity of both lanes
    plain = Sku("T", "t", 100, 0, reorder_point=5)
    assert reorder_quantity(plain, 2, 0) == 8
