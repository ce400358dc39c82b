"""Labelled load-cell traces at the gram level, deterministic from a seed.

Physical model of one lane (grams, seconds):

* **items**: each physical item has its own weight, drawn once from N(unit, (spread * unit)**2); picks
  remove particular items, puts add new ones (or the same one back);
* **hand**: contact force while an item is grasped or placed: a ramp in, a hold with slow wander (8-25 %
  of the press) and physiological tremor (6-12 Hz, 2-6 % + 0.5-2 g), a ramp out; picks have a lift-off
  jerk (friction), puts an impact overshoot (10-80 % of the item);
* **plate ringing** after every release or knock (10-25 Hz, 20-60 ms decay);
* **creep**: every load change relaxes by a further 0.02-0.08 % of itself with a 5-30 min time constant
  (~0.05 % of full scale per 30 min for a full-scale load);
* **drift**: a linear part of up to +-8 g/day, a daily temperature swing of up to 3 g and a slow random
  walk (about 0.8 g per hour); the ``drift`` case uses a much faster temperature transient (5-60 g/h);
* **sampling**: each sample is the mean force over the HX711 conversion (1/rate), plus noise: Gaussian
  (``gauss``) or the heavier-tailed real-plate model (``real``: Student-t with 4 degrees of freedom, 60 Hz
  hum aliased at 80 SPS), plus rare spikes of 8-60 sigma (1e-4 per sample, 30 % of them two samples
  long); sample times jitter by 1 %, land on whole milliseconds and 0.3 % of samples are missed; a
  sensor fault is a gap of 1-4 s with no samples.

Ground truth for each counted change: ``t_start`` (first hand contact), ``t_end`` (the hand has left: end
of motion, before the plate has stopped ringing), the true weight change and the signed count.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

SPS_CHOICES = (10, 80)
SIGMA_CHOICES = (0.5, 1.0, 2.0, 4.0)
UNIT_CHOICES = (5.0, 20.0, 100.0, 500.0, 2000.0)
SPREAD_CHOICES = (0.0, 0.01, 0.03, 0.08, 0.15)
NOISE_CHOICES = ("gauss", "real")

CASES = (
    "pick",
    "put",
    "multi_pick",
    "multi_put",
    "put_back",
    "quick_picks",
    "heavy_hand",
    "bump",
    "lean",
    "drift",
    "fault",
    "fault_idle",
)
NO_EVENT_CASES = frozenset({"bump", "lean", "drift", "fault_idle"})
DAY_S = 86400.0


@dataclass(frozen=True)
class Condition:
    sps: int
    sigma_g: float
    unit_g: float
    spread: float  # one sigma, as a fraction of the unit weight
    noise: str  # "gauss" or "real"


@dataclass(frozen=True)
class TruthEvent:
    t_start: float
    t_end: float
    delta_g: float
    count: int
    fault: bool = False  # a sensor fault happened during the motion


@dataclass
class Trace:
    case: str
    cond: Condition
    seed: int
    t: list[float]
    g: list[float]
    events: list[TruthEvent]
    disturbances: list[tuple[float, float]] = field(default_factory=list)  # interactions with no net change
    faults: list[tuple[float, float]] = field(default_factory=list)


def _smooth(x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return x * x * (3.0 - 2.0 * x)


Fn = Callable[[float], float]


class _Lane:
    """The force on one lane's plate as a sum of ramps (items), transients (hands, ringing), creep and drift."""

    def __init__(self, rng: random.Random, cond: Condition, duration: float, drift_g_per_h: float = 0.0) -> None:
        self.rng = rng
        self.cond = cond
        self.steps: list[tuple[float, float, float]] = []  # (t_a, t_b, delta): smoothstep ramps
        self.transients: list[tuple[float, float, Fn]] = []
        self.loads: list[tuple[float, float]] = []  # (t, delta) for creep
        self.creep_coef = rng.uniform(0.0002, 0.0008)
        self.creep_tau = rng.uniform(300.0, 1800.0)
        self.base = 0.0
        self.next_t = rng.uniform(0.0, 1.0 / cond.sps)
        # drift: linear + daily swing + random walk knots every 60 s (+ an optional fast temperature transient)
        self.drift_rate = rng.uniform(-8.0, 8.0) / DAY_S + rng.choice((-1.0, 1.0)) * drift_g_per_h / 3600.0
        self.drift_amp = rng.uniform(0.0, 3.0)
        self.drift_phase = rng.uniform(0.0, 2 * math.pi)
        n_knots = int(duration / 60.0) + 3
        walk = [0.0]
        for _ in range(n_knots):
            walk.append(walk[-1] + rng.gauss(0.0, 0.1))
        self.walk = walk

    # -- building ------------------------------------------------------------------------------
    def step(self, ta: float, tb: float, delta: float) -> None:
        self.steps.append((ta, tb, delta))
        self.loads.append((0.5 * (ta + tb), delta))

    def transient(self, ta: float, tb: float, fn: Fn) -> None:
        self.transients.append((ta, tb, fn))

    def ring(self, t0: float, amplitude: float) -> None:
        rng = self.rng
        tau = rng.uniform(0.02, 0.06)
        f = rng.uniform(10.0, 25.0)
        a = amplitude * rng.choice((-1.0, 1.0))
        w = 2 * math.pi * f

        def fn(t: float) -> float:
            dt = t - t0
            return a * math.exp(-dt / tau) * math.sin(w * dt)

        self.transient(t0, t0 + 7 * tau, fn)

    def bump_half_sine(self, t0: float, dur: float, amplitude: float) -> None:
        def fn(t: float) -> float:
            return amplitude * math.sin(math.pi * (t - t0) / dur)

        self.transient(t0, t0 + dur, fn)

    def hand(self, t0: float, t_full: float, t_rel0: float, t_rel1: float, press: float) -> None:
        """Contact force: ramp in over [t0, t_full], hold with wander and tremor, ramp out over [t_rel0, t_rel1]."""
        rng = self.rng
        fw = 2 * math.pi * rng.uniform(0.5, 2.5)
        aw = rng.uniform(0.08, 0.25) * press
        pw = rng.uniform(0.0, 2 * math.pi)
        ft = 2 * math.pi * rng.uniform(6.0, 12.0)
        at = rng.uniform(0.02, 0.06) * press + rng.uniform(0.5, 2.0)
        pt = rng.uniform(0.0, 2 * math.pi)
        rise = max(t_full - t0, 1e-3)
        fall = max(t_rel1 - t_rel0, 1e-3)

        def fn(t: float) -> float:
            if t < t_full:
                env = _smooth((t - t0) / rise)
            elif t > t_rel0:
                env = 1.0 - _smooth((t - t_rel0) / fall)
            else:
                env = 1.0
            dt = t - t0
            return env * (press + aw * math.sin(fw * dt + pw) + at * math.sin(ft * dt + pt))

        self.transient(t0, t_rel1, fn)

    # -- evaluation ----------------------------------------------------------------------------
    def drift(self, t: float) -> float:
        k = t / 60.0
        i = int(k)
        if i + 1 >= len(self.walk):
            i = len(self.walk) - 2
        fr = k - i
        w = self.walk[i] * (1.0 - fr) + self.walk[i + 1] * fr
        return self.drift_rate * t + self.drift_amp * math.sin(2 * math.pi * t / DAY_S + self.drift_phase) + w

    def creep(self, t: float) -> float:
        c = 0.0
        for tc, d in self.loads:
            if t > tc:
                c += d * self.creep_coef * (1.0 - math.exp(-(t - tc) / self.creep_tau))
        return c

    def sample(
        self, t_end: float, gaps: list[tuple[float, float]], t_begin: float | None = None
    ) -> tuple[list[float], list[float]]:
        """Sample times (s, on whole ms) and readings (g) up to t_end, with no samples in ``gaps``; a later
        call continues where the previous one stopped (``t_begin`` None) or starts at ``t_begin``."""
        rng = self.rng
        cond = self.cond
        dt_nom = 1.0 / cond.sps
        conv = dt_nom
        nsub = 4 if cond.sps >= 40 else 8
        sigma = cond.sigma_g
        real = cond.noise == "real"
        hum = 0.5 * sigma if (real and cond.sps >= 40) else 0.0
        sig_t = sigma * math.sqrt(1.0 - hum * hum / (2 * sigma * sigma)) / math.sqrt(2.0)
        hum_w = 2 * math.pi * rng.uniform(59.9, 60.1)
        hum_p = rng.uniform(0.0, 2 * math.pi)
        # active intervals where the fast force components must be integrated over the conversion
        spans = sorted([(a, b) for a, b, _ in self.steps] + [(a, b) for a, b, _ in self.transients])
        merged: list[list[float]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + conv:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        ends = sorted((b, d) for _, b, d in self.steps)
        end_times = [b for b, _ in ends]
        cum: list[float] = [self.base]
        for _, d in ends:
            cum.append(cum[-1] + d)
        steps = self.steps
        transients = self.transients
        ts: list[float] = []
        gs: list[float] = []
        t = self.next_t if t_begin is None else t_begin
        mi = 0
        gi = 0
        spike_left = 0
        spike_val = 0.0
        while t < t_end:
            while gi < len(gaps) and gaps[gi][1] <= t:
                gi += 1
            in_gap = gi < len(gaps) and gaps[gi][0] <= t < gaps[gi][1]
            missed = rng.random() < 0.003
            if not in_gap and not missed:
                while mi < len(merged) and merged[mi][1] < t - conv:
                    mi += 1
                if mi < len(merged) and merged[mi][0] <= t:
                    acc = 0.0
                    for j in range(nsub):
                        s = t - conv * (j + 0.5) / nsub
                        f = self.base
                        for a, b, d in steps:
                            if s >= b:
                                f += d
                            elif s > a:
                                f += d * _smooth((s - a) / (b - a))
                        for a, b, fn in transients:
                            if a < s < b:
                                f += fn(s)
                        acc += f
                    force = acc / nsub
                else:
                    force = cum[bisect.bisect_right(end_times, t)]
                force += self.creep(t) + self.drift(t)
                if real:
                    z = rng.gauss(0.0, 1.0) / math.sqrt(rng.gammavariate(2.0, 2.0) / 4.0)
                    noise = sig_t * z + hum * math.sin(hum_w * t + hum_p)
                else:
                    noise = rng.gauss(0.0, sigma)
                if spike_left:
                    noise += spike_val
                    spike_left -= 1
                elif rng.random() < 1e-4:
                    spike_val = rng.choice((-1.0, 1.0)) * rng.uniform(8.0, 60.0) * sigma
                    noise += spike_val
                    spike_left = 1 if rng.random() < 0.3 else 0
                ts.append(round(t, 3))
                gs.append(force + noise)
            t += dt_nom * (1.0 + rng.uniform(-0.01, 0.01))
        self.next_t = t
        return ts, gs


class _Shelf:
    """Items on the lane and the interactions that change them."""

    def __init__(self, rng: random.Random, cond: Condition, duration: float, drift_g_per_h: float = 0.0) -> None:
        self.rng = rng
        self.cond = cond
        self.lane = _Lane(rng, cond, duration, drift_g_per_h)
        n0 = rng.randint(8, 30) if cond.unit_g < 1000 else rng.randint(6, 10)
        self.items = [self.new_item() for _ in range(n0)]
        self.lane.base = sum(self.items)
        # the stock was loaded some minutes ago: its creep is still running
        self.lane.loads.append((-rng.uniform(60.0, 1800.0), self.lane.base))
        self.events: list[TruthEvent] = []
        self.disturbances: list[tuple[float, float]] = []

    def new_item(self) -> float:
        c = self.cond
        return max(0.3 * c.unit_g, self.rng.gauss(c.unit_g, c.spread * c.unit_g))

    def _press(self, w: float) -> float:
        return self.rng.uniform(0.05, 0.6) * w + self.rng.uniform(10.0, 150.0)

    def pick(self, t0: float, k: int = 1, together: bool = True, press: float | None = None) -> float:
        rng = self.rng
        lane = self.lane
        taken = [self.items.pop(rng.randrange(len(self.items))) for _ in range(k)]
        total = sum(taken)
        p0 = self._press(total) if press is None else press
        r1 = rng.uniform(0.08, 0.25)
        t_lift = t0 + r1 + rng.uniform(0.15, 0.8)
        lifts: list[tuple[float, float]] = []
        if together:
            lifts.append((t_lift, total))
        else:
            tl = t_lift
            for w in taken:
                lifts.append((tl, w))
                tl += rng.uniform(0.25, 0.6)
        t_end = t_lift
        for tl, w in lifts:
            r2 = rng.uniform(0.05, 0.25)
            lane.step(tl, tl + r2, -w)
            jerk = rng.uniform(0.0, 0.3) * w
            if jerk > 0.0:
                lane.bump_half_sine(tl, rng.uniform(0.03, 0.08), -jerk)
            t_end = max(t_end, tl + r2)
        last_lift = lifts[-1][0]
        lane.hand(t0, t0 + r1, last_lift, t_end, p0)
        lane.ring(t_end, rng.uniform(0.02, 0.1) * (lifts[-1][1] + p0))
        self.events.append(TruthEvent(t0, t_end, -total, -k))
        return t_end

    def put(self, t0: float, items: list[float], one_by_one: bool = False) -> float:
        rng = self.rng
        lane = self.lane
        tp = t0
        t_last = t0
        for w in items:
            r = rng.uniform(0.03, 0.15)
            lane.step(tp, tp + r, w)
            lane.bump_half_sine(tp, rng.uniform(0.04, 0.12), rng.uniform(0.1, 0.8) * w)
            self.items.append(w)
            t_last = tp + r
            if one_by_one:
                tp += rng.uniform(0.25, 0.6)
        total = sum(items)
        p0 = rng.uniform(0.0, 0.4) * (total / len(items)) + rng.uniform(5.0, 80.0)
        rel0 = t_last + rng.uniform(0.1, 0.6)
        t_end = rel0 + rng.uniform(0.05, 0.2)
        lane.hand(t0, t0 + 0.05, rel0, t_end, p0)
        lane.ring(t_end, rng.uniform(0.02, 0.1) * (items[-1] + p0))
        self.events.append(TruthEvent(t0, t_end, total, len(items)))
        return t_end

    def knock(self, t0: float) -> float:
        rng = self.rng
        f = rng.uniform(30.0, 1500.0)
        dur = rng.uniform(0.02, 0.08)
        self.lane.bump_half_sine(t0, dur, f)
        self.lane.ring(t0 + dur, rng.uniform(0.1, 0.3) * f)
        self.disturbances.append((t0, t0 + dur))
        return t0 + dur

    def lean(self, t0: float) -> float:
        rng = self.rng
        p0 = rng.uniform(30.0, 2000.0)
        r = rng.uniform(0.1, 0.3)
        hold = rng.uniform(0.5, 3.0)
        t_end = t0 + 2 * r + hold
        self.lane.hand(t0, t0 + r, t0 + r + hold, t_end, p0)
        self.lane.ring(t_end, rng.uniform(0.02, 0.1) * p0)
        self.disturbances.append((t0, t_end))
        return t_end


def _build(case: str, rng: random.Random, cond: Condition) -> Trace:
    """One trace of ``case``: a 3-4 s stable lead-in, the interaction(s), a 3.5 s tail."""
    lead = rng.uniform(3.0, 4.0)
    duration = 90.0 if case == "drift" else 20.0
    shelf = _Shelf(rng, cond, duration, rng.uniform(5.0, 60.0) if case == "drift" else 0.0)
    gaps: list[tuple[float, float]] = []
    t = lead
    if case == "pick":
        t = shelf.pick(t)
    elif case == "put":
        t = shelf.put(t, [shelf.new_item()])
    elif case == "multi_pick":
        t = shelf.pick(t, rng.randint(2, 6), together=rng.random() < 0.5)
    elif case == "multi_put":
        t = shelf.put(t, [shelf.new_item() for _ in range(rng.randint(2, 6))], one_by_one=rng.random() < 0.5)
    elif case == "put_back":
        t = shelf.pick(t)
        w = -shelf.events[-1].delta_g
        t = shelf.put(t + rng.uniform(1.5, 6.0), [w])
    elif case == "quick_picks":
        t = shelf.pick(t)
        t = shelf.pick(t + rng.uniform(0.5, 2.0))
    elif case == "heavy_hand":
        w = shelf.cond.unit_g
        t = shelf.pick(t, press=rng.uniform(1.0, 3.0) * w + rng.uniform(100.0, 500.0))
    elif case == "bump":
        t = shelf.knock(t)
        if rng.random() < 0.5:
            t = shelf.knock(t + rng.uniform(0.1, 1.0))
    elif case == "lean":
        t = shelf.lean(t)
    elif case == "drift":
        t = duration - 3.5
    elif case in ("fault", "fault_idle"):
        if case == "fault":
            t0 = t
            if rng.random() < 0.5:
                t = shelf.pick(t0, rng.randint(1, 2))
            else:
                t = shelf.put(t0, [shelf.new_item() for _ in range(rng.randint(1, 2))])
            ev = shelf.events[-1]
            shelf.events[-1] = TruthEvent(ev.t_start, ev.t_end, ev.delta_g, ev.count, fault=True)
            f0 = rng.uniform(t0 + 0.1, max(t0 + 0.15, t - 0.05))
        else:
            f0 = t
        f1 = f0 + rng.uniform(1.0, 4.0)
        gaps.append((f0, f1))
        t = max(t, f1)
    else:
        raise ValueError(f"unknown case {case!r}")
    end = max(t + 3.5, duration if case == "drift" else 0.0)
    ts, gs = shelf.lane.sample(end, gaps)
    return Trace(case, cond, 0, ts, gs, shelf.events, shelf.disturbances, gaps)


def make_trace(case: str, cond: Condition, seed: int) -> Trace:
    tr = _build(case, random.Random(f"{seed}:{case}:{cond}"), cond)
    tr.seed = seed
    return tr


def random_condition(rng: random.Random) -> Condition:
    return Condition(
        rng.choice(SPS_CHOICES),
        rng.choice(SIGMA_CHOICES),
        rng.choice(UNIT_CHOICES),
        rng.choice(SPREAD_CHOICES),
        rng.choice(NOISE_CHOICES),
    )


def target_condition(rng: random.Random) -> Condition:
    """The accuracy target: 80 SPS, sigma 1 g, unit 20 g - 2 kg (log-uniform), spread 0-3 %."""
    unit = round(math.exp(rng.uniform(math.log(20.0), math.log(2000.0))), 1)
    return Condition(80, 1.0, unit, round(rng.uniform(0.0, 0.03), 4), rng.choice(NOISE_CHOICES))


def idle_stream(
    cond: Condition, hours: float, seed: int, chunk_s: float = 600.0
) -> Iterator[tuple[list[float], list[float]]]:
    """Samples of an untouched lane for ``hours``, with creep, drift and spikes, in chunks (t list, g list)."""
    rng = random.Random(f"idle:{seed}:{cond}")
    duration = hours * 3600.0
    shelf = _Shelf(rng, cond, duration)
    t0 = 0.0
    while t0 < duration:
        t1 = min(duration, t0 + chunk_s)
        yield shelf.lane.sample(t1, [])
        t0 = t1
