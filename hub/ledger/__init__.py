"""The hub's perpetual inventory ledger (SQLite): one writer service, read-only readers, CSV imports, backups.

Modules: ``models`` (records, reasons, errors), ``schema`` (migrations), ``service`` (the writer), ``sensor``
(batched node events), ``postings`` (business transactions), ``reader`` (queries), ``imports`` (CSV),
``backup`` (online backup / restore), ``cli`` (``smartshelf ledger ...``). Formats and rules: ``README.md``.
"""

from hub.ledger.backup import BackupInfo, BackupPolicy, RestoreRefused, backup_database, restore_database
from hub.ledger.imports import ImportReport
from hub.ledger.models import (
    Alert,
    AlertKind,
    AlertStatus,
    Applied,
    ApplyResult,
    CountResult,
    Duplicate,
    LaneReading,
    LedgerError,
    Movement,
    NodeUpdate,
    Reason,
    SensorEvent,
    SensorGap,
    Sku,
)
from hub.ledger.postings import AlertOpened, WriteOff
from hub.ledger.reader import LedgerReader
from hub.ledger.service import LedgerService

__all__ = [
    "Alert",
    "AlertKind",
    "AlertOpened",
    "AlertStatus",
    "Applied",
    "ApplyResult",
    "BackupInfo",
    "BackupPolicy",
    "CountResult",
    "Duplicate",
    "ImportReport",
    "LaneReading",
    "LedgerError",
    "LedgerReader",
    "LedgerService",
    "Movement",
    "NodeUpdate",
    "Reason",
    "RestoreRefused",
    "SensorEvent",
    "SensorGap",
    "Sku",
    "WriteOff",
    "backup_database",
    "restore_database",
]
