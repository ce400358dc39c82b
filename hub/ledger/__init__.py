"""The hub's perpetual inventory ledger (SQLite): one writer service, read-only readers, CSV imports, backups.

Modules: ``models`` (records, reasons, errors), ``schema`` (the ledger's migration steps and the migrator every
subsystem's steps go through), ``service`` (the writer), ``operations`` (its generated business writes), ``upkeep``
(checkpoints and scheduled backups beside it), ``sensor`` (batched node events), ``postings`` (business
transactions, by area), ``reader`` (queries), ``imports`` (CSV), ``backup`` (online backup / restore),
``offsite`` and ``agefile`` (backups encrypted with age and shipped off the Pi), ``cli`` (``smartshelf ledger ...``).
Formats and rules: ``README.md``.
"""

from hub.ledger.backup import (
    BackupInfo,
    BackupPolicy,
    OffsitePolicy,
    RestoreRefused,
    backup_database,
    restore_database,
)
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
from hub.ledger.offsite import encrypted_backup, restore_encrypted
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
    "OffsitePolicy",
    "Reason",
    "RestoreRefused",
    "SensorEvent",
    "SensorGap",
    "Sku",
    "WriteOff",
    "backup_database",
    "encrypted_backup",
    "restore_database",
    "restore_encrypted",
]
