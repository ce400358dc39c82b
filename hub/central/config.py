"""``central.toml``: the central consumer's configuration, read with ``tomllib`` into frozen dataclasses.

```toml
[central]
log_level = "info"               # debug | info | warning | error
status_interval_s = 60           # one status line in the log this often
batch_messages = 50              # at most this many MQTT messages per PostgreSQL transaction ...
batch_rows = 20000               # ... and about this many movement rows (a message is never split) ...
batch_delay_s = 0.05             # ... waiting at most this long for more once the first one arrived
rejected_keep_days = 30          # refused messages (table rejected, up to 64 KiB each) are kept this long ...
rejected_keep_rows = 10000       # ... and at most this many (the newest)
rejected_prune_interval_s = 600  # how often a batch's transaction deletes the others (at most 10,000 a time)

[database]                       # PostgreSQL: a dsn, or its parts (not both; parts only for a local server: a
                                 # remote one needs a dsn with sslmode=verify-full or verify-ca)
dsn = "postgresql://central@db.example:5432/smartshelf?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem"
# host = "127.0.0.1"
# port = 5432
# database = "smartshelf"
# user = "central"
# password_file = "/etc/smartshelf/pg-password"   # mode 0600; its first line is the password
connect_timeout_s = 10

[broker]                         # Mosquitto (MQTT 5)
host = "127.0.0.1"
port = 8883                      # default 8883 with TLS, 1883 without
tls = true                       # default; false (plain MQTT) only to a loopback broker
cafile = "/etc/smartshelf/broker-ca.pem"   # verify the broker with this CA (default: the system's CAs)
username = "central"
password_file = "/etc/smartshelf/broker-password"   # or password = "..." (then central.toml must be 0600)
client_id = "smartshelf-central-1"   # fixed: the broker keeps this consumer's session (and its unacked messages)
group = "central"                # shared subscription $share/<group>/<topic_prefix>/+/+
topic_prefix = "smartshelf/v1"
session_expiry_s = 86400         # how long the broker keeps the session (and queues) while the consumer is away
keepalive_s = 30
receive_maximum = 100            # unacknowledged messages the broker may have in flight to this consumer
reconnect_min_s = 0.5            # back-off between reconnects (broker and PostgreSQL): doubles up to ...
reconnect_max_s = 30             # ... this

[web]                            # the central page and API (smartshelf central serve): hub/central/web/README.md
```

Every problem is one line naming the file and the setting (``central.toml: broker.port: must be a port
1..65535, not 0``). A file that holds a password itself (``broker.password``, a dsn with a password) must be
private to its owner, as must ``password_file``s.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hub.config.checks import ConfigError, FileChecks, read_toml, type_name, under
from hub.ledger.origin import is_loopback
from hub.private_files import exposure, refusal

__all__ = ["BrokerConfig", "CentralConfig", "ConfigError", "DatabaseConfig", "load_central_config"]

LOG_LEVELS = ("debug", "info", "warning", "error")
_TOP_KEYS = ("central", "database", "broker", "web")  # [web]: the central page (hub/central/web/config.py)
_CENTRAL_KEYS = (
    "log_level",
    "status_interval_s",
    "batch_messages",
    "batch_rows",
    "batch_delay_s",
    "rejected_keep_days",
    "rejected_keep_rows",
    "rejected_prune_interval_s",
)
_DB_KEYS = ("dsn", "host", "port", "database", "user", "password_file", "connect_timeout_s")
_DB_PARTS = ("host", "port", "database", "user", "password_file")
_BROKER_KEYS = (
    "host",
    "port",
    "tls",
    "cafile",
    "username",
    "password",
    "password_file",
    "client_id",
    "group",
    "topic_prefix",
    "session_expiry_s",
    "keepalive_s",
    "receive_maximum",
    "reconnect_min_s",
    "reconnect_max_s",
)
# MQTT topic levels and shared-subscription group names: no wildcards, no '$' at the start, no empty level
_PREFIX = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_GROUP = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """How to reach PostgreSQL: ``dsn`` alone, or the parts (asyncpg's defaults and PG* variables fill the rest)."""

    dsn: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # from password_file
    connect_timeout_s: float = 10.0

    def connect_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``asyncpg.connect``."""
        kw: dict[str, Any] = {"timeout": self.connect_timeout_s}
        if self.dsn is not None:
            kw["dsn"] = self.dsn
        for name in ("host", "port", "database", "user", "password"):
            value = getattr(self, name)
            if value is not None:
                kw[name] = value
        return kw

    def display(self) -> str:
        """Where the database is, without a password (for logs)."""
        if self.dsn is not None:
            parts = urlsplit(self.dsn)
            host = parts.hostname or "local socket"
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.username + '@' if parts.username else ''}{host}{port}{parts.path}"
        host = self.host or "default host"
        return f"{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}/" + (
            self.database or ""
        )


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    cafile: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = "smartshelf-central"
    group: str = "central"
    topic_prefix: str = "smartshelf/v1"
    session_expiry_s: int = 86400
    keepalive_s: int = 30
    receive_maximum: int = 100
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    @property
    def subscription(self) -> str:
        """The shared subscription every consumer of the group takes: one message goes to one of them."""
        return f"$share/{self.group}/{self.topic_prefix}/+/+"


@dataclass(frozen=True, slots=True)
class CentralConfig:
    path: Path
    database: DatabaseConfig
    broker: BrokerConfig
    log_level: str = "info"
    status_interval_s: float = 60.0
    batch_messages: int = 50
    batch_rows: int = 20000
    batch_delay_s: float = 0.05
    rejected_keep_days: int = 30
    rejected_keep_rows: int = 10_000
    rejected_prune_interval_s: float = 600.0


def _table(f: FileChecks, top: dict[str, Any], name: str, known: tuple[str, ...]) -> dict[str, Any]:
    raw = top.get(name, {})
    if not isinstance(raw, dict):
        raise f.fail(name, f"must be a table ([{name}])")
    f.unknown(raw, known, f"{name}.")
    return raw


def _bounded(f: FileChecks, setting: str, value: object, lo: float, hi: float) -> float:
    seconds = f.seconds(setting, value)
    if not lo <= seconds <= hi:
        raise f.fail(setting, f"must be {lo:g} .. {hi:g} seconds, not {seconds:g}")
    return seconds


def read_password_file(f: FileChecks, setting: str, path: Path) -> str:
    """The first line of a private file; one-line errors for a missing, empty or exposed one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise f.fail(setting, f"no such file: {path}") from None
    except OSError as exc:
        raise f.fail(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        problem = exposure(os.fstat(fd))
        if problem is not None:
            raise f.fail(setting, refusal(path, "a password", problem))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(4097)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise f.fail(setting, f"{path} is not UTF-8 text") from None
    lines = text.splitlines()
    password = lines[0] if lines else ""
    if not password or len(data) > 4096:
        raise f.fail(setting, f"{path} must hold the password on its first line (1..4096 bytes)")
    return password


def _port(f: FileChecks, setting: str, value: object) -> int:
    return f.integer(setting, value, 1, 65535, "a port")


_DB_TLS = "the database's password and every store's ledger would otherwise cross the network unverified"


def _local_db(host: str) -> bool:
    """A database on this machine: loopback, or a unix socket directory (asyncpg's default when no host)."""
    return not host or host.startswith("/") or is_loopback(host)


def _database(f: FileChecks, raw: dict[str, Any], base: Path) -> tuple[DatabaseConfig, bool]:
    """The [database] table; the bool says whether central.toml itself holds a password (the dsn's)."""
    timeout = _bounded(f, "database.connect_timeout_s", raw.get("connect_timeout_s", 10), 0.1, 600)
    if "dsn" in raw:
        dsn = f.text("database.dsn", raw["dsn"])
        for part in _DB_PARTS:
            if part in raw:
                raise f.fail(f"database.{part}", "give either database.dsn or its parts, not both")
        try:
            parts = urlsplit(dsn)
            has_password = parts.password is not None
        except ValueError as exc:
            raise f.fail("database.dsn", f"not a PostgreSQL URL: {exc}") from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise f.fail("database.dsn", f"must be a postgresql:// URL, not {parts.scheme or 'no scheme'}://...")
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        host = parts.hostname or query.get("host", "")
        if not _local_db(host) and query.get("sslmode") not in ("verify-ca", "verify-full"):
            raise f.fail("database.dsn", f"to {host}: add sslmode=verify-full (and sslrootcert=...): {_DB_TLS}")
        return DatabaseConfig(dsn=dsn, connect_timeout_s=timeout), has_password
    if not raw:
        raise f.fail("database", "missing: [database] needs dsn, or host, port, database, user, password_file")
    password = None
    if "password_file" in raw:
        path = under(base, f.text("database.password_file", raw["password_file"]))
        password = read_password_file(f, "database.password_file", path)
    if "host" in raw and not _local_db(f.text("database.host", raw["host"])):
        raise f.fail(
            "database.host", f"{raw['host']} is not this machine: give a dsn with sslmode=verify-full: {_DB_TLS}"
        )
    return (
        DatabaseConfig(
            host=f.text("database.host", raw["host"]) if "host" in raw else None,
            port=_port(f, "database.port", raw["port"]) if "port" in raw else None,
            database=f.text("database.database", raw["database"]) if "database" in raw else None,
            user=f.text("database.user", raw["user"]) if "user" in raw else None,
            password=password,
            connect_timeout_s=timeout,
        ),
        False,
    )


def _broker(f: FileChecks, raw: dict[str, Any], base: Path) -> tuple[BrokerConfig, bool]:
    d = BrokerConfig()
    cafile = under(base, f.text("broker.cafile", raw["cafile"])) if "cafile" in raw else None
    if cafile is not None and not cafile.is_file():
        raise f.fail("broker.cafile", f"no such file: {cafile}")
    tls = raw.get("tls", True)
    if not isinstance(tls, bool):
        raise f.fail("broker.tls", f"must be true or false, not {type_name(tls)}")
    host = f.text("broker.host", raw.get("host", d.host))
    if not tls and not is_loopback(host):
        raise f.fail(
            "broker.tls",
            f"false to {host} would send central's password in clear text and let anyone on the way forge hubs'"
            " messages; plain MQTT is allowed only to a loopback broker (127.0.0.1, ::1, localhost)",
        )
    if cafile is not None and not tls:
        raise f.fail("broker.cafile", "is for broker.tls = true")
    username = f.text("broker.username", raw["username"]) if "username" in raw else None
    password = None
    if "password" in raw and "password_file" in raw:
        raise f.fail("broker.password", "give either broker.password or broker.password_file, not both")
    if "password" in raw:
        password = f.text("broker.password", raw["password"])
    elif "password_file" in raw:
        path = under(base, f.text("broker.password_file", raw["password_file"]))
        password = read_password_file(f, "broker.password_file", path)
    if password is not None and username is None:
        raise f.fail("broker.username", "missing (a broker password needs a user name)")
    client_id = f.text("broker.client_id", raw.get("client_id", d.client_id))
    if not _CLIENT_ID.fullmatch(client_id):
        raise f.fail("broker.client_id", f"must be 1..128 of A-Z a-z 0-9 _ . : -, not {client_id!r}")
    group = f.text("broker.group", raw.get("group", d.group))
    if not _GROUP.fullmatch(group):
        raise f.fail("broker.group", f"must be 1..64 of A-Z a-z 0-9 _ . -, not {group!r}")
    prefix = f.text("broker.topic_prefix", raw.get("topic_prefix", d.topic_prefix))
    if not _PREFIX.fullmatch(prefix):
        raise f.fail("broker.topic_prefix", f"must be topic levels like smartshelf/v1 (no wildcards), not {prefix!r}")
    lo = _bounded(f, "broker.reconnect_min_s", raw.get("reconnect_min_s", d.reconnect_min_s), 0.01, 600)
    hi = _bounded(f, "broker.reconnect_max_s", raw.get("reconnect_max_s", d.reconnect_max_s), 0.01, 3600)
    if hi < lo:
        raise f.fail("broker.reconnect_max_s", f"must be at least broker.reconnect_min_s ({lo:g})")
    return (
        BrokerConfig(
            host=host,
            port=_port(f, "broker.port", raw.get("port", 8883 if tls else 1883)),
            tls=tls,
            cafile=cafile,
            username=username,
            password=password,
            client_id=client_id,
            group=group,
            topic_prefix=prefix,
            session_expiry_s=f.integer("broker.session_expiry_s", raw.get("session_expiry_s", 86400), 1, 0xFFFFFFFE),
            keepalive_s=f.integer("broker.keepalive_s", raw.get("keepalive_s", d.keepalive_s), 5, 65535),
            receive_maximum=f.integer("broker.receive_maximum", raw.get("receive_maximum", 100), 1, 65535),
            reconnect_min_s=lo,
            reconnect_max_s=hi,
        ),
        "password" in raw,
    )


def load_central_config(path: Path | str) -> CentralConfig:
    """Read and check ``central.toml``; raises ``ConfigError`` (one line naming the file and the setting)."""
    path = Path(path)
    f = FileChecks(str(path))
    top = read_toml(path, f.display)
    f.unknown(top, _TOP_KEYS, "")
    base = path.parent
    central = _table(f, top, "central", _CENTRAL_KEYS)
    if "database" not in top:
        raise f.fail("database", "missing: [database] with dsn, or host, port, database, user, password_file")
    database, db_secret = _database(f, _table(f, top, "database", _DB_KEYS), base)
    broker, broker_secret = _broker(f, _table(f, top, "broker", _BROKER_KEYS), base)
    if db_secret or broker_secret:
        problem = exposure(path.stat())
        if problem is not None:
            where = "database.dsn" if db_secret else "broker.password"
            raise f.fail(where, refusal(path, "a password", problem))
    level = central.get("log_level", "info")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise f.fail("central.log_level", f"must be one of {', '.join(LOG_LEVELS)}, not {type_name(level)}")
    batch_messages = f.integer("central.batch_messages", central.get("batch_messages", 50), 1, 10_000)
    if batch_messages > broker.receive_maximum:
        raise f.fail(
            "central.batch_messages",
            f"must be at most broker.receive_maximum ({broker.receive_maximum}): the broker sends no more than "
            "that many unacknowledged messages",
        )
    return CentralConfig(
        path=path,
        database=database,
        broker=broker,
        log_level=level.lower(),
        status_interval_s=f.seconds("central.status_interval_s", central.get("status_interval_s", 60)),
        batch_messages=batch_messages,
        batch_rows=f.integer("central.batch_rows", central.get("batch_rows", 20000), 1, 1_000_000),
        batch_delay_s=_bounded(f, "central.batch_delay_s", central.get("batch_delay_s", 0.05), 0.001, 60),
        rejected_keep_days=f.integer("central.rejected_keep_days", central.get("rejected_keep_days", 30), 1, 36500),
        rejected_keep_rows=f.integer(
            "central.rejected_keep_rows", central.get("rejected_keep_rows", 10_000), 1, 100_000_000
        ),
        rejected_prune_interval_s=_bounded(
            f, "central.rejected_prune_interval_s", central.get("rejected_prune_interval_s", 600), 0.01, 86400
        ),
    )
