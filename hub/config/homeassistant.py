"""``[homeassistant]`` of ``hub.toml``: Home Assistant MQTT discovery (devices, entities, topics:
hub/homeassistant/payloads.py).

```toml
[homeassistant]
enabled = true                    # default true once the table is there; false keeps the settings, publishes nothing
host = "homeassistant.local"      # the store's own broker (Home Assistant's Mosquitto add-on), not the chain's
port = 1883                       # default 1883, or 8883 with tls = true
tls = false                       # true: TLS, the broker's certificate checked against cafile (else the system's CAs)
cafile = "/etc/smartshelf/ha-ca.pem"
username = "smartshelf"           # optional; with password_file
password_file = "ha-password"     # the broker password, one line, mode 0600 (read at start, never logged)
discovery_prefix = "homeassistant"  # Home Assistant's discovery prefix (its MQTT options; default homeassistant)
node_id = "smartshelf"            # [A-Za-z0-9_-]: this hub's part of every discovery topic and unique_id; two hubs
                                  # on one Home Assistant need two node_ids
name = "Smart shelf"              # the hub's device name in Home Assistant (lanes and nodes are named after it)
suggested_area = "Shop floor"     # optional: the area Home Assistant suggests for the devices
configuration_url = "https://hub.local:8443/"   # optional: the link on the device page (the status page)
base_topic = "smartshelf/ha/smartshelf"         # default smartshelf/ha/<node_id>: state and availability topics
birth_topic = "homeassistant/status"            # default <discovery_prefix>/status: Home Assistant's birth message
state_interval_s = 1.0            # a lane's state is published at most this often (changes in between coalesce)
```

Every problem is one line naming the file and the setting, as for the other tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.config.checks import FileChecks, type_name, under

__all__ = ["HA_KEYS", "HomeAssistantConfig", "parse_homeassistant"]

HA_KEYS = (
    "enabled",
    "host",
    "port",
    "tls",
    "cafile",
    "username",
    "password_file",
    "discovery_prefix",
    "node_id",
    "name",
    "suggested_area",
    "configuration_url",
    "base_topic",
    "birth_topic",
    "state_interval_s",
)
NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # Home Assistant's class for <node_id> and <object_id>


@dataclass(frozen=True, slots=True)
class HomeAssistantConfig:
    """Where and how the hub announces its lanes, nodes and alerts to Home Assistant (hub/homeassistant/bridge.py)."""

    host: str
    port: int = 1883
    tls: bool = False
    cafile: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    discovery_prefix: str = "homeassistant"
    node_id: str = "smartshelf"
    name: str = "Smart shelf"
    suggested_area: str | None = None
    configuration_url: str | None = None
    base_topic: str = "smartshelf/ha/smartshelf"
    birth_topic: str = "homeassistant/status"
    state_interval_s: float = 1.0
    where: str = "hub.toml: homeassistant"  # for messages about the password file at start


def _topic(f: FileChecks, setting: str, value: object) -> str:
    """A topic name we publish under: no wildcards, no empty level at either end."""
    text = f.text(setting, value)
    if "+" in text or "#" in text:
        raise f.fail(setting, f"must not contain the MQTT wildcards + or #: {text!r}")
    if text.startswith("/") or text.endswith("/") or "//" in text:
        raise f.fail(setting, f"must not start or end with / or hold an empty level: {text!r}")
    if len(text.encode()) > 1024:
        raise f.fail(setting, "is longer than 1024 bytes")
    return text


def _flag(f: FileChecks, setting: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise f.fail(setting, f"must be true or false, not {type_name(value)}")
    return value


def _file(f: FileChecks, setting: str, value: object, base: Path) -> Path:
    path = under(base, f.text(setting, value))
    if not path.is_file():
        raise f.fail(setting, f"no such file: {path}")
    return path


def parse_homeassistant(f: FileChecks, raw: Mapping[str, Any], base: Path) -> HomeAssistantConfig | None:
    """The table's settings checked; None when ``enabled = false`` (nothing is published, nothing connects)."""
    f.unknown(raw, HA_KEYS, "homeassistant.")
    if not _flag(f, "homeassistant.enabled", raw.get("enabled", True)):
        return None
    if "host" not in raw:
        raise f.fail("homeassistant.host", "missing (the host name or address of Home Assistant's MQTT broker)")
    host = f.text("homeassistant.host", raw["host"])
    tls = _flag(f, "homeassistant.tls", raw.get("tls", False))
    port = f.integer("homeassistant.port", raw.get("port", 8883 if tls else 1883), 1, 65535, "a TCP port")
    cafile = None
    if "cafile" in raw:
        if not tls:
            raise f.fail("homeassistant.cafile", "needs homeassistant.tls = true")
        cafile = _file(f, "homeassistant.cafile", raw["cafile"], base)
    username = f.text("homeassistant.username", raw["username"]) if "username" in raw else None
    password_file = None
    if "password_file" in raw:
        if username is None:
            raise f.fail("homeassistant.password_file", "needs homeassistant.username (whose password it is)")
        password_file = _file(f, "homeassistant.password_file", raw["password_file"], base)
    prefix = _topic(f, "homeassistant.discovery_prefix", raw.get("discovery_prefix", "homeassistant"))
    node_id = f.text("homeassistant.node_id", raw.get("node_id", "smartshelf"))
    if not NODE_ID.fullmatch(node_id):
        raise f.fail(
            "homeassistant.node_id", f"must be 1..64 of A-Z a-z 0-9 _ - (Home Assistant's rule), not {node_id!r}"
        )
    url = None
    if "configuration_url" in raw:
        url = f.text("homeassistant.configuration_url", raw["configuration_url"])
        if not url.startswith(("http://", "https://", "homeassistant://")):
            raise f.fail(
                "homeassistant.configuration_url", f"must start with http://, https:// or homeassistant://: {url!r}"
            )
    area = f.text("homeassistant.suggested_area", raw["suggested_area"]) if "suggested_area" in raw else None
    interval = f.seconds("homeassistant.state_interval_s", raw.get("state_interval_s", 1.0))
    if not 0.05 <= interval <= 3600:
        raise f.fail("homeassistant.state_interval_s", f"must be 0.05 .. 3600 seconds, not {interval:g}")
    base_topic = _topic(f, "homeassistant.base_topic", raw.get("base_topic", f"smartshelf/ha/{node_id}"))
    return HomeAssistantConfig(
        host=host,
        port=port,
        tls=tls,
        cafile=cafile,
        username=username,
        password_file=password_file,
        discovery_prefix=prefix,
        node_id=node_id,
        name=f.text("homeassistant.name", raw.get("name", "Smart shelf")),
        suggested_area=area,
        configuration_url=url,
        base_topic=base_topic,
        birth_topic=_topic(f, "homeassistant.birth_topic", raw.get("birth_topic", f"{prefix}/status")),
        state_interval_s=interval,
        where=f"{f.display}: homeassistant",
    )
