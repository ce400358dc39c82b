"""Hardware-in-the-loop under faults: exactly once, whatever the line and the hub go through.

Two emulated nodes (the real firmware under MicroPython, each on its own pty) play the ``shoppers`` scenario.
Between each node and the hub sits a ``FaultRelay`` (tests/faults/relay.py) that drops, duplicates, bit-flips,
pads with garbage and delays uplink bytes, and drops, corrupts, duplicates and delays downlink lines (acks).
The hub is the real ``smartshelf hub run`` subprocess on a SQLite ledger; it is SIGKILLed four times at
seeded random moments (the last one after the shoppers left, while retransmissions drain) and restarted on
the same database. During one outage node 1 is killed while its flash outbox holds events the hub never
acknowledged; the emulator restarts it on the same flash and the outbox must be re-sent (age unknown) and
booked once. After the last restart the relay injects forged event frames (right framing, wrong key) and
verbatim replays of earlier event frames.

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
    seed,
    unacked_on_flash,
    write_hub_config,
)
from tests.faults.harness import (
    contiguous as harness_contiguous,
)
from tests.faults.relay import FaultRelay, Faults
from tests.faults.rig import Rig, shoppers, status_nodes
from tools.emulation.host import Emulator
from tools.emulation.store import expected_outcome

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
        hub = HubProcess(cfg, tmp_path / "hub.log")
        rig.hub = hub
        hub.start()
        by_id = {n.node_id: n for n in emu.nodes}

        def contiguous(nid: int) -> int:
            return harness_contiguous(db, nid)

        last_start = {"t": 0.0}

        def outage(at: float, down_s: float, reboot: bool = False) -> None:
            # A kill at a random moment, but never before the hub has had a few seconds to come up again.
            rig.until_elapsed(max(at, last_start["t"] + rng.uniform(4.0, 8.0)))
            hub.kill()
            rig.note(f"hub SIGKILLed at {emu.elapsed():.1f} s (kill {hub.kills})")
            if reboot:
                node = by_id[REBOOTED]
                # Reboot mid-outbox: wait until the node's flash holds events the hub has not acknowledged.
                rig.wait(lambda: unacked_on_flash(node.flash_dir, contiguous(REBOOTED)) >= 2, 60.0,
                         "unacknowledged events in node 1's outbox")  # fmt: skip
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

        # Four SIGKILLs at seeded random moments; the second one with the node reboot, the last after shopping.
        outage(rng.uniform(14.0, 22.0), rng.uniform(1.0, 4.0))
        t_reboot = rng.uniform(30.0, 38.0)
        outage(t_reboot, rng.uniform(2.0, 4.0), reboot=True)
        outage(rng.uniform(50.0, 60.0), rng.uniform(1.0, 4.0))
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
        assert hub.kills == 4 and hub.starts == 5

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
