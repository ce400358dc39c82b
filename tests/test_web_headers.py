"""Security headers on every response of the status page and the API (hub/web/headers.py), and pages that pass their
Content-Security-Policy with no inline script or style (their scripts and styles are the app's own files,
hub/web/assets.py).

Every route of tests/web_routes.py as each kind of caller (allowed, anonymous: a redirect, a role too low: 403), the
error pages (400, 403, 404, 405, 500, 503), the API (reads, posts, its JSON errors, the OpenAPI description), the
live stream (``/events?once=1`` and an open one), the CSV exports and the assets themselves: every response carries
every header, exactly once. The real browser's side (no violation reported, live updates working under the policy)
is tests/test_web_browser.py.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from hub.web import create_app
from hub.web.access import role_matrix
from hub.web.accounts.clients import TOKEN_PREFIX, add_client, token_sha256
from hub.web.accounts.users import role_rank
from tests.web_routes import ROUTES
from tests.web_support import PASSWORD, SEED_EPC, Env

# what a page may load: its scripts, styles and images from the app itself, its live feed from the app; no inline
# script or style, no plugin, no frame around it, no <base>, forms posting to the app only
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"  # JSON, CSV, the event stream, text, the assets
COMMON = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000"
YEAR = "public, max-age=31536000, immutable"

_INLINE = [
    (re.compile(r"<script\b(?![^>]*\bsrc=)", re.I), "an inline <script>"),
    (re.compile(r"<style\b", re.I), "an inline <style>"),
    (re.compile(r"<[a-z][^>]*\sstyle\s*=", re.I), "a style attribute"),
    (re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I), "an event handler attribute"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
]


def check(resp: TestResponse, where: str, *, tls: bool = False, asset: bool = False) -> None:
    """Every security header on ``resp``, exactly once, and an HTML body the page policy lets run."""
    headers = resp.headers
    html = resp.mimetype == "text/html"
    csp = headers.getlist("Content-Security-Policy")
    assert csp == [PAGE_CSP if html else DATA_CSP], (where, resp.status_code, resp.mimetype, csp)
    for name, value in COMMON.items():
        assert headers.getlist(name) == [value], (where, resp.status_code, name, headers.getlist(name))
    cache = headers.getlist("Cache-Control")
    if asset:
        assert len(cache) == 1 and "no-store" not in cache[0], (where, cache)
    else:
        assert len(cache) == 1 and "no-store" in {d.strip() for d in cache[0].split(",")}, (where, cache)
    assert headers.getlist("Strict-Transport-Security") == ([HSTS] if tls else []), (where, tls)
    if html:
        body = resp.get_data(as_text=True)
        for pattern, what in _INLINE:
            found = pattern.search(body)
            assert found is None, f"{where}: {what}: {body[max(0, found.start() - 80) : found.end() + 80]!r}"


def _alert_id(env: Env) -> int:
    return int(env.sql("SELECT id FROM alerts WHERE cause_key = 'lane:A1/COLA'")[0][0])


def _add_token(env: Env, name: str, scopes: tuple[str, ...]) -> str:
    token = f"{TOKEN_PREFIX}{hashlib.sha256(name.encode()).hexdigest()[:43]}"
    env.write(lambda ledger: ledger.transact(lambda tx: add_client(tx, name, token_sha256(token), scopes, actor="t")))
    return token


def _request(env: Env, route: str, role: str | None) -> TestResponse:
    r = ROUTES[route]
    client = env.client(role)
    if "{client}" in r.url:
        _add_token(env, "till-1", ("sales",))
    url = r.url.format(alert=_alert_id(env), lane="A1", user="viewer", client="till-1", epc=SEED_EPC)
    if r.method == "GET":
        return client.get(url)
    return client.post(url, data={**r.data, "csrf_token": env.csrf(client)})


@pytest.mark.parametrize("role", [None, "viewer", "admin"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_route_carries_every_header(env: Env, route: str, role: str | None) -> None:
    resp = _request(env, route, role)
    r = ROUTES[route]
    if role is None:
        assert resp.status_code == 302  # to the login page
    elif role_rank(role) < role_rank(role_matrix(env.app)[r.endpoint]):
        assert resp.status_code == 403
    else:
        assert resp.status_code == r.ok
    check(resp, f"{r.method} {r.url} as {role}")
    if r.method == "POST" and resp.status_code == 302:  # and the page the redirect leads to
        client = env.client(role)
        check(client.get(resp.headers["Location"]), f"after {r.method} {r.url} as {role}")


def test_every_page_is_an_html_page_under_the_page_policy(env: Env) -> None:
    """The HTML pages get the page policy (and pass it: ``check`` reads their bodies); the feeds and exports the
    data policy."""
    admin = env.client("admin")
    kinds = {}
    for name, r in ROUTES.items():
        if r.method == "GET":
            resp = admin.get(r.url.format(alert=_alert_id(env), lane="A1", user="viewer", epc=SEED_EPC))
            check(resp, name)
            kinds[name] = resp.mimetype
    assert kinds["overview"] == kinds["alerts"] == kinds["shelf"] == kinds["users"] == "text/html"
    assert kinds["events"] == "text/event-stream" and kinds["lanes json"] == "application/json"
    assert kinds["ledger csv"] == kinds["reports csv"] == "text/csv"


def test_login_page_sign_in_and_sign_out(env: Env) -> None:
    client = env.app.test_client()
    check(client.get("/login"), "GET /login")
    check(client.head("/login"), "HEAD /login")
    csrf = env.csrf(client)
    wrong = client.post("/login", data={"username": "viewer", "password": "nope", "csrf_token": csrf})
    assert wrong.status_code == 401
    check(wrong, "wrong password")
    right = client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": csrf})
    assert right.status_code == 302
    check(right, "signed in (redirect)")
    out = client.post("/logout", data={"csrf_token": env.csrf(client)})
    assert out.status_code == 302
    check(out, "signed out (redirect)")


def test_error_pages(env: Env) -> None:
    anonymous, viewer = env.client(), env.client("viewer")
    cases: list[tuple[str, TestResponse, int]] = [
        ("404", anonymous.get("/nowhere"), 404),
        ("404 signed in", viewer.get("/lanes/NOPE"), 404),
        ("405", env.client("admin").get("/logout"), 405),
        ("403", viewer.get("/users"), 403),
        ("400 no CSRF token", env.client("clerk").post(f"/alerts/{_alert_id(env)}/acknowledge"), 400),
        ("400 bad filter", viewer.get("/alerts?status=nonsense"), 400),
        ("404 unknown asset", anonymous.get("/static/nothing.js"), 404),
        ("404 asset outside the folder", anonymous.get("/static/..%2Fapp.py"), 404),
    ]
    for where, resp, status in cases:
        assert resp.status_code == status, (where, resp.status_code)
        check(resp, where)


class _FailingWriter:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def call(self, fn: Any, *, timeout_s: float | None = None) -> Any:
        raise self.exc


@pytest.mark.parametrize(("exc", "status"), [(TimeoutError(), 503), (RuntimeError("bug"), 500)])
def test_server_errors(env: Env, exc: BaseException, status: int) -> None:
    """A write the ledger does not confirm (503 page, and JSON under /api/) and a bug (500) carry them too."""
    app = create_app(env.db, _FailingWriter(exc), config={"TESTING": False, "PROPAGATE_EXCEPTIONS": False})
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["csrf"] = "t" * 43
    resp = client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": "t" * 43})
    assert resp.status_code == status
    check(resp, f"{status} page")
    token = _add_token(env, "pos", ("sales",))
    body = {"id": "s-1", "sku": "COLA", "quantity": 1}
    api = client.post("/api/v1/sales", json=body, headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == status and api.mimetype == "application/json"
    check(api, f"{status} API")


def test_the_api(env: Env) -> None:
    token = _add_token(env, "pos", ("read", "sales"))
    auth = {"Authorization": f"Bearer {token}"}
    client = env.app.test_client()
    sale = {"id": "s-1", "sku": "COLA", "quantity": 1}
    cases: list[tuple[str, TestResponse, int]] = [
        ("openapi", client.get("/api/openapi.json"), 200),
        ("stock", client.get("/api/v1/stock", headers=auth), 200),
        ("lanes", client.get("/api/v1/lanes", headers=auth), 200),
        ("alerts", client.get("/api/v1/alerts", headers=auth), 200),
        ("tags", client.get("/api/v1/tags", headers=auth), 200),
        ("trail", client.get(f"/api/v1/tags/trail?epc={SEED_EPC}", headers=auth), 200),
        ("sale", client.post("/api/v1/sales", json=sale, headers=auth), 201),
        ("sale again", client.post("/api/v1/sales", json=sale, headers=auth), 200),
        ("no token", client.get("/api/v1/stock"), 401),
        ("no scope", client.post("/api/v1/counts", json=sale, headers=auth), 403),
        ("bad query", client.get("/api/v1/alerts?limit=x", headers=auth), 400),
        ("not JSON", client.post("/api/v1/sales", data="x", headers=auth, content_type="text/plain"), 415),
        ("bad item", client.post("/api/v1/sales", json={"id": "s-2"}, headers=auth), 422),
        ("404", client.get("/api/v1/nothing", headers=auth), 404),
        ("405", client.delete("/api/v1/sales", headers=auth), 405),
    ]
    for where, resp, status in cases:
        assert resp.status_code == status, (where, resp.status_code, resp.data[:200])
        assert resp.mimetype == "application/json", where
        check(resp, f"API {where}")


def test_the_live_stream(env: Env) -> None:
    viewer = env.client("viewer")
    once = viewer.get("/events?once=1")
    assert once.status_code == 200 and once.mimetype == "text/event-stream"
    check(once, "/events?once=1")
    check(viewer.head("/events"), "HEAD /events")
    stream = viewer.get("/events", buffered=False)  # an open stream: its headers go out before any event
    try:
        assert stream.status_code == 200
        check(stream, "/events")
    finally:
        stream.close()


def _assets(body: str) -> list[str]:
    links = re.findall(r'<link rel="stylesheet" href="([^"]+)"', body)
    scripts = re.findall(r'<script src="([^"]+)"', body)
    return links + scripts


def test_every_asset_a_page_names_is_served_with_its_type_and_cached_by_version(env: Env) -> None:
    admin = env.client("admin")
    named: set[str] = set()
    for r in ROUTES.values():
        if r.method == "GET":
            resp = admin.get(r.url.format(alert=_alert_id(env), lane="A1", user="viewer", epc=SEED_EPC))
            if resp.mimetype == "text/html":
                named.update(_assets(resp.get_data(as_text=True)))
    named.update(_assets(env.app.test_client().get("/login").get_data(as_text=True)))
    assert any(u.startswith("/static/overview.js?v=") for u in named), named
    assert any(u.startswith("/static/base.css?v=") for u in named), named
    folder = Path(__file__).resolve().parents[1] / "hub" / "web" / "static"
    anonymous = env.app.test_client()  # the login page needs its stylesheet before anyone signs in
    for url in sorted(named):
        path, _, version = url.partition("?v=")
        name = path.rsplit("/", 1)[1]
        resp = anonymous.get(url)
        assert resp.status_code == 200, url
        assert resp.data == (folder / name).read_bytes()
        assert version == hashlib.sha256(resp.data).hexdigest()[:16], url
        expected = "text/css" if name.endswith(".css") else "text/javascript"
        assert resp.mimetype == expected and resp.mimetype_params == {"charset": "utf-8"}, (url, resp.content_type)
        assert resp.headers["Cache-Control"] == YEAR, url
        check(resp, url, asset=True)
        # another (or no) version: served, but revalidated every time; an unchanged file is a 304
        unversioned = anonymous.get(path)
        assert unversioned.status_code == 200 and unversioned.headers["Cache-Control"] == "no-cache"
        check(unversioned, path, asset=True)
        etag = unversioned.headers["ETag"]
        again = anonymous.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.data == b""
        check(again, f"{path} 304", asset=True)


def test_hsts_when_the_hub_serves_tls(env: Env) -> None:
    app = create_app(env.db, env.writer, config={"TESTING": True, "TLS_ENABLED": True})
    client = app.test_client()
    check(client.get("/login"), "login over TLS", tls=True)
    check(client.get("/"), "redirect over TLS", tls=True)
    check(client.get("/nowhere"), "404 over TLS", tls=True)
    check(client.get("/api/openapi.json"), "API over TLS", tls=True)
    check(client.get("/api/v1/stock"), "API 401 over TLS", tls=True)
    version = re.search(r"/static/base\.css\?v=(\w+)", client.get("/login").get_data(as_text=True))
    assert version is not None
    check(client.get(f"/static/base.css?v={version[1]}"), "asset over TLS", tls=True, asset=True)
    plain = create_app(env.db, env.writer, config={"TESTING": True, "TLS_ENABLED": False})
    check(plain.test_client().get("/login"), "login without TLS", tls=False)


def test_no_template_holds_inline_script_or_style() -> None:
    """Not even on a branch the route walk does not take."""
    folder = Path(__file__).resolve().parents[1] / "hub" / "web" / "templates"
    for template in sorted(folder.rglob("*.html")):  # shared/ too (the forms the central page renders)
        text = template.read_text()
        for pattern, what in _INLINE:
            assert pattern.search(text) is None, f"{template.name}: {what}"
