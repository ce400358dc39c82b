"""Hardware-in-the-loop over BLE under faults: exactly once, whatever the air and the hub go through.

Three emulated nodes (the real firmware under MicroPython, each with its radio on the emulated air: a Bumble
peripheral) play the ``shoppers`` scenario at MTU 23 (every event frame is two notifications) and share two of the
hub's connection slots. The hub is the real ``smartshelf hub run`` subprocess on its own Bumble adapter over the
air's HCI socket. Faults:

* the hub is SIGKILLed twice (once while the shoppers shop, once after, while events drain) and restarted: every
  connection it held ends mid-traffic, often between the two fragments of a frame;
* node 1's board is killed while the hub is down and its outbox holds unacknowledged events (a power cycle); the
  emulator restarts it on the same flash with a new radio;
* a rogue central connects to node 3 and writes forged frames: the node refuses them (``rx_rejected``) and drops
  the stranger after ``AUTH_MS``, and the hub still gets through;
* a rogue radio advertises forged beacons (a wrong key; a node's genuine beacon from another address) and a
  replayed one (an old counter, the node's key).

Checked once everything has settled: the ledger's observed stock per lane equals the ground truth; one movement
per (node, event_seq), exactly 1..N per node with N the truth's countable actions; node 1's pre-reboot events were
re-sent and booked once; the hub counted the forged and replayed beacons and showed none of their counts; the
frames were carried at MTU 23.

Twelve nodes over five slots is tested with synthetic nodes (tests/test_ble_central.py): twelve MicroPython boards
at once are more than this machine's two cores can sample in real time.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bumble.core import UUID
from bumble.device import Connection, Peer

from shared_protocol import beacon as bc
from shared_protocol.auth import Key
from shared_protocol.ble_fragments import fragment
from shared_protocol.ble_gatt import DOWNLINK_UUID, SERVICE_UUID
from shared_protocol.frame import encode_frame
from shared_protocol.messages import Ack, Tare
from tests.faults.harness import (
    HubProcess,
    contiguous,
    observed_stock,
    query,
    seed,
    unacked_on_flash,
    write_ble_hub_config,
)
from tests.faults.rig import Rig, shelf_quiet, shoppers, status_nodes
from tools.emulation.host import Emulator
from tools.emulation.radio.air import static_address
from tools.emulation.radio.host import Radio
from tools.emulation.store import expected_outcome

pytestmark = [pytest.mark.slow, pytest.mark.micropython, pytest.mark.usefixtures("emulated_boards")]

SEED = 11
NODES = [1, 2, 3]
SLOTS = 2
MTU = 23
SHOPPING_S = 60.0
REBOOTED = 1
STRANGER_TARGET = 3
BEACON_TARGET = 2
EVENT_ACTIONS = {"pick", "put_back", "restock", "theft", "damage", "misplaced"}
SETTLE_TIMEOUT_S = 150.0


async def _stranger(radio: Radio, address: str, key: bytes, node_id: int) -> int:
    """A rogue central: connect to the node, write frames tagged with a wrong key (and one that is only garbage),
    stay until the node drops it; the disconnect reason."""
    assert radio.air is not None
    dev = await radio.air.new_device("stranger", static_address("02:BA:D0:00:00:02"))
    conn: Connection | None = None
    for _ in range(20):  # the node advertises only while no hub holds it: wait for its advert, then connect
        heard: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_advert(advert: Any, heard: asyncio.Future[None] = heard) -> None:
            if str(getattr(advert, "address", "")) == address and not heard.done():
                heard.set_result(None)

        dev.on(dev.EVENT_ADVERTISEMENT, on_advert)
        await dev.start_scanning(active=False, filter_duplicates=False)
        try:
            await asyncio.wait_for(heard, 10.0)
        except TimeoutError:
            continue
        finally:
            dev.remove_listener(dev.EVENT_ADVERTISEMENT, on_advert)
            await dev.stop_scanning()
        try:
            conn = await dev.connect(address, timeout=5.0)
            break
        except Exception:
            await asyncio.sleep(0.2)
    if conn is None:
        raise AssertionError(f"the stranger never got a connection to {address}")
    gone: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def ended(reason: int) -> None:
        if not gone.done():
            gone.set_result(int(reason))

    conn.on(conn.EVENT_DISCONNECTION, ended)
    peer = Peer(conn)
    await peer.discover_services([UUID(SERVICE_UUID)])
    for service in peer.services:
        await service.discover_characteristics()
    (down,) = peer.get_characteristics_by_uuid(UUID(DOWNLINK_UUID))
    forged = [encode_frame(m, node_id, 1000 + i, Key(key), 1) for i, m in enumerate([Ack(999), Tare(0)])]
    for i, frame in enumerate(forged):
        for part in fragment(frame, 23, i):
            await down.write_value(part, with_response=True)
    await down.write_value(b"\x07\x00garbage", with_response=True)
    try:
        return await asyncio.wait_for(gone, 40.0)  # the node lets a stranger go after AUTH_MS (15 s)
    finally:
        await dev.power_off()


async def _advertise(radio: Radio, advs: list[bytes]) -> None:
    """A rogue radio advertising each of ``advs`` for a second."""
    assert radio.air is not None
    dev = await radio.air.new_device("rogue", static_address("02:BA:D0:00:00:01"))
    try:
        for adv in advs:
            await dev.start_advertising(advertising_data=adv, advertising_interval_min=20)
            await asyncio.sleep(1.0)
            await dev.stop_advertising()
    finally:
        await dev.power_off()


def test_exactly_once_over_ble_under_hub_kills_a_node_reboot_strangers_and_forged_beacons(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    scenario = shoppers(NODES, SEED, SHOPPING_S)
    db = tmp_path / "ledger.db"
    seed(db, scenario)
    rig = Rig(tmp_path)
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        rig.note(line)

    emu = Emulator(NODES, scenario, tmp_path / "emu", seed=SEED, fresh=True, out=out, link="ble", ble_mtu=MTU)
    rig.emu = emu
    try:
        emu.start()
        radio = emu.radio
        assert radio is not None
        adapter = next(line.split(": ", 1)[1] for line in lines if line.startswith("hub BLE adapter: "))
        cfg = write_ble_hub_config(
            tmp_path, db, tmp_path / "emu" / "nodes.toml", adapter, slots=SLOTS, idle_s=1.0, hold_s=4.0
        )
        hub = HubProcess(cfg, tmp_path / "hub.log")
        rig.hub = hub
        hub.start()
        by_id = {n.node_id: n for n in emu.nodes}

        # 1. A hub kill while the shoppers shop, with node 1's board killed during the outage: once an event waits in
        #    its outbox, at a moment when nothing happens on its shelf for the next seconds (a board that is off sees
        #    nothing: a pick during its restart is lost to any firmware, and is not what this test is about).
        rig.until_elapsed(rng.uniform(14.0, 18.0))
        hub.kill()
        rig.note(f"hub SIGKILLed at {emu.elapsed():.1f} s")
        node = by_id[REBOOTED]

        def quiet_with_events_waiting() -> bool:
            calm = shelf_quiet(scenario, REBOOTED, emu.elapsed())
            return calm and unacked_on_flash(node.flash_dir, contiguous(db, REBOOTED)) >= 1

        rig.wait(quiet_with_events_waiting, 60.0, "an unacknowledged event in node 1's outbox, its shelf quiet")
        pending = unacked_on_flash(node.flash_dir, contiguous(db, REBOOTED))
        assert node.process is not None and node.process.proc is not None
        node.process.proc.kill()
        rig.note(f"node {REBOOTED} killed at {emu.elapsed():.1f} s with {pending} unacked event(s)")
        rig.wait(lambda: node.restarts >= 1 and node.process is not None, 30.0, "the node's restart")
        rig.sleep(rng.uniform(1.0, 3.0))
        hub.start()
        rig.note(f"hub restarted at {emu.elapsed():.1f} s")

        # 2. A stranger on node 3, and forged / replayed beacons of node 2, while the shoppers shop (and this hub
        #    scans: its counters are the ones checked).
        rig.until_elapsed(32.0)
        rig.wait(lambda: bool(((hub.status() or {}).get("ble") or {}).get("adapter_up")), 60.0, "the hub scanning", 1.0)
        key2 = by_id[BEACON_TARGET].key
        forged_key = bc.Beacon(BEACON_TARGET, 0x7FFFFF00, bc.WAITING, 0, 4, [bc.lane_entry(999, False, False)] * 4)
        genuine = bc.Beacon(BEACON_TARGET, 0x7FFFFF01, 0, 0, 4, [bc.lane_entry(998, False, False)] * 4)
        replayed = bc.Beacon(BEACON_TARGET, 1, bc.WAITING, 0, 4, [bc.lane_entry(997, False, False)] * 4)
        advs = [
            forged_key.advertisement(Key(b"\x5a" * 32)),  # a wrong key
            genuine.advertisement(Key(key2)),  # the node's key, from another address than the node's
            replayed.advertisement(Key(key2)),  # an old counter (replay), from another address: forged first
        ]
        radio.call(_advertise(radio, advs), timeout_s=30.0)
        rig.note(f"forged beacons advertised at {emu.elapsed():.1f} s")

        # All three come from an address that is not node 2's configured one: forged (a replay from the node's own
        # address is counted as replayed: tests/test_ble_central.py). This hub heard them (its counters die with it).
        def counted() -> bool:
            st = hub.status()
            return st is not None and st["ble"]["beacons"]["forged"] >= 3

        rig.wait(counted, 30.0, "the forged beacons counted", 1.0)
        seen = hub.status()
        assert seen is not None, rig.report()
        shown = status_nodes(seen)[BEACON_TARGET]["ble"]["beacon"]
        assert shown is None or all(v["count"] < 997 for v in shown["lanes"].values()), (shown, rig.report())
        target = by_id[STRANGER_TARGET]
        before = (status_nodes(seen)[STRANGER_TARGET].get("health") or {}).get("rx_rejected", 0)
        reason = radio.call(_stranger(radio, target.address, b"\x66" * 32, STRANGER_TARGET), timeout_s=90.0)
        rig.note(f"stranger on node {STRANGER_TARGET} dropped (reason 0x{reason:02x}) at {emu.elapsed():.1f} s")

        # 3. A hub kill after the shoppers left, while the last events drain.
        rig.until_elapsed(SHOPPING_S + rng.uniform(1.0, 4.0))
        hub.kill()
        rig.note(f"hub SIGKILLed at {emu.elapsed():.1f} s")
        rig.sleep(rng.uniform(1.0, 3.0))
        hub.start()
        rig.note(f"hub restarted at {emu.elapsed():.1f} s")

        # Settle: the whole truth is in and the ledger shows it.
        end_s = max(r.t_end for r in scenario.truth) + 1.0
        rig.until_elapsed(end_s)
        want = {lid: units for lid, (_sku, units) in expected_outcome(scenario.truth, end_s).counts.items()}
        rig.wait(lambda: observed_stock(db) == want, SETTLE_TIMEOUT_S, "the ledger to equal the ground truth", 0.5)
        rig.note(f"settled at {emu.elapsed():.1f} s")

        # Exactly once: per node, event_seq 1..N, N the truth's countable actions.
        truth_events = Counter(r.node for r in scenario.truth if r.action in EVENT_ACTIONS)
        report = rig.report()
        dupes = query(
            db,
            "SELECT node_id, event_seq, count(*) FROM movements WHERE event_seq IS NOT NULL"
            " GROUP BY node_id, event_seq HAVING count(*) > 1",
        )
        assert dupes == [], report
        for nid in NODES:
            rows = query(
                db,
                "SELECT event_seq FROM movements WHERE node_id = ? AND event_seq IS NOT NULL ORDER BY event_seq",
                (nid,),
            )
            assert [int(s) for (s,) in rows] == list(range(1, truth_events[nid] + 1)), (nid, report)
        resent = query(
            db, "SELECT count(*) FROM movements WHERE node_id = ? AND note LIKE 'age unknown%'", (REBOOTED,)
        )[0][0]
        assert resent >= 1, report

        # The hub counted the rogue's beacons and shows none of their counts; the stranger's frames were refused.
        def node2_beacon_current() -> bool:
            n = status_nodes(hub.status()).get(BEACON_TARGET, {})
            beacon = (n.get("ble") or {}).get("beacon")
            return beacon is not None and not beacon["waiting"]

        rig.wait(node2_beacon_current, 60.0, "node 2's own beacon", 1.0)

        def stranger_target_health() -> bool:  # this hub process (restarted) has heard that node's health again
            return bool(status_nodes(hub.status()).get(STRANGER_TARGET, {}).get("health"))

        rig.wait(stranger_target_health, 60.0, f"node {STRANGER_TARGET}'s health since the hub's restart", 1.0)
        final: dict[str, Any] | None = hub.status()
        assert final is not None, report
        (tmp_path / "final-status.json").write_text(json.dumps(final, indent=1, sort_keys=True))
        nodes = status_nodes(final)
        lanes = nodes[BEACON_TARGET]["ble"]["beacon"]["lanes"]
        assert all(v["count"] < 997 for v in lanes.values()), (lanes, report)
        health = nodes[STRANGER_TARGET].get("health") or {}
        assert health.get("rx_rejected", 0) >= before + 3, (before, health, report)  # two forged frames, the garbage
        assert reason == 0x13, report  # the node ended the stranger's connection (remote user terminated)
        hub_log = (tmp_path / "hub.log").read_text(errors="replace")
        assert f"MTU {MTU})" in hub_log, report
        rc = hub.stop()
        rig.hub = None
        assert rc == 0, report
    finally:
        if rig.hub is not None:
            rig.hub.stop()
        emu.stop(quiet=True)
