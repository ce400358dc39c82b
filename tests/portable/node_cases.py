"""Portable node bodies: the real firmware (firmware/node.py) on an emulated board, on virtual time, talking to
a hub simulator made of the protocol's own hub-side classes. Run under CPython and MicroPython."""

import binascii
import os

from firmware import assignment
from firmware import config as config_mod
from firmware import node as node_mod
from shared_protocol.auth import Key
from shared_protocol.downlink_text import encode_line
from shared_protocol.frame import DownlinkSender, UplinkReceiver, encode_frame
from shared_protocol.messages import (
    Ack,
    Calibrate,
    Identify,
    RequestState,
    SetConfig,
    SetCount,
    SetLane,
    Tare,
)
from shared_protocol.serial_framing import SerialDecoder
from tools.emulation.board import EmulatedBoard
from tools.emulation.provision import provision

NODE_ID = 7
KEY = bytes(range(32))
OFFSET = 8000
CPG = 420


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def _cell(sck, dout, lane, rate=80, seed=3, noise=420):
    return {
        "sck": sck, "dout": dout, "lane": lane, "share": 1.0, "counts_per_g": CPG, "offset": OFFSET,
        "noise_counts": noise, "seed": seed, "rate": rate,
    }  # fmt: skip


def plan_two_lanes(comps0, rate=80, base0=500.0):
    """Lane 0: 100 g items (``base0`` grams of them) with the given components; lane 1: a static 300 g."""
    return {
        "lanes": [
            {"base_g": base0, "comps": comps0, "cal": {"offset": OFFSET, "c10": CPG * 10}, "unit_dg": 1000,
             "spread_permille": 10, "sku": "ITEM-100"},
            {"base_g": 300.0, "comps": [], "cal": {"offset": OFFSET, "c10": CPG * 10}, "unit_dg": 1500,
             "spread_permille": 10, "sku": "ITEM-150"},
        ],
        "cells": [_cell(4, 5, 0, rate, 3), _cell(6, 7, 1, rate, 4)],
    }  # fmt: skip


def config_text(rate=80, **extra):
    return config_mod.dumps(NODE_ID, KEY, [([(4, 5)], rate), ([(6, 7)], rate)], **extra)


def pick(t, grams):
    """A hand lifts ``grams`` off the lane at ``t`` (the hand presses 40 g first, for 0.3 s)."""
    return [["h", t, t + 0.6, t + 0.1, t + 0.4, 40.0, 3.0, 9.0, 0.0, 1.0, 60.0, 0.0], ["s", t + 0.3, t + 0.5, -grams]]


def put(t, grams):
    return [["s", t, t + 0.15, grams], ["h", t, t + 0.5, t + 0.05, t + 0.35, 20.0, 2.0, 8.0, 0.0, 1.0, 55.0, 0.0]]


class HubSim:
    """The hub's side of the link with the protocol's hub-side classes; records every uplink frame."""

    def __init__(self, key=KEY, node_id=NODE_ID):
        self.key = Key(key)
        self.rx = UplinkReceiver({node_id: self.key})
        self.tx = DownlinkSender(node_id, self.key)
        self.dec = SerialDecoder()
        self.frames = []
        self.lines = []

    def feed(self, data, t):
        """The frames in serial bytes from the node, as dicts with their ``seq`` and arrival time ``t``."""
        return self.feed_frames(self.dec.feed(data), t)

    def feed_frames(self, raws, t):
        """The same for whole frames (a link without serial framing)."""
        out = []
        for raw in raws:
            f = self.rx.accept(raw)
            d = f.message.to_dict()
            d["seq"] = f.seq
            d["t"] = t
            if d["type"] == "hello":
                self.tx.new_session(d["boot_count"])
            out.append(d)
        self.frames.extend(out)
        return out

    def line(self, msg):
        line = encode_line(self.tx.encode(msg))
        self.lines.append(line)
        return line

    def of(self, kind):
        return [f for f in self.frames if f["type"] == kind]


class PipeIO:
    def __init__(self):
        self.up = bytearray()
        self.down = bytearray()

    def write(self, data):
        self.up += data

    def read_available(self):
        d = bytes(self.down)
        self.down = bytearray()
        return d

    def take(self):
        d = bytes(self.up)
        self.up = bytearray()
        return d


class FrameLink:
    """A link that carries whole frames, as a BLE link does (no serial framing, no text lines): what the
    node is given in place of its serial link."""

    def __init__(self):
        self.up = []
        self.down = []
        self.bad = 0

    def send(self, frame):
        self.up.append(frame)
        return True

    def poll(self):
        d = self.down
        self.down = []
        return d

    def rejected(self):
        return self.bad

    def fresh(self):
        return False

    def vouch(self):
        pass

    def take(self):
        d = self.up
        self.up = []
        return d


class Rig:
    """A node booted on an emulated board in ``base`` (flash root), time in ms driven by ``run``; on its
    serial link, or on a ``FrameLink`` when ``framed``."""

    def __init__(self, base, plan, cfg_text=None, files=None, provision_flash=True, hub=None, framed=False):
        _mkdir(base)
        if files:
            restore(base, files)
        elif provision_flash:
            provision(base, cfg_text or config_text(), plan)
        self.t = [0]
        self.io = PipeIO()
        self.board = EmulatedBoard(plan, self.io, lambda: self.t[0], base)
        self.frames = None
        if framed:
            cfg = config_mod.load(base + "/config.json")
            self.board.setup(cfg)
            self.frames = FrameLink()
            self.node = node_mod.Node(cfg, self.board, self.frames, base)
        else:
            self.node = node_mod.boot(self.board)
        self.hub = hub or HubSim()
        self.auto_hello = True

    def run(self, until_ms, step_ms=5, on_frame=None):
        node = self.node
        while self.t[0] < until_ms:
            self.t[0] += step_ms
            now = self.board.now_ms()
            node.step(now)
            if self.frames is None:
                frames = self.hub.feed(self.io.take(), self.t[0])
            else:
                frames = self.hub.feed_frames(self.frames.take(), self.t[0])
            for f in frames:
                if f["type"] == "hello" and self.auto_hello:
                    self.send(Ack(0))
                if on_frame is not None:
                    on_frame(f)

    def send(self, msg):
        if self.frames is None:
            self.io.down += self.hub.line(msg)
        else:
            self.frames.down.append(self.hub.tx.encode(msg))

    def send_raw(self, data):
        self.io.down += data


def snapshot(base):
    """Every file under ``base`` (hex), to carry a node's flash into a later call (a reboot)."""
    out = {}

    def walk(d, rel):
        for name in os.listdir(d):
            p = d + "/" + name
            r = rel + "/" + name if rel else name
            if os.stat(p)[0] & 0x4000:
                walk(p, r)
            else:
                with open(p, "rb") as f:
                    out[r] = binascii.hexlify(f.read()).decode()

    walk(base, "")
    return out


def restore(base, files):
    for rel in sorted(files):
        parts = rel.split("/")
        d = base
        for part in parts[:-1]:
            d = d + "/" + part
            _mkdir(d)
        with open(base + "/" + rel, "wb") as f:
            f.write(binascii.unhexlify(files[rel]))


def _brief(frames, kinds):
    return [f for f in frames if f["type"] in kinds]


# -- cases ---------------------------------------------------------------------------------------------


def hello_backoff(base):
    """No hub answers for 75 s; then one ack. Hello times, and what else went up."""
    rig = Rig(base, plan_two_lanes([], rate=10))
    rig.auto_hello = False
    rig.run(75000, 10)
    rig.send(Ack(0))
    rig.run(100000, 10)
    n = rig.node
    return {
        "hellos": [[f["t"], f["boot_count"], f["lane_count"], f["layout_hash"]] for f in rig.hub.of("hello")],
        "lane_states": [[f["t"], f["lane"]] for f in rig.hub.of("lane_state")],
        "health": [[f["t"], f["tx_frames"], f["rx_frames"], f["uptime_s"]] for f in rig.hub.of("health")],
        "session": n.session.up,
        "layout_hash": n.cfg.layout_hash(),
    }


def events_flow(base, framed=False):
    """Pick 2 at 5 s (not acked until 13 s), put 1 back at 16 s (acked at once); on the serial link or, when
    ``framed``, on a link that carries whole frames."""
    plan = plan_two_lanes(pick(5.0, 200.0) + put(16.0, 100.0))
    rig = Rig(base, plan, framed=framed)
    acks = {"on": False}

    def on_frame(f):
        if f["type"] == "event" and acks["on"]:
            rig.send(Ack(f["event_seq"]))

    rig.run(13000, 5, on_frame)
    rig.send(Ack(1))
    acks["on"] = True
    rig.run(22000, 5, on_frame)
    health = rig.node.reports.health(rig.board.now_ms()).to_dict()
    hub = rig.hub
    return {
        "events": [[f["t"], f["seq"], f["event_seq"], f["lane"], f["kind"], f["count_delta"], f["age_ms"]]
                   for f in hub.of("event")],
        "lane_states": [f for f in hub.of("lane_state") if f["lane"] == 0],
        "health_frames": hub.of("health"),
        "health_now": health,
        "frames_total": len(hub.frames),
        "outbox": [rig.node.shelf.outbox.depth, rig.node.shelf.outbox.acked],
    }  # fmt: skip


def reboot_run(base, files, until_ms, ack_events):
    """One boot: the first (no ``files``) sees a one-item pick at 5 s; the second boots from the first's flash
    with the lane as the pick left it. Returns what the hub saw and the flash."""
    plan = plan_two_lanes(pick(5.0, 100.0)) if files is None else plan_two_lanes([], base0=400.0)
    rig = Rig(base, plan, files=files)

    def on_frame(f):
        if f["type"] == "event" and ack_events:
            rig.send(Ack(f["event_seq"]))

    rig.run(until_ms, 5, on_frame)
    return {
        "hellos": [f["boot_count"] for f in rig.hub.of("hello")],
        "events": [[f["seq"], f["event_seq"], f["count_delta"], f["age_ms"]] for f in rig.hub.of("event")],
        "max_seq": max(f["seq"] for f in rig.hub.frames),
        "min_seq": min(f["seq"] for f in rig.hub.frames),
        "lane0": [f for f in rig.hub.of("lane_state") if f["lane"] == 0][-1],
        "files": snapshot(base),
    }


def commands(base):
    """Every command, answered: lane 0 empty, tared at 3 s, 1 kg placed at 5 s, calibrated at 8 s."""
    plan = plan_two_lanes([["s", 5.0, 5.4, 1000.0]], base0=0.0)
    rig = Rig(base, plan)
    script = [
        (3000, Tare(0)),
        (5100, Tare(0)),  # moving: busy
        (8000, Calibrate(0, 10000)),
        (8500, Calibrate(1, 5)),  # 0.5 g on a lane carrying 300 g since its tare: implausible scale
        (9000, Identify(2)),
        (9100, SetLane(1, 2500, 15, "SKU-X")),
        (9200, SetConfig(1, 5)),
        (9300, SetConfig(9, 1)),
        (9400, SetConfig(2, 1)),
        (9500, RequestState(255)),
        (9600, RequestState(7)),
        (9700, Tare(9)),
        (9800, Identify(0)),
    ]
    sent = []
    led = []
    i = 0
    while i < len(script):
        t, msg = script[i]
        rig.run(t, 5, None)
        rig.send(msg)
        sent.append([rig.hub.tx.seq, msg.NAME, t])
        i += 1
        rig.run(t + 50, 5, None)
        led.append([msg.NAME, rig.board.led, rig.board.led_changes])
    rig.run(15000, 5, None)
    results = {}
    for f in rig.hub.of("command_result"):
        results[str(f["command_seq"])] = [f["status"], f["value"], f["t"]]
    states = rig.hub.of("lane_state")
    lane1 = rig.node.shelf.lanes[1].det
    return {
        "sent": sent,
        "results": results,
        "led": led,
        "weight0": rig.node.shelf.lanes[0].weight_dg,
        "lane_states_after_request": [f["lane"] for f in states if 9500 <= f["t"] <= 9560],
        "lane_state_times": [f["t"] for f in states if f["t"] > 9200],
        "assignment": list(assignment.load_assignment(base + "/state/lane1")),
        "unit1": lane1._unit,
        "skus": [lane.sku for lane in rig.node.shelf.lanes],
        "settings": [rig.node.settings.lane_state_ms, rig.node.settings.health_ms],
    }


def identity_run(base, files, key_hex=None, node_id=NODE_ID):
    """One boot from ``files`` (None: a fresh provision; a pick of 2 at 5 s) as ``node_id`` with the key
    ``key_hex`` (None: the usual one); what went up."""
    plan = plan_two_lanes(pick(5.0, 200.0)) if files is None else plan_two_lanes([], base0=300.0)
    key = KEY if key_hex is None else binascii.unhexlify(key_hex)
    rig = Rig(base, plan, files=files, hub=HubSim(key, node_id))

    def on_frame(f):
        if f["type"] == "event":
            rig.send(Ack(f["event_seq"]))

    rig.run(9000, 5, on_frame)
    lane0 = [f for f in rig.hub.of("lane_state") if f["lane"] == 0][-1]
    return {
        "boots": [f["boot_count"] for f in rig.hub.of("hello")],
        "events": [[f["event_seq"], f["count_delta"]] for f in rig.hub.of("event")],
        "lane0": [lane0["count"], lane0["last_event"], lane0["flags"]],
        "weight0": rig.node.shelf.lanes[0].weight_dg,
        "min_seq": min(f["seq"] for f in rig.hub.frames),
        "notes": rig.node.notes,
        "files": snapshot(base),
    }


def standby_run(base, files, grams0, stop):
    """One boot from ``files`` (None: fresh) with ``grams0`` on lane 0 (100 g items) and 300 g on lane 1; after
    4 s, ``stop``: the node keeps its levels as on a Ctrl-C. What went up, and the flash."""
    rig = Rig(base, plan_two_lanes([], base0=grams0), files=files)

    def on_frame(f):
        if f["type"] == "event":
            rig.send(Ack(f["event_seq"]))

    rig.run(4000, 5, on_frame)
    if stop:
        rig.node.save_levels()
    return {
        "events": [[f["event_seq"], f["lane"], f["kind"], f["count_delta"], f["weight_delta_dg"], f["confidence"]]
                   for f in rig.hub.of("event")],
        "counts": [rig.node.shelf.counters.lanes[i].count for i in range(2)],
        "levels_file": "state/levels" in snapshot(base),
        "files": snapshot(base),
    }  # fmt: skip


def proven_after(base):
    """A node whose hub never answers: when (s) its on_proven hook runs, seen at 9 and at 11 minutes."""
    rig = Rig(base, plan_two_lanes([]))
    rig.auto_hello = False
    seen = []
    rig.node.on_proven = lambda: seen.append(rig.t[0] // 1000)
    out = []
    for until in (540000, 660000):
        rig.run(until, 50)
        out.append(seen[0] if seen else None)
    return out


def with_config(files, key_hex, node_id=NODE_ID, unclaimed=False):
    """``files`` with config.json rewritten (same wiring, this node id and key); ``unclaimed``: and the identity
    record ``smartshelf flash`` installs with a new config."""
    from firmware.identity import unclaimed_record

    text = config_mod.dumps(node_id, binascii.unhexlify(key_hex), [([(4, 5)], 80), ([(6, 7)], 80)])
    out = dict(files)
    out["config.json"] = binascii.hexlify(text.encode()).decode()
    if unclaimed:
        out["state/identity"] = binascii.hexlify(unclaimed_record()).decode()
    return out


def set_count(base, files=None):
    """Staff counts: lane 0 (5 items of 100 g) set to 12 at 3 s; a count while a pick moves the lane (5.1 s:
    busy); after the pick (2 items), 10 agrees (8 s); lane 1 set to 40000 (two count events); lane 9 does not
    exist. Acks everything. With ``files`` (a reboot): boots from that flash and reports its lane states."""
    plan = plan_two_lanes(pick(5.0, 200.0) if files is None else [], base0=500.0 if files is None else 300.0)
    rig = Rig(base, plan, files=files)

    def on_frame(f):
        if f["type"] == "event":
            rig.send(Ack(f["event_seq"]))

    script = [] if files is not None else [
        (3000, SetCount(0, 12)),
        (5100, SetCount(0, 5)),
        (8000, SetCount(0, 10)),
        (8500, SetCount(1, 40000)),
        (9000, SetCount(9, 1)),
    ]  # fmt: skip
    sent = []
    for t, msg in script:
        rig.run(t, 5, on_frame)
        rig.send(msg)
        sent.append([rig.hub.tx.seq, msg.count, t])
    rig.run(12000, 5, on_frame)
    results = {}
    for f in rig.hub.of("command_result"):
        results[str(f["command_seq"])] = [f["status"], f["value"]]
    last = {}
    for f in rig.hub.of("lane_state"):
        last[str(f["lane"])] = [f["count"], f["removed_total"], f["added_total"], f["last_event"]]
    return {
        "sent": sent,
        "results": results,
        "events": [[f["event_seq"], f["lane"], f["kind"], f["count_delta"], f["weight_delta_dg"], f["confidence"]]
                   for f in rig.hub.of("event")],
        "last_state": last,
        "outbox": rig.node.shelf.outbox.depth,
        "files": snapshot(base),
    }  # fmt: skip


def set_count_no_room(base):
    """A count needing two events on an outbox with room for one records nothing."""
    from firmware.counters import CountersStore
    from firmware.outbox import Outbox
    from firmware.shelf import NO_ROOM, Shelf

    _mkdir(base)
    shelf = Shelf([None], Outbox(base + "/ob", 1, capacity=3), CountersStore(base + "/counters", 1))
    seen = []
    first = shelf.set_count(0, 5, 0, seen.append)
    shelf.outbox.add(0, 1, -1, -100, 90, 10)
    busy = shelf.set_count(0, 40000, 20, seen.append)
    return {"first": first, "busy": busy, "no_room": NO_ROOM, "seen": seen, "depth": shelf.outbox.depth,
            "count": shelf.counters.lanes[0].count}  # fmt: skip


def forged(base):
    """Bad frames of every kind after the session is up; a good command at the end is still answered."""
    rig = Rig(base, plan_two_lanes([]))
    rig.run(1000, 5)
    hub = rig.hub
    wrong = Key(bytes(32 - i for i in range(32)))
    rig.send_raw(encode_line(encode_frame(Identify(1), NODE_ID, 50, wrong, hub.tx.session)))  # bad tag
    rig.send_raw(encode_line(encode_frame(Identify(1), NODE_ID + 1, 51, hub.key, hub.tx.session)))  # other node
    rig.send_raw(encode_line(encode_frame(Identify(1), NODE_ID, 52, hub.key, hub.tx.session + 1)))  # other boot
    good = hub.line(RequestState(0))
    rig.send_raw(good)
    rig.run(1100, 5)
    rig.send_raw(good)  # replayed
    rig.send_raw(b"!AAAA*AAA\n")  # not base64
    rig.send_raw(b"!" + b"A" * 400 + b"\n")  # overlong
    rig.send_raw(b"print('hi')\r\n")  # console typing: ignored, not counted
    rig.send_raw(b"\x00\x05garbage\n")
    out = _answered_after_bad_input(rig)
    out["ignored"] = rig.node.link.decoder.ignored_lines
    return out


def _answered_after_bad_input(rig):
    """Send one more good command after the bad input; what was answered and what health counted."""
    rig.run(1200, 5)
    rig.send(RequestState(1))
    rig.run(1300, 5)
    hub = rig.hub
    h = rig.node.reports.health(rig.board.now_ms()).to_dict()
    return {
        "results": [[f["command_seq"], f["status"]] for f in hub.of("command_result")],
        "good_seq": hub.tx.seq,
        "rx_rejected": h["rx_rejected"],
        "rx_frames": h["rx_frames"],
        "tx_frames": h["tx_frames"],
        "uplink_frames": len(hub.frames),
    }


def framed_replay(base):
    """On a frame link: a replayed command and a forged one are dropped and counted, the next is answered."""
    rig = Rig(base, plan_two_lanes([]), framed=True)
    rig.run(1000, 5)
    hub = rig.hub
    good = hub.tx.encode(RequestState(0))
    rig.frames.down.append(good)
    rig.run(1100, 5)
    rig.frames.down.append(good)  # replayed
    wrong = Key(bytes(32 - i for i in range(32)))
    rig.frames.down.append(encode_frame(Identify(1), NODE_ID, hub.tx.seq + 1, wrong, hub.tx.session))  # bad tag
    rig.frames.bad = 1  # the link itself dropped something it could not decode
    return _answered_after_bad_input(rig)


def bad_configs(base, docs):
    """config.load's message for each document (JSON text), and whether boot refuses to start."""
    _mkdir(base)
    out = []
    for text in docs:
        with open(base + "/config.json", "w") as f:
            f.write(text)
        try:
            config_mod.load(base + "/config.json")
            msg = ""
        except config_mod.ConfigError as err:
            msg = str(err)
        board = EmulatedBoard(plan_two_lanes([]), PipeIO(), lambda: 0, base)
        started = node_mod.boot(board) is not None
        out.append([msg, started])
    return out


def unwired_cell(base):
    """A lane whose second cell is not connected: the lane reports a sensor fault, the node keeps running."""
    plan = plan_two_lanes([])
    text = config_mod.dumps(NODE_ID, KEY, [([(4, 5), (20, 21)], 80), ([(6, 7)], 80)])
    provision(base, text, {"lanes": []})
    rig = Rig(base, plan, files=None, provision_flash=False)
    rig.run(3000, 5)
    out = {
        "flags": [rig.node.shelf.lane_state(i).flags for i in range(2)],
        "faults": rig.node.shelf.lanes[0].faults,
        "samples": [lane.samples for lane in rig.node.shelf.lanes],
        "hellos": len(rig.hub.of("hello")),
    }
    rig.send(SetCount(0, 5))  # a faulted lane takes no count: its cell's return would count the change again
    rig.run(3100, 5)
    out["count_answer"] = [[f["status"], f["value"]] for f in rig.hub.of("command_result")]
    out["events"] = len(rig.hub.of("event"))
    return out
