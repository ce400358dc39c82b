"""Uplink sequence numbers that strictly increase across reboots, with bounded flash wear.

The node persists a *reservation*: the first number it has not yet reserved. At boot it starts counting
at the stored reservation and immediately stores ``start + BLOCK``; it writes again only when the counter
reaches the reservation. Flash sees at most one write per ``BLOCK`` frames plus one per boot, and a crash
or power cut can only skip numbers (the hub needs them increasing, not contiguous), never reuse one.

The boot counter (the downlink session) is stored the same way, once per boot.
"""

from firmware import persist
from shared_protocol.compat import const

BLOCK = const(1024)
MAX_SEQ = const(0xFFFFFFFF)


class SeqExhausted(Exception):
    """The node has used its whole 32-bit sequence space: it must be re-keyed (about 136 years at 1 frame/s)."""


class SeqStore:
    def __init__(self, path: str, block: int = BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self._path = path
        self._block = block
        stored = persist.load(path)
        self._next = stored if stored else 1
        self._reserved = self._next
        self.writes = 0
        self._reserve()

    def _reserve(self) -> None:
        target = self._next + self._block
        if target > MAX_SEQ:
            target = MAX_SEQ
        persist.store(self._path, target)
        self._reserved = target
        self.writes += 1

    def peek(self) -> int:
        return self._next

    def next(self) -> int:
        """The next sequence number; reserves a new block on flash when the current one is used up."""
        if self._next > MAX_SEQ:
            raise SeqExhausted("uplink sequence space exhausted; re-key this node")
        if self._next >= self._reserved:
            self._reserve()
        seq = self._next
        self._next += 1
        return seq


def next_boot(path: str) -> int:
    """Increment and persist the boot counter; returns this boot's number (1 on first boot)."""
    boot = (persist.load(path) or 0) + 1
    if boot > MAX_SEQ:
        raise SeqExhausted("boot counter exhausted")
    persist.store(path, boot)
    return boot
