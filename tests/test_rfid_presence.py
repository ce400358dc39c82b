"""Tag presence per lane (firmware/rfid/presence.py) on CPython and the real MicroPython VM: seen_n reads within
window_ms make a tag present, lost_s without a read lose it, cross-reads go to the lane read strongest with a
hysteresis, the table is bounded and never crashes."""

from __future__ import annotations

from typing import Any

import pytest

M = "tests.portable.rfid_cases"
T = 120
A = "3074257bf7194e4000001a85"
B = "3074257bf7194e4000001a86"


def reads(epc: str, lane: int, rssi: int, t0: int, t1: int, every: int) -> list[list[Any]]:
    return [[t, lane, rssi, epc] for t in range(t0, t1, every)]


def merged(*parts: list[list[Any]]) -> list[list[Any]]:
    return sorted((x for p in parts for x in p), key=lambda x: (x[0], x[1]))


def test_seen_n_reads_within_the_window_make_a_tag_present(runtime: Any) -> None:
    # two reads 4 s apart (window 3 s): not yet; a third 1 s later: present (the last two are within the window)
    script = [[1000, 0, -60, A], [5000, 0, -52, A], [6000, 0, -55, A]]
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 7000, timeout_s=T)
    assert r["log"] == [[6000, "seen", 0, -52, A]]  # rssi: the strongest read since the lane's average restarted
    assert r["present"] == 1 and r["tags"] == [[A, 0]]
    assert r["dated"] == [["seen", 5000]]  # its arrival: the first of the seen_n reads that made it present


def test_the_window_slides(runtime: Any) -> None:
    """seen_n 3: reads at 0, 2, 3.5 s are not 3 within 3 s; with one more at 4.5 s, the last three are."""
    script = [[0, 1, -50, A], [2000, 1, -50, A], [3500, 1, -50, A], [4500, 1, -50, A]]
    r = runtime.call(M, "presence_script", script, 3, 3000, 10, 5000, timeout_s=T)
    assert r["log"] == [[4500, "seen", 1, -50, A]]


def test_single_reads_never_make_a_tag_present(runtime: Any) -> None:
    script = reads(A, 0, -50, 0, 30000, 3100)  # one read per window: a passer-by, a stray
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 31000, timeout_s=T)
    assert r["log"] == [] and r["present"] == 0


def test_a_tag_is_lost_after_lost_s_without_a_read(runtime: Any) -> None:
    script = reads(A, 0, -50, 1000, 2001, 500)  # read at 1.0, 1.5, 2.0 s, then never again
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 15000, timeout_s=T)
    assert r["log"] == [[1500, "seen", 0, -50, A], [12000, "lost", 0, 0, A]]
    assert r["present"] == 0 and r["tags"] == []
    # the departure is dated at the last read, not at the decision lost_s later (the hub matches it with the pick)
    assert r["dated"] == [["seen", 1000], ["lost", 2000]]


def test_a_tag_that_comes_back_is_seen_again(runtime: Any) -> None:
    script = reads(A, 0, -50, 0, 1001, 500) + reads(A, 0, -50, 20000, 21001, 500)
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 22000, timeout_s=T)
    assert [x[:3] for x in r["log"]] == [[500, "seen", 0], [11000, "lost", 0], [20500, "seen", 0]]


def test_a_cross_read_tag_belongs_to_the_lane_that_reads_it_strongest(runtime: Any) -> None:
    # lane 1's antenna reads B at -50, lane 0's (its neighbour) at -63
    script = merged(reads(B, 0, -63, 0, 20000, 200), reads(B, 1, -50, 100, 20000, 200))
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 20000, timeout_s=T)
    assert [x[:3] for x in r["log"]] == [[100, "seen", 1]]  # at the second read, on the lane that reads it stronger
    assert r["moves"] == 0 and r["tags"] == [[B, 1]]


def test_a_move_needs_the_hysteresis_margin(runtime: Any) -> None:
    first = merged(reads(A, 0, -50, 0, 4000, 200), reads(A, 1, -62, 100, 4000, 200))
    # then lane 1 reads it 4 dB stronger than lane 0: inside the 6 dB margin, no move
    close = merged(reads(A, 0, -54, 4000, 10000, 200), reads(A, 1, -50, 4100, 10000, 200))
    # then 12 dB stronger: it moved (a tag_lost on lane 0, then a tag_seen on lane 1, at the same moment)
    far = merged(reads(A, 0, -60, 10000, 16000, 200), reads(A, 1, -48, 10100, 16000, 200))
    r = runtime.call(M, "presence_script", first + close + far, 2, 3000, 10, 16000, timeout_s=T)
    log = r["log"]
    assert [x[1:3] for x in log] == [["seen", 0], ["lost", 0], ["seen", 1]], log
    assert log[1][0] == log[2][0] and 10000 < log[1][0] < 12000, log
    assert log[2][3] == -48 and r["moves"] == 1


def test_no_flapping_between_two_lanes_that_read_a_tag_alike(runtime: Any) -> None:
    script = merged(
        [[t, 0, -50 - (t // 200) % 3, A] for t in range(0, 60000, 200)],
        [[t, 1, -50 - (t // 300) % 4, A] for t in range(100, 60000, 200)],
    )
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 60000, timeout_s=T)
    assert len(r["log"]) == 1 and r["moves"] == 0


def test_a_tag_no_longer_read_by_its_lane_moves_once_that_lane_forgets_it(runtime: Any) -> None:
    """Carried from lane 0 to lane 2 (read there weaker than lane 0 used to): the move comes when lane 0 has not read
    it for the window."""
    script = reads(A, 0, -45, 0, 5000, 200) + reads(A, 2, -60, 5100, 15000, 200)
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 15000, timeout_s=T)
    log = r["log"]
    assert [x[1:3] for x in log] == [["seen", 0], ["lost", 0], ["seen", 2]], log
    assert 4800 + 3000 < log[1][0] <= 4800 + 3000 + 200


def test_a_held_lane_keeps_its_tags(runtime: Any) -> None:
    """While its reader is silent the lane's tags are held; they are lost lost_s after it is back, if unread."""
    script = reads(A, 0, -50, 0, 1001, 500) + reads(B, 1, -50, 0, 1001, 500)
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 40000, 64, [1000, 25000, [0]], timeout_s=T)
    assert [[*x[1:3], x[4]] for x in r["log"]] == [["seen", 0, A], ["seen", 1, B], ["lost", 1, B], ["lost", 0, A]]
    lost = {x[4]: x[0] for x in r["log"] if x[1] == "lost"}
    assert lost[B] == 11000  # not held
    assert 25000 + 9900 <= lost[A] <= 25000 + 10000  # held until 25 s, then lost_s
    # both departures are dated at their last real read (1 s), however long the hold kept A
    assert [x for x in r["dated"] if x[0] == "lost"] == [["lost", 1000], ["lost", 1000]]


def test_epcs_with_the_same_hash_are_two_tags(runtime: Any) -> None:
    # the table's 16-bit hash is h * 31 + byte: ...01 00 and ...00 1f collide
    x = "3074257bf7194e4000000100"
    y = "3074257bf7194e400000001f"
    script = merged(reads(x, 0, -50, 0, 1000, 100), reads(y, 1, -50, 50, 1000, 100))
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 1000, timeout_s=T)
    assert r["tags"] == [[y, 1], [x, 0]]  # sorted by EPC
    assert [e[1:3] for e in r["log"]] == [["seen", 0], ["seen", 1]]


def test_epcs_of_other_lengths(runtime: Any) -> None:
    long = bytes(range(32)).hex()
    short = "e280"
    script = merged(reads(long, 0, -50, 0, 1000, 100), reads(short, 1, -50, 50, 1000, 100))
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 1000, timeout_s=T)
    assert r["tags"] == [[long, 0], [short, 1]]


@pytest.mark.parametrize("max_tags", [4, 64])
def test_a_full_table_counts_the_overflow_and_never_crashes(runtime: Any, max_tags: int) -> None:
    r = runtime.call(M, "presence_overflow", max_tags, timeout_s=T)
    assert r["full"] == [max_tags, 10]  # 5 tags too many, read twice each: every read dropped is counted
    assert r["after"] == [max_tags, 11]
    assert r["seen"] == max_tags


def test_tags_come_and_go_through_a_small_table(runtime: Any) -> None:
    r = runtime.call(M, "presence_churn", 8, 40, timeout_s=T)
    assert r["overflows"] == 0 and r["present"] == 0
    by_tag: dict[str, list[Any]] = {}
    for t, kind, lane, _rssi, epc in r["log"]:
        by_tag.setdefault(epc, []).append([kind, lane, t])
    assert len(by_tag) == 40
    for k, epc in enumerate(sorted(by_tag, key=lambda e: (int(e, 16) - 0x30740000) // 7919)):
        expect = [["seen", k % 3, k * 1000 + 100], ["lost", k % 3, k * 1000 + 3900 + 2000]]
        assert by_tag[epc] == expect, (k, by_tag[epc])


def test_a_pending_tag_gives_its_slot_to_a_new_one(runtime: Any) -> None:
    """Two slots: C takes the slot of A (read once, least recently), and is then present with its second read."""
    c = "3074257bf7194e4000001a87"
    script = [[0, 0, -50, A], [10, 0, -50, B], [20, 0, -50, c], [30, 0, -50, c]]
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 100, 2, timeout_s=T)
    assert r["log"] == [[30, "seen", 0, -50, c]] and r["overflows"] == 0


# -- time-multiplexed antennas (one reader inventories its antennas in turn) ---------------------------------------


def multiplexed(
    epc: str, rssi: list[int | None], dwell: int, t0: int, t1: int, every: int = 30, overhead: int = 50
) -> list[list[Any]]:
    """The reads of one tag by a reader whose antenna k (on lane k) dwells ``dwell`` ms in turn, ``overhead`` ms
    between two dwells: antenna k reads it every ``every`` ms of its dwells at ``rssi[k]`` (None: never)."""
    n = len(rssi)
    step = dwell + overhead
    out = []
    c = 0
    while c < t1:
        for k in range(n):
            r = rssi[k]
            if r is None:
                continue
            start = c + k * step
            out += [[t, k, r, epc] for t in range(start + every, start + dwell, every) if t0 <= t < t1]
        c += n * step
    return sorted(out)


@pytest.mark.parametrize("own", [-58, -50], ids=["inside-hysteresis", "beyond-hysteresis"])
def test_a_new_tag_is_placed_after_every_antenna_had_its_turn(runtime: Any, own: int) -> None:
    """Two antennas, dwell 200 ms (a cycle of 2 x 250 ms): the tag sits on lane 1, antenna 0 (dwelling first) cross-
    reads it at -62 dBm. Placed by the first dwell it would stay on lane 0 (own -58: inside the 6 dB hysteresis) or
    arrive as seen 0 / lost 0 / seen 1 (own -50); it waits one antenna cycle, then goes where it is read strongest."""
    script = multiplexed(A, [-62, own], 200, 0, 24000)
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 24000, 64, None, 500, timeout_s=T)
    log = r["log"]
    assert [x[1:] for x in log] == [["seen", 1, own, A]], log
    assert 30 + 500 <= log[0][0] <= 30 + 500 + 100, log  # one cycle after its first read
    assert r["dated"] == [["seen", 30]]  # still dated at its arrival, the first read (many reads came meanwhile)
    assert r["moves"] == 0 and r["tags"] == [[A, 1]]


def test_a_tag_read_in_one_dwell_only_is_placed_by_the_tick(runtime: Any) -> None:
    script = [[30, 0, -55, A], [60, 0, -55, A]]
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 2000, 64, None, 500, timeout_s=T)
    assert r["log"] == [[600, "seen", 0, -55, A]]  # the first tick once a cycle has passed since its first read
    assert r["dated"] == [["seen", 30]]


def test_a_weak_cross_read_does_not_move_a_tag_between_its_own_antennas_turns(runtime: Any) -> None:
    """Eight antennas, dwell 400 ms (a cycle of 3.6 s) and a window of 3 s: antenna 0 reads its tag once a cycle, at
    -50 dBm; antenna 7 cross-reads it at -75. Its own lane must not count as stale between its turns (it did: the tag
    went lost 0 / seen 7 / lost 7 / seen 0 every cycle)."""
    script = multiplexed(A, [-50, None, None, None, None, None, None, -75], 400, 0, 60000)
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 60000, 64, None, 3600, timeout_s=T)
    assert [x[1:3] for x in r["log"]] == [["seen", 0]], r["log"]
    assert r["moves"] == 0 and r["tags"] == [[A, 0]]


# -- a sink that cannot record a change -------------------------------------------------------------------------------


def test_a_change_the_sink_cannot_record_is_retried_not_lost(runtime: Any) -> None:
    """The outbox (the sink) cannot write while the tag arrives (0..2 s) nor when it is lost (14..16 s): both
    changes are recorded once it can, dated as ever (arrival, last read)."""
    script = reads(A, 0, -50, 0, 5000, 200)  # read until 4.8 s
    fail = [[0, 2000, ["seen", "lost"]], [14000, 16000, ["seen", "lost"]]]
    r = runtime.call(M, "presence_script", script, 2, 3000, 10, 20000, 64, None, 0, fail, timeout_s=T)
    assert r["log"] == [[2000, "seen", 0, -50, A], [16000, "lost", 0, 0, A]]
    assert r["dated"] == [["seen", 0], ["lost", 4800]]
    assert r["refused"] > 2 and r["errors"] == r["refused"] and r["present"] == 0 and r["tags"] == []


def test_a_move_whose_seen_cannot_be_recorded_is_decided_again(runtime: Any) -> None:
    """A move is a lost then a seen: the lost recorded and the seen refused leave the tag not present (it is not on
    its old lane any more, and not yet on the new one as far as the hub knows); the seen follows when it can be
    recorded, dated at the move."""
    first = merged(reads(A, 0, -50, 0, 4000, 200), reads(A, 1, -62, 100, 4000, 200))
    far = merged(reads(A, 0, -60, 4000, 10000, 200), reads(A, 1, -48, 4100, 10000, 200))
    fail = [[4000, 7000, ["seen"]]]
    r = runtime.call(M, "presence_script", first + far, 2, 3000, 10, 10000, 64, None, 0, fail, timeout_s=T)
    log = r["log"]
    assert [x[1:3] for x in log] == [["seen", 0], ["lost", 0], ["seen", 1]], log
    moved = log[1][0]
    assert 4000 < moved < 7000 and log[2][0] == 7000, log
    assert r["dated"][1:] == [["lost", moved], ["seen", moved]]
    assert r["present"] == 1 and r["tags"] == [[A, 1]] and r["moves"] == 1 and r["refused"] > 1
