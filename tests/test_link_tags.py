"""RFID through the real hub (protocol v1.2): a fake node on a real pty sends authenticated ``tag_seen`` / ``tag_lost``
(sequenced with its weight events), ``reader_health`` and v1.0 sightings; the ledger books tag events exactly once
and the node's ack covers them only after commit, re-sent ones included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.ledger import Sku
from hub.service import HubService
from shared_protocol.messages import (
    READER_OK,
    READER_SILENT,
    ReaderHealth,
    RequestState,
    RfidLost,
    RfidSeen,
    TagLost,
    TagSeen,
)
from tests.hub_support import KEY1, FakeNode, db_rows, eventually, short_dir, start_hub, write_config

EPC = bytes.fromhex("3074257BF7194E4000001A85")  # GS1 TDS's SGTIN-96 example (GTIN 80614141123458)
EPC2 = bytes.fromhex("3074257BF7194E4000001A86")


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[FakeNode]:
    n = FakeNode(1, KEY1, tmp_path / "node-1")
    n.plug()
    yield n
    n.unplug()


@pytest.fixture
async def hub(tmp_path: Path, node: FakeNode) -> AsyncIterator[HubService]:
    with short_dir() as sockdir:
        service = await start_hub(write_config(tmp_path, sockdir, [node]))
        assert service.ledger is not None
        await service.ledger.add_sku(Sku("COLA", "Cola", 3500, 20, gtin="80614141123458"), actor="setup")
        await service.ledger.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
        try:
            yield service
        finally:
            await service.stop()


def seen(node: FakeNode, lane: int = 0, epc: bytes = EPC, age_ms: int = 400, rssi: int = -48) -> TagSeen:
    node.event_seq += 1
    return TagSeen(node.event_seq, lane, rssi, age_ms, epc)


def lost(node: FakeNode, lane: int = 0, epc: bytes = EPC, age_ms: int = 3000) -> TagLost:
    node.event_seq += 1
    return TagLost(node.event_seq, lane, age_ms, epc)


def tag_rows(hub: HubService) -> list[tuple[Any, ...]]:
    return db_rows(
        hub.config.database,
        "SELECT node_id, event_seq, lane_id, epc, kind, effect, ts_ms, sku FROM tag_events ORDER BY event_seq",
    )


async def handshake(node: FakeNode) -> None:
    node.hello()
    await node.wait_for(lambda: node.messages(RequestState))


async def test_tag_events_are_booked_once_and_acked_with_the_weight_events_after_commit(
    hub: HubService, node: FakeNode
) -> None:
    await handshake(node)
    arrival = seen(node)
    node.send(arrival)
    node.event(0, -1)  # a weight event between the two: one sequence
    departure = lost(node)
    sent = node.send(departure)
    await node.wait_ack(3)
    rows = tag_rows(hub)
    assert [(r[1], r[2], r[4], r[5], r[7]) for r in rows] == [
        (1, "A1", "seen", "arrived", "COLA"),  # the SKU the EPC's GTIN names
        (3, "A1", "lost", "left", "COLA"),
    ]
    assert rows[0][3] == EPC.hex().upper()
    acks_before = len(node.acks)
    node.send(arrival)  # the node did not hear the ack: it re-sends both, in new frames (new frame seqs)
    node.send(departure)
    assert sent != node.frame(departure)
    assert hub.ingest is not None
    await eventually(lambda: hub.ingest and hub.ingest.nodes[1].rfid.tags_duplicates == 2, what="two duplicates")
    await node.wait_for(lambda: len(node.acks) > acks_before)
    assert max(node.acks) == 3 and len(tag_rows(hub)) == 2  # covered once, booked once
    presence = db_rows(hub.config.database, "SELECT lane_id, present, seq, first_seen_ms, left_ms FROM tag_presence")
    assert len(presence) == 1 and presence[0][:3] == ("A1", 0, 3)
    assert presence[0][4] == rows[1][6]  # its departure: the last read (arrival - age_ms)
    status = hub.status()["nodes"][0]["rfid"]
    assert (status["tag_events"], status["tag_events_applied"], status["tag_events_duplicates"]) == (4, 2, 2)


async def test_a_tag_event_after_a_hole_in_the_sequence_waits_for_it_like_an_event(
    hub: HubService, node: FakeNode
) -> None:
    await handshake(node)
    node.send(seen(node))  # 1
    missing = node.make_event(0, -1)  # 2: a weight event whose frame is lost on the way
    node.send(lost(node))  # 3
    await eventually(lambda: len(tag_rows(hub)) == 2, what="both tag events booked")
    await eventually(lambda: node.acks and max(node.acks) == 1, what="the ack of 1")  # sent after the commit
    assert max(node.acks) == 1  # 2 missing: nothing past it is acknowledged
    node.send(missing)  # re-sent by the node
    await node.wait_ack(3)  # now one ack covers the weight event and the tag event after it
    assert db_rows(hub.config.database, "SELECT event_seq FROM movements WHERE node_id = 1") == [(2,)]


async def test_tag_events_a_full_outbox_dropped_move_the_mark_without_booking_stock(
    hub: HubService, node: FakeNode
) -> None:
    await handshake(node)
    await eventually(lambda: hub.ingest and all(t.total == 0 for t in hub.ingest.nodes[1].tallies.values()))
    for _ in range(3):
        seen(node)  # 1..3: tag events the node's full outbox dropped, never sent
    held = seen(node, epc=EPC2)  # 4: still in the outbox
    node.send(held)
    await eventually(lambda: len(tag_rows(hub)) == 1, what="event 4 booked")
    node.health(outbox_first=4, outbox_depth=1, dropped=3)
    await node.wait_ack(4)
    db = hub.config.database
    assert db_rows(db, "SELECT count(*) FROM movements WHERE reason = 'sensor_gap'") == [(0,)]  # no stock gap
    skips = db_rows(db, "SELECT actor, details FROM audit WHERE action = 'event_skip'")
    assert len(skips) == 1 and skips[0][0] == "node:1" and '"to":3' in skips[0][1].replace(" ", "")
    assert db_rows(db, "SELECT highest_contiguous_event_seq FROM nodes WHERE node_id = 1") == [(4,)]


async def test_reader_health_is_in_the_status_and_its_outages_in_the_ledger(hub: HubService, node: FakeNode) -> None:
    await handshake(node)
    node.send(ReaderHealth(0, READER_OK, 120, 0, 0, 0, 2))
    node.send(ReaderHealth(0, READER_SILENT, 130, 0, 0, 1, 2))
    await eventually(lambda: db_rows(hub.config.database, "SELECT count(*) FROM rfid_outages") == [(1,)])
    node.send(ReaderHealth(0, READER_OK, 140, 0, 0, 1, 2))
    await eventually(
        lambda: db_rows(hub.config.database, "SELECT cause FROM rfid_outages WHERE to_ms IS NOT NULL") == [("silent",)]
    )
    readers = hub.status()["nodes"][0]["rfid"]["readers"]
    assert [(r["reader"], r["state"], r["reads"], r["silences"], r["present"]) for r in readers] == [
        (0, "ok", 140, 1, 2)
    ]


async def test_v10_sightings_are_counted_and_never_booked(hub: HubService, node: FakeNode) -> None:
    await handshake(node)
    node.send(RfidSeen(0, -50, EPC))
    node.send(RfidLost(0, EPC))
    await eventually(lambda: hub.status()["nodes"][0]["rfid"]["v10_sightings_ignored"] == 2, what="counted")
    assert tag_rows(hub) == [] and db_rows(hub.config.database, "SELECT count(*) FROM tag_presence") == [(0,)]


async def test_after_a_restart_the_tags_are_unconfirmed_until_read_again_and_keep_their_arrival(
    hub: HubService, node: FakeNode
) -> None:
    await handshake(node)
    node.send(seen(node))
    node.send(seen(node, epc=EPC2))
    await node.wait_ack(2)
    db = hub.config.database
    arrived = db_rows(db, "SELECT epc, first_seen_ms FROM tag_presence ORDER BY epc")
    node.reboot(2)
    node.hello()  # a new boot count: the node holds no tag any more and reads them all again
    await eventually(
        lambda: db_rows(db, "SELECT count(*) FROM tag_presence WHERE unconfirmed_ms IS NOT NULL") == [(2,)]
    )
    node.send(seen(node, age_ms=200))  # read again after the restart: still there
    await node.wait_ack(3)
    rows = db_rows(db, "SELECT epc, first_seen_ms, unconfirmed_ms, present FROM tag_presence ORDER BY epc")
    assert rows[0] == (EPC.hex().upper(), arrived[0][1], None, 1)  # its arrival is the first one
    assert rows[1][2] is not None and rows[1][3] == 1  # not read yet: unconfirmed, not gone
    assert db_rows(db, "SELECT effect, note FROM tag_events WHERE event_seq = 3") == [
        ("still", "read again after its node restarted: still there")
    ]
