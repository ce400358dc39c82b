"""The status page: role matrix (every route x every role), CSRF, login throttling, passwords, users CLI, pages."""

from __future__ import annotations

import io
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from hub.cli import main
from hub.ledger import AlertStatus
from hub.web import create_app
from hub.web.access import API, PUBLIC, matrix_markdown, role_matrix
from hub.web.accounts.clients import add_client, token_sha256
from hub.web.accounts.users import ROLES, THROTTLE_FAILURES, prune_login_attempts, role_rank
from hub.web.app import secret_key_path
from tests.web_routes import ROUTES
from tests.web_support import PASSWORD, SEED_EPC, Env


def _alert_id(env: Env, cause: str = "lane:A1/COLA") -> int:
    return int(env.sql("SELECT id FROM alerts WHERE cause_key = ?", (cause,))[0][0])


def test_every_endpoint_is_in_the_matrix(env: Env) -> None:
    endpoints = {rule.endpoint for rule in env.app.url_map.iter_rules()}
    matrix = role_matrix(env.app)  # every endpoint's declared rule (hub/web/access.py)
    assert endpoints == set(matrix)
    roles = {e for e, r in matrix.items() if r not in (PUBLIC, API)}
    assert {r.endpoint for r in ROUTES.values()} == roles


def test_each_view_declares_one_rule_and_an_undeclared_one_is_refused_to_everyone(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import types

    from flask import Blueprint

    from hub.web import app as app_module
    from hub.web.access import public, requires, rule_of, scope

    def view() -> str:
        return "secret"

    public(view)
    with pytest.raises(TypeError, match="one rule per endpoint"):
        requires("admin")(view)  # a second rule on the same view: refused when the module is imported
    with pytest.raises(ValueError):
        requires("owner")
    with pytest.raises(ValueError):
        scope("everything")
    assert rule_of(view) is not None and rule_of(view).kind == "public"  # type: ignore[union-attr]

    extra = Blueprint("extra", __name__)
    extra.add_url_rule("/extra", endpoint="forgotten", view_func=lambda: "secret")
    monkeypatch.setattr(app_module, "BLUEPRINTS", (*app_module.BLUEPRINTS, types.SimpleNamespace(bp=extra)))
    with caplog.at_level("ERROR", logger="hub.web.access"):
        app = create_app(env.db, env.writer, config={"TESTING": True})
    assert "extra.forgotten" in caplog.text  # start-up says which endpoint has no rule
    assert "extra.forgotten" not in role_matrix(app)
    for role in (None, "admin"):
        client = app.test_client()
        if role is not None:
            with client.session_transaction() as sess:
                sess["user"], sess["epoch"] = role, 0
        resp = client.get("/extra")
        assert resp.status_code == 403 and b"secret" not in resp.data


def _fingerprint(env: Env) -> list[tuple[Any, ...]]:
    """Everything a refused request must leave as it was."""
    return env.sql(
        "SELECT (SELECT count(*) FROM movements), (SELECT count(*) FROM audit), (SELECT count(*) FROM users),"
        " (SELECT group_concat(status || ':' || coalesce(resolution, ''), ',') FROM alerts),"
        " (SELECT group_concat(username || ':' || role || ':' || coalesce(disabled_ms, ''), ',') FROM users)",
    )


@pytest.mark.parametrize("role", [None, *ROLES])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_route_by_role(env: Env, route: str, role: str | None) -> None:
    r = ROUTES[route]
    client = env.client(role)
    if "{client}" in r.url:
        digest = token_sha256("ssk_" + "c" * 43)
        env.write(lambda ledger: ledger.transact(lambda tx: add_client(tx, "till-1", digest, ("sales",), actor="t")))
    url = r.url.format(alert=_alert_id(env), lane="A1", user="viewer", client="till-1", epc=SEED_EPC)
    before = _fingerprint(env)
    form = {**r.data, "csrf_token": env.csrf(client)}
    resp = client.get(url) if r.method == "GET" else client.post(url, data=form)
    if role is None:
        assert resp.status_code == 302
        assert resp.headers["Location"].startswith("/login")
        assert _fingerprint(env) == before
    elif role_rank(role) < role_rank(role_matrix(env.app)[r.endpoint]):
        assert resp.status_code == 403
        assert _fingerprint(env) == before
    else:
        assert resp.status_code == r.ok, resp.data[:500]
        if r.method == "POST":
            assert _fingerprint(env) != before, "an allowed POST changed nothing"


def test_unknown_routes_and_methods(env: Env) -> None:
    assert env.client().get("/nowhere").status_code == 404
    assert env.client("admin").get("/logout").status_code == 405


def test_disabled_user_is_signed_out(env: Env) -> None:
    conn = sqlite3.connect(env.db)
    conn.execute("UPDATE users SET disabled_ms = 1 WHERE username = 'admin'")
    conn.commit()
    conn.close()
    resp = env.client("admin").get("/")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")


@pytest.mark.parametrize("token", [None, "", "wrong"])
def test_post_without_the_right_csrf_token_is_refused_and_changes_nothing(env: Env, token: str | None) -> None:
    alert = _alert_id(env)
    client = env.client("admin")
    env.csrf(client)
    data = {} if token is None else {"csrf_token": token}
    resp = client.post(f"/alerts/{alert}/acknowledge", data=data)
    assert resp.status_code == 400
    assert b"security token" in resp.data
    assert env.sql("SELECT status FROM alerts WHERE id = ?", (alert,)) == [("open",)]
    assert not env.sql("SELECT 1 FROM audit WHERE action = 'acknowledge_alert'")


def test_login_needs_csrf(env: Env) -> None:
    client = env.client()
    resp = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert resp.status_code == 400
    assert not env.sql("SELECT 1 FROM login_attempts")


def _login(env: Env, client: FlaskClient, username: str, password: str, ip: str = "10.0.0.1") -> TestResponse:
    client.get("/login")
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": env.csrf(client), "next": "/alerts"},
        environ_base={"REMOTE_ADDR": ip},
    )


def test_login_logout_and_cookie_flags(env: Env) -> None:
    client = env.app.test_client()
    resp = _login(env, client, "clerk", PASSWORD)
    assert resp.status_code == 302 and resp.headers["Location"] == "/alerts"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/alerts")
    assert page.status_code == 200 and b"clerk (clerk)" in page.data and b"Acknowledge" in page.data
    assert client.post("/logout", data={"csrf_token": env.csrf(client)}).status_code == 302
    assert client.get("/").status_code == 302
    assert env.sql("SELECT username, ip, ok FROM login_attempts") == [("clerk", "10.0.0.1", 1)]


def test_wrong_password_and_unknown_user(env: Env) -> None:
    client = env.app.test_client()
    assert _login(env, client, "clerk", "not the password").status_code == 401
    assert _login(env, client, "nobody", PASSWORD).status_code == 401
    assert client.get("/").status_code == 302


def test_login_is_throttled_per_username_and_ip(env: Env) -> None:
    client = env.app.test_client()
    for _ in range(THROTTLE_FAILURES):
        assert _login(env, client, "manager", "wrong password").status_code == 401
    resp = _login(env, client, "manager", PASSWORD)  # even the right password: throttled
    assert resp.status_code == 429
    assert b"Too many failed sign-ins" in resp.data
    assert client.get("/").status_code == 302
    # another address, or another user from the same address, is not affected
    assert _login(env, env.app.test_client(), "manager", PASSWORD, ip="10.0.0.2").status_code == 302
    assert _login(env, env.app.test_client(), "viewer", PASSWORD).status_code == 302
    # failures older than the window do not count
    conn = sqlite3.connect(env.db)
    conn.execute("UPDATE login_attempts SET ts_ms = ts_ms - 16 * 60 * 1000")
    conn.commit()
    conn.close()
    assert _login(env, env.app.test_client(), "manager", PASSWORD).status_code == 302


def test_users_cli_hashes_the_password(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    assert main(["ledger", "init", "--db", str(db)]) == 0  # users add makes no ledger (hub.ledger.cli_common)
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-password\n"))
    assert main(["users", "add", "alice", "--role", "admin", "--password-stdin", "--db", str(db)]) == 0
    conn = sqlite3.connect(db)
    rows = list(conn.execute("SELECT username, role, password_hash FROM users"))
    assert [(u, r) for u, r, _ in rows] == [("alice", "admin")]
    assert "s3cret-password" not in rows[0][2] and rows[0][2].startswith("scrypt:")
    assert conn.execute("SELECT actor, action FROM audit WHERE action = 'add_user'").fetchall()
    conn.close()
    with open(db, "rb") as f:
        assert b"s3cret-password" not in f.read()
    # the same user again, a short password, a bad role: refused
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password\n"))
    assert main(["users", "add", "alice", "--role", "clerk", "--password-stdin", "--db", str(db)]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "bob", "--role", "clerk", "--password-stdin", "--db", str(db)]) == 2
    with pytest.raises(SystemExit):
        main(["users", "add", "bob", "--role", "owner", "--password-stdin", "--db", str(db)])
    # and alice can sign in to an app on that database
    fresh = Env(db, env.writer, create_app(db, env.writer, config={"TESTING": True}))
    assert _login(fresh, fresh.app.test_client(), "alice", "s3cret-password").status_code == 302


def test_users_cli_prompts_twice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    answers = iter(["first-password", "other-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["ledger", "init", "--db", str(tmp_path / "u.db")]) == 0
    assert main(["users", "add", "carol", "--role", "viewer", "--db", str(tmp_path / "u.db")]) == 2
    answers = iter(["same-password", "same-password"])
    assert main(["users", "add", "carol", "--role", "viewer", "--db", str(tmp_path / "u.db")]) == 0


def test_secret_key_is_generated_once_with_mode_0600(env: Env) -> None:
    path = secret_key_path(env.db)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert create_app(env.db, env.writer).secret_key == env.app.secret_key


def test_overview_shows_lanes_counts_and_states(env: Env) -> None:
    html = env.client("viewer").get("/").get_data(as_text=True)
    rows = {lane: html.split(f'id="lane-{lane}"')[1].split("</tr>")[0] for lane in ("A1", "B1", "C1")}
    assert "COLA" in rows["A1"] and ">21<" in rows["A1"] and ">30<" in rows["A1"] and "state ok" in rows["A1"]
    assert "TEA" in rows["B1"] and ">3<" in rows["B1"] and "state low" in rows["B1"]
    assert "SOUP" in rows["C1"] and ">0<" in rows["C1"] and "state out" in rows["C1"]
    assert "UTC" in rows["A1"] and "UTC" not in rows["C1"]  # last change: C1 never reported
    assert ">1</a>" in rows["A1"] and ">1</a>" in rows["B1"]  # open alerts (lane and SKU)
    # no external assets: the hub's own stylesheets and script (no inline ones: tests/test_web_headers.py)
    assets = [a.split("?v=")[0] for a in html.split('"') if a.startswith("/static/")]
    assert assets == ["/static/base.css", "/static/overview.css", "/static/overview.js"]
    assert "http://" not in html and "https://" not in html


def test_overview_marks_sensor_trouble(env: Env) -> None:
    env.write(lambda ledger: ledger.open_alert("sensor", "lane:A1/stuck", {}, actor="reconcile"))
    html = env.client("viewer").get("/").get_data(as_text=True)
    assert "state trouble" in html.split('id="lane-A1"')[1].split("</tr>")[0]


def test_alerts_page_and_acknowledge_through_the_writer(env: Env) -> None:
    alert = _alert_id(env)
    viewer = env.client("viewer").get("/alerts").get_data(as_text=True)
    assert "lane:A1/COLA" in viewer and "sku:TEA" in viewer and "Acknowledge" not in viewer
    client = env.client("clerk")
    assert "Acknowledge" in client.get("/alerts").get_data(as_text=True)
    resp = client.post(f"/alerts/{alert}/acknowledge", data={"csrf_token": env.csrf(client)}, follow_redirects=True)
    assert resp.status_code == 200 and f"Alert {alert} acknowledged." in resp.get_data(as_text=True)
    assert env.sql("SELECT status, acknowledged_by FROM alerts WHERE id = ?", (alert,)) == [
        (AlertStatus.ACKNOWLEDGED.value, "web:clerk")
    ]
    again = client.post(f"/alerts/{alert}/acknowledge", data={"csrf_token": env.csrf(client)}, follow_redirects=True)
    assert "not open" in again.get_data(as_text=True)
    assert client.post("/alerts/9999/acknowledge", data={"csrf_token": env.csrf(client)}).status_code == 404


def test_readme_shows_the_role_matrix(env: Env) -> None:
    readme = (Path(__file__).parent.parent / "hub" / "web" / "README.md").read_text()
    assert matrix_markdown(env.app) in readme


# ------------------------------------------------------------------------------------- review fixes (regressions)


@pytest.mark.parametrize(
    "target",
    [
        "/\t/evil.example/phish",  # browsers drop the tab: //evil.example
        "/\n/evil.example/",
        "/\r\n/evil.example/",
        "/ /evil.example",
        "/\\evil.example",
        "//evil.example",
        "//evil.example/",
        "https://evil.example/",
        "/\x00/evil.example",
        "evil.example",
    ],
)
def test_login_refuses_every_non_local_next(env: Env, target: str) -> None:
    client = env.app.test_client()
    client.get("/login")
    resp = client.post(
        "/login",
        data={"username": "viewer", "password": PASSWORD, "csrf_token": env.csrf(client), "next": target},
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_login_keeps_a_local_next(env: Env) -> None:
    client = env.app.test_client()
    client.get("/login")
    resp = client.post(
        "/login",
        data={"username": "viewer", "password": PASSWORD, "csrf_token": env.csrf(client), "next": "/alerts?q=a%2Fb"},
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/alerts?q=a%2Fb"


def _cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("smartshelf_session")
    assert cookie is not None
    return cookie.value


def _replay(env: Env, cookie: str, url: str = "/alerts") -> int:
    other = env.app.test_client()
    other.set_cookie("smartshelf_session", cookie)
    return other.get(url).status_code


def test_logout_ends_every_copy_of_the_session(env: Env) -> None:
    victim = env.app.test_client()
    assert _login(env, victim, "manager", PASSWORD).status_code == 302
    stolen = _cookie(victim)
    assert _replay(env, stolen) == 200
    assert victim.post("/logout", data={"csrf_token": env.csrf(victim)}).status_code == 302
    assert _replay(env, stolen) == 302  # -> the login page
    assert env.sql("SELECT actor, details FROM audit WHERE action = 'end_sessions'") == [
        ("web:manager", '{"username":"manager","why":"logout"}')
    ]
    assert _login(env, victim, "manager", PASSWORD).status_code == 302  # signing in again works
    assert victim.get("/alerts").status_code == 200


@pytest.mark.parametrize(
    ("form", "user"),
    [
        ({"action": "reset_password", "password": "another password", "confirm": "another password"}, "manager"),
        ({"role": "viewer"}, "manager"),
        ({"action": "disable"}, "manager"),
    ],
)
def test_password_reset_role_change_and_disable_end_sessions(env: Env, form: dict[str, str], user: str) -> None:
    victim = env.app.test_client()
    assert _login(env, victim, user, PASSWORD).status_code == 302
    stolen = _cookie(victim)
    admin = env.client("admin")
    assert admin.post(f"/users/{user}", data={**form, "csrf_token": env.csrf(admin)}).status_code == 302
    assert victim.get("/alerts").status_code == 302 and _replay(env, stolen) == 302
    assert admin.get("/users").status_code == 200  # the admin's own session is untouched


def test_an_admin_resetting_their_own_password_stays_signed_in(env: Env) -> None:
    admin = env.app.test_client()
    assert _login(env, admin, "admin", PASSWORD).status_code == 302
    old = _cookie(admin)
    form = {"action": "reset_password", "password": "another password", "confirm": "another password"}
    assert admin.post("/users/admin", data={**form, "csrf_token": env.csrf(admin)}).status_code == 302
    assert admin.get("/users").status_code == 200
    assert _replay(env, old, "/users") == 302  # the cookie from before the reset is dead


def test_session_cookies_expire_after_a_shift(env: Env) -> None:
    from datetime import timedelta

    assert env.app.permanent_session_lifetime == timedelta(hours=12)


class _FailingWriter:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def call(self, fn: Any, *, timeout_s: float | None = None) -> Any:
        raise self.exc


@pytest.mark.parametrize("exc", [TimeoutError(), "closed"])
def test_a_write_the_ledger_does_not_confirm_is_a_503_page(env: Env, exc: Any) -> None:
    from hub.ledger.models import LedgerClosed

    failure = LedgerClosed("closed") if exc == "closed" else exc
    app = create_app(env.db, _FailingWriter(failure), config={"TESTING": True})
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as sess:
        csrf = sess["csrf"]
    resp = client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": csrf})
    assert resp.status_code == 503 and resp.mimetype == "text/html" and resp.headers["Retry-After"] == "5"
    text = resp.get_data(as_text=True)
    assert 'id="unavailable"' in text
    assert ("may still be applied" in text) if exc != "closed" else ("not available" in text)
    clerk = app.test_client()
    with clerk.session_transaction() as sess:
        sess["user"], sess["epoch"], sess["csrf"] = "clerk", 0, "t" * 43
    resp = clerk.post(f"/alerts/{_alert_id(env)}/acknowledge", data={"csrf_token": "t" * 43})
    assert resp.status_code in (302, 503)  # the view may report it itself; never a 500


def test_parallel_guesses_cannot_pass_the_throttle(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import hub.web.accounts.login

    real = hub.web.accounts.login.verify

    def slow_verify(user: Any, password: str) -> bool:
        time.sleep(0.05)  # a real scrypt hash takes about this long
        return real(user, password)

    monkeypatch.setattr(hub.web.accounts.login, "verify", slow_verify)
    barrier = threading.Barrier(16)

    def attempt(i: int) -> int:
        client = env.app.test_client()
        client.get("/login")
        csrf = env.csrf(client)
        barrier.wait()
        data = {"username": "manager", "password": f"guess {i}", "csrf_token": csrf}
        return client.post("/login", data=data, environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(attempt, range(16)))
    assert codes.count(401) == THROTTLE_FAILURES and codes.count(429) == 16 - THROTTLE_FAILURES
    assert env.sql("SELECT count(*) FROM login_attempts WHERE username = 'manager' AND ok = 0") == [
        (THROTTLE_FAILURES,)
    ]


def test_an_unknown_username_costs_a_hash_too(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.web.accounts.users

    checked: list[str] = []
    real = hub.web.accounts.users.check_password_hash

    def spy(pwhash: str, password: str) -> bool:
        checked.append(pwhash.split(":", 1)[0])
        return real(pwhash, password)

    monkeypatch.setattr(hub.web.accounts.users, "check_password_hash", spy)
    assert _login(env, env.app.test_client(), "nobody", "wrong password").status_code == 401
    env.write(lambda ledger: ledger.transact(_disable("viewer")))
    assert _login(env, env.app.test_client(), "viewer", PASSWORD).status_code == 401
    assert checked == ["scrypt", "scrypt"]  # the dummy hash: the scheme real passwords are stored with


def _disable(username: str) -> Any:
    from hub.web.accounts.users import set_disabled

    return lambda tx: set_disabled(tx, username, True, actor="t")


def test_unknown_usernames_are_throttled_in_memory_without_writes(env: Env) -> None:
    before = env.sql("SELECT (SELECT count(*) FROM login_attempts), (SELECT count(*) FROM audit)")
    client = env.app.test_client()
    for _ in range(THROTTLE_FAILURES):
        assert _login(env, client, "nobody", "wrong password").status_code == 401
    assert _login(env, client, "nobody", "wrong password").status_code == 429
    assert _login(env, client, "nobody", "wrong password", ip="10.0.0.2").status_code == 401
    assert env.sql("SELECT (SELECT count(*) FROM login_attempts), (SELECT count(*) FROM audit)") == before
    # real users' attempts are still written
    assert _login(env, client, "viewer", "wrong password").status_code == 401
    assert env.sql("SELECT username, ok FROM login_attempts") == [("viewer", 0)]


def test_unknown_username_failures_are_bounded() -> None:
    from hub.web.accounts.users import UnknownUserFailures

    fails = UnknownUserFailures(max_keys=3)
    for i in range(5):
        fails.record(f"u{i}", "ip", at_ms=1_000)
    assert fails.count("u0", "ip", at_ms=1_000) == 0 and fails.count("u4", "ip", at_ms=1_000) == 1
    for _ in range(50):
        fails.record("u4", "ip", at_ms=2_000)
    assert fails.count("u4", "ip", at_ms=2_000) == THROTTLE_FAILURES * 4  # each key keeps a bounded list
    assert fails.count("u4", "ip", at_ms=2_000 + 15 * 60 * 1000) == 0  # out of the window


def test_old_login_attempts_are_pruned(env: Env) -> None:
    day = 24 * 3600 * 1000
    conn = sqlite3.connect(env.db)
    rows = [(1 * day, "viewer", 1), (2 * day, "viewer", 1), (3 * day, "viewer", 0), (2 * day, "clerk", 0)]
    conn.executemany("INSERT INTO login_attempts (ts_ms, username, ip, ok) VALUES (?, ?, '1.1.1.1', ?)", rows)
    conn.commit()
    conn.close()
    recent = _login(env, env.app.test_client(), "clerk", "wrong password")
    assert recent.status_code == 401
    deleted = env.write(lambda ledger: ledger.transact(prune_login_attempts))  # what the web server runs
    assert deleted == 3  # viewer's older success and failure, clerk's old failure; viewer's last success stays
    assert env.sql("SELECT ts_ms, username, ok FROM login_attempts ORDER BY ts_ms")[0] == (2 * day, "viewer", 1)
    assert len(env.sql("SELECT 1 FROM login_attempts")) == 2


def test_the_web_server_prunes_old_sign_ins_through_the_writer(env: Env) -> None:
    import asyncio
    import time

    from hub.web.server import WebServer, prune_sign_ins

    conn = sqlite3.connect(env.db)
    conn.execute("INSERT INTO login_attempts (ts_ms, username, ip, ok) VALUES (86400000, 'clerk', '1.1.1.1', 0)")
    conn.commit()
    conn.close()
    task = asyncio.run_coroutine_threadsafe(prune_sign_ins(env.writer.ledger, interval_s=0.01), env.writer.loop)
    try:
        deadline = time.monotonic() + 30
        while env.sql("SELECT count(*) FROM login_attempts") != [(0,)] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert env.sql("SELECT count(*) FROM login_attempts") == [(0,)]
    finally:
        task.cancel()
    web = WebServer.start(env.db, env.writer.ledger, env.writer.loop, host="127.0.0.1", port=0)
    assert not web._housekeeping.done()  # scheduled on the hub's loop while the server runs
    asyncio.run(web.stop())
    assert web._housekeeping.cancelled()


def test_secret_key_creation_never_exposes_a_partial_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is written to a temporary file and linked into place: a process reading the name sees the whole key
    or nothing; when two create it at once, both end with the one that was linked first."""
    from hub.web import app as app_module

    path = tmp_path / "l.db.secret"
    seen: list[bytes | None] = []
    real_link = os.link

    def link(src: Any, dst: Any) -> None:
        seen.append(path.read_bytes() if path.exists() else None)  # just before the name appears
        path.write_bytes(b"k" * 64)  # another process won the race (its key is 0600, as this one's would be)
        path.chmod(0o600)
        real_link(src, dst)

    monkeypatch.setattr(app_module.os, "link", link)
    assert app_module.load_secret_key(path) == b"k" * 64
    assert seen == [None] and [p.name for p in tmp_path.iterdir()] == ["l.db.secret"]
    monkeypatch.undo()
    other = tmp_path / "m.db.secret"
    key = app_module.load_secret_key(other)
    assert len(key) == 64 and app_module.load_secret_key(other) == key
    assert stat.S_IMODE(other.stat().st_mode) == 0o600
