"""`smartshelf ledger ...`: exit codes and messages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hub.cli import main

TS = "2025-11-27T10:00:00Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "shop.db"
    assert run(capsys, "ledger", "init", "--db", str(path))[0] == 0
    assert run(capsys, "ledger", "add-sku", "COLA", "--unit-weight-dg", "3500", "--db", str(path))[0] == 0
    rc, out, _ = run(capsys, "ledger", "assign-lane", "--node", "3", "--lane", "0", "--sku", "COLA", "--db", str(path))
    assert rc == 0 and "node3-lane0" in out
    return path


def test_import_exit_codes(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "receipts.csv"
    good.write_text(f"id,timestamp,sku,quantity\nR1,{TS},COLA,24\nR2,{TS},COLA,6\n")
    rc, out, err = run(capsys, "ledger", "import", "receipts", str(good), "--db", str(db), "--actor", "clerk")
    assert (rc, err) == (0, "") and "2 applied" in out
    rc, out, _ = run(capsys, "ledger", "import", "receipts", str(good), "--db", str(db))
    assert rc == 0 and "nothing changed" in out

    bad = tmp_path / "sales.csv"
    bad.write_text(f"id,timestamp,sku,quantity\nS1,{TS},COLA,1\nS2,{TS},FANTA,1\nS3,{TS},COLA,0\n")
    rc, out, err = run(capsys, "ledger", "import", "sales", str(bad), "--db", str(db))
    assert rc == 2 and out == ""
    assert err.splitlines() == [
        "sales.csv:3: unknown SKU 'FANTA'",
        "sales.csv:4: quantity must be positive, not 0",
        "sales.csv: rejected, nothing was written (2 problems)",
    ]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM movements WHERE reason = 'sale'").fetchone() == (0,)
    assert conn.execute("SELECT actor FROM movements WHERE source_ref = 'receipt:R1'").fetchone() == ("clerk",)
    conn.close()

    rc, _, err = run(capsys, "ledger", "import", "sales", str(tmp_path / "missing.csv"), "--db", str(db))
    assert rc == 1 and "no such file" in err
    with pytest.raises(SystemExit) as exc:
        main(["ledger", "import", "invoices", str(good), "--db", str(db)])
    assert exc.value.code == 2


def test_backup_and_restore(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "nightly.db"
    rc, out, _ = run(capsys, "ledger", "backup", str(dest), "--db", str(db))
    assert rc == 0 and dest.is_file() and "backup written" in out

    broken = tmp_path / "broken.db"
    broken.write_bytes(dest.read_bytes()[:1500])
    rc, out, err = run(capsys, "ledger", "restore", str(broken), "--db", str(db))
    assert rc == 2 and "restore refused" in err
    rc, _, err = run(capsys, "ledger", "restore", str(tmp_path / "nope.db"), "--db", str(db))
    assert rc == 2 and "no such file" in err

    rc, out, _ = run(capsys, "ledger", "restore", str(dest), "--db", str(db))
    assert rc == 0 and Path(str(db) + ".bak").is_file()

    absent = tmp_path / "absent.db"
    rc, _, err = run(capsys, "ledger", "backup", str(tmp_path / "x.db"), "--db", str(absent))
    assert (rc, err) == (
        2,
        f"smartshelf ledger: no ledger database at {absent}: create it with smartshelf ledger init --db {absent}"
        " (or give --config hub.toml to use the hub's)\n",
    )
    assert not absent.exists() and not (tmp_path / "x.db").exists()


def test_stock_and_the_default_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTSHELF_DB", str(tmp_path / "env.db"))
    assert run(capsys, "ledger", "init")[0] == 0
    assert (tmp_path / "env.db").is_file()
    assert run(capsys, "ledger", "add-sku", "TEA", "--unit-weight-dg", "1200")[0] == 0
    receipts = tmp_path / "r.csv"
    receipts.write_text(f"id,timestamp,sku,quantity\nR1,{TS},TEA,7\n")
    assert run(capsys, "ledger", "import", "receipts", str(receipts))[0] == 0
    rc, out, _ = run(capsys, "ledger", "stock")
    assert rc == 0 and "TEA" in out and "backroom" in out and out.split()[-1] == "7"
    rc, _, err = run(capsys, "ledger", "add-sku", "TEA", "--unit-weight-dg", "0")
    assert rc == 1 and "unit weight" in err


def test_a_newer_database_is_refused(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (999, 0, 'future')")
    conn.commit()
    conn.close()
    rc, _, err = run(capsys, "ledger", "init", "--db", str(db))
    assert rc == 2 and "newer than this smartshelf supports" in err


def test_assign_lane_says_which_sensor_units_moved_to_the_lanes_sku(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lane's sensor units are its SKU's (migration 16, ``lane_assigned``): the summary says what that moved."""
    import asyncio

    from hub.ledger import LedgerService, SensorGap
    from hub.schema import MIGRATIONS

    async def counted(units: int) -> None:  # node 3 counted units on lane 0 (a sensor gap from its counters)
        async with LedgerService(db, migrations=MIGRATIONS) as ledger:
            await ledger.submit(SensorGap(3, 0, units, f"f{units}:lane0", 1_700_000_000_000))

    def assign(*sku: str) -> list[str]:
        rc, out, err = run(capsys, "ledger", "assign-lane", "--node", "3", "--lane", "0", *sku, "--db", str(db))
        assert (rc, err) == (0, ""), err
        return out.splitlines()

    assert run(capsys, "ledger", "add-sku", "TEA", "--unit-weight-dg", "1200", "--db", str(db))[0] == 0
    asyncio.run(counted(6))
    assert assign("--sku", "TEA") == [
        f"lane node3-lane0 (node 3, lane 0): TEA (ledger {db})",
        "moved 6 sensor unit(s) of lane node3-lane0 to TEA: 6 from COLA",
    ]
    assert assign("--sku", "TEA") == [f"lane node3-lane0 (node 3, lane 0): TEA (ledger {db})"]  # nothing to move
    assert assign() == [
        f"lane node3-lane0 (node 3, lane 0): unassigned (ledger {db})",
        "moved 6 sensor unit(s) of lane node3-lane0 to no SKU: 6 from TEA",
    ]
    asyncio.run(counted(-2))  # counted while unassigned: under no SKU
    assert assign("--sku", "COLA") == [
        f"lane node3-lane0 (node 3, lane 0): COLA (ledger {db})",
        "moved 4 sensor unit(s) of lane node3-lane0 to COLA: 4 from no SKU",
    ]
    with sqlite3.connect(db) as conn:
        held = conn.execute("SELECT sku, qty FROM observed_stock WHERE lane_id = 'node3-lane0' AND qty != 0").fetchall()
    assert held == [("COLA", 4)]


def test_assign_lane_with_a_config_refuses_a_node_the_hub_does_not_have(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--config``, the nodes are known (hub.toml's [[node]] tables and its nodes_files): a typo in --node is
    refused instead of leaving a lane no node fills; with ``--db`` alone they are not known, and it is assigned."""
    (tmp_path / "more.toml").write_text('[[node]]\nid = 7\nkey = "00"\nport = "/dev/null"\n')
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[hub]\ndatabase = "{db.name}"\nnodes_files = ["more.toml"]\n\n[[node]]\nid = 3\nkey = "00"\nport = "x"\n'
    )
    for node in ("3", "7"):
        argv = ["ledger", "assign-lane", "--config", str(config), "--node", node, "--lane", "1", "--sku", "COLA"]
        assert run(capsys, *argv)[0] == 0
    rc, out, err = run(capsys, "ledger", "assign-lane", "--config", str(config), "--node", "42", "--lane", "0",
                       "--sku", "COLA")  # fmt: skip
    assert (rc, out) == (2, "")
    assert err == (
        f"smartshelf ledger: node 42 is not one of {config}'s nodes (its [[node]] tables and hub.nodes_files: 3, 7):"
        " nothing assigned\n"
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM lanes WHERE node_id = 42").fetchone() == (0,)
    rc, _, _ = run(capsys, "ledger", "assign-lane", "--db", str(db), "--node", "42", "--lane", "0", "--sku", "COLA")
    assert rc == 0


def test_stock_shows_the_units_of_lanes_with_no_sku(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A node counting on a lane nobody assigned books its units under no SKU (in no balance): ``ledger stock``
    shows them as ``(no SKU)`` with the lane, says what that means, and leaves them out when filtering by a SKU."""
    import asyncio

    from hub.ledger import LedgerService, SensorGap
    from hub.schema import MIGRATIONS

    async def counted() -> None:
        async with LedgerService(db, migrations=MIGRATIONS) as ledger:
            await ledger.submit(SensorGap(3, 0, 4, "f4:lane0", 1_700_000_000_000))  # lane 0 is COLA's
            await ledger.submit(SensorGap(5, 2, 6, "f6:lane2", 1_700_000_000_000))  # unassigned: no SKU
            await ledger.submit(SensorGap(5, 2, -1, "f-1:lane2", 1_700_000_000_001))
            await ledger.submit(SensorGap(5, 3, 0, "f0:lane3", 1_700_000_000_000))  # unassigned, nothing on it

    asyncio.run(counted())
    rc, out, err = run(capsys, "ledger", "stock", "--db", str(db))
    observed = out.split("\n\n")[1].splitlines()
    assert (rc, err) == (0, "") and [line.split() for line in observed] == [
        ["sku", "lane", "(sensor", "ledger)", "observed"],
        ["COLA", "node3-lane0", "4"],
        ["(no", "SKU)", "node5-lane2", "5"],
    ]
    assert out.splitlines()[-1].startswith("(no SKU): units counted on a lane with no SKU, in no product's stock")
    rc, out, err = run(capsys, "ledger", "stock", "--sku", "COLA", "--db", str(db))
    assert (rc, err) == (0, "") and "node5-lane2" not in out and "no SKU" not in out and "node3-lane0" in out
    # assigned, the lane's units are its SKU's: no line without a SKU is left
    assert run(capsys, "ledger", "assign-lane", "--node", "5", "--lane", "2", "--sku", "COLA", "--db", str(db))[0] == 0
    rc, out, err = run(capsys, "ledger", "stock", "--db", str(db))
    assert (rc, err) == (0, "") and "no SKU" not in out and "node5-lane2" in out and out.split()[-1] == "5"
