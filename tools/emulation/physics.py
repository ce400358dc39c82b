"""Gram-level physics of one emulated lane, evaluated on the emulated board (portable: CPython and MicroPython).

The host (``tools/emulation/scenarios.py``) turns a scripted timeline into a *plan*: per lane a starting load
and a list of force components, each ``[kind, t_start, t_end, *params]`` in seconds and grams. This module
evaluates the plan at any time, the same way as the labelled-trace generator in ``tools/sensing/scenarios.py``
(whose models these are, ported to plain data so they can travel to the node's interpreter):

* ``["s", ta, tb, delta]``: an item placed or lifted: a smoothstep ramp of ``delta`` grams over [ta, tb];
* ``["h", t0, t_rel1, t_full, t_rel0, press, aw, fw, pw, at, ft, pt]``: a hand in contact: ramp in over
  [t0, t_full], hold with slow wander (``aw`` g at ``fw`` rad/s) and tremor (``at`` g at ``ft`` rad/s),
  ramp out over [t_rel0, t_rel1];
* ``["b", t0, t1, amp]``: a half-sine bump (lift-off jerk, impact overshoot, a knock);
* ``["r", t0, t1, a, w, tau]``: plate ringing, ``a * exp(-dt / tau) * sin(w * dt)``;
* creep (``"creep": [coef, tau_s, preload_age_s]``): every load change relaxes by a further ``coef`` of itself
  with time constant ``tau_s``; the starting load was put there ``preload_age_s`` before time 0.

``mean(t, period, nsub)`` is what an HX711 conversion sees: the mean force over the conversion period ending at
``t``, from ``nsub`` sub-samples while anything moves (a constant otherwise). Times must not go backwards by
more than one conversion period (the emulated chips only move forward); finished steps are folded into the
base load, so evaluation costs O(components active now), however long the timeline.
"""

import math

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _smooth(x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return x * x * (3.0 - 2.0 * x)


def _eval(c: "list[Any]", t: float) -> float:
    kind = c[0]
    if kind == "s":
        ta = c[1]
        tb = c[2]
        if t <= ta:
            return 0.0
        return float(c[3] * _smooth((t - ta) / (tb - ta)))
    if kind == "h":
        t0 = c[1]
        t_full = c[3]
        t_rel0 = c[4]
        if t < t_full:
            env = _smooth((t - t0) / max(t_full - t0, 1e-3))
        elif t > t_rel0:
            env = 1.0 - _smooth((t - t_rel0) / max(c[2] - t_rel0, 1e-3))
        else:
            env = 1.0
        dt = t - t0
        return float(env * (c[5] + c[6] * math.sin(c[7] * dt + c[8]) + c[9] * math.sin(c[10] * dt + c[11])))
    if kind == "b":
        return float(c[3] * math.sin(math.pi * (t - c[1]) / (c[2] - c[1])))
    if kind == "r":
        dt = t - c[1]
        return float(c[3] * math.exp(-dt / c[5]) * math.sin(c[4] * dt))
    raise ValueError("unknown component kind " + str(kind))


class LanePhysics:
    """The force on one lane's plate (grams, without the plate itself) as a function of time (seconds)."""

    def __init__(self, spec: "dict[str, object]") -> None:
        base = spec.get("base_g", 0.0)
        comps = spec.get("comps", [])
        creep = spec.get("creep", [0.0, 600.0, 0.0])
        if not isinstance(base, (int, float)) or not isinstance(comps, list) or not isinstance(creep, list):
            raise ValueError("lane spec needs base_g (number), comps (list) and creep (list)")
        for c in comps:
            if not isinstance(c, list) or len(c) < 4 or c[0] not in ("s", "h", "b", "r") or not c[2] > c[1]:
                raise ValueError("bad component " + str(c))
        self.base = float(base)
        self._comps = sorted(comps, key=lambda c: c[1])
        self._next = 0
        self._active: list[list[Any]] = []
        self._coef = float(creep[0])
        self._tau = float(creep[1])
        self._total = self.base  # sum of all load changes (for creep)
        self._decayed = self.base * math.exp(-float(creep[2]) / self._tau)  # their not-yet-relaxed part
        self._t_last = 0.0
        self._mean_t = -1.0
        self._mean_g = 0.0

    def _creep(self, t: float) -> float:
        if t > self._t_last:
            self._decayed *= math.exp(-(t - self._t_last) / self._tau)
            self._t_last = t
        return self._coef * (self._total - self._decayed)

    def grams(self, t: float) -> float:
        comps = self._comps
        n = len(comps)
        while self._next < n and comps[self._next][1] <= t:
            self._active.append(comps[self._next])
            self._next += 1
        g = self.base
        if self._active:
            keep = []
            for c in self._active:
                if t >= c[2]:
                    if c[0] == "s":  # finished: fold into the base load
                        d = c[3]
                        self.base += d
                        g += d
                        self._total += d
                        self._decayed += d
                    continue
                keep.append(c)
                g += _eval(c, t)
            self._active = keep
        return g + self._creep(t)

    def busy(self, t: float) -> bool:
        """Is anything moving at ``t`` (or starting before it)?"""
        return bool(self._active) or (self._next < len(self._comps) and self._comps[self._next][1] <= t)

    def mean(self, t: float, period: float, nsub: int) -> float:
        """The mean force over the conversion period ending at ``t`` (cached for the lane's other cells)."""
        if t == self._mean_t:
            return self._mean_g
        if self.busy(t):
            acc = 0.0
            for j in range(nsub):
                acc += self.grams(t - period * (nsub - j - 0.5) / nsub)
            g = acc / nsub
        else:
            g = self.grams(t)
        self._mean_t = t
        self._mean_g = g
        return g
