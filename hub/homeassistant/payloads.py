"""Home Assistant MQTT discovery, the pure part: what the hub publishes for its lanes, nodes and alerts.

No I/O here: ``hub/homeassistant/bridge.py`` reads the ledger and the live node status, calls these functions and
publishes what they return (topic -> payload, every message retained). Home Assistant's conventions (its MQTT
integration's *MQTT Discovery* section, and the MQTT sensor and binary sensor pages):

* one single-component discovery message per entity on ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``
  (``node_id``: ``[homeassistant] node_id``, so one hub's configs are ``<prefix>/+/<node_id>/+/config``; both ids only
  of ``[A-Za-z0-9_-]``), full option names (no abbreviations), a ``unique_id`` of ``<node_id>_<object_id>``, a
  ``device`` block (identifiers, name, manufacturer, model, sw_version; ``via_device`` from a node to the hub and
  from a lane to its node) and an ``origin`` block;
* ``availability``: the hub's ``<base_topic>/status``, ``online`` retained at connect and ``offline`` as its last
  will, so every entity is unavailable while the hub is away;
* an empty retained config removes an entity (and an empty retained state clears the state the broker kept).

Devices and entities (object ids; state topics under ``base_topic``; ``<key>``: the lane id, or a slug of it with a
hash when it has characters other than ``[A-Za-z0-9_-]``):

* the hub, device ``<name>``: *Open alerts* (sensor ``hub_open_alerts``, state class measurement), *Lanes low*
  (``hub_lanes_low``), *Lanes out of stock* (``hub_lanes_out``); state ``hub/state`` (JSON);
* each node the hub serves, device ``<name> node <id>`` via the hub: *Online* (binary_sensor ``node_<id>_online``,
  device class connectivity, diagnostic; ``node/<id>/online`` ON / OFF) and *Last seen* (sensor
  ``node_<id>_last_seen``, device class timestamp, diagnostic; ``node/<id>/last_seen`` ISO 8601);
* each lane, device ``<name> lane <lane id>`` via its node: *Count* (sensor ``lane_<key>_count``, measurement, unit
  ``items``; attributes on ``lane/<key>/attributes``: SKU, product, capacity, reorder point, node, lane index, tags),
  *State* (sensor ``lane_<key>_state``, device class enum: ok, low, out, trouble) and *Open alerts* (sensor
  ``lane_<key>_open_alerts``, measurement; attributes on ``lane/<key>/alerts``: the open alerts by kind), all three
  from ``lane/<key>/state`` (JSON) through a ``value_template``.

A lane's count, state and open alerts are exactly the status page's (``hub.web.lanes.LaneRow``: the same reads, the
same state rule, the same alerts counted for a lane: its own, its SKU's and its node's).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hub.config.homeassistant import HomeAssistantConfig
from hub.ledger.causes import Cause, CauseKind
from hub.web.lanes import STATE_LABELS, LaneRow

Publications = dict[str, bytes]  # topic -> retained payload (b"": remove what the broker keeps there)

MANUFACTURER = "Smart shelf project"
ORIGIN_NAME = "smartshelf"
LANE_STATES = tuple(STATE_LABELS)  # ok, low, out, trouble: the status page's states
COUNT_UNIT = "items"
ONLINE = "online"
OFFLINE = "offline"
_SAFE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Naming:
    """The names and topics every payload is built from (``[homeassistant]``, the hub's version)."""

    discovery_prefix: str
    node_id: str
    base_topic: str
    name: str
    sw_version: str
    suggested_area: str | None = None
    configuration_url: str | None = None

    @classmethod
    def of(cls, config: HomeAssistantConfig, sw_version: str) -> Naming:
        return cls(
            config.discovery_prefix,
            config.node_id,
            config.base_topic,
            config.name,
            sw_version,
            config.suggested_area,
            config.configuration_url,
        )

    @property
    def availability_topic(self) -> str:
        return f"{self.base_topic}/status"

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"

    @property
    def config_filter(self) -> str:
        """Every discovery config of this hub (and of no other hub with another node_id)."""
        return f"{self.discovery_prefix}/+/{self.node_id}/+/config"


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node as Home Assistant sees it: from the hub's live status (``HubService.status()``)."""

    node_id: int
    online: bool
    last_seen_ms: int | None = None
    firmware: str | None = None


@dataclass(frozen=True, slots=True)
class HubTotals:
    open_alerts: int  # every unresolved alert, whatever it is about (the status page's badge)
    lanes: int
    lanes_low: int
    lanes_out: int


def encode(value: object) -> bytes:
    """Compact UTF-8 JSON with the keys in the order given (equal values: equal bytes, so a diff finds changes)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def lane_key(lane_id: str) -> str:
    """The lane's part of its object ids and topics: the lane id when it is only ``[A-Za-z0-9_-]``, else a slug of
    it and a hash of the id (two ids that slug alike still differ)."""
    if _SAFE.fullmatch(lane_id) and len(lane_id) <= 64:
        return lane_id
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", lane_id).strip("_")[:40]
    digest = hashlib.sha256(lane_id.encode()).hexdigest()[:10]
    return f"{slug}_{digest}" if slug else digest


def hub_identifier(n: Naming) -> str:
    return f"{n.node_id}_hub"


def node_identifier(n: Naming, node_id: int) -> str:
    return f"{n.node_id}_node_{node_id}"


def lane_identifier(n: Naming, lane_id: str) -> str:
    return f"{n.node_id}_lane_{lane_key(lane_id)}"


def origin(n: Naming) -> dict[str, Any]:
    return {"name": ORIGIN_NAME, "sw_version": n.sw_version}


def _device(
    n: Naming, identifier: str, name: str, model: str, sw_version: str | None, via: str | None
) -> dict[str, Any]:
    device: dict[str, Any] = {"identifiers": [identifier], "name": name, "manufacturer": MANUFACTURER, "model": model}
    if sw_version:
        device["sw_version"] = sw_version
    if via is not None:
        device["via_device"] = via
    if n.suggested_area is not None:
        device["suggested_area"] = n.suggested_area
    if n.configuration_url is not None:
        device["configuration_url"] = n.configuration_url
    return device


def hub_device(n: Naming) -> dict[str, Any]:
    return _device(n, hub_identifier(n), n.name, "Smart shelf hub", n.sw_version, None)


def node_device(n: Naming, node: NodeView) -> dict[str, Any]:
    return _device(
        n, node_identifier(n, node.node_id), f"{n.name} node {node.node_id}", "Shelf node", node.firmware,
        hub_identifier(n),
    )  # fmt: skip


def lane_device(n: Naming, lane_id: str, via: str) -> dict[str, Any]:
    return _device(n, lane_identifier(n, lane_id), f"{n.name} lane {lane_id}", "Shelf lane", None, via)


def _config(
    n: Naming, component: str, object_id: str, name: str, device: dict[str, Any], state_topic: str, **options: Any
) -> tuple[str, bytes]:
    payload: dict[str, Any] = {
        "name": name,
        "unique_id": f"{n.node_id}_{object_id}",
        "state_topic": state_topic,
        **options,
        "availability": [
            {"topic": n.availability_topic, "payload_available": ONLINE, "payload_not_available": OFFLINE}
        ],
        "qos": 1,
        "device": device,
        "origin": origin(n),
    }
    return n.config_topic(component, object_id), encode(payload)


# ----------------------------------------------------------------------------------------------------- the hub


def hub_state_topic(n: Naming) -> str:
    return f"{n.base_topic}/hub/state"


def hub_publications(n: Naming, totals: HubTotals) -> Publications:
    device = hub_device(n)
    state = hub_state_topic(n)
    out: Publications = dict(
        [
            _config(n, "sensor", "hub_open_alerts", "Open alerts", device, state,
                    value_template="{{ value_json.open_alerts }}", state_class="measurement"),
            _config(n, "sensor", "hub_lanes_low", "Lanes low", device, state,
                    value_template="{{ value_json.lanes_low }}", state_class="measurement"),
            _config(n, "sensor", "hub_lanes_out", "Lanes out of stock", device, state,
                    value_template="{{ value_json.lanes_out }}", state_class="measurement"),
        ]
    )  # fmt: skip
    out[state] = encode(
        {"open_alerts": totals.open_alerts, "lanes": totals.lanes, "lanes_low": totals.lanes_low,
         "lanes_out": totals.lanes_out}
    )  # fmt: skip
    return out


def totals_of(rows: Iterable[LaneRow], open_alerts: int) -> HubTotals:
    states = Counter(r.state for r in rows)
    return HubTotals(open_alerts, sum(states.values()), states["low"], states["out"])


# --------------------------------------------------------------------------------------------------- the nodes


def node_topics(n: Naming, node_id: int) -> tuple[str, str]:
    """(online, last seen) state topics of a node."""
    base = f"{n.base_topic}/node/{node_id}"
    return f"{base}/online", f"{base}/last_seen"


def iso_time(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 in UTC (a timestamp sensor's state)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def node_publications(n: Naming, node: NodeView) -> Publications:
    """The node's device with its two diagnostic entities; the last-seen state only once the node was seen."""
    device = node_device(n, node)
    online, seen = node_topics(n, node.node_id)
    out: Publications = dict(
        [
            _config(n, "binary_sensor", f"node_{node.node_id}_online", "Online", device, online,
                    device_class="connectivity", payload_on="ON", payload_off="OFF", entity_category="diagnostic"),
            _config(n, "sensor", f"node_{node.node_id}_last_seen", "Last seen", device, seen,
                    device_class="timestamp", entity_category="diagnostic"),
        ]
    )  # fmt: skip
    out[online] = b"ON" if node.online else b"OFF"
    if node.last_seen_ms:
        out[seen] = iso_time(node.last_seen_ms).encode()
    return out


# --------------------------------------------------------------------------------------------------- the lanes


def lane_topics(n: Naming, lane_id: str) -> tuple[str, str, str]:
    """(state, attributes, alerts) topics of a lane."""
    base = f"{n.base_topic}/lane/{lane_key(lane_id)}"
    return f"{base}/state", f"{base}/attributes", f"{base}/alerts"


def lane_publications(n: Naming, row: LaneRow, kinds: Mapping[str, int], *, node_known: bool) -> Publications:
    """The lane's device (via its node's when that node is published, else the hub's) with count, state and open
    alerts; ``kinds``: the lane's open alerts by kind (their sum is ``row.open_alerts``)."""
    key = lane_key(row.lane_id)
    via = node_identifier(n, row.node_id) if node_known else hub_identifier(n)
    device = lane_device(n, row.lane_id, via)
    state, attributes, alerts = lane_topics(n, row.lane_id)
    out: Publications = dict(
        [
            _config(n, "sensor", f"lane_{key}_count", "Count", device, state,
                    value_template="{{ value_json.count }}", state_class="measurement",
                    unit_of_measurement=COUNT_UNIT, suggested_display_precision=0, json_attributes_topic=attributes),
            _config(n, "sensor", f"lane_{key}_state", "State", device, state,
                    value_template="{{ value_json.state }}", device_class="enum", options=list(LANE_STATES)),
            _config(n, "sensor", f"lane_{key}_open_alerts", "Open alerts", device, state,
                    value_template="{{ value_json.open_alerts }}", state_class="measurement",
                    json_attributes_topic=alerts),
        ]
    )  # fmt: skip
    out[state] = encode({"count": row.observed, "state": row.state, "open_alerts": row.open_alerts})
    out[attributes] = encode(
        {
            "lane_id": row.lane_id,
            "sku": row.sku,
            "product": row.name,
            "capacity": row.capacity,
            "reorder_point": row.reorder_point,
            "node_id": row.node_id,
            "lane_index": row.lane_index,
            "tags_present": row.tags_present,
            "tags_other_sku": row.tags_other_sku,
        }
    )
    out[alerts] = encode(dict(sorted(kinds.items())))
    return out


def kinds_by_lane(unresolved: Iterable[tuple[str, str]], rows: Iterable[LaneRow]) -> dict[str, Counter[str]]:
    """Each lane's unresolved alerts by kind, counted as the status page counts a lane's alerts
    (``hub.web.lanes.AlertCounts.for_lane``: the lane's own, its SKU's and its node's)."""
    by_lane: dict[str, Counter[str]] = {}
    by_sku: dict[str, Counter[str]] = {}
    by_node: dict[int, Counter[str]] = {}
    for kind, key in unresolved:
        cause = Cause.parse_or_none(key)  # a key of other code's is about no lane
        if cause is None:
            continue
        if cause.kind is CauseKind.SKU and cause.sku is not None:
            by_sku.setdefault(cause.sku, Counter())[kind] += 1
        elif cause.node_id is not None:
            by_node.setdefault(cause.node_id, Counter())[kind] += 1
        elif cause.lane_id is not None:
            by_lane.setdefault(cause.lane_id, Counter())[kind] += 1
    out: dict[str, Counter[str]] = {}
    for row in rows:
        kinds: Counter[str] = Counter()
        kinds.update(by_lane.get(row.lane_id, {}))
        if row.sku is not None:
            kinds.update(by_sku.get(row.sku, {}))
        kinds.update(by_node.get(row.node_id, {}))
        out[row.lane_id] = kinds
    return out
