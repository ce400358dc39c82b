"""The pure rules of RFID beside the weight (hub/reconcile/tag_rules.py), as timelines: why a tag left a lane, what
the tags say about a pick, which tags are misplaced. Every rule has its negative cases: the honest flows a store
sees all day must raise nothing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from hub.ledger.models import Sku
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.tag_rules import (
    NO_TAG_LEFT,
    SWAPPED,
    UNCHANGED,
    Departure,
    Outage,
    Present,
    Reading,
    Sighting,
    Step,
    Verdict,
    held_elsewhere,
    judge,
    misplaced,
    pick_tags,
    weight_dropped,
)

CFG = ReconcileConfig()  # tag_window_s 20, tag_return_s 60, tag_late_s 1800, misplaced_grace_s 120
COLA = Sku("COLA", "Cola", 3500, 20)
T = 1_700_000_000_000
S = 1000  # ms


def dep(ts: int = T, sku: str | None = "COLA", lane: str = "A1", known: bool = True) -> Departure:
    return Departure(41, 1, lane, "3074257BF7194E4000001A85", sku, ts, known)


def pick(mid: int, ts: int, units: int = 1, conf: int = 95, weight: int | None = None) -> Step:
    return Step(mid, ts, "pick", -units, -3500 * units if weight is None else weight, conf)


def put(mid: int, ts: int, units: int = 1) -> Step:
    return Step(mid, ts, "put", units, 3500 * units, 95)


def verdict(
    d: Departure,
    steps: Sequence[Step] = (),
    taken: dict[int, tuple[int, int]] | None = None,
    readings: Sequence[Reading] = (),
    later: Sequence[Sighting] = (),
    outages: Sequence[Outage] = (),
    arrivals: Sequence[Sighting] = (),
    lane_sku: Sku | None = COLA,
) -> Verdict:
    return judge(d, lane_sku, steps, taken or {}, readings, later, outages, CFG, arrivals)


# ------------------------------------------------------------------------------------------ honest flows


def test_an_honest_pick_takes_its_tag_with_it() -> None:
    # 10:00:00 pick of one cola; its tag last read 2 s later (the shopper's hand), reported lost_s after that
    assert verdict(dep(T + 2 * S), [pick(7, T)]) == Verdict("picked", 7, 2 * S)


def test_the_tag_may_leave_before_the_weight_step_within_the_window() -> None:
    assert verdict(dep(T - 15 * S), [pick(7, T)]) == Verdict("picked", 7, -15 * S)


def test_a_pick_outside_the_window_is_not_the_tags() -> None:
    assert verdict(dep(T + 25 * S), [pick(7, T)]).verdict == "picked_late"  # ... but the late rule names it


def test_the_nearest_pick_with_a_unit_to_give_takes_the_tag() -> None:
    steps = [pick(7, T - 10 * S), pick(8, T + 3 * S)]
    assert verdict(dep(T), steps).pick_id == 8
    assert verdict(dep(T), steps, taken={8: (1, 0)}).pick_id == 7  # 8 took its one tag already


def test_a_pick_of_two_units_takes_two_tags_and_no_third() -> None:
    steps = [pick(7, T, units=2)]
    assert verdict(dep(T), steps, taken={7: (1, 0)}).verdict == "picked"
    third = verdict(dep(T), steps, taken={7: (2, 0)})
    assert third == Verdict("tamper", why=UNCHANGED)  # more tags left than the weight saw units go


def test_a_pick_whose_weight_says_two_units_gives_two_tags_even_if_the_node_counted_one() -> None:
    assert verdict(dep(T), [pick(7, T, units=1, weight=-7000)], taken={7: (1, 0)}).verdict == "picked"


def test_an_anomaly_that_lost_weight_is_a_pick_the_node_could_not_count() -> None:
    anomaly = Step(7, T, "anomaly", 0, -3400, 30)
    assert verdict(dep(T + S), [anomaly]).verdict == "picked"
    assert verdict(dep(T + S), [Step(7, T, "anomaly", 0, -20, 30)]).verdict == "tamper"  # noise is no pick


def test_picked_and_put_back_with_the_tag_read_again_is_honest() -> None:
    steps = [pick(7, T), put(8, T + 30 * S)]
    back = [Sighting("A1", T + 31 * S)]
    assert verdict(dep(T + 2 * S), steps, later=back).verdict == "picked"


def test_another_unit_of_the_sku_put_back_counts_as_the_weight_and_a_tag_returning() -> None:
    steps = [pick(7, T), put(8, T + 30 * S)]
    other_unit = [Sighting("A1", T + 31 * S)]
    assert verdict(dep(T + 2 * S), steps, arrivals=other_unit).verdict == "picked"


# ---------------------------------------------------------------------------------------------- tamper


def test_a_tag_leaving_without_any_weight_change_is_tamper() -> None:
    assert verdict(dep(T)) == Verdict("tamper", why=UNCHANGED)
    puts_only = [put(8, T + 5 * S)]  # something put on the lane is no unit taken off
    assert verdict(dep(T), puts_only).verdict == "tamper"


def test_a_unit_swapped_for_one_of_the_same_weight_is_tamper() -> None:
    steps = [pick(7, T), put(8, T + 40 * S)]  # the weight came back ... and no tag of cola did
    assert verdict(dep(T + 2 * S), steps) == Verdict("tamper", why=SWAPPED)


def test_take_two_put_one_back_is_one_unit_and_one_tag_gone() -> None:
    """The demo's shopper: two taken, one put back 5 s later, before the node's lost_s let its tag leave: only the
    kept unit's tag leaves, and one unit is gone by weight. Honest; with a second tag gone, one is a swap."""
    steps = [pick(7, T, units=2), put(8, T + 5 * S)]
    assert verdict(dep(T + 1 * S), steps).verdict == "picked"
    assert verdict(dep(T + 1 * S), steps, taken={7: (1, 0)}) == Verdict("tamper", why=SWAPPED)


def test_another_shoppers_lift_and_put_back_after_an_honest_pick_is_no_swap() -> None:
    """Shopper 1 takes a cola at T (its tag last read at T + 1 s); shopper 2 lifts one at T + 20 s and puts it back at
    T + 25 s, within lost_s (its tag never leaves): two units taken, one put back, one tag gone. A real swap in the
    same span (the put-back without its tag, and both tags gone) is still tamper."""
    steps = [pick(7, T), pick(8, T + 20 * S), put(9, T + 25 * S)]
    assert verdict(dep(T + 1 * S), steps).verdict == "picked"
    assert verdict(dep(T + 1 * S), steps, taken={8: (1, 0)}) == Verdict("tamper", why=SWAPPED)


def test_a_substitution_long_after_a_damage_or_a_pick_put_back_is_still_tamper() -> None:
    """Found by `smartshelf bench rfid`: a substituted tag was named on an earlier step that took no unit away --
    a damage anomaly (weight lost, no unit gone) or a pick whose unit was put back -- and no tamper was raised."""
    damage = Step(7, T - 300 * S, "anomaly", 0, -1600, 0)
    assert verdict(dep(T), [damage]) == Verdict("tamper", why=UNCHANGED)
    put_back = [pick(7, T - 300 * S), put(8, T - 290 * S)]
    assert verdict(dep(T), put_back) == Verdict("tamper", why=UNCHANGED)
    kept = [pick(7, T - 300 * S)]  # an untagged-looking pick whose unit stayed gone: the tag left late
    assert verdict(dep(T), kept).verdict == "picked_late"


def test_a_swap_slower_than_the_verdict_passes_as_a_pick_put_back() -> None:
    steps = [pick(7, T), put(8, T + 2 * S + 90 * S)]  # after tag_window_s + tag_return_s: a stated limit
    assert verdict(dep(T + 2 * S), steps).verdict == "picked"


# ------------------------------------------------------------------------------------- not evidence of tamper


def test_the_weight_readings_saw_the_unit_go_though_no_event_said_so() -> None:
    readings = [Reading(T - 60 * S, 35_000), Reading(T + 5 * S, 31_500)]
    assert verdict(dep(T), readings=readings).verdict == "weight_changed"
    noise = [Reading(T - 60 * S, 35_000), Reading(T + 5 * S, 34_980)]
    assert verdict(dep(T), readings=noise).verdict == "tamper"


def test_a_tag_read_again_on_its_lane_soon_never_left() -> None:
    assert verdict(dep(T), later=[Sighting("A1", T + 40 * S)]).verdict == "returned"
    assert verdict(dep(T), later=[Sighting("A1", T + 70 * S)]).verdict == "tamper"  # later than tag_return_s


def test_a_tag_read_on_another_lane_at_its_departure_moved() -> None:
    assert verdict(dep(T), later=[Sighting("A2", T + S)]).verdict == "moved"
    assert verdict(dep(T), later=[Sighting("A2", T + 45 * S)]).verdict == "tamper"


def test_a_reader_not_reading_around_the_departure_is_no_evidence() -> None:
    assert verdict(dep(T), outages=[Outage(T - 5 * S, T + 5 * S)]).verdict == "reader_outage"
    assert verdict(dep(T), outages=[Outage(T + 10 * S, None)]).verdict == "reader_outage"  # still silent
    # the reader died 40 s after the last read, before the node decided the loss: it held the tag, no evidence
    assert verdict(dep(T), outages=[Outage(T + 40 * S, T + 300 * S)]).verdict == "reader_outage"
    assert verdict(dep(T), outages=[Outage(T - 3600 * S, T - 3000 * S)]).verdict == "tamper"
    assert verdict(dep(T), outages=[Outage(T + 120 * S, None)]).verdict == "tamper"  # long after the loss


def test_an_outage_already_under_way_at_the_tags_last_read_is_another_readers() -> None:
    # reader 1 of the node dead for an hour (still): the tag was read at T, so its reader (0) was reading
    assert verdict(dep(T), outages=[Outage(T - 3600 * S, None)]).verdict == "tamper"
    assert verdict(dep(T), outages=[Outage(T - 25 * S, T + 5 * S)]).verdict == "tamper"  # began before the window
    assert verdict(dep(T), outages=[Outage(T - 15 * S, None)]).verdict == "reader_outage"  # within it: maybe its own
    # reader 1 dead all along, and the tag's own reader stopped after its last read: that one explains it
    both = [Outage(T - 3600 * S, None), Outage(T + 30 * S, T + 200 * S)]
    assert verdict(dep(T), outages=both).verdict == "reader_outage"
    assert Outage(T - 20 * S, None).explains(T, 20 * S, T + 80 * S)  # the bounds are included
    assert Outage(T + 80 * S, None).explains(T, 20 * S, T + 80 * S)
    assert not Outage(T + 80 * S + 1, None).explains(T, 20 * S, T + 80 * S)


def test_a_pick_that_took_no_tag_gets_its_tag_named_when_it_leaves_late() -> None:
    assert verdict(dep(T + 600 * S), [pick(7, T)]) == Verdict("picked_late", 7, 600 * S)
    assert verdict(dep(T + 600 * S), [pick(7, T)], taken={7: (1, 0)}).verdict == "tamper"  # it took its tag
    assert verdict(dep(T + 1900 * S), [pick(7, T)]).verdict == "tamper"  # older than tag_late_s
    two = [pick(7, T, units=2)]
    assert verdict(dep(T + 600 * S), two, taken={7: (0, 1)}).verdict == "picked_late"  # its second unit
    assert verdict(dep(T + 600 * S), two, taken={7: (0, 2)}).verdict == "tamper"


# --------------------------------------------------------------------------------- other SKUs, unknowns


def test_a_tag_of_another_sku_leaving_an_untouched_lane_is_a_cross_read() -> None:
    assert verdict(dep(T, sku="TEA")).verdict == "cross_read"
    assert verdict(dep(T, sku="TEA"), [pick(7, T)]).verdict == "other_sku_picked"  # a misplaced item taken
    assert verdict(dep(T, sku="TEA"), lane_sku=Sku("SOUP", "Soup", 4000)).verdict == "cross_read"  # untagged lane


@pytest.mark.parametrize(
    ("d", "lane_sku", "expected"),
    [
        (dep(known=False), COLA, "time_unknown"),
        (dep(sku=None), COLA, "unknown_sku"),
        (dep(), None, "unassigned_lane"),
    ],
)
def test_departures_nothing_can_be_said_about(d: Departure, lane_sku: Sku | None, expected: str) -> None:
    assert verdict(d, lane_sku=lane_sku).verdict == expected


# --------------------------------------------------------------------------------------------------- picks


def test_a_pick_on_a_tagged_lane_with_no_tag_leaving_has_lower_confidence() -> None:
    found = pick_tags(pick(7, T), COLA, tagged=True, tags_left=0, cfg=CFG)
    assert found is not None and found.note == NO_TAG_LEFT and found.units_by_tags is None


def test_a_pick_on_an_untagged_lane_says_nothing() -> None:
    assert pick_tags(pick(7, T), COLA, tagged=False, tags_left=0, cfg=CFG) is None


def test_an_ambiguous_count_is_settled_by_the_tags_that_left() -> None:
    # a pick the node counted as 2 at 40 %: the weight fits 3 units too; 3 tags left with it
    ambiguous = pick(7, T, units=2, conf=40, weight=-10_400)
    found = pick_tags(ambiguous, COLA, tagged=True, tags_left=3, cfg=CFG)
    assert found is not None and (found.counted, found.units_by_tags) == (2, 3)
    assert "settled by 3 tags" in found.note


def test_tags_never_override_a_confident_count_or_a_weight_they_do_not_fit() -> None:
    confident = pick_tags(pick(7, T, units=2, conf=95, weight=-10_400), COLA, True, 3, CFG)
    assert confident is not None and confident.units_by_tags is None and confident.note == "3 tags left with it"
    misfit = pick_tags(pick(7, T, units=2, conf=40, weight=-7000), COLA, True, 3, CFG)  # 3 units weigh 1050 g
    assert misfit is not None and misfit.units_by_tags is None


# ------------------------------------------------------------------------------------------------ misplaced


def present(first: int, sku: str | None = "TEA", unconfirmed: bool = False) -> Present:
    return Present("A1", "E2801160600002054CC2096F", sku, first, first, -50, unconfirmed)


def test_a_tag_of_another_sku_past_the_grace_is_misplaced() -> None:
    assert misplaced(present(T - 121 * S), "COLA", T, CFG)


@pytest.mark.parametrize(
    ("tag", "lane_sku"),
    [
        (present(T - 30 * S), "COLA"),  # a hand passing over
        (present(T - 600 * S, sku="COLA"), "COLA"),  # its own lane
        (present(T - 600 * S, sku=None), "COLA"),  # unknown EPC
        (present(T - 600 * S), None),  # a lane without SKU
        (present(T - 600 * S, unconfirmed=True), "COLA"),  # not read since its node restarted
    ],
)
def test_what_is_not_misplaced(tag: Present, lane_sku: str | None) -> None:
    assert not misplaced(tag, lane_sku, T, CFG)


def test_a_tag_held_on_two_lanes_is_on_its_skus_lane_else_the_strongest_read() -> None:
    # a tea (TEA) on the cola lane A1 of node 1, and read by node 2 too
    here = Present("A1", "E2801160600002054CC2096F", "TEA", T, T, -50)

    def there(lane: str, rssi: int | None, first: int = T) -> Present:
        return Present(lane, here.epc, "TEA", first, first, rssi)

    home = there("B2", -75)
    assert held_elsewhere(here, "COLA", [(home, "TEA")]) == home  # its own shelf, though read weaker there
    assert held_elsewhere(here, "COLA", [(there("C2", -40), "SOUP"), (home, "TEA")]) == home
    assert held_elsewhere(here, "COLA", []) is None  # only here: misplaced
    assert held_elsewhere(here, "COLA", [(there("C2", -65), "SOUP")]) is None  # the strongest of other SKUs' lanes
    assert held_elsewhere(here, "COLA", [(there("C2", -40), "SOUP")]) == there("C2", -40)
    assert held_elsewhere(here, "COLA", [(there("C2", None), None)]) is None  # no RSSI: the weakest
    assert held_elsewhere(here, "COLA", [(there("C2", -50, T - S), "SOUP")]) == there("C2", -50, T - S)  # earlier
    assert held_elsewhere(here, "COLA", [(there("A0", -50), "SOUP")]) == there("A0", -50)  # then by lane id
    assert held_elsewhere(there("A0", -50), "SOUP", [(here, "COLA")]) is None  # ... seen from either side
    assert held_elsewhere(there("B2", -75), "TEA", [(here, "COLA")]) is None  # its own lane's stay always stands
    unconfirmed_home = Present("B2", here.epc, "TEA", T, T, -75, unconfirmed=True)  # a restart is no evidence
    assert held_elsewhere(here, "COLA", [(unconfirmed_home, "TEA")]) == unconfirmed_home


def test_weight_dropped_compares_the_levels_before_and_after_the_window_net_of_booked_steps() -> None:
    readings = [Reading(T - 100 * S, 50_000), Reading(T - 30 * S, 35_000), Reading(T + 25 * S, 33_000)]
    assert weight_dropped(readings, T, 20 * S, 1750)  # 35.0 kg before, 33.0 kg after the window
    assert not weight_dropped(readings[:2], T, 20 * S, 1750)  # nothing after: no evidence
    assert not weight_dropped([], T, 20 * S, 1750)
    # the drop was a booked pick: the weight events said so, nothing unbooked
    assert not weight_dropped(readings, T, 20 * S, 1750, [pick(7, T - 5 * S, weight=-2000)])


def test_a_swap_seen_mid_hand_by_a_reading_is_no_weight_change() -> None:
    """The test demo's substitution: a restock of 8 five seconds before, and a reading taken while the hand held
    the unit (one down), then the stand-in in its place: the level net of the restock is unchanged: tamper."""
    restock = Step(9, T - 5 * S, "put", 8, 8 * 3500, 100)
    readings = [Reading(T - 25 * S, 14_000), Reading(T - 4 * S, 42_000), Reading(T + 1 * S, 38_500),
                Reading(T + 3 * S, 42_010)]  # fmt: skip
    assert not weight_dropped(readings, T, 20 * S, 1750, [restock])
    assert verdict(dep(T), [restock], readings=readings) == Verdict("tamper", why=UNCHANGED)
