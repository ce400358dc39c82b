"""Emulated hardware at the lowest layer we can reach (DESIGN.md section 5), for tests and emulated boards.

Everything here but ``HOST_ONLY`` runs under MicroPython; all but ``HOST_ONLY`` and ``BOARD_ROM`` is portable
(CPython too), so the firmware's drivers can be exercised against it on the real MicroPython VM. An emulated
node is an emulated board (``tools/mpy_runtime/board.mjs``) whose ROM (``rom.py`` and the other ``BOARD_ROM``
modules, which need the board runner's ``emu_io``) gives the firmware on its flash the hardware of ``board.py``;
``host.py`` starts the boards.
"""

# Host-side modules (CPython only: ptys, processes, the scenario generator, the ledger); every other module here is
# portable. The MicroPython checks (tools/typecheck/micropython_ports.py, tools/mpy_compile_check.py) skip these.
HOST_ONLY = ("tools/emulation/host.py", "tools/emulation/scenarios.py", "tools/emulation/store.py")
# The emulated board's ROM: MicroPython only, inside the board runner (they import its `emu_io` module).
BOARD_ROM = (
    "tools/emulation/flash.py",
    "tools/emulation/machine.py",
    "tools/emulation/rom.py",
    "tools/emulation/rom_os.py",
)
