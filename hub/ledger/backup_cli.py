"""``smartshelf ledger backup``, ``backup-key`` and ``restore`` (registered by ``hub.ledger.cli``).

* ``backup DEST``: an online backup; with ``--encrypt-to`` / ``--recipients-file`` encrypted with age and signed
  with this hub's backup signing key (``--signing-key``, else ``--config``'s ``[backup] signing_key``, else
  ``<db>.backup-signing.key``; made on first need).
* ``backup-key IDENTITY_FILE``: a new age identity (``--show``: its public key); ``backup-key --signer``: this hub's
  signing key's public key (made if there is none), to record off the Pi with the identity.
* ``restore SRC``: a plain backup, or with ``--identity`` an encrypted one, which must be signed by a trusted key:
  ``--signer KEY|FILE`` (repeatable), ``--config``'s ``[backup] trusted_signers``, and this hub's own signing key
  when its file is there (and private). ``--insecure-accept-unsigned`` lets a backup without signature through
  (made before backups were signed), loudly. ``--other-hub`` as before: a backup of another hub is refused without it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.ledger import origin
from hub.ledger.agefile import generate_identity, is_age_file, public_keys, read_identities, recipient_problem
from hub.ledger.backup import HUB_ID_RE, RestoreRefused, backup_database, restore_database
from hub.ledger.backup_signing import (
    SIGNER_PREFIX,
    SignerRefused,
    Trusted,
    default_signing_key,
    fingerprint,
    read_signers_file,
    read_signing_key,
    signer_problem,
    signing_key,
)
from hub.ledger.cli_common import (
    EXIT_OK,
    EXIT_REFUSED,
    Refused,
    default_actor,
    directory_problem,
    err,
    existing_ledger,
    hub_database,
    ledger_db,
    read_hub_toml,
)
from hub.ledger.dblock import LedgerBusy
from hub.ledger.offsite import OtherHubsBackup, encrypted_backup, restore_encrypted
from hub.ledger.service import LedgerService

INSECURE = "--insecure-accept-unsigned"


@dataclass(frozen=True)
class ThisHub:
    hub_id: str | None
    signing_key: Path  # this hub's backup signing key file
    trusted_signers: tuple[str, ...]  # --config's [backup] trusted_signers
    config: Path | None


def this_hub(args: argparse.Namespace) -> ThisHub:
    """This hub's id (``--hub-id``, else ``--config hub.toml``'s ``[backup] hub_id``, else its ``[fleet] hub_id``),
    signing key (``--signing-key``, else ``--config``'s ``[backup] signing_key``, else beside the database: the
    config's, else ``--db``) and trusted signers; ``--config`` also gives ``--db`` (the hub's database) when it is
    not given. ``Refused`` for a bad setting."""
    hub_id, where = getattr(args, "hub_id", None), "--hub-id"
    signing: Path | None = getattr(args, "signing_key", None)
    trusted: tuple[str, ...] = ()
    if args.config is not None:
        top = read_hub_toml(args.config)
        tables = {name: t if isinstance(t := top.get(name), dict) else {} for name in ("backup", "fleet")}
        hub_db = hub_database(args.config, top)
        for table in ("backup", "fleet") if hub_id is None else ():
            if "hub_id" in tables[table]:
                hub_id, where = tables[table]["hub_id"], f"{args.config}: {table}.hub_id"
                break
        backup = tables["backup"]
        if signing is None and "signing_key" in backup:
            if not isinstance(backup["signing_key"], str) or not backup["signing_key"].strip():
                raise Refused(f"{args.config}: backup.signing_key: must be a file name")
            signing = args.config.parent / Path(os.path.expanduser(backup["signing_key"]))
        signing = signing or default_signing_key(hub_db)  # the hub's, even when --db names another file
        keys = backup.get("trusted_signers", [])
        if not isinstance(keys, list):
            raise Refused(f"{args.config}: backup.trusted_signers: must be a list of signer keys (ed25519:...)")
        for n, key in enumerate(keys, start=1):
            if (problem := signer_problem(key)) is not None:
                raise Refused(f"{args.config}: backup.trusted_signers[{n}]: {problem}")
        trusted = tuple(keys)
    ledger_db(args)  # --db, else the config's, else the default
    if hub_id is not None and not (isinstance(hub_id, str) and HUB_ID_RE.fullmatch(hub_id)):
        raise Refused(f"{where}: must be 1..64 of A-Z a-z 0-9 _ -, not {hub_id!r}")
    return ThisHub(hub_id, signing or default_signing_key(args.db), trusted, args.config)


def _backup(args: argparse.Namespace) -> int:
    raw, args.dest = args.dest, Path(args.dest)
    if raw.endswith(("/", os.sep)) and not args.dest.is_dir():  # Path() drops the slash: "into a directory" meant
        err(f"{raw}: no such directory")
        return EXIT_REFUSED
    if not args.dest.is_dir() and (problem := directory_problem(args.dest)) is not None:
        err(problem)
        return EXIT_REFUSED
    hub = this_hub(args)
    existing_ledger(args)
    keys = list(args.encrypt_to or [])
    if args.recipients_file is not None:
        lines = args.recipients_file.read_text().splitlines()
        keys += [k.strip() for k in lines if k.strip() and not k.strip().startswith("#")]
        if not keys:
            err(f"{args.recipients_file}: holds no age public key (age1...)")
            return EXIT_REFUSED
    if not keys:
        info = backup_database(args.db, args.dest)
        print(f"backup written: {info.path} ({info.movements} movements, schema {info.schema_version})")
        return EXIT_OK
    for key in keys:
        if (problem := recipient_problem(key)) is not None:
            err(f"--encrypt-to: {problem}")
            return EXIT_REFUSED
    if hub.hub_id is None:
        err("an encrypted backup names the hub it belongs to: give --hub-id ID or --config hub.toml")
        return EXIT_REFUSED
    shipped = encrypted_backup(args.db, args.dest, keys, hub_id=hub.hub_id, signing_key=hub.signing_key)
    m = shipped.manifest
    print(
        f"encrypted backup written: {shipped.path} ({m.movements} movements, schema {m.schema_version}, "
        f"{len(keys)} recipient{'s' if len(keys) != 1 else ''}, sha256 of the ledger {m.sha256}, "
        f"signed by {fingerprint(shipped.signer)})"
    )
    return EXIT_OK


def _backup_key(args: argparse.Namespace) -> int:
    if args.identity is None and not args.signer:
        err("give IDENTITY_FILE (a new age identity; with --show, its public key) or --signer (this hub's signing key)")
        return EXIT_REFUSED
    if args.identity is not None and args.show:
        for public_key in public_keys(read_identities(args.identity)):
            print(public_key)
    elif args.identity is not None:
        try:
            public = generate_identity(args.identity)
        except FileExistsError:
            err(f"{args.identity} exists and was not replaced (its public key: backup-key --show {args.identity})")
            return EXIT_REFUSED
        print(public)
        print(
            f"{args.identity}: a new age identity (0600). Put the public key above in hub.toml's [backup] "
            "recipients; keep the identity file OFF the Pi (a safe, a password manager): it is the only way to "
            "restore the off-site backups, and whoever has it can read them. Record the hub's signing key with it "
            "(on the hub: smartshelf ledger backup-key --signer --config hub.toml): a restore checks it.",
            file=sys.stderr,
        )
    if args.signer:
        path = this_hub(args).signing_key
        key, made = signing_key(path)
        print(signer := key.public)
        print(
            f"{path}: {'made now: ' if made else ''}this hub's backup signing key (0600; stays on the Pi), fingerprint"
            f" {fingerprint(signer)}. "
            "Record the public key above OFF the Pi, with the age identity: restoring this hub's off-site backups "
            "needs it (restore --signer KEY, or [backup] trusted_signers on the Pi that replaces this one).",
            file=sys.stderr,
        )
    return EXIT_OK


def _trusted(args: argparse.Namespace, hub: ThisHub) -> Trusted:
    """The signer keys this restore accepts: ``--signer``, ``--config``'s, this hub's own (when its file is private)."""
    trusted = Trusted()
    for given in args.signer or []:
        try:
            trusted.add([given] if given.startswith(SIGNER_PREFIX) else read_signers_file(given), "--signer")
        except SignerRefused as exc:
            raise Refused(f"--signer: {exc}") from None
    trusted.add(hub.trusted_signers, f"{hub.config}: backup.trusted_signers")
    if os.path.lexists(hub.signing_key):
        try:
            trusted.add([read_signing_key(hub.signing_key).public], f"this hub's key {hub.signing_key}")
        except SignerRefused as exc:
            err(f"WARNING: this hub's own signing key is not trusted: {exc}")
    return trusted


def _restore(args: argparse.Namespace) -> int:
    hub = this_hub(args)
    if (problem := directory_problem(args.db)) is not None:  # a restore may make the ledger, not its directory
        err(problem)
        return EXIT_REFUSED
    hub_id = hub.hub_id
    encrypted: dict[str, Any] = {}
    previous = Path(f"{args.db}.bak") if Path(args.db).exists() else None  # a restore into a new path replaces none
    try:
        if args.identity is not None:
            check = None if args.other_hub else hub_id
            done = restore_encrypted(
                args.src,
                args.db,
                identity=args.identity,
                migrations=args.migrations,
                signers=_trusted(args, hub),
                allow_unsigned=args.insecure_accept_unsigned,
                hub_id=check,
            )
            info, m, verdict = done.info, done.manifest, done.verdict
            print(m.describe())
            print(verdict.describe())
            if verdict.signer is None:
                err(f"WARNING: an unsigned backup restored ({INSECURE}): nothing proves this hub made it")
            if hub_id is None:
                err(f"NOTE: a backup of hub {m.hub!r}, not checked against this hub (--config hub.toml or --hub-id)")
            elif m.hub != hub_id:
                err(f"WARNING: a backup of hub {m.hub!r} restored on hub {hub_id!r} (--other-hub)")
            encrypted = {
                "encrypted": {"hub": m.hub, "taken": m.taken, "sha256": m.sha256, "this_hub": hub_id} | verdict.record()
            }
        elif args.src.is_file() and is_age_file(args.src):
            raise RestoreRefused(f"{args.src} is encrypted (age): give the key with --identity FILE")
        elif args.signer or args.insecure_accept_unsigned:
            raise RestoreRefused(f"--signer and {INSECURE} are for encrypted backups (with --identity)")
        elif args.src.name.endswith(".age"):
            raise RestoreRefused(
                f"{args.src} is named as an encrypted backup but is not encrypted: a hub's off-site backups are always"
                " encrypted and signed, so no hub's schedule made it"
            )
        else:
            info = restore_database(args.src, args.db, migrations=args.migrations)
    except OtherHubsBackup as exc:
        print(exc.manifest.describe())
        err(f"restore refused: {exc}")
        return EXIT_REFUSED
    except (RestoreRefused, LedgerBusy) as exc:
        err(f"restore refused: {exc}")
        return EXIT_REFUSED
    details = {"source": str(args.src), "movements": info.movements, "previous_kept_as": previous and str(previous),
               "incarnation": info.incarnation, **encrypted}  # fmt: skip

    # the restore point: each node's mark as the backup held it, read from the copy under the restore's lock (a hub
    # started since may already have moved the marks in the ledger)
    marks = {str(node): mark for node, mark in (info.node_marks or {}).items()}

    async def record() -> None:  # in the restored ledger's own trail: it was replaced by a backup, by whom, from where
        async with LedgerService(args.db, migrations=args.migrations, origin=origin.cli()) as ledger:
            await ledger.record_audit(args.actor, "restore", details | {"node_marks": marks})

    asyncio.run(record())
    print(
        f"restored {args.src} -> {info.path} ({info.movements} movements, ledger incarnation {info.incarnation})"
        + (f"; the previous file is {previous}" if previous is not None else "")
    )
    return EXIT_OK


CONFIG_HELP = (  # --db and --config are every ledger command's (hub.ledger.cli_common.add_db_options)
    "this hub's hub.toml: its id ([backup] hub_id, else [fleet] hub_id), its backup signing key and trusted"
    " signers ([backup] signing_key, trusted_signers) and, without --db, its database"
)


def _hub_args(p: argparse.ArgumentParser, what: str | None) -> None:
    if what is not None:
        p.add_argument("--hub-id", default=None, help=f"this hub's id: {what}")


def _signing_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="this hub's backup signing key (default: --config's [backup] signing_key, else <db>.backup-signing.key;"
        " made 0600 if there is none)",
    )


def add_backup_commands(cmd: Any) -> None:
    """``backup``, ``backup-key`` and ``restore``; ``cmd(name, help, func, config_help=...)`` makes a subcommand's
    parser (with ``--db`` and ``--config``)."""
    p = cmd(
        "backup",
        "online backup (safe while the hub runs) to DEST (a file, or a directory)",
        _backup,
        config_help=CONFIG_HELP,
    )
    p.add_argument("dest", metavar="DEST")  # a str: a trailing slash (a directory meant) must survive parsing
    p.add_argument(
        "--encrypt-to",
        action="append",
        metavar="AGE_KEY",
        help="encrypt the backup to this age public key (age1..., repeatable), signed with this hub's signing key:"
        " DEST gets only the encrypted file, smartshelf-<hub id>-<time>.db.age when DEST is a directory",
    )
    p.add_argument("--recipients-file", type=Path, help="encrypt to the age public keys in this file, one a line")
    _hub_args(p, "names the encrypted file and goes into its manifest (needed to encrypt)")
    _signing_key_arg(p)

    p = cmd(
        "backup-key",
        "create an age identity for encrypted backups, or show this hub's signing key",
        _backup_key,
        config_help=CONFIG_HELP,
    )
    p.add_argument(
        "identity", type=Path, nargs="?", metavar="IDENTITY_FILE", help="written 0600; an existing file is kept"
    )
    p.add_argument("--show", action="store_true", help="print the public key(s) of an existing identity file")
    p.add_argument(
        "--signer",
        action="store_true",
        help="print this hub's backup signing public key (ed25519:...; made if there is none) to record off the Pi",
    )
    _hub_args(p, None)
    _signing_key_arg(p)

    p = cmd(
        "restore",
        "replace the ledger with backup SRC after checking it (stop the hub first)",
        _restore,
        config_help=CONFIG_HELP,
    )
    p.add_argument("src", type=Path, metavar="SRC")
    p.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="SRC is an encrypted backup (.db.age): decrypt it with the age identity in FILE (0600)",
    )
    p.add_argument(
        "--signer",
        action="append",
        metavar="KEY_OR_FILE",
        help="trust backups signed by this key (ed25519:..., as backup-key --signer printed it) or by the keys in"
        " this file, one a line (repeatable); also trusted: --config's [backup] trusted_signers and this hub's own key",
    )
    p.add_argument(
        INSECURE,
        action="store_true",
        help="EMERGENCY ONLY: restore an encrypted backup that carries no signature (made before backups were"
        " signed): nothing then proves this hub made it. A bad or untrusted signature is still refused",
    )
    _hub_args(p, "a backup of another hub is refused (needs --identity; default: not checked, only shown)")
    p.add_argument(
        "--other-hub",
        action="store_true",
        help="restore a backup whose manifest names another hub all the same (that store's ledger, as this hub's)",
    )
    p.add_argument("--actor", default=default_actor(), help="who is restoring (default: cli:<login>)")
