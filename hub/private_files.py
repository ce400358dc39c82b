"""Files that hold a secret or a hash: owner-only (0600, their directories 0700) whatever the process umask.

They are the ledger (password and API token hashes) with its ``-wal``, ``-shm`` and ``-journal``, its backups and
the copies a restore makes, the session key (``<db>.secret``), node keys (``hub.toml``'s ``[[node]]`` tables, the
nodes files, the emulator's ``nodes.toml`` and node flash) and lock files (whoever can open a lock file can hold
its lock: a hub that cannot start, a restore that never runs).

* Each is created with an explicit mode (``os.open(..., 0o600)`` then ``fchmod``), never by lowering the umask of
  the whole process (threads create files meanwhile), so a umask can neither widen it nor take the owner's own
  access away. On Unix SQLite creates a database's ``-wal``, ``-shm`` and ``-journal`` with the database's mode:
  ``private_database`` makes the database 0600 before SQLite first opens it.
* A directory made to hold such files is 0700, every level of it that did not exist; one that already exists is
  left as it is (it may be a home directory or ``/var/lib``; the files in it are private anyway).
* ``exposure`` says what is wrong with a key file's mode; the hub refuses to start on a key file open to other users
  (``ExposedSecret``), with one line naming the file and the fix. A file of root's that only its group may also
  read, that group being one of this (non-root) process's, is accepted (``root:smartshelf 0640``: the layout
  ``smartshelf hub install-service`` writes; PostgreSQL accepts its TLS key so).
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

log = logging.getLogger(__name__)


class ExposedSecret(PermissionError):
    """A file that holds a secret is open to other users; ``str()`` is one line naming it and the fix."""


def exposure(st: os.stat_result) -> str | None:
    """What is wrong with the mode of a file that holds a secret (``is readable by other users (mode 0644)``),
    or None when only its owner can use it (or root gave this process's group read access: ``_given_by_root``)."""
    loose = st.st_mode & 0o077
    if not loose or (loose == 0o040 and _given_by_root(st)):
        return None
    if loose & 0o044:
        how = "readable"
    elif loose & 0o022:
        how = "writable"
    else:
        how = "open"
    return f"is {how} by other users (mode {stat.S_IMODE(st.st_mode):04o})"


def _given_by_root(st: os.stat_result) -> bool:
    """root's file, readable by a group this process (not root) is in: how a service reads what root keeps."""
    return st.st_uid == 0 and os.geteuid() != 0 and (st.st_gid == os.getegid() or st.st_gid in os.getgroups())


def refusal(path: Path | str, holds: str, problem: str) -> str:
    """The one line for a key file open to other users: the file, what it holds, its mode, the fix."""
    return f"{path}: holds {holds} and {problem}; run chmod 600 {shlex.quote(str(path))}"


def check_private(path: Path | str, holds: str, st: os.stat_result | None = None) -> None:
    """Raise ``ExposedSecret`` when the file at ``path`` (``st``: its stat, e.g. ``os.fstat`` of the descriptor it
    was read from) is open to other users."""
    problem = exposure(st if st is not None else os.stat(path))
    if problem is not None:
        raise ExposedSecret(refusal(path, holds, problem))


class PrivateFileUnreadable(OSError):
    """A private file could not be read as one; ``str()`` is one line naming the file and why."""


def read_private(path: Path, holds: str, what: str, limit: int, *, owner_only: bool = False) -> bytes:
    """Up to ``limit`` bytes of the file at ``path`` that holds ``holds`` (a key: ``what`` names it in messages,
    e.g. "signing key"), checked private (``check_private``) on the descriptor it is read from.
    ``PrivateFileUnreadable`` (one line) when it is missing, unreadable or open to other users; with ``owner_only``,
    also when it belongs to a user other than this process's or root (whoever can write it chose the key)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            check_private(path, holds, st)
            if owner_only and st.st_uid not in (os.geteuid(), 0):
                raise PrivateFileUnreadable(
                    f"{path}: holds {holds} and belongs to another user (uid {st.st_uid}): "
                    f"refused, anyone who could write it chose the key"
                )
            return f.read(limit)
    except ExposedSecret as exc:
        raise PrivateFileUnreadable(str(exc)) from None
    except FileNotFoundError:
        raise PrivateFileUnreadable(f"{path}: no such {what} file") from None
    except PrivateFileUnreadable:
        raise
    except OSError as exc:
        raise PrivateFileUnreadable(f"{path}: cannot read the {what} file: {exc.strerror or exc}") from None


def check_key_files(paths: Iterable[Path | str], holds: str = "node keys") -> None:
    """``check_private`` for each file: the hub's start (and a reload) on ``HubConfig.key_files``."""
    for path in paths:
        check_private(path, holds)


def make_private_dirs(path: Path | str) -> None:
    """``mkdir -p`` with every directory it creates 0700 (whatever the umask); existing ones are left alone."""
    path = Path(path)
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_DIR)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile by someone else: theirs to set
        os.chmod(d, PRIVATE_DIR)


def open_private(path: Path | str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    """``os.open`` of a file that holds a secret: created 0600 (whatever the umask), never through a symlink. A file
    of ours that was already there (without ``O_EXCL``: a lock file, a stale temporary file) is made 0600 too."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != PRIVATE_FILE and st.st_uid == os.geteuid():
            os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_private(path: Path | str) -> bool:
    """Create an empty file 0600 if there is none (False when there already was one, left as it is)."""
    try:
        fd = open_private(path)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def tighten(path: Path | str, holds: str) -> bool:
    """Make an existing file that holds secrets owner-only (0600) if it is open to other users, with a log line;
    True when it was. ``ExposedSecret`` when that is not possible (the file is another user's)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    problem = exposure(st) if stat.S_ISREG(st.st_mode) else None
    if problem is None:
        return False
    try:
        os.chmod(path, PRIVATE_FILE)
    except OSError as err:
        raise ExposedSecret(refusal(path, holds, f"{problem}, which cannot be changed ({err.strerror})")) from None
    log.warning("%s: holds %s and %s: made it 0600 (owner only)", path, holds, problem)
    return True


def private_database(path: Path | str, holds: str = "password and API token hashes") -> list[Path]:
    """Before SQLite opens (or creates) the database at ``path``: a new one is created empty with mode 0600, so
    that the ``-wal``, ``-shm`` and ``-journal`` SQLite creates beside it are 0600 too; an existing one (and those
    files) open to other users is made 0600, with a log line. The files made 0600. ``:memory:`` and ``file:``
    URIs are left to SQLite."""
    text = str(path)
    if text in ("", ":memory:") or text.startswith("file:"):
        return []
    try:
        if create_private(text):
            return []
    except OSError:
        return []  # no such directory, not ours to write: SQLite reports it as it always has
    return [Path(p) for p in (text, *(text + s for s in SQLITE_COMPANIONS)) if tighten(p, holds)]
