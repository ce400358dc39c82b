"""USB serial transport: one ``SerialLink`` per configured port, surviving unplug, replug and node reboots.

**I/O model.** pyserial opens and configures the port (raw mode, baud, exclusive ``flock``) and leaves the file
descriptor non-blocking; from then on the event loop watches the descriptor with ``loop.add_reader`` and the
callback does one ``os.read``, feeds ``SerialDecoder`` and hands each raw frame to the sink (ingest's enqueue).
No thread per port: the read is non-blocking and bounded, everything stays on the loop thread (no
``call_soon_threadsafe`` per chunk, no locks around the decoder), and a burst of frames costs one wake-up. The
price is a POSIX-only transport (``add_reader`` on a tty needs the selector loop), which is what the Raspberry Pi
runs. Downlink lines are written with ``os.write``; a short write parks the rest in a bounded buffer drained by
``loop.add_writer``, so a node that stops reading never blocks the hub (lines beyond the bound are dropped and
counted; acks are cumulative and commands time out).

**Unplug / replug.** A read or write error (``EIO`` when the device vanishes, end of file on a hang-up) closes
the port; the link then tries to reopen the same path with exponential back-off (``reopen_min_s`` doubling to
``reopen_max_s``). A missing device at start is the same state: not an error, just "waiting". A node that reboots
keeps the port and simply sends a new ``hello``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import serial

from hub.transport import FrameSink
from hub.transport.fastcodec import FastSerialDecoder as SerialDecoder  # the shared decoder's CPython fast path
from shared_protocol.downlink_text import encode_line

log = logging.getLogger(__name__)

READ_SIZE = 65536


@dataclass(slots=True)
class LinkStats:
    opens: int = 0
    disconnects: int = 0
    bytes_in: int = 0
    frames_in: int = 0
    garbage_chunks: int = 0
    garbage_bytes: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    dropped_out: int = 0
    last_error: str = ""


class SerialLink:
    def __init__(
        self,
        port: str,
        baud: int,
        sink: FrameSink,
        *,
        label: str = "",
        reopen_min_s: float = 0.2,
        reopen_max_s: float = 5.0,
        max_pending_bytes: int = 64 * 1024,
    ) -> None:
        self.port = port
        self.baud = baud
        self.label = label or port
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = reopen_max_s
        self.max_pending_bytes = max_pending_bytes
        self.stats = LinkStats()
        self._sink = sink
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._decoder = SerialDecoder()
        self._out: deque[memoryview] = deque()
        self._out_bytes = 0
        self._lost: asyncio.Future[str] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._reading = True
        self._released_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------------------------------- Link API

    @property
    def name(self) -> str:
        return self.label

    @property
    def connected(self) -> bool:
        return self._fd is not None

    def send_frame(self, frame: bytes) -> bool:
        line = encode_line(frame)
        if self._fd is None:
            self.stats.dropped_out += 1
            return False
        if self._out:
            if self._out_bytes + len(line) > self.max_pending_bytes:
                self.stats.dropped_out += 1
                return False
            self._park(memoryview(line))
        else:
            try:
                n = os.write(self._fd, line)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._lose(f"write failed: {exc.strerror or exc}")
                self.stats.dropped_out += 1
                return False
            if n < len(line):
                self._park(memoryview(line)[n:])
                assert self._loop is not None
                self._loop.add_writer(self._fd, self._on_writable)
        self.stats.frames_out += 1
        self.stats.bytes_out += len(line)
        return True

    def status(self) -> dict[str, Any]:
        """This port's part of the hub's status (JSON-ready)."""
        s = self.stats
        return {
            "port": self.name,
            "connected": self.connected,
            "opens": s.opens,
            "disconnects": s.disconnects,
            "bytes_in": s.bytes_in,
            "frames_in": s.frames_in,
            "garbage_chunks": s.garbage_chunks,
            "garbage_bytes": s.garbage_bytes,
            "frames_out": s.frames_out,
            "dropped_out": s.dropped_out,
            "last_error": s.last_error,
        }

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"serial {self.label}")
        return self._task

    def release(self, seconds: float) -> None:
        """Let go of the port for ``seconds`` (or until ``resume``), so another program can open it: ``smartshelf
        flash`` re-installing the node's firmware. Frames the node sends meanwhile are not the hub's."""
        self._released_until = time.monotonic() + seconds
        self._lose("released to another program")
        self._wake.set()

    def resume(self) -> None:
        """Take the port back now (it is opened again as after an unplug)."""
        self._released_until = 0.0
        self._wake.set()

    @property
    def released(self) -> bool:
        return self._released_until > time.monotonic()

    def pause_reading(self) -> None:
        """Stop taking frames from the port (shutdown); writes still go out until ``close``."""
        self._reading = False
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._lose("hub stopping")
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        delay = self.reopen_min_s
        waiting_logged = False
        while not self._closing:
            if self.released:
                log.info("%s: released to another program", self.label)
                while self.released and not self._closing:
                    await self._sleep(self._released_until - time.monotonic())
                delay = self.reopen_min_s
                continue
            try:
                ser = serial.Serial(self.port, self.baud, timeout=0, write_timeout=0, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                self.stats.last_error = str(exc)
                if not waiting_logged:
                    log.info("%s: waiting for the device (%s)", self.label, _short(exc))
                    waiting_logged = True
                await self._sleep(delay)
                delay = min(delay * 2, self.reopen_max_s)
                continue
            waiting_logged = False
            opened = time.monotonic()
            try:
                reason = await self._serve(ser)
            except Exception as exc:  # e.g. a path that is not a device the loop can watch: retry, never die
                log.exception("%s: cannot serve the port", self.label)
                reason = f"error: {exc}"
            if self._closing:
                break
            if self.released:
                continue
            log.warning("%s: disconnected (%s)", self.label, reason)
            if time.monotonic() - opened > 2 * self.reopen_max_s:
                delay = self.reopen_min_s  # it had been working: try again soon
            await self._sleep(delay)
            delay = min(delay * 2, self.reopen_max_s)

    # ------------------------------------------------------------------------------------------ internals

    async def _sleep(self, seconds: float) -> None:
        if self._closing:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _serve(self, ser: serial.Serial) -> str:
        loop = asyncio.get_running_loop()
        fd = ser.fileno()
        self._serial = ser
        self._fd = fd
        self._decoder = SerialDecoder()  # a partial chunk from before the unplug must not join the next frame
        self._lost = loop.create_future()
        self.stats.opens += 1
        log.info("%s: connected (%d baud)", self.label, self.baud)
        try:
            if self._reading:
                loop.add_reader(fd, self._on_readable)
            return await self._lost
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
            with contextlib.suppress(Exception):
                loop.remove_writer(fd)
            self._fd = None
            self._serial = None
            self._out.clear()
            self._out_bytes = 0
            with contextlib.suppress(Exception):
                ser.close()
            self.stats.disconnects += 1

    def _lose(self, reason: str) -> None:
        if self._fd is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
        if self._lost is not None and not self._lost.done():
            self.stats.last_error = reason
            self._lost.set_result(reason)

    def _on_readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self._lose("end of file (device gone)")
            return
        arrival = time.monotonic_ns()
        decoder = self._decoder
        chunks, garbage_bytes = decoder.garbage_chunks, decoder.garbage_bytes
        frames = decoder.feed(data)
        stats = self.stats
        stats.bytes_in += len(data)
        stats.frames_in += len(frames)
        stats.garbage_chunks += decoder.garbage_chunks - chunks
        stats.garbage_bytes += decoder.garbage_bytes - garbage_bytes
        sink = self._sink
        for frame in frames:
            sink(self, frame, arrival)

    def _park(self, data: memoryview) -> None:
        self._out.append(data)
        self._out_bytes += len(data)

    def _on_writable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        while self._out:
            head = self._out[0]
            try:
                n = os.write(fd, head)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lose(f"write failed: {exc.strerror or exc}")
                return
            self._out_bytes -= n
            if n < len(head):
                self._out[0] = head[n:]
                return
            self._out.popleft()
        assert self._loop is not None
        self._loop.remove_writer(fd)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 160 else text[:157] + "..."
