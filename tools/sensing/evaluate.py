"""Match detected events to a trace's ground truth and aggregate accuracy figures.

Matching: a detection matches a true change when it is confirmed no earlier than the change's first hand
contact (``t_start``) and no later than ``MATCH_AFTER_S`` after the motion ended (after the end of the
sensor gap too, for a change made during a fault), and its weight change has the same sign. Each
detection matches at most one change and each change at most one detection (earliest first). Unmatched
detections are false positives; unmatched changes are misses.

* exact count: a matched pick / put with the true signed count (an anomaly is never an exact count);
* confident wrong count: a matched pick / put with a wrong count and confidence >= LOW_CONFIDENCE, or a
  false positive pick / put with confidence >= LOW_CONFIDENCE: the outcome that must not happen;
* latency: confirmation time minus the end of motion (hand gone), for matched events;
* merged: a detection whose count is the sum of its change and the next one, which went unmatched (two
  changes too close to be told apart): the second change is a miss, the detection is not a wrong count;
* a change during a sensor fault is handled when it is reported as an anomaly or with a confidence
  below LOW_CONFIDENCE (or with the exact count); it is scored apart from the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from firmware.detector import LOW_CONFIDENCE
from shared_protocol.messages import KIND_ANOMALY
from tools.sensing.runner import RawEvent
from tools.sensing.scenarios import Trace, TruthEvent

MATCH_AFTER_S = 4.0


@dataclass(frozen=True)
class Detected:
    t: float
    t_start: float
    delta_g: float
    kind: int
    count: int
    confidence: int


def detections(trace_t: list[float], raw: Iterable[RawEvent]) -> list[Detected]:
    out = []
    for idx, dur, delta, kind, count, conf, _lvl in raw:
        t = trace_t[idx]
        out.append(Detected(t, round(t - dur / 1000.0, 3), delta / 10.0, kind, count, conf))
    return out


@dataclass
class Outcome:
    """One trace's matched result."""

    trace: Trace
    found: list[Detected]
    matched: list[tuple[TruthEvent, Detected | None]]
    false_pos: list[Detected]


def match(trace: Trace, found: list[Detected]) -> Outcome:
    used = [False] * len(found)
    pairs: list[tuple[TruthEvent, Detected | None]] = []
    for ev in sorted(trace.events, key=lambda e: e.t_start):
        end = ev.t_end
        if ev.fault:
            end = max([end] + [b for a, b in trace.faults if a <= ev.t_end + MATCH_AFTER_S])
        hit: Detected | None = None
        for i, d in enumerate(found):
            if used[i] or d.t < ev.t_start or d.t > end + MATCH_AFTER_S:
                continue
            if (d.delta_g < 0) != (ev.delta_g < 0):
                continue
            used[i] = True
            hit = d
            break
        pairs.append((ev, hit))
    fps = [d for i, d in enumerate(found) if not used[i]]
    return Outcome(trace, found, pairs, fps)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return s[k]


@dataclass
class Stats:
    """Aggregated figures for a group of outcomes."""

    traces: int = 0
    truths: int = 0
    detected: int = 0
    tp: int = 0
    fp: int = 0
    exact: int = 0
    confident_wrong: int = 0
    low_conf: int = 0
    anomalies: int = 0
    fault_truths: int = 0
    fault_handled: int = 0
    fault_confident_wrong: int = 0
    merged: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.traces += 1
        self.detected += len(o.found)
        self.fp += len(o.false_pos)
        for fp in o.false_pos:
            if fp.kind != KIND_ANOMALY and fp.confidence >= LOW_CONFIDENCE:
                self.confident_wrong += 1
        pairs = o.matched
        for i, (ev, d) in enumerate(pairs):
            if ev.fault:
                self.fault_truths += 1
                if d is None:
                    continue
                ok_count = d.kind != KIND_ANOMALY and d.count == ev.count
                if d.kind == KIND_ANOMALY or d.confidence < LOW_CONFIDENCE or ok_count:
                    self.fault_handled += 1
                else:
                    self.fault_confident_wrong += 1
                continue
            self.truths += 1
            if d is None:
                continue
            self.tp += 1
            self.latencies.append(d.t - ev.t_end)
            nxt = pairs[i + 1] if i + 1 < len(pairs) else None
            if nxt is not None and nxt[1] is None and not nxt[0].fault and d.count == ev.count + nxt[0].count:
                self.merged += 1
                continue
            if d.kind == KIND_ANOMALY:
                self.anomalies += 1
            elif d.count == ev.count:
                self.exact += 1
            elif d.confidence >= LOW_CONFIDENCE:
                self.confident_wrong += 1
            if d.confidence < LOW_CONFIDENCE:
                self.low_conf += 1

    @property
    def precision(self) -> float:
        n = self.tp + self.fp
        return self.tp / n if n else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.truths if self.truths else 1.0

    @property
    def exact_rate(self) -> float:
        n = self.tp - self.merged
        return self.exact / n if n else 1.0

    def latency(self, q: float) -> float:
        return _pct(self.latencies, q)
