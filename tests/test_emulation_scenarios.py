"""Emulation scenarios (tools/emulation/scenarios.py) and the physics the emulated board evaluates
(tools/emulation/physics.py): ground truth that adds up, plans that weigh what the truth says."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from firmware.calibration import Calibration
from tools.emulation.board import EmulatedBoard
from tools.emulation.physics import LanePhysics
from tools.emulation.scenarios import SCENARIOS, ScenarioBuilder, TruthRow, build


def _check_truth(sc_rows: list[TruthRow], nodes: list[int]) -> None:
    stock: dict[tuple[int, int], int] = {}
    for r in sc_rows:
        key = (r.node, r.lane)
        if r.action == "initial":
            assert r.t == 0.0
            stock[key] = r.units
            continue
        stock[key] += r.units
        assert r.stock_after == stock[key] >= 0, r
        assert r.t_end > r.t >= 5.0
        if r.action in ("pick", "theft"):
            assert r.units < 0 and r.grams < 0
            assert r.paid_units is not None and 0 <= r.paid_units <= -r.units
            assert (r.pay_t is not None) == (r.paid_units > 0)
            if r.pay_t is not None:
                assert r.pay_t > r.t_end
            assert r.honest is (r.action == "pick")
        elif r.action in ("put_back", "restock"):
            assert r.units > 0 and r.grams > 0
        else:
            assert r.units == 0
    assert {n for n, _ in stock} == set(nodes)
    # Interactions on one lane never overlap and leave the detector a quiet gap.
    by_lane: dict[tuple[int, int], list[TruthRow]] = {}
    for r in sc_rows:
        if r.action != "initial":
            by_lane.setdefault((r.node, r.lane), []).append(r)
    for rows in by_lane.values():
        for a, b in itertools.pairwise(rows):
            assert b.t >= a.t_end + 3.99


@pytest.mark.parametrize("name", SCENARIOS)
def test_named_scenarios_have_consistent_truth(name: str) -> None:
    sc = build(name, [1, 2, 3], seed=2, duration_s=900)
    _check_truth(sc.truth, [1, 2, 3])
    actions = {r.action for r in sc.truth}
    if name == "idle":
        assert actions == {"initial"}
    elif name == "shoppers":
        assert {"pick", "put_back", "press", "restock"} <= actions
        assert not actions & {"theft", "damage", "misplaced"}
    else:
        story = [r for r in sc.truth if r.node == 1 and r.t < 170]
        assert [r.action for r in story if r.action != "initial"] == [
            "pick", "pick", "pick", "put_back", "theft", "press", "damage", "misplaced", "pick", "restock",
            "substitution",
        ]  # fmt: skip
        coffee = [r for r in story if r.lane == 3 and r.action == "pick"]
        assert coffee[-1].stock_after == coffee[-1].reorder_point  # the reorder point is reached
        misplaced = next(r for r in story if r.action == "misplaced")
        assert misplaced.item_sku == "CHIPS-150" and 0.3 < misplaced.grams / misplaced.unit_g < 0.6
        damage = next(r for r in story if r.action == "damage")
        assert 0.3 < -damage.grams / damage.unit_g < 0.6  # not a whole unit
    rows = [json.loads(r.to_json(1_700_000_000.0)) for r in sc.truth]
    keys = {"time", "t", "t_end", "node", "lane", "sku", "action", "units", "grams", "paid_units", "pay_at",
            "honest", "item_sku", "stock_after", "reorder_point", "unit_g", "epcs"}  # fmt: skip
    assert all(set(r) == keys for r in rows)
    assert all(r["time"] == pytest.approx(1_700_000_000.0 + r["t"], abs=1e-3) for r in rows)


def test_scenarios_are_deterministic_per_seed() -> None:
    a = build("shoppers", [1, 2], seed=7, duration_s=300)
    b = build("shoppers", [1, 2], seed=7, duration_s=300)
    c = build("shoppers", [1, 2], seed=8, duration_s=300)
    assert [r.to_json(0) for r in a.truth] == [r.to_json(0) for r in b.truth]
    assert [r.to_json(0) for r in a.truth] != [r.to_json(0) for r in c.truth]
    assert a.nodes[1].plan() == b.nodes[1].plan()


def test_the_plan_weighs_what_the_truth_says() -> None:
    b = ScenarioBuilder([1], seed=3, start_s=5.0)
    pick = b.pick(1, 1, 5.0, 3)
    b.put_back(pick, 12.0, 1)
    b.damage(1, 2, 6.0, 0.5)
    b.misplaced(1, 0, 7.0, "CHOC-100")
    b.restock(1, 3, 8.0, 4)
    b.press(1, 3, 14.0)
    sc = b.build("t")
    assert pick.paid_units == 2  # one of the three was put back
    plan = sc.nodes[1].plan()
    for lane, spec in enumerate(plan["lanes"]):
        spec = dict(spec, creep=[0.0, 600.0, 0.0])  # creep aside, the load is exactly the items
        phys = LanePhysics(spec)
        initial = next(r for r in sc.truth if r.action == "initial" and r.lane == lane)
        changes = sum(r.grams for r in sc.truth if r.action != "initial" and r.lane == lane)
        assert phys.grams(0.0) == pytest.approx(initial.grams)
        t = 0.0
        while t < 30.0:  # evaluated forward in time, as the chips do
            phys.mean(t, 0.0125, 4)
            t += 0.0125
        assert phys.grams(30.0) == pytest.approx(initial.grams + changes, abs=1e-6)
        assert not phys.busy(30.0)
    # A hand on the plate weighs: during the press the lane is heavier than its items.
    spec3 = dict(plan["lanes"][3], creep=[0.0, 600.0, 0.0])
    press = next(r for r in sc.truth if r.action == "press")
    phys = LanePhysics(spec3)
    mid = (press.t + press.t_end) / 2
    t = 0.0
    while t < mid:
        phys.grams(t)
        t += 0.05
    assert phys.grams(mid) > phys.base + 20.0


def test_provisioned_calibration_reads_the_emulated_load() -> None:
    """The factory calibration in the plan matches the emulated cells: the raw sum converts to the load."""
    sc = build("idle", [1])
    plan = sc.nodes[1].plan()
    board = EmulatedBoard(plan, None, None)
    for lane, spec in enumerate(plan["lanes"]):
        cells = [c for c in plan["cells"] if c["lane"] == lane]
        cal = Calibration(len(cells), spec["cal"]["offset"], spec["cal"]["c10"])
        raw = 0
        for c in cells:
            src = board._source(dict(c, noise_counts=0, spike_ppm=0, drift_counts_per_h=0), c["rate"])
            raw += src.counts(1_000_000, 128, 0)
        grams = cal.to_dg(raw) / 10
        assert grams == pytest.approx(spec["base_g"], rel=0.003, abs=1.0)


def test_bad_scenario_requests_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        build("mall", [1])
    with pytest.raises(ValueError, match="unique"):
        ScenarioBuilder([1, 1])
    b = ScenarioBuilder([1])
    with pytest.raises(ValueError, match="no lane 9 on node 1"):
        b.pick(1, 9, 10.0)
    with pytest.raises(ValueError, match="fraction"):
        b.damage(1, 0, 10.0, 1.0)
    assert math.isfinite(b.press(1, 0, 10.0).t_end)
