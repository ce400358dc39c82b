"""Live updates (hub/web/live/), the overview's filters and tiles, the nodes page, the web server's threads.

Streams over the hub's real HTTP server read with http.client; deadlines are generous and only guard liveness.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import sqlite3
import threading
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hub.ledger import SensorGap
from hub.ledger.models import now_ms
from hub.web import create_app, live
from hub.web.accounts.users import record_login
from hub.web.live import LaneFeed, lane_feed
from hub.web.live.views import _stream
from hub.web.server import WebServer, loop_status
from tests.web_support import Env

LANE_KEYS = {
    "lane_id",
    "node_id",
    "lane_index",
    "sku",
    "name",
    "count",
    "capacity",
    "reorder_point",
    "state",
    "last_change_ms",
    "open_alerts",
    "tags_present",
    "tags_other_sku",
    "tags_last_read_ms",
}
DEADLINE_S = 30.0  # liveness only


def _app(env: Env, **config: Any) -> Flask:
    return create_app(env.db, env.writer, config={"TESTING": True, **config})


def _client(app: Flask, role: str = "viewer") -> FlaskClient:
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["user"] = role
        sess["epoch"] = 0  # the seeded users' session epoch (hub/web/access.py)
    return client


def _events(body: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def _gap(lane_index: int, delta: int, ref: str) -> SensorGap:
    return SensorGap(1, lane_index, delta, ref, now_ms())


# ------------------------------------------------------------------------------------------- the contract


def test_snapshot_event_and_lanes_json_follow_the_contract(env: Env) -> None:
    client = env.client("viewer")
    resp = client.get("/events?once=1")
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"].startswith("no-cache")
    body = resp.get_data(as_text=True)
    assert re.match(r"retry: \d+\n", body)
    events = _events(body)
    assert [name for name, _ in events] == ["snapshot"]
    snapshot = events[0][1]
    assert isinstance(snapshot["version"], int) and snapshot["open_alerts"] == 2
    lanes = {lane["lane_id"]: lane for lane in snapshot["lanes"]}
    assert list(lanes) == ["A1", "B1", "C1"]  # by node and lane index
    assert all(set(lane) == LANE_KEYS for lane in lanes.values())
    a1 = lanes["A1"]
    assert (a1["node_id"], a1["lane_index"], a1["sku"], a1["name"]) == (1, 0, "COLA", "Cola 330 ml")
    assert (a1["count"], a1["capacity"], a1["reorder_point"], a1["state"], a1["open_alerts"]) == (21, 30, 6, "ok", 1)
    assert isinstance(a1["last_change_ms"], int)
    assert (lanes["B1"]["count"], lanes["B1"]["state"], lanes["B1"]["open_alerts"]) == (3, "low", 1)
    assert (lanes["C1"]["count"], lanes["C1"]["state"], lanes["C1"]["last_change_ms"]) == (0, "out", None)

    as_json = client.get("/lanes.json")
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    assert as_json.get_json() == snapshot


def test_snapshot_includes_a_commit_made_just_before(env: Env) -> None:
    client = env.client("viewer")
    client.get("/lanes.json")
    env.write(lambda ledger: ledger.apply_sensor_gap(_gap(2, 7, "c1-restock")))
    lanes = {lane["lane_id"]: lane for lane in client.get("/lanes.json").get_json()["lanes"]}
    assert (lanes["C1"]["count"], lanes["C1"]["state"]) == (7, "ok")


# ------------------------------------------------------------------------------------------- the feed


def test_feed_sends_only_the_lanes_that_changed(env: Env) -> None:
    feed = LaneFeed(env.db, {**live.DEFAULTS, "LIVE_POLL_S": 60.0})  # polls only when asked
    try:
        sub, snapshot = feed.subscribe()
        env.write(lambda ledger: ledger.apply_sensor_gap(_gap(0, -2, "a1-pick")))
        feed.snapshot()  # polls: publishes what changed since
        event = sub.next(DEADLINE_S)
        assert event is not None and event["version"] > snapshot["version"]
        assert [(lane["lane_id"], lane["count"]) for lane in event["lanes"]] == [("A1", 19)]

        # a sensor alert on a lane: sensor trouble
        env.write(lambda ledger: ledger.open_alert("sensor", "lane:C1/stuck", {}, actor="t"))
        feed.snapshot()
        event = sub.next(DEADLINE_S)
        assert event is not None and event["open_alerts"] == 3
        assert [(la["lane_id"], la["state"], la["open_alerts"]) for la in event["lanes"]] == [("C1", "trouble", 1)]

        # an alert about the SKU reaches the lanes of the SKU; rows that did not change are not sent
        env.write(lambda ledger: ledger.open_alert("reorder", "sku:COLA", {}, actor="t"))
        feed.snapshot()
        event = sub.next(DEADLINE_S)
        assert event is not None and [(la["lane_id"], la["open_alerts"]) for la in event["lanes"]] == [("A1", 2)]

        # nothing committed: nothing sent
        feed.snapshot()
        assert sub.queue.empty()
    finally:
        feed.close()
    assert sub.ended == "closed"


def test_slow_subscriber_is_dropped_with_a_bounded_queue(env: Env) -> None:
    feed = LaneFeed(env.db, {**live.DEFAULTS, "LIVE_POLL_S": 60.0, "LIVE_QUEUE": 2})
    try:
        slow, _ = feed.subscribe()
        fast, _ = feed.subscribe()
        for i in range(3):
            env.write(lambda ledger, i=i: ledger.apply_sensor_gap(_gap(0, 1, f"put{i}")))  # type: ignore[misc]
            feed.snapshot()
            assert fast.next(DEADLINE_S) is not None
            assert slow.queue.qsize() <= 2
        assert slow.ended == "dropped" and fast.ended is None
        assert feed.subscribers == 1 and feed.dropped == 1
        # the dropped stream ends (the browser reconnects and gets a snapshot); the other one goes on
        assert list(_stream(feed, slow, "first", 15.0, 600.0, lambda: True, 2.0)) == ["first"]
        assert fast.queue.empty()
    finally:
        feed.close()


def test_a_failed_read_starts_again_from_a_full_read(env: Env) -> None:
    feed = LaneFeed(env.db, {**live.DEFAULTS, "LIVE_POLL_S": 60.0})
    try:
        sub, _ = feed.subscribe()
        assert feed._conn is not None
        feed._conn.close()  # as if the file had gone away under it
        env.write(lambda ledger: ledger.apply_sensor_gap(_gap(0, 3, "a1-put")))
        with pytest.raises(sqlite3.Error):
            feed.snapshot()
        snapshot = feed.snapshot()  # a new connection, every lane read again; only the changed one is sent
        assert {la["lane_id"]: la["count"] for la in snapshot["lanes"]}["A1"] == 24
        event = sub.next(DEADLINE_S)
        assert event is not None and [(la["lane_id"], la["count"]) for la in event["lanes"]] == [("A1", 24)]
    finally:
        feed.close()


def test_feed_thread_publishes_by_itself_and_stops_when_idle(env: Env) -> None:
    feed = LaneFeed(env.db, {**live.DEFAULTS, "LIVE_POLL_S": 0.02, "LIVE_IDLE_S": 0.1})
    try:
        sub, _ = feed.subscribe()
        assert feed.running
        env.write(lambda ledger: ledger.apply_sensor_gap(_gap(1, 5, "b1-restock")))
        event = sub.next(DEADLINE_S)  # the thread polled: nobody asked for a snapshot
        assert event is not None and [(la["lane_id"], la["count"]) for la in event["lanes"]] == [("B1", 8)]
        feed.unsubscribe(sub)
        deadline = time.monotonic() + DEADLINE_S
        while feed.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not feed.running
        # a new subscriber starts it again and gets what happened meanwhile
        env.write(lambda ledger: ledger.apply_sensor_gap(_gap(1, 1, "b1-more")))
        sub, snapshot = feed.subscribe()
        assert feed.running and {la["lane_id"]: la["count"] for la in snapshot["lanes"]}["B1"] == 9
    finally:
        feed.close()
    assert not feed.running


# ------------------------------------------------------------------------------- notified by the ledger's writer


class _Reads:
    """Which lanes the feed reads (``lanes.lanes``'s ``lane_ids``: None = every lane) and every SQL it runs."""

    def __init__(self, feed: LaneFeed, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lanes: list[set[str] | None] = []
        self.sql: list[str] = []
        real = lane_feed.lanes

        def spy(conn: sqlite3.Connection, lane_ids: Any = None, **kw: Any) -> Any:
            self.lanes.append(None if lane_ids is None else set(lane_ids))
            return real(conn, lane_ids, **kw)

        monkeypatch.setattr(lane_feed, "lanes", spy)
        self.feed = feed

    def trace(self) -> None:
        assert self.feed._conn is not None
        self.feed._conn.set_trace_callback(self.sql.append)


def _notified(env: Env, **settings: Any) -> LaneFeed:
    return LaneFeed(env.db, {**live.DEFAULTS, "LIVE_POLL_S": 60.0, **settings}, env.writer)


def test_a_notified_feed_reads_only_the_lanes_a_commit_names(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = _notified(env)
    reads = _Reads(feed, monkeypatch)
    try:
        assert feed.notified
        sub, snapshot = feed.subscribe()
        assert reads.lanes == [None]  # the first read: every lane
        reads.trace()

        def commit_then_event(write: Any) -> dict[str, Any]:
            env.write(write)
            event = sub.next(DEADLINE_S)  # the thread was woken by the commit: nobody asked for a snapshot
            assert event is not None
            return event

        event = commit_then_event(lambda ledger: ledger.apply_sensor_gap(_gap(0, -2, "a1-pick")))
        assert [(la["lane_id"], la["count"]) for la in event["lanes"]] == [("A1", 19)] and reads.lanes[-1] == {"A1"}
        event = commit_then_event(lambda ledger: ledger.open_alert("reorder", "sku:COLA", {}, actor="t"))
        assert [(la["lane_id"], la["open_alerts"]) for la in event["lanes"]] == [("A1", 2)]
        assert reads.lanes[-1] == {"A1"}  # the lanes of the SKU
        event = commit_then_event(lambda ledger: ledger.open_alert("sensor", "node:1/silent", {}, actor="t"))
        assert {la["lane_id"] for la in event["lanes"]} == {"A1", "B1", "C1"} == reads.lanes[-1]  # of the node
        event = commit_then_event(lambda ledger: ledger.open_alert("test", "item:5", {}, actor="t"))
        assert event["lanes"] == [] and event["open_alerts"] == snapshot["open_alerts"] + 3  # about no lane
        assert reads.lanes[-1] == {"A1", "B1", "C1"}  # (the read before: this one counted alerts only)

        # a commit the page does not show (a sign-in) reads nothing; nothing ever polls
        done = feed.reads
        env.write(lambda ledger: ledger.transact(lambda tx: record_login(tx, "viewer", "1.2.3.4", False)))
        time.sleep(0.3)
        assert feed.reads == done and sub.queue.empty()
        assert not [q for q in reads.sql if "data_version" in q], reads.sql
        assert feed.snapshot()["version"] == event["version"]
    finally:
        feed.close()


def test_a_notified_feed_reads_nothing_while_nothing_commits(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = _notified(env, LIVE_IDLE_S=0.05)
    reads = _Reads(feed, monkeypatch)
    try:
        sub, _ = feed.subscribe()
        reads.trace()
        time.sleep(0.5)  # the thread wakes to check for idleness, reads nothing
        assert reads.sql == [] and reads.lanes == [None] and feed.running
        feed.unsubscribe(sub)
        deadline = time.monotonic() + DEADLINE_S
        while feed.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not feed.running
    finally:
        feed.close()


def test_a_full_inbox_makes_the_next_read_a_full_one(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = _notified(env, LIVE_INBOX=2)
    reads = _Reads(feed, monkeypatch)
    try:
        feed.rows()  # no subscriber, no thread: commits wait in the inbox
        for i in range(3):
            env.write(lambda ledger, i=i: ledger.apply_sensor_gap(_gap(1, 1, f"b1-{i}")))  # type: ignore[misc]
        rows, _ = feed.rows()
        assert reads.lanes == [None, None]  # the third did not fit: every lane read again
        assert {r.lane_id: r.observed for r in rows}["B1"] == 6
        env.write(lambda ledger: ledger.apply_sensor_gap(_gap(1, 1, "b1-more")))
        assert {r.lane_id: r.observed for r in feed.rows()[0]}["B1"] == 7 and reads.lanes[-1] == {"B1"}
    finally:
        feed.close()
    env.write(lambda ledger: ledger.apply_sensor_gap(_gap(1, 1, "b1-after")))
    assert feed._inbox.empty()  # closed: it stopped listening


def test_the_apps_feed_is_notified_by_the_hubs_writer_and_polls_for_any_other(env: Env) -> None:
    class Plain:  # a writer that cannot see the ledger's commits
        def call(self, fn: Any, *, timeout_s: float | None = None) -> Any:
            return env.writer.call(fn, timeout_s=timeout_s)

    notified, polled = _app(env), create_app(env.db, Plain(), config={"TESTING": True})
    try:
        assert live.feed(notified).notified and not live.feed(polled).notified
        for app in (notified, polled):
            _client(app).get("/lanes.json")
        env.write(lambda ledger: ledger.apply_sensor_gap(_gap(2, 4, "c1-both")))
        for app in (notified, polled):  # both include the commit made just before
            lanes = {la["lane_id"]: la for la in _client(app).get("/lanes.json").get_json()["lanes"]}
            assert lanes["C1"]["count"] == 4
    finally:
        live.close_feed(notified)
        live.close_feed(polled)


def test_stream_sends_heartbeats_and_ends_after_its_lifetime(env: Env) -> None:
    app = _app(env, LIVE_LIFETIME_S=0.5, LIVE_HEARTBEAT_S=0.1, LIVE_POLL_S=60.0)
    resp = _client(app).get("/events", buffered=False)
    body = resp.get_data(as_text=True)  # returns only because the stream ends by itself
    assert [name for name, _ in _events(body)] == ["snapshot"]
    assert ": keep-alive\n\n" in body
    resp.close()
    assert live.feed(app).subscribers == 0
    live.close_feed(app)


def test_more_streams_than_allowed_get_503(env: Env) -> None:
    app = _app(env, LIVE_MAX_CLIENTS=1)
    assert _client(app).head("/events").status_code == 200  # holds nothing
    first = _client(app).get("/events", buffered=False)
    assert first.status_code == 200
    refused = _client(app).get("/events", buffered=False)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    assert _client(app).get("/events?once=1").status_code == 200  # a snapshot holds no stream
    first.close()  # never read: closing it still frees its place
    again = _client(app).get("/events", buffered=False)
    assert again.status_code == 200
    again.close()
    live.close_feed(app)
    assert _client(app).get("/events", buffered=False).status_code == 503  # the server is stopping
    # every reader of the feed says so too: the page (HTML), the snapshot, the API (JSON)
    for url in ("/", "/lanes.json"):
        resp = _client(app).get(url)
        assert resp.status_code == 503 and int(resp.headers["Retry-After"]) > 0, url


# ------------------------------------------------------------------------------------------- over HTTP


class Stream:
    """An /events stream over HTTP (http.client), read event by event."""

    def __init__(self, url: str, cookie: str) -> None:
        m = re.fullmatch(r"http://([^:/]+):(\d+)/", url)
        assert m
        self.conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=DEADLINE_S)
        self.conn.request("GET", "/events", headers={"Cookie": cookie, "Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()

    def next_event(self) -> tuple[str, dict[str, Any]] | None:
        """The next event (comments and retry hints skipped); None at the end of the stream."""
        fields: dict[str, str] = {}
        while True:
            line = self.resp.readline().decode()
            if not line:
                return None
            line = line.rstrip("\n")
            if line == "":
                if "event" in fields:
                    return fields["event"], json.loads(fields["data"])
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value

    def close(self) -> None:
        self.conn.close()


def _cookie(app: Flask, role: str) -> str:
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    assert serializer is not None
    return f"{app.config['SESSION_COOKIE_NAME']}={serializer.dumps({'user': role, 'epoch': 0})}"


def _get(url: str, cookie: str) -> tuple[int, str]:
    m = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert m
    conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=DEADLINE_S)
    try:
        conn.request("GET", m.group(3), headers={"Cookie": cookie})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_streams_over_http_get_changes_do_not_starve_pages_and_end_with_the_server(env: Env) -> None:
    web = WebServer.start(
        env.db,
        env.writer.ledger,
        env.writer.loop,
        host="127.0.0.1",
        port=0,
        threads=2,
        max_live_clients=10,
        live={"LIVE_MAX_PER_SESSION": 10, "LIVE_MAX_PER_USER": 10},
    )
    cookie = _cookie(web.app, "viewer")
    streams: list[Stream] = []
    try:
        for _ in range(10):
            stream = Stream(web.url, cookie)
            assert stream.resp.status == 200
            event = stream.next_event()
            assert event is not None and event[0] == "snapshot"
            streams.append(stream)
            version = event[1]["version"]

        # ten streams hold ten worker threads: pages are still served
        status, html = _get(web.url, cookie)
        assert status == 200 and 'id="lane-A1"' in html
        status, _ = _get(web.url.rstrip("/") + "/nodes", cookie)
        assert status == 200

        # an eleventh stream is refused
        extra = Stream(web.url, cookie)
        assert extra.resp.status == 503 and extra.resp.getheader("Retry-After")
        extra.close()

        # a sensor event committed through the writer reaches every stream
        env.write(lambda ledger: ledger.apply_sensor_gap(_gap(0, -5, "a1-pick-5")))
        for stream in streams:
            event = stream.next_event()
            assert event is not None and event[0] == "lanes" and event[1]["version"] > version
            assert [(la["lane_id"], la["count"], la["state"]) for la in event[1]["lanes"]] == [("A1", 16, "ok")]
    finally:
        asyncio.run(web.stop())
    for stream in streams:  # the server's stop ended them
        assert stream.next_event() is None
        stream.close()
    assert live.feed(web.app).subscribers == 0 and not live.feed(web.app).running


def test_loop_status_runs_on_the_loop_and_times_out(env: Env) -> None:
    seen: list[str] = []

    def status() -> dict[str, Any]:
        seen.append(threading.current_thread().name)
        return {"nodes": [], "links": [], "totals": {}}

    assert loop_status(status, env.writer.loop)() == {"nodes": [], "links": [], "totals": {}}
    assert seen == ["hub-loop"]
    idle = asyncio.new_event_loop()  # never runs: the call gives up
    try:
        with pytest.raises(TimeoutError):
            loop_status(status, idle, timeout_s=0.1)()
    finally:
        idle.close()
    assert seen == ["hub-loop"]


# ------------------------------------------------------------------------------------------- pages


def _row(html: str, lane: str) -> str:
    return html.split(f'<tr id="lane-{lane}"')[1].split("</tr>")[0]


def test_overview_tiles_filters_and_live_script(env: Env) -> None:
    html = env.client("viewer").get("/").get_data(as_text=True)
    tiles = dict(re.findall(r'data-tile="(\w+)"[^>]*><strong>(\d+)</strong>', html))
    assert tiles == {"ok": "1", "low": "1", "out": "1", "trouble": "0"}
    assert '<strong id="open-alerts">2</strong>' in html
    assert 'data-state="ok"' in _row(html, "A1") and 'data-count="21"' in _row(html, "A1")
    assert 'href="/lanes/A1"' in _row(html, "A1")
    assert "hidden" not in _row(html, "A1").split(">")[0]
    # the live script is the hub's own file (the page's policy runs no inline script); the page tells it the URL
    assert 'data-events-url="/events"' in html and re.search(r'<script src="/static/overview\.js\?v=\w+" defer>', html)
    assert 'new EventSource(table.getAttribute("data-events-url"))' in env.client().get("/static/overview.js").text
    assert 'name="q"' in html and 'name="state"' in html

    filtered = env.client("viewer").get("/?q=tea&state=low").get_data(as_text=True)
    assert " hidden" in _row(filtered, "A1").split(">")[0] and " hidden" in _row(filtered, "C1").split(">")[0]
    assert " hidden" not in _row(filtered, "B1").split(">")[0]
    assert 'value="tea"' in filtered and '<option value="low" selected>' in filtered
    assert "1 of 3 lanes" in filtered
    by_state = env.client("viewer").get("/?state=out").get_data(as_text=True)
    assert " hidden" not in _row(by_state, "C1").split(">")[0] and " hidden" in _row(by_state, "B1").split(">")[0]


def _status(forged: int = 3) -> dict[str, Any]:
    """Shaped like HubService.status()."""
    node = {
        "node_id": 1,
        "port": "/dev/ttyUSB0",
        "link": "/dev/ttyUSB0",
        "up": True,
        "last_seen_s_ago": 2.5,
        "last_seen_ms": now_ms(),
        "frames": 1200,
        "downlink_dropped": 1,
        "gaps": 0,
        "forged_frames": forged,
        "rejected": {"bad_tag": forged, "bad_crc": 2},
        "firmware": "1.4.2",
        "health": {
            "uptime_s": 90061,
            "free_heap": 48000,
            "sample_rate_chz": 8012,
            "outbox_depth": 7,
            "outbox_dropped": 0,
            "tx_frames": 1300,
            "rx_frames": 40,
            "rx_rejected": 0,
            "outbox_first": 0,
        },
    }
    never = {**node, "node_id": 9, "port": "/dev/ttyUSB1", "link": None, "up": False, "firmware": None}
    never.update(health=None, forged_frames=0, rejected={}, last_seen_s_ago=None, last_seen_ms=None, frames=0)
    link = {"port": "/dev/ttyUSB0", "connected": True, "disconnects": 4, "dropped_out": 2}
    return {"nodes": [node, never], "links": [link], "totals": {"uptime_s": 100.0, "accepted": 1200, "rejected": 5}}


def test_nodes_page_with_the_hubs_status(env: Env) -> None:
    app = create_app(env.db, env.writer, config={"TESTING": True}, status=_status)
    html = _client(app).get("/nodes").get_data(as_text=True)
    assert "unavailable" not in html
    one = html.split('<tr id="node-1">')[1].split("</tr>")[0]
    assert "online" in one and "1.4.2" in one and "2 s ago" in one
    assert "80.12 SPS" in one and "48,000 B" in one and "1 d 1 h" in one and ">7<" in one
    assert '<td class="num forged">3</td>' in one  # forged frames, highlighted
    assert "bad_crc: 2" in one and ">5<" in one  # rejected by reason, total
    assert "4 disconnects" in one and "3 downlink dropped" in one
    nine = html.split('<tr id="node-9">')[1].split("</tr>")[0]  # configured, never seen: not in the ledger yet
    assert "offline" in nine and "SPS" not in nine
    clean = create_app(env.db, env.writer, config={"TESTING": True}, status=lambda: _status(forged=0))
    assert "forged" not in _client(clean).get("/nodes").get_data(as_text=True).split('<tr id="node-1">')[1]


def test_nodes_page_shows_a_ble_node_its_beacon_and_connection(env: Env) -> None:
    status = _status()
    ble_node = {**status["nodes"][0], "node_id": 5, "port": "", "link": None, "up": False, "forged_frames": 0}
    ble_node["ble"] = {
        "state": "idle",
        "address": "C2:5E:5E:00:00:05",
        "rssi": -61,
        "beacon": {"age_s": 4.2, "lanes": {"0": {"count": 12, "fault": False}, "1": {"count": 3, "fault": True}}},
        "link": {"connects": 7, "disconnects": 7},
    }
    status["nodes"].append(ble_node)
    app = create_app(env.db, env.writer, config={"TESTING": True}, status=lambda: status)
    html = _client(app).get("/nodes").get_data(as_text=True)
    five = html.split('<tr id="node-5">')[1].split("</tr>")[0]
    assert "online" in five  # its beacon was heard 4 s ago: online, though it holds no connection
    assert "BLE C2:5E:5E:00:00:05 (idle)" in five and "RSSI -61 dBm" in five and "beacon 4 s ago" in five
    assert "7 connections" in five and "7 disconnects" not in five  # a BLE node connects and lets go by design
    assert "lane 0: 12, lane 1: 3 (fault)" in five
    status["nodes"][-1]["ble"]["beacon"]["age_s"] = 400.0  # not heard for minutes: offline
    html = _client(app).get("/nodes").get_data(as_text=True)
    assert "offline" in html.split('<tr id="node-5">')[1].split("</tr>")[0]


def test_nodes_page_without_the_hub_shows_the_ledger(env: Env) -> None:
    html = env.client("viewer").get("/nodes").get_data(as_text=True)
    assert "Live status is unavailable" in html
    one = html.split('<tr id="node-1">')[1].split("</tr>")[0]
    assert "3 lanes" in one and "unknown" in one and "online" not in one

    def broken() -> dict[str, Any]:
        raise TimeoutError

    app = create_app(env.db, env.writer, config={"TESTING": True}, status=broken)
    resp = _client(app).get("/nodes")
    assert resp.status_code == 200 and "the hub did not answer" in resp.get_data(as_text=True)


def test_a_silent_node_puts_each_of_its_lanes_in_sensor_trouble(env: Env) -> None:
    """The reconciler raises node:<id>/silent (hub/reconcile/plan.py): every lane of the node is stale."""
    client = env.client("viewer")
    before = {lane["lane_id"]: lane for lane in client.get("/lanes.json").get_json()["lanes"]}
    assert before["A1"]["state"] == "ok"
    env.write(lambda ledger: ledger.open_alert("sensor", "node:1/silent", {"problem": "silent"}, actor="reconcile"))
    env.write(lambda ledger: ledger.open_alert("sensor", "node:11/silent", {"problem": "silent"}, actor="reconcile"))
    after = {lane["lane_id"]: lane for lane in client.get("/lanes.json").get_json()["lanes"]}
    for lane_id in ("A1", "B1", "C1"):  # all on node 1; node 11's alert is about no lane here
        assert after[lane_id]["state"] == "trouble", after[lane_id]
        assert after[lane_id]["open_alerts"] == before[lane_id]["open_alerts"] + 1
    page = client.get("/").get_data(as_text=True)
    assert 'id="lane-A1" data-state="trouble"' in page
    shelf = client.get("/lanes/A1").get_data(as_text=True)
    assert "node:1/silent" in shelf and "node:11/silent" not in shelf
