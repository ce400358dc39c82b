"""The UHF RFID reader driver (firmware/rfid/uhf.py) on CPython and the real MicroPython VM: frames byte for byte,
parsing hand-built streams (garbage, bad checksums, bad CRCs, frames across polls), the reader's life against a
module that answers (configure, dwell per antenna, verify, settings lost, silence, refusal), the same against the
byte-level module emulator (tools/emulation/uhf_module.py) on virtual time with its faults, and no allocation per
tag notice under MicroPython (the heap that matters).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.portable import rfid_cases as rc
from tests.portable.rfid_cases import EPC_A, EPC_B
from tools.emulation.uhf_module import crc16_genibus as ref_crc  # bit by bit: independent of the driver's table

M = "tests.portable.rfid_cases"
T = 120


def ref_frame(ftype: int, cmd: int, params: bytes = b"") -> str:
    body = bytes([ftype, cmd, len(params) >> 8, len(params) & 0xFF]) + params
    return (b"\xbb" + body + bytes([sum(body) & 0xFF, 0x7E])).hex()


def hx(s: str) -> str:
    return s.replace(" ", "").lower()


# -- frames ------------------------------------------------------------------------------------------


def test_frames_byte_for_byte(runtime: Any) -> None:
    r = runtime.call(M, "frames", timeout_s=T)
    # The datasheet examples (DESIGN.md section 6 and the brief), byte for byte.
    assert r["single"] == hx("BB 00 22 00 00 22 7E")
    assert r["stop"] == hx("BB 00 28 00 00 28 7E")
    assert r["stop_ok"] == hx("BB 01 28 00 01 00 2A 7E")
    assert r["no_tag"] == hx("BB 01 FF 00 01 15 16 7E")
    assert r["get_power"] == hx("BB 00 B7 00 00 B7 7E")
    assert r["get_region"] == hx("BB 00 08 00 00 08 7E")
    # Built with parameters: the checksum is the low byte of the sum from type to the last parameter.
    assert r["multi"] == hx("BB 00 27 00 03 22 27 10 83 7E") == ref_frame(0, 0x27, bytes([0x22, 0x27, 0x10]))
    assert r["multi_max"] == hx("BB 00 27 00 03 22 FF FF 4A 7E")
    assert r["set_power"] == hx("BB 00 B6 00 02 07 D0 8F 7E")  # 20.00 dBm
    assert r["set_region"] == hx("BB 00 07 00 01 03 0B 7E")  # Europe
    assert r["info"] == hx("BB 00 03 00 01 00 04 7E")
    # CRC-16/GENIBUS: the catalogue's check value, and the tag notice's CRC over PC + EPC.
    assert r["crc_check"] == 0xD64E == ref_crc(b"123456789")
    pc_epc = bytes.fromhex("3000" + EPC_A)
    assert r["crc_epc"] == ref_crc(pc_epc)
    crc = ref_crc(pc_epc)
    assert r["notice"] == ref_frame(2, 0x22, bytes([0xC8]) + pc_epc + bytes([crc >> 8, crc & 0xFF]))
    assert r["notice"].startswith(hx("BB 02 22 00 11 C8 30 00"))


def test_the_emulator_agrees_on_frames_and_crc() -> None:
    """Two implementations written apart (the driver and the module emulator) agree."""
    from tools.emulation import uhf_module

    r = rc.frames()
    assert r["notice"] == rc.notice(EPC_A).hex()
    assert uhf_module.crc16_genibus(bytes.fromhex("3000" + EPC_A)) == r["crc_epc"]
    assert uhf_module.frame(1, 0x28, b"\x00").hex() == r["stop_ok"]
    assert uhf_module.command(0xB6, bytes([0x07, 0xD0])).hex() == r["set_power"]


# -- parsing hand-built streams ------------------------------------------------------------------------


def _n(epc: str = EPC_A, **kw: Any) -> str:
    return rc.notice(epc, **kw).hex()


def test_a_notice_split_anywhere_across_two_polls_is_read_once(runtime: Any) -> None:
    r = runtime.call(M, "split_everywhere", EPC_A, timeout_s=T)
    assert len(r) == 23
    for cut, tags, bad in r:
        assert tags == [[0, -61, EPC_A]], cut
        assert bad == 0, cut


def test_many_notices_in_one_chunk_and_one_byte_per_poll(runtime: Any) -> None:
    many = "".join(_n(e, rssi=-40 - k) for k, e in enumerate([EPC_A, EPC_B] * 4))
    r = runtime.call(M, "stream", [many], timeout_s=T)
    assert [t[2:] for t in r["tags"]] == [[-40 - k, e] for k, e in enumerate([EPC_A, EPC_B] * 4)]
    assert r["bad_frames"] == 0 and r["reads"] == 8
    bytewise = [_n(EPC_B)[i : i + 2] for i in range(0, 48, 2)]
    r = runtime.call(M, "stream", bytewise, 2, timeout_s=T)  # a byte every 2 ms: within the frame gap
    assert [t[3] for t in r["tags"]] == [EPC_B] and r["bad_frames"] == 0


@pytest.mark.parametrize(
    ("name", "chunks", "tags", "bad", "crc", "skipped"),
    [
        # bytes before, between and after frames: skipped, one bad frame per run of garbage
        ("garbage", ["00137e" + _n() + "bb00" + _n(EPC_B) + "55"], [EPC_A, EPC_B], 3, 0, 6),
        # a bad checksum, then a good frame right after it
        ("checksum", [_n(cs=0x00) + _n(EPC_B)], [EPC_B], 1, 0, 23),
        # a bad end byte
        ("end", [_n(end=0x7F) + _n(EPC_B)], [EPC_B], 1, 0, 23),
        # a notice whose tag CRC is wrong (the frame's checksum right): dropped and counted
        ("crc", [_n(crc=0x1234) + _n(EPC_B)], [EPC_B], 1, 1, 0),
        # the PC word's length disagrees with the frame's length
        ("pc", [_n(pc=0x3800) + _n(EPC_B)], [EPC_B], 1, 1, 0),
        # a cut frame swallowed by the next one's bytes: resynchronised inside the bad frame, on the next 0xBB
        ("cut", [_n()[:20] + _n(EPC_B)], [EPC_B], 1, 0, 9),
        # a length field beyond any frame: not a frame start
        ("length", ["bb02220100" + _n(EPC_B)], [EPC_B], 1, 0, 5),
        # a 128-bit EPC (PC 0x4000: 8 words)
        ("epc128", [_n("e2801160600002084e6b9c2a01020304")], ["e2801160600002084e6b9c2a01020304"], 0, 0, 0),
        # a notice of the single inventory (22) and of the multi one (27)
        ("multi", [_n(cmd=0x27)], [EPC_A], 0, 0, 0),
    ],
)
def test_resync_after_garbage_and_bad_frames(
    runtime: Any, name: str, chunks: list[str], tags: list[str], bad: int, crc: int, skipped: int
) -> None:
    r = runtime.call(M, "stream", chunks, timeout_s=T)
    assert [t[3] for t in r["tags"]] == tags, r
    assert (r["bad_frames"], r["crc_errors"], r["skipped"]) == (bad, crc, skipped), r
    assert r["state"] == "ok"


def test_a_header_that_never_completes_is_dropped_after_the_frame_gap(runtime: Any) -> None:
    """Garbage that looks like the start of a long frame must not hold up the real one behind it for good."""
    r = runtime.call(M, "stream", ["bb02220030" + _n(EPC_B)], 10, 300, timeout_s=T)
    assert [t[3] for t in r["tags"]] == [EPC_B]
    assert r["bad_frames"] == 1
    assert 100 < r["tags"][0][0] <= 130  # after FRAME_GAP_MS (100 ms), at the next poll


# -- the reader's life, against a module that answers ----------------------------------------------------


def test_configure_then_dwell_on_each_antenna_in_turn(runtime: Any) -> None:
    r = runtime.call(M, "lifecycle", timeout_s=T)
    w = r["written"]
    # Stop (whatever an earlier boot left running), region US, 23 dBm, both read back; then the cycle.
    assert w[:5] == [
        hx("BB 00 28 00 00 28 7E"),
        hx("BB 00 07 00 01 02 0A 7E"),
        hx("BB 00 B6 00 02 08 FC BC 7E"),
        hx("BB 00 B7 00 00 B7 7E"),
        hx("BB 00 08 00 00 08 7E"),
    ]
    assert w[5:11] == [hx("BB 00 27 00 03 22 FF FF 4A 7E"), hx("BB 00 28 00 00 28 7E")] * 3
    assert (r["power"], r["region"]) == (2300, 2)
    assert r["states"][-1][1] == "ok"
    # Switch value before each dwell: 0, 1, 2, 0, ... (first pin = bit 0); a dwell of 100 ms, then the stop.
    ants = r["antennas"]
    assert [a[:4] for a in ants[:6]] == [[0, 0, 0, 0], [1, 1, 1, 0], [2, 2, 0, 1]] * 2
    gaps = [b[4] - a[4] for a, b in itertools.pairwise(ants)]
    assert all(100 <= g <= 120 for g in gaps), gaps
    c = r["counters"]
    assert (c["resets"], c["silences"], c["timeouts"], c["cmd_errors"], c["bad_frames"]) == (0, 0, 0, 0, 0)


def test_lost_settings_are_found_counted_and_applied_again(runtime: Any) -> None:
    r = runtime.call(M, "settings_lost", timeout_s=T)
    assert r["before"]["resets"] == 0
    assert r["after"]["resets"] == 1
    assert r["found_at"] is not None and r["found_at"] <= 5200 + 300  # the periodic verify (every 5 s)
    assert (r["power"], r["region"]) == (2000, 3)  # configured again
    assert r["after"]["state"] == "ok" and r["after"]["silences"] == 0


def test_a_silent_reader_is_probed_with_backoff_and_recovers(runtime: Any) -> None:
    r = runtime.call(M, "silent_then_back", 9000, timeout_s=T)
    states = r["states"]
    assert [s[1] for s in states] == ["ok", "silent", "ok"], states
    assert 2000 <= states[1][0] <= 2600  # unanswered for SILENT_MS (2 s)
    # probes after 1, 2, 4 s of backoff: back at the first probe after it answers again
    assert 9000 <= states[2][0] <= 9000 + 8000
    c = r["counters"]
    assert (c["silences"], c["resets"]) == (1, 1)  # it came back with its power-on settings
    assert c["timeouts"] >= 6


def test_a_refused_setting_is_retried_not_fatal(runtime: Any) -> None:
    r = runtime.call(M, "refused", timeout_s=T)
    sets = r["sets"]
    assert len(sets) == 5
    assert all(1000 <= b - a <= 1020 for a, b in itertools.pairwise(sets)), sets  # RETRY_MS
    c = r["counters"]
    assert c["cmd_errors"] == 5 and c["state"] == "starting" and c["silences"] == 0


# -- against the byte-level module emulator ------------------------------------------------------------

TAGS = [
    {"epc": EPC_A, "spans": [[0, 0.0, None]]},
    {"epc": EPC_B, "spans": [[2, 0.0, None]]},
]


def test_the_cycle_against_the_emulated_module(runtime: Any) -> None:
    r = runtime.call(M, "emu_run", TAGS, [0, 1, 2, 3], 10000, timeout_s=T)
    assert r["states"][0][1] == "starting" and r["states"][-1][1] == "ok" and r["states"][1][0] <= 100
    assert (r["module_power"], r["module_region"]) == (2000, 3)
    ants = [d[1] for d in r["dwells"]]
    assert ants[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    starts = [d[0] for d in r["dwells"]]
    per_antenna = [b - a for a, b in itertools.pairwise(starts)]
    # dwell_ms, then the stop's answer after the round in progress, read at the next poll (periodic verify aside)
    assert all(200 <= g <= 260 for g in per_antenna if g < 280), per_antenna
    assert sorted(per_antenna)[len(per_antenna) // 2] <= 250
    per = r["per"]
    assert per["0:" + EPC_A] > 50 and per["2:" + EPC_B] > 50
    assert per.get("0:" + EPC_B, 0) == 0 and per.get("2:" + EPC_A, 0) == 0  # two lanes apart: never
    assert r["wrong_epcs"] == 0
    # every notice the module sent was read (the last round's may still be on its way)
    assert sum(per.values()) == r["counters"]["reads"] >= r["module"]["notices"] - 2
    c = r["counters"]
    assert (c["bad_frames"], c["resets"], c["silences"], c["timeouts"], c["cmd_errors"]) == (0, 0, 0, 0, 0)
    assert r["module"]["busy_dropped"] == 0 and r["module"]["errors_sent"] == 0
    assert all(-80 <= x <= -20 for x in r["rssi"])


def test_a_module_that_reboots_is_found_reset_and_configured_again(runtime: Any) -> None:
    r = runtime.call(M, "emu_run", TAGS, [0, 1, 2, 3], 12000, {"reboots": [3.0, 7.05]}, timeout_s=T)
    c = r["counters"]
    assert r["module"]["reboots"] == 2
    assert c["resets"] == 2 and c["silences"] == 0  # a reboot (under 1 s) is not a silence
    assert (r["module_power"], r["module_region"]) == (2000, 3)
    assert r["states"][-1][1] == "ok"
    assert r["wrong_epcs"] == 0


def test_a_module_that_vanishes_goes_silent_and_comes_back(runtime: Any) -> None:
    r = runtime.call(M, "emu_run", TAGS, [0, 1, 2, 3], 25000, {"vanish": [[3.0, 8.0]]}, timeout_s=T)
    names = [s[1] for s in r["states"]]
    assert names == ["starting", "ok", "silent", "starting", "ok"], r["states"]
    silent_at = r["states"][2][0]
    assert 3000 + 2000 <= silent_at <= 3000 + 2700
    back = r["states"][4][0]
    assert 8500 <= back <= 8000 + 1000 + 8000 + 400  # booted, then found by a probe (backoff 1, 2, 4, 8 s)
    c = r["counters"]
    assert (c["silences"], c["resets"]) == (1, 1)
    assert (r["module_power"], r["module_region"]) == (2000, 3)
    # reading again afterwards
    assert any(d[0] > back for d in r["dwells"])


def test_no_module_at_all_is_silent_probed_with_backoff(runtime: Any) -> None:
    r = runtime.call(M, "emu_run", [], [0], 40000, None, 5, 2000, 200, 0, True, timeout_s=T)
    assert [s[1] for s in r["states"]] == ["starting", "silent"]
    assert 2000 <= r["states"][1][0] <= 2400
    w = r["writes"]
    assert all(b - a >= 300 for a, b in itertools.pairwise(w))  # one command per timeout, never a flood
    silent_at = r["states"][1][0]
    probes = [t for t in w if t > silent_at]
    assert probes[0] - silent_at == 1000
    # backoff 1, 2, 4, 8, 16 s (each after the previous probe's 300 ms timeout)
    assert [b - a for a, b in itertools.pairwise(probes)] == [2300, 4300, 8300, 16300]
    c = r["counters"]
    assert c["silences"] == 1 and c["resets"] == 0 and c["reads"] == 0


def test_line_faults_are_counted_and_never_yield_a_wrong_epc(runtime: Any) -> None:
    faults = {"corrupt_ppm": 50000, "garbage_ppm": 2000, "dup_ppm": 20000}
    r = runtime.call(M, "emu_run", TAGS, [0, 1, 2, 3], 10000, faults, timeout_s=T)
    m = r["module"]
    assert m["corrupted"] > 0 and m["garbage"] > 0 and m["duplicates"] > 0
    assert r["wrong_epcs"] == 0
    c = r["counters"]
    assert c["bad_frames"] >= m["corrupted"] // 2  # each corrupted frame is dropped (garbage may join them)
    assert c["reads"] >= m["notices"] - m["corrupted"] - 2 * m["garbage"]
    assert r["states"][-1][1] == "ok"


def test_a_module_that_refuses_the_power_stays_starting(runtime: Any) -> None:
    r = runtime.call(M, "emu_run", TAGS, [0], 4000, None, 5, 3500, 200, 0, timeout_s=T)  # 35 dBm: out of its range
    c = r["counters"]
    assert [s[1] for s in r["states"]] == ["starting"]
    assert c["cmd_errors"] >= 3 and c["reads"] == 0 and c["silences"] == 0


# -- the poller --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", [False, True], ids=["absent", "unopenable"])
def test_the_poller_reports_each_reader_and_survives_one_it_cannot_open(runtime: Any, broken: bool) -> None:
    r = runtime.call(M, "poller_health", broken, timeout_s=T)
    assert r["sent"] == [[0, "ok"], [1, "silent"]]  # at each state change, at once
    ok, silent = r["now"]
    assert (ok["reader"], ok["state"], ok["silences"]) == (0, 0, 0)
    assert (silent["reader"], silent["state"], silent["silences"]) == (1, 1, 1)
    assert r["errors"] == 0
    if broken:
        assert len(r["notes"]) == 1 and r["notes"][0].startswith("rfid reader 1: cannot open UART 2: ")
        assert "bad TX pin" in r["notes"][0]
    else:
        assert r["notes"] == []


# -- allocation ------------------------------------------------------------------------------------------


def test_no_allocation_per_tag_notice_under_micropython(mpy: Any) -> None:
    """2,000 polls of the whole RFID task (reader, parser, CRC, presence table) with a notice each: zero bytes;
    and 1,000 more with the heap locked."""
    r = mpy.exec(rc.ALLOC, timeout_s=T)
    assert r["state"] == 0 and r["phase"] == 2, r  # READER_OK, dwelling: the steady state
    assert r["present"] == 12 and r["changes"] == 12, r  # every tag present; no change in the windows
    assert r["reads"] >= 2900, r
    assert r["bad"] == 0, r
    assert r["delta"] == 0, r
    assert r["locked"] is True, r
    # The measurement is real: a sink that copies each EPC shows up in both checks.
    assert r["bad_delta"] >= 200 * 16, r
    assert r["bad_locked"] is False, r
    # Before that, the tags waiting for the antennas' round (read, not yet placed): nothing either.
    assert r["waiting"] == 0 and r["wait_delta"] == 0 and r["wait_locked"] is True, r


def test_a_silent_reader_heard_again_is_rechecked_at_once(runtime: Any) -> None:
    """Silent and pausing before its next probe (back-off up to 16 s): a frame from it (here a stop's late answer)
    ends the pause: rechecked and reading again within a few polls, not at the next probe."""
    # silent at ~2.1 s; probes 1 s and 2 s later, then a pause of 4 s (to ~9.7 s): heard at 6 s, inside it
    r = runtime.call(M, "silent_then_heard", 6000, ref_frame(1, 0x28, b"\x00"), timeout_s=T)
    assert [s[1] for s in r["states"]] == ["ok", "silent", "starting", "ok"], r["states"]
    assert r["states"][2][0] == 6000
    assert r["states"][3][0] <= 6000 + 100, r["states"]  # stop, get power, get region: a poll each
    assert r["after"][0] == [6000, hx("BB 00 28 00 00 28 7E")]  # the recheck starts at once with a stop
    assert r["counters"]["silences"] == 1


# -- the poller: lanes over an antenna cycle, a reader that keeps raising, an outbox that cannot write ----------------


def test_the_poller_places_a_new_tag_over_a_whole_antenna_cycle(runtime: Any) -> None:
    # the tag is on lane 1; antenna 0 cross-reads it 4 dB weaker (inside the hysteresis) and dwells first
    r = runtime.call(M, "poller_run", 2, [[EPC_A, [-62, -58], 0, None]], 20000, timeout_s=T)
    assert r["cycle_ms"] == 2 * (200 + 50)
    assert [x[1:5] for x in r["records"]] == [["seen", 1, -58, EPC_A]], r["records"]
    assert r["present"] == [[EPC_A, 1]] and r["errors"] == 0


def test_the_poller_with_one_antenna_does_not_wait(runtime: Any) -> None:
    r = runtime.call(M, "poller_run", 1, [[EPC_A, [-50], 0, None]], 2000, timeout_s=T)
    assert r["cycle_ms"] == 0
    seen = r["records"][0]
    assert seen[1:3] == ["seen", 0] and seen[0] - seen[5] <= 40  # at its second read, 30 ms after the first


def test_a_reader_whose_poll_keeps_raising_is_silent_and_holds_its_lanes(runtime: Any) -> None:
    """The reader's UART raises from 2 s to 20 s (lost_s 5): after a few polls in a row the reader is reported
    silent and its lanes held (its tag is not lost: it cannot be read, not gone); it is reading again once its polls
    succeed for a while."""
    r = runtime.call(M, "poller_run", 1, [[EPC_A, [-50], 0, None]], 30000, 5, 200, [2000, 20000], timeout_s=T)
    assert [x[1:3] for x in r["records"]] == [["seen", 0]], r["records"]
    assert [h[1:] for h in r["health"]] == [[0, "ok"], [0, "silent"], [0, "ok"]], r["health"]
    assert 2000 < r["health"][1][0] <= 2000 + 60  # 5 polls in a row
    assert 20000 < r["health"][2][0] <= 20000 + 1100  # a second of polls without an exception
    assert r["errors"] >= 5 and r["present"] == [[EPC_A, 0]] and r["state"] == "ok"


def test_an_outbox_that_cannot_write_loses_no_presence_change(runtime: Any) -> None:
    """The outbox refuses records while the tag arrives (0..3 s) and when it is lost (taken at 6 s, lost_s 5: due at
    11 s; refused until 13 s): both are recorded when it can write again, dated at the arrival and the last read. The
    reader is not to blame: it stays OK."""
    tags = [[EPC_A, [-50], 0, 6000]]
    r = runtime.call(M, "poller_run", 1, tags, 16000, 5, 200, None, [[0, 3000], [10000, 13000]], timeout_s=T)
    recs = r["records"]
    assert [x[1:3] for x in recs] == [["seen", 0], ["lost", 0]], recs
    assert 3000 <= recs[0][0] <= 3000 + 200 and recs[0][5] < 200, recs  # recorded when it can, dated at arrival
    assert 13000 <= recs[1][0] <= 13000 + 200 and 5800 <= recs[1][5] < 6000, recs  # dated at the last read
    assert r["errors"] > 0 and r["present"] == []
    assert [h[1:] for h in r["health"]] == [[0, "ok"]]
