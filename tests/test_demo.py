"""Hardware-in-the-loop: `smartshelf demo` end to end on real ptys, MicroPython nodes, the real hub and SQLite.

Emulated nodes (the firmware under MicroPython with pin-level HX711 emulators) play the store story; the
hub ingests over ptys, reconciles with late POS sales, and the run must end with every lane's ledger count
equal to the ground truth and exactly the expected alerts (theft, damage, misplaced item, reorder, and the tamper
alert of a tagged coffee swapped for an object of the same weight, which only its RFID tag reveals)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_ledger_matches_ground_truth(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hub.cli", "demo", "--duration", "80", "--nodes", "2", "--dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "result: ledger matches the ground truth" in out
    for kind in ("shrinkage", "damage", "misplaced", "reorder", "tamper"):
        assert f"  {kind} " in out, out[-3000:]
    assert "MISSING" not in out and "MISMATCH" not in out
    assert re.search(r"demo: status page https://127\.0\.0\.1:\d+/ \(login demo / demo-password\)", out), out[:3000]
    # the POS's sales went through the HTTPS API, trusting the hub's own certificate (the ledger matching the truth
    # needs them), and the demo prints the fingerprint staff compare with what the browser shows
    assert re.search(r"demo: its self-signed certificate's SHA-256 is ([0-9A-F]{2}:){31}[0-9A-F]{2} ", out), out[:3000]
