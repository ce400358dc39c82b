"""Staff corrections of sensor movements against the node's lane counters (issue 13, section 5).

The hub compares each node's lane counters with what the node's own reports booked for the lane (the lane's counter
reference) and books any difference as a sensor gap. A staff reversal of a sensor movement (a false detection: a
hand resting on the shelf) is not the node's report: it stands beside the counters, so no later comparison undoes
it, whether the node keeps reporting, reboots or the hub restarts. A staff count of the lane (``set_count``) sets the
node's counter to what was counted and absorbs the corrections, so the lane's observed stock is the count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.ledger import Sku
from hub.service import HubService
from shared_protocol.messages import RequestState
from tests.hub_support import KEY1, FakeNode, db_rows, eventually, settled, short_dir, start_hub, write_config


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[FakeNode]:
    n = FakeNode(1, KEY1, tmp_path / "node-1")
    n.plug()
    yield n
    n.unplug()


@pytest.fixture
def config(tmp_path: Path, node: FakeNode) -> Any:
    with short_dir() as sockdir:
        yield write_config(tmp_path, sockdir, [node])


def observed(db: Path) -> int:
    rows = db_rows(db, "SELECT qty FROM observed_stock WHERE lane_id = 'A1'")
    return int(rows[0][0]) if rows else 0


def gaps(db: Path) -> list[tuple[Any, ...]]:
    return db_rows(db, "SELECT qty, note FROM movements WHERE reason = 'sensor_gap' ORDER BY id")


async def compared(hub: HubService, node: FakeNode) -> None:
    """The node reports lane 0's counters; wait until the hub has compared them with the ledger."""
    node.send(node.lane_state(0))
    await settled(hub, node, timeout=15)


async def test_a_reversal_of_a_sensor_movement_holds_through_events_a_node_reboot_and_a_hub_restart(
    config: Path, node: FakeNode, tmp_path: Path
) -> None:
    db = tmp_path / "hub.db"
    hub = await start_hub(config)
    try:
        assert hub.ledger is not None and hub.reader is not None
        await hub.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
        node.hello()
        await node.wait_for(lambda: node.messages(RequestState))
        assert (await hub.set_lane(1, 0, "COLA", actor="setup", lane_id="A1")).ok
        assert (await hub.set_count(1, 0, 10, actor="alice")).count is not None  # event 1: +10 (sensor_count)
        await node.wait_ack(1)
        node.event(0, -2)  # event 2: a hand rested on the shelf, the node counted a pick of 2
        await node.wait_ack(2)
        assert observed(db) == 8
        (pick,) = db_rows(db, "SELECT id FROM movements WHERE event_seq = 2")
        await hub.ledger.reverse(pick[0], actor="web:manager", why="hand rested on the shelf")
        assert observed(db) == 10 and node.counters[0].count == 8  # the node still says 8

        await compared(hub, node)  # its counters (8) agree with what it reported (10 - 2): no gap
        node.event(0, -1)  # a real pick: the node says 7, the shelf holds 9
        await node.wait_ack(3)
        await compared(hub, node)
        assert observed(db) == 9 and gaps(db) == []

        node.reboot(2)  # the node restarts (its counters are on its flash) and reports every lane
        node.hello()
        await node.wait_for(lambda: len(node.messages(RequestState)) >= 2)
        await settled(hub, node, timeout=15)  # the states it answered with, compared
        assert observed(db) == 9 and gaps(db) == []
    finally:
        await hub.stop()

    hub = await start_hub(config)  # the hub restarts: its counter references come from the ledger
    try:
        assert hub.ledger is not None
        await compared(hub, node)
        assert observed(db) == 9 and gaps(db) == [], gaps(db)
        node.event(0, -1)
        await node.wait_ack(4)
        await compared(hub, node)
        assert observed(db) == 8 and gaps(db) == []

        # Staff count the lane: the node's counter becomes the count, and the count absorbs the correction.
        out = await hub.set_count(1, 0, 8, actor="alice")
        assert out.count is not None and (out.count.book_qty, out.count.counted_qty, out.absorbed) == (10, 8, 2)
        assert "corrections of its sensor movements absorbed (-2)" in out.summary()
        await node.wait_ack(5)  # the node's count event: +2 (its counter said 6)
        await compared(hub, node)
        assert node.counters[0].count == 8 and observed(db) == 8 and gaps(db) == []
        node.event(0, -3)
        await node.wait_ack(6)
        await compared(hub, node)
        assert observed(db) == 5 == node.counters[0].count and gaps(db) == []
        assert hub.reader is not None and await hub.reader.consistency_errors() == []
    finally:
        await hub.stop()


def lane_stock(db: Path, lane_id: str = "node1-lane0") -> dict[str | None, int]:
    """The lane's observed stock per SKU (zeros left out); its units booked with no SKU under None."""
    out: dict[str | None, int] = {
        r[0]: int(r[1])
        for r in db_rows(db, "SELECT sku, qty FROM observed_stock WHERE lane_id = ? AND qty != 0", (lane_id,))
    }
    none = db_rows(
        db, "SELECT coalesce(sum(qty), 0) FROM movements WHERE location = ? AND sku IS NULL", ("sensor:" + lane_id,)
    )
    if none[0][0]:
        out[None] = int(none[0][0])
    return out


async def test_a_node_that_counted_before_its_lane_had_a_sku_hands_its_count_to_the_sku_it_is_assigned(
    config: Path, node: FakeNode, tmp_path: Path
) -> None:
    """The tester's case: a board that counts already (an emulated one; a node moved) reports to a hub whose ledger
    has its lane unassigned. Its opening stock and picks are booked with no SKU; assigning the lane (set-lane) makes
    them the SKU's at once, and nothing (later events, a node reboot, a hub restart, a re-assignment to another
    SKU, a staff count) lets the lane's observed stock and its node's count part again."""
    db = tmp_path / "hub.db"
    node.counters[0].count = node.counters[0].added = 12  # on its flash: 12 units on lane 0
    hub = await start_hub(config)
    try:
        assert hub.ledger is not None
        for sku in ("COLA", "TEA"):
            await hub.ledger.add_sku(Sku(sku, sku.title(), 3500, 20), actor="setup")
        node.hello()
        await node.wait_for(lambda: node.messages(RequestState))
        await eventually(lambda: lane_stock(db) == {None: 12}, what="the opening stock, with no SKU")
        node.event(0, -2)
        await node.wait_ack(1)
        assert lane_stock(db) == {None: 10}

        assert (await hub.set_lane(1, 0, "COLA", actor="manager")).ok
        assert lane_stock(db) == {"COLA": 10} == {"COLA": node.counters[0].count}
        await compared(hub, node)
        node.event(0, -1)
        await node.wait_ack(2)
        await compared(hub, node)
        assert lane_stock(db) == {"COLA": 9} and len(gaps(db)) == 1  # the opening stock's only

        node.reboot(2)
        node.hello()
        await node.wait_for(lambda: len(node.messages(RequestState)) >= 2)
        await settled(hub, node, timeout=15)  # the states it answered with, compared
        assert lane_stock(db) == {"COLA": 9} and len(gaps(db)) == 1
    finally:
        await hub.stop()

    hub = await start_hub(config)
    try:
        assert hub.ledger is not None and hub.reader is not None
        await compared(hub, node)
        assert lane_stock(db) == {"COLA": 9} and len(gaps(db)) == 1
        assert (await hub.set_lane(1, 0, "TEA", actor="manager")).ok  # the products are swapped: the count goes on
        assert lane_stock(db) == {"TEA": 9}
        node.event(0, -4)
        await node.wait_ack(3)
        await compared(hub, node)
        assert lane_stock(db) == {"TEA": 5} == {"TEA": node.counters[0].count} and len(gaps(db)) == 1

        out = await hub.set_count(1, 0, 7, actor="alice")  # staff count 7: the node's count event +2
        assert out.count is not None and (out.count.book_qty, out.count.counted_qty, out.absorbed) == (0, 7, 0)
        await node.wait_ack(4)
        await compared(hub, node)
        assert lane_stock(db) == {"TEA": 7} == {"TEA": node.counters[0].count} and len(gaps(db)) == 1
        moved = db_rows(db, "SELECT sku, qty FROM movements WHERE reason = 'lane_assigned' ORDER BY id")
        assert moved == [(None, -10), ("COLA", 10), ("COLA", -9), ("TEA", 9)]
        audit = db_rows(
            db, "SELECT actor, action FROM audit WHERE action IN ('assign_lane', 'move_lane_units') ORDER BY id"
        )
        assert audit == [("manager", "assign_lane"), ("manager", "move_lane_units")] * 2
        assert await hub.reader.consistency_errors() == []
    finally:
        await hub.stop()
