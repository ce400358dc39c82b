"""The hub (``python -m tests.faults.commit_kill hub run ...``, the arguments of ``python -m hub.cli``) with a fault
switch in its ledger writer, for the fault tests: a signal arms a SIGKILL aimed at the next commit that books node
events, and the process dies there, as a hub whose power or process goes at the worst moment.

* SIGUSR1: **during** the commit. A timer thread sends the SIGKILL a random part of a typical commit's duration
  (the median of the last ones) after the COMMIT statement starts in the writer's thread, so it lands while SQLite
  writes and syncs the WAL (or, for a quick commit, just after it, before anything was acknowledged).
* SIGUSR2: **after** the commit: COMMIT returned (the transaction is durable) and the process dies before any
  caller hears of it: no ack leaves, the node sends those events again, the next hub must find them booked.

Each kill is announced on stderr first (``commit kill: ...``, in the hub's log). Nothing changes until a signal
comes: the hub runs as ``python -m hub.cli`` would.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import deque
from typing import Any

from hub.ledger.models import SensorEvent
from hub.ledger.service import LedgerService


def install() -> None:
    armed: dict[str, str | None] = {"mode": None}
    durations: deque[float] = deque([0.002], maxlen=50)
    events = {"booking": False}  # the batch being committed holds node events (one writer task: one at a time)
    commit = LedgerService._commit
    sensor_batch = LedgerService._sensor_batch

    def say(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def die(why: str) -> None:
        say(f"commit kill: {why}")
        os.kill(os.getpid(), signal.SIGKILL)

    async def batch_with_flag(self: LedgerService, batch: Any) -> None:
        events["booking"] = any(isinstance(w.item, SensorEvent) for w in batch)
        try:
            await sensor_batch(self, batch)
        finally:
            events["booking"] = False

    async def aimed_commit(self: LedgerService) -> None:
        mode = armed["mode"] if events["booking"] else None
        if mode == "during":
            typical = statistics.median(durations)
            delay = random.uniform(0.1, 0.9) * typical
            say(f"commit kill: during a commit, {delay * 1000:.2f} ms in (typical {typical * 1000:.2f} ms)")
            threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
        t0 = time.perf_counter()
        await commit(self)
        durations.append(time.perf_counter() - t0)
        if mode == "after":
            die("after a commit returned, before anyone heard of it")

    def arm(mode: str) -> Any:
        def handler(_signum: int, _frame: Any) -> None:
            armed["mode"] = mode

        return handler

    LedgerService._commit = aimed_commit  # type: ignore[method-assign]
    LedgerService._sensor_batch = batch_with_flag  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, arm("during"))
    signal.signal(signal.SIGUSR2, arm("after"))


if __name__ == "__main__":
    install()
    from hub.cli import main

    sys.exit(main(sys.argv[1:]))
