"""The ledger's incarnation (migration 14): which life of this store's ledger a database is.

Movement ids are the ledger's ``INTEGER PRIMARY KEY``: 1, 2, 3, ... for as long as the file lives. A ledger
restored from a backup goes on from the backup's highest id, so it gives ids that the lost ledger had already given
to other movements (those booked after the backup). Whoever keeps a copy of the movements elsewhere (the central
store, ``hub/fleet/README.md``) must therefore know that the ids start a new life: the incarnation.

* ``ledger_identity`` (one row): ``incarnation`` (1 for a new ledger, or one upgraded to this step), ``since_ms``
  (when that incarnation began) and ``restored_from`` (the backup it was restored from; NULL for incarnation 1).
* ``restore_database`` (``hub.ledger.backup``) bumps it in the copy before the copy is renamed into place, to one
  more than both the backup's and the replaced ledger's (when that one can still be read), and at least the Unix time
  in seconds: restoring the wrong backup and then the right one never gives the same incarnation twice, and neither
  does one backup restored on two Pis at different times (the replaced ledger lost with the first). A backup file
  keeps the incarnation it had.
* The row cannot be deleted and the incarnation never goes down (triggers).
* **The restore point** (``RestorePoint``): ``smartshelf ledger restore`` records, in its ``restore`` audit entry of
  the restored ledger, each node's contiguous event mark as the backup held it (``node_marks``) with the new
  incarnation. A running hub reads it at start (``LedgerReader.restore_point``): a node whose outbox starts above
  that mark had delivered the events in between before the restore (the hub acknowledged them, so the node let them
  go), and they are not in the restored ledger. The hub books them from the node's counters as it books what a full
  outbox dropped, and says which of the two it was, or that it may be either when the node says its outbox has
  dropped events (``hub.link.gaps.skip_cause``).

The ledger knows nothing of who reads it: the fleet publisher (``hub.fleet``) compares it with its own cursor's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hub.ledger.schema import Migration

_NOW_MS = "CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"

_V14_IDENTITY = (
    """CREATE TABLE ledger_identity (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        incarnation INTEGER NOT NULL CHECK (incarnation >= 1),
        since_ms INTEGER NOT NULL,
        restored_from TEXT
    ) STRICT""",
    f"INSERT INTO ledger_identity (id, incarnation, since_ms) VALUES (1, 1, {_NOW_MS})",
    "CREATE TRIGGER ledger_identity_no_delete BEFORE DELETE ON ledger_identity"
    " BEGIN SELECT RAISE(ABORT, 'ledger_identity: the ledger keeps its identity'); END",
    "CREATE TRIGGER ledger_identity_forward BEFORE UPDATE OF incarnation ON ledger_identity"
    " WHEN NEW.incarnation <= OLD.incarnation"
    " BEGIN SELECT RAISE(ABORT, 'ledger_identity: the incarnation only goes up'); END",
)

IDENTITY = Migration(14, "ledger identity: the incarnation (restores start a new one)", _V14_IDENTITY)


def read_incarnation(conn: sqlite3.Connection) -> int | None:
    """The incarnation of an open ledger; None when its schema is older than step 14."""
    try:
        row = conn.execute("SELECT incarnation FROM ledger_identity WHERE id = 1").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return int(row[0]) if row else None


def new_incarnation(conn: sqlite3.Connection, *, at_least: int | None, restored_from: str, now_ms: int) -> int | None:
    """Start a new incarnation (a restore): one more than the ledger's and ``at_least`` (the replaced ledger's), and
    at least ``now_ms`` in seconds, in one transaction of ``conn``. None when the ledger has no ``ledger_identity``
    (a schema older than step 14)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = read_incarnation(conn)
        if current is None:
            conn.execute("ROLLBACK")
            return None
        # and at least the clock's seconds: a dead Pi's backup restored on one new Pi, and later (that one dead
        # too, its own backups never shipped) on another, reads the same numbers twice; the time tells them apart
        # (a clock not yet set, before NTP, falls back to the numbers alone)
        incarnation = max(current + 1, (at_least or 0) + 1, now_ms // 1000)
        conn.execute(
            "UPDATE ledger_identity SET incarnation = ?, since_ms = ?, restored_from = ? WHERE id = 1",
            (incarnation, now_ms, restored_from[:1000]),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return incarnation


# The ledger's incarnation when a restore began it, and the newest restore's audit entry (audit_action's index).
RESTORED_SQL = (
    "SELECT incarnation, since_ms, restored_from FROM ledger_identity WHERE id = 1 AND restored_from IS NOT NULL"
)
LAST_RESTORE_SQL = "SELECT details FROM audit WHERE action = 'restore' ORDER BY id DESC LIMIT 1"


@dataclass(frozen=True, slots=True)
class RestorePoint:
    """The restore from a backup that began this incarnation: when, from what, and each node's contiguous event mark
    in the backup (nodes the backup did not know are not in ``marks``)."""

    since_ms: int
    source: str
    marks: dict[int, int]

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.since_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"the ledger's restore from {self.source} ({when})"


def restore_point(identity: Sequence[Any] | None, details: str | None) -> RestorePoint | None:
    """The restore point from ``RESTORED_SQL``'s row and ``LAST_RESTORE_SQL``'s details; None when the ledger was
    never restored, or its last restore recorded no marks for this incarnation (a restore made by an older version,
    or one whose audit entry was never written)."""
    if identity is None or details is None:
        return None
    try:
        entry = json.loads(details)
        raw = entry["node_marks"]
        if entry.get("incarnation") != identity[0] or not isinstance(raw, dict):
            return None
        marks = {int(node): int(mark) for node, mark in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return RestorePoint(int(identity[1]), str(identity[2]), marks)
