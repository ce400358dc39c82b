"""What a BLE node advertises: its lanes' counts and flags as an authenticated beacon (``shared_protocol/beacon.py``).

``Beacons.tick`` runs in the link task. A new beacon (a new counter, drawn from the node's uplink frame sequence, so
it strictly increases across reboots) is advertised when what it shows changes, when a node with more than four
lanes rotates to its next four (every ``ROTATE_MS``), and at least every ``RENEW_MS`` (the hub shows a beacon's age,
and an old beacon replayed later is then older than the node's own). The comparison allocates nothing; a new
beacon costs one HMAC.
"""

from firmware.ticks import ticks_diff
from shared_protocol.beacon import ADV_LEN, FAULT, LANES, WAITING, Beacon, lane_entry
from shared_protocol.compat import const

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware.shelf import Shelf
    from shared_protocol.auth import Key

ROTATE_MS = const(2000)
RENEW_MS = const(30000)


class Beacons:
    """``advertise(adv: bytes)``: the link's. ``next_counter``: the node's frame sequence (``SeqStore.next``)."""

    def __init__(
        self,
        shelf: "Shelf",
        node_id: int,
        key: "Key",
        next_counter: "Callable[[], int]",
        advertise: "Callable[[bytes], None]",
        now: int,
    ) -> None:
        self._shelf = shelf
        self._key = key
        self._next = next_counter
        self._advertise = advertise
        n = len(shelf.lanes)
        self._beacon = Beacon(node_id, 0, 0, 0, n, [0] * LANES)
        self._adv = bytearray(ADV_LEN)
        self._at = now
        self._rotate_at = now
        self.sent = 0

    def _entries(self, first: int) -> int:
        """Fill the beacon's entries for the lanes from ``first``: bit 0 set when one changed, bit 1 when any lane
        of the node has a fault (an int: nothing allocated)."""
        lanes = self._shelf.lanes
        counters = self._shelf.counters.lanes
        entries = self._beacon.entries
        out = 0
        for i in range(LANES):
            e = 0
            k = first + i
            if k < len(lanes):
                lane = lanes[k]
                e = lane_entry(counters[k].count, lane.fault, not lane.det.stable)
            if e != entries[i]:
                entries[i] = e
                out |= 1
        for lane in lanes:
            if lane.fault:
                out |= 2
                break
        return out

    def tick(self, now: int) -> None:
        b = self._beacon
        first = b.first
        if b.lane_count > LANES and ticks_diff(now, self._rotate_at) >= ROTATE_MS:
            first = first + LANES
            if first >= b.lane_count:
                first = 0
        got = self._entries(first)
        flags = (WAITING if self._shelf.outbox.depth else 0) | (FAULT if got & 2 else 0)
        if not got & 1 and flags == b.flags and first == b.first and self.sent and ticks_diff(now, self._at) < RENEW_MS:
            return
        if first != b.first:
            self._rotate_at = now
        b.first = first
        b.flags = flags
        b.counter = self._next()
        b.write(self._key, self._adv)
        self._advertise(bytes(self._adv))
        self._at = now
        self.sent += 1
