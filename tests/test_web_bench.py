"""`smartshelf bench web --quick` runs end to end and prints every figure (the figures are reported, not asserted,
except that every live client got every change)."""

from __future__ import annotations

import re

import pytest

from hub.cli import main


def test_bench_web_quick_runs_and_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "web", "--quick"]) == 0
    out = capsys.readouterr().out
    for name in (
        "GET /  (overview, signed in)",
        "GET /lanes.json",
        "GET /api/v1/lanes  (token)",
        "GET /api/v1/stock  (token)",
        "overview in process (no HTTP)",
        "bare SQLite: the lanes query",
        "bare SQLite: the stock queries",
        "ratios (p50): overview over HTTP / lanes query =",
        "SSE fan-out: 10 /events clients",
        "GET / during the fan-out",
        "target: overview p95 <= 50 ms",
    ):
        assert name in out, out
    assert re.search(r"commit -> client p50 [\d.]+ ms, p95 [\d.]+ ms", out), out
    assert "every change to every client: 10/10 clients complete, 0 missing deliveries" in out, out
