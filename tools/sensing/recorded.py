"""Recorded-trace corpus: shelf recordings with the character of real ones, written as a shelf logger writes them.

Each recording is the CSV file ``smartshelf replay`` reads (``timestamp_seconds,grams``) and its ground truth,
generated reproducibly from a seed (nothing is stored in the repository: ``python -m tools.sensing.recorded
--out DIR`` writes a set to look at or to replay by hand; the sensing benchmark makes them in memory).

What makes them unlike the benchmark's clean traces (``tools/sensing/scenarios.py``, whose physics they reuse:
items with their own weights, hands with wander and tremor, lift-off jerks, impact overshoots, ringing, creep
and drift):

* **one SKU on several plates, summed**: 2-6 plates, each with its own noise level (log-normal: median 1 g, p90
  3.6 g, as real 60 Hz plates show), heavy-tailed (Student-t, 4 degrees of freedom), its own mains hum aliased by
  the 60 Hz sampling to a slow wander, and its own spikes; the recording is their sum;
* **60 Hz**, 1 % interval jitter and 0.3 % missed conversions;
* **a shelf-wide bump lasting about a second with no net change**: a cart or a shoulder against the gondola,
  a push (20-250 g either way) with the shelf swaying at 3-9 Hz (30-600 g), settling back to where it was;
* **a pick made while another hand rests on the shelf** (100 g - 2.5 kg with its wander and tremor, arriving
  before the pick, leaving before or after it ends), a pick during a bump, a hand resting with no pick, plain
  picks, puts and put-backs of 1-3 units;
* **the logger's timestamps**: +-2 ms of timestamping jitter on whole ms, the clock set back now and then so
  that a row is stamped a few ms before the one above it, rows written out of order, a sample stamped with the
  previous one's time, rows written twice (and a few rows re-sent), samples lost (2-20 at a time, and gaps of
  0.6-1.5 s when the shelf is quiet).

Ground truth per counted change: the first hand contact, the end of all motion (the resting hand gone, the bump
settled: the step is counted once the shelf settles), the true weight change and the signed count. Bumps and
resting hands with no net change are disturbances: any event there is a false positive.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shared_protocol.messages import KIND_ANOMALY
from tools import replay
from tools.replay import Cleanup
from tools.sensing.evaluate import MATCH_AFTER_S, Outcome, Stats, detections, match
from tools.sensing.runner import RawEvent
from tools.sensing.scenarios import Condition, Trace, TruthEvent, _Shelf, _smooth

RATE_SPS = 60
EPISODES = (
    "pick",
    "put",
    "put_back",
    "bump",
    "pick_resting_hand",
    "pick_in_bump",
    "resting_hand",
)
_WEIGHTS = (3, 2, 1, 3, 4, 2, 1)
CASE = "recorded"


@dataclass
class LoggerLog:
    """What the simulated logger did to the timestamps (for the reader; replay finds it out by itself)."""

    clock_steps_back: int = 0
    swapped: int = 0
    same_time: int = 0
    duplicates: int = 0
    lost: int = 0
    long_gaps: int = 0


@dataclass
class Recording:
    name: str
    seed: int
    plates: int
    unit_g: float
    spread: float
    sigma_g: float  # the summed channel's noise sigma (the plates' sigmas in quadrature)
    csv: str
    truth: Trace  # events and disturbances; no samples
    episodes: list[str] = field(default_factory=list)
    logger: LoggerLog = field(default_factory=LoggerLog)
    event_episodes: list[str] = field(default_factory=list)  # the episode of each truth event


def _unit(rng: random.Random) -> float:
    return round(math.exp(rng.uniform(math.log(25.0), math.log(1500.0))), 1)


def _spread(rng: random.Random) -> float:
    # real products: median 1.1 %, up to ~15 %
    return rng.choice((0.004, 0.008, 0.011, 0.011, 0.015, 0.02, 0.03, 0.05, 0.08, 0.15))


def _bump(shelf: _Shelf, t0: float) -> float:
    """The whole shelf pushed and swaying for about a second, back to where it was."""
    rng = shelf.rng
    lane = shelf.lane
    dur = rng.uniform(0.8, 1.3)
    push = rng.choice((-1.0, 1.0)) * rng.uniform(20.0, 250.0)
    sway = rng.uniform(30.0, 600.0)
    w = 2 * math.pi * rng.uniform(3.0, 9.0)
    ph = rng.uniform(0.0, 2 * math.pi)
    tau = rng.uniform(0.2, 0.45)

    def fn(t: float) -> float:
        x = (t - t0) / dur
        env = 1.0 - _smooth(x)
        rise = _smooth((t - t0) / 0.05)
        return (
            env
            * rise
            * (push * math.sin(math.pi * min(1.0, x)) + sway * math.exp(-(t - t0) / tau) * math.sin(w * (t - t0) + ph))
        )

    lane.transient(t0, t0 + dur, fn)
    lane.ring(t0 + dur, rng.uniform(0.01, 0.05) * sway)
    return t0 + dur


def _resting_hand(shelf: _Shelf, t0: float, hold: float) -> float:
    rng = shelf.rng
    press = math.exp(rng.uniform(math.log(100.0), math.log(2500.0)))
    r = rng.uniform(0.1, 0.3)
    t_end = t0 + 2 * r + hold
    shelf.lane.hand(t0, t0 + r, t0 + r + hold, t_end, press)
    shelf.lane.ring(t_end, rng.uniform(0.02, 0.1) * press)
    return t_end


def _until(shelf: _Shelf, end: float) -> None:
    """The last change is counted only once this disturbance is over: its end of motion moves there."""
    ev = shelf.events[-1]
    if end > ev.t_end:
        shelf.events[-1] = TruthEvent(ev.t_start, end, ev.delta_g, ev.count)


def _episode(shelf: _Shelf, kind: str, t: float) -> float:
    rng = shelf.rng
    k = 1 if rng.random() < 0.7 else rng.randint(2, 3)
    if kind == "pick" or (kind in ("pick_resting_hand", "pick_in_bump") and len(shelf.items) <= k):
        return shelf.pick(t, min(k, len(shelf.items) - 1)) if len(shelf.items) > 1 else t
    if kind == "put":
        return shelf.put(t, [shelf.new_item() for _ in range(k)], one_by_one=rng.random() < 0.3)
    if kind == "put_back":
        t = shelf.pick(t)
        w = -shelf.events[-1].delta_g
        return shelf.put(t + rng.uniform(1.0, 4.0), [w])
    if kind == "bump":
        t_end = _bump(shelf, t)
        shelf.disturbances.append((t, t_end))
        return t_end
    if kind == "resting_hand":
        t_end = _resting_hand(shelf, t, rng.uniform(1.0, 5.0))
        shelf.disturbances.append((t, t_end))
        return t_end
    if kind == "pick_resting_hand":
        lead = rng.uniform(0.3, 2.0)
        t_pick = t + lead
        t_picked = shelf.pick(t_pick, k)
        # the other hand leaves before the picking hand is gone, or up to 3 s after
        rest_end = _resting_hand(shelf, t, max(0.2, t_picked - t + rng.uniform(-0.4, 3.0)))
        ev = shelf.events[-1]
        shelf.events[-1] = TruthEvent(t, ev.t_end, ev.delta_g, ev.count)  # first contact: the resting hand
        _until(shelf, rest_end)
        return max(t_picked, rest_end)
    if kind == "pick_in_bump":
        t_pick = t + rng.uniform(-0.8, 0.6)
        t_picked = shelf.pick(t_pick, k)
        bump_end = _bump(shelf, t)
        ev = shelf.events[-1]
        shelf.events[-1] = TruthEvent(min(t, ev.t_start), ev.t_end, ev.delta_g, ev.count)
        _until(shelf, bump_end)
        return max(t_picked, bump_end)
    raise ValueError(f"unknown episode {kind!r}")


def _plates(rng: random.Random, n: int) -> list[tuple[float, float, float, float]]:
    """(sigma_g, t scale, hum amplitude, hum phase) per plate."""
    out = []
    for _ in range(n):
        sigma = min(8.0, max(0.3, math.exp(rng.gauss(0.0, 1.0))))
        out.append((sigma, sigma / math.sqrt(2.0), 0.3 * sigma, rng.uniform(0.0, 2 * math.pi)))
    return out


def _write(
    rng: random.Random, ts: list[float], gs: list[float], quiet: list[tuple[float, float]], log: LoggerLog
) -> list[str]:
    """The logger: timestamps as it writes them (whole ms with jitter, clock steps back, repeats, duplicates)."""
    rows: list[tuple[float, float]] = []
    offset = 0.0
    i = 0
    n = len(ts)
    next_step = rng.uniform(10.0, 30.0)
    qi = 0
    just_lost = False
    while i < n:
        t = ts[i]
        while qi < len(quiet) and quiet[qi][1] < t:
            qi += 1
        if not just_lost and rng.random() < 0.002:  # a USB hiccup: 2-15 samples lost (< 0.3 s)
            lost = rng.randint(2, 15)
            log.lost += min(lost, n - i)
            i += lost
            just_lost = True  # the next sample is written: one short gap, never two back to back
            continue
        just_lost = False
        if qi < len(quiet) and quiet[qi][0] <= t and rng.random() < 0.002:  # a longer stall while all is quiet
            t_to = min(quiet[qi][1], t + rng.uniform(0.6, 1.5))
            j = i
            while j < n and ts[j] < t_to:
                j += 1
            log.long_gaps += 1
            log.lost += j - i
            i = j
            qi += 1
            continue
        if t >= next_step:  # the logger's clock is set back: this row is stamped a few ms before the last one
            step = (ts[i] - ts[i - 1] if i else 0.0167) + rng.uniform(0.002, 0.008)
            offset -= step
            next_step = t + rng.uniform(10.0, 30.0)
            log.clock_steps_back += 1
        stamp = round(t + offset + rng.uniform(-0.002, 0.002), 3)
        if rows and rng.random() < 0.003:  # stamped with the previous sample's time
            stamp = rows[-1][0]
            log.same_time += 1
        rows.append((stamp, round(gs[i], 2)))
        i += 1
    lines = [f"{t:.3f},{g:.2f}" for t, g in rows]
    out: list[str] = []
    j = 0
    while j < len(lines):
        if j + 1 < len(lines) and rng.random() < 0.002:  # two rows written in the wrong order
            out += [lines[j + 1], lines[j]]
            log.swapped += 1
            j += 2
            continue
        out.append(lines[j])
        r = rng.random()
        if r < 0.003:  # a row written twice
            out.append(lines[j])
            log.duplicates += 1
        elif r < 0.0035 and j >= 10:  # the last few rows sent again
            k = rng.randint(3, 10)
            out += lines[j - k + 1 : j + 1]
            log.duplicates += k
        j += 1
    return out


def make_recording(seed: int, index: int) -> Recording:
    rng = random.Random(f"recorded:{seed}:{index}")
    unit = _unit(rng)
    spread = _spread(rng)
    n_plates = rng.randint(2, 6)
    plates = _plates(rng, n_plates)
    sigma = math.sqrt(sum(p[0] ** 2 for p in plates))
    # the plates' own noise is added below: the shared model samples the force alone (a negligible sigma)
    cond = Condition(RATE_SPS, 1e-9, unit, spread, "gauss")
    n_ep = rng.randint(6, 10)
    kinds = rng.choices(EPISODES, weights=_WEIGHTS, k=n_ep)
    duration = 4.0 + 9.0 * n_ep + 10.0
    shelf = _Shelf(rng, cond, duration)
    t = rng.uniform(3.0, 5.0)
    quiet: list[tuple[float, float]] = []
    event_episodes: list[str] = []
    for kind in kinds:
        t_end = _episode(shelf, kind, t)
        event_episodes += [kind] * (len(shelf.events) - len(event_episodes))
        gap = rng.uniform(3.5, 8.0)
        quiet.append((t_end + 3.0, t_end + gap - 4.0))  # a stall 3 s after an interaction, 4 s before the next
        t = t_end + gap
    end = t + 1.0
    ts, gs = shelf.lane.sample(end, [])
    # the plates' noise: heavy-tailed, a mains hum the 60 Hz sampling aliases to a slow wander, spikes
    hums = [2 * math.pi * rng.uniform(59.95, 60.05) for _ in plates]
    for i, tt in enumerate(ts):
        v = gs[i]
        for p, (_sig, scale, hum, ph) in enumerate(plates):
            # Student-t, 4 degrees of freedom: a Gaussian over sqrt(chi2(4) / 4), chi2(4) = -2 ln(U1 U2)
            z = rng.gauss(0.0, 1.0) / math.sqrt(-0.5 * math.log((1.0 - rng.random()) * (1.0 - rng.random())) + 1e-12)
            v += scale * z + hum * math.sin(hums[p] * tt + ph)
            if rng.random() < 1e-4:
                v += rng.choice((-1.0, 1.0)) * rng.uniform(8.0, 60.0) * plates[p][0]
        gs[i] = v
    log = LoggerLog()
    lines = _write(rng, ts, gs, quiet, log)
    name = f"rec-{seed}-{index:03d}"
    head = [
        "timestamp_seconds,grams",
        f"# {name}: {n_plates} plates summed, {RATE_SPS} Hz, unit {unit:g} g, spread {100 * spread:g} %, "
        f"noise sigma {sigma:.2f} g (generated by tools/sensing/recorded.py)",
    ]
    truth = Trace(CASE, Condition(RATE_SPS, round(sigma, 2), unit, spread, "recorded"), seed, [], [], shelf.events,
                  shelf.disturbances, [])  # fmt: skip
    csv = "\n".join(head + lines) + "\n"
    return Recording(name, seed, n_plates, unit, spread, sigma, csv, truth, kinds, log, event_episodes)


def corpus(seed: int, count: int) -> list[Recording]:
    return [make_recording(seed, i) for i in range(count)]


# -- through replay, against the truth ----------------------------------------------------------------------


@dataclass
class Replayed:
    """One recording read by ``smartshelf replay``'s reader and run through the detector, matched to its truth."""

    name: str
    outcome: Outcome
    event_episodes: list[str]
    cleanup: Cleanup
    rows: int  # data rows in the file
    samples: int  # samples replayed
    raw: list[RawEvent]


def replay_recording(rec: Recording) -> Replayed:
    """The file through replay's reader (reorder, duplicates, gaps) and the detector on CPython, then matched."""
    tr = replay.parse(rec.csv.splitlines())
    raw = replay.detect(tr, round(rec.unit_g * 10), round(rec.spread * 1000), "cpython")
    found = detections(tr.seconds, raw)
    rows = sum(1 for line in rec.csv.splitlines() if line and line[0].isdigit())
    return Replayed(rec.name, match(rec.truth, found), rec.event_episodes, tr.cleanup, rows, len(tr.t_ms), raw)


DISTURBED = frozenset({"pick_resting_hand", "pick_in_bump"})


@dataclass
class CorpusStats:
    """The corpus's figures: the usual ones (evaluate.Stats) and the ones this corpus is for."""

    stats: Stats = field(default_factory=Stats)
    recordings: int = 0
    rows: int = 0
    samples: int = 0
    reordered: int = 0
    duplicates: int = 0
    same_time: int = 0
    late: int = 0
    gaps: int = 0
    disturbed: int = 0  # picks made during a bump or with another hand resting on the shelf
    disturbed_exact: int = 0  # ... counted once, with the right count
    disturbed_split: int = 0  # ... counted in two or more events (one of them before the shelf settled)
    quiet: int = 0  # bumps and resting hands with no net change
    quiet_events: int = 0  # events during them (false positives)

    def add(self, r: Replayed) -> None:
        o = r.outcome
        self.stats.add(o)
        self.recordings += 1
        self.rows += r.rows
        self.samples += r.samples
        cu = r.cleanup
        self.reordered += cu.reordered
        self.duplicates += cu.duplicates
        self.same_time += cu.same_time
        self.late += cu.late
        self.gaps += cu.gaps
        for ev, kind in zip(o.trace.events, r.event_episodes, strict=True):
            if kind not in DISTURBED:
                continue
            self.disturbed += 1
            hit = next((d for e, d in o.matched if e is ev), None)
            if hit is not None and hit.kind != KIND_ANOMALY and hit.count == ev.count:
                self.disturbed_exact += 1
            inside = [d for d in o.found if ev.t_start <= d.t <= ev.t_end + MATCH_AFTER_S]
            if len(inside) > 1:
                self.disturbed_split += 1
        for a, b in o.trace.disturbances:
            self.quiet += 1
            self.quiet_events += sum(1 for d in o.false_pos if a <= d.t <= b + MATCH_AFTER_S)


def _truth_json(rec: Recording) -> dict[str, object]:
    return {
        "name": rec.name,
        "plates": rec.plates,
        "rate_sps": RATE_SPS,
        "unit_g": rec.unit_g,
        "spread_percent": round(100 * rec.spread, 2),
        "sigma_g": round(rec.sigma_g, 2),
        "episodes": rec.episodes,
        "events": [
            {
                "t_start": round(e.t_start, 3),
                "t_end": round(e.t_end, 3),
                "delta_g": round(e.delta_g, 2),
                "count": e.count,
            }
            for e in rec.truth.events
        ],
        "disturbances": [[round(a, 3), round(b, 3)] for a, b in rec.truth.disturbances],
        "logger": rec.logger.__dict__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write recorded-trace corpus files (CSV for smartshelf replay + truth)")
    ap.add_argument("--out", required=True, help="directory to write to")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=10)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for rec in corpus(args.seed, args.count):
        (out / f"{rec.name}.csv").write_text(rec.csv)
        (out / f"{rec.name}.truth.json").write_text(json.dumps(_truth_json(rec), indent=1) + "\n")
        print(
            f"{rec.name}.csv: smartshelf replay {out / (rec.name + '.csv')} --unit-weight {rec.unit_g:g} "
            f"--spread {100 * rec.spread:g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
