"""BLE end to end: emulated nodes running the real firmware on the emulated radio (a Bumble peripheral each, on one
air), the real hub as a subprocess on its own Bumble adapter over the emulator's HCI socket, the real ledger.

Three nodes share two connection slots: their beacons reach the hub's page, their picks reach the ledger exactly
once, a set-count command reaches a node that holds no connection, and no node holds a slot while idle.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.harness import hub_beside, observed_stock, query, seed, write_ble_hub_config
from tools.emulation.host import Emulator
from tools.emulation.scenarios import ScenarioBuilder
from tools.emulation.store import expected_outcome
from tools.mpy_runtime import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.micropython, pytest.mark.usefixtures("emulated_boards")]

NODES = [1, 2, 3]


def _wait(emu: Emulator, check: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        emu.poll()
        if check():
            return
        time.sleep(0.25)
    tail = log.read_text()[-4000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n--- hub log ---\n{tail}")


def test_three_ble_nodes_over_two_slots_reach_the_ledger_exactly_once(tmp_path: Path) -> None:
    b = ScenarioBuilder(NODES, seed=11, start_s=6.0)
    b.pick(1, 0, 8.0, 1)
    b.pick(2, 1, 9.0, 2)
    b.pick(3, 0, 10.0, 1, paid=False)
    b.pick(1, 1, 16.0, 1)
    scenario = b.build("ble-e2e")
    db = tmp_path / "ledger.db"
    seed(db, scenario)
    lines: list[str] = []
    emu = Emulator(NODES, scenario, tmp_path / "emu", out=lines.append, link="ble")
    emu.start()
    adapter = next(line.split(": ", 1)[1] for line in lines if line.startswith("hub BLE adapter: "))
    cfg = write_ble_hub_config(tmp_path, db, tmp_path / "emu" / "nodes.toml", adapter, slots=2, idle_s=1.0, hold_s=5.0)
    log = tmp_path / "hub.log"
    with hub_beside(emu, cfg, log) as hub:
        end_s = max(r.t_end for r in scenario.truth) + 1.0
        want = {lid: units for lid, (_sku, units) in expected_outcome(scenario.truth, end_s).counts.items()}
        _wait(
            emu, lambda: emu.elapsed() > end_s and observed_stock(db) == want, 120, "the ledger to equal the truth", log
        )

        # Exactly once: one movement per (node, event_seq).
        dupes = query(
            db,
            "SELECT node_id, event_seq, count(*) FROM movements WHERE event_seq IS NOT NULL"
            " GROUP BY node_id, event_seq HAVING count(*) > 1",
        )
        assert dupes == []

        # The beacons: every node's counts on the hub's status, authenticated, none forged; slots released.
        def beacons_current() -> bool:
            st = hub.status()
            if st is None:
                return False
            nodes = {n["node_id"]: n for n in st["nodes"]}
            for nid in NODES:
                beacon = (nodes[nid].get("ble") or {}).get("beacon")
                if beacon is None or beacon["waiting"]:
                    return False
                lanes = {int(k): v["count"] for k, v in beacon["lanes"].items()}
                for lid, units in want.items():
                    node, lane = lid.removeprefix("node").split("-lane")
                    if int(node) == nid and lanes.get(int(lane)) != units:
                        return False
            return bool(st["ble"]["slots_used"] == 0)

        _wait(emu, beacons_current, 60, "every beacon to show the ledger's counts and the slots to be free", log)
        st = hub.status()
        assert st is not None
        assert st["ble"]["beacons"]["forged"] == 0 and st["ble"]["beacons"]["accepted"] >= len(NODES)
        assert all(n["link_kind"] == "ble" for n in st["nodes"])
        assert max(n["ble"]["link"]["connects"] for n in st["nodes"]) >= 1

        # A command to an idle node: the hub connects for it, the node answers.
        res = subprocess.run(
            [sys.executable, "-m", "hub.cli", "hub", "command", "--config", str(cfg), "2", "identify", "2"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert hub.stop() == 0
    text = log.read_text()
    assert "BLE: adapter" in text and "Traceback" not in text, text[-3000:]
