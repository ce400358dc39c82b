"""Emulated hardware at the lowest layer we can reach (DESIGN.md section 5), for tests and emulated boards.

Everything here but ``HOST_ONLY`` is portable: it runs unchanged under CPython and MicroPython, so the
firmware's drivers can be exercised against it on the real MicroPython VM, and an emulated node runs the
firmware on an emulated board (``board.py``) inside a MicroPython process started by ``host.py``.
"""

# Host-side modules (CPython only: ptys, processes, the scenario generator, the ledger); every other module here is
# portable. The MicroPython checks (tools/typecheck/micropython_ports.py, tools/mpy_compile_check.py) skip these.
HOST_ONLY = ("tools/emulation/host.py", "tools/emulation/scenarios.py", "tools/emulation/store.py")
