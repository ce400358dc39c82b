"""The chain's own master data at central: regions, stores, and which store each hub serves (the ``regions``,
``stores`` and ``hubs.store_id`` of the central schema, ``hub/central/schema.py``). Kept by an admin with
``smartshelf central region ...`` / ``store ...``; every change is audited (``web_audit``).

A hub's row is made by the consumer at its first contact (that is when central asks it for every alert again), so
a hub is assigned to its store once it has been heard from: ``store assign`` refuses a hub central does not know
yet instead of inventing its row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub.fleet.messages import HUB_ID_RE
from hub.ledger.models import InvalidArgument, now_ms

if TYPE_CHECKING:
    import asyncpg

KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a region or store id: one path segment, printable


def check_name(what: str, value: str, *, required: bool) -> str:
    """A display name: at most 200 printable characters (no control character: PostgreSQL refuses NUL)."""
    value = value.strip()
    if (required and not value) or len(value) > 200 or not value.isprintable():
        raise InvalidArgument(f"a {what}'s name is {'1' if required else '0'}..200 printable characters")
    return value


def check_key(what: str, value: str) -> str:
    if not isinstance(value, str) or KEY_RE.fullmatch(value) is None:
        raise InvalidArgument(f"a {what} is 1..64 letters, digits, '.', '_' and '-', starting with a letter or digit")
    return value


async def _audit(conn: asyncpg.Connection, actor: str, action: str, details: dict[str, object]) -> None:
    await conn.execute(
        "INSERT INTO web_audit (ts_ms, actor, action, details) VALUES ($1, $2, $3, $4::jsonb)",
        now_ms(),
        actor[:128],
        action,
        json.dumps(details, sort_keys=True),
    )


async def add_region(conn: asyncpg.Connection, region: str, name: str = "", *, actor: str) -> None:
    check_key("region", region)
    name = check_name("region", name, required=False)
    async with conn.transaction():
        added = await conn.execute(
            "INSERT INTO regions (region, name) VALUES ($1, $2) ON CONFLICT (region) DO NOTHING", region, name
        )
        if added.endswith(" 0"):
            raise InvalidArgument(f"region {region!r} exists")
        await _audit(conn, actor, "add_region", {"region": region, "name": name})


async def add_store(
    conn: asyncpg.Connection, store_id: str, name: str, region: str | None, hubs: tuple[str, ...] = (), *, actor: str
) -> None:
    """A store in ``region`` (None: no region yet: only roles that see every store see it), serving ``hubs``."""
    check_key("store id", store_id)
    name = check_name("store", name, required=True)
    async with conn.transaction():
        if region is not None and not await _region_exists(conn, region):
            raise InvalidArgument(f"no region {region!r} (add it first: smartshelf central region add)")
        added = await conn.execute(
            "INSERT INTO stores (store_id, name, region) VALUES ($1, $2, $3) ON CONFLICT (store_id) DO NOTHING",
            store_id,
            name,
            region,
        )
        if added.endswith(" 0"):
            raise InvalidArgument(f"store {store_id!r} exists")
        await _audit(conn, actor, "add_store", {"store_id": store_id, "name": name, "region": region})
        for hub in hubs:
            await _assign(conn, hub, store_id, actor)


async def set_store_region(conn: asyncpg.Connection, store_id: str, region: str | None, *, actor: str) -> None:
    """Move a store to another region (None: none): from now on its data is seen by that region's managers."""
    async with conn.transaction():
        if region is not None and not await _region_exists(conn, region):
            raise InvalidArgument(f"no region {region!r}")
        old = await conn.fetchrow(
            "SELECT region FROM stores WHERE store_id = $1 FOR UPDATE", check_key("store id", store_id)
        )
        if old is None:
            raise InvalidArgument(f"no store {store_id!r}")
        await conn.execute("UPDATE stores SET region = $2 WHERE store_id = $1", store_id, region)
        await _audit(conn, actor, "set_store_region", {"store_id": store_id, "from": old["region"], "region": region})


async def assign_hub(conn: asyncpg.Connection, hub_id: str, store_id: str | None, *, actor: str) -> None:
    """The store ``hub_id`` serves (None: none)."""
    async with conn.transaction():
        await _assign(conn, hub_id, store_id, actor)


async def _region_exists(conn: asyncpg.Connection, region: str) -> bool:
    return KEY_RE.fullmatch(region) is not None and bool(
        await conn.fetchval("SELECT 1 FROM regions WHERE region = $1", region)
    )


async def _assign(conn: asyncpg.Connection, hub_id: str, store_id: str | None, actor: str) -> None:
    if store_id is not None and (
        KEY_RE.fullmatch(store_id) is None
        or not await conn.fetchval("SELECT 1 FROM stores WHERE store_id = $1", store_id)
    ):
        raise InvalidArgument(f"no store {store_id!r}")
    known = HUB_ID_RE.fullmatch(hub_id) is not None
    old = await conn.fetchrow("SELECT store_id FROM hubs WHERE hub_id = $1 FOR UPDATE", hub_id) if known else None
    if old is None:
        raise InvalidArgument(
            f"central has not heard from hub {hub_id!r} yet: assign it once it has connected (smartshelf central check"
            " lists the hubs)"
        )
    await conn.execute("UPDATE hubs SET store_id = $2 WHERE hub_id = $1", hub_id, store_id)
    await _audit(conn, actor, "assign_hub", {"hub_id": hub_id, "from": old["store_id"], "store_id": store_id})


@dataclass(frozen=True, slots=True)
class StoreRow:
    store_id: str
    name: str
    region: str | None
    hubs: tuple[str, ...]


async def list_regions(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    return [(r["region"], r["name"]) for r in await conn.fetch("SELECT region, name FROM regions ORDER BY region")]


async def list_stores(conn: asyncpg.Connection) -> list[StoreRow]:
    rows = await conn.fetch(
        "SELECT s.store_id, s.name, s.region, coalesce((SELECT array_agg(h.hub_id ORDER BY h.hub_id) FROM hubs h"
        " WHERE h.store_id = s.store_id), '{}') FROM stores s ORDER BY s.store_id"
    )
    return [StoreRow(r[0], r[1], r[2], tuple(r[3])) for r in rows]


async def unassigned_hubs(conn: asyncpg.Connection) -> list[str]:
    return [r[0] for r in await conn.fetch("SELECT hub_id FROM hubs WHERE store_id IS NULL ORDER BY hub_id")]
