"""The 2**30 wrap of ticks, timestamps and counters: defined here once, for the whole firmware.

MicroPython's ``time.ticks_ms()`` / ``ticks_us()`` count modulo 2**30: the period is the small-int range of a
32-bit port (31-bit signed small ints, ``MP_SMALL_INT_POSITIVE_MASK + 1``), so a tick value is never a long int
and never allocates. The firmware keeps every timestamp in that range and lets counters that must stay
allocation-free wrap at the same bound (``COUNTER_MASK``).

``ticks_diff`` and ``ticks_add`` are MicroPython's ``time.ticks_diff`` / ``time.ticks_add``, exact for any ints
and, unlike the textbook ``((a - b + half) & mask) - half``, allocation-free for ticks in ``0 .. TICKS_MAX`` and
deltas in ``-TICKS_MAX .. TICKS_MAX``: no intermediate leaves the small-int range on a 32-bit port. They also
serve CPython (tests, the hub's replay tool) and the emulated board's virtual clock.

Cost on MicroPython: a ``const`` is folded into the bytecode only inside the module that defines it; imported
by name (``from firmware.ticks import TICKS_MAX``) it is a global lookup (a cached dict lookup, no allocation).
The per-sample path reads one per sample in ``Detector.feed`` and ``Lane.sample`` and one per read in
``HX711.read``; the detector's interval check reads none unless time wrapped or jumped. The functions here use
the folded constants.
"""

from shared_protocol.compat import const

TICKS_MAX = const(0x3FFFFFFF)  # ticks run 0 .. TICKS_MAX, then wrap to 0 (2**30 - 1, the largest small int)
TICKS_HALF = const(0x20000000)  # 2**29: a difference at or beyond this is negative (time went backwards)
COUNTER_MASK = const(TICKS_MAX)  # statistics counters wrap here, so they stay small ints


def ticks_diff(a: int, b: int) -> int:
    """``a - b`` for tick values: in ``-TICKS_HALF .. TICKS_HALF - 1`` (2**29 ms is 6.2 days)."""
    d = (a - b) & TICKS_MAX
    if d >= TICKS_HALF:
        return d - TICKS_MAX - 1
    return d


def ticks_add(t: int, delta: int) -> int:
    """``t + delta`` modulo 2**30 (``delta`` may be negative)."""
    room = TICKS_MAX - t
    if delta > room:
        return (delta - room - 1) & TICKS_MAX
    return (t + delta) & TICKS_MAX
