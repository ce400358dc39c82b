"""A real Mosquitto broker on loopback for tests and benchmarks, configured as the fleet tier expects in production.

``Broker()`` writes its own configuration into a private temporary directory and runs Debian's ``mosquitto -c``
on 127.0.0.1, on free ports of its own (never the system service's 1883/8883):

* a TLS listener (``port``) with a throw-away CA (``ca_file``; ``tls_context()`` trusts it) and, with
  ``plain=True``, a plain listener (``plain_port``) for clients that do not need TLS;
* ``allow_anonymous false`` and a password file (``add_user``; Mosquitto's ``$7$`` PBKDF2-SHA512 hashes);
* an ACL file: every user may write only ``<prefix>/<its user name>/#`` (``pattern write <prefix>/%u/#``: a hub
  is a user named by its hub id) and read its rewinds (``<prefix>/<hub>/rewind``); a user added with
  ``central=True`` may also read ``<prefix>/#`` (shared subscriptions ``$share/<group>/<prefix>/#`` included) and
  write every hub's rewind topic. Pattern lines apply to every user, central ones too;
* persistence in its directory: ``stop()`` (SIGTERM) saves sessions, subscriptions and queued QoS 1 messages and
  ``start()`` restores them on the same ports. ``kill()`` (SIGKILL) loses every change since the last save (made
  every ``autosave_interval`` seconds, 1800 by default, or after that many changes with
  ``autosave_on_changes=True``, or on ``save()``): the restarted broker comes back with the state of that save.

``start()`` returns when the broker says it is running and its ports accept connections; its output is
captured in ``log_path`` and quoted in every error.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tools.servers.process import (
    LOOPBACK,
    ServerError,
    ServerProcess,
    ServerUnavailable,
    free_port,
    give,
    make_workdir,
    remove_workdir,
    run_as,
)
from tools.servers.tls import client_context, write_test_pki

MOSQUITTO_ENV = "SMARTSHELF_MOSQUITTO"  # the broker's executable, when not Debian's /usr/sbin/mosquitto
USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # safe in the password file, the ACL file and a topic level
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes
SALT_BYTES = 12  # the only salt length Mosquitto 2.0 accepts
LOG_TYPES = ("error", "warning", "notice", "information")  # `information` carries the lines start() waits for


def find_mosquitto() -> Path:
    configured = os.environ.get(MOSQUITTO_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise ServerUnavailable(f"{MOSQUITTO_ENV}={configured}: not an executable")
        return Path(configured)
    found = shutil.which("mosquitto")
    for candidate in [found, "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ServerUnavailable(
        "mosquitto is not installed (Debian's package `mosquitto`: `make fleet-servers` installs it)"
    )


@functools.cache
def mosquitto_version(binary: Path) -> str:
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10, check=False).stdout
    found = re.search(r"mosquitto version (\S+)", out)
    return found.group(1) if found else "unknown"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """A password file entry's hash as ``mosquitto_passwd`` writes it: ``$7$<iterations>$<salt>$<PBKDF2-SHA512>``."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True, slots=True)
class BrokerUser:
    name: str
    password: str
    central: bool


class Broker:
    host = LOOPBACK

    def __init__(
        self,
        *,
        plain: bool = False,
        prefix: str = "smartshelf/v1",
        max_queued_messages: int = 1000,
        max_inflight_messages: int = 20,
        autosave_interval: int = 1800,
        autosave_on_changes: bool = False,
        extra_config: str = "",
        extra_acl: str = "",
        users: Mapping[str, str] | None = None,
        central_users: Collection[str] = (),
    ) -> None:
        """``users``: name -> password, those named in ``central_users`` central (as ``add_user`` before the
        start, which saves the reload that ``add_user`` costs on a running broker). ``max_inflight_messages`` is
        also the Receive Maximum the broker announces to MQTT 5 clients (how many unacknowledged QoS 1 publishes
        a client may have in flight). ``extra_config`` / ``extra_acl``: lines appended to ``mosquitto.conf`` /
        the ACL file."""
        self.binary = find_mosquitto()
        self.version = mosquitto_version(self.binary)
        self.prefix = prefix.strip("/")
        self.plain = plain
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.autosave_interval = autosave_interval
        self.autosave_on_changes = autosave_on_changes
        self.extra_config = extra_config
        self.extra_acl = extra_acl
        self.users: dict[str, BrokerUser] = {}
        self.owner = run_as("mosquitto")
        self.workdir = make_workdir("smartshelf-mosquitto-", self.owner)
        self.persistence_file = self.workdir / "mosquitto.db"
        self.config_file = self.workdir / "mosquitto.conf"
        self.password_file = self.workdir / "passwd"
        self.acl_file = self.workdir / "acl"
        self.log_path = self.workdir / "mosquitto.log"
        try:
            self._pki = write_test_pki(self.workdir)
        except BaseException:
            remove_workdir(self.workdir)
            raise
        self.ca_file = self._pki.ca_file
        self.port = 0  # the TLS listener (chosen at the first start, kept by restarts)
        self.plain_port: int | None = None
        argv = [str(self.binary), "-c", str(self.config_file)]
        self._process = ServerProcess("mosquitto", argv, self.log_path, self.owner)
        for name, password in (users or {}).items():
            self.add_user(name, password, central=name in central_users)

    # --- users -------------------------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, *, central: bool = False) -> None:
        """A user name and password; ``central``: may read every hub's topics. On a running broker the files are
        rewritten and reloaded (SIGHUP) before this returns."""
        if not USER_NAME.fullmatch(name):
            raise ValueError(f"MQTT user name {name!r}: use 1..64 of [A-Za-z0-9_.@-]")
        self.users[name] = BrokerUser(name, password, central)
        if self.running:
            self._write_auth_files()
            self.reload()

    def _write_auth_files(self) -> None:
        lines = [f"{u.name}:{password_hash(u.password)}\n" for u in self.users.values()]
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(lines)
        acl = [
            "# written by tools/servers/mosquitto.py",
            "# every user (a hub is the user named by its hub id) writes its own topics only",
            f"pattern write {self.prefix}/%u/#",
            "# ... and reads the rewinds central sends it (hub/fleet/README.md)",
            f"pattern read {self.prefix}/%u/rewind",
        ]
        for user in self.users.values():
            if user.central:
                acl += [f"user {user.name}", f"topic read {self.prefix}/#", f"topic write {self.prefix}/+/rewind"]
        acl.append(self.extra_acl)
        self.acl_file.write_text("\n".join(acl) + "\n")
        give(self.password_file, self.owner)
        give(self.acl_file, self.owner)

    # --- configuration -----------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        lines = [
            "# written by tools/servers/mosquitto.py: a broker of the tests' own, on loopback only",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"autosave_interval {self.autosave_interval}",
            f"autosave_on_changes {'true' if self.autosave_on_changes else 'false'}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            "log_dest stderr",
            *(f"log_type {t}" for t in LOG_TYPES),
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"listener {self.port} {LOOPBACK}",
            f"cafile {self._pki.ca_file}",
            f"certfile {self._pki.cert_file}",
            f"keyfile {self._pki.key_file}",
        ]
        if self.plain_port is not None:
            lines.append(f"listener {self.plain_port} {LOOPBACK}")
        lines.append(self.extra_config)
        self.config_file.write_text("\n".join(lines) + "\n")
        self._write_auth_files()
        give(self.workdir, self.owner)

    # --- life cycle --------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running else None

    def start(self, timeout_s: float = 10) -> Broker:
        """Start (or start again, on the same ports) and wait until it accepts connections."""
        first = self.port == 0
        for attempt in range(3):
            if first:
                self.port = free_port()
                self.plain_port = free_port() if self.plain else None
            self._write_config()
            self._process.spawn()
            try:
                self._wait_running(timeout_s)
                return self
            except ServerError:
                self._process.kill()
                lost_port = "Address already in use" in self._process.log_text()
                if not (first and lost_port and attempt < 2):
                    raise
        raise AssertionError("unreachable")

    def _wait_running(self, timeout_s: float) -> None:
        marker = f"mosquitto version {self.version} running"

        def ready() -> bool:
            # the log line proves that this process (not another one on a port it lost) holds every listener
            return marker in self._process.log_text()

        self._process.wait_until(ready, "running", timeout_s)

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM: the broker disconnects its clients, saves its persistence file and exits."""
        self._process.stop(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: what is not saved yet is lost (see the module's doc)."""
        self._process.kill()

    def restart(self, *, kill: bool = False, timeout_s: float = 10) -> None:
        if kill:
            self.kill()
        else:
            self.stop(timeout_s)
        self.start(timeout_s)

    def reload(self, timeout_s: float = 10) -> None:
        """SIGHUP: reread the configuration, the password file and the ACL file. Returns once reloaded: the broker
        logs the line first and reloads before it serves anything else. Mosquitto blocks signals except around
        its 100 ms ``epoll_wait``: a signal takes effect within 100 ms (so do reload, save and stop)."""
        before = self._process.log_text().count("Reloading config.")
        self._process.signal(signal.SIGHUP)
        self._process.wait_until(
            lambda: self._process.log_text().count("Reloading config.") > before, "reloaded", timeout_s
        )
        # The line comes before the reload, and Mosquitto 2.0.11 clears its reload flag after it: a SIGHUP that
        # arrives meanwhile is lost. Give the reload two of its 100 ms loop turns before anyone signals again.
        time.sleep(0.2)

    def save(self, timeout_s: float = 10) -> None:
        """SIGUSR1: write the persistence file now; returns when the new file is in place."""

        def identity() -> tuple[int, int] | None:
            with contextlib.suppress(FileNotFoundError):
                st = self.persistence_file.stat()
                return st.st_ino, st.st_mtime_ns
            return None

        before = identity()
        self._process.signal(signal.SIGUSR1)
        # the broker writes mosquitto.db.new and renames it over mosquitto.db
        self._process.wait_until(lambda: identity() not in (None, before), "saved", timeout_s)

    def close(self) -> None:
        """Kill it and remove its directory (persistence included: nothing to save it for)."""
        self._process.kill()
        remove_workdir(self.workdir)

    def __enter__(self) -> Broker:
        return self.start() if not self.running else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- for clients -------------------------------------------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext:
        """A client's TLS context trusting this broker's CA (host names checked: use ``host``, 127.0.0.1)."""
        return client_context(self.ca_file)

    def log_text(self) -> str:
        """Everything the broker logged since its last start."""
        return self._process.log_text()

    def wait_for_log(self, text: str, timeout_s: float = 10) -> None:
        """Wait until ``text`` appears in what the broker logged since its last start."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log_text():
            if time.monotonic() > deadline:
                raise self._process.error(f"no {text!r} in the log after {timeout_s:.0f} s")
            time.sleep(0.01)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<Broker mosquitto {self.version} tls {self.host}:{self.port} plain {self.plain_port} {state}>"
