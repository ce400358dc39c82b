"""`smartshelf replay` and `smartshelf bench sensing --quick`."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.cli import main
from tools.mpy_runtime import REPO_ROOT


def _trace(rate: float = 80.0, jitter: float = 0.0, seed: int = 1) -> list[tuple[float, float]]:
    """5 kg, a hand press then a 100 g item lifted at ~3 s, put back at ~7 s; about 1 g of noise."""
    rng = random.Random(seed)
    rows = []
    t = 0.0
    while t < 10.0:
        g = 5000.0 + rng.gauss(0.0, 1.0)
        if 3.0 <= t < 3.3:
            g += 60.0 + 8.0 * rng.random()  # the hand presses, with tremor
        elif t >= 3.3:
            g -= 100.0
        if t >= 7.0:
            g += 100.0 if t >= 7.1 else 100.0 * (t - 7.0) / 0.1
        rows.append((round(t, 4), round(g, 2)))
        t += (1.0 / rate) * (1.0 + rng.uniform(-jitter, jitter))
    return rows


def _csv(rows: list[tuple[float, float]], header: bool = False, comments: bool = False) -> str:
    lines = ["timestamp_seconds,grams"] if header else []
    if comments:
        lines.append("# recorded on lane 3")
        lines.append("")
    for i, (t, g) in enumerate(rows):
        lines.append(f"{t},{g}" + ("  # mid-trace note" if comments and i == 5 else ""))
    return "\n".join(lines) + "\n"


def _run(capsys: Any, args: list[str]) -> tuple[int, list[dict[str, Any]], str]:
    rc = main(["replay", *args])
    cap = capsys.readouterr()
    return rc, [json.loads(line) for line in cap.out.splitlines()], cap.err


def _file(tmp_path: Path, text: str) -> str:
    p = tmp_path / "trace.csv"
    p.write_text(text)
    return str(p)


def test_pick_and_put_back_with_count(capsys: Any, tmp_path: Path) -> None:
    rc, evs, err = _run(capsys, [_file(tmp_path, _csv(_trace(), header=True)), "--unit-weight", "100"])
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]
    pick = evs[0]
    assert 2.9 <= pick["t_start"] <= 3.1 and 3.3 < pick["t"] <= 3.8
    assert abs(pick["delta_g"] + 100) < 1.5 and pick["confidence"] >= 0.9
    assert set(pick) == {"t", "t_start", "delta_g", "kind", "confidence", "count", "level_g"}


def test_without_unit_weight_there_is_no_count(capsys: Any, tmp_path: Path) -> None:
    rc, evs, _ = _run(capsys, [_file(tmp_path, _csv(_trace()))])
    assert rc == 0
    assert [e["kind"] for e in evs] == ["pick", "put"]
    assert all("count" not in e for e in evs)


def test_header_comments_and_irregular_rate(capsys: Any, tmp_path: Path) -> None:
    rc, evs, err = _run(
        capsys,
        [_file(tmp_path, _csv(_trace(rate=10.0, jitter=0.3), header=True, comments=True)), "--unit-weight", "100"],
    )
    assert rc == 0, err
    assert [(e["kind"], e["count"]) for e in evs] == [("pick", -1), ("put", 1)]


def test_stdin(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _csv(_trace(), header=True).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    rc, evs, _ = _run(capsys, ["-", "--unit-weight", "100"])
    assert rc == 0
    assert [e["count"] for e in evs] == [-1, 1]


def test_both_runtimes_give_the_same_events(capsys: Any, tmp_path: Path, mpy_runtime: Any) -> None:
    path = _file(tmp_path, _csv(_trace(rate=80.0, jitter=0.2, seed=4)))
    rc1, cp, _ = _run(capsys, [path, "--unit-weight", "100", "--runtime", "cpython"])
    rc2, mp, err = _run(capsys, [path, "--unit-weight", "100", "--runtime", "micropython"])
    assert rc1 == rc2 == 0, err
    assert len(cp) == 2
    assert mp == cp


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("100,1\n100.1,abc\n", 2, "weight is not a number"),
        ("100,1\n100.1,nan\n", 2, "not a finite number"),
        ("100,1\ninf,2\n", 2, "timestamp is not a finite number"),
        ("100,1\n100.5,1\n100.5,2\n", 3, "does not increase"),
        ("100,1\n100.2,1\n100.1,1\n", 3, "does not increase"),
        ("# c\n100,1,2\n", 2, "expected 2 comma-separated fields"),
        ("100;1\n", 1, "expected 2 comma-separated fields"),
        ("100,1\n101,1e400\n", 2, "out of range"),
        ("100,1\n101,2000000\n", 2, "out of range"),
        ("timestamp,grams\n", 1, "timestamp is not a number"),  # a header is only allowed first
        ("100,1\n101,\n", 2, "weight is not a number"),
    ],
)
def test_bad_rows_exit_2_naming_the_line(capsys: Any, tmp_path: Path, text: str, line: int, words: str) -> None:
    good = _csv(_trace(), header=True)  # its events would be printed if the bad row were not rejected first
    rc, evs, err = _run(capsys, [_file(tmp_path, good + text), "--unit-weight", "100"])
    assert rc == 2
    assert evs == []
    assert f"line {len(good.splitlines()) + line}:" in err and words in err, err
    assert "Traceback" not in err


def test_undecodable_bytes_and_missing_file(capsys: Any, tmp_path: Path) -> None:
    p = tmp_path / "bin.csv"
    p.write_bytes(b"0,1\n\xff\xfe,2\n")
    rc, evs, err = _run(capsys, [str(p)])
    assert rc == 2 and evs == [] and "line 2: not UTF-8" in err
    rc, evs, err = _run(capsys, [str(tmp_path / "missing.csv")])
    assert rc == 2 and "cannot read" in err


def test_the_installed_command_never_prints_a_traceback(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_bytes(b"0,1\n1,2\n\x00\x01garbage,,,\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hub.cli", "replay", str(p)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "line 3:" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_sensing_quick_prints_the_figures(capsys: Any, mpy_runtime: Any) -> None:
    assert main(["bench", "sensing", "--quick", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for words in ("precision", "recall", "exact count", "latency p50", "p90", "p99", "idle 1 h", "by case", "sigma"):
        assert words in out, out
    assert "events identical to CPython's" in out, out
