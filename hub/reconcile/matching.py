"""The allocation of sensor-removed units to the units that explain them. Pure and deterministic.

Per SKU, in two passes:

1. **Put-backs** (per lane): puts are taken in time order; a put whose weight fits the lane's SKU cancels units
   of picks *on the same lane* made at most ``putback_ms`` before it, newest pick first (the shopper who just
   took one puts it back) -- but only if the put is not larger than those outstanding units: a bigger put is a
   restock, and cancels nothing.
2. **Sales and order picks** (any lane of the SKU): sale units are taken in time order and each goes to the
   earliest pick that still has unexplained units and lies in ``[sale - window_ms, sale + lead_ms]`` (FIFO).
   With one window length for all sales, this greedy choice explains as many units as any allocation can.

Ties are broken by movement id, so the same inputs always give the same matches.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

PUT_BACK = "put_back"


@dataclass(frozen=True, slots=True)
class Match:
    pick_id: int
    by_id: int  # the sale, order pick or put that explains the units
    kind: str  # "sale" | "order_pick" | "put_back"
    units: int
    lag_ms: int  # explaining movement's time minus the pick's


@dataclass(slots=True)
class Pick:
    id: int
    ts_ms: int
    sku: str
    lane_id: str
    remaining: int  # units not yet explained
    matches: list[Match] = field(default_factory=list)


@dataclass(slots=True)
class Credit:
    """Units that can explain picks: a sale or order pick (any lane of its SKU) or a put-back (its lane only)."""

    id: int
    ts_ms: int
    kind: str
    sku: str
    lane_id: str | None  # puts only
    remaining: int


def _take(pick: Pick, credit: Credit, units: int) -> None:
    pick.remaining -= units
    credit.remaining -= units
    pick.matches.append(Match(pick.id, credit.id, credit.kind, units, credit.ts_ms - pick.ts_ms))


def apply_put_backs(picks: list[Pick], puts: Iterable[Credit], putback_ms: int) -> None:
    """Pass 1 (mutates ``remaining`` and ``matches``). ``puts`` must fit their lane's SKU."""
    by_lane: dict[tuple[str, str], list[Pick]] = defaultdict(list)
    for p in picks:
        by_lane[(p.sku, p.lane_id)].append(p)
    for lane_picks in by_lane.values():
        lane_picks.sort(key=lambda p: (p.ts_ms, p.id))
    times = {key: [p.ts_ms for p in ps] for key, ps in by_lane.items()}
    for put in sorted(puts, key=lambda c: (c.ts_ms, c.id)):
        assert put.lane_id is not None
        key = (put.sku, put.lane_id)
        if not by_lane.get(key) or put.remaining <= 0:
            continue
        lane_picks = by_lane[key]
        ts = times[key]
        lo = bisect.bisect_left(ts, put.ts_ms - putback_ms)
        hi = bisect.bisect_right(ts, put.ts_ms)
        outstanding = sum(p.remaining for p in lane_picks[lo:hi])
        if outstanding == 0 or put.remaining > outstanding:
            continue  # a restock (or a put of something else), not a put-back
        for p in reversed(lane_picks[lo:hi]):
            if put.remaining == 0:
                break
            if p.remaining > 0:
                _take(p, put, min(p.remaining, put.remaining))


def apply_sales(picks: list[Pick], sales: Iterable[Credit], window_ms: int, lead_ms: int) -> None:
    """Pass 2 (mutates ``remaining`` and ``matches``): FIFO within the window, per SKU."""
    by_sku: dict[str, list[Pick]] = defaultdict(list)
    for p in picks:
        if p.remaining > 0:
            by_sku[p.sku].append(p)
    sales_by_sku: dict[str, list[Credit]] = defaultdict(list)
    for s in sales:
        if s.remaining > 0 and s.sku in by_sku:
            sales_by_sku[s.sku].append(s)
    for sku, sku_sales in sales_by_sku.items():
        sku_picks = sorted(by_sku[sku], key=lambda p: (p.ts_ms, p.id))
        sku_sales.sort(key=lambda c: (c.ts_ms, c.id))
        pool: deque[Pick] = deque()
        i = 0
        for sale in sku_sales:
            while i < len(sku_picks) and sku_picks[i].ts_ms <= sale.ts_ms + lead_ms:
                pool.append(sku_picks[i])
                i += 1
            while pool and (pool[0].remaining == 0 or pool[0].ts_ms < sale.ts_ms - window_ms):
                pool.popleft()
            while sale.remaining > 0 and pool:
                p = pool[0]
                _take(p, sale, min(p.remaining, sale.remaining))
                if p.remaining == 0:
                    pool.popleft()


def allocate(
    picks: list[Pick], puts: Iterable[Credit], sales: Iterable[Credit], *, window_ms: int, lead_ms: int, putback_ms: int
) -> None:
    """Both passes: put-backs first (sales explain what is left, net of put-backs), then sales."""
    apply_put_backs(picks, puts, putback_ms)
    apply_sales(picks, sales, window_ms, lead_ms)
