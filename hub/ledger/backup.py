"""Online backups, scheduled backups and a restore that refuses bad files.

* ``backup_database(db, dest)`` uses SQLite's online backup API on its own read-only connection: it copies one
  committed state (a single backup step = one read transaction), so it works while the hub's writer is committing
  and never contains part of a transaction. The copy is written to a temporary file beside ``dest``, switched to
  a self-contained rollback journal (no ``-wal`` needed), checked (``quick_check``, schema version), fsynced and
  renamed into place: ``dest`` is either the old file or a complete new backup, never half of one.
* ``BackupPolicy`` (interval, directory, keep the last N) is run by ``LedgerService``; file names are
  ``smartshelf-YYYYmmddTHHMMSS.fffZ.db`` (UTC, sortable), and only files of that pattern are ever pruned.
* ``OffsitePolicy`` (in ``BackupPolicy.offsite``): each scheduled backup is also encrypted to age public keys and
  shipped to another directory (``hub.ledger.offsite``; the format: ``hub.ledger.agefile``).
* ``restore_database(src, db)`` refuses a file that is not SQLite, fails ``PRAGMA integrity_check``, is not a
  smartshelf ledger, has a newer schema than this version, or whose balances disagree with its movements. It then
  takes the database's lock exclusively (refusing while a hub has it open), copies ``src`` beside the target,
  upgrades the copy to this version's schema (an older-schema backup is accepted), starts a new incarnation of the
  ledger in it (``hub.ledger.identity``: its movement ids will repeat ids the lost ledger had given), reads each
  node's event mark from it (``BackupInfo.node_marks``, for the restore's audit entry: read under the lock, before a
  hub can move them), moves the current database (with its ``-wal``) to ``<db>.bak`` and renames the copy into
  place. The backup file itself is never written: it keeps the incarnation it had.

Backups hold what the ledger holds (password and API token hashes): every copy is created 0600 and a backup
directory this module creates is 0700 (``hub.private_files``); the ``<db>.bak`` a restore leaves is made 0600 too.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hub.ledger.agefile import recipient_problem
from hub.ledger.dblock import DbLock
from hub.ledger.identity import new_incarnation, read_incarnation
from hub.ledger.models import LedgerError, SchemaError, now_ms
from hub.ledger.reader import CONSISTENCY_SQL
from hub.ledger.schema import Migration, check_sqlite_version, current_version, migrate, refuse_newer
from hub.private_files import make_private_dirs, open_private, tighten

SQLITE_MAGIC = b"SQLite format 3\x00"
NODE_MARKS_SQL = "SELECT node_id, highest_contiguous_event_seq FROM nodes"
BACKUP_NAME_RE = re.compile(r"smartshelf-\d{8}T\d{6}\.\d{3}Z\.db")
HUB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BackupError(LedgerError):
    pass


class RestoreRefused(LedgerError):
    """The file was not restored; the message says why. The current database is untouched."""


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    schema_version: int
    movements: int
    size_bytes: int
    incarnation: int | None = None  # the ledger's (hub.ledger.identity); None: a schema older than step 14
    # a restore's: each node's contiguous event mark in the restored copy, read before it was renamed into place
    node_marks: dict[int, int] | None = None


@dataclass(frozen=True)
class OffsitePolicy:
    """Scheduled backups also encrypted to ``recipients`` (age public keys, ``age1...``) and shipped to
    ``directory`` (a mounted share; never created by the hub) as ``smartshelf-<hub_id>-<time>.db.age``, keeping
    the newest ``keep`` of this hub's there; each signed with the hub's key in ``signing_key`` (made on first need:
    ``hub.ledger.backup_signing``)."""

    directory: Path
    recipients: tuple[str, ...]
    keep: int = 24
    hub_id: str = "hub"
    signing_key: Path = field(kw_only=True)

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("off-site backups need at least one age public key (age1...) to encrypt to")
        for r in self.recipients:
            if (problem := recipient_problem(r)) is not None:
                raise ValueError(f"recipient {problem}")
        if not HUB_ID_RE.fullmatch(self.hub_id):
            raise ValueError(f"hub id must be 1..64 of A-Z a-z 0-9 _ -, not {self.hub_id!r}")
        if self.keep < 1:
            raise ValueError("off-site backups: keep at least 1")


@dataclass(frozen=True)
class BackupPolicy:
    directory: Path
    interval_s: float = 3600.0
    keep: int = 24
    offsite: OffsitePolicy | None = None  # also encrypted and shipped off the Pi (hub.ledger.offsite)

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.keep < 1:
            raise ValueError("backup interval must be positive and keep at least 1")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, isolation_level=None, timeout=10)


def _copy(src_conn: sqlite3.Connection, tmp: Path) -> sqlite3.Connection:
    os.close(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))  # 0600 before SQLite writes a page
    dst = sqlite3.connect(tmp, isolation_level=None)
    try:
        src_conn.backup(dst)  # one step (pages=-1): one read transaction, one consistent state
        dst.execute("PRAGMA journal_mode = DELETE")
    except BaseException:
        dst.close()
        raise
    return dst


def backup_database(db: Path | str, dest: Path | str) -> BackupInfo:
    """Copy the live ledger at ``db`` to ``dest`` (atomically replaced). Safe while the hub is writing."""
    check_sqlite_version()
    db, dest = Path(db), Path(dest)
    if not db.is_file():
        raise BackupError(f"no ledger database at {db}")
    if dest.is_dir():
        dest = dest / f"smartshelf-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%f')[:-3]}Z.db"
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    src_conn = _open_ro(db)
    try:
        dst = _copy(src_conn, tmp)
        try:
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the backup copy failed its check: {check}")
            version = current_version(dst)
            movements = dst.execute("SELECT count(*) FROM movements").fetchone()[0] if version else 0
            incarnation = read_incarnation(dst) if version else None
        finally:
            dst.close()
        _fsync_file(tmp)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        src_conn.close()
    return BackupInfo(dest, version, movements, dest.stat().st_size, incarnation)


def scheduled_backup(db: Path | str, policy: BackupPolicy, now: datetime | None = None) -> BackupInfo:
    """One scheduled backup into ``policy.directory``, then prune to the newest ``policy.keep`` backups."""
    make_private_dirs(policy.directory)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    info = backup_database(db, policy.directory / f"smartshelf-{stamp}Z.db")
    prune_backups(policy.directory, policy.keep)
    return info


def list_backups(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if BACKUP_NAME_RE.fullmatch(p.name))


def prune_backups(directory: Path, keep: int) -> list[Path]:
    backups = list_backups(directory)
    removed = backups[: max(0, len(backups) - keep)]
    for p in removed:
        p.unlink()
    return removed


def verify_backup(src: Path | str, *, migrations: Sequence[Migration]) -> BackupInfo:
    """Raise ``RestoreRefused`` unless ``src`` is an intact smartshelf ledger this version (whose schema is
    ``migrations``) can open."""
    check_sqlite_version()
    src = Path(src)
    if not src.is_file():
        raise RestoreRefused(f"{src}: no such file")
    with open(src, "rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise RestoreRefused(f"{src}: not an SQLite database")
    try:
        conn = _open_ro(src)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                raise RestoreRefused(f"{src}: failed the integrity check: {shown}")
            version = current_version(conn)
            if version == 0:
                raise RestoreRefused(f"{src}: an empty database, not a ledger backup")
            refuse_newer(version, latest=migrations[-1].version, what=str(src))
            bad = conn.execute(CONSISTENCY_SQL).fetchall()
            if bad:
                sku, loc, bal, total = bad[0]
                raise RestoreRefused(
                    f"{src}: balances disagree with movements in {len(bad)} place(s), e.g. {sku} at {loc}: "
                    f"balance {bal}, movements {total}"
                )
            movements = conn.execute("SELECT count(*) FROM movements").fetchone()[0]
            incarnation = read_incarnation(conn)
        finally:
            conn.close()
    except SchemaError as exc:
        raise RestoreRefused(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise RestoreRefused(f"{src}: failed the integrity check: {exc}") from None
    return BackupInfo(src, version, movements, src.stat().st_size, incarnation)


def restore_database(
    src: Path | str, db: Path | str, *, migrations: Sequence[Migration], source_name: str | None = None
) -> BackupInfo:
    """Replace the ledger at ``db`` with the backup ``src`` (the old file is kept as ``<db>.bak``); ``migrations``:
    the schema of this version, which ``src`` must not be newer than. The restored ledger is a new incarnation
    (``BackupInfo.incarnation``), which records ``source_name`` (default: ``src``) as what it was restored from."""
    src, db = Path(src), Path(db)
    info = verify_backup(src, migrations=migrations)
    if src.resolve() == db.resolve():
        raise RestoreRefused(f"{src} is the database itself")
    with DbLock(db).acquire(exclusive=True):
        tmp = db.with_name(f".{db.name}.restore-tmp-{os.getpid()}")
        try:
            src_conn = _open_ro(src)
            try:
                copy = _copy(src_conn, tmp)
            finally:
                src_conn.close()
            try:
                incarnation = _new_life(copy, db, migrations, source_name or str(src))
                marks = {int(n): int(c) for n, c in copy.execute(NODE_MARKS_SQL)}  # no hub can move them yet
            finally:
                copy.close()
            _fsync_file(tmp)
            bak = Path(str(db) + ".bak")
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(bak) + suffix).unlink()
            if db.exists():
                os.replace(db, bak)
            if Path(str(db) + "-wal").exists():  # keep the old WAL with its database; never replay it on the new one
                os.replace(str(db) + "-wal", str(bak) + "-wal")
            for kept in (bak, Path(str(bak) + "-wal")):  # a ledger from an older version may be 0644
                tighten(kept, "password and API token hashes")
            with contextlib.suppress(FileNotFoundError):
                Path(str(db) + "-shm").unlink()
            os.replace(tmp, db)
            _fsync_dir(db.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    return BackupInfo(db, info.schema_version, info.movements, db.stat().st_size, incarnation, marks)


def _new_life(copy: sqlite3.Connection, db: Path, migrations: Sequence[Migration], source: str) -> int | None:
    """Upgrade the copy to this version's schema, then start its new incarnation: above the backup's and the
    replaced ledger's (None: ``migrations`` end before the identity step)."""
    copy.execute("PRAGMA foreign_keys = ON")  # as on every connection that migrates (hub.ledger.schema.configure)
    try:
        migrate(copy, migrations)
    except (SchemaError, sqlite3.DatabaseError) as exc:
        raise RestoreRefused(f"{source}: cannot be upgraded to this version's schema: {exc}") from None
    return new_incarnation(copy, at_least=_incarnation_of(db), restored_from=source, now_ms=now_ms())


def _incarnation_of(db: Path) -> int | None:
    """The incarnation of the ledger about to be replaced, if it can still be read (None: none there, damaged)."""
    if not db.is_file():
        return None
    with contextlib.suppress(sqlite3.Error, SchemaError):
        conn = _open_ro(db)
        try:
            return read_incarnation(conn)
        finally:
            conn.close()
    return None
