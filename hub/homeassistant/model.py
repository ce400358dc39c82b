"""What the Home Assistant bridge wants the broker to hold, kept up to date from the ledger (``Model``), and the
messages that bring the broker there (``delta``). The connection is ``hub/homeassistant/bridge.py``'s; the payloads are
``hub/homeassistant/payloads.py``'s.

``Model.update(work, nodes)`` runs in a worker thread (the bridge awaits it; one call at a time): it reads the lanes
``work`` names (``Pending``: what commits named since the last call; None: every lane) in one read transaction on its
own read-only connection, with the unresolved alerts, rebuilds those lanes' publications, the nodes' (from the hub's
live status, ``node_views``) and the hub's, and keeps ``desired`` (topic -> payload) whole: a lane the read no longer
finds loses its topics, so ``delta`` empties them on the broker.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.homeassistant.payloads import (
    Naming,
    NodeView,
    Publications,
    hub_publications,
    kinds_by_lane,
    lane_publications,
    node_publications,
    totals_of,
)
from hub.ledger.changes import Changes
from hub.web.db import open_ro, read_transaction
from hub.web.lanes import LaneRow, alert_counts, lanes, lanes_named

LAST_SEEN_STEP_MS = 60_000  # a node's last-seen time is republished when it moved this much (or the node came/went)
_UNRESOLVED_SQL = "SELECT kind, cause_key FROM alerts WHERE status != 'resolved'"


def node_views(status: Mapping[str, Any]) -> list[NodeView]:
    """The nodes of ``HubService.status()`` (the nodes page's source) as Home Assistant sees them."""
    out = []
    for node in status.get("nodes", ()):
        seen = node.get("last_seen_ms")
        firmware = node.get("firmware")
        out.append(
            NodeView(
                int(node["node_id"]),
                bool(node.get("up")),
                int(seen) if isinstance(seen, int) and seen > 0 else None,
                str(firmware) if firmware else None,
            )
        )
    return out


@dataclass(slots=True)
class Pending:
    """What commits named since the last read (filled on the writer's loop, taken by the bridge)."""

    lanes: set[str] = field(default_factory=set)
    skus: set[str] = field(default_factory=set)
    causes: set[str] = field(default_factory=set)
    alerts: bool = False

    def add(self, changes: Changes) -> None:
        self.lanes.update(changes.sensor_lanes)
        self.lanes.update(changes.lanes)
        self.lanes.update(changes.tags)
        self.skus.update(changes.skus)
        self.causes.update(changes.causes)
        self.alerts = self.alerts or bool(changes.alerts or changes.causes)


class Model:
    """What the hub wants on the broker, kept up to date from the ledger. Used by one thread at a time (the bridge
    runs ``update`` in a worker thread and awaits it)."""

    def __init__(self, naming: Naming, database: Path) -> None:
        self.naming = naming
        self.database = database
        self.desired: Publications = {}
        self.rows: dict[str, LaneRow] = {}
        self.kinds: dict[str, dict[str, int]] = {}
        self.open_alerts = 0
        self._lane_topics: dict[str, set[str]] = {}
        self._node_topics: dict[int, set[str]] = {}
        self._nodes: dict[int, NodeView] = {}  # as published (last seen stepped)
        self._conn: sqlite3.Connection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def update(self, work: Pending | None, nodes: Iterable[NodeView]) -> None:
        """Read what ``work`` names (None: everything) and bring ``desired`` up to date."""
        try:
            self._read(work)
        except sqlite3.Error:
            self.close()  # e.g. the file was replaced by a restore: the next read opens it again
            raise
        known_before = set(self._nodes)
        self._set_nodes(nodes)
        changed_nodes = known_before ^ set(self._nodes)
        for row in self.rows.values():  # a node appeared or went: its lanes' devices hang from it, or the hub
            if row.node_id in changed_nodes:
                self._set_lane(row)
        self.desired.update(hub_publications(self.naming, totals_of(self.rows.values(), self.open_alerts)))

    def _read(self, work: Pending | None) -> None:
        if self._conn is None:
            self._conn = open_ro(self.database, check_same_thread=False)
            work = None
        conn = self._conn
        named = None
        if work is not None:
            named = self._named(work)
            if not named and not work.alerts:
                return
        with read_transaction(conn):
            counts = alert_counts(conn)
            unresolved = [(str(k), str(c)) for k, c in conn.execute(_UNRESOLVED_SQL)]
            rows = lanes(conn, named, alerts=counts) if named is None or named else []
        self.open_alerts = counts.total
        found = {r.lane_id: r for r in rows}
        kinds = kinds_by_lane(unresolved, rows)
        for lane_id in [x for x in self.rows if (named is None or x in named) and x not in found]:
            self._drop_lane(lane_id)  # deleted, or gone with a restored file
        for row in rows:
            self.rows[row.lane_id] = row
            self.kinds[row.lane_id] = dict(kinds[row.lane_id])
            self._set_lane(row)

    def _named(self, work: Pending) -> set[str]:
        """The lanes whose row the work may have changed (as the live feed works them out)."""
        return lanes_named(work.lanes, work.skus, work.causes, self.rows.values())

    def _set_lane(self, row: LaneRow) -> None:
        pubs = lane_publications(
            self.naming, row, self.kinds.get(row.lane_id, {}), node_known=row.node_id in self._nodes
        )
        self._replace(self._lane_topics.get(row.lane_id, set()), pubs)
        self._lane_topics[row.lane_id] = set(pubs)

    def _drop_lane(self, lane_id: str) -> None:
        for topic in self._lane_topics.pop(lane_id, set()):
            self.desired.pop(topic, None)
        self.rows.pop(lane_id, None)
        self.kinds.pop(lane_id, None)

    def _set_nodes(self, nodes: Iterable[NodeView]) -> None:
        seen: set[int] = set()
        for node in nodes:
            seen.add(node.node_id)
            before = self._nodes.get(node.node_id)
            if (
                before is not None
                and before.online == node.online
                and node.last_seen_ms
                and before.last_seen_ms
                and node.last_seen_ms - before.last_seen_ms < LAST_SEEN_STEP_MS
            ):  # no news but the time: keep the time published
                node = NodeView(node.node_id, node.online, before.last_seen_ms, node.firmware)
            if node == before:
                continue
            self._nodes[node.node_id] = node
            pubs = node_publications(self.naming, node)
            self._replace(self._node_topics.get(node.node_id, set()), pubs)
            self._node_topics[node.node_id] = set(pubs)
        for gone in [n for n in self._nodes if n not in seen]:
            del self._nodes[gone]
            for topic in self._node_topics.pop(gone, set()):
                self.desired.pop(topic, None)

    def _replace(self, old: set[str], pubs: Publications) -> None:
        for topic in old - pubs.keys():
            self.desired.pop(topic, None)
        self.desired.update(pubs)


def delta(
    desired: Mapping[str, bytes], published: Mapping[str, bytes], extra: Iterable[str] = ()
) -> list[tuple[str, bytes]]:
    """What to publish so that the broker holds ``desired``: changed payloads, and an empty payload for each topic
    published (or ``extra``: found retained) and no longer wanted. Discovery configs before states, so an entity
    exists before its state arrives and is removed before its state is cleared."""
    out = [(t, p) for t, p in desired.items() if published.get(t) != p]
    out += [(t, b"") for t in {*published, *extra} if t not in desired and published.get(t, b"x") != b""]
    out.sort(key=lambda item: (not item[0].endswith("/config"), not item[1], item[0]))
    return out
