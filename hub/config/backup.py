"""``hub.toml``'s backups: scheduled online backups on the Pi and their encrypted, off-site copies.

```toml
[backup]
dir = "backups"            # scheduled online backups on the Pi ...
interval_s = 3600          # ... this often (default 3600) ...
keep = 24                  # ... keeping the newest N (default 24)
recipients = ["age1..."]   # each backup also encrypted to these age public keys (smartshelf ledger backup-key) ...
offsite_dir = "/mnt/offsite/store-042"  # ... and shipped to this directory on a mounted share (never created)
offsite_keep = 168         # keeping this hub's newest N there (default: keep)
hub_id = "store-042"       # in the shipped files' names and manifests (default: [fleet] hub_id; one is required)
signing_key = "keys/backup-signing.key"  # the hub's key that signs them (default <database>.backup-signing.key)
trusted_signers = ["ed25519:..."]        # restore --config accepts backups signed by these (and by signing_key)
```

``hub.backup_dir``, ``hub.backup_interval_s`` and ``hub.backup_keep`` (the older spelling, in ``[hub]``) still work,
with or without a ``[backup]`` table; a setting given both ways is refused. The off-site settings go together:
``recipients`` and ``offsite_dir`` need each other and a local ``dir`` (the copies are made from the local backups).
They also need this hub's id, ``hub_id`` here or ``[fleet] hub_id``: never the host name, which many Pis share
(``raspberrypi``): two hubs under one name in one off-site directory would prune each other's backups, and a
restore could not tell whose a file is.

Each shipped backup is signed with the hub's Ed25519 key (``signing_key``; made 0600 on first need, never in
``offsite_dir``: it would travel in clear). ``trusted_signers`` are the public keys (``ed25519:...``, printed by
``smartshelf ledger backup-key --signer``) a ``smartshelf ledger restore --config hub.toml`` accepts besides the
hub's own: the keys of the Pi this one replaced, and older keys whose backups are still kept. Both are allowed
without ``dir`` (the CLI's ``backup --encrypt-to`` and ``restore`` use them) and checked at load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.config.checks import FileChecks, type_name, under
from hub.ledger.agefile import recipient_problem
from hub.ledger.backup import HUB_ID_RE, BackupPolicy, OffsitePolicy
from hub.ledger.backup_signing import default_signing_key, signer_problem

BACKUP_KEYS = (
    "dir",
    "interval_s",
    "keep",
    "recipients",
    "offsite_dir",
    "offsite_keep",
    "hub_id",
    "signing_key",
    "trusted_signers",
)
LEGACY_KEYS = ("backup_dir", "backup_interval_s", "backup_keep")  # in [hub]
OFFSITE_KEYS = ("recipients", "offsite_dir", "offsite_keep", "hub_id")


@dataclass(frozen=True, slots=True)
class BackupConfig:
    directory: Path
    interval_s: float = 3600.0
    keep: int = 24
    offsite: OffsitePolicy | None = None  # also encrypted and shipped off the Pi
    trusted_signers: tuple[str, ...] = ()  # for restore --config (hub.ledger.cli); checked here

    def policy(self) -> BackupPolicy:
        return BackupPolicy(self.directory, self.interval_s, self.keep, self.offsite)


def parse_backup(f: FileChecks, hub: Mapping[str, Any], top: Mapping[str, Any], base: Path) -> BackupConfig | None:
    """The ``[backup]`` table and ``[hub]``'s ``backup_*`` settings; None when no backups are configured."""
    raw = top.get("backup", {})
    if not isinstance(raw, dict):
        raise f.fail("backup", "must be a table ([backup])")
    f.unknown(raw, BACKUP_KEYS, "backup.")

    def pick(key: str) -> tuple[str, object] | None:
        legacy = f"backup_{key}"
        if key in raw and legacy in hub:
            raise f.fail(f"backup.{key}", f"is also set as hub.{legacy}: keep one of them")
        if key in raw:
            return f"backup.{key}", raw[key]
        return (f"hub.{legacy}", hub[legacy]) if legacy in hub else None

    trusted = _trusted_signers(f, raw)
    database = under(base, f.text("hub.database", hub.get("database", "smartshelf.db")))
    if "signing_key" in raw:
        signing = under(base, f.text("backup.signing_key", raw["signing_key"]))
    else:
        signing = default_signing_key(database)
    where, interval, keep = pick("dir"), pick("interval_s"), pick("keep")
    if where is None:
        for given in (interval, keep):
            if given is not None:
                needed = "hub.backup_dir" if given[0].startswith("hub.") else "backup.dir"
                raise f.fail(given[0], f"needs {needed} (where to put the backups)")
        for key in OFFSITE_KEYS:
            if key in raw:
                raise f.fail(f"backup.{key}", "needs backup.dir (the off-site copies are made from the local backups)")
        return None
    directory = under(base, f.text(where[0], where[1]))
    interval_s = f.seconds(interval[0], interval[1]) if interval else 3600.0
    keep_n = f.integer(keep[0], keep[1], 1, 100_000) if keep else 24
    offsite = _offsite(f, raw, top, base, directory, keep_n, signing) if any(k in raw for k in OFFSITE_KEYS) else None
    return BackupConfig(directory, interval_s, keep_n, offsite, trusted)


def _trusted_signers(f: FileChecks, raw: Mapping[str, Any]) -> tuple[str, ...]:
    keys = raw.get("trusted_signers", [])
    if not isinstance(keys, list):
        raise f.fail("backup.trusted_signers", f"must be a list of signer keys (ed25519:...), not {type_name(keys)}")
    for n, key in enumerate(keys, start=1):
        if (problem := signer_problem(key)) is not None:
            raise f.fail(f"backup.trusted_signers[{n}]", problem)
    return tuple(keys)


def _offsite(
    f: FileChecks, raw: Mapping[str, Any], top: Mapping[str, Any], base: Path, local: Path, keep: int, signing: Path
) -> OffsitePolicy:
    if "recipients" not in raw:
        raise f.fail(
            "backup.recipients",
            "missing: the age public keys (age1...) to encrypt the off-site copies to (smartshelf ledger backup-key)",
        )
    if "offsite_dir" not in raw:
        raise f.fail("backup.offsite_dir", "missing: where to ship the encrypted backups (a directory on a share)")
    keys = raw["recipients"]
    if not isinstance(keys, list) or not keys:
        raise f.fail("backup.recipients", f"must be a list of age public keys (age1...), not {type_name(keys)}")
    for n, key in enumerate(keys, start=1):
        if (problem := recipient_problem(key)) is not None:
            raise f.fail(f"backup.recipients[{n}]", problem)
    directory = under(base, f.text("backup.offsite_dir", raw["offsite_dir"]))
    if directory.resolve() == local.resolve():
        raise f.fail("backup.offsite_dir", "is the local backup directory: name a directory off the Pi")
    if signing.resolve().is_relative_to(directory.resolve()):
        where = "backup.signing_key" if "signing_key" in raw else "hub.database"
        raise f.fail(where, f"the signing key {signing} is in backup.offsite_dir: it would be shipped in clear")
    offsite_keep = f.integer("backup.offsite_keep", raw.get("offsite_keep", keep), 1, 100_000)
    fleet = top.get("fleet")
    fleet_id = fleet.get("hub_id") if isinstance(fleet, dict) else None
    where, hub_id = "backup.hub_id", raw.get("hub_id")
    if hub_id is None:
        if fleet_id is None:
            raise f.fail(
                "backup.hub_id",
                "missing: off-site backups need this hub's id (e.g. store-042; or set fleet.hub_id), which names"
                " its files on the share (the host name is not used: many Pis are all 'raspberrypi')",
            )
        where, hub_id = "fleet.hub_id", fleet_id
    hub_id = f.text(where, hub_id)
    if not HUB_ID_RE.fullmatch(hub_id):
        raise f.fail(where, f"must be 1..64 of A-Z a-z 0-9 _ -, not {hub_id!r}")
    return OffsitePolicy(directory, tuple(keys), offsite_keep, hub_id, signing_key=signing)
