"""`smartshelf bench rfid` end to end with a tiny plan (tools/bench/rfid.py): the real firmware on virtual time, two
real hubs (weight alone, weight + RFID), the reconciler, and the sampler's real-time runs under MicroPython and
CPython. The figures' structure and sanity are checked, never their values (the machine is shared); one relation
is asserted because it holds by construction: only the tags can see a substitution, so weight alone raises no
tamper alert and weight + RFID finds at least one of this seed's."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from shared_protocol.auth import Key
from shared_protocol.frame import UplinkReceiver
from shared_protocol.messages import Message
from tools.bench import rfid
from tools.cli import BENCH_TARGETS

TINY = rfid.Plan(scenarios=2, active_s=180.0, mean_gap_s=30.0, sampler_s=4.0)
SEED = 3  # two scenarios with three substitutions among their incidents


@pytest.mark.slow
@pytest.mark.micropython
@pytest.mark.usefixtures("emulated_boards")  # the sampler's MicroPython runs: Node.js and the npm runtime
def test_the_rfid_bench_scores_both_sides_and_measures_the_sampler_with_and_without_the_reader(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = rfid.run(seed=SEED, plan=TINY)
    out = capsys.readouterr().out
    assert "rfid" in BENCH_TARGETS
    json.dumps(report)  # --json can print it
    s = report["alerts"]
    assert s["scenarios"] == TINY.scenarios and len(report["scenarios"]) == TINY.scenarios
    weight, tags = s["weight"]["alerts"], s["rfid"]["alerts"]
    for kind in (*rfid.SCORED, "all"):
        w, f = weight[kind], tags[kind]
        assert w["expected"] == f["expected"]  # one ground truth for both sides
        for side in (w, f):
            assert 0 <= side["evidence_names_cause"] <= side["matched"] <= min(side["raised"], side["expected"])
            for figure in ("precision", "recall"):
                assert side[figure] is None or 0.0 <= side[figure] <= 1.0
    # a substitution leaves the weight as it was: weight alone cannot raise tamper, the tags find one at least
    assert tags["tamper"]["expected"] >= 1
    assert weight["tamper"]["raised"] == 0 and weight["tamper"]["recall"] == 0.0
    assert tags["tamper"]["recall"] > weight["tamper"]["recall"]
    assert s["weight"]["tag_verdicts"] == {} and sum(s["rfid"]["tag_verdicts"].values()) > 0
    for r in report["scenarios"]:
        assert r["rfid"]["frames"] > r["weight"]["frames"]  # the same frames, tag records and reader health apart
        assert r["node"]["frames"]["tag_seen"] > 0 and r["node"]["missed"] == 0  # virtual time: never late
    assert s["node"]["tag_records"] > 0 and s["node"]["reader_reads"] > 0
    assert sum(s["truth_actions"].values()) > 0 and s["truth_actions"].get("substitution", 0) >= 1
    # the sampler's runs: both runtimes, both sides, the reader read tags only where it was configured
    sc = report["sampler"]
    for runtime in ("micropython", "cpython"):
        part = sc[runtime]
        assert "error" not in part, part
        w, wo = part["with_reader"], part["without_reader"]
        for run in (w, wo):
            assert run["conversions"] > 0 and 0 <= run["missed"] <= run["conversions"]
            assert run["elapsed_s"] >= TINY.sampler_s * 0.9 and run["sampler"]["calls"] > 0
            assert run["missed_per_hour"] is not None and run["missed_per_hour"] >= 0
        assert w["reads_per_s"] > 0 and w["poller"]["calls"] > 0 and w["reader"]["reads"] > 0
        assert wo["reader"] is None and wo["poller"]["calls"] == 0 and wo["reads"] == 0
        assert 0 <= w["poller_own"]["total_ms"] <= w["poller"]["total_ms"]
        assert set(part["ratios"]) == {"missed", "sampler_busy", "sampler_interval_p99", "sampler_interval_max"}
    for line in (
        "alert kind   expected  weight: raised",
        "tamper",
        "sampler cost, real time",
        "are not an ESP32",
        "MicroPython (WebAssembly), with reader",
        "CPython, without reader",
    ):
        assert line in out, out


def test_weight_alone_is_what_a_node_without_a_reader_sends() -> None:
    """The weight-alone stream (tag records left out, the rest renumbered and signed again) holds the same events
    and lane states, numbered the same, as the same node without its reader sends on the same physics."""
    plan = rfid.Plan(scenarios=1, active_s=40.0, mean_gap_s=10.0, sampler_s=1.0)
    scenario, spec = rfid.make_scenario(SEED, 0, plan)
    with tempfile.TemporaryDirectory() as d:
        tagged = rfid.run_node(scenario, spec.node_end_s, str(Path(d) / "a"))
        plain = rfid.run_node(scenario, spec.node_end_s, str(Path(d) / "b"), with_reader=False)
    assert any(u.msg.NAME == "tag_seen" for u in tagged.uplinks)
    rx = UplinkReceiver({rfid.NODE: Key(rfid.KEY)})
    alone = [rx.accept(raw).message for _, raw in rfid.weight_only(tagged.uplinks)]  # signed, seq increasing
    assert not {m.NAME for m in alone} & set(rfid.TAG_MESSAGES)

    def kept(messages: list[Message]) -> list[dict[str, Any]]:
        return [m.to_dict() for m in messages if m.NAME in ("event", "lane_state")]

    events = [m for m in kept(alone) if m["type"] == "event"]
    assert events and [e["event_seq"] for e in events] == list(range(1, len(events) + 1))
    assert kept(alone) == kept([u.msg for u in plain.uplinks])
