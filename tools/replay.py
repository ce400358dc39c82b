"""`smartshelf replay`: feed a recorded weight trace through the node's detector (firmware/detector.py).

Input: one sample per row, ``timestamp_seconds,grams``; an optional header row, ``#`` comments (whole lines
or the rest of a line), blank lines; any, even irregular, sample rate; ``-`` reads standard input. The whole
trace is read and checked first (a bad row stops the replay before any event is printed), then turned into
the integers the node works with: timestamps in ms (rounded) and weights in tenths of a gram (rounded), so
that ``--runtime cpython`` and ``--runtime micropython`` (the same file under the real MicroPython runtime)
see identical numbers and print identical events.

Real recordings: loggers of real shelves write timestamps that step back by a few milliseconds, repeat and
gap. Replay takes such a trace as it is (``clean``) and says on stderr what it did, one line per kind:

* a sample whose timestamp is at most ``REORDER_S`` (100 ms) older than the newest one so far is put in
  its place (a windowed reorder: the samples are replayed in timestamp order);
* a row identical to one of the last 1,024 (the same timestamp and weight as written) is dropped;
* two samples with the same timestamp and different weights are both kept, in file order;
* a sample older than the window allows is dropped (it cannot be put back in time any more);
* a gap (an interval over 2.5 times the typical one) is samples the logger missed: nothing is made up in
  their place (the detector takes a gap longer than max(500 ms, 8 intervals) as a sensor fault);
* a last row cut short (the logger lost power mid-row) is dropped: a last row with no end of line after it when it
  is not two numbers, or when the rows before it have theirs (a number cut short still reads as one: ``10.5,50``
  of ``10.5,5000.43``). A file whose only row has no end of line (and lines handed to ``parse`` without theirs) is
  taken as written: nothing tells that row apart from a file saved without a final newline.

What is not a trace at all stops the replay with exit status 2 and a message naming the line and the reason:
a row that is not two numbers, no samples, a timestamp more than ``CLOCK_JUMP_S`` (1 s) before the newest
one (the timestamps are not one clock: two recordings joined, or a column that is not time), or more samples
older than the window than ``MAX_LATE_SHARE`` (1 %) of them.

Output: one JSON object per event on stdout: ``t`` (when the new stable level was confirmed, seconds),
``t_start`` (when the change began), ``delta_g``, ``kind`` (pick, put, anomaly), ``confidence`` (0-1),
``count`` (signed units, with --unit-weight) and ``level_g`` (the new stable level).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import IO

from shared_protocol.messages import KIND_ANOMALY, KIND_PICK, KIND_PUT
from tools.sensing.runner import RawEvent, run_cpython

EXIT_BAD_INPUT = 2
MAX_GRAMS = 1e6  # a tonne: anything larger is a unit mistake, not a shelf
KINDS = {KIND_PICK: "pick", KIND_PUT: "put", KIND_ANOMALY: "anomaly"}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
REORDER_S = 0.1  # a sample at most this much older than the newest one so far is put back in its place
CLOCK_JUMP_S = 1.0  # a step back beyond this: the timestamps are not one clock
MAX_LATE_SHARE = 0.01  # more samples than this share (and LATE_MIN) beyond the window: not a time-ordered trace
LATE_MIN = 10
GAP_FACTOR = 2.5  # an interval beyond this many typical intervals is a gap
DEDUPE_ROWS = 1024  # a row identical to one of the last this many rows kept is a duplicate (a re-sent buffer)
_NO_SAMPLES = "no samples (expected rows timestamp_seconds,grams)"


class TraceError(ValueError):
    """Input that is not a trace; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass
class Cleanup:
    """What replay did to make a recorded trace one time-ordered sample sequence (``clean``)."""

    reordered: int = 0  # samples put back in timestamp order (at most REORDER_S late)
    reordered_max_s: float = 0.0
    duplicates: int = 0  # rows identical to an earlier row, dropped
    same_time: int = 0  # samples with the timestamp of the one before and another weight, kept
    late: int = 0  # samples more than REORDER_S older than the newest, dropped
    late_max_s: float = 0.0
    gaps: int = 0  # intervals over GAP_FACTOR typical intervals
    gap_longest_s: float = 0.0
    missing: int = 0  # samples the gaps would have held at the typical interval
    interval_s: float = 0.0  # the typical (median) interval
    cut_short_line: int = 0  # the last row, cut short and dropped (0: none)

    def report(self) -> list[str]:
        """One line per kind of thing done, for stderr (nothing for a clean trace)."""
        out = []
        if self.reordered:
            out.append(
                f"reordered {self.reordered} sample(s) written up to {1000 * self.reordered_max_s:.0f} ms after a "
                f"later timestamp (window {1000 * REORDER_S:.0f} ms)"
            )
        if self.duplicates:
            out.append(f"dropped {self.duplicates} exact duplicate row(s)")
        if self.same_time:
            out.append(f"kept {self.same_time} sample(s) with the same timestamp as the one before and another weight")
        if self.late:
            out.append(
                f"dropped {self.late} sample(s) older than the reorder window allows (up to "
                f"{self.late_max_s:.3f} s before the newest)"
            )
        if self.cut_short_line:
            out.append(
                f"dropped line {self.cut_short_line}: the last row was cut short (no end of line; the logger "
                "stopped mid-row)"
            )
        if self.gaps:
            out.append(
                f"{self.gaps} gap(s), longest {self.gap_longest_s:.3f} s (typical interval "
                f"{1000 * self.interval_s:.1f} ms): about {self.missing} sample(s) missing, none made up"
            )
        return out


@dataclass
class Trace:
    seconds: list[float]  # as written in the file, in replay order
    t_ms: list[int]
    w_dg: list[int]
    cleanup: Cleanup = field(default_factory=Cleanup)


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


def rows(lines: Iterable[bytes | str], cut_short: list[int] | None = None) -> Iterator[tuple[int, float, float]]:
    """The samples of a trace as written, ``(line, seconds, grams)``; raises TraceError at a row that is not one.
    With ``cut_short`` given, the last row is dropped and its number appended to ``cut_short`` when it has no end of
    line (a logger that stopped mid-row) and either is not a row, or is a sample after rows that have their end of
    line (its numbers may be cut short: ``10.5,50`` of ``10.5,5000.43``). When no row before it has one (a file of
    one row, or lines given without their ends: ``str.splitlines``), a last row that reads as a sample is kept:
    nothing tells it apart from a file written without a final newline."""
    header_allowed = True
    any_ended = False
    for line_no, raw, last in _with_last(lines):
        ended = raw.endswith(b"\n") if isinstance(raw, bytes) else raw.endswith("\n")
        cut = last and cut_short is not None and not ended
        try:
            written, sample = _row(line_no, raw, header_allowed)
        except TraceError:
            if cut and cut_short is not None:
                cut_short.append(line_no)
                return
            raise
        if sample is not None and cut and any_ended and cut_short is not None:
            cut_short.append(line_no)
            return
        any_ended = any_ended or ended
        header_allowed = header_allowed and not written
        if sample is not None:
            yield line_no, sample[0], sample[1]


def _with_last(lines: Iterable[bytes | str]) -> Iterator[tuple[int, bytes | str, bool]]:
    """``(line number, line, whether it is the last)`` for each line."""
    it = iter(lines)
    line = next(it, None)
    line_no = 1
    while line is not None:
        following = next(it, None)
        yield line_no, line, following is None
        line, line_no = following, line_no + 1


def _row(line_no: int, raw: bytes | str, header_allowed: bool) -> tuple[bool, tuple[float, float] | None]:
    """Whether the row holds anything (not blank, not only a comment), and its sample (None: blank, comment, or a
    header where one is allowed)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TraceError(line_no, "not UTF-8 text") from None
    text = raw.split("#", 1)[0].strip().lstrip("\ufeff")
    if not text:
        return False, None
    fields = text.split(",")
    if len(fields) != 2:
        raise TraceError(line_no, f"expected 2 comma-separated fields (timestamp_seconds,grams), got {len(fields)}")
    first = fields[0].strip()
    words = not _NUMBER.fullmatch(first) and re.search("[A-Za-z_]", first) is not None
    if header_allowed and words and first.lower() not in ("nan", "inf", "-inf", "+inf", "infinity"):
        return True, None  # a header row
    t = _number(fields[0], "timestamp", line_no)
    g = _number(fields[1], "weight", line_no)
    if abs(g) >= MAX_GRAMS:
        raise TraceError(line_no, f"weight {fields[1].strip()} g is out of range (|grams| < {MAX_GRAMS:g})")
    return True, (t, g)


def clean(samples: Iterable[tuple[int, float, float]]) -> tuple[list[float], list[float], Cleanup]:
    """Samples as a logger wrote them -> (seconds, grams) in time order, and what was done (module docstring)."""
    cu = Cleanup()
    kept: list[tuple[float, float]] = []
    seen: set[tuple[float, float]] = set()
    recent: deque[tuple[float, float]] = deque()  # the keys in ``seen``: the last DEDUPE_ROWS rows kept
    newest = -math.inf
    first_late = 0
    n = 0
    last_line = 0
    for line, t, g in samples:
        n += 1
        last_line = line
        key = (t, g)
        if key in seen:
            cu.duplicates += 1
            continue
        if t < newest:
            back = newest - t
            if back > CLOCK_JUMP_S:
                raise TraceError(
                    line,
                    f"timestamp {t:g} is {back:g} s before an earlier row's {newest:g}: not one clock (replay puts "
                    f"back samples up to {REORDER_S:g} s late and drops them up to {CLOCK_JUMP_S:g} s late)",
                )
            if back > REORDER_S:
                cu.late += 1
                cu.late_max_s = max(cu.late_max_s, back)
                first_late = first_late or line
                continue
            cu.reordered += 1
            cu.reordered_max_s = max(cu.reordered_max_s, back)
        else:
            newest = t
        seen.add(key)
        recent.append(key)
        if len(recent) > DEDUPE_ROWS:
            seen.discard(recent.popleft())
        kept.append(key)
    if not kept:
        raise TraceError(max(last_line, 1), _NO_SAMPLES)
    if cu.late > max(LATE_MIN, MAX_LATE_SHARE * n):
        raise TraceError(
            first_late,
            f"{cu.late} of {n} samples (the first on this line) are more than {REORDER_S:g} s older than a sample "
            f"written before them: not a time-ordered trace",
        )
    kept.sort(key=lambda s: s[0])  # stable: samples with the same timestamp stay in file order
    seconds = [s[0] for s in kept]
    grams = [s[1] for s in kept]
    steps = [b - a for a, b in pairwise(seconds)]
    cu.same_time = sum(1 for d in steps if d == 0.0)
    positive = sorted(d for d in steps if d > 0.0)
    if positive:
        typical = positive[len(positive) // 2]
        cu.interval_s = typical
        for d in steps:
            if d > GAP_FACTOR * typical:
                cu.gaps += 1
                cu.gap_longest_s = max(cu.gap_longest_s, d)
                cu.missing += max(0, round(d / typical) - 1)
    return seconds, grams, cu


def parse(lines: Iterable[bytes | str]) -> Trace:
    """Read, check and clean a whole trace; raises TraceError naming the line of input that is not a trace."""
    read = 0

    def counted() -> Iterator[bytes | str]:
        nonlocal read
        for raw in lines:
            read += 1
            yield raw

    cut_short: list[int] = []
    try:
        seconds, grams, cu = clean(rows(counted(), cut_short))
    except TraceError as exc:
        if exc.message == _NO_SAMPLES:
            raise TraceError(max(read, 1), _NO_SAMPLES) from None  # name the end of the input
        raise
    cu.cut_short_line = cut_short[0] if cut_short else 0
    return Trace(seconds, [round(t * 1000) for t in seconds], [round(g * 10) for g in grams], cu)


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
    for line in trace.cleanup.report():
        print(f"smartshelf replay: {name}: {line}", file=err)
    unit_dg = round(unit_weight_g * 10) if unit_weight_g else 0
    raw = detect(trace, unit_dg, round(spread_percent * 10), runtime)
    for ev in events(trace, raw, unit_weight_g is not None):
        print(json.dumps(ev), file=out)
    out.flush()
    return 0
