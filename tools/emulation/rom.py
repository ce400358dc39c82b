"""The emulated board's ROM: what a MicroPython image built for this board has in it besides the VM. The board
runner (``tools/mpy_runtime/board.mjs``) runs ``boot()`` in every new interpreter, before anything on the flash,
from ``/rom`` (MEMFS, outside the flash); afterwards the ROM's modules live on in ``sys.modules`` only, like
frozen modules:

* ``smartshelf_board``: the board's hardware (``board.py``: HX711s wired to the shelf's load cells by the
  plan, UHF RFID reader modules on UARTs with their antenna switch lines, the clock, the console), which
  ``firmware/main.py`` asks for;
* ``machine`` (``machine.py``: resets, reset cause, unique id) and ``os`` with ``uname()`` (``rom_os.py``);
* ``bluetooth`` (``bluetooth.py``) when the board has a radio (the runner offers ``emu_ble``); a board without one
  has no ``bluetooth`` module, as an image built without BLE. ``ble_dispatch`` is how the runner delivers the
  radio's events to the program's IRQ handler;
* the flash (``flash.py``) mounted at ``/`` and ``sys.path`` as on a board: ``['', '.frozen', '/lib']``;
* ``asyncio.run``: the VM's event loop is the JS one, so ``run`` cannot block; it starts the program as a task
  and tells the board, which keeps the console the program's until the task ends (``_program_done``: the
  traceback is printed, the event loop stopped, the board told). ``stop_program`` stops the loop from outside.

The ROM's own copies of firmware and protocol modules (the chip emulator shares the firmware's tick arithmetic)
are dropped from ``sys.modules`` before the flash is mounted, so the firmware that runs is the flash's.

``run_file`` runs ``boot.py`` / ``main.py`` from the flash as the board does. Runs under MicroPython only.
"""

import json
import os
import sys

import emu_io  # type: ignore[import-not-found, unused-ignore]  # registered by tools/mpy_runtime/board.mjs

from tools.emulation import board as _board
from tools.emulation import flash as _flash
from tools.emulation import machine as _machine
from tools.emulation import rom_os as _rom_os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FLASH_MEM = "/flash"  # the MEMFS directory the board runner mirrors to the host

_bluetooth: "Any" = None  # tools.emulation.bluetooth on a board with a radio


def boot(plan_path: str, flash_bytes: int) -> None:
    import asyncio

    with open(plan_path) as f:
        plan = json.load(f)
    _board.install(plan)
    asyncio.run = _run  # type: ignore[assignment]
    from asyncio import core  # type: ignore[attr-defined, unused-ignore]

    core._run_iter = _guarded(core._run_iter)
    global _bluetooth
    try:
        import emu_ble  # type: ignore[import-not-found, unused-ignore]  # noqa: F401  # only on a board with a radio
    except ImportError:
        pass
    else:
        from tools.emulation import bluetooth

        _bluetooth = bluetooth
        sys.modules["bluetooth"] = bluetooth
    for name in list(sys.modules):
        if name.split(".")[0] in ("firmware", "shared_protocol"):
            del sys.modules[name]
    sys.modules["machine"] = _machine
    sys.modules["smartshelf_board"] = _board
    sys.modules["os"] = _rom_os
    os.umount("/")  # type: ignore[attr-defined, unused-ignore]
    os.mount(_flash.Flash(os.VfsPosix(FLASH_MEM), flash_bytes), "/")  # type: ignore[attr-defined, unused-ignore]
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]


def run_file(path: str) -> bool:
    """Run a script from the flash in ``__main__`` as the board runs ``boot.py`` and ``main.py``; an exception
    is printed (SystemExit, a reset, propagates). False if there is no such file."""
    try:
        os.stat(path)
    except OSError:
        return False
    with open(path) as f:
        source = f.read()
    import __main__  # type: ignore[import-not-found, unused-ignore]

    try:
        exec(compile(source, path, "exec"), __main__.__dict__)
    except SystemExit:
        raise
    except BaseException as err:  # KeyboardInterrupt too: printed, as pyexec_file does
        sys.print_exception(err)  # type: ignore[attr-defined]
    return True


def ble_dispatch() -> None:
    """The radio's events to the program's BLE IRQ handler: the runner calls this from its poll, while the program
    runs, between two steps of its event loop (``bluetooth.dispatch``). SystemExit or KeyboardInterrupt from the
    handler end the program as they would from the loop's step."""
    try:
        _bluetooth.dispatch()
    except BaseException as err:  # the handler's machine.reset(), or a Ctrl-C it caught up with
        _program_done(None, err)


def _guarded(run_iter: "Any") -> "Any":
    """The event loop's step, which this VM runs from a JS timer: KeyboardInterrupt and SystemExit (Ctrl-C,
    machine.reset) leave it as they leave asyncio.run on a board; here they end the program instead of escaping
    into the JS runtime."""

    def step() -> None:
        try:
            run_iter()
        except BaseException as err:  # Exceptions are the loop's own business: it never lets one out
            _program_done(None, err)

    return step


def _run(coro: "Any") -> None:
    import asyncio

    task = asyncio.create_task(coro)
    task.state = _program_done  # type: ignore[attr-defined]  # a completion callback, as asyncio.gather sets
    emu_io.program_started()


def _program_done(task: "Any", err: BaseException) -> None:
    """The program's task ended with ``err`` (StopIteration: it returned)."""
    name = ""
    if not isinstance(err, StopIteration):
        name = type(err).__name__
        if not isinstance(err, SystemExit):
            sys.print_exception(err)  # type: ignore[attr-defined]
    stop_program()
    emu_io.program_ended(name)


def stop_program() -> None:
    """Stop the event loop: what the program left scheduled (its other tasks) never runs again."""
    import asyncio
    from asyncio import core  # type: ignore[attr-defined, unused-ignore]

    import js  # type: ignore[import-not-found, unused-ignore]

    timer = getattr(core, "asyncio_timer", None)
    if timer is not None:
        js.clearTimeout(timer)
        core.asyncio_timer = None
    asyncio.new_event_loop()
