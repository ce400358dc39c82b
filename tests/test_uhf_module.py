"""UHF RFID reader module emulator (tools/emulation/uhf_module.py): the frames byte for byte, the read physics, the
multi inventory and its stop, settings, reboots and unplugged spans, malformed input, line faults, and the same
bytes under CPython and MicroPython for one seed.

The bodies live in ``tests/portable/uhf_cases.py`` and run on both runtimes (``runtime``); the expected frames
here are computed independently of the module (``frame_hex``, ``crc_genibus``) or copied from published ones.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import CPythonRuntime

M = "tests.portable.uhf_cases"
T = 120  # seconds; a MicroPython call that hangs fails the test instead of stalling the run
PUBLISHED_NOTICE = "bb02220011c9340030751feb705c5904e3d50d703a76ef7e"  # R200 manual: RSSI -55, PC 3400, CRC 3A76


def frame_hex(ftype: int, cmd: int, params: bytes = b"") -> str:
    body = bytes([ftype, cmd, len(params) >> 8, len(params) & 0xFF]) + params
    return (b"\xbb" + body + bytes([sum(body) & 0xFF, 0x7E])).hex()


def crc_genibus(data: bytes) -> int:
    """CRC-16/GENIBUS, table-free and written from the catalogue entry (poly 0x1021, init/xorout 0xFFFF)."""
    reg = 0xFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            top = (reg >> 15) ^ ((byte >> bit) & 1)
            reg = (reg << 1) & 0xFFFF
            if top:
                reg ^= 0x1021
    return reg ^ 0xFFFF


def frames(*items: tuple[int, int, str]) -> list[list[Any]]:
    return [[t, c, p, True] for t, c, p in items]


ERROR_17 = frames((1, 0xFF, "17"))
NO_TAG = frames((1, 0xFF, "15"))


def test_frames_and_checksums_byte_for_byte(runtime: Any) -> None:
    r = runtime.call(M, "known_frames", timeout_s=T)
    # DESIGN.md section 6 and the R200 / YRM100 manual
    assert r["inventory"] == "bb00220000227e"
    assert r["no_tag"] == "bb01ff000115167e"
    assert r["multi_10000"] == "bb00270003222710837e"
    assert r["stop"] == "bb00280000287e" and r["stop_ok"] == "bb01280001002a7e"
    assert r["set_power_20"] == "bb00b6000207d08f7e" and r["get_power"] == "bb00b70000b77e"
    assert r["set_region_eu"] == "bb00070001030b7e" and r["get_region"] == "bb00080000087e"
    assert r["info_hw"] == "bb0003000100047e"
    assert r["command_error"] == frame_hex(1, 0xFF, b"\x17") == "bb01ff000117187e"
    assert r["crc_check"] == 0xD64E  # CRC-16/GENIBUS check value of "123456789"
    assert r["published_notice_crc"] == 0x3A76 == crc_genibus(bytes.fromhex(PUBLISHED_NOTICE)[6:20])
    assert r["published_notice_sum"] == 0xEF


def test_power_region_and_info_set_and_get(runtime: Any) -> None:
    r = runtime.call(M, "settings", timeout_s=T)
    # 7 command bytes at 87 us, ~1.2 ms to answer, 9 reply bytes at 87 us each
    assert 1800 <= r["get_power_first_byte_us"] <= 2000
    assert 2500 <= r["get_power_all_us"] <= 2700
    assert r["get_power_default"] == frames((1, 0xB7, "0a28"))  # 26.00 dBm
    assert r["set_power"] == frames((1, 0xB6, "00"))
    assert r["get_power_after"] == frames((1, 0xB7, "07d0"))
    assert r["set_power_too_high"] == ERROR_17 and r["set_power_short"] == ERROR_17
    assert r["get_region_default"] == frames((1, 0x08, "01"))
    assert r["set_region"] == frames((1, 0x07, "00"))
    assert r["get_region_after"] == frames((1, 0x08, "03"))
    assert r["set_region_bad"] == ERROR_17
    hw, sw, mfr, bad = r["info"]
    assert hw == frames((1, 0x03, "00" + b"M100 26dBm V1.0".hex()))
    assert sw == frames((1, 0x03, "01" + b"V2.3.5".hex()))
    assert mfr == frames((1, 0x03, "02" + b"MagicRF".hex()))
    assert bad == ERROR_17
    assert (r["power"], r["region"]) == (2000, 3)
    assert r["silent_when_idle"] == ""  # never speaks unasked
    assert r["stats"]["errors_sent"] == 4 and r["stats"]["bad_frames"] == 0


def test_a_notice_per_tag_with_its_pc_epc_and_crc(runtime: Any) -> None:
    r = runtime.call(M, "notice_layout", timeout_s=T)
    other = "3074257bf7194e4000001a85"
    published_tail = PUBLISHED_NOTICE[12:-4]  # PC, EPC and CRC of the published frame
    other_tail = "3000" + other + f"{crc_genibus(bytes.fromhex('3000' + other)):04x}"
    for frames_, raw in zip(r["rounds"], r["raw"], strict=True):
        assert len(frames_) >= 1
        tails = set()
        for ftype, cmd, params, ok in frames_:
            assert (ftype, cmd, ok) == (2, 0x22, True)
            rssi = int(params[:2], 16) - 256
            assert -50 <= rssi <= -30  # same lane, tag facing the antenna, 26 dBm
            tails.add(params[2:])
            if params[2:] == published_tail:
                # the published frame, with this read's RSSI and checksum
                want = bytearray.fromhex(PUBLISHED_NOTICE)
                want[5] = rssi & 0xFF
                want[-2] = (0xEF - 0xC9 + (rssi & 0xFF)) & 0xFF
                assert want.hex() in raw
        assert tails <= {published_tail, other_tail}
        assert "bb01ff" not in raw  # no "no tag" frame in a round that read something
    assert sum(len(f) for f in r["rounds"]) >= 10  # 12 reads possible, ~99 % each
    assert r["empty"] == NO_TAG and r["antenna"] == 3  # two lanes away: never read
    assert r["stats"]["notices"] == r["stats"]["reads"] == sum(len(f) for f in r["rounds"])


def test_a_round_takes_tens_of_ms_and_grows_with_the_tags(runtime: Any) -> None:
    times = {}
    for n in (0, 10, 40):
        r = runtime.call(M, "round_timing", n, timeout_s=T)
        times[n] = max(x["us"] for x in r["rounds"])
        if n == 0:
            assert all(x["bytes"] == 8 for x in r["rounds"])  # the no-tag frame only
    assert 10_000 <= times[0] <= 40_000
    assert times[10] > times[0] + 5_000
    assert times[40] > times[10] + 20_000
    assert times[40] < 250_000


TAGS: list[dict[str, Any]] = [
    {"epc": "3074257bf7194e4000007000", "orient": 1.0, "spans": [[1, 0, None]]},  # on the antenna's lane
    {"epc": "3074257bf7194e4000007001", "orient": 0.4, "spans": [[1, 0, None]]},  # same lane, badly oriented
    {"epc": "3074257bf7194e4000007002", "orient": 1.0, "spans": [[0, 0, None]]},  # neighbour
    {"epc": "3074257bf7194e4000007003", "orient": 1.0, "spans": [[2, 0, None]]},  # neighbour
    {"epc": "3074257bf7194e4000007004", "orient": 1.0, "spans": [[3, 0, None]]},  # two lanes away
    {"epc": "3074257bf7194e4000007005", "orient": 1.0, "spans": [[None, 0, None]]},  # the next shelf
]


def test_read_probability_falls_with_distance_and_orientation_and_rises_with_power(runtime: Any) -> None:
    n = 600
    low = runtime.call(M, "read_statistics", TAGS, 1, 2000, n, 7, timeout_s=T)
    high = runtime.call(M, "read_statistics", TAGS, 1, 2600, n, 7, timeout_s=T)
    epcs = [t["epc"] for t in TAGS]
    on, tilted, left, right, far, stray = epcs

    def rate(r: dict[str, Any], e: str) -> float:
        return float(r["reads"].get(e, 0)) / n

    def rssi(r: dict[str, Any], e: str) -> float:
        return float(r["mean_rssi"][e])

    for r in (low, high):
        assert rate(r, far) == 0.0  # two lanes away: never
        assert rate(r, on) > rate(r, tilted) and rssi(r, on) > rssi(r, tilted) + 5
        for nb in (left, right):
            assert rate(r, nb) < rate(r, on) / 2
            if nb in r["mean_rssi"]:
                assert rssi(r, nb) < rssi(r, on) - 10  # weaker: a driver can tell the lanes apart
        assert rate(r, stray) < 0.05
        assert r["stats"]["reads"] == sum(r["reads"].values()) and r["stats"]["duplicates"] == 0
    assert rate(low, on) > 0.75 and rate(high, on) > 0.95
    assert rate(low, left) < 0.1 and rate(low, right) < 0.1
    # more power: more reads, and more cross-reads from the neighbouring lanes and the next shelf
    assert rate(high, tilted) > rate(low, tilted) + 0.1
    assert rate(high, left) + rate(high, right) > 3 * (rate(low, left) + rate(low, right))
    assert rate(high, stray) >= rate(low, stray)
    assert rssi(high, on) > rssi(low, on) + 4
    assert low["no_tag"] > high["no_tag"]


def test_multi_inventory_runs_its_rounds_and_stops_on_0x28(runtime: Any) -> None:
    r = runtime.call(M, "multi_and_stop", timeout_s=T)
    c = r["counted"]
    assert c["rounds"] == 5 and c["state"] == "idle"
    assert 4 <= len(c["frames"]) <= 5 and all(f[:2] == [2, 0x22] for f in c["frames"])  # no "no tag" frames
    assert r["running_rounds"] >= 10 and r["state_running"] == "multi"
    assert r["during"] == []  # get power and a single inventory during a multi: dropped, no reply
    assert r["after_stop"][-1] == [1, 0x28, "00", True]
    assert all(f[:2] == [2, 0x22] for f in r["after_stop"][:-1])  # the current round's notices still come
    assert r["stop_reply_us"] < 60_000
    assert r["quiet_after"] == "" and r["rounds_after_stop"] == 0
    assert r["get_power_after"] == frames((1, 0xB7, "0a28"))
    assert r["zero_count"] == ERROR_17 and r["bad_reserved"] == ERROR_17
    assert r["stop_when_idle"] == frames((1, 0x28, "00"))
    assert r["stats"]["busy_dropped"] == 2


def test_malformed_input_gets_the_error_frame_and_the_parser_resynchronises(runtime: Any) -> None:
    r = runtime.call(M, "malformed", timeout_s=T)
    assert r["junk"] == []  # bytes between frames: skipped silently
    assert r["bad_checksum"] == ERROR_17
    assert r["bad_end"] == ERROR_17
    assert r["response_type"] == ERROR_17
    assert r["unknown"] == ERROR_17
    assert r["cut_short"] == ERROR_17 + frames((1, 0xB7, "0a28"))  # then the frame that began inside it
    assert r["abandoned"] == []  # half a frame then silence: dropped without a word
    assert r["after_abandoned"] == frames((1, 0x08, "01"))
    s = r["stats"]
    assert (s["bad_frames"], s["timeouts"], s["errors_sent"]) == (4, 1, 5)


def test_reboot_loses_settings_and_is_silent_and_a_vanished_reader_never_answers(runtime: Any) -> None:
    r = runtime.call(M, "reboot_and_vanish", timeout_s=T)
    assert r["set_power"] == frames((1, 0xB6, "00")) and r["set_region"] == frames((1, 0x07, "00"))
    assert r["multi_frames_before"] > 10
    assert r["state_at_reboot"] == "booting" and r["reboots"] == 1
    assert r["while_booting"] == [] and r["rx_lost"] == 7  # the command went nowhere
    assert r["state_after_boot"] == "idle" and r["quiet_after_boot"] == ""  # the multi inventory is gone too
    assert r["power_after"] == frames((1, 0xB7, "0a28"))  # back to 26 dBm
    assert r["region_after"] == frames((1, 0x08, "01"))
    assert r["state_unplugged"] == "off" and r["unplugged"] == []
    assert r["replugged"] == frames((1, 0xB7, "0a28"))
    assert r["gone_for_good"] == []
    assert r["stats"]["vanishes"] == 2 and r["stats"]["reboots"] == 1


def test_a_reboot_cuts_the_frame_on_the_line(runtime: Any) -> None:
    r = runtime.call(M, "reboot_cuts_a_frame", timeout_s=T)
    assert r["full"].startswith(r["got"]) and 0 < len(r["got"]) < len(r["full"])
    assert r["stats"]["tx_bytes"] == len(r["got"]) // 2


def test_injected_line_and_read_faults_are_counted(runtime: Any) -> None:
    r = runtime.call(M, "faults_stream", 3, 150, timeout_s=T)
    s = r["stats"]
    assert s["missed"] > 0 and s["collisions"] > 0 and s["duplicates"] > 0
    assert s["corrupted"] > 0 and s["garbage"] > 0
    assert s["notices"] == s["reads"] + s["duplicates"]
    # what the host can see on the line agrees with what was injected (garbage may rarely mimic a frame)
    assert abs(r["notices_ok"] + r["notices_bad"] - s["notices"]) <= 2
    assert abs(r["notices_bad"] - s["corrupted"]) <= 2
    assert 0 < r["dup_seen"] <= s["duplicates"]


def test_an_unread_receive_buffer_overflows_and_counts(runtime: Any) -> None:
    r = runtime.call(M, "overrun", timeout_s=T)
    assert r["any"] == 256 and r["read"] == 256
    assert r["overrun"] == r["tx_bytes"] - 256 > 0


def test_tags_come_and_go_with_their_spans(runtime: Any) -> None:
    r = runtime.call(M, "field_timeline", timeout_s=T)
    a, b = "3074257bf7194e4000003001", "3074257bf7194e4000003002"
    assert r["on_lane"] == [[a], [], [b], [a, b]]
    assert r["seen"] == r["on_lane"]


def test_the_switch_level_at_the_start_of_a_round_picks_the_antenna(runtime: Any) -> None:
    r = runtime.call(M, "switch_at_round_start", timeout_s=T)
    assert (r["first"], r["first_antenna"]) == (["3074257bf7194e4000004000"], 0)
    assert (r["second"], r["second_antenna"]) == (["3074257bf7194e4000004003"], 3)
    assert r["third"] == ["3074257bf7194e4000004000"]
    assert r["pin_changes"] == [2, 2]
    assert r["no_antenna"] == NO_TAG  # select() chose a switch port with no antenna


def test_uart_api_absent_reader_and_wrong_baud(runtime: Any) -> None:
    r = runtime.call(M, "readinto_api", timeout_s=T)
    full = frame_hex(1, 0x03, b"\x02MagicRF")
    assert r["any"] == len(full) // 2
    assert (r["a"], r["b"]) == (4, 2)
    assert r["first"] + r["second"] + r["c"] + r["rest"] == full
    assert (r["empty_read"], r["empty_readinto"], r["any_after"]) == (None, None, 0)
    a = runtime.call(M, "absent", timeout_s=T)
    assert a == {"calls": [7, 0, None, None], "written": 7}
    g = runtime.call(M, "garbled_baud", timeout_s=T)
    assert g["wrong"] == [] and g["right"] == frames((1, 0xB7, "0a28")) and g["commands"] == 1


@pytest.mark.parametrize("seed", [1, 77])
def test_identical_bytes_on_cpython_and_micropython(mpy: Any, seed: int) -> None:
    cp = CPythonRuntime().call(M, "session", seed)
    mp = mpy.call(M, "session", seed, timeout_s=T)
    assert mp == cp
    s = cp["stats"]
    assert len(cp["bytes"]) > 4000
    assert s["reboots"] == 1 and s["vanishes"] == 1 and s["corrupted"] > 0 and s["duplicates"] > 0
    assert s["rx_lost"] > 0 and sum(cp["tag_reads"]) == s["reads"]


def test_per_round_work_stays_on_the_antennas_lanes() -> None:
    from tools.emulation.hx711_chip import VirtualClock
    from tools.emulation.uhf_module import CMD_INVENTORY, UhfModule, command

    tags = [{"epc": f"3074257bf7194e40000{i:05x}", "spans": [[9, i * 0.001, None]]} for i in range(2000)]
    tags.append({"epc": "3074257bf7194e4000100000", "spans": [[0, 0, 1.0]]})
    clk = VirtualClock()
    m = UhfModule(clk, tags, antennas=[0], seed=1)
    for _ in range(20):
        m.write(command(CMD_INVENTORY))
        clk.advance(100_000)
        m.read()
    lanes = m.field._lanes
    assert lanes[9].cursor == 0 and lanes[9].active == []  # lane 9's 2000 spans never looked at
    assert m.reads >= 9 and m.field.active(0, clk.now) == []  # lane 0's tag left at 1.0 s


ALLOC_CODE = """
import gc
import micropython
from tools.emulation.hx711_chip import VirtualClock
from tools.emulation.uhf_module import UhfModule, command, CMD_INFO

clk = VirtualClock()
m = UhfModule(clk, [], seed=1)
buf = bytearray(64)
got = bytearray(64)
m.write(command(CMD_INFO, b"\\x00"))
clk.advance(1000)
m.any()  # the command has arrived by ~0.6 ms: the reply is built (allocations happen here)

def poll():
    n = 0
    while clk.now < 20000:
        clk.advance(5)
        k = m.readinto(buf)
        if k:
            i = 0
            while i < k:
                got[n + i] = buf[i]
                i += 1
            n += k
    return n

n = 0
ok = False
gc.collect()
a = gc.mem_alloc()
micropython.heap_lock()
try:
    n = poll()
    ok = True
except MemoryError:
    n = 0
    ok = False
micropython.heap_unlock()
b = gc.mem_alloc()
result = {"ok": ok, "n": n, "delta": b - a, "got": bytes(got[:n]).hex()}
"""


def test_the_byte_path_allocates_nothing_under_micropython(mpy: Any) -> None:
    r = mpy.exec(ALLOC_CODE, timeout_s=T)
    assert r["ok"] is True, r
    assert r["n"] == 23 and r["got"] == frame_hex(1, 0x03, b"\x00M100 26dBm V1.0")
    assert r["delta"] == 0, r
