"""Sign-in and sign-out of the central page: the hub's ``/login`` and ``/logout`` (``hub.web.accounts.login``:
``sign_in``, ``sign_out``) on central's tables.

The hub's rules, from the same code: attempts for one (username, ip) are serialised in this process; five failures
in the window throttle that pair (429); unknown usernames are counted in memory only and cost the same hash
computation as a real user's; the redirect after sign-in stays on this site (``safe_next``). A session carries the
user's ``session_epoch``; logout moves it on, ending every copy of the cookie (``accounts.end_sessions``).
"""

from __future__ import annotations

from flask import Blueprint
from werkzeug.wrappers.response import Response

from hub.central.web.accounts import CentralUser, end_sessions, get_user, recent_failures, record_login
from hub.central.web.pg import get_database
from hub.web.access import public
from hub.web.accounts.login import Accounts, sign_in, sign_out
from hub.web.accounts.users import USERNAME_RE

bp = Blueprint("auth", __name__)


def _get_user(username: str) -> CentralUser | None:
    if USERNAME_RE.fullmatch(username) is None:
        return None  # no user's name (and PostgreSQL refuses text with NUL)
    return get_database().run(lambda conn: get_user(conn, username))


def _recent_failures(username: str, ip: str) -> int:
    return get_database().run(lambda conn: recent_failures(conn, username, ip))


def _record_login(username: str, ip: str, ok: bool) -> None:
    get_database().run(lambda conn: record_login(conn, username, ip, ok))


def _end_sessions(username: str) -> None:
    get_database().run(lambda conn: end_sessions(conn, username, actor=f"web:{username}", why="logout"))


ACCOUNTS = Accounts(
    get_user=_get_user,
    recent_failures=_recent_failures,
    record_login=_record_login,
    end_sessions=_end_sessions,
    unconfirmed=(OSError, TimeoutError),  # PostgreSQL down, restarting or too slow
)


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> str | Response | tuple[str, int]:
    return sign_in(ACCOUNTS)


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Response:
    return sign_out(ACCOUNTS)
