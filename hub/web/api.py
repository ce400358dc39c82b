"""The HTTP API for POS / WMS clients: bearer tokens per client, idempotent posts, OpenAPI description.

* **Auth.** ``Authorization: Bearer ssk_...`` of an API client (``api_clients.py``; ``smartshelf api-clients``).
  Missing, unknown or disabled: 401 with ``WWW-Authenticate: Bearer``. Every endpoint needs the scope named in
  ``API_SCOPES``; a client without it gets 403 naming the scope. An endpoint of this blueprint missing from
  ``API_SCOPES`` (or not marked ``API`` in ``access.ROLE_MATRIX``) is refused to every client (fail closed).
* **Posts** (``/api/v1/sales``, ``receipts``, ``returns``, ``picks``, ``counts``) take one item or
  ``{"items": [...]}`` (at most ``MAX_ITEMS``). Each item's ``id`` is its idempotency key: it becomes the ledger
  reference ``<kind>:<id>``. All items of one request are applied in **one** transaction of the hub's ledger writer,
  all or nothing. Replaying a request changes nothing (200, every item ``duplicate``); the same id with different
  content is refused with 409 naming the item. Any bad item refuses the whole request (400 / 409 / 413 / 415 / 422,
  ``{"errors": [{"field": "items[3].quantity", "message": ...}]}``) and nothing is written. The actor of every
  write is ``api:<client name>``.
* **Reads**: ``/api/v1/stock``, ``/api/v1/lanes``, ``/api/v1/alerts``.
* **Errors** under ``/api/`` are JSON, including 404 / 405 / 413 raised before a view runs.

The fields below (``FIELDS``, ``QUERIES``) are the one definition of what a request may contain: the validator
here and the OpenAPI description (``openapi.py``, served at ``/api/openapi.json``) are both made from them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flask import Blueprint, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers.response import Response

from hub.ledger.imports import ImportTooLarge, parse_timestamp
from hub.ledger.models import (
    BACKROOM,
    MAX_QTY,
    CountResult,
    LedgerClosed,
    LedgerError,
    RefConflict,
    UnknownLocation,
    UnknownSku,
)
from hub.ledger.postings import REF_MAX, Tx, check_ref
from hub.ledger.reader import ALERT_COLUMNS, alert_from_row
from hub.web.api_clients import ApiClient, client_for_token
from hub.web.app import get_db, get_writer

bp = Blueprint("api", __name__)

PREFIX = "/api/v1"
MAX_ITEMS = 1000
MAX_BODY_BYTES = 1024 * 1024  # 1000 items of ~200 bytes, with room to spare; larger bodies get 413
# A CSV import (/imports/<kind>) is one transaction of the hub's single writer, which everything else (sensor
# events, pages, sign-ins) waits behind: 10,000 rows keep it busy for seconds (6.7 s measured on the development
# machine), not minutes. Larger files are refused with 413 (split them). 300 bytes: the longest row the formats
# allow (64-character id and order, 32-character SKU, a lane location, a timestamp with an offset).
MAX_IMPORT_ROWS = 10_000
MAX_CSV_BYTES = MAX_IMPORT_ROWS * 300
IMPORT_TIMEOUT_S = 120.0  # the bridge's wait for an import (ordinary requests: LoopWriter.timeout_s, 30 s)
MAX_IMPORT_ERRORS = 100  # a 422 lists the first 100 problems and how many more there are
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
ALERTS_MAX_LIMIT = 500

# endpoint -> the scope a client needs. An endpoint of this blueprint missing here is refused (fail closed).
API_SCOPES: dict[str, str] = {
    "api.post_sales": "sales",
    "api.post_receipts": "receipts",
    "api.post_returns": "returns",
    "api.post_picks": "picks",
    "api.post_counts": "counts",
    "api.stock": "read",
    "api.lanes": "read",
    "api.alerts": "read",
    # CSV files (hub/ledger/README.md, "CSV imports"), all or nothing, with the scope of their kind
    "api.import_sales": "sales",
    "api.import_receipts": "receipts",
    "api.import_returns": "returns",
    "api.import_picks": "picks",
    "api.import_counts": "counts",
}

# ----------------------------------------------------------------------------------------------- fields

FieldType = Literal["string", "integer", "boolean", "timestamp"]


@dataclass(frozen=True)
class Field:
    """One field of a request item or query: the validator and the OpenAPI schema are both made from it."""

    name: str
    type: FieldType
    description: str
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None  # a regular expression searched for (as in JSON Schema): anchor it with ^...$
    enum: tuple[str, ...] | None = None
    default: bool | int | str | None = None
    hint: str = ""  # what a value that does not match ``pattern`` should look like


_ID = Field(
    "id",
    "string",
    "The client's id of this line (POS line, delivery line, ...): the idempotency key, unique per kind and client. "
    "Re-sending it with the same content changes nothing; with different content, or an id another client already "
    "used, it is refused (409).",
    required=True,
    min_length=1,
    max_length=REF_MAX,
    pattern=r"^\S(.*\S)?$",
    hint="no spaces at either end",
)
_SKU = Field(
    "sku",
    "string",
    "A SKU the ledger knows.",
    required=True,
    min_length=1,
    max_length=32,
    pattern=r"^[ -~]+$",
    hint="printable ASCII characters",
)
_QTY = Field("quantity", "integer", "Units, positive.", required=True, minimum=1, maximum=MAX_QTY)
_COUNTED = Field("counted", "integer", "Units counted (zero or more).", required=True, minimum=0, maximum=MAX_QTY)
_TS = Field(
    "timestamp",
    "timestamp",
    "When it happened (1970..9999): ISO 8601 with a timezone (2025-11-27T14:03:00+01:00) or ms since the epoch. "
    "Default: when the ledger records it.",
)
_LOCATION_RE = r"^(lane:[A-Za-z0-9][A-Za-z0-9._-]{0,63}|[a-z][a-z0-9_-]{0,63})$"


def _location(default: str) -> Field:
    return Field(
        "location",
        "string",
        f"Book location: backroom, lane:<lane id> of a registered lane, or a plain name. Default: {default}.",
        max_length=69,
        pattern=_LOCATION_RE,
        hint="backroom, lane:<lane id> or a plain lower-case name (a-z, 0-9, _ and -)",
    )


_SHELF = "the SKU's lane holding the most stock (backroom if it is on no lane)"

PostKind = Literal["sales", "receipts", "returns", "picks", "counts"]
FIELDS: dict[PostKind, tuple[Field, ...]] = {
    "sales": (_ID, _SKU, _QTY, _TS, _location(_SHELF)),
    "receipts": (_ID, _SKU, _QTY, _TS, _location(BACKROOM)),
    "returns": (
        _ID,
        _SKU,
        _QTY,
        _TS,
        _location(BACKROOM),
        Field(
            "restockable",
            "boolean",
            "False: the returned units are written off as damage in the same posting.",
            default=True,
        ),
    ),
    "picks": (
        _ID,
        _SKU,
        _QTY,
        Field(
            "order",
            "string",
            "The order id.",
            required=True,
            min_length=1,
            max_length=REF_MAX,
            pattern=r"\S",
            hint="not blank",
        ),
        _TS,
        _location(_SHELF),
    ),
    "counts": (_ID, _SKU, _COUNTED, _TS, _location(BACKROOM)),
}
SUMMARIES: dict[PostKind, str] = {
    "sales": "Record sales (stock leaves the shelf)",
    "receipts": "Record goods received",
    "returns": "Record customer returns",
    "picks": "Record order picks (online orders)",
    "counts": "Record physical counts (the difference is posted as a count adjustment)",
}

# query parameters of the reads (endpoint -> fields)
QUERIES: dict[str, tuple[Field, ...]] = {
    "api.stock": (Field("sku", "string", "Only this SKU.", min_length=1, max_length=32),),
    "api.lanes": (),
    "api.alerts": (
        Field(
            "status",
            "string",
            "Only alerts with this status (unresolved: open or acknowledged). Default: all.",
            enum=("open", "acknowledged", "resolved", "unresolved"),
        ),
        Field("limit", "integer", "Page size.", minimum=1, maximum=ALERTS_MAX_LIMIT, default=100),
        Field("after", "integer", "Only alerts with a larger id (the previous page's next_after).", minimum=0),
    ),
}


# ------------------------------------------------------------------------------------------------ errors


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    index: int | None = None  # the item, in a post

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        return out


def error_response(status: int, errors: Sequence[FieldError], headers: Mapping[str, str] | None = None) -> Response:
    resp = jsonify(errors=[e.as_json() for e in errors])
    resp.status_code = status
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


class _Rejected(Exception):
    """Raised inside the write transaction to roll it back."""

    def __init__(self, status: int, errors: list[FieldError]) -> None:
        super().__init__("request rejected")
        self.status = status
        self.errors = errors


# -------------------------------------------------------------------------------------------------- auth


def current_client() -> ApiClient:
    client = g.get("api_client")
    if not isinstance(client, ApiClient):  # the before_request hook did not admit this request
        raise RuntimeError("no authenticated API client")
    return client


def _unauthorized(message: str, *, invalid: bool) -> Response:
    challenge = 'Bearer realm="smartshelf"' + (', error="invalid_token"' if invalid else "")
    return error_response(401, [FieldError("Authorization", message)], {"WWW-Authenticate": challenge})


@bp.before_request
def _authenticate() -> ResponseReturnValue | None:
    from hub.web.access import API, PUBLIC, ROLE_MATRIX

    g.api_client = None
    endpoint = request.endpoint or ""
    request.max_content_length = MAX_CSV_BYTES if endpoint.startswith("api.import_") else MAX_BODY_BYTES
    needed = ROLE_MATRIX.get(endpoint)
    if needed == PUBLIC:
        return None
    scope = API_SCOPES.get(endpoint)
    if needed != API or scope is None:
        return error_response(403, [FieldError("endpoint", f"{endpoint} is not open to API clients")])
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


# ---------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Item:
    index: int
    path: str  # "items[3]." in a batch, "" for a single object
    id: str
    sku: str
    qty: int  # quantity, or counted for counts
    ts_ms: int | None
    location: str | None
    order: str | None
    restockable: bool


def check_value(f: Field, value: Any) -> tuple[Any, str | None]:
    """(the value, None) or (None, why it is refused). Timestamps become ms since the epoch."""
    if f.type == "timestamp":
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None, "must be an ISO 8601 string with a timezone or an integer (ms since the epoch)"
        if isinstance(value, str):
            try:
                value = parse_timestamp(value)
            except ValueError as exc:
                return None, str(exc)
        if not 0 <= value <= MAX_TS_MS:
            return None, f"must be between 1970 and 9999 (0..{MAX_TS_MS} ms since the epoch)"
        return value, None
    if f.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"must be an integer, not {_json_type(value)}"
    elif f.type == "boolean":
        if not isinstance(value, bool):
            return None, f"must be true or false, not {_json_type(value)}"
    elif not isinstance(value, str):
        return None, f"must be a string, not {_json_type(value)}"
    if f.minimum is not None and value < f.minimum:
        return None, f"must be at least {f.minimum:,}, not {value}"
    if f.maximum is not None and value > f.maximum:
        return None, f"must be at most {f.maximum:,}, not {value}"
    if f.min_length is not None and len(value) < f.min_length:
        return None, "must not be empty" if f.min_length == 1 else f"must have at least {f.min_length} characters"
    if f.max_length is not None and len(value) > f.max_length:
        return None, f"must have at most {f.max_length} characters"
    if f.pattern is not None and not re.search(_python_pattern(f.pattern), value):
        return None, f"{value!r} is not valid: {f.hint or 'it does not match ' + f.pattern}"
    if f.enum is not None and value not in f.enum:
        return None, f"must be one of {', '.join(f.enum)}, not {value!r}"
    return value, None


def _python_pattern(pattern: str) -> str:
    r"""A JSON Schema (ECMA 262) pattern for Python's ``re``: there, a final ``$`` also matches before a trailing
    newline (``"COLA\n"`` would pass ``^[ -~]+$``); ``\Z`` is ECMA's ``$``."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _extra_checks(name: str, value: Any) -> str | None:
    """What the JSON Schema does not say: an id is printable (the ledger's rule for references)."""
    if name == "id":
        try:
            check_ref(value)
        except LedgerError as exc:
            return str(exc)
    return None


def validate_item(kind: PostKind, index: int, path: str, raw: Any) -> tuple[Item | None, list[FieldError]]:
    where = path[:-1] if path else "body"
    if not isinstance(raw, dict):
        return None, [FieldError(where, f"an item must be an object, not {_json_type(raw)}", index)]
    fields = FIELDS[kind]
    known = {f.name for f in fields}
    errors = [
        FieldError(f"{path}{name}", f"unknown field (a {kind} item has {', '.join(f.name for f in fields)})", index)
        for name in raw
        if name not in known
    ]
    values: dict[str, Any] = {}
    for f in fields:
        if f.name not in raw:
            if f.required:
                errors.append(FieldError(f"{path}{f.name}", "required", index))
            else:
                values[f.name] = f.default
            continue
        value, problem = check_value(f, raw[f.name])
        if problem is None:
            problem = _extra_checks(f.name, value)
        if problem is not None:
            errors.append(FieldError(f"{path}{f.name}", problem, index))
        values[f.name] = value
    if errors:
        return None, errors
    qty = values["counted"] if kind == "counts" else values["quantity"]
    order = values.get("order")
    item = Item(
        index,
        path,
        values["id"],
        values["sku"],
        qty,
        values["timestamp"],
        values["location"],
        order.strip() if isinstance(order, str) else None,
        bool(values.get("restockable", True)),
    )
    return item, []


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with a key given twice is refused: which of ``"quantity": 1, "quantity": 5`` was meant?"""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears more than once in an object")
        out[key] = value
    return out


def read_items(kind: PostKind) -> tuple[list[Item], Response | None]:
    """The request's items, or the error response (nothing is written for it)."""
    if request.mimetype != "application/json":
        given = request.mimetype or "none"
        return [], error_response(415, [FieldError("Content-Type", f"send application/json, not {given}")])
    data = request.get_data(cache=False)  # 413 (JSON, see the error handlers) when larger than MAX_BODY_BYTES
    try:
        body = json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except ValueError as exc:  # incl. UnicodeDecodeError
        return [], error_response(400, [FieldError("body", f"not valid JSON: {exc}")])
    except RecursionError:
        return [], error_response(400, [FieldError("body", "not valid JSON: nested too deeply")])
    if isinstance(body, dict) and "items" in body:
        extra = sorted(k for k in body if k != "items")
        raws = body["items"]
        errors = [FieldError(k, "unknown field next to items") for k in extra]
        if not isinstance(raws, list):
            errors.append(FieldError("items", f"must be an array of items, not {_json_type(raws)}"))
        elif not 1 <= len(raws) <= MAX_ITEMS:
            errors.append(FieldError("items", f"must hold 1..{MAX_ITEMS} items, not {len(raws)}"))
        if errors:
            return [], error_response(422, errors)
        paths = [f"items[{i}]." for i in range(len(raws))]
    else:
        raws, paths = [body], [""]
    items: list[Item] = []
    errors = []
    first_index: dict[str, int] = {}
    for i, (raw, path) in enumerate(zip(raws, paths, strict=True)):
        item, problems = validate_item(kind, i, path, raw)
        errors += problems
        if item is None:
            continue
        if item.id in first_index:
            errors.append(FieldError(f"{path}id", f"id {item.id!r} repeats items[{first_index[item.id]}]", i))
            continue
        first_index[item.id] = i
        items.append(item)
    errors += _unknown_skus(raws, paths)  # so that one answer lists every problem (the ledger checks them again)
    if errors:
        return [], error_response(422, sorted(errors, key=lambda e: -1 if e.index is None else e.index))
    return items, None


def _unknown_skus(raws: Sequence[Any], paths: Sequence[str]) -> list[FieldError]:
    given = {
        i: raw["sku"]
        for i, raw in enumerate(raws)
        if isinstance(raw, dict) and check_value(_SKU, raw.get("sku"))[1] is None
    }
    known = {
        row[0]
        for row in get_db().execute(
            "SELECT value FROM json_each(?) WHERE value IN (SELECT sku FROM skus)",
            (json.dumps(sorted(set(given.values()))),),
        )
    }
    return [FieldError(f"{paths[i]}sku", f"unknown SKU {sku!r}", i) for i, sku in given.items() if sku not in known]


# ------------------------------------------------------------------------------------------------ posting


async def _post_one(tx: Tx, kind: PostKind, item: Item, actor: str) -> dict[str, Any]:
    out: dict[str, Any] = {"index": item.index, "id": item.id}
    if kind == "counts":
        counted: CountResult = await tx.count(
            item.sku, item.qty, ts=item.ts_ms, actor=actor, ref=item.id, location=item.location or BACKROOM
        )
        adjustment = counted.adjustment_movement_id
        out.update(
            status="duplicate" if counted.duplicate else "created",
            movement_ids=[] if adjustment is None else [adjustment],
            count_id=counted.count_id,
            book=counted.book_qty,
            counted=counted.counted_qty,
            adjustment_movement_id=adjustment,
        )
        return out
    common: dict[str, Any] = {"ts": item.ts_ms, "actor": actor, "ref": item.id}
    if kind == "sales":
        result = await tx.sale(item.sku, item.qty, location=item.location, **common)
    elif kind == "picks":
        assert item.order is not None
        result = await tx.order_pick(item.sku, item.qty, item.order, location=item.location, **common)
    elif kind == "receipts":
        result = await tx.receipt(item.sku, item.qty, location=item.location or BACKROOM, **common)
    else:
        result = await tx.return_(
            item.sku, item.qty, restockable=item.restockable, location=item.location or BACKROOM, **common
        )
    out.update(status="duplicate" if result.duplicate else "created", movement_ids=list(result.movement_ids))
    return out


async def post_items(tx: Tx, kind: PostKind, items: Sequence[Item], actor: str) -> list[dict[str, Any]]:
    """Apply every item in the caller's transaction; raise ``_Rejected`` (rolling it back) with every problem."""
    results: list[dict[str, Any]] = []
    errors: list[FieldError] = []
    conflicts: list[FieldError] = []
    for item in items:
        try:
            results.append(await _post_one(tx, kind, item, actor))
        except RefConflict as exc:
            conflicts.append(FieldError(f"{item.path}id", str(exc), item.index))
        except UnknownSku as exc:
            errors.append(FieldError(f"{item.path}sku", str(exc), item.index))
        except UnknownLocation as exc:
            errors.append(FieldError(f"{item.path}location", str(exc), item.index))
        except LedgerError as exc:
            errors.append(FieldError(item.path[:-1] if item.path else "body", str(exc), item.index))
    if errors:
        raise _Rejected(422, sorted(errors + conflicts, key=lambda e: e.index or 0))
    if conflicts:
        raise _Rejected(409, conflicts)
    return results


def unavailable(exc: BaseException, what: Literal["request", "file"]) -> Response:
    """503 for a write the ledger did not confirm: closed (nothing was written), or no answer in time (it is still
    queued and may yet be applied: say so; re-sending is safe because every item's id is its idempotency key)."""
    if isinstance(exc, TimeoutError):
        message = (
            f"the ledger did not confirm the write in time: the {what} may still be applied. Send the same {what}"
            " again later: that is safe (ids are idempotency keys; what was applied is reported as duplicate)"
        )
    else:
        message = f"the ledger is not available: send the same {what} again later (safe: ids are idempotency keys)"
    return error_response(503, [FieldError("ledger", message)], {"Retry-After": "5"})


def _make_post_view(kind: PostKind) -> Callable[[], ResponseReturnValue]:
    def view() -> ResponseReturnValue:
        client = current_client()
        items, refused = read_items(kind)
        if refused is not None:
            return refused
        actor = f"api:{client.name}"
        try:
            results = get_writer().call(lambda ledger: ledger.transact(lambda tx: post_items(tx, kind, items, actor)))
        except _Rejected as rejected:
            return error_response(rejected.status, rejected.errors)
        except (LedgerClosed, TimeoutError) as exc:
            return unavailable(exc, "request")
        created = any(r["status"] == "created" for r in results)
        return jsonify(items=results), 201 if created else 200

    view.__name__ = f"post_{kind}"
    view.__doc__ = SUMMARIES[kind]
    return view


for _kind in FIELDS:
    bp.add_url_rule(f"{PREFIX}/{_kind}", endpoint=f"post_{_kind}", view_func=_make_post_view(_kind), methods=["POST"])


# -------------------------------------------------------------------------------------------------- CSV imports

IMPORT_NAME_MAX = 100


def _make_import_view(kind: PostKind) -> Callable[[], ResponseReturnValue]:
    def view() -> ResponseReturnValue:
        """A CSV file of one kind (the formats of ``smartshelf ledger import``), imported all or nothing in one
        transaction of the hub's writer; each row's id is its idempotency key, so re-sending the file is safe."""
        client = current_client()
        if request.mimetype != "text/csv":
            given = request.mimetype or "none"
            return error_response(415, [FieldError("Content-Type", f"send text/csv, not {given}")])
        unknown = [FieldError(k, "unknown query parameter") for k in request.args if k != "name"]
        name = request.args.get("name", f"{kind}.csv")
        if not 1 <= len(name) <= IMPORT_NAME_MAX or any(not " " <= c <= "~" for c in name):
            unknown.append(FieldError("name", f"1..{IMPORT_NAME_MAX} printable ASCII characters"))
        if unknown:
            return error_response(400, unknown)
        data = request.get_data(cache=False)  # 413 (JSON) when larger than MAX_CSV_BYTES
        actor = f"api:{client.name}"
        try:
            report = get_writer().call(
                lambda ledger: ledger.import_csv(kind, data, actor=actor, name=name, max_rows=MAX_IMPORT_ROWS),
                timeout_s=IMPORT_TIMEOUT_S,
            )
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
    return view


for _kind in FIELDS:
    bp.add_url_rule(
        f"{PREFIX}/imports/{_kind}", endpoint=f"import_{_kind}", view_func=_make_import_view(_kind), methods=["POST"]
    )


# -------------------------------------------------------------------------------------------------- reads


def read_query(endpoint: str) -> tuple[dict[str, Any], Response | None]:
    fields = QUERIES[endpoint]
    known = {f.name: f for f in fields}
    errors = [FieldError(name, "unknown query parameter") for name in request.args if name not in known]
    values: dict[str, Any] = {}
    for f in fields:
        given = request.args.getlist(f.name)
        if not given:
            values[f.name] = f.default
            continue
        if len(given) > 1:
            errors.append(FieldError(f.name, "given more than once"))
            continue
        text: Any = given[0]
        if f.type == "integer":
            if not re.fullmatch(r"\d{1,18}", text):
                errors.append(FieldError(f.name, f"must be a whole number, not {text!r}"))
                continue
            text = int(text)
        value, problem = check_value(f, text)
        if problem is not None:
            errors.append(FieldError(f.name, problem))
        values[f.name] = value
    if errors:
        return {}, error_response(400, errors)
    return values, None


@bp.get(f"{PREFIX}/stock")
def stock() -> ResponseReturnValue:
    """Book stock per SKU and location, observed stock per lane."""
    query, refused = read_query("api.stock")
    if refused is not None:
        return refused
    conn = get_db()
    where, params = ("WHERE sku = ?", (query["sku"],)) if query["sku"] is not None else ("", ())
    skus = list(conn.execute(f"SELECT sku, name FROM skus {where} ORDER BY sku", params))
    if not skus and query["sku"] is not None:
        return error_response(404, [FieldError("sku", f"unknown SKU {query['sku']!r}")])
    book: dict[str, list[dict[str, Any]]] = {}
    for sku, location, qty in conn.execute(f"SELECT sku, location, qty FROM book_stock {where} ORDER BY 1, 2", params):
        book.setdefault(sku, []).append({"location": location, "qty": qty})
    observed: dict[str, list[dict[str, Any]]] = {}
    for sku, lane, qty in conn.execute(f"SELECT sku, lane_id, qty FROM observed_stock {where} ORDER BY 1, 2", params):
        observed.setdefault(sku, []).append({"lane_id": lane, "qty": qty})
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
def lanes() -> ResponseReturnValue:
    """Every lane: node, index, SKU, observed count against capacity, state, unresolved alerts."""
    _, refused = read_query("api.lanes")
    if refused is not None:
        return refused
    from hub.web.live import feed

    # the live feed's rows: polled up to every commit so far, computed once for every reader (a closed feed: 503)
    return jsonify(items=feed(current_app).snapshot()["lanes"])


@bp.get(f"{PREFIX}/alerts")
def alerts() -> ResponseReturnValue:
    """Alerts by id, oldest first, a page at a time (``after`` = the previous page's ``next_after``)."""
    query, refused = read_query("api.alerts")
    if refused is not None:
        return refused
    status = query["status"]
    clauses, params = ["id > ?"], [query["after"] or 0]
    if status == "unresolved":
        clauses.append("status != 'resolved'")
    elif status is not None:
        clauses.append("status = ?")
        params.append(status)
    limit = int(query["limit"])
    rows = list(
        get_db().execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
            [*params, limit + 1],
        )
    )
    page = [alert_from_row(r) for r in rows[:limit]]
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


@bp.get("/api/openapi.json")
def openapi() -> ResponseReturnValue:
    """This API's OpenAPI 3.1 description (public)."""
    from hub.web.openapi import build_spec

    return jsonify(build_spec())


# ------------------------------------------------------------------------------------------- JSON errors

JSON_ERROR_CODES = (400, 403, 404, 405, 413, 415, 500)


def _is_api_request() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def _json_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    message = "internal error" if code == 500 else (exc.description or exc.name)
    if code == 413 and (request.endpoint or "").startswith("api.import_"):
        message = (
            f"the file is larger than {MAX_CSV_BYTES:,} bytes: split it into files of at most {MAX_IMPORT_ROWS:,}"
            " rows (each file is imported all or nothing)"
        )
    elif code == 413:
        message = f"the request body is larger than {MAX_BODY_BYTES:,} bytes: send fewer items per request"
    headers = {k: v for k, v in exc.get_headers() if k == "Allow"}
    return error_response(code, [FieldError("request", message)], headers)


@bp.record_once
def _install_error_handlers(state: BlueprintSetupState) -> None:
    """JSON errors for every path under /api/ (404 and 405 are raised before any blueprint is chosen, so these are
    application handlers); other paths keep whatever handler the application had before."""
    app = state.app
    for code in JSON_ERROR_CODES:
        previous = dict(app.error_handler_spec[None].get(code, {}))
        app.register_error_handler(code, _chained(app, previous))


def _chained(app: App, previous: Mapping[type[Exception], Any]) -> Callable[[HTTPException], ResponseReturnValue]:
    def handle(exc: HTTPException) -> ResponseReturnValue:
        if _is_api_request():
            return _json_error(exc)
        for cls in type(exc).__mro__:
            handler = previous.get(cls)
            if handler is None:
                handler = app.error_handler_spec[None].get(None, {}).get(cls)
            if handler is not None:
                result: ResponseReturnValue = current_app.ensure_sync(handler)(exc)
                return result
        return exc

    return handle
