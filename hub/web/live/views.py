"""The live feed over HTTP: ``GET /events`` (server-sent events) and ``GET /lanes.json``.

GET /events (text/event-stream): ``event: snapshot`` with every lane, then ``event: lanes`` with the lanes that
changed, a comment every ``LIVE_HEARTBEAT_S``; the stream ends after ``LIVE_LIFETIME_S`` so a waitress thread is
never held for ever. ``?once=1``: the snapshot alone. At most ``LIVE_MAX_CLIENTS`` streams: beyond, 503 with
Retry-After. GET /lanes.json: the snapshot. Data: ``{"version": int, "open_alerts": int, "lanes": [...]}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request

from hub.web.access import requires
from hub.web.live.lane_feed import DEFAULTS, FeedClosed, LaneFeed, Subscription, TooManyClients, feed

bp = Blueprint("live", __name__)


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
@requires("viewer")
def lanes_json() -> Response:
    snapshot = feed(current_app).snapshot()  # FeedClosed (the server stopping): 503 from app.unavailable
    return Response(json.dumps(snapshot, separators=(",", ":")), mimetype="application/json")
