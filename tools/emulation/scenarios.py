"""Scripted physical scenarios for emulated shelves (host side, CPython): who does what to which lane, when.

A scenario gives every emulated node a lane layout (a SKU per lane with its unit weight and spread, the
initial stock, a reorder point, the cells under the lane and their rate) and a timeline of physical actions:

=============  ==========================================================================================
``pick``       a shopper takes ``n`` items; ``paid_units`` of them will be paid at ``pay_at`` (honest)
``put_back``   the shopper puts ``n`` of the items they took back (those are not paid)
``restock``    staff put ``n`` new items on the lane (a receipt)
``theft``      a pick that no sale will explain (``paid_units`` 0)
``damage``     an item breaks: part of its weight (not a whole unit) is lost
``misplaced``  an item of another SKU (``item_sku``) is put on the lane
``press``      a hand leans on the lane and lets go: no stock change
=============  ==========================================================================================

The actions become forces with the physics of ``tools/sensing/scenarios.py`` (the benchmark's hand, item,
ringing and creep models and their parameter distributions: the same ``_Shelf`` code draws every timing and
force), recorded as plain components that travel to the node's interpreter (``tools/emulation/physics.py``).
The electrical side (cells, offsets, counts per gram, noise, drift, spikes) is per cell in the plan, as is the
factory calibration and SKU assignment the emulator provisions on the node's flash.

Ground truth: one JSON object per line (``TruthRow.to_json``): ``time`` (Unix time, s), ``t`` / ``t_end``
(seconds since the emulation started: first contact and hand gone), ``node``, ``lane``, ``sku``, ``action``
(the table above, or ``initial``: the starting stock of every lane at t = 0), ``units`` (signed change of the
lane's SKU count; 0 for damage / misplaced / press), ``grams`` (true weight change), ``paid_units`` and
``pay_at`` (Unix time the POS should record the sale; null when nothing is paid), ``honest`` (false for a
theft), ``item_sku`` (what was put on the lane, for misplaced), ``stock_after`` (the lane's true count of its
SKU; a damaged item still counts), ``reorder_point`` and ``unit_g``.

Named scenarios (``SCENARIOS``): ``idle`` (nothing happens), ``shoppers`` (random honest picks, put-backs,
hands leaning on shelves, restocks when a lane reaches its reorder point), ``store`` (the demo story on
node 1, honest shoppers on the other nodes and, after the story, on node 1 too: see ``_store``).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from tools.sensing.scenarios import Condition, _Lane, _Shelf

SCENARIOS = ("idle", "shoppers", "store")
DEFAULT_DURATION_S = {"idle": 0.0, "shoppers": 1800.0, "store": 600.0}
GAP_S = 4.0  # quiet time between two interactions on one lane (the detector's guard is 3 s)
NOISE_G = 1.0  # lane noise, one sigma (a real shelf plate: ~1 g)
FIRST_ACTION_S = 10.0  # nodes boot and learn their lanes' noise before anything happens


@dataclass(frozen=True)
class Sku:
    sku: str
    unit_g: float
    spread: float  # one sigma, as a fraction of the unit weight


@dataclass(frozen=True)
class LaneSetup:
    sku: Sku
    initial: int
    reorder_point: int
    cells: int = 1
    rate_sps: int = 80
    counts_per_g: int = 420  # a 5 kg cell; 127 for a 20 kg one
    plate_g: float = 250.0


CATALOG = {
    s.sku: s
    for s in (
        Sku("COLA-330", 355.0, 0.01),
        Sku("CHIPS-150", 165.0, 0.03),
        Sku("SOUP-400", 430.0, 0.015),
        Sku("COFFEE-250", 262.0, 0.02),
        Sku("WATER-500", 520.0, 0.01),
        Sku("RICE-1KG", 1010.0, 0.01),
        Sku("CHOC-100", 108.0, 0.02),
        Sku("OIL-1L", 960.0, 0.01),
        Sku("TEA-100", 118.0, 0.02),
        Sku("PASTA-500", 505.0, 0.015),
        Sku("JUICE-1L", 1060.0, 0.01),
        Sku("SNACK-45", 48.0, 0.02),
    )
}

LAYOUTS: tuple[tuple[LaneSetup, ...], ...] = (
    (
        LaneSetup(CATALOG["COLA-330"], 24, 6, cells=2),
        LaneSetup(CATALOG["CHIPS-150"], 12, 4),
        LaneSetup(CATALOG["SOUP-400"], 10, 3),
        LaneSetup(CATALOG["COFFEE-250"], 7, 4),
    ),
    (
        LaneSetup(CATALOG["WATER-500"], 12, 4),
        LaneSetup(CATALOG["RICE-1KG"], 10, 3, cells=2, rate_sps=10, counts_per_g=127),
        LaneSetup(CATALOG["CHOC-100"], 20, 6),
        LaneSetup(CATALOG["OIL-1L"], 8, 3, rate_sps=10, counts_per_g=127),
    ),
    (
        LaneSetup(CATALOG["TEA-100"], 15, 5),
        LaneSetup(CATALOG["PASTA-500"], 12, 4),
        LaneSetup(CATALOG["JUICE-1L"], 8, 3, rate_sps=10, counts_per_g=127),
        LaneSetup(CATALOG["SNACK-45"], 30, 8),
    ),
)


@dataclass
class TruthRow:
    t: float
    t_end: float
    node: int
    lane: int
    sku: str
    action: str
    units: int
    grams: float
    stock_after: int
    reorder_point: int
    unit_g: float
    paid_units: int | None = None
    pay_t: float | None = None  # seconds since start; ``pay_at`` in the JSON is Unix time
    honest: bool | None = None
    item_sku: str | None = None
    taken: list[float] = field(default_factory=list, repr=False)  # the picked items' weights (put-backs)

    def to_json(self, epoch_s: float) -> str:
        d = asdict(self)
        del d["taken"]
        pay_t = d.pop("pay_t")
        d["time"] = round(epoch_s + self.t, 3)
        d["t"] = round(self.t, 3)
        d["t_end"] = round(self.t_end, 3)
        d["grams"] = round(self.grams, 1)
        d["pay_at"] = round(epoch_s + pay_t, 3) if pay_t is not None else None
        return json.dumps(d, sort_keys=True)


class _RecordingLane(_Lane):
    """The benchmark's lane model, recording its force components as data instead of closures."""

    def __init__(self, rng: random.Random, cond: Condition) -> None:
        super().__init__(rng, cond, 60.0)
        self.comps: list[list[Any]] = []

    def step(self, ta: float, tb: float, delta: float) -> None:
        super().step(ta, tb, delta)
        self.comps.append(["s", ta, tb, delta])

    def ring(self, t0: float, amplitude: float) -> None:
        rng = self.rng
        tau = rng.uniform(0.02, 0.06)
        f = rng.uniform(10.0, 25.0)
        a = amplitude * rng.choice((-1.0, 1.0))
        self.comps.append(["r", t0, t0 + 7 * tau, a, 2 * math.pi * f, tau])

    def bump_half_sine(self, t0: float, dur: float, amplitude: float) -> None:
        self.comps.append(["b", t0, t0 + dur, amplitude])

    def hand(self, t0: float, t_full: float, t_rel0: float, t_rel1: float, press: float) -> None:
        rng = self.rng
        fw = 2 * math.pi * rng.uniform(0.5, 2.5)
        aw = rng.uniform(0.08, 0.25) * press
        pw = rng.uniform(0.0, 2 * math.pi)
        ft = 2 * math.pi * rng.uniform(6.0, 12.0)
        at = rng.uniform(0.02, 0.06) * press + rng.uniform(0.5, 2.0)
        pt = rng.uniform(0.0, 2 * math.pi)
        self.comps.append(["h", t0, max(t_rel1, t0 + 1e-3), t_full, t_rel0, press, aw, fw, pw, at, ft, pt])


class _LaneSim:
    """One lane's items and physics (a benchmark ``_Shelf`` with a recording lane), its stock and timeline."""

    def __init__(self, rng: random.Random, node: int, index: int, setup: LaneSetup, start_s: float) -> None:
        self.node = node
        self.index = index
        self.setup = setup
        u = setup.sku
        cond = Condition(setup.rate_sps, NOISE_G, u.unit_g, u.spread, "gauss")
        shelf = _Shelf(rng, cond, 60.0)
        lane = _RecordingLane(rng, cond)
        shelf.lane = lane
        shelf.items = [shelf.new_item() for _ in range(setup.initial)]
        shelf.events = []
        self.shelf = shelf
        self.lane = lane
        self.base_g = sum(shelf.items)
        self.preload_age_s = rng.uniform(60.0, 1800.0)
        self.stock = setup.initial
        self.free_at = start_s - GAP_S
        self.rows: list[TruthRow] = []
        self.rng = rng

    def row(self, t: float, t_end: float, action: str, units: int, grams: float, **kw: Any) -> TruthRow:
        self.stock += units
        r = TruthRow(
            t, t_end, self.node, self.index, self.setup.sku.sku, action, units, grams, self.stock,
            self.setup.reorder_point, self.setup.sku.unit_g, **kw,
        )  # fmt: skip
        self.rows.append(r)
        self.free_at = t_end
        return r

    def when(self, t: float) -> float:
        """The earliest start at or after ``t`` that leaves the lane quiet since its last action."""
        return max(t, self.free_at + GAP_S)

    def plan(self) -> dict[str, Any]:
        s = self.setup
        return {
            "base_g": self.base_g,
            "comps": self.lane.comps,
            "creep": [self.lane.creep_coef, self.lane.creep_tau, self.preload_age_s],
            "unit_dg": round(s.sku.unit_g * 10),
            "spread_permille": round(s.sku.spread * 1000),
            "sku": s.sku.sku,
            "initial": s.initial,
        }


class ScenarioBuilder:
    """Builds a scenario action by action. Every action starts no earlier than ``GAP_S`` after the lane's
    previous one ended (its start moves later if needed); each returns its ground-truth row."""

    def __init__(
        self,
        node_ids: list[int],
        seed: int = 1,
        layouts: tuple[tuple[LaneSetup, ...], ...] = LAYOUTS,
        start_s: float = FIRST_ACTION_S,
    ) -> None:
        if not node_ids:
            raise ValueError("a scenario needs at least one node")
        if len(set(node_ids)) != len(node_ids):
            raise ValueError("node ids must be unique")
        self.seed = seed
        self.lanes: dict[int, list[_LaneSim]] = {}
        for k, nid in enumerate(node_ids):
            layout = layouts[k % len(layouts)]
            rng = random.Random(f"emulate:{seed}:node:{nid}")
            self.lanes[nid] = [_LaneSim(rng, nid, i, setup, start_s) for i, setup in enumerate(layout)]

    def lane(self, node: int, lane: int) -> _LaneSim:
        try:
            return self.lanes[node][lane]
        except (KeyError, IndexError):
            raise ValueError(f"no lane {lane} on node {node}") from None

    # -- actions ----------------------------------------------------------------------------------
    def pick(
        self, node: int, lane: int, t: float, units: int = 1, paid: bool = True, pay_after_s: float | None = None
    ) -> TruthRow:
        sim = self.lane(node, lane)
        units = min(units, sim.stock)
        if units < 1:
            raise ValueError(f"node {node} lane {lane} is empty")
        t = sim.when(t)
        before = list(sim.shelf.items)
        t_end = sim.shelf.pick(t, units)
        taken = [w for w in before if w not in sim.shelf.items]
        grams = sim.shelf.events[-1].delta_g
        if paid:
            wait = pay_after_s if pay_after_s is not None else sim.rng.uniform(40.0, 120.0)
            return sim.row(t, t_end, "pick", -units, grams, paid_units=units, pay_t=t_end + wait, honest=True,
                           taken=taken)  # fmt: skip
        return sim.row(t, t_end, "theft", -units, grams, paid_units=0, honest=False, taken=taken)

    def put_back(self, pick: TruthRow, t: float, units: int = 1) -> TruthRow:
        """The shopper of ``pick`` puts ``units`` of those items back: they will not be paid."""
        sim = self.lane(pick.node, pick.lane)
        units = min(units, len(pick.taken))
        if units < 1:
            raise ValueError("nothing left of that pick to put back")
        t = sim.when(t)
        items = [pick.taken.pop() for _ in range(units)]
        t_end = sim.shelf.put(t, items)
        if pick.paid_units:
            pick.paid_units = max(0, pick.paid_units - units)
            if not pick.paid_units:
                pick.pay_t = None
        return sim.row(t, t_end, "put_back", units, sum(items))

    def restock(self, node: int, lane: int, t: float, units: int) -> TruthRow:
        sim = self.lane(node, lane)
        t = sim.when(t)
        items = [sim.shelf.new_item() for _ in range(units)]
        t_end = sim.shelf.put(t, items)
        return sim.row(t, t_end, "restock", units, sum(items))

    def damage(self, node: int, lane: int, t: float, fraction: float = 0.45) -> TruthRow:
        """An item breaks and a hand takes the broken part away: ``fraction`` of one item's weight is lost."""
        sim = self.lane(node, lane)
        if not 0.1 <= fraction <= 0.9:
            raise ValueError("damage fraction must be 0.1..0.9 (a whole unit would be a pick)")
        t = sim.when(t)
        rng = sim.rng
        shelf = sim.shelf
        i = rng.randrange(len(shelf.items))
        lost = shelf.items[i] * fraction
        shelf.items[i] -= lost
        t_lift = t + rng.uniform(0.3, 0.8)
        r2 = rng.uniform(0.2, 0.5)
        sim.lane.step(t_lift, t_lift + r2, -lost)
        t_end = t_lift + r2
        sim.lane.hand(t, t + 0.15, t_lift, t_end, rng.uniform(20.0, 80.0))
        sim.lane.ring(t_end, rng.uniform(0.02, 0.1) * lost)
        return sim.row(t, t_end, "damage", 0, -lost)

    def misplaced(self, node: int, lane: int, t: float, item_sku: str) -> TruthRow:
        """An item of another SKU is put on the lane."""
        sim = self.lane(node, lane)
        other = CATALOG[item_sku]
        t = sim.when(t)
        w = max(0.3 * other.unit_g, sim.rng.gauss(other.unit_g, other.spread * other.unit_g))
        t_end = sim.shelf.put(t, [w])
        return sim.row(t, t_end, "misplaced", 0, w, item_sku=item_sku)

    def press(self, node: int, lane: int, t: float) -> TruthRow:
        """A hand leans on the lane (30 g .. 2 kg for 0.5 .. 3 s) and lets go."""
        sim = self.lane(node, lane)
        t = sim.when(t)
        t_end = sim.shelf.lean(t)
        return sim.row(t, t_end, "press", 0, 0.0)

    # -- random honest shoppers ---------------------------------------------------------------------
    def shoppers(self, node: int, lane: int, t_from: float, t_to: float, mean_gap_s: float = 45.0) -> None:
        """Honest shoppers on one lane: picks of 1-3 (a fifth of them partly put back a few seconds later),
        hands leaning on the shelf, and staff restocking to the initial stock once the reorder point is hit."""
        sim = self.lane(node, lane)
        rng = random.Random(f"emulate:{self.seed}:shoppers:{node}:{lane}:{t_from}")
        t = sim.when(t_from + rng.uniform(0.0, mean_gap_s))
        restock_at: float | None = None
        while t < t_to:
            if restock_at is not None and t >= restock_at:
                target = max(sim.setup.initial, 2 * sim.setup.reorder_point)
                if target > sim.stock:
                    self.restock(node, lane, t, target - sim.stock)
                restock_at = None
            r = rng.random()
            if r < 0.8 and sim.stock > 1:
                k = min(rng.choice((1, 1, 1, 2, 2, 3)), sim.stock - 1)
                row = self.pick(node, lane, t, k)
                if rng.random() < 0.2:
                    self.put_back(row, row.t_end + rng.uniform(5.0, 20.0), rng.randint(1, k))
            elif r < 0.9:
                self.press(node, lane, t)
            if restock_at is None and sim.stock <= sim.setup.reorder_point:
                restock_at = sim.free_at + rng.uniform(60.0, 180.0)
            t = sim.when(max(t, sim.free_at) + rng.expovariate(1.0 / mean_gap_s))  # (a browser leaves no trace)

    # -- result -----------------------------------------------------------------------------------
    def build(self, name: str) -> Scenario:
        nodes = {}
        rows: list[TruthRow] = []
        for nid, sims in self.lanes.items():
            nodes[nid] = NodePlan(nid, [s.setup for s in sims], [s.plan() for s in sims], self.seed)
            for s in sims:
                st = s.setup
                rows.append(TruthRow(0.0, 0.0, nid, s.index, st.sku.sku, "initial", st.initial, s.base_g, st.initial,
                                     st.reorder_point, st.sku.unit_g))  # fmt: skip
                rows.extend(s.rows)
        rows.sort(key=lambda r: (r.t, r.node, r.lane))
        return Scenario(name, nodes, rows)


@dataclass
class NodePlan:
    """One node's hardware and physics: the lanes, the pins of their cells, the plan for the emulated board."""

    node_id: int
    lanes: list[LaneSetup]
    lane_plans: list[dict[str, Any]]
    seed: int

    def pins(self) -> list[list[tuple[int, int]]]:
        """[sck, dout] per cell, lane by lane: GPIO 4, 5, 6, ... (as a board's wiring would be)."""
        out = []
        pin = 4
        for setup in self.lanes:
            cells = []
            for _ in range(setup.cells):
                cells.append((pin, pin + 1))
                pin += 2
            out.append(cells)
        return out

    def config_lanes(self) -> list[tuple[list[tuple[int, int]], int]]:
        return [(cells, setup.rate_sps) for cells, setup in zip(self.pins(), self.lanes, strict=True)]

    def plan(self) -> dict[str, Any]:
        """The emulated board's plan: physics per lane, each cell's wiring and electrical model, and the
        factory calibration and SKU assignment (``tools/emulation/board.provision``)."""
        rng = random.Random(f"emulate:{self.seed}:cells:{self.node_id}")
        cells = []
        lanes = []
        for i, (setup, pins, lp) in enumerate(zip(self.lanes, self.pins(), self.lane_plans, strict=True)):
            n = len(pins)
            shares = [1.0] if n == 1 else [0.55, 0.45] if n == 2 else [1.0 / n] * n
            zero = 0
            c10 = 0.0
            for j, (sck, dout) in enumerate(pins):
                cpg = setup.counts_per_g * (1.0 + rng.uniform(-0.005, 0.005))
                offset = rng.randint(-150000, 150000)
                cells.append({
                    "sck": sck, "dout": dout, "lane": i, "share": shares[j], "plate_g": setup.plate_g,
                    "counts_per_g": round(cpg), "offset": offset, "rate": setup.rate_sps,
                    "noise_counts": round(NOISE_G / math.sqrt(n) * cpg),
                    "drift_counts_per_h": round(rng.uniform(-0.3, 0.3) * cpg),
                    "spike_ppm": 100, "spike_counts": round(20 * cpg), "seed": rng.randint(1, 2**31 - 1),
                })  # fmt: skip
                zero += offset + round(shares[j] * setup.plate_g * round(cpg))
                c10 += 10.0 * shares[j] * round(cpg)
            cal = {"offset": zero + rng.randint(-200, 200), "c10": round(c10 * (1.0 + rng.uniform(-0.001, 0.001)))}
            lanes.append(dict(lp, cal=cal))
        return {"lanes": lanes, "cells": cells}


@dataclass
class Scenario:
    name: str
    nodes: dict[int, NodePlan]
    truth: list[TruthRow]


def build(
    name: str, node_ids: list[int], seed: int = 1, duration_s: float | None = None, story_scale: float = 1.0
) -> Scenario:
    """A named scenario (``SCENARIOS``) for these nodes; ``duration_s``: how long shoppers keep coming;
    ``story_scale``: the ``store`` story's times (after the first action) and payment delays multiplied by this
    (0.3..1), so a short demo still plays the whole story."""
    if not 0.3 <= story_scale <= 1.0:
        raise ValueError("story_scale must be 0.3..1")
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    duration = DEFAULT_DURATION_S[name] if duration_s is None else duration_s
    if duration < 0:
        raise ValueError("duration must be >= 0 s")
    b = ScenarioBuilder(node_ids, seed)
    if name == "shoppers":
        for nid in node_ids:
            for lane in range(len(b.lanes[nid])):
                b.shoppers(nid, lane, FIRST_ACTION_S, duration)
    elif name == "store":
        _store(b, node_ids, duration, story_scale)
    return b.build(name)


STORY_END_S = 170.0


def _store(b: ScenarioBuilder, node_ids: list[int], duration: float, k: float = 1.0) -> None:
    """The demo story on the first node (layout: COLA-330, CHIPS-150, SOUP-400, COFFEE-250):

    ====  =====================================================================================
    12 s  an honest shopper takes a cola (paid about a minute later)
    20 s  a shopper takes two bags of chips, puts one back at 35 s (one paid)
    30 s  an honest shopper takes a coffee (7 -> 6)
    45 s  theft: two colas, never paid
    58 s  a hand leans on the soup lane (no change)
    70 s  a soup can breaks: 45 % of its weight is lost (a damage / tamper alert, not a count)
    85 s  a bag of chips is put on the cola lane (a misplaced item: 0.46 of a cola)
    100 s two coffees are taken (6 -> 4: the reorder point), paid at once
    150 s staff restock coffee with 8 (4 -> 12)
    ====  =====================================================================================

    Honest shoppers come to every lane of the other nodes from the start, and to the first node after the
    story (``STORY_END_S``), until ``duration``."""
    first = node_ids[0]

    def at(t: float) -> float:
        return 12.0 + (t - 12.0) * k

    b.pick(first, 0, at(12.0), 1, pay_after_s=60.0 * k)
    chips = b.pick(first, 1, at(20.0), 2, pay_after_s=70.0 * k)
    b.put_back(chips, at(35.0), 1)
    b.pick(first, 3, at(30.0), 1, pay_after_s=50.0 * k)
    b.pick(first, 0, at(45.0), 2, paid=False)
    b.press(first, 2, at(58.0))
    b.damage(first, 2, at(70.0), 0.45)
    b.misplaced(first, 0, at(85.0), "CHIPS-150")
    b.pick(first, 3, at(100.0), 2, pay_after_s=5.0)
    b.restock(first, 3, at(150.0), 8)
    for nid in node_ids:
        start = at(STORY_END_S) if nid == first else FIRST_ACTION_S
        for lane in range(len(b.lanes[nid])):
            b.shoppers(nid, lane, start, duration, mean_gap_s=60.0)
