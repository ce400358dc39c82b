"""What the hub keeps per node while it runs: event marks, the downlink session, commands, link statistics.

* ``EventMarks`` mirrors the ledger's highest contiguous ``event_seq`` for a node from *committed* outcomes
  only (an event's future resolved ``Applied`` or ``Duplicate``), with the same rule as ``hub.ledger.sensor``,
  so an ack built from it never covers an event that is not durable.
* The downlink ``(session, seq)`` is persisted by **reservation**: before the hub sends a frame numbered above
  ``reserved``, a ``NodeUpdate(downlink_session, downlink_seq=reserved + RESERVE_BLOCK)`` must have committed.
  A restarted hub resumes at the stored reservation, which is above every seq it ever sent in that session, so
  the node (strictly increasing seq per boot, protocol section 4.2) accepts its next frame without a new hello.
  The reservation for a new session commits before its first frame, so the stored session is never older than
  one the node has heard from the hub. Costs one extra ledger item per ``RESERVE_BLOCK`` downlink frames.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from hub.transport import Link
from shared_protocol.auth import Key
from shared_protocol.frame import DownlinkSender
from shared_protocol.messages import (
    STATUS_BAD_ARGS,
    STATUS_BUSY,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_UNSUPPORTED,
    Health,
    Hello,
    LaneState,
    Message,
)

RESERVE_BLOCK = 1024
MAX_SENT_COMMANDS = 256  # sent commands remembered per node for late answers
STATUS_NAMES = {
    STATUS_OK: "ok",
    STATUS_BAD_ARGS: "bad_args",
    STATUS_UNSUPPORTED: "unsupported",
    STATUS_BUSY: "busy",
    STATUS_FAILED: "failed",
}


class CommandError(Exception):
    """A command could not be delivered or answered; the message says why."""


class UnknownNode(CommandError):
    pass


class CommandTimeout(CommandError):
    pass


class NodeRebooted(CommandError):
    pass


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    node_id: int
    command: str
    args: dict[str, Any]
    session: int
    seq: int
    status: int
    value: int
    elapsed_s: float

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, f"status {self.status}")

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


@dataclass(slots=True)
class PendingCommand:
    message: Message
    requested_by: str
    future: asyncio.Future[CommandOutcome] | None = None  # None: fire and record (set_lane after hello, ...)
    record: bool = True  # write the answer to the audit trail
    created_ns: int = 0
    session: int = 0  # set when sent
    seq: int = 0
    abandoned: bool = False  # the caller gave up before it was sent

    def describe(self) -> dict[str, Any]:
        d = self.message.to_dict()
        return {"command": d.pop("type"), "args": d}


class EventMarks:
    """Highest contiguous committed ``event_seq`` of one node, plus committed ones above it."""

    __slots__ = ("above", "contiguous")

    def __init__(self, contiguous: int = 0, above: set[int] | None = None) -> None:
        self.contiguous = contiguous
        self.above: set[int] = set(above or ())
        self._advance()

    def _advance(self) -> None:
        above = self.above
        while self.contiguous + 1 in above:
            self.contiguous += 1
            above.discard(self.contiguous)

    def add(self, event_seq: int) -> None:
        if event_seq == self.contiguous + 1:
            self.contiguous = event_seq
            if self.above:
                self._advance()
        elif event_seq > self.contiguous:
            self.above.add(event_seq)

    def skip_to(self, event_seq: int) -> None:
        if event_seq > self.contiguous:
            self.contiguous = event_seq
            self.above = {s for s in self.above if s > event_seq}
            self._advance()

    def after_skip(self, event_seq: int) -> int:
        """The contiguous mark ``skip_to(event_seq)`` would give, without changing anything."""
        c = max(self.contiguous, event_seq)
        while c + 1 in self.above:
            c += 1
        return c


@dataclass(slots=True)
class LaneTally:
    """What the ledger holds for one lane, kept from committed outcomes (loaded once at start)."""

    total: int = 0  # observed units: events + gaps (+ reversals present at start)
    max_event: int = 0  # highest event_seq of this lane in the ledger


@dataclass(slots=True)
class NodeStats:
    frames: int = 0
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    failed: int = 0
    acks_sent: int = 0
    commands_sent: int = 0
    downlink_dropped: int = 0
    gaps: int = 0
    hellos: int = 0
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    last_seen_ms: int = 0


@dataclass(slots=True, eq=False)  # identity: kept in sets
class NodeLink:
    node_id: int
    key: Key
    config_port: str
    sender: DownlinkSender
    marks: EventMarks
    reserved: int = 0
    reserving: int = 0
    link: Link | None = None
    ack_wanted: bool = False
    backlog: deque[PendingCommand] = field(default_factory=deque)
    sent: OrderedDict[int, PendingCommand] = field(default_factory=OrderedDict)
    pending_skip: int = 0  # outbox overflow: events up to this one will never arrive (protocol section 11)
    max_last_event: int = 0  # highest lane_state.last_event seen
    hello: Hello | None = None
    health: Health | None = None
    health_ms: int = 0
    lane_states: dict[int, LaneState] = field(default_factory=dict)
    tallies: dict[int, LaneTally] = field(default_factory=dict)
    rfid_present: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)  # (lane, epc) -> rssi, ms
    rfid_log: deque[tuple[int, str, int, str, int]] = field(default_factory=lambda: deque(maxlen=1000))
    stats: NodeStats = field(default_factory=NodeStats)
    worker: asyncio.Task[None] | None = None
    jobs: deque[Any] = field(default_factory=deque)
    jobs_waiter: asyncio.Future[None] | None = None

    @classmethod
    def restore(
        cls,
        node_id: int,
        key: bytes,
        config_port: str,
        *,
        contiguous: int = 0,
        above: set[int] | None = None,
        downlink_session: int = 0,
        downlink_seq: int = 0,
    ) -> NodeLink:
        k = Key(key)
        sender = DownlinkSender(node_id, k)
        sender.session = downlink_session
        sender.seq = downlink_seq
        return cls(node_id, k, config_port, sender, EventMarks(contiguous, above), reserved=downlink_seq)

    @property
    def session(self) -> int:
        return self.sender.session

    @property
    def up(self) -> bool:
        return self.link is not None and self.link.connected

    def tally(self, lane: int) -> LaneTally:
        t = self.tallies.get(lane)
        if t is None:
            t = self.tallies[lane] = LaneTally()
        return t

    def remember_sent(self, cmd: PendingCommand) -> None:
        self.sent[cmd.seq] = cmd
        while len(self.sent) > MAX_SENT_COMMANDS:
            self.sent.popitem(last=False)
