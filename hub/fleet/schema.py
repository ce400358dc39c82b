"""The fleet publisher's tables (``hub/fleet/README.md``, *Delivery*) as its migration step; composed with the other
subsystems' steps in ``hub.schema``. Released steps are never edited: a change is a new step.

* ``fleet_cursor`` (one row): ``movements_acked``, the highest movement id up to which every movement was
  acknowledged by the broker (PUBACK), in order. The ledger is the movements' outbox: movements are append-only with
  ids 1, 2, 3, ... (``INTEGER PRIMARY KEY`` without AUTOINCREMENT: a rolled-back insert leaves no hole, nothing is
  ever deleted), so publishing one costs no write at ingest; the cursor moves once per acknowledged batch.
  ``incarnation``: the ledger incarnation (``hub.ledger.identity``, step 14) the cursor counts in. A restored
  ledger is a new incarnation whose ids repeat the lost ledger's: the publisher then sets the cursor to 0 and this
  to the ledger's, and publishes the whole ledger again (``outbox.adopt``).
* ``fleet_outbox``: one row per alert whose latest state is not acknowledged yet, written by triggers on ``alerts``
  in the same transaction as the change (whatever code made it). A newer change of the same alert replaces its
  row, with a new ``rev`` (AUTOINCREMENT: a rev is never used twice, even after its row is deleted), so the central
  store keeps, per alert, the state with the highest rev. The row is deleted once the message carrying that rev was
  acknowledged; a row whose rev changed meanwhile stays (its newer state goes out next). Bounded by the number of
  alerts: a hub that never publishes keeps one row per alert.

Both are written only through the ledger's writer (``hub.fleet.outbox``); the publisher reads them on a read-only
connection of its own.
"""

from __future__ import annotations

from hub.ledger.schema import Migration

# the alert columns of the wire contract (hub/fleet/README.md, *alerts*): a change of evidence alone is not published
_PUBLISHED = (
    "kind, cause_key, status, opened_ms, acknowledged_ms, acknowledged_by, resolved_ms, resolved_by, resolution,"
    " resolution_movement_id"
)
# Delete, then insert: never a conflict for the statement that fired the trigger to override (hub/ledger/changes.py).
_ENQUEUE = "DELETE FROM fleet_outbox WHERE alert_id = NEW.id; INSERT INTO fleet_outbox (alert_id) VALUES (NEW.id);"

_V13_FLEET = (
    """CREATE TABLE fleet_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        movements_acked INTEGER NOT NULL DEFAULT 0 CHECK (movements_acked >= 0),
        acked_ms INTEGER,
        rewinds INTEGER NOT NULL DEFAULT 0,
        incarnation INTEGER NOT NULL DEFAULT 1 CHECK (incarnation >= 1)
    ) STRICT""",
    "INSERT INTO fleet_cursor (id) VALUES (1)",
    """CREATE TABLE fleet_outbox (
        rev INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id INTEGER NOT NULL UNIQUE
    ) STRICT""",
    f"CREATE TRIGGER fleet_outbox_alert_new AFTER INSERT ON alerts BEGIN {_ENQUEUE} END",
    f"CREATE TRIGGER fleet_outbox_alert_edit AFTER UPDATE OF {_PUBLISHED} ON alerts BEGIN {_ENQUEUE} END",
    # the alerts there already: the central store learns them too
    "INSERT INTO fleet_outbox (alert_id) SELECT id FROM alerts ORDER BY id",
)

FLEET = Migration(13, "fleet: publish cursor over movements, alert outbox", _V13_FLEET)
