"""The shelf detail page (/lanes/<lane>) and its SVG charts (hub/web/charts.py)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from typing import Any

import pytest

from hub.ledger import LedgerService, SensorEvent, SensorGap
from hub.ledger.models import LaneReading, now_ms
from hub.web.pages import charts, shelf, shelf_queries
from shared_protocol.messages import KIND_PICK
from tests.web_support import Env

MIN = 60_000


def page(env: Env, url: str, role: str = "viewer") -> str:
    resp = env.client(role).get(url)
    assert resp.status_code == 200, resp.status_code
    return resp.get_data(as_text=True)


def gaps(env: Env, lane: int, moves: list[tuple[int, int]], prefix: str = "g") -> None:
    """Sensor movements on node 1 ``lane``: (observed_ms, qty) each, all in one writer batch."""

    async def seed(ledger: LedgerService) -> None:
        futures = [ledger.submit(SensorGap(1, lane, q, f"{prefix}{i}", t)) for i, (t, q) in enumerate(moves)]
        await asyncio.gather(*futures)

    env.write(seed)


def readings(env: Env, lane: int, items: list[tuple[int, int]]) -> None:
    """Lane readings on node 1 ``lane``: (ts_ms, weight_dg) each."""

    async def seed(ledger: LedgerService) -> None:
        await asyncio.gather(*(ledger.submit(LaneReading(1, lane, t, w, 0)) for t, w in items))

    env.write(seed)


def ro(env: Env) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{env.db}?mode=ro", uri=True)


def table_rows(html: str, element_id: str) -> list[str]:
    """The data table rows (time, value) under the figure ``element_id``."""
    section = html.split(f'id="{element_id}"', 1)[1].split("</figure>", 1)[0]
    return [" | ".join(re.findall(r"<td[^>]*>(.*?)</td>", row)) for row in re.findall(r"<tr>(<td.*?)</tr>", section)]


# ----------------------------------------------------------------------------------------------------- the page


def test_the_page_shows_the_lane_its_sku_stock_state_and_alerts(env: Env) -> None:
    html = page(env, "/lanes/A1")
    assert "<h1>Lane A1" in html and '<span class="state ok">ok</span>' in html
    assert "COLA" in html and "Cola 330 ml" in html and "350.0 g" in html  # unit weight 3500 dg
    assert re.search(r'id="observed">21 / 30', html)  # the seeded gap of +21, capacity 30
    assert '<meter min="0" max="30" low="6"' in html
    assert re.search(r'id="book">0 \(on this lane 0\)', html)  # nothing received yet
    assert "Open alerts (1)" in html and "shrinkage</a> about lane:A1/COLA" in html
    assert 'href="/alerts?q=lane:A1/COLA#alert-1"' in html
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg"') == 2
    assert (
        "<title>Count on lane A1, last hour</title>" in html and "<title>Weight on lane A1, last hour</title>" in html
    )
    assert 'role="img" aria-label="Count on lane A1, last hour: ' in html
    assert "<details><summary>Count as a table" in html
    # the timeline: the seeded gap, with its source
    assert "sensor_gap" in html and "node:1:gap:seed0" in html and ">+21<" in html


def test_book_stock_and_alerts_of_the_sku_count_for_the_lane(env: Env) -> None:
    async def seed(ledger: LedgerService) -> None:
        await ledger.record_receipt("TEA", 12, actor="t", ref="R1")
        await ledger.restock("TEA", "B1", 5, actor="t", ref="S1")

    env.write(seed)
    html = page(env, "/lanes/B1")
    assert re.search(r'id="book">12 \(on this lane 5\)', html)
    assert "Open alerts (1)" in html and "reorder</a> about sku:TEA" in html  # an alert of the SKU
    assert '<span class="state low">low</span>' in html  # 3 observed, reorder point 4


def test_an_unknown_lane_is_404_and_an_unknown_range_400(env: Env) -> None:
    client = env.client("viewer")
    assert client.get("/lanes/NOPE").status_code == 404
    assert client.get("/lanes/A1?range=7d").status_code == 400
    assert env.client().get("/lanes/A1").status_code == 302  # anonymous: to the login page


def test_an_unassigned_lane_has_a_page_with_its_own_count(env: Env) -> None:
    env.write(lambda ledger: ledger.submit(SensorEvent(1, 1, 7, KIND_PICK, -2, -7000, 90, now_ms() - MIN)))
    html = page(env, "/lanes/node1-lane7")
    assert "<em>unassigned</em>" in html and '<span class="state trouble">sensor trouble</span>' in html
    assert re.search(r'id="observed">-2<', html)
    assert "unassigned_lane</a> about lane:node1-lane7" in html
    assert "sensor_pick" in html and "-700.0 g" in html and "90%" in html


def test_the_range_switch_chooses_the_period(env: Env) -> None:
    t = now_ms()
    gaps(env, 2, [(t - 2 * 3_600_000, 4), (t - 10 * MIN, -1)])
    hour = page(env, "/lanes/C1")
    day = page(env, "/lanes/C1?range=24h")
    assert '?range=1h" aria-current="page">last hour' in hour and '?range=24h" aria-current' not in hour
    assert '?range=24h" aria-current="page">last day' in day
    assert "node:1:gap:g1" in hour and "node:1:gap:g0" not in hour  # two hours ago: only in the day
    assert "node:1:gap:g1" in day and "node:1:gap:g0" in day
    assert "<title>Count on lane C1, last day</title>" in day
    # the hour starts at 4 (the movement before it), then -1
    assert table_rows(hour, "count-chart")[0].endswith("(start) | 4")
    assert table_rows(hour, "count-chart")[1].endswith(" | 3")
    assert table_rows(day, "count-chart")[0].endswith("(start) | 0")


def test_the_count_chart_steps_through_the_lane_movements(env: Env) -> None:
    t0 = 1_700_000_000_000
    t1 = t0 + 3_600_000
    # one before the window, three in it (two in the same millisecond), one after it
    gaps(env, 2, [(t0 - 5 * MIN, 7), (t0 + 10 * MIN, -2), (t0 + 30 * MIN, 4), (t0 + 30 * MIN, -1), (t1 + MIN, -3)])
    with ro(env) as conn:
        lane = shelf_queries.lane_info(conn, "C1")
        assert lane is not None and lane.observed == 5
        start, samples, n = shelf_queries.count_series(conn, lane, t0, t1)
    assert start == 7 and n == 3
    assert [(s.t_ms, s.value) for s in samples] == [(t0 + 10 * MIN, 5), (t0 + 30 * MIN, 9), (t0 + 30 * MIN, 8)]
    svg = charts.step_chart(start, samples, t0, t1, title="c", unit="units")
    frame = charts.Frame(t0, t1, 0, 10)  # ticks 0, 5, 10 for values 0..9
    path = re.search(r'class="series" d="([^"]+)"', svg)
    assert path is not None
    x10, x30 = frame.x(t0 + 10 * MIN), frame.x(t0 + 30 * MIN)
    expected = (
        f"M{charts.LEFT:.1f} {frame.y(7):.1f}H{x10:.1f}V{frame.y(5):.1f}H{x30:.1f}V{frame.y(9):.1f}"
        f"H{x30:.1f}V{frame.y(8):.1f}H{charts.LEFT + charts.PLOT_W:.1f}"
    )
    assert path.group(1) == expected


def test_the_weight_chart_draws_readings_with_gaps(env: Env) -> None:
    t = now_ms()
    items = [(t - 50 * MIN, 40_000), (t - 49 * MIN, 36_000), (t - 48 * MIN, 32_000), (t - 20 * MIN, 28_000)]
    readings(env, 2, items)
    readings(env, 3, [(t - 30 * MIN, 1)])  # node 1 lane 3 is not a lane: ignored
    with ro(env) as conn:
        samples, n = shelf_queries.weight_series(conn, "C1", t - 3_600_000, t)
        assert n == 4
        assert conn.execute("SELECT count(*) FROM lane_readings").fetchone() == (4,)
    assert [(s.t_ms, s.value, s.breaks) for s in samples] == [
        (t - 50 * MIN, 4000.0, True),
        (t - 49 * MIN, 3600.0, False),
        (t - 48 * MIN, 3200.0, False),
        (t - 20 * MIN, 2800.0, True),  # 28 minutes without a reading
    ]
    html = page(env, "/lanes/C1")
    weights = table_rows(html, "weight-chart")
    assert [w.split(" | ")[1] for w in weights] == ["4000.0", "3600.0", "3200.0", "2800.0"]
    assert "(after a gap)" in weights[3] and "(after a gap)" not in weights[1]
    assert re.search(r'id="weight-chart">.*?<circle ', html, re.S)  # the lone last reading is a dot
    assert "2800.0 g, count 0" in html  # the last reading in the header


def test_a_long_series_is_thinned_and_the_page_says_so(env: Env) -> None:
    t = now_ms() - 23 * 3_600_000
    items = [(t + k * 60_000, 30_000 + (k % 3)) for k in range(700)]
    items[350] = (items[350][0], 99_000)  # one spike among 700 readings
    readings(env, 2, items)
    html = page(env, "/lanes/C1?range=24h")
    assert re.search(r"Weight as a table \((\d+) readings of 700: the chart keeps", html)
    weights = [w.split(" | ")[1] for w in table_rows(html, "weight-chart")]
    assert len(weights) <= 600 and "9900.0" in weights
    assert "Count as a table (0 changes)" in html  # nothing moved: no "of N"


def test_the_timeline_is_newest_first_and_truncated(env: Env) -> None:
    t = now_ms() - 55 * MIN
    gaps(env, 2, [(t + i * 1000, 1) for i in range(503)])
    env.write(lambda ledger: ledger.open_alert("sensor", "lane:C1", {"why": "stuck"}, actor="reconcile"))
    html = page(env, "/lanes/C1")
    assert "Showing the newest 500 of 503 movements in this period." in html
    refs = re.findall(r"node:1:gap:g(\d+)", html)
    assert refs == [str(i) for i in range(502, 2, -1)]  # 502 .. 3, newest first
    assert html.index("sensor alert opened") < html.index("node:1:gap:g502")  # opened just now: first
    assert '<span class="state trouble">' in html
    # without truncation: no note
    assert "Showing the newest" not in page(env, "/lanes/A1")


def test_a_resolved_alert_appears_twice_in_the_timeline(env: Env) -> None:
    async def seed(ledger: LedgerService) -> None:
        opened = await ledger.open_alert("tamper", "lane:C1/SOUP", {}, actor="reconcile")
        await ledger.resolve_alert(opened.alert_id, actor="web:manager", resolution="false alarm")

    env.write(seed)
    html = page(env, "/lanes/C1")
    assert "tamper alert opened" in html and "tamper alert resolved" in html
    assert "by web:manager: false alarm" in html
    assert re.search(r'href="/alerts\?status=all&amp;q=lane:C1/SOUP#alert-\d+">tamper alert resolved', html)
    assert "Open alerts (0)" in html


# ----------------------------------------------------------------------------------------------------- charts


def test_frame_scales_time_and_value_to_the_plot() -> None:
    f = charts.Frame(1000, 2000, 0, 100)
    assert f.x(1000) == charts.LEFT and f.x(2000) == charts.LEFT + charts.PLOT_W
    assert f.x(1500) == charts.LEFT + charts.PLOT_W / 2
    assert f.x(500) == charts.LEFT and f.x(9999) == charts.LEFT + charts.PLOT_W  # clamped to the window
    assert f.y(100) == charts.TOP and f.y(0) == charts.TOP + charts.PLOT_H
    assert f.y(25) == charts.TOP + charts.PLOT_H * 0.75


def test_ticks_are_round_numbers_and_times() -> None:
    assert charts.value_ticks(0, 9, integer=True) == [0, 2, 4, 6, 8, 10]
    assert charts.value_ticks(3, 3, integer=True) == [2, 3, 4]  # a flat series gets room around it
    assert charts.value_ticks(0, 0.3) == [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert charts.value_ticks(120, 980) == [0, 200, 400, 600, 800, 1000]
    assert charts.value_ticks(0, 1, integer=True) == [0, 1]  # never a fraction of a unit
    assert charts.value_ticks(2800, 4000) == [2800, 3000, 3200, 3400, 3600, 3800, 4000]
    t0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
    hour = charts.time_ticks(t0, t0 + 3_600_000)
    assert [charts.time_label(t) for t in hour] == ["22:20", "22:30", "22:40", "22:50", "23:00", "23:10"]
    day = charts.time_ticks(t0, t0 + 86_400_000)
    assert [charts.time_label(t) for t in day] == [
        "11-15",
        "03:00",
        "06:00",
        "09:00",
        "12:00",
        "15:00",
        "18:00",
        "21:00",
    ]


def test_an_empty_series_draws_axes_and_says_so() -> None:
    svg = charts.line_chart([], 0, 3_600_000, title="Weight", unit="g")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "no data in this period" in svg and 'class="series"' not in svg
    assert 'aria-label="Weight: no data"' in svg
    step = charts.step_chart(None, [], 0, 3_600_000, title="Count", unit="units")
    assert "no data in this period" in step and 'class="series"' not in step


def test_a_single_point_is_a_dot_and_a_single_step_a_flat_line() -> None:
    svg = charts.line_chart([charts.Sample(1_800_000, 50.0, True)], 0, 3_600_000, title="w", unit="g")
    x = charts.LEFT + charts.PLOT_W / 2
    assert f'<circle cx="{x:.1f}"' in svg
    assert 'd="M' in svg and "L" not in svg.split('d="', 1)[1].split('"', 1)[0]
    flat = charts.step_chart(4, [], 0, 3_600_000, title="c", unit="units")
    d = re.search(r'class="series" d="([^"]+)"', flat)
    assert d is not None
    frame = charts.Frame(0, 3_600_000, 0, 4)  # ticks 0..4 (zero included)
    assert d.group(1) == f"M{charts.LEFT:.1f} {frame.y(4):.1f}H{charts.LEFT + charts.PLOT_W:.1f}"


def test_reference_lines_are_drawn_inside_the_range() -> None:
    svg = charts.step_chart(
        3, [], 0, 3_600_000, title="c", unit="u", refs=[charts.RefLine(30, "capacity"), charts.RefLine(6, "reorder")]
    )
    assert svg.count('class="ref"') == 2 and ">capacity</text>" in svg and ">reorder</text>" in svg
    assert charts.value_ticks(0, 30, integer=True)[-1] >= 30  # the capacity widens the value range


def test_downsampling_bounds_the_series_and_keeps_the_extremes() -> None:
    t0, t1 = 0, 86_400_000
    points = [(t, 100.0 + (t // 1000) % 7) for t in range(t0, t1, 5000)]  # 17,280 samples
    points[9_001] = (points[9_001][0], 10_000.0)  # a spike
    points[12_345] = (points[12_345][0], -50.0)  # a dip
    out = charts.downsample(points, t0, t1, max_points=600)
    assert len(out) <= 600
    values = [s.value for s in out]
    assert 10_000.0 in values and -50.0 in values
    assert (out[0].t_ms, out[0].value) == points[0] and (out[-1].t_ms, out[-1].value) == points[-1]
    assert [s.t_ms for s in out] == sorted(s.t_ms for s in out)
    assert not any(s.breaks for s in out[1:])  # no gaps asked for
    assert charts.downsample(points[:10], t0, t1) == [
        charts.Sample(t, v, i == 0) for i, (t, v) in enumerate(points[:10])
    ]


def test_downsampling_keeps_gaps_between_buckets() -> None:
    points = [(t, 1.0) for t in range(0, 1_000_000, 1000)] + [(t, 2.0) for t in range(3_000_000, 3_600_000, 1000)]
    out = charts.downsample(points, 0, 3_600_000, max_points=40, max_gap_ms=60_000)
    assert len(out) <= 40
    breaks = [s.t_ms for s in out if s.breaks]
    assert breaks == [0, 3_000_000]


def test_labels_are_escaped() -> None:
    svg = charts.line_chart(
        [charts.Sample(0, 1.0, True)],
        0,
        1000,
        title='<script>alert("x")</script>',
        unit="<g>",
        refs=[charts.RefLine(1.0, "a&b")],
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'aria-label="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;: ' in svg
    assert "&lt;g&gt;" in svg and "a&amp;b" in svg


def test_the_page_reads_one_snapshot_while_sensors_commit(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sensor batch committing between the page's reads must not skew the count at the window start."""
    original = shelf.lane_info

    def lane_info_then_a_commit(conn: Any, lane_id: str) -> Any:
        info = original(conn, lane_id)
        env.write(lambda ledger: ledger.apply_sensor_gap(SensorGap(1, 0, 5, "race", now_ms())))
        return info

    monkeypatch.setattr(shelf, "lane_info", lane_info_then_a_commit)
    html = env.client("viewer").get("/lanes/A1").get_data(as_text=True)
    start = re.search(r'\(start\)</td><td class="num">(-?\d+)</td>', html)
    assert start is not None and start.group(1) == "0", html[:2000]  # the seed's +21 is inside the window


def test_a_time_label_at_the_right_edge_stays_inside_the_chart() -> None:
    svg = charts.line_chart([], 0, 3_600_000, title="Weight", unit="g")  # ticks every 10 min, the last at the edge
    labels = re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="(\w+)">(\d\d:\d\d)</text>', svg)
    assert labels[-1][1:] == ("end", "01:00") and labels[0][1] == "middle", labels
    assert all(float(x) <= charts.WIDTH for x, _, _ in labels)


def test_a_count_takes_ascii_digits_only_and_says_what_happened(env: Env) -> None:
    """The manager's count form (the hub's ``count_lane`` is the test app's stand-in, tests/web_support.py):
    anything but 0..1,000,000 in ASCII digits is refused with one line and changes nothing."""
    client = env.client("manager")
    page = client.get("/lanes/A1").get_data(as_text=True)
    assert 'action="/lanes/A1/count"' in page and "Units counted on the lane" in page
    assert 'action="/lanes/A1/count"' not in env.client("clerk").get("/lanes/A1").get_data(as_text=True)
    before = env.sql("SELECT count(*) FROM physical_counts")
    for bad in ["", "\u0661\u0660", "\uff11", "+3", "-1", "1000001", "3.5", "12 units"]:
        resp = client.post("/lanes/A1/count", data={"counted": bad, "csrf_token": env.csrf(client)})
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/lanes/A1")
        text = client.get("/lanes/A1").get_data(as_text=True)
        assert "Not counted: the count must be a whole number 0..1,000,000" in text, bad
    assert env.sql("SELECT count(*) FROM physical_counts") == before
    client.post("/lanes/A1/count", data={"counted": "7", "csrf_token": env.csrf(client)})
    assert "Counted: counted 7, book" in client.get("/lanes/A1").get_data(as_text=True)
    assert env.sql("SELECT location, counted_qty, actor FROM physical_counts ORDER BY id DESC LIMIT 1") == [
        ("lane:A1", 7, "web:manager")
    ]
