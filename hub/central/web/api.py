"""The central API for an ERP: read-only, ``/api/v1/...``, bearer tokens with scopes, pages with a cursor.

* **Auth**: ``Authorization: Bearer ssc_...`` of a central API client (``smartshelf central token add``; only its
  SHA-256 is kept). Missing, unknown or disabled: 401 with ``WWW-Authenticate: Bearer``; a client without the
  endpoint's scope (declared where the view is defined, ``@scope``, hub/web/access.py): 403 naming it. An endpoint
  of this blueprint without a rule is refused to every client (fail closed).
* **Stores**: a client reads every store, or only those of its regions (``accounts.ApiClient.scope``), in every
  query (``queries.Filters``).
* **Pages**: ``limit`` rows (default 100, at most 500) and ``next_cursor`` (null on the last page); the next page is
  ``?cursor=<next_cursor>`` with the same filters. A cursor is the last row's key: rows written meanwhile never
  shift a page.
* **Errors** are JSON everywhere under ``/api/`` (``hub.web.api.errors``, shared with the hub's API): 400 naming the
  parameter, 401, 403, 404, 405, 503 (the central database down).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers.response import Response

from hub.central.web import queries as q
from hub.central.web.accounts import ApiClient, client_for_token
from hub.central.web.api_spec import OPENAPI_PATH, OPERATIONS, PREFIX, QUERIES, SHRINK_DEFAULT_DAYS, build_spec
from hub.central.web.pg import get_database
from hub.central.web.schema import SCOPES
from hub.ledger.models import now_ms
from hub.web.access import public, rule_for, scope
from hub.web.api.errors import FieldError, error_response, install_json_errors
from hub.web.api.validation import read_query
from hub.web.inputs import DAY_MS, BadInput

bp = Blueprint("api", __name__)
bp.record_once(install_json_errors)
MAX_QUERY_BYTES = 4096  # a URL's query string: the longest valid one is well below


def _unauthorized(message: str, *, invalid: bool) -> Response:
    challenge = 'Bearer realm="smartshelf-central"' + (', error="invalid_token"' if invalid else "")
    return error_response(401, [FieldError("Authorization", message)], {"WWW-Authenticate": challenge})


@bp.before_request
def authenticate() -> ResponseReturnValue | None:
    """Before every view of the API: admit the request (``g.api_client``) or answer it."""
    g.api_client = None
    endpoint = request.endpoint or ""
    rule = rule_for(current_app, endpoint)
    if rule is not None and rule.kind == "public":
        return None
    if rule is None or rule.kind != "scope":
        return error_response(403, [FieldError("endpoint", f"{endpoint} is not open to API clients")])
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if not header:
        return _unauthorized("send Authorization: Bearer <token of a central API client>", invalid=False)
    if kind.lower() != "bearer" or not token.strip():
        return _unauthorized("the Authorization header must be Bearer <token>", invalid=True)
    client = get_database().run(lambda conn: client_for_token(conn, token.strip()))
    if client is None:
        return _unauthorized("unknown token", invalid=True)
    if client.disabled:
        return _unauthorized(f"API client {client.name} is disabled", invalid=True)
    if rule.name not in client.scopes:
        has = ", ".join(sorted(client.scopes)) or "none"
        return error_response(
            403,
            [FieldError("scope", f"this needs the scope {rule.name!r}; client {client.name} has {has}")],
            {"WWW-Authenticate": f'Bearer realm="smartshelf-central", error="insufficient_scope", scope="{rule.name}"'},
        )
    g.api_client = client
    return None


def _client() -> ApiClient:
    client = g.get("api_client")
    if not isinstance(client, ApiClient):
        raise RuntimeError("no authenticated API client")
    return client


def _answer(page: q.Page, kind: str, **extra: Any) -> Response:
    cursor = None if page.next_key is None else q.encode_cursor(kind, page.next_key)
    return jsonify(**extra, items=[r.as_json() for r in page.rows], next_cursor=cursor)


def _read(name: str, kind: str, types: tuple[type, ...]) -> tuple[dict[str, Any], q.Filters, Any] | Response:
    """The query of ``api.<name>`` (checked), the client's filters, the key of the cursor (one of ``kind``); or
    the 400."""
    if len(request.query_string) > MAX_QUERY_BYTES:
        return error_response(400, [FieldError("query", f"longer than {MAX_QUERY_BYTES} bytes")])
    values, refused = read_query(f"api.{name}", QUERIES)
    if refused is not None:
        return refused
    try:
        after = q.decode_cursor(kind, values["cursor"], types) if values["cursor"] is not None else None
    except BadInput as exc:
        return error_response(400, [FieldError(exc.field, exc.message)])
    return values, q.Filters(_client().scope, values["store"], values["hub"]), after


Run = Callable[[dict[str, Any], q.Filters, Any], Response]


def _view(name: str, run: Run, types: tuple[type, ...]) -> Any:
    def view() -> ResponseReturnValue:
        got = _read(name, name, types)
        return got if isinstance(got, Response) else run(*got)

    view.__name__ = name
    view.__doc__ = OPERATIONS[name][0]
    return scope(OPERATIONS[name][2], SCOPES)(view)


def _stores(v: dict[str, Any], f: q.Filters, after: Any) -> Response:
    offline_after = int(current_app.config.get("OFFLINE_AFTER_MS", q.OFFLINE_AFTER_MS))
    page = get_database().read(
        lambda c: q.stores(c, f, after[0] if after else None, v["limit"], now_ms(), offline_after)
    )
    return _answer(page, "stores")


def _stock(v: dict[str, Any], f: q.Filters, after: Any) -> Response:
    return _answer(get_database().read(lambda c: q.stock(c, f, v["sku"], after, v["limit"])), "stock")


def _alerts(v: dict[str, Any], f: q.Filters, after: Any) -> Response:
    page = get_database().read(lambda c: q.alerts(c, f, v["status"], v["kind"], after, v["limit"]))
    return _answer(page, "alerts")


def _reorders(v: dict[str, Any], f: q.Filters, after: Any) -> Response:
    return _answer(get_database().read(lambda c: q.reorders(c, f, v["sku"], after, v["limit"])), "reorders")


def shrink() -> ResponseReturnValue:
    """Units sold and written off per store and SKU (``group=sku``) or per store (``group=store``); the cursor of
    one grouping is no cursor of the other."""
    by_store = request.args.get("group") == "store"
    kind, types = ("shrink-store", (str,)) if by_store else ("shrink-sku", (str, str))
    got = _read("shrink", kind, types)
    if isinstance(got, Response):
        return got
    v, f, after = got
    end = v["end_ms"] if v["end_ms"] is not None else now_ms()
    start = v["start_ms"] if v["start_ms"] is not None else max(0, end - SHRINK_DEFAULT_DAYS * DAY_MS)
    if start > end:
        return error_response(400, [FieldError("start_ms", f"must not be after end_ms ({end})")])
    if v["group"] == "store":
        page = get_database().read(lambda c: q.shrink_by_store(c, f, start, end, v["sku"], after, v["limit"]))
    else:
        page = get_database().read(lambda c: q.shrink_by_sku(c, f, start, end, v["sku"], after, v["limit"]))
    return _answer(page, kind, start_ms=start, end_ms=end, group=v["group"])


bp.add_url_rule(f"{PREFIX}/stores", endpoint="stores", view_func=_view("stores", _stores, (str,)))
bp.add_url_rule(f"{PREFIX}/stock", endpoint="stock", view_func=_view("stock", _stock, (str, str)))
bp.add_url_rule(f"{PREFIX}/alerts", endpoint="alerts", view_func=_view("alerts", _alerts, q.ALERT_CURSOR))
bp.add_url_rule(f"{PREFIX}/shrink", endpoint="shrink", view_func=scope("shrink", SCOPES)(shrink))
bp.add_url_rule(f"{PREFIX}/reorders", endpoint="reorders", view_func=_view("reorders", _reorders, (str, str)))


@bp.get(OPENAPI_PATH)
@public
def openapi() -> Response:
    return jsonify(build_spec())
