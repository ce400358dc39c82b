"""The fault tests' rig: the emulator, fault relays (serial) and the hub subprocess driven on one clock, with a log
of what was done when, and a report (that log, the relays' counters, the hub log's tail) for a failed assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.faults.harness import HubProcess
from tests.faults.relay import FaultRelay
from tools.emulation.host import Emulator
from tools.emulation.scenarios import FIRST_ACTION_S, Scenario, ScenarioBuilder

MEAN_GAP_S = 25.0  # busier than the named scenario (45 s per lane): more events in flight at every fault
REBOOT_QUIET_S = 5.5  # nothing on a rebooted node's shelf for this long: its restart (2 s) and boot fit in
JOURNALED_S = 3.0  # a shelf action's event is journaled this long after it ends (the detector settles; slower loaded)


def shelf_quiet(scenario: Scenario, node_id: int, t: float) -> bool:
    """Whether a node's board may be killed at scenario time ``t``: every action on its shelf that ended has had time
    to be journaled, and none starts before the board is back. A board that is off sees nothing: a pick during its
    restart, or made before the restarted firmware has its first level, is lost to any firmware (a crash leaves no
    level to compare with), and is not what the fault tests are about."""
    return all(
        r.t_end + JOURNALED_S < t or r.t > t + REBOOT_QUIET_S
        for r in scenario.truth
        if r.node == node_id and r.action != "initial"
    )


def shoppers(node_ids: list[int], seed: int, duration_s: float) -> Scenario:
    """The ``shoppers`` scenario with shoppers coming more often."""
    b = ScenarioBuilder(node_ids, seed)
    for nid in node_ids:
        for lane in range(len(b.lanes[nid])):
            b.shoppers(nid, lane, FIRST_ACTION_S, duration_s, mean_gap_s=MEAN_GAP_S)
    return b.build("shoppers")


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log: list[str] = []
        self.emu: Emulator | None = None
        self.relays: dict[int, FaultRelay] = {}
        self.hub: HubProcess | None = None
        self.t0 = time.monotonic()

    def note(self, text: str) -> None:
        self.log.append(f"[{time.monotonic() - self.t0:6.1f}] {text}")

    def tick(self) -> None:
        assert self.emu is not None
        self.emu.poll()
        for relay in self.relays.values():
            assert relay.error is None, f"relay failed: {relay.error!r}"

    def wait(self, cond: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.1) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.tick()
            if cond():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n" + self.report())
            time.sleep(step_s)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.wait(lambda: time.monotonic() >= end, seconds + 30.0, "a pause")

    def until_elapsed(self, t: float) -> None:
        assert self.emu is not None
        emu = self.emu
        self.wait(lambda: emu.elapsed() >= t, t - emu.elapsed() + 60.0, f"scenario time {t:.0f} s")

    def report(self) -> str:
        lines = list(self.log[-60:])
        for nid, relay in self.relays.items():
            lines.append(f"relay {nid}: {relay.stats}")
        hub_log = self.tmp / "hub.log"
        if hub_log.exists():
            lines.append("--- hub log (tail) ---")
            lines += hub_log.read_text(errors="replace").splitlines()[-40:]
        return "\n".join(lines)


def status_nodes(status: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    return {int(n["node_id"]): n for n in (status or {}).get("nodes", [])}
