"""``[fleet]`` of ``hub.toml``: the hub also publishes its ledger to the chain's MQTT broker (hub/fleet/README.md).

```toml
[fleet]
hub_id = "store-042"              # 1..64 of A-Z a-z 0-9 _ -: this hub in every topic, its MQTT user and client id
host = "mqtt.example.com"         # the broker
port = 8883                       # default 8883 (1883 with tls = false)
tls = true                        # default true; false (plain MQTT) only to a loopback broker (127.0.0.1, ::1)
cafile = "/etc/smartshelf/fleet-ca.pem"   # the CA the broker's certificate is checked against (default: the
                                          # system's CAs); the host name is always checked
username = "store-042"            # default: hub_id (the broker's ACL lets user <u> write smartshelf/v1/<u>/# only)
password_file = "fleet-password"  # the broker password, one line, mode 0600 (read at start, never logged) ...
# password = "..."                # ... or here, which makes hub.toml a file of secrets (mode 0600 too)
topic_prefix = "smartshelf/v1"    # default smartshelf/v1
session_expiry_s = 604800         # the broker keeps the hub's session this long after it went away (default 7 days)
snapshot_interval_s = 300         # a snapshot (SKUs, lanes, nodes, book) at connect and this often (default 300)
max_in_flight = 10                # publishes awaiting their PUBACK at once (default 10)
batch_size = 500                  # movements (or alerts) per message, 1..1000 (default 500)
keepalive_s = 60                  # MQTT keepalive (default 60)
```

Every problem is one line naming the file and the setting, e.g. ``hub.toml: fleet.hub_id: must be 1..64 of A-Z
a-z 0-9 _ -, not 'store 42'``. The password file must be there when the configuration is read; that it (or
``hub.toml``, when it holds the password) is readable by its owner only is checked when the hub starts, as for node
keys (``hub.private_files``): the hub refuses to start otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.config.checks import ConfigError, FileChecks, type_name, under
from hub.ledger.origin import is_loopback
from hub.private_files import check_private

__all__ = ["FLEET_KEYS", "FleetConfig", "parse_fleet"]

FLEET_KEYS = (
    "hub_id",
    "host",
    "port",
    "tls",
    "cafile",
    "username",
    "password",
    "password_file",
    "topic_prefix",
    "session_expiry_s",
    "snapshot_interval_s",
    "max_in_flight",
    "batch_size",
    "keepalive_s",
)
HUB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SECRET = "the MQTT broker password"


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """How the hub reaches the chain's broker (``hub.fleet.publisher``)."""

    hub_id: str
    host: str
    port: int = 8883
    tls: bool = True
    cafile: Path | None = None  # None: the system's CAs
    username: str = ""  # "" : hub_id
    password: str | None = None  # given in hub.toml (repr hides it)
    password_file: Path | None = None
    topic_prefix: str = "smartshelf/v1"
    session_expiry_s: int = 7 * 86400
    snapshot_interval_s: float = 300.0
    max_in_flight: int = 10
    batch_size: int = 500
    keepalive_s: int = 60
    secret_file: Path | None = None  # the file the password comes from (hub.toml or password_file)
    where: str = "hub.toml: fleet"  # for messages at start

    def __repr__(self) -> str:
        return f"FleetConfig(hub_id={self.hub_id!r}, host={self.host!r}, port={self.port}, tls={self.tls})"

    @property
    def user(self) -> str:
        return self.username or self.hub_id

    @property
    def client_id(self) -> str:
        return f"smartshelf-hub-{self.hub_id}"

    def read_password(self) -> str:
        """The password, from hub.toml or its file; ``ExposedSecret`` when that file is open to other users,
        ``ConfigError`` when it cannot be read or is empty. Called at start, never logged."""
        if self.secret_file is not None:
            check_private(self.secret_file, SECRET)
        if self.password is not None:
            return self.password
        assert self.password_file is not None
        try:
            lines = self.password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.where}.password_file: cannot read {self.password_file}: {exc}") from None
        if not lines or not lines[0]:
            raise ConfigError(f"{self.where}.password_file: {self.password_file} is empty (one line: the password)")
        return lines[0]


def _prefix(f: FileChecks, value: object) -> str:
    text = f.text("fleet.topic_prefix", value)
    levels = text.split("/")
    if len(text) > 200 or text.startswith("$") or any(not lv or "+" in lv or "#" in lv for lv in levels):
        raise f.fail(
            "fleet.topic_prefix",
            f"must be up to 200 characters of non-empty levels without + or #, not starting with $: {text!r}",
        )
    return text


def parse_fleet(f: FileChecks, raw: Mapping[str, Any], config_path: Path) -> FleetConfig:
    """The ``[fleet]`` table, checked (``f.unknown`` first: every key is one of ``FLEET_KEYS``)."""
    f.unknown(raw, FLEET_KEYS, "fleet.")
    base = config_path.parent
    for required, hint in (("hub_id", "this hub's id, e.g. store-042"), ("host", "the MQTT broker's host name")):
        if required not in raw:
            raise f.fail(f"fleet.{required}", f"missing ({hint})")
    hub_id = f.text("fleet.hub_id", raw["hub_id"])
    if not HUB_ID.fullmatch(hub_id):
        raise f.fail("fleet.hub_id", f"must be 1..64 of A-Z a-z 0-9 _ -, not {hub_id!r}")
    host = f.text("fleet.host", raw["host"])
    if host != host.strip() or "/" in host:
        raise f.fail("fleet.host", f"must be a host name or address, not {host!r}")
    tls = raw.get("tls", True)
    if not isinstance(tls, bool):
        raise f.fail("fleet.tls", f"must be true or false, not {type_name(tls)}")
    if not tls and not is_loopback(host):
        raise f.fail(
            "fleet.tls",
            f"false to {host} would send the hub's password and ledger in clear text over the network; "
            "plain MQTT is allowed only to a loopback broker (127.0.0.1, ::1, localhost)",
        )
    cafile = None
    if "cafile" in raw:
        if not tls:
            raise f.fail("fleet.cafile", "needs tls = true")
        cafile = under(base, f.text("fleet.cafile", raw["cafile"]))
        if not cafile.is_file():
            raise f.fail("fleet.cafile", f"no such file: {cafile}")
    username = f.text("fleet.username", raw["username"]) if "username" in raw else ""
    password, password_file, secret_file = None, None, None
    if "password" in raw and "password_file" in raw:
        raise f.fail("fleet.password", "give password or password_file, not both")
    if "password" in raw:
        password = raw["password"]
        if not isinstance(password, str) or not password or "\n" in password:
            raise f.fail("fleet.password", "must be a non-empty string of one line")
        secret_file = config_path
    elif "password_file" in raw:
        password_file = under(base, f.text("fleet.password_file", raw["password_file"]))
        if not password_file.is_file():
            raise f.fail("fleet.password_file", f"no such file: {password_file}")
        secret_file = password_file
    else:
        raise f.fail("fleet.password_file", "missing (the hub's broker password: password_file, mode 0600)")
    return FleetConfig(
        hub_id=hub_id,
        host=host,
        port=f.integer("fleet.port", raw.get("port", 8883 if tls else 1883), 1, 65535, "a TCP port"),
        tls=tls,
        cafile=cafile,
        username=username,
        password=password,
        password_file=password_file,
        topic_prefix=_prefix(f, raw.get("topic_prefix", "smartshelf/v1")),
        session_expiry_s=f.integer("fleet.session_expiry_s", raw.get("session_expiry_s", 7 * 86400), 0, 0xFFFFFFFF),
        snapshot_interval_s=_range(f, "fleet.snapshot_interval_s", raw.get("snapshot_interval_s", 300), 5, 86400),
        max_in_flight=f.integer("fleet.max_in_flight", raw.get("max_in_flight", 10), 1, 1000),
        batch_size=f.integer("fleet.batch_size", raw.get("batch_size", 500), 1, 1000),
        keepalive_s=f.integer("fleet.keepalive_s", raw.get("keepalive_s", 60), 5, 3600),
        secret_file=secret_file,
        where=f"{f.display}: fleet",
    )


def _range(f: FileChecks, setting: str, value: object, lo: float, hi: float) -> float:
    seconds = f.seconds(setting, value)
    if not lo <= seconds <= hi:
        raise f.fail(setting, f"must be {lo:g} .. {hi:g} seconds, not {seconds:g}")
    return seconds
