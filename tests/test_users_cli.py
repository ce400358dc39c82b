"""``smartshelf users list | disable | enable | reset-password`` from the Pi's shell (the only admin forgot the
password, or left): the users page's admin actions (``hub.web.accounts.users.update_user``) with its rules and
effects (every session of the user ends, a live stream within seconds), on the database ``--config hub.toml`` names,
audited with the command line as actor and origin; refusals are one line, exit 2, and change nothing."""

from __future__ import annotations

import asyncio
import getpass
import io
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hub.cli import main
from hub.ledger import origin
from hub.ledger.cli_common import default_actor
from hub.web.server import WebServer
from tests.web_support import PASSWORD, Env, EventStream, login

NEW_PASSWORD = "a-brand-new-passphrase"
CLI = origin.cli()  # this process: cli:<login>@<host>


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _hub_toml(env: Env) -> str:
    """A hub.toml beside the ledger naming it (what the IT person has on the Pi): ``--config`` finds the database."""
    cfg = env.db.parent / "hub.toml"
    cfg.write_text(f'[hub]\ndatabase = "{env.db.name}"\n')
    return str(cfg)


def _fingerprint(env: Env) -> list[tuple[Any, ...]]:
    return env.sql(
        "SELECT (SELECT count(*) FROM audit), (SELECT group_concat(username || ':' || role || ':' ||"
        " coalesce(disabled_ms, '') || ':' || password_hash || ':' || session_epoch, ',') FROM users)"
    )


def _audit_since(env: Env, last: int) -> list[tuple[Any, ...]]:
    return env.sql("SELECT actor, action, origin, details FROM audit WHERE id > ? ORDER BY id", (last,))


def _last(env: Env) -> int:
    return int(env.sql("SELECT max(id) FROM audit")[0][0])


def test_list_shows_role_status_and_last_sign_in_as_a_table_and_as_json(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _hub_toml(env)
    assert login(env, "clerk", PASSWORD) == 302
    assert run(capsys, "users", "disable", "viewer", "--config", cfg)[0] == 0
    rc, out, err = run(capsys, "users", "list", "--config", cfg)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["username", "role", "status", "last", "sign-in"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["admin", "clerk", "manager", "viewer"]
    assert rows["admin"][1:] == ["admin", "enabled", "-"]
    assert rows["clerk"][1:3] == ["clerk", "enabled"] and re.fullmatch(r"\d{4}-\d\d-\d\d", rows["clerk"][3])
    assert rows["viewer"][1:3] == ["viewer", "disabled"] and rows["viewer"][-1] == "-"

    rc, out, _ = run(capsys, "users", "list", "--json", "--config", cfg)
    users = {u["username"]: u for u in json.loads(out)}
    assert rc == 0 and sorted(users) == ["admin", "clerk", "manager", "viewer"]
    assert set(users["clerk"]) == {"username", "role", "enabled", "created_ms", "disabled_ms", "last_login_ms"}
    assert users["clerk"]["enabled"] is True and isinstance(users["clerk"]["last_login_ms"], int)
    assert users["viewer"]["enabled"] is False and isinstance(users["viewer"]["disabled_ms"], int)
    assert users["admin"]["last_login_ms"] is None


@contextmanager
def _serving(env: Env) -> Iterator[tuple[WebServer, int]]:
    live = {"LIVE_RECHECK_S": 0.3, "LIVE_HEARTBEAT_S": 60.0}
    web = WebServer.start(env.db, env.writer.ledger, env.writer.loop, host="127.0.0.1", port=0, live=live)
    try:
        match = re.fullmatch(r"https?://127\.0\.0\.1:(\d+)/", web.url)
        assert match, web.url
        yield web, int(match.group(1))
    finally:
        asyncio.run(web.stop())


def test_disable_ends_the_users_sessions_and_live_stream_like_the_pages_action_and_is_audited(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _hub_toml(env)
    clerk = env.client("clerk")
    assert clerk.get("/alerts").status_code == 200
    with _serving(env) as (web, port):
        serializer = web.app.session_interface.get_signing_serializer(web.app)  # type: ignore[attr-defined]
        epoch = env.sql("SELECT session_epoch FROM users WHERE username = 'clerk'")[0][0]
        stream = EventStream(
            port, f"smartshelf_session={serializer.dumps({'user': 'clerk', 'epoch': epoch, 'sid': 's'})}"
        )
        assert stream.resp.status == 200 and stream.next_event() == "snapshot"
        last = _last(env)
        rc, out, err = run(capsys, "users", "disable", "clerk", "--config", cfg)
        started = time.monotonic()
        assert (rc, err) == (0, "")
        assert out.startswith(f"user clerk disabled (ledger {env.db}): signed out everywhere")
        assert stream.next_event() == "signed-out"  # the hub's page, another process in real life, sees it
        assert stream.next_event() is None and time.monotonic() - started < 3.0
        stream.conn.close()
    resp = clerk.get("/alerts")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    assert login(env, "clerk", PASSWORD) == 401
    actor = default_actor()
    assert _audit_since(env, last) == [(actor, "disable_user", CLI, '{"username":"clerk"}')]

    last = _last(env)
    rc, out, _ = run(capsys, "users", "enable", "clerk", "--config", cfg, "--actor", "cli:it-desk")
    assert rc == 0 and out == f"user clerk enabled (ledger {env.db}): they can sign in again\n"
    assert login(env, "clerk", PASSWORD) == 302
    assert _audit_since(env, last)[0] == ("cli:it-desk", "enable_user", CLI, '{"username":"clerk"}')


def test_reset_password_for_the_admin_who_forgot_it(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _hub_toml(env)
    admin = env.client("admin")
    assert admin.get("/users").status_code == 200
    last = _last(env)
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW_PASSWORD + "\n"))
    rc, out, err = run(capsys, "users", "reset-password", "admin", "--password-stdin", "--config", cfg)
    assert (rc, err) == (0, "")
    assert out == f"user admin: password reset (ledger {env.db}), signed out everywhere\n"
    assert admin.get("/users").status_code == 302  # every session of theirs ended
    assert login(env, "admin", PASSWORD) == 401 and login(env, "admin", NEW_PASSWORD) == 302
    audit = _audit_since(env, last)
    assert audit[0] == (default_actor(), "reset_password", CLI, '{"username":"admin"}')
    assert NEW_PASSWORD.encode() not in b"".join(p.read_bytes() for p in env.db.parent.glob(env.db.name + "*"))

    # without --password-stdin: asked twice on the terminal, as users add does
    answers = iter(["typed-once-only", "typed-otherwise"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    before = _fingerprint(env)
    assert run(capsys, "users", "reset-password", "manager", "--config", cfg)[::2] == (
        2,
        "smartshelf users: the passwords differ\n",
    )
    answers = iter(["manager-passphrase", "manager-passphrase"])
    assert run(capsys, "users", "reset-password", "manager", "--config", cfg)[0] == 0
    assert login(env, "manager", "manager-passphrase") == 302
    assert before != _fingerprint(env)


def test_a_disabled_users_password_reset_says_they_stay_disabled(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _hub_toml(env)
    assert run(capsys, "users", "disable", "viewer", "--config", cfg)[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW_PASSWORD + "\n"))
    rc, out, _ = run(capsys, "users", "reset-password", "viewer", "--password-stdin", "--config", cfg)
    assert rc == 0 and out.endswith("signed out everywhere; still disabled: smartshelf users enable viewer\n")
    assert login(env, "viewer", NEW_PASSWORD) == 401


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (("disable", "admin"), "", "cannot disable admin: the last enabled admin (make another user admin first)"),
        (("enable", "clerk"), "", "clerk is already enabled"),
        (("disable", "nobody"), "", "no user 'nobody' in {db} (smartshelf users list --config {cfg})"),
        (("reset-password", "nobody", "--password-stdin"), NEW_PASSWORD, "no user 'nobody' in {db} (smartshelf users"
         " list --config {cfg})"),
        (("reset-password", "clerk", "--password-stdin"), "short", "a password needs at least 8 characters"),
        (("reset-password", "clerk", "--password-stdin"), "", "a password needs at least 8 characters"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)  # fmt: skip
def test_refusals_are_one_line_exit_2_and_change_nothing(
    env: Env,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
    stdin: str,
    message: str,
) -> None:
    cfg = _hub_toml(env)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin + "\n"))
    before = _fingerprint(env)
    rc, out, err = run(capsys, "users", *argv, "--config", cfg)
    assert (rc, out) == (2, "")
    assert err == f"smartshelf users: {message.format(db=env.db, cfg=cfg)}\n"
    assert _fingerprint(env) == before


def test_another_admin_makes_the_first_one_disableable(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """The rule is the page's: an admin may be disabled while another enabled admin remains."""
    cfg = _hub_toml(env)
    assert run(capsys, "users", "disable", "admin", "--config", cfg)[0] == 2
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO("second-admin-passphrase\n"))
        assert run(capsys, "users", "add", "deputy", "--role", "admin", "--password-stdin", "--config", cfg)[0] == 0
    assert run(capsys, "users", "disable", "admin", "--config", cfg)[0] == 0
    assert run(capsys, "users", "disable", "deputy", "--config", cfg)[2] == (
        "smartshelf users: cannot disable deputy: the last enabled admin (make another user admin first)\n"
    )


def test_an_older_ledger_is_named_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)  # a database without the users table
    conn.execute("CREATE TABLE movements (id INTEGER)")
    conn.commit()
    conn.close()
    rc, out, err = run(capsys, "users", "list", "--db", str(db))
    assert (rc, out) == (1, "")
    assert err == (
        f"smartshelf users: ledger {db}: no such table: users (an older ledger: open it with the hub once to upgrade"
        " it)\n"
    )


FAILING = [  # what fails (a function of hub.web.cli), then the command
    ("add_user", "users", "add", "erin", "--role", "clerk", "--password-stdin"),
    ("add_client", "api-clients", "add", "till", "--scopes", "sales"),
    ("disable_client", "api-clients", "disable", "till"),
    ("list_clients", "api-clients", "list"),
]


@pytest.mark.parametrize("case", FAILING, ids=lambda case: " ".join(case[1:3]))
def test_a_ledger_that_cannot_be_read_or_written_is_exit_1_for_every_command(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: tuple[str, ...]
) -> None:
    """As ``users list | disable | enable | reset-password``: 2 is a refusal, 1 a ledger that failed (users add and
    api-clients said 2 for both)."""
    for failure in (sqlite3.OperationalError("disk I/O error"), OSError(5, "Input/output error")):

        def fail(*args: object, failure: Exception = failure, **kwargs: object) -> None:
            raise failure

        monkeypatch.setattr(f"hub.web.cli.{case[0]}", fail)
        monkeypatch.setattr("sys.stdin", io.StringIO(f"{NEW_PASSWORD}\n"))
        rc, out, err = run(capsys, *case[1:], "--config", _hub_toml(env))
        assert (rc, out) == (1, "") and str(failure) in err and err.count("\n") == 1, (failure, err)
