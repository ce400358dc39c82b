"""Link framings of protocol v1 on both runtimes: COBS serial uplink with resynchronisation, REPL-safe text
downlink, and BLE fragmentation. Stream decoders are also checked against simple models of their rules."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared_protocol import ble_fragments, downlink_text, serial_framing
from shared_protocol.auth import Key
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import MAX_FRAME, MIN_FRAME, encode_frame
from shared_protocol.messages import DOWNLINK, Message, from_dict
from tests.conftest import CPythonRuntime, MicroPythonCaller
from tests.portable import protocol_cases
from tests.test_protocol_golden import ref_cobs_decode, ref_cobs_encode, ref_fragments
from tests.test_protocol_roundtrip import PROFILE, Case, collect, encode_case, frame_cases

MOD = "tests.portable.protocol_cases"
CASES: Any = protocol_cases  # the portable bodies are unannotated (MicroPython code)
Runtime = CPythonRuntime | MicroPythonCaller
VECTORS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "golden" / "protocol_v1.json").read_text())
UPLINK_MESSAGES: list[Message] = [from_dict(v["message"]) for v in VECTORS if v["direction"] == "uplink"]
SERIAL_KEY = b"serial-stream-key-0001"


def chunked(data: bytes, rng: random.Random, lo: int, hi: int) -> list[bytes]:
    out = []
    i = 0
    while i < len(data):
        n = rng.randint(lo, hi)
        out.append(data[i : i + n])
        i += n
    return out


# -- COBS -----------------------------------------------------------------------------------------------------

RUNS = [bytes([7]) * n for n in (253, 254, 255, 274)] + [bytes(274), bytes(range(1, 256)) + bytes(range(1, 20))]


@settings(PROFILE, max_examples=300)
@given(data=st.binary(max_size=600))
@example(data=b"")
@example(data=RUNS[1])
@example(data=RUNS[1] + b"\x00")
def test_cobs_matches_reference(data: bytes) -> None:
    enc = serial_framing.cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert enc == ref_cobs_encode(data)
    assert serial_framing.cobs_decode(enc) == data
    assert ref_cobs_decode(enc) == data


@settings(PROFILE, max_examples=200)
@given(frame=st.binary(min_size=1, max_size=MAX_FRAME))
def test_serial_encoding_fits_the_chunk_bound(frame: bytes) -> None:
    wire = serial_framing.encode_serial(frame)
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert len(wire) - 2 <= serial_framing.MAX_CHUNK
    assert serial_framing.SerialDecoder().feed(wire) == [frame]


def test_cobs_both_runtimes(runtime: Runtime) -> None:
    rng = random.Random(3)
    datas = [*RUNS, b"", b"\x00", bytes(MAX_FRAME + 1), bytes([1]) * (MAX_FRAME + 1)]
    datas += [rng.randbytes(rng.randint(1, MAX_FRAME)) for _ in range(40)]
    got = runtime.call(MOD, "cobs_cases", [d.hex() for d in datas])
    for data, res in zip(datas, got, strict=True):
        assert bytes.fromhex(res["cobs"]) == ref_cobs_encode(data), data.hex()
        if len(data) > MAX_FRAME:
            assert res["serial"] == "bad_length"
        else:
            assert res["serial"] == [data.hex()]


# -- serial resynchronisation ---------------------------------------------------------------------------------

LOG_TEXT = [
    b"I (1234) shelf: boot\r\n",
    b"W (98765) hx711: not ready\r\n",
    b'Traceback (most recent call last):\r\n  File "main.py", line 3, in <module>\r\nOSError: [Errno 5] EIO\r\n',
    b"MicroPython v1.27.0 on 2025-12-09; Generic ESP32 module with ESP32\r\n>>> ",
]
GARBAGE_KINDS = ["log", "random", "half", "overlong", "corrupt", "half+log", "none", "overlong+half"]


def serial_script(rng: random.Random, n_frames: int) -> tuple[bytes, list[list[Any]], int]:
    """A stream where every valid frame directly follows some kind of garbage; returns (stream, expected, overlong)."""
    key = Key(SERIAL_KEY)
    stream = bytearray()
    expected: list[list[Any]] = []
    seqs = {1: 0, 2: 0, 3: 0}
    overlong = 0

    def half() -> bytes:
        wire = serial_framing.encode_serial(encode_frame(rng.choice(UPLINK_MESSAGES), 4, rng.randint(1, 9), key))
        return wire[: rng.randint(2, len(wire) - 2)]  # leading 0x00 and part of the body, never the end

    def long_garbage() -> bytes:
        return bytes(rng.randint(1, 255) for _ in range(rng.randint(serial_framing.MAX_CHUNK + 1, 900)))

    for i in range(n_frames):
        kind = GARBAGE_KINDS[i % len(GARBAGE_KINDS)]
        if kind == "log":
            stream += rng.choice(LOG_TEXT)
        elif kind == "random":
            stream += rng.randbytes(rng.randint(1, 120))
        elif kind == "half":
            stream += half()
        elif kind == "half+log":
            stream += half() + rng.choice(LOG_TEXT)
        elif kind in ("overlong", "overlong+half"):
            stream += long_garbage()
            overlong += 1
            if kind == "overlong+half":
                stream += half() + long_garbage()
                overlong += 1
        elif kind == "corrupt":
            bad = bytearray(encode_frame(rng.choice(UPLINK_MESSAGES), 1, seqs[1] + 1, key))
            bad[-1] ^= 0x10
            stream += serial_framing.encode_serial(bytes(bad))
        node = rng.choice([1, 2, 3])
        seqs[node] += rng.randint(1, 3)
        msg = UPLINK_MESSAGES[i % len(UPLINK_MESSAGES)]
        stream += serial_framing.encode_serial(encode_frame(msg, node, seqs[node], key))
        expected.append([node, seqs[node], msg.to_dict()])
    stream += rng.choice(LOG_TEXT)
    return bytes(stream), expected, overlong


def test_serial_resync(runtime: Runtime) -> None:
    rng = random.Random(42)
    stream, expected, overlong = serial_script(rng, 48)
    chunkings = [
        [stream[i : i + 1] for i in range(len(stream))],
        chunked(stream, rng, 1, 8),
        chunked(stream, rng, 1, 400),
        [stream],
    ]
    got = runtime.call(MOD, "serial_streams", SERIAL_KEY.hex(), [[c.hex() for c in ch] for ch in chunkings])
    assert len(got) == len(chunkings)
    for res in got:
        verified = [f for f in res["frames"] if not isinstance(f, str)]
        assert verified == expected
        rejected = [f for f in res["frames"] if isinstance(f, str)]
        assert "bad_tag" in rejected  # the corrupted frames came through COBS and failed authentication
        assert set(rejected) <= {"bad_tag", "bad_version", "truncated", "bad_length", "bad_type", "replay"}
        assert res["garbage_chunks"] >= overlong
        assert res == got[0], "the result must not depend on how the stream was chunked"


def serial_model(stream: bytes) -> list[bytes]:
    """What SerialDecoder must return: every complete 0x00-delimited chunk of 1..MAX_CHUNK bytes that is valid COBS."""
    out = []
    for piece in stream.split(b"\x00")[:-1]:
        if 0 < len(piece) <= serial_framing.MAX_CHUNK:
            with contextlib.suppress(AssertionError):
                out.append(ref_cobs_decode(piece))
    return out


stream_parts = st.one_of(
    st.binary(min_size=1, max_size=MAX_FRAME).map(serial_framing.encode_serial),
    st.binary(max_size=80),
    st.binary(min_size=serial_framing.MAX_CHUNK - 2, max_size=serial_framing.MAX_CHUNK + 40),
    st.sampled_from(LOG_TEXT),
)


@settings(PROFILE, max_examples=150)
@given(parts=st.lists(stream_parts, max_size=10), seed=st.integers(0, 2**16), max_chunk=st.integers(1, 300))
def test_serial_decoder_model(parts: list[bytes], seed: int, max_chunk: int) -> None:
    stream = b"".join(parts)
    dec = serial_framing.SerialDecoder()
    got = []
    for chunk in chunked(stream, random.Random(seed), 1, max_chunk):
        got += dec.feed(chunk)
    assert got == serial_model(stream)


# -- downlink text ------------------------------------------------------------------------------------------


def check_line(frame: bytes) -> None:
    line = downlink_text.encode_line(frame)
    assert line == b"!" + base64.b64encode(frame) + b"\n"
    assert line.endswith(b"\n") and all(0x20 <= b < 0x7F for b in line[:-1])
    assert len(line) - 1 <= downlink_text.MAX_LINE
    assert downlink_text.decode_line(line[:-1]) == frame
    assert downlink_text.decode_line(line[:-1] + b"\r") == frame
    assert downlink_text.LineDecoder().feed(line) == [frame]
    assert downlink_text.LineDecoder().feed(line[:-1] + b"\r\n") == [frame]


@settings(PROFILE, max_examples=150)
@given(case=frame_cases(DOWNLINK))
def test_downlink_frames_are_text_safe(case: Case) -> None:
    check_line(encode_case(case))


@settings(PROFILE, max_examples=200)
@given(frame=st.binary(min_size=1, max_size=MAX_FRAME))
@example(frame=bytes(range(256)) + bytes(MAX_FRAME - 256))
@example(frame=b"\x03\x04\x01\x02\x0d\x0a\x7f" * 39)
def test_any_frame_is_text_safe(frame: bytes) -> None:
    check_line(frame)


def test_encode_line_bounds() -> None:
    with pytest.raises(ProtocolError) as exc:
        downlink_text.encode_line(bytes(MAX_FRAME + 1))
    assert exc.value.reason_name == "bad_length"


B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def canonical_b64(body: bytes) -> bytes | None:
    """The bytes ``body`` encodes if it is standard, canonical, non-empty base64 (stdlib as the reference)."""
    try:
        raw = base64.b64decode(body, validate=True)
    except binascii.Error:
        return None
    return raw if body and base64.b64encode(raw) == body else None


@settings(PROFILE, max_examples=300)
@given(body=st.binary(max_size=24) | st.lists(st.sampled_from(list(B64 + b"=-_ \r")), max_size=24).map(bytes))
@example(body=b"AB==")
@example(body=b"AA==\r")
@example(body=b"AA==\r\r")
@example(body=b"QUJD====")
def test_decode_line_accepts_only_canonical_base64(body: bytes) -> None:
    expected = canonical_b64(body.removesuffix(b"\r"))
    if expected is None:
        with pytest.raises(ProtocolError) as exc:
            downlink_text.decode_line(b"!" + body)
        assert exc.value.reason_name == "bad_encoding"
    else:
        assert downlink_text.decode_line(b"!" + body) == expected


def text_streams() -> tuple[list[bytes], list[list[bytes]], list[dict[str, Any]]]:
    """(frames, streams as chunk lists, expected text_lines result per stream)."""
    rng = random.Random(11)
    f = [rng.randbytes(n) for n in (19, 40, 100, MAX_FRAME, 1)]
    line = [b"!" + base64.b64encode(x) for x in f]
    bad_lines = [b"!AB==", b"!AA-A", b"!AA_A", b"!AA A", b"!AAAA====", b"!A===", b"!AAA", b"!", line[2] + b"\x03"]
    mixed = b"".join(
        [b"hello\r\n", b">>> \r\n", line[0] + b"\r\n", line[1] + b"\n"]
        + [x + b"\n" for x in bad_lines]
        + [b"\n", b"\r\n", line[2] + b"\n"]
    )
    mixed_expected = {"frames": [f[0].hex(), f[1].hex(), f[2].hex()], "bad": len(bad_lines), "ignored": 3}
    long_text = bytes(rng.choice(b"abc !=/+\r") for _ in range(10_000)) + b"\n" + line[3] + b"\n"
    long_b64 = b"!" + b"QUJD" * 2500 + b"\n" + line[4] + b"\r\n"
    at_limit = line[3] + b"\r\n" + line[3] + b"\r\r\n" + line[1] + b"\n"  # 370 bytes fit, 371 do not
    streams = [
        [mixed],
        [mixed[i : i + 1] for i in range(len(mixed))],
        chunked(long_text, rng, 1, 1000),
        chunked(long_b64, rng, 200, 3000),
        [at_limit],
    ]
    expected = [
        mixed_expected,
        mixed_expected,
        {"frames": [f[3].hex()], "bad": 1, "ignored": 0},
        {"frames": [f[4].hex()], "bad": 1, "ignored": 0},
        {"frames": [f[3].hex(), f[1].hex()], "bad": 1, "ignored": 0},
    ]
    return f, streams, expected


def test_text_both_runtimes(runtime: Runtime) -> None:
    down_cases: list[Case] = collect(frame_cases(DOWNLINK), 60)
    rng = random.Random(5)
    frames = [encode_case(c) for c in down_cases]
    frames += [rng.randbytes(rng.randint(1, MAX_FRAME)) for _ in range(40)] + [bytes(MAX_FRAME + 1)]
    lines = [downlink_text.encode_line(x)[:-1] for x in frames[:-1]]
    bad = [
        b"",
        b"!",
        b"AAAA",
        b"!AB==",
        b"!AAAA====",
        b"!QUJD\x03",
        b"!QUJ",
        b"!QU=D",
        b"!QUJD\r\r",
        b"!QUJD=",
        b"!\xc3\xa9AA",
    ]
    _f, streams, expected_streams = text_streams()
    got = runtime.call(
        MOD,
        "text_cases",
        [x.hex() for x in frames],
        [x.hex() for x in lines + bad],
        [[c.hex() for c in s] for s in streams],
    )
    assert got["encoded"][:-1] == [(b"!" + base64.b64encode(x) + b"\n").hex() for x in frames[:-1]]
    assert got["encoded"][-1] == "bad_length"
    assert got["decoded"] == [x.hex() for x in frames[:-1]] + ["bad_encoding"] * len(bad)
    assert got["streams"] == expected_streams


def line_model(stream: bytes) -> list[bytes]:
    out = []
    for line in stream.split(b"\n")[:-1]:
        if not line or len(line) > downlink_text.MAX_LINE or line[:1] != b"!":
            continue
        raw = canonical_b64(line[1:].removesuffix(b"\r"))
        if raw is not None:
            out.append(raw)
    return out


text_parts = st.one_of(
    st.binary(min_size=1, max_size=MAX_FRAME).map(lambda f: b"!" + base64.b64encode(f)),
    st.binary(max_size=60),
    st.lists(st.sampled_from(list(B64 + b"=!\r")), max_size=420).map(bytes),
    st.sampled_from([b"\n", b"\r\n", b"!", b"\r"]),
)


@settings(PROFILE, max_examples=150)
@given(parts=st.lists(text_parts, max_size=12), seed=st.integers(0, 2**16), max_chunk=st.integers(1, 300))
def test_line_decoder_model(parts: list[bytes], seed: int, max_chunk: int) -> None:
    stream = b"\n".join(parts) + b"\n"
    dec = downlink_text.LineDecoder()
    got = []
    for chunk in chunked(stream, random.Random(seed), 1, max_chunk):
        got += dec.feed(chunk)
    assert got == line_model(stream)


# -- BLE fragmentation ------------------------------------------------------------------------------------------


def test_ble_every_mtu_and_size() -> None:
    rng = random.Random(1)
    frames = {n: rng.randbytes(n) for n in range(MIN_FRAME, MAX_FRAME + 1)}
    reassembler = ble_fragments.Reassembler()
    checked = 0
    for mtu in range(23, 248):
        for n, frame in frames.items():
            pieces = ble_fragments.fragment(frame, mtu, n & 0xFF)
            assert pieces == ref_fragments(frame, mtu, n & 0xFF)
            assert all(len(p) <= mtu - 3 for p in pieces)
            assert len(pieces) <= 16
            got = [reassembler.feed(p) for p in pieces]
            assert got == [None] * (len(pieces) - 1) + [frame]
            checked += 1
    assert checked == 225 * 256 and reassembler.dropped == 0


def test_ble_fragment_rejects() -> None:
    bad = [(22, 0, 19), (518, 0, 19), (23, 256, 19), (23, -1, 19), (23, 0, 0), (23, 0, MAX_FRAME + 1), (247, 0, 275)]
    for mtu, msg_id, size in bad:
        with pytest.raises(ProtocolError) as exc:
            ble_fragments.fragment(bytes(size), mtu, msg_id)
        assert exc.value.reason_name == "bad_length", (mtu, msg_id, size)


SAMPLE_MTUS = [23, 24, 25, 27, 28, 35, 50, 64, 100, 185, 247, 251, 512, 517]
SAMPLE_SIZES = [1, 18, 19, 20, 36, 37, 59, 100, 254, 255, 273, 274]


def test_ble_both_runtimes(runtime: Runtime) -> None:
    rng = random.Random(2)
    frames = {n: rng.randbytes(n) for n in SAMPLE_SIZES}
    cases: list[list[Any]] = [[mtu, (mtu + n) & 0xFF, frames[n].hex()] for mtu in SAMPLE_MTUS for n in SAMPLE_SIZES]
    cases += [[22, 0, "00" * 19], [518, 0, "00" * 19], [23, 256, "00" * 19], [23, 0, ""], [23, 0, "00" * 275]]
    got = runtime.call(MOD, "ble_fragments_many", cases)
    for case, res in zip(cases[:-5], got[:-5], strict=True):
        mtu, msg_id, frame_hex = case
        assert res == [p.hex() for p in ref_fragments(bytes.fromhex(frame_hex), mtu, msg_id)], case
    assert got[-5:] == ["bad_length"] * 5
    # Reassemble all frames of one MTU through one reassembler, back to back.
    sequences = []
    for mtu in SAMPLE_MTUS:
        sequences.append([p for case, res in zip(cases[:-5], got, strict=False) if case[0] == mtu for p in res])
    fed = runtime.call(MOD, "ble_feed_many", sequences)
    for mtu, res in zip(SAMPLE_MTUS, fed, strict=True):
        assert [r for r in res["results"] if r != "more"] == ["done:" + frames[n].hex() for n in SAMPLE_SIZES], mtu
        assert res["dropped"] == 0


def ble_error_script() -> tuple[list[list[str]], list[dict[str, Any]]]:
    rng = random.Random(9)
    a = rng.randbytes(60)  # 4 fragments at MTU 23
    b = rng.randbytes(40)  # 3 fragments
    pa = ble_fragments.fragment(a, 23, 10)
    pb = ble_fragments.fragment(b, 23, 11)
    assert (len(pa), len(pb)) == (4, 3)
    done_b = ["more", "more", "done:" + b.hex()]
    bad = "bad_fragment"
    wrong_count = bytes([10, (1 << 4) | 2]) + pa[1][2:]  # says 3 fragments, the frame started with 4
    overflow = [bytes([12, (i << 4) | 15]) + bytes([i + 1]) * 30 for i in range(10)]  # 10 x 30 > 274 bytes
    scripts: list[tuple[list[bytes], list[str], int]] = [
        ([*pa, *pb], ["more"] * 3 + ["done:" + a.hex()] + done_b, 0),
        ([pa[0], pa[2], pa[1], pa[3], *pb], ["more", bad, bad, bad, *done_b], 1),  # out of order
        ([pa[0], pa[1], pa[3], *pb], ["more", "more", bad, *done_b], 1),  # missing middle
        ([pa[0], pa[1], pa[1], pa[2], pa[3], *pb], ["more", "more", bad, bad, bad, *done_b], 1),  # duplicate
        ([pa[1], pa[2], pa[3], *pb], [bad, bad, bad, *done_b], 0),  # missing first
        ([pa[3], pa[2], pa[1], pa[0], *pb], [bad, bad, bad, "more", *done_b], 1),  # reversed
        ([pa[0], pb[1], pa[1], pa[2], pa[3], *pb], ["more", bad, bad, bad, bad, *done_b], 1),  # interleaved
        ([pa[0], wrong_count, *pb], ["more", bad, *done_b], 1),  # count changes mid-frame
        ([b"", pa[0][:2], *pb], [bad, bad, *done_b], 0),  # no data
        ([*overflow, *pb], ["more"] * 9 + [bad, *done_b], 1),  # longer than any frame
        # A missing last fragment is only noticed when the next frame starts: dropped, not an error.
        ([pa[0], pa[1], pa[2], *pb], ["more"] * 3 + done_b, 1),
        # A repeated first fragment restarts the frame: same bytes, so the frame still arrives whole.
        ([pa[0], pa[0], pa[1], pa[2], pa[3]], ["more"] * 4 + ["done:" + a.hex()], 1),
    ]
    sequences = [[p.hex() for p in s[0]] for s in scripts]
    expected = [{"results": s[1], "dropped": s[2]} for s in scripts]
    return sequences, expected


def test_ble_bad_fragments(runtime: Runtime) -> None:
    sequences, expected = ble_error_script()
    got = runtime.call(MOD, "ble_feed_many", sequences)
    assert len(got) == len(expected)
    for i, (res, exp) in enumerate(zip(got, expected, strict=True)):
        assert res == exp, i


def test_portable_bodies_agree_in_process() -> None:
    # The portable bodies used above behave the same when called directly (no JSON, no harness).
    sequences, expected = ble_error_script()
    assert CASES.ble_feed_many(sequences) == expected
    _f, streams, expected_streams = text_streams()
    assert [CASES.text_lines([c.hex() for c in s]) for s in streams] == expected_streams


def test_cobs_decode_accepts_bytes_and_bytearray(runtime: Any) -> None:
    chunks = ["0301020205", "0300010205", "05010203", ""]
    got = runtime.call("tests.portable.protocol_cases", "cobs_decode_types", chunks)
    assert got == ["01020005", "01020005", "bad_encoding", "bad_encoding", "bad_encoding", "bad_encoding", "", ""]
