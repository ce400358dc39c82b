"""Emulated hardware at the lowest layer we can reach (DESIGN.md section 5), for tests and emulated boards.

Everything here but ``HOST_ONLY`` runs under MicroPython, and all of it but ``HOST_ONLY`` and the board's ROM is
portable (CPython too), so the firmware's drivers can be exercised against it on the real MicroPython VM. An
emulated node is an emulated board (``tools/mpy_runtime/board.mjs``) whose ROM (``rom.py``, ``flash.py``,
``machine.py``, ``rom_os.py``: MicroPython only, they use the board runner's ``emu_io``) gives the firmware on
its flash the hardware of ``board.py`` (and, for BLE, ``bluetooth.py`` backed by ``radio/``: a Bumble peripheral
per board on one emulated air); ``host.py`` starts the boards.
"""

# Host-side modules (CPython only: ptys, processes, the scenario generator, the ledger); every other module here is
# portable. The MicroPython checks (tools/typecheck/micropython_ports.py, tools/mpy_compile_check.py) skip these.
HOST_ONLY = (
    "tools/emulation/host.py",
    "tools/emulation/scenarios.py",
    "tools/emulation/store.py",
    "tools/emulation/radio/__init__.py",  # the emulated air (Bumble, sockets, a thread): the host's side of the radio
    "tools/emulation/radio/air.py",
    "tools/emulation/radio/host.py",
    "tools/emulation/radio/peripheral.py",
    "tools/emulation/radio/synthetic.py",
)
