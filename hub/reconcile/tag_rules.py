"""Pure rules of RFID beside the weight: why a tag left a lane, what the tags say about a pick, which tags are
misplaced. No I/O: ``tag_plan`` feeds them ledger rows and turns their verdicts into alerts and evidence.

**Why a tag left** (``judge``), for each departure (a ``tag_lost``: its time is the tag's last read on the lane),
in this order, the first that holds:

1. ``time_unknown``: the node could not date it (an event from before its restart): nothing can be compared.
2. ``unassigned_lane`` / ``unknown_sku``: the lane holds no SKU, or the EPC names none (still tracked).
3. The tag is of **another SKU** than the lane's: a weight loss on the lane within ``tag_window_s`` means a
   misplaced item was taken (``other_sku_picked``); none means the lane's antenna read a tag that was never on it,
   a **cross-read**, ignored (``cross_read``, counted).
4. The tag is of the lane's SKU (a **tagged lane**): a weight loss within ``tag_window_s`` with a unit left to
   give (a pick of n units takes at most n tags; the nearest in time first) is the tag's pick (``picked``) --
   unless puts gave units back before the verdict and, counted over the lane from ``tag_window_s`` before the
   departure to the verdict, more tags are gone (taken by the picks, less those that came back) than units by
   weight (taken by the picks, less those put back): a unit **swapped** for something of the same weight
   (``tamper``; the weight matching takes such a put for a put-back, so only the tags can tell). Take two, put one
   back: one unit and one tag gone, honest; so is another shopper's lift-and-put-back after an honest pick.
5. The lane's weight level dropped by half a unit or more across the window, beyond what its events booked
   (``weight_changed``): the weight saw it go though no event said so.
6. The tag was read on its lane again within ``tag_return_s`` (``returned``: hidden for a moment, a missed read)
   or is read on another lane around its departure (``moved``: the strongest antenna changed, or the item was
   moved with the weight unchanged).
7. An earlier pick of the lane within ``tag_late_s`` that took no tag and whose units are still gone (not put back
   since): the unit left late, the tag is named on that pick (``picked_late``). A damage anomaly took no unit away,
   and a pick whose units all came back has none left to give.
8. A reader of the node stopped reading around the departure or before its loss was decided (``reader_outage``:
   an outage that **began** from ``tag_window_s`` before the last read to ``tag_window_s + tag_return_s`` after
   it): not evidence. A node holds the tags of a reader that cannot read and declares them lost only once it reads
   again, dated at their last read; so a tag last read at ``t`` was on a reader that was reading at ``t``, and an
   outage that began earlier (still going, or not) is another reader's: one dead reader of a node does not excuse
   the tags leaving its other readers' lanes.
9. Otherwise the tag left and the weight did not change: **tamper** (a substitution, or a tag torn off).

Judged ``tag_window_s + tag_return_s`` after the departure, so a swap slower than that passes as a pick put back.

**What the tags say about a pick** (``pick_tags``): on a tagged lane, a pick with no tag leaving within the window
is noted *no tag left: lower confidence*; a pick the node counted with low confidence (below ``min_confidence``)
is counted by the tags that left with it, when that many units fit its weight change.

**Misplaced** (``misplaced``): a tag of SKU X present on a lane of SKU Y for ``misplaced_grace_s`` (a shopper's hand
passing over is not), its presence confirmed since its node's last restart -- unless the same EPC is present on
another lane too (``held_elsewhere``: nodes settle cross-reads among their own antennas only, so an adjacent shelf's
node can hold the tag as well): on a lane of SKU X it is there (its own shelf: the common case, and RSSI of
different nodes' readers does not compare well), else on the lane with the strongest read (then the earliest
arrival); the other lanes' presence is a **cross-read**, counted, never alerted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hub.ledger.models import Sku
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.rules import fit, tolerance_dg

PICKED, PICKED_LATE, TAMPER, CROSS_READ = "picked", "picked_late", "tamper", "cross_read"
VERDICTS = (
    PICKED, PICKED_LATE, "weight_changed", TAMPER, CROSS_READ, "other_sku_picked", "returned", "moved",
    "reader_outage", "time_unknown", "unknown_sku", "unassigned_lane",
)  # fmt: skip
NO_TAG_LEFT = "no tag left: lower confidence"


@dataclass(frozen=True, slots=True)
class Departure:
    """A tag that left a lane (``tag_events`` kind ``lost``), with the SKU its EPC names now."""

    event_id: int
    node_id: int
    lane_id: str
    epc: str
    sku: str | None
    ts_ms: int  # the tag's last read on the lane
    ts_known: bool = True


@dataclass(frozen=True, slots=True)
class Step:
    """A weight event of a lane (sensor pick, put or anomaly movement)."""

    movement_id: int
    ts_ms: int
    kind: str  # pick | put | anomaly
    qty: int  # as booked: negative for a pick
    weight_delta_dg: int | None
    confidence: int

    def loss(self, sku: Sku | None, cfg: ReconcileConfig) -> int:
        """How many units this step took off the lane (0: it took none): a pick's count, or its weight's whole
        units when more; an anomaly that lost weight, at least one."""
        w = self.weight_delta_dg
        by_weight = fit(w, sku, cfg).units if sku is not None and w is not None and w < 0 else 0
        if self.kind == "pick" and self.qty < 0:
            return max(-self.qty, by_weight)
        if self.kind == "anomaly" and w is not None and w < -cfg.min_change_dg:
            return max(1, by_weight)
        return 0


@dataclass(frozen=True, slots=True)
class Reading:
    ts_ms: int
    weight_dg: int


@dataclass(frozen=True, slots=True)
class Sighting:
    """A read of the same EPC after it left: a ``tag_seen`` on this lane or another."""

    lane_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Outage:
    """A reader of the node not reading from ``from_ms`` to ``to_ms`` (None: still)."""

    from_ms: int
    to_ms: int | None

    def explains(self, last_read_ms: int, window_ms: int, horizon_ms: int) -> bool:
        """Can this outage explain the loss of a tag last read at ``last_read_ms``, decided by ``horizon_ms``? Only
        if it began at or after ``last_read_ms - window_ms``: the tag was read then, so its reader was reading
        (give or take the window: the two times come from different reports); an outage already under way by then
        is another reader's, and excuses nothing on this one's lanes (the hub does not know which antenna serves
        which lane, but it knows the tag's reader worked)."""
        return last_read_ms - window_ms <= self.from_ms <= horizon_ms


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str
    pick_id: int | None = None
    lag_ms: int | None = None  # departure - pick
    why: str = ""  # a tamper's: "no weight change" or "swapped"


SWAPPED = "the weight came back (a put) but no tag of the SKU did: swapped"
UNCHANGED = "the lane's weight did not change"


def weight_dropped(
    readings: Iterable[Reading], ts_ms: int, window_ms: int, threshold_dg: int, steps: Iterable[Step] = ()
) -> bool:
    """Did the lane lose ``threshold_dg`` or more across ``[ts - window, ts + window]`` that no weight event booked?
    From the last reading at or before the window's start (else the first in it) to the last reading in the window
    (else the first after it), less the weight the lane's events booked in between (a restock, a pick). Levels, not
    the lowest reading: a reading taken while a hand swapped a unit for a stand-in dips and comes back, and that is
    the swap the tags must tell, not a weight change."""
    ordered = sorted(readings, key=lambda r: r.ts_ms)
    lo, hi = ts_ms - window_ms, ts_ms + window_ms
    before = [r for r in ordered if r.ts_ms <= lo]
    inside = [r for r in ordered if lo < r.ts_ms <= hi]
    after = [r for r in ordered if r.ts_ms > hi][:1]
    start = before[-1] if before else (inside[0] if inside else None)
    end = inside[-1] if inside and inside[-1] is not start else (after[0] if after else None)
    if start is None or end is None:
        return False
    booked = sum(s.weight_delta_dg or 0 for s in steps if start.ts_ms < s.ts_ms <= end.ts_ms)
    return (start.weight_dg - end.weight_dg) + booked >= threshold_dg


def judge(
    dep: Departure,
    lane_sku: Sku | None,
    steps: Iterable[Step],
    taken: Mapping[int, tuple[int, int]],
    readings: Iterable[Reading],
    later: Iterable[Sighting],
    outages: Iterable[Outage],
    cfg: ReconcileConfig,
    arrivals: Iterable[Sighting] = (),
) -> Verdict:
    """Why ``dep`` left (module docstring). ``steps``: the lane's weight events around it (from ``tag_late_s``
    before to ``tag_window_s`` after); ``taken``: tags already given to each pick (movement id -> (within the
    window, late));
    ``readings``: the lane's weights around it; ``later``: reads of the EPC after it left; ``outages``: its node's;
    ``arrivals``: tags of the lane's SKU arriving on the lane after it left (another unit put back)."""
    if not dep.ts_known:
        return Verdict("time_unknown")
    if lane_sku is None:
        return Verdict("unassigned_lane")
    if dep.sku is None:
        return Verdict("unknown_sku")
    window = cfg.tag_window_ms
    t = dep.ts_ms
    steps = sorted(steps, key=lambda s: (s.ts_ms, s.movement_id))
    near = [s for s in steps if abs(s.ts_ms - t) <= window and s.loss(lane_sku, cfg) > 0]
    threshold = max(cfg.min_change_dg, lane_sku.unit_weight_dg // 2)
    if dep.sku != lane_sku.sku:
        if near or weight_dropped(readings, t, window, threshold, steps):
            return Verdict("other_sku_picked")
        return Verdict(CROSS_READ)
    free = [s for s in near if sum(taken.get(s.movement_id, (0, 0))) < s.loss(lane_sku, cfg)]
    later = list(later)
    if free:
        pick = min(free, key=lambda s: (abs(s.ts_ms - t), s.movement_id))
        horizon = t + cfg.ms("tag_return_s")
        # A swap: units put back, but more tags are gone than units by weight. Counted over the lane, not per pick:
        # from tag_window_s before this departure to the verdict's horizon, the units all picks took less the units
        # put back, against the tags those picks took (this one included) less the tags that came back. A shopper
        # who takes two and puts one back within the node's lost_s never lets the returned unit's tag leave: one
        # unit, one tag. Another shopper's lift-and-put-back after an honest pick: two units taken, one put back,
        # one tag gone.
        span = [s for s in steps if t - window <= s.ts_ms <= horizon]
        put_units = sum(s.qty for s in span if s.kind == "put" and s.qty > 0 and s.ts_ms > pick.ts_ms)
        picks = [s for s in span if s.loss(lane_sku, cfg) > 0]
        units = sum(s.loss(lane_sku, cfg) for s in picks)
        back = sum(1 for s in (*later, *arrivals) if s.lane_id == dep.lane_id and t < s.ts_ms)
        tags_gone = sum(taken.get(s.movement_id, (0, 0))[0] for s in picks) + 1 - back
        if put_units and tags_gone > units - put_units:
            return Verdict(TAMPER, why=SWAPPED)
        return Verdict(PICKED, pick.movement_id, t - pick.ts_ms)
    if weight_dropped(readings, t, window, threshold, steps):
        return Verdict("weight_changed")
    if any(s.lane_id == dep.lane_id and t < s.ts_ms <= t + cfg.ms("tag_return_s") for s in later):
        return Verdict("returned")
    if any(s.lane_id != dep.lane_id and abs(s.ts_ms - t) <= window for s in later):
        return Verdict("moved")

    def still_gone(p: Step) -> int:
        """Units of pick ``p`` still off the lane at ``t``: its count less the units put back on the lane since."""
        back = sum(s.qty for s in steps if s.kind == "put" and s.qty > 0 and p.ts_ms < s.ts_ms <= t)
        return p.loss(lane_sku, cfg) - back

    earlier = [
        s
        for s in steps
        if s.kind == "pick"  # a count the node made: not a damage anomaly, whose lost weight is no unit taken away
        and t - cfg.ms("tag_late_s") <= s.ts_ms < t - window
        and taken.get(s.movement_id, (0, 0))[0] == 0  # no tag left with it ...
        and sum(taken.get(s.movement_id, (0, 0))) < still_gone(s)  # ... and units of it are still gone, untagged
    ]
    if earlier:
        pick = earlier[-1]  # the latest such pick
        return Verdict(PICKED_LATE, pick.movement_id, t - pick.ts_ms)
    if any(o.explains(t, window, t + window + cfg.ms("tag_return_s")) for o in outages):
        return Verdict("reader_outage")
    return Verdict(TAMPER, why=UNCHANGED)


@dataclass(frozen=True, slots=True)
class PickTags:
    """What the tags said about one pick of a tagged lane."""

    counted: int  # units the node counted
    confidence: int
    tags_left: int  # tags of the lane's SKU that left with it (within the window)
    units_by_tags: int | None  # the count the tags settled (a low-confidence count whose weight fits them)

    @property
    def note(self) -> str:
        if self.tags_left == 0:
            return NO_TAG_LEFT
        if self.units_by_tags is not None:
            return f"count {self.counted} at {self.confidence}% confidence settled by {self.tags_left} tags leaving"
        return f"{self.tags_left} {'tag' if self.tags_left == 1 else 'tags'} left with it"


def pick_tags(step: Step, sku: Sku, tagged: bool, tags_left: int, cfg: ReconcileConfig) -> PickTags | None:
    """The tags' view of a pick, or None for a pick of a lane whose SKU carried no tag then (``tagged``: a tag of
    the lane's SKU was on the lane at the pick, or left with it)."""
    if not tagged and tags_left == 0:
        return None
    units = None
    w = step.weight_delta_dg
    low = tags_left > 0 and step.confidence < cfg.min_confidence and w is not None and w < 0
    # the weight left the count open; the tags settle it when exactly that many units fit the weight change
    if low and w is not None and abs(-w - tags_left * sku.unit_weight_dg) <= tolerance_dg(sku, tags_left, cfg):
        units = tags_left
    return PickTags(-step.qty, step.confidence, tags_left, units)


@dataclass(frozen=True, slots=True)
class Present:
    """A tag on a lane now (``tag_presence``)."""

    lane_id: str
    epc: str
    sku: str | None  # the tag's SKU
    first_seen_ms: int | None
    last_read_ms: int | None
    rssi: int | None
    unconfirmed: bool = False


def misplaced(tag: Present, lane_sku: str | None, now_ms: int, cfg: ReconcileConfig) -> bool:
    """A tag of another SKU than the lane's, on it for ``misplaced_grace_s`` or more, read since any restart. (Held
    on another lane too? ``held_elsewhere`` says which of them it is on.)"""
    if tag.sku is None or lane_sku is None or tag.sku == lane_sku or tag.unconfirmed or tag.first_seen_ms is None:
        return False
    return now_ms - tag.first_seen_ms >= cfg.ms("misplaced_grace_s")


def _strength(p: Present) -> tuple[int, int, str]:
    """Stronger first: the higher RSSI (none: weakest), then the earlier arrival, then the lane id (a total order)."""
    return (
        -p.rssi if p.rssi is not None else 1 << 16,
        p.first_seen_ms if p.first_seen_ms is not None else 1 << 62,
        p.lane_id,
    )


def held_elsewhere(tag: Present, lane_sku: str | None, others: Iterable[tuple[Present, str | None]]) -> Present | None:
    """The same EPC present on other lanes too (``others``: each with its lane's SKU): the stay it is held on instead
    of this lane's, which is then a **cross-read**, or None when this lane's stands. A node settles cross-reads among
    its own antennas by RSSI; another shelf's node may read the same tag strongly enough to keep it too.

    1. On a lane of its own SKU: there (the strongest such). Items are on their own shelf far more often than
       misplaced beside it, and RSSI across nodes compares different readers, antennas and cables; a misplaced
       item within its own shelf's read range is not flagged by its tag (a put of the wrong weight still is).
    2. Else (only lanes of other SKUs, or none): the strongest read (RSSI), then the earliest arrival, then the
       lane id: one item, one lane, whichever order the runs see them in."""
    rivals = [(p, sku) for p, sku in others if p.lane_id != tag.lane_id and p.epc == tag.epc]
    if tag.sku is not None and lane_sku != tag.sku:
        home = [p for p, sku in rivals if sku is not None and sku == tag.sku]
        if home:
            return min(home, key=_strength)
    elif tag.sku is not None:
        return None  # this lane is its own SKU's
    best = min([tag, *(p for p, _ in rivals)], key=_strength)
    return None if best is tag else best
