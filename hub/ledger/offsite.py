"""Off-site backups: scheduled backups encrypted to age public keys and shipped off the Pi; their restore.

* ``ship(local_dir, policy)`` runs after each scheduled backup (``hub.ledger.upkeep``): each of the newest
  ``policy.keep`` local backups that is not yet in ``policy.directory`` is encrypted there, oldest first, as
  ``smartshelf-<hub_id>-<time of the local backup>.db.age``; then that directory is pruned to this hub's newest
  ``policy.keep`` (other hubs' files, and anything else, are left alone). So a backup that could not be shipped
  (share unmounted, full, unwritable) is shipped by the next run that can, while the local one is still kept.
  Failures raise ``ShipFailed`` (one line); they never touch the local backups.
* The destination is never created: point it at a directory *on* the share, so that an unmounted share is a missing
  directory rather than a write onto the SD card under its mount point. One on the ledger's own file system is
  logged as a warning (it is not off-site).
* Each file is written as ``.<name>.tmp-<pid>`` beside its final name, fsynced and renamed: a half-shipped file
  never has the final name. The plaintext never leaves the Pi: it is encrypted while it is read from the local
  backup (the format and the key files: ``hub.ledger.agefile``).
* Every manifest is signed with the hub's own Ed25519 key (``policy.signing_key``, made 0600 on first need, its
  public key logged then: ``hub.ledger.backup_signing``); a key file other users can open is refused (the shipment
  fails, one line, the local backup stays).
* ``encrypted_backup(db, dest, recipients, hub_id=, signing_key=)``: ``smartshelf ledger backup --encrypt-to``: an
  online backup into a private temporary file beside the ledger, encrypted (and signed) to ``dest``, the plaintext
  removed.
* ``restore_encrypted(src, db, identity=, migrations=, signers=, hub_id=)``: decrypts into a private temporary
  file beside the ledger; judges the signature as soon as the header is decrypted (unsigned, not matching its
  manifest, or by a key not in ``signers``: refused before any of the ledger is written; ``allow_unsigned`` lets
  an unsigned, format-1 backup through), checks the ledger against the SHA-256 in the signed manifest, then
  restores it exactly as ``restore_database`` does (with every check of ``verify_backup``); a wrong key, a
  damaged, truncated or non-age file is refused (``RestoreRefused``, one line) and the ledger is untouched. Given
  this hub's ``hub_id``, a backup whose manifest names another hub is refused too (``OtherHubsBackup``): restored,
  this hub would publish that store's ledger as its own. The manifest's hub is signed, so it is the signer's word.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hub.ledger.agefile import (
    AgeRefused,
    Header,
    Manifest,
    decrypt_to,
    encrypt_to,
    read_identities,
    recipients,
    sha256_of,
)
from hub.ledger.backup import (
    BackupError,
    BackupInfo,
    OffsitePolicy,
    RestoreRefused,
    backup_database,
    list_backups,
    restore_database,
)
from hub.ledger.backup_signing import SignerRefused, SigningKey, Trusted, Verdict, fingerprint, signing_key
from hub.ledger.identity import read_incarnation
from hub.ledger.schema import Migration, current_version
from hub.private_files import SQLITE_COMPANIONS, open_private

OFFSITE_NAME_RE = re.compile(r"smartshelf-(?P<hub>[A-Za-z0-9_-]{1,64})-(?P<stamp>\d{8}T\d{6}\.\d{3}Z)\.db\.age")
STALE_TMP_S = 86400.0

log = logging.getLogger(__name__)
_warned_local: set[Path] = set()


class ShipFailed(BackupError):
    """An off-site backup was not shipped; ``str()`` says where and why. The local backups are untouched."""


class OtherHubsBackup(RestoreRefused):
    """The backup's manifest names another hub than the one restoring it; the ledger is untouched."""

    def __init__(self, src: Path, manifest: Manifest, hub_id: str) -> None:
        self.manifest = manifest
        super().__init__(
            f"{src} is a backup of hub {manifest.hub!r}, not of this hub {hub_id!r}: restored, this hub would publish"
            " that store's ledger as its own (--other-hub to restore it all the same)"
        )


@dataclass(frozen=True)
class Shipped:
    path: Path
    source: Path
    manifest: Manifest
    signer: str  # the public key that signed it (ed25519:...)


@dataclass(frozen=True)
class Restored:
    info: BackupInfo
    manifest: Manifest
    verdict: Verdict  # whose signature, trusted from where (or unsigned, let through)


def stamp_now(ahead: timedelta = timedelta(0)) -> str:
    """The time in an off-site file's name: now (plus ``ahead``), UTC to the millisecond."""
    return (datetime.now(UTC) + ahead).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"


def offsite_name(hub_id: str, stamp: str) -> str:
    return f"smartshelf-{hub_id}-{stamp}.db.age"


def _facts(path: Path) -> tuple[int, int, int | None]:
    """(schema version, movements, incarnation) of a backup file."""
    conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, isolation_level=None)
    try:
        version = current_version(conn)
        if not version:
            return 0, 0, None
        return version, conn.execute("SELECT count(*) FROM movements").fetchone()[0], read_incarnation(conn)
    finally:
        conn.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some network file systems cannot fsync a directory; the rename stands
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def encrypt_backup(src: Path, dest: Path, to: Sequence[str], *, hub_id: str, taken: str, key: SigningKey) -> Shipped:
    """Encrypt the backup file ``src`` to the age public keys ``to`` as ``dest`` (tmp name, fsync, rename), its
    manifest signed with ``key``."""
    keys = recipients(to)
    digest, size = sha256_of(src)
    version, movements, incarnation = _facts(src)
    manifest = Manifest(hub_id, taken, size, digest, version, movements, incarnation)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        # no fchmod (a share may refuse it): the ciphertext is no secret, 0600 only keeps it out of sight
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            encrypt_to(f, manifest, out, keys, key)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return Shipped(dest, src, manifest, key.public)


def load_signing_key(path: Path) -> SigningKey:
    """The hub's signing key, made on first need; a new one is logged with its public key for the operator."""
    key, made = signing_key(path)
    if made:
        log.warning(
            "off-site backups: made a new backup signing key %s; its public key is %s (fingerprint %s): record it"
            " off the Pi with the age identity, a restore needs it (restore --signer, [backup] trusted_signers)",
            path,
            key.public,
            fingerprint(key.public),
        )
    return key


def _warn_if_local(local_dir: Path, dest: Path) -> None:
    if dest in _warned_local:
        return
    with contextlib.suppress(OSError):
        if os.stat(dest).st_dev == os.stat(local_dir).st_dev:
            _warned_local.add(dest)
            log.warning(
                "off-site backups: %s is on the same file system as %s: that copy is not off-site", dest, local_dir
            )


def ship(local_dir: Path, policy: OffsitePolicy) -> list[Shipped]:
    """Ship the newest ``policy.keep`` local backups that are not off-site yet, then prune off-site."""
    dest = policy.directory
    shipped: list[Shipped] = []
    try:
        if not dest.is_dir():
            raise ShipFailed(f"off-site backup to {dest} failed: no such directory (is the share mounted?)")
        _warn_if_local(local_dir, dest)
        key = load_signing_key(policy.signing_key)
        present = {p.name for p in dest.iterdir()}
        for src in list_backups(local_dir)[-policy.keep :]:
            stamp = src.name.removeprefix("smartshelf-").removesuffix(".db")
            name = offsite_name(policy.hub_id, stamp)
            if name not in present:
                shipped.append(
                    encrypt_backup(src, dest / name, policy.recipients, hub_id=policy.hub_id, taken=stamp, key=key)
                )
        prune_offsite(dest, policy.hub_id, policy.keep)
    except (OSError, AgeRefused, SignerRefused, sqlite3.Error) as exc:
        done = f" ({len(shipped)} shipped before it)" if shipped else ""
        raise ShipFailed(f"off-site backup to {dest} failed{done}: {exc}") from None
    return shipped


def list_offsite(directory: Path, hub_id: str) -> list[Path]:
    return sorted(p for p in directory.iterdir() if (m := OFFSITE_NAME_RE.fullmatch(p.name)) and m["hub"] == hub_id)


def prune_offsite(directory: Path, hub_id: str, keep: int) -> list[Path]:
    """Keep this hub's newest ``keep`` encrypted backups in ``directory``; remove its temporary files left by a
    crash over a day ago. Nothing else there is touched. A file named later than a day from now (a clock gone wrong,
    or planted by whoever can write to the share) is neither kept nor removed: it is logged, and it does not push
    this hub's real backups out (else each new one would be deleted as it arrives)."""
    ahead = stamp_now(timedelta(days=1))
    files = []
    for p in list_offsite(directory, hub_id):
        named = OFFSITE_NAME_RE.fullmatch(p.name)
        if named is not None and named["stamp"] > ahead:
            log.warning("off-site backups: %s is named after %s (in the future): not counted, not removed", p, ahead)
        else:
            files.append(p)
    removed = files[: max(0, len(files) - keep)]
    stale = re.compile(rf"\.smartshelf-{re.escape(hub_id)}-\d{{8}}T\d{{6}}\.\d{{3}}Z\.db\.age\.tmp-\d+")
    for p in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if stale.fullmatch(p.name) and time.time() - p.stat().st_mtime > STALE_TMP_S:
                removed.append(p)
    for p in removed:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return removed


def encrypted_backup(
    db: Path | str, dest: Path | str, to: Sequence[str], *, hub_id: str, signing_key: Path | str
) -> Shipped:
    """An online backup of ``db`` encrypted to ``to`` as ``dest`` (a file, or a directory for
    ``smartshelf-<hub_id>-<time>.db.age``), signed with the hub's key at ``signing_key`` (made on first need); the
    plaintext copy lives only in a private file beside ``db``."""
    db, dest = Path(db), Path(dest)
    recipients(to)  # refuse a bad key (AgeRefused) ...
    key = load_signing_key(Path(signing_key))  # ... or a signing key others can read (SignerRefused) before copying
    stamp = stamp_now()
    if dest.is_dir():
        dest = dest / offsite_name(hub_id, stamp)
    plain = db.with_name(f".{db.name}.encrypting-{os.getpid()}.db")
    try:
        backup_database(db, plain)
        return encrypt_backup(plain, dest, to, hub_id=hub_id, taken=stamp, key=key)
    except AgeRefused as exc:
        raise BackupError(f"{dest}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            plain.unlink()


def restore_encrypted(
    src: Path | str,
    db: Path | str,
    *,
    identity: Path | str,
    migrations: Sequence[Migration],
    signers: Trusted,
    allow_unsigned: bool = False,
    hub_id: str | None = None,
) -> Restored:
    """Decrypt the encrypted backup ``src`` with the age identity file ``identity`` and restore it to ``db`` as
    ``restore_database`` does; ``RestoreRefused`` (the ledger untouched) when it cannot be: among others when it is
    not signed by one of ``signers`` (an unsigned one passes with ``allow_unsigned``; a signature that does not
    match never does); ``OtherHubsBackup`` when ``hub_id`` is given and the backup's manifest names another hub
    (None: not checked)."""
    src, db = Path(src), Path(db)
    if not src.is_file():
        raise RestoreRefused(f"{src}: no such file")
    tmp = db.with_name(f".{db.name}.decrypted-{os.getpid()}")
    verdicts: list[Verdict] = []

    def judge(header: Header) -> None:
        verdicts.append(signers.verify(header.manifest_line, header.signature, allow_unsigned=allow_unsigned))

    try:
        identities = read_identities(identity)
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as out:
            manifest = decrypt_to(src, out, identities, identity, judge).manifest
        named = OFFSITE_NAME_RE.fullmatch(src.name)
        # another hub in the name, or a name newer than the backup (an operator's `ledger backup` over an older
        # name writes a newer backup under it: that is no lie)
        if named is not None and (named["hub"] != manifest.hub or named["stamp"] > manifest.taken):
            raise RestoreRefused(
                f"{src}: its name says hub {named['hub']!r} at {named['stamp']}, its signed manifest hub"
                f" {manifest.hub!r} at {manifest.taken}: the file was renamed (an older backup passed off as a newer"
                " one?); refused"
            )
        if hub_id is not None and manifest.hub != hub_id:
            raise OtherHubsBackup(src, manifest, hub_id)
        try:
            info = restore_database(tmp, db, migrations=migrations, source_name=str(src))
        except RestoreRefused as exc:
            raise RestoreRefused(str(exc).replace(str(tmp), f"{src} (decrypted)")) from None
    except AgeRefused as exc:
        raise RestoreRefused(str(exc)) from None
    finally:
        for leftover in (tmp, *(Path(f"{tmp}{suffix}") for suffix in SQLITE_COMPANIONS)):  # all plaintext
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return Restored(info, manifest, verdicts[0])
