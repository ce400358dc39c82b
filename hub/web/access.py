"""Who may do what: each endpoint declares its rule where it is defined; the rules are checked before every view.

::

    @bp.get("/reports")
    @requires("manager")
    def index() -> str: ...

One rule per endpoint (a second one on the same view raises ``TypeError`` at import):

* ``@public``: anyone, signed in or not (sign-in, sign-out, the OpenAPI description);
* ``@requires(role)``: a signed-in user of ``role`` or above (``viewer`` < ``clerk`` < ``manager`` < ``admin``).
  Anonymous users are redirected to the login page, a signed-in user below the role gets 403;
* ``@scope(name)``: an API client's bearer token with that scope (``hub/web/api/auth.py`` checks it before the
  view runs): no session, no cookie, no CSRF token.

Another application on the same stack (the central page, ``hub/central/web``) passes its own order of roles and
scopes (``requires(role, roles)``, ``scope(name, scopes)``) and its own way to find a signed-in user
(``install(app, roles=..., load_user=...)``); the hub's are the defaults.

``install(app)`` (the end of ``create_app``, every blueprint registered) reads the rule of every endpoint of the URL
map into the app's ``Policy``; an endpoint without one is logged by name at start-up and refused to everyone (fail
closed), as is one added after start-up. Every POST of a session (``public`` or ``requires``) must carry the
session's CSRF token (form field ``csrf_token``). ``matrix_markdown(app)`` renders the policy as the table in
hub/web/README.md (a test keeps the two equal).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from werkzeug.wrappers.response import Response

from hub.web.accounts.clients import SCOPES
from hub.web.accounts.users import ROLES, User, get_user
from hub.web.db import get_db

log = logging.getLogger(__name__)

PUBLIC = "public"
API = "api client"  # the matrix's minimum for an endpoint of a scope: a bearer token, not a role
API_BLUEPRINT = "api"  # its endpoints answer in JSON, an undeclared one too (hub/web/api/auth.py)
_ATTR = "smartshelf_access"
_EXTENSION = "smartshelf_policy"
_USERS = "smartshelf_load_user"

F = TypeVar("F", bound=Callable[..., Any])
RuleKind = Literal["public", "role", "scope"]


@dataclass(frozen=True, slots=True)
class Rule:
    kind: RuleKind
    name: str = ""  # the role or the scope
    roles: tuple[str, ...] = ROLES  # the order of roles a role rule ranks by (each may do what those before may)

    @property
    def minimum(self) -> str:
        """As the role matrix says it: ``public``, the role, or ``api client``."""
        return PUBLIC if self.kind == "public" else API if self.kind == "scope" else self.name

    def admits(self, role: str | None) -> bool:
        """May a session of ``role`` (None: anonymous) reach it? (Never for a scope: that takes a token.)"""
        if self.kind == "public":
            return True
        return self.kind == "role" and role in self.roles and self.roles.index(role) >= self.roles.index(self.name)


def _declare(view: F, rule: Rule) -> F:
    existing = getattr(view, _ATTR, None)
    if existing is not None:
        raise TypeError(f"{view.__qualname__} already has the access rule {existing}: one rule per endpoint")
    setattr(view, _ATTR, rule)
    return view


def public(view: F) -> F:
    """Anyone may reach this view."""
    return _declare(view, Rule("public"))


def requires(role: str, roles: tuple[str, ...] = ROLES) -> Callable[[F], F]:
    """A signed-in user of ``role`` or above (in ``roles``, the hub's by default) may reach this view."""
    if role not in roles:
        raise ValueError(f"role must be one of {', '.join(roles)}, not {role!r}")
    return lambda view: _declare(view, Rule("role", role, roles))


def scope(name: str, scopes: tuple[str, ...] = SCOPES) -> Callable[[F], F]:
    """An API client whose token has the scope ``name`` (one of ``scopes``, the hub's by default) may reach this
    view."""
    if name not in scopes:
        raise ValueError(f"scope must be one of {', '.join(scopes)}, not {name!r}")
    return lambda view: _declare(view, Rule("scope", name))


def rule_of(view: Callable[..., Any]) -> Rule | None:
    rule = getattr(view, _ATTR, None)
    return rule if isinstance(rule, Rule) else None


# ------------------------------------------------------------------------------------------------- the policy


@dataclass(frozen=True, slots=True)
class Policy:
    rules: Mapping[str, Rule]  # endpoint -> rule, in the order of the URL map
    undeclared: tuple[str, ...]  # endpoints without a rule: refused to everyone
    roles: tuple[str, ...] = ROLES  # the application's roles, lowest first (the matrix's columns)


def build_policy(app: Flask, roles: tuple[str, ...] = ROLES) -> Policy:
    rules: dict[str, Rule] = {}
    undeclared: list[str] = []
    for url_rule in app.url_map.iter_rules():
        endpoint = url_rule.endpoint
        if endpoint in rules or endpoint in undeclared:
            continue
        rule = rule_of(app.view_functions[endpoint])
        if rule is None:
            undeclared.append(endpoint)
        else:
            rules[endpoint] = rule
    return Policy(rules, tuple(undeclared), roles)


def policy(app: Flask) -> Policy:
    found = app.extensions.get(_EXTENSION)
    if not isinstance(found, Policy):
        raise RuntimeError("access.install(app) was not called")
    return found


def rule_for(app: Flask, endpoint: str | None) -> Rule | None:
    return policy(app).rules.get(endpoint or "")


def role_matrix(app: Flask) -> dict[str, str]:
    """Endpoint -> its minimum (``public``, a role, ``api client``), every declared endpoint."""
    return {endpoint: rule.minimum for endpoint, rule in policy(app).rules.items()}


def api_scopes(app: Flask) -> dict[str, str]:
    """Endpoint -> the scope an API client needs, every endpoint of a scope."""
    return {endpoint: rule.name for endpoint, rule in policy(app).rules.items() if rule.kind == "scope"}


# ---------------------------------------------------------------------------------------------- enforcement


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _check_csrf() -> None:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), given.encode()):
        abort(400, "The form's security token is missing or out of date: reload the page and try again.")


def _ledger_user(username: str) -> User | None:
    return get_user(get_db(), username)


def _enforce() -> Response | None:
    g.user = None
    name = session.get("user")
    if isinstance(name, str):
        load: Callable[[str], User | None] = current_app.extensions.get(_USERS, _ledger_user)
        user = load(name)
        if user is None or user.disabled or session.get("epoch") != user.session_epoch:
            session.clear()  # disabled, or signed out since (logout, password reset, role change: a new epoch)
        else:
            g.user = user
    if request.routing_exception is not None:
        return None  # 404 / 405: Flask raises it next
    rule = rule_for(current_app, request.endpoint)
    if rule is None or rule.kind == "scope":
        if request.blueprint == API_BLUEPRINT:
            return None  # the API checks the bearer token and its scope, and refuses an undeclared endpoint (JSON)
        abort(403)  # undeclared (or a scope outside the API, which has no token check): fail closed
    if rule.kind == "role":
        if g.user is None:
            back = request.full_path if request.query_string else request.path  # full_path ends in "?" without one
            return redirect(url_for("auth.login", next=back if request.method == "GET" else None))
        if not rule.admits(g.user.role):
            abort(403)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        _check_csrf()
    return None


def install(
    app: Flask, *, roles: tuple[str, ...] = ROLES, load_user: Callable[[str], User | None] | None = None
) -> None:
    """Read every endpoint's rule (after the blueprints are registered) and enforce them. ``roles``: the
    application's, lowest first; ``load_user(username)``: the signed-in user (None: gone), by default from the
    ledger's ``users``."""
    if load_user is not None:
        app.extensions[_USERS] = load_user
    found = build_policy(app, roles)
    if found.undeclared:
        log.error("access: endpoints without a rule, refused to everyone: %s", ", ".join(found.undeclared))
    app.extensions[_EXTENSION] = found
    app.before_request(_enforce)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["allowed"] = allowed


def allowed(endpoint: str) -> bool:
    """For templates: may the current user reach ``endpoint``?"""
    rule = rule_for(current_app, endpoint)
    user = g.get("user")
    return rule is not None and rule.admits(None if user is None else user.role)


# ------------------------------------------------------------------------------------------------ the table


def matrix_markdown(app: Flask) -> str:
    """The policy as the Markdown table in hub/web/README.md: the pages by minimum role, then the API."""
    routes: dict[str, list[str]] = {}
    for url_rule in app.url_map.iter_rules():
        methods = sorted((url_rule.methods or set()) - {"HEAD", "OPTIONS"})
        routes.setdefault(url_rule.endpoint, []).append(f"{' '.join(methods)} `{url_rule.rule}`")
    found = policy(app)
    rules, roles = found.rules, found.roles
    groups = {PUBLIC: 0, **{role: i + 1 for i, role in enumerate(roles)}, API: len(roles) + 1}
    order = sorted(rules, key=lambda e: (e.split(".")[0] == API_BLUEPRINT, groups[rules[e].minimum]))
    lines = ["| route | endpoint | minimum role | " + " | ".join(("anonymous", *roles)) + " |"]
    lines.append("| --- | --- | --- |" + " --- |" * (len(roles) + 1))
    for endpoint in order:
        rule = rules[endpoint]
        if rule.kind == "scope":
            needed, cells = f"api client: `{rule.name}`", ["token"] * (len(roles) + 1)
        else:
            needed = rule.minimum
            cells = ["yes" if rule.kind == "public" else "→ login"]
            cells += ["yes" if rule.admits(role) else "403" for role in roles]
        route = ", ".join(routes.get(endpoint, ["-"]))
        lines.append(f"| {route} | `{endpoint}` | {needed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
