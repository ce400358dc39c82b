"""The HTTP API for POS / WMS clients: bearer tokens per client, idempotent posts, OpenAPI description.

* **Auth** (``auth.py``). ``Authorization: Bearer ssk_...`` of an API client (``accounts/clients.py``;
  ``smartshelf api-clients``). Missing, unknown or disabled: 401 with ``WWW-Authenticate: Bearer``. Every endpoint
  declares the scope it needs where it is defined here (``@scope``, hub/web/access.py); a client without it gets
  403 naming the scope. An endpoint of this blueprint without a rule is refused to every client (fail closed).
* **Posts** (``/api/v1/sales``, ``receipts``, ``returns``, ``picks``, ``counts``) take one item or
  ``{"items": [...]}`` (at most ``MAX_ITEMS``). Each item's ``id`` is its idempotency key: it becomes the ledger
  reference ``<kind>:<id>``. All items of one request are applied in **one** transaction of the hub's ledger writer,
  all or nothing. Replaying a request changes nothing (200, every item ``duplicate``); the same id with different
  content is refused with 409 naming the item. Any bad item refuses the whole request (400 / 409 / 413 / 415 / 422,
  ``{"errors": [{"field": "items[3].quantity", "message": ...}]}``) and nothing is written. The actor of every
  write is ``api:<client name>``.
* **Imports**: a CSV file of a post kind (``/api/v1/imports/<kind>``, the kind's scope) or the store's EPC -> SKU
  table (``/api/v1/imports/epcs``, scope ``epcs``), all or nothing in one transaction of the hub's writer.
* **Reads**: ``/api/v1/stock``, ``/api/v1/lanes``, ``/api/v1/alerts``, ``/api/v1/tags`` (the RFID tags on each lane
  now), ``/api/v1/tags/trail?epc=`` (one tag's serialised trail).
* **Errors** under ``/api/`` are JSON, including 404 / 405 / 413 raised before a view runs (``errors.py``).

The fields (``fields.py``: ``FIELDS``, ``QUERIES``) are the one definition of what a request may contain: the
validator (``validation.py``) and the OpenAPI description (``openapi.py``, served at ``/api/openapi.json``) are
both made from them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from hub.ledger.epc import InvalidCode, normalise_epc
from hub.ledger.imports import ImportReport, ImportTooLarge
from hub.ledger.models import LedgerClosed, now_ms
from hub.ledger.reader import BOOK_STOCK, LANES, OBSERVED_STOCK, SKUS
from hub.ledger.service import LedgerService
from hub.web.access import api_scopes, public, scope
from hub.web.api.auth import authenticate, current_client
from hub.web.api.errors import FieldError, Rejected, error_response, install_json_errors, unavailable
from hub.web.api.fields import (
    EPCS_IMPORT,
    FIELDS,
    IMPORT_TIMEOUT_S,
    MAX_IMPORT_ERRORS,
    MAX_IMPORT_ROWS,
    PREFIX,
    SUMMARIES,
    PostKind,
)
from hub.web.api.openapi import OPENAPI_PATH, build_spec
from hub.web.api.posting import post_items
from hub.web.api.queries import alerts_page
from hub.web.api.validation import read_items, read_query
from hub.web.db import fetch_all, get_db, get_writer, read_transaction
from hub.web.live.lane_feed import feed
from hub.web.pages.tags_queries import all_lane_tags, trail

bp = Blueprint("api", __name__)
bp.before_request(authenticate)
bp.record_once(install_json_errors)


def _make_post_view(kind: PostKind) -> Callable[[], ResponseReturnValue]:
    def view() -> ResponseReturnValue:
        client = current_client()
        items, refused = read_items(kind)
        if refused is not None:
            return refused
        actor = f"api:{client.name}"
        try:
            results = get_writer().call(lambda ledger: ledger.transact(lambda tx: post_items(tx, kind, items, actor)))
        except Rejected as rejected:
            return error_response(rejected.status, rejected.errors)
        except (LedgerClosed, TimeoutError) as exc:
            return unavailable(exc, "request")
        created = any(r["status"] == "created" for r in results)
        return jsonify(items=results), 201 if created else 200

    view.__name__ = f"post_{kind}"
    view.__doc__ = SUMMARIES[kind]
    return scope(kind)(view)


for _kind in FIELDS:
    bp.add_url_rule(f"{PREFIX}/{_kind}", endpoint=f"post_{_kind}", view_func=_make_post_view(_kind), methods=["POST"])


# -------------------------------------------------------------------------------------------------- CSV imports


def _make_import_view(kind: PostKind | Literal["epcs"]) -> Callable[[], ResponseReturnValue]:
    def view() -> ResponseReturnValue:
        """A CSV file of one kind (the formats of ``smartshelf ledger import``), imported all or nothing in one
        transaction of the hub's writer; each row's id is its idempotency key, so re-sending the file is safe."""
        client = current_client()
        if request.mimetype != "text/csv":
            given = request.mimetype or "none"
            return error_response(415, [FieldError("Content-Type", f"send text/csv, not {given}")])
        query, refused = read_query(f"api.import_{kind}")  # ?name= (fields.QUERIES), at most once
        if refused is not None:
            return refused
        name = str(query["name"])
        data = request.get_data(cache=False)  # 413 (JSON) when larger than MAX_CSV_BYTES
        if not data:  # the description's minLength 1: a request without its file, not a file with a bad line
            return error_response(400, [FieldError("body", "empty: send the CSV file (a header row, then the rows)")])
        actor = f"api:{client.name}"

        def run(ledger: LedgerService) -> Awaitable[ImportReport]:
            if kind == "epcs":
                return ledger.import_epcs(data, actor=actor, name=name, max_rows=MAX_IMPORT_ROWS)
            return ledger.import_csv(kind, data, actor=actor, name=name, max_rows=MAX_IMPORT_ROWS)

        try:
            report = get_writer().call(run, timeout_s=IMPORT_TIMEOUT_S)
        except ImportTooLarge as exc:
            return error_response(413, [FieldError("file", str(exc))])
        except (LedgerClosed, TimeoutError) as exc:
            return unavailable(exc, "file")
        if not report.ok:
            errors = [FieldError(f"line {e.line}", e.message) for e in report.errors[:MAX_IMPORT_ERRORS]]
            more = len(report.errors) - MAX_IMPORT_ERRORS
            if more > 0:
                errors.append(
                    FieldError("file", f"and {more:,} more problems (the first {MAX_IMPORT_ERRORS} are listed)")
                )
            return error_response(422, errors)
        body = {"kind": kind, "name": name, "rows": report.rows, "applied": report.applied}
        body["duplicates"] = report.duplicates
        return jsonify(body), 201 if report.applied else 200

    view.__name__ = f"import_{kind}"
    return scope(kind)(view)  # a file of a kind needs the kind's scope


for _import in (*FIELDS, EPCS_IMPORT):
    bp.add_url_rule(
        f"{PREFIX}/imports/{_import}",
        endpoint=f"import_{_import}",
        view_func=_make_import_view(_import),
        methods=["POST"],
    )


@bp.get(f"{PREFIX}/stock")
@scope("read")
def stock() -> ResponseReturnValue:
    """Book stock per SKU and location, observed stock per lane."""
    query, refused = read_query("api.stock")
    if refused is not None:
        return refused
    conn = get_db()
    only = [("sku = ?", query["sku"])]  # None: every SKU
    skus = [(s.sku, s.name) for s in fetch_all(conn, SKUS, where=only)]
    if not skus and query["sku"] is not None:
        return error_response(404, [FieldError("sku", f"unknown SKU {query['sku']!r}")])
    book: dict[str, list[dict[str, Any]]] = {}
    for b in fetch_all(conn, BOOK_STOCK, where=only):
        book.setdefault(b.sku, []).append({"location": b.location, "qty": b.qty})
    observed: dict[str, list[dict[str, Any]]] = {}
    for o in fetch_all(conn, OBSERVED_STOCK, where=only):
        observed.setdefault(o.sku, []).append({"lane_id": o.lane_id, "qty": o.qty})
    items = [
        {
            "sku": sku,
            "name": name,
            "book_total": sum(b["qty"] for b in book.get(sku, [])),
            "book": book.get(sku, []),
            "observed_total": sum(o["qty"] for o in observed.get(sku, [])),
            "observed": observed.get(sku, []),
        }
        for sku, name in skus
    ]
    return jsonify(items=items)


@bp.get(f"{PREFIX}/lanes")
@scope("read")
def lanes() -> ResponseReturnValue:
    """Every lane: node, index, SKU, observed count against capacity, state, unresolved alerts."""
    _, refused = read_query("api.lanes")
    if refused is not None:
        return refused
    # the live feed's rows: up to date with every commit so far, computed once for every reader (a closed feed: 503)
    return jsonify(items=feed(current_app).snapshot()["lanes"])


@bp.get(f"{PREFIX}/alerts")
@scope("read")
def alerts() -> ResponseReturnValue:
    """Alerts by id, oldest first, a page at a time (``after`` = the previous page's ``next_after``)."""
    query, refused = read_query("api.alerts")
    if refused is not None:
        return refused
    limit = int(query["limit"])
    rows = alerts_page(get_db(), after=query["after"] or 0, status=query["status"], limit=limit)
    page = rows[:limit]
    items = [
        {
            "id": a.id,
            "kind": a.kind,
            "cause_key": a.cause_key,
            "status": str(a.status),
            "opened_ms": a.opened_ms,
            "acknowledged_ms": a.acknowledged_ms,
            "acknowledged_by": a.acknowledged_by,
            "resolved_ms": a.resolved_ms,
            "resolved_by": a.resolved_by,
            "resolution": a.resolution,
            "resolution_movement_id": a.resolution_movement_id,
            "evidence": a.evidence,
        }
        for a in page
    ]
    return jsonify(items=items, next_after=page[-1].id if len(rows) > limit else None)


@bp.get(f"{PREFIX}/tags")
@scope("read")
def tags() -> ResponseReturnValue:
    """The RFID tags on each lane now (every lane with one, or the lane asked for), with their SKU and times."""
    query, refused = read_query("api.tags")
    if refused is not None:
        return refused
    conn = get_db()
    with read_transaction(conn):
        lanes = {lane.lane_id: lane for lane in fetch_all(conn, LANES, where=[("lane_id = ?", query["lane"])])}
        if query["lane"] is not None and not lanes:
            return error_response(404, [FieldError("lane", f"unknown lane {query['lane']!r}")])
        found = all_lane_tags(conn, query["lane"])
    by_lane: dict[str, list[dict[str, Any]]] = {lane: [] for lane in (lanes if query["lane"] else ())}
    for lane_id, t in found:
        lane_sku = lanes[lane_id].sku if lane_id in lanes else None
        by_lane.setdefault(lane_id, []).append(
            {
                "epc": t.epc,
                "sku": t.sku,
                "name": t.name,
                "first_seen_ms": t.first_seen_ms,
                "last_read_ms": t.last_read_ms,
                "rssi": t.rssi,
                "unconfirmed_ms": t.unconfirmed_ms,
                "other_sku": t.other_sku(lane_sku),
            }
        )
    items = [
        {
            "lane_id": lane_id,
            "node_id": lanes[lane_id].node_id,
            "lane_index": lanes[lane_id].lane_index,
            "sku": lanes[lane_id].sku,
            "tags": found_tags,
        }
        for lane_id, found_tags in sorted(by_lane.items())
        if lane_id in lanes
    ]
    return jsonify(items=items)


@bp.get(f"{PREFIX}/tags/trail")
@scope("read")
def tag_trail() -> ResponseReturnValue:
    """One tag's serialised trail: what its EPC is, the lanes it sat on and when, its events, the alerts citing it."""
    query, refused = read_query("api.tag_trail")
    if refused is not None:
        return refused
    try:
        epc = normalise_epc(query["epc"])
    except InvalidCode as exc:
        return error_response(400, [FieldError("epc", str(exc))])
    conn = get_db()
    with read_transaction(conn):
        t = trail(conn, epc, now_ms())
    if not t.known:
        return error_response(404, [FieldError("epc", f"no tag {epc} in the ledger")])
    return jsonify(
        epc=t.epc,
        scheme=t.code.scheme if t.code else None,
        gtin=t.code.gtin if t.code else None,
        serial=t.code.serial if t.code else None,
        sku=t.sku,
        sku_from={"the store's EPC table": "epc_table", "its GTIN": "gtin"}.get(t.sku_from),
        stays=[
            {"lane_id": s.lane_id, "arrived_ms": s.arrived_ms, "left_ms": s.left_ms, "how": s.how,
             "unconfirmed": s.unconfirmed}
            for s in t.stays
        ],
        events=[
            {"id": e.id, "ts_ms": e.ts_ms, "ts_known": e.ts_known, "lane_id": e.lane_id, "kind": e.kind,
             "effect": e.effect, "node_id": e.node_id, "event_seq": e.event_seq, "rssi": e.rssi,
             "verdict": e.verdict, "pick_id": e.pick_id, "alert_id": e.alert_id, "note": e.note}
            for e in t.events
        ],
        events_total=t.events_total,
        alerts=[
            {"id": i, "kind": kind, "cause_key": cause, "status": status, "opened_ms": opened}
            for i, kind, cause, status, opened in t.alerts
        ],
    )  # fmt: skip


@bp.get(OPENAPI_PATH)
@public
def openapi() -> ResponseReturnValue:
    """This API's OpenAPI 3.1 description (public)."""
    return jsonify(build_spec(api_scopes(current_app)))
