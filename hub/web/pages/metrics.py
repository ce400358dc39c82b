"""The report figures, as functions over a read-only sqlite3 connection (no Flask): shrink rate, sell-through,
sales velocity and days of cover, out-of-stock minutes per lane (the reorder list: ``reorder_queries``).

Definitions (hub/web/README.md, "Reports"):

* **units sold** in a period: sales and order picks (both take stock out to a customer) with ``start <= ts_ms <=
  end``, net of their reversals (a reversal leg has the same reason and the opposite sign; it counts in the period of
  the movement it reverses, whenever it was entered).
* **shrink units**: ``shrinkage`` write-offs in the period, net of reversals. By lane when the write-off was booked
  at ``lane:<id>``, or when it resolved a shrinkage alert about a lane (``writeoff:alert<id>``, cause key
  ``lane:<lane>/<sku>``); anything else (a write-off in the backroom) is not attributable to a lane.
* **shrink rate** = shrink units / units sold x 100 (None without sales).
* **on hand at the period end**: book stock at every book location (balances, less movements dated after the end);
  negative book stock counts as 0.
* **sell-through** = sold / (sold + on hand at the end) x 100; **velocity** = sold / days of the period;
  **days of cover** = on hand / velocity (None: no sales).
* **out-of-stock time** of a lane: how long its observed count (running sum of the ``sensor:<lane>`` movements of
  the SKU the lane held at that moment, by ``ts_ms``, as the overview and the shelf page count it) was <= 0 within
  the period, including an outage still going on at the period end. A lane re-assigned to another SKU counts each
  SKU only while it was the lane's (the ``assign_lane`` audit entries); the time of a SKU starts at its first sensor
  movement on the lane; None for a lane with no sensor movement of any of its SKUs up to the end.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from hub.ledger.causes import Cause
from hub.ledger.lane_activity import MAX_TS, lane_rows_sql
from hub.ledger.models import LANE_PREFIX, SENSOR_PREFIX, SENSOR_REASONS, Reason
from hub.ledger.sold_hours import sold_between

DAY_MS = 86_400_000
PERIOD_DAYS = (7, 30, 90)
DEFAULT_DAYS = 30
SOLD_REASONS = ("sale", "order_pick")
# Recent retail surveys (NRF National Retail Security Survey 2023: 1.6 % for 2022, 1.4 % for 2021): shrink as a
# share of sales *by value*. Here it is by units (SKUs carry no price), so the comparison is a rough guide.
INDUSTRY_SHRINK_PCT = (1.4, 1.6)

_ALERT_WRITEOFF = re.compile(r"writeoff:alert(\d+)")


@dataclass(frozen=True, slots=True)
class Period:
    start_ms: int
    end_ms: int
    days: int


def period(days: int, now_ms: int) -> Period:
    """The last ``days`` days up to ``now_ms`` (both ends included)."""
    if days <= 0:
        raise ValueError("days must be positive")
    return Period(now_ms - days * DAY_MS, now_ms, days)


def pct(part: int, whole: int) -> float | None:
    return None if whole <= 0 else 100 * part / whole


def velocity(sold: int, days: int) -> float:
    return sold / days


def days_of_cover(on_hand: int, per_day: float) -> float | None:
    """Days the stock on hand lasts at ``per_day``; None when nothing sells (not infinity)."""
    if per_day <= 0:
        return None
    return max(on_hand, 0) / per_day


def sell_through(sold: int, on_hand: int) -> float | None:
    return pct(sold, sold + max(on_hand, 0))


# ---------------------------------------------------------------------------------------------------- sales


Sales = dict[tuple[str, str], int]  # (sku, location) -> units sold (net of reversals)


# A movement belongs to the period of its own time, a reversal to the period of what it reverses (it is dated when
# it was entered: undoing a sale of last month must not make this month's sales negative). Every leg at or after the
# period start is read once (the reason / time index), a reversal's original by its primary key.
IN_PERIOD = (
    "m.ts_ms >= ? AND ((m.reverses_id IS NULL AND m.ts_ms <= ?) OR (m.reverses_id IS NOT NULL"
    " AND (SELECT o.ts_ms FROM movements AS o WHERE o.id = m.reverses_id) BETWEEN ? AND ?))"
)


def in_period_args(p: Period) -> tuple[int, int, int, int]:
    return (p.start_ms, p.end_ms, p.start_ms, p.end_ms)


def sales(conn: sqlite3.Connection, p: Period, skus: Collection[str] | None = None) -> Sales:
    """Units sold in the period per SKU and the location they were booked from: two running totals per SKU and
    location and at most two hours of movements (``hub.ledger.sold_hours``, kept by the writer), not every sale of
    the period. Pairs that sold nothing net are left out; with ``skus``, only those SKUs are read."""
    return sold_between(conn, p.start_ms, p.end_ms, skus)


@dataclass(frozen=True, slots=True)
class SoldUnits:
    """Units sold in a period as the reports show them: per SKU, per lane (booked from ``lane:<id>``), and from
    other locations (``split_sales``; the page splits them once for all its tables)."""

    by_sku: dict[str, int]
    by_lane: dict[str, int]
    other: int


def split_sales(sold: Sales) -> SoldUnits:
    by_sku: dict[str, int] = {}
    by_lane: dict[str, int] = {}
    other = 0
    cut = len(LANE_PREFIX)
    for (sku, location), n in sold.items():
        by_sku[sku] = by_sku.get(sku, 0) + n
        if location.startswith(LANE_PREFIX):
            lane_id = location[cut:]
            by_lane[lane_id] = by_lane.get(lane_id, 0) + n
        else:
            other += n
    return SoldUnits(by_sku, by_lane, other)


def sold_units(conn: sqlite3.Connection, p: Period, sold: Sales | SoldUnits | None) -> SoldUnits:
    """``sold`` split (read for the period when None)."""
    if isinstance(sold, SoldUnits):
        return sold
    return split_sales(sales(conn, p) if sold is None else sold)


def sold_by_sku(sold: Sales) -> dict[str, int]:
    out: dict[str, int] = {}
    for (sku, _location), n in sold.items():
        out[sku] = out.get(sku, 0) + n
    return out


# --------------------------------------------------------------------------------------------------- shrink


# The report's lines (thousands per report: one per SKU, per lane) are named tuples: as immutable as a frozen
# dataclass, and built at a fraction of its cost.
class ShrinkLine(NamedTuple):
    key: str  # SKU, lane id, or "" (store total / not attributable)
    sku: str | None  # by lane: the lane's SKU now
    sold: int
    shrink: int

    @property
    def rate_pct(self) -> float | None:
        return pct(self.shrink, self.sold)


@dataclass(frozen=True, slots=True)
class ShrinkReport:
    by_sku: list[ShrinkLine]
    by_lane: list[ShrinkLine]
    unattributed: ShrinkLine  # shrink not attributable to a lane; sales booked from no lane
    total: ShrinkLine


def _alert_lanes(conn: sqlite3.Connection, alert_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(alert_ids))
    if not ids:
        return {}
    ph = ", ".join("?" * len(ids))
    found = {}
    for alert_id, key in conn.execute(f"SELECT id, cause_key FROM alerts WHERE id IN ({ph})", ids):
        cause = Cause.parse_or_none(key)
        if cause is not None and cause.lane_id is not None:
            found[alert_id] = cause.lane_id
    return found


def shrink_report(conn: sqlite3.Connection, p: Period, sold: Sales | SoldUnits | None = None) -> ShrinkReport:
    units = sold_units(conn, p, sold)
    # a reversal is attributed like the write-off it reverses
    writeoffs = conn.execute(
        "SELECT m.sku, m.location, coalesce(o.source_ref, m.source_ref), -m.qty FROM movements AS m"
        " LEFT JOIN movements AS o ON o.id = m.reverses_id"
        f" WHERE m.reason = 'shrinkage' AND {IN_PERIOD}",
        in_period_args(p),
    ).fetchall()
    alert_of = {}
    for _sku, _loc, ref, _n in writeoffs:
        match = _ALERT_WRITEOFF.fullmatch(ref)
        if match:
            alert_of[ref] = int(match.group(1))
    alert_lane = _alert_lanes(conn, alert_of.values())
    sku_shrink: dict[str, int] = {}
    lane_shrink: dict[str, int] = {}
    unattributed = 0
    for sku, location, ref, n in writeoffs:
        sku_shrink[sku] = sku_shrink.get(sku, 0) + n
        on_lane = location.startswith(LANE_PREFIX)
        lane = location[len(LANE_PREFIX) :] if on_lane else alert_lane.get(alert_of.get(ref, -1))
        if lane is None:
            unattributed += n
        else:
            lane_shrink[lane] = lane_shrink.get(lane, 0) + n
    sold_sku, sold_lane = units.by_sku, units.by_lane
    skus = sorted({str(r[0]) for r in conn.execute("SELECT sku FROM skus")} | set(sold_sku) | set(sku_shrink))
    by_sku = [ShrinkLine(s, s, sold_sku.get(s, 0), sku_shrink.get(s, 0)) for s in skus]
    lane_sku: dict[str, str | None] = dict(conn.execute("SELECT lane_id, sku FROM lanes"))
    by_lane = [
        ShrinkLine(lane, lane_sku.get(lane), sold_lane.get(lane, 0), lane_shrink.get(lane, 0))
        for lane in sorted(set(lane_sku) | set(sold_lane) | set(lane_shrink))
    ]
    total = ShrinkLine("", None, sum(sold_sku.values()), sum(sku_shrink.values()))
    return ShrinkReport(by_sku, by_lane, ShrinkLine("", None, units.other, unattributed), total)


# ------------------------------------------------------------------------------ sell-through, velocity, cover


class SkuFlow(NamedTuple):
    sku: str
    name: str
    sold: int
    on_hand: int  # book stock at the period end (may be negative: the ledger records what happened)
    days: int

    @property
    def sell_through_pct(self) -> float | None:
        return sell_through(self.sold, self.on_hand)

    @property
    def per_day(self) -> float:
        return velocity(self.sold, self.days)

    @property
    def days_of_cover(self) -> float | None:
        return days_of_cover(self.on_hand, self.per_day)


# Book stock: per SKU (with its name, in the ledger's SKUS order) today's balances at book locations, and the book
# movements dated after a moment, by their reason (a movement's reason is a sensor one exactly when its location is
# a sensor location: the movements' CHECK) and time: the few legs after the period end, not a seek per SKU.
_BOOK_NOW = (
    "SELECT s.sku, s.name, coalesce((SELECT sum(b.qty) FROM balances AS b WHERE b.sku = s.sku"
    " AND b.location NOT GLOB 'sensor:*'), 0) FROM skus AS s ORDER BY s.sku"
)
_BOOK_REASONS = ", ".join(f"'{r.value}'" for r in Reason if r not in SENSOR_REASONS)
_BOOK_LATER = f"SELECT sku, sum(qty) FROM movements WHERE reason IN ({_BOOK_REASONS}) AND ts_ms > ? GROUP BY sku"


def _book_later(conn: sqlite3.Connection, end_ms: int) -> dict[str, int]:
    return {sku: int(n) for sku, n in conn.execute(_BOOK_LATER, (end_ms,))}


def book_on_hand_at(conn: sqlite3.Connection, end_ms: int) -> dict[str, int]:
    """Book stock per SKU at ``end_ms``: today's balances less the book movements dated after it."""
    later = _book_later(conn, end_ms)
    return {sku: int(now) - later.get(sku, 0) for sku, _name, now in conn.execute(_BOOK_NOW)}


def sku_flows(conn: sqlite3.Connection, p: Period, sold: Sales | SoldUnits | None = None) -> list[SkuFlow]:
    by_sku = sold_units(conn, p, sold).by_sku
    later = _book_later(conn, p.end_ms)
    return [
        SkuFlow(sku, name, by_sku.get(sku, 0), int(now) - later.get(sku, 0), p.days)
        for sku, name, now in conn.execute(_BOOK_NOW)
    ]


# ------------------------------------------------------------------------------------------- out of stock


def out_of_stock_ms(opening: int, steps: Iterable[tuple[int, int]], start_ms: int, end_ms: int) -> int:
    """Milliseconds within [start, end] during which the running count was <= 0.

    ``opening`` is the count at ``start_ms``; ``steps`` are (ts_ms, qty) in time order with start <= ts <= end.
    """
    out = 0
    t, balance = start_ms, opening
    for ts, qty in steps:
        if balance <= 0:
            out += ts - t
        t, balance = ts, balance + qty
    if balance <= 0:
        out += end_ms - t
    return out


class LaneOutage(NamedTuple):
    lane_id: str
    sku: str | None
    out_ms: int | None  # None: the lane reported nothing up to the period end
    count_at_end: int
    out_now: bool

    @property
    def minutes(self) -> float | None:
        return None if self.out_ms is None else self.out_ms / 60_000


def assignments(conn: sqlite3.Connection, until_ms: int) -> dict[str, list[tuple[int, str | None]]]:
    """Per lane, (from ms, SKU) for each assignment up to ``until_ms``, oldest first: every ``assign_lane`` is audited
    in its transaction, and each such audit entry kept in ``lane_assignments`` (migration 17), in time order."""
    out: dict[str, list[tuple[int, str | None]]] = {}
    for ts_ms, lane_id, sku in conn.execute(
        "SELECT ts_ms, lane_id, sku FROM lane_assignments WHERE ts_ms <= ? ORDER BY ts_ms, id", (until_ms,)
    ):
        out.setdefault(str(lane_id), []).append((int(ts_ms), sku))
    return out


def _segments(history: list[tuple[int, str | None]], current: str | None, p: Period) -> list[tuple[int, int, str]]:
    """The lane's (start, end, SKU) stretches within the period: a SKU counts only while it was the lane's. A lane
    with no audited assignment (e.g. registered before the audit kept them) holds its current SKU throughout."""
    if not history:
        return [(p.start_ms, p.end_ms, current)] if current is not None else []
    out = []
    for i, (since, sku) in enumerate(history):
        until = history[i + 1][0] if i + 1 < len(history) else p.end_ms
        # the first assignment holds from the start: events stamped by the node before it was recorded are its own
        a, b = (p.start_ms if i == 0 else max(since, p.start_ms)), min(until, p.end_ms)
        if sku is not None and a < b:
            out.append((a, b, sku))
    return out


# The time within [?1, ?2] of the ended out-of-stock stretches of a lane and SKU ({loc}, {sku}). The stretches of one
# lane and SKU never overlap, so the ones that reach into the period are those ending after its start (and starting
# before its end): one range of the index by lane, SKU and end (migration 17), however long the history.
_ENDED = (
    "SELECT sum(min(o.to_ts, ?2) - max(o.from_ts, ?1)) FROM lane_outages AS o INDEXED BY lane_outages_lane_to"
    " WHERE o.location = {loc} AND o.sku = {sku} AND o.to_ts > ?1 AND o.from_ts < ?2"
)
# Every lane with its SKU now, in one pass: that SKU's first and last sensor movement on the lane and the start of an
# outage going on (``lane_activity``), the observed count now (the sensor balance), the ended stretches' time.
_LANES = (
    "SELECT l.lane_id, l.sku, a.first_ts, a.last_ts, a.out_since, coalesce(b.qty, 0),"
    f" ({_ENDED.format(loc='a.location', sku='a.sku')})"
    " FROM lanes AS l LEFT JOIN lane_activity AS a ON a.location = 'sensor:' || l.lane_id AND a.sku = l.sku"
    " LEFT JOIN balances AS b ON b.sku = l.sku AND b.location = 'sensor:' || l.lane_id ORDER BY l.lane_id"
)
_HELD = (
    "SELECT a.first_ts, a.last_ts, a.out_since, coalesce((SELECT b.qty FROM balances AS b WHERE b.sku = ?4"
    f" AND b.location = ?3), 0), ({_ENDED.format(loc='?3', sku='?4')})"
    " FROM lane_activity AS a WHERE a.location = ?3 AND a.sku = ?4"
)
_LATER = lane_rows_sql("coalesce(sum(m.qty), 0)", " AND m.sku = ?4")


def _held(
    conn: sqlite3.Connection,
    lane_id: str,
    sku: str,
    start: int,
    end: int,
    first: int | None,
    last: int,
    since: int | None,
    observed: int,
    ended: int | None,
) -> tuple[int, int] | None:
    """(Out-of-stock ms, count just before ``end``) of ``sku`` on the lane from ``start`` to ``end``: from the first
    and last time of its sensor movements on the lane and the start of an outage going on (its ``lane_activity``;
    ``first`` None if it has none), its observed count now and the ended stretches' time (``_LANES``, ``_HELD``).
    None before its first sensor movement on the lane: no count to speak of, nothing to say."""
    if first is None or first >= end:
        return None
    out = ended or 0
    if since is not None and since < end:  # the stretch going on
        out += end - max(since, start)
    if last >= end:  # the count just before ``end``: all but what is dated later
        later = conn.execute(_LATER, (SENSOR_PREFIX + lane_id, end, MAX_TS, sku)).fetchone()[0]
        observed -= int(later)
    return out, observed


def lane_outages(conn: sqlite3.Connection, p: Period) -> list[LaneOutage]:
    """Per lane, the time its SKU of the moment was out. The ledger's writer keeps, per lane and SKU, the stretches
    during which the count was at or below zero (``lane_outages``, and ``lane_activity.out_since`` for one still going
    on: ``hub.ledger.lane_activity``), so a stretch of one assignment costs the overlap of a few stretches with it,
    however many movements the lane had: exactly the walk of the movements the stretches were made from. The lanes
    that held their SKU of now throughout the period (most) are read together in one query (``_LANES``); a lane
    re-assigned in it, stretch by stretch of one SKU (``_HELD``)."""
    start, end = p.start_ms, p.end_ms
    history = assignments(conn, end)
    result = []
    for lane_id, sku, first, last, since, observed, ended in conn.execute(_LANES, (start, end)):
        assigned = history.get(lane_id)
        if assigned is None or (len(assigned) == 1 and assigned[0][1] == sku):
            segments = None  # the SKU of now throughout (one assignment holds from the period start)
        else:
            segments = _segments(assigned, sku, p)
        if sku is not None and (segments is None or segments == [(start, end, sku)]):
            got = _held(conn, lane_id, sku, start, end, first, last, since, observed, ended)
            total, end_count = (None, 0) if got is None else got
        else:
            total, end_count = None, 0
            location = SENSOR_PREFIX + lane_id
            for a, b, held in segments or ():
                row = conn.execute(_HELD, (a, b, location, held)).fetchone()
                got = None if row is None else _held(conn, lane_id, held, a, b, *row)
                if got is not None:
                    total = (total or 0) + got[0]
                    end_count = got[1]
            if sku is None:
                end_count = 0
        result.append(
            LaneOutage(lane_id, sku, total, end_count, total is not None and sku is not None and end_count <= 0)
        )
    return result
