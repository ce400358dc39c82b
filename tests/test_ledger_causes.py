"""Alert cause keys (hub/ledger/causes.py): every kind round-trips as the stored string, malformed keys are refused."""

from __future__ import annotations

import pytest

from hub.ledger.causes import DRIFT, SILENT, STUCK, Cause, CauseKind, InvalidCause

# every kind, as the hub stores it (these strings are in existing databases: they must never change)
STORED: list[tuple[Cause, str]] = [
    (Cause.lane("A1"), "lane:A1"),
    (Cause.lane("node7-lane0"), "lane:node7-lane0"),
    (Cause.lane_sku("A1", "COLA"), "lane:A1/COLA"),
    (Cause.lane_sku("B.2_x", "COLA/330 ml"), "lane:B.2_x/COLA/330 ml"),  # a SKU may hold a "/" and spaces
    (Cause.lane_problem("A1", STUCK), "lane:A1/stuck"),
    (Cause.lane_problem("A1", DRIFT), "lane:A1/drift"),
    (Cause.of_sku("TEA"), "sku:TEA"),
    (Cause.of_sku("A/B"), "sku:A/B"),
    (Cause.node(0), "node:0"),
    (Cause.node(11), "node:11"),
    (Cause.node_problem(1, SILENT), "node:1/silent"),
]


@pytest.mark.parametrize(("cause", "key"), STORED, ids=[k for _, k in STORED])
def test_every_kind_round_trips(cause: Cause, key: str) -> None:
    assert str(cause) == key
    assert Cause.parse(key) == cause
    assert str(Cause.parse(key)) == key
    assert Cause.parse_or_none(key) == cause


def test_fields_and_subjects() -> None:
    shrink = Cause.parse("lane:A1/COLA")
    assert (shrink.kind, shrink.lane_id, shrink.sku, shrink.node_id) == (CauseKind.LANE_SKU, "A1", "COLA", None)
    assert shrink.about_lane and not shrink.about_node
    assert shrink.subject == Cause.lane("A1") and str(shrink.subject) == "lane:A1"
    silent = Cause.parse("node:3/silent")
    assert (silent.kind, silent.node_id, silent.problem) == (CauseKind.NODE_PROBLEM, 3, "silent")
    assert silent.about_node and silent.subject == Cause.node(3)
    reorder = Cause.parse("sku:TEA")
    assert reorder.subject == reorder and not reorder.about_lane and not reorder.about_node
    assert Cause.lane("A1").prefix == "lane:A1/" and Cause.node(3).prefix == "node:3/"
    with pytest.raises(ValueError):
        _ = reorder.prefix


def test_a_sku_named_like_a_problem_names_the_same_lane() -> None:
    """The documented ambiguity: the key is kept, parsed as the lane's problem; the lane is the same."""
    cause = Cause.lane_sku("A1", "stuck")
    assert str(cause) == "lane:A1/stuck"
    parsed = Cause.parse(str(cause))
    assert parsed.kind == CauseKind.LANE_PROBLEM and parsed.lane_id == "A1" and str(parsed) == str(cause)


MALFORMED = [
    "",
    "lane:",
    "lane:/COLA",
    "lane:A 1",  # not a lane id
    "lane:-A1",
    "lane:A1/",  # no SKU
    "lane:A1/\tTAB",  # not printable
    "lane:" + "A" * 65,  # too long for a lane id
    "lane:A1/" + "S" * 33,  # too long for a SKU
    "sku:",
    "sku:é",
    "node:",
    "node:x",
    "node:01",  # not canonical: would not round-trip
    "node:-1",
    "node:1/",
    "node:1/asleep",  # not a node problem
    "node:1/silent/again",
    "LANE:A1",
    "shelf:A1",
    "A1",
]


@pytest.mark.parametrize("key", MALFORMED)
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidCause):
        Cause.parse(key)
    assert Cause.parse_or_none(key) is None


def test_constructors_refuse_what_they_could_not_store() -> None:
    for build in (
        lambda: Cause.lane("A/1"),  # a lane id never holds a "/": the key could not be parsed back
        lambda: Cause.lane(""),
        lambda: Cause.lane_sku("A1", ""),
        lambda: Cause.lane_sku("A1", "x" * 33),
        lambda: Cause.lane_problem("A1", "asleep"),
        lambda: Cause.of_sku("\n"),
        lambda: Cause.node(-1),
        lambda: Cause.node(True),
        lambda: Cause.node_problem(1, STUCK),
    ):
        with pytest.raises(InvalidCause):
            build()
    assert issubclass(InvalidCause, ValueError)
