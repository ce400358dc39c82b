"""Confidence calibration: the node's table (``firmware/detector.py``, ``_CAL``) fitted on tuning seeds, checked on
seeds held out.

What is calibrated: the confidence of a counted pick / put (not of an anomaly, not of a change without a unit
weight) should be the share of such events whose count is exact. Measured over the events of a trace set:

* every matched pick / put outside a sensor fault: exact when its count is the true count;
* every false-positive pick / put: never exact;
* left out: two quick changes reported as one event of their sum (``merged``: right for the ledger, but not
  one change), anomalies, changes during a sensor fault.

The calibration set of a seed is the benchmark's random conditions (``scenarios.random_condition``) for the cases
with a change, plus as many traces again from the hard corner (sigma 2-4 g, unit 5-100 g, spread 3-15 %), where
uncertain counts come from: most events are confidence 100 and the lower deciles need events to be measured.
The table's cells condition on the unit weight against the noise, so the mix of easy and hard conditions changes
little (the measured rate of a cell is about the same in either mix).

``python -m tools.sensing.calibration --fit`` runs the tuning seeds and prints the table to paste into the
firmware; ``--check`` prints the deciles on the held-out seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from firmware.detector import _CAL, Detector, cal_cell
from firmware.ticks import TICKS_MAX
from shared_protocol.messages import KIND_ANOMALY
from tools.sensing.evaluate import Outcome, detections, match
from tools.sensing.runner import RawEvent, clamp_dg
from tools.sensing.scenarios import CASES, NO_EVENT_CASES, Condition, make_trace, random_condition

TUNING_SEEDS = (1, 4, 5, 6)
HELD_OUT_SEEDS = (2, 3)
TOLERANCE = 5.0  # points: |mean reported - measured exact %| in every decile
CHANGE_CASES = tuple(c for c in CASES if c not in NO_EVENT_CASES and c != "fault")
_HARD_SIGMA = (2.0, 4.0)
_HARD_UNIT = (5.0, 20.0, 100.0)
_HARD_SPREAD = (0.03, 0.08, 0.15)

Job = tuple[str, Condition, int]


@dataclass(frozen=True)
class Scored:
    """One counted pick / put: reported and raw confidence, its calibration cell, and whether it was exact."""

    confidence: int
    raw: int
    cell: int
    exact: bool


def jobs(seed: int, broad: int, hard: int) -> list[Job]:
    """The calibration set of ``seed``: ``broad`` traces under the benchmark's random conditions and ``hard``
    from the hard corner, cases with a change only."""
    rng = random.Random(f"calibration:{seed}")
    out: list[Job] = []
    for i in range(broad):
        out.append((CHANGE_CASES[i % len(CHANGE_CASES)], random_condition(rng), rng.randrange(1 << 30)))
    for i in range(hard):
        c = random_condition(rng)
        c = Condition(c.sps, rng.choice(_HARD_SIGMA), rng.choice(_HARD_UNIT), rng.choice(_HARD_SPREAD), c.noise)
        out.append((CHANGE_CASES[i % len(CHANGE_CASES)], c, rng.randrange(1 << 30)))
    return out


def score(o: Outcome, cells: dict[int, tuple[int, int]]) -> list[Scored]:
    """The calibrated events of one outcome; ``cells`` maps a detection's index in ``o.found`` to (raw, cell)."""
    out: list[Scored] = []
    index = {id(d): i for i, d in enumerate(o.found)}
    pairs = o.matched
    for i, (ev, d) in enumerate(pairs):
        if d is None or ev.fault or d.kind == KIND_ANOMALY:
            continue
        nxt = pairs[i + 1] if i + 1 < len(pairs) else None
        if nxt is not None and nxt[1] is None and not nxt[0].fault and d.count == ev.count + nxt[0].count:
            continue  # merged: two changes reported as one
        raw, cell = cells.get(index[id(d)], (d.confidence, -1))
        out.append(Scored(d.confidence, raw, cell, d.count == ev.count))
    for d in o.false_pos:
        if d.kind != KIND_ANOMALY:
            raw, cell = cells.get(index[id(d)], (d.confidence, -1))
            out.append(Scored(d.confidence, raw, cell, False))
    return out


def run_job(job: Job) -> list[Scored]:
    """One trace through the detector on CPython, keeping each event's raw confidence and cell."""
    case, cond, seed = job
    tr = make_trace(case, cond, seed)
    det = Detector(round(cond.unit_g * 10), round(cond.spread * 1000))
    raw: list[RawEvent] = []
    cells: dict[int, tuple[int, int]] = {}
    feed = det.feed
    for i in range(len(tr.t)):
        if feed(round(tr.t[i] * 1000) & TICKS_MAX, clamp_dg(round(tr.g[i] * 10))):
            cells[len(raw)] = (det.ev_raw_confidence, cal_cell(det.ev_raw_confidence, det.unit_dg(), det._sig))
            raw.append(
                (i, det.ev_duration_ms, det.ev_delta_dg, det.ev_kind, det.ev_count, det.ev_confidence, det.ev_level_dg)
            )
    return score(match(tr, detections(tr.t, raw)), cells)


def collect(job_list: list[Job], workers: int = 2) -> list[Scored]:
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        done = pool.map(run_job, job_list, chunksize=64)
    return [s for part in done for s in part]


# -- deciles ------------------------------------------------------------------------------------------------

DECILES = (*((10 * i, 10 * i + 9) for i in range(9)), (90, 99), (100, 100))


@dataclass(frozen=True)
class Decile:
    lo: int
    hi: int
    events: int
    reported: float  # mean reported confidence, per cent
    measured: float  # exact-count rate, per cent
    ci_lo: float  # 95 % Wilson interval of the measured rate
    ci_hi: float

    @property
    def diff(self) -> float:
        return self.measured - self.reported

    def within(self, tolerance: float = TOLERANCE) -> bool:
        """Measured within ``tolerance`` points of the mean reported confidence."""
        return abs(self.diff) <= tolerance

    def consistent(self, tolerance: float = TOLERANCE) -> bool:
        """The measured rate's 95 % interval reaches within ``tolerance`` points (for a small decile)."""
        return self.ci_lo - tolerance <= self.reported <= self.ci_hi + tolerance


def wilson(ok: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 100.0
    p = ok / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return 100 * max(0.0, c - h), 100 * min(1.0, c + h)


def deciles(events: Iterable[Scored]) -> list[Decile]:
    rows = []
    evs = list(events)
    for lo, hi in DECILES:
        sel = [e for e in evs if lo <= e.confidence <= hi]
        n = len(sel)
        ok = sum(e.exact for e in sel)
        rep = sum(e.confidence for e in sel) / n if n else float("nan")
        meas = 100 * ok / n if n else float("nan")
        a, b = wilson(ok, n)
        rows.append(Decile(lo, hi, n, rep, meas, a, b))
    return rows


def table_lines(rows: list[Decile], min_events: int = 100) -> list[str]:
    out = [f"  {'confidence':<12}{'events':>8}{'reported':>10}{'measured':>10}{'95 % interval':>17}{'diff':>8}"]
    for r in rows:
        if not r.events:
            out.append(f"  {r.lo:>3}-{r.hi:<8}{0:>8}{'-':>10}{'-':>10}{'':>17}{'':>8}")
            continue
        if r.within():
            verdict = "ok"
        elif r.events < min_events and r.consistent():
            verdict = "few events: within noise"
        else:
            verdict = "OFF"
        out.append(
            f"  {r.lo:>3}-{r.hi:<8}{r.events:>8}{r.reported:>9.1f}%{r.measured:>9.1f}%"
            f"{f'{r.ci_lo:.1f}-{r.ci_hi:.1f} %':>17}{r.diff:>+8.1f}  {verdict}"
        )
    return out


# -- fitting ------------------------------------------------------------------------------------------------

_PRIOR = 30  # events: a cell's rate is shrunk towards its band's rate in the neighbouring rows with this weight
_PARENT_MIN = 100  # events: fewer above 8 sigma in a band, and a cell there is shrunk towards all rows


def fit(events: list[Scored], bands: int = 9, rows: int = 3) -> list[int]:
    """Per cell: the exact-count rate (per cent, rounded); a small cell is shrunk towards its band pooled over
    the rows above 8 sigma (for those rows, when they have the events) or over all rows."""
    n = [0] * (bands * rows)
    ok = [0] * (bands * rows)
    for e in events:
        if e.cell >= 0:
            n[e.cell] += 1
            ok[e.cell] += e.exact
    table = []
    for cell in range(bands * rows):
        b = cell % bands
        pn = sum(n[r * bands + b] for r in range(1, rows))
        pok = sum(ok[r * bands + b] for r in range(1, rows))
        if cell < bands or pn < _PARENT_MIN:  # the row below 8 sigma, or too few events above it: all rows
            pn = sum(n[r * bands + b] for r in range(rows))
            pok = sum(ok[r * bands + b] for r in range(rows))
        prior = pok / pn if pn else 1.0
        rate = (ok[cell] + _PRIOR * prior) / (n[cell] + _PRIOR)
        table.append(min(100, max(0, round(100 * rate))))
    return table


def _literal(table: list[int]) -> str:
    rows = ("unit below 8 sigma", "8-20 sigma", "20 sigma and above")
    comment = "".join(f"#   {', '.join(f'{v:>3}' for v in table[9 * r : 9 * r + 9])}  {rows[r]}\n" for r in range(3))
    return comment + '_CAL = b"' + "".join(f"\\x{v:02x}" for v in table) + '"'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fit or check the detector's confidence calibration")
    ap.add_argument("--fit", action="store_true", help="fit the table on the tuning seeds and print it")
    ap.add_argument("--check", action="store_true", help="print the deciles on the held-out seeds")
    ap.add_argument("--broad", type=int, default=4800, help="traces per seed under random conditions")
    ap.add_argument("--hard", type=int, default=9600, help="traces per seed from the hard corner")
    ap.add_argument("--save", metavar="FILE", help="--fit: also write the tuning events (JSON) to FILE")
    args = ap.parse_args(argv)
    if args.fit:
        evs = [e for s in TUNING_SEEDS for e in collect(jobs(s, args.broad, args.hard))]
        if args.save:
            with open(args.save, "w") as f:
                json.dump([[e.confidence, e.raw, e.cell, int(e.exact)] for e in evs], f)
        table = fit(evs)
        print(f"tuning seeds {TUNING_SEEDS}: {len(evs)} events")
        for r in range(3):
            print("  ", table[9 * r : 9 * r + 9])
        print(_literal(table))
        refit = [Scored(table[e.cell] if e.cell >= 0 else e.confidence, e.raw, e.cell, e.exact) for e in evs]
        print("\n".join(table_lines(deciles(refit))))
    if args.check:
        evs = [e for s in HELD_OUT_SEEDS for e in collect(jobs(s, args.broad, args.hard))]
        print(f"held-out seeds {HELD_OUT_SEEDS}: {len(evs)} events")
        print("\n".join(table_lines(deciles(evs))))
        for cell in range(len(_CAL)):
            sel = [e for e in evs if e.cell == cell]
            if sel:
                rate = 100 * sum(e.exact for e in sel) / len(sel)
                print(f"  cell {cell:>2}: table {_CAL[cell]:>3}  {len(sel):>6} events  {rate:6.1f} % exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
