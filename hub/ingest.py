"""Ingest: raw frames from every transport -> verified messages -> ledger, acks, commands (protocol v1).

One task consumes the frames of all links in arrival order (``enqueue`` is what transports call; it only
appends). For each frame:

* ``UplinkReceiver`` checks version, length, node, tag and strict seq (replay). A rejected frame is never
  applied; it is counted per node and reason (``rejected``; ``bad_tag`` is the forged-frame counter).
* ``event`` -> ``ledger.submit(SensorEvent)`` without waiting. The ledger dedupes by ``(node, event_seq)``;
  when the future resolves (after COMMIT) the node's ``EventMarks`` advance and an ack is due. Acks are
  **coalesced**: every commit resolves a whole batch of futures in one go, their callbacks only mark nodes,
  and one ``call_soon`` flush then sends a single ``Ack(highest contiguous)`` per node. Nothing is acked
  before its commit, and a failed commit acks nothing (the node retransmits).
* ``hello`` -> new downlink session if the boot count changed, ``Ack(highest contiguous)``, then ``set_lane``
  for every lane the ledger assigns to the node and ``request_state(ALL_LANES)`` (its counters book the first
  sensor gap), then queued commands.
* ``health`` -> answered with ``Ack(highest contiguous)`` (keeps an idle node's session alive).
* ``lane_state`` / ``health`` -> a per-node job that waits until everything received before it has committed,
  then books a ``SensorGap`` when the lane's counters disagree with the ledger, and past events an overflowing
  outbox dropped (``health.outbox_first`` > contiguous + 1) moves the contiguous mark (protocol section 11).
  A ``lane_state`` also becomes a ``LaneReading`` (weight, count, flags) for the shelf charts, thinned by
  ``ReadingThinner`` (count or flags changed, weight moved > 2 g, or 5 minutes passed) and submitted without waiting.
* ``command_result`` -> resolves the waiting ``command()`` call and is written to the audit trail.
* ``rfid_seen`` / ``rfid_lost`` -> kept in memory only (per node: tags present now, last 1,000 sightings).

The last accepted uplink seq travels with each ``SensorEvent`` (``uplink_seq``) or in a ``NodeUpdate`` for other
frames, so it commits with what it admitted; the downlink session/seq is persisted by reservation (``nodes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hub.ledger.models import ApplyResult, LaneReading, NodeUpdate, SensorEvent, SensorGap
from hub.ledger.sensor import ReadingThinner
from hub.ledger.service import LedgerService
from hub.nodes import (
    RESERVE_BLOCK,
    CommandOutcome,
    CommandTimeout,
    NodeLink,
    NodeRebooted,
    PendingCommand,
    UnknownNode,
)
from hub.queries import HubReader
from hub.transport import Link
from shared_protocol.errors import BAD_TAG, REASON_NAMES, ProtocolError
from shared_protocol.frame import Frame, UplinkReceiver, peek_header
from shared_protocol.messages import (
    AGE_UNKNOWN,
    ALL_LANES,
    DOWNLINK,
    Ack,
    CommandResult,
    Event,
    Health,
    Hello,
    LaneState,
    Message,
    RequestState,
    RfidLost,
    RfidSeen,
    SetLane,
)

log = logging.getLogger(__name__)

MAX_INBOX = 100_000  # frames waiting for ingest; beyond this they are dropped (nodes retransmit events)
DRAIN_CHUNK = 2000  # frames handled before yielding to the ledger writer and the transports

Job = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class IngestStats:
    frames: int = 0
    accepted: int = 0
    rejected: int = 0
    overruns: int = 0
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    failed: int = 0
    acks_sent: int = 0
    commands_sent: int = 0
    gaps: int = 0


class Ingest:
    def __init__(self, ledger: LedgerService, reader: HubReader, nodes: Iterable[NodeLink]) -> None:
        self.ledger = ledger
        self.reader = reader
        self.nodes: dict[int, NodeLink] = {n.node_id: n for n in nodes}
        self.receiver = UplinkReceiver({n.node_id: n.key for n in self.nodes.values()})
        self.stats = IngestStats()
        self._inbox: deque[tuple[Link, bytes, int]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._dirty: set[NodeLink] = set()
        self._flush_scheduled = False
        self._background: set[asyncio.Task[Any]] = set()
        self._reject_logged: set[tuple[int, int]] = set()
        self._route_warned: set[int] = set()
        self.readings = ReadingThinner()

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
            if node.worker is not None:
                node.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await node.worker
                node.worker = None
            node.jobs.clear()

    async def close(self) -> None:
        """After the ledger drained: fail commands still waiting."""
        await self.cancel_jobs()
        for node in self.nodes.values():
            for cmd in [*node.backlog, *node.sent.values()]:
                if cmd.future is not None and not cmd.future.done():
                    cmd.future.set_exception(CommandTimeout("the hub is stopping"))
        if self._background:
            await asyncio.wait(self._background, timeout=5)

    async def settle(self) -> None:
        """Wait for audit writes in flight (before the ledger closes)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)

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
        stats = node.stats
        stats.frames += 1
        stats.last_seen_ns = arrival_ns
        arrival_ms = (arrival_ns + wall_offset_ns) // 1_000_000
        stats.last_seen_ms = arrival_ms
        if not stats.first_seen_ns:
            stats.first_seen_ns = arrival_ns
        if node.link is not link:
            self._route(node, link)
        msg = frame.message
        if type(msg) is Event:
            self._event(node, frame, msg, arrival_ns, arrival_ms)
        elif type(msg) is Hello:
            self._hello(node, frame, msg, arrival_ms)
        elif type(msg) is Health:
            self._health(node, frame, msg, arrival_ms)
        elif type(msg) is LaneState:
            self._lane_state(node, frame, msg, arrival_ms)
        elif type(msg) is CommandResult:
            self._command_result(node, frame, msg, arrival_ns, arrival_ms)
        elif type(msg) is RfidSeen:
            key = (msg.lane, bytes(msg.epc).hex())
            if key not in node.rfid_present:
                node.rfid_log.append((arrival_ms, "seen", msg.lane, key[1], msg.rssi))
            node.rfid_present[key] = (msg.rssi, arrival_ms)
            self._persist_seq(node, frame)
        elif type(msg) is RfidLost:
            key = (msg.lane, bytes(msg.epc).hex())
            node.rfid_present.pop(key, None)
            node.rfid_log.append((arrival_ms, "lost", msg.lane, key[1], 0))
            self._persist_seq(node, frame)
        if node.ack_wanted or node.backlog:
            self._transmit(node)

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

    def _route(self, node: NodeLink, link: Link) -> None:
        if link.name != node.config_port and node.node_id not in self._route_warned and node.config_port:
            self._route_warned.add(node.node_id)
            log.warning(
                "node %d: frames arrive on %s, not its configured port %s: answering there",
                node.node_id,
                link.name,
                node.config_port,
            )
        node.link = link

    # ---------------------------------------------------------------------------------------------- events

    def _event(self, node: NodeLink, frame: Frame, msg: Event, arrival_ns: int, arrival_ms: int) -> None:
        self.stats.events += 1
        node.stats.events += 1
        if msg.age_ms == AGE_UNKNOWN:
            observed, note = arrival_ms, "age unknown (event from an earlier node boot): time is the hub's arrival"
        else:
            observed, note = max(0, arrival_ms - msg.age_ms), None
        fut = self.ledger.submit(
            SensorEvent(
                node.node_id,
                msg.event_seq,
                msg.lane,
                msg.kind,
                msg.count_delta,
                msg.weight_delta_dg,
                msg.confidence,
                observed,
                uplink_seq=frame.seq,
                note=note,
            )
        )
        fut.add_done_callback(functools.partial(self._event_done, node, msg))

    def _event_done(self, node: NodeLink, msg: Event, fut: asyncio.Future[ApplyResult]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self.stats.failed += 1
            node.stats.failed += 1
            log.warning("node %d: event %d not applied (%s): not acknowledged", node.node_id, msg.event_seq, exc)
            return
        if fut.result().duplicate:
            self.stats.duplicates += 1
            node.stats.duplicates += 1
        else:
            self.stats.applied += 1
            node.stats.applied += 1
            tally = node.tally(msg.lane)
            tally.total += msg.count_delta
            if msg.event_seq > tally.max_event:
                tally.max_event = msg.event_seq
        node.marks.add(msg.event_seq)
        node.ack_wanted = True
        self._dirty.add(node)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """One ack per node for everything that committed since the last flush."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for node in dirty:
            self._transmit(node)

    # ----------------------------------------------------------------------------------------- downlink

    def _transmit(self, node: NodeLink) -> None:
        """Send what is due (the ack first, then queued commands) as far as the session, link and the
        committed downlink-seq reservation allow; the rest waits for the next call."""
        if node.sender.session == 0 or node.link is None or not node.link.connected:
            return
        while node.ack_wanted or node.backlog:
            if node.sender.seq >= node.reserved:
                self._reserve(node)
                return
            if node.ack_wanted:
                node.ack_wanted = False
                self._send(node, Ack(node.marks.contiguous))
                node.stats.acks_sent += 1
                self.stats.acks_sent += 1
                continue
            cmd = node.backlog.popleft()
            if cmd.abandoned:
                continue
            cmd.session = node.sender.session
            cmd.seq = self._send(node, cmd.message)
            node.remember_sent(cmd)
            node.stats.commands_sent += 1
            self.stats.commands_sent += 1
        if node.reserved - node.sender.seq < RESERVE_BLOCK // 2:
            self._reserve(node)

    def _send(self, node: NodeLink, message: Message) -> int:
        frame = node.sender.encode(message)
        assert node.link is not None
        if not node.link.send_frame(frame):
            node.stats.downlink_dropped += 1
        return node.sender.seq

    def _reserve(self, node: NodeLink) -> None:
        if node.reserving:
            return
        session = node.sender.session
        target = max(node.reserved, node.sender.seq) + RESERVE_BLOCK
        node.reserving = target
        try:
            fut = self.ledger.submit(
                NodeUpdate(
                    node.node_id,
                    seen_ms=node.stats.last_seen_ms or None,  # not a frame from the node: keep its last-seen time
                    downlink_session=session,
                    downlink_seq=target,
                )
            )
        except Exception as exc:  # the ledger is closing
            node.reserving = 0
            log.debug("node %d: cannot reserve downlink seq: %s", node.node_id, exc)
            return
        fut.add_done_callback(functools.partial(self._reserved, node, session, target))

    def _reserved(self, node: NodeLink, session: int, target: int, fut: asyncio.Future[None]) -> None:
        node.reserving = 0
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.warning("node %d: could not persist the downlink seq (%s): downlink waits", node.node_id, exc)
            return
        if session == node.sender.session:
            node.reserved = max(node.reserved, target)
        self._transmit(node)  # also starts the new session's reservation if this one was for an older session

    # ------------------------------------------------------------------------------------ other messages

    def _persist_seq(self, node: NodeLink, frame: Frame, **update: Any) -> asyncio.Future[None]:
        fut = self.ledger.submit(NodeUpdate(node.node_id, uplink_seq=frame.seq, **update))
        fut.add_done_callback(_consume)
        return fut

    def _hello(self, node: NodeLink, frame: Frame, msg: Hello, arrival_ms: int) -> None:
        node.stats.hellos += 1
        old = node.sender.session
        fw = f"{msg.fw_major}.{msg.fw_minor}.{msg.fw_patch}"
        if node.hello is not None and node.hello.layout_hash != msg.layout_hash:
            log.warning(
                "node %d: lane layout changed (hash %08x -> %08x): re-wired?",
                node.node_id,
                node.hello.layout_hash,
                msg.layout_hash,
            )
        node.hello = msg
        if msg.boot_count != old:
            node.sender.new_session(msg.boot_count)
            node.reserved = 0  # nothing reserved in the new session yet: the first frame waits for the commit
            for cmd in node.sent.values():
                if cmd.future is not None and not cmd.future.done():
                    cmd.future.set_exception(NodeRebooted(f"node {node.node_id} rebooted before answering"))
            node.sent.clear()
            log.info(
                "node %d: hello, boot %d (firmware %s, %d lanes) on %s: new downlink session",
                node.node_id,
                msg.boot_count,
                fw,
                msg.lane_count,
                node.link.name if node.link else "?",
            )
        else:
            log.info("node %d: hello again, boot %d", node.node_id, msg.boot_count)
        self._persist_seq(node, frame, fw_version=fw)
        node.ack_wanted = True
        self._transmit(node)
        self._job(node, functools.partial(self._after_hello, node, msg))

    async def _after_hello(self, node: NodeLink, hello: Hello) -> None:
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
            msg = SetLane(lane.lane_index, lane.unit_weight_dg, lane.spread_permille, lane.sku)
            # Re-sent after every hello (a node re-hellos after 5 idle minutes): audited only if refused.
            node.backlog.append(PendingCommand(msg, "hub", record=False, created_ns=time.monotonic_ns()))
        node.backlog.append(
            PendingCommand(RequestState(ALL_LANES), "hub", record=False, created_ns=time.monotonic_ns())
        )
        self._transmit(node)

    def _health(self, node: NodeLink, frame: Frame, msg: Health, arrival_ms: int) -> None:
        node.health = msg
        node.health_ms = arrival_ms
        # Answer with the (committed) mark: an idle node hears from the hub every health period, so it keeps its
        # session instead of saying hello again after 5 quiet minutes (protocol section 11, node link timing).
        node.ack_wanted = True
        barrier = self._persist_seq(node, frame)
        self._job(node, functools.partial(self._check_outbox, node, msg, barrier))

    async def _check_outbox(self, node: NodeLink, msg: Health, barrier: asyncio.Future[None]) -> None:
        with contextlib.suppress(Exception):
            await barrier  # everything received before this health frame has committed (or failed)
        c = node.marks.contiguous
        target = 0
        if msg.outbox_first > c + 1:
            target = msg.outbox_first - 1
        elif msg.outbox_first == 0 and node.max_last_event > c:
            target = node.max_last_event  # outbox empty: nothing up to the counters' last event will come
        if target > max(c, node.pending_skip):
            node.pending_skip = target
            log.warning(
                "node %d: events %d..%d were dropped by its full outbox: booking a sensor gap from its lane counters",
                node.node_id,
                c + 1,
                target,
            )
        if node.pending_skip > node.marks.contiguous:
            self._internal(node, RequestState(ALL_LANES))

    def _lane_state(self, node: NodeLink, frame: Frame, msg: LaneState, arrival_ms: int) -> None:
        node.lane_states[msg.lane] = msg
        node.max_last_event = max(node.max_last_event, msg.last_event)
        barrier = self._persist_seq(node, frame)
        reading = LaneReading(node.node_id, msg.lane, arrival_ms, msg.weight_dg, msg.count, msg.flags)
        if self.readings.keep(reading):  # a lane the ledger does not know: ignored there
            self.ledger.submit(reading).add_done_callback(functools.partial(self._reading_done, reading))
        self._job(node, functools.partial(self._check_lane, node, msg, frame.seq, arrival_ms, barrier))

    def _reading_done(self, reading: LaneReading, fut: asyncio.Future[bool]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None or not fut.result():  # not stored (e.g. the lane is not registered yet): keep the next
            self.readings.forget(reading.node_id, reading.lane_index)
        if exc is not None:
            log.warning("node %d lane %d: lane reading not stored: %s", reading.node_id, reading.lane_index, exc)

    async def _check_lane(
        self, node: NodeLink, msg: LaneState, frame_seq: int, arrival_ms: int, barrier: asyncio.Future[None]
    ) -> None:
        with contextlib.suppress(Exception):
            await barrier
        c = node.marks.contiguous
        skip = node.pending_skip if node.pending_skip > c else 0
        if node.marks.after_skip(skip) < msg.last_event:
            log.debug(
                "node %d lane %d: counters include events not yet received; compared later", node.node_id, msg.lane
            )
            return
        tally = node.tally(msg.lane)
        if tally.max_event > msg.last_event:
            return  # the ledger already has a later event of this lane than these counters: the next report
        total = tally.total
        diff = msg.count - total
        if diff == 0 and not skip:
            return
        ref = f"f{frame_seq}:lane{msg.lane}"
        note = f"lane counters say {msg.count} (up to event {msg.last_event}), the ledger had {total}"
        if skip:
            ref = f"ev{c + 1}-{skip}:{ref}"
            note += f"; events {c + 1}..{skip} were dropped by the node's full outbox"
        gap = SensorGap(node.node_id, msg.lane, diff, ref, arrival_ms, skip_events_to=skip or None, note=note)
        try:
            result = await self.ledger.submit(gap)
        except Exception as exc:
            log.warning("node %d lane %d: sensor gap %+d not booked: %s", node.node_id, msg.lane, diff, exc)
            return
        if not result.duplicate:
            tally.total += diff
        self.stats.gaps += 1
        node.stats.gaps += 1
        log.warning("node %d lane %d: sensor gap %+d booked (%s)", node.node_id, msg.lane, diff, note)
        if skip:
            node.marks.skip_to(skip)
            if node.pending_skip <= node.marks.contiguous:
                node.pending_skip = 0
            node.ack_wanted = True
            self._transmit(node)

    # -------------------------------------------------------------------------------------------- commands

    def _internal(self, node: NodeLink, message: Message) -> None:
        node.backlog.append(PendingCommand(message, "hub", record=False, created_ns=time.monotonic_ns()))
        self._transmit(node)

    async def command(
        self, node_id: int, message: Message, *, timeout_s: float = 10.0, actor: str = "hub"
    ) -> CommandOutcome:
        """Send a command to a node and wait for its ``command_result`` (recorded in the audit trail).

        Queued while the node is not connected or has no session yet (sent after its next hello); raises
        ``UnknownNode``, ``CommandTimeout`` (also recorded) or ``NodeRebooted``."""
        node = self.nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"node {node_id} is not configured")
        if message.DIRECTION != DOWNLINK or isinstance(message, Ack):
            raise ValueError(f"{message.NAME} is not a command")
        message.encode_payload()  # range checks now (ProtocolError), not when it is sent
        fut: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
        cmd = PendingCommand(message, actor, fut, created_ns=time.monotonic_ns())
        node.backlog.append(cmd)
        self._transmit(node)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            cmd.abandoned = True
            sent = cmd.seq != 0
            self._record(
                node,
                cmd,
                {"status": "timeout", "sent": sent, "timeout_s": timeout_s},
                action="command_timeout",
            )
            why = "did not answer" if sent else "was not reachable (not connected or no hello yet)"
            raise CommandTimeout(f"node {node_id} {why}: {message.NAME} timed out after {timeout_s:g} s") from None

    def _command_result(self, node: NodeLink, frame: Frame, msg: CommandResult, arrival_ns: int, _ms: int) -> None:
        self._persist_seq(node, frame)
        cmd = node.sent.pop(msg.command_seq, None)
        if cmd is None:
            log.info(
                "node %d: result for unknown command seq %d (status %d, value %d)",
                node.node_id,
                msg.command_seq,
                msg.status,
                msg.value,
            )
            self._record_raw(
                node,
                {
                    "command": "unknown",
                    "seq": msg.command_seq,
                    "session": node.sender.session,
                    "status": msg.status,
                    "value": msg.value,
                },
            )
            return
        d = cmd.describe()
        outcome = CommandOutcome(
            node.node_id,
            d["command"],
            d["args"],
            cmd.session,
            cmd.seq,
            msg.status,
            msg.value,
            (arrival_ns - cmd.created_ns) / 1e9,
        )
        late = cmd.abandoned or (cmd.future is not None and cmd.future.done())
        if cmd.future is not None and not cmd.future.done():
            cmd.future.set_result(outcome)
        log.log(
            logging.INFO if outcome.ok else logging.WARNING,
            "node %d: %s %s -> %s (value %d)",
            node.node_id,
            outcome.command,
            outcome.args,
            outcome.status_name,
            outcome.value,
        )
        if cmd.record or not outcome.ok:
            extra: dict[str, Any] = {"status": outcome.status_name, "value": msg.value}
            if late:
                extra["late"] = True
            self._record(node, cmd, extra)

    def _record(self, node: NodeLink, cmd: PendingCommand, extra: dict[str, Any], action: str = "command") -> None:
        details = cmd.describe()
        details.update(node_id=node.node_id, session=cmd.session, seq=cmd.seq, requested_by=cmd.requested_by)
        details.update(extra)
        self._record_raw(node, details, action)

    def _record_raw(self, node: NodeLink, details: dict[str, Any], action: str = "command") -> None:
        async def write() -> None:
            try:
                await self.ledger.record_audit(f"node:{node.node_id}", action, details)
            except Exception as exc:
                log.warning("node %d: could not record %s: %s", node.node_id, action, exc)

        self._spawn(write())

    # ----------------------------------------------------------------------------------- tasks and jobs

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _job(self, node: NodeLink, job: Job) -> None:
        """Run ``job`` after the node's earlier jobs (its lane and outbox checks see one consistent order)."""
        node.jobs.append(job)
        if node.worker is None or node.worker.done():
            node.worker = asyncio.create_task(self._worker(node), name=f"node {node.node_id} jobs")
        elif node.jobs_waiter is not None and not node.jobs_waiter.done():
            node.jobs_waiter.set_result(None)

    async def _worker(self, node: NodeLink) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not node.jobs:
                node.jobs_waiter = loop.create_future()
                await node.jobs_waiter
                node.jobs_waiter = None
                continue
            job = node.jobs.popleft()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %d: job failed", node.node_id)

    # ------------------------------------------------------------------------------------------- status

    def forged(self, node_id: int) -> int:
        return self.receiver.rejected.total(node_id, BAD_TAG)

    def rejects_by_reason(self, node_id: int | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for (nid, reason), count in self.receiver.rejected.counts.items():
            if node_id is None or nid == node_id:
                name = REASON_NAMES.get(reason, str(reason))
                out[name] = out.get(name, 0) + count
        return out


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget future's exception (so asyncio does not log it as never retrieved)."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("ledger: node update failed: %s", fut.exception())
