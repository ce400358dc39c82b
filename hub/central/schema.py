"""The central store's PostgreSQL tables as migration steps, and their migrator.

The discipline is the hub ledger's (``hub.ledger.schema``): one ordered, append-only list of numbered steps
(``MIGRATIONS``; a released step is never edited, a change is a new step), ``schema_version`` holds one row per step
applied, every step above the database's version is applied in **one** transaction (PostgreSQL's DDL is
transactional: a failed upgrade leaves the database as it was), a database of a newer smartshelf is refused with
``SchemaError``, and so is a database that has tables but no ``schema_version`` (not ours). Two consumers starting
at once take a transaction-scoped advisory lock, so one migrates and the other finds it done.

What the tables hold (README.md beside this file has the operator's view):

* ``regions``, ``stores``: the chain's own master data, kept by the operator (or the central page's admin): a store
  has a name and a region; ``hubs.store_id`` says which store a hub serves. The central page scopes a region
  manager to ``stores.region`` (its users and roles are the page's own tables: step 2, ``hub.central.web.schema``).
* ``hubs``: every hub the consumer has heard from (created on first contact: the broker authenticated it), its
  first and last contact (central's clock) and last ``sent_ms`` (the hub's), its retained status (online/offline),
  its ledger's newest incarnation heard of (``incarnation``, 0 before any; ``hub/ledger/identity.py``: a restored
  ledger is a new incarnation whose ids repeat the lost ledger's), its snapshot's time and incarnation, how many
  movements are stored and, in the current incarnation, up to which id they are complete.
* ``movements``: every hub's ledger movements, key ``(hub_id, incarnation, id)`` and unique ``(hub_id, source_ref,
  leg)``, the business identity the hub's ledger enforces too; inserted with ``ON CONFLICT DO NOTHING`` (either
  key), so a redelivered batch inserts nothing, and neither does a restored hub publishing again the movements
  central holds from before the restore (stock never counts a movement twice).
* ``movement_matches``: a movement a hub published that central did not store because a movement of *another*
  incarnation holds its ``(source_ref, leg)``: ``same`` when their SKU, location, quantity and reason agree (the
  same movement published again after a restore, or booked again at the store after being lost there), else a
  conflict (a reference made from a reused id, e.g. ``reversal:<id>``), which ``central check`` reports; also a
  movement whose ``(incarnation, id)`` another movement holds (an incarnation used twice). So central knows which
  of its movements the current incarnation has, and nothing a hub sent is dropped unseen.
* ``stock``: per hub, SKU and location, the sum of the movements' quantities, updated in the same statement as the
  movements that actually inserted (``book_stock`` reads its book locations; ``observed_stock`` is the lanes'
  counts of each hub's latest snapshot). Reading stock per SKU per store is one index range, whatever the number of
  movements. A book location's row (``incarnation`` 0) sums every stored movement: after a restore it still counts
  the movements lost at the store (``central check`` lists them) until they are booked there again. A ``sensor:``
  location's rows are per ledger incarnation (step 3): the sum of the sensor movements that incarnation's ledger
  holds, so a restored hub's sensor gap is not added to the picks its old ledger lost; ``sensor_stock`` shows each
  hub's current incarnation's.
* ``movement_ranges``: per hub and incarnation, the id ranges received (merged; one row per run of ids).
  ``movement_gaps`` lists the holes of each hub's current incarnation: movements the hub has published that central
  never received (a rewind can fill those).
* ``alerts``: per ``(hub_id, incarnation, id)`` the latest state (the highest ``rev`` wins, whatever order they
  arrive in). A restored ledger's alert ids and revs repeat the lost ledger's, so each incarnation's alerts are kept
  apart: the store's alerts are its current incarnation's (``hubs.incarnation``); an unresolved alert of an older one
  that no alert of the current one carries on (same id, kind, cause and opened time: it was in the backup) was lost
  at the store (``central check``).
* ``snapshot_skus``, ``snapshot_lanes``, ``snapshot_nodes``, ``snapshot_book``: each hub's latest snapshot
  (replaced only by a newer ``sent_ms``); ``snapshot_book`` is the hub's own balances, ``central check`` compares
  them with ``stock``.
* ``rejected``: every message refused (malformed, forged, unknown kind) with the reason and its first 64 KiB; it was
  acknowledged (a broken message is not redelivered forever) and nothing of it was applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hub.central.web.schema import WEB
from hub.ledger.models import SchemaError
from hub.ledger.schema import Migration, check_steps, refuse_newer

if TYPE_CHECKING:
    import asyncpg

# pg_advisory_xact_lock key for migrations: "SSCM"
MIGRATION_LOCK = 0x5353434D
HUB_ID_CHECK = "~ '^[A-Za-z0-9_-]{1,64}$'"

_V1_CENTRAL = (
    """CREATE TABLE regions (
        region text PRIMARY KEY CHECK (length(region) BETWEEN 1 AND 64),
        name text NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE stores (
        store_id text PRIMARY KEY CHECK (length(store_id) BETWEEN 1 AND 64),
        name text NOT NULL,
        region text REFERENCES regions(region) ON UPDATE CASCADE,
        created_ms bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
    )""",
    "CREATE INDEX stores_region ON stores(region)",
    f"""CREATE TABLE hubs (
        hub_id text PRIMARY KEY CHECK (hub_id {HUB_ID_CHECK}),
        store_id text REFERENCES stores(store_id) ON UPDATE CASCADE ON DELETE SET NULL,
        first_contact_ms bigint NOT NULL,
        last_contact_ms bigint NOT NULL,
        last_sent_ms bigint NOT NULL,
        status text NOT NULL DEFAULT 'unknown' CHECK (status IN ('unknown', 'online', 'offline')),
        status_sent_ms bigint,
        incarnation bigint NOT NULL DEFAULT 0,
        snapshot_incarnation bigint,
        snapshot_sent_ms bigint,
        snapshot_received_ms bigint,
        snapshot_last_movement_id bigint,
        movements_stored bigint NOT NULL DEFAULT 0,
        movements_max_id bigint NOT NULL DEFAULT 0,
        movements_complete_to bigint NOT NULL DEFAULT 0,
        movements_received_ms bigint,
        rewind_after bigint,
        rewind_requested_ms bigint
    )""",
    "CREATE INDEX hubs_store ON hubs(store_id)",
    # No foreign key to hubs: its check per row cost a third of the insert (measured), and the one writer upserts
    # the hub's row first in the same transaction; hubs are never deleted.
    """CREATE TABLE movements (
        hub_id text NOT NULL,
        incarnation bigint NOT NULL CHECK (incarnation >= 1),
        id bigint NOT NULL CHECK (id >= 1),
        ts_ms bigint NOT NULL,
        recorded_ms bigint NOT NULL,
        sku text,
        location text NOT NULL,
        qty bigint NOT NULL,
        reason text NOT NULL,
        source_ref text NOT NULL,
        leg smallint NOT NULL,
        actor text NOT NULL,
        note text,
        reverses_id bigint,
        node_id bigint,
        event_seq bigint,
        weight_delta_dg bigint,
        confidence integer,
        received_ms bigint NOT NULL,
        PRIMARY KEY (hub_id, incarnation, id),
        UNIQUE (hub_id, source_ref, leg)
    )""",
    """CREATE TABLE movement_matches (
        hub_id text NOT NULL,
        incarnation bigint NOT NULL,
        id bigint NOT NULL,
        held_incarnation bigint NOT NULL,
        held_id bigint NOT NULL,
        same boolean NOT NULL,
        sku text,
        location text NOT NULL,
        qty bigint NOT NULL,
        source_ref text NOT NULL,
        leg smallint NOT NULL,
        received_ms bigint NOT NULL,
        PRIMARY KEY (hub_id, incarnation, id)
    )""",
    "CREATE INDEX movement_matches_held ON movement_matches(hub_id, held_incarnation, held_id)",
    "CREATE INDEX movement_matches_conflicts ON movement_matches(hub_id, incarnation, id) WHERE NOT same",
    """CREATE TABLE stock (
        hub_id text NOT NULL REFERENCES hubs(hub_id),
        sku text NOT NULL,
        location text NOT NULL,
        qty bigint NOT NULL,
        updated_ms bigint NOT NULL,
        PRIMARY KEY (hub_id, sku, location)
    )""",
    "CREATE VIEW book_stock AS SELECT hub_id, sku, location, qty FROM stock WHERE location NOT LIKE 'sensor:%'",
    """CREATE TABLE movement_ranges (
        hub_id text NOT NULL REFERENCES hubs(hub_id),
        incarnation bigint NOT NULL,
        first_id bigint NOT NULL CHECK (first_id >= 1),
        last_id bigint NOT NULL,
        PRIMARY KEY (hub_id, incarnation, first_id),
        CHECK (last_id >= first_id)
    )""",
    # The holes of each hub's current incarnation: ids below a received range that no range holds (ids start at 1
    # in every incarnation).
    """CREATE VIEW movement_gaps AS
        SELECT hub_id, first_missing, last_missing, incarnation FROM (
            SELECT r.hub_id, r.incarnation, coalesce(lag(r.last_id) OVER w, 0) + 1 AS first_missing,
                r.first_id - 1 AS last_missing
            FROM movement_ranges r JOIN hubs h ON h.hub_id = r.hub_id AND h.incarnation = r.incarnation
            WINDOW w AS (PARTITION BY r.hub_id ORDER BY r.first_id)
        ) AS g WHERE first_missing <= last_missing""",
    """CREATE TABLE alerts (
        hub_id text NOT NULL REFERENCES hubs(hub_id),
        id bigint NOT NULL,
        incarnation bigint NOT NULL,
        rev bigint NOT NULL,
        kind text NOT NULL,
        cause_key text NOT NULL,
        status text NOT NULL,
        opened_ms bigint NOT NULL,
        acknowledged_ms bigint,
        acknowledged_by text,
        resolved_ms bigint,
        resolved_by text,
        resolution text,
        resolution_movement_id bigint,
        received_ms bigint NOT NULL,
        PRIMARY KEY (hub_id, incarnation, id)
    )""",
    "CREATE INDEX alerts_unresolved ON alerts(opened_ms) WHERE status <> 'resolved'",
    """CREATE TABLE snapshot_skus (
        hub_id text NOT NULL REFERENCES hubs(hub_id),
        sku text NOT NULL,
        name text NOT NULL,
        unit_weight_dg bigint,
        reorder_point bigint,
        reorder_qty bigint,
        capacity bigint,
        gtin text,
        PRIMARY KEY (hub_id, sku)
    )""",
    """CREATE TABLE snapshot_lanes (
        hub_id text NOT NULL REFERENCES hubs(hub_id),
        lane_id text NOT NULL,
        node_id bigint,
        lane_index integer,
        sku text,
        count bigint,
        weight_dg bigint,
        ts_ms bigint,
        PRIMARY KEY (hub_id, lane_id)
    )""",
    # what each hub's lanes count now, as the hub itself says (its snapshot): not the sum of the sensor movements
    # central holds, which after a restore has both the picks lost with the old ledger and the gap the restored
    # hub booked for them
    "CREATE VIEW observed_stock AS SELECT hub_id, lane_id, sku, count AS qty FROM snapshot_lanes"
    " WHERE count IS NOT NULL",
    """CREATE TABLE snapshot_nodes (
        hub_id text NOT NULL REFERENCES hubs(hub_id),
        node_id bigint NOT NULL,
        label text,
        fw_version text,
        last_seen_ms bigint,
        PRIMARY KEY (hub_id, node_id)
    )""",
    """CREATE TABLE snapshot_book (
        hub_id text NOT NULL REFERENCES hubs(hub_id),
        sku text NOT NULL,
        location text NOT NULL,
        qty bigint NOT NULL,
        PRIMARY KEY (hub_id, sku, location)
    )""",
    # hub_id: the topic's (the broker authenticated it), NULL when the topic names no valid hub.
    """CREATE TABLE rejected (
        id bigserial PRIMARY KEY,
        received_ms bigint NOT NULL,
        topic text NOT NULL,
        hub_id text,
        reason text NOT NULL,
        payload bytea NOT NULL,
        payload_bytes integer NOT NULL
    )""",
    "CREATE INDEX rejected_hub ON rejected(hub_id, received_ms)",
)

CENTRAL = Migration(
    1,
    "central: regions, stores, hubs, movements (per incarnation), their matches, stock, movement ranges and gaps,"
    " alerts, snapshots, rejected",
    _V1_CENTRAL,
)

# Step 3: sensor locations' stock per ledger incarnation. Until step 2, ``stock`` summed every stored movement per
# (hub, SKU, location); after a restore its ``sensor:`` rows held both the sensor picks lost with the old ledger and
# the sensor gap the restored hub booked for the same units. Now a book location's row has incarnation 0 (every
# incarnation's movements: what was lost at the store is kept there until booked again, as ``central check`` says),
# and a sensor location's rows are per incarnation: each the sum of the sensor movements that incarnation's ledger
# holds (those stored under it, and those it published again that an older incarnation's row holds: its
# ``movement_matches``). View ``sensor_stock`` shows each hub's current incarnation's. The existing sensor rows are
# recomputed from ``movements`` and ``movement_matches`` by the same rule (one pass over the movements).
SENSOR_MATCHED_ROW = """NOT EXISTS (
    SELECT 1 FROM movements o WHERE o.hub_id = {x}.hub_id AND o.incarnation = {x}.incarnation AND o.id = {x}.id)"""
_V3_SENSOR_STOCK = (
    "ALTER TABLE stock ADD COLUMN incarnation bigint NOT NULL DEFAULT 0",
    "ALTER TABLE stock ALTER COLUMN incarnation DROP DEFAULT",
    "ALTER TABLE stock DROP CONSTRAINT stock_pkey",
    "ALTER TABLE stock ADD PRIMARY KEY (hub_id, sku, location, incarnation)",
    "DELETE FROM stock WHERE location LIKE 'sensor:%'",
    f"""INSERT INTO stock (hub_id, sku, location, incarnation, qty, updated_ms)
    SELECT hub_id, sku, location, incarnation, sum(qty), max(received_ms) FROM (
        SELECT hub_id, sku, location, incarnation, qty, received_ms FROM movements
        WHERE location LIKE 'sensor:%' AND sku IS NOT NULL
        UNION ALL
        SELECT hub_id, sku, location, incarnation, qty, received_ms FROM movement_matches x
        WHERE location LIKE 'sensor:%' AND sku IS NOT NULL AND {SENSOR_MATCHED_ROW.format(x="x")}
    ) AS s GROUP BY hub_id, sku, location, incarnation""",
    "ALTER TABLE stock ADD CONSTRAINT stock_incarnation CHECK ((location LIKE 'sensor:%') = (incarnation >= 1))",
    """CREATE VIEW sensor_stock AS SELECT s.hub_id, s.sku, s.location, s.qty, s.incarnation FROM stock s
        JOIN hubs h ON h.hub_id = s.hub_id AND h.incarnation = s.incarnation WHERE s.location LIKE 'sensor:%'""",
)
SENSOR_STOCK = Migration(
    3,
    "central: sensor locations' stock per ledger incarnation (view sensor_stock: the current one's)",
    _V3_SENSOR_STOCK,
)
# WEB: the central page's tables (hub/central/web/schema.py)
MIGRATIONS: tuple[Migration, ...] = (CENTRAL, WEB, SENSOR_STOCK)


async def current_version(conn: asyncpg.Connection) -> int:
    """The schema version of the connected database: 0 when it has none of our tables; SchemaError if it has
    tables but no ``schema_version`` (not a smartshelf central database)."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        others = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = ANY(current_schemas(false))")
        if others:
            raise SchemaError(
                "not a smartshelf central database: it has tables but no schema_version (use an empty database)"
            )
        return 0
    version = await conn.fetchval("SELECT max(version) FROM schema_version")
    return int(version or 0)


async def migrate(conn: asyncpg.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> tuple[int, int]:
    """Bring the database to the last of ``migrations`` in one transaction; returns (old version, new version)."""
    check_steps(migrations)
    latest = migrations[-1].version
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        old = await current_version(conn)
        refuse_newer(old, latest=latest, what="the central database")
        if old == 0:
            await conn.execute(
                "CREATE TABLE schema_version (version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now(), description text NOT NULL)"
            )
        for step in migrations:
            if step.version <= old:
                continue
            for stmt in step.statements:
                await conn.execute(stmt)
            await conn.execute(
                "INSERT INTO schema_version (version, description) VALUES ($1, $2)", step.version, step.description
            )
    return old, max(old, latest)


async def check_current(conn: asyncpg.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The database's version when it is exactly the last of ``migrations``; SchemaError otherwise (older: run
    ``smartshelf central migrate``; newer: upgrade smartshelf)."""
    latest = migrations[-1].version
    version = await current_version(conn)
    refuse_newer(version, latest=latest, what="the central database")
    if version < latest:
        raise SchemaError(
            f"the central database has schema version {version}, this smartshelf needs {latest}: "
            "run smartshelf central migrate"
        )
    return version
