"""Protocol micro-benchmark body, identical on CPython and MicroPython (imported by both)."""

from shared_protocol.auth import Key
from shared_protocol.frame import UplinkReceiver, encode_frame
from shared_protocol.messages import KIND_PICK, Event
from shared_protocol.serial_framing import SerialDecoder, encode_serial

try:
    from time import ticks_diff, ticks_us  # type: ignore[attr-defined, unused-ignore]

    def _now_us() -> int:
        return int(ticks_us())

    def _elapsed_us(t0: int) -> int:
        return int(ticks_diff(ticks_us(), t0))

except ImportError:
    from time import perf_counter

    def _now_us() -> int:
        return int(perf_counter() * 1000000)

    def _elapsed_us(t0: int) -> int:
        return _now_us() - t0


KEY = b"\x01" * 16
NODE = 42


def _event(i: int) -> Event:
    return Event(i, i & 3, KIND_PICK, -1, -4510, 97, 120)


def run(min_ms: int) -> "dict[str, int]":
    """Rates (operations per second) for each stage, each measured for at least ``min_ms``."""
    key = Key(KEY)
    budget_us = min_ms * 1000
    out: dict[str, int] = {}

    # encode + authenticate
    n = 0
    t0 = _now_us()
    while True:
        for _ in range(50):
            n += 1
            encode_frame(_event(n), NODE, n, key)
        el = _elapsed_us(t0)
        if el >= budget_us:
            break
    out["encode_auth_per_s"] = n * 1000000 // el

    frames = [encode_frame(_event(i), NODE, i, key) for i in range(1, 201)]

    # verify + decode (hub side, replay check included)
    n = 0
    t0 = _now_us()
    while True:
        rx = UplinkReceiver({NODE: key})
        for f in frames:
            rx.accept(f)
        n += len(frames)
        el = _elapsed_us(t0)
        if el >= budget_us:
            break
    out["verify_decode_per_s"] = n * 1000000 // el

    # full path per event: encode + tag + COBS on the node, unframe + verify + decode on the hub
    n = 0
    t0 = _now_us()
    dec = SerialDecoder()
    rx = UplinkReceiver({NODE: key})
    while True:
        for _ in range(50):
            n += 1
            for raw in dec.feed(encode_serial(encode_frame(_event(n), NODE, n, key))):
                rx.accept(raw)
        el = _elapsed_us(t0)
        if el >= budget_us:
            break
    out["serial_roundtrip_per_s"] = n * 1000000 // el
    out["frame_bytes"] = len(frames[0])
    out["serial_bytes"] = len(encode_serial(frames[0]))
    return out
