"""Nodes: online/offline, firmware, last seen, link quality, sample rate, forged frames, RFID readers.

The ledger's ``nodes`` table (label, firmware, first / last seen) merged with the running hub's status
(``HubService.status()``, through the ``status`` provider given to ``create_app``; ``server.loop_status`` runs it on
the hub's loop). Without a provider, or when it fails, the page shows the ledger's view and says so.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, current_app, render_template

from hub.ledger.reader import LANES, NODES
from hub.web.access import requires
from hub.web.db import fetch_all, get_db

log = logging.getLogger(__name__)
bp = Blueprint("nodes", __name__)

STATUS_EXTENSION = "smartshelf_status"  # create_app(status=...) keeps the provider here

StatusProvider = Callable[[], dict[str, Any]]
BEACON_ONLINE_S = 90.0  # a BLE node whose beacon was heard this recently is online (nodes renew it every 30 s)


@dataclass(frozen=True)
class ReaderView:
    reader: int
    state: str  # ok | silent | starting
    reads: int
    bad_frames: int
    resets: int
    silences: int
    present: int  # tags the node holds present on this reader's lanes
    age_s: float | None


@dataclass
class NodeView:
    node_id: int
    label: str = ""
    fw_ledger: str | None = None
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None
    lanes: int = 0
    configured: bool = False  # in the running hub's configuration
    up: bool | None = None  # None: no live status
    firmware: str | None = None
    last_seen_s_ago: float | None = None
    frames: int | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    forged: int = 0
    disconnects: int | None = None
    downlink_dropped: int | None = None
    link: str | None = None
    link_connected: bool | None = None
    sample_sps: float | None = None
    outbox_depth: int | None = None
    outbox_dropped: int | None = None
    free_heap: int | None = None
    uptime_s: int | None = None
    gaps: int | None = None
    ble_state: str | None = None  # a BLE node: connected, connecting, queued, idle, backing off, ...
    rssi: int | None = None
    beacon_age_s: float | None = None
    beacon_lanes: list[tuple[int, int, bool]] = field(default_factory=list)  # (lane, count, fault) from its beacon
    ble_connects: int | None = None
    readers: list[ReaderView] = field(default_factory=list)  # its RFID readers' last reader_health (protocol v1.2)
    rfid_v10_ignored: int = 0  # v1.0 rfid_seen / rfid_lost frames: unsequenced, counted, not booked

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def install(app: Flask, status: StatusProvider | None) -> None:
    """``status``: the running hub's ``HubService.status()`` callable from any thread, or None."""
    app.extensions[STATUS_EXTENSION] = status


def status_provider() -> StatusProvider | None:
    provider = current_app.extensions.get(STATUS_EXTENSION)
    return provider if callable(provider) else None


def _live_status() -> tuple[dict[str, Any] | None, str | None]:
    """The hub's status, or None and why not."""
    provider = status_provider()
    if provider is None:
        return None, "Live status is unavailable: this page is not served by a running hub."
    try:
        status = provider()
    except Exception as exc:  # the hub is stopping, or its loop is too busy to answer in time
        log.warning("nodes page: hub status failed: %r", exc)
        return None, "Live status is unavailable: the hub did not answer."
    return status, None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _merge(view: NodeView, node: dict[str, Any], links: dict[str, dict[str, Any]]) -> None:
    view.configured = True
    view.up = bool(node.get("up"))
    view.firmware = node.get("firmware") if isinstance(node.get("firmware"), str) else None
    ago = node.get("last_seen_s_ago")
    view.last_seen_s_ago = float(ago) if isinstance(ago, int | float) else None
    if view.last_seen_ms is None or (_int(node.get("last_seen_ms")) or 0) > view.last_seen_ms:
        view.last_seen_ms = _int(node.get("last_seen_ms")) or view.last_seen_ms
    view.frames = _int(node.get("frames"))
    rejected = node.get("rejected")
    view.rejected = {str(k): int(v) for k, v in rejected.items()} if isinstance(rejected, dict) else {}
    view.forged = _int(node.get("forged_frames")) or 0
    view.downlink_dropped = _int(node.get("downlink_dropped"))
    view.gaps = _int(node.get("gaps"))
    port = node.get("link") or node.get("port")
    link = links.get(port) if isinstance(port, str) else None
    view.link = port if isinstance(port, str) else None
    if link is not None:
        view.link_connected = bool(link.get("connected"))
        view.disconnects = _int(link.get("disconnects"))
        dropped_out = _int(link.get("dropped_out"))
        if dropped_out:
            view.downlink_dropped = (view.downlink_dropped or 0) + dropped_out
    ble = node.get("ble")
    if isinstance(ble, dict):
        _merge_ble(view, ble)
    rfid = node.get("rfid")
    if isinstance(rfid, dict):
        _merge_rfid(view, rfid)
    health = node.get("health")
    if isinstance(health, dict):
        rate = _int(health.get("sample_rate_chz"))
        view.sample_sps = rate / 100 if rate is not None else None
        view.outbox_depth = _int(health.get("outbox_depth"))
        view.outbox_dropped = _int(health.get("outbox_dropped"))
        view.free_heap = _int(health.get("free_heap"))
        view.uptime_s = _int(health.get("uptime_s"))


def _merge_ble(view: NodeView, ble: dict[str, Any]) -> None:
    """A BLE node: its connection state, RSSI, and what its last beacon said and how long ago it was heard. It counts
    as online while its beacons are heard (it holds no connection while idle)."""
    view.ble_state = str(ble.get("state") or "") or None
    view.rssi = _int(ble.get("rssi"))
    address = ble.get("address")
    view.link = f"BLE {address}" if isinstance(address, str) else "BLE"
    view.link_connected = ble.get("state") == "connected"
    link = ble.get("link")
    if isinstance(link, dict):  # connections come and go by design: their count, not "disconnects" (a fault)
        view.ble_connects = _int(link.get("connects"))
    beacon = ble.get("beacon")
    if isinstance(beacon, dict):
        age = beacon.get("age_s")
        view.beacon_age_s = float(age) if isinstance(age, int | float) else None
        lanes = beacon.get("lanes")
        if isinstance(lanes, dict):
            for k, v in sorted(lanes.items(), key=lambda kv: int(kv[0])):
                if isinstance(v, dict) and _int(v.get("count")) is not None:
                    view.beacon_lanes.append((int(k), int(v["count"]), bool(v.get("fault"))))
    if view.beacon_age_s is not None and view.beacon_age_s < BEACON_ONLINE_S:
        view.up = True


def _merge_rfid(view: NodeView, rfid: dict[str, Any]) -> None:
    """The node's RFID readers as their last ``reader_health`` said (state and counters since the node's boot)."""
    view.rfid_v10_ignored = _int(rfid.get("v10_sightings_ignored")) or 0
    for r in rfid.get("readers") or []:
        if not isinstance(r, dict) or _int(r.get("reader")) is None:
            continue
        age = r.get("age_s")
        n = {k: _int(r.get(k)) or 0 for k in ("reads", "bad_frames", "resets", "silences", "present")}
        view.readers.append(
            ReaderView(
                int(r["reader"]),
                str(r.get("state")),
                n["reads"],
                n["bad_frames"],
                n["resets"],
                n["silences"],
                n["present"],
                float(age) if isinstance(age, int | float) else None,
            )
        )


def node_views(status: dict[str, Any] | None) -> list[NodeView]:
    conn = get_db()
    lanes = Counter(lane.node_id for lane in fetch_all(conn, LANES))
    views = {
        n.node_id: NodeView(n.node_id, n.label or "", n.fw_version, n.first_seen_ms, n.last_seen_ms, lanes[n.node_id])
        for n in fetch_all(conn, NODES)
    }
    if status is not None:
        links = {str(link.get("port")): link for link in status.get("links", []) if isinstance(link, dict)}
        for node in status.get("nodes", []):
            node_id = _int(node.get("node_id")) if isinstance(node, dict) else None
            if node_id is None:
                continue
            _merge(views.setdefault(node_id, NodeView(node_id)), node, links)
    return [views[k] for k in sorted(views)]


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days} d {hours} h" if days else f"{hours} h {rest // 60} min"


@bp.get("/nodes")
@requires("viewer")
def index() -> str:
    status, unavailable = _live_status()
    views = node_views(status)
    now_ms = int(time.time() * 1000)
    for view in views:  # "ago" from the ledger when the hub has not seen the node since it started
        if view.last_seen_s_ago is None and view.last_seen_ms is not None:
            view.last_seen_s_ago = max(0.0, (now_ms - view.last_seen_ms) / 1000)
    totals = status.get("totals", {}) if status is not None else {}
    fleet = status.get("fleet") if status is not None else None  # [fleet]: the publisher's status (hub/fleet/)
    return render_template(
        "nodes.html",
        nodes=views,
        live=status is not None,
        unavailable=unavailable,
        totals=totals if isinstance(totals, dict) else {},
        fleet=fleet if isinstance(fleet, dict) else None,
        ago=_ago,
        duration=_duration,
    )
