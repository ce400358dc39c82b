"""`smartshelf bench hub --quick` runs end to end (figures are reported, not asserted)."""

from __future__ import annotations

import json

import pytest

from hub.cli import main


def test_bench_hub_quick_runs_and_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "hub", "--quick", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["throughput"]["frames_per_s"] > 0 and figures["throughput"]["events"] == 16 * 300
    assert figures["bare_sqlite"]["rows"] == figures["throughput"]["events"]
    assert figures["latency_at_2000"]["p95_ms"] > 0 and figures["ratio_to_bare"] > 0
    assert figures["downlink_rejected_by_nodes"] == 0
