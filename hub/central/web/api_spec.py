"""The central API's query parameters (``QUERIES``: the one definition the validator, ``hub.web.api.validation.
read_query``, and the OpenAPI document are both made from, as on the hub) and its OpenAPI 3.1 document, served at
``GET /api/v1/openapi.json``. ``OPERATIONS`` lists every route of the API (a test keeps it equal to the URL map);
the response schemas describe what the views return (the tests check real answers against them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.central.web.queries import ALERT_STATUSES, DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT
from hub.central.web.schema import SCOPES
from hub.ledger.numbers import MAX_TS_MS
from hub.web.api.fields import Field
from hub.web.api.openapi import field_schema, ref

PREFIX = "/api/v1"
OPENAPI_PATH = f"{PREFIX}/openapi.json"
SHRINK_DEFAULT_DAYS = 30

_STORE = Field(
    "store",
    "string",
    "Only this store (its id).",
    min_length=1,
    max_length=64,
    pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    hint="a store id (letters, digits, '.', '_' and '-')",
)
_HUB = Field(
    "hub",
    "string",
    "Only this hub (its id).",
    min_length=1,
    max_length=64,
    pattern=r"^[A-Za-z0-9_-]{1,64}$",
    hint="a hub id (letters, digits, '_' and '-')",
)
_SKU = Field(
    "sku", "string", "Only this SKU.", min_length=1, max_length=32, pattern=r"^[ -~]+$", hint="printable ASCII"
)
_LIMIT = Field("limit", "integer", "Page size.", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT)
_CURSOR = Field(
    "cursor",
    "string",
    "Where the page starts: next_cursor of the previous page, as given (a cursor of another list is refused).",
    min_length=1,
    max_length=MAX_CURSOR,
    pattern=r"^[A-Za-z0-9_-]+$",
    hint="next_cursor of the previous page",
)
_COMMON = (_STORE, _HUB, _LIMIT, _CURSOR)

QUERIES: dict[str, tuple[Field, ...]] = {
    "api.stores": _COMMON,
    "api.stock": (*_COMMON, _SKU),
    "api.alerts": (
        *_COMMON,
        Field(
            "status",
            "string",
            "unresolved (open or acknowledged), open or acknowledged.",
            enum=ALERT_STATUSES,
            default="unresolved",
        ),
        Field(
            "kind",
            "string",
            "Only alerts of this kind (shrinkage, reorder, ...).",
            min_length=1,
            max_length=32,
            pattern=r"^[a-z_]+$",
            hint="a kind like shrinkage",
        ),
    ),
    "api.shrink": (
        *_COMMON,
        _SKU,
        Field(
            "group",
            "string",
            "sku: a row per store and SKU; store: a row per store (its totals).",
            enum=("sku", "store"),
            default="sku",
        ),
        Field(
            "start_ms",
            "integer",
            f"Period start, ms since the epoch. Default: end_ms - {SHRINK_DEFAULT_DAYS} days.",
            minimum=0,
            maximum=MAX_TS_MS,
        ),
        Field(
            "end_ms",
            "integer",
            "Period end (included), ms since the epoch. Default: now.",
            minimum=0,
            maximum=MAX_TS_MS,
        ),
    ),
    "api.reorders": (*_COMMON, _SKU),
    "api.openapi": (),
}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _null(type_: str) -> dict[str, Any]:
    return {"type": [type_, "null"]}


_INT = {"type": "integer"}
_STR = {"type": "string"}
_WHERE = {"hub_id": _STR, "store_id": _null("string"), "store_name": _null("string"), "region": _null("string")}
_SHRINK = {**_WHERE, "sold": _INT, "shrink": _INT, "rate_pct": {"type": ["number", "null"]}}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _object({"field": _STR, "message": _STR, "index": _INT}, required=["field", "message"]),
    "Errors": _object({"errors": {"type": "array", "minItems": 1, "items": ref("Error")}}),
    "Store": _object(
        {
            **_WHERE,
            "contact": {"enum": ["online", "offline", "silent", "unknown"], "description": "silent: no message lately"},
            "status": {"enum": ["online", "offline", "unknown"], "description": "the hub's own (retained) status"},
            "first_contact_ms": _INT,
            "last_contact_ms": _INT,
            "snapshot_sent_ms": _null("integer"),
            "snapshot_received_ms": _null("integer"),
            "movements_stored": _INT,
            "movements_complete_to": {"type": "integer", "description": "every movement up to this id is here"},
            "movements_max_id": _INT,
            "movements_missing": {"type": "integer", "description": "ids below movements_max_id never received"},
            "gaps": _INT,
            "tail_missing": {"type": "integer", "description": "movements the hub's last snapshot had, not here yet"},
            "movements_received_ms": _null("integer"),
            "open_alerts": {"type": "integer", "description": "unresolved alerts of the hub's current incarnation"},
            "lost_alerts": {
                "type": "integer",
                "description": "unresolved alerts of an earlier incarnation of the hub's ledger, lost at the store "
                "when it was restored from a backup (not among its open alerts)",
            },
            "rejected": _INT,
        }
    ),
    "StockRow": _object(
        {
            "sku": _STR,
            "name": _null("string"),
            **_WHERE,
            "book": {"type": "integer", "description": "book stock at every book location"},
            "observed": {"type": ["integer", "null"], "description": "the SKU's lanes' counts in the last snapshot"},
            "lanes": _INT,
            "observed_ms": _null("integer"),
            "reorder_point": _null("integer"),
        }
    ),
    "Alert": _object(
        {
            **_WHERE,
            "id": {"type": "integer", "description": "the hub's alert id (within its incarnation)"},
            "incarnation": {
                "type": "integer",
                "description": "the hub's ledger incarnation (the current one): a restored ledger reuses alert ids",
            },
            "kind": _STR,
            "cause_key": _STR,
            "status": {"enum": ["open", "acknowledged"]},
            "opened_ms": _INT,
            "acknowledged_ms": _null("integer"),
            "acknowledged_by": _null("string"),
        }
    ),
    "ShrinkRow": {
        "oneOf": [
            _object({**_SHRINK, "sku": _STR, "name": _null("string")}),
            _object(_SHRINK),
        ]
    },
    "Reorder": _object(
        {
            "sku": _STR,
            "name": _STR,
            **_WHERE,
            "book": _INT,
            "observed": _null("integer"),
            "reorder_point": _INT,
            "reorder_qty": _INT,
            "suggested_qty": _INT,
            "alert_id": _null("integer"),
            "alert_status": {"enum": ["open", "acknowledged", None]},
        }
    ),
}

_NEXT = {"type": ["string", "null"], "description": "pass as cursor for the next page; null: the last page"}
# operation id -> (summary, item schema, scope)
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "stores": ("Each store's hub: last contact, completeness of its movements, open alerts", "Store", "stores"),
    "stock": ("Book and observed stock per SKU per store, by SKU then store", "StockRow", "stock"),
    "alerts": ("Unresolved alerts across stores, newest first", "Alert", "alerts"),
    "shrink": (
        "Units sold and written off as shrinkage over a period, per store and SKU or per store",
        "ShrinkRow",
        "shrink",
    ),
    "reorders": ("SKUs at or below their reorder point, by SKU then store", "Reorder", "reorders"),
}
_ERRORS = {
    400: "An unknown or bad query parameter, one given twice, or a cursor not of this list (each error names it)",
    401: "No token, an unknown one, or a disabled client's",
    403: "The client lacks the scope this needs",
    503: "The central database is not available: try again later",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": _ERRORS[c], "content": {"application/json": {"schema": ref("Errors")}}} for c in codes
    }


def _parameters(endpoint: str) -> list[dict[str, Any]]:
    return [
        {
            "name": f.name,
            "in": "query",
            "required": f.required,
            "description": f"{f.description} At most once.",
            "schema": field_schema(f),
        }
        for f in QUERIES[endpoint]
    ]


def _page(item: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return _object({**(extra or {}), "items": {"type": "array", "items": ref(item)}, "next_cursor": _NEXT})


def build_spec() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name, (summary, item, scope) in OPERATIONS.items():
        extra = None
        if name == "shrink":
            extra = {"start_ms": _INT, "end_ms": _INT, "group": {"enum": ["sku", "store"]}}
        paths[f"{PREFIX}/{name}"] = {
            "get": {
                "operationId": name,
                "summary": summary,
                "description": f"Needs the scope `{scope}`. Only the stores the client may see (its regions, or "
                "every store).",
                "security": [{"bearer": [scope]}],
                "parameters": _parameters(f"api.{name}"),
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": _page(item, extra)}}},
                    **_errors(400, 401, 403, 503),
                },
            }
        }
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "openapi",
            "summary": "This description",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smartshelf central API",
            "version": "1",
            "description": "Read every store's stock, open alerts, shrink, reorders and last contact from the central "
            "store (for an ERP). Lists come a page at a time: pass next_cursor as cursor for the next one. A query "
            "parameter is given at most once (twice is a 400 naming it); integers are ASCII digits within the "
            f"documented bounds. Scopes: {', '.join(SCOPES)}.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API client's token (ssc_...): smartshelf central token add",
                }
            },
            "schemas": SCHEMAS,
        },
        "security": [{"bearer": []}],
    }
