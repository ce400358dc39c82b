"""What every ``smartshelf ledger ...`` command shares (``hub.ledger.cli``, ``hub.ledger.backup_cli``): the default
database, the actor, exit codes, the error line."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

DEFAULT_DB = "smartshelf.db"
DB_ENV = "SMARTSHELF_DB"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def default_db() -> Path:
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers)
        user = "unknown"
    return f"cli:{user}"


def err(message: str) -> None:
    print(f"smartshelf ledger: {message}", file=sys.stderr)
