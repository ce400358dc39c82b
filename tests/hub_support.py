"""Test support for the hub service: a fake shelf node on a real pty, speaking protocol v1 with shared_protocol.

The node side is written here from the protocol alone (UplinkSender, encode_serial, LineDecoder,
DownlinkReceiver) so the hub is tested against the spec, not against itself. The hub opens ``path``, a symlink to
the pty's slave; ``unplug()`` closes the pty and removes the link, ``plug()`` makes a new pty behind the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.config import HubConfig, load_config
from hub.service import HubService
from shared_protocol.auth import Key
from shared_protocol.downlink_text import LineDecoder
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import DownlinkReceiver, Frame, UplinkSender
from shared_protocol.messages import (
    KIND_COUNT,
    KIND_PICK,
    KIND_PUT,
    STATUS_OK,
    Ack,
    CommandResult,
    Event,
    Health,
    Hello,
    LaneState,
    Message,
    RequestState,
    SetCount,
)
from shared_protocol.serial_framing import encode_serial

KEY1 = bytes(range(16))
KEY2 = bytes(range(100, 132))


@dataclass
class Counters:
    count: int = 0
    removed: int = 0
    added: int = 0
    last_event: int = 0


@dataclass
class FakeNode:
    node_id: int
    key: bytes
    path: Path
    boot: int = 1
    lanes: int = 4
    seq: int = 0
    event_seq: int = 0
    answer_commands: bool = True
    answers: dict[str, tuple[int, int]] = field(default_factory=dict)  # command name -> (status, value)
    counters: dict[int, Counters] = field(default_factory=dict)
    received: list[Frame] = field(default_factory=list)
    rejected: int = 0
    master: int | None = None
    slave: int | None = None

    def __post_init__(self) -> None:
        self.sender = UplinkSender(self.node_id, Key(self.key), self._next_seq)
        self.receiver = DownlinkReceiver(self.node_id, Key(self.key), self.boot)
        self.lines = LineDecoder()
        self.counters = {i: Counters() for i in range(self.lanes)}
        self._changed = asyncio.Event()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ----------------------------------------------------------------------------------------- the cable

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline, before the hub opens it
        os.set_blocking(master, False)
        self.master, self.slave = master, slave  # holding the slave keeps the master from reading EIO
        tmp = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def unplug(self) -> None:
        if self.master is not None:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
        if self.slave is not None:
            os.close(self.slave)
        self.master = self.slave = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def reboot(self, boot: int) -> None:
        """A new boot: new downlink session; uplink seq and event_seq continue (persisted on the node)."""
        self.boot = boot
        self.receiver = DownlinkReceiver(self.node_id, Key(self.key), boot)

    # ---------------------------------------------------------------------------------------------- uplink

    def write(self, data: bytes) -> None:
        assert self.master is not None
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            view = view[n:]

    def frame(self, message: Message) -> bytes:
        return self.sender.encode(message)

    def send(self, message: Message) -> bytes:
        frame = self.frame(message)
        self.write(encode_serial(frame))
        return frame

    def hello(self) -> bytes:
        return self.send(Hello(1, 2, 3, self.boot, self.lanes, 0xC0FFEE))

    def make_event(self, lane: int = 0, count: int = -1, age_ms: int = 250, unit_dg: int = 3500) -> Event:
        """A new event, counted on the node (counters) but not sent."""
        self.event_seq += 1
        c = self.counters[lane]
        c.count += count
        if count < 0:
            c.removed -= count
        else:
            c.added += count
        c.last_event = self.event_seq
        kind = KIND_PICK if count < 0 else KIND_PUT
        return Event(self.event_seq, lane, kind, count, count * unit_dg, 97, age_ms)

    def event(self, lane: int = 0, count: int = -1, age_ms: int = 250) -> tuple[Event, bytes]:
        ev = self.make_event(lane, count, age_ms)
        return ev, self.send(ev)

    def lane_state(self, lane: int) -> LaneState:
        c = self.counters[lane]
        return LaneState(lane, c.count, c.removed, c.added, c.count * 3500, 0, c.last_event)

    def health(self, outbox_first: int, outbox_depth: int = 0, dropped: int = 0) -> bytes:
        return self.send(
            Health(60, 100_000, 8000, self.seq, len(self.received), self.rejected, outbox_depth, dropped, outbox_first)
        )

    # -------------------------------------------------------------------------------------------- downlink

    def _readable(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, 65536)
        except (BlockingIOError, OSError):
            return
        for raw in self.lines.feed(data):
            try:
                frame = self.receiver.accept(raw)
            except ProtocolError:
                self.rejected += 1
                continue
            self.received.append(frame)
            self._respond(frame)
        self._changed.set()

    def _respond(self, frame: Frame) -> None:
        m = frame.message
        if isinstance(m, Ack):
            return
        if isinstance(m, RequestState):
            lanes = range(self.lanes) if m.lane == 255 else [m.lane]
            for lane in lanes:
                self.send(self.lane_state(lane))
            self.send(CommandResult(frame.seq, STATUS_OK, 0))
            return
        if isinstance(m, SetCount) and self.answer_commands and m.NAME not in self.answers:
            c = self.counters[m.lane]  # as the firmware does (protocol section 11): the difference as count events
            d = m.count - c.count
            if d:
                self.event_seq += 1
                c.count, c.last_event = m.count, self.event_seq
                if d < 0:
                    c.removed -= d
                else:
                    c.added += d
                self.send(Event(self.event_seq, m.lane, KIND_COUNT, d, 0, 100, 5))
                self.send(self.lane_state(m.lane))
            self.send(CommandResult(frame.seq, STATUS_OK, self.event_seq if d else 0))
            return
        if self.answer_commands:
            status, value = self.answers.get(m.NAME, (STATUS_OK, 0))
            self.send(CommandResult(frame.seq, status, value))

    def messages(self, cls: type[Message] | None = None) -> list[Any]:
        return [f.message for f in self.received if cls is None or isinstance(f.message, cls)]

    @property
    def acks(self) -> list[int]:
        return [m.event_seq for m in self.messages(Ack)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; received {[f.message for f in self.received]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))

    async def wait_ack(self, event_seq: int, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: any(a >= event_seq for a in self.acks), timeout)


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def settled(hub: HubService, node: FakeNode, timeout: float = 5.0) -> None:
    """Wait until the hub has read every frame the node sent and run the checks they queued (a lane state's
    comparison with the ledger runs once what came before it has committed, then books any gap)."""
    ingest = hub.ingest
    assert ingest is not None
    session = ingest.nodes[node.node_id]
    await eventually(
        lambda: ingest.receiver.last_seq.get(node.node_id, 0) >= node.seq and session.jobs.idle,
        timeout=timeout,
        what="the node's frames read and checked",
    )


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (sun_path is 108 bytes; pytest's tmp_path can be longer)."""
    d = Path(tempfile.mkdtemp(prefix="ss-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def db_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A query on the ledger file, beside the running hub."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def write_config(directory: Path, socket_dir: Path, nodes: list[FakeNode], extra: str = "") -> Path:
    text = f'[hub]\ndatabase = "hub.db"\ncontrol_socket = "{socket_dir / "hub.sock"}"\n{extra}\n'
    for n in nodes:
        text += f'[[node]]\nid = {n.node_id}\nkey = "{n.key.hex()}"\nport = "{n.path}"\n\n'
    path = directory / "hub.toml"
    path.write_text(text)
    path.chmod(0o600)  # it holds node keys: the hub refuses to start on keys other users can read
    return path


async def start_hub(config: HubConfig | Path) -> HubService:
    cfg = config if isinstance(config, HubConfig) else load_config(config)
    hub = HubService(cfg, reopen_min_s=0.02, reopen_max_s=0.1)
    await hub.start()
    await eventually(lambda: all(link.connected or not Path(link.port).exists() for link in hub.links), what="ports")
    return hub
