"""Golden vectors of protocol v1: both runtimes reproduce and decode every byte of tests/golden/protocol_v1.json.

The CPython-only checks recompute each vector's header, payload, tag (stdlib ``hmac``), COBS, base64 line and
BLE fragments with small reference implementations written here, so the file is not merely self-consistent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from shared_protocol.messages import BY_NAME, MESSAGE_CLASSES
from tests.conftest import CPythonRuntime, MicroPythonCaller

MOD = "tests.portable.protocol_cases"
VECTORS_PATH = Path(__file__).resolve().parent / "golden" / "protocol_v1.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text())
FORMS = ("frame", "serial", "ble_mtu23", "downlink_line")
IDS = [v["name"] for v in VECTORS]


# -- independent reference implementations ----------------------------------------------------------------


def ref_cobs_encode(data: bytes) -> bytes:
    """COBS as in Cheshire & Baker (1999): each zero-free run is cut into blocks of at most 254 bytes; a
    full 254-byte block (code 0xFF) implies no zero, so a run of exactly 254 bytes is followed by an
    empty block."""
    out = bytearray()
    for run in data.split(b"\x00"):
        while len(run) >= 254:
            out += b"\xff" + run[:254]
            run = run[254:]
        out += bytes([len(run) + 1]) + run
    return bytes(out)


def ref_cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        assert code != 0 and i + code <= len(data), "invalid COBS"
        block = data[i + 1 : i + code]
        assert 0 not in block, "invalid COBS"
        out += block
        i += code
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def ref_tag(key: bytes, body: bytes, session: int | None) -> bytes:
    aad = b"" if session is None else session.to_bytes(4, "big")
    return hmac.new(key, aad + body, hashlib.sha256).digest()[:8]


def ref_payload(message: dict[str, Any]) -> bytes:
    out = b""
    for name, kind, _lo, _hi in BY_NAME[message["type"]].FIELDS:
        value = message[name]
        if kind == "E":
            raw = bytes.fromhex(value)
            out += bytes([len(raw)]) + raw
        elif kind == "S":
            raw = value.encode("ascii")
            out += bytes([len(raw)]) + raw
        else:
            out += struct.pack(">" + kind, value)
    return out


def ref_fragments(frame: bytes, mtu: int, msg_id: int) -> list[bytes]:
    size = mtu - 3 - 2
    chunks = [frame[i : i + size] for i in range(0, len(frame), size)]
    return [bytes([msg_id, i * 16 + len(chunks) - 1]) + c for i, c in enumerate(chunks)]


def test_reference_cobs_known_answers() -> None:
    # Examples from the COBS paper / Wikipedia, to make sure the reference itself is right.
    known = {
        b"\x00": b"\x01\x01",
        b"\x00\x00": b"\x01\x01\x01",
        b"\x00\x11\x00": b"\x01\x02\x11\x01",
        b"\x11\x22\x00\x33": b"\x03\x11\x22\x02\x33",
        b"\x11\x22\x33\x44": b"\x05\x11\x22\x33\x44",
        b"\x11\x00\x00\x00": b"\x02\x11\x01\x01\x01",
        bytes(range(1, 255)) + b"\x00": b"\xff" + bytes(range(1, 255)) + b"\x01\x01",
    }
    for raw, enc in known.items():
        assert ref_cobs_encode(raw) == enc
        assert ref_cobs_decode(enc) == raw
    big = bytes(range(1, 256)) * 2
    assert ref_cobs_decode(ref_cobs_encode(big)) == big


def test_reference_tag_known_answer() -> None:
    # RFC 4231 test case 2 (key "Jefe"), truncated: the reference HMAC is the real one.
    full = hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest()
    assert full.startswith("5bdcc146bf60754e")
    assert ref_tag(b"Jefe", b"what do ya want for nothing?", None).hex() == "5bdcc146bf60754e"


# -- the vectors file ------------------------------------------------------------------------------------------


def test_vectors_cover_every_message_type() -> None:
    assert {v["message"]["type"] for v in VECTORS} == {c.NAME for c in MESSAGE_CLASSES}
    assert len({v["name"] for v in VECTORS}) == len(VECTORS)
    for v in VECTORS:
        assert v["direction"] == ("downlink" if BY_NAME[v["message"]["type"]].DIRECTION else "uplink")
        assert ("downlink_line" in v) == (v["direction"] == "downlink"), v["name"]
        assert ("session" in v) == (v["direction"] == "downlink"), v["name"]


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_independently(v: dict[str, Any]) -> None:
    key = bytes.fromhex(v["key"])
    frame = bytes.fromhex(v["frame"])
    cls = BY_NAME[v["message"]["type"]]
    payload = ref_payload(v["message"])
    header = struct.pack(">BBIIB", 1, cls.TYPE, v["node_id"], v["seq"], len(payload))
    body = header + payload
    downlink = v["direction"] == "downlink"
    assert frame == body + ref_tag(key, body, v["session"] if downlink else None)
    # The tag really binds the session: any other boot count gives another tag.
    if downlink:
        assert frame[-8:] != ref_tag(key, body, v["session"] + 1)
        assert frame[-8:] != ref_tag(key, body, None)

    serial = bytes.fromhex(v["serial"])
    assert serial == b"\x00" + ref_cobs_encode(frame) + b"\x00"
    assert 0 not in serial[1:-1]
    assert ref_cobs_decode(serial[1:-1]) == frame

    pieces = [bytes.fromhex(p) for p in v["ble_mtu23"]]
    assert pieces == ref_fragments(frame, 23, v["seq"] & 0xFF)
    assert all(len(p) <= 20 for p in pieces)

    if downlink:
        line = v["downlink_line"].encode()
        assert line == b"!" + base64.b64encode(frame) + b"\n"
        assert base64.b64decode(line[1:-1], validate=True) == frame


# -- both runtimes --------------------------------------------------------------------------------------------


def test_golden_encode(runtime: CPythonRuntime | MicroPythonCaller) -> None:
    inputs = [{k: val for k, val in v.items() if k not in FORMS} for v in VECTORS]
    got = runtime.call(MOD, "encode_vectors", inputs)
    assert len(got) == len(VECTORS)
    for v, out in zip(VECTORS, got, strict=True):
        expected = {k: v[k] for k in FORMS if k in v}
        assert out == expected, v["name"]


def test_golden_decode(runtime: CPythonRuntime | MicroPythonCaller) -> None:
    got = runtime.call(MOD, "decode_vectors", VECTORS)
    assert len(got) == len(VECTORS)
    for v, out in zip(VECTORS, got, strict=True):
        assert out["message"] == v["message"], v["name"]
        assert (out["node_id"], out["seq"]) == (v["node_id"], v["seq"]), v["name"]
        assert out["serial_ok"] is True, v["name"]
        assert out["ble_ok"] is True, v["name"]
        if v["direction"] == "downlink":
            assert out["text_ok"] is True, v["name"]
        else:
            assert "text_ok" not in out, v["name"]
