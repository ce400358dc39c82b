"""Stable-weight segmentation and counted pick / put events for one lane; integer-only and allocation-free.

Input is one sample at a time: a timestamp in milliseconds and the lane's calibrated weight in tenths of a
gram (``dg``). Samples may come at any, even irregular, rate: every window is defined in time (with a
minimum number of samples) over bounded, preallocated ring buffers. The same file runs on the node
(MicroPython, ESP32 / RP2040) and on the hub's replay tool (CPython), and both give identical events
because nothing here uses floats.

Algorithm
---------
* **Noise** is estimated online as the mean absolute difference of successive stable samples (an
  exponential average over 256 samples with the remainder carried, so it is unbiased in integers; each
  difference is clipped at 5x the estimate so spikes do not inflate it); sigma = 0.886 * that mean. Feed
  the detector unsmoothed samples: a smoothing filter upstream hides noise from this estimate.
* **Stable** state: the lane has a level ``L`` (Q4 fixed point). Each sample's deviation from ``L``, clipped
  at 4 sigma, feeds a two-sided CUSUM (allowance 1 sigma, threshold 6 sigma): a single spike cannot trip
  it, two large samples or a small persistent shift (even below the noise) do, and the sample where the
  CUSUM left zero is the start of the change. Otherwise ``L`` follows the samples as a running mean that
  becomes an exponential average with a 20 s time constant, so creep and drift (grams per day) are
  tracked and never accumulate into a step.
* **Moving** state: waits until the newest 200 ms (at least 5 samples) are stable: at most 1/8 of them
  beyond 4 sigma of their mean (spikes), the oldest one within it (the motion is over), a mean absolute
  deviation within 0.8 + 1.5 / sqrt(n) sigma (a resting hand's tremor fails this) and no trend between
  the window's halves (an exponential settle or a slow hand fails that).
* **Settling** state: the stable samples form a segment whose mean is the new level; two samples beyond 4
  sigma of it, a dispersion test over the whole segment (more power as it grows) or a newest window that
  is not stable and disagrees with it send the lane back to moving, a newest window that is stable but
  disagrees restarts the segment there (slow settle, creep). At every sample the step ``delta = new level
  - L`` is evaluated: count ``k = round(delta / unit)`` and a confidence, the posterior of ``k`` against
  ``k - 1`` and ``k + 1`` under a Gaussian model whose variance is the measurement variance (noise /
  sqrt(n) on both levels, plus noise / 4 for correlated noise and 0.1 % of delta for calibration) plus
  ``|count| * (unit * spread)**2`` (the spread of a sum of ``count`` items); a residual beyond 3 sigma of
  that model lowers it further. A confident count (>= 90, residual within 3 sigma) is an event as soon as
  the level has been held long enough: 200 ms for a decrease (a hand can only add weight, so a lower
  level is not a hand resting on the shelf), and not on the first stable window itself (40 ms more: the
  crest of a slow push passes one window); 500 ms once the lane has left a level that seemed to settle
  since the change began (another hand resting on the shelf, a bump swaying it: the crest of its wander
  can read a whole number of units less for a moment); for an increase, which may be a hand resting on
  what it put down or pressing before it lifts, 300 ms and 7 samples, plus up to 250 ms per gram of noise above
  1.2 g (the tremor is hidden in high noise; less for units above 64 sigma, which hands press harder).
  Anything less clear waits for more stable samples, up to 1.5 s after the first stable window, and is
  then reported with the confidence it has: an anomaly if the residual is beyond 4 sigma, a confidence
  of at most 50 if the change is only 3-4 sigma of the measurement, nothing if less. A change that is
  clearly real but not near a whole number of units is an anomaly with count 0, except within 3 s of an
  event, where it is the hand leaving or the item settling and only moves the level. A change the model
  calls noise is no event (bumps, leaning on the shelf). If motion resumes before the decision, the
  segment is dropped and the later level is compared with the same ``L``: one event per interaction.
* **Reported confidence** of a counted pick / put is calibrated (``calibrate``): the posterior above
  decides, and the event carries the exact-count rate measured for its band of the posterior and its
  unit weight against the noise (a 27-byte table fitted on the sensing benchmark's tuning seeds, checked
  on held-out ones: ``tools/sensing/calibration.py``); ``ev_raw_confidence`` keeps the posterior. An
  anomaly's confidence is not calibrated.
* **Faults**: ``fault()`` (or a gap in the samples longer than max(500 ms, 8 sample intervals))
  abandons any motion; after recovery the first level stable for 1 s is compared with the level before
  the fault and a change is reported as an anomaly with its best count and a confidence of at most 40.

Time arithmetic
---------------
Timestamps are reduced modulo 2**30 on entry (``MicroPython``'s ``time.ticks_ms()`` has exactly that
period, so a node passes it unchanged) and every difference is ``(a - b) & TICKS_MAX`` (``firmware/ticks.py``):
correct across the wrap for intervals below 2**29 ms (6.2 days), and never a big int on a 32-bit port, where
small ints hold 31 bits. A difference of 2**29 ms or more is treated as time going backwards (a fault).

Integer ranges and allocation
-----------------------------
Weights are clamped to +-(2**20 - 1) dg (+-104 kg), the noise sigma to 0.2 .. 100 g and unit weights to
1 g .. 100 kg, so that no value on the per-sample path leaves the 31-bit small-int range (a big int would
allocate): the per-sample path allocates nothing, an event included (tested under MicroPython). Only the
decision arithmetic for extreme combinations (noise near 100 g with steps near 100 kg) may go through a
big int, which stays exact. The steady-state functions' frames fit in 11 words, so ports without a Python
stack (ESP32, RP2) do not heap-allocate their frames either (``tools/mpy_frames.py``; the moving-state
window checks and the decision are larger and do, transiently, while the lane moves).
"""

from array import array

from firmware.ticks import TICKS_HALF, TICKS_MAX
from shared_protocol.compat import const
from shared_protocol.messages import KIND_ANOMALY, KIND_PICK, KIND_PUT

_RING = const(256)  # samples kept: 3.2 s at 80 SPS; windows are capped by this
_RMASK = const(255)
_XMAX = const(0xFFFFF)  # |weight| clamp, dg
_SIG_MIN = const(32)  # noise floor, Q4 dg (0.2 g)
_SIG_MAX = const(16000)  # noise cap, Q4 dg (100 g)
_SIG_INIT = const(160)  # before any estimate: 1 g
_MAD_MAX = const(64000)  # mean |successive difference| cap, Q4 dg (keeps mad * 227 a small int)
_NOISE_N = const(256)  # noise average length, samples
_TAU_MS = const(20000)  # level tracking time constant
_WMIN_MS = const(200)  # stability window
_NMIN = const(5)  # ... and at least this many samples
_HOLD_SIG = const(192)  # above 1.2 g of noise (Q4 dg), a new level must be held longer before an event
_PUT_HOLD_MS = const(100)
_UNSETTLED_MS = const(300)  # more hold once the lane left a level that seemed to settle (another hand, a bump)
_CONFIRM_MS = const(40)  # a decrease is confirmed this long after the first stable window, not on it
_NHOLD = const(7)  # ... and this many samples (at 10 SPS the conversion averages a hand's tremor away)
_GUARD_MS = const(3000)  # after an event, a change of less than a unit within this time is no event
_WMAX_MS = const(1500)  # longest wait for an ambiguous decision after the first stable window
_WFAULT_MS = const(1000)  # stable time required after a fault before comparing levels
_GAP_MS = const(500)  # a sample gap longer than this (and 8 intervals) is a sensor fault
_STUCK_MS = const(8000)  # motion longer than this: let the noise estimate follow the samples
_NOISE_INIT = const(24)  # samples of noise estimate needed before the first level
_SEG_NMAX = const(4096)
_FLOOR_Q = const(320)  # smallest change ever reported: 2 g (Q4 dg)
_C_FAST = const(90)  # confidence that allows an immediate event
_C_FAULT = const(40)  # confidence cap after a fault
_C_WEAK = const(50)  # confidence cap for a change of 3-4 sigma of the measurement
LOW_CONFIDENCE = const(60)  # below this, the hub should treat a count as unconfirmed

_INIT = const(0)
_STABLE = const(1)
_MOVING = const(2)
_SETTLING = const(3)

# Calibration of the reported confidence of a counted pick / put (``calibrate``): the exact-count rate measured
# for each cell, in per cent. A cell is the raw posterior's band (below 50; exactly 50, the cap of a change only
# 3-4 sigma of the measurement; 51-69; 70-79; 80-89; 90-94; 95-97; 98-99; 100) in one of three rows, the unit
# weight against the noise: below 8 sigma, 8-20 sigma, 20 sigma and above. Fitted on the sensing benchmark's
# tuning seeds (``python -m tools.sensing.calibration --fit``); checked on held-out seeds by the benchmark. A bytes
# literal (no allocation at import beyond the object; mpy-cross keeps it as one constant):
_CAL_BANDS = const(9)
#    58,  90,  52,  65,  72,  83,  90,  97,  99  unit below 8 sigma
#    70,  88,  52,  66,  79,  89,  93,  98,  99  8-20 sigma
#    75,  80,  67,  76,  86,  94,  98, 100, 100  20 sigma and above
_CAL = b"\x3a\x5a\x34\x41\x48\x53\x5a\x61\x63\x46\x58\x34\x42\x4f\x59\x5d\x62\x63\x4b\x50\x43\x4c\x56\x5e\x62\x64\x64"

# round(65536 * exp(-i / 8)) for i = 0..128: exp(-e) for a log-likelihood e in Q3, integer and identical everywhere.
_EXP = array(
    "i",
    [
        65536, 57835, 51039, 45042, 39750, 35079, 30957, 27319, 24109, 21276, 18776, 16570, 14623, 12905, 11388,
        10050, 8869, 7827, 6907, 6096, 5380, 4747, 4190, 3697, 3263, 2879, 2541, 2243, 1979, 1746, 1541, 1360,
        1200, 1059, 935, 825, 728, 642, 567, 500, 442, 390, 344, 303, 268, 236, 209, 184, 162, 143, 127, 112,
        99, 87, 77, 68, 60, 53, 47, 41, 36, 32, 28, 25, 22, 19, 17, 15, 13, 12, 10, 9, 8, 7, 6, 6, 5, 4, 4, 3,
        3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ],
)  # fmt: skip


def isqrt(n: int) -> int:
    """floor(sqrt(n)) for n >= 0, in integers (Newton's method from a power of two above the root)."""
    if n <= 0:
        return 0
    x = 1
    while x * x <= n:
        x <<= 1
    y = (x + n // x) >> 1
    while y < x:
        x = y
        y = (x + n // x) >> 1
    return x


# 16 * sqrt(n) for n = 0 .. _RING: scales a sigma to the sigma of an n-sample mean without squares.
_SQ16 = array("H", [isqrt(n << 8) for n in range(_RING + 1)])


def cal_cell(raw: int, unit_dg: int, sig_q4: int) -> int:
    """The calibration table's cell for a raw confidence, a unit weight (dg) and a noise sigma (Q4 dg)."""
    if raw >= 100:
        b = 8
    elif raw >= 98:
        b = 7
    elif raw >= 95:
        b = 6
    elif raw >= 90:
        b = 5
    elif raw >= 80:
        b = 4
    elif raw >= 70:
        b = 3
    elif raw > 50:
        b = 2
    elif raw == 50:
        b = 1
    else:
        b = 0
    if unit_dg * 2 < sig_q4:  # unit below 8 sigma
        return b
    if unit_dg * 4 < sig_q4 * 5:  # below 20 sigma
        return _CAL_BANDS + b
    return 2 * _CAL_BANDS + b


def calibrate(raw: int, unit_dg: int, sig_q4: int) -> int:
    """The confidence reported for a counted pick / put: how often such a count is exact (per cent)."""
    return _CAL[cal_cell(raw, unit_dg, sig_q4)]


class Detector:
    """Turns one lane's weight samples into pick / put / anomaly events (see the module docstring).

    ``feed(t_ms, weight_dg)`` returns True when an event is confirmed; the event is then in ``ev_kind``
    (KIND_PICK, KIND_PUT or KIND_ANOMALY), ``ev_delta_dg``, ``ev_count`` (signed units, negative for a pick;
    0 without a unit weight or for a change that is not a whole unit), ``ev_confidence`` (0..100; for a
    counted pick / put the calibrated chance that the count is exact), ``ev_raw_confidence`` (the posterior),
    ``ev_t_ms`` (the sample that confirmed it), ``ev_duration_ms`` (from the start of the change to the
    confirmation: t_start = ev_t_ms - ev_duration_ms) and ``ev_level_dg`` (the new stable level).
    """

    def __init__(self, unit_weight_dg: int = 0, spread_permille: int = 0) -> None:
        self._tb = array("i", [0] * _RING)
        self._xb = array("i", [0] * _RING)
        self._unit = 0
        self._spread = 0
        self.set_unit(unit_weight_dg, spread_permille)
        self.ev_t_ms = 0
        self.ev_delta_dg = 0
        self.ev_kind = 0
        self.ev_count = 0
        self.ev_confidence = 0
        self.ev_raw_confidence = 0
        self.ev_duration_ms = 0
        self.ev_level_dg = 0
        self.stable = False
        self.reset()

    def reset(self) -> None:
        """Forget everything but the unit weight (after a tare or a recalibration)."""
        self._head = 0
        self._fill = 0
        self._state = _INIT
        self._have_prev = False
        self._prev_stable = False
        self._tprev = 0
        self._xprev = 0
        self._dtq = 0  # mean sample interval, Q4 ms (0 = unknown)
        self._mad = _SIG_INIT * 9 // 8  # mean |successive difference|, Q4 dg
        self._mad_carry = 0
        self._mad_n = 0
        self._sig = _SIG_INIT  # noise sigma, Q4 dg
        self._lvl = 0  # stable level, Q4 dg
        self._lvl_n = 0
        self._lvl_carry = 0
        self._cp = 0  # CUSUM up / down, Q4 dg
        self._cn = 0
        self._tp = 0  # when each CUSUM left zero
        self._tn = 0
        self._tstart = 0  # start of the current change
        self._tmove = 0  # when the motion was detected
        self._faulted = False
        self._unsettled = False  # the lane left a settling level since the change began
        self._seg_ref = 0  # settling segment: sum of clipped (x - ref) over n samples
        self._seg_sum = 0
        self._seg_n = 0
        self._settle_t = 0
        self._seg_t0 = 0
        self._seg_abs = 0
        self._seg_out = 0
        self._t_event = 0  # when the last event was confirmed
        self._recent = False  # ... and it was less than _GUARD_MS ago (checked lazily)
        self._w_n = 0  # last window checked: samples, reference, clipped sum, oldest sample's time
        self._w_t0 = 0
        self._w_abs = 0
        self._w_ref = 0
        self._w_sum = 0
        self.stable = False

    def set_unit(self, unit_weight_dg: int, spread_permille: int = 0) -> None:
        """The SKU's unit weight (dg; 0 = unknown: events carry no count) and its spread (per mille, 1 sigma)."""
        if unit_weight_dg <= 0:
            self._unit = 0
        else:
            self._unit = min(max(unit_weight_dg, 10), 1000000)
        self._spread = min(max(spread_permille, 0), 300)

    def unit_dg(self) -> int:
        """The unit weight in dg (0: unknown)."""
        return self._unit

    def level_dg(self) -> int:
        """The current stable level in dg (the last one while the lane is moving)."""
        return (self._lvl + 8) >> 4

    def noise_dg(self) -> int:
        """The current noise estimate (one sigma), in dg."""
        return (self._sig + 8) >> 4

    # -- per sample ---------------------------------------------------------------------------------
    def feed(self, t_ms: int, weight_dg: int) -> bool:
        """Add one sample; True when an event was confirmed by it (read the ``ev_*`` attributes)."""
        t_ms &= TICKS_MAX
        if weight_dg > _XMAX:
            weight_dg = _XMAX
        elif weight_dg < -_XMAX:
            weight_dg = -_XMAX
        if self._have_prev:
            self._interval(t_ms)
        h = self._head
        self._tb[h] = t_ms
        self._xb[h] = weight_dg
        self._head = (h + 1) & _RMASK
        if self._fill < _RING:
            self._fill += 1
        h = self._state
        if h == _STABLE:
            h = self._stable_sample(t_ms, weight_dg)
        elif h == _SETTLING:
            h = self._settling_sample(t_ms, weight_dg)
        else:
            h = self._moving_sample(t_ms, weight_dg)
        self._tprev = t_ms
        self._xprev = weight_dg
        self._have_prev = True
        return h

    def _interval(self, t: int) -> None:
        dt = t - self._tprev  # both in 0 .. TICKS_MAX: the steady path (time forward, short gap) reads no global
        if dt < 0:
            dt &= TICKS_MAX  # across the wrap (or backwards in time: then dt >= TICKS_HALF)
        q = self._dtq
        if dt > _GAP_MS and (dt >= TICKS_HALF or (q and 2 * dt > q)):
            self.fault(self._tprev)  # backwards in time, or a gap of 8 intervals: the sensor was not read
        elif q:
            self._dtq = q + (((dt << 4) - q) >> 3)
        else:
            self._dtq = (dt << 4) or 16

    def _noise(self, x: int, clip: bool) -> None:
        d = x - self._xprev
        if d < 0:
            d = -d
        d <<= 4
        m = self._mad
        if clip and d > 5 * m:
            d = 5 * m
        n = self._mad_n
        if n < _NOISE_N:
            n += 1
            self._mad_n = n
        d += self._mad_carry - m
        m += d // n
        self._mad_carry = d % n
        if m > _MAD_MAX:
            m = _MAD_MAX
        self._mad = m
        m = (m * 227) >> 8  # sigma = mad * sqrt(pi) / 2
        if m < _SIG_MIN:
            m = _SIG_MIN
        elif m > _SIG_MAX:
            m = _SIG_MAX
        self._sig = m

    def _stable_sample(self, t: int, x: int) -> bool:
        s = self._sig
        d = (x << 4) - self._lvl
        c = s << 2
        if d > c:
            c -= s
        elif d < -c:
            c = -c - s
        else:
            c = d - s
        # c is now (clipped deviation - allowance) for the upward CUSUM
        p = self._cp + c
        if p <= 0:
            p = 0
        elif self._cp == 0:
            self._tp = t
        self._cp = p
        c += s << 1  # (clipped deviation + allowance), negated below for the downward CUSUM
        p = self._cn - c
        if p <= 0:
            p = 0
        elif self._cn == 0:
            self._tn = t
        self._cn = p
        if self._cp > 6 * s or p > 6 * s:
            c = self._tp if self._cp > p else self._tn
            self._start_motion(t, c)
            return False
        self._track(d, s)
        if self._prev_stable:
            self._noise(x, True)
        self._prev_stable = True
        return False

    def _track(self, d: int, s: int) -> None:
        s *= 3
        if d > s:
            d = s
        elif d < -s:
            d = -s
        n = self._lvl_n
        s = (_TAU_MS << 4) // (self._dtq or 16)
        if n < s:
            n += 1
            self._lvl_n = n
        else:
            n = s
        d += self._lvl_carry
        s = d // n
        self._lvl += s
        self._lvl_carry = d - s * n

    def _start_motion(self, t: int, t0: int) -> None:
        self._state = _MOVING
        self.stable = False
        self._tstart = t0
        self._tmove = t
        self._unsettled = False
        if self._recent and ((t - self._t_event) & TICKS_MAX) >= _GUARD_MS:
            self._recent = False
        self._cp = 0
        self._cn = 0
        self._prev_stable = False

    def _moving_sample(self, t: int, x: int) -> bool:
        if self._state == _INIT:
            if self._have_prev:
                self._noise(x, self._mad_n >= _NOISE_N)
        elif self._have_prev and ((t - self._tmove) & TICKS_MAX) > _STUCK_MS:
            self._noise(x, True)
        if not self._window(t):
            return False
        if self._state == _INIT:
            if self._mad_n < _NOISE_INIT:
                return False  # the noise estimate is not yet good enough to trust a first level
            self._to_stable((self._w_ref << 4) + (self._w_sum << 4) // self._w_n, self._w_n)
            return False
        self._state = _SETTLING
        self._settle_t = t
        self._new_segment()
        return self._decide(t)

    def _settling_sample(self, t: int, x: int) -> bool:
        n = self._seg_n
        s = self._sig
        d = ((x - self._seg_ref) << 4) - (self._seg_sum << 4) // n  # Q4 deviation from the segment's mean
        if d > (s << 2) or d < -(s << 2):
            self._seg_out += 1
            if self._seg_out >= 2:  # two samples beyond 4 sigma: the motion goes on
                self._state = _MOVING
                self._unsettled = True
                return False
            return False  # a single spike: left out
        self._seg_out = 0
        if n < _SEG_NMAX:
            d = x - self._seg_ref
            self._seg_sum += d
            self._seg_abs += d if d >= 0 else -d
            n += 1
            self._seg_n = n
        # Dispersion over the whole segment (it gains power as the segment grows): a resting hand's tremor.
        d = _SQ16[n if n < _RING else _RING]
        if ((self._seg_abs << 4) // n) * d > (s * (4 * d + 120)) // 5:
            self._state = _MOVING
            self._unsettled = True
            return False
        # The newest window must agree with the whole segment; if not (a slow settle, creep), restart it there.
        stable = self._window(t)
        d = ((self._w_ref - self._seg_ref) << 4) + (self._w_sum << 4) // self._w_n - (self._seg_sum << 4) // n
        if d < 0:
            d = -d
        if d * _SQ16[self._w_n] > 56 * s:
            self._unsettled = True
            if not stable:
                self._state = _MOVING
                return False
            self._new_segment()
        return self._decide(t)

    def _new_segment(self) -> None:
        self._seg_ref = self._w_ref
        self._seg_sum = self._w_sum
        self._seg_abs = self._w_abs
        self._seg_n = self._w_n
        self._seg_t0 = self._w_t0
        self._seg_out = 0

    def _window(self, t: int) -> bool:
        """Is the newest window (the last 200 ms, at least 5 samples) stable? Leaves its figures in self._w_*."""
        fill = self._fill
        if fill < _NMIN:
            return False
        tb = self._tb
        xb = self._xb
        i = self._head
        ref = xb[(i - 1) & _RMASK]
        n = 0
        s = 0
        while n < fill:
            i = (i - 1) & _RMASK
            if n >= _NMIN and ((t - tb[i]) & TICKS_MAX) > _WMIN_MS:
                break
            s += xb[i] - ref
            n += 1
        ref += s // n
        return self._window_check(ref, n)

    def _window_check(self, ref: int, n: int) -> bool:
        xb = self._xb
        lim = (self._sig << 2) >> 4
        i = self._head
        half = n >> 1
        j = 0
        a = 0
        b = 0
        out = 0
        dev = 0
        while j < n:
            i = (i - 1) & _RMASK
            d = xb[i] - ref
            if d > lim:
                d = lim
                out += 1
            elif d < -lim:
                d = -lim
                out += 1
            if j < half:
                a += d
            else:
                b += d
            dev += d if d >= 0 else -d
            j += 1
        self._w_ref = ref
        self._w_n = n
        self._w_sum = a + b
        self._w_abs = dev
        self._w_t0 = self._tb[i]
        d = xb[i] - ref
        if (out << 3) > n or d > lim or d < -lim:
            return False  # too many outliers, or the oldest sample is one (the motion has not ended)
        j = _SQ16[n]
        # mean |deviation| within 0.8 sigma + 1.5 sigma / sqrt(n): tremor of a resting hand fails this
        if ((dev << 4) // n) * j > (self._sig * (4 * j + 120)) // 5:
            return False
        a = (a << 4) // half - (b << 4) // (n - half)
        if a < 0:
            a = -a
        return a * j <= 112 * self._sig  # halves agree within 3.5 sigma of their difference

    def _to_stable(self, lvl: int, n: int) -> None:
        self._lvl = lvl
        self._lvl_n = n
        self._lvl_carry = 0
        self._state = _STABLE
        self.stable = True
        self._cp = 0
        self._cn = 0
        self._prev_stable = False
        self._faulted = False

    # -- decisions (only while settling) ------------------------------------------------------------
    def _decide(self, t: int) -> bool:
        n = self._seg_n
        lvl = (self._seg_ref << 4) + (self._seg_sum << 4) // n
        dq = lvl - self._lvl
        adq = dq if dq >= 0 else -dq
        s = self._sig
        s2 = s * s
        m = self._lvl_n
        var = s2 // n + s2 // m + (s2 >> 4) + (adq // 1000) ** 2 + 256  # Q8 dg^2
        sd = isqrt(var)  # Q4 dg
        el = (t - self._settle_t) & TICKS_MAX
        signif = adq >= _FLOOR_Q and adq >= 5 * sd
        u = self._unit
        if self._faulted:
            if el < _WFAULT_MS:
                return False
            if not signif:
                return self._no_event(lvl, n, adq, sd)
            if u:
                self._count(dq, sd)
            else:
                self.ev_count = 0
                self.ev_confidence = _C_FAULT
            if self.ev_confidence > _C_FAULT:
                self.ev_confidence = _C_FAULT
            return self._emit(t, lvl, n, dq, KIND_ANOMALY)
        late = el >= _WMAX_MS
        if not u:
            if signif and adq >= 8 * sd and self._held(t, dq):
                self.ev_confidence = 95
            elif late and signif:
                self.ev_confidence = 60
            elif late or adq < 3 * sd:
                return self._no_event(lvl, n, adq, sd)
            else:
                return False
            self.ev_count = 0
            return self._emit(t, lvl, n, dq, KIND_PICK if dq < 0 else KIND_PUT)
        fit = self._count(dq, sd)
        k = self.ev_count
        c = self.ev_confidence
        if k == 0:
            if c >= _C_FAST and not signif:
                return self._no_event(lvl, n, adq, sd)
            if self._recent and ((t - self._t_event) & TICKS_MAX) < _GUARD_MS and self._held(t, dq):
                # Less than a unit, right after an event: the hand leaving the item it just put down or the
                # item settling; the count stands, the level moves without an event.
                return self._no_event(lvl, n, adq, sd)
            if not late:
                return False
            if not signif:
                return self._no_event(lvl, n, adq, sd)
            self.ev_confidence = 100 - c  # a real change that is not a whole number of units
            return self._emit(t, lvl, n, dq, KIND_ANOMALY)
        if adq < 4 * sd:  # a count, but the change itself is hardly above the noise: wait for more samples
            if not late:
                return False
            if adq < 3 * sd:
                return self._no_event(lvl, n, adq, sd)
            if c > _C_WEAK:  # likely real, but report it as unconfirmed
                self.ev_confidence = _C_WEAK
        if c >= _C_FAST and fit <= 36 and self._held(t, dq):
            return self._emit(t, lvl, n, dq, KIND_PICK if k < 0 else KIND_PUT)
        if not late:
            return False
        return self._emit(t, lvl, n, dq, KIND_ANOMALY if fit > 64 else (KIND_PICK if k < 0 else KIND_PUT))

    def _held(self, t: int, dq: int) -> bool:
        """Has the new level been stable long enough for an event? A decrease: 200 ms (a hand can only add
        weight, so a lower level is not a hand resting on the shelf), and 40 ms after the first stable window;
        500 ms if the lane has left a settling level since the change began (another hand may rest on the
        shelf, or a bump sway it: a lower level is then not proof). An increase may be exactly that, a hand
        resting on what it put down or pressing before it lifts: 300 ms and 7 samples (at 10 SPS the
        conversion averages a hand's tremor away), plus up to 250 ms per gram of noise above 1.2 g (in high
        noise the tremor is hidden); the extra time shrinks for units above 64 sigma, as hands press such
        items harder and their tremor shows through."""
        if dq < 0:
            s = _WMIN_MS + _UNSETTLED_MS if self._unsettled else _WMIN_MS
            # and not on the first stable window itself: the crest of a slow push or sway passes one
            return ((t - self._seg_t0) & TICKS_MAX) >= s and ((t - self._settle_t) & TICKS_MAX) >= _CONFIRM_MS
        if self._seg_n < _NHOLD:
            return False
        s = self._sig - _HOLD_SIG
        if s > 0:
            s = (s * 25) >> 4
            u = self._unit
            if u and u > (self._sig << 2):
                s = s * (self._sig << 2) // u
            s += _WMIN_MS + _PUT_HOLD_MS
        else:
            s = _WMIN_MS + _PUT_HOLD_MS
        return ((t - self._seg_t0) & TICKS_MAX) >= s

    def _count(self, dq: int, sd: int) -> int:
        """Count and confidence for a Q4 step ``dq`` with measurement sigma ``sd`` (Q4) into ev_count /
        ev_confidence; returns the residual's z**2 / 2 in Q3 (36 = 3 sigma, 64 = 4 sigma)."""
        u16 = self._unit << 4
        k = (2 * dq + u16) // (2 * u16)
        r = dq - k * u16
        u16 = self._unit << 1  # r * 1000 / (16 * unit) = r * 125 / (2 * unit), without overflow
        rm = (r * 125) // u16  # residual in thousandths of a unit
        sm = (sd * 125) // u16  # measurement sigma in thousandths of a unit
        if sm > 20000:
            sm = 20000
        sm = sm * sm + 1
        sp = self._spread * self._spread
        ak = k if k >= 0 else -k
        v = min(ak, 1000) * sp + sm
        fit = (rm * rm * 4) // v
        pk = self._likelihood(fit, v)
        ak = k - 1 if k >= 1 else 1 - k  # |k - 1|
        v = min(ak, 1000) * sp + sm
        p = pk + self._likelihood(((rm + 1000) ** 2 * 4) // v, v)
        ak = k + 1 if k >= -1 else -1 - k  # |k + 1|
        v = min(ak, 1000) * sp + sm
        p += self._likelihood(((rm - 1000) ** 2 * 4) // v, v)
        c = (100 * pk) // p if p else 0
        if fit > 36:  # the best count itself is a poor fit (beyond 3 sigma): less sure of anything
            c = (c * _EXP[min(fit - 36, 128)]) >> 16
        self.ev_count = k
        self.ev_confidence = c
        return fit

    def _likelihood(self, e: int, v: int) -> int:
        if e > 128:
            return 0
        return (_EXP[e] << 6) // isqrt(v)

    def _no_event(self, lvl: int, n: int, adq: int, sd: int) -> bool:
        if adq > 2 * sd:  # a small real shift (or drift during the motion): take the new level, no event
            self._to_stable(lvl, n)
        else:  # the same level: keep the old, longer average
            self._to_stable(self._lvl, self._lvl_n)
        return False

    def _emit(self, t: int, lvl: int, n: int, dq: int, kind: int) -> bool:
        c = self.ev_confidence
        self.ev_raw_confidence = c
        if kind != KIND_ANOMALY and self._unit:
            self.ev_confidence = _CAL[cal_cell(c, self._unit, self._sig)]
        self.ev_t_ms = t
        self.ev_delta_dg = (dq + 8) >> 4
        self.ev_kind = kind
        self.ev_duration_ms = (t - self._tstart) & TICKS_MAX
        self.ev_level_dg = (lvl + 8) >> 4
        self._t_event = t
        self._recent = True
        self._to_stable(lvl, n)
        return True

    # -- faults -------------------------------------------------------------------------------------
    def fault(self, t_ms: int = -1) -> None:
        """The sensor failed (timeout, saturation, disconnection): abandon any motion. After recovery, the
        first stable level is compared with the last one before the fault and any change is reported as an
        anomaly (confidence <= 40). ``t_ms`` is when the fault began (default: the last sample)."""
        t = (self._tprev if t_ms < 0 else t_ms) & TICKS_MAX
        self._fill = 0
        self._have_prev = False
        self._prev_stable = False
        self._cp = 0
        self._cn = 0
        self.stable = False
        if self._state == _INIT:
            return
        if self._state == _STABLE:
            self._tstart = t
        if not self._faulted:
            self._faulted = True
        self._state = _MOVING
        self._tmove = t
