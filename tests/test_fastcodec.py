"""The hub's CPython fast path (``hub/transport/fastcodec.py``) against the shared protocol code, byte for byte.

Both get the same input: the golden vectors (tests/golden), their fuzz mutations, correctly signed random payloads
of every type, random bytes (tests/test_protocol_fuzz.py), frames replayed and frames of unknown nodes; as serial
streams cut at random points, COBS chunks with every kind of damage. Each step must give the same frames or the same
error (class, reason code, text), and the decoders the same counters and last error.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from hub.transport.fastcodec import FastSerialDecoder, FastUplinkReceiver, fast_cobs_decode
from shared_protocol.auth import Key
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import Frame, UplinkReceiver
from shared_protocol.messages import UPLINK, Event, class_for
from shared_protocol.serial_framing import SerialDecoder, cobs_decode, cobs_encode, encode_serial
from tests.test_protocol_fuzz import build_groups

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parent / "golden" / "protocol_v1.json").read_text()
)


def outcome(fn: Any, *args: Any) -> Any:
    """What a call gives: its result, or its error as (class, reason, text)."""
    try:
        result = fn(*args)
    except ProtocolError as err:
        return ("error", type(err).__name__, err.reason, str(err))
    if isinstance(result, Frame):
        m = result.message
        return ("frame", result.node_id, result.seq, type(m).__name__, m.to_dict())
    return ("ok", result)


def receivers(keys: dict[int, Key]) -> tuple[UplinkReceiver, FastUplinkReceiver]:
    return UplinkReceiver(dict(keys)), FastUplinkReceiver(dict(keys))


def same_receivers(ref: UplinkReceiver, fast: UplinkReceiver) -> None:
    assert fast.last_seq == ref.last_seq
    assert fast.rejected.counts == ref.rejected.counts
    assert repr(fast.rejected.last_error) == repr(ref.rejected.last_error)


def test_golden_frames_and_their_mutations_decode_identically() -> None:
    seen_kinds: set[str] = set()
    for key_hex, _session, inputs in build_groups():
        key = Key(bytes.fromhex(key_hex))
        node_ids = (1, 2, 7, 0xFFFFFFFF)
        ref, fast = receivers({n: key for n in node_ids})
        for kind, data in inputs:
            for _ in range(2):  # the second time: a replay, unless the first was refused
                want, got = outcome(ref.accept, data), outcome(fast.accept, data)
                assert got == want, (kind, data.hex())
                seen_kinds.add(want[0] if want[0] == "frame" else f"error {want[2]}")
        same_receivers(ref, fast)
    assert "frame" in seen_kinds and len(seen_kinds) >= 6  # accepted frames and many kinds of error were compared


def test_unknown_nodes_other_keys_and_uplink_of_every_type() -> None:
    rng = random.Random(13)
    keys = {1: Key(bytes(range(16))), 2: Key(b"\x42" * 64)}
    ref, fast = receivers(keys)
    for v in VECTORS:
        if v["direction"] != "uplink":
            continue
        data = bytes.fromhex(v["frame"])
        for candidate in (data, data[:1] + bytes([2]) + data[2:], data[:-1] + bytes([data[-1] ^ 1])):
            assert outcome(fast.accept, candidate) == outcome(ref.accept, candidate)
    # frames signed with the keys the receivers hold, in random order (replays and gaps included)
    for _ in range(3000):
        node = rng.choice((1, 2, 3))
        seq = rng.randint(1, 40)
        ev = Event(rng.randint(0, 3), rng.randint(0, 40), rng.randint(0, 5), rng.randint(-5, 5), 0, 101, 0)
        from shared_protocol.frame import encode_frame

        key = keys.get(node, Key(b"\x01" * 16))
        try:
            data = encode_frame(ev, node, seq, key)
        except ProtocolError:
            ev = Event(rng.randint(1, 9), rng.randint(0, 31), 1, -1, -100, 90, 0)
            data = encode_frame(ev, node, seq, key)
        want, got = outcome(ref.accept, data), outcome(fast.accept, data)
        assert got == want, data.hex()
    same_receivers(ref, fast)


def test_the_fast_path_keeps_up_with_a_replaced_key() -> None:
    old, new = Key(b"\x11" * 16), Key(b"\x22" * 16)
    ref, fast = receivers({5: old})
    frame = bytes.fromhex(VECTORS[0]["frame"])
    from shared_protocol.frame import encode_frame

    first = encode_frame(class_for(frame[1], UPLINK).decode_payload(frame[11:-8]), 5, 1, old)
    assert outcome(fast.accept, first) == outcome(ref.accept, first)
    ref.keys[5] = fast.keys[5] = new
    for key in (old, new):
        again = encode_frame(class_for(frame[1], UPLINK).decode_payload(frame[11:-8]), 5, 2, key)
        assert outcome(fast.accept, again) == outcome(ref.accept, again)
    same_receivers(ref, fast)


def random_chunk(rng: random.Random) -> bytes:
    """A delimiter-free chunk: valid COBS of random data, or damaged COBS, or noise."""
    r = rng.random()
    if r < 0.4:
        return cobs_encode(rng.randbytes(rng.randint(0, 300)))
    raw = bytearray(cobs_encode(bytes(rng.choice((0, 0, 1, 255)) for _ in range(rng.randint(0, 600)))))
    if r < 0.8 and raw:
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] = rng.choice((1, 2, 0xFE, 0xFF, rng.randint(1, 255)))
    elif raw:
        raw = bytearray(rng.randbytes(len(raw)))
    return bytes(raw).replace(b"\x00", b"\x01")


def test_cobs_decode_identical_on_valid_damaged_and_noise_chunks() -> None:
    rng = random.Random(7)
    chunks = [bytes.fromhex(v["serial"])[1:-1] for v in VECTORS]
    chunks += [b"", b"\x01", b"\x02", b"\xff", b"\xff" + b"\x01" * 254, b"\x03\x01", b"\x01\x00\x01", b"\x05\x01"]
    chunks += [random_chunk(rng) for _ in range(20_000)]
    kinds = set()
    for chunk in chunks:
        want = outcome(cobs_decode, chunk)
        assert outcome(fast_cobs_decode, chunk) == want, chunk.hex()
        assert outcome(fast_cobs_decode, bytearray(chunk)) == outcome(cobs_decode, bytearray(chunk))
        kinds.add(want[0] if want[0] == "ok" else want[3])
    assert len(kinds) >= 3  # decoded chunks and more than one kind of error were compared


@pytest.mark.parametrize("seed", range(4))
def test_serial_streams_cut_anywhere_decode_identically(seed: int) -> None:
    rng = random.Random(seed)
    parts = []
    for _ in range(400):
        r = rng.random()
        if r < 0.6:
            parts.append(bytes.fromhex(rng.choice(VECTORS)["serial"]))
        elif r < 0.7:
            parts.append(b"Traceback (most recent call last):\r\n  log line\r\n")
        elif r < 0.8:
            parts.append(b"\x00" + b"\x01" * rng.randint(270, 700) + b"\x00")  # over-long chunks
        elif r < 0.9:
            parts.append(encode_serial(rng.randbytes(rng.randint(19, 274))))
        else:
            parts.append(random_chunk(rng) + (b"\x00" if rng.random() < 0.7 else b""))
    stream = b"".join(parts)
    ref, fast = SerialDecoder(), FastSerialDecoder()
    i = 0
    while i < len(stream):
        n = rng.choice((1, 2, 7, 64, 300, 4096))
        piece = stream[i : i + n]
        i += n
        assert fast.feed(piece) == ref.feed(piece)
        assert (fast.garbage_chunks, fast.garbage_bytes) == (ref.garbage_chunks, ref.garbage_bytes)
        assert repr(fast.last_error) == repr(ref.last_error)
    assert ref.garbage_chunks > 0
