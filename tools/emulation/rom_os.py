"""``os`` on the emulated board: the VM's own ``os`` plus ``uname()``, which the WebAssembly build lacks and a
board has (the ROM registers this module as ``os``). Runs under MicroPython only."""

from collections import namedtuple
from os import *  # noqa: F403  (the VM's built-in os: this module is imported while it is still `os`)

# named as MicroPython prints a board's: uname_result(sysname=...)
_UnameResult = namedtuple("uname_result", ("sysname", "nodename", "release", "version", "machine"))  # type: ignore[name-match]
_UNAME = _UnameResult(
    "smartshelf-emu",
    "smartshelf-emu",
    "1.27.0",
    "v1.27.0 on the MicroPython WebAssembly VM",
    "Emulated shelf node with HX711 load cells",
)


def uname() -> _UnameResult:  # type: ignore[no-redef]  # CPython's os has one; the VM's does not
    return _UNAME
