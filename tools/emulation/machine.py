"""``machine`` on the emulated board (the ROM registers it as ``machine``): resets and their cause, the board's
unique id, the CPU frequency. The board's pins belong to its hardware (``board.py``), not to this module.

``reset()`` is a hard reset and ``soft_reset()`` a soft one, as on a board: neither returns (the board runner
restarts the VM: ``tools/mpy_runtime/board.mjs``). Runs under MicroPython only.
"""

import emu_io  # type: ignore[import-not-found, unused-ignore]

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_FREQ = 240000000


def reset() -> None:
    emu_io.reset("hard")
    raise SystemExit


def soft_reset() -> None:
    emu_io.reset("soft")
    raise SystemExit


def reset_cause() -> int:
    return int(emu_io.reset_cause())


def unique_id() -> bytes:
    return bytes.fromhex(str(emu_io.unique_id()))


def freq(hz: "int | None" = None) -> int:
    return _FREQ


def idle() -> None:
    pass


def bootloader() -> None:
    raise OSError(95)  # EOPNOTSUPP: the emulated board has no USB bootloader


def disable_irq() -> int:
    """No interrupts on the emulated board: nothing to disable (the HX711 driver brackets its pulses with it)."""
    return 0


def enable_irq(state: int = 0) -> None:
    pass
