"""A faulty serial line between an emulated node's pty and the hub: drops, duplicates, corrupts and delays bytes.

``FaultRelay(upstream, link, seed)`` opens the node's pty (``upstream``, e.g. the emulator's ``<dir>/node-1``
symlink), creates a pty of its own and points ``link`` at it (configure the hub's ``port`` to ``link``), and
copies bytes both ways in one thread:

* **uplink** (node -> hub), per chunk read from the node: drop a random slice, flip one bit, insert garbage
  (log text or random bytes, sometimes with ``0x00`` delimiters), send the chunk twice, hold it back for a
  while. Held chunks keep their order (a serial line does not reorder): a chunk is released no earlier than
  the one before it.
* **downlink** (hub -> node), per ``\\n``-terminated line: drop it, change one character, send it twice,
  delay it (acks lost or mangled: the node re-sends and the hub must dedupe).
* ``inject(data)`` puts bytes (a forged frame, a replayed one) on the uplink, in order with everything else;
  ``replay_event(min_age_s)`` re-sends, verbatim, an event frame the node sent at least ``min_age_s`` ago.

Everything random comes from ``random.Random(seed)``; what reaches the relay when depends on the processes
around it, so the run is seeded, not replayable bit for bit. Buffers are bounded (``MAX_PENDING`` bytes per
direction; older bytes are dropped and counted, as a UART overrun would). ``stop()`` ends the thread, closes
both ptys and removes the link.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from shared_protocol.errors import ProtocolError
from shared_protocol.frame import peek_header
from shared_protocol.messages import EVENT
from shared_protocol.serial_framing import cobs_decode

MAX_PENDING = 64 * 1024
GARBAGE_TEXT = (b"smartshelf: relay noise\r\n", b"Traceback (most recent call last):\r\n", b"\r\n>>> ")


@dataclass
class Faults:
    """Per-chunk (uplink) or per-line (downlink) probabilities and the delay range."""

    drop: float = 0.0
    flip: float = 0.0
    garbage: float = 0.0
    dup: float = 0.0
    delay: float = 0.0
    delay_s: tuple[float, float] = (0.1, 1.5)
    ensure_after: int = 0  # from this many chunks / lines on, a fault kind never applied yet is applied (0: off)


@dataclass
class RelayStats:
    chunks: int = 0
    lines: int = 0
    dropped: int = 0
    flipped: int = 0
    garbage: int = 0
    duplicated: int = 0
    delayed: int = 0
    down_dropped: int = 0
    down_corrupted: int = 0
    down_duplicated: int = 0
    down_delayed: int = 0
    injected: int = 0
    replayed: int = 0
    overrun_bytes: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    faults_on: bool = True
    notes: list[str] = field(default_factory=list)


class _Queue:
    """Bytes waiting for their release time, in order, bounded."""

    def __init__(self) -> None:
        self.items: deque[tuple[float, bytes]] = deque()
        self.size = 0
        self.last_release = 0.0

    def put(self, data: bytes, not_before: float) -> int:
        """Queue ``data``; returns how many old bytes were dropped to stay under ``MAX_PENDING``."""
        if not data:
            return 0
        self.last_release = max(self.last_release, not_before)
        self.items.append((self.last_release, data))
        self.size += len(data)
        lost = 0
        while self.size > MAX_PENDING and len(self.items) > 1:
            _t, old = self.items.popleft()
            self.size -= len(old)
            lost += len(old)
        return lost

    def due(self, now: float) -> bytes:
        out = bytearray()
        while self.items and self.items[0][0] <= now:
            out += self.items.popleft()[1]
        self.size -= len(out)
        return bytes(out)

    def next_release(self) -> float | None:
        return self.items[0][0] if self.items else None


class FaultRelay:
    def __init__(self, upstream: Path, link: Path, seed: int, up: Faults, down: Faults) -> None:
        self.upstream = Path(upstream)
        self.link = Path(link)
        self.rng = random.Random(seed)
        self.up = up
        self.down = down
        self.stats = RelayStats()
        self._node_fd = -1
        self._master = -1
        self._slave = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inject: list[bytes] = []
        self._up_q = _Queue()
        self._down_q = _Queue()
        self._up_out = b""  # released, not yet written (the hub's side was full)
        self._down_out = b""
        self._line = b""
        self._chunk = b""  # the node's current COBS chunk (between 0x00 delimiters), for replays
        self._events: deque[tuple[float, bytes]] = deque(maxlen=512)  # (time, intact event chunk)
        self.error: BaseException | None = None

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._node_fd = os.open(self.upstream, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave  # the slave stays open: writes never fail while no hub reads
        tmp = self.link.with_name(self.link.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.link.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        for fd in (self._node_fd, self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._node_fd = self._master = self._slave = -1
        with contextlib.suppress(OSError):
            self.link.unlink()

    def set_faults(self, on: bool) -> None:
        self.stats.faults_on = on

    # -- injection --------------------------------------------------------------------------------
    def inject(self, data: bytes) -> None:
        with self._lock:
            self._inject.append(bytes(data))
        self.stats.injected += 1

    def replay_event(self, min_age_s: float) -> bytes | None:
        """Re-send verbatim an event frame the node sent at least ``min_age_s`` ago; returns its COBS chunk."""
        cutoff = time.monotonic() - min_age_s
        with self._lock:
            old = [c for t, c in self._events if t <= cutoff]
        if not old:
            return None
        chunk = self.rng.choice(old)
        with self._lock:
            self._inject.append(b"\x00" + chunk + b"\x00")
        self.stats.replayed += 1
        return chunk

    # -- the copying thread ------------------------------------------------------------------------
    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._node_fd, selectors.EVENT_READ, "node")
        sel.register(self._master, selectors.EVENT_READ, "hub")
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                waits = [t for t in (self._up_q.next_release(), self._down_q.next_release()) if t is not None]
                timeout = 0.05 if self._up_out or self._down_out else 0.1
                if waits:
                    timeout = max(0.0, min(timeout, min(waits) - now))
                for key, _mask in sel.select(timeout):
                    fd = key.fileobj
                    assert isinstance(fd, int)
                    try:
                        data = os.read(fd, 4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        continue
                    if key.data == "node":
                        self._from_node(data)
                    else:
                        self._from_hub(data)
                with self._lock:
                    injected, self._inject = self._inject, []
                now = time.monotonic()
                for data in injected:
                    self.stats.overrun_bytes += self._up_q.put(data, now)
                self._up_out = self._write(self._master, self._up_out + self._up_q.due(now), "up")
                self._down_out = self._write(self._node_fd, self._down_out + self._down_q.due(now), "down")
        except BaseException as err:
            self.error = err
        finally:
            sel.close()

    def _write(self, fd: int, data: bytes, direction: str) -> bytes:
        if not data:
            return b""
        try:
            n = os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = len(data)  # the other side is gone: the bytes are lost, as on a cable
        if direction == "up":
            self.stats.bytes_up += n
        else:
            self.stats.bytes_down += n
        rest = data[n:]
        if len(rest) > MAX_PENDING:
            self.stats.overrun_bytes += len(rest) - MAX_PENDING
            rest = rest[-MAX_PENDING:]
        return rest

    def _delay(self, faults: Faults) -> float:
        lo, hi = faults.delay_s
        return self.rng.uniform(lo, hi)

    def _from_node(self, data: bytes) -> None:
        self._track(data)
        self.stats.chunks += 1
        f = self.up
        rng = self.rng
        out = bytearray(data)
        not_before = time.monotonic()
        st = self.stats
        force = bool(f.ensure_after) and st.chunks >= f.ensure_after
        if st.faults_on:
            if (rng.random() < f.drop or (force and not st.dropped)) and out:
                a = rng.randrange(len(out))
                b = rng.randrange(a, len(out)) + 1
                del out[a:b]
                self.stats.dropped += 1
            if (rng.random() < f.flip or (force and not st.flipped)) and out:
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8)
                self.stats.flipped += 1
            if rng.random() < f.garbage or (force and not st.garbage):
                if rng.random() < 0.5:
                    junk = rng.choice(GARBAGE_TEXT)
                else:
                    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
                i = rng.randrange(len(out) + 1)
                out[i:i] = junk
                self.stats.garbage += 1
            if rng.random() < f.dup or (force and not st.duplicated):
                out += bytes(out)
                self.stats.duplicated += 1
            if rng.random() < f.delay or (force and not st.delayed):
                not_before += self._delay(f)
                self.stats.delayed += 1
        self.stats.overrun_bytes += self._up_q.put(bytes(out), not_before)

    def _track(self, data: bytes) -> None:
        """Remember the node's intact event frames (before any fault) for ``replay_event``."""
        parts = (self._chunk + data).split(b"\x00")
        self._chunk = parts.pop()[-1024:]
        now = time.monotonic()
        for chunk in parts:
            if not chunk:
                continue
            try:
                msg_type, _node, _seq = peek_header(cobs_decode(chunk))
            except ProtocolError:
                continue
            if msg_type == EVENT:
                with self._lock:
                    self._events.append((now, chunk))

    def _from_hub(self, data: bytes) -> None:
        lines = (self._line + data).split(b"\n")
        self._line = lines.pop()
        if len(self._line) > 4096:
            self.stats.overrun_bytes += len(self._line)
            self._line = b""
        f = self.down
        rng = self.rng
        for raw in lines:
            line = bytearray(raw + b"\n")
            self.stats.lines += 1
            not_before = time.monotonic()
            st = self.stats
            force = bool(f.ensure_after) and st.lines >= f.ensure_after
            if st.faults_on:
                if rng.random() < f.drop or (force and not st.down_dropped):
                    self.stats.down_dropped += 1
                    continue
                if (rng.random() < f.flip or (force and not st.down_corrupted)) and len(line) > 2:
                    i = rng.randrange(1, len(line) - 1)
                    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    line[i] = rng.choice([c for c in alphabet if c != line[i]])
                    self.stats.down_corrupted += 1
                if rng.random() < f.dup or (force and not st.down_duplicated):
                    line += bytes(line)
                    self.stats.down_duplicated += 1
                if rng.random() < f.delay or (force and not st.down_delayed):
                    not_before += self._delay(f)
                    self.stats.down_delayed += 1
            self.stats.overrun_bytes += self._down_q.put(bytes(line), not_before)
