"""Pin-level HX711 emulator on virtual time, driven by a pluggable load model.

``HX711Chip(clock, source)`` exposes ``.sck`` and ``.dout``, two objects with machine.Pin's digital API
(``value()``, ``value(v)``, ``pin()``, ``pin(v)``, ``on()``, ``off()``), so a driver written for a board takes
them in place of real pins. Time is a ``VirtualClock`` the driver also uses (``ticks_us``, ``ticks_diff``,
``sleep_us``): nothing here depends on the host's speed, and a test can measure timing to the microsecond.

What the chip model does (datasheet behaviour; section 6 of DESIGN.md):

* Conversions complete every 1/rate (10 or 80 SPS). When one completes, DOUT goes low and the output register
  holds it; a newer conversion overwrites an unread one (counted in ``missed``).
* Each SCK rising edge shifts the next bit out on DOUT, MSB first; the host samples it any time before the next
  rising edge. Pulses 25, 26 and 27 pull DOUT high and select channel A gain 128, channel B gain 32 and
  channel A gain 64 respectively; the selection applies to the first conversion that completes after the read
  (more than 27 pulses count as 27; the datasheet calls that a communication error). The output is 24-bit
  two's complement and saturates at 0x7FFFFF / 0x800000.
* SCK held high for more than 60 us powers the chip down: DOUT high, no conversions, any read in progress is
  lost. SCK going low again resets it: channel A gain 128, and the first conversion is ready only after the
  settling time (400 ms at 10 SPS, 50 ms at 80 SPS).
* Reading while not ready (DOUT high) yields ones, so a driver that ignores DOUT reads 0xFFFFFF (-1), the
  symptom commonly reported for real chips: while settling, a new "read" of ones starts; right after a
  completed read, the extra pulses continue that read (DOUT stays high) and count as gain pulses, more than
  27 as 27 (the datasheet calls more than 27 a communication error). A conversion that completes in the
  middle of a read abandons it and latches the new word (DOUT low); the host then reads a mix of two words.
  These are plausible models of undocumented behaviour, not measurements.

What it does not model: the analog front end (the gram-level physics live in the ``source``), the
unsettled output for a few conversions after a gain or channel change (the datasheet's settling note covers
that case too; here the first conversion after the change is already exact), the internal oscillator's
tolerance (the rate is exact), setup/hold times below 1 us, and power-supply effects.

Fault injection: ``disconnect(STUCK_HIGH | STUCK_LOW | FLOATING)`` (the sensor is unplugged: DOUT reads high,
low, or a new pseudo-random level at every access, which is harsher than a real floating input that drifts
slowly; SCK edges reach nothing), ``reconnect()`` (power-on reset with settling),
``pin_cost_us`` (every pin access advances virtual time, modelling a slow GPIO call), ``stretch(pulse, us)``
(one clock-high phase made longer, as by an interrupt) and ``hook`` (called after every rising edge).

The per-edge path allocates nothing on the MicroPython heap (integer arithmetic on small ints, preallocated
state) as long as the source's ``counts`` does not either (``ArraySource`` does not) and virtual time stays
below 2**30 us (about 17.9 min; later timestamps are long ints on 32-bit ports: still correct, not
allocation-free). Portable: runs unchanged under CPython and MicroPython.
"""

from firmware.ticks import TICKS_MAX
from firmware.ticks import ticks_add as _ticks_add
from firmware.ticks import ticks_diff as _ticks_diff
from tools.emulation.prng import XorShift32

TYPE_CHECKING = False
if TYPE_CHECKING:

    def const(x: int) -> int: ...

    from collections.abc import Callable
    from typing import Protocol

    class Source(Protocol):
        def counts(self, t_us: int, gain: int, channel: int) -> int:
            """Raw counts (before 24-bit saturation) for a conversion completing at ``t_us``."""
            ...

    Hook = Callable[["HX711Chip", int], None]
else:
    from shared_protocol.compat import const


# Wiring states for disconnect().
LINKED = const(0)
STUCK_HIGH = const(1)  # DOUT pulled up, or the chip unpowered behind a pull-up: reads as "never ready"
STUCK_LOW = const(2)  # DOUT shorted low: reads as "always ready", data all zeros
FLOATING = const(3)  # DOUT floating: pseudo-random levels

POWER_DOWN_US = const(60)
_POS_MAX = const(0x7FFFFF)
_NEG_MIN = const(-0x800000)
_MASK24 = const(0xFFFFFF)
_SIGN24 = const(0x800000)
_WRAP24 = const(0x1000000)

# Input selection: the number of pulses after the 24 data bits.
_SEL_A128 = const(1)
_SEL_B32 = const(2)
_SEL_A64 = const(3)


def gain_of(sel: int) -> int:
    """The gain selected by 1, 2 or 3 pulses after the data bits (0 for "no valid conversion")."""
    if sel == _SEL_A128:
        return 128
    if sel == _SEL_B32:
        return 32
    if sel == _SEL_A64:
        return 64
    return 0


class VirtualClock:
    """Virtual microseconds with MicroPython's ``time`` API: ticks wrap at 2**30 and ``ticks_diff`` handles it.

    ``now`` is the elapsed time since creation (never wraps; the emulator's timeline). ``ticks_us`` starts at
    ``start_us`` (choose one near 2**30 to exercise wrap-around) and advances ``tick_cost_us`` per call, which
    models the time a call takes. Time otherwise moves only by ``sleep_us`` / ``sleep_ms`` / ``advance`` and by
    the pin accesses of an emulated chip that charges a cost.
    """

    def __init__(self, start_us: int = 0, tick_cost_us: int = 0) -> None:
        self.now = 0
        self._ticks = start_us & TICKS_MAX
        self.tick_cost_us = tick_cost_us

    def advance(self, us: int) -> None:
        if us <= 0:
            return
        self.now += us
        self._ticks = _ticks_add(self._ticks, us)  # no intermediate beyond the small-int range

    def ticks_us(self) -> int:
        c = self.tick_cost_us
        if c:
            self.advance(c)
        return self._ticks

    def ticks_ms(self) -> int:
        return (self.now // 1000) & TICKS_MAX

    # The firmware's own tick arithmetic: the emulated clock wraps exactly as the board's does.
    ticks_diff = staticmethod(_ticks_diff)
    ticks_add = staticmethod(_ticks_add)

    def sleep_us(self, us: int) -> None:
        self.advance(us)

    def sleep_ms(self, ms: int) -> None:
        self.advance(ms * 1000)


class SckPin:
    """The PD_SCK input as the host sees its GPIO output: machine.Pin's digital API."""

    def __init__(self, chip: "HX711Chip") -> None:
        self._chip = chip

    def value(self, v: object = None) -> int | None:
        if v is None:
            return self._chip._sck
        self._chip._drive_sck(1 if v else 0)
        return None

    def __call__(self, v: object = None) -> int | None:
        if v is None:
            return self._chip._sck
        self._chip._drive_sck(1 if v else 0)
        return None

    def on(self) -> None:
        self._chip._drive_sck(1)

    def off(self) -> None:
        self._chip._drive_sck(0)

    def init(self, *args: object, **kwargs: object) -> None:
        """Accepted and ignored (the mode of an emulated pin is fixed)."""


class DoutPin:
    """The DOUT output as the host sees its GPIO input: reading returns the line level; writes are ignored."""

    def __init__(self, chip: "HX711Chip") -> None:
        self._chip = chip

    def value(self, v: object = None) -> int | None:
        if v is None:
            return self._chip._read_dout()
        return None

    def __call__(self, v: object = None) -> int | None:
        if v is None:
            return self._chip._read_dout()
        return None

    def on(self) -> None:
        """An input pin: driving it does nothing."""

    def off(self) -> None:
        """An input pin: driving it does nothing."""

    def init(self, *args: object, **kwargs: object) -> None:
        """Accepted and ignored (the mode of an emulated pin is fixed)."""


class HX711Chip:
    """One HX711 on two wires. Statistics (read them freely, all ints or bools):

    ``conversions`` completed, ``missed`` (overwritten before being read), ``reads`` (reads that shifted all
    24 bits), ``last_read`` / ``last_read_gain`` (the signed value and gain of the last such read; gain 0 when
    it was clocked while not ready), ``power_downs``, ``resets`` (power-up resets after a power-down or a
    reconnect), ``powered``, ``link``.
    """

    def __init__(
        self,
        clock: VirtualClock,
        source: "Source",
        rate_sps: int = 80,
        pin_cost_us: int = 0,
        seed: int = 0xACE1,
    ) -> None:
        if rate_sps == 80:
            self.period_us = 12500
            self.settle_us = 50000
        elif rate_sps == 10:
            self.period_us = 100000
            self.settle_us = 400000
        else:
            raise ValueError("rate_sps must be 10 or 80")
        self.clock = clock
        self.source = source
        self.rate_sps = rate_sps
        self.pin_cost_us = pin_cost_us
        self.hook: Hook | None = None
        self.sck = SckPin(self)
        self.dout = DoutPin(self)
        self.powered = True
        self.link = LINKED
        self.conversions = 0
        self.missed = 0
        self.reads = 0
        self.last_read = 0
        self.last_read_gain = 0
        self.power_downs = 0
        self.resets = 0
        self._sck = 0
        self._rise_t = 0
        self._dout = 1
        self._ready = 0
        self._word = 0
        self._word_sel = _SEL_A128
        self._sel = _SEL_A128
        self._pending = 0
        self._shift = 0
        self._shift_sel = 0
        self._nbits = 0
        self._next_conv = 0
        self._stretch_pulse = 0
        self._stretch_us = 0
        self._lfsr = (seed & 0xFFFF) or 0xACE1
        self._reset(clock.now)
        self.resets = 0  # the power-on at creation is not counted

    # -- what a test may look at ------------------------------------------------------------------
    def selected_gain(self) -> int:
        """The gain the next conversion will use (a finished read's pulses count already)."""
        self.sync()
        return gain_of(self._pending or self._sel)

    def word_gain(self) -> int:
        """The gain of the conversion now in the output register."""
        self.sync()
        return gain_of(self._word_sel)

    def sync(self) -> None:
        """Bring the chip up to the clock's time (a pin access does this; tests may call it directly)."""
        self._sync(self.clock.now)

    # -- fault injection --------------------------------------------------------------------------
    def disconnect(self, mode: int = STUCK_HIGH) -> None:
        """Unplug the sensor: DOUT reads high, low or floating; the chip loses power and state."""
        if mode not in (STUCK_HIGH, STUCK_LOW, FLOATING):
            raise ValueError("mode must be STUCK_HIGH, STUCK_LOW or FLOATING")
        self.link = mode
        self.powered = False
        self._ready = 0
        self._nbits = 0
        self._pending = 0
        self._dout = 1

    def reconnect(self) -> None:
        """Plug it back in: a power-on reset, first data after the settling time."""
        if self.link == LINKED:
            return
        self.link = LINKED
        now = self.clock.now
        self._rise_t = now
        self._reset(now)

    def stretch(self, pulse: int, us: int) -> None:
        """Make the high phase of the next read's ``pulse``-th clock pulse (1-based) ``us`` longer, once."""
        self._stretch_pulse = pulse
        self._stretch_us = us

    # -- the chip ---------------------------------------------------------------------------------
    def _reset(self, now: int) -> None:
        self.powered = True
        self.resets += 1
        self._sel = _SEL_A128
        self._pending = 0
        self._nbits = 0
        self._ready = 0
        self._dout = 1
        self._next_conv = now + self.settle_us

    def _power_down(self) -> None:
        self.powered = False
        self.power_downs += 1
        self._ready = 0
        self._nbits = 0
        self._pending = 0
        self._dout = 1

    def _sync(self, now: int) -> None:
        """Bring the chip up to ``now``: power-down by a long clock-high phase, completed conversions."""
        if self.link or not self.powered:
            return
        if self._sck and now - self._rise_t > POWER_DOWN_US:
            self._power_down()
            return
        nc = self._next_conv
        if now < nc:
            return
        p = self.period_us
        k = (now - nc) // p
        t = nc + k * p
        self._next_conv = t + p
        self.conversions += k + 1
        self.missed += k + self._ready
        if self._pending:
            self._sel = self._pending
            self._pending = 0
        self._nbits = 0
        self._word = self._convert(t)
        self._word_sel = self._sel
        self._ready = 1
        self._dout = 0

    def _convert(self, t: int) -> int:
        sel = self._sel
        if sel == _SEL_A128:
            c = self.source.counts(t, 128, 0)
        elif sel == _SEL_A64:
            c = self.source.counts(t, 64, 0)
        else:
            c = self.source.counts(t, 32, 1)
        if c > _POS_MAX:
            c = _POS_MAX
        elif c < _NEG_MIN:
            c = _NEG_MIN
        return c & _MASK24

    def _drive_sck(self, level: int) -> None:
        clock = self.clock
        if self.pin_cost_us:
            clock.advance(self.pin_cost_us)
        if level == self._sck:
            return
        now = clock.now
        self._sync(now)
        if level:
            self._sck = 1
            self._rise_t = now
            if self.powered and not self.link:
                self._rise()
        else:
            self._sck = 0
            if not self.powered and not self.link:
                self._reset(now)

    def _rise(self) -> None:
        n = self._nbits
        if n == 0:
            if self._ready:
                self._shift = self._word
                self._shift_sel = self._word_sel
                self._ready = 0
            else:
                self._shift = _MASK24
                self._shift_sel = 0
        if n < 24:
            self._dout = (self._shift >> (23 - n)) & 1
            if n == 23:
                self.reads += 1
                w = self._shift
                self.last_read = w - _WRAP24 if w & _SIGN24 else w
                self.last_read_gain = gain_of(self._shift_sel)
        else:
            self._dout = 1
            self._pending = n - 23 if n < 26 else _SEL_A64
        n += 1
        self._nbits = n
        if self._stretch_pulse == n:
            self._stretch_pulse = 0
            self.clock.advance(self._stretch_us)
        if self.hook is not None:
            self.hook(self, n)

    def _read_dout(self) -> int:
        clock = self.clock
        if self.pin_cost_us:
            clock.advance(self.pin_cost_us)
        link = self.link
        if link == LINKED:
            self._sync(clock.now)
            return self._dout
        if link == STUCK_HIGH:
            return 1
        if link == STUCK_LOW:
            return 0
        s = self._lfsr  # 16-bit Galois LFSR: small ints only
        b = s & 1
        s >>= 1
        if b:
            s ^= 0xB400
        self._lfsr = s
        return b


class ArraySource:
    """Replays precomputed counts, one per conversion, cycling; gain and channel are ignored.

    Allocation-free per call, for tests that measure the heap.
    """

    def __init__(self, values: "list[int]") -> None:
        if not values:
            raise ValueError("ArraySource needs at least one value")
        self.values = list(values)
        self._n = len(self.values)
        self.index = 0
        self.calls = 0

    def counts(self, t_us: int, gain: int, channel: int) -> int:
        i = self.index
        v = self.values[i]
        i += 1
        if i == self._n:
            i = 0
        self.index = i
        self.calls += 1
        return v


class LoadCellSource:
    """Grams on a load cell -> raw counts, the electrical side of the model (integer arithmetic throughout).

    ``counts = ((offset + drift + temp_coeff * dT + round(grams * counts_per_g)) scaled by gain) + noise + spikes``

    * ``grams_at``: a number (constant load) or a callable ``t_us -> grams`` (int or float). The gram-level
      physics (items, hands, creep) belong to that callable; give it exact values (ints, or floats that are
      the same on both runtimes) to get identical counts under CPython and MicroPython.
    * ``counts_per_g`` and ``offset``/``offset_b``: at gain 128, channel A (B). ~420 counts/g for a 5 kg cell.
    * Gain: counts are specified at gain 128; gain 64 halves the bridge signal and offset, channel B (fixed
      gain 32) quarters them (the same bridge is assumed wired to both inputs unless ``grams_at_b`` is given).
    * ``noise_counts``: white noise (standard deviation, counts) added at the ADC output at every gain, so it is
      2x (4x) larger in grams at gain 64 (32), close to the datasheet's input-referred 50 vs 90 nV.
    * Quantisation: whole counts (round half to even); 24-bit saturation is the chip's.
    * ``drift_counts_per_h``: slow linear drift of the zero; ``temp_coeff`` (counts per degree C at gain 128)
      times the temperature deviation: a triangle wave of ``temp_swing_mc`` milli-degrees over
      ``temp_period_s``, or ``temp_mc_at(t_us)`` when given.
    * ``spike_ppm``: probability per conversion (parts per million) of a +-``spike_counts`` glitch.
    * ``seed``: the xorshift32 seed; the same seed gives the same counts on both runtimes.
    """

    def __init__(
        self,
        grams_at: "Callable[[int], float] | float" = 0,
        counts_per_g: int = 420,
        offset: int = 0,
        offset_b: int | None = None,
        noise_counts: int = 0,
        temp_coeff: int = 0,
        temp_swing_mc: int = 0,
        temp_period_s: int = 3600,
        temp_mc_at: "Callable[[int], int] | None" = None,
        drift_counts_per_h: int = 0,
        spike_ppm: int = 0,
        spike_counts: int = 0,
        grams_at_b: "Callable[[int], float] | float | None" = None,
        seed: int = 1,
    ) -> None:
        if temp_period_s <= 0:
            raise ValueError("temp_period_s must be positive")
        self.grams_at = grams_at
        self.grams_at_b = grams_at if grams_at_b is None else grams_at_b
        self.counts_per_g = counts_per_g
        self.offset = offset
        self.offset_b = offset if offset_b is None else offset_b
        self.noise_counts = noise_counts
        self.temp_coeff = temp_coeff
        self.temp_swing_mc = temp_swing_mc
        self.temp_period_us = temp_period_s * 1000000
        self.temp_mc_at = temp_mc_at
        self.drift_counts_per_h = drift_counts_per_h
        self.spike_ppm = spike_ppm
        self.spike_counts = spike_counts
        self.spikes = 0
        self._rng = XorShift32(seed)

    def temp_mc(self, t_us: int) -> int:
        """Temperature deviation from calibration, milli-degrees C."""
        if self.temp_mc_at is not None:
            return self.temp_mc_at(t_us)
        a = self.temp_swing_mc
        if not a:
            return 0
        p = self.temp_period_us
        h = p // 2
        x = (t_us + p // 4) % p  # starts at 0, rising
        if x < h:
            return -a + 2 * a * x // h
        return a - 2 * a * (x - h) // h

    def grams(self, t_us: int, channel: int = 0) -> float:
        g = self.grams_at_b if channel else self.grams_at
        if callable(g):
            return g(t_us)
        return g

    def counts(self, t_us: int, gain: int, channel: int) -> int:
        c = round(self.grams(t_us, channel) * self.counts_per_g)
        c += self.offset_b if channel else self.offset
        if self.drift_counts_per_h:
            c += self.drift_counts_per_h * t_us // 3600000000
        if self.temp_coeff:
            c += self.temp_coeff * self.temp_mc(t_us) // 1000
        if gain == 64:
            c >>= 1
        elif gain == 32:
            c >>= 2
        rng = self._rng
        if self.noise_counts:
            c += rng.gauss(self.noise_counts)
        if self.spike_ppm and rng.below(1000000) < self.spike_ppm:
            self.spikes += 1
            c += self.spike_counts if rng.next() & 1 else -self.spike_counts
        return c
