"""The store's EPC -> SKU table imported from CSV: all or nothing, every problem by line, re-imports harmless,
re-mapping audited; ``smartshelf ledger import epcs`` and ``add-sku --gtin``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.cli import main
from hub.ledger import LedgerService, Sku
from hub.ledger.epc_imports import parse_epc_csv
from hub.ledger.imports import ImportTooLarge
from hub.schema import MIGRATIONS

A = "3074257BF7194E4000001A85"
B = "E2801160600002054CC2096F"


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as service:
        await service.add_sku(Sku("COLA", "Cola", 3500), actor="t")
        await service.add_sku(Sku("TEA", "Tea", 1200), actor="t")
        yield service


def table(ledger: LedgerService) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(ledger.path)
    try:
        return conn.execute("SELECT epc, sku, actor FROM epc_skus ORDER BY epc").fetchall()
    finally:
        conn.close()


async def test_a_file_imports_normalised_and_again_changes_nothing(ledger: LedgerService) -> None:
    data = f"\ufeffEPC,Sku\r\n{A.lower()},COLA\r\n\r\ne2-80-11-60-60-00-02-05-4c-c2-09-6f , TEA\r\n".encode()
    report = await ledger.import_epcs(data, actor="clerk", name="tags.csv")
    assert report.ok and (report.rows, report.applied, report.duplicates) == (2, 2, 0)
    assert table(ledger) == [(A, "COLA", "clerk"), (B, "TEA", "clerk")]
    again = await ledger.import_epcs(data, actor="clerk", name="tags.csv")
    assert again.ok and (again.applied, again.duplicates) == (0, 2) and "nothing changed" in again.summary()


async def test_a_re_tagged_epc_is_re_mapped_and_the_audit_names_old_and_new(ledger: LedgerService) -> None:
    await ledger.import_epcs(f"epc,sku\n{A},COLA\n".encode(), actor="clerk")
    report = await ledger.import_epcs(f"epc,sku\n{A},TEA\n".encode(), actor="clerk", name="retag.csv")
    assert report.ok and report.applied == 1
    assert table(ledger) == [(A, "TEA", "clerk")]
    async with await ledger.reader() as reader:
        entries = [e for e in await reader.audit() if e.action == "import_epcs"]
    assert entries[-1].details["remapped_epcs"] == [{"epc": A, "old": "COLA", "new": "TEA"}]
    assert entries[-1].details["file"] == "retag.csv" and len(entries[-1].details["sha256"]) == 64


async def test_every_problem_is_reported_by_line_and_nothing_is_written(ledger: LedgerService) -> None:
    c = "30" + "00" * 11
    data = (f"epc,sku\n{A},COLA\nXYZ,COLA\n{A},TEA\n,COLA\n{B},\n{c},FANTA\n123,TEA\n" + "AB" * 33 + ",TEA\n").encode()
    report = await ledger.import_epcs(data, actor="clerk", name="bad.csv")
    assert not report.ok
    assert report.error_lines() == [
        "bad.csv:3: EPC 'XYZ' is not 1..32 bytes of hex (e.g. 3074257BF719...)",
        f"bad.csv:4: EPC {A} repeats line 2",
        "bad.csv:5: empty epc",
        "bad.csv:6: empty sku",
        "bad.csv:7: unknown SKU 'FANTA'",
        "bad.csv:8: EPC '123' is not 1..32 bytes of hex (e.g. 3074257BF719...)",
        f"bad.csv:9: EPC '{'AB' * 33}' is not 1..32 bytes of hex (e.g. 3074257BF719...)",
    ]
    assert table(ledger) == []  # line 2 was fine: not written either
    async with await ledger.reader() as reader:
        assert not [e for e in await reader.audit() if e.action == "import_epcs"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "1: empty file: a header row is required (epc,sku)"),
        (b"epc\nAB\n", "1: missing column 'sku'"),
        (b"epc,sku,qty\nAB,COLA,1\n", "1: unknown column 'qty' (a epcs file has epc,sku)"),
        (b"epc,sku\nAB,COLA,3\n", "2: expected 2 fields, found 3"),
        (b"epc,sku\n\xff\xfe,COLA\n", "2: not UTF-8 text (byte 0xff): save the file as UTF-8 CSV"),
    ],
)
def test_file_problems(data: bytes, message: str) -> None:
    parsed = parse_epc_csv(data)
    assert [str(e).removeprefix("line ") for e in parsed.errors] == [message.replace(": ", ": ", 1)]


async def test_a_file_too_large_is_refused_before_the_writer(ledger: LedgerService) -> None:
    data = ("epc,sku\n" + "".join(f"{i:024X},COLA\n" for i in range(11))).encode()
    with pytest.raises(ImportTooLarge, match="split it"):
        await ledger.import_epcs(data, actor="clerk", max_rows=10)


def test_the_cli_imports_the_table_and_adds_a_gtin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "shop.db"
    assert main(["ledger", "init", "--db", str(db)]) == 0
    sku = ["ledger", "add-sku", "--db", str(db), "--unit-weight-dg", "3500"]
    assert main([*sku, "COLA", "--gtin", "80614141123458"]) == 0
    assert main([*sku, "TEA", "--gtin", "80614141123459"]) == 1  # refused: nothing written
    assert "wrong check digit: 9, it should be 8" in capsys.readouterr().err
    good = tmp_path / "epcs.csv"
    good.write_text(f"epc,sku\n{B},COLA\n")
    assert main(["ledger", "import", "epcs", str(good), "--db", str(db), "--actor", "clerk"]) == 0
    assert "1 applied" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("epc,sku\nnope,COLA\n")
    assert main(["ledger", "import", "epcs", str(bad), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv:2: EPC 'nope' is not 1..32 bytes of hex" in err and "nothing was written" in err
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT sku, gtin FROM skus").fetchall() == [("COLA", "80614141123458")]
        assert conn.execute("SELECT epc, sku FROM epc_skus").fetchall() == [(B, "COLA")]
        details = json.loads(conn.execute("SELECT details FROM audit WHERE action = 'import_epcs'").fetchone()[0])
        assert details["applied"] == 1
    finally:
        conn.close()
