"""The emulator host's radio: one air (``air.py``) and the emulated boards' peripherals on it (``peripheral.py``),
owned by one asyncio loop on a background thread, so the synchronous emulator (``tools/emulation/host.py``, a
``time.sleep`` loop) and tests can use them with plain calls.

``Radio.start(directory)`` builds the air and serves the hub's adapter controller at ``<directory>/hci.sock``
(the hub's Bumble backend opens it as ``bumble:unix:<path>``); ``attach(node_id)`` gives a board its radio: the
board's end of a new SOCK_SEQPACKET socketpair (non-blocking, for ``NodeProcess(..., radio_fd=...)``; the
caller closes its copy once the board's process has it), whose other end a ``NodePeripheral`` serves with the
node's address ``ble_address(node_id)``. Attaching a node again (its board restarted) ends the previous
peripheral first. ``stop()`` ends every peripheral (their centrals see the radios go), closes the air and the
thread. ``call(coro)`` runs a coroutine on the radio's loop (tests: a central on the same air).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tools.emulation.radio.air import Air
from tools.emulation.radio.peripheral import NodePeripheral, ble_address

log = logging.getLogger(__name__)

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0
HCI_SOCKET = "hci.sock"


class Radio:
    """The air and the nodes' peripherals on a background asyncio loop. ``hub_slots``: connections the hub's
    adapter holds at once; ``supervision_timeout_s``: how long a central takes to notice a node's radio gone."""

    def __init__(self, *, hub_slots: int = 5, supervision_timeout_s: float = 0.0) -> None:
        self.hub_slots = hub_slots
        self.supervision_timeout_s = supervision_timeout_s
        self.hci_path: Path | None = None
        self.air: Air | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nodes: dict[int, tuple[NodePeripheral, asyncio.Task[None]]] = {}

    # -- life ---------------------------------------------------------------------------------------------------
    def start(self, directory: Path) -> Path:
        """Start the loop, build the air, serve the hub's controller at ``<directory>/hci.sock``; its path."""
        if self._loop is not None:
            raise RuntimeError("the radio is already running")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="radio", daemon=True)
        self._thread.start()
        ready.wait()
        path = Path(directory) / HCI_SOCKET
        try:
            self.call(self._start(path))
        except BaseException:
            self.stop()
            raise
        self.hci_path = path
        return path

    async def _start(self, path: Path) -> None:
        self.air = Air(hub_slots=self.hub_slots, supervision_timeout_s=self.supervision_timeout_s)
        await self.air.serve_hci(str(path))

    def stop(self) -> None:
        """End every peripheral and the air, then the loop and its thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self.call(self._shutdown())
        except Exception as err:
            log.warning("radio: stopping failed: %s", err)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        self._loop = self._thread = None
        self.hci_path = None

    async def _shutdown(self) -> None:
        for node_id in list(self._nodes):
            await self._detach(node_id)
        if self.air is not None:
            await self.air.close()
            self.air = None

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the radio's loop and return its result (from any other thread)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the radio is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # -- the boards -------------------------------------------------------------------------------------------------
    def attach(self, node_id: int) -> int:
        """A radio for node ``node_id``'s board: the board's end of its socket (a non-blocking fd the caller owns)."""
        board, radio = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            board.setblocking(False)
            self.call(self._attach(node_id, radio))
        except BaseException:
            board.close()
            radio.close()
            raise
        return board.detach()

    async def _attach(self, node_id: int, sock: socket.socket) -> None:
        await self._detach(node_id)
        assert self.air is not None
        peripheral = NodePeripheral(self.air, f"node-{node_id}", ble_address(node_id), sock)
        self._nodes[node_id] = (peripheral, asyncio.create_task(peripheral.run(), name=f"radio node {node_id}"))

    async def _detach(self, node_id: int) -> None:
        entry = self._nodes.pop(node_id, None)
        if entry is None:
            return
        peripheral, task = entry
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await peripheral.close()

    def peripheral(self, node_id: int) -> NodePeripheral | None:
        """Node ``node_id``'s peripheral (tests look at it through ``call``)."""
        entry = self._nodes.get(node_id)
        return entry[0] if entry is not None else None
