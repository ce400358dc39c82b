"""The central pages: every store's last contact (``/``), stock per SKU per store (``/stock``), open alerts across
stores (``/alerts``), shrink by store and SKU (``/shrink``), reorders across stores (``/reorders``).

Each reads through ``queries`` with the signed-in user's ``Scope`` (a region manager: their regions' stores only),
in one read-only transaction, a page of ``PAGE_ROWS`` rows at a time (``?cursor=`` from the "Next page" link, as the
API's). The filters (``store``, ``hub``, ``sku``, ``kind``, ``status``) are checked by the API's own field
definitions (``api_spec.QUERIES``): a bad one is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flask import Blueprint, abort, current_app, g, render_template, request, url_for

from hub.central.web import queries as q
from hub.central.web.accounts import CentralUser
from hub.central.web.api_spec import QUERIES
from hub.central.web.pg import get_database
from hub.central.web.schema import ROLES
from hub.ledger.models import now_ms
from hub.web.access import requires
from hub.web.api.validation import check_value
from hub.web.inputs import BadInput, single
from hub.web.pages import metrics
from hub.web.pages.reports import parse_days, pct_text

bp = Blueprint("pages", __name__)
PAGE_ROWS = 100


def _user() -> CentralUser:
    user = g.get("user")
    if not isinstance(user, CentralUser):
        abort(403)
    return user


def _text(endpoint: str, name: str) -> str | None:
    """A text filter, checked like the API's parameter of that name (400 naming it)."""
    field = next(f for f in QUERIES[endpoint] if f.name == name)
    try:
        raw = single(request.args, name)
    except BadInput as exc:
        abort(400, str(exc))
    if raw is None or raw.strip() == "":
        return field.default if isinstance(field.default, str) else None
    value, problem = check_value(field, raw.strip())
    if problem is not None:
        abort(400, f"{name}: {problem}")
    return str(value)


def _filters(endpoint: str) -> q.Filters:
    return q.Filters(_user().scope, _text(endpoint, "store"), _text(endpoint, "hub"))


def _after(kind: str, types: tuple[type, ...]) -> tuple[Any, ...] | None:
    cursor = _text("api.stock", "cursor")
    if cursor is None:
        return None
    try:
        return q.decode_cursor(kind, cursor, types)
    except BadInput as exc:
        abort(400, str(exc))


def _next(page: q.Page, kind: str) -> str | None:
    return None if page.next_key is None else q.encode_cursor(kind, page.next_key)


def _render(template: str, **context: Any) -> str:
    """The page with the filters' stores (those the user may see) and the next page's URL (the same filters)."""
    stores = get_database().read(lambda conn: q.visible_stores(conn, _user().scope))
    cursor = context.pop("next_cursor", None)
    same: dict[str, Any] = {k: v for k, v in request.args.items() if k != "cursor" and v}
    next_url = url_for(str(request.endpoint), **same, cursor=cursor) if cursor else None
    return render_template(
        template, stores=stores, args=request.args, user_scope=_user().scope, next_url=next_url, **context
    )


@bp.get("/")
@requires("viewer", ROLES)
def overview() -> str:
    f = _filters("api.stores")
    after = _after("stores", (str,))
    offline_after = int(current_app.config.get("OFFLINE_AFTER_MS", q.OFFLINE_AFTER_MS))
    now = now_ms()
    page = get_database().read(lambda c: q.stores(c, f, after[0] if after else None, PAGE_ROWS, now, offline_after))
    return _render(
        "stores.html", page=page, next_cursor=_next(page, "stores"), now=now, offline_after_min=offline_after // 60000
    )


BySku = Callable[[Any, q.Filters, str | None, tuple[str, str] | None, int], Awaitable[q.Page]]


def _by_sku(kind: str, query: BySku) -> str:
    """A list by SKU then store (``kind``: stock or reorders: its template, the API endpoint whose filters it takes,
    its cursors): the store, hub and SKU filters, a page from the cursor."""
    endpoint = f"api.{kind}"
    f = _filters(endpoint)
    sku = _text(endpoint, "sku")
    after = _after(kind, (str, str))
    page = get_database().read(lambda c: query(c, f, sku, after, PAGE_ROWS))
    return _render(f"{kind}.html", page=page, next_cursor=_next(page, kind))


@bp.get("/stock")
@requires("viewer", ROLES)
def stock() -> str:
    return _by_sku("stock", q.stock)


@bp.get("/alerts")
@requires("viewer", ROLES)
def alerts() -> str:
    f = _filters("api.alerts")
    status = _text("api.alerts", "status") or "unresolved"
    kind = _text("api.alerts", "kind")
    after = _after("alerts", q.ALERT_CURSOR)
    page = get_database().read(lambda c: q.alerts(c, f, status, kind, after, PAGE_ROWS))
    return _render("alerts.html", page=page, next_cursor=_next(page, "alerts"), statuses=q.ALERT_STATUSES)


@bp.get("/reorders")
@requires("viewer", ROLES)
def reorders() -> str:
    return _by_sku("reorders", q.reorders)


@bp.get("/shrink")
@requires("region_manager", ROLES)
def shrink() -> str:
    """Per store (its totals) and per store and SKU, over the last 7, 30 or 90 days (the hub's report periods)."""
    days = parse_days(request.args)
    f = _filters("api.shrink")
    sku = _text("api.shrink", "sku")
    after = _after("shrink-sku", (str, str))
    p = metrics.period(days, now_ms())

    async def read(conn: Any) -> tuple[q.Page, q.Page]:
        totals = await q.shrink_by_store(conn, f, p.start_ms, p.end_ms, sku, None, q.MAX_LIMIT)
        return totals, await q.shrink_by_sku(conn, f, p.start_ms, p.end_ms, sku, after, PAGE_ROWS)

    totals, page = get_database().read(read)
    sold = sum(r.sold for r in totals.rows)
    lost = sum(r.shrink for r in totals.rows)
    return _render(
        "shrink.html",
        days=days,
        choices=metrics.PERIOD_DAYS,
        period=p,
        totals=totals,
        page=page,
        next_cursor=_next(page, "shrink-sku"),
        chain=q.ShrinkRow("", None, None, None, None, None, sold, lost),
        pct=pct_text,
        industry=metrics.INDUSTRY_SHRINK_PCT,
    )
