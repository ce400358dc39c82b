"""Bearer tokens of API clients and the scope each endpoint declares (``@scope`` in ``views.py``, hub/web/access.py).

Missing, unknown or disabled token: 401 with ``WWW-Authenticate: Bearer``; a client without the endpoint's scope:
403 naming the scope; an endpoint of the API without a rule (or with a role, which takes a session): 403 to every
client (fail closed). Runs before every view of the API blueprint (``views.py`` registers it).
"""

from __future__ import annotations

from flask import current_app, g, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers.response import Response

from hub.web.access import rule_for
from hub.web.accounts.clients import ApiClient, client_for_token
from hub.web.api.errors import FieldError, error_response
from hub.web.api.fields import MAX_BODY_BYTES, MAX_CSV_BYTES
from hub.web.db import get_db


def current_client() -> ApiClient:
    client = g.get("api_client")
    if not isinstance(client, ApiClient):  # the before_request hook did not admit this request
        raise RuntimeError("no authenticated API client")
    return client


def _unauthorized(message: str, *, invalid: bool) -> Response:
    challenge = 'Bearer realm="smartshelf"' + (', error="invalid_token"' if invalid else "")
    return error_response(401, [FieldError("Authorization", message)], {"WWW-Authenticate": challenge})


def authenticate() -> ResponseReturnValue | None:
    """Before every view of the API: admit the request (``g.api_client``) or answer it."""
    g.api_client = None
    endpoint = request.endpoint or ""
    request.max_content_length = MAX_CSV_BYTES if endpoint.startswith("api.import_") else MAX_BODY_BYTES
    rule = rule_for(current_app, endpoint)
    if rule is not None and rule.kind == "public":
        return None
    if rule is None or rule.kind != "scope":
        return error_response(403, [FieldError("endpoint", f"{endpoint} is not open to API clients")])
    scope = rule.name
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        return _unauthorized("send Authorization: Bearer <token of an API client>", invalid=False)
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("the Authorization header must be Bearer <token>", invalid=True)
    client = client_for_token(get_db(), token.strip())
    if client is None:
        return _unauthorized("unknown token", invalid=True)
    if client.disabled:
        return _unauthorized(f"API client {client.name} is disabled", invalid=True)
    if scope not in client.scopes:
        return error_response(
            403,
            [FieldError("scope", f"this needs the scope {scope!r}; client {client.name} has {_scopes(client)}")],
            {"WWW-Authenticate": f'Bearer realm="smartshelf", error="insufficient_scope", scope="{scope}"'},
        )
    g.api_client = client
    return None


def _scopes(client: ApiClient) -> str:
    return ", ".join(sorted(client.scopes)) or "none"
