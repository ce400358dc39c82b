"""Users administration: list, add, change role, disable / enable, reset password; the safety rules (no admin
disables or demotes themselves, the last enabled admin stays, checked inside the write transaction); every change
audited; passwords only ever stored hashed."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from hub.ledger.models import InvalidArgument
from hub.ledger.postings import Tx
from hub.web.accounts.users import add_user, set_disabled, set_password, set_role, update_user
from tests.web_support import PASSWORD, Env, login

NEW_PASSWORD = "a-brand-new-passphrase"


def _fingerprint(env: Env) -> list[tuple[Any, ...]]:
    return env.sql(
        "SELECT (SELECT count(*) FROM audit),"
        " (SELECT group_concat(username || ':' || role || ':' || coalesce(disabled_ms, '') || ':' || password_hash,"
        " ',') FROM users)",
    )


def _post(env: Env, client: FlaskClient, url: str, **form: str) -> TestResponse:
    return client.post(url, data={**form, "csrf_token": env.csrf(client)})


def _text(resp: TestResponse) -> str:
    return html.unescape(resp.get_data(as_text=True))


def _audit(env: Env, action: str) -> list[tuple[str, dict[str, Any]]]:
    return [(a, json.loads(d)) for a, d in env.sql("SELECT actor, details FROM audit WHERE action = ?", (action,))]


def _user(env: Env, username: str) -> tuple[Any, ...] | None:
    rows = env.sql("SELECT role, disabled_ms IS NOT NULL FROM users WHERE username = ?", (username,))
    return rows[0] if rows else None


def _db_bytes(env: Env) -> bytes:
    return b"".join(p.read_bytes() for p in env.db.parent.glob(env.db.name + "*") if p.is_file())


def test_the_page_lists_users_with_their_forms(env: Env) -> None:
    env.write(lambda ledger: ledger.transact(lambda tx: set_disabled(tx, "viewer", True, actor="t")))
    page = env.client("admin").get("/users")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for name in ("viewer", "clerk", "manager"):
        row = text.split(f'<tr id="user-{name}">')[1].split("</tr>")[0]
        assert f'action="/users/{name}"' in row and 'name="role"' in row and "reset_password" in row
        assert ("disabled" in row) == (name == "viewer")
        assert ('value="enable"' in row) == (name == "viewer") and ('value="disable"' in row) == (name != "viewer")
    # no role or disable form for yourself (refused anyway), but your password can be reset
    me = text.split('<tr id="user-admin">')[1].split("</tr>")[0]
    assert "admin</strong> (you)" in me and "reset_password" in me
    assert 'name="role"' not in me and 'value="disable"' not in me
    assert 'action="/users"' in text and 'name="confirm"' in text and 'minlength="8"' in text
    assert env.client("manager").get("/users").status_code == 403


def test_add_user_hashes_the_password_and_audits(env: Env) -> None:
    admin = env.client("admin")
    resp = _post(env, admin, "/users", username="  dana ", role="clerk", password=NEW_PASSWORD, confirm=NEW_PASSWORD)
    assert resp.status_code == 302 and resp.headers["Location"] == "/users"
    assert "User dana added as clerk." in _text(admin.get("/users"))
    ((role, password_hash),) = env.sql("SELECT role, password_hash FROM users WHERE username = 'dana'")
    assert role == "clerk" and password_hash.startswith("scrypt:") and NEW_PASSWORD not in password_hash
    assert NEW_PASSWORD.encode() not in _db_bytes(env)
    assert _audit(env, "add_user")[-1] == ("web:admin", {"username": "dana", "role": "clerk"})
    assert login(env, "dana", NEW_PASSWORD) == 302


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"username": "eve", "role": "clerk", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "x"}, "differ"),
        ({"username": "eve", "role": "clerk", "password": NEW_PASSWORD}, "the two passwords differ"),
        ({"username": "eve", "role": "clerk", "password": "short", "confirm": "short"}, "at least 8 characters"),
        ({"username": "e ve", "role": "clerk", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "letters, digits"),
        ({"username": "", "role": "clerk", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "1..60 characters"),
        # a path segment would make /users/<username> act on another account (x/../manager -> /users/manager)
        ({"username": "x/../manager", "role": "viewer", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "letters"),
        ({"username": "..", "role": "viewer", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "starting with"),
        ({"username": "a%2Fb", "role": "viewer", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "letters"),
        ({"username": "x" * 61, "role": "clerk", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "1..60"),
        ({"username": "eve", "role": "owner", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "role must be one"),
        ({"username": "clerk", "role": "clerk", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "exists"),
    ],
)
def test_add_user_refusals_change_nothing(env: Env, form: dict[str, str], message: str) -> None:
    before = _fingerprint(env)
    resp = _post(env, env.client("admin"), "/users", **form)
    text = _text(resp)
    assert resp.status_code == 400 and "User not added:" in text and message in text
    assert _fingerprint(env) == before
    if form["username"] == "eve":
        assert 'value="eve"' in text  # the form keeps what was typed (not the password)
    assert NEW_PASSWORD not in text


def test_change_role(env: Env) -> None:
    admin = env.client("admin")
    resp = _post(env, admin, "/users/viewer", role="manager")
    assert resp.status_code == 302
    assert "User viewer: role manager." in _text(admin.get("/users"))
    assert _user(env, "viewer") == ("manager", 0)
    assert _audit(env, "set_user_role") == [("web:admin", {"username": "viewer", "from": "viewer", "role": "manager"})]
    # the promoted user gets the new rights on the next request
    assert 'class="resolve"' in env.client("viewer").get("/alerts").get_data(as_text=True)


def test_disable_ends_the_session_and_enable_restores(env: Env) -> None:
    admin, clerk = env.client("admin"), env.client("clerk")
    assert clerk.get("/alerts").status_code == 200
    assert _post(env, admin, "/users/clerk", action="disable").status_code == 302
    assert "User clerk: disabled." in _text(admin.get("/users"))
    assert _user(env, "clerk") == ("clerk", 1)
    resp = clerk.get("/alerts")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    assert login(env, "clerk", PASSWORD) == 401
    assert _post(env, admin, "/users/clerk", action="enable").status_code == 302
    assert _user(env, "clerk") == ("clerk", 0) and login(env, "clerk", PASSWORD) == 302
    assert [d for _, d in _audit(env, "disable_user")] == [{"username": "clerk"}]
    assert [a for a, _ in _audit(env, "enable_user")] == ["web:admin"]


def test_reset_password(env: Env) -> None:
    admin = env.client("admin")
    old_hash = env.sql("SELECT password_hash FROM users WHERE username = 'manager'")[0][0]
    resp = _post(env, admin, "/users/manager", action="reset_password", password=NEW_PASSWORD, confirm=NEW_PASSWORD)
    assert resp.status_code == 302
    new_hash = env.sql("SELECT password_hash FROM users WHERE username = 'manager'")[0][0]
    assert new_hash != old_hash and new_hash.startswith("scrypt:")
    assert NEW_PASSWORD.encode() not in _db_bytes(env)
    assert login(env, "manager", PASSWORD) == 401 and login(env, "manager", NEW_PASSWORD) == 302
    assert _audit(env, "reset_password") == [("web:admin", {"username": "manager"})]
    # an admin may reset their own password
    resp = _post(env, admin, "/users/admin", action="reset_password", password=NEW_PASSWORD, confirm=NEW_PASSWORD)
    assert resp.status_code == 302
    assert login(env, "admin", NEW_PASSWORD) == 302


@pytest.mark.parametrize(
    ("url", "form", "message"),
    [
        ("/users/admin", {"action": "disable"}, "you cannot disable yourself"),
        ("/users/admin", {"role": "manager"}, "you cannot demote yourself"),
        ("/users/clerk", {"role": "clerk"}, "clerk is already clerk"),
        ("/users/clerk", {"action": "enable"}, "clerk is already enabled"),
        ("/users/clerk", {"role": "owner"}, "role must be one of viewer, clerk, manager, admin"),
        ("/users/clerk", {"action": "delete"}, "action must be one of disable, enable, reset_password"),
        ("/users/clerk", {}, "nothing to change"),
        ("/users/clerk", {"action": "reset_password", "password": "short", "confirm": "short"}, "at least 8"),
        ("/users/clerk", {"action": "reset_password", "password": NEW_PASSWORD, "confirm": "other"}, "differ"),
        ("/users/clerk", {"action": "reset_password"}, "at least 8 characters"),
    ],
)
def test_update_refusals_change_nothing(env: Env, url: str, form: dict[str, str], message: str) -> None:
    before = _fingerprint(env)
    resp = _post(env, env.client("admin"), url, **form)
    text = _text(resp)
    assert resp.status_code == 400 and "not changed:" in text and message in text
    assert _fingerprint(env) == before


def test_unknown_user_is_404(env: Env) -> None:
    before = _fingerprint(env)
    assert _post(env, env.client("admin"), "/users/nobody", role="clerk").status_code == 404
    assert _fingerprint(env) == before


def test_role_and_action_in_one_request_are_one_transaction(env: Env) -> None:
    admin = env.client("admin")
    # the role change would pass, the disable is refused: neither happens
    env.write(lambda ledger: ledger.transact(lambda tx: set_disabled(tx, "clerk", True, actor="t")))
    before = _fingerprint(env)
    assert _post(env, admin, "/users/clerk", role="manager", action="disable").status_code == 400
    assert _fingerprint(env) == before
    # both pass: both happen; a role equal to the current one is left alone beside an action
    assert _post(env, admin, "/users/clerk", role="manager", action="enable").status_code == 302
    assert _user(env, "clerk") == ("manager", 0)
    assert _post(env, admin, "/users/clerk", role="manager", action="disable").status_code == 302
    assert _user(env, "clerk") == ("manager", 1)


def _tx(env: Env, fn: Any) -> Any:
    return env.write(lambda ledger: ledger.transact(fn))


def _add_admin(env: Env, name: str) -> None:
    from werkzeug.security import generate_password_hash

    h = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
    _tx(env, lambda tx: add_user(tx, name, h, "admin", actor="t"))


def test_another_admin_may_demote_or_disable_an_admin(env: Env) -> None:
    _add_admin(env, "boss")
    boss = env.client("boss")
    assert _post(env, boss, "/users/admin", role="manager").status_code == 302
    assert _user(env, "admin") == ("manager", 0)
    assert _post(env, boss, "/users/admin", role="admin").status_code == 302
    assert _post(env, boss, "/users/admin", action="disable").status_code == 302
    assert _user(env, "admin") == ("admin", 1)
    # a disabled admin may be demoted: the enabled ones are not touched
    assert _post(env, boss, "/users/admin", role="viewer").status_code == 302


def test_the_last_enabled_admin_stays_checked_inside_the_transaction(env: Env) -> None:
    """Two admins disabling each other at once: both requests passed the session check; the writer runs them one
    after the other and refuses the second (the rule is checked in the transaction, not in the request)."""
    _add_admin(env, "boss")
    _tx(env, lambda tx: update_user(tx, "boss", actor="web:admin", by="admin", action="disable"))
    before = _fingerprint(env)
    with pytest.raises(InvalidArgument, match="the last enabled admin"):
        _tx(env, lambda tx: update_user(tx, "admin", actor="web:boss", by="boss", action="disable"))
    with pytest.raises(InvalidArgument, match="cannot demote admin: the last enabled admin"):
        _tx(env, lambda tx: set_role(tx, "admin", "manager", actor="cli", by=None))
    with pytest.raises(InvalidArgument, match="cannot disable admin: the last enabled admin"):
        _tx(env, lambda tx: set_disabled(tx, "admin", True, actor="cli", by=None))
    assert _fingerprint(env) == before
    # enabling the other admin again makes it possible
    _tx(env, lambda tx: set_disabled(tx, "boss", False, actor="cli"))
    _tx(env, lambda tx: set_role(tx, "admin", "manager", actor="cli"))
    assert _user(env, "admin") == ("manager", 0)


def test_set_password_refuses_a_plaintext(env: Env) -> None:
    before = _fingerprint(env)

    async def plain(tx: Tx) -> None:
        await set_password(tx, "clerk", NEW_PASSWORD, actor="t")

    with pytest.raises(InvalidArgument, match="only as a hash"):
        _tx(env, plain)
    assert _fingerprint(env) == before


def test_a_username_is_one_path_segment(env: Env) -> None:
    """/users/<username> takes no '/': a (legacy) name with path segments is not routed, so a form can never act on
    another account (x/../manager)."""
    env.write(
        lambda ledger: ledger.transact(
            lambda tx: tx.conn.execute(
                "INSERT INTO users (username, password_hash, role, created_ms)"
                " VALUES ('x/y', 'pbkdf2:x$y', 'viewer', 0)"
            )
        )
    )
    admin = env.client("admin")
    assert _post(env, admin, "/users/x/y", role="manager").status_code == 404
    assert _user(env, "x/y") == ("viewer", 0)
    assert _post(env, admin, "/users/x%2F..%2Fmanager", role="viewer").status_code == 404
    assert _user(env, "manager") == ("manager", 0)
