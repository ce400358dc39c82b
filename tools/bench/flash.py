"""``smartshelf bench flash``: ``smartshelf flash`` against a plain ``mpremote fs cp -r`` of the same modules, side by
side in one run on two emulated blank boards: a full install, then a re-flash with one module changed.

The plain way is what a developer types without the tool: the compiled modules copied in place under ``/lib``
(mpremote hashes each file on the board and skips those that are equal), no staging, no verification, no switch,
no reset. ``smartshelf flash`` stages the image under ``/fw/<id>``, copies on the board what the running image
already has, checks every file's sha256, switches by one rename and resets the board; it runs in this process (its
mpremote sessions are subprocesses, as the CLI's are) and does not wait for the node's hello here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hub.provisioning import image as images
from hub.provisioning.flash import Request, flash
from tools.emulation.host import Emulator
from tools.emulation.scenarios import build
from tools.mpy_runtime import REPO_ROOT


def _changed_checkout(base: Path) -> Path:
    src = base / "checkout"
    for pkg in images.PACKAGE_NAMES:
        shutil.copytree(REPO_ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    module = src / "firmware" / "reports.py"
    module.write_text(module.read_text() + "\n\ndef _bench_changed() -> int:\n    return 1\n")
    return src


def _plain_tree(tree: Path, source: Path) -> None:
    """The modules compiled as smartshelf flash compiles them, laid out as /lib/<package>/*.mpy."""
    shutil.rmtree(tree, ignore_errors=True)
    image = images.build("", compiled=True, source=source)
    for rel, data in image.files.items():
        if rel != "manifest.json":
            dest = tree / "lib" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)


def _mpremote_cp(port: Path, tree: Path) -> tuple[float, int, int]:
    """(seconds, files sent, bytes sent) of `mpremote fs cp -r lib :` from ``tree``."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", str(port), "fs", "cp", "-r", "lib", ":"],
                       cwd=tree, capture_output=True, text=True, timeout=600)  # fmt: skip
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"mpremote cp -r failed: {r.stderr.strip()}")
    skipped = {line.split("Up to date: ", 1)[1].strip() for line in r.stdout.splitlines() if "Up to date: " in line}
    files = [p for p in (tree / "lib").rglob("*") if p.is_file()]
    sent = [p for p in files if "./" + p.relative_to(tree).as_posix() not in skipped]
    return took, len(sent), sum(p.stat().st_size for p in sent)


def _smartshelf_flash(port: Path, layout: Path | None, nodes: Path, source: Path) -> tuple[float, int, int]:
    lines: list[str] = []
    t0 = time.perf_counter()
    flash(str(port), Request(node_id=1 if layout else None, layout=layout, nodes_file=nodes, source=source,
                             wait_s=None), lines.append)  # fmt: skip
    took = time.perf_counter() - t0
    # "...: N files sent (X KiB)"
    tail = lines[-1].rsplit(": ", 1)[1]
    files = int(tail.split()[0])
    kib = float(tail.split("(")[1].split()[0])
    return took, files, int(kib * 1024)


def run(as_json: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="smartshelf-bench-flash-") as tmp:
        base = Path(tmp)
        scenario = build("idle", [1, 2])
        lanes = scenario.nodes[1].config_lanes()
        layout = base / "layout.json"
        layout.write_text(
            json.dumps({"lanes": [{"cells": [list(c) for c in cells], "rate_sps": r} for cells, r in lanes]})
        )
        changed = _changed_checkout(base)
        emu = Emulator([1, 2], scenario, base / "emu", blank=True, out=lambda s: None)
        emu.start()
        try:
            ours, plain = emu.nodes[0].port, emu.nodes[1].port
            nodes = base / "nodes.toml"
            rows: dict[str, dict[str, float]] = {}

            def record(name: str, result: tuple[float, int, int]) -> None:
                rows[name] = {"seconds": result[0], "files": result[1], "bytes": result[2]}
                emu.poll()

            record("full: smartshelf flash", _smartshelf_flash(ours, layout, nodes, images.SOURCE))
            _plain_tree(base / "plain", images.SOURCE)
            record("full: mpremote cp -r", _mpremote_cp(plain, base / "plain"))
            record("one module: smartshelf flash", _smartshelf_flash(ours, None, nodes, changed))
            _plain_tree(base / "plain", changed)
            record("one module: mpremote cp -r", _mpremote_cp(plain, base / "plain"))
        finally:
            emu.stop()
    ratios = {
        "full": rows["full: smartshelf flash"]["seconds"] / rows["full: mpremote cp -r"]["seconds"],
        "one module": rows["one module: smartshelf flash"]["seconds"] / rows["one module: mpremote cp -r"]["seconds"],
    }
    result: dict[str, Any] = {"rows": rows, "ratios": ratios}
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    print("smartshelf bench flash: two emulated blank boards side by side (bytecode .mpy, 1.9 MiB flash)")
    print(f"{'':32} {'seconds':>8} {'files':>6} {'bytes sent':>11}")
    for name, row in rows.items():
        print(f"{name:32} {row['seconds']:8.2f} {int(row['files']):6d} {int(row['bytes']):11,d}")
    for name, ratio in ratios.items():
        print(f"{name}: smartshelf flash / mpremote cp -r = {ratio:.2f} (its staging, checks, switch, reset)")
    return result
