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

# RFID fusion (issue 12): how far the departures of tags have been judged, the verdict on each, and what the tags
# said about each settled pick of a tagged lane. No foreign key to tag_events: the ledger prunes old tag events, and
# reconciliation drops its verdicts on them in the same run (``tag_apply``).
_V8_TAGS = (
    # One row: every tag event with id <= settled_to_id that is a departure has its verdict in recon_tags.
    """CREATE TABLE recon_tag_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        settled_to_id INTEGER NOT NULL
    ) STRICT""",
    # One row per judged departure (tag_events kind 'lost'): why the tag left (picked with a weight step, tamper,
    # a cross-read, ...), the pick it left with, the alert that cites it.
    """CREATE TABLE recon_tags (
        event_id INTEGER PRIMARY KEY,
        lane_id TEXT NOT NULL,
        epc TEXT NOT NULL,
        sku TEXT,
        ts_ms INTEGER NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('picked', 'picked_late', 'weight_changed', 'tamper', 'cross_read',
            'other_sku_picked', 'returned', 'moved', 'reader_outage', 'time_unknown', 'unknown_sku',
            'unassigned_lane')),
        pick_id INTEGER REFERENCES movements(id),
        lag_ms INTEGER,
        alert_id INTEGER REFERENCES alerts(id),
        settled_ms INTEGER NOT NULL,
        CHECK ((pick_id IS NOT NULL) = (verdict IN ('picked', 'picked_late')))
    ) STRICT""",
    "CREATE INDEX recon_tags_pick ON recon_tags(pick_id) WHERE pick_id IS NOT NULL",
    "CREATE INDEX recon_tags_lane ON recon_tags(lane_id, ts_ms)",
    "CREATE INDEX recon_tags_epc ON recon_tags(epc)",
    # One row per settled pick of a tagged lane: the node's count and confidence, how many tags left with it within
    # the window, and the count the tags settled when the weight left it ambiguous.
    """CREATE TABLE recon_pick_rfid (
        pick_id INTEGER PRIMARY KEY REFERENCES recon_picks(movement_id),
        counted INTEGER NOT NULL,
        confidence INTEGER NOT NULL,
        tags_left INTEGER NOT NULL CHECK (tags_left >= 0),
        units_by_tags INTEGER CHECK (units_by_tags IS NULL OR units_by_tags > 0)
    ) STRICT""",
)

TAGS = Migration(8, "reconciliation: tag departures judged, what the tags said about each pick", _V8_TAGS)
