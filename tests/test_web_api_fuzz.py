"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis), against a live hub.

The hub's web server runs as the hub runs it (``WebServer.start`` on 127.0.0.1, the ledger's writer on a loop thread
of its own, a seeded ledger: tests/web_support.py) and is reached over a real socket with **HTTPS**, the client trusting
the hub's generated certificate (schemathesis' ``tls-verify``: its PEM file). The schema is loaded from the live
``GET /api/openapi.json``. API clients: one per scope, one with every scope; besides them no token and a token of no
client.

1. Every operation with every client (one request each): the client with the scope gets an answer of the document,
   one without it 403, no token or an unknown one 401, each body and content type as documented.
2. The fuzzing (schemathesis' coverage phase: boundaries and every way to break the schema; then its fuzzing phase):
   every case is sent by the client holding the operation's scope, one case in eight also by another client (chosen by
   the case's content, so a failure replays). Known SKUs, lanes, locations and EPCs are offered to the generator
   beside random ones, and the CSV imports get CSV-shaped files, so requests also get past validation and write.
   Checked on every response: no 5xx, the status code documented, the body matching the documented schema and
   content type, headers as documented, a case that breaks the schema refused (4xx), a case the document takes
   refused only for the ledger's state or what JSON Schema cannot say (``_beyond_the_schema``), 401 / 403 by the
   token; and no partial write: a refused request or a read changes nothing (movements, balances, counts, the EPC
   table, the audit trail), an accepted post adds exactly the movements and counts it reports, under its ids.
3. Afterwards: the ledger's consistency check (every balance equals the sum of its movements), and every movement of
   an API client came from a request that reported success (none from a refused or timed-out one).

Bounded: the coverage phase's cases plus ``MAX_EXAMPLES`` fuzzing cases per operation, a fixed seed, no example
database: CI runs the same cases every time (about 2,000 requests, a minute on the 2-core development machine).
``SMARTSHELF_FUZZ_EXAMPLES`` and ``SMARTSHELF_FUZZ_SEED`` run more or other cases locally.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import strategies as st

from hub.ledger import LedgerReader
from hub.ledger.epc_imports import SPEC as EPC_SPEC
from hub.ledger.imports import SPECS
from hub.web.accounts.clients import SCOPES, add_client, new_token, token_sha256
from hub.web.api.fields import FIELDS, PREFIX
from hub.web.api.openapi import OPENAPI_PATH, OPERATIONS
from hub.web.server import WebServer
from hub.web.serving.tls import ensure_self_signed, host_names, self_signed_paths
from tests import fuzz_support as fuzz
from tests.web_support import SEED_EPC, Env, run_env

MAX_EXAMPLES = fuzz.setting(fuzz.MAX_EXAMPLES_VAR, 50)
SEED = fuzz.setting(fuzz.SEED_VAR, 13)
ALL = "all"  # the client with every scope
# how a request breaking the document may be refused: as documented (a body too large to read is a 413, whatever
# else is wrong with it; a method the path lacks a 405)
REFUSALS = ["400", "401", "403", "404", "405", "409", "413", "415", "422"]
# what the seeded ledger knows, offered to the generator beside random values (else nearly every post is a 422)
KNOWN = {
    "skus": ["COLA", "TEA", "SOUP"],
    "lanes": ["A1", "B1", "C1"],
    "locations": ["backroom", "lane:A1", "lane:B1", "lane:C1", "warehouse"],
    "epcs": [SEED_EPC],
    # ids sent again and again: duplicates (200) and conflicts (409), and once in a while twice in a request (422)
    "ids": [f"fuzz-{i:02d}" for i in range(40)],
}
BINDINGS = {  # (dictionary, how often a generated value is replaced by one of it)
    "body.id": ("ids", 0.6),
    "body.items[*].id": ("ids", 0.6),
    "body.sku": ("skus", 0.9),
    "body.items[*].sku": ("skus", 0.9),
    "query.sku": ("skus", 0.7),
    "body.location": ("locations", 0.5),
    "body.items[*].location": ("locations", 0.5),
    "query.lane": ("lanes", 0.7),
    "query.epc": ("epcs", 0.7),
}
TABLES = ("movements", "balances", "physical counts", "audit", "EPC table")
_FINGERPRINT = (
    "SELECT (SELECT count(*) || '/' || coalesce(max(id), 0) FROM movements),"
    " (SELECT count(*) || '/' || total(qty) || '/' || total(length(location) * qty) FROM balances),"
    " (SELECT count(*) || '/' || coalesce(max(id), 0) FROM physical_counts),"
    " (SELECT count(*) || '/' || coalesce(max(id), 0) FROM audit),"
    " (SELECT count(*) || '/' || total(imported_ms) || '/' || group_concat(epc || sku) FROM epc_skus)"
)


@dataclass
class LiveHub:
    env: Env
    web: WebServer
    certificate: Path
    tokens: dict[str, str | None]  # client -> token
    scopes: dict[str, frozenset[str]]  # client -> its scopes
    session: requests.Session
    reader: sqlite3.Connection  # the test's own, read-only, autocommit: every query sees the latest commit
    sent: dict[str, int] = field(default_factory=dict)  # "<operation> <phase> <mode> <status>" -> requests
    written: set[int] = field(default_factory=set)  # movements added by requests that reported success

    def count(self, key: str) -> None:
        self.sent[key] = self.sent.get(key, 0) + 1


def _add_client(env: Env, name: str, scopes: tuple[str, ...]) -> str:
    token = new_token()
    env.write(lambda ledger: ledger.transact(lambda tx: add_client(tx, f"fuzz-{name}", token_sha256(token), scopes,
                                                                   actor="t")))  # fmt: skip
    return token


def _add_clients(env: Env) -> tuple[dict[str, str | None], dict[str, frozenset[str]]]:
    tokens, scopes = fuzz.first_clients(new_token)
    for name, given in [*((s, (s,)) for s in SCOPES), (ALL, SCOPES)]:
        tokens[name] = _add_client(env, name, given)
        scopes[name] = frozenset(given)
    return tokens, scopes


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    """One hub for the module: the sweep, the fuzzing, then the ledger's checks, in this order."""
    for env in run_env(tmp_path_factory.mktemp("fuzz")):
        tls = self_signed_paths(env.db)
        ensure_self_signed(tls, *host_names("127.0.0.1"))
        tokens, scopes = _add_clients(env)
        web = WebServer.start(env.db, env.writer.ledger, env.writer.loop, host="127.0.0.1", port=0, tls=tls)
        session = requests.Session()
        session.trust_env = False  # no proxy for the hub on loopback; the CA is schemathesis' tls-verify
        reader = sqlite3.connect(f"file:{env.db}?mode=ro", uri=True, isolation_level=None)
        try:
            yield LiveHub(env, web, tls.certificate, tokens, scopes, session, reader)
        finally:
            reader.close()
            session.close()
            asyncio.run(web.stop())


def _mostly(valid: st.SearchStrategy[str], invalid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Nine values in ten from ``valid``: a file with one bad row is refused whole, so most rows must be good."""
    return st.integers(0, 9).flatmap(lambda n: invalid if n == 0 else valid)


def _csv_files(kind: str) -> st.SearchStrategy[str]:
    """CSV files of an import kind: its header (columns in any order and case), rows of mostly good values."""
    spec = EPC_SPEC if kind == "epcs" else SPECS[kind]  # type: ignore[index]
    text = st.text(max_size=70)
    values = {
        "id": _mostly(st.sampled_from(KNOWN["ids"]) | st.from_regex(r"\Afuzz-[a-z0-9]{1,8}\Z"), text),
        "timestamp": _mostly(
            st.sampled_from(["2025-11-27T14:03:00+01:00", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", ""]),
            st.sampled_from(["1969-12-31T23:59:59Z", "yesterday", "1700000000000", "\u0661\u0667"]),
        ),
        "sku": _mostly(st.sampled_from(KNOWN["skus"]), text),
        "quantity": _mostly(st.integers(1, 1_000_000).map(str), st.sampled_from(["0", "-2", "1.5", "\u0661\u0660"])),
        "counted": _mostly(st.integers(0, 1_000_000).map(str), st.sampled_from(["-1", "1000001", "x", "\uff11"])),
        "order": _mostly(st.from_regex(r"\Aorder-[0-9]{1,4}\Z"), text),
        "location": _mostly(st.sampled_from(["", *KNOWN["locations"]]), text),
        "restockable": _mostly(st.sampled_from(["yes", "no", "true", "0", ""]), st.sampled_from(["maybe", "2"])),
        "epc": _mostly(st.sampled_from([SEED_EPC, SEED_EPC.lower(), "30:74:25", "E280-1160"]), text),
    }
    optional = st.lists(st.sampled_from(spec.optional), unique=True) if spec.optional else st.just([])
    columns = optional.flatmap(lambda extra: st.permutations([*spec.required, *extra]))

    def file(names: list[str]) -> st.SearchStrategy[str]:
        row = st.tuples(*(values[n] for n in names)).map(lambda cells: ",".join(_cell(c) for c in cells))
        header = st.sampled_from([",".join(names), ",".join(names).upper(), "\ufeff" + ",".join(names)])
        return st.tuples(header, st.lists(row, min_size=1, max_size=6)).map(lambda f: "\r\n".join([f[0], *f[1]]) + "\n")

    return columns.flatmap(file)


def _cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """Fuzzing phase: an import gets a CSV file of its kind about half the time (random text says little more than
    "bad header")."""
    path = context.operation.path if context.operation is not None else ""
    if not path.startswith(f"{PREFIX}/imports/") or not isinstance(body, str) or not body:
        return st.just(body)  # not an import, or a body breaking the schema (empty, not a string): as generated
    return st.one_of(st.just(body), _csv_files(path.rsplit("/", 1)[1]))


@pytest.fixture
def api_schema(live: LiveHub, request: pytest.FixtureRequest) -> Any:
    loaded = fuzz.load_schema(
        request,
        f"{live.web.url}api/openapi.json",
        live.certificate,
        seed=SEED,
        max_examples=MAX_EXAMPLES,
        unexpected_methods=["DELETE", "PATCH"],
        refusals=REFUSALS,
        known=KNOWN,
        bindings=BINDINGS,
    )
    loaded.hook(flatmap_body)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


def _fingerprint(live: LiveHub) -> tuple[str, ...]:
    return tuple(live.reader.execute(_FINGERPRINT).fetchone())


# What a request the document takes may still be refused for: the ledger's state, and what JSON Schema cannot say
STATE = (
    "unknown SKU",
    "unknown lane",
    "no stock was ever booked at",
    "was already posted with different content",  # an id used before (listed beside the request's other errors)
    "was already recorded",
    "was already used by",
)


def _beyond_the_schema(case: Any, error: dict[str, Any]) -> bool:
    """Is this error of a request that matches the document about something the document cannot say?"""
    field, message = error["field"], error["message"]
    if any(reason in message for reason in STATE):
        return True
    if field.startswith("line ") or field == "file":  # a CSV file's content: the document says "text/csv"
        return True
    if "repeats items[" in message:  # an id unique within a request (uniqueItems cannot say "by id")
        return True
    if "not between 1970 and 9999" in message:  # an offset taking a timestamp of 1970 or 9999 across
        return True
    if field.endswith("id") and "printable characters" in message:  # printable: Unicode categories, no pattern
        body = case.body if isinstance(case.body, dict) else {}
        item = body["items"][error["index"]] if "items" in body else body
        return not str(item.get("id", "")).isprintable()
    return False


def _send(live: LiveHub, case: Any, client: str) -> Any:
    """``case`` sent as ``client``; checks the answer against the document, the token and the ledger."""
    headers = fuzz.bearer(live.tokens[client])
    before = _fingerprint(live)
    response = case.call(session=live.session, headers=headers)
    phase = f"{case.meta.phase.name.value} {case.meta.generation.mode.value}" if case.meta is not None else "sweep"
    live.count(f"{case.operation.label} {phase} {response.status_code}")
    after = _fingerprint(live)
    status = response.status_code
    what = f"{case.method} {case.formatted_path} as {client} -> {status}"
    if status >= 300 or case.operation.method.upper() == "GET":
        changed = [t for t, b, a in zip(TABLES, before, after, strict=True) if b != a]
        assert not changed, f"{what} changed the {', '.join(changed)}: {response.text}"
    elif status == 200:  # every item or row already in the ledger
        assert after[:3] == before[:3], f"{what} (all duplicates) wrote: {response.text}"
    else:
        _check_write(live, client, response, before)
    case.validate_response(response, checks=fuzz.CHECKS, headers=headers)
    if case.meta is not None and case.meta.generation.mode.value == "positive" and status in (400, 422):
        unexplained = [e for e in response.json()["errors"] if not _beyond_the_schema(case, e)]
        assert not unexplained, f"a request the document takes was refused: {unexplained}"
    fuzz.check_token(case, response, client, live.scopes)
    return response


def _check_write(live: LiveHub, client: str, response: Any, before: tuple[str, ...]) -> None:
    """An accepted post or import added exactly what it reports, all in its client's name."""
    first_movement, first_count = (int(before[i].split("/")[1]) for i in (0, 2))
    new = list(live.reader.execute("SELECT id, source_ref, actor FROM movements WHERE id > ?", (first_movement,)))
    counts = {c for (c,) in live.reader.execute("SELECT id FROM physical_counts WHERE id > ?", (first_count,))}
    assert {actor for _, _, actor in new} <= {f"api:fuzz-{client}"}, new
    body = response.json()
    if "items" in body:  # a post: every created item's movements (and count), only those, under the item's id
        created = [item for item in body["items"] if item["status"] == "created"]
        assert {m for m, _, _ in new} == {m for item in created for m in item["movement_ids"]}, (body, new)
        assert counts == {item["count_id"] for item in created if "count_id" in item}, (body, counts)
        for item in created:
            refs = {ref for m, ref, _ in new if m in item["movement_ids"]}
            assert all(ref.endswith(f":{item['id']}") for ref in refs), (item, refs)
    else:  # an import: something for each row applied (a count may need no adjustment, an EPC no movement)
        assert body["applied"] > 0 and (new or counts or body["kind"] == "epcs"), body
    live.written |= {m for m, _, _ in new}


def test_every_client_gets_its_documented_answer_from_every_operation(api_schema: Any, live: LiveHub) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # every operation of the API but the document's own (schemathesis leaves out the URL it loaded)
    assert sorted(o.label for o in operations) == sorted(
        f"{o.method.upper()} {o.path}" for o in OPERATIONS if o.path != OPENAPI_PATH
    )
    for operation in operations:
        if operation.path.startswith(f"{PREFIX}/imports/"):
            case = operation.Case(body="not,a,file\n", media_type="text/csv")
        elif operation.method.upper() == "POST":
            case = operation.Case(body={}, media_type="application/json")
        else:
            case = operation.Case()
        for client in live.tokens:
            _send(live, case, client)


@schema.parametrize()
def test_the_api_keeps_its_openapi_document_under_fuzzing(case: Any, live: LiveHub) -> None:
    own = fuzz.scope_of(case.operation) or fuzz.NO_TOKEN
    _send(live, case, own)
    # one case in eight also by another client (the same one whenever this case replays)
    other = fuzz.other_client([case.method, case.query, case.body], own, live.tokens, 8)
    if other is not None:
        _send(live, case, other)


def test_the_ledger_holds_after_the_fuzzing(live: LiveHub) -> None:
    if not any(" fuzzing " in key for key in live.sent):
        pytest.skip("checks what the fuzzing test (above, in this module) left in the ledger")
    print(f"{sum(live.sent.values())} requests, {len(live.written)} movements written")  # shown with -s

    async def consistency() -> list[tuple[str, str, int, int]]:
        async with await LedgerReader.open(live.env.db) as reader:
            return await reader.consistency_errors()

    assert asyncio.run(consistency()) == []  # every balance is the sum of its movements
    api_movements = {m for (m,) in live.env.sql("SELECT id FROM movements WHERE actor LIKE 'api:%'")}
    assert api_movements == live.written  # none from a refused request, none after its answer
    # the fuzzing got past validation: every kind of post, and some files, were written
    written = {key.split(" fuzzing")[0] for key, n in live.sent.items() if key.endswith(" 201") and n}
    posts = {f"POST {PREFIX}/{kind}" for kind in FIELDS}
    assert posts <= written and any(op.startswith(f"POST {PREFIX}/imports/") for op in written), sorted(written)
