"""Login and logout."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.wrappers.response import Response

from hub.web.app import get_db, get_writer
from hub.web.users import THROTTLE_FAILURES, THROTTLE_WINDOW_MS, get_user, recent_failures, record_login, verify

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    # Only local paths: never redirect to another site after login.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.overview")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return render_template("login.html", error=None, next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")
    target = request.form.get("next", "")
    ip = request.remote_addr or "?"
    if recent_failures(get_db(), username, ip) >= THROTTLE_FAILURES:
        minutes = THROTTLE_WINDOW_MS // 60000
        msg = f"Too many failed sign-ins for this user from this address. Try again in {minutes} minutes."
        return render_template("login.html", error=msg, next=target), 429
    user = get_user(get_db(), username)
    ok = verify(user, password)
    get_writer().call(lambda ledger: ledger.transact(lambda tx: record_login(tx, username, ip, ok)))
    if not ok:
        return render_template("login.html", error="Wrong username or password.", next=target), 401
    session.clear()  # a fresh session (and CSRF token) for the signed-in user
    session["user"] = username
    return redirect(_safe_next(target))


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    session.clear()
    return redirect(url_for("auth.login"))
