"""Ingest: raw frames from every transport -> verified messages -> the handler of their type (protocol v1).

One task consumes the frames of all links in arrival order (``enqueue`` is the sink every transport calls; it only
appends). For each frame, ``UplinkReceiver`` (its CPython fast path: ``hub.transport.fastcodec``) checks version,
length, node, tag and strict seq (replay); a rejected frame is never applied, it is counted per node and reason
(``bad_tag`` is the forged-frame counter) and logged once per kind. An accepted frame is routed to its node's
``NodeSession`` (which answers on the link it came from) and dispatched by message type:

* ``event``, ``lane_state``, ``health``, ``tag_seen``, ``tag_lost``, ``reader_health`` -> ``SensorBooking``
  (hub/link/booking.py);
* ``hello`` -> the session's boot session, an ack, then a job that sends ``set_lane`` for every lane the ledger
  assigns to the node and ``request_state(ALL_LANES)`` (its counters book the first sensor gap); a new boot
  count also tells the ledger the node restarted (``TagRecheck``: it reads its tags again from nothing);
* ``command_result`` -> ``CommandDesk.answered`` (hub/link/commands.py);
* ``rfid_seen`` / ``rfid_lost`` (v1.0, unsequenced, sent by no firmware) -> counted per node, nothing booked.

Ingest knows nothing of the transport: every link implements ``hub.transport.Link``. The last accepted uplink seq
travels with each ``SensorEvent`` (``uplink_seq``) or in a ``NodeUpdate`` for other frames, so it commits with
what it admitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hub.ledger.reader import LedgerReader
from hub.ledger.service import LedgerService
from hub.ledger.tags import TagRecheck
from hub.link.booking import SensorBooking
from hub.link.commands import CommandDesk, CommandOutcome, CommandTimeout, UnknownNode
from hub.link.session import NodeSession, consume
from hub.transport import Link
from hub.transport.fastcodec import FastUplinkReceiver
from shared_protocol.errors import BAD_TAG, REASON_NAMES, ProtocolError
from shared_protocol.frame import Frame, peek_header
from shared_protocol.messages import (
    ALL_LANES,
    CommandResult,
    Event,
    Health,
    Hello,
    LaneState,
    Message,
    ReaderHealth,
    RequestState,
    RfidLost,
    RfidSeen,
    SetLane,
    TagLost,
    TagSeen,
)

log = logging.getLogger(__name__)

MAX_INBOX = 100_000  # frames waiting for ingest; beyond this they are dropped (nodes retransmit events)
DRAIN_CHUNK = 2000  # frames handled before yielding to the ledger writer and the transports

# (session, frame, its message, arrival monotonic ns, arrival wall-clock ms)
Handler = Callable[[NodeSession, Frame, Any, int, int], None]


@dataclass(slots=True)
class IngestStats:
    """What only ingest sees; everything per node is in the sessions' stats (``Ingest.totals`` sums them)."""

    frames: int = 0
    accepted: int = 0
    rejected: int = 0
    overruns: int = 0


@dataclass(frozen=True, slots=True)
class Totals:
    frames: int
    accepted: int
    rejected: int
    overruns: int
    events: int
    applied: int
    duplicates: int
    failed: int
    acks_sent: int
    commands_sent: int
    gaps: int


class Ingest:
    def __init__(
        self,
        ledger: LedgerService,
        reader: LedgerReader,
        nodes: Iterable[NodeSession],
        *,
        config_path: object = "hub.toml",
    ) -> None:
        self.ledger = ledger
        self.config_path = config_path  # the hub's hub.toml, for messages
        self.reader = reader
        self.nodes: dict[int, NodeSession] = {n.node_id: n for n in nodes}
        self.receiver = FastUplinkReceiver({n.node_id: n.key for n in self.nodes.values()})  # the shared code's rules
        self.stats = IngestStats()
        self.booking = SensorBooking(ledger)
        self.desk = CommandDesk(ledger)
        self._inbox: deque[tuple[Link, bytes, int]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._reject_logged: set[tuple[int, int]] = set()
        b = self.booking
        self._dispatch: dict[type[Message], Handler] = {
            Event: lambda node, frame, msg, _ns, ms: b.event(node, frame.seq, msg, ms),
            LaneState: lambda node, frame, msg, _ns, ms: b.lane_state(node, frame.seq, msg, ms),
            Health: lambda node, frame, msg, _ns, ms: b.health(node, frame.seq, msg, ms),
            Hello: self._hello,
            CommandResult: self._command_result,
            TagSeen: lambda node, frame, msg, _ns, ms: b.tag(node, frame.seq, msg, ms),
            TagLost: lambda node, frame, msg, _ns, ms: b.tag(node, frame.seq, msg, ms),
            ReaderHealth: lambda node, frame, msg, _ns, ms: b.reader_health(node, frame.seq, msg, ms),
            RfidSeen: self._rfid_v10,
            RfidLost: self._rfid_v10,
        }

    def add_node(self, node: NodeSession, uplink_seq: int = 0) -> None:
        """A node configured while the hub runs (``smartshelf flash`` provisioned it): its frames count from now."""
        self.nodes[node.node_id] = node
        self.receiver.keys[node.node_id] = node.key
        self.restore_uplink_seq(node.node_id, uplink_seq)

    def remove_node(self, node_id: int) -> None:
        """A node no longer configured: its frames are refused from now on (as an unknown node's)."""
        self.nodes.pop(node_id, None)
        self.receiver.keys.pop(node_id, None)

    def restore_uplink_seq(self, node_id: int, seq: int) -> None:
        if seq > 0:
            self.receiver.last_seq[node_id] = seq

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingest")

    async def stop(self) -> None:
        """Handle the frames already received, then stop (transports should have stopped reading)."""
        self._stopping = True
        self._wake()
        if self._task is not None:
            await self._task

    async def cancel_jobs(self) -> None:
        """Stop the per-node jobs (lane and outbox checks; they are redone after the next hello)."""
        for node in self.nodes.values():
            await node.jobs.cancel()

    async def settle(self) -> None:
        """Wait for audit writes in flight (before the ledger closes)."""
        await self.desk.settle()

    async def close(self) -> None:
        """After the ledger drained: fail commands still waiting."""
        await self.cancel_jobs()
        for node in self.nodes.values():
            for cmd in node.commands.all():
                cmd.fail(CommandTimeout("the hub is stopping"))
        await self.desk.settle()

    # ------------------------------------------------------------------------------------------ frame path

    def enqueue(self, link: Link, frame: bytes, arrival_ns: int) -> None:
        """The transports' sink: only appends (called from read callbacks)."""
        if len(self._inbox) >= MAX_INBOX:
            self.stats.overruns += 1
            return
        self._inbox.append((link, frame, arrival_ns))
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        inbox = self._inbox
        while True:
            if not inbox:
                if self._stopping:
                    return
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            wall_offset_ns = time.time_ns() - time.monotonic_ns()
            for _ in range(min(len(inbox), DRAIN_CHUNK)):
                link, data, arrival_ns = inbox.popleft()
                try:
                    self._handle(link, data, arrival_ns, wall_offset_ns)
                except Exception:  # pragma: no cover - one bad frame must not stop ingest
                    log.exception("ingest: unexpected error handling a frame from %s", link.name)
            await asyncio.sleep(0)

    def _handle(self, link: Link, data: bytes, arrival_ns: int, wall_offset_ns: int) -> None:
        self.stats.frames += 1
        try:
            frame = self.receiver.accept(data)
        except ProtocolError as err:
            self._rejected(link, data, err)
            return
        self.stats.accepted += 1
        node = self.nodes[frame.node_id]
        arrival_ms = (arrival_ns + wall_offset_ns) // 1_000_000
        node.heard(link, arrival_ns, arrival_ms)
        msg = frame.message
        handler = self._dispatch.get(type(msg))
        if handler is not None:
            handler(node, frame, msg, arrival_ns, arrival_ms)
        if node.ack_wanted or node.commands:
            node.transmit()

    def _rejected(self, link: Link, data: bytes, err: ProtocolError) -> None:
        self.stats.rejected += 1
        try:
            _t, node_id, seq = peek_header(data)
        except ProtocolError:
            node_id, seq = 0, 0
        known = node_id if node_id in self.nodes else 0
        key = (known, err.reason)
        if key not in self._reject_logged:  # first of its kind at warning; totals are in the status line
            self._reject_logged.add(key)
            log.warning("%s: rejected a frame (node %s, seq %s): %s", link.name, node_id or "?", seq or "?", err)
        else:
            log.debug("%s: rejected a frame (node %s, seq %s): %s", link.name, node_id or "?", seq or "?", err)

    # ------------------------------------------------------------------------------------------- handlers

    def _hello(self, node: NodeSession, frame: Frame, msg: Hello, _ns: int, ms: int) -> None:
        if node.hello_received(msg):  # a restart: the node holds no tag any more and reads them all again
            # with the frame's seq: a replay of this hello can never recheck the tags again
            self.ledger.submit(TagRecheck(node.node_id, ms, frame.seq)).add_done_callback(consume)
        node.persist_seq(frame.seq, fw_version=node.firmware)
        node.transmit()
        if not node.assignments_queued:  # a storm of hellos: one job sends the assignments of the latest
            node.assignments_queued = node.jobs.add(lambda: self._send_assignments(node))

    def resend_assignments(self, node_id: int) -> None:
        """Send the node the ledger's lane assignments again, as after a hello, from a job that reads them once
        everything queued before it is done (``HubService.set_lane``: after its ledger write, or when the node may
        have taken what the ledger did not)."""
        node = self.nodes.get(node_id)
        if node is not None and not node.assignments_queued:
            node.assignments_queued = node.jobs.add(lambda: self._send_assignments(node))

    async def _send_assignments(self, node: NodeSession) -> None:
        """After a hello: the ledger's lane assignments (re-sent after every hello, since a node re-hellos after 5
        idle minutes: audited only if refused), then a request for every lane's state."""
        node.assignments_queued = False
        hello = node.hello
        if hello is None:
            return
        try:
            lanes = await self.reader.assigned_lanes(node.node_id)
        except Exception as exc:
            log.warning("node %d: cannot read its lane assignments: %s", node.node_id, exc)
            lanes = []
        for lane in lanes:
            if lane.lane_index >= hello.lane_count:
                log.warning(
                    "node %d: the ledger assigns lane %d but the node has %d lanes",
                    node.node_id,
                    lane.lane_index,
                    hello.lane_count,
                )
                continue
            node.commands.internal(SetLane(lane.lane_index, lane.unit_weight_dg, lane.spread_permille, lane.sku))
        node.send_internal(RequestState(ALL_LANES))

    def _command_result(self, node: NodeSession, frame: Frame, msg: CommandResult, arrival_ns: int, _ms: int) -> None:
        node.persist_seq(frame.seq)
        self.desk.answered(node, msg, arrival_ns)

    def _rfid_v10(self, node: NodeSession, frame: Frame, _msg: RfidSeen | RfidLost, _ns: int, _ms: int) -> None:
        """v1.0 sightings carry no sequence number: a lost frame would lose one for good, so none is booked (v1.2
        nodes send ``tag_seen`` / ``tag_lost`` through their outbox)."""
        node.rfid.v10_ignored += 1
        node.persist_seq(frame.seq)

    # -------------------------------------------------------------------------------------------- commands

    async def command(
        self, node_id: int, message: Message, *, timeout_s: float = 10.0, actor: str = "hub"
    ) -> CommandOutcome:
        """Send a command to a node and wait for its answer (``CommandDesk.call``); ``UnknownNode`` for a node
        that is not configured."""
        node = self.nodes.get(node_id)
        if node is None:
            raise UnknownNode.of(node_id, self.nodes, self.config_path)
        return await self.desk.call(node, message, timeout_s=timeout_s, actor=actor)

    # ---------------------------------------------------------------------------------------------- status

    def forged(self, node_id: int) -> int:
        return self.receiver.rejected.total(node_id, BAD_TAG)

    def rejects_by_reason(self, node_id: int | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for (nid, reason), count in self.receiver.rejected.counts.items():
            if node_id is None or nid == node_id:
                name = REASON_NAMES.get(reason, str(reason))
                out[name] = out.get(name, 0) + count
        return out

    def totals(self) -> Totals:
        """Frames, rejects and overruns as ingest counted them; everything else summed over the nodes."""
        st = self.stats
        nodes = [n.stats for n in self.nodes.values()]
        return Totals(
            st.frames,
            st.accepted,
            st.rejected,
            st.overruns,
            events=sum(n.events for n in nodes),
            applied=sum(n.applied for n in nodes),
            duplicates=sum(n.duplicates for n in nodes),
            failed=sum(n.failed for n in nodes),
            acks_sent=sum(n.acks_sent for n in nodes),
            commands_sent=sum(n.commands_sent for n in nodes),
            gaps=sum(n.gaps for n in nodes),
        )
