"""What each committed transaction of the ledger's writer changed, told to listeners after COMMIT.

``ChangeTracker.install(conn)`` gives the writer's connection TEMP triggers (they exist on that connection only,
never in the database file) on the tables whose state the status page shows live. Every INSERT, UPDATE and DELETE
on them adds a row to ``temp.ledger_changes``, whatever code issued it: the postings of ``Tx``, the sensor batch
(``sensor.apply_batch``), CSV imports, reconciliation and alert resolutions through ``transact``, the web's user
and client writes, and any write path added later. So the collection is complete by construction, not by each
call site remembering to report. ``collect(conn)`` reads and empties the table inside the transaction (one
``DELETE ... RETURNING``), just before COMMIT; a rolled-back transaction rolls its rows back with it and reports
nothing. After COMMIT the writer calls ``notify(changes)``.

Tracked (``Changes``): ``movements`` (the location whose stock moved: ``sensor:<lane>`` by its ``sensor_spans``
row, once per lane and batch; ``lane:<lane>``, ``backroom``, ...), ``lane_readings`` (the lane), ``lanes`` (the lane),
``skus`` (the SKU), ``alerts`` (the alert and its cause key), ``tag_presence`` (the lane whose tags present
changed; the EPC table's imports re-name tags' SKUs, which every lane row may show: ``epc_skus`` reports the lanes
the EPCs are on). Not tracked, because nothing shows them live: nodes, audit, counts, users, sign-ins, API
clients, reconciliation's own tables, and deletions of lane readings (pruning).

Listeners run on the writer's event loop, right after COMMIT and before the callers' futures resolve (so a caller
that sees its write done knows its listeners were told). A listener must only hand the changes over, never block
or await (the writer waits for it): e.g. ``queue.Queue.put_nowait`` to a thread. An exception is logged and
ignored: a listener never fails a write. ``listen`` may be called from any thread.

Cost: one trigger statement per tracked key written (a primary-key probe and at most one insert into a small
temp table) and one
statement per transaction; ``smartshelf bench hub`` measures it (hub/web/README.md, *Live updates*).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiosqlite

from hub.ledger.models import SENSOR_PREFIX

log = logging.getLogger(__name__)

_TABLE = "ledger_changes"
# (trigger name, table, event, keys: (what, column expression) pairs)
_WATCHED: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = (
    ("movement", "movements", "INSERT", (("location", "NEW.location"),)),  # book locations (_WHEN)
    ("span", "sensor_spans", "INSERT", (("location", "NEW.location"),)),  # sensor ones: once per lane per batch
    ("reading", "lane_readings", "INSERT", (("reading", "NEW.lane_id"),)),
    ("lane_new", "lanes", "INSERT", (("lane", "NEW.lane_id"),)),
    ("lane_edit", "lanes", "UPDATE", (("lane", "OLD.lane_id"), ("lane", "NEW.lane_id"))),
    ("lane_gone", "lanes", "DELETE", (("lane", "OLD.lane_id"),)),
    ("sku_new", "skus", "INSERT", (("sku", "NEW.sku"),)),
    ("sku_edit", "skus", "UPDATE", (("sku", "OLD.sku"), ("sku", "NEW.sku"))),
    ("sku_gone", "skus", "DELETE", (("sku", "OLD.sku"),)),
    ("alert_new", "alerts", "INSERT", (("alert", "NEW.id"), ("cause", "NEW.cause_key"))),
    ("alert_edit", "alerts", "UPDATE", (("alert", "NEW.id"), ("cause", "OLD.cause_key"), ("cause", "NEW.cause_key"))),
    ("tags_new", "tag_presence", "INSERT", (("tags", "NEW.lane_id"),)),
    ("tags_edit", "tag_presence", "UPDATE", (("tags", "OLD.lane_id"), ("tags", "NEW.lane_id"))),
    ("tags_gone", "tag_presence", "DELETE", (("tags", "OLD.lane_id"),)),
)

# Every sensor movement has its span written in its transaction (hub.ledger.lane_activity): its location is told by
# the span's trigger, once per lane and batch, instead of a trigger step per movement.
_WHEN = {"movement": " WHEN NEW.location NOT GLOB 'sensor:*'"}


def _ddl() -> list[str]:
    statements = [
        f"CREATE TEMP TABLE IF NOT EXISTS {_TABLE} (what TEXT NOT NULL, key NOT NULL, PRIMARY KEY (what, key))"
        " WITHOUT ROWID"
    ]
    for name, table, event, keys in _WATCHED:
        # Not ``INSERT OR IGNORE``: the outer statement's conflict clause overrides a trigger's (an UPSERT such as
        # add_sku's ``ON CONFLICT DO UPDATE`` would turn a repeated key into a UNIQUE failure), so each key is
        # inserted only when it is not there yet.
        body = " ".join(
            f"INSERT INTO {_TABLE} (what, key) SELECT '{what}', {expr} WHERE NOT EXISTS"
            f" (SELECT 1 FROM {_TABLE} WHERE what = '{what}' AND key = {expr});"
            for what, expr in keys
        )
        when = _WHEN.get(name, "")
        statements.append(
            f"CREATE TEMP TRIGGER IF NOT EXISTS ledger_changes_{name} AFTER {event} ON main.{table}{when}"
            f" BEGIN {body} END"
        )
    # an EPC mapped (again) to a SKU: the lanes its tag is on now show it as that SKU
    for event in ("INSERT", "UPDATE"):
        statements.append(
            f"CREATE TEMP TRIGGER IF NOT EXISTS ledger_changes_epc_{event.lower()} AFTER {event} ON main.epc_skus"
            f" BEGIN INSERT INTO {_TABLE} (what, key) SELECT DISTINCT 'tags', p.lane_id FROM main.tag_presence AS p"
            f" WHERE p.epc = NEW.epc AND p.present = 1 AND NOT EXISTS (SELECT 1 FROM {_TABLE}"
            " WHERE what = 'tags' AND key = p.lane_id); END"
        )
    return statements


DDL = tuple(_ddl())
COLLECT_SQL = f"DELETE FROM temp.{_TABLE} RETURNING what, key"


@dataclass(frozen=True, slots=True)
class Changes:
    """What one transaction (or several, ``merge``) changed."""

    locations: frozenset[str] = frozenset()  # stock moved there (a movement was posted)
    readings: frozenset[str] = frozenset()  # lanes with a new lane reading
    lanes: frozenset[str] = frozenset()  # lanes registered, assigned or edited
    skus: frozenset[str] = frozenset()  # SKUs added or edited
    alerts: frozenset[int] = frozenset()  # alerts opened or changed (status, evidence)
    causes: frozenset[str] = frozenset()  # the cause keys of those alerts
    tags: frozenset[str] = frozenset()  # lanes whose tags present changed

    def __bool__(self) -> bool:
        return bool(
            self.locations or self.readings or self.lanes or self.skus or self.alerts or self.causes or self.tags
        )

    @property
    def sensor_lanes(self) -> frozenset[str]:
        """Lanes whose observed stock moved (``sensor:<lane>`` locations)."""
        n = len(SENSOR_PREFIX)
        return frozenset(loc[n:] for loc in self.locations if loc.startswith(SENSOR_PREFIX))

    def merge(self, other: Changes) -> Changes:
        return Changes(
            self.locations | other.locations,
            self.readings | other.readings,
            self.lanes | other.lanes,
            self.skus | other.skus,
            self.alerts | other.alerts,
            self.causes | other.causes,
            self.tags | other.tags,
        )

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, object]]) -> Changes:
        found: dict[str, set[object]] = {}
        for what, key in rows:
            if key is not None:
                found.setdefault(what, set()).add(key)

        def text(what: str) -> frozenset[str]:
            return frozenset(str(k) for k in found.get(what, ()))

        alerts = frozenset(int(k) for k in found.get("alert", ()) if isinstance(k, int | str))
        return cls(text("location"), text("reading"), text("lane"), text("sku"), alerts, text("cause"), text("tags"))


NOTHING = Changes()
Listener = Callable[[Changes], None]


class ChangeTracker:
    """The writer's half: triggers on its connection, the listeners, collect before and notify after COMMIT."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._guard = threading.Lock()  # listen / unlisten from any thread; notify reads the tuple as it is
        self.notified = 0  # transactions that changed something tracked (for tests and benchmarks)

    async def install(self, conn: aiosqlite.Connection) -> None:
        for statement in DDL:
            await conn.execute(statement)

    async def collect(self, conn: aiosqlite.Connection) -> Changes:
        """Inside the write transaction, just before COMMIT: what it changed (and empty the table for the next)."""
        rows = await conn.execute_fetchall(COLLECT_SQL)
        return Changes.from_rows((str(r[0]), r[1]) for r in rows) if rows else NOTHING

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(changes)`` after each commit that changed something tracked; returns the unsubscribe."""
        with self._guard:
            self._listeners = (*self._listeners, listener)

        def unlisten() -> None:
            with self._guard:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unlisten

    def notify(self, changes: Changes) -> None:
        """After COMMIT, on the writer's loop."""
        if not changes:
            return
        self.notified += 1
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:  # a listener never fails the write that was committed
                log.exception("ledger: a commit listener failed")
