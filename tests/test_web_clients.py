"""API clients page (admins): add with the token shown once, only its hash kept, disable; the API honours both."""

from __future__ import annotations

import re

from hub.web.accounts.clients import token_sha256
from tests.web_support import Env


def _add(env: Env, client_name: str, scopes: list[str]) -> tuple[int, str]:
    client = env.client("admin")
    resp = client.post("/api-clients", data={"name": client_name, "scopes": scopes, "csrf_token": env.csrf(client)})
    return resp.status_code, resp.get_data(as_text=True)


def test_adding_a_client_shows_its_token_once_and_keeps_only_the_hash(env: Env) -> None:
    status, page = _add(env, "till-1", ["sales", "returns"])
    assert status == 201
    match = re.search(r"<code>(ssk_[A-Za-z0-9_-]{43})</code>", page)
    assert match, page[:2000]
    token = match.group(1)
    assert env.sql("SELECT name, scopes, created_by, token_sha256 FROM api_clients") == [
        ("till-1", "sales returns", "web:admin", token_sha256(token))
    ]
    with open(env.db, "rb") as f:
        assert token.encode() not in f.read()
    assert env.sql("SELECT actor, action FROM audit WHERE action = 'add_api_client'") == [
        ("web:admin", "add_api_client")
    ]
    # the list never shows it again
    listing = env.client("admin").get("/api-clients")
    assert listing.headers["Cache-Control"] == "no-store"
    assert token not in listing.get_data(as_text=True) and 'id="client-till-1"' in listing.get_data(as_text=True)
    # and the API takes it, within its scopes
    api = env.app.test_client()
    sale = {"id": "t1", "sku": "COLA", "quantity": 1}
    assert api.post("/api/v1/sales", json=sale, headers={"Authorization": f"Bearer {token}"}).status_code == 201
    assert api.get("/api/v1/stock", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_bad_clients_are_refused_and_nothing_is_written(env: Env) -> None:
    assert _add(env, "till-1", ["sales"])[0] == 201
    for name, scopes, message in [
        ("till-1", ["sales"], "exists"),
        ("", ["sales"], "name"),
        ("bad name", ["sales"], "name"),
        ("till-2", [], "at least one scope"),
        ("till-2", ["sales", "admin"], "at least one scope"),
    ]:
        before = env.sql("SELECT count(*) FROM api_clients"), env.sql("SELECT count(*) FROM audit")
        status, page = _add(env, name, scopes)
        assert status == 400 and message in page and "ssk_" not in page, (name, scopes)
        assert (env.sql("SELECT count(*) FROM api_clients"), env.sql("SELECT count(*) FROM audit")) == before


def test_a_disabled_client_is_refused_by_the_api(env: Env) -> None:
    _, page = _add(env, "wms", ["receipts"])
    match = re.search(r"<code>(ssk_[A-Za-z0-9_-]{43})</code>", page)
    assert match
    token = match.group(1)
    admin = env.client("admin")
    resp = admin.post("/api-clients/wms/disable", data={"csrf_token": env.csrf(admin)}, follow_redirects=True)
    assert resp.status_code == 200 and "API client wms disabled" in resp.get_data(as_text=True)
    assert env.sql("SELECT disabled_ms IS NOT NULL FROM api_clients WHERE name = 'wms'") == [(1,)]
    body = {"id": "r1", "sku": "COLA", "quantity": 5}
    resp = env.app.test_client().post("/api/v1/receipts", json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    again = admin.post("/api-clients/wms/disable", data={"csrf_token": env.csrf(admin)}, follow_redirects=True)
    assert "already disabled" in again.get_data(as_text=True)
