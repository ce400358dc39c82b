"""The central API fuzzed from its own OpenAPI document (schemathesis), served as ``central serve`` serves it.

A central store on the session's PostgreSQL (tests/fleet_support.py), seeded through the consumer's write path
(tests/test_central_web.py ``seed_stores``: two regions and a hub of no store), ``CentralWebServer`` on 127.0.0.1
over **HTTPS** (its generated certificate trusted by schemathesis' ``tls-verify``), the schema loaded from the live
``GET /api/v1/openapi.json``. Clients: one per scope, one with every scope, one with every scope but only the north's
stores; besides them no token and a token of no client.

Checked on every response: no 5xx, the status code, content type, headers and body as documented, a request breaking
the document refused (4xx), 401 / 403 by the token; a client of the north never gets a row of another store. The
fuzzing is bounded (the coverage phase plus ``MAX_EXAMPLES`` cases per operation, a fixed seed, no example database):
the same few hundred requests every run. ``SMARTSHELF_FUZZ_EXAMPLES`` / ``SMARTSHELF_FUZZ_SEED`` run more or others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis

from hub.central.config import DatabaseConfig
from hub.central.schema import migrate
from hub.central.web import accounts
from hub.central.web.api_spec import OPENAPI_PATH, OPERATIONS
from hub.central.web.config import load_web_config
from hub.central.web.pg import Database
from hub.central.web.schema import SCOPES
from hub.central.web.server import CentralWebServer
from hub.web.accounts.clients import token_sha256
from tests import fuzz_support as fuzz
from tests.test_central_web import seed_stores, write_config
from tools.servers.postgres import Postgres

MAX_EXAMPLES = fuzz.setting(fuzz.MAX_EXAMPLES_VAR, 30)
SEED = fuzz.setting(fuzz.SEED_VAR, 14)
ALL, NORTH = "all", "north"
KNOWN = {"stores": ["n1", "s1"], "hubs": ["hub-n1", "hub-s1", "hub-x"], "skus": ["COLA", "TEA", "SOUP"]}
BINDINGS = {"query.store": ("stores", 0.5), "query.hub": ("hubs", 0.5), "query.sku": ("skus", 0.6)}


@dataclass
class LiveCentral:
    server: CentralWebServer
    certificate: Path
    tokens: dict[str, str | None]
    scopes: dict[str, frozenset[str]]
    session: requests.Session
    sent: int = 0


@pytest.fixture(scope="module")
def live(postgres_server: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCentral]:
    if not postgres_server.running:
        postgres_server.start()
    name = "central_web_fuzz"
    dsn = postgres_server.create_database(name)
    tmp = tmp_path_factory.mktemp("central-fuzz")

    async def prepare() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    db = Database.start(DatabaseConfig(dsn=dsn), max_size=8)
    tokens, scopes = fuzz.first_clients(accounts.new_token)
    try:
        seed_stores(db, dsn)
        for client, given, regions in [*((s, (s,), None) for s in SCOPES), (ALL, SCOPES, None),
                                       (NORTH, SCOPES, ["north"])]:  # fmt: skip
            token = accounts.new_token()
            digest = token_sha256(token)
            db.run(lambda c, n=client, g=given, r=regions, d=digest: accounts.add_client(c, f"fuzz-{n}", d, g, r,
                                                                                        actor="t"))  # fmt: skip
            tokens[client], scopes[client] = token, frozenset(given)
        server = CentralWebServer.start(load_web_config(write_config(tmp, dsn)), database=db)
        session = requests.Session()
        session.trust_env = False
        try:
            yield LiveCentral(server, tmp / "central-web.tls" / "cert.pem", tokens, scopes, session)
        finally:
            session.close()
            server.stop(close_database=False)
    finally:
        db.close()
        postgres_server.drop_database(name)


@pytest.fixture
def api_schema(live: LiveCentral, request: pytest.FixtureRequest) -> Any:
    return fuzz.load_schema(
        request,
        f"{live.server.url}{OPENAPI_PATH[1:]}",
        live.certificate,
        seed=SEED,
        max_examples=MAX_EXAMPLES,
        unexpected_methods=["POST", "DELETE"],
        refusals=["400", "401", "403", "404", "405"],
        known=KNOWN,
        bindings=BINDINGS,
    )


schema = schemathesis.pytest.from_fixture("api_schema")


def _send(live: LiveCentral, case: Any, client: str) -> Any:
    headers = fuzz.bearer(live.tokens[client])
    response = case.call(session=live.session, headers=headers)
    live.sent += 1
    case.validate_response(response, checks=fuzz.CHECKS, headers=headers)
    fuzz.check_token(case, response, client, live.scopes)
    if client == NORTH and response.status_code == 200:
        hubs = {item["hub_id"] for item in response.json()["items"]}
        assert hubs <= {"hub-n1"}, f"a client of the north got {hubs}"
    return response


def test_every_client_gets_its_documented_answer(api_schema: Any, live: LiveCentral) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert sorted(o.path for o in operations) == sorted(f"/api/v1/{name}" for name in OPERATIONS)
    for operation in operations:
        for client in live.tokens:
            response = _send(live, operation.Case(), client)
            if client in (ALL, NORTH):
                assert response.status_code == 200 and response.json()["items"], (operation.path, client)


@schema.parametrize()
def test_the_central_api_keeps_its_openapi_document_under_fuzzing(case: Any, live: LiveCentral) -> None:
    own = fuzz.scope_of(case.operation) or fuzz.NO_TOKEN
    _send(live, case, own)
    # one case in four also by another client (the same one whenever this case replays)
    other = fuzz.other_client([case.method, case.path, case.query], own, live.tokens, 4)
    if other is not None:
        _send(live, case, other)


def test_the_fuzzing_sent_its_cases(live: LiveCentral) -> None:
    if live.sent < 50:
        pytest.skip("counts what the tests above (in this module) sent")
    print(f"{live.sent} requests")  # shown with -s
    assert live.sent >= 5 * MAX_EXAMPLES  # every operation got its fuzzing cases (and the coverage phase's)
