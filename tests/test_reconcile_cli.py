"""`smartshelf reconcile ...`: run once, list alerts, resolve one (and the write-off it posts)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from hub.cli import main
from hub.ledger import AlertKind, LedgerService
from hub.schema import MIGRATIONS
from tests.test_reconcile_alerts import Shop

THEFT_AT = "2023-11-14T22:13:20Z"  # T0 of the shop helpers
BEFORE_SETTLED = "2023-11-14T22:33:19Z"  # 1199 s later: window + grace not over
AFTER_SETTLED = "2023-11-14T22:33:21Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"

    async def build() -> None:
        async with LedgerService(path, migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
            shop = await Shop(ledger).setup()
            await shop.pick("A1", 2, 0)

    asyncio.run(build())
    return path


def test_reconcile_run_alerts_and_resolve(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "reconcile", "--db", str(db), "--now", BEFORE_SETTLED)
    assert (rc, err) == (0, "") and "0 picks settled" in out and "1 picks still in their window" in out
    rc, out, err = run(capsys, "reconcile", "run", "--db", str(db), "--now", AFTER_SETTLED)
    assert (rc, err) == (0, "")
    assert "1 picks settled (2 units: 2 unexplained" in out and "opened alert 1: shrinkage lane:A1/COLA" in out
    rc, out, _ = run(capsys, "reconcile", "run", "--db", str(db), "--now", AFTER_SETTLED)
    assert rc == 0 and "alerts: 0 opened, 0 updated, 0 resolved" in out

    rc, out, _ = run(capsys, "reconcile", "alerts", "--db", str(db))
    assert rc == 0 and out.split()[:5] == ["1", "shrinkage", "open", "lane:A1/COLA", "2"]

    rc, _, err = run(capsys, "reconcile", "resolve", "1", "damaged", "--db", str(db))
    assert rc == 2 and "resolved as one of: theft, found, count" in err
    rc, out, err = run(capsys, "reconcile", "resolve", "1", "theft", "--db", str(db), "--actor", "manager")
    assert (rc, err) == (0, "") and out.startswith("alert 1 resolved: theft confirmed: 2 written off (movement ")
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT qty, reason, location, actor FROM movements WHERE source_ref = 'writeoff:alert1'")
        assert rows.fetchall() == [(-2, "shrinkage", "lane:A1", "manager")]
    finally:
        conn.close()
    rc, out, _ = run(capsys, "reconcile", "alerts", "--db", str(db))
    assert (rc, out) == (0, f"no unresolved alerts in {db}\n")
    rc, out, _ = run(capsys, "reconcile", "alerts", "--all", "--db", str(db))
    assert "-> theft confirmed: 2 written off" in out


def test_reconcile_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "reconcile", "--db", str(tmp_path / "none.db"))
    assert rc == 2 and "no ledger database" in err and not (tmp_path / "none.db").exists()
    with pytest.raises(SystemExit) as exc:
        main(["reconcile", "--now", "2025-11-27T10:00:00", "--db", str(tmp_path / "x.db")])
    assert exc.value.code == 2
    assert "has no timezone" in capsys.readouterr().err


def test_alerts_lists_every_kind_the_ledger_defines(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``reconcile alerts`` / ``resolve`` know the kinds from ``AlertKind`` (tamper and unassigned_lane included):
    none is left out of the list, and a tamper alert resolves with its documented outcome."""
    rc, out, _ = run(capsys, "reconcile", "alerts", "--db", str(db))
    assert (rc, out) == (0, f"no unresolved alerts in {db}\n")
    rc, out, _ = run(capsys, "reconcile", "alerts", "--json", "--db", str(db))
    assert (rc, json.loads(out)) == (0, [])

    async def open_all() -> dict[str, int]:
        async with LedgerService(db, migrations=MIGRATIONS) as ledger:
            ids = {}
            for kind in AlertKind:
                evidence = {"tags_total": 1, "node_id": 9, "lane_index": 0}
                opened = await ledger.open_alert(kind.value, f"lane:X/{kind.value}", evidence, actor="test")
                ids[kind.value] = opened.alert_id
            return ids

    ids = asyncio.run(open_all())
    rc, out, _ = run(capsys, "reconcile", "alerts", "--db", str(db))
    listed = {line.split()[1]: int(line.split()[0]) for line in out.splitlines()}
    assert rc == 0 and listed == ids and {"tamper", "unassigned_lane"} <= set(listed)
    assert "1 tags left without a pick" in out and "events from node 9 lane 0, which has no SKU" in out
    rc, out, _ = run(capsys, "reconcile", "alerts", "--json", "--db", str(db))
    assert [(a["id"], a["kind"], a["status"]) for a in json.loads(out)] == [(i, k, "open") for k, i in ids.items()]

    tamper = ids["tamper"]
    rc, out, err = run(capsys, "reconcile", "resolve", str(tamper), "tag_removed", "--db", str(db))
    assert (rc, err, out) == (0, "", f"alert {tamper} resolved: tag removed\n")
    rc, out, _ = run(capsys, "reconcile", "alerts", "--db", str(db))
    assert rc == 0 and "tamper" not in out and "unassigned_lane" in out
    rc, out, _ = run(capsys, "reconcile", "alerts", "--all", "--db", str(db))
    assert f"{tamper:>6}  tamper" in out and "-> tag removed" in out
