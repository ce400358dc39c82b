"""Login and logout.

Sign-in attempts for one (username, ip) are serialised in this process (``_KeyLocks``): the throttle's check, the
password check and the recording of the attempt never interleave. Failures for usernames that do not exist are
counted in memory (``users.UnknownUserFailures``), never written, and cost the same hash computation as a real
user's (``users.verify``). A session carries its user's ``session_epoch``; logout bumps it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
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
    end_sessions,
    get_user,
    recent_failures,
    record_login,
    verify,
)
from hub.web.db import get_db, get_writer

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a local path of this site: never redirect to another site after login. Refused (the overview instead):
    any control character or whitespace (browsers drop a tab or newline inside a URL, so ``/<tab>/evil.example`` is
    ``//evil.example``; a newline would also break the Location header), a backslash (browsers read it as ``/``),
    more than one leading ``/``, and anything ``urlsplit`` finds a scheme or host in."""
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


class _KeyLocks:
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


def _state(app: Flask) -> tuple[_KeyLocks, UnknownUserFailures]:
    state = app.extensions.get("smartshelf_login")
    if state is None:
        state = app.extensions.setdefault("smartshelf_login", (_KeyLocks(), UnknownUserFailures()))
    return cast(tuple[_KeyLocks, UnknownUserFailures], state)


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return render_template("login.html", error=None, next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")
    target = request.form.get("next", "")
    ip = request.remote_addr or "?"
    locks, unknown = _state(current_app)
    with locks.get((username, ip)):
        user = get_user(get_db(), username)
        failures = recent_failures(get_db(), username, ip) if user is not None else unknown.count(username, ip)
        if failures >= THROTTLE_FAILURES:
            minutes = THROTTLE_WINDOW_MS // 60000
            msg = f"Too many failed sign-ins for this user from this address. Try again in {minutes} minutes."
            return render_template("login.html", error=msg, next=target), 429
        ok = verify(user, password)
        if user is None:
            unknown.record(username, ip)  # in memory: an unknown name never queues a ledger write
        else:
            get_writer().call(lambda ledger: ledger.transact(lambda tx: record_login(tx, username, ip, ok)))
    if not ok or user is None:
        return render_template("login.html", error="Wrong username or password.", next=target), 401
    session.clear()  # a fresh session (and CSRF token) for the signed-in user
    session["user"] = username
    session["epoch"] = user.session_epoch  # access._enforce signs it out once the epoch moves on
    return redirect(_safe_next(target))


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Response:
    """Sign out here and everywhere else: the user's session epoch moves on, so a copy of this cookie is dead too."""
    user = g.get("user")
    session.clear()
    if user is not None:
        actor = f"web:{user.username}"
        try:
            get_writer().call(
                lambda ledger: ledger.transact(lambda tx: end_sessions(tx, user.username, actor=actor, why="logout"))
            )
        except (LedgerClosed, TimeoutError):
            flash("Signed out on this device; signing out your other sessions could not be confirmed. Sign out again.")
    return redirect(url_for("auth.login"))
