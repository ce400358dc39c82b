"""Decoder fuzzing: random bytes, mutated golden frames and correctly signed random payloads go through every
decoder on both runtimes. Only ProtocolError may come out, the runtimes must agree on every result, and a
mutated frame never authenticates."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_protocol import ble_fragments, downlink_text, serial_framing
from shared_protocol.auth import Key
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import decode_frame, encode_frame, peek_header
from shared_protocol.messages import BY_NAME, DOWNLINK, MESSAGE_CLASSES, UPLINK, Message
from tests.conftest import MicroPythonCaller
from tests.portable import protocol_cases
from tests.test_protocol_roundtrip import PROFILE

MOD = "tests.portable.protocol_cases"
CASES: Any = protocol_cases  # the portable bodies are unannotated (MicroPython code)
VECTORS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "golden" / "protocol_v1.json").read_text())
MUTATIONS_PER_VECTOR = 110
SIGNED_PER_TYPE = 30
RANDOM_INPUTS = 300

Group = tuple[str, int, list[tuple[str, bytes]]]  # key hex, session, [(kind, input)]


def _session(v: dict[str, Any]) -> int:
    return int(v.get("session", 1))


# -- mutations -------------------------------------------------------------------------------------------------


def _flip_bits(rng: random.Random, f: bytes) -> bytes:
    out = bytearray(f)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _swap_ids(rng: random.Random, f: bytes) -> bytes:
    return f[:2] + f[6:10] + f[2:6] + f[10:]


def _set_byte(index: int) -> Callable[[random.Random, bytes], bytes]:
    def mutate(rng: random.Random, f: bytes) -> bytes:
        return f[:index] + bytes([rng.randrange(256)]) + f[index + 1 :]

    return mutate


def _grow_payload(rng: random.Random, f: bytes) -> bytes:
    # Extra payload bytes with the length byte fixed up: structurally valid, tag unchanged.
    extra = rng.randbytes(rng.randint(1, 8))
    if f[10] + len(extra) > 255:
        return f + extra
    return f[:10] + bytes([f[10] + len(extra)]) + f[11:-8] + extra + f[-8:]


def _shrink_payload(rng: random.Random, f: bytes) -> bytes:
    cut = rng.randint(1, max(1, f[10]))
    return f[:10] + bytes([max(0, f[10] - cut)]) + f[11 : max(11, len(f) - 8 - cut)] + f[-8:]


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    _flip_bits,
    _flip_bits,
    _flip_bits,
    lambda rng, f: f[: rng.randrange(len(f))],  # truncation
    lambda rng, f: f + rng.randbytes(rng.randint(1, 20)),  # extension
    lambda rng, f: (lambda i: f[:i] + bytes([rng.randrange(256)]) + f[i:])(rng.randrange(len(f) + 1)),  # insertion
    lambda rng, f: (lambda i: f[:i] + f[i + 1 :])(rng.randrange(len(f))),  # deletion
    lambda rng, f: (lambda i: f[:i] + bytes([rng.randrange(256)]) + f[i + 1 :])(rng.randrange(len(f))),  # replace
    _swap_ids,
    _set_byte(0),  # version
    _set_byte(1),  # type
    _set_byte(10),  # payload length
    lambda rng, f: f[:1] + bytes([rng.choice(MESSAGE_CLASSES).TYPE]) + f[2:],  # another known type
    _grow_payload,
    _shrink_payload,
    lambda rng, f: f + f,  # two frames glued together
    lambda rng, f: f[1:] + bytes([rng.randrange(256)]),  # shifted by one
    lambda rng, f: f[:-8] + rng.randbytes(8),  # random tag
]


def mutated(rng: random.Random, frame: bytes) -> list[bytes]:
    out = []
    for _ in range(MUTATIONS_PER_VECTOR):
        m = rng.choice(MUTATORS)(rng, frame)
        if rng.random() < 0.2 and len(m) >= 19:  # sometimes a second mutation on top
            m = rng.choice(MUTATORS)(rng, m)
        out.append(m)
    return out


def signed_random(rng: random.Random, cls: type[Message], key: bytes, session: int) -> bytes:
    """A frame of ``cls`` with a random payload and a correct tag: exercises payload validation."""
    size = sum(1 if k in "Bb" else 2 if k in "Hh" else 4 if k in "Ii" else 1 for _n, k, _l, _h in cls.FIELDS)
    r = rng.random()
    length = size if r < 0.4 else max(0, size + rng.randint(-3, 12)) if r < 0.8 else rng.randint(0, 60)
    payload = bytearray(rng.randbytes(length))
    if length and rng.random() < 0.5 and cls.FIELDS[-1][1] in "ES":  # plausible var-length tail
        payload[-1 - min(length - 1, rng.randint(0, 33))] = rng.randint(0, 34)
    node_id = rng.choice([1, 2, 0xFFFFFFFF, 1, 2, 0xFFFFFFFF, 0])
    seq = rng.choice([1, 7, 0xFFFFFFFF, 1, 7, 0xFFFFFFFF, 0])
    body = struct.pack(">BBIIB", 1, cls.TYPE, node_id, seq, len(payload)) + bytes(payload)
    aad = session.to_bytes(4, "big") if cls.DIRECTION == DOWNLINK else b""
    return body + Key(key).tag(aad, body)


def build_groups() -> list[Group]:
    """All inputs, grouped by (key, session); each input is labelled original / mutation / signed / noise."""
    rng = random.Random(20240601)
    groups: dict[tuple[str, int], list[tuple[str, bytes]]] = {}
    for v in VECTORS:
        frame = bytes.fromhex(v["frame"])
        inputs = groups.setdefault((v["key"], _session(v)), [])
        inputs.append(("original", frame))
        inputs.extend(("original" if m == frame else "mutation", m) for m in mutated(rng, frame))
        # Other layers' encodings of the frame are not frames.
        inputs.append(("mutation", bytes.fromhex(v["serial"])))
        if "downlink_line" in v:
            inputs.append(("mutation", v["downlink_line"].encode()))
            inputs.append(("mutation", v["downlink_line"].encode()[:-1]))
        inputs.extend(("mutation", bytes.fromhex(p)) for p in v["ble_mtu23"])
    for (key_hex, session), inputs in list(groups.items())[:2]:
        for cls in MESSAGE_CLASSES:
            key = bytes.fromhex(key_hex)
            inputs.extend(("signed", signed_random(rng, cls, key, session)) for _ in range(SIGNED_PER_TYPE // 2))
    noise = groups.setdefault(("ff" * 32, 1), [])
    for _ in range(RANDOM_INPUTS):
        n = rng.randint(0, 300)
        data = bytearray(rng.randbytes(n))
        if n and rng.random() < 0.3:  # a plausible header, so the frame layer gets past its first checks
            data[0] = 1
            if n >= 19:
                data[1] = rng.choice(MESSAGE_CLASSES).TYPE
                data[10] = n - 19 if n - 19 <= 255 else data[10]
        noise.append(("noise", bytes(data)))
    return [(k, s, inputs) for (k, s), inputs in groups.items()]


def test_decode_any_mutations_both_runtimes(mpy: MicroPythonCaller) -> None:
    groups = build_groups()
    request = [[k, s, [x.hex() for _kind, x in inputs]] for k, s, inputs in groups]
    expected = CASES.decode_any_groups(json.loads(json.dumps(request)))
    got = mpy.call(MOD, "decode_any_groups", request, timeout_s=60)
    assert len(got) == len(expected)
    for (key_hex, session, inputs), exp, mp in zip(groups, expected, got, strict=True):
        assert len(mp) == len(inputs)
        for (_kind, data), e, m in zip(inputs, exp, mp, strict=True):
            assert m == e, (key_hex, session, data.hex())

    counts: dict[str, int] = {}
    for (key_hex, session, inputs), results in zip(groups, expected, strict=True):
        key = Key(bytes.fromhex(key_hex))
        for (kind, data), res in zip(inputs, results, strict=True):
            ok = [r for r in res[:2] if r.startswith("ok:")]
            if kind == "original":
                assert len(ok) == 1, (data.hex(), res)
            elif kind in ("mutation", "noise"):
                assert not ok, (kind, data.hex(), res)
            elif ok:
                # A correctly signed frame decodes only canonically: re-encoding gives the same bytes.
                direction = UPLINK if res[0].startswith("ok:") else DOWNLINK
                frame = decode_frame(data, direction, key, session)
                assert encode_frame(frame.message, frame.node_id, frame.seq, key, session) == data
                kind = "signed_ok"
            counts[kind] = counts.get(kind, 0) + 1
    assert counts["mutation"] > 1800 and counts["noise"] == RANDOM_INPUTS
    assert counts["signed_ok"] > 20, "some signed random payloads should be valid"
    assert counts["signed"] > 100, "most signed random payloads should be rejected by payload validation"


def test_mutations_never_authenticate() -> None:
    # CPython, directly: no mutated golden frame (other than an identity mutation) is accepted in any direction.
    rng = random.Random(7)
    checked = 0
    for v in VECTORS:
        frame = bytes.fromhex(v["frame"])
        key = Key(bytes.fromhex(v["key"]))
        for m in mutated(rng, frame):
            if m == frame:
                continue
            for direction in (UPLINK, DOWNLINK):
                with pytest.raises(ProtocolError):
                    decode_frame(m, direction, key, _session(v))
            checked += 1
    assert checked > 1500


# -- CPython-side property fuzz ---------------------------------------------------------------------------------

FUZZ_KEY = Key(b"fuzz-key-0123456")


def _only_protocol_error(fn: Callable[[], object]) -> None:
    try:
        fn()
    except ProtocolError as err:
        assert err.reason_name != "unknown", err


@settings(PROFILE, max_examples=400)
@given(data=st.binary(max_size=300))
def test_decoders_raise_only_protocol_error(data: bytes) -> None:
    _only_protocol_error(lambda: serial_framing.cobs_decode(data))
    _only_protocol_error(lambda: downlink_text.decode_line(data))
    _only_protocol_error(lambda: peek_header(data))
    for direction in (UPLINK, DOWNLINK):
        _only_protocol_error(lambda d=direction: decode_frame(data, d, FUZZ_KEY, 1))  # type: ignore[misc]
        _only_protocol_error(lambda d=direction: decode_frame(data, d, None, 1))  # type: ignore[misc]
    _only_protocol_error(lambda: ble_fragments.Reassembler().feed(data))
    serial_framing.SerialDecoder().feed(data)  # swallows its own errors: nothing may escape at all
    downlink_text.LineDecoder().feed(data)


@settings(PROFILE, max_examples=200)
@given(chunks=st.lists(st.binary(max_size=120), max_size=12))
def test_stream_decoders_survive_any_stream(chunks: list[bytes]) -> None:
    sd = serial_framing.SerialDecoder()
    ld = downlink_text.LineDecoder()
    ra = ble_fragments.Reassembler()
    for chunk in chunks:
        # The stream decoders swallow their own errors: nothing may escape, and what comes out is bytes.
        assert all(type(f) is bytes for f in sd.feed(chunk))
        assert all(type(f) is bytes and len(f) <= 276 for f in ld.feed(chunk))
        _only_protocol_error(lambda: ra.feed(chunk))  # noqa: B023 - called immediately


@settings(PROFILE, max_examples=300)
@given(
    cls=st.sampled_from(MESSAGE_CLASSES),
    payload=st.binary(max_size=60),
    node_id=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**32 - 1),
)
def test_signed_random_payloads_decode_canonically(cls: type[Message], payload: bytes, node_id: int, seq: int) -> None:
    body = struct.pack(">BBIIB", 1, cls.TYPE, node_id, seq, len(payload)) + payload
    aad = (5).to_bytes(4, "big") if cls.DIRECTION == DOWNLINK else b""
    frame = body + FUZZ_KEY.tag(aad, body)
    try:
        back = decode_frame(frame, cls.DIRECTION, FUZZ_KEY, 5)
    except ProtocolError:
        return
    assert type(back.message) is BY_NAME[cls.NAME]
    assert encode_frame(back.message, back.node_id, back.seq, FUZZ_KEY, 5) == frame
