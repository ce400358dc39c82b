"""Live updates of the overview: a change feed polled from the ledger, fanned out as server-sent events.

One ``LaneFeed`` per app (``feed(app)``) keeps every lane's row (``pages.LaneRow``) in memory: the overview
(``rows()``), ``/lanes.json`` and ``/api/v1/lanes`` (``snapshot()``) and the streams all read it; a read polls first,
so it includes every commit so far. Its thread,
started by the first subscriber and stopped by ``close_feed`` (``WebServer.stop``) or after a while without
subscribers, checks ``PRAGMA data_version`` on its own read-only connection every ``LIVE_POLL_S``; when another
connection committed, it works out which lanes may have changed (movements above the last id it saw, unresolved
alerts that appeared or went, lanes or SKUs edited), recomputes only those rows (``pages.lanes`` with a filter),
and sends the rows that really differ to every subscriber. Each subscriber has a bounded queue: one that falls
``LIVE_QUEUE`` events behind is dropped (its stream ends; EventSource reconnects and gets a fresh snapshot).

GET /events (text/event-stream): ``event: snapshot`` with every lane, then ``event: lanes`` with the lanes that
changed, a comment every ``LIVE_HEARTBEAT_S``; the stream ends after ``LIVE_LIFETIME_S`` so a waitress thread is
never held for ever. ``?once=1``: the snapshot alone. At most ``LIVE_MAX_CLIENTS`` streams: beyond, 503 with
Retry-After. GET /lanes.json: the snapshot. Data: ``{"version": int, "open_alerts": int, "lanes": [...]}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from hub.ledger.models import LedgerClosed
from hub.web.pages import UNRESOLVED_SQL, LaneRow, cause_lanes, cause_node, lanes

log = logging.getLogger(__name__)
bp = Blueprint("live", __name__)

DEFAULTS: dict[str, Any] = {
    "LIVE_MAX_CLIENTS": 64,  # concurrent /events streams ([web] max_live_clients)
    "LIVE_POLL_S": 0.25,  # how often the feed checks PRAGMA data_version
    "LIVE_HEARTBEAT_S": 15.0,  # a comment line after this long without an event
    "LIVE_LIFETIME_S": 600.0,  # a stream ends after this long (EventSource reconnects)
    "LIVE_QUEUE": 64,  # events a subscriber may fall behind before it is dropped
    "LIVE_IDLE_S": 60.0,  # the feed's thread stops after this long without subscribers
    "LIVE_RETRY_MS": 3000,  # EventSource's reconnection delay
}
_EXTENSION = "smartshelf_live"
_create_lock = threading.Lock()


class TooManyClients(Exception):
    pass


class FeedClosed(LedgerClosed):
    """The server is stopping: the feed reads nothing more (answered 503 by the app, like a closed ledger)."""


class Subscription:
    """One stream's bounded queue of ``lanes`` events (None: wake up, look at ``ended``)."""

    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=size)
        self.ended: str | None = None  # "dropped" (fell behind) or "closed" (the server stops)

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
    def __init__(self, ledger_path: Path, settings: Mapping[str, Any]) -> None:
        self._path = ledger_path
        self.max_clients = int(settings["LIVE_MAX_CLIENTS"])
        self.poll_s = float(settings["LIVE_POLL_S"])
        self.queue_size = int(settings["LIVE_QUEUE"])
        self.idle_s = float(settings["LIVE_IDLE_S"])
        self._lock = threading.Lock()  # the connection, the state and the subscribers
        self._stop = threading.Event()
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
        # what the last poll saw
        self._data_version: int | None = None
        self._last_movement = 0
        self._unresolved: set[tuple[int, str, str]] = set()
        self._structure: dict[str, tuple[Any, ...]] = {}
        self.polls = 0  # polls that found a commit (for tests and benchmarks)
        self.dropped = 0  # subscribers dropped for falling behind

    # ---------------------------------------------------------------------------------------------- public

    def snapshot(self) -> dict[str, Any]:
        """Every lane as of now (polls first, so it includes every commit so far). The lanes list is shared by
        every caller until the next change: read it, never modify it."""
        with self._lock:
            if self._closed:
                raise FeedClosed
            self._poll_or_reset()
            return self._snapshot()

    def rows(self) -> tuple[list[LaneRow], int]:
        """Every lane's row (by node and lane index) and the number of unresolved alerts, as of now: what the
        overview renders, without reading every lane again (the poll reads only what changed)."""
        with self._lock:
            if self._closed:
                raise FeedClosed
            self._poll_or_reset()
            return self._ordered(), self._open_alerts

    def subscribe(self) -> tuple[Subscription, dict[str, Any]]:
        """A new subscriber and the snapshot its events follow (every event has a higher version)."""
        with self._lock:
            if self._closed:
                raise FeedClosed
            if len(self._subs) >= self.max_clients:
                raise TooManyClients
            self._poll_or_reset()
            sub = Subscription(self.queue_size)
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
        """End every stream, stop the thread, close the connection."""
        with self._lock:
            self._closed = True
            self._stop.set()
            for sub in self._subs:
                sub.end("closed")
            self._subs.clear()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            self._disconnect()

    # ---------------------------------------------------------------------------------------------- thread

    def _run(self) -> None:
        idle_since: float | None = None
        while not self._stop.wait(self.poll_s):
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
                    self._poll_or_reset()
                except sqlite3.Error as exc:
                    log.warning("live updates: reading the ledger failed: %s", exc)
                except Exception:  # a bug must not end live updates for good: log it, start again from a full read
                    log.exception("live updates: unexpected error; the next poll reads every lane again")
                    self._disconnect()
        with self._lock:
            self._thread = None

    # ------------------------------------------------------------------------------------------- internals
    # everything below runs with self._lock held

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._data_version = None

    def _poll_or_reset(self) -> None:
        try:
            self._poll()
        except sqlite3.Error:  # e.g. the file was replaced by a restore: the next poll starts from a full read
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

    def _poll(self) -> None:
        if self._conn is None:
            uri = f"file:{self._path.resolve()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            self._conn = conn
        conn = self._conn
        data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if data_version == self._data_version:
            return
        full = self._data_version is None
        self.polls += 1
        conn.execute("BEGIN")  # one consistent read
        try:
            changed = self._changed_lanes(conn, full)
            rows = {r.lane_id: r for r in lanes(conn, None if full else changed)} if changed else {}
        finally:
            conn.execute("COMMIT")
        self._data_version = data_version  # only now: a failed read is read again
        updates = [row for lane_id, row in rows.items() if self._rows.get(lane_id) != row]
        gone = [lane_id for lane_id in changed if lane_id not in rows and lane_id in self._rows]
        for lane_id in gone:  # lanes are not deleted by the ledger; after a restore they may be
            del self._rows[lane_id]
        if updates or gone:
            self._sorted = None
        open_alerts = len(self._unresolved)
        if not updates and open_alerts == self._open_alerts:
            return
        self._rows.update((row.lane_id, row) for row in updates)
        self._open_alerts = open_alerts
        self.version += 1
        updates.sort(key=lambda r: (r.node_id, r.lane_index))
        event = {"version": self.version, "open_alerts": open_alerts, "lanes": [r.to_json() for r in updates]}
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(event)
            except queue.Full:
                self._subs.remove(sub)
                sub.end("dropped")
                self.dropped += 1

    def _changed_lanes(self, conn: sqlite3.Connection, full: bool) -> set[str]:
        """Lanes whose row may differ from what the subscribers were told (every lane after a full read)."""
        structure = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT l.lane_id, l.node_id, l.lane_index, l.sku, s.name, s.capacity, s.reorder_point"
                " FROM lanes AS l LEFT JOIN skus AS s ON s.sku = l.sku"
            )
        }
        last = int(conn.execute("SELECT coalesce(max(id), 0) FROM movements").fetchone()[0])
        unresolved = {(int(i), str(k), str(c)) for i, k, c in conn.execute(UNRESOLVED_SQL)}
        if full:
            changed = set(structure) | set(self._rows)
        else:
            changed = {lane_id for lane_id, row in structure.items() if self._structure.get(lane_id) != row}
            changed |= set(self._structure) - set(structure)
            skus: set[str] = set()
            if last > self._last_movement:
                for location, sku in conn.execute(
                    "SELECT DISTINCT location, sku FROM movements WHERE id > ? AND id <= ?", (self._last_movement, last)
                ):
                    if location.startswith("sensor:"):
                        changed.add(location[7:])
                    elif sku is not None:
                        skus.add(sku)
            nodes: set[int] = set()
            for _id, _kind, key in unresolved ^ self._unresolved:
                node_id = cause_node(key)
                if key.startswith("sku:"):
                    skus.add(key[4:])
                elif node_id is not None:
                    nodes.add(node_id)
                else:
                    changed.update(cause_lanes(key))
            if nodes:
                changed.update(lane_id for lane_id, row in structure.items() if row[0] in nodes)
            if skus:
                changed.update(lane_id for lane_id, row in structure.items() if row[2] in skus)
            changed &= set(structure) | set(self._rows)
        self._structure = structure
        self._last_movement = last
        self._unresolved = unresolved
        return changed


def feed(app: Flask) -> LaneFeed:
    """The app's feed (created on first use, with the app's LIVE_* settings)."""
    existing = app.extensions.get(_EXTENSION)
    if isinstance(existing, LaneFeed):
        return existing
    with _create_lock:
        existing = app.extensions.get(_EXTENSION)
        if not isinstance(existing, LaneFeed):
            settings = {key: app.config.get(key, value) for key, value in DEFAULTS.items()}
            existing = LaneFeed(Path(app.config["LEDGER_PATH"]), settings)
            app.extensions[_EXTENSION] = existing
        return existing


def close_feed(app: Flask) -> None:
    """End the app's streams and stop its feed for good (``WebServer.stop``): later requests get 503."""
    feed(app).close()


def _setting(key: str) -> Any:
    return current_app.config.get(key, DEFAULTS[key])


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _stream(lane_feed: LaneFeed, sub: Subscription, first: str, heartbeat_s: float, lifetime_s: float) -> Iterator[str]:
    try:
        yield first
        deadline = time.monotonic() + lifetime_s
        while sub.ended is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            event = sub.next(min(heartbeat_s, remaining))
            if sub.ended is not None:
                return
            if event is not None:
                yield _sse("lanes", event)
            elif remaining > heartbeat_s:
                yield ": keep-alive\n\n"
    finally:
        lane_feed.unsubscribe(sub)


_SSE_HEADERS = {"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}


@bp.get("/events")
def events() -> Response:
    lane_feed = feed(current_app)
    if request.method == "HEAD":  # no stream to hold a thread for
        return Response(mimetype="text/event-stream", headers=_SSE_HEADERS)
    retry = f"retry: {int(_setting('LIVE_RETRY_MS'))}\n"
    try:
        if request.args.get("once") == "1":
            body = retry + _sse("snapshot", lane_feed.snapshot())
            return Response(body, mimetype="text/event-stream", headers=_SSE_HEADERS)
        sub, snapshot = lane_feed.subscribe()
    except (TooManyClients, FeedClosed):
        return Response(
            "Too many live connections; try again shortly.\n",
            status=503,
            mimetype="text/plain",
            headers={"Retry-After": "10", **_SSE_HEADERS},
        )
    stream = _stream(
        lane_feed,
        sub,
        retry + _sse("snapshot", snapshot),
        float(_setting("LIVE_HEARTBEAT_S")),
        float(_setting("LIVE_LIFETIME_S")),
    )
    response = Response(stream, mimetype="text/event-stream", headers=_SSE_HEADERS)
    response.call_on_close(lambda: lane_feed.unsubscribe(sub))  # also when the stream never started
    return response


@bp.get("/lanes.json", endpoint="lanes")
def lanes_json() -> Response:
    snapshot = feed(current_app).snapshot()  # FeedClosed (the server stopping): 503 from app._unavailable
    return Response(json.dumps(snapshot, separators=(",", ":")), mimetype="application/json")
