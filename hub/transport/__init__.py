"""Transports move bytes between the hub and its nodes and hand raw (unverified) frames to ingest.

A transport only reads, unframes and enqueues; ingest authenticates, applies and answers. Every transport
implements the ``Link`` protocol below so that ingest can answer a node on whichever link its last
authenticated frame arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Link(Protocol):
    """Where ingest sends downlink frames to a node."""

    @property
    def name(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    def send_frame(self, frame: bytes) -> bool:
        """Queue one downlink frame (already tagged); False if it was dropped (link down or congested)."""
        ...


# (link the bytes came from, raw frame, arrival time from time.monotonic_ns())
FrameSink = Callable[[Link, bytes, int], None]
