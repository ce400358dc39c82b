"""The node on a board: the board (``machine.Pin`` for the HX711s, or a board module frozen into the MicroPython
image), then the node until reset. The loader (``firmware/main.py``, flashed as ``/main.py``) starts it from the
installed firmware image.

The hub link is the MicroPython console itself (USB CDC): frames go out on ``sys.stdout.buffer``, hub lines
come in on ``sys.stdin``. Ctrl-C (which the hub never sends) still interrupts the node, so ``mpremote`` can
take over and reflash it. An unexpected error is printed and the board resets after 5 s; a bad config is
printed and the node stays at the REPL, unconfigured, until it is fixed.

The board is ``MachineBoard`` (``machine.Pin`` for the HX711s) unless the MicroPython image has a board module
of its own frozen in (``smartshelf_board``, see ``make_board``), as the emulated board does. Board-only modules
(``machine``) are imported inside functions, so this module imports anywhere.
"""

from firmware import node, trial
from firmware.link_serial import StdioIO

UART_RXBUF = 1024
IMAGE: "str | None" = None  # the image under /fw the loader started this firmware from (firmware/main.py sets it)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from firmware.config import Config


class MachineBoard:
    """A board's hardware through ``machine``: HX711 pins, RFID readers' UARTs and switch lines, the LED, the
    watchdog; flash at the root."""

    def __init__(self, root: str = "") -> None:
        self.root = root
        self._led: Any = None
        self._wdt: Any = None
        self._io: StdioIO | None = None

    def setup(self, cfg: "Config") -> None:
        import machine  # type: ignore[import-not-found, unused-ignore]

        if cfg.led is not None:
            self._led = machine.Pin(cfg.led, machine.Pin.OUT, value=0)
        if cfg.watchdog_s:
            self._wdt = machine.WDT(timeout=cfg.watchdog_s * 1000)

    def cell(self, sck: int, dout: int, rate_sps: int) -> "tuple[Any, Any, Any]":
        from machine import Pin  # type: ignore[import-not-found, unused-ignore]

        return Pin(sck, Pin.OUT, value=0), Pin(dout, Pin.IN, Pin.PULL_UP), None

    def uart(self, index: int, tx: int, rx: int, baud: int) -> "Any":
        """``machine.UART`` ``index`` on those pins, 8N1, non-blocking (``timeout=0``: the driver reads only what
        ``any()`` reports), with a receive buffer of ``UART_RXBUF`` bytes (~90 ms of a busy reader at 115200 baud,
        so a slow poll loses nothing)."""
        from machine import UART, Pin  # type: ignore[import-not-found, unused-ignore]

        return UART(index, baudrate=baud, tx=Pin(tx), rx=Pin(rx), timeout=0, timeout_char=0, rxbuf=UART_RXBUF)

    def pin_out(self, n: int) -> "Any":
        from machine import Pin  # type: ignore[import-not-found, unused-ignore]

        return Pin(n, Pin.OUT, value=0)

    def now_ms(self) -> int:
        import time

        return int(time.ticks_ms())  # type: ignore[attr-defined, unused-ignore]

    def link_io(self) -> StdioIO:
        if self._io is None:
            self._io = StdioIO()
        return self._io

    def mem_free(self) -> int:
        import gc

        return int(gc.mem_free())  # type: ignore[attr-defined, unused-ignore]

    def set_led(self, on: bool) -> None:
        if self._led is not None:
            self._led.value(1 if on else 0)

    def feed_watchdog(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()


def make_board() -> "Any":
    """The board this MicroPython image runs on: the board support frozen into the image as ``smartshelf_board``
    when it has one (a custom carrier board; the emulated board, ``tools/emulation/rom.py``), else the plain
    ``machine`` board above."""
    try:
        import smartshelf_board  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return MachineBoard()
    return smartshelf_board.board()


async def serve(board: "Any") -> None:
    """The node until reset: an unexpected error is printed and the board reset after 5 s; Ctrl-C
    (KeyboardInterrupt) leaves the REPL to whoever pressed it."""
    import asyncio
    import sys

    def proven() -> None:
        try:
            if trial.confirm(IMAGE, board.root):
                print("smartshelf: firmware image " + str(IMAGE) + " confirmed")
        except OSError as err:
            print("smartshelf: firmware trial not ended: " + str(err))

    try:
        await node.run(board, proven)
    except Exception as err:
        sys.print_exception(err)  # type: ignore[attr-defined, unused-ignore]
        print("smartshelf: node stopped by an error; resetting in 5 s (Ctrl-C to stay at the REPL)")
        await asyncio.sleep(5)
        import machine  # type: ignore[import-not-found, unused-ignore]

        machine.reset()


def start() -> None:
    import asyncio

    try:
        asyncio.run(serve(make_board()))
    except KeyboardInterrupt:  # Ctrl-C between the node's tasks (in the scheduler): keep the lanes' levels too
        if node.CURRENT is not None:
            node.CURRENT.save_levels()
        raise
