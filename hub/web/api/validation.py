"""Checking a request against the field definitions (``fields.py``): post items (``read_items``) and query
parameters (``read_query``); every problem is reported at once, as ``FieldError``s.

Integers in a query are ASCII digits within the field's bounds, a parameter given once (``hub.web.inputs``, as on the
pages). Integers in a JSON body longer than any bound allows (more digits than SQLite's integer holds) are not
converted (``_json_int``): the field gets a plain message, never Python's "Exceeds the limit (4300 digits)"."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import request
from werkzeug.wrappers.response import Response

from hub.ledger.imports import parse_timestamp
from hub.ledger.models import LedgerError
from hub.ledger.numbers import SQLITE_INT_MAX, shown
from hub.ledger.postings import check_ref
from hub.web.api.errors import FieldError, error_response
from hub.web.api.fields import FIELDS, MAX_ITEMS, MAX_TS_MS, QUERIES, SKU_FIELD, Field, PostKind
from hub.web.api.queries import known_skus
from hub.web.db import get_db
from hub.web.inputs import BadInput, int_text, single


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


class Overlong:
    """A JSON integer with more digits than SQLite's integer holds, left unconverted (``_json_int``)."""

    def __init__(self, text: str) -> None:
        self.negative = text.startswith("-")
        self.digits = len(text.lstrip("-"))

    def __str__(self) -> str:
        return f"a {'negative ' if self.negative else ''}{self.digits:,}-digit number"


_INT_DIGITS = len(str(SQLITE_INT_MAX))


def _json_int(text: str) -> int | Overlong:
    """``parse_int`` of the JSON decoder: JSON integers are ASCII digits already; one longer than SQLite's integer
    stays an ``Overlong`` (no field takes it), so ``int()`` never meets Python's limit on long strings."""
    return Overlong(text) if len(text.lstrip("-")) > _INT_DIGITS else int(text)


_EXACT = 2**53  # every integer up to here is exactly a float, and every bound of an integer field is below it


def _whole(value: Any) -> Any:
    """A JSON number without a fractional part is an integer to JSON Schema (``2.0`` is 2, so is ``1e2`` 100): the
    document's ``"type": "integer"`` takes it, so does the server."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    return value


def check_value(f: Field, value: Any) -> tuple[Any, str | None]:
    """(the value, None) or (None, why it is refused). Timestamps become ms since the epoch."""
    if f.type in ("integer", "timestamp"):
        value = _whole(value)
    if isinstance(value, Overlong) and f.type == "timestamp":
        return None, f"must be between 1970 and 9999 (0..{MAX_TS_MS} ms since the epoch), not {value}"
    if isinstance(value, Overlong) and f.type == "integer":
        return None, f"must be a whole number {f.minimum:,}..{f.maximum:,}, not {value}"
    if f.type == "timestamp":
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None, "must be an ISO 8601 string with a timezone or an integer (ms since the epoch)"
        if isinstance(value, str):
            if f.pattern is not None and not re.search(_python_pattern(f.pattern), value):
                return None, f"{shown(value, 40)} is not valid: {f.hint}"
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
    if isinstance(value, int | float | Overlong):
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
        body = json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_unique_keys, parse_int=_json_int)
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


def read_query(
    endpoint: str, queries: Mapping[str, tuple[Field, ...]] = QUERIES
) -> tuple[dict[str, Any], Response | None]:
    """The query parameters of ``endpoint`` checked against its fields (``queries``: the hub API's by default; the
    central API passes its own), or the 400 naming every bad one."""
    fields = queries[endpoint]
    known = {f.name: f for f in fields}
    errors = [FieldError(name, "unknown query parameter") for name in request.args if name not in known]
    values: dict[str, Any] = {}
    for f in fields:
        given: Any
        try:
            given = single(request.args, f.name)  # a parameter given twice is refused, naming it
            if given is not None and f.type == "integer":
                assert f.minimum is not None and f.maximum is not None  # every integer field has both (fields.py)
                given = int_text(f.name, given, f.minimum, f.maximum)  # ASCII digits only
        except BadInput as exc:
            errors.append(FieldError(f.name, exc.message))
            continue
        if given is None:
            if f.required:
                errors.append(FieldError(f.name, "required"))
            values[f.name] = f.default
            continue
        value, problem = check_value(f, given)
        if problem is not None:
            errors.append(FieldError(f.name, problem))
        values[f.name] = value
    if errors:
        return {}, error_response(400, errors)
    return values, None


def _unknown_skus(raws: Sequence[Any], paths: Sequence[str]) -> list[FieldError]:
    given = {
        i: raw["sku"]
        for i, raw in enumerate(raws)
        if isinstance(raw, dict) and check_value(SKU_FIELD, raw.get("sku"))[1] is None
    }
    known = known_skus(get_db(), given.values())
    return [FieldError(f"{paths[i]}sku", f"unknown SKU {sku!r}", i) for i, sku in given.items() if sku not in known]
