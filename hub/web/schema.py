"""The status page's tables (``hub/web/README.md``) as its migration steps: staff accounts and sign-in attempts,
HTTP API clients, and the indexes its pages read the ledger by. Written only through the ledger's writer; composed
with the other subsystems' steps in ``hub.schema``. Released steps are never edited: a change is a new step."""

from __future__ import annotations

from hub.ledger.schema import Migration

# Staff accounts of the status page (hub/web/README.md), written only through the writer.
_V4_USERS = (
    """CREATE TABLE users (
        username TEXT PRIMARY KEY CHECK (length(username) BETWEEN 1 AND 64 AND username NOT GLOB '*[^!-~]*'),
        password_hash TEXT NOT NULL CHECK (length(password_hash) > 0),
        role TEXT NOT NULL CHECK (role IN ('viewer', 'clerk', 'manager', 'admin')),
        created_ms INTEGER NOT NULL,
        disabled_ms INTEGER
    ) STRICT""",
    # Login throttling: failures per (username, ip) in a sliding window.
    """CREATE TABLE login_attempts (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        username TEXT NOT NULL,
        ip TEXT NOT NULL,
        ok INTEGER NOT NULL CHECK (ok IN (0, 1))
    ) STRICT""",
    "CREATE INDEX login_attempts_who ON login_attempts(username, ip, ts_ms)",
)

# Step 5 was released as one step with the ledger's lane readings (hub.ledger.schema.LANE_READINGS): API clients
# first, then the lane readings, then movements by location (shelf detail, ledger explorer, out-of-stock minutes),
# the audit trail by action and session epochs.
_V5_API_CLIENTS = (
    # One row per POS / WMS client of the HTTP API. The bearer token is 256 random bits shown once; only its
    # SHA-256 is kept (a slow hash buys nothing for a random secret of that size). scopes: space-separated.
    """CREATE TABLE api_clients (
        name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^!-~]*'),
        token_sha256 TEXT NOT NULL UNIQUE CHECK (length(token_sha256) = 64),
        scopes TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        disabled_ms INTEGER
    ) STRICT""",
)

_V5_INDEXES_AND_SESSIONS = (
    # covering for what reads a location over time (counts, last change, out-of-stock minutes): no table lookups
    "CREATE INDEX movements_location_ts ON movements(location, ts_ms, sku, qty)",
    # the audit trail by action (a lane's assignment history for the out-of-stock report; who did what, when)
    "CREATE INDEX audit_action ON audit(action, ts_ms)",
    # A signed-in session carries its user's epoch; logout, a password reset, a role change or disabling bumps it,
    # so every cookie issued before (a copied one too) stops working at once.
    "ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0",
)

USERS = Migration(4, "status page: users and login attempts", _V4_USERS)
API_CLIENTS = Migration(5, "HTTP API clients", _V5_API_CLIENTS)
INDEXES_AND_SESSIONS = Migration(5, "movements by location, session epochs", _V5_INDEXES_AND_SESSIONS)
# The audit page (``pages/audit.py``, issue 13): newest first by (ts_ms, id), filtered by actor, origin or a date
# range, each an index range already in that order (every index ends with the rowid, the entry's id); by action it
# reads the step-5 index ``audit_action``.
_V10_AUDIT_PAGE = (
    "CREATE INDEX audit_ts ON audit(ts_ms)",
    "CREATE INDEX audit_actor ON audit(actor, ts_ms)",
    "CREATE INDEX audit_origin ON audit(origin, ts_ms)",
)

AUDIT_PAGE = Migration(10, "status page: the audit trail by time, actor and origin", _V10_AUDIT_PAGE)

# Issue 13: the sensor ledger's movements leave the page's location index. Per lane the page reads them through the
# ledger's sensor spans and lane activity (migration 11, ``hub.ledger.lane_activity``), written once per lane per
# batch instead of one index entry per event; the index keeps every other location (lane:, backroom, ...): the
# ledger explorer, the shelf timeline's book side. Queries name its condition (``BOOK_LOCATION``) to use it.
BOOK_LOCATION = "location NOT GLOB 'sensor:*'"
_V12_BOOK_LOCATIONS = (
    "DROP INDEX movements_location_ts",
    f"CREATE INDEX movements_book_location ON movements(location, ts_ms, sku, qty) WHERE {BOOK_LOCATION}",
    # the reorder report's rule counts each SKU's lanes (hub.reconcile.rules.REORDER_STOCK_SQL): a scan per SKU without
    "CREATE INDEX lanes_sku ON lanes(sku)",
)

BOOK_LOCATIONS = Migration(
    12, "status page: movements by book location (sensor ones by spans), lanes by SKU", _V12_BOOK_LOCATIONS
)

# Issue 13: the reports read a lane's assignment history (``pages/metrics.assignments``) from a table of its own
# instead of the JSON of every ``assign_lane`` audit entry: one row per such entry, as ``json_extract`` reads its
# lane and SKU (columns of any type: the audit's JSON is the record), in (time, entry) order. The audit is
# append-only, so a trigger on its inserts keeps the table in the writing transaction (whatever writes the entry);
# the migration fills it from the audit entries already there. And the reports' out-of-stock stretches of a lane and
# SKU that reach into a period: those ending after its start, one index range (``pages/metrics._ENDED``).
_V17_LANE_ASSIGNMENTS = (
    """CREATE TABLE lane_assignments (
        ts_ms INTEGER NOT NULL,
        id INTEGER NOT NULL,
        lane_id ANY,
        sku ANY,
        PRIMARY KEY (ts_ms, id)
    ) STRICT, WITHOUT ROWID""",
    "CREATE TRIGGER lane_assignments_kept AFTER INSERT ON audit WHEN NEW.action = 'assign_lane' BEGIN"
    " INSERT INTO lane_assignments (ts_ms, id, lane_id, sku) VALUES (NEW.ts_ms, NEW.id,"
    " json_extract(NEW.details, '$.lane_id'), json_extract(NEW.details, '$.sku')); END",
    "INSERT INTO lane_assignments (ts_ms, id, lane_id, sku) SELECT ts_ms, id, json_extract(details, '$.lane_id'),"
    " json_extract(details, '$.sku') FROM audit WHERE action = 'assign_lane'",
    "CREATE INDEX lane_outages_lane_to ON lane_outages(location, sku, to_ts)",
)

LANE_ASSIGNMENTS = Migration(
    17,
    "reports: lane assignment history kept from the audit, out-of-stock stretches by lane and end",
    _V17_LANE_ASSIGNMENTS,
)
