"""Where the hub learns a provisioned node's key: a nodes file (``[[node]]`` tables: id, key, port) that the hub's
``hub.toml`` lists in ``nodes_files``. Written whole, atomically, readable by its owner only (it holds keys), in a
directory made 0700 if it is new; the hub refuses a nodes file that other users can read (``HubConfig.key_files``)."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from hub.config import ConfigError, load_config
from hub.config.checks import under
from hub.private_files import make_private_dirs


def _nodes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        nodes = tomllib.loads(path.read_text()).get("node", [])
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it: {err}") from None
    return [n for n in nodes if isinstance(n, dict)]


def known_key(node_id: int, nodes_file: Path | None, hub_config: Path | None) -> bytes | None:
    """The key the hub has for ``node_id`` (in the nodes file or anywhere ``hub.toml`` reads), or None."""
    if nodes_file is not None:
        for n in _nodes(nodes_file):
            if n.get("id") == node_id and isinstance(n.get("key"), str):
                try:
                    return bytes.fromhex(n["key"])
                except ValueError:
                    raise ConfigError(f"{nodes_file}: node {node_id}: key is not hexadecimal") from None
    if hub_config is not None:
        for nc in load_config(hub_config).nodes:
            if nc.node_id == node_id:
                return nc.key
    return None


def read_by_hub(nodes_file: Path, hub_config: Path) -> bool:
    """Whether ``nodes_file`` is one of the files ``hub.toml`` lists in ``hub.nodes_files`` (the only nodes files
    the hub learns keys from). ``ConfigError`` when the hub would refuse its ``hub.toml``."""
    load_config(hub_config)
    try:
        listed = tomllib.loads(hub_config.read_text()).get("hub", {}).get("nodes_files", [])
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{hub_config}: cannot read it: {err}") from None
    target = Path(os.path.expanduser(nodes_file)).resolve()
    return any(under(hub_config.parent, str(name)).resolve() == target for name in listed)


def known_to_ledger(node_id: int, hub_config: Path | None, *, with_lanes: bool = False) -> bool:
    """Whether the hub's ledger (``hub.toml``'s database, read-only) has a record of ``node_id``: its replay marks
    and event numbers are that node's, whatever the nodes files say now (``with_lanes``: and lanes of its own)."""
    sql = "SELECT 1 FROM lanes WHERE node_id = ?" if with_lanes else "SELECT 1 FROM nodes WHERE node_id = ?"
    if hub_config is None:
        return False
    database = load_config(hub_config).database
    if not database.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, (node_id,)).fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error as err:
        raise ConfigError(f"{database}: cannot read the hub's ledger: {err}") from None


def register(nodes_file: Path, node_id: int, key: bytes, port: str) -> list[int]:
    """Put the node's table into ``nodes_file`` (replacing one with its id, and any other node's on its port: that
    board is no longer there). Returns the ids of other nodes it replaced on the port."""
    kept, replaced = [], []
    for n in _nodes(nodes_file):
        if not isinstance(n.get("id"), int) or not isinstance(n.get("key"), str):
            raise ConfigError(f"{nodes_file}: a [[node]] table without a whole-number id and a key: fix it by hand")
        if n["id"] == node_id:
            continue
        if os.path.normpath(str(n.get("port", ""))) == os.path.normpath(port):
            replaced.append(int(n["id"]))
            continue
        kept.append(n)
    kept.append({"id": node_id, "key": key.hex(), "port": port})
    _write(nodes_file, kept)
    return replaced


def unregister(nodes_file: Path, node_id: int) -> bool:
    """Take the node's table out of ``nodes_file`` (a node replaced by another); False when it was not there."""
    nodes = _nodes(nodes_file)
    kept = [n for n in nodes if n.get("id") != node_id]
    if len(kept) == len(nodes):
        return False
    _write(nodes_file, kept)
    return True


def _write(nodes_file: Path, kept: list[dict[str, Any]]) -> None:
    """The nodes file with these tables, replaced atomically (owner-only, keeping its owner)."""
    lines = ["# Shelf nodes provisioned by `smartshelf flash`; list this file in hub.toml's nodes_files"]
    for n in sorted(kept, key=lambda n: int(n["id"])):
        lines += ["", "[[node]]", f"id = {int(n['id'])}", f'key = "{n["key"]}"', f"port = {json.dumps(str(n['port']))}"]
        if "baud" in n:
            lines.append(f"baud = {int(n['baud'])}")
    make_private_dirs(nodes_file.parent)
    fd, name = tempfile.mkstemp(prefix=f".{nodes_file.name}.", dir=nodes_file.parent)  # 0600, never a planted file
    tmp = Path(name)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
        if nodes_file.exists():  # the hub's user keeps owning it when root runs smartshelf flash
            st = nodes_file.stat()
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
    os.replace(tmp, nodes_file)
