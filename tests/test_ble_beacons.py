"""``BeaconBook``: which advertisements the hub believes, and how it counts the rest (hub/transport/ble/beacons.py)."""

from __future__ import annotations

from hub.transport.ble.beacons import REPEAT_S, BeaconBook
from shared_protocol import beacon as bc
from shared_protocol.auth import Key

KEY = bytes(range(16))
NODE_ADDR = "C2:5E:5E:00:00:07"
OTHER = "C2:BA:D0:00:00:01"


def payload(counter: int, counts: tuple[int, int] = (5, 6), flags: int = 0, key: bytes = KEY, node: int = 7) -> bytes:
    adv = bc.Beacon(node, counter, flags, 0, 2, [counts[0], counts[1], 0, 0]).advertisement(Key(key))
    p = bc.payload_of(adv)
    assert p is not None
    return p


def test_accepted_repeated_replayed_forged_unknown_malformed() -> None:
    book = BeaconBook()
    book.add_node(7, KEY)  # no configured address: found by its beacon
    book.add_node(8, KEY, "c2:5e:5e:00:00:08")
    assert book.heard(NODE_ADDR, payload(10), -60, now=100.0) == 7
    node = book.nodes[7]
    assert (node.counter, node.address, node.rssi, node.lanes[1].count) == (10, NODE_ADDR, -60, 6)
    # the same beacon again, from the node: its age and RSSI refresh
    assert book.heard(NODE_ADDR, payload(10), -70, now=110.0) == 7
    assert (node.heard, node.rssi, book.counts.repeated) == (110.0, -70, 1)
    # the node's current beacon replayed from another radio: not the node, and it does not move it
    assert book.heard(OTHER, payload(10), -40, now=111.0) is None
    assert (node.address, node.heard, book.counts.replayed) == (NODE_ADDR, 110.0, 1)
    # an older authentic beacon: replayed; a newer one with a wrong key: forged
    assert book.heard(NODE_ADDR, payload(9, (99, 99)), -60, now=112.0) is None
    assert book.heard(NODE_ADDR, payload(11, (98, 98), key=b"x" * 16), -60, now=112.0) is None
    assert (book.counts.replayed, book.counts.forged, node.lanes[0].count) == (2, 1, 5)
    # the current beacon heard long after the node should have renewed it: stale (a dead node is not kept alive)
    assert book.heard(NODE_ADDR, payload(10), -60, now=100.0 + REPEAT_S + 1) is None
    assert (node.heard, book.counts.replayed) == (110.0, 3)
    # a newer beacon with fewer lanes... and waiting; a configured node from the wrong address: forged
    assert book.heard(NODE_ADDR, payload(12, (4, 6), bc.WAITING), -60, now=200.0) == 7
    assert node.waiting and node.lanes[0].count == 4
    assert book.heard(OTHER, payload(1, node=8), -60, now=200.0) is None
    assert book.counts.forged == 2
    assert book.heard("C2:5E:5E:00:00:08", payload(1, node=8), -60, now=200.0) == 8  # its address, any case
    # not a node of this hub; not a beacon at all
    assert book.heard(OTHER, payload(1, node=99), -60, now=200.0) is None
    assert book.heard(OTHER, payload(1)[:-1], -60, now=200.0) is None
    c = book.counts
    assert (c.unknown, c.malformed, c.accepted, c.seen) == (1, 1, 3, 11)
