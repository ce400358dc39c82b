"""The live feed: every lane's row (``lanes.LaneRow``) in memory, one ``LaneFeed`` per app, fanned out to streams.

The overview (``rows()``), ``/lanes.json`` and ``/api/v1/lanes`` (``snapshot()``) and the ``/events`` streams
(``subscribe()``) all read the app's feed (``feed(app)``). A read first applies what was committed since the last
one, so it includes every commit so far; the feed's thread (started by the first subscriber, stopped by
``close_feed`` (``WebServer.stop``) or after ``LIVE_IDLE_S`` without subscribers) does the same by itself, and
sends the rows that really differ to every subscriber. Each subscriber has a bounded queue: one that falls
``LIVE_QUEUE`` events behind is dropped (its stream ends; EventSource reconnects and gets a fresh snapshot).

How the feed learns of commits:

* **Notified by the writer** (the app's writer is a ``bridge.ChangeSource``: a ``LoopWriter`` into the hub's
  ``LedgerService``, which is how the hub serves the page). The ledger's writer calls the feed's listener after
  each COMMIT with what that transaction changed (``hub/ledger/changes.py``). The listener, on the hub's loop, only
  puts the changes on a bounded queue (``LIVE_INBOX``) and wakes the thread; should the queue fill up (nobody read
  for that many commits) the next read is a full one instead. A read takes every queued change, works out the
  lanes they name (``sensor:<lane>`` movements, edited lanes, lanes whose tags changed, the lanes of edited SKUs,
  the lanes, nodes and SKUs the changed alerts' causes name) and reads only those rows, and the unresolved alerts'
  counts when an alert changed, in one read transaction. Nothing is read while nothing is committed.
* **Polling**, only when there is no change source: a writer that is not the hub's ``LoopWriter`` (a test's), or a
  ``LaneFeed`` built on its own (``LaneFeed(path, settings)``, e.g. on a file another process writes). A commit of
  another connection cannot be notified in this process (SQLite tells another connection only *that* something
  was committed: ``PRAGMA data_version``, ~5 us), so the feed checks it every ``LIVE_POLL_S`` and, when it moved,
  reads every lane again (2,000 lanes: ~13 ms) and sends the rows that differ. That is the only polling left and
  the only reason for it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from hub.ledger.changes import Changes
from hub.ledger.models import LedgerClosed
from hub.web.bridge import ChangeSource
from hub.web.db import app_writer, open_ro, read_transaction
from hub.web.lanes import LaneRow, alert_counts, lanes, lanes_named

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "LIVE_MAX_CLIENTS": 64,  # concurrent /events streams ([web] max_live_clients)
    "LIVE_MAX_PER_SESSION": 4,  # streams one signed-in browser may hold ([web] max_live_per_session)
    "LIVE_MAX_PER_USER": 8,  # streams one user may hold over all their sessions ([web] max_live_per_user)
    "LIVE_RECHECK_S": 2.0,  # how often a stream checks its session still stands (disabled, demoted, signed out)
    "LIVE_POLL_S": 0.25,  # without a change source: how often the feed checks PRAGMA data_version
    "LIVE_HEARTBEAT_S": 15.0,  # a comment line after this long without an event
    "LIVE_LIFETIME_S": 600.0,  # a stream ends after this long (EventSource reconnects)
    "LIVE_QUEUE": 64,  # events a subscriber may fall behind before it is dropped
    "LIVE_IDLE_S": 60.0,  # the feed's thread stops after this long without subscribers
    "LIVE_RETRY_MS": 3000,  # EventSource's reconnection delay
    "LIVE_INBOX": 1024,  # commits notified and not yet read; beyond, the next read reads every lane
}
_EXTENSION = "smartshelf_live"
_create_lock = threading.Lock()


class TooManyClients(Exception):
    """Every stream of the server is taken."""


class TooManyStreams(TooManyClients):
    """This session or user holds as many streams as it may (the message says which)."""


class FeedClosed(LedgerClosed):
    """The server is stopping: the feed reads nothing more (answered 503 by the app, like a closed ledger)."""


class Subscription:
    """One stream's bounded queue of ``lanes`` events (None: wake up, look at ``ended``)."""

    def __init__(self, size: int, owner: tuple[str, str] = ("", "")) -> None:
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=size)
        self.ended: str | None = None  # "dropped" (fell behind), "closed" (the server stops), "signed out"
        self.owner = owner  # (user, session id): what the per-session and per-user caps count

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
        with contextlib.suppress(queue.Full):  # a full queue: the reader finds items, then ``ended``
            self.queue.put_nowait(None)

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after ``timeout`` or once ended."""
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if self.ended is not None else item


class LaneFeed:
    def __init__(self, ledger_path: Path, settings: Mapping[str, Any], changes: ChangeSource | None = None) -> None:
        self._path = ledger_path
        self.max_clients = int(settings["LIVE_MAX_CLIENTS"])
        self.max_per_session = int(settings.get("LIVE_MAX_PER_SESSION", DEFAULTS["LIVE_MAX_PER_SESSION"]))
        self.max_per_user = int(settings.get("LIVE_MAX_PER_USER", DEFAULTS["LIVE_MAX_PER_USER"]))
        self.poll_s = float(settings["LIVE_POLL_S"])
        self.queue_size = int(settings["LIVE_QUEUE"])
        self.idle_s = float(settings["LIVE_IDLE_S"])
        self._lock = threading.Lock()  # the connection, the state and the subscribers
        self._stop = threading.Event()
        self._wake = threading.Event()  # a commit was notified (or the feed closes)
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._subs: list[Subscription] = []
        self._closed = False
        # what the subscribers have been told
        self.version = 0
        self._rows: dict[str, LaneRow] = {}
        self._sorted: list[LaneRow] | None = None  # _rows by node and lane index, until they change
        self._lanes_json: list[dict[str, Any]] | None = None  # the same as JSON objects, until they change
        self._open_alerts = 0
        # where the rows stand
        self._synced = False  # False: the next read reads every lane (first read, after an error or an overflow)
        self._data_version: int | None = None  # polling: what PRAGMA data_version said at the last read
        self._inbox: queue.Queue[Changes] = queue.Queue(maxsize=int(settings.get("LIVE_INBOX", 1024)))
        self._overflow = False
        self.notified = changes is not None
        self._unlisten = changes.listen(self._on_commit) if changes is not None else None
        self.reads = 0  # read transactions that found something to read (for tests and benchmarks)
        self.dropped = 0  # subscribers dropped for falling behind

    # ---------------------------------------------------------------------------------------------- public

    def snapshot(self) -> dict[str, Any]:
        """Every lane as of now (every commit so far applied first). The lanes list is shared by every caller
        until the next change: read it, never modify it."""
        with self._lock:
            if self._closed:
                raise FeedClosed
            self._refresh_or_reset()
            return self._snapshot()

    def rows(self) -> tuple[list[LaneRow], int]:
        """Every lane's row (by node and lane index) and the number of unresolved alerts, as of now: what the
        overview renders, without reading every lane again (only what changed is read)."""
        with self._lock:
            if self._closed:
                raise FeedClosed
            self._refresh_or_reset()
            return self._ordered(), self._open_alerts

    def subscribe(self, owner: tuple[str, str] = ("", "")) -> tuple[Subscription, dict[str, Any]]:
        """A new subscriber for ``owner`` (user, session id) and the snapshot its events follow (every event has a
        higher version). TooManyClients when every stream is taken, TooManyStreams when the session or the user
        holds its share."""
        with self._lock:
            if self._closed:
                raise FeedClosed
            if len(self._subs) >= self.max_clients:
                raise TooManyClients
            if owner[0]:
                same_user = [sub for sub in self._subs if sub.owner[0] == owner[0]]
                if sum(1 for sub in same_user if sub.owner[1] == owner[1]) >= self.max_per_session:
                    raise TooManyStreams(f"this browser already holds {self.max_per_session} live streams")
                if len(same_user) >= self.max_per_user:
                    raise TooManyStreams(f"{owner[0]} already holds {self.max_per_user} live streams")
            self._refresh_or_reset()
            sub = Subscription(self.queue_size, owner)
            self._subs.append(sub)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="web-live", daemon=True)
                self._thread.start()
            return sub, self._snapshot()

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None

    def close(self, timeout: float = 5.0) -> None:
        """End every stream, stop listening and the thread, close the connection."""
        if self._unlisten is not None:
            self._unlisten()
        with self._lock:
            self._closed = True
            self._stop.set()
            self._wake.set()
            for sub in self._subs:
                sub.end("closed")
            self._subs.clear()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            self._disconnect()

    # ------------------------------------------------------------------------------------ the writer's side

    def _on_commit(self, changes: Changes) -> None:
        """The ledger's commit listener, on the hub's event loop: hand over, never block."""
        try:
            self._inbox.put_nowait(changes)
        except queue.Full:
            self._overflow = True  # what was lost is read with everything else
        self._wake.set()

    # ---------------------------------------------------------------------------------------------- thread

    def _run(self) -> None:
        idle_since: float | None = None
        wait_s = min(self.idle_s, 1.0) if self.notified else self.poll_s
        while not self._stop.is_set():
            self._wake.wait(wait_s)
            self._wake.clear()
            with self._lock:
                if self._closed:
                    break
                if not self._subs:
                    now = time.monotonic()
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since >= self.idle_s:
                        self._thread = None
                        return
                    continue
                idle_since = None
                try:
                    self._refresh_or_reset()
                except sqlite3.Error as exc:
                    log.warning("live updates: reading the ledger failed: %s", exc)
                except Exception:  # a bug must not end live updates for good: log it, start again from a full read
                    log.exception("live updates: unexpected error; the next read reads every lane again")
                    self._disconnect()
        with self._lock:
            self._thread = None

    # ------------------------------------------------------------------------------------------- internals
    # everything below runs with self._lock held

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._synced = False

    def _refresh_or_reset(self) -> None:
        try:
            self._refresh()
        except sqlite3.Error:  # e.g. the file was replaced by a restore: the next read starts from a full read
            self._disconnect()
            raise

    def _ordered(self) -> list[LaneRow]:
        if self._sorted is None:
            self._sorted = sorted(self._rows.values(), key=lambda r: (r.node_id, r.lane_index))
            self._lanes_json = None
        return self._sorted

    def _snapshot(self) -> dict[str, Any]:
        ordered = self._ordered()
        if self._lanes_json is None:
            self._lanes_json = [r.to_json() for r in ordered]
        lanes_json = self._lanes_json
        return {"version": self.version, "open_alerts": self._open_alerts, "lanes": lanes_json}

    def _refresh(self) -> None:
        if self._conn is None:
            self._conn = open_ro(self._path, check_same_thread=False)
        conn = self._conn
        if not self.notified:  # polling: something was committed by another connection, or not
            data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if self._synced and data_version == self._data_version:
                return
            self._read(conn, None, alerts=True)
            self._data_version = data_version  # only now: a failed read is read again
            return
        changes = self._drain()
        if not self._synced:
            self._read(conn, None, alerts=True)
        elif changes:
            self._read(conn, self._lanes_named(changes), alerts=bool(changes.alerts or changes.causes))

    def _drain(self) -> Changes:
        """Every change notified so far, merged; an overflow makes the next read a full one."""
        merged = Changes()
        while True:
            try:
                merged = merged.merge(self._inbox.get_nowait())
            except queue.Empty:
                break
        if self._overflow:
            self._overflow = False
            self._synced = False
        return merged

    def _lanes_named(self, changes: Changes) -> set[str]:
        """The lanes whose row ``changes`` may have changed (``lanes.py`` says what a row depends on)."""
        named = (*changes.sensor_lanes, *changes.lanes, *changes.tags)
        return lanes_named(named, changes.skus, changes.causes, self._rows.values())

    def _read(self, conn: sqlite3.Connection, lane_ids: Collection[str] | None, *, alerts: bool) -> None:
        """Read ``lane_ids`` (None: every lane; the unresolved alerts' count too when ``alerts``) in one read
        transaction and publish the rows that differ."""
        if lane_ids is not None and not lane_ids and not alerts:
            return
        self.reads += 1
        with read_transaction(conn):  # one consistent read
            counts = alert_counts(conn)
            rows = {r.lane_id: r for r in lanes(conn, lane_ids, alerts=counts)} if lane_ids is None or lane_ids else {}
        self._synced = True
        known = self._rows if lane_ids is None else {k: v for k, v in self._rows.items() if k in lane_ids}
        gone = [lane_id for lane_id in known if lane_id not in rows]  # not deleted by the ledger; after a restore
        updates = [row for lane_id, row in rows.items() if self._rows.get(lane_id) != row]
        for lane_id in gone:
            del self._rows[lane_id]
        if updates or gone:
            self._sorted = None
        if not updates and counts.total == self._open_alerts:
            return
        self._rows.update((row.lane_id, row) for row in updates)
        self._open_alerts = counts.total
        self.version += 1
        updates.sort(key=lambda r: (r.node_id, r.lane_index))
        event = {"version": self.version, "open_alerts": counts.total, "lanes": [r.to_json() for r in updates]}
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(event)
            except queue.Full:
                self._subs.remove(sub)
                sub.end("dropped")
                self.dropped += 1


def feed(app: Flask) -> LaneFeed:
    """The app's feed (created on first use, with the app's LIVE_* settings; notified by the app's writer when it
    is a change source)."""
    existing = app.extensions.get(_EXTENSION)
    if isinstance(existing, LaneFeed):
        return existing
    with _create_lock:
        existing = app.extensions.get(_EXTENSION)
        if not isinstance(existing, LaneFeed):
            settings = {key: app.config.get(key, value) for key, value in DEFAULTS.items()}
            writer = app_writer(app)
            source = writer if isinstance(writer, ChangeSource) else None
            existing = LaneFeed(Path(app.config["LEDGER_PATH"]), settings, source)
            app.extensions[_EXTENSION] = existing
        return existing


def close_feed(app: Flask) -> None:
    """End the app's streams and stop its feed for good (``WebServer.stop``): later requests get 503."""
    feed(app).close()
