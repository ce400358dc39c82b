"""Clients of the HTTP API (POS, WMS): names, scopes and bearer tokens.

A token is ``ssk_`` + 256 random bits (``secrets.token_urlsafe(32)``), shown once when the client is added; the
ledger keeps only its SHA-256 (``api_clients.token_sha256``, migration 5). A slow password hash buys nothing for a
random secret of that size, and looking the hash up is not a timing oracle for the token.

Writes are functions of a ledger ``Tx`` (run them through the writer: ``ledger.transact(...)``), each with an audit
entry; reads take a plain read-only ``sqlite3.Connection``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass

from hub.ledger.models import InvalidArgument
from hub.ledger.postings import Tx

TOKEN_PREFIX = "ssk_"
# What a client may do. "read": GET stock, lanes, alerts, tags; "epcs": import the store's EPC -> SKU table; the
# others: POST that kind of business transaction.
SCOPES: tuple[str, ...] = ("read", "sales", "receipts", "returns", "picks", "counts", "epcs")


@dataclass(frozen=True, slots=True)
class ApiClient:
    name: str
    scopes: frozenset[str]
    created_ms: int
    created_by: str
    disabled_ms: int | None

    @property
    def disabled(self) -> bool:
        return self.disabled_ms is not None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


MAX_NAME = 60  # the actor of its writes is api:<name>, at most 64 characters


def check_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME or any(not "!" <= c <= "~" for c in name):
        raise InvalidArgument(f"an API client name is 1..{MAX_NAME} printable ASCII characters without spaces")
    return name


def parse_scopes(text: str, scopes: tuple[str, ...] = SCOPES) -> tuple[str, ...]:
    """``read,sales`` (commas and/or spaces) -> the scopes in the canonical order of ``scopes`` (the hub's API
    scopes; the central tier passes its own); InvalidArgument for unknown ones."""
    given = [s for s in text.replace(",", " ").split() if s]
    if not given:
        raise InvalidArgument(f"give at least one scope ({', '.join(scopes)})")
    unknown = sorted(set(given) - set(scopes))
    if unknown:
        raise InvalidArgument(f"unknown scope(s) {', '.join(unknown)}: use {', '.join(scopes)}")
    return tuple(s for s in scopes if s in given)


async def add_client(tx: Tx, name: str, token_hash: str, scopes: tuple[str, ...], *, actor: str) -> None:
    check_name(name)
    if len(token_hash) != 64 or any(c not in "0123456789abcdef" for c in token_hash):
        raise InvalidArgument("token_hash must be a SHA-256 hex digest")
    canonical = parse_scopes(" ".join(scopes))
    if list(await tx.conn.execute_fetchall("SELECT 1 FROM api_clients WHERE name = ?", (name,))):
        raise InvalidArgument(f"API client {name!r} exists")
    await tx.conn.execute(
        "INSERT INTO api_clients (name, token_sha256, scopes, created_ms, created_by) VALUES (?, ?, ?, ?, ?)",
        (name, token_hash, " ".join(canonical), tx.now_ms, actor),
    )
    await tx.audit(actor, "add_api_client", {"name": name, "scopes": list(canonical)})


async def disable_client(tx: Tx, name: str, *, actor: str) -> None:
    rows = list(await tx.conn.execute_fetchall("SELECT disabled_ms FROM api_clients WHERE name = ?", (name,)))
    if not rows:
        raise InvalidArgument(f"no API client {name!r}")
    if rows[0][0] is not None:
        raise InvalidArgument(f"API client {name!r} is already disabled")
    await tx.conn.execute("UPDATE api_clients SET disabled_ms = ? WHERE name = ?", (tx.now_ms, name))
    await tx.audit(actor, "disable_api_client", {"name": name})


_COLUMNS = "name, scopes, created_ms, created_by, disabled_ms"


def _client(row: tuple[str, str, int, str, int | None]) -> ApiClient:
    return ApiClient(row[0], frozenset(row[1].split()), row[2], row[3], row[4])


def list_clients(conn: sqlite3.Connection) -> list[ApiClient]:
    return [_client(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM api_clients ORDER BY name")]


def client_for_token(conn: sqlite3.Connection, token: str) -> ApiClient | None:
    """The client holding ``token`` (disabled ones too: the caller refuses them), or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        return None
    digest = token_sha256(token)
    row = conn.execute(f"SELECT {_COLUMNS}, token_sha256 FROM api_clients WHERE token_sha256 = ?", (digest,)).fetchone()
    if row is None or not hmac.compare_digest(row[5], digest):
        return None
    return _client(row[:5])
