"""What the RFID poller costs the sampler, in real time: the body of ``smartshelf bench rfid``'s sampler part,
identical on CPython and MicroPython (imported by both; ``tools/bench/rfid.py`` runs it).

``run(plan_json, config_text, root, duration_s, warmup_s)`` provisions a node's flash under ``root``
(``config_text``: with or without an ``rfid`` section), builds the emulated board of ``plan_json`` (pin-level
HX711s, the UHF reader module and its tags) on the **wall clock** (the board's clock jumps to real time before every
pin access, so a sampler that runs late finds conversions overwritten: ``HX711Chip.missed``), boots the real
firmware and serves it with ``Node.serve`` (its asyncio tasks: sampler every 4 ms, link, housekeeping, and the RFID
poller with a reader) for ``warmup_s + duration_s`` seconds of real time. A small hub in the same interpreter
acknowledges every event and tag record every 50 ms (its frames are verified, so it costs the node's CPU a little,
as a busy serial console would).

Measured: each chip's conversions and missed conversions; the sampler's and the poller's time per call and the
interval between two sampler calls (histograms of 50 us bins up to 100 ms, allocation-free); the poller's own time
per call, without the time spent in the emulated reader module's UART methods (the module's emulation runs inside
them, on the node's interpreter; the HX711 chips' emulation likewise runs inside the sampler's pin accesses, which
cannot be told apart); the reader's reads, dwells and errors; what went up the link. The timer is
``js.performance.now`` on the WebAssembly MicroPython (its ``ticks_us`` moves in 1 ms steps; the proxy call costs
some microseconds, counted in the sampler's and the poller's times alike) and ``time.perf_counter`` on CPython.
The first ``warmup_s`` (the boot: the cells settle, every tag is seen) are not counted.
"""

import asyncio
import json
import time
from array import array

from firmware import node as node_mod
from shared_protocol.auth import Key
from shared_protocol.downlink_text import encode_line
from shared_protocol.frame import DownlinkSender, UplinkReceiver
from shared_protocol.messages import Ack
from shared_protocol.serial_framing import SerialDecoder
from tools.emulation.board import EmulatedBoard
from tools.emulation.provision import provision

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

BIN_US = 50
BINS = 2000  # 0 .. 100 ms; the last bin holds everything longer
HUB_POLL_MS = 50


def _timer() -> "Callable[[], float]":
    """A clock in microseconds with sub-millisecond resolution on both runtimes."""
    try:
        import js  # type: ignore[import-not-found, unused-ignore]  # the WebAssembly port's JavaScript bridge

        now = js.performance.now

        def us_js() -> float:
            return float(now()) * 1000.0

        return us_js
    except ImportError:
        pass
    perf = getattr(time, "perf_counter", None)
    if perf is not None:

        def us_perf() -> float:
            return float(perf()) * 1000000.0

        return us_perf
    ticks_us = getattr(time, "ticks_us")  # noqa: B009 - MicroPython only

    def us_ticks() -> float:
        return float(ticks_us())

    return us_ticks


def _wall() -> "Callable[[], int]":
    """Milliseconds of real time since this call (the board's wall clock)."""
    ticks_ms = getattr(time, "ticks_ms", None)
    if ticks_ms is not None:
        t0 = ticks_ms()
        diff = getattr(time, "ticks_diff")  # noqa: B009 - MicroPython only

        def wall_ticks() -> int:
            return int(diff(ticks_ms(), t0))

        return wall_ticks
    m0 = time.monotonic()

    def wall_mono() -> int:
        return int((time.monotonic() - m0) * 1000)

    return wall_mono


class Histogram:
    """Durations in microseconds, counted in ``BIN_US`` bins (the last one open-ended); no allocation per add."""

    def __init__(self) -> None:
        self.bins = array("I", [0] * BINS)
        self.n = 0
        self.total_us = 0.0
        self.max_us = 0.0

    def add(self, us: float) -> None:
        k = int(us) // BIN_US
        if k >= BINS:
            k = BINS - 1
        elif k < 0:
            k = 0
        self.bins[k] += 1
        self.n += 1
        self.total_us += us
        if us > self.max_us:
            self.max_us = us

    def reset(self) -> None:
        k = 0
        while k < BINS:
            self.bins[k] = 0
            k += 1
        self.n = 0
        self.total_us = 0.0
        self.max_us = 0.0

    def quantile(self, q: float) -> float:
        """The upper edge of the bin holding the ``q`` quantile (us); 0 when empty."""
        if not self.n:
            return 0.0
        want = q * self.n
        seen = 0
        k = 0
        while k < BINS:
            seen += self.bins[k]
            if seen >= want:
                return float((k + 1) * BIN_US)
            k += 1
        return float(BINS * BIN_US)

    def summary(self) -> "dict[str, Any]":
        return {
            "calls": self.n,
            "mean_us": round(self.total_us / self.n, 1) if self.n else 0.0,
            "p50_us": self.quantile(0.5),
            "p99_us": self.quantile(0.99),
            "max_us": round(self.max_us, 1),
            "total_ms": round(self.total_us / 1000.0, 1),
        }


class PipeIO:
    """The node's serial link: bytes up kept for the hub, bytes down from it."""

    def __init__(self) -> None:
        self.up = bytearray()
        self.down = bytearray()

    def write(self, data: bytes) -> None:
        self.up += data

    def read_available(self) -> bytes:
        d = bytes(self.down)
        self.down = bytearray()
        return d


class AckingHub:
    """Verifies the node's frames and acknowledges its records (events and tags share one sequence)."""

    def __init__(self, io: PipeIO, node_id: int, key: bytes) -> None:
        self.io = io
        self.rx = UplinkReceiver({node_id: Key(key)})
        self.tx = DownlinkSender(node_id, Key(key))
        self.dec = SerialDecoder()
        self.acked = 0
        self.counts: dict[str, int] = {}
        self.up_bytes = 0

    def poll(self) -> None:
        data = bytes(self.io.up)
        self.io.up = bytearray()
        self.up_bytes += len(data)
        hi = self.acked
        hello = False
        for raw in self.dec.feed(data):
            msg = self.rx.accept(raw).message
            name = msg.NAME
            self.counts[name] = self.counts.get(name, 0) + 1
            if name == "hello":
                self.tx.new_session(getattr(msg, "boot_count"))  # noqa: B009
                hello = True
            seq = getattr(msg, "event_seq", 0)
            if name != "ack" and seq > hi:
                hi = seq
        if hello or hi > self.acked:
            self.acked = hi
            self.io.down += encode_line(self.tx.encode(Ack(hi)))


def _time_methods(obj: "Any", names: "tuple[str, ...]", us: "Callable[[], float]", acc: "list[float]") -> None:
    """Wrap ``obj``'s methods so the time spent in them adds up in ``acc[0]`` (us)."""
    for name in names:
        method = getattr(obj, name, None)
        if method is None:
            continue

        def timed(*args: "Any", _m: "Any" = method) -> "Any":
            t0 = us()
            r = _m(*args)
            acc[0] += us() - t0
            return r

        setattr(obj, name, timed)


async def run(
    plan_json: str, config_text: str, root: str, duration_s: float, warmup_s: float = 0.0
) -> "dict[str, Any]":
    """Serve the node in real time for ``warmup_s`` (the boot: not counted) then ``duration_s``, and return what
    the second part cost (see the module docstring)."""
    plan = json.loads(plan_json)
    cfg = json.loads(config_text)
    provision(root, config_text, plan)
    io = PipeIO()
    wall = _wall()
    board = EmulatedBoard(plan, io, wall, root)
    node = node_mod.boot(board)
    if node is None:
        raise RuntimeError("the node did not boot (config error)")
    hub = AckingHub(io, int(cfg["node_id"]), bytes.fromhex(cfg["key"]))
    us = _timer()
    sampler = Histogram()
    interval = Histogram()
    poller = Histogram()
    last = [0.0]
    poller_own = Histogram()
    emu = [0.0]  # time spent in the emulated reader modules (their UART methods), us
    for module in board.readers:
        _time_methods(module, ("any", "read", "readinto", "write"), us, emu)
    sample_once = node.sample_once
    poll_rfid = node.poll_rfid

    started = [False]

    def timed_sample(now: int) -> int:
        started[0] = True
        t0 = us()
        if last[0]:
            interval.add(t0 - last[0])
        last[0] = t0
        n = sample_once(now)
        sampler.add(us() - t0)
        return n

    def timed_poll(now: int) -> None:
        e0 = emu[0]
        t0 = us()
        poll_rfid(now)
        dt = us() - t0
        poller.add(dt)
        poller_own.add(dt - (emu[0] - e0))

    node.sample_once = timed_sample  # type: ignore[method-assign]  # instance attributes: the tasks look them up
    node.poll_rfid = timed_poll  # type: ignore[method-assign]

    async def hub_task() -> None:
        while node.running or not started[0]:
            hub.poll()
            await asyncio.sleep(HUB_POLL_MS / 1000)

    chips = board.chips
    mark = {"ms": wall(), "conversions": 0, "missed": 0, "reads": 0, "events": 0}
    per_cell = [0] * len(chips)

    def reads() -> int:
        rfid = node.rfid
        return rfid.readers[0].reads if rfid is not None and rfid.readers else 0

    async def stopper() -> None:
        await asyncio.sleep(warmup_s)
        mark["ms"] = wall()  # the boot is over: count from here
        mark["conversions"] = sum(c.conversions for c in chips)
        mark["missed"] = sum(c.missed for c in chips)
        mark["reads"] = reads()
        mark["events"] = node.events
        for i in range(len(chips)):
            per_cell[i] = chips[i].missed
        for h in (sampler, interval, poller, poller_own):
            h.reset()
        last[0] = 0.0
        await asyncio.sleep(duration_s)
        node.running = False

    await asyncio.gather(node.serve(), stopper(), hub_task())
    elapsed_ms = wall() - mark["ms"]
    hub.poll()
    out: dict[str, Any] = {
        "elapsed_s": elapsed_ms / 1000.0,
        "cells": len(chips),
        "conversions": sum(c.conversions for c in chips) - mark["conversions"],
        "missed": sum(c.missed for c in chips) - mark["missed"],
        "missed_per_cell": [chips[i].missed - per_cell[i] for i in range(len(chips))],
        "missed_at_boot": mark["missed"],
        "reads": reads() - mark["reads"],
        "sampler": sampler.summary(),
        "sampler_interval": interval.summary(),
        "poller": poller.summary(),
        "poller_own": poller_own.summary(),
        "events": node.events - mark["events"],
        "frames_up": hub.counts,
        "bytes_up": hub.up_bytes,
        "acked": hub.acked,
        "outbox_depth": node.shelf.outbox.depth,
        "reader": None,
    }
    rfid = node.rfid
    if rfid is not None and rfid.readers:
        r = rfid.readers[0]
        rounds = overrun = 0
        for m in board.readers[:1]:
            rounds = m.rounds
            overrun = m.overrun
        out["reader"] = {
            "reads": r.reads,
            "bad_frames": r.bad_frames,
            "dwells": r.dwells,
            "resets": r.resets,
            "silences": r.silences,
            "timeouts": getattr(r, "timeouts", 0),
            "present": rfid.presence.present,
            "poll_errors": rfid.errors,
            "module_rounds": rounds,
            "module_overrun": overrun,
        }
    return out


def main() -> None:
    """CPython, in a process of its own (``python -m tools.bench.portable.rfid_sampler``): the arguments of ``run``
    as a JSON list on stdin, its result as JSON on the last line of stdout. The process holds only the node and the
    emulated board, as a node's interpreter would (a fork of the bench would bring the hub's heap, and with it a
    slower ``gc.collect``)."""
    import sys
    import tempfile

    plan_json, config_text, duration_s, warmup_s = json.loads(sys.stdin.read())
    with tempfile.TemporaryDirectory(prefix="ssb-rfid-cp-") as root:
        result = asyncio.run(run(plan_json, config_text, root, duration_s, warmup_s))
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
