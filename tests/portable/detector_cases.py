"""Portable detector scenarios: integer-only synthetic traces, built and fed identically on CPython and MicroPython.

Each case returns the events as lists ``[t_ms, duration_ms, delta_dg, kind, count, confidence, raw confidence]``
(plus the truth the test needs), so the tests can check them and compare the two runtimes for equality.
Weights are in dg (tenths of a gram), times in ms. Noise is ~1 g (10 dg) from a small LCG, so the traces
are the same on both runtimes.
"""

from firmware.detector import Detector
from firmware.ticks import TICKS_MAX

BASE = 50000  # 5 kg on the lane
UNIT = 1000  # 100 g items


class Rng:
    def __init__(self, seed):
        self.x = seed & 0x7FFFFFFF

    def next(self):
        self.x = (1103515245 * self.x + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % 1000

    def noise(self, sigma):
        """About N(0, sigma**2): a sum of four uniforms, scaled (integers only)."""
        s = self.next() + self.next() + self.next() + self.next() - 1998
        return (s * sigma) // 577


def _tri(t, period, amp):
    """A triangle wave in [-amp, amp] (integer stand-in for a sine)."""
    p = t % period
    h = period // 2
    if p < h:
        return -amp + (4 * amp * p) // period
    return amp - (4 * amp * (p - h)) // period


def _ramp(t, t0, dur, value):
    if t <= t0:
        return 0
    if t >= t0 + dur:
        return value
    return (value * (t - t0)) // dur


class Shelf:
    """Items (ramped steps), hands (press with tremor and wander), knocks and ringing, as integer functions."""

    def __init__(self):
        self.steps = []  # (t0, dur, delta)
        self.hands = []  # (t0, t1, press)
        self.knocks = []  # (t0, dur, force)
        self.rings = []  # (t0, amp)
        self.rests = []  # (t0, t1, press, swell, t_swell, half)
        self.drift = 0  # dg per hour
        self.end = 0

    def pick(self, t0, n=1, press=600, hold=400):
        """A hand presses (``press`` dg) for ``hold`` ms, lifts n items over 120 ms; the plate rings."""
        lift = t0 + 150 + hold
        self.hands.append((t0, lift + 120, press))
        self.steps.append((lift, 120, -n * UNIT))
        self.rings.append((lift + 120, 150))
        self.end = max(self.end, lift + 120)
        return lift + 120

    def put(self, t0, n=1, press=300, hold=300):
        """Items land over 60 ms with a 40 % impact overshoot, the hand rests on them, then lets go."""
        self.steps.append((t0, 60, n * UNIT))
        self.knocks.append((t0, 80, (n * UNIT * 4) // 10))
        t1 = t0 + 60 + hold
        self.hands.append((t0, t1, press))
        self.rings.append((t1, 120))
        self.end = max(self.end, t1)
        return t1

    def knock(self, t0, force=2000):
        self.knocks.append((t0, 40, force))
        self.rings.append((t0 + 40, force // 4))
        self.end = max(self.end, t0 + 40)
        return t0 + 40

    def lean(self, t0, press=1500, hold=2000):
        self.hands.append((t0, t0 + hold, press))
        self.rings.append((t0 + hold, 100))
        self.end = max(self.end, t0 + hold)
        return t0 + hold

    def rest(self, t0, t1, press, swell=0, t_swell=0, half=1):
        """Another hand resting on the shelf, still (no tremor), pressing ``press`` dg and, around ``t_swell``,
        ``swell`` dg more (a parabola ``half`` ms wide each side): a slow crest that is flat for a moment (a
        negative swell with no press: a push that unloads the plates)."""
        self.rests.append((t0, t1, press, swell, t_swell, half))
        self.end = max(self.end, t1)
        return t1

    def weight(self, t):
        w = BASE + (self.drift * t) // 3600000
        for t0, t1, p, a, tc, h in self.rests:
            if t0 < t < t1:
                env = p if t - t0 > 100 else (p * (t - t0)) // 100
                if t1 - t < 100:
                    env = (env * (t1 - t)) // 100
                d = t - tc
                if -h < d < h:
                    env += a - (a * d * d) // (h * h)
                w += env
        for t0, dur, d in self.steps:
            w += _ramp(t, t0, dur, d)
        for t0, t1, p in self.hands:
            if t0 < t < t1:
                env = p if t - t0 > 100 else (p * (t - t0)) // 100
                if t1 - t < 100:
                    env = (env * (t1 - t)) // 100
                # wander (1 Hz, 15 %) and tremor (8 Hz, 4 % + 1.5 g)
                w += env + _tri(t - t0, 1000, (env * 15) // 100) + _tri(t - t0, 125, (env * 4) // 100 + 15)
        for t0, dur, f in self.knocks:
            if t0 < t < t0 + dur:
                w += f - (2 * f * abs(t - t0 - dur // 2)) // dur  # a triangular pulse
        for t0, amp in self.rings:
            dt = t - t0
            if 0 <= dt < 200:
                a = amp >> (dt // 25)
                w += a if (dt // 30) % 2 == 0 else -a
        return w


def _times(t_end, period, seed, t0=0):
    """Sample times at ``period`` ms with +-1 ms jitter."""
    rng = Rng(seed + 7)
    out = []
    t = t0
    while t < t_end:
        out.append(t)
        t += period + (rng.next() % 3) - 1
    return out


def feed(det, times, weights, faults=()):
    """Feed samples; ``faults`` are (from, to) in ms: fault() is called at ``from`` and no samples until ``to``."""
    out = []
    fi = 0
    for i in range(len(times)):
        t = times[i]
        if fi < len(faults) and t >= faults[fi][0]:
            det.fault(faults[fi][0] & TICKS_MAX)
            fi += 1
        if fi and faults[fi - 1][0] <= t < faults[fi - 1][1]:
            continue
        if det.feed(t & TICKS_MAX, weights[i]):
            out.append(
                [t, det.ev_duration_ms, det.ev_delta_dg, det.ev_kind, det.ev_count, det.ev_confidence,
                 det.ev_raw_confidence]
            )  # fmt: skip
    return out


def _trace(shelf, period, seed, sigma=10, tail=3000, t_origin=0):
    times = _times(shelf.end + tail, period, seed)
    rng = Rng(seed)
    weights = [shelf.weight(t) + rng.noise(sigma) for t in times]
    return [t + t_origin for t in times], weights


def build(case):
    """(shelf, period_ms, unit_dg, spread_permille, faults, gaps, t_origin, sigma) for a named case."""
    s = Shelf()
    period = 12
    unit = UNIT
    spread = 20
    faults = []
    gaps = []
    origin = 0
    sigma = 10
    if case in ("pick", "pick_10sps", "no_unit", "wrap"):
        s.pick(3000)
        if case == "pick_10sps":
            period = 100
        if case == "no_unit":
            unit = 0
        if case == "wrap":
            origin = (1 << 30) - 3500  # the change happens across the 2**30 ms wrap of ticks_ms
    elif case == "heavy_press":
        s.pick(3000, press=3000, hold=700)  # pressing with 3 units' worth of force before lifting one
    elif case == "multi_pick":
        s.pick(3000, n=3)
    elif case == "put_back":
        t = s.pick(3000)
        s.put(t + 3000)
    elif case == "quick_picks":
        t = s.pick(3000)
        s.pick(t + 800)
    elif case == "bump":
        t = s.knock(3000)
        s.knock(t + 300, 800)
    elif case == "lean":
        s.lean(3000)
    elif case == "drift":
        s.drift = 120  # 12 g per hour, far faster than real drift (several g per day)
        s.end = 30 * 60 * 1000
        period = 100
    elif case == "spikes":
        s.end = 20000
    elif case in ("fault_mid_event", "gap_mid_event"):
        t = s.pick(3000)
        f = (3000 + 300, t + 1500)  # the sensor fails while the hand is on the shelf, for ~1.7 s
        if case == "fault_mid_event":
            faults.append(f)
        else:
            gaps.append(f)
    elif case == "fault_no_change":
        faults.append((3000, 4500))
        s.end = 4500
    elif case == "pick_resting_hand":
        # A hand rests on the shelf (600 dg) while another picks 2 items; then it presses 400 dg more and eases
        # off: at that crest the shelf reads one unit less than before, flat for a moment, while it is still
        # moving. The pick is counted once, when the resting hand has left.
        s.rest(3000, 7500, 600, 400, 5700, 900)
        s.pick(4000, n=2)
    elif case == "push_bump":
        # The whole shelf pushed: a knock, then the plates unloaded by a slow push that reads one unit less at
        # its deepest, for a moment, and back: no net change, so no event (a pick and a put before).
        s.knock(3000, 600)
        s.rest(3000, 4200, 0, -UNIT, 3600, 600)
    elif case == "ambiguous":
        s.steps.append((3500, 100, -(UNIT * 3) // 2))  # 1.5 units gone: half an item?
        s.hands.append((3000, 3700, 500))
        s.end = 3700
    elif case == "spread_ambiguous":
        spread = 150  # 15 % per item: 6 items' sum is uncertain by +-37 %
        s.pick(3000, n=6)
        s.steps.append((3500, 100, -UNIT // 2))
    else:
        raise ValueError("unknown case " + case)
    return s, period, unit, spread, faults, gaps, origin, sigma


def run_case(case):
    s, period, unit, spread, faults, gaps, origin, sigma = build(case)
    times, weights = _trace(s, period, len(case), sigma, t_origin=origin)
    if case == "spikes":
        for i in range(100, len(weights), 97):
            weights[i] += 5000 if i % 2 else -5000  # single-sample spikes of 500 g
    if gaps:
        keep = [i for i in range(len(times)) if not (gaps[0][0] + origin <= times[i] < gaps[0][1] + origin)]
        times = [times[i] for i in keep]
        weights = [weights[i] for i in keep]
    det = Detector(unit, spread)
    evs = feed(det, times, weights, [(a + origin, b + origin) for a, b in faults])
    for e in evs:
        e[0] -= origin
    return {"events": evs, "end": s.end, "samples": len(times), "stable": det.stable, "level": det.level_dg()}


CASES = (
    "pick",
    "pick_10sps",
    "heavy_press",
    "multi_pick",
    "put_back",
    "quick_picks",
    "bump",
    "lean",
    "drift",
    "spikes",
    "fault_mid_event",
    "gap_mid_event",
    "fault_no_change",
    "pick_resting_hand",
    "push_bump",
    "ambiguous",
    "spread_ambiguous",
    "no_unit",
    "wrap",
)


def run_all():
    out = {}
    for case in CASES:
        out[case] = run_case(case)["events"]
    return out


def isqrt_table(values):
    from firmware.detector import isqrt

    return [isqrt(v) for v in values]
