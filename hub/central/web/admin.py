"""Administration pages of the central page (admins only): users (``/users``), API clients (``/api-clients``),
regions, stores and which store each hub serves (``/directory``).

Every change is one PostgreSQL transaction with an audit entry (``web_audit``, actor ``web:<admin>``, origin the
client's address); the safety rules (no admin demotes or disables themselves, the last enabled admin stays, a region
manager has at least one known region) are checked inside it (``accounts.py``, ``directory.py``). Passwords are
hashed here, in the worker thread. A new API client's token is shown once, on the answer to the form.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers.response import Response

from hub.central.web import accounts, directory
from hub.central.web.pg import get_database
from hub.central.web.schema import ROLES, SCOPES
from hub.ledger.models import InvalidArgument
from hub.web.access import requires
from hub.web.accounts.clients import token_sha256
from hub.web.accounts.users import MIN_PASSWORD, USERNAME_RE, hash_password

bp = Blueprint("admin", __name__)


def _actor() -> tuple[str, str]:
    return f"web:{g.user.username}", f"ip:{request.remote_addr or '?'}"


def _new_password() -> str:
    password = request.form.get("password", "")
    if password != request.form.get("confirm", ""):
        raise InvalidArgument("the two passwords differ")
    return hash_password(password)


def _regions_given() -> list[str]:
    return [r for r in request.form.getlist("regions") if r]


# ------------------------------------------------------------------------------------------------------ users


def _users_page(*, error: str | None = None, form: dict[str, Any] | None = None, status: int = 200) -> tuple[str, int]:
    async def read(conn: Any) -> tuple[Any, Any]:
        return await accounts.list_users(conn), await directory.list_regions(conn)

    users, regions = get_database().read(read)
    page = render_template(
        "users.html",
        users=users,
        roles=ROLES,
        regions=regions,
        min_password=MIN_PASSWORD,
        error=error,
        form=form or {"username": "", "role": "viewer", "regions": []},
        me=g.user.username,
    )
    return page, status


@bp.get("/users")
@requires("admin", ROLES)
def users() -> tuple[str, int]:
    return _users_page()


@bp.post("/users")
@requires("admin", ROLES)
def add_user() -> Response | tuple[str, int]:
    username = request.form.get("username", "").strip()
    role = request.form.get("role", "")
    regions = _regions_given()
    actor, origin = _actor()
    try:
        password_hash = _new_password()
        get_database().run(
            lambda c: accounts.add_user(c, username, password_hash, role, regions, actor=actor, origin=origin)
        )
    except InvalidArgument as exc:
        form = {"username": username[:64], "role": role, "regions": regions}
        return _users_page(error=f"User not added: {exc}.", form=form, status=400)
    flash(f"User {username} added as {role}.")
    return redirect(url_for("admin.users"))


@bp.post("/users/<username>")
@requires("admin", ROLES)
def update_user(username: str) -> Response | tuple[str, int]:
    db = get_database()
    if USERNAME_RE.fullmatch(username) is None or db.run(lambda c: accounts.get_user(c, username)) is None:
        abort(404)
    role = request.form.get("role") or None
    action = request.form.get("action") or None
    regions = _regions_given() if request.form.get("set_regions") else None
    actor, origin = _actor()
    by = g.user.username
    try:
        password_hash = _new_password() if action == "reset_password" else None
        done = db.run(
            lambda c: accounts.update_user(
                c,
                username,
                actor=actor,
                by=by,
                role=role,
                regions=regions,
                action=action,
                password_hash=password_hash,
                origin=origin,
            )
        )
    except InvalidArgument as exc:
        return _users_page(error=f"User {username} not changed: {exc}.", status=400)
    if username == by:  # an admin's own password reset ends their other sessions, not this one
        me = db.run(lambda c: accounts.get_user(c, username))
        if me is not None:
            session["epoch"] = me.session_epoch
    flash(f"User {username}: {', '.join(done)}.")
    return redirect(url_for("admin.users"))


# ------------------------------------------------------------------------------------------------ API clients


def _clients_page(
    *, error: str | None = None, token: str | None = None, name: str = "", status: int = 200
) -> tuple[str, int]:
    async def read(conn: Any) -> tuple[Any, Any]:
        return await accounts.list_clients(conn), await directory.list_regions(conn)

    clients, regions = get_database().read(read)
    page = render_template(
        "clients.html",
        clients=clients,
        scopes=SCOPES,
        regions=regions,
        error=error,
        token=token,
        name=name,
        checked=request.form.getlist("scopes") if request.method == "POST" else [],
    )
    return page, status


@bp.get("/api-clients")
@requires("admin", ROLES)
def clients() -> tuple[str, int]:
    return _clients_page()


@bp.post("/api-clients")
@requires("admin", ROLES)
def add_client() -> tuple[str, int]:
    name = request.form.get("name", "").strip()
    scopes = request.form.getlist("scopes")
    regions = None if request.form.get("stores") == "all" else _regions_given()
    actor, origin = _actor()
    token = accounts.new_token()
    digest = token_sha256(token)
    try:
        get_database().run(lambda c: accounts.add_client(c, name, digest, scopes, regions, actor=actor, origin=origin))
    except InvalidArgument as exc:
        return _clients_page(error=f"API client not added: {exc}.", name=name[:60], status=400)
    return _clients_page(token=token, name=name, status=201)


@bp.post("/api-clients/<name>/disable")
@requires("admin", ROLES)
def disable_client(name: str) -> Response | tuple[str, int]:
    if not name.isascii() or not name.isprintable():
        abort(404)  # no client has such a name (and PostgreSQL refuses NUL)
    actor, origin = _actor()
    try:
        get_database().run(lambda c: accounts.disable_client(c, name, actor=actor, origin=origin))
    except InvalidArgument as exc:
        return _clients_page(error=f"API client {name} not disabled: {exc}.", status=400)
    flash(f"API client {name} disabled.")
    return redirect(url_for("admin.clients"))


# ----------------------------------------------------------------------------------- regions, stores, hubs


def _directory_page(*, error: str | None = None, status: int = 200) -> tuple[str, int]:
    async def read(conn: Any) -> tuple[Any, Any, Any]:
        return (
            await directory.list_regions(conn),
            await directory.list_stores(conn),
            await directory.unassigned_hubs(conn),
        )

    regions, stores, unassigned = get_database().read(read)
    page = render_template("directory.html", regions=regions, store_rows=stores, unassigned=unassigned, error=error)
    return page, status


@bp.get("/directory")
@requires("admin", ROLES)
def directory_index() -> tuple[str, int]:
    return _directory_page()


@bp.post("/directory")
@requires("admin", ROLES)
def directory_change() -> Response | tuple[str, int]:
    """One of: add a region (``region``, ``name``), add a store (``store_id``, ``name``, ``region``), or assign a
    hub to a store (``hub_id``, ``store_id``; an empty store: none), as the form's ``change`` says."""
    form = request.form
    actor, _ = _actor()
    change = form.get("change", "")
    db = get_database()
    try:
        if change == "region":
            region, name = form.get("region", "").strip(), form.get("name", "").strip()
            db.run(lambda c: directory.add_region(c, region, name, actor=actor))
            done = f"Region {region} added."
        elif change == "store":
            store_id, name = form.get("store_id", "").strip(), form.get("name", "")
            region_or_none = form.get("region") or None
            db.run(lambda c: directory.add_store(c, store_id, name, region_or_none, actor=actor))
            done = f"Store {store_id} added."
        elif change == "assign":
            hub_id, target = form.get("hub_id", ""), form.get("store_id") or None
            db.run(lambda c: directory.assign_hub(c, hub_id, target, actor=actor))
            done = f"Hub {hub_id} now serves {target or 'no store'}."
        else:
            raise InvalidArgument("change must be region, store or assign")
    except InvalidArgument as exc:
        return _directory_page(error=f"Not changed: {exc}.", status=400)
    flash(done)
    return redirect(url_for("admin.directory_index"))
