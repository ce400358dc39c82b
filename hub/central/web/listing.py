"""The mechanics every list of the central page and API shares (``queries.py`` has the lists themselves).

* ``VISIBLE``: the SQL of the hubs a ``Filters`` may see: its ``Scope`` (every hub, or those whose store is in one
  of the scope's regions; a hub with no store, or a store with no region, is seen only by a scope of every store),
  narrowed by the ``store`` / ``hub`` filters. Parameters ``$1`` (regions, NULL: every store), ``$2``, ``$3``
  (``Filters.params()``); every query starts from it.
* **Keyset pages**: ``Page`` holds ``limit`` rows and, when there are more, the last row's key; ``encode_cursor``
  makes it an opaque URL-safe cursor naming its list; ``decode_cursor`` refuses anything else (``BadInput``, field
  ``cursor``). The next page starts after that key in the list's order, so rows written meanwhile never shift or
  repeat a page, and a cursor carries no right to see anything: the scope is applied again on every page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.central.web.accounts import Scope
from hub.web.inputs import BadInput

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
OFFLINE_AFTER_MS = 15 * 60 * 1000  # no contact for this long: "silent" (a hub sends a snapshot every few minutes)
MAX_CURSOR = 400

# $1 regions (NULL: every store), $2 store filter, $3 hub filter
VISIBLE = """visible AS (
    SELECT h.hub_id, h.store_id, s.name AS store_name, s.region
    FROM hubs h LEFT JOIN stores s ON s.store_id = h.store_id
    WHERE ($1::text[] IS NULL OR s.region = ANY($1::text[]))
      AND ($2::text IS NULL OR h.store_id = $2::text) AND ($3::text IS NULL OR h.hub_id = $3::text)
)"""


@dataclass(frozen=True, slots=True)
class Filters:
    """What the caller may see (``scope``) and what they asked for (``store``, ``hub``: None is every one)."""

    scope: Scope
    store: str | None = None
    hub: str | None = None

    def params(self) -> list[Any]:
        return [self.scope.sql_regions(), self.store, self.hub]


# ------------------------------------------------------------------------------------------------- cursors


def encode_cursor(kind: str, key: Sequence[str | int]) -> str:
    """An opaque cursor: the kind of list and the last row's key, URL-safe base64 of JSON (no padding)."""
    raw = json.dumps([kind, *key], separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(kind: str, text: str, types: Sequence[type]) -> tuple[Any, ...]:
    """The key a cursor of ``kind`` holds; ``BadInput`` (field ``cursor``) for anything else."""
    problem = BadInput("cursor", "not a cursor of this list: pass next_cursor of the previous page as it was given")
    if not text or len(text) > MAX_CURSOR or not text.isascii():
        raise problem
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise problem from None
    if not isinstance(value, list) or len(value) != len(types) + 1 or value[0] != kind:
        raise problem
    key = tuple(value[1:])
    for v, t in zip(key, types, strict=True):
        if type(v) is not t:
            raise problem
        if isinstance(v, int) and not -(2**63) <= v < 2**63:
            raise problem
        if isinstance(v, str) and (len(v) > 1024 or not v.isascii() or not v.isprintable()):
            raise problem  # keys are printable ASCII (SKUs, hub ids); PostgreSQL refuses NUL
    return key


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Any]
    next_key: tuple[Any, ...] | None  # the last row's key when there is more


def page_of(rows: list[Any], limit: int, key: Any) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, key(rows[-1]) if more and rows else None)
