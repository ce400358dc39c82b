"""The HTTP API: bearer tokens and scopes, idempotent all-or-nothing posts, field errors, reads, OpenAPI, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from hub.cli import main
from hub.ledger.models import MAX_QTY
from hub.web import create_app
from hub.web.access import API, PUBLIC, api_scopes, role_matrix
from hub.web.accounts.clients import SCOPES, TOKEN_PREFIX, add_client, disable_client, token_sha256
from hub.web.api.fields import MAX_BODY_BYTES, MAX_ITEMS
from hub.web.api.openapi import OPENAPI_PATH, build_spec
from tests.web_support import SEED_EPC, Env

# one request per API endpoint that a client with the scope may make (the seeded ledger)
CALLS: dict[str, tuple[str, str, Any]] = {
    "api.post_sales": ("POST", "/api/v1/sales", {"id": "s-1", "sku": "COLA", "quantity": 1}),
    "api.post_receipts": ("POST", "/api/v1/receipts", {"id": "r-1", "sku": "COLA", "quantity": 24}),
    "api.post_returns": ("POST", "/api/v1/returns", {"id": "ret-1", "sku": "COLA", "quantity": 1}),
    "api.post_picks": ("POST", "/api/v1/picks", {"id": "p-1", "sku": "COLA", "quantity": 1, "order": "W1"}),
    "api.post_counts": ("POST", "/api/v1/counts", {"id": "c-1", "sku": "COLA", "counted": 7}),
    "api.stock": ("GET", "/api/v1/stock", None),
    "api.lanes": ("GET", "/api/v1/lanes", None),
    "api.alerts": ("GET", "/api/v1/alerts", None),
    # CSV files: a str body is sent as text/csv
    "api.import_sales": (
        "POST",
        "/api/v1/imports/sales",
        "id,timestamp,sku,quantity\nf-1,2026-11-27T10:00:00Z,COLA,2\n",
    ),
    "api.import_receipts": (
        "POST",
        "/api/v1/imports/receipts",
        "id,timestamp,sku,quantity\nfr-1,2026-11-27T10:00:00Z,COLA,12\n",
    ),
    "api.import_returns": (
        "POST",
        "/api/v1/imports/returns",
        "id,timestamp,sku,quantity\nfret-1,2026-11-27T10:00:00Z,COLA,1\n",
    ),
    "api.import_picks": (
        "POST",
        "/api/v1/imports/picks",
        "id,timestamp,sku,quantity,order\nfp-1,2026-11-27T10:00:00Z,COLA,1,W9\n",
    ),
    "api.import_counts": (
        "POST",
        "/api/v1/imports/counts",
        "id,timestamp,sku,counted\nfc-1,2026-11-27T10:00:00Z,COLA,5\n",
    ),
    "api.import_epcs": ("POST", "/api/v1/imports/epcs", "epc,sku\nE2801160600002054CC2096F,COLA\n"),
    "api.tags": ("GET", "/api/v1/tags", None),
    "api.tag_trail": ("GET", f"/api/v1/tags/trail?epc={SEED_EPC}", None),
}


def add_token(env: Env, name: str, scopes: tuple[str, ...]) -> str:
    token = f"{TOKEN_PREFIX}{hashlib.sha256(name.encode()).hexdigest()[:43]}"
    env.write(lambda ledger: ledger.transact(lambda tx: add_client(tx, name, token_sha256(token), scopes, actor="t")))
    return token


@pytest.fixture
def token(env: Env) -> str:
    """A client ("pos") with every scope."""
    return add_token(env, "pos", SCOPES)


def call(env: Env, method: str, url: str, body: Any = None, token: str | None = None, **kw: Any) -> TestResponse:
    client: FlaskClient = env.app.test_client()
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers.update(kw.pop("headers", {}))
    if method == "GET":
        return client.get(url, headers=headers, **kw)
    if isinstance(body, str):
        kw.setdefault("content_type", "text/csv")
        kw["data"] = body.encode()
    elif body is not None:
        kw["json"] = body
    return client.post(url, headers=headers, **kw)


def post(env: Env, kind: str, body: Any, token: str) -> TestResponse:
    return call(env, "POST", f"/api/v1/{kind}", body, token)


def _sql(env: Env | Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(env.db if isinstance(env, Env) else env)
    try:
        return list(conn.execute(query, params))
    finally:
        conn.close()


def snapshot(env: Env) -> list[list[tuple[Any, ...]]]:
    """Everything a refused request must leave as it was."""
    return [
        _sql(env, f"SELECT * FROM {table} ORDER BY 1, 2")
        for table in ("movements", "audit", "balances", "physical_counts", "alerts", "api_clients")
    ]


def errors(resp: TestResponse) -> list[dict[str, Any]]:
    assert resp.is_json, resp.data[:300]
    body = resp.get_json()
    assert isinstance(body, dict) and isinstance(body["errors"], list) and body["errors"], body
    return body["errors"]


def fields(resp: TestResponse) -> list[str]:
    return [e["field"] for e in errors(resp)]


# ------------------------------------------------------------------------------------------------------ auth


def test_every_api_endpoint_needs_a_token_and_a_scope(env: Env) -> None:
    api_endpoints = {r.endpoint for r in env.app.url_map.iter_rules() if r.endpoint.startswith("api.")}
    scopes, matrix = api_scopes(env.app), role_matrix(env.app)  # the rules the views declare (hub/web/access.py)
    assert api_endpoints - {"api.openapi"} == set(scopes) == set(CALLS)
    assert {e for e, needed in matrix.items() if needed == API} == set(scopes)
    assert matrix["api.openapi"] == PUBLIC
    assert set(scopes.values()) == set(SCOPES)


@pytest.mark.parametrize("endpoint", sorted(CALLS))
def test_missing_unknown_or_disabled_token_gets_401(env: Env, endpoint: str) -> None:
    method, url, body = CALLS[endpoint]
    good = add_token(env, "till", SCOPES)
    env.write(lambda ledger: ledger.transact(lambda tx: disable_client(tx, "till", actor="t")))
    before = snapshot(env)
    cases: list[dict[str, Any]] = [
        {},  # no Authorization header
        {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
        {"headers": {"Authorization": "Bearer"}},
        {"token": TOKEN_PREFIX + "x" * 43},  # unknown
        {"token": "not-even-prefixed"},
        {"token": good},  # disabled
    ]
    for case in cases:
        resp = call(env, method, url, body, case.get("token"), headers=case.get("headers", {}))
        assert resp.status_code == 401, (case, resp.data)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert fields(resp) == ["Authorization"]
    assert "disabled" in errors(call(env, method, url, body, good))[0]["message"]
    assert snapshot(env) == before


@pytest.mark.parametrize("endpoint", sorted(CALLS))
def test_each_endpoint_needs_its_scope(env: Env, endpoint: str) -> None:
    method, url, body = CALLS[endpoint]
    needed = api_scopes(env.app)[endpoint]
    before = snapshot(env)
    for scope in SCOPES:
        if scope == needed:
            continue
        resp = call(env, method, url, body, add_token(env, f"only-{scope}", (scope,)))
        assert resp.status_code == 403, resp.data
        assert f"'{needed}'" in errors(resp)[0]["message"]
        assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    after_tokens = snapshot(env)
    assert after_tokens[0] == before[0]  # no movement (only the clients and their audit entries were added)
    resp = call(env, method, url, body, add_token(env, f"only-{needed}", (needed,)))
    assert resp.status_code == (201 if method == "POST" else 200), resp.data


def test_an_api_endpoint_without_a_scope_is_refused(env: Env, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a new view of the blueprint that someone forgot to give a scope: refused even with every scope (fail closed)
    env.app.add_url_rule("/api/v1/forgotten", endpoint="api.forgotten", view_func=lambda: "secret")
    resp = call(env, "GET", "/api/v1/forgotten", token=token)
    assert resp.status_code == 403 and b"secret" not in resp.data
    assert fields(resp) == ["endpoint"]


def test_the_api_takes_no_session_and_no_csrf(env: Env, token: str) -> None:
    client = env.client("admin")  # a signed-in admin's cookie is no API credential
    assert client.get("/api/v1/stock").status_code == 401
    resp = client.post("/api/v1/sales", json=CALLS["api.post_sales"][2], headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 201  # no CSRF token needed with a bearer token


# ----------------------------------------------------------------------------------------------------- posts


def test_sale_posts_from_the_shelf_with_the_client_as_actor(env: Env, token: str) -> None:
    resp = post(env, "sales", {"id": "till1-0001", "sku": "COLA", "quantity": 2}, token)
    assert resp.status_code == 201, resp.data
    [item] = resp.get_json()["items"]
    assert item["status"] == "created" and item["index"] == 0 and item["id"] == "till1-0001"
    rows = _sql(
        env, "SELECT id, sku, location, qty, reason, source_ref, actor FROM movements WHERE source_ref LIKE 'sale:%'"
    )
    assert rows == [(item["movement_ids"][0], "COLA", "lane:A1", -2, "sale", "sale:till1-0001", "api:pos")]
    assert _sql(env, "SELECT actor, action FROM audit ORDER BY id DESC LIMIT 1") == [("api:pos", "sale")]


def test_receipt_with_timestamp_and_location(env: Env, token: str) -> None:
    body = {
        "id": "dl-7",
        "sku": "TEA",
        "quantity": 24,
        "timestamp": "2025-11-27T14:03:00+01:00",
        "location": "backroom",
    }
    assert post(env, "receipts", body, token).status_code == 201
    rows = _sql(env, "SELECT ts_ms, location, qty, reason FROM movements WHERE source_ref = 'receipt:dl-7'")
    assert rows == [(1764248580000, "backroom", 24, "receipt")]
    body = {"id": "dl-8", "sku": "TEA", "quantity": 1, "timestamp": 1764248580123}
    assert post(env, "receipts", body, token).status_code == 201
    assert _sql(env, "SELECT ts_ms FROM movements WHERE source_ref = 'receipt:dl-8'") == [(1764248580123,)]


def test_returns_restockable_or_written_off(env: Env, token: str) -> None:
    resp = post(
        env,
        "returns",
        {
            "items": [
                {"id": "rt1", "sku": "SOUP", "quantity": 2},
                {"id": "rt2", "sku": "SOUP", "quantity": 1, "restockable": False},
            ]
        },
        token,
    )
    assert resp.status_code == 201
    assert [len(i["movement_ids"]) for i in resp.get_json()["items"]] == [1, 2]
    rows = _sql(env, "SELECT source_ref, qty, reason FROM movements WHERE source_ref LIKE 'return:%' ORDER BY id")
    assert rows == [("return:rt1", 2, "return"), ("return:rt2", 1, "return"), ("return:rt2", -1, "damage")]
    assert _sql(env, "SELECT qty FROM balances WHERE sku = 'SOUP' AND location = 'backroom'") == [(2,)]


def test_pick_needs_an_order(env: Env, token: str) -> None:
    resp = post(env, "picks", {"id": "pk1", "sku": "COLA", "quantity": 3}, token)
    assert resp.status_code == 422 and fields(resp) == ["order"]
    resp = post(env, "picks", {"id": "pk1", "sku": "COLA", "quantity": 3, "order": "WEB-17"}, token)
    assert resp.status_code == 201
    assert _sql(env, "SELECT qty, reason, note FROM movements WHERE source_ref = 'pick:pk1'") == [
        (-3, "order_pick", "order WEB-17")
    ]


def test_count_posts_the_difference(env: Env, token: str) -> None:
    post(env, "receipts", {"id": "in1", "sku": "TEA", "quantity": 10}, token)
    resp = post(env, "counts", {"id": "cnt1", "sku": "TEA", "counted": 7, "location": "backroom"}, token)
    assert resp.status_code == 201
    [item] = resp.get_json()["items"]
    assert (item["book"], item["counted"]) == (10, 7) and item["movement_ids"] == [item["adjustment_movement_id"]]
    assert _sql(env, "SELECT qty, reason FROM movements WHERE id = ?", (item["adjustment_movement_id"],)) == [
        (-3, "count_adjustment")
    ]
    assert _sql(env, "SELECT book_qty, counted_qty, actor FROM physical_counts") == [(10, 7, "api:pos")]
    # a count that agrees posts no movement
    [item] = post(env, "counts", {"id": "cnt2", "sku": "TEA", "counted": 7}, token).get_json()["items"]
    assert item["movement_ids"] == [] and item["adjustment_movement_id"] is None


@pytest.mark.parametrize("endpoint", [e for e in CALLS if e.startswith("api.post_")])
def test_replay_is_a_duplicate_and_a_changed_item_conflicts(env: Env, token: str, endpoint: str) -> None:
    _, url, item = CALLS[endpoint]
    kind = url.rsplit("/", 1)[1]
    batch = {"items": [item, {**item, "id": item["id"] + "b"}]}
    first = post(env, kind, batch, token)
    assert first.status_code == 201
    before = snapshot(env)
    again = post(env, kind, batch, token)
    assert again.status_code == 200
    assert [i["status"] for i in again.get_json()["items"]] == ["duplicate", "duplicate"]
    assert [i["movement_ids"] for i in again.get_json()["items"]] == [
        i["movement_ids"] for i in first.get_json()["items"]
    ]
    assert snapshot(env) == before
    # the same id with other content, behind a new item: 409 naming item 1, and the new item is not written either
    qty = "counted" if kind == "counts" else "quantity"
    changed = {"items": [{**item, "id": "fresh"}, {**item, qty: item[qty] + 1}]}
    resp = post(env, kind, changed, token)
    assert resp.status_code == 409, resp.data
    assert [(e["field"], e["index"]) for e in errors(resp)] == [("items[1].id", 1)]
    assert snapshot(env) == before
    # a single object conflicting
    resp = post(env, kind, {**item, qty: item[qty] + 2}, token)
    assert resp.status_code == 409 and fields(resp) == ["id"]
    assert snapshot(env) == before


def test_batch_is_all_or_nothing(env: Env, token: str) -> None:
    good = {"id": "a", "sku": "COLA", "quantity": 1}
    before = snapshot(env)
    for bad, field in (
        ({"id": "b", "sku": "NOPE", "quantity": 1}, "items[1].sku"),
        ({"id": "b", "sku": "TEA", "quantity": 0}, "items[1].quantity"),  # found before it
        ({"id": "b", "sku": "TEA", "quantity": 1, "location": "lane:ZZ9"}, "items[1].location"),  # only the ledger
        ({"id": "a", "sku": "TEA", "quantity": 1}, "items[1].id"),  # repeats items[0]
    ):
        resp = post(env, "sales", {"items": [good, bad, {"id": "c", "sku": "TEA", "quantity": 1}]}, token)
        assert resp.status_code == 422, resp.data
        assert [(e["field"], e["index"]) for e in errors(resp)] == [(field, 1)]
        assert snapshot(env) == before
    # every problem is reported at once
    resp = post(env, "sales", {"items": [{"id": "x", "sku": "NOPE", "quantity": 1}, good, {"sku": "TEA"}]}, token)
    assert resp.status_code == 422
    assert sorted(fields(resp)) == ["items[0].sku", "items[2].id", "items[2].quantity"]
    assert snapshot(env) == before
    # and the same batch, all good, is applied in one go
    resp = post(env, "sales", {"items": [good, {"id": "b", "sku": "TEA", "quantity": 1}]}, token)
    assert resp.status_code == 201 and len(_sql(env, "SELECT 1 FROM movements WHERE actor = 'api:pos'")) == 2


BAD_ITEMS: list[tuple[str, dict[str, Any], str]] = [
    ("sales", {"id": "x", "sku": "COLA", "quantity": "2"}, "quantity"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": 1.5}, "quantity"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": True}, "quantity"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": 0}, "quantity"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": -1}, "quantity"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": MAX_QTY + 1}, "quantity"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": None}, "quantity"),
    ("sales", {"id": "x", "quantity": 1}, "sku"),
    ("sales", {"id": "x", "sku": "", "quantity": 1}, "sku"),
    ("sales", {"id": "x", "sku": "Ä", "quantity": 1}, "sku"),
    ("sales", {"id": "x", "sku": 7, "quantity": 1}, "sku"),
    ("sales", {"sku": "COLA", "quantity": 1}, "id"),
    ("sales", {"id": "", "sku": "COLA", "quantity": 1}, "id"),
    ("sales", {"id": " x", "sku": "COLA", "quantity": 1}, "id"),
    ("sales", {"id": "x" * 65, "sku": "COLA", "quantity": 1}, "id"),
    ("sales", {"id": 12, "sku": "COLA", "quantity": 1}, "id"),
    ("sales", {"id": "x", "sku": "COLA", "qty": 1}, "qty"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": 1, "timestamp": "2025-11-27T14:03:00"}, "timestamp"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": 1, "timestamp": "yesterday"}, "timestamp"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": 1, "timestamp": -1}, "timestamp"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": 1, "timestamp": 1.5}, "timestamp"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": 1, "location": "sensor:A1"}, "location"),
    ("sales", {"id": "x", "sku": "COLA", "quantity": 1, "location": "Back Room"}, "location"),
    ("picks", {"id": "x", "sku": "COLA", "quantity": 1, "order": "   "}, "order"),
    ("picks", {"id": "x", "sku": "COLA", "quantity": 1, "order": 5}, "order"),
    ("returns", {"id": "x", "sku": "COLA", "quantity": 1, "restockable": "no"}, "restockable"),
    ("counts", {"id": "x", "sku": "COLA", "counted": -1}, "counted"),
    ("counts", {"id": "x", "sku": "COLA", "quantity": 1}, "quantity"),  # counts take "counted"
]
BEYOND_SCHEMA_BAD_ITEMS: list[tuple[str, dict[str, Any], str]] = [  # the schema cannot say why these are refused
    ("sales", {"id": "x", "sku": "NOPE", "quantity": 1}, "sku"),
    ("sales", {"id": "a\x07b", "sku": "COLA", "quantity": 1}, "id"),  # not printable (the ledger's rule for refs)
    ("sales", {"id": "x", "sku": "COLA", "quantity": 1, "timestamp": "1969-12-31T23:59:59Z"}, "timestamp"),
    ("receipts", {"id": "x", "sku": "COLA", "quantity": 1, "location": "lane:ZZ9"}, "location"),
    ("counts", {"id": "x", "sku": "NOPE", "counted": 0}, "sku"),
]


@pytest.mark.parametrize(("kind", "item", "field"), BAD_ITEMS + BEYOND_SCHEMA_BAD_ITEMS)
def test_a_bad_field_is_named_and_nothing_is_written(
    env: Env, token: str, kind: str, item: dict[str, Any], field: str
) -> None:
    before = snapshot(env)
    resp = post(env, kind, item, token)
    assert resp.status_code == 422, resp.data
    assert field in fields(resp)
    batch = post(env, kind, {"items": [CALLS[f"api.post_{kind}"][2], item]}, token)
    assert batch.status_code == 422 and f"items[1].{field}" in fields(batch)
    assert {e.get("index") for e in errors(batch)} == {1}
    assert snapshot(env) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": {"id": "x"}}, "items"),
        ({"items": [{"id": "x", "sku": "COLA", "quantity": 1}], "note": "hi"}, "note"),
        ({"items": [{"id": f"x{i}", "sku": "COLA", "quantity": 1} for i in range(MAX_ITEMS + 1)]}, "items"),
        ({"items": ["x"]}, "items[0]"),
        ([{"id": "x", "sku": "COLA", "quantity": 1}], "body"),
        (5, "body"),
    ],
)
def test_a_bad_body_is_refused(env: Env, token: str, body: Any, field: str) -> None:
    before = snapshot(env)
    resp = post(env, "sales", body, token)
    assert resp.status_code == 422 and field in fields(resp)
    assert snapshot(env) == before


def test_not_json_wrong_content_type_or_too_large(env: Env, token: str) -> None:
    before = snapshot(env)
    auth = {"Authorization": f"Bearer {token}"}
    client = env.app.test_client()
    resp = client.post("/api/v1/sales", data="{", headers=auth, content_type="application/json")
    assert resp.status_code == 400 and fields(resp) == ["body"]
    resp = client.post(
        "/api/v1/sales",
        data='{"id": "x", "sku": "COLA", "quantity": NaN}',
        headers=auth,
        content_type="application/json",
    )
    assert resp.status_code == 400
    resp = client.post("/api/v1/sales", data=b"\xff\xfe", headers=auth, content_type="application/json")
    assert resp.status_code == 400
    deep = "[" * 200_000 + "]" * 200_000
    resp = client.post("/api/v1/sales", data=deep, headers=auth, content_type="application/json")
    assert resp.status_code == 400 and fields(resp) == ["body"]
    good = json.dumps(CALLS["api.post_sales"][2])
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        resp = client.post("/api/v1/sales", data=good, headers=auth, content_type=content_type)
        assert resp.status_code == 415 and fields(resp) == ["Content-Type"]
    big = json.dumps({"items": [{"id": "x", "sku": "COLA", "quantity": 1, "location": "a" * 60}] * 20_000})
    assert len(big) > MAX_BODY_BYTES
    resp = client.post("/api/v1/sales", data=big, headers=auth, content_type="application/json")
    assert resp.status_code == 413 and fields(resp) == ["request"]
    assert snapshot(env) == before


def test_a_full_batch_fits_in_one_request(env: Env, token: str) -> None:
    items = [
        {
            "id": f"pos7-2025-11-27-{i:06d}",
            "sku": "COLA",
            "quantity": 1,
            "timestamp": "2025-11-27T14:03:00+01:00",
            "location": "lane:A1",
        }
        for i in range(MAX_ITEMS)
    ]
    resp = post(env, "sales", {"items": items}, token)
    assert resp.status_code == 201, resp.data[:300]
    assert len(resp.get_json()["items"]) == MAX_ITEMS
    assert _sql(env, "SELECT qty FROM balances WHERE sku = 'COLA' AND location = 'lane:A1'") == [(-MAX_ITEMS,)]


def test_errors_under_api_are_json(env: Env, token: str) -> None:
    resp = call(env, "GET", "/api/v1/nothing-here", token=token)
    assert resp.status_code == 404 and fields(resp) == ["request"]
    resp = call(env, "GET", "/api/v1/sales", token=token)
    assert resp.status_code == 405 and fields(resp) == ["request"] and "POST" in resp.headers["Allow"]
    resp = env.app.test_client().delete(OPENAPI_PATH)
    assert resp.status_code == 405 and resp.is_json
    # the status page keeps its own (non-JSON) errors
    resp = env.app.test_client().get("/nowhere")
    assert resp.status_code == 404 and not resp.is_json


# ----------------------------------------------------------------------------------------------------- reads


def test_stock_per_sku_location_and_lane(env: Env, token: str) -> None:
    post(
        env,
        "receipts",
        {
            "items": [
                {"id": "r1", "sku": "TEA", "quantity": 24},
                {"id": "r2", "sku": "TEA", "quantity": 6, "location": "lane:B1"},
            ]
        },
        token,
    )
    resp = call(env, "GET", "/api/v1/stock", token=token)
    assert resp.status_code == 200
    items = {i["sku"]: i for i in resp.get_json()["items"]}
    assert set(items) == {"COLA", "TEA", "SOUP"}
    assert items["TEA"]["book"] == [{"location": "backroom", "qty": 24}, {"location": "lane:B1", "qty": 6}]
    assert items["TEA"]["book_total"] == 30
    assert items["TEA"]["observed"] == [{"lane_id": "B1", "qty": 3}] and items["TEA"]["observed_total"] == 3
    assert items["COLA"]["observed"] == [{"lane_id": "A1", "qty": 21}] and items["COLA"]["book"] == []
    one = call(env, "GET", "/api/v1/stock?sku=TEA", token=token).get_json()["items"]
    assert one == [items["TEA"]]
    resp = call(env, "GET", "/api/v1/stock?sku=NOPE", token=token)
    assert resp.status_code == 404 and fields(resp) == ["sku"]
    resp = call(env, "GET", "/api/v1/stock?skus=TEA", token=token)
    assert resp.status_code == 400 and fields(resp) == ["skus"]


def test_lanes(env: Env, token: str) -> None:
    resp = call(env, "GET", "/api/v1/lanes", token=token)
    assert resp.status_code == 200
    lanes = {lane["lane_id"]: lane for lane in resp.get_json()["items"]}
    assert set(lanes) == {"A1", "B1", "C1"}
    a1 = lanes["A1"]
    assert (a1["node_id"], a1["lane_index"], a1["sku"], a1["count"], a1["capacity"], a1["state"]) == (
        1,
        0,
        "COLA",
        21,
        30,
        "ok",
    )
    assert a1["open_alerts"] == 1 and isinstance(a1["last_change_ms"], int)
    assert (lanes["B1"]["count"], lanes["B1"]["state"]) == (3, "low")
    assert (lanes["C1"]["count"], lanes["C1"]["state"], lanes["C1"]["last_change_ms"]) == (0, "out", None)


def test_alerts_filter_and_pages(env: Env, token: str) -> None:
    ids = [r[0] for r in _sql(env, "SELECT id FROM alerts ORDER BY id")]
    env.write(lambda ledger: ledger.acknowledge_alert(ids[0], actor="t"))
    env.write(lambda ledger: ledger.open_alert("sensor", "lane:C1", {}, actor="t"))
    third = env.write(lambda ledger: ledger.open_alert("damage", "lane:B1", {"x": 1}, actor="t")).alert_id
    env.write(lambda ledger: ledger.resolve_alert(third, actor="t", resolution="fixed"))

    def get(query: str) -> dict[str, Any]:
        resp = call(env, "GET", f"/api/v1/alerts{query}", token=token)
        assert resp.status_code == 200, resp.data
        body: dict[str, Any] = resp.get_json()
        return body

    assert [a["id"] for a in get("")["items"]] == sorted([*ids, ids[-1] + 1, third])
    assert [a["status"] for a in get("?status=acknowledged")["items"]] == ["acknowledged"]
    assert [a["id"] for a in get("?status=resolved")["items"]] == [third]
    assert len(get("?status=unresolved")["items"]) == 3 and len(get("?status=open")["items"]) == 2
    page = get("?limit=2")
    assert len(page["items"]) == 2 and page["next_after"] == page["items"][-1]["id"]
    rest = get(f"?limit=2&after={page['next_after']}")
    assert len(rest["items"]) == 2 and rest["next_after"] is None
    assert get("?status=resolved")["items"][0]["resolution"] == "fixed"
    assert get("")["items"][0]["evidence"] == {"missing": 2}
    for query, field in (
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=x", "limit"),
        ("?after=-1", "after"),
        ("?status=closed", "status"),
        ("?limit=1&limit=2", "limit"),
    ):
        resp = call(env, "GET", f"/api/v1/alerts{query}", token=token)
        assert resp.status_code == 400 and fields(resp) == [field], query


# ---------------------------------------------------------------------------------------------------- OpenAPI


class SchemaError(AssertionError):
    pass


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def check(schema: dict[str, Any], value: Any, spec: dict[str, Any], where: str = "$") -> None:
    """A small JSON Schema (2020-12 subset) checker: the keywords the description uses."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        check(spec["components"]["schemas"][name], value, spec, where)
        return
    if "oneOf" in schema:
        matches = 0
        for option in schema["oneOf"]:
            try:
                check(option, value, spec, where)
                matches += 1
            except SchemaError:
                pass
        if matches != 1:
            raise SchemaError(f"{where}: {matches} of oneOf match")
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        kinds = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
            "null": value is None,
        }
        if not any(kinds[t] for t in types):
            raise SchemaError(f"{where}: {value!r} is not {types}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {value!r} not in {schema['enum']}")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not schema.get("minimum", value) <= value <= schema.get("maximum", value)
    ):
        raise SchemaError(f"{where}: {value} out of range")
    if isinstance(value, str):
        if schema.get("format") == "date-time" and not RFC3339.fullmatch(value):
            raise SchemaError(f"{where}: {value!r} is not an RFC 3339 date-time")
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            raise SchemaError(f"{where}: length of {value!r}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(f"{where}: {name} missing")
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                check(props[name], item, spec, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                raise SchemaError(f"{where}: unexpected {name}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            raise SchemaError(f"{where}: {len(value)} items")
        for i, item in enumerate(value):
            if "items" in schema:
                check(schema["items"], item, spec, f"{where}[{i}]")


def _response_schema(spec: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    schema: dict[str, Any] = spec["paths"][path][method.lower()]["responses"][str(status)]["content"][
        "application/json"
    ]["schema"]
    return schema


def test_openapi_lists_exactly_the_api_routes(env: Env) -> None:
    resp = env.app.test_client().get(OPENAPI_PATH)  # public: no token
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec == json.loads(json.dumps(build_spec(api_scopes(env.app))))
    assert spec["openapi"].startswith("3.1")
    routes = {
        (method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in env.app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    described = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert routes == described
    bearer = spec["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    by_endpoint = {r.endpoint: r for r in env.app.url_map.iter_rules() if r.endpoint.startswith("api.")}
    for endpoint, scope in api_scopes(env.app).items():
        rule = by_endpoint[endpoint]
        [method] = (rule.methods or set()) - {"HEAD", "OPTIONS"}
        op = spec["paths"][rule.rule][method.lower()]
        assert op["security"] == [{"bearer": [scope]}]
        for code in ("401", "403"):
            assert op["responses"][code]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Errors"
            }
    assert spec["paths"][OPENAPI_PATH]["get"]["security"] == []


class _NoWriter:
    def call(self, fn: Any, *, timeout_s: float | None = None) -> Any:
        raise AssertionError("nothing writes here")


@pytest.fixture(scope="module")
def declared_scopes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The scopes the API's views declare, read from an app (building one reads no ledger)."""
    return api_scopes(create_app(tmp_path_factory.mktemp("spec") / "unused.db", _NoWriter()))


@pytest.mark.parametrize(("kind", "item", "field"), BAD_ITEMS)
def test_the_schema_refuses_what_the_validator_refuses(
    declared_scopes: dict[str, str], kind: str, item: dict[str, Any], field: str
) -> None:
    spec = build_spec(declared_scopes)
    schema = spec["paths"][f"/api/v1/{kind}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    check(schema, CALLS[f"api.post_{kind}"][2], spec)
    with pytest.raises(SchemaError):
        check(schema, item, spec)
    with pytest.raises(SchemaError):
        check(schema, {"items": [CALLS[f"api.post_{kind}"][2], item]}, spec)


def test_real_responses_match_the_description(env: Env, token: str) -> None:
    spec = build_spec(api_scopes(env.app))
    for seen, (method, url, body) in enumerate(CALLS.values()):
        path = url.split("?")[0]
        resp = call(env, method, url, body, token)
        check(_response_schema(spec, method, path, resp.status_code), resp.get_json(), spec)
        if method == "POST" and isinstance(body, str):  # a CSV import: replayed, then a file with a bad row
            assert "text/csv" in spec["paths"][path]["post"]["requestBody"]["content"]
            replay = call(env, method, url, body, token)
            assert replay.status_code == 200
            check(_response_schema(spec, method, path, 200), replay.get_json(), spec)
            bad = call(env, method, url, body.replace("COLA", "NOPE"), token)
            assert bad.status_code == 422
            check(_response_schema(spec, method, path, 422), bad.get_json(), spec)
        elif method == "POST":
            kind = path.rsplit("/", 1)[1]
            check(spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"], body, spec)
            replay = call(env, method, url, {"items": [body]}, token)
            assert replay.status_code == 200
            check(_response_schema(spec, method, path, 200), replay.get_json(), spec)
            bad = post(env, kind, {**body, "sku": 5}, token)
            check(_response_schema(spec, method, path, bad.status_code), bad.get_json(), spec)
            conflict = post(env, kind, {**body, "id": body["id"], "sku": "TEA"}, token)
            assert conflict.status_code == 409
            check(_response_schema(spec, method, path, 409), conflict.get_json(), spec)
        for status, extra in (
            (401, None),
            (403, add_token(env, f"none-{seen}", ("read",) if method == "POST" else ("sales",))),
        ):
            resp = call(env, method, url, body, extra)
            assert resp.status_code == status
            check(_response_schema(spec, method, path, status), resp.get_json(), spec)
    alerts = call(env, "GET", "/api/v1/alerts?status=unresolved&limit=1", token=token)
    check(_response_schema(spec, "GET", "/api/v1/alerts", 200), alerts.get_json(), spec)
    with pytest.raises(SchemaError):  # the checker is not a rubber stamp
        check(_response_schema(spec, "GET", "/api/v1/lanes", 200), {"items": [{"lane_id": "A1"}]}, spec)


# --------------------------------------------------------------------------------------------------------- CLI


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def test_api_clients_cli_add_list_disable(env: Env, tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    assert _cli("ledger", "init", "--db", str(db))[0] == 0  # api-clients add makes no ledger (hub.ledger.cli_common)
    rc, out, err = _cli("api-clients", "add", "pos-till-1", "--scopes", "sales,read", "--db", str(db))
    assert rc == 0, err
    issued = out.strip()
    assert issued.startswith(TOKEN_PREFIX) and len(issued) >= len(TOKEN_PREFIX) + 43 and "\n" not in issued
    assert "shown only now" in err
    rows = _sql(db, "SELECT name, token_sha256, scopes, created_by FROM api_clients")
    assert [(n, h, s) for n, h, s, _ in rows] == [
        ("pos-till-1", hashlib.sha256(issued.encode()).hexdigest(), "read sales")
    ]
    assert rows[0][3].startswith("cli:")
    for path in db.parent.glob("fresh.db*"):  # the database and any WAL: never the token itself
        assert issued.encode() not in path.read_bytes()
    audit = _sql(db, "SELECT action, details FROM audit WHERE action = 'add_api_client'")
    assert len(audit) == 1 and issued not in audit[0][1]
    # a second token is different; a name already taken, an unknown scope, a bad name: refused
    assert _cli("api-clients", "add", "wms", "--scopes", "picks", "--db", str(db))[1].strip() != issued
    assert _cli("api-clients", "add", "pos-till-1", "--scopes", "read", "--db", str(db))[0] == 2
    assert _cli("api-clients", "add", "x", "--scopes", "read,admin", "--db", str(db))[0] == 2
    assert _cli("api-clients", "add", "two words", "--scopes", "read", "--db", str(db))[0] == 2
    assert _cli("api-clients", "add", "y" * 61, "--scopes", "read", "--db", str(db))[0] == 2
    rc, out, _ = _cli("api-clients", "list", "--db", str(db))
    assert rc == 0 and "pos-till-1" in out and "read,sales" in out and "active" in out and issued not in out
    # the token works against an app on that database, until the client is disabled
    app = create_app(db, env.writer, config={"TESTING": True})
    headers = {"Authorization": f"Bearer {issued}"}
    assert app.test_client().get("/api/v1/lanes", headers=headers).status_code == 200
    assert app.test_client().get("/api/v1/lanes", headers={"Authorization": f"Bearer {issued}x"}).status_code == 401
    assert _cli("api-clients", "disable", "pos-till-1", "--db", str(db))[0] == 0
    assert _cli("api-clients", "disable", "pos-till-1", "--db", str(db))[0] == 2  # already
    assert _cli("api-clients", "disable", "nobody", "--db", str(db))[0] == 2
    resp = app.test_client().get("/api/v1/lanes", headers=headers)
    assert resp.status_code == 401 and "disabled" in resp.get_json()["errors"][0]["message"]
    rc, out, _ = _cli("api-clients", "list", "--db", str(db))
    lines = out.splitlines()
    assert lines[1].startswith("pos-till-1") and "disabled" in lines[1] and lines[2].endswith("active")
    assert _cli("api-clients", "list", "--db", str(tmp_path / "missing.db"))[0] == 2
    assert not (tmp_path / "missing.db").exists()


# ------------------------------------------------------------------------------------------------- CSV imports


def _import(env: Env, kind: str, text: str | bytes, token: str, **kw: Any) -> TestResponse:
    data = text.encode() if isinstance(text, str) else text
    kw.setdefault("content_type", "text/csv")
    return env.app.test_client().post(
        f"/api/v1/imports/{kind}", data=data, headers={"Authorization": f"Bearer {token}"}, **kw
    )


def test_csv_import_is_all_or_nothing_and_idempotent(env: Env, token: str) -> None:
    good = "id,timestamp,sku,quantity\nt1,2026-11-27T10:00:00Z,COLA,2\nt2,2026-11-27T10:01:00+01:00,TEA,1\n"
    first = _import(env, "sales", good, token, query_string={"name": "till-2026-11-27.csv"})
    assert first.status_code == 201, first.data
    assert first.get_json() == {
        "kind": "sales",
        "name": "till-2026-11-27.csv",
        "rows": 2,
        "applied": 2,
        "duplicates": 0,
    }
    assert env.sql("SELECT source_ref, qty, actor FROM movements WHERE reason = 'sale' ORDER BY id") == [
        ("sale:t1", -2, "api:pos"),
        ("sale:t2", -1, "api:pos"),
    ]
    before = snapshot(env)
    again = _import(env, "sales", good, token)
    assert again.status_code == 200 and again.get_json()["duplicates"] == 2 and again.get_json()["applied"] == 0
    assert snapshot(env) == before
    # one bad row (line 3: unknown SKU), one conflicting id (line 4): nothing of the file is written
    bad = "id,timestamp,sku,quantity\nt3,2026-11-27T11:00:00Z,COLA,1\nt4,2026-11-27T11:00:00Z,NOPE,1\n"
    bad += "t1,2026-11-27T10:00:00Z,COLA,5\n"
    resp = _import(env, "sales", bad, token)
    assert resp.status_code == 422
    assert [e["field"] for e in errors(resp)] == ["line 3", "line 4"], errors(resp)
    assert "NOPE" in errors(resp)[0]["message"]
    assert snapshot(env) == before


@pytest.mark.parametrize(
    ("kw", "status", "field"),
    [
        ({"content_type": "application/json"}, 415, "Content-Type"),
        ({"content_type": "text/csv", "query_string": {"name": "x\ny"}}, 400, "name"),
        ({"content_type": "text/csv", "query_string": {"dry": "1"}}, 400, "dry"),
    ],
)
def test_csv_import_refuses_bad_requests(env: Env, token: str, kw: dict[str, Any], status: int, field: str) -> None:
    before = snapshot(env)
    resp = _import(env, "sales", "id,timestamp,sku,quantity\nz1,2026-11-27T10:00:00Z,COLA,1\n", token, **kw)
    assert resp.status_code == status and field in fields(resp), resp.data
    assert snapshot(env) == before


def test_csv_import_too_large_is_413_json(env: Env, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hub.web.api.auth.MAX_CSV_BYTES", 100)
    before = snapshot(env)
    resp = _import(env, "sales", "id,timestamp,sku,quantity\n" + "z,2026-11-27T10:00:00Z,COLA,1\n" * 10, token)
    assert resp.status_code == 413 and "split it" in errors(resp)[0]["message"]
    assert snapshot(env) == before


def test_ledger_import_cli_posts_to_a_running_hub(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from werkzeug.serving import make_server

    token = add_token(env, "wms", ("receipts",))
    server = make_server("127.0.0.1", 0, env.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        f = tmp_path / "delivery.csv"
        f.write_text("id,timestamp,sku,quantity\nd1,2026-11-27T08:00:00Z,SOUP,6\n")
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        args = ["ledger", "import", "receipts", str(f), "--url", url, "--token-file", str(token_file)]
        rc, out, err = _cli(*args)
        assert rc == 0, err
        assert "delivery.csv: 1 receipts rows: 1 applied" in out
        assert env.sql("SELECT qty, actor FROM movements WHERE source_ref = 'receipt:d1'") == [(6, "api:wms")]
        rc, out, _ = _cli(*args)
        assert rc == 0 and "already in the ledger" in out
        f.write_text("id,timestamp,sku,quantity\nd2,2026-11-27T08:00:00Z,NOPE,6\n")
        rc, out, err = _cli(*args)
        assert rc == 2 and "delivery.csv:2:" in err and "nothing was written" in err
        f.write_text("")  # an empty file: refused (2) as a local import refuses it, not "failed" (1)
        rc, out, err = _cli(*args)
        assert rc == 2 and "refused by the hub, nothing was written" in err, err
        monkeypatch.setenv("SMARTSHELF_API_TOKEN", "ssk_wrong")
        rc, _, err = _cli("ledger", "import", "receipts", str(f), "--url", url)
        assert rc == 1 and "401" in err
    finally:
        server.shutdown()
        thread.join(5)


# ------------------------------------------------------------------------------------- review fixes (regressions)


def test_ids_are_scoped_per_client(env: Env) -> None:
    """Two tills both numbering their lines from 1: the second is refused (409 naming the other client, never its
    content) instead of answering "duplicate" with the first till's sale, and the same till's replay stays a dup."""
    pos1, pos2 = add_token(env, "pos1", ("sales", "counts")), add_token(env, "pos2", ("sales", "counts"))
    assert post(env, "sales", {"id": "1", "sku": "COLA", "quantity": 1, "location": "lane:A1"}, pos1).status_code == 201
    before = snapshot(env)
    other = post(env, "sales", {"id": "1", "sku": "COLA", "quantity": 3, "location": "lane:A1"}, pos2)
    assert other.status_code == 409, other.data
    message = errors(other)[0]["message"]
    assert "already used by api:pos1" in message and "unique to this client" in message
    assert "-1" not in message and "lane:A1" not in message  # nothing of pos1's posting is revealed
    assert snapshot(env) == before
    replay = post(env, "sales", {"id": "1", "sku": "COLA", "quantity": 1, "location": "lane:A1"}, pos1)
    assert replay.status_code == 200 and replay.get_json()["items"][0]["status"] == "duplicate"
    # counts too
    assert post(env, "counts", {"id": "c1", "sku": "TEA", "counted": 2}, pos1).status_code == 201
    resp = post(env, "counts", {"id": "c1", "sku": "TEA", "counted": 2}, pos2)
    assert resp.status_code == 409 and "already used by api:pos1" in errors(resp)[0]["message"]
    # a file imported twice by the same client stays idempotent; the same ids from another client are refused
    csv_text = "id,timestamp,sku,quantity\nf1,2026-11-27T10:00:00Z,COLA,1\n"
    assert _import(env, "sales", csv_text, pos1).status_code == 201
    assert _import(env, "sales", csv_text, pos1).get_json()["duplicates"] == 1
    refused = _import(env, "sales", csv_text, pos2)
    assert refused.status_code == 422 and "already used by api:pos1" in errors(refused)[0]["message"]


def _shrinkage_alert(env: Env) -> int:
    from tests.test_web_alerts import _realistic_shrinkage

    env.write(lambda ledger: ledger.record_receipt("COLA", 10, actor="t", ref="r1", location="lane:A1"))
    return _realistic_shrinkage(env)


def _resolve_count(env: Env, alert: int, counted: int) -> str:
    manager = env.client("manager")
    resp = manager.post(
        f"/alerts/{alert}/resolve",
        data={"outcome": "count", "counted": str(counted), "csrf_token": env.csrf(manager)},
        follow_redirects=True,
    )
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def test_a_client_count_cannot_preempt_an_alert_resolution(env: Env) -> None:
    alert = _shrinkage_alert(env)
    wms = add_token(env, "wms", ("counts", "sales"))
    # a counts client uses the id a resolution used to post under (alert<N>), with the resolution's very values
    resp = post(env, "counts", {"id": f"alert{alert}", "sku": "COLA", "counted": 6, "location": "lane:A1"}, wms)
    assert resp.status_code == 201
    post(env, "sales", {"id": "s9", "sku": "COLA", "quantity": 3, "location": "lane:A1"}, wms)  # book 3
    _resolve_count(env, alert, 6)  # the manager counts 6 on the shelf
    assert env.sql("SELECT status FROM alerts WHERE id = ?", (alert,)) == [("resolved",)]
    assert env.sql("SELECT qty FROM balances WHERE sku = 'COLA' AND location = 'lane:A1'") == [(6,)]
    assert env.sql(
        "SELECT actor, book_qty FROM physical_counts WHERE source_ref = ?", (f"resolution:alert{alert}",)
    ) == [("web:manager", 3)]


def test_a_client_count_with_other_values_does_not_block_a_resolution(env: Env) -> None:
    alert = _shrinkage_alert(env)
    wms = add_token(env, "wms", ("counts",))
    assert post(env, "counts", {"id": f"alert{alert}", "sku": "TEA", "counted": 0}, wms).status_code == 201
    _resolve_count(env, alert, 6)
    assert env.sql("SELECT status FROM alerts WHERE id = ?", (alert,)) == [("resolved",)]
    assert env.sql("SELECT qty FROM balances WHERE sku = 'COLA' AND location = 'lane:A1'") == [(6,)]


def test_csv_import_with_too_many_rows_is_413(env: Env, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hub.web.api.views.MAX_IMPORT_ROWS", 5)
    before = snapshot(env)
    rows = "".join(f"z{i},2026-11-27T10:00:00Z,COLA,1\n" for i in range(6))
    resp = _import(env, "sales", "id,timestamp,sku,quantity\n" + rows, token)
    assert resp.status_code == 413, resp.data
    message = errors(resp)[0]["message"]
    assert "6 rows" in message and "split it into files of at most 5 rows" in message
    assert snapshot(env) == before
    assert _import(env, "sales", "id,timestamp,sku,quantity\n" + rows[: rows.index("z5")], token).status_code == 201


def test_csv_import_byte_cap_matches_the_row_cap() -> None:
    from hub.web.api.fields import MAX_CSV_BYTES, MAX_IMPORT_ROWS

    assert MAX_IMPORT_ROWS == 10_000 and MAX_CSV_BYTES == MAX_IMPORT_ROWS * 300


def test_csv_import_lists_at_most_100_errors(env: Env, token: str) -> None:
    rows = "".join(f"z{i},not a time,COLA,1\n" for i in range(150))
    resp = _import(env, "sales", "id,timestamp,sku,quantity\n" + rows, token)
    assert resp.status_code == 422
    problems = errors(resp)
    assert len(problems) == 101 and problems[99]["field"] == "line 101"
    assert problems[100] == {"field": "file", "message": "and 50 more problems (the first 100 are listed)"}


def test_csv_import_is_parsed_off_the_event_loop(env: Env, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.ledger.service

    threads: list[threading.Thread] = []
    real = hub.ledger.service.parse_csv

    def spy(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(hub.ledger.service, "parse_csv", spy)
    assert (
        _import(env, "sales", "id,timestamp,sku,quantity\nq1,2026-11-27T10:00:00Z,COLA,1\n", token).status_code == 201
    )
    assert len(threads) == 1 and threads[0].name != "hub-loop"  # tests/web_support.py: the loop's thread


class _RecordingWriter:
    """Records each call's timeout; ``fail`` raises instead of calling the ledger."""

    def __init__(self, inner: Any, fail: BaseException | None = None) -> None:
        self.inner, self.fail, self.timeouts = inner, fail, []  # type: ignore[var-annotated]

    def call(self, fn: Any, *, timeout_s: float | None = None) -> Any:
        self.timeouts.append(timeout_s)
        if self.fail is not None:
            raise self.fail
        return self.inner.call(fn, timeout_s=timeout_s)


def test_csv_import_gets_a_longer_timeout(env: Env, token: str) -> None:
    from hub.web.api.fields import IMPORT_TIMEOUT_S

    writer = _RecordingWriter(env.writer)
    app = create_app(env.db, writer, config={"TESTING": True})
    resp = app.test_client().post(
        "/api/v1/imports/sales",
        data=b"id,timestamp,sku,quantity\nlt1,2026-11-27T10:00:00Z,COLA,1\n",
        content_type="text/csv",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 201
    assert writer.timeouts == [IMPORT_TIMEOUT_S] and env.writer.timeout_s < IMPORT_TIMEOUT_S


def test_a_timed_out_write_says_it_may_still_be_applied(env: Env, token: str) -> None:
    app = create_app(env.db, _RecordingWriter(env.writer, TimeoutError()), config={"TESTING": True})
    headers = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    resp = client.post("/api/v1/sales", json={"id": "to1", "sku": "COLA", "quantity": 1}, headers=headers)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    message = resp.get_json()["errors"][0]["message"]
    assert "may still be applied" in message and "safe" in message
    csv_resp = client.post(
        "/api/v1/imports/sales",
        data=b"id,timestamp,sku,quantity\nto2,2026-11-27T10:00:00Z,COLA,1\n",
        content_type="text/csv",
        headers=headers,
    )
    assert (
        csv_resp.status_code == 503 and "the file may still be applied" in csv_resp.get_json()["errors"][0]["message"]
    )


def test_ledger_import_cli_says_to_split_a_file_the_hub_refuses(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from werkzeug.serving import make_server

    monkeypatch.setattr("hub.web.api.views.MAX_IMPORT_ROWS", 2)
    token = add_token(env, "wms", ("receipts",))
    server = make_server("127.0.0.1", 0, env.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        f = tmp_path / "big.csv"
        f.write_text("id,timestamp,sku,quantity\n" + "".join(f"b{i},2026-11-27T08:00:00Z,SOUP,1\n" for i in range(3)))
        monkeypatch.setenv("SMARTSHELF_API_TOKEN", token)
        rc, _, err = _cli("ledger", "import", "receipts", str(f), "--url", f"http://127.0.0.1:{server.server_port}/")
        assert rc == 2, err
        assert "too large for one import through the hub" in err and "split big.csv into smaller files" in err
        assert "at most 2 rows" in err
    finally:
        server.shutdown()
        thread.join(5)
    assert not env.sql("SELECT 1 FROM movements WHERE source_ref LIKE 'receipt:b%'")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "a", "sku": "COLA\n", "quantity": 1}, "sku"),
        ({"id": "a", "sku": "COLA", "quantity": 1, "location": "backroom\n"}, "location"),
        ({"id": "a", "sku": "COLA", "quantity": 1, "location": "lane:A1\n"}, "location"),
        ({"id": "a\n", "sku": "COLA", "quantity": 1}, "id"),
    ],
)
def test_a_trailing_newline_is_refused_by_the_pattern(env: Env, token: str, body: dict[str, Any], field: str) -> None:
    resp = post(env, "receipts", body, token)
    assert resp.status_code == 422 and fields(resp) == [field]
    assert "is not valid" in errors(resp)[0]["message"]  # the field's own rule, not a later ledger error


def test_a_key_given_twice_is_refused(env: Env, token: str) -> None:
    before = snapshot(env)
    resp = call(
        env,
        "POST",
        "/api/v1/receipts",
        None,
        token,
        data=b'{"id": "a", "sku": "COLA", "quantity": 1, "quantity": 5}',
        content_type="application/json",
    )
    assert resp.status_code == 400 and "'quantity' appears more than once" in errors(resp)[0]["message"]
    assert snapshot(env) == before
