"""The running hub's status: a JSON-ready snapshot (``smartshelf hub status``, the nodes page) and the status line
``hub run`` logs every ``status_interval_s``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.link.ingest import Ingest
from hub.transport.ble.central import BleCentral
from hub.transport.serial import SerialLink


@dataclass(slots=True)
class StatusMark:
    """Where the last status line left off (for its rates)."""

    at_ns: int = 0
    frames: int = 0
    applied: int = 0


def snapshot(
    ingest: Ingest | None, links: Sequence[SerialLink], started_ns: int, ble: BleCentral | None = None
) -> dict[str, Any]:
    """``ble``: the BLE side, when nodes use it: each BLE node gets its ``ble`` part (state, RSSI, beacon and its
    age, connection), the snapshot a top-level ``ble`` (adapter, slots, beacon counters)."""
    now = time.monotonic_ns()
    nodes: list[dict[str, Any]] = []
    totals: dict[str, Any] = {}
    if ingest is not None:
        for node in ingest.nodes.values():
            st = node.status(now, ingest.rejects_by_reason(node.node_id), ingest.forged(node.node_id))
            st["ble"] = ble.node_status(node.node_id) if ble is not None else None
            st["link_kind"] = "ble" if st["ble"] is not None else "serial"
            nodes.append(st)
        t = ingest.totals()
        totals = {
            "frames": t.frames,
            "accepted": t.accepted,
            "rejected": t.rejected,
            "rejected_unknown_node": ingest.rejects_by_reason(0),
            "overruns": t.overruns,
            "events": t.events,
            "applied": t.applied,
            "duplicates": t.duplicates,
            "failed": t.failed,
            "acks_sent": t.acks_sent,
            "commands_sent": t.commands_sent,
            "gaps": t.gaps,
            "uptime_s": round((now - started_ns) / 1e9, 1) if started_ns else 0,
        }
    out: dict[str, Any] = {"nodes": nodes, "links": [link.status() for link in links], "totals": totals}
    out["ble"] = ble.status() if ble is not None else None
    return out


def line(ingest: Ingest | None, mark: StatusMark) -> str:
    """One line: frames/s and events applied since the last line (``mark`` moves on), rejects, each node."""
    if ingest is None:
        return "status: not running"
    now = time.monotonic_ns()
    t = ingest.totals()
    dt = max((now - mark.at_ns) / 1e9, 1e-9)
    parts = [
        f"status: {(t.frames - mark.frames) / dt:.1f} frames/s",
        f"events applied {t.applied} (+{t.applied - mark.applied}, {t.duplicates} duplicate, {t.failed} failed)",
        f"rejected {t.rejected}",
    ]
    mark.at_ns, mark.frames, mark.applied = now, t.frames, t.applied
    for node in ingest.nodes.values():
        seen = node.stats.last_seen_ns
        ago = f"{(now - seen) / 1e9:.1f}s ago" if seen else "never"
        forged = ingest.forged(node.node_id)
        parts.append(
            f"node {node.node_id} {'up' if node.up else 'down'} seen {ago} ack {node.marks.contiguous}"
            + (f" forged {forged}" if forged else "")
        )
    return "; ".join(parts)
