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
from hub.web.access import API, PUBLIC, ROLE_MATRIX, matrix_markdown
from hub.web.app import secret_key_path
from hub.web.users import ROLES, THROTTLE_FAILURES, role_rank
from tests.web_routes import ROUTES
from tests.web_support import PASSWORD, Env


def _alert_id(env: Env, cause: str = "lane:A1/COLA") -> int:
    return int(env.sql("SELECT id FROM alerts WHERE cause_key = ?", (cause,))[0][0])


def test_every_endpoint_is_in_the_matrix(env: Env) -> None:
    endpoints = {rule.endpoint for rule in env.app.url_map.iter_rules()}
    assert endpoints == set(ROLE_MATRIX)
    roles = {e for e, r in ROLE_MATRIX.items() if r not in (PUBLIC, API)}
    assert {r.endpoint for r in ROUTES.values()} == roles


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
    url = r.url.format(alert=_alert_id(env), lane="A1", user="viewer")
    before = _fingerprint(env)
    form = {**r.data, "csrf_token": env.csrf(client)}
    resp = client.get(url) if r.method == "GET" else client.post(url, data=form)
    if role is None:
        assert resp.status_code == 302
        assert resp.headers["Location"].startswith("/login")
        assert _fingerprint(env) == before
    elif role_rank(role) < role_rank(ROLE_MATRIX[r.endpoint]):
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


def test_login_redirects_only_to_local_paths(env: Env) -> None:
    client = env.app.test_client()
    client.get("/login")
    resp = client.post(
        "/login",
        data={"username": "viewer", "password": PASSWORD, "csrf_token": env.csrf(client), "next": "//evil.example/"},
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_users_cli_hashes_the_password(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
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
    assert "<script src" not in html and "<link" not in html  # no external assets: one inline script
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
