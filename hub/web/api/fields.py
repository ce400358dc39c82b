"""What a request to the HTTP API may contain: the limits, and the ``Field`` definitions of every post item
(``FIELDS``) and every query (``QUERIES``: the reads' and the imports'). They are the one definition: the validator
(``validation.py``) and the OpenAPI description (``openapi.py``, served at ``/api/openapi.json``) are both made from
them. Every integer field has both bounds, within SQLite's integer range (``Field`` refuses one without), so the
description states every limit the server enforces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hub.ledger.models import BACKROOM, MAX_QTY
from hub.ledger.numbers import MAX_TS_MS as MAX_TS_MS  # 9999-12-31T23:59:59.999Z, the API's modules import it here
from hub.ledger.numbers import SQLITE_INT_MAX, SQLITE_INT_MIN
from hub.ledger.postings import REF_MAX

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
ALERTS_MAX_LIMIT = 500
IMPORT_NAME_MAX = 100

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

    def __post_init__(self) -> None:
        """An integer field states both bounds, within SQLite's integer range: the description then says every
        limit the server enforces, and no value reaches SQLite that it cannot store."""
        if self.type != "integer":
            return
        low, high = self.minimum, self.maximum
        if low is None or high is None or not SQLITE_INT_MIN <= low <= high <= SQLITE_INT_MAX:
            raise ValueError(f"integer field {self.name}: give both bounds, within SQLite's integer range")


# Patterns are matched by the server with Python's re and by clients with ECMA 262's (JSON Schema): they use explicit
# character classes, not \s, \S, \d or ``.``, which mean different things there (``[\s\S]``, any character, means the
# same). _SPACE: what Python's str.strip() (and so the ledger) takes for whitespace: ECMA's \s but for \ufeff, and
# \x1c-\x1f and \x85 besides (tests/test_web_inputs.py tries them all in both dialects).
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_ID = Field(
    "id",
    "string",
    "The client's id of this line (POS line, delivery line, ...): the idempotency key, unique per kind and client. "
    "Re-sending it with the same content changes nothing; with different content, or an id another client already "
    "used, it is refused (409).",
    required=True,
    min_length=1,
    max_length=REF_MAX,
    pattern=rf"^[^{_SPACE}]([\s\S]*[^{_SPACE}])?$",
    hint="no spaces at either end",
)
SKU_FIELD = Field(
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
# A timestamp string: RFC 3339 (the document's "date-time") as Python's datetime reads it: an upper-case T and Z,
# seconds 00..59 (no leap second), years 1970..9999 (the offset may still take one across: then the range check).
TIMESTAMP_PATTERN = (
    r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TS = Field(
    "timestamp",
    "timestamp",
    "When it happened (1970..9999 UTC): RFC 3339 with an upper-case T and a timezone (2025-11-27T14:03:00+01:00, "
    "2025-11-27T13:03:00Z) or ms since the epoch. Default: when the ledger records it.",
    pattern=TIMESTAMP_PATTERN,
    hint="RFC 3339 with a timezone, e.g. 2025-11-27T14:03:00+01:00",
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
    "sales": (_ID, SKU_FIELD, _QTY, _TS, _location(_SHELF)),
    "receipts": (_ID, SKU_FIELD, _QTY, _TS, _location(BACKROOM)),
    "returns": (
        _ID,
        SKU_FIELD,
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
        SKU_FIELD,
        _QTY,
        Field(
            "order",
            "string",
            "The order id.",
            required=True,
            min_length=1,
            max_length=REF_MAX,
            pattern=rf"[^{_SPACE}]",
            hint="not blank",
        ),
        _TS,
        _location(_SHELF),
    ),
    "counts": (_ID, SKU_FIELD, _COUNTED, _TS, _location(BACKROOM)),
}
SUMMARIES: dict[PostKind, str] = {
    "sales": "Record sales (stock leaves the shelf)",
    "receipts": "Record goods received",
    "returns": "Record customer returns",
    "picks": "Record order picks (online orders)",
    "counts": "Record physical counts (the difference is posted as a count adjustment)",
}

# the CSV files a client may import besides the post kinds: the store's EPC -> SKU table (scope "epcs")
EPCS_IMPORT: Literal["epcs"] = "epcs"
EPCS_SUMMARY = "The store's EPC -> SKU table (epc,sku): it names the SKU of tags whose EPC is no SGTIN of a known GTIN"
LANE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

# query parameters of the reads (endpoint -> fields)
QUERIES: dict[str, tuple[Field, ...]] = {
    "api.stock": (Field("sku", "string", "Only this SKU.", min_length=1, max_length=32),),
    "api.tags": (
        Field(
            "lane",
            "string",
            "Only this lane (its tags, none included). Default: every lane with a tag on it.",
            min_length=1,
            max_length=64,
            pattern=LANE_ID_PATTERN,
            hint="a lane id (letters, digits, '.', '_' and '-')",
        ),
    ),
    "api.tag_trail": (
        Field(
            "epc",
            "string",
            "The tag's EPC in hex (any case; spaces, dashes and colons between digits are dropped).",
            required=True,
            min_length=2,
            max_length=100,
            pattern=r"^[ :-]*(?:[0-9A-Fa-f][ :-]*[0-9A-Fa-f][ :-]*){1,32}$",
            hint="1..32 bytes of hex digits, e.g. 3074257BF719...",
        ),
    ),
    "api.lanes": (),
    "api.alerts": (
        Field(
            "status",
            "string",
            "Only alerts with this status (unresolved: open or acknowledged). Default: all.",
            enum=("open", "acknowledged", "resolved", "unresolved"),
        ),
        Field("limit", "integer", "Page size.", minimum=1, maximum=ALERTS_MAX_LIMIT, default=100),
        Field(
            "after",
            "integer",
            "Only alerts with a larger id (the previous page's next_after).",
            minimum=0,
            maximum=SQLITE_INT_MAX,
        ),
    ),
    **{
        f"api.import_{kind}": (
            Field(
                "name",
                "string",
                f"The file's name in the report and the audit entry. Default: {kind}.csv.",
                min_length=1,
                max_length=IMPORT_NAME_MAX,
                pattern=r"^[ -~]+$",
                default=f"{kind}.csv",
                hint="printable ASCII characters",
            ),
        )
        for kind in (*FIELDS, EPCS_IMPORT)
    },
}
