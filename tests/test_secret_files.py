"""Files that hold a secret or a hash are owner-only whatever the umask (issue 13): the ledger with its -wal and
-shm (password and API token hashes), backups, the session key, node keys (nodes files, the emulator's nodes.toml),
lock files, and the directories made for them; the hub refuses to start on node keys or a session key that other
users can read, and makes an older ledger that they can read 0600.

Every test runs under umask 022 (the usual one: files 0644, directories 0755 unless created with a mode).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.config import load_config
from hub.ledger import LedgerReader, LedgerService, Sku, backup_database, restore_database
from hub.ledger.backup import BackupPolicy, scheduled_backup
from hub.ledger.dblock import DbLock
from hub.private_files import ExposedSecret, exposure, make_private_dirs, private_database
from hub.provisioning.registry import register
from hub.schema import MIGRATIONS
from hub.service import HubService
from hub.web import db as web_db
from hub.web.accounts.users import add_user, hash_password
from hub.web.app import load_secret_key, secret_key_path
from tests.hub_support import KEY1

KEY = KEY1.hex()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def _ledger_with_a_user(db: Path) -> LedgerService:
    ledger = await LedgerService(db, migrations=MIGRATIONS).start()
    pw = hash_password("a-long-password")
    await ledger.transact(lambda tx: add_user(tx, "alice", pw, "manager", actor="test"))
    await ledger.add_sku(Sku("COLA", "Cola", 3500), actor="test")
    return ledger


# --------------------------------------------------------------------------------------------- the ledger


async def test_a_new_ledger_its_wal_shm_and_lock_are_0600(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    ledger = await _ledger_with_a_user(db)
    try:
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")):
            assert p.exists() and mode(p) == 0o600, p
    finally:
        await ledger.close()
    assert mode(db) == 0o600


async def test_read_only_opens_create_no_file_and_only_0600_companions(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    with pytest.raises(sqlite3.OperationalError):
        web_db.open_ro(missing)
    with pytest.raises(sqlite3.OperationalError):
        await LedgerReader.open(missing)
    assert list(tmp_path.iterdir()) == []
    db = tmp_path / "hub.db"
    await (await _ledger_with_a_user(db)).close()  # the last connection removes the -wal and -shm
    conn = web_db.open_ro(db)
    try:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
        async with await LedgerReader.open(db) as reader:
            assert await reader.consistency_errors() == []
        made = [p for p in tmp_path.iterdir() if p.name != "hub.db.lock"]
        assert {p.name: mode(p) for p in made} == {p.name: 0o600 for p in made}
    finally:
        conn.close()


async def test_an_older_ledger_readable_by_others_is_made_0600_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "hub.db"
    await (await _ledger_with_a_user(db)).close()
    other = sqlite3.connect(db, isolation_level=None)  # holds the -wal and -shm open, as an older hub version left them
    try:
        other.execute("PRAGMA journal_mode = WAL")
        other.execute("UPDATE skus SET name = 'Cola 330' WHERE sku = 'COLA'")
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        for p in files:
            p.chmod(0o644)
        with caplog.at_level(logging.WARNING, logger="hub.private_files"):
            ledger = await LedgerService(db, migrations=MIGRATIONS).start()
        await ledger.close()
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        other.close()
    lines = [r.getMessage() for r in caplog.records]
    assert f"{db}: holds password and API token hashes and is readable by other users (mode 0644): made it 0600" in (
        "\n".join(lines)
    ), lines


def test_private_database_leaves_memory_and_uris_to_sqlite(tmp_path: Path) -> None:
    assert private_database(":memory:") == []
    assert private_database(f"file:{tmp_path / 'x.db'}?mode=ro") == []
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------------- backups


async def test_backups_and_their_directory_are_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    ledger = await _ledger_with_a_user(db)
    try:
        one = backup_database(db, tmp_path / "one.db")
        policy = BackupPolicy(tmp_path / "backups" / "hourly", interval_s=60, keep=2)
        scheduled = scheduled_backup(db, policy)
    finally:
        await ledger.close()
    assert mode(one.path) == 0o600 and mode(scheduled.path) == 0o600
    assert mode(tmp_path / "backups") == 0o700 and mode(tmp_path / "backups" / "hourly") == 0o700


async def test_a_restore_leaves_the_ledger_and_the_old_one_0600(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    await (await _ledger_with_a_user(db)).close()
    backup = backup_database(db, tmp_path / "b.db")
    db.chmod(0o644)  # a ledger an older version wrote
    restore_database(backup.path, db, migrations=MIGRATIONS)
    assert mode(db) == 0o600 and mode(Path(f"{db}.bak")) == 0o600


def test_a_lock_file_is_0600_and_an_older_one_is_made_so(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    with DbLock(db).acquire(exclusive=True):
        assert mode(Path(f"{db}.lock")) == 0o600
    Path(f"{db}.lock").chmod(0o644)
    with DbLock(db).acquire(exclusive=False):
        assert mode(Path(f"{db}.lock")) == 0o600


# ---------------------------------------------------------------------------------------------- the session key


def test_the_session_key_is_0600_and_one_others_can_read_is_refused(tmp_path: Path) -> None:
    path = secret_key_path(tmp_path / "hub.db")
    key = load_secret_key(path)
    assert mode(path) == 0o600 and load_secret_key(path) == key
    path.chmod(0o644)
    with pytest.raises(ExposedSecret) as refused:
        load_secret_key(path)
    assert str(refused.value) == (
        f"{path}: holds the key that signs the page's session cookies and is readable by other users (mode 0644);"
        f" run chmod 600 {path}"
    )


# ------------------------------------------------------------------------------------- the hub and its config


def _hub_toml(directory: Path, extra: str = "") -> Path:
    path = directory / "hub.toml"
    path.write_text(
        '[hub]\ndatabase = "state/ledger/hub.db"\nbackup_dir = "state/backups"\nnodes_files = ["nodes.toml"]\n'
        f'\n[web]\nhost = "127.0.0.1"\nport = 0\n{extra}'
    )
    return path


def _nodes_file(directory: Path, nodes: str = "") -> Path:
    path = directory / "nodes.toml"
    path.write_text(nodes)
    path.chmod(0o600)
    return path


async def _start_refused(config: Path) -> Exception:
    """What ``HubService.start`` raised (a hub that starts anyway is stopped, and the test fails)."""
    hub = HubService(load_config(config), control=False, reconcile=False)
    try:
        await hub.start()
    except Exception as exc:
        return exc
    await hub.stop()
    pytest.fail("the hub started")


NODE = f'[[node]]\nid = 1\nkey = "{KEY}"\nport = "/dev/smartshelf-test-unplugged"\n'


async def test_the_hub_makes_its_directories_0700_and_its_files_0600(tmp_path: Path) -> None:
    config = _hub_toml(tmp_path)
    _nodes_file(tmp_path, NODE)
    async with HubService(load_config(config), control=False, reconcile=False) as hub:
        assert hub.ledger is not None
        db = tmp_path / "state" / "ledger" / "hub.db"
        info = await hub.ledger.backup(tmp_path / "state" / "backups")
        for d in ("state", "state/ledger", "state/backups"):
            assert mode(tmp_path / d) == 0o700, d
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock"), secret_key_path(db), info.path):
            assert mode(p) == 0o600, p
    assert mode(config) == 0o644  # holds no key: left as it is


@pytest.mark.parametrize("where", ["hub.toml", "nodes.toml"])
@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o620])
async def test_the_hub_refuses_to_start_on_node_keys_others_can_use(tmp_path: Path, where: str, loose: int) -> None:
    config = _hub_toml(tmp_path, "\n" + NODE if where == "hub.toml" else "")
    node2 = NODE.replace("id = 1", "id = 2").replace("unplugged", "other")
    _nodes_file(tmp_path, node2 if where == "hub.toml" else NODE)
    exposed = tmp_path / where
    exposed.chmod(loose)
    how = "writable" if loose == 0o620 else "readable"
    expected = f"{exposed}: holds node keys and is {how} by other users (mode 0{loose:o}); run chmod 600 {exposed}"
    refused = await _start_refused(config)
    assert isinstance(refused, ExposedSecret) and str(refused) == expected
    assert not (tmp_path / "state").exists()  # refused before anything was made
    exposed.chmod(0o600)
    async with HubService(load_config(config), control=False, reconcile=False) as hub:
        assert {n.node_id for n in hub.config.nodes} == ({1, 2} if where == "hub.toml" else {1})


def test_a_file_root_gives_the_hubs_group_to_read_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout of smartshelf hub install-service: /etc/smartshelf/hub.toml is root:smartshelf 0640, the hub
    runs as smartshelf. Nothing else is: not another group's, not another owner's, not for a hub running as root."""
    import hub.private_files as private_files

    def st(mode: int, uid: int, gid: int = 990) -> os.stat_result:
        return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    monkeypatch.setattr(private_files.os, "geteuid", lambda: 990)
    monkeypatch.setattr(private_files.os, "getegid", lambda: 990)
    monkeypatch.setattr(private_files.os, "getgroups", lambda: [990, 20])
    assert exposure(st(0o600, 990)) is None and exposure(st(0o400, 990)) is None
    assert exposure(st(0o640, 0)) is None and exposure(st(0o640, 0, gid=20)) is None
    assert exposure(st(0o640, 0, gid=0)) == "is readable by other users (mode 0640)"  # a group the hub is not in
    assert exposure(st(0o640, 990)) == "is readable by other users (mode 0640)"
    assert exposure(st(0o644, 0)) == "is readable by other users (mode 0644)"
    assert exposure(st(0o660, 0)) == "is readable by other users (mode 0660)"
    assert exposure(st(0o602, 990)) == "is writable by other users (mode 0602)"
    monkeypatch.setattr(private_files.os, "geteuid", lambda: 0)  # a hub running as root has no reason to share
    assert exposure(st(0o640, 0)) == "is readable by other users (mode 0640)"


def test_hub_run_refuses_in_one_line_and_exits_2(tmp_path: Path) -> None:
    config = _hub_toml(tmp_path, "\n" + NODE)
    _nodes_file(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "hub.cli", "hub", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"smartshelf hub: {config}: holds node keys and is readable by other users (mode 0644);"
        f" run chmod 600 {config}\n"
    )
    assert not (tmp_path / "state").exists()


async def test_a_session_key_others_can_read_stops_the_hub_from_starting(tmp_path: Path) -> None:
    config = _hub_toml(tmp_path)
    _nodes_file(tmp_path)
    make_private_dirs(tmp_path / "state" / "ledger")
    secret = secret_key_path(tmp_path / "state" / "ledger" / "hub.db")
    secret.write_bytes(os.urandom(64))  # 0644 under umask 022
    refused = await _start_refused(config)
    assert isinstance(refused, ExposedSecret)
    assert str(refused) == (
        f"{secret}: holds the key that signs the page's session cookies and is readable by other users (mode 0644);"
        f" run chmod 600 {secret}"
    )


async def test_new_node_keys_others_can_read_are_not_taken_by_a_running_hub(tmp_path: Path) -> None:
    config = _hub_toml(tmp_path)
    nodes = _nodes_file(tmp_path)
    async with HubService(load_config(config), control=False, reconcile=False) as hub:
        nodes.write_text(NODE)
        nodes.chmod(0o644)
        with pytest.raises(ExposedSecret, match=r"nodes\.toml: holds node keys and is readable by other users"):
            await hub.reload_nodes()
        assert hub.config.nodes == ()
        nodes.chmod(0o600)
        assert await hub.reload_nodes() == [1]


# ------------------------------------------------------------------------------------- provisioning, emulator


def test_the_provisioned_nodes_file_and_its_new_directory_are_owner_only(tmp_path: Path) -> None:
    nodes_file = tmp_path / "var" / "smartshelf" / "provisioned-nodes.toml"
    register(nodes_file, 7, KEY1, "/dev/ttyACM0")
    assert mode(nodes_file) == 0o600
    assert mode(tmp_path / "var") == 0o700 and mode(tmp_path / "var" / "smartshelf") == 0o700


def test_the_emulators_nodes_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    from tools.emulation.host import write_nodes_file

    path = tmp_path / "emu" / "nodes.toml"
    write_nodes_file(path, NODE)
    assert mode(path) == 0o600 and mode(tmp_path / "emu") == 0o700
    path.chmod(0o644)  # written by an older version
    write_nodes_file(path, NODE)
    assert mode(path) == 0o600


@pytest.mark.slow
@pytest.mark.micropython
@pytest.mark.usefixtures("emulated_boards")
def test_smartshelf_emulate_keeps_node_keys_owner_only(tmp_path: Path) -> None:
    from tools.emulation import host
    from tools.emulation.scenarios import build

    d = tmp_path / "emu"
    (d / "state").mkdir(parents=True)  # left 0755 by an older version
    emu = host.Emulator([1], build("idle", [1]), d, out=lambda s: None)
    emu.start()  # returns once the nodes run and their keys are written
    try:
        assert mode(d / "nodes.toml") == 0o600 and mode(d / ".lock") == 0o600
        assert mode(d / "state") == 0o700  # the flashes (config.json holds the node's key) behind it
    finally:
        emu.stop()
    fresh = tmp_path / "new" / "emu"
    emu = host.Emulator([1], build("idle", [1]), fresh, out=lambda s: None)
    emu.start()
    try:
        assert mode(tmp_path / "new") == 0o700 and mode(fresh) == 0o700 and mode(fresh / "nodes.toml") == 0o600
    finally:
        emu.stop()
