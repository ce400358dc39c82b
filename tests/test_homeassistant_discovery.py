"""Home Assistant MQTT discovery (hub/homeassistant/: payloads.py, model.py, bridge.py; issue 14 section 4).

Every discovery config the hub publishes is validated against JSON Schemas written here from Home Assistant's own
documentation (home-assistant/home-assistant.io, ``source/_integrations/``):

* MQTT integration, *MQTT Discovery* (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): the topic
  ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`` with ids of ``[a-zA-Z0-9_-]``; the payload a
  JSON dictionary; ``origin`` (``name`` required, ``sw_version``, ``support_url``); *Using Availability topics*
  (``availability`` a list of ``topic`` / ``payload_available`` / ``payload_not_available`` / ``value_template``,
  not together with ``availability_topic``); an empty retained payload deletes the entity; a single-component
  payload carries no ``platform`` (only device discovery does);
* MQTT Sensor (https://www.home-assistant.io/integrations/sensor.mqtt/): its options; ``state_topic`` required;
  ``device`` (``identifiers`` or ``connections`` required, ``via_device`` ...) works only with ``unique_id``;
  ``entity_category`` must be ``diagnostic`` for sensors; ``options`` only with ``device_class: enum`` and never
  with ``state_class`` or ``unit_of_measurement``; ``last_reset_value_template`` only with ``state_class: total``;
* MQTT binary sensor (https://www.home-assistant.io/integrations/binary_sensor.mqtt/): its options;
* the device classes of sensors (https://www.home-assistant.io/integrations/sensor/#device-class) and binary
  sensors (https://www.home-assistant.io/integrations/binary_sensor/#device-class); the state classes
  (https://developers.home-assistant.io/docs/core/entity/sensor#available-state-classes: measurement, total,
  total_increasing).

Home Assistant ignores unknown keys; the schemas here refuse them (``additionalProperties: false``), so a misspelt
option fails a test instead of being silently ignored by Home Assistant. Validation: ``jsonschema_rs``.

The bridge is tested against a real Mosquitto (tests/fleet_support.py) with users, an ACL and TLS, as a store's Home
Assistant broker is set up: retained configs after connect, a lane's count change reaching its state, a removed
lane's configs emptied (while connected, and while the hub was away), availability, Home Assistant's birth message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema_rs
import pytest

from hub.config import ConfigError, load_config
from hub.homeassistant import bridge as ha_bridge
from hub.homeassistant.bridge import HomeAssistantBridge
from hub.homeassistant.model import Model, Pending, delta, node_views
from hub.homeassistant.payloads import LANE_STATES, Naming, NodeView, lane_key
from hub.ledger import LedgerService, SensorEvent, Sku
from hub.ledger.changes import Changes
from hub.ledger.models import now_ms
from hub.schema import MIGRATIONS
from hub.service import HubService
from hub.web.db import open_ro
from hub.web.lanes import lanes
from shared_protocol.messages import KIND_PICK, KIND_PUT
from tools.servers.mosquitto import Broker

# ------------------------------------------------------------------------------------ the documented schemas

_ID = "^[a-zA-Z0-9_-]+$"
TOPIC = re.compile(
    r"^(?P<prefix>.+)/(?P<component>[a-z_]+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config$"
)
SENSOR_DEVICE_CLASSES = [
    "apparent_power", "aqi", "area", "atmospheric_pressure", "battery", "blood_glucose_concentration",
    "carbon_dioxide", "carbon_monoxide", "current", "data_rate", "data_size", "date", "distance", "duration",
    "energy", "energy_storage", "enum", "frequency", "gas", "humidity", "illuminance", "irradiance", "moisture",
    "monetary", "nitrogen_dioxide", "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1", "pm25", "pm10",
    "power_factor", "power", "precipitation", "precipitation_intensity", "pressure", "reactive_power",
    "signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature", "timestamp",
    "volatile_organic_compounds", "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate",
    "volume_storage", "water", "weight", "wind_speed",
]  # fmt: skip
BINARY_SENSOR_DEVICE_CLASSES = [
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas", "heat",
    "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power", "presence", "problem",
    "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window",
]  # fmt: skip
STATE_CLASSES = ["measurement", "total", "total_increasing"]
STRING = {"type": "string"}
TEMPLATE = {"type": "string"}
DEVICE = {
    "type": "object",
    "properties": {
        "configuration_url": {"type": "string", "pattern": "^(https?|homeassistant)://"},
        "connections": {"type": "array", "items": {"type": "array", "items": STRING, "minItems": 2, "maxItems": 2}},
        "hw_version": STRING,
        "identifiers": {"oneOf": [STRING, {"type": "array", "items": STRING, "minItems": 1}]},
        "manufacturer": STRING,
        "model": STRING,
        "model_id": STRING,
        "name": STRING,
        "serial_number": STRING,
        "suggested_area": STRING,
        "sw_version": STRING,
        "via_device": STRING,
    },
    "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}],
    "additionalProperties": False,
}
ORIGIN = {
    "type": "object",
    "properties": {"name": STRING, "sw_version": STRING, "support_url": STRING},
    "required": ["name"],
    "additionalProperties": False,
}
AVAILABILITY = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "payload_available": STRING,
            "payload_not_available": STRING,
            "topic": STRING,
            "value_template": TEMPLATE,
        },
        "required": ["topic"],
        "additionalProperties": False,
    },
    "minItems": 1,
}
COMMON = {  # the options every MQTT entity platform documents (availability, device, naming, attributes)
    "availability": AVAILABILITY,
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "availability_template": TEMPLATE,
    "availability_topic": STRING,
    "device": DEVICE,
    "enabled_by_default": {"type": "boolean"},
    "encoding": STRING,
    "entity_picture": STRING,
    "expire_after": {"type": "integer", "minimum": 0},
    "force_update": {"type": "boolean"},
    "icon": {"type": "string", "pattern": "^[a-z]+:[a-z0-9-]+$"},
    "json_attributes_template": TEMPLATE,
    "json_attributes_topic": STRING,
    "name": {"type": ["string", "null"]},
    "object_id": STRING,
    "origin": ORIGIN,
    "payload_available": STRING,
    "payload_not_available": STRING,
    "qos": {"enum": [0, 1, 2]},
    "state_topic": STRING,
    "unique_id": STRING,
    "value_template": TEMPLATE,
}
_RULES = [
    {"not": {"required": ["availability", "availability_topic"]}},
    {"if": {"required": ["device"]}, "then": {"required": ["unique_id"]}},  # "only works when unique_id is set"
]
SENSOR_SCHEMA = {
    "type": "object",
    "properties": {
        **COMMON,
        "device_class": {"enum": [*SENSOR_DEVICE_CLASSES, None]},
        "entity_category": {"const": "diagnostic"},
        "last_reset_value_template": TEMPLATE,
        "options": {"type": "array", "items": STRING, "minItems": 1},
        "state_class": {"enum": STATE_CLASSES},
        "suggested_display_precision": {"type": "integer", "minimum": 0},
        "unit_of_measurement": {"type": ["string", "null"]},
    },
    "required": ["state_topic"],
    "additionalProperties": False,
    "allOf": [
        *_RULES,
        {
            "if": {"required": ["options"]},
            "then": {
                "properties": {"device_class": {"const": "enum"}},
                "required": ["device_class"],
                "not": {"anyOf": [{"required": ["state_class"]}, {"required": ["unit_of_measurement"]}]},
            },
        },
        {
            "if": {"required": ["last_reset_value_template"]},
            "then": {"properties": {"state_class": {"const": "total"}}},
        },
    ],
}
BINARY_SENSOR_SCHEMA = {
    "type": "object",
    "properties": {
        **COMMON,
        "device_class": {"enum": [*BINARY_SENSOR_DEVICE_CLASSES, None]},
        "entity_category": {"const": "diagnostic"},
        "off_delay": {"type": "integer", "minimum": 0},
        "payload_off": STRING,
        "payload_on": STRING,
    },
    "required": ["state_topic"],
    "additionalProperties": False,
    "allOf": _RULES,
}
VALIDATORS = {
    "sensor": jsonschema_rs.validator_for(SENSOR_SCHEMA),
    "binary_sensor": jsonschema_rs.validator_for(BINARY_SENSOR_SCHEMA),
}


def check_config(topic: str, payload: bytes, naming: Naming) -> dict[str, Any]:
    """One published discovery config: topic as documented, payload valid for its component. The payload."""
    found = TOPIC.match(topic)
    assert found is not None, topic
    assert found["prefix"] == naming.discovery_prefix and found["node_id"] == naming.node_id, topic
    component = found["component"]
    assert component in VALIDATORS, f"{topic}: a component this test has no documented schema for"
    config = json.loads(payload)
    errors = [e.message for e in VALIDATORS[component].iter_errors(config)]
    assert errors == [], f"{topic}: {errors}"
    # the documented best practice: a unique_id; ours is <node_id>_<object_id>
    assert config["unique_id"] == f"{naming.node_id}_{found['object_id']}"
    assert config["availability"] == [
        {"topic": naming.availability_topic, "payload_available": "online", "payload_not_available": "offline"}
    ]
    return dict(config)


def template_value(template: str, state: bytes) -> Any:
    """What Home Assistant's ``{{ value_json.<key> }}`` takes from a state payload (the only templates we use)."""
    found = re.fullmatch(r"\{\{ value_json\.([a-z_]+) \}\}", template)
    assert found is not None, template
    document = json.loads(state)
    assert found[1] in document, f"{template} on {state!r}"
    return document[found[1]]


def check_all(desired: dict[str, bytes], naming: Naming) -> dict[str, dict[str, Any]]:
    """Every config in ``desired`` valid, unique ids and devices consistent, every state it reads there and
    readable as its entity expects. The configs by topic."""
    configs = {t: check_config(t, p, naming) for t, p in desired.items() if t.endswith("/config")}
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(unique_ids) == len(set(unique_ids))
    devices: dict[str, dict[str, Any]] = {}
    for config in configs.values():
        device = config["device"]
        assert device["name"] and device["manufacturer"] and device["model"]
        (identifier,) = device["identifiers"]
        assert devices.setdefault(identifier, device) == device, "one device, one description"
        assert config["origin"] == {"name": "smartshelf", "sw_version": naming.sw_version}
    for device in devices.values():
        assert device.get("via_device") is None or device["via_device"] in devices  # hub <- node <- lane
    for topic, config in configs.items():
        state = desired.get(config["state_topic"])
        if config["name"] == "Last seen" and state is None:
            continue  # a node never seen: unknown until it is
        assert state is not None, f"{topic}: no state on {config['state_topic']}"
        value = template_value(config["value_template"], state) if "value_template" in config else state.decode()
        if config.get("device_class") == "enum":
            assert value in config["options"]
        elif config.get("device_class") == "timestamp":
            assert datetime.fromisoformat(value).tzinfo is not None
        elif config.get("device_class") == "connectivity":
            assert value in (config["payload_on"], config["payload_off"])
        else:
            assert isinstance(value, int) and config["state_class"] == "measurement"
        if "json_attributes_topic" in config:
            assert isinstance(json.loads(desired[config["json_attributes_topic"]]), dict)
    return configs


# ------------------------------------------------------------------------------------------------ a ledger

NODE, OTHER = 7, 8
NAMING = Naming("homeassistant", "store_1", "smartshelf/ha/store_1", "Store 1 shelves", "1.2.3", "Shop floor")


def event(seq: int, lane: int, kind: int, delta: int) -> SensorEvent:
    return SensorEvent(NODE, seq, lane, kind, delta, -3500 * delta, 96, now_ms(), uplink_seq=1000 + seq)


async def seed(ledger: LedgerService) -> None:
    await ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20, reorder_point=8, reorder_qty=10), actor="t")
    await ledger.add_sku(Sku("TEA", "Green tea", 1200, 20, reorder_point=2), actor="t")
    await ledger.assign_lane(NODE, 0, "COLA", actor="t", lane_id="A1")
    await ledger.assign_lane(NODE, 1, "TEA", actor="t", lane_id="Aisle3.Shelf2")  # not a discovery id as it is
    await ledger.assign_lane(OTHER, 0, "TEA", actor="t", lane_id="B1")
    await ledger.assign_lane(OTHER, 3, None, actor="t", lane_id="GONE")
    await ledger.submit(event(1, 0, KIND_PUT, 12))
    await ledger.submit(event(2, 1, KIND_PUT, 2))
    await ledger.submit(event(3, 5, KIND_PICK, -1))  # a lane nobody assigned: registered, an unassigned_lane alert
    await ledger.open_alert("shrinkage", "lane:A1/COLA", {"unexplained_units": 1}, actor="t")
    await ledger.open_alert("reorder", "sku:TEA", {"book": 2}, actor="t")  # about every TEA lane
    await ledger.open_alert("sensor", f"node:{OTHER}/silent", {"silent_s": 600}, actor="t")  # about node 8's lanes


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as svc:
        await seed(svc)
        yield svc


def nodes_seen() -> list[NodeView]:
    return [NodeView(NODE, True, now_ms() - 1500, "1.4.0"), NodeView(OTHER, False)]


# ------------------------------------------------------------------------------------------ pure and model


async def test_every_published_config_follows_home_assistants_documented_schema(ledger: LedgerService) -> None:
    model = Model(NAMING, ledger.path)
    await asyncio.to_thread(model.update, None, nodes_seen())
    configs = check_all(model.desired, NAMING)
    by_component: dict[str, int] = {}
    for topic in configs:
        component = topic.split("/")[1]
        by_component[component] = by_component.get(component, 0) + 1
    lanes_seen = len(model.rows)
    assert lanes_seen == 5  # A1, Aisle3.Shelf2, B1, GONE, node7-lane5
    # per lane: count, state, open alerts; per node: last seen (+ online, a binary sensor); the hub: three
    assert by_component == {"sensor": 3 * lanes_seen + 2 + 3, "binary_sensor": 2}
    count = configs["homeassistant/sensor/store_1/lane_A1_count/config"]
    assert count["state_class"] == "measurement" and count["unit_of_measurement"] == "items"
    assert count["device"]["via_device"] == "store_1_node_7" and count["device"]["suggested_area"] == "Shop floor"
    state = configs["homeassistant/sensor/store_1/lane_A1_state/config"]
    assert state["device_class"] == "enum" and state["options"] == list(LANE_STATES) == ["ok", "low", "out", "trouble"]
    online = configs["homeassistant/binary_sensor/store_1/node_8_online/config"]
    assert online["device_class"] == "connectivity" and online["entity_category"] == "diagnostic"
    assert online["device"]["via_device"] == "store_1_hub"
    assert model.desired["smartshelf/ha/store_1/node/8/online"] == b"OFF"
    assert model.desired["smartshelf/ha/store_1/node/7/online"] == b"ON"
    assert "smartshelf/ha/store_1/node/8/last_seen" not in model.desired  # never seen: unknown
    odd = lane_key("Aisle3.Shelf2")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", odd) and odd.startswith("Aisle3_Shelf2_")
    assert f"homeassistant/sensor/store_1/lane_{odd}_count/config" in configs


async def test_a_lanes_values_are_the_status_pages(ledger: LedgerService) -> None:
    model = Model(NAMING, ledger.path)
    await asyncio.to_thread(model.update, None, nodes_seen())
    conn = open_ro(ledger.path)
    try:
        rows = {r.lane_id: r for r in lanes(conn)}
    finally:
        conn.close()
    assert set(rows) == set(model.rows)
    for lane_id, row in rows.items():
        state, _attributes, alerts = (f"smartshelf/ha/store_1/lane/{lane_key(lane_id)}/{x}" for x in
                                      ("state", "attributes", "alerts"))  # fmt: skip
        published = json.loads(model.desired[state])
        assert published == {"count": row.observed, "state": row.state, "open_alerts": row.open_alerts}
        assert sum(json.loads(model.desired[alerts]).values()) == row.open_alerts, lane_id
    assert json.loads(model.desired["smartshelf/ha/store_1/lane/A1/state"]) == {
        "count": 12, "state": "ok", "open_alerts": 1,
    }  # fmt: skip
    assert json.loads(model.desired["smartshelf/ha/store_1/lane/A1/alerts"]) == {"shrinkage": 1}
    assert json.loads(model.desired["smartshelf/ha/store_1/lane/B1/alerts"]) == {"reorder": 1, "sensor": 1}
    assert json.loads(model.desired["smartshelf/ha/store_1/lane/B1/state"])["state"] == "trouble"  # silent node
    assert json.loads(model.desired["smartshelf/ha/store_1/lane/node7-lane5/state"])["state"] == "trouble"
    hub = json.loads(model.desired["smartshelf/ha/store_1/hub/state"])
    assert hub == {"open_alerts": 4, "lanes": 5, "lanes_low": 1, "lanes_out": 0}  # 4: with the unassigned_lane


async def test_the_model_follows_commits_and_forgets_removed_lanes(ledger: LedgerService) -> None:
    model = Model(NAMING, ledger.path)
    seen: list[Changes] = []
    ledger.changes.listen(seen.append)
    await asyncio.to_thread(model.update, None, nodes_seen())
    before = dict(model.desired)

    def work() -> Pending:
        pending = Pending()
        for changes in seen:
            pending.add(changes)
        seen.clear()
        return pending

    await ledger.submit(event(4, 0, KIND_PICK, -5))  # A1: 12 -> 7, at the reorder point (8): low
    await asyncio.to_thread(model.update, work(), nodes_seen())
    changed = delta(model.desired, before)
    assert [t for t, _ in changed if "/lane/" in t] == ["smartshelf/ha/store_1/lane/A1/state"]
    assert json.loads(model.desired["smartshelf/ha/store_1/lane/A1/state"])["state"] == "low"
    before = dict(model.desired)

    await ledger.transact(lambda tx: tx.rows("DELETE FROM lanes WHERE lane_id = 'GONE'"))  # no ledger path does
    await asyncio.to_thread(model.update, work(), nodes_seen())
    gone = delta(model.desired, before)
    emptied = [t for t, p in gone if p == b""]
    assert emptied[:3] == sorted(t for t in before if "lane_GONE_" in t)  # the configs first ...
    assert sorted(emptied[3:]) == sorted(t for t in before if "/lane/GONE/" in t)  # ... then the states
    assert "GONE" not in model.rows
    # nothing changed: nothing to publish
    await asyncio.to_thread(model.update, work(), nodes_seen())
    assert delta(model.desired, {**before, **dict(gone)}) == []
    model.close()


def test_node_views_and_the_last_seen_step() -> None:
    status = {"nodes": [{"node_id": 3, "up": True, "last_seen_ms": 1_700_000_000_000, "firmware": "1.1"},
                        {"node_id": 4, "up": False, "last_seen_ms": None, "firmware": None}]}  # fmt: skip
    assert node_views(status) == [NodeView(3, True, 1_700_000_000_000, "1.1"), NodeView(4, False)]
    model = Model(NAMING, Path("/nonexistent"))
    model._set_nodes([NodeView(3, True, 1_700_000_000_000)])
    seen = "smartshelf/ha/store_1/node/3/last_seen"
    first = model.desired[seen]
    model._set_nodes([NodeView(3, True, 1_700_000_030_000)])  # 30 s later, still online: not worth a message
    assert model.desired[seen] == first
    model._set_nodes([NodeView(3, True, 1_700_000_061_000)])
    assert model.desired[seen] == b"2023-11-14T22:14:21+00:00"
    model._set_nodes([NodeView(3, False, 1_700_000_062_000)])  # went offline: at once
    assert model.desired["smartshelf/ha/store_1/node/3/online"] == b"OFF"
    model._set_nodes([])  # no longer served: its topics go
    assert not [t for t in model.desired if "/node/3/" in t or "node_3_" in t]


def test_lane_keys_are_discovery_ids_and_distinct() -> None:
    ids = ["A1", "a-1_b", "Aisle3.Shelf2", "Aisle3_Shelf2", "x" * 64, "Aisle3..Shelf2"]
    keys = [lane_key(i) for i in ids]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", k) for k in keys)
    assert len(set(keys)) == len(keys) and keys[:2] == ["A1", "a-1_b"]


# ---------------------------------------------------------------------------------------------- the config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text('[hub]\ndatabase = "l.db"\n' + text)
    return path


def test_the_homeassistant_table(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    cfg = load_config(write(tmp_path, '[homeassistant]\nhost = "ha.local"\nusername = "u"\npassword_file = "pw"\n'))
    ha = cfg.homeassistant
    assert ha is not None and ha.port == 1883 and ha.discovery_prefix == "homeassistant"
    assert ha.node_id == "smartshelf" and ha.base_topic == "smartshelf/ha/smartshelf"
    assert ha.birth_topic == "homeassistant/status" and ha.password_file == tmp_path / "pw"
    assert load_config(write(tmp_path, "")).homeassistant is None
    assert load_config(write(tmp_path, "[homeassistant]\nenabled = false\n")).homeassistant is None
    tls = load_config(write(tmp_path, '[homeassistant]\nhost = "h"\ntls = true\nnode_id = "s2"\n')).homeassistant
    assert tls is not None and tls.port == 8883 and tls.base_topic == "smartshelf/ha/s2"
    bad = {
        'host = "h"\nnode_id = "store 1"': "homeassistant.node_id: must be 1..64 of A-Z a-z 0-9 _ -",
        "port = 1883": "homeassistant.host: missing",
        'host = "h"\ndiscovery_prefix = "ha/#"': "homeassistant.discovery_prefix: must not contain the MQTT wildcards",
        'host = "h"\ncafile = "pw"': "homeassistant.cafile: needs homeassistant.tls = true",
        'host = "h"\npassword_file = "pw"': "homeassistant.password_file: needs homeassistant.username",
        'host = "h"\nusername = "u"\npassword_file = "nope"': "homeassistant.password_file: no such file",
        'host = "h"\nport = 0': "homeassistant.port: must be a TCP port 1..65535, not 0",
        'host = "h"\nenabled = "yes"': "homeassistant.enabled: must be true or false",
        'host = "h"\nhots = 1': "homeassistant.hots: unknown setting",
        'host = "h"\nconfiguration_url = "ftp://x"': "homeassistant.configuration_url: must start with http://",
        'host = "h"\nstate_interval_s = 0.01': "homeassistant.state_interval_s: must be 0.05 .. 3600 seconds",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, f"[homeassistant]\n{text}\n"))
        assert str(err.value).startswith(f"{tmp_path / 'hub.toml'}: {message}"), str(err.value)


# ------------------------------------------------------------------------------------------ a real broker

HA_ACL = "\n".join(
    f"user {user}\ntopic readwrite homeassistant/#\ntopic readwrite smartshelf/ha/#" for user in ("shelf", "ha")
)


class Watcher:
    """Home Assistant's side: a client subscribed to ``homeassistant/#`` and the hub's state topics."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.latest: dict[str, bytes] = {}
        self.log: list[tuple[str, bytes, bool]] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            self.latest[message.topic.value] = payload
            self.log.append((message.topic.value, payload, message.retain))

    async def until(self, what: Callable[[], bool], timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not what():
                await asyncio.sleep(0.05)

    def retained_now(self) -> dict[str, bytes]:
        return {t: p for t, p in self.latest.items() if p}


@contextlib.asynccontextmanager
async def watching(broker: Broker, password: str) -> AsyncIterator[Watcher]:
    async with aiomqtt.Client(broker.host, broker.plain_port or 0, username="ha", password=password) as client:
        await client.subscribe([("homeassistant/#", 1), ("smartshelf/ha/#", 1)])
        w = Watcher(client)
        try:
            yield w
        finally:
            w.task.cancel()


async def retained_on(broker: Broker) -> dict[str, bytes]:
    """What the broker keeps retained under ``homeassistant/#`` and ``smartshelf/ha/#``: what a Home Assistant
    that starts now receives (a fresh subscription, read until 0.5 s pass without a message)."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.plain_port or 0, username="ha", password="ha-pw") as client:
        await client.subscribe([("homeassistant/#", 1), ("smartshelf/ha/#", 1)])
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(0.5):
                    message = await anext(aiter(client.messages))
                assert message.retain and isinstance(message.payload, bytes) and message.payload
                found[message.topic.value] = message.payload
    return found


def bridge_config(tmp_path: Path, broker: Broker) -> Path:
    pw = tmp_path / "ha-password"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"shelf-pw\n")
    os.close(fd)
    return write(
        tmp_path,
        f'[homeassistant]\nhost = "{broker.host}"\nport = {broker.port}\ntls = true\ncafile = "{broker.ca_file}"\n'
        f'username = "shelf"\npassword_file = "{pw}"\nnode_id = "store_1"\nname = "Store 1 shelves"\n'
        "state_interval_s = 0.5\n",
    )


def status() -> dict[str, Any]:
    return {"nodes": [{"node_id": NODE, "up": True, "last_seen_ms": now_ms(), "firmware": "1.4.0"}]}


async def test_the_bridge_on_a_real_broker(
    tmp_path: Path, broker_factory: Callable[..., Broker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ha_bridge, "BIRTH_JITTER_S", 0.0)
    broker = broker_factory(plain=True, extra_acl=HA_ACL)
    broker.add_user("shelf", "shelf-pw")
    broker.add_user("ha", "ha-pw")
    cfg = load_config(bridge_config(tmp_path, broker)).homeassistant
    assert cfg is not None
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
        await seed(ledger)
        bridge = HomeAssistantBridge(cfg, ledger.path, ledger.changes, status, sw_version="1.2.3", node_poll_s=0.5)
        naming = bridge.naming
        bridge.start()
        try:
            async with watching(broker, "ha-pw") as ha:
                # retained configs after connect, each valid: 5 lanes x 3, node 7 (the one served) x 2, the hub x 3
                await ha.until(lambda: ha.latest.get("smartshelf/ha/store_1/status") == b"online")
                await ha.until(lambda: len([t for t in ha.retained_now() if t.endswith("/config")]) == 20)
                retained = await retained_on(broker)
                check_all(retained, naming)
                assert retained == {**bridge.model.desired, "smartshelf/ha/store_1/status": b"online"}

                # a count change reaches the lane's state; a burst of picks is coalesced
                a1 = "smartshelf/ha/store_1/lane/A1/state"
                before = len([x for x in ha.log if x[0] == a1])
                started = time.monotonic()
                for seq in range(5, 15):  # ten commits, one pick each
                    await ledger.submit(event(seq, 0, KIND_PICK, -1))
                submitted_s = time.monotonic() - started
                await ha.until(lambda: json.loads(ha.latest[a1])["count"] == 2)
                await asyncio.sleep(1.0)
                sent = len([x for x in ha.log if x[0] == a1]) - before
                assert 1 <= sent <= int(submitted_s / 0.5) + 2  # at most one per state_interval_s (0.5 s)
                assert json.loads(ha.latest[a1]) == {"count": 2, "state": "low", "open_alerts": 1}
                assert json.loads(ha.latest["smartshelf/ha/store_1/hub/state"])["lanes_low"] == 2

                # a lane removed: its configs emptied (Home Assistant removes the entities), its states cleared
                await ledger.transact(lambda tx: tx.rows("DELETE FROM lanes WHERE lane_id = 'GONE'"))
                gone = [t for t in ha.latest if "lane_GONE_" in t or "/lane/GONE/" in t]
                assert len(gone) == 6
                await ha.until(lambda: all(ha.latest[t] == b"" for t in gone))

                # Home Assistant restarts: everything again
                configs_before = len([x for x in ha.log if x[0].endswith("/config")])
                await ha.client.publish("homeassistant/status", "online", qos=1)
                await ha.until(lambda: len([x for x in ha.log if x[0].endswith("/config")]) >= configs_before + 17)

                # the broker restarts: the bridge connects again, online again
                broker.restart()
                await ha.until(lambda: bridge.connects >= 2 and bridge.connected, timeout_s=30)
        finally:
            await bridge.stop()
        assert bridge.connects >= 2

        # the hub away (stopped) while a lane goes: the next start empties the lane's retained configs
        await ledger.assign_lane(OTHER, 4, None, actor="t", lane_id="LATE")
        bridge = HomeAssistantBridge(cfg, ledger.path, ledger.changes, status, sw_version="1.2.3")
        bridge.start()
        async with watching(broker, "ha-pw") as ha:
            late = "homeassistant/sensor/store_1/lane_LATE_count/config"
            await ha.until(lambda: bool(ha.latest.get(late)))
            await bridge.stop()
            await ha.until(lambda: ha.latest.get("smartshelf/ha/store_1/status") == b"offline")
            await ledger.transact(lambda tx: tx.rows("DELETE FROM lanes WHERE lane_id = 'LATE'"))
            bridge = HomeAssistantBridge(cfg, ledger.path, ledger.changes, status, sw_version="1.2.3")
            bridge.start()
            try:
                await ha.until(
                    lambda: ha.latest.get(late) == b"" and ha.latest.get("smartshelf/ha/store_1/status") == b"online"
                )
                assert not [t for t, p in ha.latest.items() if "LATE" in t and p]
            finally:
                await bridge.stop()


async def test_a_broker_that_is_away_never_holds_the_hub_up(tmp_path: Path, ledger: LedgerService) -> None:
    """No broker on the port: start returns at once, commits are noted (nothing read), stop returns."""
    cfg = load_config(write(tmp_path, '[homeassistant]\nhost = "127.0.0.1"\nport = 9\n')).homeassistant
    assert cfg is not None
    bridge = HomeAssistantBridge(cfg, ledger.path, ledger.changes, status, reconnect_min_s=0.05)
    bridge.start()
    await ledger.submit(event(40, 0, KIND_PICK, -1))
    async with asyncio.timeout(15):  # its first attempt has failed and the commit is noted (slower when loaded)
        while not (bridge.last_error and "A1" in bridge._pending.lanes):
            await asyncio.sleep(0.02)
    assert not bridge.connected and bridge.last_error and bridge.connects == 0
    assert "A1" in bridge._pending.lanes
    await asyncio.wait_for(bridge.stop(), 6)


def test_an_exposed_password_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    os.chmod(tmp_path / "pw", 0o644)
    cfg = load_config(write(tmp_path, '[homeassistant]\nhost = "h"\nusername = "u"\npassword_file = "pw"\n'))
    assert cfg.homeassistant is not None

    async def start() -> None:
        HomeAssistantBridge(cfg.homeassistant, tmp_path / "l.db", _NoChanges(), status).start()  # type: ignore[arg-type]

    with pytest.raises(PermissionError, match="holds the Home Assistant broker's password and is readable by other"):
        asyncio.run(start())


class _NoChanges:
    def listen(self, listener: Callable[[Changes], None]) -> Callable[[], None]:
        return lambda: None


async def test_the_hub_runs_the_bridge_when_hub_toml_says_so(
    tmp_path: Path, broker_factory: Callable[..., Broker]
) -> None:
    """``HubService`` with ``[homeassistant]``: the hub's device appears at start, ``offline`` at stop."""
    broker = broker_factory(plain=True, extra_acl=HA_ACL)
    broker.add_user("shelf", "shelf-pw")
    broker.add_user("ha", "ha-pw")
    cfg = load_config(bridge_config(tmp_path, broker))
    hub = HubService(cfg, control=False, open_ports=False, reconcile=False)
    async with watching(broker, "ha-pw") as ha:
        await hub.start()
        try:
            assert hub.homeassistant is not None
            alerts = "homeassistant/sensor/store_1/hub_open_alerts/config"
            await ha.until(lambda: bool(ha.latest.get(alerts)) and "smartshelf/ha/store_1/hub/state" in ha.latest)
            check_all(
                {t: p for t, p in ha.latest.items() if t.startswith("homeassistant/")}
                | {"smartshelf/ha/store_1/hub/state": ha.latest["smartshelf/ha/store_1/hub/state"]},
                hub.homeassistant.naming,
            )
        finally:
            await hub.stop()
        assert hub.homeassistant is None
        await ha.until(lambda: ha.latest.get("smartshelf/ha/store_1/status") == b"offline")
