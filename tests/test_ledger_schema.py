"""Ledger schema: creation, migration from an older version, refusing newer or foreign files, integrity rules."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hub.ledger import LedgerService, Sku
from hub.ledger import schema as ledger_schema
from hub.ledger.models import SchemaError
from hub.ledger.schema import APPLICATION_ID, Migration, compose, connect, migrate, open_and_migrate
from hub.schema import LATEST_VERSION, MIGRATIONS


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
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
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
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
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

    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await ledger.record_sale("TEA", 2, actor="pos", ref="S1")
        opened = await ledger.open_alert("reorder", "sku:TEA", {"book": 10}, actor="test")
        assert opened.created
        async with await ledger.reader() as reader:
            assert await reader.schema_version() == LATEST_VERSION
            assert await reader.book_total("TEA") == 10
            assert await reader.consistency_errors() == []


async def test_a_newer_database_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS):
        pass
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (?, 0, 'from the future')", (LATEST_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match=rf"schema version {LATEST_VERSION + 1}, newer than .*upgrade smartshelf"):
        await LedgerService(db, migrations=MIGRATIONS).start()
    assert _sql(db, "SELECT max(version) FROM schema_version") == [(LATEST_VERSION + 1,)]


async def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    _sql(other, "CREATE TABLE customers (id INTEGER)")
    with pytest.raises(SchemaError, match="not a smartshelf ledger"):
        await LedgerService(other, migrations=MIGRATIONS).start()
    text = tmp_path / "notes.db"
    text.write_text("this is not a database, but it is long enough to have a header " * 4)
    with pytest.raises(SchemaError, match="cannot open as a ledger database"):
        await LedgerService(text, migrations=MIGRATIONS).start()


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    conn = connect(db)
    migrate(conn, MIGRATIONS)
    broken = (*MIGRATIONS, Migration(LATEST_VERSION + 1, "broken", ("CREATE TABLE extra (a INTEGER)", "NOT SQL")))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, broken)
    conn.close()
    assert "extra" not in _tables(db)
    assert _sql(db, "SELECT max(version) FROM schema_version") == [(LATEST_VERSION,)]


async def test_movements_counts_and_audit_are_append_only(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
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
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
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


# ------------------------------------------------------------------------------ migrations composed by subsystem

# sha256 of [version, description, statements] of each released step, as issue 9's branch point (a7518b4) had them
# in one file: the subsystems' steps composed by hub.schema must be exactly these (a database records them applied).
RELEASED = {
    1: "10bc4e10f6852d096839b3c3a97ccdd0c26d2e7cc54e63b816745e4a94cb0b0f",
    2: "24ceb1bfbb63e6935ee6d21cede361e04da7a2779d558ccd03a7d5c233eab9f6",
    3: "2a7daa7008bb8e24f40c0e84f2cd0421cee33a6b2dd774762f69ff8048564d8c",
    4: "0e1ffacffb02c3e7c42aaadf0e3bf61b24567401af9eef48caac48de2b8d4fdd",
    5: "2e4855d1c615121b862d913898ca3505d42a509124e512d1768df0c721ab210c",
    6: "b7e56982aca5d22448d150417206b10a54d2c7d8f07f5acb0fe503c05942d1ba",  # issue 10: sensor_count
}


def _digest(m: Migration) -> str:
    return hashlib.sha256(json.dumps([m.version, m.description, list(m.statements)]).encode()).hexdigest()


def _schema(path: Path) -> list[tuple[object, ...]]:
    return _sql(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")


def test_released_steps_are_unchanged_by_their_move_to_the_subsystems() -> None:
    assert {m.version: _digest(m) for m in MIGRATIONS if m.version in RELEASED} == RELEASED


def test_compose_joins_the_parts_of_one_step_in_order_and_refuses_gaps() -> None:
    a, b, c = Migration(1, "one", ("A",)), Migration(2, "two", ("B",)), Migration(2, "more", ("C", "D"))
    assert compose(a, b, c) == (a, Migration(2, "two, more", ("B", "C", "D")))
    assert compose() == ()
    with pytest.raises(ValueError, match=r"migration 3 .* where version 2 belongs"):
        compose(a, Migration(3, "three", ()))
    with pytest.raises(ValueError, match="where version 1 belongs"):
        compose(b)
    with pytest.raises(ValueError, match="where version 3 belongs"):
        compose(a, b, a)  # parts of one step must be listed together


def test_migrations_must_be_whole_steps_from_one(tmp_path: Path) -> None:
    """One subsystem's steps alone (the ledger core's: 1, 2 and its part of 5) would record version 5 as applied
    without the other parts of that step: refused before anything is written."""
    db = tmp_path / "l.db"
    for partial in ((ledger_schema.CORE, ledger_schema.ALERTS, ledger_schema.LANE_READINGS), MIGRATIONS[1:], ()):
        with pytest.raises(ValueError, match=r"steps 1\.\.n of one database"):
            open_and_migrate(db, partial)
    assert not db.exists() or _tables(db) == set()


async def test_a_database_of_every_older_version_upgrades_to_the_schema_of_a_fresh_one(tmp_path: Path) -> None:
    """A database the branch point's code created at version k is what ``migrate(MIGRATIONS[:k])`` creates (the
    released steps are unchanged, above): each upgrades in one go to exactly the tables, indexes, triggers and views,
    and the ``schema_version`` rows, of a database created now."""
    fresh = tmp_path / "fresh.db"
    async with LedgerService(fresh, migrations=MIGRATIONS):
        pass
    versions = "SELECT version, description FROM schema_version ORDER BY version"
    assert _sql(fresh, versions) == [(m.version, m.description) for m in MIGRATIONS]
    for k in range(1, LATEST_VERSION):
        old = tmp_path / f"v{k}.db"
        conn = connect(old)
        assert migrate(conn, MIGRATIONS[:k]) == (0, k)
        conn.close()
        async with LedgerService(old, migrations=MIGRATIONS):
            pass
        assert _schema(old) == _schema(fresh), k
        assert _sql(old, versions) == _sql(fresh, versions)
        assert _sql(old, "PRAGMA application_id") == [(APPLICATION_ID,)]


def test_step_6_lets_movements_take_sensor_count_and_nothing_else_new(tmp_path: Path) -> None:
    """A version 5 database with sensor rows: after the upgrade its rows are intact, a ``sensor_count`` row is
    taken at a sensor location (and refused at a book one), unknown reasons are still refused, and a connection
    opened before the upgrade sees the new rule too (the schema cookie moved)."""
    db = tmp_path / "v5.db"
    conn = connect(db)
    migrate(conn, MIGRATIONS[:5])
    conn.execute("INSERT INTO nodes (node_id) VALUES (1)")
    row = (
        "INSERT INTO movements (ts_ms, recorded_ms, location, qty, reason, source_ref, actor, node_id)"
        " VALUES (1, 1, ?, ?, ?, ?, 'node:1', 1)"
    )
    conn.execute(row, ("sensor:a", -2, "sensor_pick", "node:1:ev:1"))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(row, ("sensor:a", 5, "sensor_count", "node:1:ev:2"))
    before = connect(db)
    before.execute("SELECT count(*) FROM movements").fetchone()  # parses the version 5 schema
    assert migrate(conn, MIGRATIONS) == (5, LATEST_VERSION)
    conn.execute(row, ("sensor:a", 5, "sensor_count", "node:1:ev:2"))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(row, ("lane:a", 5, "sensor_count", "x:1"))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(row, ("sensor:a", 5, "sensor_guess", "x:2"))
    before.execute(row, ("sensor:a", 1, "sensor_count", "node:1:ev:3"))
    assert _sql(db, "SELECT reason, qty FROM movements ORDER BY id") == [
        ("sensor_pick", -2),
        ("sensor_count", 5),
        ("sensor_count", 1),
    ]
    assert _sql(db, "PRAGMA integrity_check") == [("ok",)]
    conn.close()
    before.close()


def test_steps_9_and_10_give_the_trail_an_origin_and_keep_it_append_only(tmp_path: Path) -> None:
    """A version 8 database with audit entries: after the upgrade they are intact with no origin (not recorded), a new
    entry must say where it came from, nothing can fill in or change an old entry's origin, and the page's indexes
    are there."""
    db = tmp_path / "v8.db"
    conn = connect(db)
    migrate(conn, MIGRATIONS[:8])
    old = "INSERT INTO audit (ts_ms, actor, action, details) VALUES (?, ?, ?, ?)"
    conn.execute(old, (1, "cli:alice", "add_sku", '{"sku":"TEA"}'))
    conn.execute(old, (2, "web:bob", "login", '{"ip":"10.0.0.7"}'))
    assert migrate(conn, MIGRATIONS) == (8, LATEST_VERSION)
    assert _sql(db, "SELECT id, ts_ms, actor, action, details, origin FROM audit ORDER BY id") == [
        (1, 1, "cli:alice", "add_sku", '{"sku":"TEA"}', None),
        (2, 2, "web:bob", "login", '{"ip":"10.0.0.7"}', None),
    ]
    with pytest.raises(sqlite3.IntegrityError, match="where it came from"):
        conn.execute(old, (3, "x", "y", "{}"))
    conn.execute("INSERT INTO audit (ts_ms, actor, action, details, origin) VALUES (3, 'x', 'y', '{}', 'auto')")
    for stmt in ("UPDATE audit SET origin = 'ip:10.0.0.7' WHERE origin IS NULL", "DELETE FROM audit WHERE id = 1"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(stmt)
    indexes = {str(r[0]) for r in _sql(db, "SELECT name FROM sqlite_master WHERE tbl_name = 'audit'")}
    assert {"audit_action", "audit_ts", "audit_actor", "audit_origin"} <= indexes
    assert _sql(db, "PRAGMA integrity_check") == [("ok",)]
    conn.close()


def test_the_ledger_imports_none_of_the_subsystems_that_use_it() -> None:
    """The ledger (and its CLI) is composed with reconciliation's and the status page's tables by the hub root
    (``hub.schema``), never by importing them."""
    code = (
        "import sys, hub.ledger, hub.ledger.cli, hub.ledger.backup, hub.ledger.postings, hub.ledger.schema;"
        "print(sorted(m for m in sys.modules if m.startswith(('hub.web', 'hub.reconcile', 'hub.schema'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
