"""Reconciliation's tables (``README.md``) as its migration step: how far it got, each settled sensor pick, which
movement explained which units, and the index of sensor events by kind and time its runs read. Written only by the
reconciler through the ledger's writer; composed with the other subsystems' steps in ``hub.schema``. Released
steps are never edited: a change is a new step."""

from __future__ import annotations

from hub.ledger.schema import Migration

# Reconciliation state (hub/reconcile/README.md), written only by the reconciler through the writer.
_V3_RECONCILE = (
    # One row: how far reconciliation got. Sensor picks before settled_before_ms whose id <= scanned_to_id are
    # settled (in recon_picks); sensor events up to scanned_to_id have been checked for damage / misplaced items.
    # run_seq guards against two reconcilers writing from the same state.
    """CREATE TABLE recon_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        run_seq INTEGER NOT NULL,
        settled_before_ms INTEGER NOT NULL,
        scanned_to_id INTEGER NOT NULL,
        last_run_ms INTEGER NOT NULL
    ) STRICT""",
    # One row per settled sensor pick: how many of its units were put back, sold (sales / order picks), or are
    # unexplained, and the shrinkage alert that reports them.
    """CREATE TABLE recon_picks (
        movement_id INTEGER PRIMARY KEY REFERENCES movements(id),
        sku TEXT NOT NULL,
        lane_id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        units INTEGER NOT NULL CHECK (units > 0),
        put_back INTEGER NOT NULL CHECK (put_back >= 0),
        sold INTEGER NOT NULL CHECK (sold >= 0),
        unexplained INTEGER NOT NULL CHECK (unexplained >= 0),
        status TEXT NOT NULL CHECK (status IN ('explained', 'unexplained', 'uncertain')),
        alert_id INTEGER REFERENCES alerts(id),
        settled_ms INTEGER NOT NULL,
        CHECK (put_back + sold + unexplained = units)
    ) STRICT""",
    "CREATE INDEX recon_picks_alert ON recon_picks(alert_id) WHERE alert_id IS NOT NULL",
    # Which movement explains which units of a settled pick: a sale, an order pick or a put-back (sensor put).
    """CREATE TABLE recon_matches (
        id INTEGER PRIMARY KEY,
        pick_id INTEGER NOT NULL REFERENCES recon_picks(movement_id),
        by_id INTEGER NOT NULL REFERENCES movements(id),
        kind TEXT NOT NULL CHECK (kind IN ('sale', 'order_pick', 'put_back')),
        units INTEGER NOT NULL CHECK (units > 0),
        lag_ms INTEGER NOT NULL,
        late INTEGER NOT NULL CHECK (late IN (0, 1)),
        matched_ms INTEGER NOT NULL,
        UNIQUE (pick_id, by_id)
    ) STRICT""",
    "CREATE INDEX recon_matches_by ON recon_matches(by_id)",
    # Sensor events by kind and time (unsettled picks, puts, low-confidence events in a period).
    "CREATE INDEX movements_reason_ts ON movements(reason, ts_ms)",
)

STATE = Migration(
    3, "reconciliation: settled picks, their matches, progress; movements by reason and time", _V3_RECONCILE
)
