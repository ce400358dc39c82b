"""Small records on flash that survive power loss mid-write.

A record is ``magic (2) | value u32 | crc32 of the first 6 bytes``. It is written to ``path + ".tmp"``
and renamed over ``path``: littlefs (ESP32, RP2 defaults) renames atomically. Where the rename cannot
replace (FAT), the old file is removed first, and the loader still finds the value in the temp file.
The loader takes the largest valid value of the two files, so a torn write can never lower a counter.
"""

import binascii
import os
import struct

from shared_protocol.compat import const

_MAGIC = const(0x5353)  # "SS"
_FMT = ">HI"
RECORD_LEN = const(10)


def _encode(value: int) -> bytes:
    body = struct.pack(_FMT, _MAGIC, value)
    return body + struct.pack(">I", binascii.crc32(body) & 0xFFFFFFFF)


def _decode(data: bytes) -> "int | None":
    if len(data) != RECORD_LEN:
        return None
    body = data[:6]
    if struct.unpack(">I", data[6:])[0] != binascii.crc32(body) & 0xFFFFFFFF:
        return None
    magic, value = struct.unpack(_FMT, body)
    if magic != _MAGIC:
        return None
    return int(value)


def _read(path: str) -> "int | None":
    try:
        with open(path, "rb") as f:
            return _decode(f.read(RECORD_LEN + 1))
    except OSError:
        return None


def load(path: str) -> "int | None":
    """The stored value, or None when neither the file nor its temp copy holds a valid record."""
    a = _read(path)
    b = _read(path + ".tmp")
    if a is None:
        return b
    if b is None or a >= b:
        return a
    return b


def store(path: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError("record value out of u32 range")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_encode(value))
    try:
        os.rename(tmp, path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)
