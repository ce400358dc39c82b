"""Type-check firmware/ and shared_protocol/ against each MicroPython port's stubs (ESP32, RP2).

The stubs live in .stubs/<port> (installed by `make bootstrap`) and replace CPython's standard-library
stubs, so code that calls something MicroPython lacks fails here even though it passes under CPython.
Errors inside the third-party stub files themselves are not ours to fix and are filtered out; any error
in our own files fails the check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools.emulation import HOST_ONLY

ROOT = Path(__file__).resolve().parents[2]
PORTS = ("esp32", "rp2")
TARGETS = ("shared_protocol", "firmware", "tools/emulation")
CONFIG = Path(__file__).with_name("micropython-mypy.ini")


def check(port: str) -> int:
    stubs = ROOT / ".stubs" / port
    if not (stubs / "stdlib" / "VERSIONS").is_file():
        print(f"{port}: stubs missing in {stubs}; run 'make bootstrap'", file=sys.stderr)
        return 1
    cmd = [
        sys.executable, "-m", "mypy",
        "--config-file", str(CONFIG),
        "--custom-typeshed-dir", str(stubs),
        "--cache-dir", str(ROOT / ".mypy_cache" / port),
        *[arg for path in HOST_ONLY for arg in ("--exclude", "^" + path.replace(".", "\\.") + "$")],
        *TARGETS,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, MYPYPATH=str(stubs)), capture_output=True, text=True)
    ours = [line for line in proc.stdout.splitlines() if line.startswith(TARGETS)]
    for line in ours:
        print(f"[{port}] {line}")
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and "error:" not in proc.stdout):
        print(proc.stdout + proc.stderr, file=sys.stderr)
        return 1
    errors = sum(1 for line in ours if ": error:" in line)
    print(f"{port}: {errors} error(s) in {', '.join(TARGETS)}")
    return 1 if errors else 0


def main() -> int:
    return max(check(port) for port in PORTS)


if __name__ == "__main__":
    raise SystemExit(main())
