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

The ledger knows nothing of who reads it: the fleet publisher (``hub.fleet``) compares it with its own cursor's.
"""

from __future__ import annotations

import sqlite3

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
