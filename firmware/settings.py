"""Settings the hub may change at run time (``set_config``), kept on flash over the config's defaults.

Keys (shared_protocol/README.md section 5.4), values in seconds: ``SETTINGS`` maps a key to (name, lo, hi).
The stored record is a list of (key: u8, value: i32) pairs; an unreadable one is ignored (the defaults stay).
"""

import struct

from firmware.persist import Record
from shared_protocol.messages import STATUS_BAD_ARGS, STATUS_OK, STATUS_UNSUPPORTED

SETTINGS = {1: ("lane_state_s", 1, 3600), 2: ("health_s", 5, 3600)}
_PAIR = ">Bi"


class Settings:
    """``lane_state_ms`` (every lane's state once per this period) and ``health_ms`` (health period)."""

    def __init__(self, path: str, lane_state_s: int, health_s: int) -> None:
        self.lane_state_ms = lane_state_s * 1000
        self.health_ms = health_s * 1000
        self._record = Record(path)
        data = self._record.load()
        if not data or len(data) % 5:
            return
        for i in range(0, len(data), 5):
            k, v = struct.unpack(_PAIR, data[i : i + 5])
            self.apply(k, v)

    def apply(self, key: int, value: int) -> int:
        """Set one key; a command status (OK, UNSUPPORTED for an unknown key, BAD_ARGS out of range)."""
        spec = SETTINGS.get(key)
        if spec is None:
            return STATUS_UNSUPPORTED
        name, lo, hi = spec
        if value < lo or value > hi:
            return STATUS_BAD_ARGS
        if name == "lane_state_s":
            self.lane_state_ms = value * 1000
        else:
            self.health_ms = value * 1000
        return STATUS_OK

    def store(self) -> None:
        buf = bytearray()
        buf += struct.pack(_PAIR, 1, self.lane_state_ms // 1000)
        buf += struct.pack(_PAIR, 2, self.health_ms // 1000)
        self._record.save(bytes(buf))
