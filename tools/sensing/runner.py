"""Run firmware/detector.py over a whole sample sequence on CPython or on the real MicroPython runtime.

Both runners take the same integers (timestamps in ms, already wrapped to the detector's 2**30 period, and
weights in dg) and return the same raw events, so their outputs can be compared for equality.
A raw event is ``(sample_index, duration_ms, delta_dg, kind, count, confidence, level_dg)``: the sample at
``sample_index`` confirmed it, and the change began ``duration_ms`` before that sample.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from types import TracebackType

from firmware.detector import Detector
from firmware.ticks import TICKS_MAX
from tools.mpy_runtime import MicroPythonRuntime

RawEvent = tuple[int, int, int, int, int, int, int]

_CHUNK = 50000  # samples per MicroPython call (400 kB of int32 pairs)

_MPY_SETUP = """
global _det, _base
from firmware.detector import Detector
_det = Detector({unit}, {spread})
_base = 0
result = 0
"""

# Runs in the same interpreter for every chunk: reads the int32 pairs written to /tmp/chunk.bin.
_MPY_CHUNK = """
global _base
from array import array
with open('/tmp/chunk.bin', 'rb') as _f:
    _buf = array('i', bytearray(_f.read()))
_f = None
_out = []
_feed = _det.feed
_n = len(_buf) // 2
_i = 0
while _i < _n:
    if _feed(_buf[2 * _i], _buf[2 * _i + 1]):
        _d = _det
        _out.append([_base + _i, _d.ev_duration_ms, _d.ev_delta_dg, _d.ev_kind, _d.ev_count, _d.ev_confidence,
                     _d.ev_level_dg])
    _i += 1
_base += _n
_buf = None
result = _out
"""


def clamp_dg(w: int) -> int:
    """Weights outside int32 are clamped (the detector itself clamps at +-104 kg)."""
    return -0x80000000 if w < -0x80000000 else (0x7FFFFFFF if w > 0x7FFFFFFF else w)


def _check(ts_ms: Sequence[int], ws_dg: Sequence[int]) -> None:
    if len(ts_ms) != len(ws_dg):
        raise ValueError("timestamps and weights differ in length")


def run_cpython(
    ts_ms: Sequence[int], ws_dg: Sequence[int], unit_dg: int = 0, spread_permille: int = 0
) -> list[RawEvent]:
    """Feed every sample to a fresh Detector on CPython."""
    _check(ts_ms, ws_dg)
    det = Detector(unit_dg, spread_permille)
    feed = det.feed
    out: list[RawEvent] = []
    for i in range(len(ts_ms)):
        if feed(ts_ms[i] & TICKS_MAX, clamp_dg(ws_dg[i])):
            out.append(
                (i, det.ev_duration_ms, det.ev_delta_dg, det.ev_kind, det.ev_count, det.ev_confidence, det.ev_level_dg)
            )
    return out


class MicroPythonRunner:
    """The same Detector under the real MicroPython (WebAssembly) runtime; one Node.js process for many runs."""

    def __init__(self) -> None:
        self._rt = MicroPythonRuntime()

    def __enter__(self) -> MicroPythonRunner:
        self._rt.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._rt.close()

    def run(
        self, ts_ms: Sequence[int], ws_dg: Sequence[int], unit_dg: int = 0, spread_permille: int = 0
    ) -> list[RawEvent]:
        """Feed every sample to a fresh Detector under MicroPython, in chunks that share one interpreter."""
        _check(ts_ms, ws_dg)
        self._rt.exec(_MPY_SETUP.format(unit=int(unit_dg), spread=int(spread_permille)), fresh=True)
        out: list[RawEvent] = []
        for start in range(0, len(ts_ms), _CHUNK):
            buf = array("i")
            for i in range(start, min(start + _CHUNK, len(ts_ms))):
                buf.append(ts_ms[i] & TICKS_MAX)
                buf.append(clamp_dg(ws_dg[i]))
            rows = self._rt.exec(_MPY_CHUNK, files={"/tmp/chunk.bin": buf.tobytes()}, fresh=False, timeout_s=300)
            out.extend(_raw(row) for row in rows)
        return out


def _raw(row: object) -> RawEvent:
    if not isinstance(row, list) or len(row) != 7 or not all(isinstance(v, int) for v in row):
        raise ValueError(f"unexpected event row from MicroPython: {json.dumps(row)}")
    return (row[0], row[1], row[2], row[3], row[4], row[5], row[6])
