"""Database errors the consumer waits out and errors that stop it (hub/central/errors.py), and ``smartshelf central``'s
exit codes, against a real PostgreSQL and Mosquitto (tests/fleet_support.py).

Errors of the moment (a lock timeout, a serialization failure, a deadlock, the server ending the session) are made
by the real server and judged transient; a schema changed by hand (42P10, 42703, 42P01) stops ``central run`` with
one log line naming the SQLSTATE, exit 1, nothing acknowledged: once the schema is mended, the next run gets the
same messages from the broker and stores them. ``central check`` tells a clean store (0), a problem (1), a usage or
configuration error (2) and a database it cannot reach (3) apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import asyncpg.exceptions as pgx
import pytest

from hub.central.config import load_central_config
from hub.central.consumer import Consumer
from hub.central.errors import CANCELLED_TRIES, PermanentDatabaseError, describe, transient
from hub.central.schema import MIGRATIONS, migrate
from hub.cli import main
from hub.fleet.messages import encode_alerts
from tests.fleet_support import FreshDatabase
from tests.test_central_consumer import (
    PREFIX,
    ROOT,
    batch,
    broker_with_users,
    config,
    count,
    hub_client,
    publish,
    running,
    stored,
    until,
    write_config,
)
from tools.servers.mosquitto import Broker

# ------------------------------------------------------------------------------------------ the classification


@pytest.mark.parametrize(
    "exc",
    [
        pgx.SerializationError("could not serialize access"),
        pgx.DeadlockDetectedError("deadlock detected"),
        pgx.LockNotAvailableError("canceling statement due to lock timeout"),
        pgx.AdminShutdownError("terminating connection due to administrator command"),
        pgx.CrashShutdownError("terminating connection because of crash of another server process"),
        pgx.CannotConnectNowError("the database system is starting up"),
        pgx.TooManyConnectionsError("sorry, too many clients already"),
        pgx.DiskFullError("could not extend file: No space left on device"),
        pgx.QueryCanceledError("canceling statement due to user request"),
        pgx.IdleInTransactionSessionTimeoutError("terminating connection due to idle-in-transaction timeout"),
        pgx.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        pgx.InvalidCachedStatementError("cached statement plan is invalid due to a database schema change"),
        pgx.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pgx.ConnectionFailureError("connection failure"),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_of_the_moment_are_transient(exc: BaseException) -> None:
    assert transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        pgx.InvalidColumnReferenceError("there is no unique or exclusion constraint matching the ON CONFLICT"),
        pgx.UndefinedColumnError('column "incarnation" does not exist'),
        pgx.UndefinedTableError('relation "stock" does not exist'),
        pgx.InsufficientPrivilegeError("permission denied for table movements"),
        pgx.DatabaseDroppedError("terminating connection due to database drop"),
        pgx.FeatureNotSupportedError("not supported"),
        pgx.InternalServerError("internal error"),
        asyncpg.exceptions._base.DataError("invalid input for query argument $1"),  # asyncpg's, client side
        TypeError("a bug: the same batch through the same code fails the same way"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_no_retry_fixes_are_permanent(exc: BaseException) -> None:
    assert not transient(exc)


def test_describe_names_the_sqlstate_in_one_line() -> None:
    exc = pgx.UndefinedColumnError('column "rev"\ndoes not exist')
    assert describe(exc) == 'SQLSTATE 42703 (UndefinedColumnError): column "rev" does not exist'
    assert describe(TypeError("x")) == "TypeError: x"


async def test_the_real_servers_errors_of_the_moment_are_transient(postgres_db: FreshDatabase) -> None:
    """A lock timeout, a serialization failure, a deadlock and a terminated session, made by PostgreSQL itself."""
    a, b = await asyncpg.connect(postgres_db.dsn), await asyncpg.connect(postgres_db.dsn)
    caught: list[BaseException] = []
    try:
        await a.execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0)")
        # lock timeout: b waits at most 50 ms for a row a holds
        async with a.transaction():
            await a.execute("UPDATE t SET v = 1 WHERE id = 1")
            with pytest.raises(pgx.LockNotAvailableError) as lock:
                async with b.transaction():
                    await b.execute("SET LOCAL lock_timeout = '50ms'; UPDATE t SET v = 2 WHERE id = 1")
        caught.append(lock.value)
        # serialization failure: both read, one commits an update, the other's update cannot serialize
        with pytest.raises(pgx.SerializationError) as serial:
            async with a.transaction(isolation="serializable"):
                await a.fetch("SELECT * FROM t")
                async with b.transaction(isolation="serializable"):
                    await b.fetch("SELECT * FROM t")
                    await b.execute("UPDATE t SET v = v + 1 WHERE id = 1")
                await a.execute("UPDATE t SET v = v + 1 WHERE id = 1")
        caught.append(serial.value)
        # deadlock: a holds 1 and wants 2, b holds 2 and wants 1
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await a.execute("UPDATE t SET v = 10 WHERE id = 1")
        await b.execute("UPDATE t SET v = 20 WHERE id = 2")
        results = await asyncio.gather(
            a.execute("UPDATE t SET v = 11 WHERE id = 2"), b.execute("UPDATE t SET v = 21 WHERE id = 1"),
            return_exceptions=True,
        )  # fmt: skip
        await ta.rollback()
        await tb.rollback()
        deadlocks = [r for r in results if isinstance(r, BaseException)]
        assert [type(d) for d in deadlocks] == [pgx.DeadlockDetectedError]
        caught += deadlocks
        # the server ends b's session (an administrator, a failover)
        await a.fetchval("SELECT pg_terminate_backend($1)", b.get_server_pid())
        with pytest.raises(Exception) as ended:
            await b.fetchval("SELECT 1")
        caught.append(ended.value)
    finally:
        await a.close()
        if not b.is_closed():
            b.terminate()
    assert [transient(e) for e in caught] == [True] * 4, [describe(e) for e in caught]


# ------------------------------------------------------------------------------------- a permanent error stops


async def test_a_schema_changed_by_hand_stops_the_consumer_and_acknowledges_nothing(
    tmp_path: Path,
    broker_factory: Callable[..., Broker],
    postgres_db: FreshDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = broker_with_users(broker_factory, ["s1"])
    cfg = config(tmp_path, broker, postgres_db)
    hub = hub_client(broker, "s1")
    try:
        consumer = Consumer(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await until(lambda: _is(consumer.subscribed.is_set()), "subscribed")
        await publish(hub, "s1", "movements", batch("s1", 1, 10))
        await until(stored(postgres_db, 10), "the first batch")
        await until(lambda: _is(consumer.stats.acked >= 1), "acknowledged")
        await _sql(postgres_db, "ALTER TABLE stock DROP CONSTRAINT stock_pkey")  # the upsert's ON CONFLICT: 42P10
        acked = consumer.stats.acked - consumer.stats.ignored  # what is ignored (a QoS 0 copy) is acked when it comes
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hub.central"):
            await publish(hub, "s1", "movements", batch("s1", 11, 20))
            with pytest.raises(PermanentDatabaseError) as info:
                await asyncio.wait_for(task, 30)
        assert info.value.sqlstate == "42P10"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and not errors[0].exc_info, [r.getMessage() for r in errors]
        line = errors[0].getMessage()
        assert "SQLSTATE 42P10 (InvalidColumnReferenceError)" in line and "ON CONFLICT" in line
        # the batch (and whatever else the same poll took, e.g. the rewind the first batch's hole asked for)
        assert re.search(r"; [1-9]\d* message\(s\) not acknowledged", line) and "\n" not in line, line
        assert not [r for r in caplog.records if "again in" in r.getMessage()], "not retried"
        assert consumer.stats.acked - consumer.stats.ignored == acked, consumer.stats
        assert "failed (SQLSTATE 42P10" in consumer.status_line()
        assert await count(postgres_db, "SELECT count(*) FROM movements") == 10
        # mended: the next run gets the batch again from the broker (its session kept it) and stores it
        await _sql(postgres_db, "ALTER TABLE stock ADD PRIMARY KEY (hub_id, sku, location, incarnation)")
        async with running(cfg) as again:
            await until(stored(postgres_db, 20), "the batch the failed run left to the broker")
            await until(lambda: _is(again.stats.acked >= 1), "acknowledged")
    finally:
        hub.close()
    assert await count(postgres_db, "SELECT qty FROM stock") == -20


async def test_central_run_exits_1_on_a_permanent_error_and_the_next_run_stores_the_message(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    broker = broker_with_users(broker_factory, ["s1"])
    path = write_config(tmp_path, broker, postgres_db)
    argv = [sys.executable, "-m", "hub.cli", "central", "run", "--config", str(path), "--log-level", "info"]
    log = tmp_path / "central.log"
    alert = (7, "shrinkage", "lane:3:0", "open", 1_790_000_000_000, None, None, None, None, None, None, 1)
    hub = hub_client(broker, "s1")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        await until(lambda: _logged(log, "subscribed to"), "the consumer subscribed")
        await _sql(postgres_db, "ALTER TABLE alerts RENAME COLUMN rev TO revision")  # by hand: 42703
        await publish(hub, "s1", "alerts", encode_alerts("s1", [alert], 1_790_000_000_100))
        assert await asyncio.to_thread(proc.wait, 30) == 1
        text = log.read_text()
        failures = [ln for ln in text.splitlines() if " ERROR " in ln]
        assert len(failures) == 1 and "SQLSTATE 42703 (UndefinedColumnError)" in failures[0], text[-3000:]
        assert "Traceback" not in text and "again in" not in text
        assert "not acknowledged (the broker keeps them); stopping" in failures[0]
        await _sql(postgres_db, "ALTER TABLE alerts RENAME COLUMN revision TO rev")
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        await until(lambda: _alerts(postgres_db), "the alert, sent again by the broker, stored")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        hub.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def _alerts(db: FreshDatabase) -> bool:
    return await count(db, "SELECT count(*) FROM alerts WHERE id = 7") == 1


async def _is(value: bool) -> bool:
    return value


async def _logged(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


async def _sql(db: FreshDatabase, sql: str) -> None:
    conn = await asyncpg.connect(db.dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------ central check's exit codes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["central", *argv])
        except SystemExit as exc:  # argparse: --help, a usage error
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


async def test_check_exit_codes_tell_clean_problems_usage_and_unreachable_apart(
    tmp_path: Path, postgres_db: FreshDatabase
) -> None:
    def config_file(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        return str(path)

    good = config_file("good.toml", f'[database]\ndsn = "{postgres_db.dsn}"\n')
    # 2: schema not migrated yet (a step behind), usage, configuration
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        await migrate(conn, MIGRATIONS[:2])
    finally:
        await conn.close()
    code, _, err = await asyncio.to_thread(_command, "check", "--config", good)
    assert (code, "run smartshelf central migrate" in err) == (2, True), err
    assert (await asyncio.to_thread(_command, "check", "--config", good, "--colour"))[0] == 2
    bad = config_file("bad.toml", '[database]\ndsn = "postgresql://u@127.0.0.1/x"\ncolour = 1\n')
    code, _, err = await asyncio.to_thread(_command, "check", "--config", bad)
    assert (code, "database.colour: unknown setting" in err) == (2, True), err
    missing = str(tmp_path / "missing.toml")
    assert (await asyncio.to_thread(_command, "check", "--config", missing))[0] == 2
    # 0: clean
    assert (await asyncio.to_thread(_command, "migrate", "--config", good))[0] == 0
    assert (await asyncio.to_thread(_command, "check", "--config", good))[0] == 0
    # 1: a problem (a message rejected)
    await _sql(
        postgres_db,
        "INSERT INTO hubs (hub_id, first_contact_ms, last_contact_ms, last_sent_ms) VALUES ('s1', 1, 1, 1);"
        "INSERT INTO rejected (received_ms, topic, hub_id, reason, payload, payload_bytes)"
        f" VALUES (1, '{PREFIX}/s1/movements', 's1', 'not JSON', '\\x7b'::bytea, 1)",
    )
    code, out, _ = await asyncio.to_thread(_command, "check", "--config", good)
    assert (code, "1 message(s) rejected" in out) == (1, True), out
    # 3: nothing listens where the database should be (migrate too)
    nowhere = config_file("nowhere.toml", f'[database]\ndsn = "postgresql://u@127.0.0.1:{_free_port()}/x"\n')
    for verb in ("check", "migrate"):
        code, _, err = await asyncio.to_thread(_command, verb, "--config", nowhere)
        assert (code, "cannot connect" in err) == (3, True), (verb, err)
    # the codes are in the help
    code, out, _ = await asyncio.to_thread(_command, "check", "--help")
    out = " ".join(out.split())
    assert code == 0 and "1 a problem found" in out and "3 the database unreachable" in out
    run_help = " ".join((await asyncio.to_thread(_command, "run", "--help"))[1].split())
    assert "1 stopped by a database error" in run_help


# ----------------------------------------------------------------------- connecting: the settings' fault stops


def _dsn(db: FreshDatabase, *, user: str | None = None, password: str | None = None, name: str | None = None) -> str:
    parts = urlsplit(db.dsn)
    user = user or (parts.username or "")
    password = password if password is not None else (parts.password or "")
    netloc = f"{quote(user)}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, f"/{quote(name or db.name)}", parts.query, ""))


def _with_dsn(path: Path, dsn: str) -> Path:
    text = re.sub(r'^dsn = ".*"$', f'dsn = "{dsn}"', path.read_text(), count=1, flags=re.M)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("case", "state"),
    [("wrong password", "28P01"), ("role without LOGIN", "28000"), ("no such database", "3D000")],
)
async def test_a_connection_refused_for_its_settings_stops_the_consumer_in_one_line(
    tmp_path: Path,
    broker_factory: Callable[..., Broker],
    postgres_db: FreshDatabase,
    caplog: pytest.LogCaptureFixture,
    case: str,
    state: str,
) -> None:
    broker = broker_with_users(broker_factory, [])
    role = f"nologin_{postgres_db.name}"[:63]
    if case == "wrong password":
        dsn = _dsn(postgres_db, password="not-the-password")
    elif case == "role without LOGIN":
        postgres_db.server.psql(f"CREATE ROLE {role} NOLOGIN PASSWORD 'pw'")
        dsn = _dsn(postgres_db, user=role, password="pw")
    else:
        dsn = _dsn(postgres_db, name=f"missing_{postgres_db.name}"[:63])
    cfg = load_central_config(_with_dsn(write_config(tmp_path, broker, postgres_db), dsn))
    consumer = Consumer(cfg)
    try:
        with caplog.at_level(logging.INFO, logger="hub.central"), pytest.raises(PermanentDatabaseError) as info:
            await asyncio.wait_for(consumer.run(asyncio.Event()), 20)
    finally:
        if case == "role without LOGIN":
            postgres_db.server.psql(f"DROP ROLE {role}")
    assert info.value.sqlstate == state
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert f"cannot connect: SQLSTATE {state}" in line and "stopping" in line and "\n" not in line, line
    assert "user, password, database name" in line, line
    assert not [r for r in caplog.records if "again in" in r.getMessage()], "not retried"
    assert consumer.stats.db_errors == 1 and f"failed (SQLSTATE {state}" in consumer.status_line()


async def test_central_run_with_a_wrong_password_exits_1_with_one_line(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    broker = broker_with_users(broker_factory, [])
    path = _with_dsn(write_config(tmp_path, broker, postgres_db), _dsn(postgres_db, password="wrong"))
    argv = [sys.executable, "-m", "hub.cli", "central", "run", "--config", str(path)]
    done = await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if " INFO " not in ln]  # the start line is at info
    assert len(lines) == 1 and " ERROR " in lines[0] and "SQLSTATE 28P01 (InvalidPasswordError)" in lines[0], lines
    assert "password authentication failed" in lines[0] and ":wrong@" not in done.stderr


async def test_a_server_down_or_starting_up_is_waited_for(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    """Connection refused (nothing listens) and 57P03 (the server starting up) are retried, not a reason to stop."""
    broker = broker_with_users(broker_factory, [])
    nowhere = _with_dsn(write_config(tmp_path, broker, postgres_db), f"postgresql://u:p@127.0.0.1:{_free_port()}/x")
    consumer = Consumer(load_central_config(nowhere))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await until(lambda: _is(consumer.stats.db_errors >= 3), "retried connection refused")
    assert not task.done() and consumer.failure is None
    stop.set()
    await asyncio.wait_for(task, 30)  # stopped by its owner, not by the error

    cfg = config(tmp_path, broker, postgres_db)
    starting_up = Consumer(cfg)
    real = starting_up._asyncpg
    refusals = [pgx.CannotConnectNowError("the database system is starting up")] * 2

    async def connect(**kw: object) -> asyncpg.Connection:
        if refusals:
            raise refusals.pop()
        return await real.connect(**kw)

    starting_up._asyncpg = SimpleNamespace(
        connect=connect, PostgresError=real.PostgresError, InterfaceError=real.InterfaceError
    )
    stop = asyncio.Event()
    task = asyncio.create_task(starting_up.run(stop))
    await until(lambda: _is(starting_up.subscribed.is_set()), "connected once the server was up")
    assert starting_up.stats.db_errors == 2 and starting_up.failure is None
    stop.set()
    await asyncio.wait_for(task, 30)


# ------------------------------------------------------------------- a batch the server cancels every time

SLOW = """
CREATE SEQUENCE slow_tries;
CREATE TABLE slow_limit (n bigint NOT NULL);
CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('slow_tries') <= (SELECT n FROM slow_limit) THEN PERFORM pg_sleep(5); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER slow AFTER INSERT ON movements FOR EACH STATEMENT EXECUTE FUNCTION slow();
"""


async def test_a_batch_cancelled_by_statement_timeout_is_retried_then_stops_the_consumer(
    tmp_path: Path,
    broker_factory: Callable[..., Broker],
    postgres_db: FreshDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """57014 (statement_timeout) is transient for a few tries of the same batch (an administrator's cancel, a
    moment of load), then permanent: a batch that always takes longer would otherwise loop for ever."""
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        await migrate(conn)
        await conn.execute(SLOW + "INSERT INTO slow_limit VALUES (2)")  # the first two tries are too slow
        await conn.execute(f"ALTER DATABASE {postgres_db.name} SET statement_timeout = '400ms'")
    finally:
        await conn.close()
    broker = broker_with_users(broker_factory, ["s1"])
    cfg = config(tmp_path, broker, postgres_db)
    hub = hub_client(broker, "s1")
    try:
        with caplog.at_level(logging.INFO, logger="hub.central"):
            async with running(cfg) as consumer:
                await publish(hub, "s1", "movements", batch("s1", 1, 10))
                await until(stored(postgres_db, 10), "the batch, on its third try")
                assert consumer.failure is None and consumer.stats.db_errors == 2
            cancelled = [r for r in caplog.records if "57014" in r.getMessage() or "QueryCanceled" in r.getMessage()]
            assert len(cancelled) == 2 and all(r.levelno == logging.WARNING for r in cancelled)
            await _sql(postgres_db, "UPDATE slow_limit SET n = 1000000")  # from now on every try is too slow
            caplog.clear()
            consumer = Consumer(cfg)
            task = asyncio.create_task(consumer.run(asyncio.Event()))
            await until(lambda: _is(consumer.subscribed.is_set()), "subscribed")
            await publish(hub, "s1", "movements", batch("s1", 11, 20))
            with pytest.raises(PermanentDatabaseError) as info:
                await asyncio.wait_for(task, 60)
    finally:
        hub.close()
    assert info.value.sqlstate == "57014" and consumer.stats.db_errors == CANCELLED_TRIES
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert "SQLSTATE 57014 (QueryCanceledError)" in line and f"cancelled {CANCELLED_TRIES} times in a row" in line
    assert "statement_timeout" in line and "not acknowledged (the broker keeps them)" in line and "\n" not in line
    assert await count(postgres_db, "SELECT count(*) FROM movements") == 10
