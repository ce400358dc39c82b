"""Portable BLE test bodies (CPython and MicroPython): the node's BLE link against a scripted radio, and beacons.

``FakeBle`` stands for ``bluetooth.BLE()`` with the documented behaviour the link relies on: value handles from
``gatts_register_services``, ``gatts_set_buffer``, ``gatts_read`` of the last write, ``gatts_notify`` that can
refuse (ENOMEM) and IRQs delivered by the test (``irq(event, data)``). The emulated board's real ``bluetooth``
module behind a Bumble stack is tested end to end elsewhere (tests/test_emulated_ble.py, tests/test_ble_hub.py).
"""

import sys

from shared_protocol import beacon as bc
from shared_protocol.auth import Key
from shared_protocol.ble_fragments import Reassembler, fragment

_ENOMEM = 12


class _UUID:
    def __init__(self, v):
        self.v = v


class _Module:
    UUID = _UUID


class FakeBle:
    def __init__(self):
        self.handler = None
        self.services = None
        self.buffers = {}
        self.values = {}
        self.notified = []
        self.credits = 1000
        self.adverts = []
        self.disconnected = []
        self.config_set = {}

    def active(self, on=None):
        return True

    def config(self, *a, **kw):
        for k in kw:
            self.config_set[k] = kw[k]

    def irq(self, handler):
        self.handler = handler

    def gatts_register_services(self, services):
        self.services = services
        return ((11, 13),)

    def gatts_set_buffer(self, vh, n, append=False):
        self.buffers[vh] = n

    def gatts_read(self, vh):
        return self.values[vh]

    def gatts_notify(self, conn, vh, data):
        if self.credits <= 0:
            raise OSError(_ENOMEM)
        self.credits -= 1
        self.notified.append((conn, vh, bytes(data)))

    def gap_advertise(self, interval_us, adv_data=None, connectable=True):
        self.adverts.append((interval_us, bytes(adv_data) if adv_data is not None else None))

    def gap_disconnect(self, conn):
        self.disconnected.append(conn)
        return True

    def write(self, conn, data):
        """The hub writes ``data`` to the downlink characteristic (truncated to its buffer, as the stack does)."""
        self.values[13] = bytes(data[: self.buffers.get(13, 20)])
        self.handler(3, (conn, 13))


def _link(mtu=247, clock=None):
    sys.modules["bluetooth"] = _Module
    from firmware.link_ble import BleLink

    ble = FakeBle()
    return ble, BleLink(ble, mtu, 250000, "shelf-7", clock or (lambda: 0))


def link_flow():
    """Connect, MTU 23, fragmented uplink with the stack refusing, downlink reassembly, ring overflow, a second
    central, disconnect and advertising again."""
    ble, link = _link()
    out = {"buffer": ble.buffers.get(13), "mtu_config": ble.config_set.get("mtu")}
    out["sent_disconnected"] = link.send(b"x" * 10)
    link.advertise(b"\x02\x01\x06")
    out["adverts_before"] = len(ble.adverts)
    ble.handler(1, (64, 1, b"\xc0\x00\x00\x00\x00\x01"))
    out["fresh"] = [link.fresh()]
    ble.write(64, b"\x00")  # the hub's poke: subscribed
    out["fresh"] += [link.fresh(), link.fresh(), link.poll()]
    ble.handler(21, (64, 23))
    frame = bytes(range(60))
    ble.credits = 2
    out["sent"] = link.send(frame)
    out["notified_first"] = len(ble.notified)
    ble.credits = 100
    link.poll()
    r = Reassembler()
    got = None
    sizes = []
    for _conn, _vh, data in ble.notified:
        sizes.append(len(data))
        got = r.feed(data) or got
    out["sizes"] = sizes
    out["uplink_ok"] = got == frame
    # downlink: a 100-byte frame in MTU-23 fragments, then one at MTU 247
    down = bytes(range(100, 200))
    for p in fragment(down, 23, 5):
        ble.write(64, p)
    frames = link.poll()
    out["downlink_ok"] = frames == [down]
    for p in fragment(down, 247, 6):
        ble.write(64, p)
    out["downlink_big_ok"] = link.poll() == [down]
    # more writes than the ring holds before a poll: the rest is dropped and counted
    for i in range(10):
        ble.write(64, fragment(b"z" * 10, 247, i)[0])
    out["ring"] = [len(link.poll()), link.rx_dropped, link.rejected()]
    # a second central is disconnected at the next poll; writes from it are ignored
    ble.handler(1, (65, 1, b"\xc0\x00\x00\x00\x00\x02"))
    ble.write(65, fragment(b"q" * 10, 247, 1)[0])
    out["second"] = [len(link.poll()), ble.disconnected]
    # disconnect: waiting frames dropped, advertising again, not fresh
    ble.credits = 0
    link.send(b"y" * 50)
    ble.handler(2, (64, 1, b"\xc0\x00\x00\x00\x00\x01"))
    link.poll()
    out["after"] = [link.connected, len(ble.adverts), link.fresh(), link.disconnects, link.send(b"a")]
    out["tx_dropped"] = link.tx_dropped
    return out


def strangers_and_cut_frames():
    """A central that never sends an authenticated frame is disconnected after AUTH_MS; the hub (vouched) is kept.
    A downlink frame cut by a disconnect never joins the next connection's frames."""
    t = [0]
    ble, link = _link(clock=lambda: t[0])
    from firmware.link_ble import AUTH_MS, SILENT_MS

    out = {}
    ble.handler(1, (70, 1, b"\xc0\x00\x00\x00\x00\x09"))  # a stranger
    link.poll()
    t[0] = AUTH_MS - 10
    link.poll()
    out["kept_before"] = list(ble.disconnected)
    t[0] = AUTH_MS + 100
    link.poll()
    out["dropped_after"] = list(ble.disconnected)
    ble.handler(2, (70, 0, b""))
    link.poll()
    # the hub: connects, vouched by the node, kept long after AUTH_MS
    ble.handler(1, (71, 1, b"\xc0\x00\x00\x00\x00\x01"))
    link.poll()
    link.vouch()
    t[0] += SILENT_MS - 1000
    link.poll()
    out["hub_kept"] = list(ble.disconnected)
    # the first fragment of a 3-fragment frame, then the connection drops
    big = bytes(range(50))
    parts = fragment(big, 23, 1)
    ble.write(71, parts[0])
    link.poll()
    ble.handler(2, (71, 0, b""))
    link.poll()
    ble.handler(1, (72, 1, b"\xc0\x00\x00\x00\x00\x01"))
    for p in parts[1:]:  # the rest of the cut frame arrives on the new connection: not a frame
        ble.write(72, p)
    got = link.poll()
    for p in fragment(big, 23, 2):
        ble.write(72, p)
    got += link.poll()
    out["frames"] = [g.hex() for g in got]
    out["want"] = big.hex()
    # a fragment written just before a disconnect and a reconnect that the link had not polled yet: stale
    ble.write(72, parts[0])
    ble.handler(2, (72, 0, b""))
    ble.handler(1, (73, 1, b"\xc0\x00\x00\x00\x00\x01"))
    out["stale_frames"] = link.poll()
    out["stale"] = link.stale
    # the hub vouched, then fell silent (it died, its adapter kept the connection): dropped after SILENT_MS
    link.vouch()
    t[0] += SILENT_MS + 1
    link.poll()
    out["silent_dropped"] = list(ble.disconnected)
    out["strangers"] = link.strangers
    out["bad_fragments"] = link.bad_fragments
    return out


def irqs_inside_poll():
    """IRQs that land in the middle of ``poll`` (a scheduled IRQ runs between two bytecodes; here: from the clock,
    which poll reads half way): the hub's connection ends and another central connects, twice over."""
    box = {"fire": None}

    def clock():
        fire = box["fire"]
        if fire is not None:
            box["fire"] = None
            fire()
        return 0

    ble, link = _link(clock=clock)
    link.advertise(b"\x02\x01\x06")
    ble.handler(1, (80, 1, b"\xc0\x00\x00\x00\x00\x01"))
    link.poll()
    link.vouch()
    link.send(b"q" * 30)  # waits for room in the stack
    ble.credits = 0
    link.send(b"r" * 30)

    def swap():
        ble.handler(2, (80, 0, b""))
        ble.handler(1, (81, 1, b"\xc0\x00\x00\x00\x00\x02"))
        ble.write(81, fragment(b"hello-from-81", 247, 3)[0])

    box["fire"] = swap
    first = link.poll()  # the swap lands inside this poll
    second = link.poll()
    adverts_while_connected = len(ble.adverts)
    ble.credits = 100
    link.send(b"s" * 10)
    return {
        "frames": [bytes(f).decode() for f in first + second],
        "connects": link.connects,
        "disconnects": link.disconnects,
        "connected": link.connected,
        "adverts": adverts_while_connected,
        "tx_dropped": link.tx_dropped,
        "last_notify_conn": ble.notified[-1][0],
        "disconnected": ble.disconnected,
    }


def beacon_vector(key_hex, node_id, counter, flags, first, lane_count, lanes):
    """The advertisement for these fields (lanes: [count, fault, moving] for up to 4 lanes) and what the hub reads
    back from it."""
    key = Key(bytes.fromhex(key_hex))
    entries = [0, 0, 0, 0]
    for i in range(len(lanes)):
        c, f, m = lanes[i]
        entries[i] = bc.lane_entry(c, f, m)
    adv = bc.Beacon(node_id, counter, flags, first, lane_count, entries).advertisement(key)
    payload = bc.payload_of(adv)
    b = bc.open_beacon(payload, key)
    return {
        "adv": adv.hex(),
        "node_id": b.node_id,
        "counter": b.counter,
        "flags": b.flags,
        "lanes": [[x[0], x[1], x[2], x[3]] for x in b.lanes()],
        "wrong_key": bc.verify(payload, Key(b"\x00" * 16)),
    }


class _Det:
    def __init__(self):
        self.stable = True


class _Lane:
    def __init__(self):
        self.fault = False
        self.det = _Det()


class _Count:
    def __init__(self, n):
        self.count = n


class _Counters:
    def __init__(self, n):
        self.lanes = [_Count(10 * (i + 1)) for i in range(n)]


class _Outbox:
    def __init__(self):
        self.depth = 0


class _Shelf:
    def __init__(self, n):
        self.lanes = [_Lane() for _ in range(n)]
        self.counters = _Counters(n)
        self.outbox = _Outbox()


def beacon_ticks(key_hex, lanes):
    """``firmware/beacons.py`` on a shelf of ``lanes`` lanes: which beacons it advertises as time passes and the
    shelf changes: [t, counter, flags, first, [counts...]] per advertisement (decoded with the node key)."""
    from firmware.beacons import RENEW_MS, ROTATE_MS, Beacons

    key = Key(bytes.fromhex(key_hex))
    shelf = _Shelf(lanes)
    seq = [100]
    sent = []

    def next_counter():
        seq[0] += 1
        return seq[0]

    t = [0]

    def advertise(adv):
        b = bc.open_beacon(bc.payload_of(adv), key)
        sent.append([t[0], b.counter, b.flags, b.first, [x[1] for x in b.lanes()]])

    beacons = Beacons(shelf, 7, key, next_counter, advertise, 0)
    for step in range(0, 70000, 20):  # the link task's period
        t[0] = step
        if step == 5000:
            shelf.counters.lanes[1].count -= 1  # a pick on lane 1
            shelf.outbox.depth = 1
        if step == 6000:
            shelf.outbox.depth = 0  # acknowledged
        if step == 7000:
            shelf.lanes[0].fault = True
        beacons.tick(step)
    return {"sent": sent, "rotate_ms": ROTATE_MS, "renew_ms": RENEW_MS}
