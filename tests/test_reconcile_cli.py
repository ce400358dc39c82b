"""`smartshelf reconcile ...`: run once, list alerts, resolve one (and the write-off it posts)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from hub.cli import main
from hub.ledger import LedgerService
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
    assert (rc, out) == (0, "")
    rc, out, _ = run(capsys, "reconcile", "alerts", "--all", "--db", str(db))
    assert "-> theft confirmed: 2 written off" in out


def test_reconcile_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "reconcile", "--db", str(tmp_path / "none.db"))
    assert rc == 1 and "no ledger database" in err
    with pytest.raises(SystemExit) as exc:
        main(["reconcile", "--now", "2025-11-27T10:00:00", "--db", str(tmp_path / "x.db")])
    assert exc.value.code == 2
    assert "has no timezone" in capsys.readouterr().err
