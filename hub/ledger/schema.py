"""The ledger's tables as migration steps, and the migrator every subsystem's steps go through.

* A database's schema is one ordered list of migrations, each a numbered step (``Migration``). Each subsystem owns
  the steps of its tables: the ledger core's are here (``CORE``, ``ALERTS``, ``LANE_READINGS``, ``SENSOR_COUNT``,
  ``RFID``, ``AUDIT_ORIGIN``, ``LANE_ASSIGNED``), reconciliation's in
  ``hub.reconcile.schema``, the status page's in ``hub.web.schema``. The hub root lists them in order
  (``hub.schema.MIGRATIONS``, made with ``compose``) and passes that list to everything that opens a database
  (``LedgerService(..., migrations=...)``, ``open_and_migrate``, ``restore_database``): the ledger never imports
  the modules that use it.
* Versions are global: step *n* of whichever subsystem is version *n* of the database, and ``schema_version`` holds
  one row per step applied. A step released with tables of several subsystems (version 5) is listed as its parts,
  in their released order; ``compose`` joins them into that one step. New steps belong to one subsystem each.
* The list is append-only: a released step is never edited; a change is a new step. Opening a database applies
  every step above its ``schema_version`` in **one** transaction (all or nothing), so an old database is upgraded
  in place and a failed upgrade leaves it exactly as it was.
* A database written by a newer smartshelf (version above the last step given) is refused with ``SchemaError``,
  as is a file that is not a smartshelf ledger (``PRAGMA application_id`` differs, or foreign tables without
  ``schema_version``).
* Integrity lives in the schema, not only in the code: movements, physical counts and the audit trail are
  append-only (triggers refuse UPDATE and DELETE), every movement updates ``balances`` by trigger in the same
  transaction, a ``(source_ref, leg)`` pair is unique, a movement can be reversed once, and only one unresolved
  alert exists per ``(kind, cause_key)``.
* Tables are ``STRICT`` (SQLite >= 3.37; Raspberry Pi OS bookworm ships 3.40).

Connections set ``journal_mode=WAL``, ``synchronous=FULL`` (or NORMAL on request: faster, but on power loss the
last commits can be lost, see DESIGN.md §6), ``foreign_keys=ON`` and a ``busy_timeout``.

The database holds password and API token hashes: ``connect`` creates it 0600 before SQLite opens it (SQLite gives
its ``-wal`` and ``-shm`` the database's mode), and makes an older one that other users can read 0600, with a log
line (``hub.private_files``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hub.ledger.models import SchemaError, now_ms
from hub.private_files import private_database

APPLICATION_ID = 0x53534C47  # "SSLG": marks a file as a smartshelf ledger
MIN_SQLITE = (3, 37, 0)
Synchronous = Literal["FULL", "NORMAL"]


@dataclass(frozen=True)
class Migration:
    """One step of a database's schema (``version``), or a subsystem's part of a step released jointly."""

    version: int
    description: str
    statements: tuple[str, ...]


def compose(*parts: Migration) -> tuple[Migration, ...]:
    """The migrations of a database from its subsystems' steps, in the order given. Consecutive parts of one
    version are joined into one step (statements in order, descriptions joined by ", "); versions must run
    1, 2, 3, ... without a gap."""
    steps: list[Migration] = []
    for part in parts:
        if steps and part.version == steps[-1].version:
            last = steps[-1]
            steps[-1] = Migration(
                last.version, f"{last.description}, {part.description}", last.statements + part.statements
            )
            continue
        expected = steps[-1].version + 1 if steps else 1
        if part.version != expected:
            raise ValueError(f"migration {part.version} ({part.description!r}) where version {expected} belongs")
        steps.append(part)
    return tuple(steps)


def check_steps(migrations: Sequence[Migration]) -> None:
    """Refuse a list that is not whole steps 1..n (e.g. one subsystem's parts alone): applying it would record
    versions whose other parts never ran."""
    versions = [m.version for m in migrations]
    if not versions or versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be the steps 1..n of one database (compose them), not versions {versions}")


# ------------------------------------------------------------------------------------------ the ledger's tables

_SENSOR_REASONS = "'sensor_pick', 'sensor_put', 'sensor_anomaly', 'sensor_gap'"
_BOOK_REASONS = (
    "'sale', 'order_pick', 'receipt', 'restock', 'return', 'transfer', 'damage', 'shrinkage', 'count_adjustment'"
)


def _append_only(table: str, what: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} are append-only: {what}'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} are append-only: {what}'); END",
    ]


_V1_CORE = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    """CREATE TABLE skus (
        sku TEXT PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 32 AND sku NOT GLOB '*[^ -~]*'),
        name TEXT NOT NULL,
        unit_weight_dg INTEGER NOT NULL CHECK (unit_weight_dg BETWEEN 1 AND 1000000),
        spread_permille INTEGER NOT NULL DEFAULT 0 CHECK (spread_permille BETWEEN 0 AND 1000),
        reorder_point INTEGER NOT NULL DEFAULT 0 CHECK (reorder_point >= 0),
        reorder_qty INTEGER NOT NULL DEFAULT 0 CHECK (reorder_qty >= 0),
        capacity INTEGER CHECK (capacity IS NULL OR capacity >= 0)
    ) STRICT""",
    """CREATE TABLE nodes (
        node_id INTEGER PRIMARY KEY CHECK (node_id BETWEEN 1 AND 4294967295),
        label TEXT NOT NULL DEFAULT '',
        key_id TEXT,
        fw_version TEXT,
        first_seen_ms INTEGER,
        last_seen_ms INTEGER,
        last_uplink_seq INTEGER NOT NULL DEFAULT 0,
        downlink_session INTEGER NOT NULL DEFAULT 0,
        downlink_seq INTEGER NOT NULL DEFAULT 0,
        highest_contiguous_event_seq INTEGER NOT NULL DEFAULT 0
    ) STRICT""",
    """CREATE TABLE lanes (
        lane_id TEXT PRIMARY KEY,
        node_id INTEGER NOT NULL REFERENCES nodes(node_id),
        lane_index INTEGER NOT NULL CHECK (lane_index BETWEEN 0 AND 31),
        sku TEXT REFERENCES skus(sku),
        UNIQUE (node_id, lane_index)
    ) STRICT""",
    # One row per posting leg. Book rows carry a SKU; sensor rows of an unassigned lane have sku NULL.
    f"""CREATE TABLE movements (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        recorded_ms INTEGER NOT NULL,
        sku TEXT REFERENCES skus(sku),
        location TEXT NOT NULL,
        qty INTEGER NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ({_SENSOR_REASONS}, {_BOOK_REASONS})),
        source_ref TEXT NOT NULL,
        leg INTEGER NOT NULL DEFAULT 0 CHECK (leg IN (0, 1)),
        actor TEXT NOT NULL,
        note TEXT,
        reverses_id INTEGER REFERENCES movements(id),
        node_id INTEGER REFERENCES nodes(node_id),
        event_seq INTEGER CHECK (event_seq IS NULL OR node_id IS NOT NULL),
        weight_delta_dg INTEGER,
        confidence INTEGER,
        UNIQUE (source_ref, leg),
        CHECK ((location GLOB 'sensor:*') = (reason IN ({_SENSOR_REASONS}))),
        CHECK (sku IS NOT NULL OR location GLOB 'sensor:*')
    ) STRICT""",
    "CREATE UNIQUE INDEX movements_reversed_once ON movements(reverses_id) WHERE reverses_id IS NOT NULL",
    "CREATE UNIQUE INDEX movements_node_event ON movements(node_id, event_seq) WHERE event_seq IS NOT NULL",
    *_append_only("movements", "post a reversal"),
    """CREATE TABLE balances (
        sku TEXT NOT NULL REFERENCES skus(sku),
        location TEXT NOT NULL,
        qty INTEGER NOT NULL,
        PRIMARY KEY (sku, location)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TRIGGER movements_update_balance AFTER INSERT ON movements WHEN NEW.sku IS NOT NULL
    BEGIN
        INSERT INTO balances (sku, location, qty) VALUES (NEW.sku, NEW.location, NEW.qty)
        ON CONFLICT (sku, location) DO UPDATE SET qty = qty + excluded.qty;
    END""",
    """CREATE TABLE physical_counts (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        recorded_ms INTEGER NOT NULL,
        sku TEXT NOT NULL REFERENCES skus(sku),
        location TEXT NOT NULL CHECK (location NOT GLOB 'sensor:*'),
        book_qty INTEGER NOT NULL,
        counted_qty INTEGER NOT NULL CHECK (counted_qty >= 0),
        actor TEXT NOT NULL,
        source_ref TEXT NOT NULL UNIQUE,
        adjustment_movement_id INTEGER REFERENCES movements(id)
    ) STRICT""",
    *_append_only("physical_counts", "record a new count"),
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        details TEXT NOT NULL CHECK (json_valid(details))
    ) STRICT""",
    *_append_only("audit", "it is the trail"),
)

_V2_ALERTS = (
    """CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        cause_key TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
        opened_ms INTEGER NOT NULL,
        acknowledged_ms INTEGER,
        acknowledged_by TEXT,
        resolved_ms INTEGER,
        resolved_by TEXT,
        resolution TEXT,
        resolution_movement_id INTEGER REFERENCES movements(id),
        evidence TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(evidence)),
        CHECK ((status = 'resolved') = (resolved_ms IS NOT NULL))
    ) STRICT""",
    # Unresolved = open or acknowledged: the same cause never has two alerts in flight.
    "CREATE UNIQUE INDEX alerts_one_unresolved ON alerts(kind, cause_key) WHERE status != 'resolved'",
    "CREATE INDEX alerts_status ON alerts(status, opened_ms)",
    # Reconciliation looks for sales / picks of a SKU within a time window.
    "CREATE INDEX movements_sku_ts ON movements(sku, ts_ms)",
    # The two kinds of stock, never to be added together: what the store owns, and what the sensors observe.
    "CREATE VIEW book_stock AS SELECT sku, location, qty FROM balances WHERE location NOT GLOB 'sensor:*'",
    "CREATE VIEW observed_stock AS SELECT substr(location, 8) AS lane_id, sku, qty FROM balances"
    " WHERE location GLOB 'sensor:*'",
)

_V5_LANE_READINGS = (
    # A lane's weight and count as its node reported them (lane_state), thinned by ingest; pruned by age.
    """CREATE TABLE lane_readings (
        lane_id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        weight_dg INTEGER NOT NULL,
        count INTEGER NOT NULL,
        flags INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (lane_id, ts_ms)
    ) STRICT, WITHOUT ROWID""",
)

# A counted quantity from a node (protocol v1.1 set_count) is observed stock of its own reason, 'sensor_count'. Both
# CHECKs of movements name the sensor reasons. Rebuilding the table would need foreign keys off, which cannot change
# inside the migrator's one transaction; widening a CHECK changes no stored byte, so the table's SQL is edited in
# place, as SQLite documents for such changes (lang_altertable.html, "Making Other Kinds Of Table Schema Changes"):
# every existing row still passes. RESET reloads this connection's schema; the view created and dropped bumps the
# schema cookie, so every other connection reloads it too.
_V6_SENSOR_COUNT = (
    "PRAGMA writable_schema = ON",
    "UPDATE sqlite_schema SET sql = replace(sql, '''sensor_gap''', '''sensor_gap'', ''sensor_count''')"
    " WHERE type = 'table' AND name = 'movements'",
    "PRAGMA writable_schema = RESET",
    "CREATE VIEW schema_cookie_bump AS SELECT 1",
    "DROP VIEW schema_cookie_bump",
)

# A lane's sensor units follow the SKU it is assigned (issue 13, ``hub.ledger.postings.settle``): assigning a lane moves
# the units booked at its sensor location under another SKU (or none) to its SKU, reason 'lane_assigned', a sensor
# reason. Both CHECKs of movements are widened in place as in step 6 (every existing row still passes).
_V16_LANE_ASSIGNED = (
    "PRAGMA writable_schema = ON",
    "UPDATE sqlite_schema SET sql = replace(sql, '''sensor_count''', '''sensor_count'', ''lane_assigned''')"
    " WHERE type = 'table' AND name = 'movements'",
    "PRAGMA writable_schema = RESET",
    "CREATE VIEW schema_cookie_bump AS SELECT 1",
    "DROP VIEW schema_cookie_bump",
)

# RFID (issue 12, protocol v1.2). Tags are observations like lane readings, not stock: they get tables of their own
# beside the movements. Every tag event a node sends is booked once (node, event_seq: the same sequence and the same
# exactness as weight events); what is on each lane now is kept per (lane, EPC) by the writer in the same
# transaction, so it survives the pruning of old events; SKUs get a GTIN and the store an EPC -> SKU table, so an
# EPC names a product.
_HEX_EPC = "length({c}) BETWEEN 2 AND 64 AND length({c}) % 2 = 0 AND {c} NOT GLOB '*[^0-9A-F]*'"
_V7_RFID = (
    # GTIN-14 (GTIN-8/12/13 left-padded), check digit verified by the writer; an SGTIN EPC names the SKU by it
    "ALTER TABLE skus ADD COLUMN gtin TEXT CHECK (gtin IS NULL OR (length(gtin) = 14 AND gtin NOT GLOB '*[^0-9]*'))",
    "CREATE UNIQUE INDEX skus_gtin ON skus(gtin) WHERE gtin IS NOT NULL",
    # the store's own EPC -> SKU table (imported); it takes precedence over the EPC's GTIN
    f"""CREATE TABLE epc_skus (
        epc TEXT PRIMARY KEY CHECK ({_HEX_EPC.format(c="epc")}),
        sku TEXT NOT NULL REFERENCES skus(sku),
        imported_ms INTEGER NOT NULL,
        actor TEXT NOT NULL
    ) STRICT, WITHOUT ROWID""",
    # Every tag event as booked. seen: the tag arrived (ts = its first read); lost: it left (ts = its last read on the
    # lane); expired: the hub's own, for a tag not read again after its node restarted (ts = the restart). effect:
    # what the event did to the lane's presence (arrived, still there, left, or superseded by a later event of the
    # node that arrived first). ts_known = 0: an event from an earlier boot of the node, ts is the hub's arrival time.
    # AUTOINCREMENT: an id is never used twice, even once the newest events are pruned (sqlite_sequence keeps the
    # highest ever booked): reconciliation's mark (recon_tag_state.settled_to_id) and its verdicts (recon_tags, those
    # an alert cites kept after their events are pruned) name events by id.
    f"""CREATE TABLE tag_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id INTEGER NOT NULL REFERENCES nodes(node_id),
        event_seq INTEGER CHECK (event_seq IS NULL OR event_seq BETWEEN 1 AND 4294967295),
        lane_id TEXT NOT NULL,
        epc TEXT NOT NULL CHECK ({_HEX_EPC.format(c="epc")}),
        kind TEXT NOT NULL CHECK (kind IN ('seen', 'lost', 'expired')),
        effect TEXT NOT NULL CHECK (effect IN ('arrived', 'still', 'left', 'superseded')),
        ts_ms INTEGER NOT NULL,
        ts_known INTEGER NOT NULL CHECK (ts_known IN (0, 1)),
        recorded_ms INTEGER NOT NULL,
        rssi INTEGER,
        gtin TEXT,
        sku TEXT,
        note TEXT,
        CHECK ((event_seq IS NULL) = (kind = 'expired'))
    ) STRICT""",
    "CREATE UNIQUE INDEX tag_events_node_event ON tag_events(node_id, event_seq) WHERE event_seq IS NOT NULL",
    "CREATE INDEX tag_events_epc ON tag_events(epc, ts_ms)",
    "CREATE INDEX tag_events_lane ON tag_events(lane_id, ts_ms)",
    "CREATE INDEX tag_events_ts ON tag_events(ts_ms)",
    # Per (lane, EPC): the latest stay. seq orders a node's events that arrive out of order (a retransmission after a
    # lost frame); last_read_ms is the latest time the node vouched for the tag being read there; unconfirmed_ms: the
    # node restarted then and has not read the tag again since. Rows of tags gone are pruned with the events.
    f"""CREATE TABLE tag_presence (
        lane_id TEXT NOT NULL,
        epc TEXT NOT NULL CHECK ({_HEX_EPC.format(c="epc")}),
        node_id INTEGER NOT NULL,
        present INTEGER NOT NULL CHECK (present IN (0, 1)),
        seq INTEGER,
        first_seen_ms INTEGER,
        last_read_ms INTEGER,
        left_ms INTEGER,
        rssi INTEGER,
        gtin TEXT,
        unconfirmed_ms INTEGER,
        event_id INTEGER NOT NULL,
        PRIMARY KEY (lane_id, epc)
    ) STRICT, WITHOUT ROWID""",
    "CREATE INDEX tag_presence_epc ON tag_presence(epc)",
    "CREATE INDEX tag_presence_node ON tag_presence(node_id, present)",
    "CREATE INDEX tag_presence_unconfirmed ON tag_presence(unconfirmed_ms) WHERE unconfirmed_ms IS NOT NULL",
    # When a node's RFID readers were not reading (reader_health: silent, starting; or an outage its counters show
    # between two reports): to_ms NULL while it lasts. Tags that leave meanwhile are not evidence of tampering.
    """CREATE TABLE rfid_outages (
        id INTEGER PRIMARY KEY,
        node_id INTEGER NOT NULL,
        reader INTEGER NOT NULL CHECK (reader BETWEEN 0 AND 7),
        from_ms INTEGER NOT NULL,
        to_ms INTEGER,
        cause TEXT NOT NULL,
        CHECK (to_ms IS NULL OR to_ms >= from_ms)
    ) STRICT""",
    "CREATE INDEX rfid_outages_node ON rfid_outages(node_id, from_ms)",
    "CREATE UNIQUE INDEX rfid_outages_open ON rfid_outages(node_id, reader) WHERE to_ms IS NULL",
)

# Issue 13: the audit trail says where each entry came from (``hub.ledger.origin``: ``ip:<address>``,
# ``cli:<user>@<host>``, ``auto``), a column so that it can be filtered and indexed. Entries written before have none
# (NULL: not recorded); every new entry must have one (the trigger), so a write path that forgets it fails instead of
# leaving an entry nobody can place. The trail stays append-only (the triggers of step 1 are untouched).
_V9_AUDIT_ORIGIN = (
    "ALTER TABLE audit ADD COLUMN origin TEXT"
    " CHECK (origin IS NULL OR (length(origin) BETWEEN 1 AND 200 AND origin NOT GLOB '*[^ -~]*'))",
    "CREATE TRIGGER audit_origin_required BEFORE INSERT ON audit WHEN NEW.origin IS NULL"
    " BEGIN SELECT RAISE(ABORT, 'an audit entry says where it came from (origin)'); END",
)

CORE = Migration(1, "core ledger: skus, nodes, lanes, movements, balances, physical counts, audit", _V1_CORE)
ALERTS = Migration(2, "alerts; movements by sku and time; book_stock and observed_stock views", _V2_ALERTS)
# Part of step 5 (released with the status page's API clients, its indexes and session epochs: hub.web.schema).
LANE_READINGS = Migration(5, "lane readings", _V5_LANE_READINGS)
SENSOR_COUNT = Migration(6, "movements: reason sensor_count (a node's counted quantity)", _V6_SENSOR_COUNT)
RFID = Migration(7, "rfid: tag events, tags present per lane, reader outages, EPC -> SKU table, GTIN per SKU", _V7_RFID)
AUDIT_ORIGIN = Migration(9, "audit: where each entry came from (origin)", _V9_AUDIT_ORIGIN)
LANE_ASSIGNED = Migration(
    16, "movements: reason lane_assigned (a lane's sensor units moved to the SKU it is assigned)", _V16_LANE_ASSIGNED
)


# ------------------------------------------------------------------------------------------------ the migrator


def check_sqlite_version() -> None:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise SchemaError(
            f"SQLite {sqlite3.sqlite_version} is too old: the ledger needs {'.'.join(map(str, MIN_SQLITE))}+"
        )


def connect(path: Path | str, *, synchronous: Synchronous = "FULL", busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A plain (synchronous) read-write connection with the ledger's pragmas; transactions are explicit. A new
    database is created 0600; an existing one (with its -wal, -shm) that other users can read is made 0600."""
    check_sqlite_version()
    private_database(path)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout_ms / 1000)
    configure(conn, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
    return conn


def pragmas(*, synchronous: Synchronous, busy_timeout_ms: int) -> list[str]:
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    return [
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
        "PRAGMA journal_mode = WAL",
        f"PRAGMA synchronous = {synchronous}",
        "PRAGMA foreign_keys = ON",
    ]


def configure(conn: sqlite3.Connection, *, synchronous: Synchronous, busy_timeout_ms: int) -> None:
    for stmt in pragmas(synchronous=synchronous, busy_timeout_ms=busy_timeout_ms):
        conn.execute(stmt)


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database: 0 for an empty file; SchemaError if it is not a ledger."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app_id not in (0, APPLICATION_ID):
        raise SchemaError(f"not a smartshelf ledger (application_id {app_id:#x})")
    if "schema_version" not in tables:
        if tables:
            raise SchemaError("not a smartshelf ledger: it has tables but no schema_version")
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def refuse_newer(version: int, *, latest: int, what: str = "the database") -> None:
    if version > latest:
        raise SchemaError(
            f"{what} has schema version {version}, newer than this smartshelf supports ({latest}): "
            "upgrade smartshelf, or restore a backup taken by this version"
        )


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> tuple[int, int]:
    """Bring the database to the last of ``migrations`` in one transaction. Returns (old version, new version)."""
    check_steps(migrations)
    latest = migrations[-1].version
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = current_version(conn)
        refuse_newer(old, latest=latest)
        if old == 0:
            conn.execute(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL,"
                " description TEXT NOT NULL) STRICT"
            )
        for step in migrations:
            if step.version <= old:
                continue
            for stmt in step.statements:
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO schema_version (version, applied_ms, description) VALUES (?, ?, ?)",
                (step.version, now_ms(), step.description),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return old, max(old, latest)


def open_and_migrate(
    path: Path | str,
    migrations: Sequence[Migration],
    *,
    synchronous: Synchronous = "FULL",
    busy_timeout_ms: int = 5000,
) -> tuple[int, int]:
    """Create or upgrade the database at ``path`` to the last of ``migrations``; returns (old version, new version)."""
    check_steps(migrations)
    try:
        conn = connect(path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{path}: cannot open as a ledger database: {exc}") from exc
    try:
        return migrate(conn, migrations)
    except sqlite3.OperationalError:
        raise  # locked, I/O error, ...: not a question of what the file is
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{path}: cannot open as a ledger database: {exc}") from exc
    finally:
        conn.close()
