"""The central page's tables (hub/central/web/README.md) as a migration step of the central store, appended to
``hub.central.schema.MIGRATIONS`` (released steps are never edited: a change is a new step).

* ``web_users``: people who sign in to the central page, each with one role (``ROLES``: viewer < region_manager <
  operations < admin) and a password hash (werkzeug's scrypt, as the hub's page); ``session_epoch`` moves on at a
  logout, password reset, role or region change or disabling, which ends every session of theirs.
* ``web_user_regions``: the regions a region manager sees (their stores only; none: nothing at all). Deleting a
  region takes it from every user (``ON DELETE CASCADE``): a region manager never falls back to more stores.
* ``web_login_attempts``: sign-ins per (username, ip), for throttling and "last sign-in".
* ``web_api_clients``: the ERP's and other systems' bearer tokens: only the SHA-256 is kept (a token is 256 random
  bits, shown once), the scopes it may read, and whether it reads every store (``all_stores``) or only those of its
  regions (``web_api_client_regions``).
* ``web_secret``: the key that signs the page's session cookies, one row, made by the first page server that
  starts (every replica of the page shares it, none keeps a file).
* ``web_audit``: every change an admin made (users, tokens, regions, stores), who made it and from where.
* ``movements_sold_shrink``: the shrink report's movements (sales, order picks, write-offs) of a hub by time, a
  partial index: sensor movements, the bulk of the ledger, are not in it.
"""

from __future__ import annotations

from hub.ledger.schema import Migration

ROLES = ("viewer", "region_manager", "operations", "admin")  # lowest first: each may see what those before may
SCOPES = ("stores", "stock", "alerts", "reorders", "shrink")  # what an API client may read
USERNAME_CHECK = "~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,59}$'"  # hub.web.accounts.users.USERNAME_RE
CLIENT_NAME_CHECK = "~ '^[!-~]{1,60}$'"  # hub.web.accounts.clients.check_name

_V2_WEB = (
    f"""CREATE TABLE web_users (
        username text PRIMARY KEY CHECK (username {USERNAME_CHECK}),
        password_hash text NOT NULL CHECK (length(password_hash) > 0),
        role text NOT NULL CHECK (role IN ({", ".join(f"'{r}'" for r in ROLES)})),
        created_ms bigint NOT NULL,
        created_by text NOT NULL,
        disabled_ms bigint,
        session_epoch integer NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE web_user_regions (
        username text NOT NULL REFERENCES web_users(username) ON DELETE CASCADE,
        region text NOT NULL REFERENCES regions(region) ON UPDATE CASCADE ON DELETE CASCADE,
        PRIMARY KEY (username, region)
    )""",
    """CREATE TABLE web_login_attempts (
        id bigserial PRIMARY KEY,
        ts_ms bigint NOT NULL,
        username text NOT NULL,
        ip text NOT NULL,
        ok boolean NOT NULL
    )""",
    "CREATE INDEX web_login_attempts_who ON web_login_attempts(username, ip, ts_ms)",
    f"""CREATE TABLE web_api_clients (
        name text PRIMARY KEY CHECK (name {CLIENT_NAME_CHECK}),
        token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{{64}}$'),
        scopes text[] NOT NULL CHECK (cardinality(scopes) > 0
            AND scopes <@ ARRAY[{", ".join(f"'{s}'" for s in SCOPES)}]::text[]),
        all_stores boolean NOT NULL,
        created_ms bigint NOT NULL,
        created_by text NOT NULL,
        disabled_ms bigint
    )""",
    """CREATE TABLE web_api_client_regions (
        name text NOT NULL REFERENCES web_api_clients(name) ON DELETE CASCADE,
        region text NOT NULL REFERENCES regions(region) ON UPDATE CASCADE ON DELETE CASCADE,
        PRIMARY KEY (name, region)
    )""",
    """CREATE TABLE web_secret (
        id smallint PRIMARY KEY CHECK (id = 1),
        secret bytea NOT NULL CHECK (length(secret) >= 32),
        created_ms bigint NOT NULL
    )""",
    """CREATE TABLE web_audit (
        id bigserial PRIMARY KEY,
        ts_ms bigint NOT NULL,
        actor text NOT NULL,
        origin text,
        action text NOT NULL,
        details jsonb NOT NULL
    )""",
    "CREATE INDEX web_audit_ts ON web_audit(ts_ms)",
    "CREATE INDEX movements_sold_shrink ON movements(hub_id, reason, ts_ms)"
    " WHERE reason IN ('sale', 'order_pick', 'shrinkage')",
)

WEB = Migration(
    2, "central page: users, their regions, sign-ins, API clients, session key, audit; shrink index", _V2_WEB
)
