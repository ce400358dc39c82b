"""Off-site backups (issue 14 §3): scheduled backups encrypted with age to public keys and shipped off the Pi;
restore with the identity; wrong keys and damaged files refused; an unwritable destination never breaks the local
backup and is caught up once it is writable; off-site retention. (Who signed a backup: test_backup_signing.py.)"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyrage  # type: ignore[import-untyped]
import pytest
from pyrage import x25519

from hub.cli import main
from hub.config import ConfigError, load_config
from hub.ledger import LedgerService, OffsitePolicy, RestoreRefused, Sku, encrypted_backup, restore_encrypted
from hub.ledger.agefile import PAYLOAD_MAGIC, Manifest, encrypt_to, generate_identity, sha256_of
from hub.ledger.backup import BackupPolicy, backup_database, list_backups, scheduled_backup
from hub.ledger.backup_signing import Signature, Trusted, fingerprint, read_signing_key, signing_key
from hub.ledger.offsite import OFFSITE_NAME_RE, OtherHubsBackup, ShipFailed, list_offsite, ship
from hub.schema import MIGRATIONS
from hub.service import HubService

SKU_NAME = "Hazelnut Chocolate Spread 400g"
SQLITE_MAGIC = b"SQLite format 3\x00"
AGE_MAGIC = b"age-encryption.org/v1\n"


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def ledger_state(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(movements, balances) of a ledger file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        moves = conn.execute("SELECT id, sku, location, qty, reason, source_ref FROM movements ORDER BY id").fetchall()
        balances = conn.execute("SELECT sku, location, qty FROM balances ORDER BY sku, location").fetchall()
    finally:
        conn.close()
    return moves, balances


async def eventually(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def fill(ledger: LedgerService, sales: int = 40) -> None:
    await ledger.add_sku(Sku("HAZEL", SKU_NAME, 4000), actor="setup")
    await ledger.record_receipt("HAZEL", 500, actor="setup", ref="R0")
    for i in range(sales):
        await ledger.record_sale("HAZEL", 1 + i % 3, actor="pos", ref=f"S{i}")


# --------------------------------------------------------------------------------------- the hub, end to end


async def test_a_hub_ships_encrypted_backups_off_site_and_they_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "operator" / "backup-key.txt"
    key.parent.mkdir()
    rc, out, err = run(capsys, "ledger", "backup-key", str(key))
    public = out.strip()
    assert rc == 0 and public.startswith("age1") and "OFF the Pi" in err
    assert mode(key) == 0o600 and f"# public key: {public}" in key.read_text()
    assert run(capsys, "ledger", "backup-key", "--show", str(key))[1].strip() == public
    rc, _, err = run(capsys, "ledger", "backup-key", str(key))
    assert rc == 2 and "not replaced" in err

    share = tmp_path / "share" / "store-042"
    share.mkdir(parents=True)
    (tmp_path / "hub.toml").write_text(
        '[hub]\ndatabase = "state/hub.db"\n\n'
        '[backup]\ndir = "state/backups"\ninterval_s = 0.1\nkeep = 3\n'
        f'recipients = ["{public}"]\noffsite_dir = "{share}"\noffsite_keep = 2\nhub_id = "store-042"\n'
    )
    cfg = load_config(tmp_path / "hub.toml")
    local = tmp_path / "state" / "backups"
    async with HubService(cfg, control=False, reconcile=False) as hub:
        assert hub.ledger is not None
        await fill(hub.ledger)
        live_moves = len(ledger_state(cfg.database)[0])
        ledger = hub.ledger

        def shipped_after_the_last_write() -> bool:
            last = ledger.last_backup
            if last is None or last.movements != live_moves:
                return False
            stamp = last.path.name.removeprefix("smartshelf-").removesuffix(".db")
            return (share / f"smartshelf-store-042-{stamp}.db.age").exists()

        await eventually(shipped_after_the_last_write, what="a backup with every movement, shipped")
        await asyncio.sleep(0.35)  # a few more runs: retention on both sides
    live = ledger_state(cfg.database)

    backups = list_backups(local)
    shipped = list_offsite(share, "store-042")
    assert 1 <= len(backups) <= 3 and len(shipped) == 2  # local keep 3, off-site keep 2
    hub_key = tmp_path / "state" / "hub.db.backup-signing.key"  # made on first need, beside the ledger, private
    assert mode(hub_key) == 0o600 and read_signing_key(hub_key).public in hub_key.read_text()
    assert sorted(p.name for p in share.iterdir()) == [p.name for p in shipped]  # no temporary file left
    for p in shipped:
        data = p.read_bytes()
        assert data.startswith(AGE_MAGIC)
        for plain in (SQLITE_MAGIC, SKU_NAME.encode(), b"HAZEL", PAYLOAD_MAGIC, b"sha256"):
            assert plain not in data, plain
        m = OFFSITE_NAME_RE.fullmatch(p.name)
        assert m is not None and m["hub"] == "store-042"

    newest = shipped[-1]
    identity = x25519.Identity.from_str(key.read_text().splitlines()[-1])
    payload = pyrage.decrypt(newest.read_bytes(), [identity])  # what `age -d -i key FILE | tail -n +4` gives
    local_twin = local / f"smartshelf-{OFFSITE_NAME_RE.fullmatch(newest.name)['stamp']}.db"  # type: ignore[index]
    magic, manifest_line, signature_line, ledger_bytes = payload.split(b"\n", 3)
    assert magic + b"\n" == PAYLOAD_MAGIC and ledger_bytes == local_twin.read_bytes()
    manifest = Manifest.parse(manifest_line)
    assert Signature.parse(signature_line).signer == read_signing_key(hub_key).public
    assert (manifest.hub, manifest.movements, manifest.incarnation) == ("store-042", len(live[0]), 1)
    assert manifest.sha256 == sha256_of(local_twin)[0]

    restored = tmp_path / "elsewhere" / "restored.db"
    restored.parent.mkdir()
    hub_toml = str(tmp_path / "hub.toml")  # this hub's id (store-042): the backup is checked to be its own
    argv = ("ledger", "restore", "--identity", str(key), str(newest), "--config", hub_toml, "--db", str(restored))
    rc, out, err = await asyncio.to_thread(run, capsys, *argv)  # the CLI runs its own event loop
    assert (rc, err) == (0, ""), err
    assert f"backup of hub 'store-042', taken {manifest.taken}: {manifest.movements} movements" in out
    assert f"(this hub's key {hub_key})" in out  # the Pi is still there: its own key vouches for its backups
    assert ledger_state(restored) == live  # the same movements and balances
    assert mode(restored) == 0o600
    assert [p.name for p in restored.parent.iterdir() if "decrypted" in p.name] == []
    conn = sqlite3.connect(restored)
    (details,) = conn.execute("SELECT details FROM audit WHERE action = 'restore'").fetchone()
    identity = conn.execute("SELECT incarnation, restored_from FROM ledger_identity").fetchone()
    conn.close()
    assert "store-042" in details and manifest.sha256 in details
    # a new incarnation of the ledger, named after the encrypted file (not its decrypted temporary copy)
    assert json.loads(details)["incarnation"] == identity[0] > 1 and identity[1] == str(newest)
    assert f"ledger incarnation {identity[0]}" in out

    rc, _, err = run(capsys, "ledger", "restore", str(newest), "--db", str(restored))  # forgot --identity
    assert rc == 2 and "is encrypted (age): give the key with --identity" in err


# ------------------------------------------------------------------------------------------- restore refusals


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A ledger over several age chunks (64 KiB), its encrypted backup, the right and a wrong identity."""
    d = tmp_path_factory.mktemp("sealed")

    async def build() -> None:
        async with LedgerService(d / "src.db", migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
            await fill(ledger, sales=0)
            rows = "".join(f"S{i},2025-11-27T10:00:00Z,HAZEL,1\n" for i in range(400))
            assert (await ledger.import_csv("sales", f"id,timestamp,sku,quantity\n{rows}".encode(), actor="p")).ok

    asyncio.run(build())
    right, wrong = d / "right.txt", d / "wrong.txt"
    public = generate_identity(right)
    generate_identity(wrong)
    (d / "out").mkdir()
    shipped = encrypted_backup(d / "src.db", d / "out", [public], hub_id="store-7", signing_key=d / "signing.key")
    assert shipped.path.stat().st_size > 3 * 65536
    return {"db": d / "src.db", "age": shipped.path, "right": right, "wrong": wrong, "dir": d, "key": d / "signing.key"}


def signer_of(sealed: dict[str, Path]) -> str:
    return read_signing_key(sealed["key"]).public


def trusting(sealed: dict[str, Path]) -> Trusted:
    trusted = Trusted()
    trusted.add([signer_of(sealed)], "the test")
    return trusted


def _target(tmp_path: Path) -> tuple[Path, bytes]:
    db = tmp_path / "live.db"

    async def build() -> None:
        async with LedgerService(db, migrations=MIGRATIONS) as ledger:
            await ledger.add_sku(Sku("TEA", "Tea", 1000), actor="t")
            await ledger.record_receipt("TEA", 3, actor="t", ref="R1")

    asyncio.run(build())
    return db, db.read_bytes()


def _header_end(data: bytes) -> int:
    return data.index(b"\n", data.index(b"\n--- ")) + 1


def _flip_body(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


def _flip_header(data: bytes) -> bytes:
    b = bytearray(data)
    at = _header_end(data) - 5  # in the header's MAC, still base64
    b[at] = ord("A") if b[at] != ord("A") else ord("B")
    return bytes(b)


def _garble_header(data: bytes) -> bytes:
    b = bytearray(data)
    b[_header_end(data) - 5] = ord("!")  # not base64
    return bytes(b)


def _encrypt_payload(sealed: dict[str, Path], payload: bytes) -> bytes:
    public = x25519.Identity.from_str(sealed["right"].read_text().splitlines()[-1]).to_public()
    return bytes(pyrage.encrypt(payload, [public]))


def _reseal(sealed: dict[str, Path], damage: Callable[[sqlite3.Connection], object] | None, sha: str | None) -> bytes:
    """The backup re-encrypted to the right key, its ledger changed by ``damage`` and/or a wrong hash."""
    work = sealed["dir"] / f"work-{os.getpid()}-{time.monotonic_ns()}.db"
    backup_database(sealed["db"], work)
    if damage is not None:
        conn = sqlite3.connect(work)
        damage(conn)
        conn.commit()
        conn.close()
    digest, size = sha256_of(work)
    manifest = Manifest("store-7", "20251127T100000.000Z", size, sha or digest, 1, 1)
    out = work.with_suffix(".age")
    public = x25519.Identity.from_str(sealed["right"].read_text().splitlines()[-1]).to_public()
    with open(work, "rb") as f, open(out, "wb") as o:
        encrypt_to(f, manifest, o, [public], signing_key(sealed["key"])[0])
    return out.read_bytes()


CASES: dict[str, tuple[Callable[[dict[str, Path], bytes], bytes], str]] = {
    "wrong identity": (lambda s, d: d, "this backup was not encrypted to that identity"),
    "tampered byte": (lambda s, d: _flip_body(d), "damaged or truncated"),
    "tampered header": (lambda s, d: _flip_header(d), "not a valid age file, or its header is damaged"),
    "garbled header": (lambda s, d: _garble_header(d), "not a valid age file, or its header is damaged"),
    "truncated in half": (lambda s, d: d[: len(d) // 2], "damaged or truncated"),
    "last byte cut": (lambda s, d: d[:-1], "damaged or truncated"),
    "cut at a chunk boundary": (lambda s, d: d[: _header_end(d) + 16 + 65536 + 16], "damaged or truncated"),
    "only the header": (lambda s, d: d[: _header_end(d)], "not a valid age file"),
    "a plain SQLite file": (lambda s, d: s["db"].read_bytes(), "a plain SQLite file, not an encrypted backup"),
    "not age at all": (lambda s, d: b"id,timestamp,sku,quantity\n" * 40, "not an age-encrypted file"),
    "empty": (lambda s, d: b"", "not an age-encrypted file"),
    "age, but not a backup": (lambda s, d: _encrypt_payload(s, b"hello\n" * 1000), "not a smartshelf backup"),
    "hash mismatch": (lambda s, d: _reseal(s, None, "0" * 64), "does not match the SHA-256"),
    "inconsistent ledger": (
        lambda s, d: _reseal(s, lambda c: c.execute("UPDATE balances SET qty = qty + 7"), None),
        "(decrypted): balances disagree with movements",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_restore_refuses_and_leaves_the_ledger_alone(
    tmp_path: Path, sealed: dict[str, Path], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = CASES[case]
    src = tmp_path / "backup.db.age"
    src.write_bytes(make(sealed, sealed["age"].read_bytes()))
    identity = sealed["wrong" if case == "wrong identity" else "right"]
    db, before = _target(tmp_path)
    with pytest.raises(RestoreRefused, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        restore_encrypted(src, db, identity=identity, migrations=MIGRATIONS, signers=trusting(sealed))
    assert len(str(refused.value).splitlines()) == 1
    assert db.read_bytes() == before and not Path(f"{db}.bak").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no plaintext left
    signer = ("--signer", signer_of(sealed))
    rc, _, err = run(capsys, "ledger", "restore", "--identity", str(identity), *signer, str(src), "--db", str(db))
    assert rc == 2 and err.startswith("smartshelf ledger: restore refused: ") and message in err
    assert db.read_bytes() == before


def test_the_identity_file_must_be_private_and_an_identity(tmp_path: Path, sealed: dict[str, Path]) -> None:
    db, before = _target(tmp_path)
    loose = tmp_path / "key.txt"
    shutil.copy(sealed["right"], loose)
    loose.chmod(0o644)
    with pytest.raises(RestoreRefused, match=r"key.txt: holds an age identity .* readable by other users.*chmod 600"):
        restore_encrypted(sealed["age"], db, identity=loose, migrations=MIGRATIONS, signers=trusting(sealed))
    loose.write_text("ssh-ed25519 AAAA... not an age key\n")
    loose.chmod(0o600)
    with pytest.raises(RestoreRefused, match=r"key.txt:1: not an age identity"):
        restore_encrypted(sealed["age"], db, identity=loose, migrations=MIGRATIONS, signers=trusting(sealed))
    with pytest.raises(RestoreRefused, match="no such identity file"):
        restore_encrypted(
            sealed["age"], db, identity=tmp_path / "missing.txt", migrations=MIGRATIONS, signers=trusting(sealed)
        )
    assert db.read_bytes() == before
    done = restore_encrypted(
        sealed["age"], db, identity=sealed["right"], migrations=MIGRATIONS, signers=trusting(sealed)
    )
    assert ledger_state(db) == ledger_state(sealed["db"]) and done.manifest.hub == "store-7"
    assert done.info.movements == done.manifest.movements == 401 and done.verdict.signer == signer_of(sealed)


# ---------------------------------------------------------------------------------- failures to ship, retention


async def test_an_unwritable_destination_never_breaks_the_local_backup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = generate_identity(tmp_path / "key.txt")
    local, share = tmp_path / "backups", tmp_path / "share" / "hub"  # the share is not mounted yet
    offsite = OffsitePolicy(share, (public,), 50, "h1", signing_key=tmp_path / "signing.key")
    policy = BackupPolicy(local, interval_s=0.1, keep=50, offsite=offsite)
    caplog.set_level(logging.INFO, logger="hub.ledger")
    failed: list[str] = []

    def refused(what: str) -> bool:
        for r in caplog.records:
            if "off-site backup to" in r.message and what in r.message:
                assert r.levelno == logging.ERROR and "is kept, the next backup retries" in r.message
                failed.append(r.message.split("the local backup ")[1].split()[0])
                return True
        return False

    async with LedgerService(tmp_path / "live.db", migrations=MIGRATIONS, backups=policy) as ledger:
        await fill(ledger, sales=3)
        await eventually(lambda: refused("no such directory (is the share mounted?)"), what="unmounted")
        assert not share.exists()  # never created: an unmounted share's mount point stays empty

        share.mkdir(parents=True)  # mounted, but full: the data does not reach the disk
        real_fsync = os.fsync

        def full(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(share)):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full)  # os.fsync of the shipping thread
        caplog.clear()
        await eventually(lambda: refused("[Errno 28] No space left on device"), what="ENOSPC")
        assert list(share.iterdir()) == []  # nothing half-shipped, not even under a temporary name
        monkeypatch.setattr(os, "fsync", real_fsync)

        def shipped(name: str) -> bool:
            stamp = name.removeprefix("smartshelf-").removesuffix(".db")
            return (share / f"smartshelf-h1-{stamp}.db.age").exists()

        await eventually(lambda: all(shipped(name) for name in failed), what="the backups that failed, shipped")
    local_names = [p.name for p in list_backups(local)]
    assert set(failed) <= set(local_names) and len(local_names) >= 3  # local backups went on throughout
    restored = tmp_path / "restored.db"
    newest = list_offsite(share, "h1")[-1]
    trusted = Trusted()
    trusted.add([read_signing_key(tmp_path / "signing.key").public], "the test")
    restore_encrypted(newest, restored, identity=tmp_path / "key.txt", migrations=MIGRATIONS, signers=trusted)
    assert ledger_state(restored) == ledger_state(tmp_path / "live.db")


def test_off_site_retention_keeps_n_of_this_hub_and_nothing_else_is_touched(tmp_path: Path) -> None:
    public = generate_identity(tmp_path / "key.txt")
    db, local, share = tmp_path / "live.db", tmp_path / "backups", tmp_path / "share"
    asyncio.run(_fill_db(db))
    share.mkdir()
    others = ["smartshelf-store-9-20200101T000000.000Z.db.age", "notes.txt", ".smartshelf-h1-x.db.age.tmp-1"]
    for name in others:
        (share / name).write_text("not ours to prune")
    stale = share / ".smartshelf-h1-20200101T000000.000Z.db.age.tmp-99"
    stale.write_text("left by a crash")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    policy = OffsitePolicy(share, (public,), keep=3, hub_id="h1", signing_key=tmp_path / "signing.key")
    local_policy = BackupPolicy(local, keep=10)
    t0 = datetime(2025, 11, 27, 10, 0, tzinfo=UTC)
    for n in range(5):
        scheduled_backup(db, local_policy, now=t0 + timedelta(hours=n))
    first = ship(local, policy)
    assert len(first) == 3  # only the newest `keep` of the local ones
    assert ship(local, policy) == []  # nothing new: nothing shipped twice
    for n in range(5, 7):
        scheduled_backup(db, local_policy, now=t0 + timedelta(hours=n))
        ship(local, policy)
    ours = list_offsite(share, "h1")
    assert [p.name for p in ours] == [f"smartshelf-h1-20251127T{h:02d}0000.000Z.db.age" for h in (14, 15, 16)]
    assert sorted(p.name for p in share.iterdir()) == sorted([*others, *(p.name for p in ours)])

    # files named in the future (a wrong clock, or planted on the share): they push no real backup out
    planted = [share / f"smartshelf-h1-2099010{d}T000000.000Z.db.age" for d in range(1, 5)]
    for p in planted:
        p.write_text("planted")
    scheduled_backup(db, local_policy, now=t0 + timedelta(hours=7))
    assert [s.path.name for s in ship(local, policy)] == ["smartshelf-h1-20251127T170000.000Z.db.age"]
    kept = [p.name for p in list_offsite(share, "h1") if p not in planted]
    assert kept == [f"smartshelf-h1-20251127T{h:02d}0000.000Z.db.age" for h in (15, 16, 17)]
    assert all(p.exists() for p in planted)  # not ours to judge: logged, left for the operator

    policy_bad = OffsitePolicy(share / "missing", (public,), keep=3, hub_id="h1", signing_key=policy.signing_key)
    with pytest.raises(ShipFailed, match="no such directory"):
        ship(local, policy_bad)


async def _fill_db(db: Path) -> None:
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await fill(ledger, sales=2)


# ------------------------------------------------------------------------------------------ CLI and config


def test_an_operator_can_take_an_encrypted_backup_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state" / "shop.db"
    db.parent.mkdir()
    asyncio.run(_fill_db(db))
    key = tmp_path / "key.txt"
    public = run(capsys, "ledger", "backup-key", str(key))[1].strip()
    out_dir = tmp_path / "usb"
    out_dir.mkdir()
    rc, out, err = run(
        capsys, "ledger", "backup", "--db", str(db), "--encrypt-to", public, "--hub-id", "store-1", str(out_dir)
    )
    assert rc == 0 and "encrypted backup written" in out, err
    (made,) = list(out_dir.iterdir())
    assert OFFSITE_NAME_RE.fullmatch(made.name) and made.name.startswith("smartshelf-store-1-")
    assert SQLITE_MAGIC not in made.read_bytes() and SKU_NAME.encode() not in made.read_bytes()
    assert sorted(p.name for p in db.parent.iterdir() if not p.name.startswith("shop.db")) == []  # no plaintext

    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# the office\n{public}\n")
    rc, _, err = run(capsys, "ledger", "backup", "--db", str(db), "--recipients-file", str(recipients), str(made))
    assert rc == 2 and "give --hub-id ID or --config hub.toml" in err  # never the host name
    by_file = ("--recipients-file", str(recipients), "--hub-id", "store-1")
    rc, out, _ = run(capsys, "ledger", "backup", "--db", str(db), *by_file, str(made))
    assert rc == 0 and str(made) in out  # to a file name: replaced atomically
    hub_key = db.with_name("shop.db.backup-signing.key")  # the hub's, beside its ledger, made on first need
    signer = read_signing_key(hub_key).public
    assert mode(hub_key) == 0o600 and f"signed by {fingerprint(signer)})" in out
    restored = tmp_path / "restored.db"
    restore = ("ledger", "restore", "--identity", str(key), str(made), "--db", str(restored))
    rc, _, err = run(capsys, *restore)  # another path: no key of a hub there, and none given
    assert rc == 2 and "which is not trusted: give --signer with the key recorded for this hub" in err
    rc, out, err = run(capsys, *restore, "--signer", signer)
    assert rc == 0 and "backup of hub 'store-1', taken " in out
    assert "NOTE: a backup of hub 'store-1', not checked against this hub" in err  # no hub id given: shown
    assert ledger_state(restored) == ledger_state(db)

    rc, _, err = run(capsys, "ledger", "backup", "--db", str(db), "--encrypt-to", "age1nope", str(out_dir))
    assert rc == 2 and "--encrypt-to: is not a valid age public key" in err
    rc, _, err = run(capsys, "ledger", "backup", "--db", str(db), "--encrypt-to", "ssh-rsa AAAA", str(out_dir))
    assert rc == 2 and "must be an age public key (age1...)" in err
    bad_id = ("--encrypt-to", public, "--hub-id", "a/b")
    rc, _, err = run(capsys, "ledger", "backup", "--db", str(db), *bad_id, str(out_dir))
    assert rc == 2 and "--hub-id: must be 1..64 of" in err
    assert len(list(out_dir.iterdir())) == 1


# A fixed key (not generated at import): the parametrized tests below carry it in their ids, which must be the same
# in every pytest-xdist worker.
PUBLIC = "age1k75wmg2p5xy70klsllxc5lxmfl27fxrkj346q0ympcuypagu05gs9akrdt"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_the_backup_table_and_the_older_hub_keys(tmp_path: Path) -> None:
    cfg = load_config(
        _config(
            tmp_path,
            f'[hub]\nbackup_dir = "bk"\nbackup_keep = 5\n\n'
            f'[backup]\nrecipients = ["{PUBLIC}"]\noffsite_dir = "/mnt/offsite/x"\nhub_id = "store-042"\n',
        )
    )
    assert cfg.backup is not None and cfg.backup.directory == tmp_path / "bk" and cfg.backup.keep == 5
    off = cfg.backup.offsite
    assert off is not None and off.directory == Path("/mnt/offsite/x") and off.keep == 5 and off.hub_id == "store-042"
    assert off.recipients == (PUBLIC,) and cfg.backup.policy().offsite == off

    fleet = '[fleet]\nhub_id = "store-7"\nhost = "127.0.0.1"\ntls = false\npassword = "pw"\n'
    cfg = load_config(_config(tmp_path, f'{fleet}[backup]\ndir = "b"\nrecipients = ["{PUBLIC}"]\noffsite_dir = "o"\n'))
    assert cfg.backup is not None and cfg.backup.offsite is not None and cfg.backup.offsite.hub_id == "store-7"

    cfg = load_config(_config(tmp_path, '[backup]\ndir = "b"\ninterval_s = 60\nkeep = 2\n'))
    assert cfg.backup is not None and (cfg.backup.interval_s, cfg.backup.keep, cfg.backup.offsite) == (60, 2, None)
    assert load_config(_config(tmp_path, "[backup]\n")).backup is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[backup]\ndir = "b"\nrecipients = ["age1qqq"]\noffsite_dir = "o"\n', "backup.recipients[1]: is not a valid"),
        (
            f'[backup]\ndir = "b"\nrecipients = ["{PUBLIC}", "AGE-SECRET-KEY-1X"]\noffsite_dir = "o"\n',
            "backup.recipients[2]: must be an age public key (age1...), not 'AGE-SECRET-KEY-1X'",
        ),
        ('[backup]\ndir = "b"\nrecipients = []\noffsite_dir = "o"\n', "backup.recipients: must be a list of age"),
        (f'[backup]\ndir = "b"\nrecipients = "{PUBLIC}"\noffsite_dir = "o"\n', "backup.recipients: must be a list"),
        (f'[backup]\ndir = "b"\nrecipients = ["{PUBLIC}"]\n', "backup.offsite_dir: missing"),
        ('[backup]\ndir = "b"\noffsite_dir = "o"\n', "backup.recipients: missing: the age public keys"),
        (f'[backup]\nrecipients = ["{PUBLIC}"]\noffsite_dir = "o"\n', "backup.recipients: needs backup.dir"),
        (f'[backup]\ndir = "b"\nrecipients = ["{PUBLIC}"]\noffsite_dir = "b"\n', "is the local backup directory"),
        (
            f'[backup]\ndir = "b"\nrecipients = ["{PUBLIC}"]\noffsite_dir = "o"\nhub_id = "a b"\n',
            "backup.hub_id: must be 1..64 of",
        ),
        ('[backup]\ndir = "b"\noffsite_keep = 0\nrecipients = []\n', "backup.offsite_dir: missing"),
        (
            f'[backup]\ndir = "b"\nrecipients = ["{PUBLIC}"]\noffsite_dir = "o"\n',
            "backup.hub_id: missing: off-site backups need this hub's id (e.g. store-042; or set fleet.hub_id)",
        ),
        (
            f'[fleet]\nhub_id = "a.b"\n[backup]\ndir = "b"\nrecipients = ["{PUBLIC}"]\noffsite_dir = "o"\n',
            "fleet.hub_id: must be 1..64 of",
        ),
        ('[hub]\nbackup_dir = "a"\n[backup]\ndir = "b"\n', "backup.dir: is also set as hub.backup_dir: keep one"),
        ("[backup]\ninterval_s = 5\n", "backup.interval_s: needs backup.dir"),
        ('[backup]\ndir = "b"\nkeep = 0\n', "backup.keep: must be a whole number 1.."),
        ('[backup]\ndirectory = "b"\n', "backup.directory: unknown setting"),
        ("backup = 3\n", "backup: must be a table"),
    ],
)
def test_backup_config_errors_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, text))
    assert str(err.value).startswith(f"{tmp_path / 'hub.toml'}: ") and expected in str(err.value), str(err.value)
    assert len(str(err.value).splitlines()) == 1


# ------------------------------------------------------------------------------- whose backup: the manifest's hub


def test_restore_refuses_another_hubs_backup_unless_told(
    tmp_path: Path, sealed: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, before = _target(tmp_path)
    with pytest.raises(OtherHubsBackup, match="is a backup of hub 'store-7', not of this hub 'store-8'") as refused:
        restore_encrypted(
            sealed["age"],
            db,
            identity=sealed["right"],
            migrations=MIGRATIONS,
            signers=trusting(sealed),
            hub_id="store-8",
        )
    assert len(str(refused.value).splitlines()) == 1 and refused.value.manifest.hub == "store-7"
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    fleet = '[fleet]\nhub_id = "store-8"\nhost = "127.0.0.1"\ntls = false\npassword = "pw"\n'
    other = _config(tmp_path, f'[hub]\ndatabase = "{db.name}"\n\n{fleet}')  # --config also gives --db
    restore = (
        "ledger",
        "restore",
        "--identity",
        str(sealed["right"]),
        str(sealed["age"]),
        "--signer",
        signer_of(sealed),
    )
    for given in (("--config", str(other)), ("--hub-id", "store-8", "--db", str(db))):
        rc, out, err = run(capsys, *restore, *given)
        assert rc == 2 and "backup of hub 'store-7', taken " in out and "401 movements" in out
        assert err.startswith("smartshelf ledger: restore refused: ") and len(err.splitlines()) == 1
        assert "a backup of hub 'store-7', not of this hub 'store-8'" in err and "--other-hub" in err
        assert db.read_bytes() == before and not Path(f"{db}.bak").exists()

    rc, out, err = run(capsys, *restore, "--config", str(other), "--other-hub")  # told: restored, and said so
    assert rc == 0 and "backup of hub 'store-7'" in out and "restored " in out
    assert "WARNING: a backup of hub 'store-7' restored on hub 'store-8' (--other-hub)" in err
    assert ledger_state(db) == ledger_state(sealed["db"])
    conn = sqlite3.connect(db)
    (details,) = conn.execute("SELECT details FROM audit WHERE action = 'restore'").fetchone()
    conn.close()
    assert json.loads(details)["encrypted"] | {"sha256": ""} == {
        "hub": "store-7", "taken": refused.value.manifest.taken, "sha256": "", "this_hub": "store-8",
        "signer": signer_of(sealed), "trusted_by": "--signer",
    }  # fmt: skip

    same = _config(tmp_path, f'[hub]\ndatabase = "{db.name}"\n\n{fleet.replace("store-8", "store-7")}')
    rc, out, err = run(capsys, *restore, "--config", str(same))  # its own backup: restored, no warning
    assert (rc, err) == (0, "") and "backup of hub 'store-7'" in out
    rc, _, err = run(capsys, *restore, "--hub-id", "a b", "--db", str(db))
    assert rc == 2 and "--hub-id: must be 1..64 of" in err
