"""An advisory lock file beside the database (``<db>.lock``), so that a restore never swaps the file under a
running hub.

Writers (``LedgerService``) hold it shared; ``smartshelf ledger restore`` needs it exclusive and refuses while any
writer has the database open. Readers and online backups do not take it. The file is 0600: anyone who can open it
can hold the lock (a hub that cannot start, a restore that never runs).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hub.ledger.models import LedgerError
from hub.private_files import open_private


class LedgerBusy(LedgerError):
    """Another process holds the database in a way that conflicts (a running hub during a restore)."""


class DbLock:
    def __init__(self, db_path: Path | str) -> None:
        self.path = Path(str(db_path) + ".lock")
        self._fd: int | None = None

    def acquire(self, *, exclusive: bool) -> DbLock:
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if exclusive:
                raise LedgerBusy(
                    f"{self.path.with_suffix('')} is open by a running hub or another smartshelf command: stop it first"
                ) from None
            raise LedgerBusy(
                f"{self.path.with_suffix('')} is being restored: try again when that has finished"
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DbLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
