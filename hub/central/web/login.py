"""Sign-in and sign-out of the central page: the hub's rules (``hub/web/accounts/login.py``) on central's tables.

Attempts for one (username, ip) are serialised in this process (the hub's ``_KeyLocks``); five failures in the
window throttle that pair (429); unknown usernames are counted in memory only and cost the same hash computation as
a real user's (``hub.web.accounts.users.verify``); the redirect after sign-in stays on this site (the hub's
``_safe_next``). A session carries the user's ``session_epoch``; logout moves it on, ending every copy of the
cookie (``accounts.end_sessions``).
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers.response import Response

from hub.central.web.accounts import end_sessions, get_user, recent_failures, record_login
from hub.central.web.pg import get_database
from hub.web.access import public
from hub.web.accounts.login import _safe_next, _state  # the per-app locks and unknown-user counts
from hub.web.accounts.users import (
    THROTTLE_FAILURES,
    THROTTLE_WINDOW_MS,
    USERNAME_RE,
    verify,
)

bp = Blueprint("auth", __name__)


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
    db = get_database()
    with locks.get((username, ip)):
        known = USERNAME_RE.fullmatch(username) is not None  # anything else is no user's (PostgreSQL refuses NUL)
        user = db.run(lambda conn: get_user(conn, username)) if known else None
        if user is not None:
            failures = db.run(lambda conn: recent_failures(conn, username, ip))
        else:
            failures = unknown.count(username, ip)
        if failures >= THROTTLE_FAILURES:
            minutes = THROTTLE_WINDOW_MS // 60000
            msg = f"Too many failed sign-ins for this user from this address. Try again in {minutes} minutes."
            return render_template("login.html", error=msg, next=target), 429
        ok = verify(user, password)
        if user is None:
            unknown.record(username, ip)
        else:
            db.run(lambda conn: record_login(conn, username, ip, ok))
    if not ok or user is None:
        return render_template("login.html", error="Wrong username or password.", next=target), 401
    session.clear()
    session["user"] = username
    session["epoch"] = user.session_epoch
    return redirect(_safe_next(target))


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Response:
    user = g.get("user")
    session.clear()
    if user is not None:
        try:
            get_database().run(
                lambda conn: end_sessions(conn, user.username, actor=f"web:{user.username}", why="logout")
            )
        except (OSError, TimeoutError):
            flash("Signed out on this device; signing out your other sessions could not be confirmed. Sign out again.")
    return redirect(url_for("auth.login"))
