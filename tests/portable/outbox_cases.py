"""Portable outbox bodies for tag records (CPython and MicroPython): events and tag_seen / tag_lost in one sequence,
the v2 journal, the migration of a v1 journal, power cuts (torn records), the EPC ring, delivery through acks."""

import os
import struct

from firmware import outbox as outbox_mod
from firmware.counters import CountersStore
from firmware.delivery import Delivery
from firmware.outbox import MAGIC, Outbox, v1_line
from firmware.persist import Record
from firmware.shelf import Shelf
from shared_protocol.auth import Key
from shared_protocol.frame import UplinkReceiver, UplinkSender
from shared_protocol.messages import TAG_LOST, TAG_SEEN

EPC_A = bytes.fromhex("3074257bf7194e4000001a85")
EPC_32 = bytes(range(0x40, 0x60))


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def _msgs(ob, now):
    return [ob.message(i, now).to_dict() for i in range(ob.depth)]


def _size(path):
    return os.stat(path)[6]


def _head(path):
    with open(path, "rb") as f:
        return f.read(4)


def round_trip(base):
    """Events and tag records interleaved: messages, wire round trip, ack, reboot, compaction."""
    _mkdir(base)
    p = base + "/ob"
    ob = Outbox(p, 1, 16)
    seqs = [
        ob.add(0, 1, -2, -900, 97, 1000),
        ob.add_tag(TAG_SEEN, 1, -55, b"xx" + EPC_A, 2, 12, 1100),
        ob.add(0, 2, 1, 450, 90, 1200),
        ob.add_tag(TAG_LOST, 1, -99, EPC_A, 0, 12, 1300),  # a tag_lost has no rssi: stored as 0
        ob.add_tag(TAG_SEEN, 2, -60, EPC_32, 0, 32, 1400),
    ]
    out = {"seqs": seqs, "kinds": [ob.kind_at(i) for i in range(ob.depth)]}
    out["events"] = [ob.is_event(i) for i in range(ob.depth)]
    out["msgs"] = _msgs(ob, 2000)
    # every message through the wire format and back (what the hub decodes)
    key = Key(bytes(range(16)))
    seq = [0]

    def nxt():
        seq[0] += 1
        return seq[0]

    tx = UplinkSender(9, key, nxt)
    rx = UplinkReceiver({9: key})
    out["wire"] = [rx.accept(tx.encode(ob.message(i, 2000))).message.to_dict() for i in range(ob.depth)]
    out["journal_magic"] = _head(p + ".log") == MAGIC
    out["journal_size"] = _size(p + ".log")
    out["released"] = ob.ack(2)
    out["after_ack"] = [ob.seq_at(i) for i in range(ob.depth)]
    out["epc_used"] = ob._eused
    ob2 = Outbox(p, 2, 16)  # a reboot: acks were not journalled, everything comes back, ages unknown
    out["reboot"] = _msgs(ob2, 5)
    ob2.ack(3)
    ob2.compact()
    ob3 = Outbox(p, 3, 16)
    out["compacted"] = _msgs(ob3, 5)
    out["compacted_size"] = _size(p + ".log")
    out["next"] = ob3.add_tag(TAG_SEEN, 3, -70, EPC_A, 0, 12, 0)
    out["bad_lane"] = _err(lambda: ob3.add_tag(TAG_SEEN, 32, -70, EPC_A, 0, 12, 0))
    out["bad_epc"] = _err(lambda: ob3.add_tag(TAG_SEEN, 1, -70, b"", 0, 0, 0))
    out["bad_kind"] = _err(lambda: ob3.add_tag(1, 1, -70, EPC_A, 0, 12, 0))
    out["no_tags_no_ring"] = Outbox(base + "/plain", 1, 16).epc_bytes()
    out["ring"] = ob3.epc_bytes()
    return out


def _err(fn):
    try:
        fn()
    except Exception as err:
        return type(err).__name__
    return "accepted"


def _write_v1(p, events, head=None, tail=b""):
    with open(p + ".log", "wb") as f:
        for e in events:
            f.write(v1_line(*e))
        f.write(tail)
    if head is not None:
        Record(p + ".head").save(struct.pack(">IIII", *head))


V1_EVENTS = [
    (1, 0, 1, -1, -450, 96, 1),
    (2, 1, 2, 3, 1350, 88, 1),
    (3, 0, 3, 0, 60, 40, 2),
    (4, 1, 4, 12, 0, 100, 2),
]


def migration(base, tail_hex):
    """A journal written by the firmware before RFID (v1), with its head (next_seq 5, acked 1), read by this one:
    the events it holds, the file afterwards, and the next boot."""
    _mkdir(base)
    p = base + "/ob"
    _write_v1(p, V1_EVENTS, (5, 1, 0, 2), bytes.fromhex(tail_hex))
    v1_size = _size(p + ".log")
    ob = Outbox(p, 3, 16)
    out = {
        "v1_size": v1_size,
        "msgs": _msgs(ob, 0),
        "migrated": ob.migrated,
        "torn": ob.torn_records,
        "next_seq": ob.next_seq,
        "magic": _head(p + ".log") == MAGIC,
        "size": _size(p + ".log"),
    }
    seq = ob.add_tag(TAG_SEEN, 0, -48, EPC_A, 0, 12, 0)
    ob2 = Outbox(p, 4, 16)
    out["tag_seq"] = seq
    out["again"] = _msgs(ob2, 0)
    out["again_migrated"] = ob2.migrated
    out["again_torn"] = ob2.torn_records
    return out


def empty_v1(base):
    """An empty journal file (v1 wrote none, or a cut before the first record): nothing held, rewritten as v2."""
    _mkdir(base)
    p = base + "/ob"
    with open(p + ".log", "wb"):
        pass
    ob = Outbox(p, 1, 8)
    return {"depth": ob.depth, "migrated": ob.migrated, "magic": _head(p + ".log") == MAGIC, "next": ob.next_seq}


def torn(base, keep):
    """An event and a tag record, then a tag record cut after ``keep`` of its bytes (a power cut mid-write): the two
    come back, the torn one goes, and what is appended afterwards is readable."""
    _mkdir(base)
    p = base + "/ob"
    ob = Outbox(p, 1, 16)
    ob.add(0, 1, -1, -100, 99, 0)
    ob.add_tag(TAG_SEEN, 1, -51, EPC_A, 0, 12, 0)
    line = outbox_mod._tag_line(TAG_LOST, 3, 1, 0, 1, EPC_A)
    with open(p + ".log", "ab") as f:
        f.write(line[:keep])
    ob2 = Outbox(p, 2, 16)
    first = [ob2.seq_at(i) for i in range(ob2.depth)]
    nxt = ob2.add_tag(TAG_LOST, 1, 0, EPC_A, 0, 12, 0)
    ob3 = Outbox(p, 3, 16)
    return {
        "line": len(line),
        "after_cut": first,
        "torn": ob2.torn_records,
        "next": nxt,
        "after_append": _msgs(ob3, 0),
        "torn_again": ob3.torn_records,
    }


def epc_ring(base):
    """Capacity 8 (a ring of 128 bytes: four 32-byte EPCs): 12 tag records of 32-byte EPCs between events. The
    oldest go, counted; every record held keeps its own EPC across the ring's wrap, also after a reboot."""
    _mkdir(base)
    p = base + "/ob"
    ob = Outbox(p, 1, 8)
    expect = {}
    for k in range(12):
        epc = bytes((k * 7 + j) & 0xFF for j in range(32))
        s = ob.add_tag(TAG_SEEN, k % 4, -40 - k, epc, 0, 32, 0)
        expect[s] = epc.hex()
        if k % 3 == 2:
            ob.add(0, 1, -1, -10, 50, 0)
    held = [ob.message(i, 0).to_dict() for i in range(ob.depth)]
    ok = all(m["epc"] == expect[m["event_seq"]] for m in held if m["type"] == "tag_seen")
    ob2 = Outbox(p, 2, 8)
    held2 = [ob2.message(i, 0).to_dict() for i in range(ob2.depth)]
    ok2 = all(m["epc"] == expect[m["event_seq"]] for m in held2 if m["type"] == "tag_seen")
    # acknowledged ones free their EPCs: room for more without dropping
    ob2.ack(ob2.seq_at(ob2.depth - 1))
    dropped = ob2.dropped
    for _ in range(4):
        ob2.add_tag(TAG_LOST, 0, 0, EPC_32, 0, 32, 0)
    return {
        "ring": ob.epc_bytes(),
        "depth": ob.depth,
        "dropped": ob.dropped,
        "first": ob.first_seq(),
        "types": [m["type"] for m in held],
        "seqs": [m["event_seq"] for m in held],
        "epcs_ok": ok,
        "reboot_seqs": [m["event_seq"] for m in held2],
        "reboot_ok": ok2,
        "dropped_after_ack": ob2.dropped - dropped,
        "depth_after": ob2.depth,
    }


def shelf_counts_events_only(base):
    """Counters rebuilt at boot from the outbox apply its events, never its tag records."""
    _mkdir(base)
    ob = Outbox(base + "/ob", 1, 16)
    ob.add(0, 1, -2, -900, 97, 0)
    ob.add_tag(TAG_SEEN, 0, -50, EPC_A, 0, 12, 0)
    ob.add(1, 2, 3, 900, 97, 0)
    ob.add_tag(TAG_LOST, 1, 0, EPC_A, 0, 12, 0)
    shelf = Shelf([None, None], Outbox(base + "/ob", 2, 16), CountersStore(base + "/counters", 2))
    return [[c.count, c.removed_total, c.added_total, c.last_event] for c in shelf.counters.lanes]


class _Session:
    """Delivery's session: what it sends, as the hub would decode it."""

    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg.to_dict())
        return True


def delivery(base):
    """Events and tag records through Delivery with acks that lag and get lost: the hub, deduplicating by
    event_seq, books each once; the outbox ends empty and nothing is sent after the last ack."""
    _mkdir(base)
    ob = Outbox(base + "/ob", 1, 32)
    s = _Session()
    d = Delivery(ob, s, 2000, 0)
    booked = {}
    t = 0
    plan = []
    for k in range(10):
        plan.append((k * 300, "tag" if k % 2 else "event", k))
    i = 0
    hub_acks = 0
    while t < 60000:
        t += 10
        while i < len(plan) and plan[i][0] <= t:
            _at, what, k = plan[i]
            if what == "tag":
                seq = ob.add_tag(TAG_SEEN if k % 4 == 1 else TAG_LOST, 1, -50, EPC_A, 0, 12, t)
            else:
                seq = ob.add(0, 1, -1, -100, 90, t)
            d.recorded(seq, t)
            i += 1
        d.tick(t)
        for m in s.sent:
            booked[m["event_seq"]] = booked.get(m["event_seq"], m)
        # the hub acks the highest contiguous event_seq it has, every 2.5 s, and only every other time
        if t % 2500 == 0:
            hub_acks += 1
            if hub_acks % 2:
                hi = 0
                while hi + 1 in booked:
                    hi += 1
                d.acked(hi, t)
        if t == 40000:
            sent_before_end = len(s.sent)
    return {
        "booked": sorted(booked),
        "types": [booked[k]["type"] for k in sorted(booked)],
        "sends": len(s.sent),
        "depth": ob.depth,
        "quiet_after": len(s.sent) - sent_before_end,
    }
