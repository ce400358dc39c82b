"""The live feed over HTTP: ``GET /events`` (server-sent events) and ``GET /lanes.json``.

GET /events (text/event-stream): ``event: snapshot`` with every lane, then ``event: lanes`` with the lanes that
changed, a comment every ``LIVE_HEARTBEAT_S``; the stream ends after ``LIVE_LIFETIME_S`` so a worker thread is
never held for ever, and within ``LIVE_RECHECK_S`` of its user being disabled, demoted or signed out (``event:
signed-out`` last). ``?once=1``: the snapshot alone. At most ``LIVE_MAX_CLIENTS`` streams, ``LIVE_MAX_PER_SESSION``
per browser session and ``LIVE_MAX_PER_USER`` per user: beyond, 503 with Retry-After. A client that stops reading
is cut by the server's write timeout (``serving/wsgi_bridge.py``).
GET /lanes.json: the snapshot. Data: ``{"version": int, "open_alerts": int, "lanes": [...]}``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, g, request, session

from hub.web.access import requires
from hub.web.accounts.users import get_user, role_rank
from hub.web.db import open_ro
from hub.web.live.lane_feed import DEFAULTS, FeedClosed, LaneFeed, Subscription, TooManyClients, feed

bp = Blueprint("live", __name__)


def _setting(key: str) -> Any:
    return current_app.config.get(key, DEFAULTS[key])


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _stream(
    lane_feed: LaneFeed,
    sub: Subscription,
    first: str,
    heartbeat_s: float,
    lifetime_s: float,
    still_allowed: Callable[[], bool],
    recheck_s: float,
) -> Iterator[str]:
    """The stream's events; it ends when ``still_allowed()`` (asked every ``recheck_s``) says no: the user was
    disabled, demoted below viewer or signed out (the session's epoch moved on) since the stream opened."""
    try:
        yield first
        now = time.monotonic()
        deadline = now + lifetime_s
        next_check = now + recheck_s
        last_sent = now
        while sub.ended is None:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return
            if now >= next_check:
                next_check = now + recheck_s
                if not still_allowed():
                    sub.end("signed out")
                    yield "event: signed-out\ndata: {}\n\n"
                    return
            event = sub.next(max(0.0, min(next_check - now, heartbeat_s - (now - last_sent), remaining)))
            if sub.ended is not None:
                return
            if event is not None:
                last_sent = time.monotonic()
                yield _sse("lanes", event)
            elif time.monotonic() - last_sent >= heartbeat_s and deadline - time.monotonic() > 0:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
    finally:
        lane_feed.unsubscribe(sub)


def _session_check(ledger_path: str, username: str, epoch: object) -> Callable[[], bool]:
    """Does the stream's session still stand? (The check ``access._enforce`` makes on every request.)"""

    def check() -> bool:
        try:
            conn = open_ro(ledger_path)
        except sqlite3.Error:
            return True  # the ledger is not readable right now: the next check decides
        try:
            user = get_user(conn, username)
        except sqlite3.Error:
            return True
        finally:
            conn.close()
        return (
            user is not None
            and not user.disabled
            and user.session_epoch == epoch
            and role_rank(user.role) >= role_rank("viewer")
        )

    return check


def _session_id() -> str:
    """The browser session's own id (kept in its signed cookie): what the per-session stream cap counts."""
    sid = session.get("sid")
    if not isinstance(sid, str):
        sid = secrets.token_urlsafe(16)
        session["sid"] = sid
    return sid


_SSE_HEADERS = {"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}


@bp.get("/events")
@requires("viewer")
def events() -> Response:
    lane_feed = feed(current_app)
    if request.method == "HEAD":  # no stream to hold a thread for
        return Response(mimetype="text/event-stream", headers=_SSE_HEADERS)
    retry = f"retry: {int(_setting('LIVE_RETRY_MS'))}\n"
    try:
        if request.args.get("once") == "1":
            body = retry + _sse("snapshot", lane_feed.snapshot())
            return Response(body, mimetype="text/event-stream", headers=_SSE_HEADERS)
        user = g.user
        sub, snapshot = lane_feed.subscribe((user.username, _session_id()))
    except (TooManyClients, FeedClosed) as exc:
        return Response(
            f"Too many live connections ({exc or 'every one is taken'}); try again shortly.\n",
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
        _session_check(current_app.config["LEDGER_PATH"], user.username, session.get("epoch")),
        float(_setting("LIVE_RECHECK_S")),
    )
    response = Response(stream, mimetype="text/event-stream", headers=_SSE_HEADERS)
    response.call_on_close(lambda: lane_feed.unsubscribe(sub))  # also when the stream never started
    return response


@bp.get("/lanes.json", endpoint="lanes")
@requires("viewer")
def lanes_json() -> Response:
    snapshot = feed(current_app).snapshot()  # FeedClosed (the server stopping): 503 from app.unavailable
    return Response(json.dumps(snapshot, separators=(",", ":")), mimetype="application/json")
