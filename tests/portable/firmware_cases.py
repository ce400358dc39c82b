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
    main = _raw(path)
    # A crash after writing the temp file but before the rename: the newer temp record wins.
    persist.store(base + "/other", 200)
    _write(path + ".tmp", _raw(base + "/other"))
    out.append(persist.load(path))
    # A torn temp file (half written) is ignored.
    persist.store(base + "/other", 300)
    _write(path + ".tmp", _raw(base + "/other")[:7])
    out.append(persist.load(path))
    # A flipped bit in the main record: CRC rejects it, the loader falls back to nothing valid.
    data = bytearray(main)
    data[9] ^= 0x01
    _write(path, data)
    out.append(persist.load(path))
    os.remove(path)
    os.remove(path + ".tmp")
    out.append(persist.load(path))
    return out


def _raw(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def records(base):
    """Blob records: generations advance, the newest valid copy wins, garbage is rejected."""
    _mkdir(base)
    rec = persist.Record(base + "/cal")
    out = [rec.load()]
    rec.save(b"first")
    rec.save(b"second")
    out.append(persist.Record(base + "/cal").load().decode())
    fresh = persist.Record(base + "/cal")
    fresh.save(b"third")
    out.append(fresh.generation)
    _write(base + "/cal", b"\x53\x53garbage")
    out.append(persist.Record(base + "/cal").load())
    return out


def boots(base, n):
    _mkdir(base)
    return [next_boot(base + "/boot") for _ in range(n)]


def implementation():
    import sys

    return "micropython" if sys.implementation.name == "micropython" else "cpython"
