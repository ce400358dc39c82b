"""What the test servers share: finding a free loopback port, the unprivileged user a server runs as when we are
root, its private working directory, and ``ServerProcess`` (one server process with its log captured to a file).

A server is started in a session of its own (so ``kill()`` SIGKILLs it with every child, as a crash would) and,
on Linux, with ``PR_SET_PDEATHSIG``: it dies with the thread that started it, so a test run that is itself killed
leaves no server behind. Start servers from a thread that outlives them (the main thread, in tests).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
ALLOW_NO_FLEET = "SMARTSHELF_ALLOW_NO_FLEET"  # set to 1: a missing server skips the fleet tests instead of failing
RUN_AS_ENV = "SMARTSHELF_FLEET_USER"  # when root: the user the servers run as (default: the package's, else nobody)
TMPDIR_ENV = "SMARTSHELF_FLEET_TMPDIR"  # where their working directories go (default: the system's temp dir)
_PR_SET_PDEATHSIG = 1


class ServerUnavailable(Exception):
    """The server's programs are not installed (``make bootstrap`` installs them)."""


class ServerError(Exception):
    """A server did not start, stop or answer; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port free on the loopback address right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run_as(package_user: str) -> pwd.struct_passwd | None:
    """The user a server runs as: None (ourselves) unless we are root, since PostgreSQL refuses root and a broker
    should not keep it; then ``$SMARTSHELF_FLEET_USER``, else the Debian package's service user, else nobody."""
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get(RUN_AS_ENV)
    for name in [wanted] if wanted else [package_user, "nobody"]:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerUnavailable(f"no user {wanted or package_user + ' or nobody'} to run the server as (we are root)")


OWNER_FILE = ".created-by-pid"


def make_workdir(prefix: str, owner: pwd.struct_passwd | None, *, sweep: Callable[[Path], None] | None = None) -> Path:
    """A fresh private directory (0700) for one server, owned by the user it runs as. Directories of the same
    kind left by a process that no longer exists (a test run killed with SIGKILL: its servers died with it) are
    removed first, after ``sweep(directory)``."""
    base = Path(os.environ.get(TMPDIR_ENV) or tempfile.gettempdir())
    for stale in base.glob(prefix + "*"):
        with contextlib.suppress(OSError, ValueError):
            pid = int((stale / OWNER_FILE).read_text())
            if not _alive(pid):
                if sweep is not None:
                    sweep(stale)
                remove_workdir(stale)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
    give(path, owner)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def give(path: Path, owner: pwd.struct_passwd | None) -> None:
    """Hand a file or a whole tree to the server's user (nothing to do when it runs as us)."""
    if owner is None:
        return
    os.chown(path, owner.pw_uid, owner.pw_gid)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), owner.pw_uid, owner.pw_gid, follow_symlinks=False)


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    # runs in the child after fork (and after the uid change, which would clear it), before exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ServerProcess:
    """One server process: its output appended to ``log_path``; signals go to its whole process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        owner: pwd.struct_passwd | None,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.owner = owner
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # where this start's output begins in the log

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        if self.running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # one prctl call in the child
                user=self.owner.pw_uid if self.owner else None,
                group=self.owner.pw_gid if self.owner else None,
                extra_groups=[] if self.owner else None,  # not root's supplementary groups
            )

    def log_text(self, *, since_start: bool = True) -> str:
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        tail = self.log_text(since_start=False).splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in tail)

    def error(self, what: str) -> ServerError:
        return ServerError(f"{self.name}: {what}; log {self.log_path}:\n{self.log_tail()}")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Poll ``ready`` until true; raise (with the log) if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while not ready():
            if not self.running:
                code = self.proc.returncode if self.proc else None
                raise self.error(f"exited (status {code}) before {what}")
            if time.monotonic() > deadline:
                raise self.error(f"not {what} after {timeout_s:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            self.proc.send_signal(sig)

    def stop(self, sig: int, timeout_s: float) -> int | None:
        """Send ``sig`` and wait for the exit; SIGKILL the group if it takes longer than ``timeout_s``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise self.error(f"did not stop within {timeout_s:.0f} s of signal {sig}; killed") from None
        self._reap_group()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the server and every process of its group, as a crash or a power cut would end them."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reap_group()

    def _reap_group(self) -> None:
        # children of the server (PostgreSQL's backends) are not ours to wait for: wait until the group is gone
        assert self.proc is not None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
