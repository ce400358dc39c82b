"""Portable BLE test bodies (CPython and MicroPython): the node's BLE link against a scripted radio, and beacons.

``FakeBle`` stands for ``bluetooth.BLE()`` with the documented behaviour the link relies on: value handles from
``gatts_register_services``, ``gatts_set_buffer``, ``gatts_read`` of the last write, ``gatts_notify`` that can
refuse (ENOMEM) and IRQs delivered by the test (``irq(event, data)``). The emulated board's real ``bluetooth``
module behind a Bumble stack is tested end to end elsewhere (tests/test_emulated_ble.py, tests/test_ble_link.py).
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


def _link(mtu=247):
    sys.modules["bluetooth"] = _Module
    from firmware.link_ble import BleLink

    ble = FakeBle()
    return ble, BleLink(ble, mtu, 250000, "shelf-7")


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
    return out


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
