"""The age format (https://age-encryption.org/v1) through ``pyrage`` (Rust's rage): what an encrypted backup is.

An encrypted backup is one age file (X25519 recipients, ``age1...``). Its plaintext is a small header and the SQLite
backup itself::

    smartshelf-backup 2\\n
    {"hub": "store-042", "incarnation": 1, "movements": 1234, "schema_version": 14, "sha256": "…",
     "size": 98304, "taken": "20251127T100000.000Z"}\\n
    {"sig": "<Ed25519 signature of the line above, base64>", "signer": "ed25519:..."}\\n
    <the SQLite file, exactly ``size`` bytes, whose SHA-256 is ``sha256``>

so ``age -d -i key.txt FILE.db.age | tail -n +4 > ledger.db`` recovers the ledger with the age tools alone, and a
restore checks the bytes it wrote against the hash that travelled, encrypted, with them. The signature line is the
hub's (``hub.ledger.backup_signing``: age says nothing about who encrypted a file); a restore judges it as soon as
the header is decrypted, before any of the ledger is written. Format 1 (``smartshelf-backup 1``, no signature line,
``tail -n +3``) is what hubs wrote before backups were signed: read, and refused as unsigned unless told.

* Streaming: ``pyrage.encrypt_io`` / ``decrypt_io`` take Python readers and writers and move 8 KiB reads / 64 KiB
  chunks, so a large ledger is never held in memory, and they let other threads run between chunks
  (``encrypt_file`` holds the GIL for the whole file: the hub's event loop would stall).
* age authenticates every 64 KiB chunk and marks the last one, so a truncated or altered file fails to decrypt;
  ``decrypt_io`` has by then written the chunks before the damage: always decrypt into a private temporary file.
* Identity files are age-keygen's format (``# created:``, ``# public key: age1...``, ``AGE-SECRET-KEY-1...``), so
  ``age`` and ``rage`` read the same files; they are private (0600, ``hub.private_files``' rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyrage  # type: ignore[import-untyped]
from pyrage import x25519

from hub.ledger.backup_signing import MAX_SIGNATURE_LINE, Signature, SignerRefused, SigningKey
from hub.ledger.models import LedgerError
from hub.private_files import PrivateFileUnreadable, open_private, read_private

AGE_MAGIC = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
PAYLOAD_MAGIC = b"smartshelf-backup 2\n"  # manifest, signature, ledger
UNSIGNED_MAGIC = b"smartshelf-backup 1\n"  # manifest, ledger: before backups were signed
MAGIC_LEN = len(PAYLOAD_MAGIC)
MAX_MANIFEST = 4096
CHUNK = 1 << 16
IDENTITY_HOLDS = "an age identity (the key that decrypts off-site backups)"


class AgeRefused(LedgerError):
    """An encrypted backup, a key or an identity file was refused; ``str()`` is one line saying why."""


@dataclass(frozen=True)
class Manifest:
    """What travels encrypted with a backup; ``sha256`` and ``size`` are those of the SQLite file."""

    hub: str
    taken: str
    size: int
    sha256: str
    schema_version: int
    movements: int
    incarnation: int | None = None  # the ledger's (hub.ledger.identity); absent in older backups and schemas

    def line(self) -> bytes:
        """The manifest as it travels (and is signed): one line of JSON, without its newline."""
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def parse(cls, line: bytes) -> Manifest:
        data = json.loads(line)
        fields = {k: data[k] for k in ("hub", "taken", "size", "sha256", "schema_version", "movements")}
        if not (isinstance(fields["size"], int) and re.fullmatch(r"[0-9a-f]{64}", str(fields["sha256"]))):
            raise ValueError("bad size or sha256")
        if not (isinstance(fields["hub"], str) and isinstance(fields["taken"], str)):
            raise ValueError("bad hub or time")
        if not (isinstance(fields["schema_version"], int) and isinstance(fields["movements"], int)):
            raise ValueError("bad schema version or movements")
        incarnation = data.get("incarnation")
        if incarnation is not None and not isinstance(incarnation, int):
            raise ValueError("bad incarnation")
        return cls(**fields, incarnation=incarnation)

    def describe(self) -> str:
        """One line for the operator: whose backup this is and what it holds."""
        life = f", ledger incarnation {self.incarnation}" if self.incarnation is not None else ""
        return (
            f"backup of hub {self.hub!r}, taken {self.taken}: {self.movements} movements, "
            f"schema {self.schema_version}{life}"
        )


# ------------------------------------------------------------------------------------------ keys and identities


def recipient_problem(text: object) -> str | None:
    """What is wrong with ``text`` as an age public key, or None."""
    if not isinstance(text, str) or not text.startswith("age1"):
        return f"must be an age public key (age1...), not {text!r}"[:160]
    try:
        x25519.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        shown = text if len(text) <= 24 else text[:20] + "..."
        return f"is not a valid age public key ({_line(exc)}): {shown}"
    return None


def recipients(texts: Sequence[str]) -> list[Any]:
    if not texts:
        raise AgeRefused("no age public key to encrypt to")
    for t in texts:
        if (problem := recipient_problem(t)) is not None:
            raise AgeRefused(problem)
    return [x25519.Recipient.from_str(t) for t in texts]


def read_identities(path: Path | str) -> list[Any]:
    """The identities (age secret keys) in an age identity file, which must be private (0600)."""
    path = Path(path)
    try:
        data = read_private(path, IDENTITY_HOLDS, "identity", 1 << 20)
    except PrivateFileUnreadable as exc:
        raise AgeRefused(str(exc)) from None
    out = []
    for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise AgeRefused(
                f"{path}:{n}: not an age identity (expected AGE-SECRET-KEY-1... lines, as age-keygen writes)"
            ) from None
    if not out:
        raise AgeRefused(f"{path}: holds no age identity (AGE-SECRET-KEY-1...)")
    return out


def public_keys(identities: Sequence[Any]) -> list[str]:
    return [str(i.to_public()) for i in identities]


def generate_identity(path: Path | str) -> str:
    """Write a new age identity to ``path`` (created 0600; an existing file is never replaced) in age-keygen's
    format; returns its public key (``age1...``), the recipient for ``[backup] recipients``."""
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    fd = open_private(path)  # O_EXCL: FileExistsError for an existing file
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return public


# ------------------------------------------------------------------------------------------ encrypt / decrypt


def sha256_of(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


@dataclass(frozen=True)
class Header:
    """A decrypted backup's header: its manifest, the manifest's bytes as they travelled (what was signed) and its
    signature (None: format 1, unsigned)."""

    manifest: Manifest
    manifest_line: bytes
    signature: Signature | None


def header_bytes(manifest: Manifest, key: SigningKey) -> bytes:
    line = manifest.line()
    return PAYLOAD_MAGIC + line + b"\n" + key.sign(line).line() + b"\n"


class _Payload:
    """A reader for ``encrypt_io``: the header, then the file, checked to be ``manifest.size`` bytes."""

    def __init__(self, manifest: Manifest, key: SigningKey, f: BinaryIO) -> None:
        self.head, self.f, self.left = header_bytes(manifest, key), f, manifest.size

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        if self.head:
            out, self.head = self.head[:n], self.head[n:]
            return out
        block = self.f.read(n)
        self.left -= len(block)
        if self.left < 0 or (not block and self.left):
            raise AgeRefused("the backup changed while it was being encrypted")
        return block


def encrypt_to(src: BinaryIO, manifest: Manifest, out: BinaryIO, to: Sequence[Any], key: SigningKey) -> None:
    """Stream the header (``manifest`` signed with ``key``) + ``src`` encrypted to the recipients ``to`` into ``out``
    (which the caller fsyncs)."""
    try:
        pyrage.encrypt_io(_Payload(manifest, key, src), out, list(to))
    except pyrage.EncryptError as exc:  # errors of our reader / writer arrive as EncryptError("OSError: ...")
        raise AgeRefused(f"encryption failed: {_line(exc)}") from None


def _line(exc: BaseException) -> str:
    """pyrage's messages can span lines ("Unknown age format.\nHave you tried upgrading ..."): one line."""
    return " ".join(str(exc).split())


class _NotOurs(Exception):
    pass


class _Unpack:
    """A writer for ``decrypt_io``: takes the header off, shows it to ``check`` (which raises to refuse the backup
    before any of its ledger is written), then writes the SQLite file to ``out``, hashing it."""

    def __init__(self, out: BinaryIO, check: Callable[[Header], None]) -> None:
        self.out, self.check, self.head, self.hash, self.size = out, check, b"", hashlib.sha256(), 0
        self.header: Header | None = None

    def write(self, data: bytes) -> int:
        if self.header is not None:
            self._body(data)
            return len(data)
        self.head += bytes(data)
        magic = self.head[:MAGIC_LEN]
        if not any(m.startswith(magic) for m in (PAYLOAD_MAGIC, UNSIGNED_MAGIC)):
            raise _NotOurs
        lines = 2 if magic == PAYLOAD_MAGIC else 1
        parts = self.head[MAGIC_LEN:].split(b"\n", lines)
        if len(parts) == 1 and len(parts[0]) > MAX_MANIFEST:
            raise _NotOurs
        if len(parts) <= lines and not (len(parts) == 2 and len(parts[1]) > MAX_SIGNATURE_LINE):
            return len(data)  # the header is not all here yet (a signature line too long to be one is judged now)
        try:
            manifest = Manifest.parse(parts[0])
        except (ValueError, KeyError, TypeError):
            raise _NotOurs from None
        try:
            signature = Signature.parse(parts[1]) if lines == 2 else None
        except (ValueError, TypeError):
            raise SignerRefused("its signature line is missing or damaged: nothing proves who made it") from None
        header = Header(manifest, parts[0], signature)
        self.check(header)
        self.header = header
        self._body(parts[-1])
        self.head = b""
        return len(data)

    def _body(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def is_age_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(len(AGE_ARMOR))
    return head.startswith(AGE_MAGIC) or head.startswith(AGE_ARMOR)


def decrypt_to(
    src: Path, out: BinaryIO, identities: Sequence[Any], identity_file: Path | str, check: Callable[[Header], None]
) -> Header:
    """Decrypt the encrypted backup ``src`` into ``out`` (a private temporary file: on a refusal it holds part of
    the plaintext) and check it against its manifest; ``AgeRefused`` (one line) when it is not one, is damaged,
    or was not encrypted to any of ``identities`` (read from ``identity_file``). ``check`` sees the header first
    (the signature's judge): its ``SignerRefused`` becomes ``AgeRefused`` naming ``src``, before any of the ledger
    is written."""
    if not is_age_file(src):
        with open(src, "rb") as f:
            plain = f.read(16) == b"SQLite format 3\x00"
        raise AgeRefused(
            f"{src}: a plain SQLite file, not an encrypted backup: a hub's off-site backups are always encrypted and"
            " signed, so no hub's schedule made this one"
            if plain
            else f"{src}: not an age-encrypted file"
        )
    unpack = _Unpack(out, check)
    try:
        with open(src, "rb") as f:
            pyrage.decrypt_io(f, unpack, list(identities))
    except SignerRefused as exc:
        raise AgeRefused(f"{src}: {exc}") from None
    except _NotOurs:
        raise AgeRefused(f"{src}: decrypted, but it is not a smartshelf backup") from None
    except pyrage.DecryptError as exc:
        if "no matching keys" in str(exc).lower():
            keys = ", ".join(public_keys(identities))
            raise AgeRefused(
                f"{src}: this backup was not encrypted to that identity ({identity_file}, public key {keys})"
            ) from None
        raise AgeRefused(f"{src}: not a valid age file, or its header is damaged or cut short ({_line(exc)})") from None
    except OSError as exc:
        if exc.errno is not None:  # our own writes: disk full, ...
            raise
        raise AgeRefused(f"{src}: damaged or truncated: it fails age's authentication ({_line(exc)})") from None
    if unpack.header is None:
        raise AgeRefused(f"{src}: decrypted, but it is not a smartshelf backup (no manifest)")
    manifest = unpack.header.manifest
    if unpack.size != manifest.size or unpack.hash.hexdigest() != manifest.sha256:
        raise AgeRefused(
            f"{src}: the decrypted ledger does not match the SHA-256 and size in its manifest "
            f"({unpack.size} bytes, {manifest.size} expected)"
        )
    out.flush()
    return unpack.header
