"""`smartshelf replay`: feed a recorded weight trace through the node's detector (firmware/detector.py).

Input: one sample per row, ``timestamp_seconds,grams``; an optional header row, ``#`` comments (whole lines
or the rest of a line), blank lines; any, even irregular, sample rate; ``-`` reads standard input. The whole
trace is read and checked first (a bad row stops the replay before any event is printed), then turned into
the integers the node works with: timestamps in ms (rounded) and weights in tenths of a gram (rounded), so
that ``--runtime cpython`` and ``--runtime micropython`` (the same file under the real MicroPython runtime)
see identical numbers and print identical events.

Output: one JSON object per event on stdout: ``t`` (when the new stable level was confirmed, seconds),
``t_start`` (when the change began), ``delta_g``, ``kind`` (pick, put, anomaly), ``confidence`` (0-1),
``count`` (signed units, with --unit-weight) and ``level_g`` (the new stable level).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from shared_protocol.messages import KIND_ANOMALY, KIND_PICK, KIND_PUT
from tools.sensing.runner import RawEvent, run_cpython

EXIT_BAD_INPUT = 2
MAX_GRAMS = 1e6  # a tonne: anything larger is a unit mistake, not a shelf
KINDS = {KIND_PICK: "pick", KIND_PUT: "put", KIND_ANOMALY: "anomaly"}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class TraceError(ValueError):
    """A row that is not a valid sample; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass
class Trace:
    seconds: list[float]  # as written in the file
    t_ms: list[int]
    w_dg: list[int]


def _number(text: str, what: str, line: int) -> float:
    s = text.strip()
    if not _NUMBER.fullmatch(s):
        low = s.lower().lstrip("+-")
        if low in ("nan", "inf", "infinity"):
            raise TraceError(line, f"{what} is not a finite number: {s!r}")
        raise TraceError(line, f"{what} is not a number: {s!r}")
    value = float(s)
    if not math.isfinite(value):
        raise TraceError(line, f"{what} is out of range: {s!r}")
    return value


def parse(lines: Iterable[bytes | str]) -> Trace:
    """Parse and check a whole trace; raises TraceError naming the first bad line."""
    tr = Trace([], [], [])
    header_allowed = True
    prev = -math.inf
    for line_no, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TraceError(line_no, "not UTF-8 text") from None
        else:
            text = raw
        text = text.split("#", 1)[0].strip().lstrip("\ufeff")
        if not text:
            continue
        fields = text.split(",")
        if len(fields) != 2:
            raise TraceError(line_no, f"expected 2 comma-separated fields (timestamp_seconds,grams), got {len(fields)}")
        if header_allowed and not _NUMBER.fullmatch(fields[0].strip()) and re.search("[A-Za-z_]", fields[0]):
            low = fields[0].strip().lower()
            if low not in ("nan", "inf", "-inf", "+inf", "infinity"):
                header_allowed = False
                continue  # a header row
        header_allowed = False
        t = _number(fields[0], "timestamp", line_no)
        g = _number(fields[1], "weight", line_no)
        if t <= prev:
            raise TraceError(line_no, f"timestamp {fields[0].strip()} does not increase (previous {prev:g})")
        if abs(g) >= MAX_GRAMS:
            raise TraceError(line_no, f"weight {fields[1].strip()} g is out of range (|grams| < {MAX_GRAMS:g})")
        prev = t
        tr.seconds.append(t)
        tr.t_ms.append(round(t * 1000))
        tr.w_dg.append(round(g * 10))
    return tr


def events(trace: Trace, raw: list[RawEvent], with_count: bool) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for idx, dur, delta, kind, count, conf, level in raw:
        t_ms = trace.t_ms[idx]
        ev: dict[str, object] = {
            "t": round(t_ms / 1000.0, 3),
            "t_start": round((t_ms - dur) / 1000.0, 3),
            "delta_g": delta / 10.0,
            "kind": KINDS.get(kind, str(kind)),
            "confidence": conf / 100.0,
        }
        if with_count:
            ev["count"] = count
        ev["level_g"] = level / 10.0
        out.append(ev)
    return out


def detect(trace: Trace, unit_dg: int, spread_permille: int, runtime: str) -> list[RawEvent]:
    if runtime == "micropython":
        from tools.sensing.runner import MicroPythonRunner

        with MicroPythonRunner() as mp:
            return mp.run(trace.t_ms, trace.w_dg, unit_dg, spread_permille)
    return run_cpython(trace.t_ms, trace.w_dg, unit_dg, spread_permille)


def run(
    path: str,
    unit_weight_g: float | None = None,
    spread_percent: float = 2.0,
    runtime: str = "cpython",
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """The `smartshelf replay` command; returns the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            trace = parse(sys.stdin.buffer)
        else:
            with open(path, "rb") as f:
                trace = parse(f)
    except TraceError as exc:
        print(f"smartshelf replay: {name}: {exc}", file=err)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"smartshelf replay: cannot read {name}: {exc.strerror or exc}", file=err)
        return EXIT_BAD_INPUT
    unit_dg = round(unit_weight_g * 10) if unit_weight_g else 0
    raw = detect(trace, unit_dg, round(spread_percent * 10), runtime)
    for ev in events(trace, raw, unit_weight_g is not None):
        print(json.dumps(ev), file=out)
    out.flush()
    return 0
