"""Staff accounts: roles, password hashes (werkzeug.security), login throttling.

Writes are functions of a ledger ``Tx`` (run them through the writer: ``ledger.transact(...)``); reads take a
plain read-only ``sqlite3.Connection``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from werkzeug.security import check_password_hash, generate_password_hash

from hub.ledger.models import InvalidArgument, now_ms
from hub.ledger.postings import Tx

ROLES = ("viewer", "clerk", "manager", "admin")  # each role can do everything the ones before it can
THROTTLE_FAILURES = 5
THROTTLE_WINDOW_MS = 15 * 60 * 1000
MIN_PASSWORD = 8


def role_rank(role: str) -> int:
    return ROLES.index(role)


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str
    password_hash: str
    disabled: bool


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidArgument(f"a password needs at least {MIN_PASSWORD} characters")
    return generate_password_hash(password)


def check_username(username: str) -> str:
    if not 1 <= len(username) <= 64 or any(not "!" <= c <= "~" for c in username):
        raise InvalidArgument("a username is 1..64 printable ASCII characters without spaces")
    return username


async def add_user(tx: Tx, username: str, password_hash: str, role: str, *, actor: str) -> None:
    if role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
    check_username(username)
    if list(await tx.conn.execute_fetchall("SELECT 1 FROM users WHERE username = ?", (username,))):
        raise InvalidArgument(f"user {username!r} exists")
    await tx.conn.execute(
        "INSERT INTO users (username, password_hash, role, created_ms) VALUES (?, ?, ?, ?)",
        (username, password_hash, role, tx.now_ms),
    )
    await tx.audit(actor, "add_user", {"username": username, "role": role})


async def record_login(tx: Tx, username: str, ip: str, ok: bool) -> None:
    await tx.conn.execute(
        "INSERT INTO login_attempts (ts_ms, username, ip, ok) VALUES (?, ?, ?, ?)",
        (tx.now_ms, username[:64], ip[:64], int(ok)),
    )
    if ok:
        await tx.audit(f"web:{username}", "login", {"ip": ip})


def get_user(conn: sqlite3.Connection, username: str) -> User | None:
    row = conn.execute(
        "SELECT username, role, password_hash, disabled_ms FROM users WHERE username = ?", (username,)
    ).fetchone()
    return None if row is None else User(row[0], row[1], row[2], row[3] is not None)


def verify(user: User | None, password: str) -> bool:
    if user is None or user.disabled:
        return False
    return check_password_hash(user.password_hash, password)


def recent_failures(conn: sqlite3.Connection, username: str, ip: str, at_ms: int | None = None) -> int:
    """Failed logins of (username, ip) in the window, not counting those before the last success."""
    since = (now_ms() if at_ms is None else at_ms) - THROTTLE_WINDOW_MS
    row = conn.execute(
        "SELECT count(*) FROM login_attempts WHERE username = ? AND ip = ? AND ok = 0 AND ts_ms > ? AND ts_ms >"
        " coalesce((SELECT max(ts_ms) FROM login_attempts WHERE username = ? AND ip = ? AND ok = 1), 0)",
        (username, ip, since, username, ip),
    ).fetchone()
    return int(row[0])
