"""``smartshelf central check``: is every store complete and consistent at central?

Per hub (``report``): its store, status and last contact; its ledger incarnation; how many movements are stored and
up to which id of the current incarnation they are complete; the holes (``movement_gaps``) and the tail not received
yet (the hub's last snapshot named a higher id than central holds); whether central's book stock equals the hub's own
balances as of that snapshot (compared only when central holds every movement up to the snapshot's
``last_movement_id``: central's stock minus the movements after that id and those lost at the store, plus those it
could not store, against ``snapshot_book``, book locations only); and the messages refused from its topics.

After a restore (a newer incarnation, ``hub/ledger/identity.py``), once central holds the current incarnation up to
its snapshot: the movements central holds from an older incarnation that the current one does not have ("lost at
the store, kept here": booked after the backup the store restored; central's stock still counts them, the store's
does not, until they are booked again there under their own ``source_ref``), and the conflicts (movements a hub
published that central could not store, ``movement_matches``). The page and the API can run the same queries.

Alerts are kept per incarnation (a restored ledger reuses alert ids): the store's alerts are its current
incarnation's. An unresolved alert of an older incarnation that no alert of the current one carries on (``LOST_ALERT``:
the same id, kind, cause and opened time, i.e. it was in the backup) was lost at the store with the ledger: reported
here, never shown as one of the store's open alerts. Right after a restore, until the hub has published its alerts
again (it queues every one at the restore), an alert it still has may be listed here for a moment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

_HUBS = """
SELECT h.hub_id, h.store_id, s.name AS store_name, s.region, h.status, h.first_contact_ms, h.last_contact_ms,
    h.incarnation, h.snapshot_incarnation, h.snapshot_sent_ms, h.snapshot_last_movement_id, h.movements_stored,
    h.movements_max_id, h.movements_complete_to, h.rewind_after, h.rewind_requested_ms,
    (SELECT count(*) FROM rejected r WHERE r.hub_id = h.hub_id) AS rejected,
    (SELECT count(*) FROM movement_matches x WHERE x.hub_id = h.hub_id AND NOT x.same) AS conflicts,
    (SELECT count(*) FROM alerts a WHERE a.hub_id = h.hub_id AND {lost}) AS lost_alerts
FROM hubs h LEFT JOIN stores s USING (store_id) ORDER BY h.hub_id
"""

# alert ``a`` is unresolved, of an older incarnation than {life} (the hub's current one), and no alert of the
# current one is the same alert restored from the backup: lost at the store (the page counts them too)
LOST_ALERT = """a.incarnation < {life} AND a.status <> 'resolved' AND NOT EXISTS (
    SELECT 1 FROM alerts c WHERE c.hub_id = a.hub_id AND c.incarnation = {life} AND c.id = a.id
    AND c.kind = a.kind AND c.cause_key = a.cause_key AND c.opened_ms = a.opened_ms)"""
_HUBS = _HUBS.format(lost=LOST_ALERT.format(life="h.incarnation"))
_LOST_ALERTS = f"""
SELECT a.incarnation, a.id, a.kind, a.cause_key, a.status, a.opened_ms FROM alerts a
WHERE a.hub_id = $1 AND {LOST_ALERT.format(life="$2")} ORDER BY a.incarnation, a.id LIMIT 20
"""

# book movements of older incarnations ({life}: the current one) that no movement of the current one matched (the
# sensor observations are not: the restored hub re-books what its nodes' counters say it missed as a sensor gap)
_LOST = """
SELECT o.incarnation, o.id, o.ts_ms, o.sku, o.location, o.qty, o.reason, o.source_ref, o.leg FROM movements o
WHERE o.hub_id = $1 AND o.incarnation < {life} AND o.location NOT LIKE 'sensor:%' AND NOT EXISTS (
    SELECT 1 FROM movement_matches x WHERE x.hub_id = o.hub_id AND x.incarnation = {life}
    AND x.held_incarnation = o.incarnation AND x.held_id = o.id AND x.same)
"""
_LOST_LIST = f"SELECT *, count(*) OVER () AS total FROM ({_LOST.format(life='$2')}) l ORDER BY 1, 2 LIMIT 20"
_CONFLICTS = """
SELECT incarnation, id, sku, location, qty, source_ref, leg, held_incarnation, held_id FROM movement_matches
WHERE hub_id = $1 AND NOT same ORDER BY incarnation, id LIMIT 20
"""

# central's book stock as of the hub's snapshot ($2: its last id, $3: the current incarnation) vs the hub's own
# balances then (book locations, zero = absent): stock, less the current incarnation's movements after it, less the
# movements lost at the store, less those it booked again after it (their first copy is in stock), plus those central
# could not store (conflicts) up to it
_BOOK_DIFF = f"""
WITH lost AS ({_LOST.format(life="$3")}), adjust AS (
    SELECT sku, location, -qty AS qty FROM movements WHERE hub_id = $1 AND incarnation = $3 AND id > $2
    UNION ALL SELECT sku, location, -qty FROM lost
    UNION ALL SELECT sku, location, CASE WHEN same THEN -qty ELSE qty END FROM movement_matches
        WHERE hub_id = $1 AND incarnation = $3 AND ((same AND id > $2) OR (NOT same AND id <= $2))
), recent AS (
    SELECT sku, location, sum(qty) AS qty FROM adjust
    WHERE sku IS NOT NULL AND location NOT LIKE 'sensor:%' GROUP BY sku, location
), central AS (
    SELECT coalesce(s.sku, r.sku) AS sku, coalesce(s.location, r.location) AS location,
        coalesce(s.qty, 0) + coalesce(r.qty, 0) AS qty
    FROM (SELECT sku, location, qty FROM stock WHERE hub_id = $1 AND location NOT LIKE 'sensor:%') s
    FULL JOIN recent r ON r.sku = s.sku AND r.location = s.location
), hub AS (
    SELECT sku, location, qty FROM snapshot_book WHERE hub_id = $1 AND location NOT LIKE 'sensor:%'
)
SELECT coalesce(c.sku, h.sku) AS sku, coalesce(c.location, h.location) AS location,
    coalesce(c.qty, 0) AS central_qty, coalesce(h.qty, 0) AS hub_qty
FROM central c FULL JOIN hub h ON c.sku = h.sku AND c.location = h.location
WHERE coalesce(c.qty, 0) <> coalesce(h.qty, 0)
ORDER BY 1, 2 LIMIT 100
"""


@dataclass(slots=True)
class HubReport:
    hub_id: str
    store_id: str | None
    store_name: str | None
    region: str | None
    status: str
    first_contact_ms: int
    last_contact_ms: int
    incarnation: int  # the hub's ledger's newest (0: none heard of yet)
    snapshot_incarnation: int | None
    snapshot_sent_ms: int | None
    snapshot_last_movement_id: int | None
    movements_stored: int
    movements_max_id: int
    movements_complete_to: int
    rewind_after: int | None
    rewind_requested_ms: int | None
    rejected: int
    conflicts: int  # movements published that central could not store (movement_matches, not the same)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first missing, last missing) below the highest id
    missing_tail: tuple[int, int] | None = None  # ids the last snapshot had that central has not received yet
    book_compared: bool = False
    book_differences: list[dict[str, Any]] = field(default_factory=list)  # sku, location, central_qty, hub_qty
    lost_compared: bool = False  # central holds the current incarnation up to its snapshot: ``lost`` is known
    lost: int = 0  # movements of older incarnations the current one does not have: lost at the store, kept here
    lost_movements: list[dict[str, Any]] = field(default_factory=list)  # the first 20 (incarnation, id, ...)
    conflicting: list[dict[str, Any]] = field(default_factory=list)  # the first 20 conflicts
    lost_alerts: int = 0  # unresolved alerts of an earlier incarnation the current one does not have (LOST_ALERT)
    lost_alert_list: list[dict[str, Any]] = field(default_factory=list)  # the first 20 (incarnation, id, ...)

    @property
    def problems(self) -> list[str]:
        out = []
        if self.gaps:
            missing = sum(b - a + 1 for a, b in self.gaps)
            out.append(f"{missing} movement(s) missing in {len(self.gaps)} hole(s)")
        if self.missing_tail is not None:
            a, b = self.missing_tail
            out.append(f"movements {a}..{b} not received yet")
        if self.lost:
            out.append(
                f"{self.lost} book movement(s) of an earlier incarnation lost at the store, kept here (send them"
                " again from the POS / WMS with the same ids, or book them by hand)"
            )
        if self.lost_alerts:
            out.append(f"{self.lost_alerts} unresolved alert(s) of an earlier incarnation lost at the store")
        if self.conflicts:
            out.append(f"{self.conflicts} movement(s) not stored: another movement holds their source_ref/leg or id")
        if self.book_differences:
            out.append(f"book stock differs from the hub's on {len(self.book_differences)} SKU/location(s)")
        if self.rejected:
            out.append(f"{self.rejected} message(s) rejected")
        return out

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["problems"] = self.problems
        return d


async def report(conn: asyncpg.Connection) -> list[HubReport]:
    """Every hub's report, in one read-only transaction (one consistent view)."""
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        hubs = [HubReport(**dict(r)) for r in await conn.fetch(_HUBS)]
        gaps: dict[str, list[tuple[int, int]]] = {}
        for r in await conn.fetch("SELECT hub_id, first_missing, last_missing FROM movement_gaps ORDER BY 1, 2"):
            gaps.setdefault(r["hub_id"], []).append((r["first_missing"], r["last_missing"]))
        for h in hubs:
            h.gaps = gaps.get(h.hub_id, [])
            # a snapshot of an older incarnation (the newer one has sent none yet) says nothing of the current ids
            last = h.snapshot_last_movement_id if h.snapshot_incarnation == h.incarnation else None
            if last is not None and last > h.movements_max_id:
                h.missing_tail = (h.movements_max_id + 1, last)
            if last is not None and h.movements_complete_to >= last:
                h.book_compared = h.lost_compared = True
                h.book_differences = [dict(r) for r in await conn.fetch(_BOOK_DIFF, h.hub_id, last, h.incarnation)]
                lost = [dict(r) for r in await conn.fetch(_LOST_LIST, h.hub_id, h.incarnation)]
                h.lost = lost[0].pop("total") if lost else 0
                h.lost_movements = [{k: v for k, v in r.items() if k != "total"} for r in lost]
            if h.conflicts:
                h.conflicting = [dict(r) for r in await conn.fetch(_CONFLICTS, h.hub_id)]
            if h.lost_alerts:
                h.lost_alert_list = [dict(r) for r in await conn.fetch(_LOST_ALERTS, h.hub_id, h.incarnation)]
    return hubs


def format_report(hubs: list[HubReport], now_ms: int) -> list[str]:
    """One line per hub, problems after a colon."""
    if not hubs:
        return ["no hub has been heard from yet"]
    lines = []
    for h in hubs:
        where = f" ({h.store_name or h.store_id}{', ' + h.region if h.region else ''})" if h.store_id else ""
        age = max(0, now_ms - h.last_contact_ms) // 1000
        life = f"incarnation {h.incarnation}, " if h.incarnation > 1 else ""
        head = (
            f"{h.hub_id}{where}: {h.status}, last contact {age} s ago, {h.movements_stored} movement(s), {life}"
            f"complete to {h.movements_complete_to}"
        )
        problems = h.problems
        if not h.book_compared and h.snapshot_last_movement_id is not None:
            head += ", book not compared (movements up to the snapshot incomplete)"
            if h.incarnation > 1:
                head += ", nor what was lost at the store"
        lines.append(head + (": " + "; ".join(problems) if problems else ": ok"))
        for d in h.book_differences[:10]:
            lines.append(f"  {d['sku']} at {d['location']}: central {d['central_qty']}, hub {d['hub_qty']}")
        for m in h.lost_movements[:10]:
            lines.append(
                f"  lost at the store: incarnation {m['incarnation']} movement {m['id']}: {m['reason']} {m['qty']:+d} "
                f"{m['sku']} at {m['location']} ({m['source_ref']}, leg {m['leg']})"
            )
        for a in h.lost_alert_list[:10]:
            lines.append(
                f"  alert lost at the store: incarnation {a['incarnation']} alert {a['id']}: {a['kind']} "
                f"{a['cause_key']} ({a['status']})"
            )
        for c in h.conflicting[:10]:
            lines.append(
                f"  not stored: incarnation {c['incarnation']} movement {c['id']} ({c['source_ref']}, leg {c['leg']}: "
                f"{c['qty']:+d} {c['sku']} at {c['location']}) is held by incarnation {c['held_incarnation']} "
                f"movement {c['held_id']}"
            )
    return lines
