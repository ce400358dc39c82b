"""Portable node bodies with RFID: the real firmware (firmware/node.py with firmware/rfid/) on an emulated board whose
UART carries a byte-level reader module (tools/emulation/uhf_module.py) and whose tags come and go, on virtual time,
talking to the hub simulator of tests/portable/node_cases.py. Run under CPython and MicroPython."""

from shared_protocol.messages import Ack
from tests.portable.node_cases import Rig, config_text, pick, plan_two_lanes, snapshot

EPC_A = "3074257bf7194e4000001a85"
EPC_B = "3074257bf7194e4000001a86"
EPC_C = "3074257bf7194e4000001a87"

RFID_CFG = {
    "readers": [{"uart": 1, "tx": 17, "rx": 16, "region": "eu", "power_dbm": 20, "switch": [25], "antennas": [0, 1]}],
    "seen_n": 2,
    "window_ms": 3000,
    "lost_s": 5,
    "dwell_ms": 200,
}


def _plan(comps, tags, faults=None):
    plan = plan_two_lanes(comps)
    reader = {"uart": 1, "tx": 17, "rx": 16, "switch": [25], "antennas": [0, 1], "seed": 7}
    if faults:
        reader["faults"] = faults
    plan["rfid"] = {"readers": [reader], "tags": tags}
    return plan


TAGS = [
    {"epc": EPC_A, "spans": [[0, 2.0, 30.0]]},  # on lane 0 from 2 s, taken away at 30 s
    {"epc": EPC_B, "spans": [[1, 5.0, None]]},  # on lane 1 from 5 s
    {"epc": EPC_C, "spans": [[0, 3.0, 12.0], [1, 12.0, None]]},  # moved from lane 0 to lane 1 at 12 s
]


class Booker:
    """The hub's ledger for sequenced records: books each event_seq once, acks the highest contiguous one every
    ``every_ms`` (lagging, so the node retransmits)."""

    def __init__(self, rig, every_ms):
        self.rig = rig
        self.every = every_ms
        self.booked = {}
        self.copies = 0
        self.next_ack = every_ms

    def on_frame(self, f):
        if "event_seq" in f and f["type"] != "ack":
            self.copies += 1
            if f["event_seq"] not in self.booked:
                self.booked[f["event_seq"]] = f
        if f["t"] >= self.next_ack:
            self.next_ack += self.every
            hi = 0
            while hi + 1 in self.booked:
                hi += 1
            self.rig.send(Ack(hi))


def _rh(f):
    return [f["t"], f["state"], f["reads"], f["bad_frames"], f["resets"], f["silences"], f["present"]]


def _summary(rig, booker):
    hub = rig.hub
    recs = [booker.booked[k] for k in sorted(booker.booked)]
    return {
        "records": [[r["event_seq"], r["type"], r.get("epc", ""), r["lane"], r["t"]] for r in recs],
        "rssi": [r["rssi"] for r in recs if r["type"] == "tag_seen"],
        "ages": [r["age_ms"] for r in recs],
        "copies": booker.copies,
        "reader_health": [_rh(f) for f in hub.of("reader_health")],
        "health_t": [f["t"] for f in hub.of("health")],
        "lane_states": {str(f["lane"]): [f["count"], f["last_event"]] for f in hub.of("lane_state")},
        "outbox": rig.node.shelf.outbox.depth,
        "present": sorted([[bytes(e).hex(), lane] for e, lane in rig.node.rfid.presence.tags()]),
        "keeper_need": rig.node.keeper.need,
    }


def tags_flow(base, until_ms=40000, ack_every_ms=3000):
    """Three tags come, move and go while a pick happens on lane 0 at 20 s; the hub acks every 3 s."""
    rig = Rig(base, _plan(pick(20.0, 100.0), TAGS), config_text(rfid=RFID_CFG))
    booker = Booker(rig, ack_every_ms)
    rig.run(until_ms, 10, booker.on_frame)
    out = _summary(rig, booker)
    reader = rig.node.rfid.readers[0]
    out["reader"] = [reader.reads, reader.bad_frames, reader.resets, reader.silences, reader.dwells]
    out["module"] = rig.board.readers[0].stats()
    return out


def reader_faults(base):
    """The module reboots at 8 s and is unplugged from 14 s to 20 s while two tags sit on the shelf: the reader's
    state goes up at each change, nothing present is lost meanwhile (held), and the counters say what happened."""
    tags = [{"epc": EPC_A, "spans": [[0, 1.0, None]]}, {"epc": EPC_B, "spans": [[1, 1.0, None]]}]
    faults = {"reboots": [8.0], "vanish": [[14.0, 20.0]]}
    rig = Rig(base, _plan([], tags, faults), config_text(rfid=RFID_CFG))
    booker = Booker(rig, 1000)
    rig.run(45000, 10, booker.on_frame)
    return _summary(rig, booker)


def reboot_run(base, files, until_ms, ack):
    """One boot with two tags on the shelf (``files``: the flash of the previous boot). Acks only when ``ack``."""
    tags = [{"epc": EPC_A, "spans": [[0, 1.0, None]]}, {"epc": EPC_B, "spans": [[1, 1.0, None]]}]
    rig = Rig(base, _plan([], tags), config_text(rfid=RFID_CFG), files=files)
    booker = Booker(rig, 1000 if ack else 10**9)
    rig.run(until_ms, 10, booker.on_frame)
    out = _summary(rig, booker)
    out["hellos"] = [f["boot_count"] for f in rig.hub.of("hello")]
    out["files"] = snapshot(base)
    return out


def without_rfid(base):
    """A node without an rfid section: no RFID task, nothing RFID-shaped on the wire, no EPC ring."""
    rig = Rig(base, plan_two_lanes([]))
    rig.run(3000, 10)
    n = rig.node
    return {
        "rfid": n.rfid is None,
        "ring": n.shelf.outbox.epc_bytes(),
        "types": sorted({f["type"] for f in rig.hub.frames}),
        "need": n.keeper.need,
    }
