"""Many rows in one statement: the writer's hot path hands SQLite a batch as one JSON array, not ``executemany``.

``executemany`` steps its statement once per row, and each step releases the GIL and takes it back. The ledger's
writer runs on aiosqlite's thread while the event loop decodes and verifies the next frames, so every one of those
re-acquisitions waits for the loop thread to yield the GIL (up to the switch interval, 5 ms): a thousand-row batch
then crawls (measured: 26,000 rows/s alone, 900 rows/s beside a busy Python thread), and the two threads take turns
instead of overlapping. ``INSERT ... SELECT ... FROM json_each(?)`` is one step for the whole batch: SQLite does all
of it without the GIL, at the same cost per row as ``executemany`` when nothing else runs (``smartshelf bench hub``).

``json_insert(head, n)`` turns ``INSERT INTO t (a, b, c)`` (plus an optional upsert tail) into that statement;
``rows_param(rows)`` is its one parameter. Values are the JSON types SQLite reads back exactly: integers, text and
null (no floats, no blobs, integers within 64 bits: a value outside them makes the statement fail, as a STRICT
table would refuse it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def json_insert(head: str, columns: int, tail: str = "") -> str:
    """``head`` (``INSERT INTO t (c1, .., cN)``) fed from the rows of ``rows_param``, each an array of ``columns``
    values in the head's column order; ``tail`` an ``ON CONFLICT ...`` clause (SQLite then needs the ``WHERE``
    this adds, so that ``ON`` is not read as a join's)."""
    values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(columns))
    return f"{head} SELECT {values} FROM json_each(?1) WHERE true{' ' + tail if tail else ''}"


def rows_param(rows: Sequence[Sequence[Any]]) -> tuple[str]:
    """The statement's parameter: the rows as one JSON array (non-ASCII text escaped, which SQLite decodes)."""
    return (json.dumps(rows, separators=(",", ":")),)
