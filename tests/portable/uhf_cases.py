"""Portable UHF reader-module test bodies: a host talks to ``tools/emulation/uhf_module.py`` on virtual time.

Each function builds a module, drives it through its UART as a firmware driver would (commands out, bytes in,
the clock advanced in small steps) and returns plain data (JSON) for the test to assert on; the same code runs
under CPython and MicroPython.
"""

import binascii

from tools.emulation.hx711_chip import VirtualClock
from tools.emulation.uhf_module import (
    CMD_GET_POWER,
    CMD_GET_REGION,
    CMD_INFO,
    CMD_INVENTORY,
    CMD_MULTI,
    CMD_SET_POWER,
    CMD_SET_REGION,
    CMD_STOP,
    COMMAND_ERROR,
    INFO,
    NO_TAG,
    STOP_OK,
    TYPE_RESPONSE,
    AbsentUart,
    OutPin,
    TagField,
    UhfModule,
    checksum,
    command,
    crc16_genibus,
    decode,
    frame,
)

PUBLISHED_EPC = "30751feb705c5904e3d50d70"  # the tag of the R200 manual's example notice (PC 0x3400)


def _hex(b):
    return binascii.hexlify(bytes(b)).decode()


def _rig(tags, antennas=None, seed=1, faults=None, bits=2, **kw):
    clk = VirtualClock()
    pins = [OutPin() for _ in range(bits)]
    m = UhfModule(clk, tags, antennas=antennas or [0, 1, 2, 3], switch=pins, seed=seed, faults=faults, **kw)
    return clk, pins, m


def _select(pins, i):
    for k in range(len(pins)):
        pins[k].value((i >> k) & 1)


def _pump(clk, m, us, step=500):
    """Advance ``us`` in steps of ``step``, reading everything that arrives."""
    out = bytearray()
    end = clk.now + us
    while clk.now < end:
        clk.advance(step)
        d = m.read()
        if d:
            out.extend(d)
    return bytes(out)


def _frames(data):
    return [[t, c, _hex(p), ok] for t, c, p, ok in decode(data)]


def _ask(clk, m, frame, us=20000):
    m.write(frame)
    return _frames(_pump(clk, m, us))


def known_frames():
    """Frames and checksums that have published values."""
    notice = bytes(binascii.unhexlify("BB02220011C9340030751FEB705C5904E3D50D703A76EF7E"))
    return {
        "inventory": _hex(command(CMD_INVENTORY)),
        "multi_10000": _hex(command(CMD_MULTI, b"\x22\x27\x10")),
        "stop": _hex(command(CMD_STOP)),
        "stop_ok": _hex(STOP_OK),
        "set_power_20": _hex(command(CMD_SET_POWER, b"\x07\xd0")),
        "get_power": _hex(command(CMD_GET_POWER)),
        "set_region_eu": _hex(command(CMD_SET_REGION, b"\x03")),
        "get_region": _hex(command(CMD_GET_REGION)),
        "info_hw": _hex(command(CMD_INFO, b"\x00")),
        "no_tag": _hex(NO_TAG),
        "command_error": _hex(COMMAND_ERROR),
        "crc_check": crc16_genibus(b"123456789"),
        "published_notice_crc": crc16_genibus(notice[6:20]),
        "published_notice_sum": checksum(notice, 1, len(notice) - 2),
    }


def settings():
    """Power, region and info: set, get, out-of-range values, and how long a reply takes."""
    clk, _pins, m = _rig([])
    out = {}
    m.write(command(CMD_GET_POWER))
    t0 = clk.now
    first = None
    while clk.now - t0 < 10000:
        clk.advance(10)
        if first is None and m.any():
            first = clk.now - t0
        if m.any() >= 9:
            break
    out["get_power_first_byte_us"] = first
    out["get_power_all_us"] = clk.now - t0
    out["get_power_default"] = _frames(m.read())
    out["set_power"] = _ask(clk, m, command(CMD_SET_POWER, b"\x07\xd0"))
    out["get_power_after"] = _ask(clk, m, command(CMD_GET_POWER))
    out["set_power_too_high"] = _ask(clk, m, command(CMD_SET_POWER, b"\x0b\xb9"))
    out["set_power_short"] = _ask(clk, m, command(CMD_SET_POWER, b"\x07"))
    out["get_region_default"] = _ask(clk, m, command(CMD_GET_REGION))
    out["set_region"] = _ask(clk, m, command(CMD_SET_REGION, b"\x03"))
    out["get_region_after"] = _ask(clk, m, command(CMD_GET_REGION))
    out["set_region_bad"] = _ask(clk, m, command(CMD_SET_REGION, b"\x05"))
    out["info"] = [_ask(clk, m, command(CMD_INFO, bytes((p,)))) for p in range(4)]
    out["power"] = m.power
    out["region"] = m.region
    out["silent_when_idle"] = _hex(_pump(clk, m, 2000000, 10000))
    out["stats"] = m.stats()
    return out


def notice_layout():
    """One tag with the published EPC and PC on the selected lane, one 96-bit tag next to it."""
    tags = [
        {"epc": PUBLISHED_EPC, "pc": 0x3400, "orient": 1.0, "spans": [[1, 0, None]]},
        {"epc": "3074257bf7194e4000001a85", "orient": 1.0, "spans": [[1, 0, None]]},
    ]
    clk, pins, m = _rig(tags, seed=5)
    _select(pins, 1)
    rounds = []
    raw = []
    for _ in range(6):
        m.write(command(CMD_INVENTORY))
        data = _pump(clk, m, 60000)
        raw.append(_hex(data))
        rounds.append(_frames(data))
    _select(pins, 3)  # lane 3: two lanes away from the tags
    empty = _pump_round(clk, m)
    return {"rounds": rounds, "raw": raw, "empty": empty, "antenna": m.last_antenna, "stats": m.stats()}


def _pump_round(clk, m):
    m.write(command(CMD_INVENTORY))
    return _frames(_pump(clk, m, 60000))


def round_timing(ntags):
    """How long a single round takes with ``ntags`` tags on the selected lane: until the last frame is read."""
    tags = [{"epc": "3074257bf7194e40000%05x" % i, "orient": 1.0, "spans": [[0, 0, None]]} for i in range(ntags)]
    clk, _pins, m = _rig(tags, seed=9)
    out = []
    for _ in range(5):
        m.write(command(CMD_INVENTORY))
        t0 = clk.now
        last = t0
        n = 0
        while clk.now - t0 < 400000:
            clk.advance(100)
            d = m.read()
            if d:
                n += len(d)
                last = clk.now
        out.append({"us": last - t0, "bytes": n})
    return {"rounds": out, "stats": m.stats()}


def read_statistics(tags, antenna, power_cdbm, rounds, seed, bits=2, antennas=None):
    """``rounds`` single inventories on ``antenna`` at ``power_cdbm``: reads and mean RSSI per tag (by EPC)."""
    clk, pins, m = _rig(tags, antennas=antennas, seed=seed, bits=bits)
    _select(pins, antenna)
    _ask(clk, m, command(CMD_SET_POWER, bytes((power_cdbm >> 8, power_cdbm & 0xFF))))
    reads = {}
    rssi = {}
    no_tag = 0
    for _ in range(rounds):
        m.write(command(CMD_INVENTORY))
        for t, c, p, ok in decode(_pump(clk, m, 60000, 2000)):
            if t == 2 and c == CMD_INVENTORY and ok:
                epc = _hex(p[3 : 3 + len(p) - 5])
                reads[epc] = reads.get(epc, 0) + 1
                r = p[0] - 256 if p[0] > 127 else p[0]
                rssi[epc] = rssi.get(epc, 0) + r
            elif t == 1 and c == 0xFF and p == b"\x15":
                no_tag += 1
    mean = {}
    for epc in reads:
        mean[epc] = rssi[epc] / reads[epc]
    return {"reads": reads, "mean_rssi": mean, "no_tag": no_tag, "stats": m.stats()}


def multi_and_stop():
    """A counted multi inventory runs its rounds and goes quiet; a long one stops on 0x28 after its round, and
    drops any other command meanwhile."""
    tags = [{"epc": "3074257bf7194e4000000001", "orient": 1.0, "spans": [[0, 0, None]]}]
    clk, _pins, m = _rig(tags, seed=2)
    out = {}
    m.write(command(CMD_MULTI, b"\x22\x00\x05"))
    data = _pump(clk, m, 1000000)
    out["counted"] = {"frames": _frames(data), "rounds": m.rounds, "state": m.state}
    r0 = m.rounds
    m.write(command(CMD_MULTI, b"\x22\xff\xff"))
    data = _pump(clk, m, 300000)
    out["running_rounds"] = m.rounds - r0
    out["running_frames"] = len(decode(data))
    out["state_running"] = m.state
    m.write(command(CMD_GET_POWER))  # not stop: dropped
    m.write(command(CMD_INVENTORY))
    data = _pump(clk, m, 100000)
    out["during"] = [f for f in _frames(data) if f[0] != 2]
    m.write(command(CMD_STOP))
    t_stop = clk.now
    data = bytearray()
    t_ok = None
    while clk.now - t_stop < 200000:
        clk.advance(100)
        d = m.read()
        if d:
            data.extend(d)
            if t_ok is None and bytes(data).endswith(STOP_OK):
                t_ok = clk.now - t_stop
    frames = _frames(data)
    out["after_stop"] = frames
    out["stop_reply_us"] = t_ok
    rounds_at_stop = m.rounds
    out["quiet_after"] = _hex(_pump(clk, m, 500000))
    out["rounds_after_stop"] = m.rounds - rounds_at_stop
    out["get_power_after"] = _ask(clk, m, command(CMD_GET_POWER))
    out["zero_count"] = _ask(clk, m, command(CMD_MULTI, b"\x22\x00\x00"))
    out["bad_reserved"] = _ask(clk, m, command(CMD_MULTI, b"\x21\x00\x05"))
    out["stop_when_idle"] = _ask(clk, m, command(CMD_STOP))
    out["stats"] = m.stats()
    return out


def malformed():
    """Junk between frames, a bad checksum, a bad end byte, a wrong type, an unknown command, a frame cut short
    by a new one, and a frame abandoned mid-way: each answered (or not) as the docstring says."""
    clk, _pins, m = _rig([])
    out = {}
    out["junk"] = _ask(clk, m, b"\x00\x11\x7e\x55\xaa")
    good = bytearray(command(CMD_GET_POWER))
    bad_sum = bytearray(good)
    bad_sum[5] ^= 0x01
    out["bad_checksum"] = _ask(clk, m, bytes(bad_sum))
    bad_end = bytearray(good)
    bad_end[6] = 0x7F
    out["bad_end"] = _ask(clk, m, bytes(bad_end))
    out["response_type"] = _ask(clk, m, bytes(STOP_OK))
    out["unknown"] = _ask(clk, m, command(0x55, b"\x01\x02"))
    # BB 00 22 then a whole get-power frame: PL reads as 0xBB00 (too long) -> error, then resync at the 2nd BB
    out["cut_short"] = _ask(clk, m, b"\xbb\x00\x22" + command(CMD_GET_POWER))
    m.write(b"\xbb\x00\xb7\x00")  # half a frame, then silence longer than the frame gap
    out["abandoned"] = _frames(_pump(clk, m, 100000))
    out["after_abandoned"] = _ask(clk, m, command(CMD_GET_REGION))
    out["stats"] = m.stats()
    return out


def reboot_and_vanish():
    """Settings lost across a scheduled reboot, silence while booting; an unplugged span where nothing answers."""
    tags = [{"epc": "3074257bf7194e4000000002", "orient": 1.0, "spans": [[0, 0, None]]}]
    clk, _pins, m = _rig(tags, seed=4, faults={"reboots": [1.0], "vanish": [[4.0, 6.0], [9.0, None]]})
    out = {}
    out["set_power"] = _ask(clk, m, command(CMD_SET_POWER, b"\x07\xd0"))
    out["set_region"] = _ask(clk, m, command(CMD_SET_REGION, b"\x03"))
    m.write(command(CMD_MULTI, b"\x22\xff\xff"))
    before = _pump(clk, m, 1000000 - clk.now)  # runs until the reboot at 1.0 s
    out["multi_frames_before"] = len(decode(before))
    out["state_at_reboot"] = m.state
    out["reboots"] = m.reboots
    lost0 = m.rx_lost
    out["while_booting"] = _ask(clk, m, command(CMD_GET_POWER), 100000)
    out["rx_lost"] = m.rx_lost - lost0
    _pump(clk, m, 1000000)  # booted by now (0.5..1 s)
    out["state_after_boot"] = m.state
    out["quiet_after_boot"] = _hex(_pump(clk, m, 500000))
    out["power_after"] = _ask(clk, m, command(CMD_GET_POWER))
    out["region_after"] = _ask(clk, m, command(CMD_GET_REGION))
    _pump(clk, m, 4100000 - clk.now)
    out["state_unplugged"] = m.state
    out["unplugged"] = _ask(clk, m, command(CMD_GET_POWER), 500000)
    _pump(clk, m, 7100000 - clk.now)  # plugged again at 6.0 s, booted by 7.0 s
    out["replugged"] = _ask(clk, m, command(CMD_GET_POWER))
    _pump(clk, m, 9100000 - clk.now)
    answers = []
    for _ in range(5):
        answers.extend(_ask(clk, m, command(CMD_GET_POWER), 400000))
    out["gone_for_good"] = answers
    out["stats"] = m.stats()
    return out


def reboot_cuts_a_frame():
    """A reboot in the middle of a frame on the line: the host gets the first part only."""
    clk, _pins, m = _rig([])
    m.write(command(CMD_INFO, b"\x00"))  # a 23-byte reply, about 2 ms on the line from ~1.8 ms
    clk.advance(2400)
    m.reboot()
    data = _pump(clk, m, 50000)
    full = frame(TYPE_RESPONSE, CMD_INFO, b"\x00" + INFO[0])
    return {"got": _hex(data), "full": _hex(full), "stats": m.stats()}


def faults_stream(seed, rounds):
    """Many rounds with every per-frame fault turned up: what the stream shows against what the module counted."""
    tags = []
    for i in range(12):
        tags.append({"epc": "3074257bf7194e40000010%02x" % i, "orient": 1.0, "spans": [[0, 0, None]]})
    faults = {"miss_ppm": 50000, "dup_ppm": 100000, "collision_ppm": 10000, "corrupt_ppm": 50000,
              "garbage_ppm": 2000}  # fmt: skip
    clk, _pins, m = _rig(tags, seed=seed, faults=faults)
    data = bytearray()
    dup_rounds = 0
    for _ in range(rounds):
        m.write(command(CMD_INVENTORY))
        chunk = _pump(clk, m, 120000, 2000)
        data.extend(chunk)
        seen = []
        for t, _c, p, ok in decode(chunk):
            if t == 2 and ok:
                epc = p[3:15]
                if epc in seen:
                    dup_rounds += 1
                seen.append(epc)
    frames = decode(data)
    return {
        "notices_ok": sum(1 for f in frames if f[0] == 2 and f[3]),
        "notices_bad": sum(1 for f in frames if f[0] == 2 and not f[3]),
        "bad_frames": sum(1 for f in frames if not f[3]),
        "dup_seen": dup_rounds,
        "stats": m.stats(),
    }


def overrun():
    """Nobody reads while a multi inventory streams notices: the 256-byte receive buffer fills and loses bytes."""
    tags = [{"epc": "3074257bf7194e40000020%02x" % i, "orient": 1.0, "spans": [[0, 0, None]]} for i in range(8)]
    clk, _pins, m = _rig(tags, seed=3)
    m.write(command(CMD_MULTI, b"\x22\x00\x14"))
    clk.advance(1000000)
    n = m.any()
    data = m.read()
    return {"any": n, "read": len(data) if data else 0, "overrun": m.overrun, "tx_bytes": m.tx_bytes}


def field_timeline():
    """Spans starting and ending over time, on the selected lane; rounds evaluated at their own time."""
    tags = [
        {"epc": "3074257bf7194e4000003001", "orient": 1.0, "spans": [[0, 0, 1.0], [0, 3.0, None]]},
        {"epc": "3074257bf7194e4000003002", "orient": 1.0, "spans": [[0, 2.0, None]]},
    ]
    clk, _pins, m = _rig(tags, seed=6)
    seen = []
    for t_ms in (500, 1500, 2500, 3500):
        clk.advance(t_ms * 1000 - clk.now)
        got = []
        for _ in range(4):
            m.write(command(CMD_INVENTORY))
            for t, _c, p, ok in decode(_pump(clk, m, 60000)):
                if t == 2 and ok:
                    e = _hex(p[3:15])
                    if e not in got:
                        got.append(e)
        got.sort()
        seen.append(got)
    f = TagField(tags)
    return {"seen": seen, "on_lane": [f.on_lane(0, t) for t in (0.5, 1.5, 2.5, 3.5)]}


def switch_at_round_start():
    """The antenna is chosen by the switch level at the start of the round, even when the round is evaluated
    later; ``select`` replaces the pins."""
    tags = [
        {"epc": "3074257bf7194e4000004000", "orient": 1.0, "spans": [[0, 0, None]]},
        {"epc": "3074257bf7194e4000004003", "orient": 1.0, "spans": [[3, 0, None]]},
    ]
    clk, pins, m = _rig(tags, seed=8)
    out = {}
    _select(pins, 0)
    m.write(command(CMD_INVENTORY))
    clk.advance(5000)  # the round started at ~1.6 ms
    _select(pins, 3)  # too late for this round
    out["first"] = [_hex(p[3:15]) for t, c, p, ok in decode(_pump(clk, m, 60000)) if t == 2]
    out["first_antenna"] = m.last_antenna
    m.write(command(CMD_INVENTORY))
    out["second"] = [_hex(p[3:15]) for t, c, p, ok in decode(_pump(clk, m, 60000)) if t == 2]
    out["second_antenna"] = m.last_antenna
    m.write(command(CMD_INVENTORY))
    _select(pins, 0)  # before the round starts (the command is still on the wire): this round reads lane 0
    out["third"] = [_hex(p[3:15]) for t, c, p, ok in decode(_pump(clk, m, 60000)) if t == 2]
    out["pin_changes"] = [p.changes for p in pins]
    clk2 = VirtualClock()
    m2 = UhfModule(clk2, tags, antennas=[0, None, 3], select=lambda: 1, seed=8)
    m2.write(command(CMD_INVENTORY))
    out["no_antenna"] = _frames(_pump(clk2, m2, 60000))
    return out


def absent():
    u = AbsentUart()
    out = [u.write(command(CMD_GET_POWER)), u.any(), u.read(), u.readinto(bytearray(8))]
    return {"calls": out, "written": u.written}


def garbled_baud():
    """A host UART at the wrong baud rate: the module hears garbage and the host reads garbage."""
    tags = [{"epc": "3074257bf7194e4000005000", "orient": 1.0, "spans": [[0, 0, None]]}]
    clk, _pins, m = _rig(tags)
    m.set_host_baud(57600)
    a = _ask(clk, m, command(CMD_GET_POWER))
    m.set_host_baud(115200)
    b = _ask(clk, m, command(CMD_GET_POWER))
    return {"wrong": a, "right": b, "commands": m.commands}


def readinto_api():
    """readinto with and without nbytes, read(n), any()."""
    clk, _pins, m = _rig([])
    m.write(command(CMD_INFO, b"\x02"))
    clk.advance(20000)
    n = m.any()
    buf = bytearray(4)
    a = m.readinto(buf)
    first = _hex(buf)
    b = m.readinto(buf, 2)
    second = _hex(buf[:2])
    c = m.read(3)
    rest = m.read()
    return {
        "any": n, "a": a, "first": first, "b": b, "second": second, "c": _hex(c), "rest": _hex(rest),
        "empty_read": m.read(), "empty_readinto": m.readinto(buf), "any_after": m.any(),
        "full": _hex(command(CMD_INFO, b"\x02")),
    }  # fmt: skip


def session(seed):
    """A scripted session with faults everywhere: every byte the host read and the module's counters (the two
    runtimes must agree byte for byte)."""
    tags = []
    for i in range(10):
        lane = i % 4
        tags.append({"epc": "3074257bf7194e40000060%02x" % i, "orient": 0.5 + 0.05 * i,
                     "spans": [[lane, 0.05 * i, 2.0 + 0.1 * i], [(lane + 1) % 4, 2.5 + 0.1 * i, None]]})  # fmt: skip
    tags.append({"epc": "3074257bf7194e4000006100", "orient": 0.8, "spans": [[None, 0, None]]})
    faults = {"miss_ppm": 30000, "dup_ppm": 50000, "collision_ppm": 20000, "corrupt_ppm": 30000,
              "garbage_ppm": 1000, "reboots": [2.2], "vanish": [[3.4, 3.8]]}  # fmt: skip
    clk, pins, m = _rig(tags, seed=seed, faults=faults)
    data = bytearray()
    m.write(command(CMD_SET_POWER, b"\x0a\x28"))
    data.extend(_pump(clk, m, 20000))
    for i in range(40):
        _select(pins, i % 4)
        m.write(command(CMD_INVENTORY))
        data.extend(_pump(clk, m, 40000, 700))
    m.write(command(CMD_MULTI, b"\x22\x00\x30"))
    data.extend(_pump(clk, m, 900000, 900))
    m.write(command(CMD_STOP))
    data.extend(_pump(clk, m, 100000))
    for i in range(60):
        _select(pins, (i * 3) % 4)
        m.write(command(CMD_INVENTORY))
        data.extend(_pump(clk, m, 45000, 1100))
    return {"bytes": _hex(data), "stats": m.stats(), "tag_reads": m.tag_reads, "now": clk.now}


def board_reader():
    """The emulated board's RFID plumbing: ``uart`` and ``pin_out`` wired by the plan, on the board's clock."""
    from tools.emulation.board import EmulatedBoard

    tags = [
        {"epc": "3074257bf7194e4000008000", "orient": 1.0, "spans": [[0, 0, 2.0]]},
        {"epc": "3074257bf7194e4000008003", "orient": 1.0, "spans": [[3, 1.0, None]]},
    ]
    reader = {"uart": 1, "tx": 17, "rx": 16, "switch": [25, 26], "antennas": [0, 1, 2, 3], "seed": 5, "faults": {}}
    plan = {"lanes": [], "cells": [], "rfid": {"readers": [reader], "tags": tags}}
    wall = [500]
    board = EmulatedBoard(plan, None, lambda: wall[0])
    uart = board.uart(1, 17, 16, 115200)
    pins = [board.pin_out(25), board.pin_out(26)]
    out = {
        "same_pin": board.pin_out(25) is pins[0],
        "module_pins": board.readers[0].switch[0] is pins[0] and board.readers[0].switch[1] is pins[1],
        "module_uart": uart is board.readers[0],
        "other_pin": board.pin_out(5) is not pins[0] and board.pin_out(5).value() == 0,
    }

    def inventory(u, lane_value):
        pins[0].value(lane_value & 1)
        pins[1].value(lane_value >> 1)
        u.write(command(CMD_INVENTORY))
        data = bytearray()
        for _ in range(60):
            wall[0] += 1
            d = u.read()
            if d:
                data.extend(d)
        return [_hex(p[3:15]) if t == 2 else _hex(p) for t, c, p, ok in decode(data)]

    out["t0.5_lane0"] = inventory(uart, 0)
    out["t0.5_lane3"] = inventory(uart, 3)
    wall[0] = 2500
    out["t2.5_lane0"] = inventory(uart, 0)
    out["t2.5_lane3"] = inventory(uart, 3)
    out["swapped_pins"] = inventory(board.uart(1, 16, 17, 115200), 3)
    out["other_uart"] = inventory(board.uart(2, 17, 16, 115200), 3)
    out["wrong_baud"] = inventory(board.uart(1, 17, 16, 9600), 3)
    out["right_baud"] = inventory(board.uart(1, 17, 16, 115200), 3)
    out["clock_s"] = board.clock.now // 1000000
    return out
