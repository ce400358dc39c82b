"""Portable bodies for the outbox, lane counters, filters and calibration (CPython and MicroPython)."""

import os

from firmware.calibration import Calibration, CalibrationError, CalibrationStore
from firmware.counters import CHECKPOINT_EVERY, CountersStore
from firmware.filters import MovingAverage, OutlierFilter
from firmware.outbox import Outbox
from shared_protocol.errors import ProtocolError
from shared_protocol.messages import AGE_UNKNOWN


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def outbox_lifecycle(base, capacity):
    """Add, ack, overflow, reboot: returns what the node would retransmit at each point."""
    _mkdir(base)
    p = base + "/ob"
    out = {}
    ob = Outbox(p, 1, capacity)
    for i in range(5):
        ob.add(i % 2, 1, -1, -4500, 97, 1000 + i)
    out["after_add"] = [ob.seq_at(i) for i in range(ob.depth)]
    out["age"] = ob.message(0, 1500).age_ms
    out["released"] = ob.ack(3)
    out["after_ack"] = [ob.seq_at(i) for i in range(ob.depth)]
    # Reboot without compaction: acks were not journalled, so 4..5 come back and so do 1..3
    # unless compacted; after compaction only 4..5.
    ob2 = Outbox(p, 2, capacity)
    out["reboot_uncompacted"] = [ob2.seq_at(i) for i in range(ob2.depth)]
    out["reboot_age"] = ob2.message(0, 5).age_ms == AGE_UNKNOWN
    ob2.ack(3)
    ob2.compact()
    ob3 = Outbox(p, 3, capacity)
    out["reboot_compacted"] = [ob3.seq_at(i) for i in range(ob3.depth)]
    # New events continue the sequence; overflow drops the oldest and counts it.
    for _ in range(capacity + 2):
        ob3.add(0, 2, 1, 4500, 90, 0)
    out["overflow_first"] = ob3.first_seq()
    out["overflow_depth"] = ob3.depth
    out["dropped"] = ob3.dropped
    out["next_seq"] = ob3.next_seq
    ob4 = Outbox(p, 4, capacity)
    out["after_overflow_reboot"] = [ob4.first_seq(), ob4.depth, ob4.next_seq]
    # An ack beyond anything sent must not release phantom events.
    out["ack_future"] = ob4.ack(10**6)
    out["next_after_full_ack"] = ob4.next_seq
    ob4.compact()
    ob5 = Outbox(p, 5, capacity)
    out["never_reuses"] = ob5.add(1, 1, -1, -10, 50, 0)
    try:
        ob5.add(40, 1, -1, -10, 50, 0)
        out["bad_lane"] = "accepted"
    except ProtocolError as err:
        out["bad_lane"] = err.reason_name
    return out


def outbox_record_size(base):
    """Journal bytes for three events vs the v2 format: the file's magic, then per event kind and length bytes, the
    body and 4 bytes of CRC."""
    import struct

    from firmware import outbox

    _mkdir(base)
    ob = Outbox(base + "/sz", 1, 8)
    for _ in range(3):
        ob.add(0, 1, -1, -10, 50, 0)
    return [os.stat(base + "/sz.log")[6], len(outbox.MAGIC) + 3 * (2 + struct.calcsize(outbox._EV_FMT) + 4)]


def outbox_torn_tail(base):
    _mkdir(base)
    p = base + "/ob"
    ob = Outbox(p, 1, 16)
    for _ in range(3):
        ob.add(0, 1, -1, -100, 99, 0)
    with open(p + ".log", "ab") as f:
        f.write(b"\x00\x00\x00\x04\x00")  # a record cut off by a power failure
    ob2 = Outbox(p, 2, 16)
    first = [ob2.seq_at(i) for i in range(ob2.depth)]
    ob2.add(0, 1, -1, -100, 99, 0)  # appended after the repair: must be readable
    ob3 = Outbox(p, 3, 16)
    return {
        "after_torn": first,
        "torn": ob2.torn_records,
        "after_append": [ob3.seq_at(i) for i in range(ob3.depth)],
    }


def counters_recover(base, n_events, crash_after):
    """Apply events with checkpoints; 'crash' and rebuild from checkpoint + outbox journal."""
    _mkdir(base)
    ob = Outbox(base + "/ob", 1, 64)
    cs = CountersStore(base + "/cnt", 2)
    ob.before_forget = cs.checkpoint
    truth = [[0, 0, 0], [0, 0, 0]]
    for i in range(n_events):
        lane = i % 2
        delta = -((i % 3) + 1) if i % 4 else 2
        kind = 1 if delta < 0 else 2
        seq = ob.add(lane, kind, delta, delta * 100, 95, 0)
        if i < crash_after:
            cs.apply(lane, seq, kind, delta)
            t = truth[lane]
            t[0] += delta
            if delta < 0:
                t[1] -= delta
            else:
                t[2] += delta
        if i == n_events // 2:
            ob.ack(seq - 3)
            ob.compact()
    # After the crash: counters from the checkpoint, then the journal's events past it.
    ob2 = Outbox(base + "/ob", 2, 64)
    cs2 = CountersStore(base + "/cnt", 2)
    for i in range(ob2.depth):
        m = ob2.message(i, 0)
        cs2.apply(m.lane, m.event_seq, m.kind, m.count_delta)
    got = [[c.count, c.removed_total, c.added_total] for c in cs2.lanes]
    # Recompute truth over all journalled events (the crash lost only RAM, not the journal).
    full = [[0, 0, 0], [0, 0, 0]]
    for i in range(n_events):
        lane = i % 2
        delta = -((i % 3) + 1) if i % 4 else 2
        t = full[lane]
        t[0] += delta
        if delta < 0:
            t[1] -= delta
        else:
            t[2] += delta
    return {"got": got, "expected": full, "writes": cs.writes, "checkpoint_every": CHECKPOINT_EVERY}


def filters(samples, n, threshold):
    of = OutlierFilter()
    ma = MovingAverage(n)
    return [[of.feed(x, threshold) for x in samples], [ma.feed(x) for x in samples], of.rejected]


def calibration(base):
    _mkdir(base)
    out = {}
    cal = Calibration(1)
    cal.tare(8000)
    out["c10"] = cal.calibrate(8000 + 420000, 10000)  # 1 kg reads 420,000 counts over zero: 420 counts/g
    out["weights"] = [cal.to_dg(r) for r in (8000, 8042, 8041, 7958, 8000 + 420000, 8000 + 4200000, -8380000)]
    store = CalibrationStore(base + "/cal0", 1)
    out["missing"] = [store.load().calibrated, store.error]
    store.save(cal)
    back = CalibrationStore(base + "/cal0", 1).load()
    out["reloaded"] = [back.calibrated, back.offset, back.c10]
    wrong_layout = CalibrationStore(base + "/cal0", 2)
    out["wrong_layout"] = [wrong_layout.load().calibrated, wrong_layout.error]
    errors = []
    for args in ((8000, 0), (8000 + 10, 10000), (8000 - 42000, -10000)):
        try:
            Calibration(1, 8000, 4200).calibrate(args[0], args[1])
            errors.append("ok")
        except CalibrationError as err:
            errors.append(str(err))
    out["errors"] = errors
    rev = Calibration(1, 1000, 4200)
    rev.calibrate(1000 - 420000, 10000)  # cell wired the other way round
    out["reversed"] = [rev.c10, rev.to_dg(1000 - 4200)]
    two = Calibration(2)
    two.from_points(100000, 50000, 520000, 60000)
    out["two_point"] = [two.c10, two.offset, two.to_dg(100000), two.to_dg(520000)]
    # Zero tracking: only while stable and near zero, one count at a time.
    z = Calibration(1, 8000, 4200)
    moved = [z.track_zero(8030, True), z.track_zero(8030, False), z.track_zero(8000 + 420000, True)]
    out["zero"] = [moved, z.offset]
    return out
