"""Who made an encrypted backup: the hub signs each backup's manifest with an Ed25519 key it holds; restore checks
the signature against keys the operator trusts.

age (``hub.ledger.agefile``) encrypts to public keys and authenticates nothing about the sender: anyone with a
recipient key (in ``hub.toml``, not secret) or write access to the share can make a file that decrypts, and a
ledger carries password and API token hashes. So the hub signs what restore trusts:

* The signed message is ``b"smartshelf-backup 2 manifest\\n"`` followed by the manifest line exactly as it travels
  (hub id, time taken, size and SHA-256 of the SQLite file, schema version, movements, incarnation): the bytes are
  checked before they are parsed, so no field can change, be added or dropped without breaking the signature, and
  the payload is bound to it by its hash. The signature travels encrypted, as the line after the manifest:
  ``{"sig": "<base64 of 64 bytes>", "signer": "ed25519:..."}``.
* The signing key is the hub's own (``<database>.backup-signing.key`` by default, ``[backup] signing_key``), made on
  first need: PKCS#8 PEM behind two comment lines (``# public key: ed25519:...``), created 0600 through
  ``hub.private_files`` and moved into place with ``link`` (never over an existing key; two processes making one
  at once both end up with the same). A key file other users can open, or one owned by another user (not root),
  is refused: whoever can read it can sign backups this hub would restore.
* A public key is written ``ed25519:`` + the 32 bytes in unpadded base64url (43 characters); its fingerprint is
  the first 8 bytes of its SHA-256 in hex (``1a2b-3c4d-5e6f-7a8b``), for people to compare.
* Trust is a set of public keys (``Trusted``), each with where it came from (``--signer``, ``[backup]
  trusted_signers``, this hub's own key file). Old keys stay trusted as long as they are listed: a new key does not
  make older backups unrestorable. A trusted key vouches for whatever hub id it signs: list only this hub's keys.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hub.ledger.models import LedgerError
from hub.private_files import PrivateFileUnreadable, make_private_dirs, open_private, read_private

SIGNER_PREFIX = "ed25519:"
SIGNED_PREFIX = b"smartshelf-backup 2 manifest\n"
SIGNING_KEY_SUFFIX = ".backup-signing.key"
KEY_HOLDS = "the hub's backup signing key (whoever reads it can sign backups this hub would restore)"
MAX_KEY_FILE = 1 << 16
MAX_SIGNATURE_LINE = 512


class SignerRefused(LedgerError):
    """A signing key, a signer key or a backup's signature was refused; ``str()`` is one line saying why."""


# ------------------------------------------------------------------------------------------ public keys


def public_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return SIGNER_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def fingerprint(public: str) -> str:
    """``1a2b-3c4d-5e6f-7a8b``: the first 8 bytes of the SHA-256 of the key's 32 bytes (``public``: ``ed25519:...``)."""
    digest = hashlib.sha256(_raw(public)).hexdigest()[:16]
    return "-".join(digest[i : i + 4] for i in range(0, 16, 4))


def _raw(public: str) -> bytes:
    body = public.removeprefix(SIGNER_PREFIX)
    if len(body) != 43 or not public.startswith(SIGNER_PREFIX):
        raise ValueError("length")
    raw = base64.urlsafe_b64decode(body + "=")
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != body:  # one spelling per key
        raise ValueError("not canonical")
    return raw


def signer_problem(text: object) -> str | None:
    """What is wrong with ``text`` as a signer's public key (``ed25519:`` + 43 base64url characters), or None."""
    if not isinstance(text, str) or not text.startswith(SIGNER_PREFIX):
        return f"must be a backup signer key (ed25519:..., smartshelf ledger backup-key --signer), not {text!r}"[:160]
    try:
        Ed25519PublicKey.from_public_bytes(_raw(text))
    except (ValueError, binascii.Error):
        shown = text if len(text) <= 24 else text[:20] + "..."
        return f"is not a valid backup signer key (ed25519: and 43 base64url characters): {shown}"
    return None


def parse_public(text: str) -> Ed25519PublicKey:
    if (problem := signer_problem(text)) is not None:
        raise SignerRefused(problem)
    return Ed25519PublicKey.from_public_bytes(_raw(text))


def read_signers_file(path: Path | str) -> list[str]:
    """The signer keys in a text file, one a line (``#`` comments and blank lines skipped); ``SignerRefused`` for
    any other line or a file with none."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SignerRefused(f"{path}: cannot read the signer keys: {exc.strerror or exc}") from None
    keys = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if (problem := signer_problem(line)) is not None:
            raise SignerRefused(f"{path}:{n}: {problem}")
        keys.append(line)
    if not keys:
        raise SignerRefused(f"{path}: holds no backup signer key (ed25519:...)")
    return keys


# ------------------------------------------------------------------------------------------ the hub's key


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey = field(repr=False)
    path: Path

    @property
    def public(self) -> str:
        return public_text(self.private.public_key())

    def sign(self, manifest_line: bytes) -> Signature:
        return Signature(self.public, self.private.sign(SIGNED_PREFIX + manifest_line))


def default_signing_key(db: Path | str) -> Path:
    db = Path(db)
    return db.with_name(db.name + SIGNING_KEY_SUFFIX)


def read_signing_key(path: Path | str) -> SigningKey:
    """The hub's signing key at ``path``; ``SignerRefused`` (one line) when it is missing, not private (0600, this
    user's or root's), or not an Ed25519 private key."""
    path = Path(path)
    try:
        data = read_private(path, KEY_HOLDS, "signing key", MAX_KEY_FILE, owner_only=True)
    except PrivateFileUnreadable as exc:
        raise SignerRefused(str(exc)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignerRefused(f"{path}: not a backup signing key (an unencrypted Ed25519 private key, PEM)")
    return SigningKey(key, path)


def signing_key(path: Path | str) -> tuple[SigningKey, bool]:
    """The hub's signing key at ``path``, made (0600) if there is none: (key, made now?)."""
    path = Path(path)
    if not os.path.lexists(path):
        with contextlib.suppress(FileExistsError):  # another process made one meanwhile: theirs is read below
            _generate(path)
            return read_signing_key(path), True
    return read_signing_key(path), False


def _generate(path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# smartshelf backup signing key, created: {created}\n# public key: {public_text(key.public_key())}\n{pem}"
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        make_private_dirs(path.parent)
        with os.fdopen(open_private(tmp), "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # FileExistsError: never over a key that is there
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the key survives a power cut: backups already signed with it name it
        finally:
            os.close(fd)
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        raise SignerRefused(f"{path}: cannot create the signing key: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ------------------------------------------------------------------------------------------ signatures and trust


@dataclass(frozen=True)
class Signature:
    signer: str  # ed25519:...
    sig: bytes

    def line(self) -> bytes:
        sig = base64.b64encode(self.sig).decode()
        return json.dumps({"sig": sig, "signer": self.signer}, sort_keys=True).encode()

    @classmethod
    def parse(cls, line: bytes) -> Signature:
        """``ValueError`` for anything but a signature line."""
        data = json.loads(line)
        if not isinstance(data, dict) or not isinstance(data.get("sig"), str):
            raise ValueError("no sig")
        if signer_problem(data.get("signer")) is not None:
            raise ValueError("bad signer")
        sig = base64.b64decode(data["sig"], validate=True)
        if len(sig) != 64:
            raise ValueError("bad sig length")
        return cls(data["signer"], sig)


@dataclass(frozen=True)
class Verdict:
    """How a backup's signature was judged: ``signer`` None for an unsigned one (accepted only when told)."""

    signer: str | None
    trusted_by: str | None  # where the key was trusted from; None: accepted unsigned, by the override

    def describe(self) -> str:
        if self.signer is None:
            return "NOT SIGNED: accepted unverified (--insecure-accept-unsigned)"
        return f"signed by backup signer key {fingerprint(self.signer)} ({self.trusted_by})"

    def record(self) -> dict[str, str | None]:
        return {"signer": self.signer, "trusted_by": self.trusted_by}


@dataclass
class Trusted:
    """The signer keys a restore accepts, each with where it was trusted from (the first place named)."""

    keys: dict[str, str] = field(default_factory=dict)

    def add(self, keys: Iterable[str], source: str) -> None:
        for key in keys:
            parse_public(key)
            self.keys.setdefault(key, source)

    def shown(self) -> str:
        return ", ".join(f"{fingerprint(k)} ({src})" for k, src in self.keys.items()) or "none"

    def verify(self, manifest_line: bytes, signature: Signature | None, *, allow_unsigned: bool = False) -> Verdict:
        """Judge a backup's signature; ``SignerRefused`` (one line) unless it is good and by a trusted key (or it is
        unsigned and ``allow_unsigned``). A signature that does not match is refused whatever was allowed."""
        if signature is None:
            if allow_unsigned:
                return Verdict(None, None)
            raise SignerRefused(
                "the backup is not signed (made before backups were signed, or not by a hub): anyone with the"
                " age public key could have made it (--insecure-accept-unsigned to restore it all the same)"
            )
        try:
            parse_public(signature.signer).verify(signature.sig, SIGNED_PREFIX + manifest_line)
        except InvalidSignature:
            raise SignerRefused(
                f"its signature (key {fingerprint(signature.signer)}) does not match its manifest:"
                " the backup was altered after it was signed"
            ) from None
        source = self.keys.get(signature.signer)
        if source is None:
            hint = (
                "give --signer with the key recorded for this hub (smartshelf ledger backup-key --signer printed it)"
                if not self.keys
                else f"trusted: {self.shown()}"
            )
            raise SignerRefused(
                f"signed by backup signer key {fingerprint(signature.signer)} ({signature.signer}),"
                f" which is not trusted: {hint}"
            )
        return Verdict(signature.signer, source)
