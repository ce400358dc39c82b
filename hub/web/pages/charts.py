"""Server-rendered charts: a time series in, an inline SVG string out (no JavaScript, no chart library).

* ``Downsampler`` bounds a series whatever its length: the window is cut into ``max_points // 4`` time buckets and
  each keeps its first, lowest, highest and last sample, so a spike survives and the line's ends stay exact.
  It takes samples one at a time (memory: one small record per bucket), so a page can stream rows into it.
  With ``max_gap_ms`` it also remembers where samples stopped for longer than that: the line breaks there.
* ``step_chart`` draws a value that holds until the next change (a lane's count), ``line_chart`` one sampled now
  and then (a lane's weight), with gaps. Both draw time ticks (UTC, like the pages' ``ms`` filter), value ticks,
  optional reference lines (capacity, reorder point), and carry a ``<title>``, ``<desc>`` and ``aria-label``.
* Every text is escaped; every coordinate is rounded to 0.1 so the SVG stays small (600 points: ~10 kB).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

MAX_POINTS = 600

# geometry of the viewBox (the SVG scales to its container's width)
WIDTH = 520
HEIGHT = 240
LEFT = 52
RIGHT = 10
TOP = 24
BOTTOM = 34
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM
TICK_LABEL_HALF_W = 24  # half the width of a time label ("09:45", "11-27") at font-size 13

_MINUTE = 60_000
_TIME_STEPS = tuple(
    m * _MINUTE for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)
)  # candidate tick spacings


@dataclass(frozen=True, slots=True)
class Sample:
    t_ms: int
    value: float
    breaks: bool = False  # True: the line does not join this sample to the one before (a gap in the data)


@dataclass(slots=True)
class _Bucket:
    first: tuple[int, int, float]  # (arrival order, t_ms, value)
    low: tuple[int, int, float]
    high: tuple[int, int, float]
    last: tuple[int, int, float]
    gap_before: bool  # a gap between the previous sample and this bucket's first
    gap_inside: bool  # a gap between two of this bucket's samples


class Downsampler:
    """Keeps at most ``max_points`` samples of a series added in time order (see the module docstring)."""

    def __init__(self, t0_ms: int, t1_ms: int, max_points: int = MAX_POINTS, max_gap_ms: int | None = None) -> None:
        if max_points < 4:
            raise ValueError("max_points must be at least 4")
        self.t0_ms = t0_ms
        self.t1_ms = max(t1_ms, t0_ms + 1)
        self.max_points = max_points
        self.buckets = max_points // 4
        self.max_gap_ms = max_gap_ms
        self.count = 0
        self._raw: list[tuple[int, int, float, bool]] | None = []  # kept as they came until there are too many
        self._b: dict[int, _Bucket] = {}
        self._prev_t: int | None = None

    def _index(self, t_ms: int) -> int:
        i = (t_ms - self.t0_ms) * self.buckets // (self.t1_ms - self.t0_ms)
        return min(max(i, 0), self.buckets - 1)

    def add(self, t_ms: int, value: float) -> None:
        gap = self.max_gap_ms is not None and self._prev_t is not None and t_ms - self._prev_t > self.max_gap_ms
        self._prev_t = t_ms
        n = self.count
        self.count += 1
        if self._raw is not None:
            self._raw.append((n, t_ms, value, gap))
            if len(self._raw) <= self.max_points:
                return
            raw, self._raw = self._raw, None
            for n, t, v, g in raw:
                self._bucket(n, t, v, g)
            return
        self._bucket(n, t_ms, value, gap)

    def _bucket(self, n: int, t_ms: int, value: float, gap: bool) -> None:
        s = (n, t_ms, value)
        i = self._index(t_ms)
        b = self._b.get(i)
        if b is None:
            self._b[i] = _Bucket(s, s, s, s, gap, False)
            return
        b.last = s
        b.gap_inside = b.gap_inside or gap
        if value < b.low[2]:
            b.low = s
        if value > b.high[2]:
            b.high = s

    def samples(self) -> list[Sample]:
        if self._raw is not None:
            return [Sample(t, v, n == 0 or g) for n, t, v, g in self._raw]
        out: list[Sample] = []
        for i in sorted(self._b):
            b = self._b[i]
            kept = sorted({b.first, b.low, b.high, b.last})
            for k, (_n, t, v) in enumerate(kept):
                if k == 0:
                    breaks = not out or b.gap_before
                else:
                    breaks = b.gap_inside and self.max_gap_ms is not None and t - kept[k - 1][1] > self.max_gap_ms
                out.append(Sample(t, v, breaks))
        return out


def downsample(
    points: Iterable[tuple[int, float]],
    t0_ms: int,
    t1_ms: int,
    max_points: int = MAX_POINTS,
    max_gap_ms: int | None = None,
) -> list[Sample]:
    d = Downsampler(t0_ms, t1_ms, max_points, max_gap_ms)
    for t, v in points:
        d.add(t, v)
    return d.samples()


# ------------------------------------------------------------------------------------------------------ scales


def _nice(span: float, target: int) -> float:
    """The smallest step of 1, 2 or 5 times a power of ten that cuts ``span`` into at most ``target + 2`` parts."""
    p = 10.0 ** math.floor(math.log10(span / target))
    return next(m * p for m in (1.0, 2.0, 5.0, 10.0, 20.0) if span / (m * p) <= target + 2 + 1e-9)


@dataclass(frozen=True, slots=True)
class Frame:
    """Maps time and value to viewBox coordinates."""

    t0_ms: int
    t1_ms: int
    lo: float
    hi: float

    def x(self, t_ms: int) -> float:
        t = min(max(t_ms, self.t0_ms), self.t1_ms)
        return LEFT + PLOT_W * (t - self.t0_ms) / max(self.t1_ms - self.t0_ms, 1)

    def y(self, value: float) -> float:
        return TOP + PLOT_H * (self.hi - value) / (self.hi - self.lo)


def value_ticks(vmin: float, vmax: float, *, integer: bool = False, target: int = 4) -> list[float]:
    """About ``target`` round tick values covering [vmin, vmax] (whole numbers only when ``integer``)."""
    if vmax < vmin:
        vmin, vmax = vmax, vmin
    if vmax == vmin:
        pad = 1.0 if integer or vmin == 0 else abs(vmin) * 0.1
        vmin, vmax = vmin - pad, vmax + pad
    step = _nice(vmax - vmin, target)
    if integer:
        step = max(1.0, round(step))
    lo = math.floor(vmin / step + 1e-9) * step
    hi = math.ceil(vmax / step - 1e-9) * step
    n = round((hi - lo) / step)
    return [round(lo + k * step, 9) for k in range(n + 1)]


def time_ticks(t0_ms: int, t1_ms: int, max_ticks: int = 8) -> list[int]:
    """Round UTC times (whole minutes, hours or days) inside [t0, t1], at most ``max_ticks`` of them."""
    span = max(t1_ms - t0_ms, 1)
    step = next((s for s in _TIME_STEPS if span / s <= max_ticks), _TIME_STEPS[-1])
    first = -(-t0_ms // step) * step
    return list(range(first, t1_ms + 1, step))


def time_label(t_ms: int) -> str:
    d = datetime.fromtimestamp(t_ms / 1000, UTC)
    return d.strftime("%m-%d") if (d.hour, d.minute) == (0, 0) else d.strftime("%H:%M")


def _fmt_value(v: float) -> str:
    if v == int(v):
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def _c(x: float) -> str:
    return f"{x:.1f}"


# ----------------------------------------------------------------------------------------------------- drawing


@dataclass(frozen=True, slots=True)
class RefLine:
    value: float
    label: str


def _svg(
    title: str,
    summary: str,
    frame: Frame,
    ticks: Sequence[float],
    unit: str,
    body: list[str],
    refs: Sequence[RefLine],
    css_class: str,
) -> str:
    t, s = escape(title), escape(summary)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {escape(css_class)}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="{t}: {s}" font-family="system-ui, sans-serif" font-size="13">',
        f"<title>{t}</title><desc>{s}</desc>",
        f'<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="#fff" stroke="#bbb"/>',
    ]
    for v in ticks:
        y = _c(frame.y(v))
        out.append(f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y}" y2="{y}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y}" text-anchor="end" dominant-baseline="middle">{_fmt_value(v)}</text>')
    for tick in time_ticks(frame.t0_ms, frame.t1_ms):
        x = _c(frame.x(tick))
        # a label centred on a tick near the right edge would be cut off by the viewBox: end it at the tick
        anchor = "end" if frame.x(tick) > WIDTH - TICK_LABEL_HALF_W else "middle"
        out.append(f'<line x1="{x}" x2="{x}" y1="{TOP}" y2="{TOP + PLOT_H}" stroke="#eee"/>')
        out.append(f'<text x="{x}" y="{TOP + PLOT_H + 16}" text-anchor="{anchor}">{time_label(tick)}</text>')
    out.append(f'<text x="{LEFT + PLOT_W}" y="{HEIGHT - 2}" text-anchor="end" fill="#666">UTC</text>')
    out.append(f'<text x="4" y="{TOP - 9}" fill="#666">{escape(unit)}</text>')
    for ref in refs:
        if frame.lo <= ref.value <= frame.hi:
            y = _c(frame.y(ref.value))
            out.append(
                f'<line class="ref" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y}" y2="{y}" stroke="#b07000"'
                f' stroke-dasharray="4 3"/>'
            )
            out.append(f'<text x="{LEFT + 4}" y="{y}" dy="-3" fill="#b07000">{escape(ref.label)}</text>')
    out.extend(body)
    out.append("</svg>")
    return "".join(out)


def _frame(
    values: Iterable[float], refs: Sequence[RefLine], t0_ms: int, t1_ms: int, integer: bool, zero: bool
) -> tuple[Frame, list[float]]:
    vals = [*values, *(r.value for r in refs)]
    if zero:
        vals.append(0.0)
    ticks = value_ticks(min(vals), max(vals), integer=integer) if vals else value_ticks(0, 1, integer=integer)
    return Frame(t0_ms, max(t1_ms, t0_ms + 1), ticks[0], ticks[-1]), ticks


def _no_data(frame: Frame) -> str:
    return (
        f'<text x="{LEFT + PLOT_W / 2:.1f}" y="{TOP + PLOT_H / 2:.1f}" text-anchor="middle" fill="#666">'
        "no data in this period</text>"
    )


def step_chart(
    start: float | None,
    steps: Sequence[Sample],
    t0_ms: int,
    t1_ms: int,
    *,
    title: str,
    unit: str,
    refs: Sequence[RefLine] = (),
    integer: bool = True,
) -> str:
    """A value that holds until it changes: ``start`` from ``t0_ms`` (None: unknown before the first step), then
    each sample's value from its time on, up to ``t1_ms``."""
    values = [s.value for s in steps] + ([start] if start is not None else [])
    frame, ticks = _frame(values, refs, t0_ms, t1_ms, integer, zero=True)
    body: list[str] = []
    if not values:
        body.append(_no_data(frame))
        summary = "no data"
    else:
        d: list[str] = []
        if start is not None:
            d.append(f"M{_c(frame.x(t0_ms))} {_c(frame.y(start))}")
        for s in steps:
            x, y = _c(frame.x(s.t_ms)), _c(frame.y(s.value))
            d.append(f"M{x} {y}" if not d else f"H{x}V{y}")
        d.append(f"H{_c(frame.x(t1_ms))}")
        body.append(f'<path class="series" d="{"".join(d)}" fill="none" stroke="#234" stroke-width="2"/>')
        first = start if start is not None else steps[0].value
        last = steps[-1].value if steps else first
        summary = (
            f"{_fmt_value(first)} at the start, {_fmt_value(last)} at the end,"
            f" lowest {_fmt_value(min(values))}, highest {_fmt_value(max(values))}, {len(steps)} changes shown"
        )
    return _svg(title, summary, frame, ticks, unit, body, refs, "step")


def line_chart(
    samples: Sequence[Sample],
    t0_ms: int,
    t1_ms: int,
    *,
    title: str,
    unit: str,
    refs: Sequence[RefLine] = (),
    integer: bool = False,
) -> str:
    """Samples joined by straight lines, broken where a sample ``breaks`` (a gap); a lone sample is a dot."""
    values = [s.value for s in samples]
    frame, ticks = _frame(values, refs, t0_ms, t1_ms, integer, zero=False)
    body: list[str] = []
    if not samples:
        body.append(_no_data(frame))
        summary = "no data"
    else:
        d: list[str] = []
        dots: list[str] = []
        for k, s in enumerate(samples):
            x, y = _c(frame.x(s.t_ms)), _c(frame.y(s.value))
            starts = k == 0 or s.breaks
            d.append(f"M{x} {y}" if starts else f"L{x} {y}")
            if starts and (k + 1 == len(samples) or samples[k + 1].breaks):
                dots.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="#234"/>')
        body.append(f'<path class="series" d="{"".join(d)}" fill="none" stroke="#234" stroke-width="2"/>')
        body.extend(dots)
        gaps = sum(1 for s in samples[1:] if s.breaks)
        summary = (
            f"{_fmt_value(values[0])} first, {_fmt_value(values[-1])} last, lowest {_fmt_value(min(values))},"
            f" highest {_fmt_value(max(values))}, {len(samples)} points shown, {gaps} gaps"
        )
    return _svg(title, summary, frame, ticks, unit, body, refs, "line")
