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
MAX_USERNAME = 60


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
    # 60, not the column's 64: the user's actions are recorded as actor "web:<username>" (at most 64 characters)
    if not 1 <= len(username) <= MAX_USERNAME or any(not "!" <= c <= "~" for c in username):
        raise InvalidArgument(f"a username is 1..{MAX_USERNAME} printable ASCII characters without spaces")
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


# ------------------------------------------------------------------------------------- administration (writes)

ACTIONS = ("disable", "enable", "reset_password")  # what POST /users/<username> can do besides changing the role


class UnknownUser(InvalidArgument):
    pass


async def _account(tx: Tx, username: str) -> tuple[str, bool]:
    rows = list(await tx.conn.execute_fetchall("SELECT role, disabled_ms FROM users WHERE username = ?", (username,)))
    if not rows:
        raise UnknownUser(f"no user {username!r}")
    return str(rows[0][0]), rows[0][1] is not None


async def _other_enabled_admins(tx: Tx, username: str) -> int:
    rows = list(
        await tx.conn.execute_fetchall(
            "SELECT count(*) FROM users WHERE role = 'admin' AND disabled_ms IS NULL AND username != ?", (username,)
        )
    )
    return int(rows[0][0])


async def _keep_an_admin(tx: Tx, username: str, doing: str) -> None:
    if not await _other_enabled_admins(tx, username):
        raise InvalidArgument(f"cannot {doing} {username}: the last enabled admin (make another user admin first)")


async def set_role(tx: Tx, username: str, role: str, *, actor: str, by: str | None = None) -> None:
    """Change a user's role. ``by`` (the acting user, if any) may not demote themselves, and the last enabled
    admin is never demoted."""
    if role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
    old, disabled = await _account(tx, username)
    if old == role:
        raise InvalidArgument(f"{username} is already {role}")
    if old == "admin":
        if by == username:
            raise InvalidArgument("you cannot demote yourself: ask another admin")
        if not disabled:
            await _keep_an_admin(tx, username, "demote")
    await tx.conn.execute("UPDATE users SET role = ? WHERE username = ?", (role, username))
    await tx.audit(actor, "set_user_role", {"username": username, "from": old, "role": role})


async def set_disabled(tx: Tx, username: str, disabled: bool, *, actor: str, by: str | None = None) -> None:
    """Disable (signed out on their next request, cannot sign in) or enable a user. ``by`` may not disable
    themselves, and the last enabled admin is never disabled."""
    role, is_disabled = await _account(tx, username)
    if disabled == is_disabled:
        raise InvalidArgument(f"{username} is already {'disabled' if disabled else 'enabled'}")
    if disabled:
        if by == username:
            raise InvalidArgument("you cannot disable yourself: ask another admin")
        if role == "admin":
            await _keep_an_admin(tx, username, "disable")
    await tx.conn.execute(
        "UPDATE users SET disabled_ms = ? WHERE username = ?", (tx.now_ms if disabled else None, username)
    )
    await tx.audit(actor, "disable_user" if disabled else "enable_user", {"username": username})


async def set_password(tx: Tx, username: str, password_hash: str, *, actor: str) -> None:
    """Replace a user's password with ``password_hash`` (from ``hash_password``: never the plaintext)."""
    if not password_hash.startswith(("scrypt:", "pbkdf2:")) or "$" not in password_hash:
        raise InvalidArgument("a password is stored only as a hash (hash_password)")
    await _account(tx, username)
    await tx.conn.execute("UPDATE users SET password_hash = ? WHERE username = ?", (password_hash, username))
    await tx.audit(actor, "reset_password", {"username": username})


async def update_user(
    tx: Tx,
    username: str,
    *,
    actor: str,
    by: str | None,
    role: str | None = None,
    action: str | None = None,
    password_hash: str | None = None,
) -> list[str]:
    """One admin change of a user in one transaction: the role and/or an action (``ACTIONS``); returns what
    changed ("role clerk", "disabled", ...). A role equal to the current one is left alone when an action is given."""
    current, _ = await _account(tx, username)
    if action is not None and action not in ACTIONS:
        raise InvalidArgument(f"action must be one of {', '.join(ACTIONS)}")
    if role is None and action is None:
        raise InvalidArgument("nothing to change: give a role or an action")
    done: list[str] = []
    if role is not None and (role != current or action is None):
        await set_role(tx, username, role, actor=actor, by=by)
        done.append(f"role {role}")
    if action in ("disable", "enable"):
        await set_disabled(tx, username, action == "disable", actor=actor, by=by)
        done.append(f"{action}d")
    elif action == "reset_password":
        if password_hash is None:
            raise InvalidArgument("a password reset needs the new password")
        await set_password(tx, username, password_hash, actor=actor)
        done.append("password reset")
    return done
