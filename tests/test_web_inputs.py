"""Numbers and dates the status page and the API take (issue 13, hardening): ASCII digits only, integers within
SQLite's range, days within 1970..9999, a parameter given twice refused; a bad value is a 4xx naming it (404 for a
path), never a 500, and nothing is written. The OpenAPI document says what the server enforces: a test walks its
parameters and tries each bound just below, at and just above."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest
from flask.testing import FlaskClient
from werkzeug.routing import BaseConverter
from werkzeug.routing.converters import NumberConverter
from werkzeug.test import TestResponse

from hub.ledger.imports import parse_csv
from hub.web.access import api_scopes
from hub.web.api.fields import FIELDS, QUERIES
from hub.web.api.openapi import OPENAPI_PATH, build_spec
from hub.web.api.validation import _python_pattern
from tests.test_web_alerts import _fingerprint, _realistic_shrinkage
from tests.test_web_api import CALLS, add_token, errors, fields, snapshot
from tests.web_support import SEED_EPC, Env

INT64_MAX = 2**63 - 1
BIG = "99999999999999999999"  # 20 digits: beyond SQLite's integer range
ARABIC_10 = "\u0661\u0660"  # Arabic-Indic "10": int() and str.isdigit() take it as 10
FULL_1 = "\uff11"  # a full-width 1
TS = "2026-11-27T10:00:00Z"
PYTHON_INTERNALS = ("int_max_str_digits", "Exceeds the limit", "Traceback", "OverflowError", "ValueError")


@pytest.fixture
def token(env: Env) -> str:
    return add_token(env, "pos", ("sales", "receipts", "returns", "picks", "counts", "epcs", "read"))


def _text(resp: TestResponse) -> str:
    return resp.get_data(as_text=True)


def _plain(resp: TestResponse) -> None:
    text = _text(resp)
    assert not any(s in text for s in PYTHON_INTERNALS), text[:500]


# ------------------------------------------------------------------------------------------ path parameters


@pytest.mark.parametrize("alert_id", [BIG, str(INT64_MAX + 1), "1" * 5000, "\u0661", FULL_1, "-1", "1.0"])
@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_an_alert_id_outside_sqlites_range_or_not_ascii_is_404(env: Env, alert_id: str, action: str) -> None:
    manager = env.client("manager")
    before = _fingerprint(env)
    resp = manager.post(f"/alerts/{alert_id}/{action}", data={"outcome": "found", "csrf_token": env.csrf(manager)})
    assert resp.status_code == 404, resp.status_code
    assert _fingerprint(env) == before


@pytest.mark.parametrize("alert_id", [str(INT64_MAX), "0", "00000000000000000000007"])
@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_an_unknown_alert_id_within_range_reaches_the_view(env: Env, alert_id: str, action: str) -> None:
    manager = env.client("manager")
    before = _fingerprint(env)
    resp = manager.post(f"/alerts/{alert_id}/{action}", data={"outcome": "found", "csrf_token": env.csrf(manager)})
    assert resp.status_code == 404
    assert _fingerprint(env) == before


def test_every_integer_route_uses_the_checked_converter(env: Env) -> None:
    from hub.web.inputs import CheckedInt

    assert env.app.url_map.converters["int"] is CheckedInt
    converters: list[BaseConverter] = [
        c
        for rule in env.app.url_map.iter_rules()
        for c in rule._converters.values()  # werkzeug keeps a rule's converters there
    ]
    assert any(isinstance(c, CheckedInt) for c in converters)  # the alert routes
    assert not [c for c in converters if isinstance(c, NumberConverter)]  # no stock int / float converter anywhere
    with env.app.test_request_context():
        from flask import url_for

        assert url_for("alerts.acknowledge", alert_id=7) == "/alerts/7/acknowledge"


# ---------------------------------------------------------------------------------- integer query parameters


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/ledger?before=" + BIG, "before"),
        (f"/ledger?before={INT64_MAX + 1}", "before"),
        ("/ledger?before=\u0661\u0662", "before"),
        ("/ledger?before=1&before=2", "before"),
        ("/ledger.csv?before=1&before=2", "before"),
        ("/alerts?before=\u0661.\u0661", "before"),
        ("/alerts?after=1.\uff11", "after"),
        (f"/alerts?before=1.{INT64_MAX + 1}", "before"),
        ("/alerts?before=1.1&before=2.2", "before"),
        ("/reports?days=\uff17", "days"),
        ("/reports?days=7&days=30", "days"),
        ("/reports.csv?days=7&days=7", "days"),
    ],
)
def test_a_bad_integer_query_parameter_of_a_page_is_400_naming_it(env: Env, url: str, param: str) -> None:
    resp = env.client("manager").get(url)
    assert resp.status_code == 400, (url, resp.status_code)
    assert param in _text(resp)
    _plain(resp)


@pytest.mark.parametrize(
    "url",
    [f"/ledger?before={INT64_MAX}", f"/ledger.csv?before={INT64_MAX}", f"/alerts?before=253402300799999.{INT64_MAX}"],
)
def test_the_largest_sqlite_integer_is_a_valid_page_position(env: Env, url: str) -> None:
    assert env.client("manager").get(url).status_code == 200


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("after=\u0661", "after"),
        ("limit=" + ARABIC_10, "limit"),
        ("limit=" + FULL_1, "limit"),
        ("after=" + "9" * 5000, "after"),
        (f"after={INT64_MAX + 1}", "after"),
        ("after=-1", "after"),
        ("after=+1", "after"),
        ("after= 1", "after"),
        ("limit=1&limit=2", "limit"),
        ("status=open&status=resolved", "status"),
    ],
)
def test_a_bad_integer_query_parameter_of_the_api_is_400_naming_it(
    env: Env, token: str, query: str, param: str
) -> None:
    resp = _get(env, f"/api/v1/alerts?{query}", token)
    assert resp.status_code == 400
    assert fields(resp) == [param], errors(resp)
    _plain(resp)


def test_after_takes_the_largest_sqlite_integer(env: Env, token: str) -> None:
    resp = _get(env, f"/api/v1/alerts?after={INT64_MAX}", token)
    assert resp.status_code == 200 and resp.get_json() == {"items": [], "next_after": None}


# ------------------------------------------------------------------------------------------------------ days

DAY_URLS = ("/alerts", "/ledger", "/ledger.csv")


@pytest.mark.parametrize("url", DAY_URLS)
@pytest.mark.parametrize("query", ["to=9999-12-31", "from=9999-12-31", "from=1970-01-01&to=9999-12-31"])
def test_every_day_from_1970_to_9999_is_taken(env: Env, url: str, query: str) -> None:
    resp = env.client("manager").get(f"{url}?{query}")
    assert resp.status_code == 200, _text(resp)[:300]


@pytest.mark.parametrize("url", DAY_URLS)
@pytest.mark.parametrize(
    ("query", "param", "message"),
    [
        ("from=1969-12-31", "from", "must be a day from 1970-01-01 to 9999-12-31"),
        ("to=0001-01-01", "to", "must be a day from 1970-01-01 to 9999-12-31"),
        ("to=10000-01-01", "to", "must be a date like 2025-11-27"),
        ("from=\uff12\uff10\uff12\uff15-01-01", "from", "must be a date like 2025-11-27"),
        ("to=2025-01-0\u0661", "to", "must be a date like 2025-11-27"),
        ("from=2025-01-01&from=2025-01-02", "from", "given more than once"),
    ],
)
def test_a_bad_day_is_400_with_the_same_message_on_every_page(
    env: Env, url: str, query: str, param: str, message: str
) -> None:
    resp = env.client("manager").get(f"{url}?{query}")
    assert resp.status_code == 400, (url, query)
    assert f"{param}: {message}" in _text(resp)
    _plain(resp)


# ------------------------------------------------------------------------------------------------ forms


@pytest.fixture
def stocked(env: Env) -> Env:
    env.write(lambda ledger: ledger.record_receipt("COLA", 10, actor="t", ref="r1", location="lane:A1"))
    return env


@pytest.mark.parametrize(
    "form",
    [
        {"outcome": "theft", "qty": FULL_1, "note": "gone"},
        {"outcome": "theft", "qty": "\u0661", "note": "gone"},
        {"outcome": "theft", "qty": "\u0968", "note": "gone"},  # Devanagari 2
        {"outcome": "theft", "qty": BIG, "note": "gone"},
        {"outcome": "theft", "qty": "9" * 5000, "note": "gone"},
        {"outcome": "theft", "qty": ["1", "2"], "note": "gone"},
        {"outcome": "theft", "note": "gone", "shown_qty": "\uff13"},
        {"outcome": "count", "counted": "\u0663"},
        {"outcome": "count", "counted": ["3", "4"]},
    ],
)
def test_a_resolve_form_takes_ascii_digits_only_and_writes_nothing_else(stocked: Env, form: dict[str, Any]) -> None:
    env = stocked
    alert = _realistic_shrinkage(env)  # 3 unexplained COLA on lane A1
    manager = env.client("manager")
    before = _fingerprint(env)
    resp = manager.post(
        f"/alerts/{alert}/resolve", data={**form, "csrf_token": env.csrf(manager)}, follow_redirects=True
    )
    assert resp.status_code == 200
    assert f"Alert {alert} not resolved:" in _text(resp)
    _plain(resp)
    assert _fingerprint(env) == before


def test_a_count_form_given_twice_is_refused(env: Env) -> None:
    client = env.client("manager")
    before = env.sql("SELECT count(*) FROM physical_counts")
    for counted in (["3", "4"], FULL_1, ARABIC_10, BIG):
        client.post("/lanes/A1/count", data={"counted": counted, "csrf_token": env.csrf(client)})
        assert "Not counted: the count" in _text(client.get("/lanes/A1"))
    assert env.sql("SELECT count(*) FROM physical_counts") == before


# ------------------------------------------------------------------------------------------------- CSV files


def _import(env: Env, kind: str, body: str, token: str, **kw: Any) -> TestResponse:
    return env.app.test_client().post(
        f"/api/v1/imports/{kind}",
        data=body.encode(),
        content_type="text/csv",
        headers={"Authorization": f"Bearer {token}"},
        **kw,
    )


CSV_BAD_NUMBERS = [
    ("sales", f"id,timestamp,sku,quantity\nn1,{TS},COLA,1\nn2,{TS},COLA,{ARABIC_10}\n", 3, "quantity"),
    ("receipts", f"id,timestamp,sku,quantity\nn1,{TS},COLA,{FULL_1}\n", 2, "quantity"),
    ("returns", f"id,timestamp,sku,quantity\nn1,{TS},COLA,\u0967\n", 2, "quantity"),
    ("picks", f"id,timestamp,sku,quantity,order\nn1,{TS},COLA,\uff12,W1\n", 2, "quantity"),
    ("counts", f"id,timestamp,sku,counted\nn1,{TS},COLA,\u0663\n", 2, "counted"),
    ("sales", f"id,timestamp,sku,quantity\nn1,{TS},COLA,{'9' * 5000}\n", 2, "quantity"),
    ("counts", f"id,timestamp,sku,counted\nn1,{TS},COLA,-{'9' * 5000}\n", 2, "counted"),
    ("sales", "id,timestamp,sku,quantity\nn1,1969-12-31T23:59:59Z,COLA,1\n", 2, "timestamp"),
]


@pytest.mark.parametrize(("kind", "body", "line", "what"), CSV_BAD_NUMBERS)
def test_a_csv_number_in_other_digits_is_a_row_error_and_nothing_is_written(
    env: Env, token: str, kind: str, body: str, line: int, what: str
) -> None:
    before = snapshot(env)
    resp = _import(env, kind, body, token)
    assert resp.status_code == 422, _text(resp)[:300]
    [error] = errors(resp)
    assert error["field"] == f"line {line}" and error["message"].startswith(what), error
    assert len(error["message"]) < 200
    _plain(resp)
    assert snapshot(env) == before
    # the same file through `smartshelf ledger import` (no hub running): the same row error
    parsed = parse_csv(kind, body.encode())  # type: ignore[arg-type]
    assert [(e.line, e.message) for e in parsed.errors] == [(line, error["message"])]


def test_an_epc_in_other_digits_is_a_row_error(env: Env, token: str) -> None:
    before = snapshot(env)
    epc = "\u0663\u0660" + SEED_EPC[2:]
    resp = _import(env, "epcs", f"epc,sku\n{epc},COLA\n", token)
    assert resp.status_code == 422 and fields(resp) == ["line 2"]
    assert snapshot(env) == before


# --------------------------------------------------------------------------------------------------- JSON


def _post_raw(env: Env, kind: str, body: str, token: str) -> TestResponse:
    return env.app.test_client().post(
        f"/api/v1/{kind}", data=body, content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"id": "b1", "sku": "COLA", "quantity": %s}' % ("9" * 5000), "quantity"),
        ('{"id": "b1", "sku": "COLA", "quantity": -%s}' % ("9" * 5000), "quantity"),
        ('{"items": [{"id": "b1", "sku": "COLA", "quantity": %s}]}' % ("1" * 5000), "items[0].quantity"),
        ('{"id": "b1", "sku": "COLA", "quantity": 1, "timestamp": %s}' % ("1" * 5000), "timestamp"),
        ('{"id": %s, "sku": "COLA", "quantity": 1}' % ("1" * 5000), "id"),
        ('{"items": %s}' % ("1" * 5000), "items"),
    ],
)
def test_an_overlong_integer_in_json_gets_a_plain_field_message(env: Env, token: str, body: str, field: str) -> None:
    before = snapshot(env)
    resp = _post_raw(env, "sales", body, token)
    assert resp.status_code == 422, _text(resp)[:300]
    assert fields(resp) == [field]
    assert len(errors(resp)[0]["message"]) < 200
    _plain(resp)
    assert snapshot(env) == before


@pytest.mark.parametrize(
    ("kind", "item", "field"),
    [
        ("sales", {"id": "b1", "sku": "COLA", "quantity": INT64_MAX + 1}, "quantity"),
        ("sales", {"id": "b1", "sku": "COLA", "quantity": -(2**63) - 1}, "quantity"),
        ("counts", {"id": "b1", "sku": "COLA", "counted": 2**64}, "counted"),
        ("receipts", {"id": "b1", "sku": "COLA", "quantity": 1, "timestamp": INT64_MAX + 1}, "timestamp"),
    ],
)
def test_an_integer_beyond_sqlites_range_in_json_is_a_field_error(
    env: Env, token: str, kind: str, item: dict[str, Any], field: str
) -> None:
    before = snapshot(env)
    resp = _post_raw(env, kind, json.dumps(item), token)
    assert resp.status_code == 422 and fields(resp) == [field]
    assert snapshot(env) == before


@pytest.mark.parametrize(
    ("kind", "item", "column", "value"),
    [
        ("sales", {"id": "w1", "sku": "COLA", "quantity": 2.0}, "qty", -2),
        ("receipts", {"id": "w2", "sku": "TEA", "quantity": 1e2}, "qty", 100),
        ("receipts", {"id": "w3", "sku": "TEA", "quantity": 1, "timestamp": 1.7e12}, "ts_ms", 1_700_000_000_000),
    ],
)
def test_a_whole_number_with_a_fraction_is_the_integer_the_document_says_it_is(
    env: Env, token: str, kind: str, item: dict[str, Any], column: str, value: int
) -> None:
    """Found by the API fuzzer: JSON Schema's "integer" is any number without a fractional part (2.0 is 2), so the
    document took 2.0 and the server refused it; 1.5 stays refused (tests/test_web_api.py)."""
    resp = _post_raw(env, kind, json.dumps(item), token)
    assert resp.status_code == 201, _text(resp)[:300]
    (movement,) = resp.get_json()["items"][0]["movement_ids"]
    assert env.sql(f"SELECT {column} FROM movements WHERE id = ?", (movement,)) == [(value,)]


def _timestamp_schema(env: Env) -> dict[str, Any]:
    spec = env.app.test_client().get(OPENAPI_PATH).get_json()
    string, integer = spec["components"]["schemas"]["SaleItem"]["properties"]["timestamp"]["oneOf"]
    assert integer["type"] == "integer"
    return dict(string)


@pytest.mark.parametrize(
    "stamp",
    [
        "1970-01-01T00:00:00Z",
        "2025-11-27T14:03:00.5+01:00",
        "2025-11-27T14:03:00.123456789-09:30",
        "9999-12-31T23:59:59.999Z",
    ],
)
def test_a_timestamp_of_the_documented_pattern_is_taken(env: Env, token: str, stamp: str) -> None:
    schema = _timestamp_schema(env)
    assert re.search(schema["pattern"], stamp)
    resp = _post_raw(env, "receipts", json.dumps({"id": "t1", "sku": "TEA", "quantity": 1, "timestamp": stamp}), token)
    assert resp.status_code == 201, _text(resp)[:300]


@pytest.mark.parametrize(
    "stamp",
    [
        "2025-11-27T14:03:00z",  # RFC 3339 (the "date-time" format) allows a lower-case t and z; the server never did
        "2025-11-27t14:03:00Z",
        "2016-12-31T23:59:60Z",  # a leap second: RFC 3339 has it, Python's datetime has not
        "1969-07-20T20:17:40Z",  # before 1970
        "2025-11-27T14:03+01:00",  # ISO 8601 without seconds: the server took it, the document's date-time does not
        "2025-11-27 14:03:00Z",
        "2025-11-27T14:03:00+0100",
        "2025-W48-4T14:03:00Z",
    ],
)
def test_a_timestamp_the_document_refuses_is_refused(env: Env, token: str, stamp: str) -> None:
    """Found by the API fuzzer: the document's date-time took what the server refused (and the other way round);
    its pattern now says exactly what the server takes: RFC 3339 with an upper-case T and Z, 1970..9999."""
    assert not re.search(_timestamp_schema(env)["pattern"], stamp)
    before = snapshot(env)
    resp = _post_raw(env, "sales", json.dumps({"id": "t1", "sku": "COLA", "quantity": 1, "timestamp": stamp}), token)
    assert resp.status_code == 422 and fields(resp) == ["timestamp"], _text(resp)[:300]
    assert snapshot(env) == before


@pytest.mark.parametrize(
    ("epc", "status"),
    [
        (SEED_EPC, 200),
        (f" {SEED_EPC.lower()[:4]}-{SEED_EPC[4:8]}:{SEED_EPC[8:]} ", 200),  # separators and any case
        ("3074", 404),  # hex, but no such tag
        ("zz", 400),
        ("307", 400),  # half a byte
        ("\ufb00", 400),  # the ligature "ﬀ": Python's upper() makes it "FF", which the server used to look up
        ("\uff13\uff10", 400),  # full-width "30"
        ("30\t74", 400),  # separators are spaces, dashes and colons
    ],
)
def test_an_epc_is_taken_exactly_as_the_document_says(env: Env, token: str, epc: str, status: int) -> None:
    """Found by the API fuzzer: ``epc`` was documented as any string of 2..100 characters, and the server refused most
    of them (not hex) while taking a few the description never mentions."""
    spec = env.app.test_client().get(OPENAPI_PATH).get_json()
    (param,) = spec["paths"]["/api/v1/tags/trail"]["get"]["parameters"]
    assert bool(re.search(param["schema"]["pattern"], epc)) == (status != 400)
    resp = _get(env, "/api/v1/tags/trail", token, query_string={"epc": epc})
    assert resp.status_code == status, _text(resp)[:300]
    if status == 400:
        assert fields(resp) == ["epc"]


# characters the regular expression dialects disagree on: Python's \s has \x1c-\x1f and \x85, ECMA 262's (the
# document's) has \ufeff; Python's . takes \r, \u2028 and \u2029, ECMA's does not; Python's \d takes any digit
DIALECT_SAMPLES = ["\x1c", "\x1f", "\x85", "\ufeff", "\r", "\u2028", "\u2029", "\u0661", "\uff11", " ", "\t", "\n"]


def test_every_pattern_means_to_the_server_what_it_means_in_the_document() -> None:
    """Found by the API fuzzer: an id "0\\x1f" matched the document's ``^\\S(.*\\S)?$`` (ECMA 262: \\x1f is no space)
    and was refused by the server's (Python: it is), with "no spaces at either end"."""
    patterned = [f for fs in (*FIELDS.values(), *QUERIES.values()) for f in fs if f.pattern is not None]
    assert len(patterned) >= 8
    for f in patterned:
        assert f.pattern is not None
        document = jsonschema_rs.validator_for({"type": "string", "pattern": f.pattern})
        samples = [s for c in DIALECT_SAMPLES for s in (c, f"A{c}", f"{c}A", f"A{c}A", f"AB{c}12")]
        for text in samples:  # the validator's match (hub/web/api/validation.py) against the document's
            assert bool(re.search(_python_pattern(f.pattern), text)) == document.is_valid(text), (f.name, text)


@pytest.mark.parametrize(("kind", "item"), [
    ("sales", {"id": "0\x1f", "sku": "COLA", "quantity": 1}),
    ("picks", {"id": "p1", "sku": "COLA", "quantity": 1, "order": "\x1f"}),
])  # fmt: skip
def test_an_id_or_order_of_python_whitespace_is_refused_by_the_document_too(
    env: Env, token: str, kind: str, item: dict[str, Any]
) -> None:
    spec = env.app.test_client().get(OPENAPI_PATH).get_json()
    name = {"sales": "SaleItem", "picks": "PickItem"}[kind]
    document = jsonschema_rs.validator_for(spec["components"]["schemas"][name])
    assert not document.is_valid(item)
    before = snapshot(env)
    resp = _post_raw(env, kind, json.dumps(item), token)
    assert resp.status_code == 422, _text(resp)[:300]
    assert snapshot(env) == before


def test_every_integer_field_is_bounded_within_sqlites_range() -> None:
    declared = [f for fs in (*FIELDS.values(), *QUERIES.values()) for f in fs if f.type == "integer"]
    assert declared
    for f in declared:
        assert f.minimum is not None and f.maximum is not None, f.name
        assert -(2**63) <= f.minimum <= f.maximum <= INT64_MAX, f.name


# ------------------------------------------------------------------------------------ the OpenAPI document


def _get(env: Env, url: str, token: str, **kw: Any) -> TestResponse:
    client: FlaskClient = env.app.test_client()
    return client.get(url, headers={"Authorization": f"Bearer {token}"}, **kw)


def _request(env: Env, path: str, method: str, args: list[tuple[str, str]], token: str) -> TestResponse:
    client: FlaskClient = env.app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    if method == "get":
        base = CALLS_BY_PATH.get(path, "")
        query = [(k, v) for k, v in _query_of(base) if k not in {a for a, _ in args}] + args
        return client.get(path, query_string=query, headers=headers)
    body = CALLS_BY_PATH[path]
    return client.post(path, query_string=args, data=body.encode(), content_type="text/csv", headers=headers)


def _query_of(url: str) -> list[tuple[str, str]]:
    _, _, query = url.partition("?")
    return [tuple(p.split("=", 1)) for p in query.split("&") if p]  # type: ignore[misc]


CALLS_BY_PATH: dict[str, str] = {
    url.split("?")[0]: (body if isinstance(body, str) else url) for _method, url, body in CALLS.values()
}

# a value of ``n`` characters each string parameter takes (the server may still not know it: 404 is fine)
STRING_SAMPLES: dict[str, Any] = {
    "sku": lambda n: "X" * n,
    "lane": lambda n: "A" * n,
    "epc": lambda n: SEED_EPC[:2] + "-" * (n - 2) if n >= 2 else SEED_EPC[:n],
    "name": lambda n: "f" * n,
    "status": None,  # an enum
}


def _documented(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, p) for path, ops in spec["paths"].items() for method, op in ops.items()
        for p in op.get("parameters", [])
    ]  # fmt: skip


def test_every_documented_parameter_bound_is_what_the_server_enforces(env: Env, token: str) -> None:
    spec = env.app.test_client().get(OPENAPI_PATH).get_json()
    params = _documented(spec)
    imports = [path for path, ops in spec["paths"].items() if path.startswith("/api/v1/imports/")]
    assert {path for path, _, p in params if p["name"] == "name"} == set(imports)  # ?name= of every import
    tried = 0
    for path, method, p in params:
        name, schema = p["name"], p["schema"]
        assert p["in"] == "query"
        cases: list[tuple[str, bool]] = []  # (value, refused?)
        if schema["type"] == "integer":
            low, high = schema["minimum"], schema["maximum"]  # every integer parameter is bounded
            assert high <= INT64_MAX
            cases = [(str(low - 1), True), (str(low), False), (str(high), False), (str(high + 1), True)]
        elif "enum" in schema:
            cases = [(v, False) for v in schema["enum"]] + [(schema["enum"][0] + "x", True)]
        else:
            sample = STRING_SAMPLES[name]
            low, high = schema["minLength"], schema["maxLength"]
            cases = [(sample(low), False), (sample(high), False), (sample(high + 1), True)]
            if low > 0:
                cases.append((sample(low - 1), True))
        for value, refused in cases:
            resp = _request(env, path, method, [(name, value)], token)
            where = f"{method.upper()} {path}?{name}={value[:20]}"
            assert resp.status_code < 500, where
            if refused:
                assert resp.status_code == 400 and name in fields(resp), (where, resp.status_code)
            else:
                assert resp.status_code != 400, (where, errors(resp))
            tried += 1
        # given twice, even with the same valid value: refused, naming it (as the 400 response documents)
        ok = cases[1][0]
        resp = _request(env, path, method, [(name, ok), (name, ok)], token)
        assert resp.status_code == 400 and fields(resp) == [name], (path, name, resp.status_code)
        assert "more than once" in errors(resp)[0]["message"]
        assert "more than once" in spec["paths"][path][method]["responses"]["400"]["description"]
    assert tried > 30


def test_a_csv_import_body_must_not_be_empty_as_documented(env: Env, token: str) -> None:
    spec = build_spec(api_scopes(env.app))
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/v1/imports/"):
            continue
        body = ops["post"]["requestBody"]
        assert body["content"]["text/csv"]["schema"]["minLength"] == 1
        assert "400" in ops["post"]["responses"]
        before = snapshot(env)
        resp = _import(env, path.rsplit("/", 1)[1], "", token)
        assert resp.status_code == 400 and fields(resp) == ["body"], _text(resp)[:300]
        assert snapshot(env) == before
