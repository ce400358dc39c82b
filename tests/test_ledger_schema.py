"""Ledger schema: creation, migration from an older version, refusing newer or foreign files, integrity rules."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hub.ledger import LedgerService, Sku
from hub.ledger.models import SchemaError
from hub.ledger.schema import APPLICATION_ID, LATEST_VERSION, MIGRATIONS, Migration, connect, migrate


def _sql(path: Path, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def _tables(path: Path) -> set[str]:
    return {str(r[0]) for r in _sql(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_fresh_database_has_every_table_and_the_latest_version(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with LedgerService(db) as ledger:
        assert ledger._conn is not None
        assert list(await ledger._conn.execute_fetchall("PRAGMA synchronous")) == [(2,)]  # FULL
        assert list(await ledger._conn.execute_fetchall("PRAGMA foreign_keys")) == [(1,)]
    assert {
        "schema_version",
        "skus",
        "lanes",
        "nodes",
        "movements",
        "balances",
        "physical_counts",
        "alerts",
        "audit",
    } <= _tables(db)
    assert _sql(db, "SELECT version FROM schema_version ORDER BY version") == [(m.version,) for m in MIGRATIONS]
    views = {str(r[0]) for r in _sql(db, "SELECT name FROM sqlite_master WHERE type = 'view'")}
    assert views == {"book_stock", "observed_stock"}
    assert _sql(db, "PRAGMA journal_mode") == [("wal",)]
    assert _sql(db, "PRAGMA application_id") == [(APPLICATION_ID,)]


async def test_synchronous_normal_is_configurable(tmp_path: Path) -> None:
    async with LedgerService(tmp_path / "l.db", synchronous="NORMAL") as ledger:
        assert ledger._conn is not None
        assert list(await ledger._conn.execute_fetchall("PRAGMA synchronous")) == [(1,)]


async def test_an_old_database_is_upgraded_in_place_keeping_its_data(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = connect(db)
    assert migrate(conn, MIGRATIONS[:1]) == (0, 1)
    conn.execute("INSERT INTO skus (sku, name, unit_weight_dg) VALUES ('TEA', 'Tea', 1000)")
    conn.execute(
        "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor)"
        " VALUES (1, 1, 'TEA', 'backroom', 12, 'receipt', 'receipt:R1', 'old')"
    )
    conn.close()
    assert "alerts" not in _tables(db)

    async with LedgerService(db) as ledger:
        await ledger.record_sale("TEA", 2, actor="pos", ref="S1")
        opened = await ledger.open_alert("reorder", "sku:TEA", {"book": 10}, actor="test")
        assert opened.created
        async with await ledger.reader() as reader:
            assert await reader.schema_version() == LATEST_VERSION
            assert await reader.book_total("TEA") == 10
            assert await reader.consistency_errors() == []


async def test_a_newer_database_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with LedgerService(db):
        pass
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (?, 0, 'from the future')", (LATEST_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match=rf"schema version {LATEST_VERSION + 1}, newer than .*upgrade smartshelf"):
        await LedgerService(db).start()
    assert _sql(db, "SELECT max(version) FROM schema_version") == [(LATEST_VERSION + 1,)]


async def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    _sql(other, "CREATE TABLE customers (id INTEGER)")
    with pytest.raises(SchemaError, match="not a smartshelf ledger"):
        await LedgerService(other).start()
    text = tmp_path / "notes.db"
    text.write_text("this is not a database, but it is long enough to have a header " * 4)
    with pytest.raises(SchemaError, match="cannot open as a ledger database"):
        await LedgerService(text).start()


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    conn = connect(db)
    migrate(conn)
    broken = (*MIGRATIONS, Migration(LATEST_VERSION + 1, "broken", ("CREATE TABLE extra (a INTEGER)", "NOT SQL")))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, broken)
    conn.close()
    assert "extra" not in _tables(db)
    assert _sql(db, "SELECT max(version) FROM schema_version") == [(LATEST_VERSION,)]


async def test_movements_counts_and_audit_are_append_only(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with LedgerService(db) as ledger:
        await ledger.add_sku(Sku("TEA", "Tea", 1000), actor="t")
        await ledger.record_receipt("TEA", 5, actor="t", ref="R1")
        await ledger.record_count("TEA", 4, actor="t", ref="C1")
    conn = sqlite3.connect(db)
    for stmt in (
        "UPDATE movements SET qty = 99",
        "DELETE FROM movements",
        "UPDATE physical_counts SET counted_qty = 5",
        "DELETE FROM physical_counts",
        "UPDATE audit SET actor = 'someone else'",
        "DELETE FROM audit",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(stmt)
    conn.close()


async def test_schema_rules_hold_even_for_direct_sql(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with LedgerService(db) as ledger:
        await ledger.add_sku(Sku("TEA", "Tea", 1000), actor="t")
        await ledger.record_receipt("TEA", 5, actor="t", ref="R1")
    conn = sqlite3.connect(db)
    insert = (
        "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor, reverses_id)"
        " VALUES (1, 1, 'TEA', ?, ?, ?, ?, 't', ?)"
    )
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(insert, ("backroom", 1, "receipt", "receipt:R1", None))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(insert, ("sensor:x", 1, "receipt", "receipt:R2", None))  # book reason in the sensor ledger
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(insert, ("backroom", 1, "sensor_put", "x:1", None))  # sensor reason in the book
    conn.execute(insert, ("backroom", -5, "receipt", "reversal:1", 1))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(insert, ("backroom", -5, "receipt", "reversal:again", 1))  # reversed once only
    alert = "INSERT INTO alerts (kind, cause_key, status, opened_ms) VALUES ('shrinkage', 'lane:a', ?, 1)"
    conn.execute(alert, ("open",))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(alert, ("acknowledged",))
    conn.rollback()
    conn.close()
