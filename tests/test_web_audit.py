"""The audit trail on the status page and from its requests (issue 13).

* Every write of the page (each POST route of tests/web_routes.py, sign-in, sign-out) and of the API (each post and
  import) is audited with its actor (``web:<user>``, ``api:<client>``) and where it came from: ``ip:<the peer's
  address>``.
* ``/audit`` (admins): newest first, filters (actor and origin exact or a prefix, action, days), keyset pages, each
  entry's details as key: value, a CSV of every matching entry; read-only (no route under it writes). Whether other
  roles get 403 is the role-matrix test (tests/test_web_app.py walks every route).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from hub.ledger import LedgerService
from hub.ledger import schema as ledger_schema
from hub.ledger.origin import acting_from, current
from hub.schema import MIGRATIONS
from hub.web.accounts.clients import SCOPES, add_client, token_sha256
from hub.web.server import loop_count_lane
from tests.test_web_api import CALLS, add_token, call
from tests.web_routes import ROUTES
from tests.web_support import PASSWORD, SEED_EPC, Env

ADDR = "203.0.113.9"
WHERE = f"ip:{ADDR}"


def _client(env: Env, role: str | None) -> FlaskClient:
    client = env.client(role)
    client.environ_base["REMOTE_ADDR"] = ADDR
    return client


def _last(env: Env) -> int:
    return int(env.sql("SELECT coalesce(max(id), 0) FROM audit")[0][0])


def _since(env: Env, last: int) -> list[tuple[str, str, str | None]]:
    return [(str(a), str(b), c) for a, b, c in env.sql("SELECT actor, action, origin FROM audit WHERE id > ?", (last,))]


# ------------------------------------------------------------------------------------ from where each write came


@pytest.mark.parametrize("route", sorted(n for n, r in ROUTES.items() if r.method == "POST"))
def test_every_page_write_is_audited_with_the_user_and_the_address(env: Env, route: str) -> None:
    r = ROUTES[route]
    if "{client}" in r.url:
        digest = token_sha256("ssk_" + "c" * 43)
        env.write(lambda ledger: ledger.transact(lambda tx: add_client(tx, "till-1", digest, ("sales",), actor="t")))
    alert = env.sql("SELECT id FROM alerts WHERE kind = 'shrinkage'")[0][0]
    url = r.url.format(alert=alert, lane="A1", user="viewer", client="till-1", epc=SEED_EPC)
    client = _client(env, "admin")
    last = _last(env)
    resp = client.post(url, data={**r.data, "csrf_token": env.csrf(client)})
    assert resp.status_code == r.ok, resp.data[:300]
    entries = _since(env, last)
    assert entries and all(e[0] == "web:admin" and e[2] == WHERE for e in entries), entries


def test_sign_in_and_out_are_audited_with_the_address(env: Env) -> None:
    client = _client(env, None)
    last = _last(env)
    resp = client.post("/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": env.csrf(client)})
    assert resp.status_code == 302
    client.post("/logout", data={"csrf_token": env.csrf(client)})
    assert _since(env, last) == [("web:clerk", "login", WHERE), ("web:clerk", "end_sessions", WHERE)]


@pytest.mark.parametrize("endpoint", sorted(e for e, c in CALLS.items() if c[0] == "POST"))
def test_every_api_write_is_audited_with_the_client_and_the_address(env: Env, endpoint: str) -> None:
    token = add_token(env, "pos", SCOPES)
    method, url, body = CALLS[endpoint]
    last = _last(env)
    resp = call(env, method, url, body, token, environ_base={"REMOTE_ADDR": ADDR})
    assert resp.status_code == 201, resp.get_json()
    entries = _since(env, last)
    assert entries and all(e[0] == "api:pos" and e[2] == WHERE for e in entries), entries


def test_the_origin_crosses_to_the_hubs_loop_with_a_count() -> None:
    """``loop_count_lane`` (the shelf page's count, run on the hub's loop) sees the request's origin there."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def count_lane(node: int, lane: int, counted: int, actor: str) -> tuple[bool, str]:
            return True, str(current())

        with acting_from(WHERE):
            assert loop_count_lane(count_lane, loop)(1, 0, 3, "web:manager") == (True, WHERE)
        assert loop_count_lane(count_lane, loop)(1, 0, 3, "web:manager") == (True, "None")
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_worker_threads_next_request_does_not_inherit_the_origin(env: Env) -> None:
    _client(env, "admin").get("/audit")
    assert current() is None


# ------------------------------------------------------------------------------------------------ the audit page


def _page(env: Env, query: str = "", role: str = "admin") -> tuple[int, str]:
    resp = env.client(role).get(f"/audit{query}")
    return resp.status_code, resp.get_data(as_text=True)


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr id="a(\d+)">', html)]


def _audit(env: Env, where: str = "1", params: tuple[Any, ...] = ()) -> list[int]:
    """Entry ids newest first (by time, then id), as the page orders them."""
    return [int(r[0]) for r in env.sql(f"SELECT id FROM audit WHERE {where} ORDER BY ts_ms DESC, id DESC", params)]


def _add_entries(env: Env, n: int, origin: str, actor: str = "web:admin", action: str = "add_sku") -> None:
    async def add(ledger: LedgerService) -> None:
        with acting_from(origin):
            for i in range(n):
                await ledger.record_audit(actor, action, {"i": i, "note": "x" * 3, "ids": [1, 2]})

    env.write(add)


def test_the_page_lists_the_trail_newest_first_with_its_details(env: Env) -> None:
    _add_entries(env, 3, WHERE)
    status, html = _page(env)
    assert status == 200
    assert _ids(html) == _audit(env)[:100]
    newest = _audit(env)[0]
    row = html.split(f'<tr id="a{newest}">')[1].split("</tr>")[0]
    assert "web:admin" in row and "add_sku" in row and WHERE in row
    assert "<dt>i</dt><dd>2</dd>" in row and "<dt>ids</dt><dd>1, 2</dd>" in row  # readable, not raw JSON
    assert "automatic (the hub itself)" in html  # the seed's entries: the test's writer has no origin
    assert 'href="/audit"' in env.client("admin").get("/").get_data(as_text=True)  # in the admin's navigation
    assert 'href="/audit"' not in env.client("manager").get("/").get_data(as_text=True)


def test_filters_select_exactly_the_matching_entries(env: Env) -> None:
    _add_entries(env, 2, WHERE, actor="api:pos", action="sale")
    _add_entries(env, 2, "ip:10.0.0.7", actor="api:wms", action="receipt")
    _add_entries(env, 1, "cli:root@pi", actor="cli:root", action="add_sku")
    cases = [
        ("?actor=api:pos", "actor = 'api:pos'"),
        ("?actor=api:*", "actor GLOB 'api:*'"),
        ("?actor=api:", "actor = 'api:'"),  # exact unless it ends with *
        ("?action=receipt", "action = 'receipt'"),
        (f"?origin={WHERE}", f"origin = '{WHERE}'"),
        ("?origin=ip:*", "origin GLOB 'ip:*'"),
        ("?origin=auto", "origin = 'auto'"),
        ("?actor=api:*&action=sale&origin=ip:*", "actor GLOB 'api:*' AND action = 'sale' AND origin GLOB 'ip:*'"),
        ("?from=2000-01-01&to=9999-12-31", "1"),
        ("?to=2000-01-01", "0"),
        ("?from=9999-12-31", "0"),
    ]
    for query, where in cases:
        status, html = _page(env, query)
        assert status == 200, (query, html[:300])
        assert _ids(html) == _audit(env, where), query


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?from=2025-13-01", "from: "),
        ("?to=2025-1-1", "to: "),
        ("?from=\uff12\uff10\uff12\uff15-01-01", "from: "),  # full-width digits
        ("?from=2025-02-01&to=2025-01-01", "first day is after"),
        ("?action=DROP TABLE", "action: "),
        ("?actor=" + "a" * 70, "actor: at most"),
        ("?actor=a%0Ab", "actor: control"),
        ("?before=abc", "before: "),
        ("?before=1.99999999999999999999", "before: "),
        ("?before=1.9999999999999999999", "before: "),
    ],
)
def test_bad_filters_are_a_400_naming_the_parameter(env: Env, query: str, message: str) -> None:
    status, html = _page(env, query)
    assert status == 400 and message in html
    assert env.client("admin").get(f"/audit.csv{query}").status_code == 400


def test_pages_follow_the_keyset_cursor_without_gaps_or_repeats(env: Env) -> None:
    _add_entries(env, 230, WHERE)  # one transaction each, many in the same millisecond
    seen: list[int] = []
    query = "?origin=" + WHERE
    while True:
        status, html = _page(env, query)
        assert status == 200
        seen += _ids(html)
        m = re.search(r'<a id="older" href="/audit(\?[^"]+)"', html)
        if m is None:
            break
        query = m[1].replace("&amp;", "&")
        assert f"origin={WHERE.replace(':', '%3A')}" in query  # the filters are kept
        assert '<a id="newest"' in _page(env, query)[1]
    assert seen == _audit(env, "origin = ?", (WHERE,)) and len(seen) == 230


def test_the_csv_holds_every_matching_entry(env: Env) -> None:
    _add_entries(env, 1200, WHERE)  # more than one batch
    _add_entries(env, 1, "ip:10.0.0.7", actor="=cmd|' /C calc'!A0")  # a formula must not run in a spreadsheet
    resp = env.client("admin").get("/audit.csv?origin=ip:*")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert rows[0] == ["id", "time_utc", "actor", "action", "origin", "details"]
    assert [int(r[0]) for r in rows[1:]] == _audit(env, "origin GLOB 'ip:*'")
    assert rows[1][2] == "'=cmd|' /C calc'!A0" and rows[1][4] == "ip:10.0.0.7"
    assert json.loads(rows[2][5]) == {"i": 1199, "note": "xxx", "ids": [1, 2]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rows[1][1])


def test_entries_written_before_origins_were_kept_say_so(tmp_path: Path) -> None:
    """A ledger of version 8 with entries, upgraded: they have no origin and the page says it was not recorded."""
    from hub.web import LoopWriter, create_app

    db = tmp_path / "v8.db"
    conn = ledger_schema.connect(db)
    ledger_schema.migrate(conn, MIGRATIONS[:8])
    conn.execute("INSERT INTO audit (ts_ms, actor, action, details) VALUES (1000, 'cli:old', 'add_sku', '{}')")
    conn.close()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ledger = LedgerService(db, migrations=MIGRATIONS)
    try:
        asyncio.run_coroutine_threadsafe(ledger.start(), loop).result(30)
        app = create_app(db, LoopWriter(ledger, loop), config={"TESTING": True})
        conn = sqlite3.connect(db)
        conn.execute("INSERT INTO users (username, password_hash, role, created_ms) VALUES ('a', 'x', 'admin', 0)")
        conn.commit()
        conn.close()
        client = app.test_client()
        with client.session_transaction() as sess:
            sess["user"], sess["epoch"] = "a", 0
        html = client.get("/audit").get_data(as_text=True)
        assert '<tr id="a1">' in html and "not recorded" in html
    finally:
        asyncio.run_coroutine_threadsafe(ledger.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_nothing_under_audit_writes(env: Env) -> None:
    """Read-only: every route of the trail answers GET only; a POST, PUT or DELETE is refused and changes nothing."""
    rules = [r for r in env.app.url_map.iter_rules() if r.rule.startswith("/audit")]
    assert {r.rule for r in rules} == {"/audit", "/audit.csv"}
    assert all(set(r.methods or ()) <= {"GET", "HEAD", "OPTIONS"} for r in rules)
    client = env.client("admin")
    before = env.sql("SELECT * FROM audit ORDER BY id")
    for method in ("post", "put", "delete", "patch"):
        resp = getattr(client, method)("/audit", data={"csrf_token": env.csrf(client), "id": "1"})
        assert resp.status_code in (400, 405)
    assert env.sql("SELECT * FROM audit ORDER BY id") == before
