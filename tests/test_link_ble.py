"""The node's BLE link and the lane-state beacon, on CPython and real MicroPython (tests/portable/ble_cases.py).

The beacon's bytes are also recomputed here with the standard library's ``hmac`` from the layout in
``shared_protocol/beacon.py``, so encoder and decoder are not merely consistent with each other.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import pytest

from shared_protocol import beacon as bc
from shared_protocol.auth import Key
from shared_protocol.errors import ProtocolError

M = "tests.portable.ble_cases"
KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


def test_link_fragments_up_and_down_and_survives_a_full_stack(runtime: Any) -> None:
    r = runtime.call(M, "link_flow")
    assert r["buffer"] == 244 and r["mtu_config"] == 247  # writes up to MTU 247 are kept whole
    assert r["sent_disconnected"] is False
    assert r["adverts_before"] == 1
    assert r["fresh"] == [False, True, False, []]  # fresh only after the poke, which is not a frame
    # 60 bytes at MTU 23: four fragments of at most 20 bytes; the stack took two, the poll sent the rest
    assert r["sent"] is True and r["notified_first"] == 2
    assert r["sizes"] == [20, 20, 20, 8] and r["uplink_ok"] is True
    assert r["downlink_ok"] is True and r["downlink_big_ok"] is True
    assert r["ring"] == [8, 2, 2]  # eight writes kept (each a whole frame), two dropped and counted
    assert r["second"] == [0, [65]]
    connected, adverts, fresh, disconnects, sent = r["after"]
    assert (connected, fresh, disconnects, sent) == (False, False, 1, False)
    assert adverts == 2  # advertising again after the disconnect
    assert r["tx_dropped"] == 3  # refused while disconnected, dropped at the disconnect, refused after


def test_a_stranger_is_dropped_and_a_cut_frame_never_joins_the_next(runtime: Any) -> None:
    r = runtime.call(M, "strangers_and_cut_frames")
    assert r["kept_before"] == [] and r["dropped_after"] == [70]
    assert r["hub_kept"] == [70]  # the vouched hub is kept while it talks
    assert r["frames"] == [r["want"]]  # only the whole frame of the new connection
    assert r["bad_fragments"] == 2  # the cut frame's two orphan fragments, refused and counted
    assert r["stale_frames"] == [] and r["stale"] == 1  # a fragment of the last connection never joins the next
    assert r["silent_dropped"] == [70, 73] and r["strangers"] == 2  # a hub silent for SILENT_MS is let go


def test_irqs_inside_poll_lose_nothing_and_mix_no_connections(runtime: Any) -> None:
    r = runtime.call(M, "irqs_inside_poll")
    assert r["frames"] == ["hello-from-81"]  # the new connection's frame, once, whichever poll took it in
    assert (r["connects"], r["disconnects"], r["connected"]) == (2, 1, True)
    assert r["adverts"] == 1  # no advertising while connected, even when the swap landed mid-poll
    assert r["tx_dropped"] == 1  # the old connection's waiting frame went with it
    assert r["last_notify_conn"] == 81 and r["disconnected"] == []


def _reference_adv(key: bytes, node: int, counter: int, flags: int, first: int, n: int, entries: list[int]) -> bytes:
    body = struct.pack(">BIIBBB4H", 1, node, counter, flags, first, n, *entries)
    tag = hmac.new(key, b"SSB1" + body, hashlib.sha256).digest()[:4]
    return bytes([2, 1, 6, 27, 0xFF, 0xFF, 0xFF]) + body + tag


def test_beacon_bytes_match_an_independent_encoding(runtime: Any) -> None:
    lanes = [[12, False, False], [20000, False, True], [0, True, False]]
    r = runtime.call(M, "beacon_vector", KEY, 7, 1025, bc.WAITING, 4, 7, lanes)
    entries = [12, 16383 | 0x4000, 0x8000, 0]
    assert bytes.fromhex(r["adv"]) == _reference_adv(bytes.fromhex(KEY), 7, 1025, 1, 4, 7, entries)
    assert len(bytes.fromhex(r["adv"])) == 31
    assert (r["node_id"], r["counter"], r["flags"]) == (7, 1025, 1)
    assert r["lanes"] == [[4, 12, False, False], [5, 16383, False, True], [6, 0, True, False]]
    assert r["wrong_key"] is False


def test_beacon_decoding_refuses_what_is_not_one() -> None:
    key = Key(bytes.fromhex(KEY))
    adv = bc.Beacon(9, 5, 0, 0, 2, [1, 2, 0, 0]).advertisement(key)
    payload = bc.payload_of(adv)
    assert payload is not None and bc.open_beacon(payload, key).counter == 5
    for i in range(len(payload)):  # any flipped bit: refused (tag, or a field out of range first)
        forged = bytearray(payload)
        forged[i] ^= 0x10
        with pytest.raises(ProtocolError):
            bc.open_beacon(bytes(forged), key)
    with pytest.raises(ProtocolError):
        bc.decode(payload[:-1])
    with pytest.raises(ProtocolError):  # lane entries beyond the node's lanes must be zero
        bc.Beacon(9, 5, 0, 0, 2, [1, 2, 3, 0]).advertisement(key)
    with pytest.raises(ProtocolError):
        bc.Beacon(9, 5, 4, 0, 2, [1, 2, 0, 0]).advertisement(key)  # reserved flag bit
    assert bc.payload_of(b"\x02\x01\x06") is None
    assert bc.payload_of(b"\x05\x09abc") is None  # a length running past the end


def test_beacons_follow_the_shelf_rotate_lanes_and_renew(runtime: Any) -> None:
    r = runtime.call(M, "beacon_ticks", KEY, 2, timeout_s=120)
    sent = r["sent"]
    counters = [s[1] for s in sent]
    assert counters == sorted(set(counters))  # strictly increasing, drawn from the node's sequence
    assert sent[0][:4] == [0, 101, 0, 0] and sent[0][4] == [10, 20]
    at = {s[0]: s for s in sent}
    assert at[5000][2] == bc.WAITING and at[5000][4] == [10, 19]  # the pick: at once, with events waiting
    assert at[6000][2] == 0  # acknowledged: a new beacon without WAITING
    assert at[7000][2] == bc.FAULT
    # nothing changed afterwards: renewed every RENEW_MS, not more often
    later = [s[0] for s in sent if s[0] > 7000]
    assert later and all(b - a == r["renew_ms"] for a, b in zip([7000, *later], later, strict=False))
    big = runtime.call(M, "beacon_ticks", KEY, 6, timeout_s=120)["sent"]
    firsts = [s[3] for s in big if s[0] < 5000]
    assert firsts[:3] == [0, 4, 0]  # six lanes: the first four, then the other two, in turn every ROTATE_MS
    assert next(s[4] for s in big if s[3] == 4) == [50, 60]
