"""HX711 24-bit load-cell ADC: a GPIO bit-bang driver that never hangs and never allocates per sample.

Wiring: ``HX711(Pin(sck, Pin.OUT, value=0), Pin(dout, Pin.IN, Pin.PULL_UP))``. The pull-up on DOUT makes a
missing sensor read as "never ready" (a clean timeout) instead of floating levels.

Protocol (datasheet): DOUT goes low when a conversion is ready (10 or 80 samples/s, set by the RATE pin);
24 SCK pulses shift the value out MSB first as two's complement; 1, 2 or 3 more pulses select channel A
gain 128, channel B gain 32 or channel A gain 64 *for the next conversion*. SCK held high for more than
60 us powers the chip down; SCK low again resets it to channel A gain 128, and the first conversion after
that needs the settling time (400 ms at 10 SPS, 50 ms at 80 SPS).

Robustness:

* Every wait is bounded twice: by time (``ready_timeout_ms``) and by a poll count, so a stuck clock
  cannot hang it either. The timeout must cover the settling time plus one conversion period
  (the default 500 ms covers both rates).
* A read that times out, or that looks wrong, returns None, sets ``fault`` and counts it; the driver then
  power-cycles the chip (SCK high past 60 us, then low) so the next read starts from a known state
  (channel A, gain 128, settling). The next successful read clears ``fault``.
* Each clock pulse is timed: if any SCK-high window may have exceeded ``max_high_us`` (the datasheet's 50 us
  maximum high time; the chip powers down after 60 us) the value is discarded as a glitch rather than
  returned wrong. The window measured is a bound on the high phase, so the check errs towards discarding.
* DOUT must still be high after each gain pulse (the chip drives it high from the 25th pulse until the
  next conversion): a line stuck low is reported instead of read as 0.
* On a board the 24+N pulses run with interrupts disabled (``machine.disable_irq``) so an interrupt
  cannot stretch a high phase; pass ``irq=False`` to skip that, or an object with ``disable_irq()`` /
  ``enable_irq(state)`` to supply your own guard.

Limits: a sensor that drops out in the middle of a read with DOUT pulled high yields one wrong value (its
remaining bits read as ones); the following read times out and raises the fault. Floating DOUT without
a pull-up produces random levels that pass the checks now and then.

The read path allocates nothing on the MicroPython heap: small-int arithmetic, bound methods cached at
construction, counters that wrap below 2**30.
"""

from firmware.ticks import COUNTER_MASK
from shared_protocol.compat import const

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol, overload

    class _Pin(Protocol):
        @overload
        def value(self) -> int: ...
        @overload
        def value(self, __x: Any) -> None: ...

    class _Clock(Protocol):
        def ticks_us(self) -> int: ...
        def ticks_diff(self, __a: int, __b: int) -> int: ...
        def sleep_us(self, __us: int) -> None: ...


DEFAULT_TIMEOUT_MS = const(500)
DEFAULT_POLL_US = const(100)
MAX_HIGH_US = const(50)  # datasheet T3 maximum; the chip powers down after 60 us
_POWER_DOWN_HOLD_US = const(80)
_SIGN = const(0x800000)
_WRAP = const(0x1000000)
_MAX_TIMEOUT_MS = const(500000)  # ticks_diff is valid up to 2**29 us


def _pulses_for(gain: int) -> int:
    if gain == 128:
        return 1
    if gain == 32:
        return 2
    if gain == 64:
        return 3
    raise ValueError("gain must be 128, 64 or 32")


class HX711:
    """One HX711. Counters (wrap at 2**30): ``reads`` (values returned), ``faults`` = ``timeouts`` +
    ``glitches``, ``discarded`` (conversions made with a previous gain and skipped). ``fault`` is True from a
    failed read until the next successful one.
    """

    def __init__(
        self,
        clock_pin: "_Pin",
        data_pin: "_Pin",
        gain: int = 128,
        clock: "_Clock | None" = None,
        ready_timeout_ms: int = DEFAULT_TIMEOUT_MS,
        poll_us: int = DEFAULT_POLL_US,
        irq: "Any" = None,
        max_high_us: int = MAX_HIGH_US,
    ) -> None:
        if not 0 < ready_timeout_ms <= _MAX_TIMEOUT_MS:
            raise ValueError("ready_timeout_ms out of range")
        if poll_us < 1:
            raise ValueError("poll_us must be >= 1")
        c: "Any" = clock
        if c is None:
            import time  # MicroPython's time has ticks_us, ticks_diff, sleep_us

            c = time
        self._clk = clock_pin.value
        self._dout = data_pin.value
        self._ticks = c.ticks_us
        self._diff = c.ticks_diff
        self._sleep = c.sleep_us
        if irq is None:
            try:
                import machine  # type: ignore[import-not-found, unused-ignore]

                irq = machine
            except ImportError:  # CPython, the WebAssembly runtime
                irq = False
        self._irq_off = irq.disable_irq if irq else None
        self._irq_on = irq.enable_irq if irq else None
        self._timeout_us = ready_timeout_ms * 1000
        self._poll_us = poll_us
        self._max_polls = self._timeout_us // poll_us + 2
        self._max_high_us = max_high_us
        self.gain = 128
        self._pulses = 1
        self._conv_gain = 128  # the gain of the conversion the chip will hand out next
        self._last_gain = 128  # the gain of the conversion the last shift-in returned
        self._down = False
        self.fault = False
        self.faults = 0
        self.timeouts = 0
        self.glitches = 0
        self.reads = 0
        self.discarded = 0
        self.set_gain(gain)
        # SCK low: the chip runs. If it was held powered down, this resets it (channel A, gain 128).
        self._clk(0)

    def set_gain(self, gain: int) -> None:
        """Select 128 or 64 (channel A) or 32 (channel B).

        As on the chip, the new setting applies from the next conversion: the pulses that select it go out
        at the end of the next read. ``read()`` returns only values converted at the gain set here, so the
        first ``read()`` after a change skips the conversion made with the old setting (counted in
        ``discarded``) and takes about one conversion period longer.

        The datasheet also lists a gain or channel change among the events that need the settling time
        (4 conversion periods). Values in that window may not be fully settled on a real chip (the emulator
        does not model it): a caller that switches gain at run time, rather than once at boot, should
        discard reads for that long.
        """
        self._pulses = _pulses_for(gain)
        self.gain = gain

    def ready(self) -> bool:
        """True when a conversion is waiting (DOUT low): ``read()`` will not wait."""
        return not self._down and not self._dout()

    def power_down(self) -> None:
        """Hold SCK high (the chip powers down after 60 us; this waits 80 us so it surely has)."""
        self._clk(0)
        self._clk(1)
        self._sleep(_POWER_DOWN_HOLD_US)
        self._down = True

    def power_up(self) -> None:
        """SCK low: the chip resets to channel A gain 128; first data after the settling time."""
        self._clk(0)
        self._down = False
        self._conv_gain = 128

    def read(self) -> "int | None":
        """The next conversion as a signed 24-bit int at ``self.gain``, or None (see ``fault``).

        Waits for data-ready up to ``ready_timeout_ms`` (twice at most, right after a gain change or reset).
        Returns None without a fault while powered down.
        """
        if self._down:
            return None
        v = self._shift_in()
        if v is not None and self._last_gain != self.gain:
            # That conversion was made with the previous setting; this read sent the new pulses.
            self.discarded = (self.discarded + 1) & COUNTER_MASK
            v = self._shift_in()
        if v is None:
            return None
        self.reads = (self.reads + 1) & COUNTER_MASK
        self.fault = False
        return v

    def _shift_in(self) -> "int | None":
        dout = self._dout
        ticks = self._ticks
        diff = self._diff
        t0 = ticks()
        n = self._max_polls
        # Ready means DOUT low on two consecutive samples: a short spike on the line must not start a read
        # while the chip is not ready (the bits would all read as ones: -1, a plausible value).
        while dout() or dout():
            if n <= 0 or diff(ticks(), t0) > self._timeout_us:
                self.timeouts = (self.timeouts + 1) & COUNTER_MASK
                self._fail()
                return None
            n -= 1
            self._sleep(self._poll_us)
        clk = self._clk
        lim = self._max_high_us
        off = self._irq_off
        state = off() if off is not None else 0
        bad = False
        v = 0
        i = 24
        while i:
            t = ticks()
            clk(1)
            clk(0)
            if diff(ticks(), t) > lim:
                bad = True
            v = (v << 1) | dout()
            i -= 1
        i = self._pulses
        while i:
            t = ticks()
            clk(1)
            clk(0)
            if diff(ticks(), t) > lim or not dout():
                bad = True
            i -= 1
        on = self._irq_on
        if on is not None:
            on(state)
        self._last_gain = self._conv_gain
        if bad:
            self.glitches = (self.glitches + 1) & COUNTER_MASK
            self._fail()
            return None
        self._conv_gain = self.gain
        if v & _SIGN:
            v -= _WRAP
        return v

    def _fail(self) -> None:
        self.fault = True
        self.faults = (self.faults + 1) & COUNTER_MASK
        # Power-cycle so the chip is in a known state whatever happened: channel A, gain 128, settling.
        clk = self._clk
        clk(1)
        self._sleep(_POWER_DOWN_HOLD_US)
        clk(0)
        self._conv_gain = 128
