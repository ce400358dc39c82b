"""Portable firmware test bodies (persistence, sequence numbers); run under CPython and MicroPython."""

import os

from firmware import persist
from firmware.seq_store import SeqStore, next_boot


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def seq_across_reboots(base, block, frames_per_boot):
    """Simulate boots that send the given numbers of frames; return every seq used and flash writes."""
    _mkdir(base)
    path = base + "/seq"
    used = []
    writes = 0
    for n in frames_per_boot:
        store = SeqStore(path, block)
        for _ in range(n):
            used.append(store.next())
        writes += store.writes
    return {"seqs": used, "writes": writes}


def torn_writes(base):
    """Corrupt, truncate and remove the record files in turn: the loader never goes backwards."""
    _mkdir(base)
    path = base + "/rec"
    out = []
    persist.store(path, 100)
    out.append(persist.load(path))
    # A crash after writing the temp file but before the rename: the larger temp value wins.
    with open(path + ".tmp", "wb") as f:
        f.write(persist._encode(200))
    out.append(persist.load(path))
    # A torn temp file (half written) is ignored.
    with open(path + ".tmp", "wb") as f:
        f.write(persist._encode(300)[:5])
    out.append(persist.load(path))
    # A flipped bit in the main record: CRC rejects it, the loader falls back to nothing valid.
    data = bytearray(persist._encode(400))
    data[3] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    out.append(persist.load(path))
    os.remove(path)
    os.remove(path + ".tmp")
    out.append(persist.load(path))
    return out


def boots(base, n):
    _mkdir(base)
    return [next_boot(base + "/boot") for _ in range(n)]
