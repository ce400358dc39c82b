"""Whose state this is: the node's counters, numbers and undelivered events belong to one identity.

A node's identity is its id (``config.json``'s ``node_id``). What the hub keeps per node (replay marks, acknowledged
events, downlink sessions) matches only the state that node built, so a board provisioned as another node
(re-provisioned, a replacement, its config rewritten) must not carry the old one's on: its events would be merged
into the new node's, and its sequence numbers would not be the new node's. ``adopt`` runs at boot before anything
reads the state: when ``state/identity`` names another node, the identity-bound files are removed, then the node is
recorded (in that order, so an interrupted boot removes them again). The load cells' calibration and the node's
settings stay: they belong to the hardware, not to the identity. The hub resends the lanes' SKUs after every hello,
and staff set the counts again (``set_count``). A new key under the same id (a key rotated by hand) keeps the state:
the hub's marks for that id still hold.

``smartshelf flash`` installs ``unclaimed_record()`` as ``state/identity`` with every new ``config.json`` (a
provisioned node always gets a fresh key), so the state on the board is removed at its next boot whatever firmware
wrote it. A state directory without an identity record (a blank board, or state written by firmware older than this
rule that nobody provisioned again) is adopted as it is.
"""

import hashlib
import os
import struct

from firmware.persist import Record, encode_record

IDENTITY_FILE = "identity"
# Files in the state directory that belong to an identity (with their ".tmp" / ".head" / ".log" companions).
BOUND = ("boot", "seq", "outbox", "counters", "lane", "levels")


UNCLAIMED = b"\x00" * 8  # the tag of no node: what the installer writes with a new config


def identity_tag(node_id: int) -> bytes:
    """8 bytes naming the node."""
    digest: bytes = hashlib.sha256(b"smartshelf identity" + struct.pack(">I", node_id)).digest()
    return digest[:8]


def unclaimed_record() -> bytes:
    """The bytes of a ``state/identity`` that names no node (``smartshelf flash`` installs it with a new config)."""
    return encode_record(UNCLAIMED, 1)


def _bound(name: str) -> bool:
    return any(name.startswith(prefix) for prefix in BOUND)


def adopt(state_dir: str, node_id: int) -> int:
    """Make ``state_dir`` this node's; returns how many files of another identity were removed."""
    record = Record(state_dir + "/" + IDENTITY_FILE)
    tag = identity_tag(node_id)
    held = record.load()
    if held == tag:
        return 0
    removed = 0
    if held is not None:
        for name in os.listdir(state_dir):
            if _bound(name):
                os.remove(state_dir + "/" + name)
                removed += 1
    record.save(tag)
    return removed
