"""An emulated shelf-node board: the firmware's ``Board`` with pin-level HX711s and byte-level UHF RFID reader
modules on a clock that follows real time.

Runs under MicroPython (the emulated node, ``tools/emulation/host.py``) and CPython (tests). The node's real
firmware (``firmware/node.py``) gets, for each ``[sck, dout]`` pair of its config, the two pins of an
``HX711Chip`` wired to it by the *plan* (``plan["cells"]``: which lane's plate the cell carries and its
electrical model); pins the plan does not wire read as a disconnected sensor (DOUT stuck high), exactly as an
unplugged cell would. Each cell's load is its share of the lane's plate plus the lane's items
(``tools/emulation/physics.py``) at the moment of each conversion, averaged over the conversion.

**RFID.** ``plan["rfid"]`` wires UHF reader modules (``uhf_module.py``) to UARTs: ``{"readers": [{"uart": 1,
"tx": 17, "rx": 16, "switch": [25, 26], "antennas": [0, 1, 2, 3], "seed": 5, "faults": {...}, "baud": 115200}],
"tags": [...]}`` (``antennas[i]``: the lane covered by the antenna that RF-switch value ``i`` selects; ``tags``:
the field, ``uhf_module.TagField``'s data, seen by every reader). ``uart(index, tx, rx, baud)`` returns the module
wired to that UART and those pins, or a UART with nothing behind it (``AbsentUart``: a reader that is not there,
or pins given the wrong way round); ``pin_out(n)`` returns GPIO ``n`` as an output, the same object at every call,
and for a reader's switch lines the pins the module reads at the start of each inventory round. The modules share
the board's clock and catch it up with the wall clock at every UART access, as the firmware's clock reads do.

**Time.** The chips and the HX711 driver run on one ``VirtualClock``. Before every clock read the board jumps
the virtual clock forward to the wall clock (``wall_ms()``: milliseconds since the emulation's epoch, the
scenario's time zero), never backwards: conversions complete at 10 / 80 per second of real time, a read's
clock pulses take no virtual time (a driver's own waits may put the virtual clock slightly ahead, which the
next jump absorbs), and a loop that falls behind misses conversions as a real one would (``chip.missed``).
Virtual time is the scenario's time, so the physics and the ground truth share one timeline.

**Link.** ``BridgeIO`` is the link's byte I/O under the board runner (``tools/mpy_runtime/board.mjs``):
writes go out on ``sys.stdout.buffer`` exactly as on a board (the runner forwards the console to the node's
pty), reads come from the runner's ``emu_io`` module (what arrived on the console for the program).

**On the emulated board** the ROM (``rom.py``) builds the board at every boot (``install``) and registers this
module as ``smartshelf_board``; ``firmware/main.py`` on the flash takes ``board()`` from it. Ctrl-C on the
console reaches the program as KeyboardInterrupt at its next clock read or console read, as the USB console's
interrupt character does on a board.
"""

from tools.emulation.hx711_chip import STUCK_HIGH, ArraySource, HX711Chip, LoadCellSource, VirtualClock
from tools.emulation.physics import LanePhysics
from tools.emulation.uhf_module import AbsentUart, OutPin, TagField, UhfModule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from firmware.config import Config
    from firmware.link_serial import ByteIO


class EmulatedBoard:
    """``wall_ms``: a callable giving the current scenario time in ms (None: the clock only moves when the
    caller advances ``clock``). ``io``: the link's byte I/O. ``root``: the flash root the node uses.
    ``on_led``: told when the identify LED changes (the emulation host logs it)."""

    def __init__(
        self,
        plan: "dict[str, Any]",
        io: "ByteIO | None" = None,
        wall_ms: "Callable[[], int] | None" = None,
        root: str = "/flash",
        on_led: "Callable[[bool], object] | None" = None,
    ) -> None:
        self.root = root
        self._on_led = on_led
        self.clock = VirtualClock()
        self._wall = wall_ms
        self._io = io
        self.physics = [LanePhysics(spec) for spec in plan.get("lanes", [])]
        self._wiring: dict[tuple[int, int], dict[str, Any]] = {}
        for c in plan.get("cells", []):
            self._wiring[(c["sck"], c["dout"])] = c
        self.chips: list[HX711Chip] = []
        self.cfg: Config | None = None
        self.led = False
        self.led_changes = 0
        self.watchdog_feeds = 0
        self.sync()
        self._pins: dict[int, OutPin] = {}
        self._uarts: dict[tuple[int, int, int], UhfModule] = {}
        self.readers: list[UhfModule] = []  # built at power-on, after the clock has caught up with the wall
        rfid = plan.get("rfid") or {}
        tags = rfid.get("tags", [])
        for r in rfid.get("readers", []):
            module = UhfModule(
                self.clock, TagField(tags), antennas=r.get("antennas"),
                switch=[self.pin_out(int(p)) for p in r.get("switch", [])], seed=int(r.get("seed", 1)),
                baud=int(r.get("baud", 115200)), faults=r.get("faults"), before=self.sync,
            )  # fmt: skip
            self.readers.append(module)
            self._uarts[(int(r["uart"]), int(r["tx"]), int(r["rx"]))] = module

    # -- time -------------------------------------------------------------------------------------
    def sync(self) -> None:
        """Jump the virtual clock forward to the wall clock (never backwards). A wall clock below zero is the
        board runner's Ctrl-C: the program stops here with KeyboardInterrupt, at its next hardware access."""
        if self._wall is None:
            return
        w = self._wall()
        if w < 0:
            raise KeyboardInterrupt
        d = w * 1000 - self.clock.now
        if d > 0:
            self.clock.advance(d)

    def now_ms(self) -> int:
        self.sync()
        return self.clock.ticks_ms()

    # -- the firmware's Board interface -----------------------------------------------------------
    def setup(self, cfg: "Config") -> None:
        self.cfg = cfg

    def cell(self, sck: int, dout: int, rate_sps: int) -> "tuple[Any, Any, Any]":
        spec = self._wiring.get((sck, dout))
        if spec is None:  # nothing wired to these pins: an unplugged sensor
            chip = HX711Chip(self.clock, LoadCellSource(0), rate_sps=rate_sps)
            chip.disconnect(STUCK_HIGH)
        else:
            rate = spec.get("rate", rate_sps)  # the chip's RATE pin, whatever the config believes
            chip = HX711Chip(self.clock, self._source(spec, rate), rate_sps=rate)
        self.chips.append(chip)
        return chip.sck, chip.dout, self.clock

    def _source(self, spec: "dict[str, Any]", rate: int) -> "Any":
        values = spec.get("values")
        if values is not None:
            return ArraySource(values)
        lane = self.physics[spec["lane"]]
        share = float(spec.get("share", 1.0))
        plate = float(spec.get("plate_g", 0.0))
        period = 1.0 / rate
        nsub = 4 if rate >= 40 else 8

        def grams_at(t_us: int) -> float:
            return float(share * (plate + lane.mean(t_us / 1000000, period, nsub)))

        return LoadCellSource(
            grams_at,
            counts_per_g=int(spec.get("counts_per_g", 420)),
            offset=int(spec.get("offset", 0)),
            noise_counts=int(spec.get("noise_counts", 0)),
            drift_counts_per_h=int(spec.get("drift_counts_per_h", 0)),
            temp_coeff=int(spec.get("temp_coeff", 0)),
            temp_swing_mc=int(spec.get("temp_swing_mc", 0)),
            temp_period_s=int(spec.get("temp_period_s", 3600)),
            spike_ppm=int(spec.get("spike_ppm", 0)),
            spike_counts=int(spec.get("spike_counts", 0)),
            seed=int(spec.get("seed", 1)),
        )

    def uart(self, index: int, tx: int, rx: int, baud: int) -> "UhfModule | AbsentUart":
        """The UART ``index`` on pins ``tx`` / ``rx`` at ``baud`` (machine.UART's non-blocking subset)."""
        module = self._uarts.get((index, tx, rx))
        if module is None:
            return AbsentUart()
        module.set_host_baud(baud)
        return module

    def pin_out(self, n: int) -> OutPin:
        """GPIO ``n`` as an output (``value(v)``, ``on()``, ``off()``)."""
        pin = self._pins.get(n)
        if pin is None:
            pin = OutPin()
            self._pins[n] = pin
        return pin

    def link_io(self) -> "ByteIO":
        if self._io is None:
            raise ValueError("this board has no link I/O")
        return self._io

    def mem_free(self) -> int:
        import gc

        f = getattr(gc, "mem_free", None)
        return int(f()) if f is not None else 0

    def set_led(self, on: bool) -> None:
        if on != self.led:
            self.led = on
            self.led_changes += 1
            if self._on_led is not None:
                self._on_led(on)

    def feed_watchdog(self) -> None:
        self.watchdog_feeds += 1


class BridgeIO:
    """The link's bytes under the emulation runner: out on the console (like a board), in from ``emu_io``."""

    def __init__(self) -> None:
        import sys

        import emu_io  # type: ignore[import-not-found, unused-ignore]  # registered by tools/mpy_runtime/runner.mjs

        self._js: Any = emu_io
        self._out = sys.stdout.buffer

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def read_available(self) -> bytes:
        h = self._js.read()
        if h is None:  # Ctrl-C on the console: the program stops (see EmulatedBoard.sync)
            raise KeyboardInterrupt
        return bytes.fromhex(h) if h else b""


installed: "EmulatedBoard | None" = None  # the board's hardware, built by the ROM at power on (rom.py)


def install(plan: "dict[str, Any]") -> "EmulatedBoard":
    """Build the board's hardware from the plan, as the ROM does at every boot; ``board()`` then returns it."""
    import emu_io  # type: ignore[import-not-found, unused-ignore]  # registered by tools/mpy_runtime/board.mjs

    global installed
    installed = EmulatedBoard(plan, BridgeIO(), emu_io.clock_ms, "", emu_io.led)
    return installed


def board() -> "EmulatedBoard":
    """The firmware's board on this hardware (``firmware/main.py`` asks ``smartshelf_board.board()``)."""
    if installed is None:
        raise RuntimeError("the emulated board's ROM has not run")
    return installed
