"""What the tests with emulated boards share: waiting for a condition while the emulator host keeps polling."""

from __future__ import annotations

import time
from collections.abc import Callable

from tools.emulation.host import Emulator


def wait_until(
    cond: Callable[[], object], emu: Emulator, timeout_s: float = 20.0, what: str = "", step_s: float = 0.05
) -> None:
    """Poll the emulator (its boards' events, the ground truth) until ``cond()`` is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        emu.poll()
        if cond():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what or cond}")
