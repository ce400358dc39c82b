"""Reports and the reorder list: every figure computed by hand from a small ledger with known timestamps, then the
pages and the CSV (hub/web/pages/metrics.py, hub/web/pages/reports.py)."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.ledger import LedgerService, Reason, SensorGap, Sku, WriteOff
from hub.ledger.models import now_ms
from hub.reconcile import ReconcileConfig
from hub.reconcile.reconciler import Reconciler
from hub.schema import MIGRATIONS
from hub.web.pages import metrics, reorder_queries
from tests.web_support import Env

D = 86_400_000
H = 3_600_000
MIN = 60_000


@dataclass(frozen=True)
class Built:
    db: Path
    now: int  # the report's "now"; every movement is dated before it
    start: int  # start of the 7-day period


async def _build(db: Path, now: int) -> None:
    s = now - 7 * D
    async with LedgerService(db, migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
        await ledger.add_sku(Sku("COLA", "Cola", 3500, reorder_point=6, reorder_qty=24, capacity=30), actor="t")
        await ledger.add_sku(Sku("TEA", "Tea", 1200, reorder_point=5, reorder_qty=12, capacity=20), actor="t")
        await ledger.add_sku(Sku("SOUP", "Soup", 4000), actor="t")  # no lane, no reorder point
        await ledger.add_sku(Sku("SALT", "Salt", 1000, reorder_point=5, capacity=8), actor="t")
        await ledger.add_sku(Sku("GUM", "Gum", 100, reorder_point=2), actor="t")
        await ledger.assign_lane(1, 0, "COLA", actor="t", lane_id="A1")
        await ledger.assign_lane(1, 1, "TEA", actor="t", lane_id="B1")
        await ledger.assign_lane(1, 2, "SALT", actor="t", lane_id="E1")  # never reports
        # before the period
        await ledger.record_receipt("COLA", 100, actor="t", ref="r1", ts=s - 2 * D)
        await ledger.restock("COLA", "A1", 20, actor="t", ref="rs1", ts=s - 2 * D + H)
        await ledger.record_receipt("TEA", 10, actor="t", ref="r2", ts=s - 2 * D)
        await ledger.restock("TEA", "B1", 6, actor="t", ref="rs2", ts=s - 2 * D + H)
        await ledger.record_receipt("SOUP", 12, actor="t", ref="r3", ts=s - 2 * D)
        await ledger.record_receipt("SALT", 5, actor="t", ref="r4", ts=s - 2 * D)
        await ledger.record_receipt("GUM", 3, actor="t", ref="r5", ts=s - 2 * D)
        await ledger.record_sale("COLA", 7, actor="pos", ref="s0", location="lane:A1", ts=s - H)
        await ledger.write_off("COLA", 4, Reason.SHRINKAGE, actor="t", ref="w0", location="lane:A1", ts=s - H)
        await ledger.apply_sensor_gap(SensorGap(1, 0, 5, "a0", s - D))  # A1 opens the period with 5
        await ledger.apply_sensor_gap(SensorGap(1, 1, 2, "b0", s - D))
        await ledger.apply_sensor_gap(SensorGap(1, 1, -2, "b1", s - H))  # B1 opens the period empty
        # in the period: sales and order picks
        await ledger.record_sale("COLA", 10, actor="pos", ref="s1", location="lane:A1", ts=s + D)
        await ledger.record_sale("COLA", 5, actor="pos", ref="s2", location="lane:A1", ts=s + 2 * D)
        await ledger.record_order_pick("COLA", 5, "O-1", actor="wms", ref="p1", location="lane:A1", ts=s + 3 * D)
        keyed_twice = await ledger.record_sale("COLA", 2, actor="pos", ref="s3", location="lane:A1", ts=s + 4 * D)
        await ledger.reverse(keyed_twice.movement_ids[0], actor="t", why="keyed twice")
        await ledger.record_sale("TEA", 4, actor="pos", ref="s4", location="lane:B1", ts=s + 2 * D)
        await ledger.record_sale("SOUP", 3, actor="pos", ref="s5", location="backroom", ts=s + D)
        # write-offs: on a lane, in the backroom, through a lane's shrinkage alert, damage (not shrink), reversed
        await ledger.write_off("COLA", 2, Reason.SHRINKAGE, actor="t", ref="w1", location="lane:A1", ts=s + 5 * D)
        await ledger.write_off("COLA", 1, Reason.SHRINKAGE, actor="t", ref="w2", location="backroom", ts=s + 5 * D)
        await ledger.write_off("COLA", 1, Reason.DAMAGE, actor="t", ref="w3", location="lane:A1", ts=s + 5 * D)
        wrong = await ledger.write_off(
            "SOUP", 1, Reason.SHRINKAGE, actor="t", ref="w4", location="backroom", ts=s + 6 * D
        )
        await ledger.reverse(wrong.movement_ids[0], actor="t", why="found it")
        alert = await ledger.open_alert("shrinkage", "lane:B1/TEA", {"unexplained_units": 1}, actor="reconcile")
        await ledger.resolve_alert(
            alert.alert_id, actor="t", resolution="theft", write_off=WriteOff("TEA", 1, Reason.SHRINKAGE, "backroom")
        )
        # the shelves: A1 out 2 h, back, out for the last 30 min; B1 out for 2 h from the start and the last hour
        await ledger.apply_sensor_gap(SensorGap(1, 0, -5, "a1", s + H))
        await ledger.apply_sensor_gap(SensorGap(1, 0, 10, "a2", s + 3 * H))
        await ledger.apply_sensor_gap(SensorGap(1, 0, -10, "a3", now - 30 * MIN))
        await ledger.apply_sensor_gap(SensorGap(1, 1, 4, "b2", s + 2 * H))
        await ledger.apply_sensor_gap(SensorGap(1, 1, -4, "b3", now - H))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    db = tmp_path_factory.mktemp("reports") / "ledger.db"
    now = now_ms() + 10 * MIN  # reversals and the alert's write-off are dated at commit time: inside the period
    asyncio.run(_build(db, now))
    return Built(db, now, now - 7 * D)


@pytest.fixture
def conn(built: Built) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(f"file:{built.db}?mode=ro", uri=True)
    yield c
    c.close()


def test_period() -> None:
    p = metrics.period(30, 100 * D)
    assert (p.start_ms, p.end_ms, p.days) == (70 * D, 100 * D, 30)
    with pytest.raises(ValueError):
        metrics.period(0, D)


def test_out_of_stock_ms_walks_the_steps() -> None:
    f = metrics.out_of_stock_ms
    assert f(3, [], 0, 100) == 0
    assert f(0, [], 0, 100) == 100  # out the whole period
    assert f(-2, [(40, 1), (60, 5)], 0, 100) == 60  # still out at -1 until 60
    assert f(2, [(10, -2), (30, 1), (50, -1)], 0, 100) == 20 + 50  # out 10..30 and from 50 to the end
    assert f(1, [(10, -1), (10, 1)], 0, 100) == 0  # out for no time at one instant
    assert f(0, [(0, 4)], 0, 100) == 0  # refilled at the very start


def test_shrink_report(conn: sqlite3.Connection, built: Built) -> None:
    r = metrics.shrink_report(conn, metrics.period(7, built.now))
    by_sku = {line.key: (line.sold, line.shrink, line.rate_pct) for line in r.by_sku}
    # COLA: sales 10 + 5, order pick 5, sale 2 reversed; shrink 2 on A1 + 1 in the backroom (damage is not shrink)
    assert by_sku["COLA"] == (20, 3, 15.0)
    assert by_sku["TEA"] == (4, 1, 25.0)  # the alert's write-off
    assert by_sku["SOUP"] == (3, 0, 0.0)  # written off and reversed
    assert by_sku["SALT"] == (0, 0, None) and by_sku["GUM"] == (0, 0, None)
    by_lane = {line.key: (line.sku, line.sold, line.shrink, line.rate_pct) for line in r.by_lane}
    assert by_lane == {
        "A1": ("COLA", 20, 2, 10.0),
        "B1": ("TEA", 4, 1, 25.0),  # booked in the backroom, attributed to B1 through the alert's cause
        "E1": ("SALT", 0, 0, None),
    }
    # not attributable: SOUP's backroom sale; COLA's backroom write-off (SOUP's is netted by its reversal)
    assert (r.unattributed.sold, r.unattributed.shrink) == (3, 1)
    assert (r.total.sold, r.total.shrink) == (27, 4)
    assert r.total.rate_pct == 100 * 4 / 27


def test_sell_through_velocity_and_cover(conn: sqlite3.Connection, built: Built) -> None:
    flows = {f.sku: f for f in metrics.sku_flows(conn, metrics.period(7, built.now))}
    # on hand: COLA 100 received - 7 sold and 4 shrink before - 20 sold - 3 shrink - 1 damage in the period
    assert {s: (f.sold, f.on_hand) for s, f in flows.items()} == {
        "COLA": (20, 65),
        "TEA": (4, 5),
        "SOUP": (3, 9),
        "SALT": (0, 5),
        "GUM": (0, 3),
    }
    assert flows["COLA"].sell_through_pct == 100 * 20 / 85
    assert flows["SOUP"].sell_through_pct == 25.0
    assert flows["SALT"].sell_through_pct == 0.0
    assert flows["COLA"].per_day == 20 / 7
    assert flows["COLA"].days_of_cover == pytest.approx(22.75, abs=1e-12)  # 65 / (20 / 7)
    assert flows["TEA"].days_of_cover == pytest.approx(8.75, abs=1e-12)
    assert flows["SOUP"].days_of_cover == pytest.approx(21.0, abs=1e-12)
    assert flows["SALT"].days_of_cover is None  # no sales, not infinity


def test_on_hand_at_an_earlier_end_leaves_out_later_movements(conn: sqlite3.Connection, built: Built) -> None:
    on_hand = metrics.book_on_hand_at(conn, built.start + D)
    # COLA: 100 - 7 - 4 before, the sale of 10 at start + 1 day (included); the rest is later
    assert on_hand["COLA"] == 79
    assert on_hand["TEA"] == 10 and on_hand["SOUP"] == 9


def test_out_of_stock_minutes(conn: sqlite3.Connection, built: Built) -> None:
    out = {o.lane_id: o for o in metrics.lane_outages(conn, metrics.period(7, built.now))}
    assert out["A1"].out_ms == 2 * H + 30 * MIN and out["A1"].minutes == 150.0 and out["A1"].out_now
    assert out["B1"].out_ms == 2 * H + H and out["B1"].minutes == 180.0 and out["B1"].out_now
    assert out["E1"].out_ms is None and out["E1"].minutes is None  # never reported
    # a period ending before A1's last outage: only the two hours
    earlier = {o.lane_id: o for o in metrics.lane_outages(conn, metrics.period(1, built.start + D))}
    assert earlier["A1"].out_ms == 2 * H and not earlier["A1"].out_now and earlier["A1"].count_at_end == 10


def test_reorder_lines_use_the_reconcilers_rule(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    now = now_ms() + 10 * MIN
    reorder_alerts: dict[str, dict[str, object]] = {}

    async def build_and_reconcile() -> None:
        await _build(db, now)
        async with LedgerService(db, migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
            await Reconciler(ledger, ReconcileConfig()).run_once(now)
            async with await ledger.reader() as reader:
                for a in await reader.alerts():
                    if a.kind == "reorder" and a.status != "resolved":
                        reorder_alerts[a.cause_key[4:]] = {"id": a.id, **a.evidence}
            tea = reorder_alerts["TEA"]["id"]
            assert isinstance(tea, int)
            await ledger.acknowledge_alert(tea, actor="t")

    asyncio.run(build_and_reconcile())
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        lines = {line.sku: line for line in reorder_queries.reorder_lines(c, now)}
    finally:
        c.close()
    # TEA: book 5 at its reorder point 5; SALT 5 <= 5; GUM 3 > 2, COLA 65 > 6, SOUP has no reorder point
    assert set(lines) == {"TEA", "SALT"} == set(reorder_alerts)
    tea, salt = lines["TEA"], lines["SALT"]
    assert (tea.observed, tea.book, tea.pending_shrinkage, tea.available, tea.reorder_point) == (0, 5, 0, 5, 5)
    assert tea.suggested_qty == 12 == reorder_alerts["TEA"]["suggested_qty"]  # one case of 12
    assert salt.suggested_qty == 3 == reorder_alerts["SALT"]["suggested_qty"]  # up to the lane's capacity 8
    assert tea.per_day == 4 / 30 and tea.days_of_cover == pytest.approx(37.5, abs=1e-12)
    assert salt.days_of_cover is None
    assert (tea.alert_status, salt.alert_status) == ("acknowledged", "open")
    assert (tea.alert_id, salt.alert_id) == (reorder_alerts["TEA"]["id"], reorder_alerts["SALT"]["id"])


# ------------------------------------------------------------------------------------------- the pages


def _csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))


def _post_sales(env: Env) -> None:
    t = now_ms() - H

    async def post(ledger: LedgerService) -> None:
        await ledger.record_receipt("COLA", 40, actor="t", ref="r1", ts=t - D)
        await ledger.restock("COLA", "A1", 30, actor="t", ref="rs1", ts=t - D)
        await ledger.record_sale("COLA", 8, actor="pos", ref="s1", location="lane:A1", ts=t)
        await ledger.write_off("COLA", 1, Reason.SHRINKAGE, actor="t", ref="w1", location="lane:A1", ts=t)
        await ledger.record_sale("COLA", 50, actor="pos", ref="s-old", location="lane:A1", ts=t - 60 * D)

    env.write(post)


def test_reports_page_and_period(env: Env) -> None:
    _post_sales(env)
    client = env.client("manager")
    page = client.get("/reports?days=7").get_data(as_text=True)
    assert "last 7 days" in page and 'id="export-csv" href="/reports.csv?days=7"' in page
    assert "12.50 %" in page  # 1 of 8: the store's and COLA's shrink rate
    assert "1.4&ndash;1.6 % of sales" in page and "by value" in page and "by units" in page
    assert "no sales" in page  # TEA and SOUP sell nothing
    page90 = client.get("/reports?days=90").get_data(as_text=True)
    assert "1.72 %" in page90  # 1 of 58 with the sale 60 days ago
    assert client.get("/reports").status_code == 200  # default: 30 days


@pytest.mark.parametrize("days", ["14", "abc", "-7", "7.0", "\u0667"])
def test_reports_refuse_other_periods(env: Env, days: str) -> None:
    for url in ("/reports", "/reports.csv"):
        resp = env.client("manager").get(url, query_string={"days": days})
        assert resp.status_code == 400
        assert "days" in resp.get_data(as_text=True) and "7, 30, 90" in resp.get_data(as_text=True)


def test_reports_csv(env: Env) -> None:
    _post_sales(env)
    env.write(lambda ledger: ledger.add_sku(Sku("=FOAM", "Foam", 100), actor="t"))
    resp = env.client("manager").get("/reports.csv?days=30")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="report-30d-')
    rows = _csv(resp.data)
    cola = next(r for r in rows if r["section"] == "sku" and r["sku"] == "COLA")
    # 40 received, 8 sold, 1 written off, 50 sold 60 days ago (book may go negative) -> on hand -19, counted as 0
    assert (cola["sold_units"], cola["shrink_units"], cola["shrink_pct"]) == ("8", "1", "12.5")
    assert (cola["on_hand_end"], cola["sell_through_pct"], cola["units_per_day"]) == ("-19", "100.0", "0.27")
    assert cola["days_of_cover"] == "0.0"
    tea = next(r for r in rows if r["section"] == "sku" and r["sku"] == "TEA")
    assert tea["days_of_cover"] == "" and tea["sell_through_pct"] == ""
    a1 = next(r for r in rows if r["section"] == "lane" and r["lane"] == "A1")
    assert (a1["sku"], a1["sold_units"], a1["shrink_units"], a1["out_of_stock_minutes"]) == ("COLA", "8", "1", "0.0")
    c1 = next(r for r in rows if r["section"] == "lane" and r["lane"] == "C1")
    assert c1["out_of_stock_minutes"] == ""  # never reported
    assert any(r["sku"] == "'=FOAM" for r in rows)  # formula-safe (OWASP CSV injection)
    store = next(r for r in rows if r["section"] == "store")
    assert (store["sold_units"], store["shrink_units"], store["shrink_pct"]) == ("8", "1", "12.5")


def test_reorder_page(env: Env) -> None:
    page = env.client("viewer").get("/reorder").get_data(as_text=True)
    # the seed: no book stock at all, so every SKU with a reorder point is due; TEA has the seeded open alert
    for sku in ("COLA", "TEA", "SOUP"):
        assert f'id="reorder-{sku}"' in page
    tea = page.split('id="reorder-TEA"', 1)[1].split("</tr>", 1)[0]
    assert '<span class="alert-status">open</span>' in tea
    cola = page.split('id="reorder-COLA"', 1)[1].split("</tr>", 1)[0]
    assert "<strong>24</strong>" in cola and "none yet" in cola and "no sales" in cola
    _post_sales(env)  # COLA: 40 - 8 - 1 - 50 = -19 <= 6: still due, now two cases
    cola = env.client("viewer").get("/reorder").get_data(as_text=True).split('id="reorder-COLA"', 1)[1]
    assert "<strong>48</strong>" in cola.split("</tr>", 1)[0]


def test_reports_need_a_manager_but_reorder_a_viewer(env: Env) -> None:
    assert env.client("clerk").get("/reports").status_code == 403
    assert env.client("clerk").get("/reports.csv").status_code == 403
    assert env.client("viewer").get("/reorder").status_code == 200


def _ro(env: Env) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{env.db}?mode=ro", uri=True)


def test_a_reversal_counts_in_the_period_of_what_it_reverses(env: Env) -> None:
    t = now_ms()

    async def post(ledger: LedgerService) -> None:
        await ledger.record_receipt("SOUP", 50, actor="t", ref="rcv", ts=t - 60 * D)
        old = await ledger.record_sale("SOUP", 10, actor="pos", ref="old", location="backroom", ts=t - 40 * D)
        lost = await ledger.write_off(
            "SOUP", 3, Reason.SHRINKAGE, actor="t", ref="old-w", location="backroom", ts=t - 40 * D
        )
        recent = await ledger.record_sale("SOUP", 4, actor="pos", ref="new", location="backroom", ts=t - 2 * D)
        await ledger.record_sale("SOUP", 2, actor="pos", ref="kept", location="backroom", ts=t - 2 * D)
        for movement in (old.movement_ids[0], lost.movement_ids[0], recent.movement_ids[0]):
            await ledger.reverse(movement, actor="t", why="corrected today")

    env.write(post)
    conn = _ro(env)
    month = metrics.period(30, now_ms())
    soup = {f.sku: f for f in metrics.sku_flows(conn, month)}["SOUP"]
    assert soup.sold == 2  # the recent 4 and its reversal cancel; the old sale and its reversal are outside
    assert {line.sku: line.shrink for line in metrics.shrink_report(conn, month).by_sku}.get("SOUP", 0) == 0
    two_months = metrics.period(60, now_ms())
    assert {f.sku: f for f in metrics.sku_flows(conn, two_months)}["SOUP"].sold == 2


def test_out_of_stock_minutes_follow_the_lanes_assignments(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """D1 held TEA (sold out), then SOUP (stocked the whole time), then TEA again: never out for long."""
    t = now_ms()
    clock = {"now": t - 61 * D}
    monkeypatch.setattr("hub.ledger.service.now_ms", lambda: clock["now"])  # when the assignments are recorded

    def at(ms: int) -> None:
        clock["now"] = ms

    def write(fn: Callable[[LedgerService], Awaitable[object]]) -> None:
        env.write(fn)

    at(t - 61 * D)
    write(lambda ledger: ledger.assign_lane(2, 0, "TEA", actor="t", lane_id="D1"))
    write(lambda ledger: ledger.apply_sensor_gap(SensorGap(2, 0, 4, "tea-in", t - 60 * D)))
    write(lambda ledger: ledger.apply_sensor_gap(SensorGap(2, 0, -4, "tea-out", t - 59 * D)))
    at(t - 58 * D - MIN)
    write(lambda ledger: ledger.assign_lane(2, 0, "SOUP", actor="t"))
    write(lambda ledger: ledger.apply_sensor_gap(SensorGap(2, 0, 10, "soup-in", t - 58 * D)))
    write(lambda ledger: ledger.apply_sensor_gap(SensorGap(2, 0, -10, "soup-out", t - H - MIN)))
    at(t - H - MIN // 2)
    write(lambda ledger: ledger.assign_lane(2, 0, "TEA", actor="t"))
    write(lambda ledger: ledger.apply_sensor_gap(SensorGap(2, 0, 8, "tea-in2", t - H)))
    d1 = {o.lane_id: o for o in metrics.lane_outages(_ro(env), metrics.period(30, t))}["D1"]
    assert d1.out_ms == MIN  # SOUP out from t - 1h - 1 min; TEA (again the lane's) has a count from t - 1 h
    assert d1.sku == "TEA" and d1.count_at_end == 8 and not d1.out_now
    # over 60 days: TEA's first stretch was out from t - 59 days until SOUP took the lane (1 day - 1 min)
    d1 = {o.lane_id: o for o in metrics.lane_outages(_ro(env), metrics.period(60, t))}["D1"]
    assert d1.out_ms == (D - MIN) + MIN
