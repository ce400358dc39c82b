"""Staff accounts: roles, password hashes (werkzeug.security), login throttling, session epochs.

A role change, disabling and a password reset each bump the user's ``session_epoch`` in their own (audited)
transaction, which signs out every session of theirs (``access._enforce`` compares it); logout does the same
(``end_sessions``). Sign-in attempts older than ``LOGIN_ATTEMPTS_RETENTION_MS`` are pruned
(``prune_login_attempts``, run through the writer every ``PRUNE_INTERVAL_S`` by the web server, ``server.py``).

Writes are functions of a ledger ``Tx`` (run them through the writer: ``ledger.transact(...)``); reads take a
plain read-only ``sqlite3.Connection``.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

from werkzeug.security import check_password_hash, generate_password_hash

from hub.ledger.models import InvalidArgument, now_ms
from hub.ledger.postings import Tx

ROLES = ("viewer", "clerk", "manager", "admin")  # each role can do everything the ones before it can
THROTTLE_FAILURES = 5
THROTTLE_WINDOW_MS = 15 * 60 * 1000
LOGIN_ATTEMPTS_RETENTION_MS = 30 * 24 * 3600 * 1000
PRUNE_INTERVAL_S = 600.0
MIN_PASSWORD = 8
MAX_USERNAME = 60
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,59}")


def role_rank(role: str) -> int:
    return ROLES.index(role)


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str
    password_hash: str
    disabled: bool
    session_epoch: int = 0  # a session is valid only while it carries this (see end_sessions)


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidArgument(f"a password needs at least {MIN_PASSWORD} characters")
    return generate_password_hash(password)


def check_username(username: str) -> str:
    """A new username: letters, digits, ``.``, ``_``, ``@`` and ``-``, starting with a letter or digit, at most 60
    (not the column's 64: the user's actions are recorded as actor ``web:<username>``, at most 64 characters). No
    ``/``: a username is one segment of ``/users/<username>`` (``x/../manager`` would act on ``manager``)."""
    if not isinstance(username, str) or USERNAME_RE.fullmatch(username) is None:
        raise InvalidArgument(
            f"a username is 1..{MAX_USERNAME} characters: letters, digits, '.', '_', '@' and '-', starting with a"
            " letter or digit"
        )
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


async def end_sessions(tx: Tx, username: str, *, actor: str, why: str) -> None:
    """Sign ``username`` out everywhere: bump the epoch every session of theirs carries (audited ``end_sessions``).
    Logout does it; so do a password reset, a role change and disabling (in their own transaction)."""
    await tx.conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE username = ?", (username,))
    await tx.audit(actor, "end_sessions", {"username": username, "why": why})


def get_user(conn: sqlite3.Connection, username: str) -> User | None:
    row = conn.execute(
        "SELECT username, role, password_hash, disabled_ms, session_epoch FROM users WHERE username = ?", (username,)
    ).fetchone()
    return None if row is None else User(row[0], row[1], row[2], row[3] is not None, int(row[4]))


_dummy_hash: str | None = None


def _dummy() -> str:
    """A hash of a random password made like the real ones (scrypt), to verify against when there is no user."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = generate_password_hash(secrets.token_urlsafe(16))
    return _dummy_hash


def verify(user: User | None, password: str) -> bool:
    """Check ``password``. A missing or disabled user costs the same hash computation (checked against a dummy
    hash of the same scheme), so the time taken does not tell which usernames exist."""
    if user is None or user.disabled:
        check_password_hash(_dummy(), password)
        return False
    return check_password_hash(user.password_hash, password)


class UnknownUserFailures:
    """Failed sign-ins for usernames that do not exist, counted in memory (never written: anonymous requests must
    not be able to queue ledger writes), per (username, ip) in the throttling window; at most ``max_keys`` keys,
    the least recently used dropped first."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._fails: OrderedDict[tuple[str, str], deque[int]] = OrderedDict()

    def _window(self, key: tuple[str, str], at_ms: int) -> deque[int] | None:
        times = self._fails.get(key)
        if times is not None:
            while times and times[0] <= at_ms - THROTTLE_WINDOW_MS:
                times.popleft()
        return times

    def count(self, username: str, ip: str, at_ms: int | None = None) -> int:
        with self._lock:
            times = self._window((username, ip), now_ms() if at_ms is None else at_ms)
            return 0 if times is None else len(times)

    def record(self, username: str, ip: str, at_ms: int | None = None) -> None:
        at = now_ms() if at_ms is None else at_ms
        key = (username, ip)
        with self._lock:
            times = self._window(key, at)
            if times is None:
                times = self._fails[key] = deque(maxlen=THROTTLE_FAILURES * 4)
            times.append(at)
            self._fails.move_to_end(key)
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)


def recent_failures(conn: sqlite3.Connection, username: str, ip: str, at_ms: int | None = None) -> int:
    """Failed logins of (username, ip) in the window, not counting those before the last success."""
    since = (now_ms() if at_ms is None else at_ms) - THROTTLE_WINDOW_MS
    row = conn.execute(
        "SELECT count(*) FROM login_attempts WHERE username = ? AND ip = ? AND ok = 0 AND ts_ms > ? AND ts_ms >"
        " coalesce((SELECT max(ts_ms) FROM login_attempts WHERE username = ? AND ip = ? AND ok = 1), 0)",
        (username, ip, since, username, ip),
    ).fetchone()
    return int(row[0])


async def prune_login_attempts(tx: Tx, before_ms: int | None = None) -> int:
    """Delete sign-in attempts older than ``before_ms`` (default: ``LOGIN_ATTEMPTS_RETENTION_MS`` ago), keeping each
    user's last successful one (the users page's "last sign-in"); older failures no longer count for throttling.
    Returns the rows deleted."""
    cutoff = tx.now_ms - LOGIN_ATTEMPTS_RETENTION_MS if before_ms is None else before_ms
    cur = await tx.conn.execute(
        "DELETE FROM login_attempts WHERE ts_ms < ? AND NOT (ok = 1 AND ts_ms = (SELECT max(b.ts_ms) FROM"
        " login_attempts AS b WHERE b.username = login_attempts.username AND b.ok = 1))",
        (cutoff,),
    )
    deleted = cur.rowcount
    await cur.close()
    return max(deleted, 0)


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    role: str
    created_ms: int
    disabled_ms: int | None
    last_login_ms: int | None


def list_users(conn: sqlite3.Connection) -> list[UserRow]:
    return [
        UserRow(*r)
        for r in conn.execute(
            "SELECT u.username, u.role, u.created_ms, u.disabled_ms,"
            " (SELECT max(a.ts_ms) FROM login_attempts AS a WHERE a.username = u.username AND a.ok = 1)"
            " FROM users AS u ORDER BY u.username"
        )
    ]


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
    await tx.conn.execute(
        "UPDATE users SET role = ?, session_epoch = session_epoch + 1 WHERE username = ?", (role, username)
    )
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
        "UPDATE users SET disabled_ms = ?, session_epoch = session_epoch + 1 WHERE username = ?",
        (tx.now_ms if disabled else None, username),
    )
    await tx.audit(actor, "disable_user" if disabled else "enable_user", {"username": username})


async def set_password(tx: Tx, username: str, password_hash: str, *, actor: str) -> None:
    """Replace a user's password with ``password_hash`` (from ``hash_password``: never the plaintext)."""
    if not password_hash.startswith(("scrypt:", "pbkdf2:")) or "$" not in password_hash:
        raise InvalidArgument("a password is stored only as a hash (hash_password)")
    await _account(tx, username)
    await tx.conn.execute(
        "UPDATE users SET password_hash = ?, session_epoch = session_epoch + 1 WHERE username = ?",
        (password_hash, username),
    )
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
