"""RFID sightings a node reports (``rfid_seen`` / ``rfid_lost``), kept in memory per node for now.

Per node: the tags present now (by lane and EPC, with the last RSSI and time) and the last ``LOG_SIZE``
sightings. Weight and RFID fusion in the ledger is issue 12; this is where its input arrives.
"""

from __future__ import annotations

from collections import deque

LOG_SIZE = 1000


class RfidSightings:
    __slots__ = ("log", "present")

    def __init__(self) -> None:
        self.present: dict[tuple[int, str], tuple[int, int]] = {}  # (lane, epc hex) -> (rssi, ms)
        self.log: deque[tuple[int, str, int, str, int]] = deque(maxlen=LOG_SIZE)  # (ms, seen|lost, lane, epc, rssi)

    def seen(self, lane: int, epc: bytes, rssi: int, ms: int) -> None:
        key = (lane, epc.hex())
        if key not in self.present:
            self.log.append((ms, "seen", lane, key[1], rssi))
        self.present[key] = (rssi, ms)

    def lost(self, lane: int, epc: bytes, ms: int) -> None:
        key = (lane, epc.hex())
        self.present.pop(key, None)
        self.log.append((ms, "lost", lane, key[1], 0))
