"""Online backups during ingest restore to a consistent ledger; restore refuses bad files; scheduled backups."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import pytest

from hub.ledger import (
    Applied,
    BackupPolicy,
    LedgerReader,
    LedgerService,
    RestoreRefused,
    SensorEvent,
    Sku,
    backup_database,
    restore_database,
)
from hub.ledger.backup import BACKUP_NAME_RE, list_backups, verify_backup
from hub.ledger.dblock import LedgerBusy
from hub.ledger.schema import connect, migrate
from hub.schema import LATEST_VERSION, MIGRATIONS
from shared_protocol.messages import KIND_PICK, KIND_PUT

WAVE = 50  # sensor events queued together, hence committed together


async def _setup(ledger: LedgerService) -> None:
    await ledger.add_sku(Sku("COLA", "Cola", 3500), actor="setup")
    await ledger.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
    await ledger.record_receipt("COLA", 500, actor="setup", ref="R0")


async def _check_restored(db: Path) -> tuple[int, int]:
    """Consistency of a restored ledger; returns (events, transfers)."""
    async with await LedgerReader.open(db) as reader:
        assert await reader.consistency_errors() == []
        assert await reader.book_total("COLA") == 500  # transfers keep the total
        events: list[int] = []
        after = None
        while True:
            page = await reader.movements(location="sensor:A1", after_id=after, limit=1000)
            events += [m.event_seq or 0 for m in page.items]
            if (after := page.next_after_id) is None:
                break
        events.sort()
        assert events == list(range(1, len(events) + 1))  # a prefix of what was sent...
        assert len(events) % WAVE == 0  # ...ending on a transaction boundary: no partial batch
        node = await reader.node(1)
        assert node is not None and node.highest_contiguous_event_seq == len(events)
        legs: dict[str, int] = defaultdict(int)
        for m in (await reader.movements(reason="transfer", limit=1000)).items:  # fewer than 1000 in this test
            legs[m.source_ref] += 1
        assert set(legs.values()) <= {2}  # both legs of every transfer, never one
        return len(events), len(legs)


async def test_a_backup_taken_mid_ingest_restores_to_a_consistent_ledger(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await _setup(ledger)
        stop = asyncio.Event()

        async def ingest() -> int:
            seq = wave = 0
            while not stop.is_set():
                wave += 1
                futures = []
                for i in range(WAVE):
                    seq += 1
                    kind, delta = (KIND_PICK, -1) if i % 2 else (KIND_PUT, 1)
                    futures.append(ledger.submit(SensorEvent(1, seq, 0, kind, delta, 3500 * delta, 90, seq)))
                await ledger.transfer("COLA", 1, "backroom", "lane:A1", actor="w", ref=f"T{wave}")
                assert all(isinstance(r, Applied) for r in await asyncio.gather(*futures))
            return seq

        task = asyncio.create_task(ingest())
        backups = []
        for n in range(3):
            await asyncio.sleep(0.05)
            backups.append(await ledger.backup(tmp_path / f"mid-{n}.db"))  # in a thread; the writer keeps going
        stop.set()
        sent = await task

    assert all(b.movements > 0 for b in backups)
    restored = tmp_path / "restored.db"
    for b in backups:
        verify_backup(b.path, migrations=MIGRATIONS)
        restore_database(b.path, restored, migrations=MIGRATIONS)
        events, transfers = await _check_restored(restored)
        assert 0 < events <= sent and transfers > 0
    assert sent > (await _check_restored(restored))[0]  # the backups really were taken mid-ingest
    async with LedgerService(restored, migrations=MIGRATIONS) as reopened:  # the hub can carry on from a restored file
        assert isinstance(await reopened.record_sale("COLA", 1, actor="pos", ref="S-after"), Applied)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backup of a small ledger spanning several pages, made once and copied by each test."""
    folder = tmp_path_factory.mktemp("template")

    async def build() -> Path:
        async with LedgerService(folder / "src.db", migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
            await _setup(ledger)
            rows = "".join(f"S{i},2025-11-27T10:00:00Z,COLA,1\n" for i in range(300))
            assert (await ledger.import_csv("sales", f"id,timestamp,sku,quantity\n{rows}".encode(), actor="p")).ok
        return backup_database(folder / "src.db", folder / "template.db").path

    return asyncio.run(build())


def _corrupt_truncated(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _corrupt_overwritten(p: Path) -> None:
    data = bytearray(p.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for n in range(1, len(data) // page):
        data[n * page : n * page + 24] = b"\xa5" * 24  # clobber every b-tree page header but the first
    p.write_bytes(bytes(data))


def _not_sqlite(p: Path) -> None:
    p.write_text("id,timestamp,sku,quantity\nS1,2025-11-27T10:00:00Z,COLA,1\n" * 50)


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _newer(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute("INSERT INTO schema_version VALUES (?, 0, 'future')", (LATEST_VERSION + 1,))
    conn.commit()
    conn.close()


def _tampered(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute("UPDATE balances SET qty = qty + 7 WHERE location = 'backroom'")
    conn.commit()
    conn.close()


def _foreign(p: Path) -> None:
    p.unlink()
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_corrupt_truncated, "failed the integrity check"),
        (_corrupt_overwritten, "failed the integrity check"),
        (_not_sqlite, "not an SQLite database"),
        (_empty, "not an SQLite database"),
        (_newer, "newer than this smartshelf supports"),
        (_tampered, "balances disagree with movements"),
        (_foreign, "not a smartshelf ledger"),
    ],
)
def test_restore_refuses_bad_files_and_leaves_the_ledger_alone(
    tmp_path: Path, template: Path, damage: object, message: str
) -> None:
    src, target_db = tmp_path / "src.db", tmp_path / "target.db"
    shutil.copy(template, src)
    shutil.copy(template, target_db)
    before = target_db.read_bytes()
    damage(src)  # type: ignore[operator]
    with pytest.raises(RestoreRefused, match=message):
        restore_database(src, target_db, migrations=MIGRATIONS)
    assert target_db.read_bytes() == before
    assert not Path(str(target_db) + ".bak").exists()


async def test_restore_keeps_the_previous_file_and_accepts_an_older_schema(tmp_path: Path) -> None:
    old = tmp_path / "v1.db"
    conn = connect(old)
    migrate(conn, MIGRATIONS[:1])
    conn.execute("INSERT INTO skus (sku, name, unit_weight_dg) VALUES ('TEA', 'Tea', 1000)")
    conn.execute(
        "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, actor)"
        " VALUES (1, 1, 'TEA', 'backroom', 3, 'receipt', 'receipt:R1', 'old')"
    )
    conn.close()
    db = tmp_path / "live.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await _setup(ledger)
    info = restore_database(old, db, migrations=MIGRATIONS)
    assert info.schema_version == 1 and info.movements == 1
    # upgraded in the copy, before the rename, so that it could start a new incarnation (the replaced one was 1)
    assert info.incarnation > 1 and _identity(db)[0] == info.incarnation
    async with LedgerService(db, migrations=MIGRATIONS) as ledger, await ledger.reader() as reader:
        assert await reader.schema_version() == LATEST_VERSION
        assert await reader.book_total("TEA") == 3 and await reader.sku("COLA") is None
    async with await LedgerReader.open(Path(str(db) + ".bak")) as previous:
        assert await previous.book_total("COLA") == 500


async def test_restore_refuses_while_the_hub_runs(tmp_path: Path, template: Path) -> None:
    src = template
    db = tmp_path / "live.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await _setup(ledger)
        with pytest.raises(LedgerBusy, match="stop it first"):
            restore_database(src, db, migrations=MIGRATIONS)
        assert await ledger.record_sale("COLA", 1, actor="pos", ref="still-working")
    restore_database(src, db, migrations=MIGRATIONS)


async def test_scheduled_backups_keep_the_last_n(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a backup: never pruned")
    policy = BackupPolicy(folder, interval_s=0.03, keep=2)
    async with LedgerService(tmp_path / "live.db", migrations=MIGRATIONS, backups=policy) as ledger:
        await _setup(ledger)
        for _ in range(200):
            if len(list_backups(folder)) >= 2 and ledger.last_backup and ledger.last_backup.movements > 0:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.15)
    backups = list_backups(folder)
    assert len(backups) == 2 and all(BACKUP_NAME_RE.fullmatch(p.name) for p in backups)
    assert (folder / "notes.txt").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
    for p in backups:
        assert verify_backup(p, migrations=MIGRATIONS).schema_version == LATEST_VERSION


async def test_backup_into_a_directory_names_the_file(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await _setup(ledger)
        info = await ledger.backup(tmp_path)
    assert BACKUP_NAME_RE.fullmatch(info.path.name) and info.movements == 1
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(info.path, copy / "x.db")
    assert verify_backup(copy / "x.db", migrations=MIGRATIONS).movements == 1


def _identity(db: Path) -> tuple[int, int, str | None]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT incarnation, since_ms, restored_from FROM ledger_identity").fetchone()
    finally:
        conn.close()


async def test_a_restore_starts_a_new_incarnation_and_the_backup_keeps_its_own(tmp_path: Path) -> None:
    """A restored ledger goes on from the backup's highest movement id, so it gives ids the lost ledger had given to
    other movements: it is a new incarnation (hub.ledger.identity), above the backup's and the replaced ledger's,
    written in the copy; the backup file is never touched."""
    live = tmp_path / "live.db"
    async with LedgerService(live, migrations=MIGRATIONS) as ledger:
        await _setup(ledger)
    assert _identity(live)[::2] == (1, None)
    monday = backup_database(live, tmp_path / "monday.db")
    assert monday.incarnation == 1
    frozen = monday.path.read_bytes()
    async with LedgerService(live, migrations=MIGRATIONS) as ledger:
        lost = await ledger.record_receipt("COLA", 5, actor="setup", ref="R1")  # booked after the backup
    t0 = int(time.time() * 1000)
    restored = restore_database(monday.path, live, migrations=MIGRATIONS)
    assert restored.incarnation >= t0 // 1000  # at least the clock's seconds (hub/ledger/identity.py)
    incarnation, since_ms, restored_from = _identity(live)
    assert (incarnation, restored_from) == (restored.incarnation, str(monday.path)) and since_ms >= t0
    assert monday.path.read_bytes() == frozen and verify_backup(monday.path, migrations=MIGRATIONS).incarnation == 1
    async with LedgerService(live, migrations=MIGRATIONS) as ledger:
        again = await ledger.record_receipt("COLA", 7, actor="setup", ref="R2")
    assert again.movement_ids == lost.movement_ids  # the id the lost ledger gave to R1, now another movement's
    # the wrong backup first, then the right one: never the same incarnation twice
    right = restore_database(monday.path, live, migrations=MIGRATIONS).incarnation
    assert right > restored.incarnation
    # new Pis (nothing to replace, the first one's ledger lost with it): the same backup restored on one, and a
    # second later on another, never gives the same incarnation twice
    first_pi = restore_database(monday.path, tmp_path / "new-pi.db", migrations=MIGRATIONS).incarnation
    time.sleep(1.05)
    second_pi = restore_database(monday.path, tmp_path / "newer-pi.db", migrations=MIGRATIONS).incarnation
    assert t0 // 1000 <= first_pi < second_pi
    assert backup_database(live, tmp_path / "tuesday.db").incarnation == right  # a backup keeps the ledger's
    conn = sqlite3.connect(live)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="only goes up"):
            conn.execute("UPDATE ledger_identity SET incarnation = 1")
        with pytest.raises(sqlite3.IntegrityError, match="keeps its identity"):
            conn.execute("DELETE FROM ledger_identity")
    finally:
        conn.close()
