"""firmware/ticks.py: the one definition of the 2**30 tick wrap, on CPython and real MicroPython."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from firmware.ticks import TICKS_HALF, TICKS_MAX, ticks_add, ticks_diff

M = "tests.portable.ticks_cases"
PERIOD = 2**30


def _diff(a: int, b: int) -> int:
    return (a - b + PERIOD // 2) % PERIOD - PERIOD // 2


def test_constants_are_micropythons_tick_period(runtime: Any) -> None:
    assert runtime.call(M, "constants") == [PERIOD - 1, PERIOD // 2, PERIOD - 1]


def test_diff_and_add_at_the_wrap(runtime: Any) -> None:
    r = runtime.call(M, "table")
    assert all(d == _diff(a, b) for a, b, d in r["diff"]), r["diff"]
    assert all(s == (t + d) % PERIOD for t, d, s in r["add"]), r["add"]
    assert all(-TICKS_HALF <= d < TICKS_HALF for _, _, d in r["diff"])


def test_identical_on_both_runtimes(mpy: Any) -> None:
    from tests.conftest import CPythonRuntime

    assert CPythonRuntime().call(M, "table") == mpy.call(M, "table")


def test_allocation_free_at_the_wrap(mpy: Any) -> None:
    assert mpy.call(M, "allocation_free") == {"ok": True, "textbook_allocation_free": False}


@given(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40))
def test_exact_for_any_ints(a: int, b: int) -> None:
    assert ticks_diff(a, b) == _diff(a, b)
    assert ticks_add(a, b) == (a + b) % PERIOD
    assert ticks_add(b, ticks_diff(a, b)) == a & TICKS_MAX  # add undoes diff
