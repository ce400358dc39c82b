"""What the central page and API read: one definition per area, both use it (the page renders it, the API returns
it as JSON). Every query starts from ``visible``: the hubs the caller's ``Scope`` may see (every hub, or those whose
store is in one of the scope's regions: a hub with no store, or a store with no region, is seen only by roles that
see every store), narrowed by the optional ``store`` / ``hub`` filters; nothing is read but through it, so a region
manager's page or an API client of a region never holds a row of another region's store.

Pages of rows are **keyset** pages (``listing.py``): ``after`` is the last row's key, the next page starts after it
in the query's order. A page is ``limit`` rows and says whether there is more (one more row is read).

Definitions (the hub's, ``hub/web/pages/metrics.py`` and ``hub/web/pages/reorder_queries.py``, over the movements
and snapshots central holds):

* **book stock** of a SKU at a store: the sum of its movements at every book location (not ``sensor:*``), central's
  ``stock`` table; **observed**: the sum of the counts of the SKU's lanes in the hub's latest snapshot (None: no
  lane with a reading).
* **units sold** in a period: sales and order picks with ``start <= ts_ms <= end``, net of their reversals (a
  reversal counts in the period of the movement it reverses, entered no earlier than the period start);
  **shrink**: ``shrinkage`` write-offs likewise; **shrink rate** = shrink / sold x 100 (None without sales).
* **reorder**: a SKU with a reorder point or quantity whose book stock is at or below its reorder point; the
  suggested quantity is the reconciler's (``hub.reconcile.rules.reorder_quantity``). Unlike the hub's own reorder
  list, central does not subtract units in unresolved shrinkage alerts (it does not receive them).
* **a store's alerts**: its hub's current incarnation's (``hubs.incarnation``, the highest heard of): a ledger
  restored from a backup reuses alert ids, so central keeps each incarnation's apart. An unresolved alert of an older
  incarnation is not one of the store's open alerts: the stores list counts those lost at the store
  (``hub.central.check.LOST_ALERT``, listed by ``central check``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hub.central.check import LOST_ALERT
from hub.central.web.accounts import Scope
from hub.central.web.listing import DEFAULT_LIMIT as DEFAULT_LIMIT
from hub.central.web.listing import MAX_CURSOR as MAX_CURSOR
from hub.central.web.listing import MAX_LIMIT as MAX_LIMIT
from hub.central.web.listing import OFFLINE_AFTER_MS as OFFLINE_AFTER_MS
from hub.central.web.listing import VISIBLE, page_of
from hub.central.web.listing import Filters as Filters
from hub.central.web.listing import Page as Page
from hub.central.web.listing import decode_cursor as decode_cursor
from hub.central.web.listing import encode_cursor as encode_cursor
from hub.ledger.causes import SKU as SKU_CAUSE
from hub.ledger.models import Sku
from hub.reconcile.rules import reorder_quantity

if TYPE_CHECKING:
    import asyncpg

# -------------------------------------------------------------------------------------------------- stores


@dataclass(frozen=True, slots=True)
class StoreContact:
    hub_id: str
    store_id: str | None
    store_name: str | None
    region: str | None
    contact: str  # online | offline | silent | unknown
    status: str  # the hub's retained status: online | offline | unknown
    first_contact_ms: int
    last_contact_ms: int  # central's clock, the last message of any kind
    snapshot_sent_ms: int | None
    snapshot_received_ms: int | None
    movements_stored: int
    movements_complete_to: int  # every movement up to this id is at central
    movements_max_id: int
    movements_missing: int  # ids below movements_max_id central never received (the holes)
    gaps: int  # how many holes
    tail_missing: int  # movements the last snapshot had that central has not received yet
    movements_received_ms: int | None
    open_alerts: int  # unresolved alerts of the hub's current incarnation
    lost_alerts: int  # unresolved alerts of an earlier incarnation lost at the store (a restore)
    rejected: int  # messages of the hub refused (malformed, forged)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


_STORES = f"""
WITH {VISIBLE}, gaps AS (
    SELECT g.hub_id, count(*) AS n, sum(g.last_missing - g.first_missing + 1) AS missing
    FROM movement_gaps g WHERE g.hub_id IN (SELECT hub_id FROM visible) GROUP BY g.hub_id
)
SELECT v.hub_id, v.store_id, v.store_name, v.region, h.status, h.first_contact_ms, h.last_contact_ms,
    h.snapshot_sent_ms, h.snapshot_received_ms, h.snapshot_last_movement_id, h.movements_stored,
    h.movements_complete_to, h.movements_max_id, coalesce(g.missing, 0) AS missing, coalesce(g.n, 0) AS gaps,
    h.movements_received_ms,
    (SELECT count(*) FROM alerts a WHERE a.hub_id = v.hub_id AND a.incarnation = h.incarnation
        AND a.status <> 'resolved') AS open_alerts,
    (SELECT count(*) FROM alerts a WHERE a.hub_id = v.hub_id AND {LOST_ALERT.format(life="h.incarnation")})
        AS lost_alerts,
    (SELECT count(*) FROM rejected r WHERE r.hub_id = v.hub_id) AS rejected
FROM visible v JOIN hubs h USING (hub_id) LEFT JOIN gaps g USING (hub_id)
WHERE $4::text IS NULL OR v.hub_id > $4::text
ORDER BY v.hub_id LIMIT $5
"""


def contact_state(status: str, last_contact_ms: int, now_ms: int, offline_after_ms: int = OFFLINE_AFTER_MS) -> str:
    if status == "offline":
        return "offline"  # the hub said so, or the broker published its last will
    if now_ms - last_contact_ms > offline_after_ms:
        return "silent"
    return "online" if status == "online" else "unknown"


async def stores(
    conn: asyncpg.Connection, f: Filters, after: str | None, limit: int, now_ms: int, offline_after_ms: int
) -> Page:
    rows = await conn.fetch(_STORES, *f.params(), after, limit + 1)
    out = []
    for r in rows:
        last_snap = r["snapshot_last_movement_id"]
        tail = max(0, last_snap - r["movements_max_id"]) if last_snap is not None else 0
        out.append(
            StoreContact(
                r["hub_id"],
                r["store_id"],
                r["store_name"],
                r["region"],
                contact_state(r["status"], r["last_contact_ms"], now_ms, offline_after_ms),
                r["status"],
                r["first_contact_ms"],
                r["last_contact_ms"],
                r["snapshot_sent_ms"],
                r["snapshot_received_ms"],
                r["movements_stored"],
                r["movements_complete_to"],
                r["movements_max_id"],
                int(r["missing"]),
                r["gaps"],
                tail,
                r["movements_received_ms"],
                r["open_alerts"],
                r["lost_alerts"],
                r["rejected"],
            )
        )
    return page_of(out, limit, lambda s: (s.hub_id,))


# --------------------------------------------------------------------------------------------------- stock


@dataclass(frozen=True, slots=True)
class StockRow:
    sku: str
    name: str | None  # from the hub's snapshot (None: not in it)
    hub_id: str
    store_id: str | None
    store_name: str | None
    region: str | None
    book: int
    observed: int | None
    lanes: int
    observed_ms: int | None  # the latest lane reading in the snapshot
    reorder_point: int | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# ($4, $5): the last row's (sku, hub), $6 the SKU filter, $7 the limit
_KEYSET = "($4::text IS NULL OR ({0}sku, {0}hub_id) > ($4::text, $5::text)) AND ($6::text IS NULL OR {0}sku = $6::text)"
_STOCK = f"""
WITH {VISIBLE},
book AS (
    SELECT st.hub_id, st.sku, sum(st.qty) AS qty FROM stock st JOIN visible USING (hub_id)
    WHERE st.location NOT LIKE 'sensor:%' AND {_KEYSET.format("st.")} GROUP BY st.hub_id, st.sku
), observed AS (
    SELECT l.hub_id, l.sku, sum(l.count) AS qty, count(*) AS lanes, max(l.ts_ms) AS ts_ms
    FROM snapshot_lanes l JOIN visible USING (hub_id)
    WHERE l.sku IS NOT NULL AND {_KEYSET.format("l.")} GROUP BY l.hub_id, l.sku
), keys AS (
    SELECT hub_id, sku FROM book UNION SELECT hub_id, sku FROM observed
    UNION SELECT k.hub_id, k.sku FROM snapshot_skus k JOIN visible USING (hub_id) WHERE {_KEYSET.format("k.")}
)
SELECT k.sku, s.name, k.hub_id, v.store_id, v.store_name, v.region, coalesce(b.qty, 0) AS book, o.qty AS observed,
    coalesce(o.lanes, 0) AS lanes, o.ts_ms AS observed_ms, s.reorder_point
FROM keys k JOIN visible v USING (hub_id) LEFT JOIN book b USING (hub_id, sku) LEFT JOIN observed o USING (hub_id, sku)
    LEFT JOIN snapshot_skus s USING (hub_id, sku)
ORDER BY k.sku, k.hub_id LIMIT $7
"""


async def stock(
    conn: asyncpg.Connection, f: Filters, sku: str | None, after: tuple[str, str] | None, limit: int
) -> Page:
    a_sku, a_hub = after if after is not None else (None, None)
    rows = await conn.fetch(_STOCK, *f.params(), a_sku, a_hub, sku, limit + 1)
    out = [
        StockRow(
            r["sku"],
            r["name"],
            r["hub_id"],
            r["store_id"],
            r["store_name"],
            r["region"],
            int(r["book"]),
            None if r["observed"] is None else int(r["observed"]),
            r["lanes"],
            r["observed_ms"],
            r["reorder_point"],
        )
        for r in rows
    ]
    return page_of(out, limit, lambda s: (s.sku, s.hub_id))


# -------------------------------------------------------------------------------------------------- alerts

ALERT_STATUSES = ("unresolved", "open", "acknowledged")
ALERT_CURSOR = (int, str, int, int)  # an alerts cursor's key: opened_ms, hub_id, incarnation, id


@dataclass(frozen=True, slots=True)
class AlertRow:
    hub_id: str
    store_id: str | None
    store_name: str | None
    region: str | None
    id: int  # the hub's alert id
    incarnation: int  # of the hub's ledger (the current one): an alert id means something only with it
    kind: str
    cause_key: str
    status: str
    opened_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


_ALERTS = f"""
WITH {VISIBLE}
SELECT v.hub_id, v.store_id, v.store_name, v.region, a.id, a.incarnation, a.kind, a.cause_key, a.status,
    a.opened_ms, a.acknowledged_ms, a.acknowledged_by
FROM alerts a JOIN visible v USING (hub_id) JOIN hubs h ON h.hub_id = a.hub_id AND h.incarnation = a.incarnation
WHERE a.status <> 'resolved' AND ($4::text = 'unresolved' OR a.status = $4::text)
    AND ($5::text IS NULL OR a.kind = $5::text)
    AND ($6::bigint IS NULL
        OR (a.opened_ms, a.hub_id, a.incarnation, a.id) < ($6::bigint, $7::text, $8::bigint, $9::bigint))
ORDER BY a.opened_ms DESC, a.hub_id DESC, a.incarnation DESC, a.id DESC LIMIT $10
"""


async def alerts(
    conn: asyncpg.Connection,
    f: Filters,
    status: str,
    kind: str | None,
    after: tuple[int, str, int, int] | None,
    limit: int,
) -> Page:
    """Unresolved alerts (``status``: unresolved, open or acknowledged) of each hub's current incarnation, newest
    first; ``after``: (opened_ms, hub_id, incarnation, id)."""
    a = after if after is not None else (None, None, None, None)
    rows = await conn.fetch(_ALERTS, *f.params(), status, kind, *a, limit + 1)
    out = [AlertRow(*r) for r in rows]
    return page_of(out, limit, lambda r: (r.opened_ms, r.hub_id, r.incarnation, r.id))


# -------------------------------------------------------------------------------------------------- shrink


@dataclass(frozen=True, slots=True)
class ShrinkRow:
    hub_id: str
    store_id: str | None
    store_name: str | None
    region: str | None
    sku: str | None  # None: the store's total
    name: str | None
    sold: int
    shrink: int

    @property
    def rate_pct(self) -> float | None:
        return None if self.sold <= 0 else 100 * self.shrink / self.sold

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rate_pct"] = None if self.rate_pct is None else round(self.rate_pct, 3)
        if self.sku is None:
            del out["sku"], out["name"]
        return out


# a reversal counts in the period of what it reverses (hub/web/pages/metrics.py, IN_PERIOD); $4 start, $5 end.
# Ids repeat across a hub's incarnations (a ledger restored from a backup): a reversal is matched within its own.
_IN_PERIOD = """
WITH {visible}, legs AS (
    SELECT m.hub_id, m.sku, m.reason, m.qty FROM movements m JOIN visible USING (hub_id)
        -- the reversed movement: in the reversal's own incarnation, or where central holds it when a ledger
        -- restored from a backup published it again (movement_matches: stored once, under the older incarnation)
        LEFT JOIN movement_matches mm ON mm.hub_id = m.hub_id AND mm.incarnation = m.incarnation
            AND mm.id = m.reverses_id
        LEFT JOIN movements o ON o.hub_id = m.hub_id AND o.incarnation = coalesce(mm.held_incarnation, m.incarnation)
            AND o.id = coalesce(mm.held_id, m.reverses_id)
    WHERE m.reason IN ('sale', 'order_pick', 'shrinkage') AND m.sku IS NOT NULL AND m.ts_ms >= $4::bigint
        AND ((m.reverses_id IS NULL AND m.ts_ms <= $5::bigint)
             OR (m.reverses_id IS NOT NULL AND o.ts_ms BETWEEN $4::bigint AND $5::bigint))
        {more}
), sums AS (
    SELECT hub_id, {group} AS sku, -coalesce(sum(qty) FILTER (WHERE reason IN ('sale', 'order_pick')), 0) AS sold,
        -coalesce(sum(qty) FILTER (WHERE reason = 'shrinkage'), 0) AS shrink
    FROM legs GROUP BY hub_id{group_by}
)
SELECT v.hub_id, v.store_id, v.store_name, v.region, x.sku, {name} AS name, x.sold, x.shrink
FROM sums x JOIN visible v USING (hub_id)
WHERE x.sold <> 0 OR x.shrink <> 0
ORDER BY {order} LIMIT {limit}
"""
_SHRINK_BY_SKU = _IN_PERIOD.format(
    visible=VISIBLE,
    more="AND ($6::text IS NULL OR (m.hub_id, m.sku) > ($6::text, $7::text))"
    " AND ($8::text IS NULL OR m.sku = $8::text)",
    group="sku",
    group_by=", sku",
    name="(SELECT s.name FROM snapshot_skus s WHERE s.hub_id = x.hub_id AND s.sku = x.sku)",
    order="v.hub_id, x.sku",
    limit="$9",
)
_SHRINK_BY_STORE = _IN_PERIOD.format(
    visible=VISIBLE,
    more="AND ($6::text IS NULL OR m.hub_id > $6::text) AND ($7::text IS NULL OR m.sku = $7::text)",
    group="NULL::text",
    group_by="",
    name="NULL::text",
    order="v.hub_id",
    limit="$8",
)


def _shrink_row(r: Any) -> ShrinkRow:
    return ShrinkRow(
        r["hub_id"], r["store_id"], r["store_name"], r["region"], r["sku"], r["name"], int(r["sold"]), int(r["shrink"])
    )


async def shrink_by_sku(
    conn: asyncpg.Connection,
    f: Filters,
    start_ms: int,
    end_ms: int,
    sku: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> Page:
    """Per store and SKU (those that sold or lost anything in ``[start_ms, end_ms]``), by store then SKU."""
    a = after if after is not None else (None, None)
    rows = await conn.fetch(_SHRINK_BY_SKU, *f.params(), start_ms, end_ms, *a, sku, limit + 1)
    return page_of([_shrink_row(r) for r in rows], limit, lambda s: (s.hub_id, s.sku))


async def shrink_by_store(
    conn: asyncpg.Connection,
    f: Filters,
    start_ms: int,
    end_ms: int,
    sku: str | None,
    after: tuple[str] | None,
    limit: int,
) -> Page:
    """Per store, its totals over every SKU (or ``sku``) in ``[start_ms, end_ms]``."""
    rows = await conn.fetch(
        _SHRINK_BY_STORE, *f.params(), start_ms, end_ms, after[0] if after else None, sku, limit + 1
    )
    return page_of([_shrink_row(r) for r in rows], limit, lambda s: (s.hub_id,))


# ------------------------------------------------------------------------------------------------ reorders


@dataclass(frozen=True, slots=True)
class ReorderRow:
    sku: str
    name: str
    hub_id: str
    store_id: str | None
    store_name: str | None
    region: str | None
    book: int
    observed: int | None
    reorder_point: int
    reorder_qty: int
    suggested_qty: int
    alert_id: int | None  # the hub's unresolved reorder alert of the SKU, if any
    alert_status: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


_REORDERS = f"""
WITH {VISIBLE},
book AS (
    SELECT st.hub_id, st.sku, sum(st.qty) AS qty FROM stock st JOIN visible USING (hub_id)
    WHERE st.location NOT LIKE 'sensor:%' AND {_KEYSET.format("st.")} GROUP BY st.hub_id, st.sku
), lanes AS (
    SELECT l.hub_id, l.sku, count(*) AS n, sum(l.count) AS qty FROM snapshot_lanes l JOIN visible USING (hub_id)
    WHERE l.sku IS NOT NULL AND {_KEYSET.format("l.")} GROUP BY l.hub_id, l.sku
)
SELECT k.sku, k.name, k.hub_id, v.store_id, v.store_name, v.region, coalesce(b.qty, 0) AS book, l.qty AS observed,
    k.reorder_point, k.reorder_qty, k.capacity, coalesce(l.n, 0) AS lanes, a.id AS alert_id, a.status AS alert_status
FROM snapshot_skus k JOIN visible v USING (hub_id) LEFT JOIN book b USING (hub_id, sku)
    LEFT JOIN lanes l USING (hub_id, sku)
    LEFT JOIN LATERAL (
        SELECT a.id, a.status FROM alerts a JOIN hubs h ON h.hub_id = a.hub_id AND h.incarnation = a.incarnation
        WHERE a.hub_id = k.hub_id AND a.kind = 'reorder'
            AND a.cause_key = $8::text || k.sku AND a.status <> 'resolved' ORDER BY a.id DESC LIMIT 1
    ) a ON true
WHERE (k.reorder_point > 0 OR k.reorder_qty > 0) AND coalesce(b.qty, 0) <= k.reorder_point
    AND {_KEYSET.format("k.")}
ORDER BY k.sku, k.hub_id LIMIT $7
"""


async def reorders(
    conn: asyncpg.Connection, f: Filters, sku: str | None, after: tuple[str, str] | None, limit: int
) -> Page:
    """SKUs at or below their reorder point, by SKU then store."""
    a_sku, a_hub = after if after is not None else (None, None)
    rows = await conn.fetch(_REORDERS, *f.params(), a_sku, a_hub, sku, limit + 1, SKU_CAUSE)
    out = []
    for r in rows:
        book = int(r["book"])
        rule = Sku(
            r["sku"],
            r["name"],
            0,
            reorder_point=r["reorder_point"],
            reorder_qty=r["reorder_qty"],
            capacity=r["capacity"],
        )
        out.append(
            ReorderRow(
                r["sku"],
                r["name"],
                r["hub_id"],
                r["store_id"],
                r["store_name"],
                r["region"],
                book,
                None if r["observed"] is None else int(r["observed"]),
                r["reorder_point"],
                r["reorder_qty"],
                reorder_quantity(rule, book, r["lanes"]),
                r["alert_id"],
                r["alert_status"],
            )
        )
    return page_of(out, limit, lambda s: (s.sku, s.hub_id))


async def visible_stores(conn: asyncpg.Connection, scope: Scope) -> list[tuple[str, str, str | None]]:
    """(store id, name, region) of every store the scope may see, for the pages' filters."""
    rows = await conn.fetch(
        "SELECT store_id, name, region FROM stores WHERE $1::text[] IS NULL OR region = ANY($1::text[])"
        " ORDER BY name, store_id",
        scope.sql_regions(),
    )
    return [(r[0], r[1], r[2]) for r in rows]
