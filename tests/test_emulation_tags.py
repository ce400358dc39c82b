"""Tagged items in the emulation: the SGTIN-96 encoder (tools/emulation/epc.py) against the GS1 Tag Data Standard's
example and epcpy, the scenarios' tags (spans that follow picks, puts, misplaced items and substitutions; the
truth's ``epcs``), the reader wiring and firmware config of a tagged node, and the emulated board's ``uart`` /
``pin_out`` (on both runtimes, and with the store scenario's own plan)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

import pytest
from epcpy.epc_schemes.sgtin import SGTIN, SGTINFilterValue

from firmware import config as node_config
from tools.emulation.board import EmulatedBoard
from tools.emulation.epc import (
    SERIAL_MAX,
    check_digit,
    decode_sgtin96,
    gtin14,
    pure_identity_uri,
    sgtin96,
    tag_uri,
)
from tools.emulation.physics import LanePhysics
from tools.emulation.scenarios import CATALOG, LAYOUTS, LaneSetup, ScenarioBuilder, TruthRow, build
from tools.emulation.store import expected_outcome
from tools.emulation.uhf_module import CMD_INVENTORY, TagField, command, decode

# -- SGTIN-96 ------------------------------------------------------------------------------------------


def test_sgtin96_matches_the_tag_data_standard_example() -> None:
    # GS1 EPC TDS: urn:epc:tag:sgtin-96:3.0614141.812345.6789 = 3074257BF7194E4000001A85 (GTIN 80614141123458)
    epc = sgtin96("80614141123458", 7, 6789, filter_value=3)
    assert epc == "3074257bf7194e4000001a85"
    assert tag_uri(epc) == "urn:epc:tag:sgtin-96:3.0614141.812345.6789"
    assert pure_identity_uri(epc) == "urn:epc:id:sgtin:0614141.812345.6789"
    d = decode_sgtin96(epc.upper())
    assert d == {"filter": 3, "company_prefix": "0614141", "item_ref": "812345", "serial": 6789,
                 "gtin": "80614141123458"}  # fmt: skip


def test_gtin_check_digits() -> None:
    assert check_digit("8061414112345") == 8
    assert check_digit("400638133393") == 1  # EAN-13 4006381333931
    assert gtin14("4006381333931") == "04006381333931"
    assert gtin14("96385074") == "00000096385074"  # GTIN-8
    for bad in ("4006381333932", "12345", "40063813339a1", ""):
        with pytest.raises(ValueError):
            gtin14(bad)


@pytest.mark.parametrize("cpl", range(6, 13))
def test_sgtin96_agrees_with_epcpy_for_every_partition(cpl: int) -> None:
    rng = random.Random(cpl)
    for _ in range(40):
        body = str(rng.randrange(10**13)).zfill(13)
        gtin = body + str(check_digit(body))
        serial = rng.choice((0, 1, SERIAL_MAX, rng.randrange(SERIAL_MAX)))
        filt = rng.randrange(8)
        epc = sgtin96(gtin, cpl, serial, filt)
        theirs = SGTIN.from_gtin_plus_serial(gtin, str(serial), cpl)
        want = theirs.hex(binary_coding_scheme=SGTIN.BinaryCodingScheme.SGTIN_96,
                          filter_value=SGTINFilterValue(str(filt)))  # fmt: skip
        assert epc == want.lower(), (gtin, cpl, serial, filt)
        decoded = SGTIN.from_hex(epc.upper())
        assert decoded.gtin() == gtin and decoded.epc_uri == pure_identity_uri(epc)
        assert decoded.tag_uri(SGTIN.BinaryCodingScheme.SGTIN_96, SGTINFilterValue(str(filt))) == tag_uri(epc)
        d = decode_sgtin96(epc)
        assert (d["gtin"], d["serial"], d["filter"], len(d["company_prefix"])) == (gtin, serial, filt, cpl)


def test_sgtin96_rejects_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="serial"):
        sgtin96("80614141123458", 7, SERIAL_MAX + 1)
    with pytest.raises(ValueError, match="company prefix"):
        sgtin96("80614141123458", 5, 1)
    with pytest.raises(ValueError, match="check digit"):
        sgtin96("80614141123459", 7, 1)
    with pytest.raises(ValueError, match="filter"):
        sgtin96("80614141123458", 7, 1, 8)
    with pytest.raises(ValueError, match="not an SGTIN-96"):
        decode_sgtin96("3574257bf7194e4000001a85")


# -- the scenarios' tags ---------------------------------------------------------------------------------


MS = 0.001  # span times are rounded to the millisecond


def _tags_by_epc(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["epc"]: t for t in plan.get("rfid", {}).get("tags", [])}


def _expected_on_lanes(rows: list[TruthRow], node: int) -> dict[int, list[tuple[float, str, str]]]:
    """Per lane, the tag changes the truth describes: (time, '+'/'-', epc)."""
    out: dict[int, list[tuple[float, str, str]]] = defaultdict(list)
    for r in rows:
        if r.node != node:
            continue
        sign = "-" if r.action in ("pick", "theft", "substitution") else "+"
        if r.action in ("damage", "press"):
            continue
        for e in r.epcs:
            out[r.lane].append((r.t, sign, e))
    return out


@pytest.mark.parametrize(("name", "seed"), [("store", 1), ("shoppers", 4)])
def test_tag_spans_follow_the_truth(name: str, seed: int) -> None:
    sc = build(name, [1, 2, 3, 4], seed=seed, duration_s=900, tagged=True)
    all_epcs: list[str] = []
    for nid, node in sc.nodes.items():
        plan = node.plan()
        tags = _tags_by_epc(plan)
        all_epcs += list(tags)
        tagged_lanes = {i for i, setup in enumerate(node.lanes) if setup.sku.gtin}
        assert node.tagged == bool(tagged_lanes) and ("rfid" in plan) == bool(tagged_lanes)
        assert tagged_lanes == ({1, 3} if nid in (1, 4) else set())  # chips and coffee: layout 0
        rows = [r for r in sc.truth if r.node == nid]
        for r in rows:
            if r.action == "initial":
                assert len(r.epcs) == (r.units if r.lane in tagged_lanes else 0)
            for e in r.epcs:
                d = decode_sgtin96(e)
                assert d["filter"] == 1 and len(d["company_prefix"]) == 7
                sku = r.item_sku or r.sku
                assert d["gtin"] == CATALOG[sku].gtin, r
                spans = tags[e]["spans"]
                if r.action in ("pick", "theft", "substitution"):
                    # the tag left the lane while the hand was there
                    assert any(s[0] == r.lane and s[2] is not None and r.t - MS <= s[2] <= r.t_end for s in spans), r
                elif r.action in ("put_back", "restock", "misplaced"):
                    assert any(s[0] == r.lane and r.t - MS <= s[1] <= r.t_end for s in spans), r
        # the plan's field, evaluated where nothing moves, holds exactly the tags the truth puts on each lane
        field = TagField(plan.get("rfid", {}).get("tags", []))
        changes = _expected_on_lanes(rows, nid)
        for lane in tagged_lanes | {0, 2}:
            # between two actions on the lane (they are at least GAP_S = 4 s apart): nothing in anyone's hand
            for t in sorted({round(r.t_end + 2.0, 3) for r in rows if r.lane == lane} | {1.0}):
                present: set[str] = set()
                for tc, sign, e in sorted(changes.get(lane, [])):
                    if tc <= t:
                        present = present | {e} if sign == "+" else present - {e}
                assert set(field.on_lane(lane, t)) == present, (nid, lane, t)
    assert len(all_epcs) == len(set(all_epcs))  # serials are unique across the store


def test_store_story_tags_the_misplaced_chips_and_the_substituted_coffee() -> None:
    sc = build("store", [1, 2], seed=1)
    story = {r.action: r for r in sc.truth if r.node == 1 and r.t < 170}
    mis = story["misplaced"]
    assert mis.lane == 0 and mis.item_sku == "CHIPS-150" and len(mis.epcs) == 1  # its tag is on the cola lane now
    sub = story["substitution"]
    assert (sub.lane, sub.sku, sub.units, sub.paid_units) == (3, "COFFEE-250", 0, None)
    assert abs(sub.grams) <= 1.0 and len(sub.epcs) == 1 and sub.t == pytest.approx(160.0)
    coffee = [r for r in sc.truth if r.node == 1 and r.lane == 3 and r.t <= sub.t]
    assert sub.stock_after == coffee[-2].stock_after == 12  # the weight still counts 12 coffees
    tags = _tags_by_epc(sc.nodes[1].plan())
    assert tags[sub.epcs[0]]["spans"][-1][2] is not None  # gone
    assert sc.nodes[2].plan().get("rfid") is None  # node 2's layout has no tagged SKU
    assert sc.nodes[1].rfid_config() is not None and sc.nodes[2].rfid_config() is None


def test_expected_outcome_names_the_tags_on_each_lane_and_the_substituted_one() -> None:
    sc = build("store", [1, 2], seed=1)
    sub = next(r for r in sc.truth if r.action == "substitution")
    mis = next(r for r in sc.truth if r.action == "misplaced")
    before = expected_outcome(sc.truth, sub.t - 1.0)
    after = expected_outcome(sc.truth, sub.t_end + 1.0)
    assert sub.epcs[0] in before.tags["node1-lane3"] and sub.epcs[0] not in after.tags["node1-lane3"]
    assert after.substituted == {("node1-lane3", sub.epcs[0])} and not before.substituted
    assert after.counts["node1-lane3"] == before.counts["node1-lane3"]  # the weight's count does not move
    # the weight raises nothing; the tag that left with no weight change is the hub's tamper alert
    assert after.alerts == before.alerts | {("tamper", "lane:node1-lane3/COFFEE-250")}
    assert mis.epcs[0] in after.tags["node1-lane0"]  # the misplaced chips' tag is on the cola lane
    assert after.tags["node2-lane0"] == set()
    field = TagField(sc.nodes[1].plan()["rfid"]["tags"])
    for lane in range(4):
        assert set(field.on_lane(lane, sub.t_end + 1.0)) == after.tags[f"node1-lane{lane}"]


def test_substitution_keeps_the_weight_and_removes_one_tag() -> None:
    b = ScenarioBuilder([1], seed=9, start_s=5.0, tagged=True)
    first = b.pick(1, 3, 5.0, 2, paid=False)
    sub = b.substitution(1, 3, 12.0)
    after = b.pick(1, 3, 20.0, 1)
    sc = b.build("t")
    assert len(first.epcs) == 2 and len(sub.epcs) == 1 and sub.epcs[0] not in first.epcs
    assert (sub.units, sub.stock_after) == (0, first.stock_after) and abs(sub.grams) <= 1.0
    plan = sc.nodes[1].plan()
    spec = dict(plan["lanes"][3], creep=[0.0, 600.0, 0.0])
    phys = LanePhysics(spec)
    t = 0.0
    before_g = mid_max = 0.0
    while t < 30.0:
        g = phys.mean(t, 0.0125, 4)
        if first.t_end + 1.0 <= t < sub.t:
            before_g = g
        if sub.t <= t <= sub.t_end:
            mid_max = max(mid_max, abs(g - before_g))
        if t >= sub.t_end + 1.0 and t < after.t:
            assert abs(g - before_g - sub.grams) < 1e-6  # the stand-in weighs what the coffee weighed, within 1 g
        t += 0.0125
    assert mid_max > 100.0  # a hand visit the weight sees, with no net change
    field = TagField(plan["rfid"]["tags"])
    on_lane = set(field.on_lane(3, sub.t_end + 1.0))
    assert sub.epcs[0] not in on_lane and len(on_lane) == 7 - 2 - 1
    # a lane without tags cannot have a tag swapped out
    with pytest.raises(ValueError, match="no tagged unit"):
        b.substitution(1, 0, 40.0)


def test_put_back_brings_the_same_tags_back() -> None:
    b = ScenarioBuilder([1], seed=5, start_s=5.0, tagged=True)
    pick = b.pick(1, 1, 5.0, 3)
    back = b.put_back(pick, 12.0, 2)
    assert len(pick.epcs) == 3 and len(back.epcs) == 2 and set(back.epcs) <= set(pick.epcs)
    sc = b.build("t")
    tags = _tags_by_epc(sc.nodes[1].plan())
    for e in back.epcs:
        (lane0, on0, off0), (lane1, on1, off1) = tags[e]["spans"]
        assert (lane0, on0, lane1, off1) == (1, 0.0, 1, None) and pick.t < off0 < back.t <= on1 <= back.t_end
    row = json.loads(back.to_json(0.0))
    assert row["epcs"] == back.epcs and "taken_epcs" not in row


def test_tags_are_off_unless_asked_for_and_on_in_the_store() -> None:
    for sc in (build("idle", [1]), build("shoppers", [1], duration_s=200), ScenarioBuilder([1]).build("t")):
        assert not sc.nodes[1].tagged and "rfid" not in sc.nodes[1].plan() and sc.nodes[1].rfid_config() is None
        assert all(r.epcs == [] for r in sc.truth)
    assert build("store", [1]).nodes[1].tagged and not build("store", [1], tagged=False).nodes[1].tagged
    with pytest.raises(ValueError, match="no tagged unit"):
        ScenarioBuilder([1]).substitution(1, 3, 20.0)
    with pytest.raises(ValueError, match="tags off"):
        ScenarioBuilder([1]).stray(1, 2)


def test_stray_tags_sit_on_the_next_shelf_of_tagged_nodes_only() -> None:
    sc = build("idle", [1, 2], stray=3, tagged=True)
    strays = [t for t in sc.nodes[1].plan()["rfid"]["tags"] if t["spans"][0][0] is None]
    assert len(strays) == 3 and all(decode_sgtin96(t["epc"])["gtin"] == CATALOG["RAZOR-5"].gtin for t in strays)
    assert sc.nodes[2].plan().get("rfid") is None
    assert not any(r.epcs and r.sku == "RAZOR-5" for r in sc.truth)  # on no lane: no truth rows
    with pytest.raises(ValueError, match="stray"):
        build("idle", [1], stray=-1)


# -- wiring and config --------------------------------------------------------------------------------


def test_the_reader_wiring_avoids_the_cells_pins_and_the_config_validates() -> None:
    chips, coffee = CATALOG["CHIPS-150"], CATALOG["COFFEE-250"]
    crowded = (tuple(LaneSetup(sku, 5, 1, cells=4) for sku in (chips, coffee, chips, coffee)),)
    for layouts in (LAYOUTS, crowded):
        node = ScenarioBuilder([1], seed=2, layouts=layouts, tagged=True).build("t").nodes[1]
        w = node.rfid_wiring()
        cfg = node.rfid_config()
        assert w is not None and cfg is not None
        cell_pins = {p for cells in node.pins() for pair in cells for p in pair}
        reader_pins = [w["tx"], w["rx"], *w["switch"]]
        assert not cell_pins & set(reader_pins) and len(set(reader_pins)) == len(reader_pins) == 4
        assert w["antennas"] == [0, 1, 2, 3]
        assert cfg == {
            "readers": [{"uart": 1, "tx": w["tx"], "rx": w["rx"], "baud": 115200, "region": "eu", "power_dbm": 20,
                         "switch": w["switch"], "antennas": [0, 1, 2, 3]}],
            "seen_n": 2, "window_ms": 3000, "lost_s": 10,
        }  # fmt: skip
        text = node_config.dumps(1, bytes(range(32)), node.config_lanes(), rfid=cfg)
        assert json.loads(text)["rfid"] == cfg  # the firmware's own validation accepts it (pins used once)
    store = build("store", [1]).nodes[1].rfid_config()
    assert store is not None and store["readers"][0] | {} == {
        "uart": 1, "tx": 17, "rx": 16, "baud": 115200, "region": "eu", "power_dbm": 20, "switch": [25, 26],
        "antennas": [0, 1, 2, 3],
    }  # fmt: skip


# -- the emulated board ----------------------------------------------------------------------------------


def test_board_uart_and_pin_out_follow_the_plan(runtime: Any) -> None:
    r = runtime.call("tests.portable.uhf_cases", "board_reader", timeout_s=120)
    assert r["same_pin"] and r["module_pins"] and r["module_uart"] and r["other_pin"]
    assert r["t0.5_lane0"] == ["3074257bf7194e4000008000"] and r["t0.5_lane3"] == ["15"]  # "15": no tag
    assert r["t2.5_lane0"] == ["15"] and r["t2.5_lane3"] == ["3074257bf7194e4000008003"]
    assert r["swapped_pins"] == [] and r["other_uart"] == []  # nothing wired there: never answers
    assert r["wrong_baud"] == [] and r["right_baud"] == ["3074257bf7194e4000008003"]
    assert r["clock_s"] == 2  # the module runs on the board's clock, which follows the wall clock


def test_the_store_board_reads_the_coffee_lane_and_misses_the_substituted_tag() -> None:
    sc = build("store", [1], seed=1)
    sub = next(r for r in sc.truth if r.action == "substitution")
    initial = next(r for r in sc.truth if r.action == "initial" and r.lane == 3)
    wall = [5000]
    board = EmulatedBoard(sc.nodes[1].plan(), None, lambda: wall[0])
    w = sc.nodes[1].rfid_wiring()
    assert w is not None
    uart = board.uart(w["uart"], w["tx"], w["rx"], w["baud"])
    pins = [board.pin_out(p) for p in w["switch"]]

    def reads_on(lane: int, rounds: int) -> set[str]:
        pins[0].value(lane & 1)
        pins[1].value(lane >> 1)
        seen: set[str] = set()
        for _ in range(rounds):
            uart.write(command(CMD_INVENTORY))
            data = bytearray()
            for _ in range(30):
                wall[0] += 2
                data += uart.read() or b""
            seen |= {p[3:15].hex() for t, _c, p, ok in decode(bytes(data)) if t == 2 and ok}
        return seen

    early = reads_on(3, 20)
    assert set(initial.epcs) <= early  # every coffee of the opening stock, within 20 rounds
    wall[0] = int((sub.t_end + 5.0) * 1000)
    late = reads_on(3, 20)
    assert sub.epcs[0] not in late and sub.epcs[0] in early
    truth_now = set(TagField(sc.nodes[1].plan()["rfid"]["tags"]).on_lane(3, wall[0] / 1000))
    assert late <= truth_now | set(TagField(sc.nodes[1].plan()["rfid"]["tags"]).on_lane(2, wall[0] / 1000))
