"""What the two schemathesis runs share: tests/test_web_api_fuzz.py (the hub's API) and tests/test_central_web_fuzz.py
(the central API), each against its live server over HTTPS, the schema loaded from the server's own document.

* ``CHECKS``: what every response is checked for (no 5xx; status code, content type, headers and body as documented;
  a request breaking the document refused).
* ``MAX_EXAMPLES_VAR``, ``SEED_VAR``: the environment variables that run more cases, or others (``setting``).
* ``load_schema(request, url, certificate, ...)``: the fixture's body: a bounded, reproducible run (a fixed seed, no
  example database, no stateful phase), the certificate trusted, values the server knows offered to the generator.
* ``NO_TOKEN``, ``UNKNOWN``, ``first_clients(new_token)``: the two clients every run has besides its real ones
  (no Authorization header; a well-formed token of no client).
* ``scope_of(operation)``, ``bearer(token)``, ``check_token(...)``: which scope an operation needs, and that the
  answer is the token's (401 without a client, 403 without the scope, neither with it).
* ``other_client(content, own, clients, one_in)``: one case in ``one_in`` is also sent by another client, chosen by
  the case's content, so a failure replays with the same client.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES_VAR = "SMARTSHELF_FUZZ_EXAMPLES"  # fuzzing cases per operation (after the coverage phase's)
SEED_VAR = "SMARTSHELF_FUZZ_SEED"
NO_TOKEN = "none"  # a request without a token
UNKNOWN = "unknown"  # a well-formed token of no client
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


def setting(variable: str, default: int) -> int:
    return int(os.environ.get(variable, str(default)))


def load_schema(
    request: pytest.FixtureRequest,
    url: str,
    certificate: Path,
    *,
    seed: int,
    max_examples: int,
    unexpected_methods: Sequence[str],
    refusals: Sequence[str],
    known: Mapping[str, Sequence[str]],
    bindings: Mapping[str, tuple[str, float]],
) -> Any:
    """The OpenAPI document at ``url`` as schemathesis' schema, for ``schemathesis.pytest.from_fixture``.

    ``unexpected_methods``: the methods the coverage phase tries on every path (each a 405 the same way: two are
    enough); ``refusals``: the statuses that may refuse a request breaking the document; ``known``: dictionaries of
    values the server knows (SKUs, stores...), offered beside random ones by ``bindings`` (``"query.sku": ("skus",
    0.7)``: that parameter takes a value of the dictionary seven times in ten)."""
    # schemathesis 4.32's from_fixture reads (and renames) the test's node by pytest's former ``Node._nodeid``, gone in
    # pytest 9.2 (``nodeid`` is computed there); it reads it after loading this fixture, so give it one to read
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    config = schemathesis.Config.from_dict(
        {
            "seed": seed,  # each operation's cases from a seed derived from it: the same cases every run
            "tls-verify": str(certificate),
            "generation": {
                "max-examples": max_examples,
                "database": "none",
                "with-security-parameters": False,  # the Authorization header is ours to send (a client's, or none)
            },
            "phases": {"stateful": {"enabled": False}, "coverage": {"unexpected-methods": list(unexpected_methods)}},
            "checks": {"negative_data_rejection": {"expected-statuses": list(refusals)}},
            "dictionaries": {name: {"values": list(values)} for name, values in known.items()},
            "parameters": {key: {"dictionary": name, "probability": p} for key, (name, p) in bindings.items()},
        }
    )
    return schemathesis.openapi.from_url(url, config=config, verify=str(certificate))


def first_clients(new_token: Callable[[], str]) -> tuple[dict[str, str | None], dict[str, frozenset[str]]]:
    """Tokens and scopes by client, holding the two clients of no scope; the test adds its real ones."""
    return {NO_TOKEN: None, UNKNOWN: new_token()}, {NO_TOKEN: frozenset(), UNKNOWN: frozenset()}


def scope_of(operation: Any) -> str | None:
    """The scope the operation's security requirement names (None: public)."""
    security = operation.definition.raw.get("security")
    if not security:
        return None
    (requirement,) = security
    (scopes,) = requirement.values()
    return str(scopes[0])


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def check_token(case: Any, response: Any, client: str, scopes: Mapping[str, frozenset[str]]) -> None:
    """The answer to ``client`` is its token's: 401 with no client's, 403 without the operation's scope, neither
    with it (a request of another method than the operation's, the coverage phase's, is a 405 first)."""
    scope = scope_of(case.operation)
    if scope is None or response.request.method != case.operation.method.upper():
        return
    status = response.status_code
    if client in (NO_TOKEN, UNKNOWN):
        assert status == 401, response.text
    elif scope not in scopes[client]:
        assert status == 403, response.text
    else:
        assert status not in (401, 403), response.text


def other_client(content: object, own: str, clients: Iterable[str], one_in: int) -> str | None:
    """Another client to send the case too, for one case in ``one_in``, picked by its ``content`` (so the same one
    whenever the case replays); None for the others."""
    pick = zlib.crc32(json.dumps(content, sort_keys=True, default=repr).encode())
    if pick % one_in != 0:
        return None
    others = [c for c in clients if c != own]
    return others[(pick // one_in) % len(others)]
