"""Who uses the central page and API: users with a role and (region managers) their regions, API clients with
scopes and a store scope, sign-in attempts, the session key, the audit of every change. Functions of an asyncpg
connection (the page runs them through ``pg.Database``, the CLI on a connection of its own).

What the hub's page already does is reused, not copied: password hashing and checking (werkzeug's scrypt,
``hub.web.accounts.users.hash_password`` / ``verify``, a dummy hash for unknown users), username and client-name
rules, tokens (256 random bits, only the SHA-256 kept: ``hub.web.accounts.clients``), the throttling window.

Roles (``schema.ROLES``), lowest first; each may see every page the roles before it may:

* ``viewer``: every store's stock, open alerts, reorders and last contact;
* ``region_manager``: the same plus shrink, **only for the stores of their regions** (``web_user_regions``; a
  region manager without a region sees no store at all);
* ``operations``: everything of every store, read only;
* ``admin``: everything, and manages users, API clients, regions and stores.

A ``Scope`` is the stores one request may see: every store (``regions is None``: viewer, operations, admin, an API
client made with ``all_stores``) or the stores of the given regions; every query of the page and the API takes one
(``queries.py``). Every change bumps the user's ``session_epoch`` where it changes what their sessions may see.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.central.web.schema import ROLES, SCOPES
from hub.ledger.models import InvalidArgument, now_ms
from hub.web.accounts import clients
from hub.web.accounts.clients import check_name, token_sha256
from hub.web.accounts.users import THROTTLE_WINDOW_MS, User, check_username

if TYPE_CHECKING:
    import asyncpg

TOKEN_PREFIX = "ssc_"  # smartshelf central (the hub's are ssk_): a token says which API it is for
REGIONAL = "region_manager"  # the role whose stores are its regions'
# pg_advisory_xact_lock key of user changes ("SSCU"): two admins demoting each other at once still leave one admin
ADMIN_CHANGES_LOCK = 0x53534355


@dataclass(frozen=True, slots=True)
class Scope:
    """The stores a request may see: every one (``regions is None``) or those of ``regions`` (maybe none)."""

    regions: tuple[str, ...] | None

    @property
    def every_store(self) -> bool:
        return self.regions is None

    def sql_regions(self) -> list[str] | None:
        """The query parameter: NULL for every store, else the regions (an empty array matches no store)."""
        return None if self.regions is None else list(self.regions)


EVERY_STORE = Scope(None)


@dataclass(frozen=True, slots=True)
class CentralUser(User):
    """A signed-in user (``hub.web.accounts.users.User``, so the hub's access checks take it) and their regions."""

    regions: tuple[str, ...] = ()

    @property
    def scope(self) -> Scope:
        return Scope(self.regions) if self.role == REGIONAL else EVERY_STORE


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


async def _audit(
    conn: asyncpg.Connection, actor: str, action: str, details: dict[str, Any], origin: str | None
) -> None:
    await conn.execute(
        "INSERT INTO web_audit (ts_ms, actor, origin, action, details) VALUES ($1, $2, $3, $4, $5::jsonb)",
        now_ms(),
        actor[:128],
        origin,
        action,
        json.dumps(details, sort_keys=True),
    )


async def _known_regions(conn: asyncpg.Connection, regions: Sequence[str]) -> tuple[str, ...]:
    wanted = sorted(set(regions))
    if any(not r.isprintable() or len(r) > 64 for r in wanted):
        raise InvalidArgument("a region is 1..64 printable characters")
    found = {r["region"] for r in await conn.fetch("SELECT region FROM regions WHERE region = ANY($1)", wanted)}
    missing = [r for r in wanted if r not in found]
    if missing:
        raise InvalidArgument(
            f"no region {', '.join(map(repr, missing))} (add it first: smartshelf central region add)"
        )
    return tuple(wanted)


# ------------------------------------------------------------------------------------------------------ users

_USER = """
SELECT u.username, u.role, u.password_hash, u.disabled_ms IS NOT NULL AS disabled, u.session_epoch,
    coalesce(array_agg(r.region ORDER BY r.region) FILTER (WHERE r.region IS NOT NULL), '{}') AS regions
FROM web_users u LEFT JOIN web_user_regions r USING (username)
WHERE u.username = $1 GROUP BY u.username
"""


async def get_user(conn: asyncpg.Connection, username: str) -> CentralUser | None:
    row = await conn.fetchrow(_USER, username)
    if row is None:
        return None
    return CentralUser(
        row["username"], row["role"], row["password_hash"], row["disabled"], row["session_epoch"], tuple(row["regions"])
    )


async def add_user(
    conn: asyncpg.Connection,
    username: str,
    password_hash: str,
    role: str,
    regions: Sequence[str] = (),
    *,
    actor: str,
    origin: str | None = None,
) -> None:
    """A new user; ``regions`` only (and at least one) for a region manager."""
    check_username(username)
    check_role(role)
    async with conn.transaction():
        regions = await _regions_for(conn, role, regions)
        added = await conn.execute(
            "INSERT INTO web_users (username, password_hash, role, created_ms, created_by) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (username) DO NOTHING",
            username,
            password_hash,
            role,
            now_ms(),
            actor[:128],
        )
        if added.endswith(" 0"):
            raise InvalidArgument(f"user {username!r} exists")
        await conn.execute(
            "INSERT INTO web_user_regions (username, region) SELECT $1, unnest($2::text[])", username, list(regions)
        )
        await _audit(conn, actor, "add_user", {"username": username, "role": role, "regions": list(regions)}, origin)


def check_regions(role: str, regions: Sequence[str]) -> None:
    """A region manager has at least one region, every other role none (it sees every store)."""
    if role != REGIONAL and regions:
        raise InvalidArgument(f"only a region manager has regions; a {role} sees every store")
    if role == REGIONAL and not regions:
        raise InvalidArgument("a region manager needs at least one region (--region)")


async def _regions_for(conn: asyncpg.Connection, role: str, regions: Sequence[str]) -> tuple[str, ...]:
    check_regions(role, regions)
    return await _known_regions(conn, regions) if regions else ()


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    role: str
    regions: tuple[str, ...]
    created_ms: int
    created_by: str
    disabled_ms: int | None
    last_login_ms: int | None


async def list_users(conn: asyncpg.Connection) -> list[UserRow]:
    rows = await conn.fetch(
        "SELECT u.username, u.role, coalesce((SELECT array_agg(r.region ORDER BY r.region) FROM web_user_regions r"
        "  WHERE r.username = u.username), '{}') AS regions, u.created_ms, u.created_by, u.disabled_ms,"
        " (SELECT max(a.ts_ms) FROM web_login_attempts a WHERE a.username = u.username AND a.ok) AS last_login_ms"
        " FROM web_users u ORDER BY u.username"
    )
    return [UserRow(r[0], r[1], tuple(r[2]), r[3], r[4], r[5], r[6]) for r in rows]


USER_ACTIONS = ("disable", "enable", "reset_password")


async def update_user(
    conn: asyncpg.Connection,
    username: str,
    *,
    actor: str,
    by: str | None = None,
    role: str | None = None,
    regions: Sequence[str] | None = None,
    action: str | None = None,
    password_hash: str | None = None,
    origin: str | None = None,
) -> list[str]:
    """One change of a user in one transaction: role and/or regions and/or an action (``USER_ACTIONS``); every
    session of theirs ends. ``by`` (the acting user) may not demote or disable themselves; the last enabled admin is
    never demoted or disabled. Returns what changed."""
    if role is None and regions is None and action is None:
        raise InvalidArgument("nothing to change: give a role, regions or an action")
    if action is not None and action not in USER_ACTIONS:
        raise InvalidArgument(f"action must be one of {', '.join(USER_ACTIONS)}")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADMIN_CHANGES_LOCK)  # one user change at a time
        row = await conn.fetchrow("SELECT role, disabled_ms FROM web_users WHERE username = $1 FOR UPDATE", username)
        if row is None:
            raise InvalidArgument(f"no user {username!r}")
        old_role, disabled = row["role"], row["disabled_ms"] is not None
        new_role = check_role(role) if role is not None else old_role
        done: list[str] = []
        losing_admin = old_role == "admin" and (new_role != "admin" or action == "disable")
        if losing_admin and by == username:
            raise InvalidArgument("you cannot demote or disable yourself: ask another admin")
        if losing_admin and not disabled:
            others = await conn.fetchval(
                "SELECT count(*) FROM web_users WHERE role = 'admin' AND disabled_ms IS NULL AND username <> $1",
                username,
            )
            if not others:
                raise InvalidArgument(f"{username} is the last enabled admin (make another user admin first)")
        if role is not None and new_role != old_role:
            await conn.execute("UPDATE web_users SET role = $2 WHERE username = $1", username, new_role)
            done.append(f"role {new_role}")
        if regions is not None or (role is not None and new_role != old_role):
            current = tuple(
                r["region"]
                for r in await conn.fetch("SELECT region FROM web_user_regions WHERE username = $1", username)
            )
            given = regions if regions is not None else (current if new_role == REGIONAL else ())
            wanted = await _regions_for(conn, new_role, given)
            if sorted(wanted) != sorted(current):
                await conn.execute("DELETE FROM web_user_regions WHERE username = $1", username)
                await conn.execute(
                    "INSERT INTO web_user_regions (username, region) SELECT $1, unnest($2::text[])",
                    username,
                    list(wanted),
                )
                done.append(f"regions {', '.join(wanted) or 'none'}")
        if action in ("disable", "enable"):
            if (action == "disable") == disabled:
                raise InvalidArgument(f"{username} is already {action}d")
            await conn.execute(
                "UPDATE web_users SET disabled_ms = $2 WHERE username = $1",
                username,
                now_ms() if action == "disable" else None,
            )
            done.append(f"{action}d")
        elif action == "reset_password":
            if password_hash is None or not password_hash.startswith(("scrypt:", "pbkdf2:")):
                raise InvalidArgument("a password reset needs the new password (stored only as a hash)")
            await conn.execute("UPDATE web_users SET password_hash = $2 WHERE username = $1", username, password_hash)
            done.append("password reset")
        if not done:
            raise InvalidArgument(f"nothing changed: {username} is already like that")
        await conn.execute("UPDATE web_users SET session_epoch = session_epoch + 1 WHERE username = $1", username)
        await _audit(conn, actor, "update_user", {"username": username, "changes": done}, origin)
    return done


async def end_sessions(conn: asyncpg.Connection, username: str, *, actor: str, why: str) -> None:
    """Sign ``username`` out everywhere (logout does it): every session carries the epoch this moves past."""
    async with conn.transaction():
        await conn.execute("UPDATE web_users SET session_epoch = session_epoch + 1 WHERE username = $1", username)
        await _audit(conn, actor, "end_sessions", {"username": username, "why": why}, None)


async def record_login(conn: asyncpg.Connection, username: str, ip: str, ok: bool) -> None:
    await conn.execute(
        "INSERT INTO web_login_attempts (ts_ms, username, ip, ok) VALUES ($1, $2, $3, $4)",
        now_ms(),
        username[:64],
        ip[:64],
        ok,
    )


async def recent_failures(conn: asyncpg.Connection, username: str, ip: str) -> int:
    """Failed sign-ins of (username, ip) in the throttling window since their last success."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM web_login_attempts WHERE username = $1 AND ip = $2 AND NOT ok AND ts_ms > $3"
            " AND ts_ms > coalesce((SELECT max(ts_ms) FROM web_login_attempts WHERE username = $1 AND ip = $2"
            " AND ok), 0)",
            username,
            ip,
            now_ms() - THROTTLE_WINDOW_MS,
        )
    )


async def prune_login_attempts(conn: asyncpg.Connection, before_ms: int) -> int:
    """Delete sign-in attempts before ``before_ms``, keeping each user's last success (the users page shows it)."""
    status = await conn.execute(
        "DELETE FROM web_login_attempts a WHERE ts_ms < $1 AND NOT (ok AND ts_ms = (SELECT max(b.ts_ms)"
        " FROM web_login_attempts b WHERE b.username = a.username AND b.ok))",
        before_ms,
    )
    return int(status.split()[-1])


# ------------------------------------------------------------------------------------------------ API clients


@dataclass(frozen=True, slots=True)
class ApiClient:
    name: str
    scopes: frozenset[str]
    all_stores: bool
    regions: tuple[str, ...]
    created_ms: int
    created_by: str
    disabled_ms: int | None

    @property
    def disabled(self) -> bool:
        return self.disabled_ms is not None

    @property
    def scope(self) -> Scope:
        return EVERY_STORE if self.all_stores else Scope(self.regions)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_scopes(text: str) -> tuple[str, ...]:
    """``stock,alerts`` (commas and/or spaces) -> the central API's scopes in canonical order; InvalidArgument for
    unknown ones."""
    return clients.parse_scopes(text, SCOPES)


async def add_client(
    conn: asyncpg.Connection,
    name: str,
    token_hash: str,
    scopes: Sequence[str],
    regions: Sequence[str] | None,
    *,
    actor: str,
    origin: str | None = None,
) -> None:
    """A new API client; ``regions=None``: it reads every store, else only the stores of ``regions`` (at least
    one)."""
    check_name(name)
    canonical = parse_scopes(" ".join(scopes))
    async with conn.transaction():
        if regions is not None:
            if not regions:
                raise InvalidArgument("give the client's regions, or let it read every store")
            regions = await _known_regions(conn, regions)
        added = await conn.execute(
            "INSERT INTO web_api_clients (name, token_sha256, scopes, all_stores, created_ms, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
            name,
            token_hash,
            list(canonical),
            regions is None,
            now_ms(),
            actor[:128],
        )
        if added.endswith(" 0"):
            raise InvalidArgument(f"API client {name!r} exists")
        await conn.execute(
            "INSERT INTO web_api_client_regions (name, region) SELECT $1, unnest($2::text[])", name, list(regions or ())
        )
        details = {"name": name, "scopes": list(canonical), "regions": None if regions is None else list(regions)}
        await _audit(conn, actor, "add_api_client", details, origin)


async def disable_client(conn: asyncpg.Connection, name: str, *, actor: str, origin: str | None = None) -> None:
    async with conn.transaction():
        row = await conn.fetchrow("SELECT disabled_ms FROM web_api_clients WHERE name = $1 FOR UPDATE", name)
        if row is None:
            raise InvalidArgument(f"no API client {name!r}")
        if row["disabled_ms"] is not None:
            raise InvalidArgument(f"API client {name!r} is already disabled")
        await conn.execute("UPDATE web_api_clients SET disabled_ms = $2 WHERE name = $1", name, now_ms())
        await _audit(conn, actor, "disable_api_client", {"name": name}, origin)


_CLIENTS = """
SELECT c.name, c.scopes, c.all_stores,
    coalesce((SELECT array_agg(r.region ORDER BY r.region) FROM web_api_client_regions r WHERE r.name = c.name), '{}'),
    c.created_ms, c.created_by, c.disabled_ms
FROM web_api_clients c
"""


def _client(r: Any) -> ApiClient:
    return ApiClient(r[0], frozenset(r[1]), r[2], tuple(r[3]), r[4], r[5], r[6])


async def list_clients(conn: asyncpg.Connection) -> list[ApiClient]:
    return [_client(r) for r in await conn.fetch(_CLIENTS + " ORDER BY c.name")]


async def client_for_token(conn: asyncpg.Connection, token: str) -> ApiClient | None:
    """The client holding ``token`` (disabled ones too: the caller refuses them), or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        return None
    row = await conn.fetchrow(_CLIENTS + " WHERE c.token_sha256 = $1", token_sha256(token))
    return None if row is None else _client(row)


# --------------------------------------------------------------------------------------------- the session key


async def session_key(conn: asyncpg.Connection) -> bytes:
    """The key that signs session cookies: made once by whichever page server starts first, shared by all."""
    await conn.execute(
        "INSERT INTO web_secret (id, secret, created_ms) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        secrets.token_bytes(64),
        now_ms(),
    )
    key: bytes = await conn.fetchval("SELECT secret FROM web_secret WHERE id = 1")
    return key
