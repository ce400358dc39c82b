"""``set-lane`` a node cannot take leaves the ledger as it was: a lane beyond those the node reported in its hello is
refused before anything is sent (the CLI exits 2), so is a node the hub has not heard since it started (its lanes are
not known) and a node the hub does not have, and a lane the node refuses, or does not answer for, is not assigned
in the ledger."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.ledger import Sku
from hub.ledger.models import InvalidArgument
from hub.link.commands import STATUS_NAMES, CommandTimeout, UnknownNode
from hub.service import HubService
from hub.service.node_lanes import check_lane
from hub.transport.ble.beacons import NodeBeacon
from shared_protocol.messages import STATUS_BAD_ARGS, STATUS_FAILED, RequestState, SetLane
from tests.hub_support import FakeNode, db_rows, start_hub


@pytest.fixture
async def hub(config: Path) -> AsyncIterator[HubService]:
    service = await start_hub(config)
    assert service.ledger is not None
    for sku, weight in (("COLA-330", 3500), ("TEA", 420)):
        await service.ledger.add_sku(Sku(sku, sku.title(), weight, 20), actor="setup")
    yield service
    await service.stop()


def lanes(config: Path) -> list[tuple[Any, ...]]:
    return db_rows(config.parent / "hub.db", "SELECT lane_index, sku FROM lanes WHERE node_id = 1 ORDER BY lane_index")


def audit_actions(config: Path) -> list[str]:
    return [r[0] for r in db_rows(config.parent / "hub.db", "SELECT action FROM audit ORDER BY id")]


async def test_a_lane_the_node_does_not_have_is_refused_before_anything_is_sent_or_written(
    hub: HubService, node: FakeNode, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    node.hello()
    await node.wait_for(lambda: node.messages(RequestState))
    capsys.readouterr()
    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "1", "set-lane", "9", "COLA-330"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "smartshelf hub: node 1 has 4 lanes (0..3): there is no lane 9\n"
    assert lanes(config) == [] and node.messages(SetLane) == []
    assert "assign_lane" not in audit_actions(config)
    with pytest.raises(InvalidArgument, match="no lane 4"):
        await hub.set_lane(1, 4, "TEA", actor="setup")
    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "1", "set-lane", "3", "TEA"])
    assert rc == 0 and lanes(config) == [(3, "TEA")]  # the last lane is the node's


@pytest.mark.parametrize("status", [STATUS_BAD_ARGS, STATUS_FAILED])
async def test_a_set_lane_the_node_refuses_leaves_the_ledger_as_it_was(
    hub: HubService, node: FakeNode, config: Path, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    from hub.cli import main

    node.hello()
    await node.wait_for(lambda: node.messages(RequestState))
    assert (await hub.set_lane(1, 0, "COLA-330", actor="setup")).ok
    cola = SetLane(0, 3500, 20, "COLA-330")
    await node.wait_for(lambda: node.messages(SetLane).count(cola) == 2)  # and the ledger's assignments again
    node.answers["set_lane"] = (status, 0)
    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "1", "set-lane", "0", "TEA"])
    assert rc == 1 and ": set_lane " in capsys.readouterr().out
    rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "1", "set-lane", "2", "TEA"])
    assert rc == 1
    assert lanes(config) == [(0, "COLA-330")]  # neither the other SKU nor a new lane
    assert node.messages(SetLane)[-2:] == [SetLane(0, 420, 20, "TEA"), SetLane(2, 420, 20, "TEA")]
    await asyncio.sleep(0.2)  # the refusals are audited in the background
    audit = db_rows(config.parent / "hub.db", "SELECT action, details FROM audit ORDER BY id")
    assigned = [json.loads(d)["sku"] for a, d in audit if a == "assign_lane"]
    answers = [json.loads(d)["status"] for a, d in audit if a == "command" and json.loads(d)["command"] == "set_lane"]
    assert assigned == ["COLA-330"]
    assert answers == ["ok", STATUS_NAMES[status], STATUS_NAMES[status]]  # the node's answers are audited


async def test_a_set_lane_the_node_does_not_answer_is_not_assigned(
    hub: HubService, node: FakeNode, config: Path
) -> None:
    node.hello()
    await node.wait_for(lambda: node.messages(RequestState))
    assert (await hub.set_lane(1, 0, "COLA-330", actor="setup")).ok
    node.answer_commands = False
    states = len(node.messages(RequestState))
    with pytest.raises(CommandTimeout, match="lane 0 is not assigned in the ledger: run set-lane again"):
        await hub.set_lane(1, 0, "TEA", actor="setup", timeout_s=0.3)
    assert lanes(config) == [(0, "COLA-330")]
    # the node may have taken TEA, only its answer lost: it is sent the ledger's assignments again, COLA last
    node.answer_commands = True
    await node.wait_for(lambda: len(node.messages(RequestState)) > states)
    await node.wait_for(
        lambda: [m for m in node.messages(SetLane) if m.lane == 0][-1] == SetLane(0, 3500, 20, "COLA-330")
    )


async def test_the_ledgers_assignment_is_the_last_the_node_hears_even_with_a_hello_meanwhile(
    hub: HubService, node: FakeNode, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hello's job reads the ledger's assignments (COLA) before set-lane writes TEA, and queues them only after
    set-lane is done: the assignments sent after the write follow them, so the node ends on what the ledger says."""
    node.hello()
    await node.wait_for(lambda: node.messages(RequestState))
    assert (await hub.set_lane(1, 0, "COLA-330", actor="setup")).ok
    await node.wait_for(lambda: node.messages(SetLane).count(SetLane(0, 3500, 20, "COLA-330")) == 2)
    assert hub.ingest is not None
    reader = hub.ingest.reader
    read, gate = asyncio.Event(), asyncio.Event()
    original = reader.assigned_lanes

    async def held(node_id: int) -> Any:
        lanes = await original(node_id)
        if not gate.is_set():  # the hello's read: held until set-lane is done
            read.set()
            await gate.wait()
        return lanes

    monkeypatch.setattr(reader, "assigned_lanes", held)
    node.hello()
    await asyncio.wait_for(read.wait(), 10)
    assert (await hub.set_lane(1, 0, "TEA", actor="setup")).ok
    gate.set()
    assert lanes(config) == [(0, "TEA")]
    await node.wait_for(lambda: node.messages(SetLane).count(SetLane(0, 3500, 20, "COLA-330")) == 3)  # the stale one
    await node.wait_for(lambda: [m for m in node.messages(SetLane) if m.lane == 0][-1].sku == "TEA")


# ------------------------------------------------------------------ a node the hub has not heard since it started


async def test_a_node_not_heard_since_the_hub_started_is_refused_with_what_to_do_instead(
    hub: HubService, node: FakeNode, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its lanes are not known (no hello, no beacon), so the lane cannot be checked: refused at once (exit 2),
    nothing queued or written. The line's two ways out both work: the ledger only (beside the running hub), sent
    to the node after its hello; or set-lane again once the node is heard."""
    from hub.cli import main

    argv = ["hub", "command", "--config", str(config), "--timeout", "2", "1", "set-lane", "0", "COLA-330"]
    rc = await asyncio.to_thread(main, argv)
    assert (rc, capsys.readouterr().err) == (
        2,
        "smartshelf hub: node 1 has not been heard since the hub started (nor while set-lane waited for it), so its"
        " lanes are not known: nothing sent."
        f" Power it and check its link (smartshelf hub status --config {config}), then set-lane again; or book the"
        f" assignment in the ledger only (smartshelf ledger assign-lane --config {config} --node 1 --lane 0 --sku"
        " COLA-330): the hub sends it to the node after its next hello\n",
    )
    assert lanes(config) == [] and "assign_lane" not in audit_actions(config)
    node.hello()  # powered on: nothing was left queued for it
    await node.wait_for(lambda: node.messages(RequestState))
    await asyncio.sleep(0.2)
    assert node.messages(SetLane) == []

    rc = await asyncio.to_thread(
        main, ["ledger", "assign-lane", "--config", str(config), "--node", "1", "--lane", "0", "--sku", "COLA-330"]
    )
    assert rc == 0 and lanes(config) == [(0, "COLA-330")]
    node.hello()  # its next hello (a reboot, or 5 quiet minutes) brings the ledger's assignment
    await node.wait_for(lambda: node.messages(SetLane) == [SetLane(0, 3500, 20, "COLA-330")])

    rc = await asyncio.to_thread(main, [*argv[:-3], "set-lane", "1", "TEA"])  # heard now: sent, and assigned
    assert rc == 0 and lanes(config) == [(0, "COLA-330"), (1, "TEA")]


async def test_a_node_heard_within_the_timeout_takes_set_lane_and_an_unknown_sku_is_bad_input(
    hub: HubService, node: FakeNode, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A board just flashed: ``smartshelf flash`` read its first hello, gave the port back, and the node says its next
    hello seconds later. A set-lane typed at once waits for it (within its timeout), then checks the lane and sends.
    An unknown SKU is refused before anything else (exit 2, nothing sent)."""
    from hub.cli import main

    argv = ["hub", "command", "--config", str(config), "--timeout", "10", "1", "set-lane"]
    rc = await asyncio.to_thread(main, [*argv, "0", "NOPE"])
    assert (rc, capsys.readouterr().err) == (
        2,
        "smartshelf hub: unknown SKU 'NOPE': add it first (smartshelf ledger add-sku); nothing sent\n",
    )
    loop = asyncio.get_running_loop()
    loop.call_later(1.5, node.hello)  # its next hello, 1.5 s after the command
    rc = await asyncio.to_thread(main, [*argv, "9", "TEA"])  # its lanes are known by then: 9 is beyond them
    assert rc == 2 and "node 1 has 4 lanes (0..3): there is no lane 9" in capsys.readouterr().err
    assert node.messages(SetLane) == []
    rc = await asyncio.to_thread(main, [*argv, "2", "TEA"])
    assert rc == 0 and lanes(config) == [(2, "TEA")]


async def test_a_node_heard_without_a_hello_after_a_hub_restart_still_takes_set_lane(
    config: Path, node: FakeNode
) -> None:
    """A hub restarted under a running node: the node did not reboot, so it says no hello (the hub keeps answering
    it in the restored session) and its lane count is not known. It is heard, so set-lane goes to it and its answer
    decides, as before: a lane it does not have is its STATUS_BAD_ARGS, and nothing is written."""
    hub = await start_hub(config)
    try:
        assert hub.ledger is not None
        await hub.ledger.add_sku(Sku("TEA", "Tea", 420, 20), actor="setup")
        node.hello()
        await node.wait_for(lambda: node.messages(RequestState))
    finally:
        await hub.stop()
    hub = await start_hub(config)
    try:
        assert hub.ingest is not None
        session = hub.ingest.nodes[1]
        node.send(node.lane_state(0))
        await node.wait_for(lambda: session.stats.frames)
        assert session.hello is None
        assert (await hub.set_lane(1, 0, "TEA", actor="setup")).ok
        node.answers["set_lane"] = (STATUS_BAD_ARGS, 0)
        refused = await hub.set_lane(1, 6, "TEA", actor="setup")
        assert refused.status == STATUS_BAD_ARGS and node.messages(SetLane)[-1] == SetLane(6, 420, 20, "TEA")
        assert lanes(config) == [(0, "TEA")]
    finally:
        await hub.stop()


def test_a_ble_nodes_beacon_says_its_lanes_and_that_it_is_there() -> None:
    """A BLE node is connected only when there is something to carry, so after a hub start it may have said no
    hello yet: its beacon (signed with its key) tells the hub it is there and how many lanes it has."""
    beacon = NodeBeacon(accepted=1, lane_count=2)
    check_lane(5, 1, "TEA", None, beacon, Path("hub.toml"))  # heard by its beacon: sent (a connection follows)
    with pytest.raises(InvalidArgument, match=r"^node 5 has 2 lanes \(0\.\.1\): there is no lane 2$"):
        check_lane(5, 2, "TEA", None, beacon, Path("hub.toml"))
    with pytest.raises(InvalidArgument, match="not been heard since the hub started") as refused:
        check_lane(5, 0, "ICED TEA", None, NodeBeacon(), Path("/etc/smart shelf/hub.toml"))  # none accepted yet
    assert "assign-lane --config '/etc/smart shelf/hub.toml' --node 5 --lane 0 --sku 'ICED TEA')" in str(refused.value)


async def test_a_node_this_hub_does_not_have_is_bad_input(
    hub: HubService, node: FakeNode, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 (bad arguments), like set-lane's refusals, whatever the command; nothing is sent or written. The line
    names the nodes the hub has and where nodes are configured (one line for every refusal: ``UnknownNode.of``)."""
    from hub.cli import main

    node.hello()
    await node.wait_for(lambda: node.messages(RequestState))
    sent = len(node.received)
    for verb in (["tare", "0"], ["set-lane", "0", "TEA"], ["set-count", "0", "3"], ["identify", "2"]):
        rc = await asyncio.to_thread(main, ["hub", "command", "--config", str(config), "9", *verb])
        assert (rc, capsys.readouterr().err) == (
            2,
            f"smartshelf hub: node 9 is not configured (this hub has node 1: {config}'s [[node]] tables and its"
            " nodes_files)\n",
        ), verb
    assert len(node.received) == sent and lanes(config) == []


@pytest.mark.parametrize(
    ("nodes", "has"),
    [
        ([], "no nodes"),
        ([3], "node 3"),
        ([2, 1], "nodes 1, 2"),
        ([*range(1, 13), 15, 20, 21], "nodes 1..12, 15, 20, 21"),
    ],
)
def test_the_unknown_node_line_names_the_nodes_the_hub_has(nodes: list[int], has: str) -> None:
    assert str(UnknownNode.of(42, nodes, Path("/etc/smartshelf/hub.toml"))) == (
        f"node 42 is not configured (this hub has {has}: /etc/smartshelf/hub.toml's [[node]] tables and its"
        " nodes_files)"
    )
