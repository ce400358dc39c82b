"""Hardware-in-the-loop under faults: exactly once, whatever the line and the hub go through.

Two emulated nodes (the real firmware under MicroPython, each on its own pty) play the ``shoppers`` scenario.
Between each node and the hub sits a ``FaultRelay`` (tests/faults/relay.py) that drops, duplicates, bit-flips,
pads with garbage and delays uplink bytes, and drops, corrupts, duplicates and delays downlink lines (acks).
The hub is the real ``smartshelf hub run`` subprocess on a SQLite ledger; it is SIGKILLed four times and
restarted on the same database: twice inside a ledger commit that books node events
(``tests/faults/commit_kill.py``: once while the COMMIT runs, once right after it returned, before any ack left),
twice at seeded random moments (the last one after the shoppers left, while retransmissions drain). During one
outage node 1 is killed while its flash outbox holds events the hub never acknowledged; the emulator restarts it
on the same flash and the outbox must be re-sent (age unknown) and booked once. After the last restart the relay
injects forged event frames (right framing, wrong key) and verbatim replays of earlier event frames.

Checked once everything has settled:

* every lane's observed stock in the ledger equals the ground truth (last ``stock_after`` per lane);
* one movement per (node, event_seq); per node the sensor movements are exactly event_seq 1..N with N the
  hub's contiguous mark and the node's own ``next_seq - 1`` on flash, and N equals the truth's countable
  actions (pick, put_back, restock, theft); the only sensor gaps are the first report of each lane;
* the rebooted node's pre-reboot events were re-sent after the reboot and applied once;
* the hub counted corrupted frames (garbage chunks, rejects) and every forged (bad_tag) and replayed
  (replay) frame, and no forged event reached the ledger.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    FORGED_EVENT_SEQ,
    FORGED_WEIGHT_DG,
    HubProcess,
    forged_frame,
    node_outbox,
    observed_stock,
    query,
    rebuilt_on_flash,
    seed,
    tear_last_record,
    unacked_on_flash,
    write_hub_config,
)
from tests.faults.harness import (
    contiguous as harness_contiguous,
)
from tests.faults.relay import FaultRelay, Faults
from tests.faults.rig import Rig, shelf_quiet, shoppers, status_nodes
from tools.emulation.host import Emulator
from tools.emulation.scenarios import FIRST_ACTION_S, ScenarioBuilder
from tools.emulation.store import expected_outcome, lane_id

SEED = 7
NODES = [1, 2]
SHOPPING_S = 70.0
REBOOTED = 1
EVENT_ACTIONS = {"pick", "put_back", "restock", "theft", "damage", "misplaced"}
# Per uplink chunk / downlink line; every kind is applied at least once per relay (ensure_after).
UP = Faults(drop=0.05, flip=0.05, garbage=0.05, dup=0.05, delay=0.06, delay_s=(0.1, 2.0), ensure_after=15)
DOWN = Faults(drop=0.06, flip=0.05, dup=0.05, delay=0.06, delay_s=(0.1, 1.5), ensure_after=4)
FORGED = 5
REPLAYED = 5
SETTLE_TIMEOUT_S = 120.0


@pytest.mark.slow
def test_exactly_once_under_line_faults_hub_kills_and_node_reboot(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    scenario = shoppers(NODES, SEED, SHOPPING_S)
    db = tmp_path / "ledger.db"
    seed(db, scenario)
    rig = Rig(tmp_path)
    emu = Emulator(NODES, scenario, tmp_path / "emu", seed=SEED, fresh=True, out=rig.note)
    rig.emu = emu
    try:
        emu.start()
        for node in emu.nodes:
            relay = FaultRelay(node.port, tmp_path / f"relay-{node.node_id}", SEED * 100 + node.node_id, UP, DOWN)
            relay.start()
            rig.relays[node.node_id] = relay
        cfg = write_hub_config(tmp_path, db, [(n.node_id, n.key, rig.relays[n.node_id].link) for n in emu.nodes])
        hub = HubProcess(cfg, tmp_path / "hub.log", commit_faults=True)
        rig.hub = hub
        hub.start()
        by_id = {n.node_id: n for n in emu.nodes}

        def contiguous(nid: int) -> int:
            return harness_contiguous(db, nid)

        last_start = {"t": 0.0}

        def outage(at: float, down_s: float, reboot: bool = False, in_commit: str = "") -> None:
            # A kill at a random moment (or inside the next commit of events after it), but never before the hub has
            # had a few seconds to come up again.
            rig.until_elapsed(max(at, last_start["t"] + rng.uniform(4.0, 8.0)))
            if in_commit:
                hub.arm_commit_kill(in_commit)
                rig.wait(lambda: not hub.running(), 60.0, f"the hub to die {in_commit} a commit of events")
                hub.killed_in_commit()
            else:
                hub.kill()
            where = f", {in_commit} a commit" if in_commit else ""
            rig.note(f"hub SIGKILLed at {emu.elapsed():.1f} s (kill {hub.kills}{where})")
            if reboot:
                node = by_id[REBOOTED]
                # Reboot mid-outbox: wait until the node's flash holds events the hub has not acknowledged, at a
                # moment when its shelf is quiet (a pick while the board is off or booting is lost to any firmware).
                rig.wait(
                    lambda: (
                        unacked_on_flash(node.flash_dir, contiguous(REBOOTED)) >= 2
                        and shelf_quiet(scenario, REBOOTED, emu.elapsed())
                    ),
                    60.0,
                    "unacknowledged events in node 1's outbox, its shelf quiet",
                )
                pending = unacked_on_flash(node.flash_dir, contiguous(REBOOTED))
                proc = node.process
                assert proc is not None and proc.proc is not None
                proc.proc.kill()
                rig.note(f"node {REBOOTED} killed at {emu.elapsed():.1f} s with {pending} unacked event(s)")
                rig.wait(lambda: node.restarts >= 1 and node.process is not None, 30.0, "the node's restart")
                rig.note(f"node {REBOOTED} restarted at {emu.elapsed():.1f} s")
            rig.sleep(down_s)
            hub.start()
            last_start["t"] = emu.elapsed()
            rig.note(f"hub restarted at {emu.elapsed():.1f} s")

        # Four SIGKILLs: inside a commit (during it), at a seeded random moment with the node reboot, inside a commit
        # (right after it), and at a random moment after shopping.
        outage(rng.uniform(14.0, 22.0), rng.uniform(1.0, 4.0), in_commit="during")
        t_reboot = rng.uniform(30.0, 38.0)
        outage(t_reboot, rng.uniform(2.0, 4.0), reboot=True)
        outage(rng.uniform(50.0, 60.0), rng.uniform(1.0, 4.0), in_commit="after")
        outage(SHOPPING_S + rng.uniform(1.0, 5.0), rng.uniform(1.0, 3.0))

        # After the last restart: forged and replayed frames, once the hub talks to both nodes again.
        def both_up() -> bool:
            nodes = status_nodes(hub.status())
            return sorted(nodes) == NODES and all(n.get("up") for n in nodes.values())

        rig.wait(both_up, 90.0, "both nodes up", step_s=1.0)
        for i in range(FORGED):
            nid = NODES[i % len(NODES)]
            rig.relays[nid].inject(forged_frame(nid, 0x7FFF0000 + i, FORGED_EVENT_SEQ + i))
            rig.sleep(0.3)
        replayed = 0
        for i in range(REPLAYED):
            if rig.relays[NODES[i % len(NODES)]].replay_event(5.0) is not None:
                replayed += 1
            rig.sleep(0.3)
        assert replayed == REPLAYED, "the relay had no earlier event frame to replay"
        rig.note(f"injected {FORGED} forged and {replayed} replayed frames")

        # Settle: the whole truth is in, the ledger shows it, and every node's events are contiguous.
        end_s = max(r.t_end for r in scenario.truth) + 1.0
        rig.until_elapsed(end_s)
        exp = expected_outcome(scenario.truth, end_s)
        want = {lid: units for lid, (_sku, units) in exp.counts.items()}

        stable: dict[str, Any] = {"sig": None, "since": 0.0}

        def settled() -> bool:
            if observed_stock(db) != want:
                return False
            sig = query(db, "SELECT count(*), max(id) FROM movements")[0]
            marks = tuple(contiguous(n) for n in NODES)
            if (sig, marks) != stable["sig"]:
                stable["sig"], stable["since"] = (sig, marks), time.monotonic()
                return False
            return bool(time.monotonic() - stable["since"] >= 4.0)

        rig.wait(settled, SETTLE_TIMEOUT_S, "the ledger to equal the ground truth and stay still", step_s=0.5)
        rig.note(f"settled at {emu.elapsed():.1f} s")
        final = hub.status()
        assert final is not None, rig.report()
        report = rig.report()
        (tmp_path / "final-status.json").write_text(json.dumps(final, indent=1, sort_keys=True))
        (tmp_path / "report.txt").write_text(report)

        # (a) observed stock per lane equals the truth.
        assert observed_stock(db) == want, report

        # (b) exactly once: one movement per (node, event_seq); events 1..N with N = mark = node's count = truth.
        dupes = query(
            db,
            "SELECT node_id, event_seq, count(*) FROM movements WHERE event_seq IS NOT NULL"
            " GROUP BY node_id, event_seq HAVING count(*) > 1",
        )
        assert dupes == [], report
        truth_events = Counter(r.node for r in scenario.truth if r.action in EVENT_ACTIONS)
        for nid in NODES:
            seqs = [
                int(s)
                for (s,) in query(
                    db,
                    "SELECT event_seq FROM movements WHERE node_id = ? AND event_seq IS NOT NULL ORDER BY event_seq",
                    (nid,),
                )
            ]
            mark = contiguous(nid)
            assert seqs == list(range(1, mark + 1)), (nid, seqs, mark, report)
            assert mark == truth_events[nid], (nid, mark, truth_events, report)
            assert max((s for s in seqs), default=0) < FORGED_EVENT_SEQ
        gaps = query(db, "SELECT node_id, location, qty, source_ref FROM movements WHERE reason = 'sensor_gap'")
        first_reports = Counter(str(loc) for _n, loc, _q, _ref in gaps)
        assert all(c == 1 for c in first_reports.values()), (gaps, report)
        assert len(gaps) == sum(len(scenario.nodes[n].lanes) for n in NODES), (gaps, report)
        forged_rows = query(db, "SELECT id FROM movements WHERE weight_delta_dg = ?", (FORGED_WEIGHT_DG,))
        assert forged_rows == [], report

        # The rebooted node re-sent its outbox after the reboot (events of an earlier boot: age unknown).
        resent = query(
            db, "SELECT count(*) FROM movements WHERE node_id = ? AND note LIKE 'age unknown%'", (REBOOTED,)
        )[0][0]
        assert resent >= 1, report

        # (c), (d) the last hub counted what the relay mangled, forged and replayed, and applied none of it.
        nodes = status_nodes(final)
        for nid in NODES:
            assert nodes[nid]["contiguous_event_seq"] == contiguous(nid), (nodes[nid], report)
        rejected: Counter[str] = Counter()
        for n in nodes.values():
            rejected.update(n["rejected"])
        forged_seen = sum(int(n["forged_frames"]) for n in nodes.values())
        assert forged_seen >= FORGED, (dict(rejected), forged_seen, report)
        assert rejected["bad_tag"] >= FORGED, (dict(rejected), report)
        assert rejected["replay"] >= REPLAYED, (dict(rejected), report)
        # Corrupted frames: every hub incarnation logs the first reject of each kind; the relay's bit flips,
        # truncations and garbage show up as rejects other than the injected forged frames.
        hub_log = (tmp_path / "hub.log").read_text(errors="replace")
        rejects = re.findall(r"rejected a frame \(node (\S+), seq (\S+)\): (\w+)", hub_log)
        mangled = [r for r in rejects if r[2] != "replay" and not (r[1].isdigit() and int(r[1]) >= 0x7FFF0000)]
        assert mangled, report
        stats = {nid: r.stats for nid, r in rig.relays.items()}
        for s in stats.values():
            assert s.dropped and s.flipped and s.garbage and s.duplicated and s.delayed, (s, report)
            assert s.down_dropped and s.down_corrupted and s.down_duplicated and s.down_delayed, (s, report)
        assert hub.kills == 4 and hub.commit_kills == 2 and hub.starts == 5
        assert hub_log.count("commit kill: ") == 2, report  # each announced itself from inside the commit

        # The node's own record (its flash) agrees: it produced exactly the events the ledger holds.
        rc = hub.stop()
        rig.hub = None
        assert rc == 0, report
        emu.stop(quiet=True)
        for node in emu.nodes:
            box = node_outbox(node.flash_dir, tmp_path / f"outbox-copy-{node.node_id}")
            assert box.next_seq - 1 == contiguous(node.node_id), (node.node_id, box.next_seq, report)
            assert box.dropped == 0, report
    finally:
        if rig.hub is not None:
            rig.hub.stop()
        for relay in rig.relays.values():
            relay.stop()
        emu.stop(quiet=True)


OVERFLOW_NODE = 3
OUTBOX = 4  # records the node keeps (its config's "outbox"): 7 picks while no hub listens overflow it
PICKS = 7
TORN_CUT = 9  # bytes of the last journal record that never reached flash (of 22)


@pytest.mark.slow
def test_a_full_outbox_books_exactly_the_lost_units_and_a_torn_journal_record_is_dropped(tmp_path: Path) -> None:
    """One emulated node (the real firmware) whose outbox holds 4 records, and no hub yet: shoppers take 7 units,
    one per pick, and the outbox drops the oldest records. The last pick is being journalled when the node loses
    power (``tear_last_record``). The node boots again: the journal's CRC rejects the torn record and the counters are
    rebuilt from their checkpoint and the journal (the torn pick is lost to the node: it never finished recording
    it). The hub comes: it books the held events once and, from the lane counters, each lane's opening stock plus a
    sensor gap of exactly the units of the events the full outbox dropped; the ledger then equals the node's
    counters, which are the truth less the torn pick."""
    b = ScenarioBuilder([OVERFLOW_NODE], SEED)
    lanes = len(b.lanes[OVERFLOW_NODE])
    for k in range(PICKS):  # two rounds over the lanes, in lane order: events 1..7 in this order
        b.pick(OVERFLOW_NODE, k % lanes, FIRST_ACTION_S + (k % lanes) * 0.8, 1)
    scenario = b.build("overflow")
    scenario.nodes[OVERFLOW_NODE].config = {"outbox": OUTBOX, "intervals": {"health_s": 5}}
    picks = sorted((r for r in scenario.truth if r.action == "pick"), key=lambda r: r.t_end)
    initial = {r.lane: r.units for r in scenario.truth if r.action == "initial"}
    truth = {r.lane: r.stock_after for r in scenario.truth}
    assert len(picks) == PICKS
    db = tmp_path / "ledger.db"
    seed(db, scenario)
    rig = Rig(tmp_path)
    emu = Emulator([OVERFLOW_NODE], scenario, tmp_path / "emu", seed=SEED, fresh=True, out=rig.note)
    rig.emu = emu
    try:
        emu.start()
        node = emu.nodes[0]

        # The shoppers take 7 units while nobody acknowledges; the last pick's record is torn by a power cut.
        rig.wait(lambda: node_outbox_next(node.flash_dir, tmp_path) > PICKS, 90.0, "the 7 picks journalled")
        proc = node.process
        assert proc is not None and proc.proc is not None
        proc.proc.kill()
        proc.proc.wait(10)
        tear_last_record(node.flash_dir, TORN_CUT)
        box, counts = rebuilt_on_flash(node.flash_dir, lanes, OUTBOX)
        rig.note(f"node powered off mid-write at {emu.elapsed():.1f} s: {box.torn_records} torn, held {box.depth}")
        assert box.torn_records == 1 and box.next_seq == PICKS  # the torn pick's seq is free again: never recorded
        assert box.depth == OUTBOX and box.first_seq() > 1  # the full outbox dropped the oldest
        torn_lane = picks[-1].lane
        assert counts == [truth[i] + (1 if i == torn_lane else 0) for i in range(lanes)], (counts, truth)
        rig.wait(lambda: node.restarts >= 1 and node.process is not None, 30.0, "the node's restart")

        hub = HubProcess(write_hub_config(tmp_path, db, [(OVERFLOW_NODE, node.key, node.port)]), tmp_path / "hub.log")
        rig.hub = hub
        hub.start()
        lanes_ids = {i: lane_id(OVERFLOW_NODE, i) for i in range(lanes)}

        def settled() -> bool:
            observed = observed_stock(db)
            booked = harness_contiguous(db, OVERFLOW_NODE) == PICKS - 1
            return booked and all(observed.get(lanes_ids[i]) == counts[i] for i in range(lanes))

        rig.wait(settled, 60.0, "the ledger to agree with the node's counters")
        time.sleep(1.0)
        report = rig.report()
        # Events 1..6 are the node's (7 was torn): those its full outbox dropped never reached the ledger, the held
        # ones were booked once, and each lane's gaps are its opening stock plus exactly the dropped events' units.
        booked = [int(s) for (s,) in query(db, "SELECT event_seq FROM movements WHERE event_seq IS NOT NULL")]
        assert len(booked) == len(set(booked)) and max(booked) == PICKS - 1, (booked, report)
        dropped = [k for k in range(1, PICKS) if k not in booked]
        assert dropped == list(range(1, box.first_seq())), (dropped, report)
        gaps = query(db, "SELECT location, qty, note FROM movements WHERE reason = 'sensor_gap' ORDER BY id")
        per_lane: Counter[str] = Counter()
        for loc, qty, _note in gaps:
            per_lane[str(loc)] += int(qty)
        lost: Counter[str] = Counter()
        for k in dropped:
            lost[f"sensor:{lanes_ids[picks[k - 1].lane]}"] += picks[k - 1].units
        for i in range(lanes):
            loc = f"sensor:{lanes_ids[i]}"
            assert per_lane[loc] - initial[i] == lost[loc], (i, per_lane, lost, report)
        assert any("dropped by the node's full outbox" in str(note) for _l, _q, note in gaps), (gaps, report)
        assert observed_stock(db) == {lanes_ids[i]: counts[i] for i in range(lanes)}, report
        assert "failed its CRC: dropped" in node.log_path.read_text(errors="replace"), report
        assert hub.stop() == 0, report
        rig.hub = None
    finally:
        if rig.hub is not None:
            rig.hub.stop()
        emu.stop(quiet=True)


def node_outbox_next(flash_dir: Path, tmp: Path) -> int:
    """The next event_seq the node's flash will give out (1 before anything was journalled; 0 when the flash was
    being written as it was read: look again)."""
    journal = flash_dir / "state" / "outbox.log"
    if not journal.exists():
        return 1
    try:
        return node_outbox(flash_dir, tmp / "outbox-peek").next_seq
    except (OSError, shutil.Error):
        return 0
