"""Who made an off-site backup (issue 14 §3): the hub signs each backup's manifest with its own Ed25519 key; restore
accepts only a backup signed by a key the operator trusts. A lost Pi's backup restored on a new one with the key
recorded for it; refused with a wrong key, a tampered manifest, a swapped payload, a missing signature, a key of
another hub or of an attacker; a signing key others can read is refused; rotation keeps older backups restorable."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyrage  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from hub.config import ConfigError, load_config
from hub.ledger import LedgerService, OffsitePolicy, RestoreRefused, Sku, encrypted_backup, restore_encrypted
from hub.ledger.agefile import (
    PAYLOAD_MAGIC,
    UNSIGNED_MAGIC,
    AgeRefused,
    Manifest,
    decrypt_to,
    header_bytes,
    read_identities,
    sha256_of,
)
from hub.ledger.backup import BackupPolicy, backup_database, scheduled_backup
from hub.ledger.backup_signing import (
    SIGNED_PREFIX,
    Signature,
    SignerRefused,
    Trusted,
    fingerprint,
    public_text,
    read_signing_key,
    signer_problem,
    signing_key,
)
from hub.ledger.offsite import OtherHubsBackup, ShipFailed, list_offsite, ship
from hub.schema import MIGRATIONS
from hub.service import HubService
from tests.test_backup_offsite import ledger_state, mode, run, umask_022  # noqa: F401 (umask_022: autouse fixture)

MODE_0644 = "readable by other users (mode 0644); run chmod 600"


def restore_audit(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        (details,) = conn.execute("SELECT details FROM audit WHERE action = 'restore' ORDER BY id DESC").fetchone()
    finally:
        conn.close()
    return dict(json.loads(details)["encrypted"])


async def fill(ledger: LedgerService, sku: str = "HAZEL", sales: int = 5) -> None:
    await ledger.add_sku(Sku(sku, f"{sku} 400g", 4000), actor="setup")
    await ledger.record_receipt(sku, 100, actor="setup", ref=f"R-{sku}")
    for i in range(sales):
        await ledger.record_sale(sku, 1, actor="pos", ref=f"S-{sku}-{i}")


async def _make(db: Path, sku: str) -> None:
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await fill(ledger, sku)


def make_ledger(db: Path, sku: str = "HAZEL") -> Path:
    asyncio.run(_make(db, sku))
    return db


def trusting(*keys: str) -> Trusted:
    trusted = Trusted()
    trusted.add(keys, "the test")
    return trusted


# ------------------------------------------------------------------------------------------ end to end


def test_a_lost_pis_signed_backup_is_restored_on_a_new_pi_with_the_recorded_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    identity = operator / "backup-key.txt"
    rc, out, err = run(capsys, "ledger", "backup-key", str(identity))
    age_public = out.strip()
    assert rc == 0 and "backup-key --signer" in err  # the identity's note points at the signing key to record
    rc, out, err = run(capsys, "ledger", "backup-key")
    assert rc == 2 and "give IDENTITY_FILE" in err and out == ""

    old_pi, share = tmp_path / "old-pi", tmp_path / "share" / "store-042"
    old_pi.mkdir()
    share.mkdir(parents=True)
    (old_pi / "hub.toml").write_text(
        '[hub]\ndatabase = "state/hub.db"\n\n[backup]\ndir = "state/backups"\ninterval_s = 0.1\nkeep = 3\n'
        f'recipients = ["{age_public}"]\noffsite_dir = "{share}"\nhub_id = "store-042"\n'
    )
    # before the hub first runs, the operator records its signing key (made now, where the hub will look)
    rc, out, err = run(capsys, "ledger", "backup-key", "--signer", "--config", str(old_pi / "hub.toml"))
    signer = out.strip()
    key_file = old_pi / "state" / "hub.db.backup-signing.key"
    assert rc == 0 and signer_problem(signer) is None and f"fingerprint {fingerprint(signer)}" in err
    assert "made now" in err and mode(key_file) == 0o600 and mode(key_file.parent) == 0o700
    key_text = key_file.read_text()
    rc, again, err = run(capsys, "ledger", "backup-key", "--signer", "--config", str(old_pi / "hub.toml"))
    assert (rc, again) == (0, out) and "made now" not in err

    cfg = load_config(old_pi / "hub.toml")

    async def store_day() -> None:
        async with HubService(cfg, control=False, reconcile=False) as hub:
            assert hub.ledger is not None
            await fill(hub.ledger, sales=20)
            moves = len(ledger_state(cfg.database)[0])
            for _ in range(1000):
                last = hub.ledger.last_backup
                if last is not None and last.movements == moves:
                    stamp = last.path.name.removeprefix("smartshelf-").removesuffix(".db")
                    if (share / f"smartshelf-store-042-{stamp}.db.age").exists():
                        break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("no backup with every movement was shipped")
            key_file.chmod(0o644)  # someone loosened the key: the hub stops signing (and shipping) with it
            caplog.clear()
            shipped = sorted(share.iterdir())
            for _ in range(1000):
                if refusals := [r for r in caplog.records if "holds the hub's backup signing key" in r.message]:
                    assert refusals[0].levelno == logging.ERROR and MODE_0644 in refusals[0].message
                    assert "the local backup" in refusals[0].message and "is kept" in refusals[0].message
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the exposed key was not refused")
            assert sorted(share.iterdir()) == shipped
            key_file.chmod(0o600)

    asyncio.run(store_day())
    assert key_file.read_text() == key_text  # the hub signed with the key the operator recorded
    live = ledger_state(cfg.database)
    newest = list_offsite(share, "store-042")[-1]
    shutil.rmtree(old_pi)  # the Pi is lost, its key with it

    new_pi = tmp_path / "new-pi"
    new_pi.mkdir()
    new_toml = new_pi / "hub.toml"
    new_toml.write_text('[hub]\ndatabase = "hub.db"\n\n[backup]\nhub_id = "store-042"\n')
    restore = ("ledger", "restore", "--identity", str(identity), str(newest), "--config", str(new_toml))
    rc, _, err = run(capsys, *restore)  # nothing trusted yet
    assert rc == 2 and len(err.splitlines()) == 1 and not (new_pi / "hub.db").exists()
    assert f"signed by backup signer key {fingerprint(signer)} ({signer}), which is not trusted: give --signer" in err

    wrong = signing_key(tmp_path / "someone-else.key")[0].public
    rc, _, err = run(capsys, *restore, "--signer", wrong)
    assert rc == 2 and err.startswith("smartshelf ledger: restore refused: ") and len(err.splitlines()) == 1
    assert f"not trusted: trusted: {fingerprint(wrong)} (--signer)" in err and not (new_pi / "hub.db").exists()

    rc, out, err = run(capsys, *restore, "--signer", wrong, "--signer", signer)
    assert (rc, err) == (0, ""), err
    assert f"signed by backup signer key {fingerprint(signer)} (--signer)" in out
    assert ledger_state(new_pi / "hub.db") == live
    assert restore_audit(new_pi / "hub.db") | {"taken": ""} == {
        "hub": "store-042", "taken": "", "sha256": sha256_of_manifest(identity, newest), "this_hub": "store-042",
        "signer": signer, "trusted_by": "--signer",
    }  # fmt: skip

    # what someone with the age public key and the share could plant instead, from the real backup: all refused
    payload = pyrage.decrypt(newest.read_bytes(), read_identities(identity))
    _, manifest_line, signature_line, body = payload.split(b"\n", 3)
    manifest = Manifest.parse(manifest_line)
    planted = backup_database(make_ledger(tmp_path / "planted-live.db", "PLANTED"), tmp_path / "planted.db").path
    planted_bytes = planted.read_bytes()
    planted_manifest = replace(manifest, sha256=sha256_of(planted)[0], size=len(planted_bytes))
    signature = b"\n" + signature_line + b"\n"
    forgeries = {
        "tampered manifest": (
            PAYLOAD_MAGIC + replace(manifest, movements=manifest.movements + 1).line() + signature + body,
            "does not match its manifest: the backup was altered after it was signed",
        ),
        "swapped payload": (
            PAYLOAD_MAGIC + manifest_line + signature + planted_bytes,
            "does not match the SHA-256 and size in its manifest",
        ),
        "swapped payload and its hash": (
            PAYLOAD_MAGIC + planted_manifest.line() + signature + planted_bytes,
            "does not match its manifest: the backup was altered after it was signed",
        ),
        "missing signature": (UNSIGNED_MAGIC + planted_manifest.line() + b"\n" + planted_bytes, "is not signed"),
    }
    before = (new_pi / "hub.db").read_bytes()
    for case, (forged, message) in forgeries.items():
        src = newest.with_name(f"forged-{case.replace(' ', '-')}.db.age")
        src.write_bytes(bytes(pyrage.encrypt(forged, [x25519.Recipient.from_str(age_public)])))
        argv = ("ledger", "restore", "--identity", str(identity), str(src), "--config", str(new_toml))
        rc, _, err = run(capsys, *argv, "--signer", signer)
        assert rc == 2 and err.startswith("smartshelf ledger: restore refused: ") and message in err, (case, err)
        assert len(err.splitlines()) == 1 and (new_pi / "hub.db").read_bytes() == before, case

    # recorded in the new Pi's hub.toml (or a file of keys) instead of on the command line
    new_toml.write_text(new_toml.read_text() + f'trusted_signers = ["{wrong}", "{signer}"]\n')
    rc, out, err = run(capsys, *restore)
    assert (rc, err) == (0, "") and f"({new_toml}: backup.trusted_signers)" in out
    keys = operator / "signers.txt"
    keys.write_text(f"# store-042, the Pi bought in 2025\n{signer}\n")
    rc, out, err = run(
        capsys, *restore[:-2], "--hub-id", "store-042", "--db", str(new_pi / "b.db"), "--signer", str(keys)
    )
    assert (rc, err) == (0, "") and "(--signer)" in out


def sha256_of_manifest(identity: Path, src: Path) -> str:
    payload = pyrage.decrypt(src.read_bytes(), read_identities(identity))
    return Manifest.parse(payload.split(b"\n", 2)[1]).sha256


# ------------------------------------------------------------------------------------------ forgeries


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A genuine signed backup of hub store-7, the identity, the hub's key, and what an attacker has: the age public
    key, a ledger of their own (a planted SKU) and a signing key of their own."""
    d = tmp_path_factory.mktemp("kit")
    make_ledger(d / "src.db")
    make_ledger(d / "planted-live.db", sku="PLANTED")
    backup_database(d / "planted-live.db", d / "planted.db")
    public = x25519.Identity.generate()
    identity = d / "identity.txt"
    identity.write_text(f"{public}\n")
    identity.chmod(0o600)
    (d / "out").mkdir()
    shipped = encrypted_backup(
        d / "src.db", d / "out", [str(public.to_public())], hub_id="store-7", signing_key=d / "hub.key"
    )
    payload = pyrage.decrypt(shipped.path.read_bytes(), [public])
    magic, manifest_line, signature_line, body = payload.split(b"\n", 3)
    assert magic + b"\n" == PAYLOAD_MAGIC
    return {
        "dir": d,
        "age": shipped.path,
        "identity": identity,
        "recipient": public.to_public(),
        "hub": read_signing_key(d / "hub.key"),
        "attacker": signing_key(d / "attacker.key")[0],
        "manifest": Manifest.parse(manifest_line),
        "manifest_line": manifest_line,
        "signature_line": signature_line,
        "body": body,
        "planted": (d / "planted.db").read_bytes(),
    }


def planted_manifest(kit: dict[str, Any], **changes: Any) -> Manifest:
    digest, size = sha256_of(kit["dir"] / "planted.db")
    manifest: Manifest = kit["manifest"]
    return replace(manifest, sha256=digest, size=size, **changes)


def genuine_head(kit: dict[str, Any], manifest_line: bytes | None = None) -> bytes:
    line: bytes = manifest_line or kit["manifest_line"]
    return PAYLOAD_MAGIC + line + b"\n" + bytes(kit["signature_line"]) + b"\n"


def _flip_sig(kit: dict[str, Any]) -> bytes:
    sig = Signature.parse(kit["signature_line"])
    bad = Signature(sig.signer, bytes([sig.sig[0] ^ 1]) + sig.sig[1:])
    return PAYLOAD_MAGIC + bytes(kit["manifest_line"]) + b"\n" + bad.line() + b"\n" + bytes(kit["body"])


NOT_SIGNED = "the backup is not signed (made before backups were signed, or not by a hub)"
ALTERED = "does not match its manifest: the backup was altered after it was signed"
FORGERIES: dict[str, tuple[Callable[[dict[str, Any]], bytes], str]] = {
    "missing signature (format 1, made with the public age key)": (
        lambda k: UNSIGNED_MAGIC + planted_manifest(k).line() + b"\n" + k["planted"],
        NOT_SIGNED,
    ),
    "missing signature line (format 2)": (
        lambda k: PAYLOAD_MAGIC + planted_manifest(k).line() + b"\n" + k["planted"],
        "its signature line is missing or damaged",
    ),
    "signed by the attacker's own key": (
        lambda k: header_bytes(planted_manifest(k), k["attacker"]) + k["planted"],
        "which is not trusted: trusted: ",
    ),
    "tampered manifest (movements)": (
        lambda k: genuine_head(k, replace(k["manifest"], movements=k["manifest"].movements + 1).line()) + k["body"],
        ALTERED,
    ),
    "tampered manifest (hub id)": (
        lambda k: genuine_head(k, replace(k["manifest"], hub="store-8").line()) + k["body"],
        ALTERED,
    ),
    "tampered manifest (time taken)": (
        lambda k: genuine_head(k, replace(k["manifest"], taken="20300101T000000.000Z").line()) + k["body"],
        ALTERED,
    ),
    "tampered manifest (incarnation dropped)": (
        lambda k: genuine_head(k, replace(k["manifest"], incarnation=None).line()) + k["body"],
        ALTERED,
    ),
    "swapped payload": (
        lambda k: genuine_head(k) + k["planted"],
        "does not match the SHA-256 and size in its manifest",
    ),
    "swapped payload, its hash put in the signed manifest": (
        lambda k: genuine_head(k, planted_manifest(k).line()) + k["planted"],
        ALTERED,
    ),
    "damaged signature": (_flip_sig, ALTERED),
}


def forge(kit: dict[str, Any], payload: bytes, dest: Path) -> Path:
    dest.write_bytes(bytes(pyrage.encrypt(payload, [kit["recipient"]])))
    return dest


def _target(tmp_path: Path) -> tuple[Path, bytes]:
    db = make_ledger(tmp_path / "live.db", sku="TEA")
    return db, db.read_bytes()


@pytest.mark.parametrize("case", list(FORGERIES))
def test_a_forged_or_altered_backup_is_refused_and_the_ledger_is_untouched(
    tmp_path: Path, kit: dict[str, Any], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = FORGERIES[case]
    m: Manifest = kit["manifest"]  # named as the hub names it (a name that disagrees is refused on its own)
    src = forge(kit, make(kit), tmp_path / f"smartshelf-{m.hub}-{m.taken}.db.age")
    db, before = _target(tmp_path)
    with pytest.raises(RestoreRefused) as refused:
        restore_encrypted(src, db, identity=kit["identity"], migrations=MIGRATIONS, signers=trusting(kit["hub"].public))
    assert message in str(refused.value) and len(str(refused.value).splitlines()) == 1
    assert str(refused.value).startswith(f"{src}: ")
    assert db.read_bytes() == before and not Path(f"{db}.bak").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no plaintext left
    argv = ("ledger", "restore", "--identity", str(kit["identity"]), str(src), "--db", str(db))
    rc, _, err = run(capsys, *argv, "--signer", kit["hub"].public, "--hub-id", "store-7")
    assert rc == 2 and err.startswith("smartshelf ledger: restore refused: ") and message in err
    assert len(err.splitlines()) == 1 and db.read_bytes() == before
    rc, _, err = run(capsys, *argv, "--signer", kit["hub"].public, "--insecure-accept-unsigned")
    if case.startswith("missing signature (format 1"):  # the one case the override is for: restored, loudly
        assert rc == 0 and "WARNING: an unsigned backup restored (--insecure-accept-unsigned)" in err
        assert ledger_state(db) == ledger_state(kit["dir"] / "planted.db")
        assert restore_audit(db)["signer"] is None
    else:  # a bad signature, another key, a changed manifest: never
        assert rc == 2 and message in err and db.read_bytes() == before


def test_the_genuine_backup_restores_and_another_hubs_needs_other_hub(
    tmp_path: Path, kit: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db, before = _target(tmp_path)
    hub_key = kit["hub"].public
    with pytest.raises(OtherHubsBackup, match="is a backup of hub 'store-7', not of this hub 'store-8'"):
        restore_encrypted(
            kit["age"], db, identity=kit["identity"], migrations=MIGRATIONS, signers=trusting(hub_key), hub_id="store-8"
        )
    assert db.read_bytes() == before
    argv = ("ledger", "restore", "--identity", str(kit["identity"]), str(kit["age"]), "--db", str(db))
    rc, out, err = run(capsys, *argv, "--signer", hub_key, "--hub-id", "store-8")  # store-7's key, store-7's backup
    assert rc == 2 and "not of this hub 'store-8'" in err and "--other-hub" in err and db.read_bytes() == before
    rc, out, err = run(capsys, *argv, "--signer", hub_key, "--hub-id", "store-8", "--other-hub")
    assert rc == 0 and "WARNING: a backup of hub 'store-7' restored on hub 'store-8' (--other-hub)" in err
    assert f"signed by backup signer key {fingerprint(hub_key)} (--signer)" in out
    assert ledger_state(db) == ledger_state(kit["dir"] / "src.db")

    # store-7's key (or an attacker holding it) signing a manifest that claims store-8: store-8 trusts only its own
    claim = header_bytes(planted_manifest(kit, hub="store-8"), kit["hub"]) + kit["planted"]
    src = forge(kit, claim, tmp_path / "claims-store-8.db.age")
    store8 = signing_key(tmp_path / "store-8.key")[0].public
    rc, _, err = run(capsys, "ledger", "restore", "--identity", str(kit["identity"]), str(src), "--db", str(db),
                     "--signer", store8, "--hub-id", "store-8")  # fmt: skip
    assert rc == 2 and f"signed by backup signer key {fingerprint(hub_key)}" in err and "not trusted" in err


def test_an_older_backup_renamed_as_a_newer_one_is_refused(
    tmp_path: Path, kit: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The name of an off-site file says hub and time; the signed manifest must say the same (an old, genuine
    backup copied over a newer name would otherwise be restored as the newest)."""
    db, before = _target(tmp_path)
    m: Manifest = kit["manifest"]
    renamed = tmp_path / f"smartshelf-{m.hub}-20991231T235959.000Z.db.age"
    shutil.copy(kit["age"], renamed)
    argv = ("ledger", "restore", "--identity", str(kit["identity"]), str(renamed), "--db", str(db))
    rc, _, err = run(capsys, *argv, "--signer", kit["hub"].public, "--hub-id", m.hub)
    assert rc == 2 and "the file was renamed" in err and f"manifest hub {m.hub!r} at {m.taken}" in err, err
    assert db.read_bytes() == before
    shutil.copy(kit["age"], tmp_path / "any-name.db.age")  # a name that says nothing: judged by its manifest alone
    rc, _out, err = run(capsys, *argv[:4], str(tmp_path / "any-name.db.age"), "--db", str(db), "--signer",
                       kit["hub"].public, "--hub-id", m.hub)  # fmt: skip
    assert rc == 0, err


def test_a_plain_ledger_planted_as_an_encrypted_backup_is_refused_both_ways(
    tmp_path: Path, kit: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain SQLite file on the share under a backup's name: refused with --identity (no hint to restore it
    plainly) and refused by a plain restore too (only a hub's schedule writes *.age files, always encrypted)."""
    db, before = _target(tmp_path)
    planted = tmp_path / "smartshelf-store-7-20991231T235959.000Z.db.age"
    planted.write_bytes(kit["planted"])
    rc, _, err = run(capsys, "ledger", "restore", "--identity", str(kit["identity"]), str(planted), "--db", str(db),
                     "--signer", kit["hub"].public)  # fmt: skip
    assert rc == 2 and "not an encrypted backup" in err and "without --identity" not in err, err
    rc, _, err = run(capsys, "ledger", "restore", str(planted), "--db", str(db))
    assert rc == 2 and "named as an encrypted backup but is not encrypted" in err, err
    assert db.read_bytes() == before


def test_the_signature_is_judged_before_any_of_the_ledger_is_written(kit: dict[str, Any], tmp_path: Path) -> None:
    src = forge(kit, header_bytes(planted_manifest(kit), kit["attacker"]) + kit["planted"], tmp_path / "f.db.age")
    out = io.BytesIO()
    identities = read_identities(kit["identity"])
    trusted = trusting(kit["hub"].public)

    def judge(header: Any) -> None:
        trusted.verify(header.manifest_line, header.signature)

    with pytest.raises(AgeRefused, match="not trusted"):
        decrypt_to(src, out, identities, kit["identity"], judge)
    assert out.getvalue() == b""
    header = decrypt_to(kit["age"], out, identities, kit["identity"], judge)  # the genuine one: all of it
    assert out.getvalue() == kit["body"] and header.signature is not None


# ------------------------------------------------------------------------------------------ the signature itself


def test_the_signature_covers_every_byte_of_the_manifest(tmp_path: Path) -> None:
    key = signing_key(tmp_path / "k")[0]
    m = Manifest("store-1", "20251127T100000.000Z", 4096, "ab" * 32, 14, 12, 3)
    sig = key.sign(m.line())
    trusted = trusting(key.public)
    assert trusted.verify(m.line(), sig).signer == key.public
    changes: dict[str, Any] = {"hub": "store-2", "taken": "20251127T100000.001Z", "size": 4097, "sha256": "ac" * 32,
                               "schema_version": 13, "movements": 13, "incarnation": None}  # fmt: skip
    for name, value in changes.items():
        with pytest.raises(SignerRefused, match="does not match its manifest"):
            trusted.verify(replace(m, **{name: value}).line(), sig)
    with pytest.raises(SignerRefused, match="does not match"):  # the bytes are signed, not their parse
        trusted.verify(m.line().replace(b", ", b","), sig)
    bare = Signature(key.public, key.private.sign(m.line()))  # the same key signing without the backup's prefix
    with pytest.raises(SignerRefused, match="does not match"):
        trusted.verify(m.line(), bare)
    assert SIGNED_PREFIX.startswith(b"smartshelf-backup 2")
    with pytest.raises(SignerRefused, match="not signed"):
        trusted.verify(m.line(), None)
    assert trusted.verify(m.line(), None, allow_unsigned=True).signer is None


def test_signer_keys_have_one_spelling() -> None:
    public = public_text(Ed25519PrivateKey.generate().public_key())
    assert signer_problem(public) is None and len(public) == len("ed25519:") + 43
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    other = public[:-1] + alphabet[alphabet.index(public[-1]) + 1]  # the last character's 2 unused bits set
    assert base64.urlsafe_b64decode(other[8:] + "=") == base64.urlsafe_b64decode(public[8:] + "=")
    assert signer_problem(other) is not None  # the same key under a second spelling: refused
    for bad in ("age1qqq", "ed25519:", "ed25519:" + "A" * 42, "ed25519:" + "!" * 43, 7, None):
        assert signer_problem(bad) is not None
    with pytest.raises(SignerRefused, match="must be a backup signer key"):
        Trusted().add(["ssh-ed25519 AAAA"], "x")


# ------------------------------------------------------------------------------------------ the hub's key


def test_a_signing_key_others_can_read_is_refused_everywhere(
    tmp_path: Path, kit: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_ledger(tmp_path / "hub.db")
    key_file = tmp_path / "hub.db.backup-signing.key"
    shutil.copy(kit["dir"] / "hub.key", key_file)  # the key of the hub that made kit["age"]
    key_file.chmod(0o644)
    local, share, usb = tmp_path / "backups", tmp_path / "share", tmp_path / "usb"
    share.mkdir()
    usb.mkdir()
    policy = OffsitePolicy(share, (str(kit["recipient"]),), 5, "store-7", signing_key=key_file)
    scheduled_backup(db, BackupPolicy(local, keep=5))
    with pytest.raises(ShipFailed) as failed:
        ship(local, policy)
    assert f"{key_file}: holds the hub's backup signing key" in str(failed.value) and MODE_0644 in str(failed.value)
    assert len(str(failed.value).splitlines()) == 1 and list(share.iterdir()) == []

    backup = ("ledger", "backup", "--db", str(db), "--encrypt-to", str(kit["recipient"]), "--hub-id", "store-7")
    rc, _, err = run(capsys, *backup, str(usb))
    assert rc == 2 and MODE_0644 in err and list(usb.iterdir()) == []
    rc, out, err = run(capsys, "ledger", "backup-key", "--signer", "--db", str(db))
    assert rc == 2 and MODE_0644 in err and out == ""

    # at restore, this hub's own key is trusted only while it is private
    restore = ["ledger", "restore", "--identity", str(kit["identity"]), str(kit["age"]), "--db", str(db)]
    restore += ["--hub-id", "store-7"]
    rc, _, err = run(capsys, *restore)
    assert rc == 2 and f"WARNING: this hub's own signing key is not trusted: {key_file}: holds" in err
    assert "restore refused: " in err and "not trusted: give --signer" in err

    key_file.chmod(0o600)
    assert [s.path.name for s in ship(local, policy)] == [p.name for p in list_offsite(share, "store-7")]
    rc, out, err = run(capsys, *restore)
    assert (rc, err) == (0, "") and f"(this hub's key {key_file})" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's takes root")
def test_a_signing_key_of_another_user_is_refused(tmp_path: Path) -> None:
    assert signing_key(tmp_path / "k.key")[1]  # made, ours
    os.chown(tmp_path / "k.key", 4242, 4242)  # still 0600, but whoever owns it chose the key
    with pytest.raises(SignerRefused, match=r"belongs to another user \(uid 4242\)"):
        signing_key(tmp_path / "k.key")


def test_a_key_file_that_is_not_a_signing_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "k.key"
    bad.write_text("AGE-SECRET-KEY-1QQQQ\n")
    bad.chmod(0o600)
    with pytest.raises(SignerRefused, match="not a backup signing key"):
        signing_key(bad)
    assert bad.read_text() == "AGE-SECRET-KEY-1QQQQ\n"  # never replaced
    deep = tmp_path / "keys" / "hub" / "signing.key"  # a configured path whose directories are not there yet
    key, made = signing_key(deep)
    assert made and mode(deep) == 0o600 and mode(deep.parent) == 0o700 and mode(deep.parent.parent) == 0o700
    assert f"# public key: {key.public}" in deep.read_text()


def test_processes_making_the_key_at_once_all_get_the_same_one(tmp_path: Path) -> None:
    for n in range(10):
        path = tmp_path / f"k{n}.key"
        gate = threading.Barrier(4)
        got: list[tuple[str, bool]] = []

        def take(path: Path = path, gate: threading.Barrier = gate, got: list[tuple[str, bool]] = got) -> None:
            gate.wait()
            key, made = signing_key(path)
            got.append((key.public, made))

        threads = [threading.Thread(target=take) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({public for public, _ in got}) == 1 and sum(made for _, made in got) <= 1
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_a_new_key_leaves_older_backups_restorable_while_their_key_is_trusted(
    tmp_path: Path, kit: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    db = make_ledger(tmp_path / "hub.db")
    key_file, local, share = tmp_path / "hub.key", tmp_path / "backups", tmp_path / "share"
    share.mkdir()
    policy = OffsitePolicy(share, (str(kit["recipient"]),), 5, "h1", signing_key=key_file)
    t0 = datetime(2025, 11, 27, 10, 0, tzinfo=UTC)
    caplog.set_level(logging.WARNING, logger="hub.ledger.offsite")
    scheduled_backup(db, BackupPolicy(local, keep=5), now=t0)
    (first,) = ship(local, policy)
    old = read_signing_key(key_file).public
    assert f"made a new backup signing key {key_file}; its public key is {old}" in caplog.text
    key_file.unlink()  # rotation (or a new Pi): the next backup makes a new key, and says so
    caplog.clear()
    scheduled_backup(db, BackupPolicy(local, keep=5), now=t0 + timedelta(hours=1))
    (second,) = ship(local, policy)
    new = read_signing_key(key_file).public
    assert new != old and f"its public key is {new} (fingerprint {fingerprint(new)})" in caplog.text
    assert (first.signer, second.signer) == (old, new)

    def restore(src: Path, *keys: str) -> str | None:
        db = tmp_path / f"restored-{len(list(tmp_path.iterdir()))}.db"
        done = restore_encrypted(src, db, identity=kit["identity"], migrations=MIGRATIONS, signers=trusting(*keys))
        return done.verdict.signer

    assert (restore(first.path, old, new), restore(second.path, old, new)) == (old, new)  # both keys listed
    assert restore(second.path, new) == new
    with pytest.raises(RestoreRefused, match=f"signed by backup signer key {fingerprint(old)}"):
        restore(first.path, new)  # the old key no longer listed (say it leaked): its backups are not trusted


# ------------------------------------------------------------------------------------------ configuration


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


# Fixed keys (not generated at import): the parametrized tests below carry them in their ids, which must be the same
# in every pytest-xdist worker.
AGE = "age1k75wmg2p5xy70klsllxc5lxmfl27fxrkj346q0ympcuypagu05gs9akrdt"
SIGNER = "ed25519:IhxA1nxeC3nq_tY9IVm6q8xP8O2356V0Y7FjvUCNHck"
OFFSITE = f'[backup]\ndir = "b"\nrecipients = ["{AGE}"]\noffsite_dir = "/mnt/share/x"\nhub_id = "s1"\n'


def test_the_signing_key_and_trusted_signers_in_hub_toml(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, f'[hub]\ndatabase = "state/hub.db"\n\n{OFFSITE}'))
    assert cfg.backup is not None and cfg.backup.offsite is not None
    assert cfg.backup.offsite.signing_key == tmp_path / "state" / "hub.db.backup-signing.key"  # beside the ledger
    assert cfg.backup.trusted_signers == ()
    text = f'{OFFSITE}signing_key = "keys/sign.key"\ntrusted_signers = ["{SIGNER}"]\n'
    cfg = load_config(_config(tmp_path, text))
    assert cfg.backup is not None and cfg.backup.offsite is not None
    assert cfg.backup.offsite.signing_key == tmp_path / "keys" / "sign.key" and cfg.backup.trusted_signers == (SIGNER,)
    assert load_config(_config(tmp_path, f'[backup]\ntrusted_signers = ["{SIGNER}"]\n')).backup is None  # a new Pi


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[backup]\ntrusted_signers = ["ed25519:abc"]\n', "backup.trusted_signers[1]: is not a valid backup signer"),
        (f'[backup]\ntrusted_signers = ["{AGE}"]\n', "backup.trusted_signers[1]: must be a backup signer key"),
        (f'[backup]\ntrusted_signers = "{SIGNER}"\n', "backup.trusted_signers: must be a list of signer keys"),
        (f'{OFFSITE}signing_key = ""\n', "backup.signing_key: must not be empty"),
        (f'{OFFSITE}signing_key = "/mnt/share/x/hub.key"\n', "backup.signing_key: the signing key /mnt/share/x/hub.key"
         " is in backup.offsite_dir: it would be shipped in clear"),
        (OFFSITE.replace("/mnt/share/x", "st") + '[hub]\ndatabase = "st/hub.db"\n', "hub.database: the signing key"),
    ],
)  # fmt: skip
def test_signer_config_errors_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, text))
    assert expected in str(err.value) and len(str(err.value).splitlines()) == 1, str(err.value)


def test_restore_reads_trusted_signers_from_hub_toml_and_refuses_bad_ones(
    tmp_path: Path, kit: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db, before = _target(tmp_path)
    toml = _config(tmp_path, f'[hub]\ndatabase = "live.db"\n[backup]\ntrusted_signers = ["{SIGNER}", 3]\n')
    restore = ("ledger", "restore", "--identity", str(kit["identity"]), str(kit["age"]), "--config", str(toml))
    rc, _, err = run(capsys, *restore)
    assert rc == 2 and f"{toml}: backup.trusted_signers[2]: must be a backup signer key" in err
    rc, _, err = run(capsys, *restore[:-2], "--db", str(db), "--signer", "ed25519:nope")
    assert rc == 2 and "--signer: is not a valid backup signer key" in err
    rc, _, err = run(capsys, *restore[:-2], "--db", str(db), "--signer", str(tmp_path / "missing.txt"))
    assert rc == 2 and "--signer: " in err and "cannot read the signer keys" in err
    rc, _, err = run(capsys, "ledger", "restore", str(kit["dir"] / "src.db"), "--db", str(db), "--signer", SIGNER)
    assert rc == 2 and "--signer and --insecure-accept-unsigned are for encrypted backups" in err
    assert db.read_bytes() == before
    toml.write_text(
        f'[hub]\ndatabase = "live.db"\n[backup]\nhub_id = "store-7"\ntrusted_signers = ["{kit["hub"].public}"]\n'
    )
    rc, out, err = run(capsys, *restore)
    assert (rc, err) == (0, ""), err
    assert f"({toml}: backup.trusted_signers)" in out and ledger_state(db) == ledger_state(kit["dir"] / "src.db")
