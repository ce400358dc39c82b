"""``hub.toml``: the hub service's configuration, read with ``tomllib`` into frozen dataclasses.

```toml
[hub]
database = "smartshelf.db"       # the ledger; relative paths are relative to this file's directory
synchronous = "FULL"             # FULL (default) | NORMAL: SQLite durability, see DESIGN.md section 6
log_level = "info"               # debug | info | warning | error
status_interval_s = 60           # one status line in the log this often
control_socket = "hub.sock"      # `smartshelf hub command` talks to the running hub here (default <database>.sock)
backup_dir = "backups"           # scheduled online backups (optional) ...
backup_interval_s = 3600         # ... this often (default 3600) ...
backup_keep = 24                 # ... keeping the newest N (default 24); or in [backup] (hub/config/backup.py)
nodes_files = ["emulated-nodes.toml"]  # more [[node]] tables from other files (e.g. written by the emulator)

[[node]]
id = 1                           # node id, 1..4294967295, as provisioned on the node
key = "000102...0e0f"            # the node's key: 32..128 hex characters (16..64 bytes)
port = "/dev/ttyACM0"            # its serial device (may be absent at start: unplugged is normal)
baud = 115200                    # optional

[[node]]                         # a node on Bluetooth LE (its config.json says "link": "ble")
id = 2
key = "101112...1e1f"
link = "ble"                     # "serial" (default) | "ble"
address = "C2:5E:5E:00:00:02"    # optional: found by its beacon's node id when absent

[ble]                            # the hub's BLE adapter, used when a node has link = "ble"
adapter = "bluez"                # "bluez" (default: bleak on BlueZ) | "bumble:<HCI transport>" (usb:0, unix:PATH ...)
slots = 5                        # connections held at once (a Pi's adapter holds 5..7 reliably)
mtu = 247                        # ATT MTU the hub asks for (23..517)
idle_s = 2.0                     # a connection with nothing to carry for this long is closed
hold_s = 10.0                    # a connection is closed after this long when other nodes wait for a slot
visit_s = 300.0                  # every node is connected at least this often (health, lane states)

[backup]                         # backups: also encrypted (age) and shipped off the Pi (hub/config/backup.py)
recipients = ["age1..."]
offsite_dir = "/mnt/offsite/store-042"

[reconcile]                      # handed to hub/reconcile unchanged (a table; its keys are checked there)

[fleet]                          # publish the ledger to the chain's MQTT broker (hub/config/fleet.py, hub/fleet/)
hub_id = "store-042"
host = "mqtt.example.com"
password_file = "fleet-password"

[homeassistant]                  # Home Assistant MQTT discovery (hub/config/homeassistant.py, hub/fleet/)
host = "homeassistant.local"
```

Every problem is reported as one line that names the file and the setting, for example
``hub.toml: node[2].key: must be 32..128 hex characters (16..64 bytes)`` (``node[N]`` counts the ``[[node]]``
tables of that file from 1). A fragment listed in ``nodes_files`` holds only ``[[node]]`` tables; node ids,
ports and BLE addresses must be unique across all files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from hub.config.backup import BackupConfig, parse_backup
from hub.config.checks import ConfigError, FileChecks, read_toml, type_name, under
from hub.config.fleet import FleetConfig, parse_fleet
from hub.config.homeassistant import HomeAssistantConfig, parse_homeassistant
from hub.config.web import WEB_KEYS, TlsMode, WebConfig, parse_web
from hub.reconcile.config import ReconcileConfig

__all__ = ["BackupConfig", "ConfigError", "TlsMode", "WebConfig"]  # of its parts, importable from here too

Synchronous = Literal["FULL", "NORMAL"]
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_BAUD = 115200
MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL

_HUB_KEYS = (
    "database",
    "synchronous",
    "log_level",
    "status_interval_s",
    "control_socket",
    "backup_dir",
    "backup_interval_s",
    "backup_keep",
    "nodes_files",
)
_NODE_KEYS = ("id", "key", "port", "baud", "link", "address")
_TOP_KEYS = ("hub", "node", "reconcile", "web", "ble", "backup", "fleet", "homeassistant")
_BLE_KEYS = ("adapter", "slots", "mtu", "idle_s", "hold_s", "visit_s")
LINKS = ("serial", "ble")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    key: bytes = field(repr=False)
    port: str  # "" for a BLE node
    baud: int = DEFAULT_BAUD
    where: str = ""  # "hub.toml: node[2]", for messages
    link: str = "serial"  # "serial" | "ble"
    address: str = ""  # a BLE node's address (upper case), "" when it is found by its beacon


@dataclass(frozen=True, slots=True)
class BleConfig:
    """The hub's BLE adapter and how it shares its connections (hub/transport/ble/README in the docstrings)."""

    adapter: str = "bluez"
    slots: int = 5
    mtu: int = 247
    idle_s: float = 2.0
    hold_s: float = 10.0
    visit_s: float = 300.0


@dataclass(frozen=True, slots=True)
class HubConfig:
    path: Path
    database: Path
    synchronous: Synchronous = "FULL"
    log_level: str = "info"
    status_interval_s: float = 60.0
    control_socket: Path = Path("smartshelf.db.sock")
    backup: BackupConfig | None = None
    nodes: tuple[NodeConfig, ...] = ()
    reconcile: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    web: WebConfig | None = None  # None: no [web] table, no status page
    fleet: FleetConfig | None = None  # None: no [fleet] table, nothing published (hub/config/fleet.py)
    homeassistant: HomeAssistantConfig | None = None  # None: no [homeassistant] table (or enabled = false)
    ble: BleConfig = field(default_factory=BleConfig)
    key_files: tuple[Path, ...] = ()  # the files node keys came from: the hub refuses them open to others

    def node(self, node_id: int) -> NodeConfig | None:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        return None


def _nodes(f: FileChecks, raw: object, base: Path) -> list[NodeConfig]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise f.fail("node", "must be [[node]] tables")
    out: list[NodeConfig] = []
    for i, table in enumerate(raw, start=1):
        where = f"node[{i}]"
        f.unknown(table, _NODE_KEYS, f"{where}.")
        link = table.get("link", "serial")
        if link not in LINKS:
            raise f.fail(f"{where}.link", f'must be "serial" or "ble", not {type_name(link)}')
        needed = [("id", "the node id, 1..4294967295"), ("key", "the node's key as hex")]
        if link == "serial":
            needed.append(("port", "its serial device, e.g. /dev/ttyACM0"))
        for required, hint in needed:
            if required not in table:
                raise f.fail(f"{where}.{required}", f"missing ({hint})")
        node_id = f.integer(f"{where}.id", table["id"], 1, 0xFFFFFFFF, "a node id")
        key_text = table["key"]
        if (
            not isinstance(key_text, str)
            or not 32 <= len(key_text) <= 128
            or len(key_text) % 2
            or any(c not in "0123456789abcdefABCDEF" for c in key_text)
        ):
            raise f.fail(f"{where}.key", "must be 32..128 hex characters (16..64 bytes)")
        key = bytes.fromhex(key_text)
        if link == "ble":
            for serial_only in ("port", "baud"):
                if serial_only in table:
                    raise f.fail(f"{where}.{serial_only}", 'a node with link = "ble" has no serial ' + serial_only)
            address = ""
            if "address" in table:
                address = f.text(f"{where}.address", table["address"]).upper()
                if not _is_address(address):
                    raise f.fail(f"{where}.address", f"must be a BLE address like C2:5E:5E:00:00:07, not {address!r}")
            out.append(NodeConfig(node_id, key, "", where=f"{f.display}: {where}", link="ble", address=address))
            continue
        if "address" in table:
            raise f.fail(f"{where}.address", 'is for link = "ble" nodes')
        port = f.text(f"{where}.port", table["port"])
        if port != port.strip():
            raise f.fail(f"{where}.port", f"has spaces around it: {port!r}")
        baud = f.integer(f"{where}.baud", table.get("baud", DEFAULT_BAUD), 50, 4_000_000, "a baud rate")
        out.append(NodeConfig(node_id, key, str(under(base, port)), baud, where=f"{f.display}: {where}"))
    return out


def _is_address(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789ABCDEF" for c in p) for p in parts)


def _ble(f: FileChecks, raw: object) -> BleConfig:
    if not isinstance(raw, dict):
        raise f.fail("ble", "must be a table ([ble])")
    f.unknown(raw, _BLE_KEYS, "ble.")
    adapter = f.text("ble.adapter", raw.get("adapter", "bluez"))
    if adapter != "bluez" and not (adapter.startswith("bumble:") and len(adapter) > len("bumble:")):
        raise f.fail("ble.adapter", f'must be "bluez" or "bumble:<HCI transport>" (e.g. bumble:usb:0), not {adapter!r}')
    return BleConfig(
        adapter,
        f.integer("ble.slots", raw.get("slots", 5), 1, 32),
        f.integer("ble.mtu", raw.get("mtu", 247), 23, 517),
        _bounded(f, "ble.idle_s", raw.get("idle_s", 2.0), 0.1, 600.0),
        _bounded(f, "ble.hold_s", raw.get("hold_s", 10.0), 1.0, 3600.0),
        _bounded(f, "ble.visit_s", raw.get("visit_s", 300.0), 5.0, 86400.0),
    )


def _bounded(f: FileChecks, setting: str, value: object, lo: float, hi: float) -> float:
    seconds = f.seconds(setting, value)
    if not lo <= seconds <= hi:
        raise f.fail(setting, f"must be {lo:g} .. {hi:g} seconds, not {seconds:g}")
    return seconds


def load_config(path: Path | str) -> HubConfig:
    """Read and check ``hub.toml`` (and the files it includes); raises ``ConfigError`` (one line)."""
    path = Path(path)
    f = FileChecks(str(path))
    top = read_toml(path, f.display)
    base = path.parent
    for key in top:
        if key not in _TOP_KEYS:
            raise f.fail(key, f"unknown setting (known: {', '.join(_TOP_KEYS)})")
    hub = top.get("hub", {})
    if not isinstance(hub, dict):
        raise f.fail("hub", "must be a table ([hub])")
    f.unknown(hub, _HUB_KEYS, "hub.")

    database = under(base, f.text("hub.database", hub.get("database", "smartshelf.db")))
    sync = hub.get("synchronous", "FULL")
    if not isinstance(sync, str) or sync.upper() not in ("FULL", "NORMAL"):
        raise f.fail("hub.synchronous", f"must be FULL or NORMAL, not {type_name(sync)}")
    synchronous: Synchronous = "FULL" if sync.upper() == "FULL" else "NORMAL"
    level = hub.get("log_level", "info")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise f.fail("hub.log_level", f"must be one of {', '.join(LOG_LEVELS)}, not {type_name(level)}")
    status_interval = f.seconds("hub.status_interval_s", hub.get("status_interval_s", 60))
    if "control_socket" in hub:
        socket_path = under(base, f.text("hub.control_socket", hub["control_socket"]))
    else:
        socket_path = database.with_name(database.name + ".sock")
    if len(os.fsencode(str(socket_path))) > MAX_SOCKET_PATH:
        setting = "hub.control_socket" if "control_socket" in hub else "hub.database"
        raise f.fail(
            setting,
            f"the control socket path {socket_path} is longer than {MAX_SOCKET_PATH} bytes: set hub.control_socket",
        )

    backup = parse_backup(f, hub, top, base)

    nodes = _nodes(f, top.get("node", []), base)
    key_files = [path] if nodes else []
    includes = hub.get("nodes_files", [])
    if not isinstance(includes, list):
        raise f.fail("hub.nodes_files", f"must be a list of file names, not {type_name(includes)}")
    for i, name in enumerate(includes, start=1):
        name = f.text(f"hub.nodes_files[{i}]", name)
        fragment_path = under(base, name)
        if not fragment_path.is_file():
            raise f.fail(f"hub.nodes_files[{i}]", f"no such file: {fragment_path}")
        ff = FileChecks(name)
        fragment = read_toml(fragment_path, name)
        for key in fragment:
            if key != "node":
                raise ff.fail(key, "unknown setting (a nodes file holds only [[node]] tables)")
        fragment_nodes = _nodes(ff, fragment.get("node", []), fragment_path.parent)
        key_files += [fragment_path] if fragment_nodes else []
        nodes += fragment_nodes

    by_id: dict[int, NodeConfig] = {}
    by_port: dict[str, NodeConfig] = {}
    for n in nodes:
        if n.node_id in by_id:
            raise ConfigError(f"{n.where}.id: node {n.node_id} is already defined ({by_id[n.node_id].where})")
        if n.link == "ble":
            by_id[n.node_id] = n
            if n.address:
                if n.address in by_port:
                    other = by_port[n.address].node_id
                    raise ConfigError(f"{n.where}.address: {n.address} is already the address of node {other}")
                by_port[n.address] = n
            continue
        port_key = os.path.normpath(n.port)
        if port_key in by_port:
            raise ConfigError(f"{n.where}.port: {n.port} is already the port of node {by_port[port_key].node_id}")
        by_id[n.node_id] = n
        by_port[port_key] = n

    reconcile = top.get("reconcile", {})
    if not isinstance(reconcile, dict):
        raise f.fail("reconcile", "must be a table ([reconcile])")

    try:
        ReconcileConfig.from_mapping(reconcile)
    except (ValueError, TypeError) as exc:
        raise f.fail("reconcile", str(exc)) from None

    web: WebConfig | None = None
    if "web" in top:
        raw_web = top["web"]
        if not isinstance(raw_web, dict):
            raise f.fail("web", "must be a table ([web])")
        f.unknown(raw_web, WEB_KEYS, "web.")
        web = replace(parse_web(f, raw_web, path.parent), hub_config=path.absolute())

    ble = _ble(f, top.get("ble", {}))

    fleet: FleetConfig | None = None
    if "fleet" in top:
        if not isinstance(top["fleet"], dict):
            raise f.fail("fleet", "must be a table ([fleet])")
        fleet = parse_fleet(f, top["fleet"], path)

    homeassistant: HomeAssistantConfig | None = None
    if "homeassistant" in top:
        if not isinstance(top["homeassistant"], dict):
            raise f.fail("homeassistant", "must be a table ([homeassistant])")
        homeassistant = parse_homeassistant(f, top["homeassistant"], base)

    return HubConfig(
        path=path,
        database=database,
        synchronous=synchronous,
        log_level=level.lower(),
        status_interval_s=status_interval,
        control_socket=socket_path,
        backup=backup,
        nodes=tuple(nodes),
        reconcile=MappingProxyType(dict(reconcile)),
        web=web,
        ble=ble,
        key_files=tuple(key_files),
        fleet=fleet,
        homeassistant=homeassistant,
    )
