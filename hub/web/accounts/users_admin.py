"""Users administration (admins only): list, add, change role, disable / enable, reset password.

Every change is one transaction of the ledger's writer with an audit entry (actor ``web:<admin>``); the safety
rules (no admin disables or demotes themselves, the last enabled admin stays) are checked inside it
(``users.py``). A role change, disabling and a password reset sign the user out everywhere (a new session
epoch); an admin resetting their own password stays signed in on this device only. Passwords are hashed here, in
the web worker thread, never on the writer's loop.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers.response import Response

from hub.ledger.models import InvalidArgument, LedgerError
from hub.web.access import requires
from hub.web.accounts.users import (
    ACTIONS,
    MIN_PASSWORD,
    ROLES,
    UnknownUser,
    add_user,
    check_username,
    get_user,
    hash_password,
    list_users,
    update_user,
)
from hub.web.db import get_db, get_writer

bp = Blueprint("users", __name__)


def _render(*, error: str | None = None, form: dict[str, str] | None = None, status: int = 200) -> tuple[str, int]:
    page = render_template(
        "users.html",
        users=list_users(get_db()),
        roles=ROLES,
        min_password=MIN_PASSWORD,
        error=error,
        form=form or {"username": "", "role": "viewer"},
        me=g.user.username,
    )
    return page, status


def _new_password() -> str:
    """The hash of the form's password, which must be typed twice the same."""
    password = request.form.get("password", "")
    if password != request.form.get("confirm", ""):
        raise InvalidArgument("the two passwords differ")
    return hash_password(password)


def _actor() -> str:
    return f"web:{g.user.username}"


@bp.get("/users")
@requires("admin")
def index() -> tuple[str, int]:
    return _render()


@bp.post("/users")
@requires("admin")
def create() -> Response | tuple[str, int]:
    username = request.form.get("username", "").strip()
    role = request.form.get("role", "")
    actor = _actor()
    try:
        check_username(username)
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        password_hash = _new_password()
        get_writer().call(
            lambda ledger: ledger.transact(lambda tx: add_user(tx, username, password_hash, role, actor=actor))
        )
    except LedgerError as exc:
        return _render(error=f"User not added: {exc}.", form={"username": username[:64], "role": role}, status=400)
    flash(f"User {username} added as {role}.")
    return redirect(url_for("users.index"))


@bp.post("/users/<username>")
@requires("admin")
def update(username: str) -> Response | tuple[str, int]:
    if get_user(get_db(), username) is None:
        abort(404)
    role = request.form.get("role") or None
    action = request.form.get("action") or None
    actor, by = _actor(), g.user.username
    try:
        if role is not None and role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        if action is not None and action not in ACTIONS:
            raise InvalidArgument(f"action must be one of {', '.join(ACTIONS)}")
        password_hash = _new_password() if action == "reset_password" else None
        done = get_writer().call(
            lambda ledger: ledger.transact(
                lambda tx: update_user(
                    tx, username, actor=actor, by=by, role=role, action=action, password_hash=password_hash
                )
            )
        )
    except UnknownUser:
        abort(404)
    except LedgerError as exc:
        return _render(error=f"User {username} not changed: {exc}.", status=400)
    if username == by:  # an admin's own password reset ends their other sessions, not this one
        me = get_user(get_db(), username)
        if me is not None:
            session["epoch"] = me.session_epoch
    flash(f"User {username}: {', '.join(done)}.")
    return redirect(url_for("users.index"))
