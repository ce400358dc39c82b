"""Which database errors the consumer waits out, and which stop it.

A batch's transaction fails either because of the moment (the connection dropped, the server is restarting or
failing over, a deadlock, a serialization failure, a lock another consumer holds too long, too many connections, a
full disk), and then trying the same batch again later succeeds; or because of what the database *is* (a column,
table or constraint missing or changed by hand, a privilege revoked, an old consumer running against a schema a
newer one migrated: SQLSTATE 42P10, 42703, 42P01, 42501, ...), and then every try fails the same way. The consumer
retries the first kind with its back-off (``transient``); on the second it acknowledges nothing, logs one line with
the SQLSTATE and the server's message (``describe``) and stops (``PermanentDatabaseError``): ``smartshelf central
run`` exits 1, the broker keeps the batch for the next run, and the service manager's restart policy (systemd's
``Restart=on-failure`` with its delay) starts it again, where the migration or the check at start tells what is
wrong, rather than a status that says "database down" forever.

The same rule judges a connection that cannot be made: nothing listening, a server starting up or shutting down
(57P03, 57P01), too many connections, a timeout are waited out; a connection the server refuses for the settings
(28P01 wrong password, 28000 a role that may not log in or no pg_hba.conf entry, 3D000 no such database, or asyncpg's
own configuration errors) stops the consumer the same way, with one line naming the cause, at start or later.

57014 (query_canceled: ``statement_timeout``, an administrator's ``pg_cancel_backend``) is transient, but the same
batch cancelled ``CANCELLED_TRIES`` (3) times in a row stops the consumer as permanent: a batch that always takes
longer than the timeout would otherwise be tried for ever; the line says so (a longer timeout for the role, or a
smaller ``central.batch_messages`` / ``batch_rows``). Another error in between starts the count again.

A value the database refuses (SQLSTATE classes 22, 23, 54) is neither: ``store.apply_batch`` rejects that message
alone. An exception that is not the database's (no SQLSTATE) is transient when it is the connection's (OSError,
timeout, asyncpg's interface errors about a closed connection), else a bug: the same batch through the same code
fails the same way, so it stops the consumer too (logged with its traceback).
"""

from __future__ import annotations

# SQLSTATE classes a later try can get past: connection exception, transaction rollback (serialization failure,
# deadlock), insufficient resources (too many connections, disk full, out of memory), operator intervention (admin /
# crash shutdown, cannot connect now, query cancelled: but see CANCELLED_TRIES), system error (I/O)
TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# and single states of other classes: lock_not_available (lock_timeout), idle_in_transaction_session_timeout (the
# server ended a session that stalled), read_only_sql_transaction (connected to a standby during a failover)
TRANSIENT_STATES = frozenset({"55P03", "25P03", "25006"})
# in a transient class, but no retry brings it back: the database was dropped
PERMANENT_STATES = frozenset({"57P04"})
# query_canceled (statement_timeout, an administrator's pg_cancel_backend): transient, but this many in a row for the
# same batch stop the consumer as permanent (a batch that always takes longer than the timeout would loop for ever)
QUERY_CANCELED = "57014"
CANCELLED_TRIES = 3
# asyncpg's errors without a SQLSTATE that mean the connection is gone (by class name: asyncpg is imported lazily)
_CONNECTION_ERRORS = frozenset({"InterfaceError", "InternalClientError", "ConnectionDoesNotExistError"})


class PermanentDatabaseError(RuntimeError):
    """The database failed a batch in a way no retry fixes; the consumer stopped without acknowledging it."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def sqlstate(exc: BaseException) -> str | None:
    """The server's SQLSTATE of an asyncpg error (None: not the server's)."""
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) and len(state) == 5 else None


def transient(exc: BaseException) -> bool:
    """Whether trying the same batch again later can succeed (see the module's doc)."""
    state = sqlstate(exc)
    if type(exc).__name__ == "InvalidCachedStatementError":  # 0A000 after DDL (a migration) changed a prepared
        return True  # statement's result types: asyncpg drops its cache, the same batch goes through next time
    if state is not None:
        if state in PERMANENT_STATES:
            return False
        return state[:2] in TRANSIENT_CLASSES or state in TRANSIENT_STATES
    if isinstance(exc, (OSError, TimeoutError, EOFError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    # asyncpg's client-side DataError and ClientConfigurationError are InterfaceErrors and ValueErrors: not the
    # connection's
    unsupported = any(n.startswith("Unsupported") for n in names)
    return bool(names & _CONNECTION_ERRORS) and not isinstance(exc, ValueError) and not unsupported


def is_connection_error(exc: BaseException) -> bool:
    """The connection or the server went away (logged without a traceback)."""
    state = sqlstate(exc)
    if state is not None:
        return state[:2] in ("08", "57", "53")
    return transient(exc)


def describe(exc: BaseException) -> str:
    """One line: the SQLSTATE, the error's class and the server's message (its detail and hint when it gave any)."""
    state = sqlstate(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    for extra in ("detail", "hint"):
        value = getattr(exc, extra, None)
        if isinstance(value, str) and value:
            text += f" ({extra}: {' '.join(value.split())})"
    return f"SQLSTATE {state} ({type(exc).__name__}): {text}" if state else f"{type(exc).__name__}: {text}"
