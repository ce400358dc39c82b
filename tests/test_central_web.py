"""The central page and API (hub/central/web/) against a real PostgreSQL (tests/fleet_support.py).

The data is written the consumer's way: fleet messages (``hub.fleet.messages.encode_*``) checked by
``hub.central.store.receive`` and applied by ``store.apply_batch``, never hand-written SQL. Two regions (north: store
n1 served by hub-n1; south: store s1 served by hub-s1) and a hub of no store: every page and every API endpoint is
checked for a region manager of the north, who must never see a row of the south's (nor of the unassigned hub),
and for the roles that see every store. Then: the numbers each page shows, pagination by cursor, bearer tokens and
scopes, the OpenAPI document, bad input (4xx, never 5xx), the CLI, PostgreSQL down (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from hub.central.config import DatabaseConfig
from hub.central.schema import migrate
from hub.central.store import apply_batch, receive
from hub.central.web import accounts, directory, listing
from hub.central.web.app import create_central_app
from hub.central.web.config import load_web_config
from hub.central.web.pg import Database
from hub.central.web.server import CentralWebServer
from hub.cli import main
from hub.fleet.messages import encode_alerts, encode_movements, encode_snapshot, encode_status
from hub.ledger.models import now_ms
from hub.web.accounts.clients import token_sha256
from hub.web.accounts.users import hash_password
from tests.fleet_support import FreshDatabase

PREFIX = "smartshelf/v1"
PASSWORD = "correct horse battery"
DAY = 86_400_000
NOW = now_ms()
T0 = NOW - 2 * DAY  # the movements' time: inside the last 7 days


# ------------------------------------------------------------------------------------------ the consumer's path


def mv(i: int, sku: str, location: str, qty: int, reason: str, reverses: int | None = None) -> tuple[Any, ...]:
    """A ledger movement row in the wire's column order."""
    return (i, T0 + i * 1000, T0 + i * 1000 + 5, sku, location, qty, reason, f"ref:{reason}:{i}", 0, "pos:1", None,
            reverses, None, None, None, None)  # fmt: skip


def apply(dsn: str, *messages: tuple[str, str, bytes], at_ms: int | None = None) -> None:
    """Messages (hub, kind, payload) through the consumer's own write path, in one batch, on a connection of its
    own (as the consumer has)."""
    batch = [receive(PREFIX, f"{PREFIX}/{hub}/{kind}", payload) for hub, kind, payload in messages]
    for r in batch:
        assert r.message is not None, r.reason

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await apply_batch(conn, batch, NOW if at_ms is None else at_ms)
        finally:
            await conn.close()

    asyncio.run(go())


def snapshot(
    hub: str, sent: int, last: int, skus: Sequence[tuple[Any, ...]], lanes: Sequence[tuple[Any, ...]]
) -> bytes:
    return encode_snapshot(hub, sent, last_movement_id=last, skus=skus, lanes=lanes, nodes=[], book=[])


def alert(i: int, kind: str, cause: str, status: str, rev: int, opened: int) -> tuple[Any, ...]:
    ack = (opened + 10, "web:ann") if status == "acknowledged" else (None, None)
    resolved = (opened + 20, "web:ann", "written off") if status == "resolved" else (None, None, None)
    return (i, kind, cause, status, opened, *ack, *resolved, None, rev)


def seed_stores(db: Database, dsn: str) -> None:
    """North: hub-n1 (store n1) sells COLA and TEA; south: hub-s1 (store s1) sells COLA; hub-x has no store."""
    n1 = [
        mv(1, "COLA", "backroom", 50, "receipt"),
        mv(2, "COLA", "lane:A1", -3, "sale"),
        mv(3, "COLA", "lane:A1", -2, "sale"),
        mv(4, "COLA", "lane:A1", 2, "sale", reverses=3),  # the second sale reversed
        mv(5, "COLA", "lane:A1", -4, "order_pick"),
        mv(6, "COLA", "lane:A1", -1, "shrinkage"),
        mv(7, "COLA", "sensor:A1", -3, "sensor_pick"),
        mv(8, "TEA", "backroom", 5, "receipt"),
        mv(9, "TEA", "lane:B1", -2, "sale"),
        mv(10, "TEA", "lane:B1", -1, "shrinkage"),
    ]
    s1 = [
        mv(1, "COLA", "backroom", 30, "receipt"),
        mv(2, "COLA", "lane:C1", -10, "sale"),
        mv(3, "COLA", "lane:C1", -5, "shrinkage"),
    ]
    x = [mv(1, "SOUP", "backroom", 7, "receipt")]
    sent = NOW - 60_000
    n1_skus = [("COLA", "Cola 330 ml", 3450, 50, 24, 48, None), ("TEA", "Iced tea", 5000, 1, 6, None, None)]
    n1_lanes = [("A1", 7, 0, "COLA", 12, 41400, sent), ("A2", 7, 1, "COLA", 3, 10350, sent),
                ("B1", 8, 0, "TEA", 2, 10000, sent)]  # fmt: skip
    n1_alerts = [
        alert(1, "shrinkage", "lane:A1/COLA", "open", 1, T0 + 100),
        alert(2, "reorder", "sku:COLA", "acknowledged", 2, T0 + 200),
        alert(3, "damage", "lane:A1", "resolved", 3, T0 + 300),
    ]
    s1_skus = [("COLA", "Cola 330 ml", 3450, 20, 12, None, None)]
    s1_lanes = [("C1", 3, 0, "COLA", 14, 48300, sent)]
    apply(
        dsn,
        ("hub-n1", "status", encode_status("hub-n1", "online", sent)),
        ("hub-n1", "movements", encode_movements("hub-n1", n1, sent)),
        ("hub-n1", "snapshot", snapshot("hub-n1", sent, 10, n1_skus, n1_lanes)),
        ("hub-n1", "alerts", encode_alerts("hub-n1", n1_alerts, sent)),
        ("hub-s1", "status", encode_status("hub-s1", "online", sent)),
        ("hub-s1", "movements", encode_movements("hub-s1", s1, sent)),
        ("hub-s1", "snapshot", snapshot("hub-s1", sent, 3, s1_skus, s1_lanes)),
        (
            "hub-s1",
            "alerts",
            encode_alerts("hub-s1", [alert(1, "shrinkage", "lane:C1/COLA", "open", 1, T0 + 150)], sent),
        ),
        ("hub-x", "movements", encode_movements("hub-x", x, sent)),
        ("hub-x", "alerts", encode_alerts("hub-x", [alert(9, "tamper", "lane:Z1", "open", 1, T0 + 50)], sent)),
    )

    async def stores(conn: asyncpg.Connection) -> None:
        await directory.add_region(conn, "north", "North", actor="test")
        await directory.add_region(conn, "south", "South", actor="test")
        await directory.add_store(conn, "n1", "Northgate", "north", ("hub-n1",), actor="test")
        await directory.add_store(conn, "s1", "Southside", "south", ("hub-s1",), actor="test")

    db.run(stores)


# ------------------------------------------------------------------------------------------------- fixtures


@dataclass
class Central:
    db: Database
    app: Flask
    dsn: str

    def client(self, username: str | None = None) -> FlaskClient:
        client = self.app.test_client()
        if username is not None:
            client.get("/login")
            resp = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf(client)})
            assert resp.status_code == 302, resp.data
        return client

    def user(self, username: str, role: str, regions: Sequence[str] = ()) -> None:
        digest = password_hash()
        self.db.run(lambda c: accounts.add_user(c, username, digest, role, regions, actor="test"))

    def token(self, name: str, scopes: Sequence[str], regions: Sequence[str] | None = None) -> str:
        token = accounts.new_token()
        digest = token_sha256(token)
        self.db.run(lambda c: accounts.add_client(c, name, digest, scopes, regions, actor="test"))
        return token


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)  # scrypt: once for the module


def csrf(client: FlaskClient) -> str:
    with client.session_transaction() as sess:
        token = sess.get("csrf")
    if token is None:
        page = client.get("/login").get_data(as_text=True)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found
        return found.group(1)
    return str(token)


async def _migrate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture
def central(postgres_db: FreshDatabase) -> Iterator[Central]:
    asyncio.run(_migrate(postgres_db.dsn))
    db = Database.start(DatabaseConfig(dsn=postgres_db.dsn), max_size=4)
    try:
        app = create_central_app(db, config={"TESTING": True})
        yield Central(db, app, postgres_db.dsn)
    finally:
        db.close()


@pytest.fixture
def seeded(central: Central) -> Central:
    seed_stores(central.db, central.dsn)
    central.user("ann", "admin")
    central.user("olga", "operations")
    central.user("vic", "viewer")
    central.user("nora", "region_manager", ["north"])
    return central


def rows(html: str, table: str) -> list[str]:
    """The ids of the rows of ``<table id=table>``."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr id="([^"]+)"', body)


def cell_texts(html: str, row_id: str) -> list[str]:
    row = html.split(f'<tr id="{row_id}"', 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    return [re.sub(r"<[^>]+>", " ", c).split()[0] if re.sub(r"<[^>]+>", " ", c).split() else "" for c in cells]


Check = Callable[[FlaskClient], None]


# ---------------------------------------------------------------------------------------------------- pages


def test_pages_show_each_store_s_numbers(seeded: Central) -> None:
    ops = seeded.client("olga")
    html = ops.get("/").get_data(as_text=True)
    assert rows(html, "stores") == ["hub-hub-n1", "hub-hub-s1", "hub-hub-x"]
    n1 = cell_texts(html, "hub-hub-n1")
    assert n1[1] == "online" and n1[4:9] == ["10", "10", "0", "0", "2"]  # stored, complete to, missing, tail, alerts

    html = ops.get("/stock").get_data(as_text=True)
    assert rows(html, "stock") == ["stock-hub-n1-COLA", "stock-hub-s1-COLA", "stock-hub-x-SOUP", "stock-hub-n1-TEA"]
    # COLA at n1: +50 - 3 - 2 + 2 - 4 - 1 = 42 book; observed 12 + 3 on two lanes
    assert cell_texts(html, "stock-hub-n1-COLA")[2:5] == ["42", "15", "2"]
    assert cell_texts(html, "stock-hub-s1-COLA")[2:5] == ["15", "14", "1"]
    assert cell_texts(html, "stock-hub-x-SOUP")[2:4] == ["7", "-"]

    html = ops.get("/alerts").get_data(as_text=True)  # unresolved, newest first
    assert rows(html, "alerts") == ["alert-hub-n1-2", "alert-hub-s1-1", "alert-hub-n1-1", "alert-hub-x-9"]

    html = ops.get("/reorders").get_data(as_text=True)
    # n1 COLA: 42 <= 50 -> order 24 (one case gets above 50: 42 + 24 = 66); s1 COLA: 15 <= 20 -> 12
    assert rows(html, "reorders") == ["reorder-hub-n1-COLA", "reorder-hub-s1-COLA"]
    assert cell_texts(html, "reorder-hub-n1-COLA")[2:6] == ["42", "15", "50", "24"]
    assert "acknowledged (#2)" in html
    assert cell_texts(html, "reorder-hub-s1-COLA")[2:6] == ["15", "14", "20", "12"]

    html = ops.get("/shrink?days=7").get_data(as_text=True)
    # n1: sold 3 + 4 (order pick) = 7 COLA (the reversed sale nets out), 2 TEA; shrink 1 COLA, 1 TEA
    assert rows(html, "shrink-store") == ["shrink-hub-n1", "shrink-hub-s1"]
    assert cell_texts(html, "shrink-hub-n1")[1:4] == ["9", "2", "22.22"]
    assert cell_texts(html, "shrink-hub-s1")[1:4] == ["10", "5", "50.00"]
    assert rows(html, "shrink-sku") == ["shrink-hub-n1-COLA", "shrink-hub-n1-TEA", "shrink-hub-s1-COLA"]
    assert cell_texts(html, "shrink-hub-n1-COLA")[2:5] == ["7", "1", "14.29"]
    assert "<strong>36.84 %</strong>" in html  # 7 of 19 over the stores shown


# ------------------------------------------------------------------------------------------- region scoping

SOUTH_AND_UNASSIGNED = ("hub-s1", "Southside", "hub-x", "SOUP", "lane:C1")
API_READS = ("stores", "stock", "alerts", "shrink", "reorders")


def assert_north_only(text: str, where: str) -> None:
    leaked = [word for word in SOUTH_AND_UNASSIGNED if word in text]
    assert not leaked, f"{where} shows {leaked}"


def after_filters(html: str) -> str:
    """What a list page shows below its filter form."""
    return html.split('class="filters"', 1)[1].split("</form>", 1)[1]


def api_get(client: FlaskClient, token: str, path: str) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def every_item(client: FlaskClient, token: str, path: str, limit: int = 1) -> list[dict[str, Any]]:
    """Every item of a list, walking its pages by cursor."""
    items: list[dict[str, Any]] = []
    sep = "&" if "?" in path else "?"
    url = f"{path}{sep}limit={limit}"
    for _ in range(100):
        resp = api_get(client, token, url)
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        assert len(body["items"]) <= limit
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        url = f"{path}{sep}limit={limit}&cursor={body['next_cursor']}"
    raise AssertionError("more than 100 pages")


def test_a_region_manager_never_sees_another_region_s_stores(seeded: Central) -> None:
    nora = seeded.client("nora")
    for path in ("/", "/stock", "/alerts", "/reorders", "/shrink", "/shrink?days=90"):
        resp = nora.get(path)
        assert resp.status_code == 200, path
        html = resp.get_data(as_text=True)
        assert "Northgate" in html, path
        assert_north_only(html, path)
    # asking for the south by store, by hub, or with a cursor before it finds nothing of it
    for path in ("/stock?store=s1", "/stock?hub=hub-s1", "/alerts?hub=hub-x", "/shrink?store=s1", "/?hub=hub-s1",
                 "/reorders?store=s1&sku=COLA"):  # fmt: skip
        shown = after_filters(nora.get(path).get_data(as_text=True))  # the form echoes what was asked
        assert_north_only(shown, path)
        assert "hub-n1" not in shown, path  # the filter matches nothing of hers either
    # the same through the API, for a client of the north
    token = seeded.token("erp-north", API_READS, ["north"])
    api = seeded.app.test_client()
    for name in API_READS:
        items = every_item(api, token, f"/api/v1/{name}")
        assert items and {i["hub_id"] for i in items} == {"hub-n1"}, name
        assert_north_only(str(items), name)
        for query in ("store=s1", "hub=hub-s1", "hub=hub-x"):
            assert api_get(api, token, f"/api/v1/{name}?{query}").get_json()["items"] == [], (name, query)
    # every store for those who see every store (the hub of no store too)
    everything = seeded.token("erp-all", API_READS)
    hubs = {i["hub_id"] for i in every_item(api, everything, "/api/v1/stores")}
    assert hubs == {"hub-n1", "hub-s1", "hub-x"}
    for user in ("olga", "ann", "vic"):
        assert "Southside" in seeded.client(user).get("/stock").get_data(as_text=True), user


def test_moving_a_store_to_another_region_moves_what_its_managers_see(seeded: Central) -> None:
    nora = seeded.client("nora")
    assert "Northgate" in nora.get("/stock").get_data(as_text=True)
    seeded.db.run(lambda c: directory.set_store_region(c, "n1", "south", actor="test"))
    html = after_filters(nora.get("/stock").get_data(as_text=True))
    assert "Northgate" not in html and "hub-n1" not in html
    seeded.user("sam", "region_manager", ["south"])
    shown = after_filters(seeded.client("sam").get("/").get_data(as_text=True))
    assert "Northgate" in shown and "Southside" in shown
    # a region manager with no region left sees nothing (never falls back to every store)
    seeded.db.run(lambda c: c.execute("DELETE FROM regions WHERE region = 'north'"))
    html = nora.get("/").get_data(as_text=True)
    assert "hub-n1" not in html and "hub-s1" not in html


# ------------------------------------------------------------------------------------------------------ roles


def test_each_role_reaches_its_pages_only(seeded: Central) -> None:
    anonymous = seeded.app.test_client()
    resp = anonymous.get("/stock")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    expected = {
        "vic": {"/": 200, "/stock": 200, "/alerts": 200, "/reorders": 200, "/shrink": 403, "/users": 403},
        "nora": {"/shrink": 200, "/users": 403, "/api-clients": 403, "/directory": 403},
        "olga": {"/shrink": 200, "/users": 403, "/api-clients": 403, "/directory": 403},
        "ann": {"/shrink": 200, "/users": 200, "/api-clients": 200, "/directory": 200},
    }
    for user, paths in expected.items():
        client = seeded.client(user)
        for path, status in paths.items():
            assert client.get(path).status_code == status, (user, path)
    # the navigation offers what the role may reach
    nav = seeded.client("vic").get("/").get_data(as_text=True).split("</nav>")[0]
    assert "Shrink" not in nav and "Users" not in nav and "Reorders" in nav


def test_the_login_redirect_returns_to_the_page_asked_for(seeded: Central) -> None:
    """A page's own URL, its query string only when it had one (``/stock``, not ``/stock?``), and back after signing
    in."""
    for page, expected in (("/stock", "/stock"), ("/stock?sku=COLA&store=n1", "/stock?sku=COLA&store=n1")):
        anonymous = seeded.app.test_client()
        resp = anonymous.get(page)
        assert resp.status_code == 302
        location = urlsplit(resp.headers["Location"])
        assert location.path == "/login" and parse_qs(location.query) == {"next": [expected]}, location
        form = anonymous.get(resp.headers["Location"]).get_data(as_text=True)
        assert f'name="next" value="{escape(expected)}"' in form
        data = {"username": "vic", "password": PASSWORD, "next": expected, "csrf_token": csrf(anonymous)}
        resp = anonymous.post("/login", data=data)
        assert resp.status_code == 302 and resp.headers["Location"] == expected
        assert anonymous.get(expected).status_code == 200


def test_sessions_end_at_logout_role_change_and_disabling_and_sign_ins_are_throttled(seeded: Central) -> None:
    vic = seeded.client("vic")
    copy = seeded.app.test_client()
    with vic.session_transaction() as theirs, copy.session_transaction() as mine:
        mine.update(dict(theirs))
    assert copy.get("/stock").status_code == 200
    assert vic.post("/logout", data={"csrf_token": csrf(vic)}).status_code == 302
    assert copy.get("/stock").status_code == 302  # the copied cookie died with the logout
    olga = seeded.client("olga")
    seeded.db.run(lambda c: accounts.update_user(c, "olga", actor="test", role="viewer"))
    assert olga.get("/stock").status_code == 302
    nora = seeded.client("nora")
    seeded.db.run(lambda c: accounts.update_user(c, "nora", actor="test", action="disable"))
    assert nora.get("/").status_code == 302
    assert (
        seeded.client().post("/login", data={"username": "nora", "password": PASSWORD, "csrf_token": "x"}).status_code
        == 400
    )  # CSRF first
    fresh = seeded.app.test_client()
    fresh.environ_base["REMOTE_ADDR"] = "10.9.9.9"  # throttled per (user, address): the others sign in as before
    fresh.get("/login")
    token = csrf(fresh)
    for _ in range(5):
        resp = fresh.post("/login", data={"username": "ann", "password": "wrong password", "csrf_token": token})
        assert resp.status_code == 401
    resp = fresh.post("/login", data={"username": "ann", "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 429  # throttled, even with the right password
    # a form post without its CSRF token is refused
    ann = seeded.client("ann")
    assert (
        ann.post(
            "/users", data={"username": "eve", "role": "admin", "password": PASSWORD, "confirm": PASSWORD}
        ).status_code
        == 400
    )
    assert seeded.db.run(lambda c: accounts.get_user(c, "eve")) is None


# -------------------------------------------------------------------------------------------------------- API


def test_api_tokens_scopes_and_pages(seeded: Central) -> None:
    api = seeded.app.test_client()
    stock_only = seeded.token("erp-stock", ["stock"])
    resp = api.get("/api/v1/stock")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get("/api/v1/stock", headers={"Authorization": "Basic abc"}).status_code == 401
    assert api_get(api, accounts.new_token(), "/api/v1/stock").status_code == 401  # well formed, no client's
    assert api_get(api, "ssk_" + stock_only[4:], "/api/v1/stock").status_code == 401  # a hub's kind of token
    resp = api_get(api, stock_only, "/api/v1/alerts")
    assert resp.status_code == 403 and resp.get_json()["errors"][0]["field"] == "scope"
    # pages: walking with limit=1 gives exactly the one-page answer, in order
    whole = api_get(api, stock_only, "/api/v1/stock?limit=500").get_json()
    assert whole["next_cursor"] is None
    assert [(i["sku"], i["hub_id"]) for i in whole["items"]] == [
        ("COLA", "hub-n1"), ("COLA", "hub-s1"), ("SOUP", "hub-x"), ("TEA", "hub-n1")]  # fmt: skip
    assert every_item(api, stock_only, "/api/v1/stock") == whole["items"]
    assert every_item(api, stock_only, "/api/v1/stock?sku=COLA", limit=1) == whole["items"][:2]
    cola = whole["items"][0]
    assert cola == {"sku": "COLA", "name": "Cola 330 ml", "hub_id": "hub-n1", "store_id": "n1",
                    "store_name": "Northgate", "region": "north", "book": 42, "observed": 15, "lanes": 2,
                    "observed_ms": NOW - 60_000, "reorder_point": 50}  # fmt: skip
    everything = seeded.token("erp", API_READS)
    alerts = every_item(api, everything, "/api/v1/alerts", limit=2)
    assert [(a["hub_id"], a["id"]) for a in alerts] == [("hub-n1", 2), ("hub-s1", 1), ("hub-n1", 1), ("hub-x", 9)]
    assert [a["id"] for a in every_item(api, everything, "/api/v1/alerts?status=acknowledged")] == [2]
    assert [a["id"] for a in every_item(api, everything, "/api/v1/alerts?kind=shrinkage")] == [1, 1]
    shrink = api_get(api, everything, f"/api/v1/shrink?group=store&start_ms={T0}&end_ms={NOW}").get_json()
    assert shrink["start_ms"] == T0 and shrink["group"] == "store"
    assert [(r["hub_id"], r["sold"], r["shrink"], r["rate_pct"]) for r in shrink["items"]] == [
        ("hub-n1", 9, 2, 22.222), ("hub-s1", 10, 5, 50.0)]  # fmt: skip
    by_sku = every_item(api, everything, f"/api/v1/shrink?start_ms={T0}")
    assert [(r["hub_id"], r["sku"], r["sold"], r["shrink"]) for r in by_sku] == [
        ("hub-n1", "COLA", 7, 1), ("hub-n1", "TEA", 2, 1), ("hub-s1", "COLA", 10, 5)]  # fmt: skip
    # the period: a sale's reversal counts with the sale it reverses; before the movements nothing
    assert api_get(api, everything, f"/api/v1/shrink?end_ms={T0}").get_json()["items"] == []
    reorders = every_item(api, everything, "/api/v1/reorders")
    assert [(r["hub_id"], r["sku"], r["suggested_qty"], r["alert_status"]) for r in reorders] == [
        ("hub-n1", "COLA", 24, "acknowledged"), ("hub-s1", "COLA", 12, None)]  # fmt: skip
    stores = {s["hub_id"]: s for s in every_item(api, everything, "/api/v1/stores")}
    assert stores["hub-n1"]["contact"] == "online" and stores["hub-x"]["contact"] == "unknown"
    assert stores["hub-s1"]["movements_complete_to"] == 3 and stores["hub-x"]["store_id"] is None
    # a disabled client's token stops at once
    seeded.db.run(lambda c: accounts.disable_client(c, "erp-stock", actor="test"))
    assert api_get(api, stock_only, "/api/v1/stock").status_code == 401


def test_a_store_s_gaps_and_silence_show(seeded: Central) -> None:
    later = NOW + 1  # central's clock at these messages (the page compares contact times with its own)
    apply(seeded.dsn, ("hub-n1", "movements", encode_movements("hub-n1", [mv(15, "TEA", "backroom", 1, "receipt")],
                                                               NOW)), at_ms=later)  # fmt: skip
    apply(seeded.dsn, ("hub-x", "status", encode_status("hub-x", "offline", NOW)), at_ms=later)
    api = seeded.app.test_client()
    token = seeded.token("erp", ["stores"])
    with_clock = {s["hub_id"]: s for s in every_item(api, token, "/api/v1/stores")}
    n1 = with_clock["hub-n1"]
    assert (n1["movements_complete_to"], n1["movements_max_id"], n1["movements_missing"], n1["gaps"]) == (10, 15, 4, 1)
    assert with_clock["hub-x"]["contact"] == "offline"
    assert with_clock["hub-s1"]["contact"] == "online"  # heard from within the last 15 minutes
    silent = create_central_app(seeded.db, config={"TESTING": True}, offline_after_ms=1)
    got = {s["hub_id"]: s["contact"] for s in every_item(silent.test_client(), token, "/api/v1/stores")}
    assert got == {"hub-n1": "silent", "hub-s1": "silent", "hub-x": "offline"}


BAD_QUERIES = [
    ("stock", "limit=0", "limit"),
    ("stock", "limit=501", "limit"),
    ("stock", "limit=%D9%A1", "limit"),  # Arabic-Indic one: ASCII digits only
    ("stock", "limit=1&limit=2", "limit"),
    ("stock", "sku=", "sku"),
    ("stock", "colour=red", "colour"),
    ("stock", "cursor=%25%25", "cursor"),
    ("stock", "cursor=abc", "cursor"),
    ("alerts", "status=resolved", "status"),
    ("alerts", "kind=Shrink!", "kind"),
    ("shrink", "group=lane", "group"),
    ("shrink", "start_ms=5&end_ms=4", "start_ms"),
    ("shrink", "end_ms=99999999999999999999", "end_ms"),
    ("stores", "store=../s1", "store"),
    ("stores", "hub=a%20b", "hub"),
]


@pytest.mark.parametrize(("name", "query", "field"), BAD_QUERIES)
def test_bad_queries_are_refused_naming_the_parameter(seeded: Central, name: str, query: str, field: str) -> None:
    api = seeded.app.test_client()
    resp = api_get(api, seeded.token("erp", API_READS), f"/api/v1/{name}?{query}")
    assert resp.status_code == 400, resp.get_json()
    assert field in [e["field"] for e in resp.get_json()["errors"]]


def test_cursors_of_another_list_or_grouping_are_refused(seeded: Central) -> None:
    api = seeded.app.test_client()
    token = seeded.token("erp", API_READS)
    stock_cursor = api_get(api, token, "/api/v1/stock?limit=1").get_json()["next_cursor"]
    shrink_cursor = api_get(api, token, f"/api/v1/shrink?limit=1&start_ms={T0}").get_json()["next_cursor"]
    for path in (f"/api/v1/reorders?cursor={stock_cursor}", f"/api/v1/shrink?group=store&cursor={shrink_cursor}",
                 f"/api/v1/alerts?cursor={stock_cursor}"):  # fmt: skip
        resp = api_get(api, token, path)
        assert resp.status_code == 400 and resp.get_json()["errors"][0]["field"] == "cursor", path
    for path in ("/stock?cursor=zzz", "/stock?sku=" + "x" * 33, "/shrink?days=12", "/alerts?status=resolved"):
        assert seeded.client("olga").get(path).status_code == 400, path
    assert api.get("/api/v1/nothing").status_code == 404 and api.get("/api/v1/nothing").is_json
    assert api_get(api, token, "/api/v1/stock").status_code == 200
    assert api.post("/api/v1/stock", headers={"Authorization": f"Bearer {token}"}).status_code == 405


def test_the_openapi_document_matches_the_server(seeded: Central) -> None:
    from hub.central.web.api_spec import OPENAPI_PATH, QUERIES
    from hub.web.access import api_scopes

    api = seeded.app.test_client()
    spec = api.get(OPENAPI_PATH).get_json()
    assert spec["openapi"] == "3.1.0"
    routes = {r.rule: r.endpoint for r in seeded.app.url_map.iter_rules() if r.rule.startswith("/api/")}
    assert set(spec["paths"]) == set(routes)
    scopes = api_scopes(seeded.app)
    for path, endpoint in routes.items():
        op = spec["paths"][path]["get"]
        declared = [p["name"] for p in op.get("parameters", [])]
        assert declared == [f.name for f in QUERIES[endpoint]], path
        if endpoint in scopes:
            assert op["security"] == [{"bearer": [scopes[endpoint]]}], path
    # every answer of every read matches its documented schema
    token = seeded.token("erp", API_READS)
    for path in spec["paths"]:
        if path == OPENAPI_PATH:
            continue
        for query in ("", "?limit=1", "?group=store"[: 13 if path.endswith("shrink") else 0]):
            resp = api_get(api, token, path + query)
            schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            validate(spec, schema, resp.get_json(), path + query)
        errors = api_get(api, token, path + "?limit=x")
        validate(spec, {"$ref": "#/components/schemas/Errors"}, errors.get_json(), path)


def validate(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    import jsonschema_rs

    root = {**schema, "components": spec["components"]}
    errors = [str(e) for e in jsonschema_rs.validator_for(root).iter_errors(value)]
    assert not errors, f"{where}: {errors[:3]}"


# --------------------------------------------------------------------------------------- headers and admin


def test_security_headers_and_no_inline_script(seeded: Central) -> None:
    ann = seeded.client("ann")
    for path in ("/", "/stock", "/alerts", "/reorders", "/shrink", "/users", "/api-clients", "/directory", "/login"):
        resp = ann.get(path)
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self'"), path
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Cache-Control"] == "no-store", path
        html = resp.get_data(as_text=True)
        assert "<script" not in html and " style=" not in html, path
        assert re.search(r"<[^>]+\son[a-z]+=", html) is None, path  # no inline event handler
        for href in re.findall(r'href="(/static/[^"]+)"', html):
            assert ann.get(href).status_code == 200, href
    resp = seeded.app.test_client().get("/api/v1/stock")
    assert resp.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_admin_pages_add_users_with_regions_and_clients_with_a_token_shown_once(seeded: Central) -> None:
    ann = seeded.client("ann")
    form = {"username": "rita", "role": "region_manager", "password": PASSWORD, "confirm": PASSWORD}
    resp = ann.post("/users", data={**form, "csrf_token": csrf(ann)})
    assert resp.status_code == 400 and "at least one region" in resp.get_data(as_text=True)
    resp = ann.post("/users", data={**form, "regions": ["south"], "csrf_token": csrf(ann)})
    assert resp.status_code == 302
    rita = seeded.client("rita")
    shown = after_filters(rita.get("/stock").get_data(as_text=True))
    assert "Southside" in shown and "Northgate" not in shown
    # her regions change: her session ends, the next one sees the north
    resp = ann.post("/users/rita", data={"role": "region_manager", "set_regions": "1", "regions": ["north"],
                                         "csrf_token": csrf(ann)})  # fmt: skip
    assert resp.status_code == 302
    assert rita.get("/stock").status_code == 302
    assert "Northgate" in after_filters(seeded.client("rita").get("/stock").get_data(as_text=True))
    resp = ann.post("/users/ann", data={"action": "disable", "csrf_token": csrf(ann)})
    assert resp.status_code == 400 and "yourself" in resp.get_data(as_text=True)
    # an API client of the north: its token once, only its hash kept
    resp = ann.post("/api-clients", data={"name": "erp-n", "scopes": ["stock", "alerts"], "stores": "regions",
                                          "regions": ["north"], "csrf_token": csrf(ann)})  # fmt: skip
    assert resp.status_code == 201
    token = re.search(r"<code>(ssc_[A-Za-z0-9_-]+)</code>", resp.get_data(as_text=True))
    assert token is not None
    assert token.group(1) not in ann.get("/api-clients").get_data(as_text=True)
    stored = seeded.db.run(lambda c: c.fetchval("SELECT token_sha256 FROM web_api_clients WHERE name = 'erp-n'"))
    assert stored == token_sha256(token.group(1))
    items = every_item(seeded.app.test_client(), token.group(1), "/api/v1/stock")
    assert {i["hub_id"] for i in items} == {"hub-n1"}
    # regions and stores
    resp = ann.post("/directory", data={"change": "region", "region": "west", "csrf_token": csrf(ann)})
    assert resp.status_code == 302
    resp = ann.post("/directory", data={"change": "store", "store_id": "x1", "name": "Xville", "region": "west",
                                        "csrf_token": csrf(ann)})  # fmt: skip
    assert resp.status_code == 302
    resp = ann.post("/directory", data={"change": "assign", "hub_id": "hub-x", "store_id": "x1",
                                        "csrf_token": csrf(ann)})  # fmt: skip
    assert resp.status_code == 302
    resp = ann.post("/directory", data={"change": "assign", "hub_id": "hub-new", "store_id": "x1",
                                        "csrf_token": csrf(ann)})  # fmt: skip
    assert resp.status_code == 400 and "not heard from" in resp.get_data(as_text=True)
    audit = seeded.db.run(lambda c: c.fetch("SELECT actor, action FROM web_audit WHERE actor = 'web:ann' ORDER BY id"))
    assert [a["action"] for a in audit] == ["add_user", "update_user", "add_api_client", "add_region", "add_store",
                                            "assign_hub"]  # fmt: skip


# ------------------------------------------------------------------------------------------ CLI and serving


def write_config(tmp: Path, dsn: str, web: str = "") -> Path:
    path = tmp / "central.toml"
    path.write_text(f'[database]\ndsn = "{dsn}"\n\n[web]\nhost = "127.0.0.1"\nport = 0\n{web}')
    path.chmod(0o600)  # the dsn holds a password
    return path


def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch("sys.stdin", io.StringIO(stdin)):
        try:
            code = main(["central", *argv])
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_cli_manages_regions_stores_users_and_tokens(tmp_path: Path, central: Central) -> None:
    seed_stores(central.db, central.dsn)
    cfg = ["--config", str(write_config(tmp_path, central.dsn))]
    assert cli("region", "add", "west", "--name", "West coast", *cfg)[0] == 0
    assert cli("store", "add", "w1", "--name", "Westend", "--region", "west", "--hub", "hub-x", *cfg)[0] == 0
    code, out, _ = cli("store", "list", *cfg)
    assert code == 0 and "w1\tWestend\twest\thub-x" in out
    code, _, err = cli("store", "assign", "hub-nope", "w1", *cfg)
    assert code == 2 and "not heard from hub 'hub-nope'" in err
    code, _, err = cli("user", "add", "wes", "--role", "region_manager", *cfg, stdin=PASSWORD + "\n")
    assert code == 2 and "at least one region" in err  # --password-stdin not given: nothing read, refused first
    code, out, _ = cli("user", "add", "wes", "--role", "region_manager", "--region", "west", "--password-stdin",
                       *cfg, stdin=PASSWORD + "\n")  # fmt: skip
    assert code == 0 and "region_manager of west" in out
    shown = after_filters(central.client("wes").get("/stock").get_data(as_text=True))
    assert "SOUP" in shown and "COLA" not in shown
    code, out, _ = cli("user", "set", "wes", "--role", "viewer", "--no-regions", *cfg)
    assert code == 0 and "role viewer" in out
    code, out, _ = cli("user", "list", "--json", *cfg)
    assert json.loads(out)[0]["role"] == "viewer"
    code, token, err = cli("token", "add", "erp", "--scopes", "stock,shrink", "--region", "west", *cfg)
    token = token.strip()
    assert code == 0 and token.startswith("ssc_") and "shown once" in err
    items = every_item(central.app.test_client(), token, "/api/v1/stock")
    assert [i["sku"] for i in items] == ["SOUP"]
    assert cli("token", "add", "erp2", "--scopes", "stock", *cfg)[0] == 2  # --region or --all-stores: required
    assert cli("token", "add", "erp2", "--scopes", "everything", "--all-stores", *cfg)[0] == 2
    code, out, _ = cli("token", "list", *cfg)
    assert "erp\tshrink,stock\tregions west" in out and token not in out
    assert cli("token", "disable", "erp", *cfg)[0] == 0
    assert api_get(central.app.test_client(), token, "/api/v1/stock").status_code == 401
    code, _, err = cli("store", "list", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "no such file" in err


def test_serve_over_https_and_the_database_down_is_a_503(
    tmp_path: Path, central: Central, postgres_db: FreshDatabase
) -> None:
    seed_stores(central.db, central.dsn)
    central.user("olga", "operations")
    token = central.token("erp", API_READS)
    cfg = load_web_config(write_config(tmp_path, central.dsn, "offline_after_s = 600\n"))
    server = CentralWebServer.start(cfg)
    session = requests.Session()
    session.trust_env = False
    try:
        assert server.url.startswith("https://127.0.0.1:") and server.fingerprint
        verify = str(tmp_path / "central-web.tls" / "cert.pem")  # generated beside central.toml
        resp = session.get(f"{server.url}api/v1/stock", headers={"Authorization": f"Bearer {token}"}, verify=verify)
        assert resp.status_code == 200 and len(resp.json()["items"]) == 4
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        page = session.get(f"{server.url}login", verify=verify)
        assert page.status_code == 200 and "; Secure" in page.headers["Set-Cookie"]  # the session cookie: HTTPS only
        postgres_db.server.stop()
        try:
            resp = session.get(f"{server.url}api/v1/stock", headers={"Authorization": f"Bearer {token}"},
                               verify=verify)  # fmt: skip
            assert resp.status_code == 503 and resp.json()["errors"][0]["field"] == "database"
            resp = session.get(f"{server.url}login", verify=verify)
            assert resp.status_code == 200  # the sign-in form needs no database
        finally:
            postgres_db.server.start()
        for _ in range(50):  # the pool reconnects by itself
            resp = session.get(f"{server.url}api/v1/stock", headers={"Authorization": f"Bearer {token}"},
                               verify=verify)  # fmt: skip
            if resp.status_code == 200:
                break
            time.sleep(0.1)
        assert resp.status_code == 200
    finally:
        session.close()
        server.stop()


def test_the_readme_s_role_table_is_the_policy(central: Central) -> None:
    from hub.web.access import matrix_markdown

    readme = (Path(__file__).resolve().parents[1] / "hub/central/web/README.md").read_text()
    table = matrix_markdown(central.app)
    assert table in readme, table


def test_text_postgresql_refuses_is_refused_before_it_gets_there(seeded: Central) -> None:
    """NUL and other control characters (PostgreSQL's text refuses NUL: it would be a 500) from a form, a login or a
    cursor are a 4xx."""
    anonymous = seeded.app.test_client()
    anonymous.get("/login")
    resp = anonymous.post("/login", data={"username": "ann\x00", "password": PASSWORD, "csrf_token": csrf(anonymous)})
    assert resp.status_code == 401
    token = seeded.token("erp", API_READS)
    bad = listing.encode_cursor("stock", ["COLA\x00", "hub-n1"])
    assert api_get(seeded.app.test_client(), token, f"/api/v1/stock?cursor={bad}").status_code == 400
    ann = seeded.client("ann")
    for form in (
        {"change": "region", "region": "east", "name": "East\x00"},
        {"change": "store", "store_id": "e1", "name": "E\x00", "region": ""},
        {"change": "assign", "hub_id": "hub\x00", "store_id": "n1"},
        {"change": "assign", "hub_id": "hub-x", "store_id": "n\x001"},
    ):
        assert ann.post("/directory", data={**form, "csrf_token": csrf(ann)}).status_code == 400, form
    resp = ann.post("/users", data={"username": "u1", "role": "region_manager", "regions": ["no\x00rth"],
                                    "password": PASSWORD, "confirm": PASSWORD, "csrf_token": csrf(ann)})  # fmt: skip
    assert resp.status_code == 400
    for path in ("/users/ann%00", "/api-clients/c%00/disable"):
        assert ann.post(path, data={"action": "disable", "csrf_token": csrf(ann)}).status_code == 404, path
    resp = ann.post("/api-clients", data={"name": "c\x00", "scopes": ["stock"], "stores": "all",
                                          "csrf_token": csrf(ann)})  # fmt: skip
    assert resp.status_code == 400


def test_central_serve_runs_until_sigterm(tmp_path: Path, central: Central) -> None:
    path = write_config(tmp_path, central.dsn)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "central", "serve", "--config", str(path)],
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            found = re.search(r"serving (https://\S+)", line)
            url = found.group(1) if found else None
            assert line or proc.poll() is None, "central serve ended"
        assert url is not None
        resp = requests.get(f"{url}login", verify=str(tmp_path / "central-web.tls" / "cert.pem"), timeout=10)
        assert resp.status_code == 200 and "Sign in" in resp.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
