"""Numbers and days from URLs, query strings and forms: checked here, in one place, for every page and the API.

* **Path integers**: ``install(app)`` makes the application's ``int`` URL converter ``CheckedInt``, so every
  ``<int:...>`` route takes ASCII digits only, 0..2**63-1 (SQLite's integer); anything else does not match the route
  (404) and never reaches the view (an alert id of 20 digits used to end in SQLite's OverflowError, a 500).
* **Query and form integers**: ``int_value`` / ``int_text``: ASCII digits only (``hub.ledger.numbers``; Python's
  ``int()`` takes Arabic-Indic ``"\\u0661\\u0660"`` as 10), within the caller's range, which is within SQLite's;
  otherwise ``BadInput`` naming the field: "limit: must be a whole number 1..500, not 'x'".
* **Days** (``from`` / ``to`` filters): ``day_value``: ``YYYY-MM-DD`` in ASCII digits, 1970-01-01..9999-12-31 (the
  ledger's timestamps, ``hub.ledger.numbers.MAX_TS_MS``); ``day_start_ms`` / ``day_end_ms`` turn one into the ms
  range it covers without date arithmetic that could overflow.
* **Given twice**: ``single`` refuses a parameter given more than once (``?limit=1&limit=2``: which one was
  meant?), naming it; every reader here goes through it.

Pages answer a ``BadInput`` with 400 and its message, the API with a JSON 400 (``{"field": ..., "message": ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from flask import Flask
from werkzeug.routing import BaseConverter, Map, ValidationError

from hub.ledger.numbers import MAX_TS_MS, SQLITE_INT_MAX, NotWholeNumber, shown, whole_number

DAY_MS = 86_400_000
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9999, 12, 31)
assert (LAST_DAY - FIRST_DAY).days * DAY_MS + DAY_MS - 1 == MAX_TS_MS


class BadInput(ValueError):
    """A parameter or form field that is refused; ``str()`` is ``"<field>: <message>"``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def single(values: Mapping[str, str], name: str) -> str | None:
    """The one value of ``name`` (None if absent); ``BadInput`` if it is given more than once."""
    getlist = getattr(values, "getlist", None)  # a MultiDict (request.args, request.form); a dict has one value
    given: list[str] = getlist(name) if getlist is not None else ([values[name]] if name in values else [])
    if len(given) > 1:
        raise BadInput(name, "given more than once")
    return given[0] if given else None


def int_text(name: str, text: str, low: int = 0, high: int = SQLITE_INT_MAX) -> int:
    """``text`` as a whole number ``low..high`` (ASCII digits only, no sign, no spaces); ``BadInput`` otherwise."""
    assert 0 <= low <= high <= SQLITE_INT_MAX
    try:
        value = whole_number(text)
    except NotWholeNumber:
        value = -1
    if not low <= value <= high:
        raise BadInput(name, f"must be a whole number {low:,}..{high:,}, not {shown(text)}")
    return value


def int_value(values: Mapping[str, str], name: str, low: int = 0, high: int = SQLITE_INT_MAX) -> int | None:
    """The parameter or form field ``name`` as a whole number ``low..high`` (surrounding spaces dropped), None when
    absent or empty; ``BadInput`` otherwise."""
    text = (single(values, name) or "").strip()
    return int_text(name, text, low, high) if text else None


def day_text(name: str, text: str) -> date:
    """``YYYY-MM-DD`` in ASCII digits, 1970-01-01..9999-12-31; ``BadInput`` otherwise."""
    try:
        if len(text) != 10 or not text.isascii():
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise BadInput(name, f"must be a date like 2025-11-27 (YYYY-MM-DD, UTC), not {shown(text)}") from None
    if day < FIRST_DAY:
        raise BadInput(name, f"must be a day from {FIRST_DAY} to {LAST_DAY}, not {text!r}")
    return day


def day_value(values: Mapping[str, str], name: str) -> date | None:
    """The parameter ``name`` as a day (``day_text``; surrounding spaces dropped), None when absent or empty."""
    text = (single(values, name) or "").strip()
    return day_text(name, text) if text else None


def day_start_ms(day: date) -> int:
    """The first ms of ``day`` (UTC)."""
    return (day - FIRST_DAY).days * DAY_MS


def day_end_ms(day: date) -> int:
    """The first ms after ``day`` (UTC): ``day + 1 day`` without a ``date`` (9999-12-31 has no next day)."""
    return day_start_ms(day) + DAY_MS


class CheckedInt(BaseConverter):
    """The application's ``int`` URL converter: ASCII digits, 0..2**63-1; anything else is no match (404)."""

    regex = r"[0-9]+"
    weight = 50  # as werkzeug's own int converter: a number before a string in the same place

    def __init__(self, map: Map, *args: object, **kwargs: object) -> None:
        if args or kwargs:
            raise TypeError("<int:...> takes no arguments here: the range is 0..2**63-1 (hub/web/inputs.py)")
        super().__init__(map)

    def to_python(self, value: str) -> int:
        try:
            return int_text("path", value)
        except BadInput:
            raise ValidationError() from None

    def to_url(self, value: object) -> str:
        return str(int(value))  # type: ignore[call-overload]


def install(app: Flask) -> None:
    """Make ``<int:...>`` mean ``CheckedInt`` in ``app``'s routes (before any blueprint adds one)."""
    if any("<int" in rule.rule for rule in app.url_map.iter_rules()):
        raise RuntimeError("inputs.install(app) must run before the routes are added")
    app.url_map.converters["int"] = CheckedInt
