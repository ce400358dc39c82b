"""``BleNodeLink``: one BLE node as a ``hub.transport.Link``, over whichever connection the manager holds for it.

Uplink: each notification of the node's uplink characteristic is a fragment (``shared_protocol/ble_fragments.py``);
the handler only reassembles and hands the frame to ingest's sink (no await, no I/O). Downlink: ``send_frame`` cuts
the frame into fragments of MTU - 3 bytes and queues them; one writer task per connection writes them in order
(with response: the ATT layer's own flow control, so a slow node slows the hub's writes instead of losing them).
The queue is bounded: beyond ``MAX_PENDING`` fragments a frame is refused and counted, as a serial link's full
buffer is (acks are cumulative, commands time out). A failed write ends the connection (the manager is told);
fragments never written are counted in ``dropped_out``.

Between connections the link is not ``connected``: ``NodeSession.transmit`` then keeps acks and commands, and the
manager connects when the session wants to send (``hub/transport/ble/central.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.transport import FrameSink
from shared_protocol.ble_fragments import MIN_MTU, Reassembler, fragment
from shared_protocol.errors import ProtocolError

log = logging.getLogger(__name__)

MAX_PENDING = 64  # downlink fragments waiting for the writer (a frame of 274 bytes is 16 at MTU 23)


@dataclass(slots=True)
class BleLinkStats:
    connects: int = 0
    disconnects: int = 0
    notifications: int = 0
    frames_in: int = 0
    bad_fragments: int = 0
    frames_out: int = 0
    fragments_out: int = 0
    dropped_out: int = 0
    write_errors: int = 0
    last_error: str = ""


class BleNodeLink:
    def __init__(self, node_id: int, sink: FrameSink) -> None:
        self.node_id = node_id
        self.address = ""
        self.stats = BleLinkStats()
        self._sink = sink
        self._client: Any = None
        self._downlink: Any = None
        self._mtu = MIN_MTU
        self._reasm = Reassembler()
        self._out: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._msg_id = 0
        self._failed: Callable[[str], None] | None = None
        self.last_activity = 0.0  # time.monotonic() of the last fragment either way

    # ------------------------------------------------------------------------------------------- Link API

    @property
    def name(self) -> str:
        return f"ble:{self.address or 'node' + str(self.node_id)}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def mtu(self) -> int:
        return self._mtu

    def send_frame(self, frame: bytes) -> bool:
        if self._client is None:
            self.stats.dropped_out += 1
            return False
        try:
            parts = fragment(frame, self._mtu, self._msg_id)
        except ProtocolError as exc:
            log.warning("%s: cannot fragment a downlink frame: %s", self.name, exc)
            self.stats.dropped_out += 1
            return False
        if len(self._out) + len(parts) > MAX_PENDING:
            self.stats.dropped_out += 1
            return False
        self._msg_id = (self._msg_id + 1) & 0xFF
        self._out.extend(parts)
        self.stats.frames_out += 1
        self._wake.set()
        return True

    # ------------------------------------------------------------------------------- the manager's side

    def attach(
        self, client: Any, downlink: Any, mtu: int, address: str, failed: Callable[[str], None] | None = None
    ) -> None:
        """A connection is up: ``client`` (a BleakClient) with the node's downlink characteristic; ``mtu`` as
        exchanged; ``failed(reason)``: told when a write fails (the connection is then useless: the manager ends
        it)."""
        self._failed = failed
        self._client = client
        self._downlink = downlink
        self._mtu = max(MIN_MTU, min(mtu, 517))
        self.address = address
        self._reasm = Reassembler()
        self._out.clear()
        self.stats.connects += 1
        self.last_activity = time.monotonic()
        self._writer = asyncio.create_task(self._write_loop(client, downlink), name=f"ble write node {self.node_id}")

    async def detach(self) -> None:
        """The connection is gone (or being closed): what waits to be written is dropped."""
        if self._client is None:
            return
        self._client = None
        self._downlink = None
        self.stats.disconnects += 1
        self.stats.dropped_out += len(self._out)  # fragments never written
        self._out.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    def on_notify(self, _char: Any, data: bytearray) -> None:
        """bleak's notification callback: reassemble, hand a whole frame to ingest."""
        self.stats.notifications += 1
        self.last_activity = time.monotonic()
        try:
            frame = self._reasm.feed(bytes(data))
        except ProtocolError:
            self.stats.bad_fragments += 1
            return
        if frame is not None:
            self.stats.frames_in += 1
            self._sink(self, frame, time.monotonic_ns())

    @property
    def idle_for(self) -> float:
        return time.monotonic() - self.last_activity

    @property
    def writing(self) -> bool:
        return bool(self._out)

    async def _write_loop(self, client: Any, downlink: Any) -> None:
        task = asyncio.current_task()
        while True:
            # a cancel the BLE stack swallowed inside a write (it returned or raised another error instead): honour it
            # here, or the loop waits for a wake-up forever and the link's detach with it
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            while not self._out:
                self._wake.clear()
                await self._wake.wait()
            part = self._out[0]
            try:
                await client.write_gatt_char(downlink, part, response=True)
            except Exception as exc:  # an ATT error, a timeout, a disconnect: this connection carries nothing more
                self.stats.write_errors += 1
                self.stats.last_error = str(exc) or type(exc).__name__
                self.stats.dropped_out += len(self._out)
                self._out.clear()
                if self._failed is not None:
                    self._failed(f"downlink write failed: {self.stats.last_error}")
                return
            if self._out and self._out[0] is part:
                self._out.popleft()
            self.stats.fragments_out += 1
            self.last_activity = time.monotonic()

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "connected": self.connected,
            "mtu": self._mtu if self.connected else None,
            "connects": s.connects,
            "disconnects": s.disconnects,
            "frames_in": s.frames_in,
            "bad_fragments": s.bad_fragments,
            "frames_out": s.frames_out,
            "dropped_out": s.dropped_out,
            "write_errors": s.write_errors,
            "last_error": s.last_error,
        }
