"""Whole numbers as people and other systems write them: CSV cells, form fields, query strings, URL paths.

Python's ``int()``, ``str.isdigit()`` and ``re``'s ``\\d`` take every Unicode decimal digit (Arabic-Indic
``"\\u0661\\u0660"`` is 10, the full-width ``"\\uff11"`` is 1); here only the ASCII digits 0-9 are digits, as in
JSON. A value with more digits than SQLite's integer can hold is never given to ``int()`` (a 5,000-digit value would
otherwise raise Python's own "Exceeds the limit (4300 digits)" error): it comes back just outside SQLite's range, so
any range check refuses it.

The ledger's timestamps are 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z (``0..MAX_TS_MS``), whatever brings them
(a CSV file, a JSON body, a day filter of a page).
"""

from __future__ import annotations

import re

SQLITE_INT_MIN = -(2**63)
SQLITE_INT_MAX = 2**63 - 1
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_DIGITS = len(str(SQLITE_INT_MAX))  # 19
_WHOLE = re.compile(r"([+-]?)0*([0-9]+)", re.ASCII)
_UNSIGNED = re.compile(r"0*([0-9]+)", re.ASCII)


class NotWholeNumber(ValueError):
    """Text that is not a whole number in ASCII digits."""


def whole_number(text: str, *, signed: bool = False) -> int:
    """``text`` as an integer: ASCII digits and nothing else (no spaces, no ``_``), with one leading ``+`` or ``-``
    only when ``signed``. ``NotWholeNumber`` otherwise. Beyond SQLite's range the result is ``SQLITE_INT_MAX + 1``
    (``SQLITE_INT_MIN - 1`` for a negative value) and ``int()`` is not called."""
    if signed:
        m = _WHOLE.fullmatch(text)
        sign, digits = (m[1], m[2]) if m else ("", "")
    else:
        m = _UNSIGNED.fullmatch(text)
        sign, digits = "", (m[1] if m else "")
    if m is None:
        raise NotWholeNumber(text)
    if len(digits) > _DIGITS:
        return SQLITE_INT_MIN - 1 if sign == "-" else SQLITE_INT_MAX + 1
    value = int(digits)
    return -value if sign == "-" else value


def shown(text: str, limit: int = 20, *, quote: bool = True) -> str:
    """``text`` for an error message (quoted unless ``quote`` is false), shortened when long:
    ``'99999999999999'... (5,000 characters)``."""
    if len(text) <= limit:
        return repr(text) if quote else text
    head = text[: limit - 6]
    return f"{repr(head) if quote else head}... ({len(text):,} characters)"
