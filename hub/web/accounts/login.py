"""Login and logout: the hub's ``/login`` and ``/logout``, and the same rules for any app whose users live elsewhere
(the central page's, in PostgreSQL: ``hub/central/web/login.py``).

``sign_in(users)`` / ``sign_out(users)`` do the work; ``Accounts`` says where the app's users and sign-in attempts
live. Sign-in attempts for one (username, ip) are serialised in this process (``KeyLocks``): the throttle's check,
the password check and the recording of the attempt never interleave. Failures for usernames that do not exist are
counted in memory (``users.UnknownUserFailures``), never written, and cost the same hash computation as a real
user's (``users.verify``). The locks and those counts are the app's own (``login_state``). A session carries its
user's ``session_epoch``; logout bumps it. After signing in, the browser goes only to a local path (``safe_next``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers.response import Response

from hub.ledger.models import LedgerClosed
from hub.web.access import public
from hub.web.accounts.users import (
    THROTTLE_FAILURES,
    THROTTLE_WINDOW_MS,
    UnknownUserFailures,
    User,
    end_sessions,
    get_user,
    recent_failures,
    record_login,
    verify,
)
from hub.web.db import get_db, get_writer

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: ``target`` if it is a local path of this site, else the overview (never
    another site). Refused: any control character or whitespace (browsers drop a tab or newline inside a URL, so
    ``/<tab>/evil.example`` is ``//evil.example``; a newline would also break the Location header), a backslash
    (browsers read it as ``/``), more than one leading ``/``, and anything ``urlsplit`` finds a scheme or host in."""
    if not target or len(target) > 2000:
        return url_for("pages.overview")
    if any(c.isspace() or not c.isprintable() for c in target) or "\\" in target:
        return url_for("pages.overview")
    if not target.startswith("/") or target.startswith("//"):
        return url_for("pages.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("pages.overview")
    return target


class KeyLocks:
    """One lock per (username, ip), so that the throttle's check, the password check and the recording of the
    attempt happen one request at a time for that pair (parallel guesses cannot all pass the check before any
    failure is recorded). At most ``max_keys`` locks; idle ones are dropped, the least recently used first."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._guard = threading.Lock()
        self._locks: OrderedDict[tuple[str, str], threading.Lock] = OrderedDict()

    def get(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            self._locks.move_to_end(key)
            if len(self._locks) > self.max_keys:
                for old in [k for k, v in self._locks.items() if not v.locked()][: len(self._locks) - self.max_keys]:
                    del self._locks[old]
            return lock


def login_state(app: Flask) -> tuple[KeyLocks, UnknownUserFailures]:
    """``app``'s sign-in locks and its in-memory counts of failures for unknown usernames, made on first use and
    kept in ``app.extensions``: each app (the hub's page, the central page, a test's app) has its own."""
    state = app.extensions.get("smartshelf_login")
    if state is None:
        state = app.extensions.setdefault("smartshelf_login", (KeyLocks(), UnknownUserFailures()))
    return cast(tuple[KeyLocks, UnknownUserFailures], state)


@dataclass(frozen=True)
class Accounts:
    """Where an app's users live, for ``sign_in`` and ``sign_out``; each is called inside the request."""

    get_user: Callable[[str], User | None]  # username -> the user, None if there is none of that name
    recent_failures: Callable[[str, str], int]  # (username, ip) -> failed sign-ins in the throttling window
    record_login: Callable[[str, str, bool], None]  # (username, ip, ok): an attempt for an existing user
    end_sessions: Callable[[str], None]  # username: every session of theirs ends (logout)
    unconfirmed: tuple[type[Exception], ...]  # what end_sessions raises when the store could not confirm it


def sign_in(users: Accounts) -> str | Response | tuple[str, int]:
    """``/login``: the form (GET); a sign-in (POST): 429 while (username, ip) is throttled, 401 for a wrong
    username or password (the same answer, the same time), else a fresh session and the redirect to ``next``."""
    if request.method == "GET":
        return render_template("login.html", error=None, next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")
    target = request.form.get("next", "")
    ip = request.remote_addr or "?"
    locks, unknown = login_state(current_app)
    with locks.get((username, ip)):
        user = users.get_user(username)
        failures = users.recent_failures(username, ip) if user is not None else unknown.count(username, ip)
        if failures >= THROTTLE_FAILURES:
            minutes = THROTTLE_WINDOW_MS // 60000
            msg = f"Too many failed sign-ins for this user from this address. Try again in {minutes} minutes."
            return render_template("login.html", error=msg, next=target), 429
        ok = verify(user, password)
        if user is None:
            unknown.record(username, ip)  # in memory: an unknown name never queues a write
        else:
            users.record_login(username, ip, ok)
    if not ok or user is None:
        return render_template("login.html", error="Wrong username or password.", next=target), 401
    session.clear()  # a fresh session (and CSRF token) for the signed-in user
    session["user"] = username
    session["epoch"] = user.session_epoch  # access._enforce signs it out once the epoch moves on
    return redirect(safe_next(target))


def sign_out(users: Accounts) -> Response:
    """Sign out here and everywhere else: the user's session epoch moves on, so a copy of this cookie is dead too."""
    user = g.get("user")
    session.clear()
    if user is not None:
        try:
            users.end_sessions(user.username)
        except users.unconfirmed:
            flash("Signed out on this device; signing out your other sessions could not be confirmed. Sign out again.")
    return redirect(url_for("auth.login"))


# ------------------------------------------------------------------------------------- the hub's: its ledger


def _record_login(username: str, ip: str, ok: bool) -> None:
    get_writer().call(lambda ledger: ledger.transact(lambda tx: record_login(tx, username, ip, ok)))


def _end_sessions(username: str) -> None:
    actor = f"web:{username}"
    get_writer().call(lambda ledger: ledger.transact(lambda tx: end_sessions(tx, username, actor=actor, why="logout")))


LEDGER_ACCOUNTS = Accounts(
    get_user=lambda username: get_user(get_db(), username),
    recent_failures=lambda username, ip: recent_failures(get_db(), username, ip),
    record_login=_record_login,
    end_sessions=_end_sessions,
    unconfirmed=(LedgerClosed, TimeoutError),  # the writer busy past its timeout, or stopping
)


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> str | Response | tuple[str, int]:
    return sign_in(LEDGER_ACCOUNTS)


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Response:
    return sign_out(LEDGER_ACCOUNTS)
