"""Re-flashing a counting node while the store is open (hardware in the loop, real time, about a minute).

An emulated node counts picks into the real hub (a subprocess on the node's pty). The hub lets go of the port (as
``smartshelf flash`` asks it to), a shopper picks while nobody listens, so the node holds an event the hub has not
acknowledged; then ``smartshelf flash --config hub.toml`` installs a new firmware version (interrupting the firmware,
staging, switching, resetting) and gives the port back. More picks follow. The hub must report the new version,
the ledger must equal the ground truth, and every event must be booked exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware import FW_VERSION
from hub.service.control import request
from tests.emulation_support import wait_until
from tests.faults.harness import HubProcess, hub_beside, observed_stock, query, seed, write_hub_config
from tests.test_flash import changed_firmware, smartshelf_flash
from tools.emulation.host import Emulator
from tools.emulation.scenarios import Scenario, ScenarioBuilder
from tools.emulation.store import expected_outcome

VERSION = ".".join(map(str, FW_VERSION))
pytestmark = [pytest.mark.slow, pytest.mark.micropython, pytest.mark.usefixtures("emulated_boards")]


@contextlib.contextmanager
def counting_beside_hub(tmp_path: Path, scenario: Scenario) -> Iterator[tuple[Emulator, Path, HubProcess]]:
    """Node 1 of ``scenario`` counting into the real hub (a subprocess) on ``tmp_path / "ledger.db"``, seeded as
    the demo books a store: (the emulator, hub.toml, the hub). Both stop on the way out."""
    seed(tmp_path / "ledger.db", scenario)
    emu = Emulator([1], scenario, tmp_path / "emu", fresh=True, out=lambda s: None)
    emu.start()
    node = emu.nodes[0]
    cfg = write_hub_config(tmp_path, tmp_path / "ledger.db", [(1, node.key, node.port)])
    with hub_beside(emu, cfg, tmp_path / "hub.log") as hub:
        yield emu, cfg, hub


def events_booked(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM movements WHERE event_seq IS NOT NULL")[0][0])


def test_a_counting_node_is_reflashed_mid_traffic_and_every_event_is_booked_once(tmp_path: Path) -> None:
    b = ScenarioBuilder([1], seed=3, start_s=8.0)
    b.pick(1, 0, 8.0, 1)
    b.pick(1, 1, 10.0, 2)
    b.pick(1, 0, 20.0, 1)  # while the hub has let go of the port (6 s after it is asked to): counted, not acknowledged
    b.pick(1, 2, 47.0, 1)  # after the new firmware is in
    b.pick(1, 3, 49.0, 2)
    scenario = b.build("reflash")
    db = tmp_path / "ledger.db"
    with counting_beside_hub(tmp_path, scenario) as (emu, cfg, hub):
        node = emu.nodes[0]

        wait_until(lambda: events_booked(db) == 2, emu, 30.0, "the first two picks in the ledger")
        wait_until(lambda: emu.elapsed() >= 14.0, emu, 20.0, "t = 14 s")
        reply = asyncio.run(request(tmp_path / "hub.sock", {"op": "release", "port": str(node.port), "seconds": 600},
                                    timeout_s=10.0))  # fmt: skip
        assert reply == {"ok": True}, reply
        wait_until(lambda: emu.elapsed() >= 22.5, emu, 20.0, "the pick at 20 s counted by the node")
        assert events_booked(db) == 2  # the hub heard nothing of it

        r = smartshelf_flash(
            str(node.port), "--config", str(cfg), "--source", str(changed_firmware(tmp_path, "(0, 1, 7)"))
        )
        assert r.returncode == 0, r
        assert re.match(r"^node 1: firmware 0\.1\.7-[0-9a-f]{10} \(bytecode \.mpy, \d+ modules\) installed on ",
                        r.stdout), r  # fmt: skip

        end_s = max(row.t_end for row in scenario.truth) + 2.0
        want = {lid: units for lid, (_sku, units) in expected_outcome(scenario.truth, end_s).counts.items()}

        wait_until(lambda: emu.elapsed() >= end_s and observed_stock(db) == want and events_booked(db) == 5, emu, 90.0,
             "the ledger to equal the ground truth")  # fmt: skip
        status = hub.status()
        assert status is not None
        (mine,) = [n for n in status["nodes"] if n["node_id"] == 1]
        assert mine["firmware"] == "0.1.7", mine
        # The new image reached the hub: its trial is over (the loader will not switch back).
        wait_until(lambda: not (node.flash_dir / "fw" / "trial").exists(), emu, 30.0, "the trial to end")
        dupes = query(db, "SELECT event_seq, count(*) FROM movements WHERE event_seq IS NOT NULL GROUP BY event_seq"
                          " HAVING count(*) > 1")  # fmt: skip
        assert dupes == []
        seqs = [int(s) for (s,) in query(db, "SELECT event_seq FROM movements WHERE event_seq IS NOT NULL "
                                             "ORDER BY event_seq")]  # fmt: skip
        assert seqs == [1, 2, 3, 4, 5]
        # The pick made while the port was lent out reached the ledger after the re-flash, from the node's outbox.
        late = query(db, "SELECT note FROM movements WHERE event_seq = 3")[0][0] or ""
        assert "age unknown" in late, late
        assert hub.stop() == 0


def test_a_new_node_flashed_beside_a_running_hub_is_served_without_a_restart(tmp_path: Path) -> None:
    from tests.test_flash import layout_file
    from tools.emulation.scenarios import build

    db = tmp_path / "ledger.db"
    emu = Emulator([9], build("idle", [9]), tmp_path / "emu", blank=True, out=lambda s: None)
    emu.start()
    node = emu.nodes[0]
    cfg = write_hub_config(tmp_path, db, [])  # a hub with no node yet; its nodes file is the one flash fills
    nodes_file = tmp_path / "relay-nodes.toml"
    with hub_beside(emu, cfg, tmp_path / "hub.log") as hub:
        wait_until(lambda: hub.status() is not None, emu, 30.0, "the hub")
        r = smartshelf_flash(str(node.port), "--node-id", "9", "--layout", str(layout_file(tmp_path)),
                             "--nodes-file", str(nodes_file), "--config", str(cfg))  # fmt: skip
        assert r.returncode == 0, r
        assert r.stdout.strip().splitlines()[-1] == "the running hub serves node 9 now", r

        def served() -> dict[str, Any] | None:
            status = hub.status()
            nodes = [n for n in (status or {}).get("nodes", []) if n["node_id"] == 9]
            return nodes[0] if nodes and nodes[0]["up"] and nodes[0]["firmware"] == VERSION else None

        wait_until(lambda: served() is not None, emu, 30.0, "node 9 up at the hub")
        assert query(db, "SELECT fw_version FROM nodes WHERE node_id = 9") == [(VERSION,)]

        # The same board provisioned again under a new id: the hub lets node 9 go and serves node 10 on the port.
        r = smartshelf_flash(str(node.port), "--node-id", "10", "--layout", str(layout_file(tmp_path)),
                             "--nodes-file", str(nodes_file), "--config", str(cfg))  # fmt: skip
        assert r.returncode == 0, r
        assert r.stdout.strip().splitlines()[-1] == "the running hub serves node 10 now", r

        def only_node_10() -> bool:
            status = hub.status()
            nodes = {n["node_id"]: n for n in (status or {}).get("nodes", [])}
            return set(nodes) == {10} and nodes[10]["up"] and nodes[10]["firmware"] == VERSION

        wait_until(only_node_10, emu, 30.0, "node 10 alone at the hub")
        assert "Could not exclusively lock" not in (tmp_path / "hub.log").read_text()  # one link on the port
        assert hub.stop() == 0


def test_a_pick_while_mpremote_holds_the_board_is_counted_at_its_next_boot(tmp_path: Path) -> None:
    """The hub lends the port; ``mpremote exec`` takes the board over (Ctrl-C: the firmware keeps its lanes' levels,
    firmware/standby.py) and holds it while a shopper takes 2 items; ``mpremote reset`` boots the firmware again,
    which finds 2 fewer on the lane and books them as an anomaly of low confidence: the ledger equals the truth."""
    b = ScenarioBuilder([1], seed=5, start_s=8.0)
    b.pick(1, 0, 8.0, 1)
    b.pick(1, 1, 21.0, 2)  # while mpremote holds the board (about 15.5 s .. 26 s)
    scenario = b.build("unwatched")
    db = tmp_path / "ledger.db"
    with counting_beside_hub(tmp_path, scenario) as (emu, _cfg, hub):
        node = emu.nodes[0]

        wait_until(lambda: events_booked(db) == 1 and emu.elapsed() >= 14.0, emu, 30.0, "the first pick in the ledger")
        sock = tmp_path / "hub.sock"
        reply = asyncio.run(request(sock, {"op": "release", "port": str(node.port), "seconds": 600}, timeout_s=10.0))
        assert reply == {"ok": True}, reply
        held = subprocess.run([sys.executable, "-m", "mpremote", "connect", str(node.port), "exec",
                               "import time; time.sleep(11)"], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert held.returncode == 0, held
        assert emu.elapsed() > 22.0, "mpremote held the board past the pick"
        reset = subprocess.run([sys.executable, "-m", "mpremote", "connect", str(node.port), "reset"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert reset.returncode == 0, reset
        reply = asyncio.run(request(sock, {"op": "resume", "port": str(node.port)}, timeout_s=10.0))
        assert reply == {"ok": True}, reply

        end_s = max(row.t_end for row in scenario.truth) + 2.0
        want = {lid: units for lid, (_sku, units) in expected_outcome(scenario.truth, end_s).counts.items()}
        wait_until(lambda: observed_stock(db) == want, emu, 40.0, "the ledger to equal the ground truth")
        unwatched = query(db, "SELECT reason, qty, confidence FROM movements WHERE event_seq = 2")
        assert unwatched == [("sensor_anomaly", -2, 40)], unwatched
        assert hub.stop() == 0
