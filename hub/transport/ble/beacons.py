"""``BeaconBook``: the lane-state beacons BLE nodes advertise, verified, with what each says and how old it is.

A beacon (``shared_protocol/beacon.py``) is the cheap channel: the hub learns a node's counts, faults and whether
events wait for it without holding a connection. Nothing here reaches the ledger; a beacon changes what the page
shows and whether the connection manager wants a slot for the node.

An advertisement is accepted when its manufacturer data is a well-formed beacon of a configured BLE node, its tag
is that node's key's, it comes from the node's configured address (when one is configured), and its counter is
above the last accepted one. The same beacon heard again (same counter, same bytes: a node re-advertises it until
something changes) from the same address, within ``REPEAT_S`` of its first hearing (a node renews its beacon every
30 s), only refreshes RSSI and the time it was last heard. Everything else is counted and ignored: ``malformed``,
``unknown`` (not a node of this hub), ``forged`` (bad tag, or a known node's beacon from another address than its
configured one), ``replayed`` (an authentic but older counter; the same counter with other bytes, from another
address, or long after the node should have renewed it). So a recorded beacon replayed elsewhere neither moves a
node (the hub would connect to the replayer) nor keeps a dead node looking alive.

After a hub restart the first authentic beacon of a node is accepted whatever its counter (the last one is not
kept on disk): a replay then can show an old count until the node's next beacon (within 30 s, ``RENEW_MS``), and
at worst causes one needless connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from shared_protocol import beacon as bc
from shared_protocol.auth import Key
from shared_protocol.errors import ProtocolError

REPEAT_S = 75.0  # a beacon heard again this long after it was new is stale (nodes renew theirs every 30 s)


@dataclass(slots=True)
class LaneSeen:
    count: int
    fault: bool
    moving: bool
    at: float  # time.monotonic() of the beacon that said so


@dataclass(slots=True)
class NodeBeacon:
    """What a node's accepted beacons say. ``heard`` is when its current beacon was last heard (age on the page),
    ``changed`` when a beacon with a new counter arrived."""

    address: str = ""
    counter: int = 0
    payload: bytes = b""
    waiting: bool = False
    fault: bool = False
    lane_count: int = 0
    rssi: int | None = None
    heard: float = 0.0
    changed: float = 0.0
    accepted: int = 0
    lanes: dict[int, LaneSeen] = field(default_factory=dict)

    def status(self, now: float) -> dict[str, Any]:
        return {
            "address": self.address or None,
            "counter": self.counter,
            "waiting": self.waiting,
            "fault": self.fault,
            "rssi": self.rssi,
            "age_s": round(now - self.heard, 1) if self.heard else None,
            "accepted": self.accepted,
            "lanes": {
                str(k): {"count": v.count, "fault": v.fault, "moving": v.moving, "age_s": round(now - v.at, 1)}
                for k, v in sorted(self.lanes.items())
            },
        }


@dataclass(slots=True)
class BeaconCounts:
    seen: int = 0  # advertisements carrying our company id
    accepted: int = 0
    repeated: int = 0
    malformed: int = 0
    unknown: int = 0
    forged: int = 0
    replayed: int = 0


class BeaconBook:
    """``keys``: node id -> key; ``addresses``: node id -> configured address (absent: any)."""

    def __init__(self) -> None:
        self._keys: dict[int, Key] = {}
        self._addresses: dict[int, str] = {}
        self.nodes: dict[int, NodeBeacon] = {}
        self.counts = BeaconCounts()

    def add_node(self, node_id: int, key: bytes, address: str = "") -> None:
        self._keys[node_id] = Key(key)
        if address:
            self._addresses[node_id] = address.upper()
        self.nodes.setdefault(node_id, NodeBeacon())

    def remove_node(self, node_id: int) -> None:
        self._keys.pop(node_id, None)
        self._addresses.pop(node_id, None)
        self.nodes.pop(node_id, None)

    def heard(self, address: str, payload: bytes, rssi: int | None, now: float | None = None) -> int | None:
        """One advertisement's beacon payload from ``address``: the node id when it is accepted or repeated (the
        node is there), else None (counted)."""
        c = self.counts
        c.seen += 1
        now = time.monotonic() if now is None else now
        try:
            b = bc.decode(payload)
        except ProtocolError:
            c.malformed += 1
            return None
        key = self._keys.get(b.node_id)
        if key is None:
            c.unknown += 1
            return None
        address = address.upper()
        node = self.nodes[b.node_id]
        if node.accepted and payload == node.payload and address == node.address and now - node.changed <= REPEAT_S:
            c.repeated += 1  # the accepted beacon again, from its node (no HMAC: it was checked when it was new)
            node.heard = now
            node.rssi = rssi
            return b.node_id
        if not bc.verify(payload, key) or self._addresses.get(b.node_id, address) != address:
            c.forged += 1
            return None
        if node.accepted and b.counter <= node.counter:
            c.replayed += 1  # older, or the current one from elsewhere or too late
            return None
        c.accepted += 1
        node.accepted += 1
        node.address = address
        node.counter = b.counter
        node.payload = bytes(payload)
        node.waiting = bool(b.flags & bc.WAITING)
        node.fault = bool(b.flags & bc.FAULT)
        node.lane_count = b.lane_count
        node.rssi = rssi
        node.heard = node.changed = now
        for lane, count, fault, moving in b.lanes():
            node.lanes[lane] = LaneSeen(count, fault, moving, now)
        for lane in [k for k in node.lanes if k >= b.lane_count]:
            del node.lanes[lane]  # the node has fewer lanes now
        return b.node_id

    def status(self) -> dict[str, Any]:
        c = self.counts
        return {
            "seen": c.seen,
            "accepted": c.accepted,
            "repeated": c.repeated,
            "malformed": c.malformed,
            "unknown": c.unknown,
            "forged": c.forged,
            "replayed": c.replayed,
        }
