"""systemd's service protocol for the hub (sd_notify, through the ``sdnotify`` package): ``READY=1`` once the hub
runs, ``WATCHDOG=1`` every half ``WatchdogSec`` while it is healthy, ``STOPPING=1`` on the way out.

Healthy means the event loop runs (this task does) and the ledger's writer takes and finishes a transaction within
the interval: a wedged writer or loop stops the feeding, and systemd restarts the hub. Outside systemd (no
``NOTIFY_SOCKET``) nothing is sent and nothing is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

from sdnotify import SystemdNotifier  # type: ignore[import-untyped]

log = logging.getLogger(__name__)


class Watchdog:
    """``healthy`` is awaited once per interval; True feeds the watchdog."""

    def __init__(self, healthy: Callable[[], Awaitable[bool]]) -> None:
        self._healthy = healthy
        self._notifier = SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        self.interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ours else None

    def notify(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    async def run(self, stop: asyncio.Event) -> None:
        """Feed the watchdog until ``stop`` is set (returns at once when systemd asked for none)."""
        interval = self.interval_s
        if self._notifier is None or interval is None:
            return
        loop = asyncio.get_running_loop()
        tick = loop.time()
        while not stop.is_set():
            # On a fixed schedule: a check that takes most of an interval still leaves the next feed within
            # two intervals (WatchdogSec) of this one.
            tick += interval
            try:
                ok = await asyncio.wait_for(self._healthy(), 0.9 * interval)
            except TimeoutError:
                ok = False
            if ok:
                self.notify("WATCHDOG=1")
            else:
                log.error("watchdog: the ledger did not answer within %.1f s; not feeding systemd's watchdog", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, tick - loop.time()))
