"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /api/openapi.json``.

Request schemas and query parameters are made from the same ``Field`` definitions the validator uses
(``fields.FIELDS``, ``fields.QUERIES``); the scopes are those the endpoints declare (``access.api_scopes(app)``).
``OPERATIONS`` lists every route of the API (a test keeps it equal to the application's URL map) and the response
schemas below describe what the views return (the tests check real responses against them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub.web.accounts.clients import SCOPES, TOKEN_PREFIX
from hub.web.api import fields as api

OPENAPI_PATH = "/api/openapi.json"
REF = "#/components/schemas/"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def field_schema(f: api.Field) -> dict[str, Any]:
    """JSON Schema of one field, with the same limits the validator applies."""
    schema: dict[str, Any]
    if f.type == "timestamp":
        schema = {
            "oneOf": [
                {"type": "string", "format": "date-time", "pattern": f.pattern},
                {"type": "integer", "minimum": 0, "maximum": api.MAX_TS_MS},
            ]
        }
        schema["description"] = f.description
        return schema
    schema = {"type": f.type}
    limits = {
        "minimum": f.minimum,
        "maximum": f.maximum,
        "minLength": f.min_length,
        "maxLength": f.max_length,
        "pattern": f.pattern,
        "enum": list(f.enum) if f.enum is not None else None,
        "default": f.default,
    }
    schema.update({k: v for k, v in limits.items() if v is not None})
    schema["description"] = f.description
    return schema


def item_schema(kind: api.PostKind) -> dict[str, Any]:
    fields = api.FIELDS[kind]
    return {
        "type": "object",
        "properties": {f.name: field_schema(f) for f in fields},
        "required": [f.name for f in fields if f.required],
        "additionalProperties": False,
    }


def _item_name(kind: api.PostKind) -> str:
    return kind[:-1].capitalize() + "Item"  # SaleItem, ReceiptItem, ReturnItem, PickItem, CountItem


def request_schema(kind: api.PostKind) -> dict[str, Any]:
    return {
        "oneOf": [
            ref(_item_name(kind)),
            {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "minItems": 1, "maxItems": api.MAX_ITEMS, "items": ref(_item_name(kind))}
                },
                "required": ["items"],
                "additionalProperties": False,
            },
        ]
    }


def _nullable(type_: str, **extra: Any) -> dict[str, Any]:
    return {"type": [type_, "null"], **extra}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _list_of(item: str, **more: Any) -> dict[str, Any]:
    return _object({"items": {"type": "array", "items": ref(item)}, **more})


_INT = {"type": "integer"}
_STR = {"type": "string"}
_IDS = {"type": "array", "items": _INT}

RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _object(
        {
            "field": {"type": "string", "description": "What is wrong: items[3].quantity, Authorization, body, ..."},
            "message": _STR,
            "index": {"type": "integer", "minimum": 0, "description": "The item of a post it is about."},
        },
        required=["field", "message"],
    ),
    "Errors": _object({"errors": {"type": "array", "minItems": 1, "items": ref("Error")}}),
    "PostResultItem": _object(
        {
            "index": {"type": "integer", "minimum": 0},
            "id": _STR,
            "status": {"enum": ["created", "duplicate"], "description": "duplicate: already in the ledger"},
            "movement_ids": _IDS,
            "count_id": _INT,
            "book": {"type": "integer", "description": "Counts: book stock before the count."},
            "counted": _INT,
            "adjustment_movement_id": _nullable("integer"),
        },
        required=["index", "id", "status", "movement_ids"],
    ),
    "PostResult": _list_of("PostResultItem"),
    "StockItem": _object(
        {
            "sku": _STR,
            "name": _STR,
            "book_total": _INT,
            "book": {"type": "array", "items": _object({"location": _STR, "qty": _INT})},
            "observed_total": _INT,
            "observed": {"type": "array", "items": _object({"lane_id": _STR, "qty": _INT})},
        }
    ),
    "Stock": _list_of("StockItem"),
    # the same lane object as the status page's live feed (pages.LaneRow.to_json): one shape everywhere
    "Lane": _object(
        {
            "lane_id": _STR,
            "node_id": _INT,
            "lane_index": _INT,
            "sku": _nullable("string"),
            "name": _nullable("string"),
            "count": _INT,
            "capacity": _nullable("integer"),
            "reorder_point": _INT,
            "state": {"enum": ["ok", "low", "out", "trouble"]},
            "last_change_ms": _nullable("integer"),
            "open_alerts": _INT,
            "tags_present": {"type": "integer", "minimum": 0, "description": "RFID tags on the lane now"},
            "tags_other_sku": {"type": "integer", "minimum": 0, "description": "... of another SKU than the lane's"},
            "tags_last_read_ms": _nullable("integer", description="the latest a tag on it was confirmed read"),
        }
    ),
    "Lanes": _list_of("Lane"),
    "Alert": _object(
        {
            "id": _INT,
            "kind": _STR,
            "cause_key": _STR,
            "status": {"enum": ["open", "acknowledged", "resolved"]},
            "opened_ms": _INT,
            "acknowledged_ms": _nullable("integer"),
            "acknowledged_by": _nullable("string"),
            "resolved_ms": _nullable("integer"),
            "resolved_by": _nullable("string"),
            "resolution": _nullable("string"),
            "resolution_movement_id": _nullable("integer"),
            "evidence": {"type": "object"},
        }
    ),
    "Import": _object(
        {"kind": _STR, "name": _STR, "rows": _INT, "applied": _INT, "duplicates": _INT},
        required=["kind", "name", "rows", "applied", "duplicates"],
    ),
    "Alerts": _list_of("Alert", next_after=_nullable("integer", description="pass as after for the next page")),
    "Tag": _object(
        {
            "epc": {"type": "string", "description": "upper-case hex"},
            "sku": _nullable(
                "string", description="the store's EPC table, else the SKU of the EPC's GTIN; null: unknown"
            ),
            "name": _nullable("string"),
            "first_seen_ms": _nullable("integer", description="its arrival on the lane"),
            "last_read_ms": _nullable("integer", description="the latest its node confirmed reading it"),
            "rssi": _nullable("integer"),
            "unconfirmed_ms": _nullable("integer", description="its node restarted then and has not read it since"),
            "other_sku": {"type": "boolean", "description": "a tag of another SKU than the lane's"},
        }
    ),
    "LaneTags": _object(
        {
            "lane_id": _STR,
            "node_id": _INT,
            "lane_index": _INT,
            "sku": _nullable("string"),
            "tags": {"type": "array", "items": ref("Tag")},
        }
    ),
    "Tags": _list_of("LaneTags"),
    "TagTrail": _object(
        {
            "epc": _STR,
            "scheme": _nullable("string", description="sgtin-96 or sgtin-198; null: not an SGTIN"),
            "gtin": _nullable("string"),
            "serial": _nullable("string"),
            "sku": _nullable("string"),
            "sku_from": {"enum": ["epc_table", "gtin", None], "description": "how the SKU was found"},
            "stays": {
                "type": "array",
                "items": _object(
                    {
                        "lane_id": _STR,
                        "arrived_ms": _nullable("integer", description="null: before the trail"),
                        "left_ms": _nullable("integer", description="null: still there"),
                        "how": _STR,
                        "unconfirmed": {"type": "boolean"},
                    }
                ),
            },
            "events": {
                "type": "array",
                "items": _object(
                    {
                        "id": _INT,
                        "ts_ms": _INT,
                        "ts_known": {"type": "boolean", "description": "false: the hub's arrival (node restarted)"},
                        "lane_id": _STR,
                        "kind": {"enum": ["seen", "lost", "expired"]},
                        "effect": {"enum": ["arrived", "still", "left", "superseded"]},
                        "node_id": _INT,
                        "event_seq": _nullable("integer"),
                        "rssi": _nullable("integer"),
                        "verdict": _nullable("string", description="why it left, once judged (reconciliation)"),
                        "pick_id": _nullable("integer"),
                        "alert_id": _nullable("integer"),
                        "note": _nullable("string"),
                    }
                ),
            },
            "events_total": _INT,
            "alerts": {
                "type": "array",
                "items": _object(
                    {
                        "id": _INT,
                        "kind": _STR,
                        "cause_key": _STR,
                        "status": {"enum": ["open", "acknowledged", "resolved"]},
                        "opened_ms": _INT,
                    }
                ),
            },
        }
    ),
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: str
    summary: str
    ok: str  # response schema
    extra_errors: tuple[int, ...] = ()


OPERATIONS: tuple[Operation, ...] = (
    *(
        Operation("post", f"{api.PREFIX}/{kind}", f"api.post_{kind}", api.SUMMARIES[kind], "PostResult")
        for kind in api.FIELDS
    ),
    *(
        Operation("post", f"{api.PREFIX}/imports/{kind}", f"api.import_{kind}", f"A CSV file of {kind}", "Import")
        for kind in api.FIELDS
    ),
    Operation("get", f"{api.PREFIX}/stock", "api.stock", "Book stock per SKU and location, observed per lane", "Stock"),
    Operation("get", f"{api.PREFIX}/lanes", "api.lanes", "Every lane with its count, capacity and state", "Lanes"),
    Operation("post", f"{api.PREFIX}/imports/epcs", "api.import_epcs", api.EPCS_SUMMARY, "Import"),
    Operation("get", f"{api.PREFIX}/alerts", "api.alerts", "Alerts, oldest first, a page at a time", "Alerts"),
    Operation("get", f"{api.PREFIX}/tags", "api.tags", "The RFID tags on each lane now", "Tags"),
    Operation(
        "get", f"{api.PREFIX}/tags/trail", "api.tag_trail", "One tag's trail: its lanes, times, alerts", "TagTrail"
    ),
    Operation("get", OPENAPI_PATH, "api.openapi", "This description", ""),
)

_ERRORS = {
    400: "Bad request: not JSON, an empty CSV file, an unknown or bad query parameter, or one given more than once"
    " (each error names the parameter; integers are ASCII digits within the documented bounds)",
    401: "No token, an unknown one, or a disabled client's",
    403: "The client lacks the scope this needs",
    404: "No such resource",
    409: "An item's id was already used with different content, or by another client (the error names the item);"
    " nothing was written",
    413: "The body is too large (an import: more bytes or rows than one file may have, split it); nothing was written",
    415: "The body is not application/json (text/csv for an import); nothing was written",
    422: "An item is invalid (each error names the field; for an import, each names the file's line); nothing was"
    " written",
    503: "The ledger is not available, or did not confirm the write in time (it may still be applied): send the same"
    " request again later (ids make it safe)",
}


def _parameters(endpoint: str) -> list[dict[str, Any]]:
    """The query parameters of an endpoint, each given at most once (twice: 400 naming it)."""
    return [
        {
            "name": f.name,
            "in": "query",
            "required": f.required,
            "description": f"{f.description} At most once.",
            "schema": field_schema(f),
        }
        for f in api.QUERIES[endpoint]
    ]


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {"description": _ERRORS[code], "content": {"application/json": {"schema": ref("Errors")}}}
        for code in codes
    }


def _operation(op: Operation, scopes: Mapping[str, str]) -> dict[str, Any]:
    name = op.endpoint.removeprefix("api.")
    out: dict[str, Any] = {"operationId": name, "summary": op.summary}
    if op.endpoint not in scopes:  # the public description
        out["security"] = []
        out["responses"] = {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}
        return out
    scope = scopes[op.endpoint]
    out["description"] = f"Needs the scope `{scope}`."
    out["security"] = [{"bearer": [scope]}]
    ok = {"content": {"application/json": {"schema": ref(op.ok)}}}
    if name.startswith("import_"):
        out["requestBody"] = {
            "required": True,
            "description": (
                f"A CSV file (at most {api.MAX_IMPORT_ROWS:,} rows and {api.MAX_CSV_BYTES:,} bytes) in the format of"
                f" `smartshelf ledger import "
                f"{name.removeprefix('import_')}`, imported all or nothing; `?name=` names it in the report."
            ),
            "content": {"text/csv": {"schema": {"type": "string", "minLength": 1}}},
        }
        out["parameters"] = _parameters(op.endpoint)
        out["responses"] = {
            "201": {"description": "Imported (rows already in the ledger counted as duplicates)", **ok},
            "200": {"description": "Every row was already in the ledger: nothing changed", **ok},
            **_errors(400, 401, 403, 413, 415, 422, 503),
        }
        return out
    if op.method == "post":
        kind = name.removeprefix("post_")
        out["requestBody"] = {
            "required": True,
            "description": f"One item, or at most {api.MAX_ITEMS} in `items`, applied all or nothing.",
            "content": {"application/json": {"schema": ref(kind.capitalize() + "Request")}},
        }
        out["responses"] = {
            "201": {"description": "Posted (items already in the ledger are marked duplicate)", **ok},
            "200": {"description": "Every item was already in the ledger: nothing changed", **ok},
            **_errors(400, 401, 403, 409, 413, 415, 422, 503),
        }
    else:
        out["parameters"] = _parameters(op.endpoint)
        out["responses"] = {"200": {"description": "OK", **ok}, **_errors(400, 401, 403, 404)}
    return out


def build_spec(scopes: Mapping[str, str]) -> dict[str, Any]:
    """The description; ``scopes``: endpoint -> the scope it declares (``access.api_scopes(app)``)."""
    schemas: dict[str, Any] = {}
    for kind in api.FIELDS:
        schemas[_item_name(kind)] = item_schema(kind)
        schemas[kind.capitalize() + "Request"] = request_schema(kind)
    schemas.update(RESPONSE_SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, scopes)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smartshelf HTTP API",
            "version": "1",
            "description": (
                "Business transactions from POS / WMS systems into the smartshelf ledger, the store's EPC -> SKU "
                "table, and reads of stock, lanes, alerts and RFID tags. Every item carries the client's id: "
                "re-sending a request is safe. A query parameter is given at most once (twice is a 400 naming it); "
                "integers, in a query or a body, are ASCII digits within the documented bounds. "
                f"Scopes: {', '.join(SCOPES)}."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"An API client's token ({TOKEN_PREFIX}...): smartshelf api-clients add",
                }
            },
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
    }
