"""The hub's BLE side (``hub/transport/ble``) inside a real ``HubService``, against synthetic nodes that are real
Bumble peripherals on the emulated air (tools/emulation/radio/synthetic.py): slots shared fairly, beacons verified
and counted, events booked exactly once, commands to nodes that hold no connection, a hub restart, a lost adapter.

The hub reaches the air exactly as in production with a Bumble adapter: ``[ble] adapter = "bumble:unix:<socket>"``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.config import load_config
from hub.service import HubService
from shared_protocol import beacon as bc
from shared_protocol.auth import Key
from shared_protocol.messages import STATUS_OK, Identify
from tests.hub_support import db_rows, eventually, short_dir
from tools.emulation.radio.air import Air, static_address
from tools.emulation.radio.synthetic import BleFakeNode, Watch, add_nodes, node_address

# Real time on the emulated air (a command's round trip is held to seconds): run alone (tests/xdist_support.py)
pytestmark = pytest.mark.slow

SLOTS = 5
NODES = list(range(1, 13))
KEYS = {nid: bytes([nid]) * 16 for nid in NODES}


def _write_config(
    directory: Path, socket: Path, *, addresses: bool = True, slots: int = SLOTS, nodes: list[int] = NODES
) -> Path:
    out = [
        "[hub]",
        f"database = {json.dumps(str(directory / 'ledger.db'))}",
        f"control_socket = {json.dumps(str(directory / 'hub.sock'))}",
        "",
        "[ble]",
        f'adapter = "bumble:unix:{socket}"',
        f"slots = {slots}",
        "idle_s = 0.5",
        "hold_s = 2.0",
    ]
    for nid in nodes:
        out += ["", "[[node]]", f"id = {nid}", f'key = "{KEYS[nid].hex()}"', 'link = "ble"']
        if addresses and nid != 12:  # node 12 is found by its beacon alone
            out.append(f'address = "{node_address(nid)}"')
    path = directory / "hub.toml"
    path.write_text("\n".join(out) + "\n")
    path.chmod(0o600)  # it holds node keys: the hub refuses to start on keys other users can read
    return path


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Path, Air, dict[int, BleFakeNode], Watch]]:
    with short_dir() as d:
        air = Air(hub_slots=SLOTS)
        await air.serve_hci(str(d / "hci.sock"))
        watch = Watch()
        nodes = await add_nodes(air, KEYS, watch)
        try:
            yield d, air, nodes, watch
        finally:
            await air.close()


async def _settled(hub: HubService, nodes: dict[int, BleFakeNode], timeout: float = 60.0) -> None:
    def done() -> bool:
        st = hub.status()
        return all(not n.outbox for n in nodes.values()) and st["ble"]["slots_used"] == 0

    await eventually(done, timeout, "every outbox acknowledged and every slot free")


async def test_twelve_nodes_share_five_slots_fairly_and_every_event_is_booked_once(
    rig: tuple[Path, Air, dict[int, BleFakeNode], Watch],
) -> None:
    d, _air, nodes, watch = rig
    for n in nodes.values():  # every node has events waiting before the hub starts: all want a slot at once
        for i in range(3):
            n.pick(i % 2)
        await n.advertise()
    async with HubService(load_config(_write_config(d, d / "hci.sock")), control=False, reconcile=False) as hub:
        await _settled(hub, nodes)
        # More picks while the hub runs: each node's new beacon says events wait; the hub connects and drains.
        for round_ in range(2):
            for n in nodes.values():
                n.pick(round_ % 2)
                await n.advertise()
            await _settled(hub, nodes)
        st = hub.status()
    assert watch.most <= SLOTS  # never more connections than slots (the adapter would refuse more, too)
    assert watch.most == SLOTS  # ... and the slots were used
    assert set(watch.connects) == set(NODES)
    rows = db_rows(d / "ledger.db", "SELECT node_id, event_seq FROM movements WHERE event_seq IS NOT NULL")
    assert sorted(rows) == sorted((nid, s) for nid in NODES for s in range(1, 6))  # each once, none missing
    beacons = st["ble"]["beacons"]
    assert beacons["forged"] == beacons["replayed"] == beacons["unknown"] == 0
    by_id = {n["node_id"]: n for n in st["nodes"]}
    assert by_id[12]["ble"]["address"] == node_address(12)  # found by its beacon's node id


async def test_busy_nodes_are_rotated_only_when_others_wait(
    rig: tuple[Path, Air, dict[int, BleFakeNode], Watch],
) -> None:
    """Four nodes that never go quiet (a pick every 0.05 s while connected) over two slots: the hub rotates the
    connections held longest (``hold_s``), so all four are served in turn; with a slot to spare, nobody is cut off."""
    d, _air, nodes, watch = rig
    busy = {nid: nodes[nid] for nid in (1, 2, 3, 4)}
    stop = asyncio.Event()

    async def shop(n: BleFakeNode) -> None:
        while not stop.is_set():
            if n.conn is not None or not n.outbox:
                n.pick(n.event_seq % 2)
                if n.conn is None:
                    await n.advertise()
            await asyncio.sleep(0.05)

    cfg = _write_config(d, d / "hci.sock", slots=2, nodes=list(busy))
    async with HubService(load_config(cfg), control=False, reconcile=False) as hub:
        tasks = [asyncio.create_task(shop(n)) for n in busy.values()]
        await eventually(lambda: all(watch.connects.get(nid, 0) >= 2 for nid in busy), 60, "every node served twice")
        stop.set()
        await asyncio.gather(*tasks)
        await _settled(hub, busy)
        rotated = {n["node_id"]: n["ble"]["rotations"] for n in hub.status()["nodes"]}
    assert watch.most <= 2
    assert all(watch.connects[nid] >= 2 for nid in busy)  # everyone got a slot, more than once
    assert sum(rotated.values()) >= 2, rotated  # busy connections were cut to let the waiting in
    rows = db_rows(d / "ledger.db", "SELECT node_id, count(*) FROM movements WHERE event_seq IS NOT NULL GROUP BY 1")
    assert dict(rows) == {nid: n.event_seq for nid, n in busy.items()}  # every pick booked once


async def test_forged_and_replayed_beacons_are_counted_and_change_nothing(
    rig: tuple[Path, Air, dict[int, BleFakeNode], Watch],
) -> None:
    d, air, nodes, watch = rig
    real = nodes[12]  # no configured address: identified by the beacon alone
    real.pick(0)
    old = real.last_adv if real.last_adv else real.beacon_adv()
    async with HubService(load_config(_write_config(d, d / "hci.sock")), control=False, reconcile=False) as hub:
        await real.advertise()
        await _settled(hub, {12: real})
        seen = hub.status()["nodes"][11]["ble"]["beacon"]
        connects = watch.connects.get(12, 0)
        rogue = await air.new_device("rogue", static_address("02:BA:D0:00:00:01"))

        async def advertise(adv: bytes) -> None:
            if rogue.is_advertising:
                await asyncio.wait_for(rogue.stop_advertising(), 10)
            await asyncio.wait_for(rogue.start_advertising(advertising_data=adv, advertising_interval_min=20), 10)

        # 1. a beacon for node 12 with a wrong tag (another key), a higher counter and a different count
        forged = bc.Beacon(12, 0x7FFFFFFF, bc.WAITING, 0, 2, [bc.lane_entry(99, False, False), 0, 0, 0])
        await advertise(forged.advertisement(Key(b"\x55" * 16)))
        await eventually(lambda: hub.status()["ble"]["beacons"]["forged"] >= 1, 10, "the forged beacon counted")
        # 2. node 12's own older beacon, replayed from another radio
        await advertise(old)
        await eventually(lambda: hub.status()["ble"]["beacons"]["replayed"] >= 1, 10, "the replay counted")
        # 3. node 3's genuine beacon from an address that is not node 3's configured one
        await advertise(nodes[3].beacon_adv())
        await eventually(lambda: hub.status()["ble"]["beacons"]["forged"] >= 2, 10, "the misplaced beacon counted")
        # 4. a beacon of a node this hub does not know
        await advertise(bc.Beacon(99, 1, 0, 0, 1, [1, 0, 0, 0]).advertisement(Key(b"\x01" * 16)))
        await eventually(lambda: hub.status()["ble"]["beacons"]["unknown"] >= 1, 10, "the unknown beacon counted")
        await asyncio.wait_for(rogue.stop_advertising(), 10)
        now = hub.status()["nodes"][11]["ble"]["beacon"]  # what node 12's own beacons say, nothing of the rogue's
        assert seen["counter"] <= now["counter"] <= real.seq and now["waiting"] is False
        assert {k: v["count"] for k, v in now["lanes"].items()} == {"0": 0, "1": 0}  # the forged 99 never shown
        assert watch.connects.get(12, 0) == connects  # the forged "waiting" caused no connection


async def test_a_command_reaches_a_node_that_holds_no_connection_and_a_restarted_hub_resumes(
    rig: tuple[Path, Air, dict[int, BleFakeNode], Watch],
) -> None:
    d, _air, nodes, watch = rig
    for n in nodes.values():
        await n.advertise()
    cfg = _write_config(d, d / "hci.sock")
    async with HubService(load_config(cfg), control=False, reconcile=False) as hub:
        await eventually(lambda: set(watch.connects) == set(NODES), 30, "every node visited once at start")
        await _settled(hub, nodes)  # ... and let go
        await eventually(lambda: hub.status()["ble"]["slots_used"] == 0, 10, "slots free")
        before = dict(watch.connects)
        t0 = time.monotonic()
        outcome = await hub.command(7, Identify(3), timeout_s=10)
        assert outcome.status == STATUS_OK and time.monotonic() - t0 < 5
        assert watch.connects[7] == before[7] + 1
        assert [f.message for f in nodes[7].received if isinstance(f.message, Identify)] == [Identify(3)]
    # A restarted hub (same ledger, new adapter session): picks made while it was down are booked once.
    nodes[4].pick(1)
    await nodes[4].advertise()
    async with HubService(load_config(cfg), control=False, reconcile=False) as hub:
        await _settled(hub, nodes)
    rows = db_rows(d / "ledger.db", "SELECT event_seq FROM movements WHERE node_id = 4 AND event_seq IS NOT NULL")
    assert rows == [(1,)]


async def test_a_lost_adapter_is_reopened_and_the_nodes_are_served_again() -> None:
    """The HCI transport goes away (a dongle unplugged; here the emulated air stops) and comes back: the hub reopens
    its adapter with back-off and drains what the nodes recorded meanwhile."""
    with short_dir() as d:
        sock = d / "hci.sock"
        air = Air(hub_slots=SLOTS)
        await air.serve_hci(str(sock))
        watch = Watch()
        keys = {1: KEYS[1], 2: KEYS[2]}
        nodes = await add_nodes(air, keys, watch)
        for n in nodes.values():
            n.pick(0)
            await n.advertise()
        cfg = _write_config(d, sock)
        try:
            async with HubService(load_config(cfg), control=False, reconcile=False) as hub:
                await _settled(hub, nodes)
                await air.close()  # the adapter and the nodes' radios are gone
                await eventually(lambda: hub.status()["ble"]["adapter_up"] is False, 10, "the adapter seen lost")
                air = Air(hub_slots=SLOTS)
                await air.serve_hci(str(sock))
                again = await add_nodes(air, keys, watch)
                for nid, n in again.items():  # the same nodes, rebooted: their flash kept seq and events
                    old = nodes[nid]
                    n.seq, n.event_seq, n.acked, n.counts = old.seq, old.event_seq, old.acked, old.counts
                    n.reboot(2)
                    n.pick(1)
                    await n.advertise()
                await _settled(hub, again, timeout=60)
                assert hub.status()["ble"]["adapter_up"] is True
        finally:
            await air.close()
        rows = db_rows(d / "ledger.db", "SELECT node_id, event_seq FROM movements WHERE event_seq IS NOT NULL")
    assert sorted(rows) == [(1, 1), (1, 2), (2, 1), (2, 2)]
