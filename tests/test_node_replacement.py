"""A board replaced (or wiped and provisioned again) under a new id takes over the old node's lanes.

The lanes keep their ids, SKUs and history; what the old board counted but never delivered is booked as a sensor gap
at the new node's first report of each lane (never merged into the new node's events); staff count the lane again;
frames the old id still sends land on a lane of their own, not on the lanes it handed over.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.ledger import Sku
from hub.ledger.models import InvalidArgument
from hub.service import HubService
from tests.hub_support import KEY1, KEY2, FakeNode, db_rows, eventually, short_dir, start_hub, write_config


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[FakeNode, FakeNode]]:
    old, new = FakeNode(1, KEY1, tmp_path / "node-1"), FakeNode(2, KEY2, tmp_path / "node-2")
    old.plug()
    new.plug()
    yield old, new
    old.unplug()
    new.unplug()


@pytest.fixture
async def hub(tmp_path: Path, nodes: tuple[FakeNode, FakeNode]) -> AsyncIterator[HubService]:
    with short_dir() as sock:
        service = await start_hub(write_config(tmp_path, sock, list(nodes)))
        yield service
        await service.stop()


async def test_the_new_node_takes_over_the_lanes_and_the_old_ones_undelivered_units_are_a_gap(
    hub: HubService, nodes: tuple[FakeNode, FakeNode], tmp_path: Path
) -> None:
    old, new = nodes
    db = tmp_path / "hub.db"
    assert hub.ledger is not None
    await hub.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
    old.hello()
    await old.wait_for(lambda: 0 in old.acks)
    assert (await hub.set_lane(1, 0, "COLA", actor="setup")).ok
    assert (await hub.set_count(1, 0, 10, actor="alice")).command.ok
    old.event(0, -2)
    await old.wait_ack(2)
    lost = old.make_event(0, -1)  # counted by the old board, never delivered: the board dies with it

    def observed() -> list[tuple[Any, ...]]:
        return db_rows(db, "SELECT qty FROM observed_stock WHERE lane_id = 'node1-lane0'")

    assert observed() == [(8,)]

    assert await hub.replace_node(1, 2, actor="tech") == ["node1-lane0"]
    assert db_rows(db, "SELECT lane_id, node_id, lane_index, sku FROM lanes") == [("node1-lane0", 2, 0, "COLA")]
    audit = [
        (a, json.loads(d)) for a, d in db_rows(db, "SELECT actor, details FROM audit WHERE action = 'replace_node'")
    ]
    assert audit == [("tech", {"old": 1, "new": 2, "lanes": ["node1-lane0"]})]

    # The new board starts afresh (firmware/identity.py): its first report of the lane books the difference.
    new.hello()
    await new.wait_for(lambda: 0 in new.acks)
    new.send(new.lane_state(0))
    await eventually(lambda: observed() == [(0,)], what="the gap to the new node's count")
    gap = db_rows(db, "SELECT node_id, qty, reason FROM movements WHERE reason = 'sensor_gap'")
    assert gap == [(2, -8, "sensor_gap")]
    # Staff count the lane; the new node's events carry on from there, numbered from 1.
    counted = await hub.set_count(2, 0, 7, actor="alice")
    assert counted.command.ok and counted.command.value == 1
    await new.wait_ack(1)
    new.event(0, -1)
    await new.wait_ack(2)
    assert observed() == [(6,)]
    booked = db_rows(db, "SELECT node_id, event_seq, qty, reason FROM movements WHERE node_id = 2 ORDER BY id")
    assert booked == [(2, None, -8, "sensor_gap"), (2, 1, 7, "sensor_count"), (2, 2, -1, "sensor_pick")]

    # The old id still configured (here: in hub.toml) and its board heard from again with the event it never
    # delivered: kept on a lane of its own, never on the lane it handed over.
    old.send(lost)
    await old.wait_ack(3)
    assert observed() == [(6,)]
    assert db_rows(db, "SELECT lane_id, node_id, sku FROM lanes ORDER BY lane_id") == [
        ("node1-lane0", 2, "COLA"),
        ("node1-lane0.2", 1, None),
    ]


async def test_a_replacement_is_refused_when_it_cannot_be_whole(
    hub: HubService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    assert hub.ledger is not None
    await hub.ledger.add_sku(Sku("TEA", "Tea", 420), actor="setup")
    await hub.ledger.assign_lane(1, 0, "TEA", actor="setup")
    await hub.ledger.assign_lane(2, 1, "TEA", actor="setup")
    with pytest.raises(InvalidArgument, match="node 3 has no lanes to hand over"):
        await hub.replace_node(3, 4, actor="tech")
    with pytest.raises(InvalidArgument, match="node 1 cannot replace itself"):
        await hub.replace_node(1, 1, actor="tech")
    with pytest.raises(InvalidArgument, match="node 2 already has lanes"):
        await hub.replace_node(1, 2, actor="tech")
    # The same through the command line (the running hub's control socket).
    cli = ["hub", "replace-node", "--config", str(tmp_path / "hub.toml")]
    assert await asyncio.to_thread(main, [*cli, "1", "2"]) == 1
    assert "node 2 already has lanes" in capsys.readouterr().err
    assert await asyncio.to_thread(main, [*cli, "1", "5"]) == 0
    assert capsys.readouterr().out == "node 5 took over the lanes of node 1: node1-lane0\n"
