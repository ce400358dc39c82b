"""Small records on flash that survive power loss mid-write.

A record is ``magic u16 | generation u32 | length u16 | payload | crc32``. It is written to
``path + ".tmp"`` and renamed over ``path``: littlefs (the ESP32 and RP2 default) renames atomically.
Where a rename cannot replace (FAT), the old file is removed first, and the loader still finds the new
record in the temp file. The loader takes the valid record with the higher generation of the two files, so
a torn or interrupted write leaves the previous record in force, never a mix.
"""

import binascii
import os
import struct

from shared_protocol.compat import const

_MAGIC = const(0x5353)  # "SS"
_HEAD = ">HIH"
_HEAD_LEN = const(8)
MAX_PAYLOAD = const(4096)


def _crc(data: bytes) -> int:
    return int(binascii.crc32(data)) & 0xFFFFFFFF


def _read(path: str) -> "tuple[int, bytes] | None":
    try:
        with open(path, "rb") as f:
            data = f.read(_HEAD_LEN + MAX_PAYLOAD + 5)
    except OSError:
        return None
    if len(data) < _HEAD_LEN + 4:
        return None
    magic, gen, length = struct.unpack(_HEAD, data[:_HEAD_LEN])
    if magic != _MAGIC or len(data) != _HEAD_LEN + length + 4:
        return None
    body = data[: _HEAD_LEN + length]
    if struct.unpack(">I", data[_HEAD_LEN + length :])[0] != _crc(body):
        return None
    return gen, data[_HEAD_LEN : _HEAD_LEN + length]


def load_record(path: str) -> "tuple[int, bytes] | None":
    """(generation, payload) of the newest valid copy, or None when there is none."""
    a = _read(path)
    b = _read(path + ".tmp")
    if a is None:
        return b
    if b is None or a[0] >= b[0]:
        return a
    return b


def encode_record(payload: bytes, generation: int) -> bytes:
    """A record's bytes on flash (also built by ``smartshelf flash`` for a file it installs)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("record payload too large")
    body = struct.pack(_HEAD, _MAGIC, generation & 0xFFFFFFFF, len(payload)) + payload
    return body + struct.pack(">I", _crc(body))


def store_record(path: str, payload: bytes, generation: int) -> None:
    data = encode_record(payload, generation)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    replace(tmp, path)


def replace(tmp: str, path: str) -> None:
    """Rename ``tmp`` over ``path``: atomic on littlefs; on FAT, which cannot rename over a file, the old
    file is removed first (readers then find the new content in ``tmp`` until the rename completes)."""
    try:
        os.rename(tmp, path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)


class Record:
    """A payload on flash with its generation; ``save`` writes atomically, ``load`` validates."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.generation = 0
        self.writes = 0

    def load(self) -> "bytes | None":
        got = load_record(self.path)
        if got is None:
            return None
        self.generation = got[0]
        return got[1]

    def save(self, payload: bytes) -> None:
        if not self.generation:
            got = load_record(self.path)
            if got is not None:
                self.generation = got[0]
        self.generation += 1
        store_record(self.path, payload, self.generation)
        self.writes += 1


def load(path: str) -> "int | None":
    """A stored u32 counter, or None."""
    got = load_record(path)
    if got is None or len(got[1]) != 4:
        return None
    return int(struct.unpack(">I", got[1])[0])


def store(path: str, value: int) -> None:
    """Store a u32 counter that only ever grows: the counter is its own generation."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError("record value out of u32 range")
    store_record(path, struct.pack(">I", value), value)
