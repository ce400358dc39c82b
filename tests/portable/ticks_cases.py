"""Portable bodies for firmware/ticks.py (the 2**30 wrap); run under CPython and MicroPython."""

from firmware.ticks import COUNTER_MASK, TICKS_HALF, TICKS_MAX, ticks_add, ticks_diff

EDGES = [0, 1, 2, 999, TICKS_HALF - 2, TICKS_HALF - 1, TICKS_HALF, TICKS_HALF + 1]
EDGES += [TICKS_MAX - 999, TICKS_MAX - 1, TICKS_MAX]
DELTAS = [0, 1, -1, 2, -2, 1000, -1000, TICKS_HALF - 1, TICKS_HALF, -TICKS_HALF, TICKS_MAX - 1, TICKS_MAX, -TICKS_MAX]


def constants():
    return [TICKS_MAX, TICKS_HALF, COUNTER_MASK]


def table():
    """ticks_diff over every pair of edge ticks and ticks_add over every edge tick and delta."""
    diffs = [[a, b, ticks_diff(a, b)] for a in EDGES for b in EDGES]
    adds = [[t, d, ticks_add(t, d)] for t in EDGES for d in DELTAS]
    return {"diff": diffs, "add": adds}


def allocation_free():
    """Both functions at every edge with the heap locked (MicroPython only), and the textbook
    ``((a - b + half) & mask) - half``, which the measurement must catch allocating at the wrap."""
    import micropython

    ok = True
    micropython.heap_lock()
    try:
        for a in EDGES:
            for b in EDGES:
                ticks_diff(a, b)
            for d in DELTAS:
                ticks_add(a, d)
    except MemoryError:
        ok = False
    textbook = True
    a = TICKS_MAX
    b = 0
    try:
        ((a - b + TICKS_HALF) & TICKS_MAX) - TICKS_HALF
    except MemoryError:
        textbook = False
    micropython.heap_unlock()
    return {"ok": ok, "textbook_allocation_free": textbook}
