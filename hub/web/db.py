"""The web layer's connections: read-only sqlite3 connections to the ledger, and the writer.

* ``get_db()``: this request's read-only connection (opened on first use, closed at teardown); ``open_ro(path)``: a
  connection of one's own (the live feed's, a streamed export's, the CLI's). Both are ``mode=ro`` with
  ``query_only``: the web never writes through them.
* ``read_transaction(conn)``: one read transaction, so that several queries see one committed state.
* ``fetch_all`` / ``fetch_one``: run one of the ledger's query definitions (``hub.ledger.reader.Query``: SQL and
  row mapper, the same ones ``LedgerReader`` runs) on such a connection.
* ``streamed_read(lines)``, ``keyset_batches(read, key, size)``: what the CSV exports stream, every matching row a
  batch at a time on a connection of their own.
* ``get_writer()``: the app's ``Writer`` (``bridge.py``): every write goes through the hub's ``LedgerService``.
* Every request runs with its origin set (``hub.ledger.origin``: ``ip:<peer address>``, from ``request.remote_addr``,
  which the server fills in from the connection), so whatever it writes, through the writer or the hub's
  ``count_lane``, is audited as coming from there (the context crosses to the hub's loop with the call).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, current_app, g, request

from hub.ledger import origin
from hub.ledger.origin import ORIGIN
from hub.ledger.reader import Query
from hub.web.bridge import Writer

T = TypeVar("T")
K = TypeVar("K")
_WRITER = "smartshelf_writer"


def open_ro(path: Path | str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A read-only connection to the ledger at ``path`` (autocommit: ``read_transaction`` makes one)."""
    uri = f"file:{Path(path).resolve()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None, check_same_thread=check_same_thread)
    conn.execute("PRAGMA query_only = ON")
    return conn


def get_db() -> sqlite3.Connection:
    """This request's read-only connection to the ledger."""
    if "db" not in g:
        g.db = open_ro(current_app.config["LEDGER_PATH"])
    db: sqlite3.Connection = g.db
    return db


def get_writer() -> Writer:
    writer: Writer = current_app.extensions[_WRITER]
    return writer


def app_writer(app: Flask) -> Writer:
    writer: Writer = app.extensions[_WRITER]
    return writer


def _close_db(_exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def _bind_origin() -> None:
    ORIGIN.set(origin.ip(request.remote_addr))


def _unbind_origin(_exc: BaseException | None) -> None:
    ORIGIN.set(None)  # a worker thread's next request sets its own


def install(app: Flask, writer: Writer) -> None:
    app.extensions[_WRITER] = writer
    app.teardown_appcontext(_close_db)
    app.before_request(_bind_origin)  # installed before the access checks: set for every request that gets further
    app.teardown_request(_unbind_origin)


@contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Every query inside sees the same committed state (under live writes: the header, the charts and the
    timeline of a page agree)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def fetch_all(
    conn: sqlite3.Connection, query: Query[T], params: Sequence[Any] = (), *, where: Iterable[tuple[str, Any]] = ()
) -> list[T]:
    sql, bound = query.bind(params, where=where)
    return [query.row(r) for r in conn.execute(sql, bound)]


def fetch_one(
    conn: sqlite3.Connection, query: Query[T], params: Sequence[Any] = (), *, where: Iterable[tuple[str, Any]] = ()
) -> T | None:
    sql, bound = query.bind(params, where=where)
    row = conn.execute(sql, bound).fetchone()
    return None if row is None else query.row(row)


def streamed_read(lines: Callable[[sqlite3.Connection], Iterator[str]]) -> Iterator[str]:
    """``lines(conn)`` on a read-only connection of the app's ledger held for the stream's lifetime (a response
    streamed after the request's own connection is closed: the CSV exports)."""
    path = current_app.config["LEDGER_PATH"]

    def stream() -> Iterator[str]:
        conn = open_ro(path)
        try:
            yield from lines(conn)
        finally:
            conn.close()

    return stream()


def keyset_batches(read: Callable[[K | None], Sequence[T]], key: Callable[[T], K], size: int) -> Iterator[Sequence[T]]:
    """Every row of a keyset-paged read, a batch at a time: ``read(after)`` gives at most ``size`` rows following the
    key ``after`` (None: from the first) in the page's order, and the next batch follows the last row's key. Memory
    stays one batch, whatever the number of rows (the CSV exports)."""
    after: K | None = None
    while True:
        rows = read(after)
        if rows:
            yield rows
        if len(rows) < size:
            return
        after = key(rows[-1])
