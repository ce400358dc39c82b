"""Installing a shelf that already holds stock (hardware in the loop, real time, under a minute).

A blank emulated board sits under a shelf whose lanes are stocked. A technician flashes it beside the running hub
(``smartshelf flash --config``), then a manager tells the hub what is on each lane (``smartshelf hub command NODE
set-count LANE COUNT``, protocol v1.1). The node counts from there: each lane's first ledger row is the counted
opening quantity (``sensor_count``), booked as a physical count too (book vs counted), never a sensor gap; a
shopper's pick afterwards leaves the ledger equal to the ground truth.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from hub.ledger import LedgerService, Sku
from hub.schema import MIGRATIONS
from tests.emulation_support import wait_until
from tests.faults.harness import hub_beside, observed_stock, query, write_hub_config
from tests.test_flash import layout_file, smartshelf_flash
from tools.emulation.host import Emulator
from tools.emulation.scenarios import Scenario, ScenarioBuilder
from tools.emulation.store import STAFF, expected_outcome
from tools.mpy_runtime import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.micropython, pytest.mark.usefixtures("emulated_boards")]

PICK_AT_S = 50.0  # after the flash and the counts (done at about 19 s on the 2-core development machine)
PICK2_AT_S = 100.0  # after the board is provisioned again as node 2 and counted (done at about 80 s)


async def _catalogue(db: Path, scenario: Scenario) -> None:
    """The store's SKUs only: the node, its lanes and their stock are new to this ledger."""
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        for setup in scenario.nodes[1].lanes:
            sku = setup.sku
            await ledger.add_sku(Sku(sku.sku, sku.sku.title(), round(sku.unit_g * 10), round(sku.spread * 1000)),
                                 actor=STAFF)  # fmt: skip


def _hub_command(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "hub", "command", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_stocked_shelf_is_flashed_counted_and_later_its_board_replaced(tmp_path: Path) -> None:
    """Installed and counted: each lane's first rows are counted quantities, not gaps. Later the board is wiped and
    provisioned again as node 2 (``--replaces 1``, as for a board swapped for a new one): node 2 takes over the
    lanes (same ids), starts afresh, its first reports book node 1's counts as sensor gaps, staff count again, and
    the ledger equals the truth."""
    b = ScenarioBuilder([1], seed=11, start_s=PICK_AT_S)
    first_pick = b.pick(1, 1, PICK_AT_S, 2)
    b.pick(1, 0, PICK2_AT_S, 1)
    scenario = b.build("install")
    db = tmp_path / "ledger.db"
    asyncio.run(_catalogue(db, scenario))
    emu = Emulator([1], scenario, tmp_path / "emu", blank=True, out=lambda s: None)
    emu.start()
    node = emu.nodes[0]
    cfg = write_hub_config(tmp_path, db, [])
    with hub_beside(emu, cfg, tmp_path / "hub.log") as hub:
        wait_until(lambda: hub.status() is not None, emu, 30.0, "the hub")
        provision = ("--layout", str(layout_file(tmp_path)), "--nodes-file", str(tmp_path / "relay-nodes.toml"),
                     "--config", str(cfg))  # fmt: skip
        r = smartshelf_flash(str(node.port), "--node-id", "1", *provision)
        assert r.returncode == 0, r

        def up(node_id: int) -> bool:
            status = hub.status()
            return any(n["node_id"] == node_id and n["up"] and n["firmware"] for n in (status or {}).get("nodes", []))

        wait_until(lambda: up(1), emu, 30.0, "node 1 up at the hub")
        setups = scenario.nodes[1].lanes
        stock = {i: setup.initial for i, setup in enumerate(setups)}
        lanes: dict[int, str] = {}
        for lane, units in sorted(stock.items()):
            sku = setups[lane].sku.sku
            assert _hub_command(cfg, "1", "set-lane", str(lane), sku).returncode == 0
            ((lanes[lane],),) = query(db, "SELECT lane_id FROM lanes WHERE node_id = 1 AND lane_index = ?", (lane,))
            out = _hub_command(cfg, "1", "set-count", str(lane), str(units))
            assert out.returncode == 0, out
            assert f"lane {lanes[lane]} ({sku}): counted {units}, book 0: adjusted +{units}" in out.stdout, out
        assert emu.elapsed() < PICK_AT_S - 2.0, "the counts must be in before the shopper comes"

        end_s = first_pick.t_end + 2.0
        want = {lid: units for lid, (_sku, units) in expected_outcome(scenario.truth, end_s).counts.items()}

        wait_until(
            lambda: emu.elapsed() >= end_s and observed_stock(db) == want, emu, 60.0, "the ledger to equal the truth"
        )
        assert query(db, "SELECT count(*) FROM movements WHERE reason = 'sensor_gap'") == [(0,)]
        first = query(
            db,
            "SELECT location, reason, qty FROM movements WHERE id IN"
            " (SELECT min(id) FROM movements WHERE location GLOB 'sensor:*' GROUP BY location) ORDER BY location",
        )
        assert first == sorted((f"sensor:{lanes[i]}", "sensor_count", stock[i]) for i in stock), first
        counts = query(db, "SELECT location, book_qty, counted_qty FROM physical_counts ORDER BY location")
        assert counts == sorted((f"lane:{lanes[i]}", 0, stock[i]) for i in stock), counts
        picks = query(db, "SELECT qty FROM movements WHERE reason = 'sensor_pick'")
        assert picks == [(-2,)], picks

        # The board wiped and provisioned again as node 2, which takes over node 1's lanes.
        before = observed_stock(db)
        r = smartshelf_flash(str(node.port), "--node-id", "2", "--replaces", "1", *provision)
        assert r.returncode == 0, r
        handed = ", ".join(lanes[i] for i in sorted(lanes))
        assert f"node 2 took over the lanes of node 1: {handed}" in r.stdout, r
        wait_until(lambda: up(2), emu, 30.0, "node 2 up at the hub")
        wait_until(lambda: observed_stock(db) == {lid: 0 for lid in before}, emu, 30.0, "node 2's first reports")
        gaps = query(db, "SELECT node_id, location, qty FROM movements WHERE reason = 'sensor_gap' ORDER BY location")
        assert gaps == sorted((2, f"sensor:{lid}", -q) for lid, q in before.items()), gaps
        for lane in sorted(lanes):
            out = _hub_command(cfg, "2", "set-count", str(lane), str(before[lanes[lane]]))
            assert out.returncode == 0 and f"lane {lanes[lane]} " in out.stdout, out
        assert emu.elapsed() < PICK2_AT_S - 2.0, "the counts must be in before the next shopper comes"
        end_s = max(row.t_end for row in scenario.truth) + 2.0
        want = {lid: units for lid, (_sku, units) in expected_outcome(scenario.truth, end_s).counts.items()}
        wait_until(
            lambda: emu.elapsed() >= end_s and observed_stock(db) == want, emu, 60.0, "the ledger to equal the truth"
        )
        assert query(db, "SELECT DISTINCT node_id FROM lanes") == [(2,)]
        node2 = query(db, "SELECT reason, event_seq FROM movements WHERE node_id = 2 AND event_seq IS NOT NULL"
                          " ORDER BY event_seq")  # fmt: skip
        assert node2 == [("sensor_count", i) for i in range(1, 5)] + [("sensor_pick", 5)], node2
        assert hub.stop() == 0
