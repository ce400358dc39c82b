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
``substitution``  a tagged unit is lifted and an object of the same weight (within a gram) put in its place
               in the same hand visit: no weight change beyond noise, one tag leaves, nothing is paid
=============  ==========================================================================================

**Tags** (a scenario with tags on: ``store`` by default, ``build(..., tagged=True)``, ``ScenarioBuilder(...,
tagged=True)``; off, GTINs are ignored and no node has a reader, so tests of other things see no RFID traffic).
A SKU with a GTIN (``Sku.gtin``) is *tagged*: every unit carries a UHF tag whose EPC is the SGTIN-96
of that GTIN (``tools/emulation/epc.py``: filter 1, the SKU's company-prefix length, serials counted per GTIN
across the store from 1). A tagged lane's initial stock has one EPC per unit; a pick takes its units' tags away
(their spans end when the item is lifted), a put-back or restock brings tags (spans start when each item is
set down), a misplaced tagged item brings its own tag onto the wrong lane, a substitution ends one tag's span
and leaves an untagged stand-in. ``stray`` puts tags on the next shelf (lane null: weakly and rarely read by
every antenna). Each tag's orientation to the antennas is drawn once (0.55..1). A node with tagged lanes gets
a reader (``NodePlan.rfid_wiring``: one antenna per lane behind an RF switch) and the tags in its plan's
``rfid`` part (``tools/emulation/board.py``), and a firmware ``rfid`` config (``NodePlan.rfid_config``).

The actions become forces with the physics of ``tools/sensing/scenarios.py`` (the benchmark's hand, item,
ringing and creep models and their parameter distributions: the same ``_Shelf`` code draws every timing and
force), recorded as plain components that travel to the node's interpreter (``tools/emulation/physics.py``).
The electrical side (cells, offsets, counts per gram, noise, drift, spikes) is per cell in the plan, as is the
factory calibration and SKU assignment the emulator provisions on the node's flash.

Ground truth: one JSON object per line (``TruthRow.to_json``): ``time`` (Unix time, s), ``t`` / ``t_end``
(seconds since the emulation started: first contact and hand gone), ``node``, ``lane``, ``sku``, ``action``
(the table above, or ``initial``: the starting stock of every lane at t = 0), ``units`` (signed change of the
lane's SKU count as its weight shows it; 0 for damage / misplaced / press / substitution), ``grams`` (true
weight change), ``paid_units`` and ``pay_at`` (Unix time the POS should record the sale; null when nothing is
paid), ``honest`` (false for a theft), ``item_sku`` (what was put on the lane, for misplaced), ``stock_after``
(the lane's count of its SKU by weight; a damaged item still counts, and so does a substitution's stand-in),
``reorder_point``, ``unit_g`` and ``epcs`` (the EPCs of the tagged units involved, lowercase hex: the lane's
stock for ``initial``, the units taken, put or brought, the damaged unit, the substituted unit's tag that left).

Named scenarios (``SCENARIOS``): ``idle`` (nothing happens), ``shoppers`` (random honest picks, put-backs,
hands leaning on shelves, restocks when a lane reaches its reorder point), ``store`` (the demo story on
node 1, honest shoppers on the other nodes and, after the story, on node 1 too: see ``_store``). With tags on,
the chips and coffee lanes (layout 0: node 1) are tagged; ``build(..., stray=n)`` adds ``n`` tags on the next
shelf above every node with tagged lanes.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from tools.emulation.epc import sgtin96
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
    gtin: str | None = None  # tagged: every unit carries an SGTIN-96 of this GTIN
    company_prefix_len: int = 7


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
        Sku("CHIPS-150", 165.0, 0.03, gtin="00614141150014"),
        Sku("SOUP-400", 430.0, 0.015),
        Sku("COFFEE-250", 262.0, 0.02, gtin="00614141250011"),
        Sku("WATER-500", 520.0, 0.01),
        Sku("RICE-1KG", 1010.0, 0.01),
        Sku("CHOC-100", 108.0, 0.02),
        Sku("OIL-1L", 960.0, 0.01),
        Sku("TEA-100", 118.0, 0.02),
        Sku("PASTA-500", 505.0, 0.015),
        Sku("JUICE-1L", 1060.0, 0.01),
        Sku("SNACK-45", 48.0, 0.02),
        Sku("RAZOR-5", 60.0, 0.02, gtin="00614141990016"),  # on no lane: what the next shelf holds (strays)
    )
}
STRAY_SKU = "RAZOR-5"
RFID_UART = {"uart": 1, "tx": 17, "rx": 16, "baud": 115200}  # the preferred wiring (other pins if the cells use these)
RFID_SWITCH = (25, 26, 27)
RFID_SETTINGS = {"region": "eu", "power_dbm": 20}
RFID_PRESENCE = {"seen_n": 2, "window_ms": 3000, "lost_s": 10}

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
    epcs: list[str] = field(default_factory=list)
    taken_epcs: list[str | None] = field(default_factory=list, repr=False)  # the picked items' tags, as ``taken``

    def to_json(self, epoch_s: float) -> str:
        d = asdict(self)
        del d["taken"]
        del d["taken_epcs"]
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


@dataclass
class TagTrack:
    """One tag: its EPC, its orientation to the antennas (0..1) and where it was when: ``[lane or None, t_on_s,
    t_off_s or None]`` (None lane: the next shelf), the data ``tools/emulation/uhf_module.TagField`` reads."""

    epc: str
    orient: float
    spans: list[list[Any]] = field(default_factory=list)

    def to_plan(self) -> dict[str, Any]:
        return {"epc": self.epc, "orient": self.orient, "spans": [list(s) for s in self.spans]}


class _Tags:
    """The tags of one node's shelf (and of the shelf above it). Serials count per GTIN across the store (the
    ``serials`` dict is shared by the nodes); orientations come from a generator of their own, so tagging
    changes no weight or timing of the scenario."""

    def __init__(self, seed: int, node: int, serials: dict[str, int], enabled: bool) -> None:
        self.rng = random.Random(f"emulate:{seed}:tags:{node}")
        self.serials = serials
        self.enabled = enabled
        self.tracks: dict[str, TagTrack] = {}

    def new(self, sku: Sku) -> str | None:
        """A new unit's EPC (None for an untagged SKU, or with tags off)."""
        if sku.gtin is None or not self.enabled:
            return None
        serial = self.serials.get(sku.gtin, 0) + 1
        self.serials[sku.gtin] = serial
        epc = sgtin96(sku.gtin, sku.company_prefix_len, serial, 1)
        self.tracks[epc] = TagTrack(epc, round(self.rng.uniform(0.55, 1.0), 2))
        return epc

    def arrive(self, epc: str | None, lane: int | None, t: float) -> None:
        if epc is not None:
            self.tracks[epc].spans.append([lane, round(t, 3), None])

    def leave(self, epc: str | None, t: float) -> None:
        if epc is not None:
            span = self.tracks[epc].spans[-1]
            span[2] = max(round(t, 3), span[1])


def _removed(before: list[float], after: list[float]) -> list[int]:
    """Indices of ``before`` that are not in ``after`` (which kept the order of the rest, as ``list.pop`` does)."""
    out = []
    j = 0
    for i, w in enumerate(before):
        if j < len(after) and after[j] == w:
            j += 1
        else:
            out.append(i)
    return out


def _steps_since(lane: _RecordingLane, n0: int, sign: float) -> list[float]:
    """Start times of the item steps (``sign`` < 0: lifts, > 0: placements) recorded since component ``n0``."""
    return [c[1] for c in lane.comps[n0:] if c[0] == "s" and c[3] * sign > 0]


class _LaneSim:
    """One lane's items and physics (a benchmark ``_Shelf`` with a recording lane), its stock and timeline,
    and the EPC of each item (``epcs``, parallel to ``shelf.items``; None: untagged)."""

    def __init__(
        self, rng: random.Random, node: int, index: int, setup: LaneSetup, start_s: float, tags: _Tags
    ) -> None:
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
        self.tags = tags
        self.epcs: list[str | None] = [tags.new(setup.sku) for _ in range(setup.initial)]
        self.initial_epcs = list(self.epcs)
        for epc in self.epcs:
            tags.arrive(epc, index, 0.0)

    @property
    def tagged(self) -> bool:
        return self.tags.enabled and self.setup.sku.gtin is not None

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
        tagged: bool = False,
    ) -> None:
        if not node_ids:
            raise ValueError("a scenario needs at least one node")
        if len(set(node_ids)) != len(node_ids):
            raise ValueError("node ids must be unique")
        self.seed = seed
        self.tagged = tagged
        self.rfid_faults: dict[str, Any] = {}  # the readers' fault injection (tools/emulation/uhf_module.py)
        self.lanes: dict[int, list[_LaneSim]] = {}
        self.tags: dict[int, _Tags] = {}
        serials: dict[str, int] = {}
        for k, nid in enumerate(node_ids):
            layout = layouts[k % len(layouts)]
            rng = random.Random(f"emulate:{seed}:node:{nid}")
            tags = self.tags[nid] = _Tags(seed, nid, serials, tagged)
            self.lanes[nid] = [_LaneSim(rng, nid, i, setup, start_s, tags) for i, setup in enumerate(layout)]

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
        n0 = len(sim.lane.comps)
        t_end = sim.shelf.pick(t, units)
        gone = _removed(before, sim.shelf.items)
        taken = [before[i] for i in gone]
        epcs = [sim.epcs[i] for i in gone]
        for i in reversed(gone):
            del sim.epcs[i]
        t_lift = min(_steps_since(sim.lane, n0, -1.0))
        for epc in epcs:
            sim.tags.leave(epc, t_lift)
        grams = sim.shelf.events[-1].delta_g
        tag_kw: dict[str, Any] = {"taken": taken, "taken_epcs": epcs, "epcs": [e for e in epcs if e]}
        if paid:
            wait = pay_after_s if pay_after_s is not None else sim.rng.uniform(40.0, 120.0)
            return sim.row(t, t_end, "pick", -units, grams, paid_units=units, pay_t=t_end + wait, honest=True,
                           **tag_kw)  # fmt: skip
        return sim.row(t, t_end, "theft", -units, grams, paid_units=0, honest=False, **tag_kw)

    def put_back(self, pick: TruthRow, t: float, units: int = 1) -> TruthRow:
        """The shopper of ``pick`` puts ``units`` of those items back: they will not be paid."""
        sim = self.lane(pick.node, pick.lane)
        units = min(units, len(pick.taken))
        if units < 1:
            raise ValueError("nothing left of that pick to put back")
        t = sim.when(t)
        items = [pick.taken.pop() for _ in range(units)]
        epcs = [pick.taken_epcs.pop() if pick.taken_epcs else None for _ in range(units)]
        t_end = self._put(sim, t, items, epcs)
        if pick.paid_units:
            pick.paid_units = max(0, pick.paid_units - units)
            if not pick.paid_units:
                pick.pay_t = None
        return sim.row(t, t_end, "put_back", units, sum(items), epcs=[e for e in epcs if e])

    def _put(self, sim: _LaneSim, t: float, items: list[float], epcs: list[str | None]) -> float:
        """Items (with their tags) set down on the lane: each tag's span starts when its item lands."""
        n0 = len(sim.lane.comps)
        t_end = sim.shelf.put(t, items)
        sim.epcs.extend(epcs)
        for epc, t_on in zip(epcs, _steps_since(sim.lane, n0, 1.0), strict=True):
            sim.tags.arrive(epc, sim.index, t_on)
        return t_end

    def restock(self, node: int, lane: int, t: float, units: int) -> TruthRow:
        sim = self.lane(node, lane)
        t = sim.when(t)
        items = [sim.shelf.new_item() for _ in range(units)]
        epcs = [sim.tags.new(sim.setup.sku) for _ in range(units)]
        t_end = self._put(sim, t, items, epcs)
        return sim.row(t, t_end, "restock", units, sum(items), epcs=[e for e in epcs if e])

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
        epc = sim.epcs[i]
        return sim.row(t, t_end, "damage", 0, -lost, epcs=[epc] if epc else [])

    def misplaced(self, node: int, lane: int, t: float, item_sku: str) -> TruthRow:
        """An item of another SKU is put on the lane."""
        sim = self.lane(node, lane)
        other = CATALOG[item_sku]
        t = sim.when(t)
        w = max(0.3 * other.unit_g, sim.rng.gauss(other.unit_g, other.spread * other.unit_g))
        epc = sim.tags.new(other)  # a unit from elsewhere in the store, with its own tag
        t_end = self._put(sim, t, [w], [epc])
        return sim.row(t, t_end, "misplaced", 0, w, item_sku=item_sku, epcs=[epc] if epc else [])

    def press(self, node: int, lane: int, t: float) -> TruthRow:
        """A hand leans on the lane (30 g .. 2 kg for 0.5 .. 3 s) and lets go."""
        sim = self.lane(node, lane)
        t = sim.when(t)
        t_end = sim.shelf.lean(t)
        return sim.row(t, t_end, "press", 0, 0.0)

    def substitution(self, node: int, lane: int, t: float) -> TruthRow:
        """A tagged unit is lifted and an object of the same weight (within a gram) is put in its place, in one
        hand visit: the weight shows no change beyond noise, one tag leaves, nothing is paid. Its random draws
        come from a generator of its own, so the rest of the scenario is the same with or without it."""
        sim = self.lane(node, lane)
        tagged = [i for i, e in enumerate(sim.epcs) if e is not None]
        if not tagged:
            raise ValueError(f"node {node} lane {lane} has no tagged unit to substitute")
        t = sim.when(t)
        rng = random.Random(f"emulate:{self.seed}:substitution:{node}:{lane}:{t:.3f}")
        i = tagged[rng.randrange(len(tagged))]
        w = sim.shelf.items[i]
        stand_in = w + rng.uniform(-1.0, 1.0)
        rec = sim.lane
        node_rng = rec.rng
        rec.rng = rng  # the hand's and the ringing's draws too
        try:
            r1 = rng.uniform(0.08, 0.25)
            t_lift = t + r1 + rng.uniform(0.15, 0.6)
            r2 = rng.uniform(0.05, 0.25)
            rec.step(t_lift, t_lift + r2, -w)
            rec.bump_half_sine(t_lift, rng.uniform(0.03, 0.08), -rng.uniform(0.0, 0.3) * w)
            t_put = t_lift + r2 + rng.uniform(0.3, 0.8)  # the swap happens under the hand
            r3 = rng.uniform(0.03, 0.15)
            rec.step(t_put, t_put + r3, stand_in)
            rec.bump_half_sine(t_put, rng.uniform(0.04, 0.12), rng.uniform(0.1, 0.8) * stand_in)
            rel0 = t_put + r3 + rng.uniform(0.1, 0.6)
            t_end = rel0 + rng.uniform(0.05, 0.2)
            rec.hand(t, t + r1, rel0, t_end, rng.uniform(0.05, 0.6) * w + rng.uniform(10.0, 150.0))
            rec.ring(t_end, rng.uniform(0.02, 0.1) * stand_in)
        finally:
            rec.rng = node_rng
        sim.shelf.items[i] = stand_in
        epc = sim.epcs[i]
        sim.epcs[i] = None
        sim.tags.leave(epc, t_lift)
        assert epc is not None
        return sim.row(t, t_end, "substitution", 0, stand_in - w, epcs=[epc])

    def stray(self, node: int, count: int, sku: str = STRAY_SKU, t_on: float = 0.0,
              t_off: float | None = None) -> list[str]:  # fmt: skip
        """``count`` tagged units of ``sku`` on the next shelf, above ``node``'s lanes, from ``t_on`` to
        ``t_off`` (None: throughout): no truth rows (they are on no lane), their EPCs are returned."""
        if node not in self.tags:
            raise ValueError(f"no node {node}")
        if not self.tagged:
            raise ValueError("this scenario has its tags off (ScenarioBuilder(..., tagged=True))")
        item = CATALOG[sku]
        if item.gtin is None:
            raise ValueError(f"{sku} is not tagged")
        tags = self.tags[node]
        out = []
        for _ in range(count):
            epc = tags.new(item)
            assert epc is not None
            tags.arrive(epc, None, t_on)
            if t_off is not None:
                tags.leave(epc, t_off)
            out.append(epc)
        return out

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
            tags = [t.to_plan() for t in self.tags[nid].tracks.values()]
            nodes[nid] = NodePlan(nid, [s.setup for s in sims], [s.plan() for s in sims], self.seed, tags,
                                  dict(self.rfid_faults), self.tagged)  # fmt: skip
            for s in sims:
                st = s.setup
                initial = [e for e in s.initial_epcs if e]
                rows.append(TruthRow(0.0, 0.0, nid, s.index, st.sku.sku, "initial", st.initial, s.base_g, st.initial,
                                     st.reorder_point, st.sku.unit_g, epcs=initial))  # fmt: skip
                rows.extend(s.rows)
        rows.sort(key=lambda r: (r.t, r.node, r.lane))
        return Scenario(name, nodes, rows)


@dataclass
class NodePlan:
    """One node's hardware and physics: the lanes, the pins of their cells, the plan for the emulated board; with
    tagged lanes, the RFID reader's wiring and the tags (``TagTrack.to_plan``) it can see."""

    node_id: int
    lanes: list[LaneSetup]
    lane_plans: list[dict[str, Any]]
    seed: int
    tags: list[dict[str, Any]] = field(default_factory=list)
    rfid_faults: dict[str, Any] = field(default_factory=dict)
    tags_on: bool = False
    config: dict[str, Any] = field(default_factory=dict)  # more fields of its config.json (firmware/config.py)

    @property
    def tagged(self) -> bool:
        """With tags on, does any lane hold a tagged SKU (and so the node has a reader)?"""
        return self.tags_on and any(setup.sku.gtin is not None for setup in self.lanes)

    def rfid_wiring(self) -> dict[str, Any] | None:
        """The reader of a node with tagged lanes: its UART and pins (``RFID_UART`` / ``RFID_SWITCH`` unless a
        cell uses them: then the next free GPIO up), one antenna per lane behind the RF switch (``antennas[i]``
        is the lane of switch value ``i``), its seed and faults; None without tagged lanes."""
        if not self.tagged:
            return None
        n = len(self.lanes)
        bits = (n - 1).bit_length()
        if bits > len(RFID_SWITCH):
            raise ValueError(f"node {self.node_id}: one reader covers at most {2 ** len(RFID_SWITCH)} lanes")
        used = {p for cells in self.pins() for pair in cells for p in pair}

        def free(pin: int) -> int:
            while pin in used:
                pin += 1
            if pin > 63:
                raise ValueError(f"node {self.node_id}: no free GPIO for the RFID reader")
            used.add(pin)
            return pin

        tx = free(RFID_UART["tx"])
        rx = free(RFID_UART["rx"])
        switch = [free(p) for p in RFID_SWITCH[:bits]]
        seed = random.Random(f"emulate:{self.seed}:rfid:{self.node_id}").randint(1, 2**31 - 1)
        return {
            "uart": RFID_UART["uart"], "tx": tx, "rx": rx, "baud": RFID_UART["baud"], "switch": switch,
            "antennas": list(range(n)), "seed": seed, "faults": dict(self.rfid_faults),
        }  # fmt: skip

    def rfid_config(self) -> dict[str, Any] | None:
        """The firmware config's ``rfid`` section for this node's reader (``firmware/config.py``); None without
        tagged lanes."""
        w = self.rfid_wiring()
        if w is None:
            return None
        reader = {k: w[k] for k in ("uart", "tx", "rx", "baud")}
        reader.update(RFID_SETTINGS)
        reader["switch"] = w["switch"]
        reader["antennas"] = w["antennas"]
        return {"readers": [reader], **RFID_PRESENCE}

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
        plan: dict[str, Any] = {"lanes": lanes, "cells": cells}
        reader = self.rfid_wiring()
        if reader is not None:
            plan["rfid"] = {"readers": [reader], "tags": self.tags}
        return plan


@dataclass
class Scenario:
    name: str
    nodes: dict[int, NodePlan]
    truth: list[TruthRow]


def build(
    name: str,
    node_ids: list[int],
    seed: int = 1,
    duration_s: float | None = None,
    story_scale: float = 1.0,
    stray: int = 0,
    tagged: bool | None = None,
) -> Scenario:
    """A named scenario (``SCENARIOS``) for these nodes; ``duration_s``: how long shoppers keep coming;
    ``story_scale``: the ``store`` story's times (after the first action) and payment delays multiplied by this
    (0.3..1), so a short demo still plays the whole story; ``stray``: tags on the next shelf above each node with
    tagged lanes (``ScenarioBuilder.stray``); ``tagged``: tags on or off (None: on for ``store`` only)."""
    if not 0.3 <= story_scale <= 1.0:
        raise ValueError("story_scale must be 0.3..1")
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    duration = DEFAULT_DURATION_S[name] if duration_s is None else duration_s
    if duration < 0:
        raise ValueError("duration must be >= 0 s")
    if stray < 0:
        raise ValueError("stray must be >= 0")
    b = ScenarioBuilder(node_ids, seed, tagged=(name == "store") if tagged is None else tagged)
    for nid in node_ids:
        if stray and any(sim.tagged for sim in b.lanes[nid]):
            b.stray(nid, stray)
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
    160 s substitution: a coffee is swapped for an object of the same weight (its tag leaves; the weight
          and the count stay)
    ====  =====================================================================================

    Chips and coffee are tagged (the chips put on the cola lane at 85 s bring their tag there); the others
    are not.

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
    if b.tagged:  # (``build("store", ..., tagged=False)``: the story without it)
        b.substitution(first, 3, at(160.0))
    for nid in node_ids:
        start = at(STORY_END_S) if nid == first else FIRST_ACTION_S
        for lane in range(len(b.lanes[nid])):
            b.shoppers(nid, lane, start, duration, mean_gap_s=60.0)
