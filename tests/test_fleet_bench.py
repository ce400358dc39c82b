"""`smartshelf bench fleet --quick` runs end to end against a real Mosquitto, PostgreSQL and `smartshelf central run`,
and reports every figure (figures are reported, not asserted: the cores are shared)."""

from __future__ import annotations

import json
import math

import pytest

from hub.cli import main
from tests.fleet_support import unavailable
from tools.servers.mosquitto import find_mosquitto
from tools.servers.postgres import find_pg_bindir
from tools.servers.process import ServerUnavailable

pytestmark = pytest.mark.fleet


def test_bench_fleet_quick_runs_and_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        find_mosquitto()
        find_pg_bindir()
    except ServerUnavailable as exc:
        unavailable(exc)
    assert main(["bench", "fleet", "--quick", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["broker"].startswith("mosquitto") and figures["postgres"].startswith("PostgreSQL")
    assert [s["hubs"] for s in figures["steps"]] == [10, 30]
    for s in figures["steps"]:
        assert s["lanes_per_hub"] == 200 and s["movements"] == s["batches"] * figures["batch_rows"] > 0
        assert s["movements_per_s"] > 0 and s["commits"] >= 1 and s["rows_per_commit"] >= 1
        assert 0 < s["latency_p50_ms"] <= s["latency_p95_ms"]
        paced = s["paced"]
        assert paced["offered_per_s"] > 0 and paced["batches"] > 0 and 0 < paced["p50_ms"] <= paced["p95_ms"]
        for ref in (s["bare_copy"], s["batched_insert"]):
            assert ref["rows"] == s["movements"] and ref["rows_per_s"] > 0
        assert s["ratio_to_copy"] > 0 and s["ratio_to_insert"] > 0
        assert set(s["cpu_us_per_movement"]) == {"central", "postgres", "broker", "hubs"}
        assert all(math.isfinite(v) and v >= 0 for v in s["cpu_us_per_movement"].values())
