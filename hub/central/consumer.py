"""The central consumer: the broker's messages into PostgreSQL, each acknowledged only after its commit.

``Consumer.run(stop)`` runs two tasks until ``stop`` is set:

* the broker's: one MQTT 5 connection at a time (``hub.central.mqtt``), a fixed client id, ``clean_start`` false,
  a session expiry, the shared subscription ``$share/<group>/<prefix>/+/+`` at QoS 1; reconnects with a back-off
  (doubling from ``reconnect_min_s`` to ``reconnect_max_s``) when the connection drops or cannot be made;
* the writer: takes what arrived, up to ``batch_messages`` messages / about ``batch_rows`` movements, waiting at
  most ``batch_delay_s`` for more once the first is there; checks each (``store.receive``); writes the batch in one
  transaction (``store.apply_batch``); after the commit, acknowledges every message of it (PUBACK) and publishes the
  rewinds the store asked for. Commits run one at a time, in order; the next batch is taken and checked meanwhile.

PostgreSQL down, restarting, a deadlock, a lock timeout or any other error a later try can get past
(``hub.central.errors.transient``): nothing is acknowledged, the writer keeps the batch and tries again with the same
back-off, reconnecting; meanwhile the broker sends nothing more beyond the Receive Maximum. An error no retry fixes
(a schema changed by hand, a privilege revoked, the same batch cancelled by ``statement_timeout`` 3 times in a row,
a connection refused for its settings: wrong password, role or database name: ``errors.py``): nothing is
acknowledged, one log line names its SQLSTATE and message, and ``run`` raises ``PermanentDatabaseError``
(``central run`` exits 1; the service manager starts it again after its delay). A value the database refuses goes
to ``rejected``. A batch is written once even if its broker connection dropped meanwhile (then nothing of it is
acknowledged: a broker that kept its state sends it again, harmlessly thanks to the store's keys; one that crashed
without saving it never would); a retry is given up for the messages whose connection dropped (they come again on
the next connection). A database of a newer schema
stops the consumer (``SchemaError``). Every ``rejected_prune_interval_s`` a batch's transaction also deletes the
refused messages older than ``rejected_keep_days`` or beyond the newest ``rejected_keep_rows``
(``store.prune_rejected``). On ``stop``: what was already received is written and acknowledged if the database is
up, then a normal DISCONNECT; the broker keeps the session (and whatever is unacknowledged) for ``session_expiry_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from hub.central.config import CentralConfig
from hub.central.errors import (
    CANCELLED_TRIES,
    QUERY_CANCELED,
    PermanentDatabaseError,
    describe,
    is_connection_error,
    sqlstate,
    transient,
)
from hub.central.mqtt import BrokerError, Connection, Delivery
from hub.central.schema import migrate
from hub.central.store import PRUNE_BATCH, Outcome, Received, RejectedBound, apply_batch, receive
from hub.fleet.messages import Movements, encode_rewind, topic
from hub.ledger.models import SchemaError

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("hub.central")

AfterCommit = Callable[[Sequence[Delivery], Outcome], Awaitable[None]]


# A consumer frozen inside its transaction (a stopped VM, a debugger) holds its hubs' rows: the server ends such a
# session after a minute, and a consumer waiting for another's rows gives up after 30 s and tries again.
_SESSION = {"idle_in_transaction_session_timeout": "60s", "lock_timeout": "30s"}


class CentralUnavailable(RuntimeError):
    """The ``central`` extra (asyncpg) is not installed."""


def load_asyncpg() -> Any:
    """asyncpg, imported on first use: a hub installed without the ``central`` extra never needs it."""
    try:
        import asyncpg
    except ImportError:
        raise CentralUnavailable(
            "the central consumer needs PostgreSQL's driver: install smartshelf[central] (pip install "
            "'smartshelf[central]')"
        ) from None
    return asyncpg


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Stats:
    messages: int = 0
    batches: int = 0
    movements_inserted: int = 0
    movements_duplicate: int = 0
    movements_matched: int = 0  # held under another incarnation (a restored hub publishing its ledger again)
    movements_conflicting: int = 0  # not stored: another movement holds their source_ref/leg or id
    alerts: int = 0
    snapshots: int = 0
    statuses: int = 0
    rejected: int = 0
    rejected_pruned: int = 0  # refused messages deleted from ``rejected`` (older or beyond the bound)
    ignored: int = 0
    acked: int = 0
    not_acked: int = 0  # committed, but their connection had dropped: the broker sends them again
    given_up: int = 0  # batches dropped uncommitted after a failed try because their connection had dropped
    db_errors: int = 0
    broker_connects: int = 0
    rewinds: int = 0

    def add(self, out: Outcome) -> None:
        self.batches += 1
        self.messages += out.messages
        self.movements_inserted += out.movements_inserted
        self.movements_duplicate += out.movements_duplicate
        self.movements_matched += out.movements_matched
        self.movements_conflicting += out.movements_conflicting
        self.alerts += out.alerts
        self.snapshots += out.snapshots
        self.statuses += out.statuses
        self.rejected += len(out.rejected)
        self.rejected_pruned += out.rejected_pruned
        self.ignored += out.ignored


class Consumer:
    def __init__(self, cfg: CentralConfig, *, after_commit: AfterCommit | None = None) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.after_commit = after_commit  # tests: runs between the commit and the acknowledgements
        self.connection: Connection | None = None
        self.deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self.subscribed = asyncio.Event()  # set while the subscription stands on the current connection
        self._db: asyncpg.Connection | None = None
        self._asyncpg = load_asyncpg()
        self.failure: str | None = None  # the error no retry fixes that stopped the consumer
        self._prune_due = 0.0  # the event loop's time when the next batch also prunes ``rejected`` (0: the first)

    # ------------------------------------------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; raises SchemaError (a newer database), PermanentDatabaseError (an error no retry fixes:
        nothing of its batch acknowledged) and CentralUnavailable."""
        await self._database(stop)  # the schema first: a database we cannot use stops us before the broker
        broker = asyncio.create_task(self._broker_loop(stop), name="central-broker")
        status = asyncio.create_task(self._status_loop(stop), name="central-status")
        try:
            await self._writer_loop(stop)
        finally:
            stop.set()
            for task in (broker, status):
                task.cancel()
            for task in (broker, status):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.connection is not None:
                await self.connection.close()
            await self._close_db()
            log.info("stopped: %s", self.status_line())

    async def _broker_loop(self, stop: asyncio.Event) -> None:
        b = self.cfg.broker
        delay = b.reconnect_min_s
        while not stop.is_set():
            conn = Connection(b, asyncio.get_running_loop(), self.deliveries)
            try:
                await conn.open()
                await conn.subscribe(b.subscription, 1)
            except (BrokerError, TimeoutError) as exc:
                conn.abort(str(exc))
                log.warning("broker %s:%d: %s; again in %.1f s", b.host, b.port, exc, delay)
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, b.reconnect_max_s)
                continue
            self.connection = conn
            self.subscribed.set()
            self.stats.broker_connects += 1
            delay = b.reconnect_min_s
            log.info(
                "broker %s:%d: connected as %s (%s), subscribed to %s",
                b.host, b.port, b.client_id, "session resumed" if conn.session_present else "new session",
                b.subscription,
            )  # fmt: skip
            await _first(conn.closed, stop)
            self.subscribed.clear()
            if stop.is_set():
                return
            log.warning("broker %s:%d: %s; reconnecting", b.host, b.port, conn.closed.result())

    async def _writer_loop(self, stop: asyncio.Event) -> None:
        # one commit at a time, in order; the next batch is collected and checked while the last one commits
        committing: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                batch = await self._collect(stop)
                if committing is not None:
                    await committing
                    committing = None
                if batch:
                    committing = asyncio.create_task(self._commit_and_ack(batch, stop), name="central-commit")
        finally:
            if committing is not None:
                await committing
        # stopping: write what already arrived (if the database is there), so that it is not left in the session
        leftover = []
        while not self.deliveries.empty():
            leftover.append(self._received(self.deliveries.get_nowait()))
        for i in range(0, len(leftover), self.cfg.batch_messages):
            await self._commit_and_ack(leftover[i : i + self.cfg.batch_messages], None)

    def _received(self, d: Delivery) -> tuple[Delivery, Received]:
        return d, receive(self.cfg.broker.topic_prefix, d.topic, d.payload)

    async def _collect(self, stop: asyncio.Event) -> list[tuple[Delivery, Received]]:
        getter = asyncio.ensure_future(self.deliveries.get())
        await _first(getter, stop)
        if not getter.done():
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter
            return []
        batch = [self._received(getter.result())]
        rows = _rows(batch[0][1])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.batch_delay_s
        while len(batch) < self.cfg.batch_messages and rows < self.cfg.batch_rows:
            try:
                d = self.deliveries.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    d = await asyncio.wait_for(self.deliveries.get(), left)
                except TimeoutError:
                    break
            batch.append(self._received(d))
            rows += _rows(batch[-1][1])
            await asyncio.sleep(0)  # checking is CPU work: let the commit in flight go on meanwhile
        return batch

    async def _commit_and_ack(self, batch: list[tuple[Delivery, Received]], stop: asyncio.Event | None) -> None:
        """Commit (retrying while the broker connection stands), then acknowledge. ``stop`` None: one try only."""
        delay = self.cfg.broker.reconnect_min_s
        first = True
        cancelled = 0  # tries of this batch in a row the server cancelled (57014: statement_timeout)
        while True:
            # the first try writes every message received, even one whose connection has dropped since: a broker
            # that crashed without saving its state never sends it again; a retry only those it will send again
            live = batch if first else [(d, r) for d, r in batch if d.connection.up]
            first = False
            if not live:
                self.stats.given_up += 1
                log.info("a batch of %d message(s) given up uncommitted: its broker connection dropped", len(batch))
                return
            prune = self._prune_bound()
            try:
                db = await self._database(stop)
                if db is None:
                    return
                outcome = await apply_batch(db, [r for _, r in live], now_ms(), prune)
                break
            except (SchemaError, PermanentDatabaseError):
                raise
            except Exception as exc:
                self.stats.db_errors += 1
                kept = f"{len(live)} message(s) not acknowledged (the broker keeps them)"
                if not transient(exc):
                    self._fail(exc, stop, kept, "retrying cannot fix this (a schema changed by hand? smartshelf "
                               "central migrate / check say more)", exc_info=sqlstate(exc) is None)  # fmt: skip
                cancelled = cancelled + 1 if sqlstate(exc) == QUERY_CANCELED else 0
                if cancelled >= CANCELLED_TRIES:
                    self._fail(exc, stop, kept, f"the same batch was cancelled {cancelled} times in a row "
                               "(statement_timeout? give the role a longer one, or a smaller central.batch_messages "
                               "/ batch_rows)")  # fmt: skip
                log.warning(
                    "PostgreSQL: %s: %s; %d message(s) not acknowledged, again in %.1f s",
                    type(exc).__name__, exc, len(live), delay, exc_info=not is_connection_error(exc),
                )  # fmt: skip
                await self._close_db()
                if stop is None or stop.is_set() or await _sleep_unless(stop, delay):
                    return  # stopping: nothing acknowledged, the broker sends them again
                delay = min(delay * 2, self.cfg.broker.reconnect_max_s)
        self.stats.add(outcome)
        if prune is not None:  # a full pass leaves more to delete: the next batch goes on
            more = outcome.rejected_pruned >= prune.limit
            self._prune_due = 0.0 if more else asyncio.get_running_loop().time() + self.cfg.rejected_prune_interval_s
        if outcome.rejected_pruned:
            log.info("deleted %d refused message(s) from rejected (older than %d day(s) or beyond the newest %d)",
                     outcome.rejected_pruned, self.cfg.rejected_keep_days, self.cfg.rejected_keep_rows)  # fmt: skip
        for r in outcome.rejected:
            log.warning("rejected %s: %s", r.topic[:200], r.reason)
        if outcome.movements_conflicting:
            log.warning(
                "%d movement(s) not stored: another movement holds their source_ref/leg or incarnation/id "
                "(movement_matches; smartshelf central check lists them)",
                outcome.movements_conflicting,
            )
        if self.after_commit is not None:
            await self.after_commit([d for d, _ in live], outcome)
        for d, _ in live:
            if d.connection.ack(d):
                self.stats.acked += 1
            else:
                self.stats.not_acked += 1
        self._publish_rewinds(outcome)

    def _prune_bound(self) -> RejectedBound | None:
        """What to prune from ``rejected`` in this batch's transaction, when it is time to."""
        if asyncio.get_running_loop().time() < self._prune_due:
            return None
        return RejectedBound(self.cfg.rejected_keep_days * 86_400_000, self.cfg.rejected_keep_rows, PRUNE_BATCH)

    def _fail(
        self, exc: Exception, stop: asyncio.Event | None, kept: str, why: str, *, exc_info: bool = False
    ) -> NoReturn:
        """An error no retry fixes: say so in one line (the error; ``kept``: what is left unacknowledged; ``why``
        stopping), stop, acknowledge nothing."""
        self.failure = describe(exc)
        log.error(
            "PostgreSQL %s: %s; %s; stopping: %s", self.cfg.database.display(), self.failure, kept, why,
            exc_info=exc_info,
        )  # fmt: skip
        if stop is not None:
            stop.set()
        raise PermanentDatabaseError(self.failure, sqlstate(exc)) from exc

    def _publish_rewinds(self, outcome: Outcome) -> None:
        conn = self.connection
        for rw in outcome.rewinds:
            if conn is None or not conn.up:
                return  # asked again at the hub's next snapshot
            payload = encode_rewind(rw.hub, rw.sent_ms, movements_after=rw.movements_after, alerts=rw.alerts)
            if conn.publish(topic(self.cfg.broker.topic_prefix, rw.hub, "rewind"), payload):
                self.stats.rewinds += 1
                log.info("asked hub %s to publish again: movements after %s, alerts %s", rw.hub,
                         rw.movements_after, rw.alerts)  # fmt: skip

    # ------------------------------------------------------------------------------------------------ database

    async def _database(self, stop: asyncio.Event | None) -> asyncpg.Connection | None:
        """The open connection, or a new one (migrated), retrying with the back-off until ``stop``; None then."""
        if self._db is not None and not self._db.is_closed():
            return self._db
        delay = self.cfg.broker.reconnect_min_s
        where = self.cfg.database.display()
        while True:
            try:
                db: asyncpg.Connection = await self._asyncpg.connect(
                    **self.cfg.database.connect_kwargs(), server_settings=_SESSION
                )
            except (OSError, TimeoutError, self._asyncpg.PostgresError, self._asyncpg.InterfaceError) as exc:
                self.stats.db_errors += 1
                if not transient(exc):  # refused for the settings (28P01, 28000, 3D000, ...): no retry fixes it
                    self.failure = describe(exc)
                    log.error(
                        "PostgreSQL %s: cannot connect: %s; stopping: retrying cannot fix this (central.toml "
                        "[database]: user, password, database name; or the server's pg_hba.conf, the role's LOGIN)",
                        where, self.failure,
                    )  # fmt: skip
                    if stop is not None:
                        stop.set()
                    raise PermanentDatabaseError(self.failure, sqlstate(exc)) from exc
                log.warning("PostgreSQL %s: cannot connect: %s; again in %.1f s", where, exc, delay)
                if stop is None or stop.is_set() or await _sleep_unless(stop, delay):
                    return None
                delay = min(delay * 2, self.cfg.broker.reconnect_max_s)
                continue
            try:
                old, new = await migrate(db)
            except BaseException:
                await db.close()
                raise
            if old != new:
                log.info("PostgreSQL %s: schema migrated from version %d to %d", where, old, new)
            self._db = db
            return db

    async def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(db.close(), 5)
            if not db.is_closed():
                db.terminate()

    # -------------------------------------------------------------------------------------------------- status

    def status_line(self) -> str:
        s = self.stats
        broker = "up" if self.connection is not None and self.connection.up else "down"
        db = "up" if self._db is not None and not self._db.is_closed() else "down"
        if self.failure is not None:
            db = f"failed ({self.failure})"
        return (
            f"broker {broker}, database {db}; {s.messages} message(s) in {s.batches} commit(s): "
            f"{s.movements_inserted} movement(s) stored, {s.movements_duplicate} duplicate(s), {s.alerts} alert "
            f"change(s), {s.snapshots} snapshot(s), {s.rejected} rejected ({s.rejected_pruned} pruned); "
            f"{s.acked} acknowledged, {s.not_acked + s.given_up} left to the broker; {s.rewinds} rewind(s) asked"
        )

    async def _status_loop(self, stop: asyncio.Event) -> None:
        while not await _sleep_unless(stop, self.cfg.status_interval_s):
            log.info("%s", self.status_line())


def _rows(r: Received) -> int:
    return len(r.message.rows) if isinstance(r.message, Movements) else 1


async def _first(fut: asyncio.Future[Any], stop: asyncio.Event) -> None:
    """Wait until ``fut`` is done or ``stop`` is set."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({fut, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep; True if ``stop`` was set meanwhile (at once if it already is)."""
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
