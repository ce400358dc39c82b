"""CSV imports: every kind, every bad-row case with its line number, all or nothing, re-import changes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.ledger import LedgerReader, LedgerService, Reason, Sku
from hub.ledger.imports import parse_csv
from hub.schema import MIGRATIONS

TS = "2025-11-27T10:00:00Z"


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    # NORMAL: these tests are about the rules; durability (FULL, the default) is tested in test_ledger_sensor.
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as svc:
        await svc.add_sku(Sku("COLA", "Cola", 3500), actor="setup")
        await svc.add_sku(Sku("TEA", "Tea", 1200), actor="setup")
        await svc.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
        yield svc


@pytest.fixture
async def reader(ledger: LedgerService) -> AsyncIterator[LedgerReader]:
    async with await ledger.reader() as r:
        yield r


def snapshot(ledger: LedgerService) -> tuple[object, ...]:
    conn = sqlite3.connect(ledger.path)
    try:
        return tuple(
            conn.execute(q).fetchall()
            for q in (
                "SELECT * FROM movements ORDER BY id",
                "SELECT * FROM balances ORDER BY sku, location",
                "SELECT * FROM physical_counts ORDER BY id",
                "SELECT * FROM audit ORDER BY id",
            )
        )
    finally:
        conn.close()


async def book(reader: LedgerReader, sku: str) -> dict[str, int]:
    return {b.location: b.qty for b in await reader.book_stock(sku=sku) if b.qty}


async def test_each_kind_imports(ledger: LedgerService, reader: LedgerReader) -> None:
    receipts = f"id,timestamp,sku,quantity,location\nR1,{TS},COLA,24,\nR2,{TS},TEA,10,warehouse\n"
    report = await ledger.import_csv("receipts", receipts.encode(), actor="clerk", name="receipts.csv")
    assert report.ok and (report.rows, report.applied, report.duplicates) == (2, 2, 0)
    assert report.summary() == "receipts.csv: 2 receipts rows: 2 applied, 0 already in the ledger"
    await ledger.restock("COLA", "A1", 10, actor="clerk", ref="X1")
    sales = f"id,timestamp,sku,quantity\nS1,{TS},COLA,2\nS2,2025-11-27T11:00:00+01:00,COLA,1\n"
    assert (await ledger.import_csv("sales", sales.encode(), actor="pos")).applied == 2
    picks = f"id,timestamp,sku,quantity,order\nP1,{TS},COLA,3,ORD-1\n"
    assert (await ledger.import_csv("picks", picks.encode(), actor="wms")).applied == 1
    returns = f"id,timestamp,sku,quantity,restockable\nT1,{TS},COLA,1,yes\nT2,{TS},COLA,2,no\nT3,{TS},TEA,1,\n"
    assert (await ledger.import_csv("returns", returns.encode(), actor="desk")).applied == 3
    counts = f"id,timestamp,sku,counted,location\nC1,{TS},TEA,9,warehouse\nC2,{TS},COLA,0,lane:A1\n"
    assert (await ledger.import_csv("counts", counts.encode(), actor="counter")).applied == 2
    assert await book(reader, "COLA") == {"backroom": 15}
    assert await book(reader, "TEA") == {"backroom": 1, "warehouse": 9}
    sale = (await reader.movements(source_ref="sale:S2")).items[0]
    assert sale.ts_ms == 1764237600000 and sale.actor == "pos" and sale.reason == Reason.SALE
    assert (await reader.movements(source_ref="pick:P1")).items[0].note == "order ORD-1"
    audit = [(e.actor, e.action) for e in await reader.audit(limit=1000)]
    assert ("pos", "import_sales") in audit and ("pos", "sale") in audit
    assert await reader.consistency_errors() == []


async def test_reimporting_the_same_file_changes_nothing(ledger: LedgerService, reader: LedgerReader) -> None:
    data = f"id,timestamp,sku,quantity\nR1,{TS},COLA,5\nR2,{TS},TEA,7\n".encode()
    assert (await ledger.import_csv("receipts", data, actor="clerk", name="r.csv")).applied == 2
    before = snapshot(ledger)
    again = await ledger.import_csv("receipts", data, actor="clerk", name="r.csv")
    assert again.ok and (again.applied, again.duplicates) == (0, 2)
    assert again.summary() == "r.csv: 2 receipts rows, all already in the ledger: nothing changed"
    assert snapshot(ledger) == before
    counts = f"id,timestamp,sku,counted\nC1,{TS},COLA,3\n".encode()
    assert (await ledger.import_csv("counts", counts, actor="counter")).applied == 1
    before = snapshot(ledger)
    assert (await ledger.import_csv("counts", counts, actor="counter")).duplicates == 1
    assert snapshot(ledger) == before


async def test_a_grown_file_applies_only_its_new_rows(ledger: LedgerService, reader: LedgerReader) -> None:
    first = f"id,timestamp,sku,quantity\nS1,{TS},COLA,1\n"
    await ledger.import_csv("sales", first.encode(), actor="pos")
    report = await ledger.import_csv("sales", (first + f"S2,{TS},COLA,4\n").encode(), actor="pos")
    assert (report.applied, report.duplicates) == (1, 1)
    assert await book(reader, "COLA") == {"lane:A1": -5}


HEADER = "id,timestamp,sku,quantity\n"


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        ("sales", HEADER + f"S1,{TS},COLA,1\nS2,{TS},NOPE,1\n", [(3, "unknown SKU 'NOPE'")]),
        ("sales", HEADER + f"S1,{TS},COLA,two\n", [(2, "quantity 'two' is not a whole number")]),
        ("sales", HEADER + f"S1,{TS},NOPE,two\n", [(2, "quantity 'two'"), (2, "unknown SKU 'NOPE'")]),
        ("sales", HEADER + f"S1,{TS},COLA,1.5\n", [(2, "quantity '1.5' is not a whole number")]),
        ("sales", HEADER + f"S1,{TS},COLA,0\n", [(2, "quantity must be positive, not 0")]),
        ("sales", HEADER + f"S1,{TS},COLA,-3\n", [(2, "quantity must be positive, not -3")]),
        ("sales", HEADER + f"S1,{TS},COLA,99999999\n", [(2, "larger than 1,000,000")]),
        ("sales", HEADER + "S1,yesterday,COLA,1\n", [(2, "timestamp 'yesterday' is not ISO 8601")]),
        ("sales", HEADER + "S1,2025-11-27T10:00:00,COLA,1\n", [(2, "has no timezone")]),
        ("sales", HEADER + "S1,2025-13-01T10:00:00Z,COLA,1\n", [(2, "is not ISO 8601")]),
        (
            "sales",
            HEADER + f"S1,{TS},COLA,1\nS2,{TS},COLA,1\nS1,{TS},COLA,1\n",
            [(4, "id 'S1' repeats line 2")],
        ),
        ("sales", HEADER + f",{TS},COLA,1\n", [(2, "empty id")]),
        ("sales", HEADER + f"S1,{TS},,1\n", [(2, "empty sku")]),
        ("sales", HEADER + f"S1,{TS},COLA\n", [(2, "expected 4 fields, found 3")]),
        ("sales", HEADER + f"S1,{TS},COLA,1,extra\n", [(2, "expected 4 fields, found 5")]),
        ("sales", f"id,timestamp,sku\nS1,{TS},COLA\n", [(1, "missing column 'quantity'")]),
        ("sales", f"id,timestamp,sku,quantity,price\nS1,{TS},COLA,1,2.50\n", [(1, "unknown column 'price'")]),
        ("sales", f"id,timestamp,sku,quantity,sku\nS1,{TS},COLA,1,X\n", [(1, "column 'sku' appears more than once")]),
        ("sales", "", [(1, "empty file: a header row is required")]),
        ("sales", " \r\n\n", [(1, "empty file")]),
        ("sales", ",,,\n", [(1, "empty file")]),
        ("sales", HEADER + f"S1,{TS},COLA,1\n\ufeffS2,{TS},COLA,1\n", [(3, "stray byte-order mark")]),
        ("sales", HEADER + f"S1,{TS},COLA,1\n" + "S2,2025-11-27T10:00:00Z,CAF\xe9,1\n", [(3, "not UTF-8")]),
        ("sales", HEADER + f"S1,{TS},CO\x00LA,1\n", [(2, "NUL byte")]),
        ("sales", HEADER + f'S1,{TS},"COLA,1\n', [(2, "malformed CSV")]),
        ("sales", HEADER + f"S1,{TS},COLA,1,\n", [(2, "expected 4 fields, found 5")]),
        ("sales", HEADER + f"S1,{TS},COLA,1\nS2,{TS},COLA,1\n", []),  # control: a good file
        ("sales", HEADER + f"S1,{TS},COLA,1\n", []),
        ("receipts", HEADER.strip() + f",location\nR1,{TS},COLA,1,Back Room\n", [(2, "bad location 'Back Room'")]),
        ("receipts", HEADER.strip() + f",location\nR1,{TS},COLA,1,lane:Z9\n", [(2, "unknown lane 'Z9'")]),
        ("picks", HEADER.strip() + f",order\nP1,{TS},COLA,1,\n", [(2, "empty order")]),
        ("picks", HEADER + f"P1,{TS},COLA,1\n", [(1, "missing column 'order'")]),
        ("returns", HEADER.strip() + f",restockable\nT1,{TS},COLA,1,maybe\n", [(2, "restockable 'maybe'")]),
        ("counts", f"id,timestamp,sku,counted\nC1,{TS},COLA,-1\n", [(2, "counted must be zero or more")]),
        ("counts", HEADER + f"C1,{TS},COLA,1\n", [(1, "unknown column 'quantity'"), (1, "missing column 'counted'")]),
    ],
)
async def test_bad_rows_are_reported_with_their_line_and_reject_the_file(
    ledger: LedgerService, kind: str, data: str, expected: list[tuple[int, str]]
) -> None:
    raw = data.encode("latin-1") if "\xe9" in data else data.encode()
    before = snapshot(ledger)
    report = await ledger.import_csv(kind, raw, actor="clerk", name="in.csv")  # type: ignore[arg-type]
    assert len(report.errors) == len(expected), report.errors
    for error, (line, text) in zip(report.errors, expected, strict=True):
        assert error.line == line and text in error.message, report.errors
    if expected:
        assert not report.ok and snapshot(ledger) == before
        assert report.summary().startswith("in.csv: rejected, nothing was written")
        assert report.error_lines()[0].startswith(f"in.csv:{expected[0][0]}: ")
    else:
        assert report.ok


async def test_all_problems_are_reported_and_nothing_is_written(ledger: LedgerService) -> None:
    data = (
        "id,timestamp,sku,quantity\n"
        f"S1,{TS},COLA,1\n"
        f"S2,{TS},NOPE,1\n"  # found only against the ledger
        f"S3,{TS},COLA,1\n"
        f"S4,2025-11-27,COLA,x\n"  # two problems on one line
        f"S3,{TS},COLA,1\n"
    )
    before = snapshot(ledger)
    report = await ledger.import_csv("sales", data.encode(), actor="pos", name="day.csv")
    assert [(e.line, e.message.split(" '")[0]) for e in report.errors] == [
        (3, "unknown SKU"),
        (5, "timestamp"),
        (5, "quantity"),
        (6, "id"),
    ]
    assert report.rows == 5 and not report.ok
    assert snapshot(ledger) == before


async def test_an_id_already_imported_with_other_content_rejects_the_file(ledger: LedgerService) -> None:
    await ledger.import_csv("sales", f"{HEADER}S1,{TS},COLA,1\n".encode(), actor="pos")
    before = snapshot(ledger)
    report = await ledger.import_csv("sales", f"{HEADER}S2,{TS},COLA,1\nS1,{TS},COLA,2\n".encode(), actor="pos")
    assert [(e.line, "different content" in e.message) for e in report.errors] == [(3, True)]
    assert snapshot(ledger) == before


async def test_spreadsheet_exports_are_accepted(ledger: LedgerService, reader: LedgerReader) -> None:
    """A UTF-8 BOM, CRLF line endings, blank lines, padded cells and header case are what Excel produces."""
    data = (f'\ufeffID, Timestamp ,SKU,Quantity\r\nS1, {TS} , COLA ,2\r\n\r\n"S2","{TS}","COLA","1"\r\n').encode()
    report = await ledger.import_csv("sales", data, actor="pos", name="excel.csv")
    assert report.ok and report.applied == 2, report.error_lines()
    plain = f"id,timestamp,sku,quantity\nS1,{TS},COLA,2\nS2,{TS},COLA,1\n".encode()
    assert (await ledger.import_csv("sales", plain, actor="pos")).duplicates == 2  # the same rows
    assert await book(reader, "COLA") == {"lane:A1": -3}


def test_line_numbers_count_physical_lines() -> None:
    data = f'id,timestamp,sku,quantity\n\nS1,{TS},"CO\nLA",1\n\nS2,{TS},COLA,x\n'.encode()
    parsed = parse_csv("sales", data)
    assert [r.line for r in parsed.rows] == [3] and parsed.data_rows == 2
    assert [(e.line, e.message) for e in parsed.errors] == [(6, "quantity 'x' is not a whole number")]


async def test_import_file_reads_from_disk(ledger: LedgerService, tmp_path: Path) -> None:
    path = tmp_path / "sales-2025-11-27.csv"
    path.write_text(f"{HEADER}S1,{TS},COLA,1\n")
    report = await ledger.import_file("sales", path, actor="pos")
    assert report.ok and report.name == "sales-2025-11-27.csv"


async def test_a_file_is_idempotent_per_actor(ledger: LedgerService) -> None:
    data = f"id,timestamp,sku,quantity\nT-1,{TS},COLA,1\n".encode()
    assert (await ledger.import_csv("sales", data, actor="api:pos1")).applied == 1
    again = await ledger.import_csv("sales", data, actor="api:pos1")
    assert again.ok and again.duplicates == 1 and again.applied == 0
    before = snapshot(ledger)
    other = await ledger.import_csv("sales", data, actor="cli:bob")
    assert not other.ok and other.error_lines() == [
        "<data>:2: sale:T-1 was already used by api:pos1: use ids unique to this client"
    ]
    assert snapshot(ledger) == before


async def test_an_import_larger_than_max_rows_is_refused_before_the_writer(ledger: LedgerService) -> None:
    from hub.ledger.imports import ImportTooLarge

    data = ("id,timestamp,sku,quantity\n" + "".join(f"T-{i},{TS},COLA,1\n" for i in range(4))).encode()
    before = snapshot(ledger)
    with pytest.raises(ImportTooLarge, match="4 rows, more than 3 in one file: split it"):
        await ledger.import_csv("sales", data, actor="api:pos", max_rows=3)
    assert snapshot(ledger) == before
    assert (await ledger.import_csv("sales", data, actor="api:pos", max_rows=4)).applied == 4
