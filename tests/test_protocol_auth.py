"""Authentication and replay rules of protocol v1 on both runtimes: forged, foreign, replayed and stale frames
are rejected with the right reason, counted per node, and never applied; acceptance resumes afterwards."""

from __future__ import annotations

from typing import Any

from shared_protocol.auth import Key
from shared_protocol.errors import BAD_TAG, BAD_TYPE, BAD_VERSION, REPLAY, UNKNOWN_NODE
from shared_protocol.frame import DownlinkSender, encode_frame
from shared_protocol.messages import Ack, Event, Identify, Message, SetConfig, SetLane, Tare
from tests.conftest import CPythonRuntime, MicroPythonCaller

MOD = "tests.portable.protocol_cases"
KEY_1 = bytes(range(16))
KEY_2 = bytes(range(100, 131))  # 31 bytes
KEYS_HEX = {"1": KEY_1.hex(), "2": KEY_2.hex()}


def event(n: int) -> Event:
    return Event(n, 0, 1, -1, -450, 97, 20)


def up(node_id: int, seq: int, key: bytes = KEY_1, message: Message | None = None) -> bytes:
    return encode_frame(message or event(seq), node_id, seq, Key(key))


def down(node_id: int, seq: int, session: int, key: bytes = KEY_1, message: Message | None = None) -> bytes:
    return encode_frame(message or Ack(seq), node_id, seq, Key(key), session)


def flip(frame: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(frame)
    out[index] ^= 1 << bit
    assert bytes(out) != frame
    return bytes(out)


def with_byte(frame: bytes, index: int, value: int) -> bytes:
    out = bytearray(frame)
    out[index] = value
    return bytes(out)


def uplink_script() -> list[tuple[str, bytes, str]]:
    """(label, frame, expected result) in feeding order; node 1 has KEY_1, node 2 KEY_2."""
    f2 = up(1, 2)
    other = up(1, 3)
    assert other[1] == f2[1] == 3  # event
    return [
        ("first frame", up(1, 1), "ok:1"),
        ("tag bit flipped", flip(f2, len(f2) - 1, 7), "bad_tag"),
        ("tag bit flipped (first tag byte)", flip(f2, len(f2) - 8, 0), "bad_tag"),
        ("payload bit flipped", flip(f2, 11 + 5, 3), "bad_tag"),
        ("header seq bit flipped", flip(f2, 9, 1), "bad_tag"),
        ("header type changed to another uplink type", with_byte(f2, 1, 5), "bad_tag"),
        ("body of another frame under this tag", other[:-8] + f2[-8:], "bad_tag"),
        ("signed with node 2's key, high seq", up(1, 100, KEY_2), "bad_tag"),
        ("replay of seq 1", up(1, 1), "replay"),
        ("next seq after rejections", f2, "ok:2"),
        ("gap is fine", up(1, 5), "ok:5"),
        ("older seq, valid tag", up(1, 3), "replay"),
        ("same seq again", up(1, 5), "replay"),
        ("unknown node", up(9, 1), "unknown_node"),
        ("node 2 has its own sequence", up(2, 7, KEY_2), "ok:7"),
        ("node 2 older seq", up(2, 3, KEY_2), "replay"),
        ("node 2 frame signed with node 1's key", up(2, 1000, KEY_1), "bad_tag"),
        ("higher seq after the forged seq 100", up(1, 6), "ok:6"),
        ("protocol version 2", with_byte(up(1, 7), 0, 2), "bad_version"),
        ("downlink type on the uplink", down(1, 7, 1), "bad_type"),
        ("still accepting", up(1, 7), "ok:7"),
        ("highest seq", up(2, 2**32 - 1, KEY_2), "ok:4294967295"),
        ("nothing after the highest seq", up(2, 2**32 - 1, KEY_2), "replay"),
    ]


def test_uplink_auth_and_replay(runtime: CPythonRuntime | MicroPythonCaller) -> None:
    script = uplink_script()
    got: dict[str, Any] = runtime.call(MOD, "uplink_session", KEYS_HEX, [f.hex() for _, f, _ in script])
    assert len(got["results"]) == len(script)
    for (label, _frame, want), res in zip(script, got["results"], strict=True):
        assert res == want, label
    # Only the accepted frames were applied, in order, with their own content.
    accepted = [(f, int(w[3:])) for _, f, w in script if w.startswith("ok:")]
    assert [(a[0], a[1]) for a in got["applied"]] == [(int.from_bytes(f[2:6], "big"), s) for f, s in accepted]
    assert got["applied"][0][2] == event(1).to_dict()
    assert got["last_seq"] == {"1": 7, "2": 2**32 - 1}
    # Rejections are counted per node (the node id read from the header) and reason.
    assert got["rejected"] == {
        f"1/{BAD_TAG}": 7,
        f"1/{REPLAY}": 3,
        f"0/{UNKNOWN_NODE}": 1,  # unprovisioned ids are not trusted as table keys
        f"2/{REPLAY}": 2,
        f"2/{BAD_TAG}": 1,
        f"1/{BAD_VERSION}": 1,
        f"1/{BAD_TYPE}": 1,
    }
    # The version error says which version it got.
    detail = got["details"][[label for label, _, _ in script].index("protocol version 2")]
    assert detail.startswith("bad_version: ") and "version 2" in detail, detail


def test_unknown_version_message(runtime: CPythonRuntime | MicroPythonCaller) -> None:
    frame = up(1, 1)
    frames = [with_byte(frame, 0, v) for v in (0, 2, 255)] + [b"\x02", b"\x02" + frame[1:5]]
    got = runtime.call(MOD, "uplink_session", KEYS_HEX, [f.hex() for f in frames])
    assert got["results"] == ["bad_version"] * len(frames)
    for version, detail in zip((0, 2, 255, 2, 2), got["details"], strict=True):
        assert detail.startswith("bad_version: protocol version " + str(version) + " "), detail
        assert "speaks 1" in detail, detail
    assert got["applied"] == []


def downlink_script() -> list[tuple[str, bytes, str]]:
    """Node 1 (KEY_1) in boot 7; node 2 has KEY_2."""
    s4 = down(1, 4, 7)
    return [
        ("first command", down(1, 1, 7, message=Tare(3)), "ok:1"),
        ("frame addressed to node 2", down(2, 2, 7, KEY_2), "unknown_node"),
        ("addressed to node 1 but signed with node 2's key", down(1, 2, 7, KEY_2), "bad_tag"),
        ("frame from the earlier boot 6", down(1, 3, 6, message=SetLane(0, 4505, 11, "SKU-1")), "bad_tag"),
        ("frame for a later boot 8", down(1, 3, 8), "bad_tag"),
        ("replayed seq 1", down(1, 1, 7, message=Tare(3)), "replay"),
        ("tag bit flipped", flip(s4, len(s4) - 3, 5), "bad_tag"),
        ("payload bit flipped", flip(s4, 11, 0), "bad_tag"),
        ("uplink frame on the downlink", up(1, 5), "bad_type"),
        ("protocol version 2", with_byte(s4, 0, 2), "bad_version"),
        ("next seq after rejections", down(1, 2, 7, message=Identify(10)), "ok:2"),
        ("same seq again", down(1, 2, 7, message=Identify(10)), "replay"),
        ("jump ahead", down(1, 10, 7, message=SetConfig(3, -1)), "ok:10"),
        ("the seq-4 frame is now old", s4, "replay"),
    ]


def test_downlink_auth_and_replay(runtime: CPythonRuntime | MicroPythonCaller) -> None:
    script = downlink_script()
    got: dict[str, Any] = runtime.call(MOD, "downlink_session", 1, KEY_1.hex(), 7, [f.hex() for _, f, _ in script])
    for (label, _frame, want), res in zip(script, got["results"], strict=True):
        assert res == want, label
    assert got["rejected"] == sum(1 for _, _, w in script if not w.startswith("ok:"))
    assert got["last_seq"] == 10
    assert got["applied"] == [
        [1, 1, Tare(3).to_dict()],
        [1, 2, Identify(10).to_dict()],
        [1, 10, SetConfig(3, -1).to_dict()],
    ]
    detail = got["details"][[label for label, _, _ in script].index("protocol version 2")]
    assert "version 2" in detail, detail


def test_downlink_across_reboot(runtime: CPythonRuntime | MicroPythonCaller) -> None:
    # The hub's DownlinkSender restarts at seq 1 for each boot; commands of the old boot fail authentication.
    sender = DownlinkSender(1, Key(KEY_1))
    sender.new_session(7)
    old = [sender.encode(Ack(n)) for n in (1, 2, 3)]
    sender.new_session(7)  # the same boot reported again: no restart
    assert old[-1][6:10] == (3).to_bytes(4, "big") and sender.seq == 3
    sender.new_session(8)
    new = [sender.encode(Ack(n)) for n in (4, 5)]
    assert [f[6:10] for f in new] == [(1).to_bytes(4, "big"), (2).to_bytes(4, "big")]
    frames = [f.hex() for f in old + new + old]
    boot7 = runtime.call(MOD, "downlink_session", 1, KEY_1.hex(), 7, frames)
    assert boot7["results"] == ["ok:1", "ok:2", "ok:3", "bad_tag", "bad_tag", "replay", "replay", "replay"]
    boot8 = runtime.call(MOD, "downlink_session", 1, KEY_1.hex(), 8, frames)
    assert boot8["results"] == ["bad_tag"] * 3 + ["ok:1", "ok:2"] + ["bad_tag"] * 3
    assert [a[2] for a in boot8["applied"]] == [Ack(4).to_dict(), Ack(5).to_dict()]
