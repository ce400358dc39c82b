"""A real PostgreSQL server on loopback for tests and benchmarks: Debian's binaries, a throw-away cluster.

``Postgres()`` runs ``initdb`` into a private temporary directory (once; about a second) and the server on
127.0.0.1 with a free port, its unix socket in that directory (never the system cluster's 5432 or socket). As root
it runs both as the ``postgres`` system user (else ``nobody``; ``$SMARTSHELF_FLEET_USER`` chooses): PostgreSQL
refuses to run as root. Authentication is SCRAM-SHA-256 everywhere, over TCP and the socket alike: the superuser
``postgres`` (for ``psql``, ``create_database``) and a login role (``role``, default ``smartshelf``) that owns
the databases made by ``create_database(name)``; ``dsn(name)`` is that role's URL for asyncpg.

By default the cluster trades crash safety for speed (``fsync=off``, ``full_page_writes=off``): a killed server
loses nothing the kernel has (commits are still written before they return), only a machine crash would.
``durable=True`` keeps PostgreSQL's defaults (benchmarks that compare with production). ``settings`` adds or
overrides server settings (``-c name=value``).

``stop()`` is a fast shutdown (SIGINT: open sessions are disconnected; SIGTERM would wait for them), ``kill()``
SIGKILLs the postmaster and every backend at once (a crash), after which ``start()`` runs crash recovery.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
from glob import glob
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from tools.servers.process import (
    LOOPBACK,
    ServerError,
    ServerProcess,
    ServerUnavailable,
    free_port,
    give,
    make_workdir,
    port_accepts,
    remove_workdir,
    run_as,
)

PG_BINDIR_ENV = "SMARTSHELF_PG_BINDIR"  # the directory of initdb / postgres / psql, when not Debian's
DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SUPERUSER = "postgres"
FAST = {"fsync": "off", "full_page_writes": "off"}
READY = "database system is ready to accept connections"


def _version_key(bindir: str) -> tuple[int, ...]:
    found = re.search(r"/postgresql/([\d.]+)/", bindir)
    return tuple(int(p) for p in found.group(1).split(".")) if found else (0,)


def find_pg_bindir() -> Path:
    """The server's binaries: ``$SMARTSHELF_PG_BINDIR``, else Debian's newest ``/usr/lib/postgresql/<v>/bin``,
    else wherever ``postgres`` is on PATH."""
    configured = os.environ.get(PG_BINDIR_ENV)
    candidates = [configured] if configured else []
    if not configured:
        debian = [os.path.dirname(p) for p in glob("/usr/lib/postgresql/*/bin/postgres")]
        candidates += sorted(debian, key=_version_key, reverse=True)
        on_path = shutil.which("postgres")
        if on_path:
            candidates.append(os.path.dirname(on_path))
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("initdb", "postgres")):
            return Path(bindir)
    where = f"{PG_BINDIR_ENV}={configured}" if configured else "/usr/lib/postgresql/*/bin or PATH"
    raise ServerUnavailable(
        f"PostgreSQL's initdb and postgres not found in {where} "
        "(Debian's package `postgresql`: `make fleet-servers` installs it)"
    )


def _psql_path(bindir: Path) -> Path:
    local = bindir / "psql"
    if os.access(local, os.X_OK):
        return local
    found = shutil.which("psql")
    if found is None:
        raise ServerUnavailable(f"psql not found in {bindir} or on PATH (Debian's postgresql-client)")
    return Path(found)


def _remove_leftover_shared_memory(workdir: Path) -> None:
    # A killed postmaster leaves its small System V segment (its id is on line 7 of postmaster.pid) until the next
    # start on the same data directory; there will be none, so remove it ourselves.
    pidfile = workdir / "data" / "postmaster.pid"
    with contextlib.suppress(OSError, IndexError, ValueError, subprocess.SubprocessError):
        shmid = int(pidfile.read_text().splitlines()[6].split()[1])
        subprocess.run(["ipcrm", "-m", str(shmid)], capture_output=True, timeout=10, check=False)


@functools.cache
def postgres_version(bindir: Path) -> str:
    out = subprocess.run([bindir / "postgres", "--version"], capture_output=True, text=True, timeout=10, check=False)
    found = re.search(r"\(PostgreSQL\) (\S+)", out.stdout)
    return found.group(1) if found else "unknown"


class Postgres:
    host = LOOPBACK
    superuser = SUPERUSER

    def __init__(
        self,
        *,
        role: str = "smartshelf",
        password: str | None = None,
        durable: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        if not DB_NAME.fullmatch(role):
            raise ValueError(f"role {role!r}: use [a-z_][a-z0-9_]*")
        self.bindir = find_pg_bindir()
        self.psql_binary = _psql_path(self.bindir)
        self.version = postgres_version(self.bindir)
        self.role = role
        self.password = password or secrets.token_urlsafe(18)
        self.superuser_password = secrets.token_urlsafe(18)
        self.settings = {**({} if durable else FAST), **(settings or {})}
        self.owner = run_as("postgres")
        self.workdir = make_workdir("smartshelf-postgres-", self.owner, sweep=_remove_leftover_shared_memory)
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir  # the unix socket: <workdir>/.s.PGSQL.<port>
        self.log_path = self.workdir / "postgres.log"
        self.port = 0  # chosen at the first start, kept by restarts
        self._process: ServerProcess | None = None
        self._role_created = False

    # --- life cycle --------------------------------------------------------------------------------------------

    def initdb(self) -> None:
        """Create the cluster (the first ``start()`` does it when needed)."""
        pwfile = self.workdir / "superuser-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.superuser_password + "\n")
        give(pwfile, self.owner)
        argv = [
            str(self.bindir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throw-away cluster: no need to wait for the disk
            "--no-instructions",
        ]
        initdb = ServerProcess("initdb", argv, self.workdir / "initdb.log", self.owner, cwd=self.workdir)
        initdb.spawn()
        assert initdb.proc is not None
        try:
            code = initdb.proc.wait(120)
        finally:
            initdb.kill()
            pwfile.unlink(missing_ok=True)
        if code != 0:
            raise initdb.error(f"initdb failed (status {code})")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self.running else None

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "logging_collector": "off",
            **self.settings,
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def start(self, timeout_s: float = 60) -> Postgres:
        """Start (initdb first if needed; on the same port when restarting) and wait until it accepts
        connections; the first start also creates the login role."""
        if not (self.data_dir / "PG_VERSION").exists():
            self.initdb()
        first = self.port == 0
        for attempt in range(3):
            if first:
                self.port = free_port()
            self._process = ServerProcess("postgres", self._argv(), self.log_path, self.owner, cwd=self.workdir)
            self._process.spawn()
            try:
                self._wait_ready(timeout_s)
                break
            except ServerError:
                self._process.kill()
                lost_port = "could not create any TCP/IP sockets" in self._process.log_text()
                if not (first and lost_port and attempt < 2):
                    raise
        if not self._role_created:
            pw = self.password.replace("'", "''")
            self.psql(f"CREATE ROLE {self.role} LOGIN CREATEDB PASSWORD '{pw}'")
            self._role_created = True
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        process = self._process
        assert process is not None
        socket_file = self.socket_dir / f".s.PGSQL.{self.port}"

        def ready() -> bool:
            # our log and our socket file: a server of someone else's on a port we lost cannot pass for ours
            return READY in process.log_text() and socket_file.exists() and port_accepts(self.port)

        process.wait_until(ready, "ready", timeout_s)

    def stop(self, timeout_s: float = 30) -> None:
        """Fast shutdown (SIGINT): sessions are disconnected, a checkpoint is written."""
        if self._process is not None:
            self._process.stop(signal.SIGINT, timeout_s)

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once; the next start recovers from the WAL."""
        if self._process is not None:
            self._process.kill()

    def restart(self, *, kill: bool = False, timeout_s: float = 60) -> None:
        if kill:
            self.kill()
        else:
            self.stop(timeout_s)
        self.start(timeout_s)

    def close(self) -> None:
        """Stop it and remove the cluster."""
        with contextlib.suppress(ServerError):
            self.stop(timeout_s=10)
        if self._process is not None:
            self._process.kill()
        _remove_leftover_shared_memory(self.workdir)
        remove_workdir(self.workdir)

    def __enter__(self) -> Postgres:
        return self.start() if not self.running else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- databases ---------------------------------------------------------------------------------------------

    def psql(self, sql: str, db: str = "postgres", timeout_s: float = 60) -> str:
        """Run SQL as the superuser over the unix socket; returns psql's unaligned, tuples-only output."""
        env = {**os.environ, "PGPASSWORD": self.superuser_password, "PGCONNECT_TIMEOUT": "10"}
        env.pop("PGSERVICE", None)
        argv = [str(self.psql_binary), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", db, "-c", sql]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise ServerError(f"psql on {self!r} failed (status {done.returncode}): {sql}\n{done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str) -> str:
        """A new, empty database owned by ``role``; returns its DSN."""
        if not DB_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use [a-z_][a-z0-9_]*, at most 63")
        self.psql(f"CREATE DATABASE {name} OWNER {self.role}")
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop it, disconnecting whoever is still connected."""
        if not DB_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use [a-z_][a-z0-9_]*, at most 63")
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def databases(self) -> list[str]:
        return self.psql("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1").split()

    def dsn(self, db: str = "postgres", *, superuser: bool = False) -> str:
        """``postgresql://`` URL (TCP, loopback) for asyncpg / psql: the login role's, or the superuser's."""
        user, pw = (SUPERUSER, self.superuser_password) if superuser else (self.role, self.password)
        return f"postgresql://{quote(user)}:{quote(pw, safe='')}@{self.host}:{self.port}/{quote(db)}"

    def log_text(self) -> str:
        """What the server logged since its last start."""
        return self._process.log_text() if self._process is not None else ""

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<Postgres {self.version} {self.host}:{self.port} {state}>"
