"""``NodeSession``: everything the hub keeps for one node while it runs, and the methods that change it.

* **Identity and route**: node id, key, configured port, and the ``Link`` its last authenticated frame arrived on
  (the hub answers there: a serial port or a BLE connection; a node heard on another port than its configured one is
  answered where it is, with one warning).
* **Boot session** (``hello``): a new boot count starts a new downlink session (seq from 1); what was sent in the
  old one will never be answered (its callers get ``NodeRebooted``).
* **Acks**: ``EventMarks`` advance from committed outcomes only (``event_committed``); ``want_ack`` marks an ack
  as due and ``transmit`` sends one ``Ack(highest contiguous)`` for all of them.
* **Downlink seq reservation**: ``(session, seq)`` is persisted by reservation. Before a frame numbered above
  ``reserved`` goes out, a ``NodeUpdate(downlink_session, downlink_seq=reserved + RESERVE_BLOCK)`` must have
  committed (requested in the background when half the block is used; the first frame of a new session waits
  for it). A restarted hub resumes at the stored reservation, above every seq it ever sent in that session, so
  the node (strictly increasing seq per boot, protocol section 4.2) accepts its next frame without a new hello,
  and the stored session is never older than one the node has heard from the hub. Costs one extra ledger item
  per ``RESERVE_BLOCK`` downlink frames.
* **transmit**: the ack first, then queued commands, as far as the session, the link and the reservation allow;
  the rest waits for the next call.
* What the node last reported (hello, health, lane states, its RFID readers: ``hub.link.rfid``), its lane tallies,
  an outbox skip pending (``hub.link.gaps``), per-node jobs and statistics.

**Bounded, whatever an authenticated node sends** (a node with a valid key can still misbehave: a bug, a hello
storm, counters from a corrupted flash). Per node: ``lane_states`` and ``tallies`` hold at most 32 lanes and
``rfid.readers`` 8 readers (the protocol's ranges); ``marks.above`` at most ``marks.MAX_ABOVE`` event seqs;
``jobs`` at most ``jobs.MAX_JOBS`` waiting checks; ``commands`` at most ``commands.MAX_BACKLOG`` commands waiting
(the hub's own ones once each) and ``commands.MAX_SENT_COMMANDS`` sent ones. An event further than
``MAX_EVENTS_AHEAD`` above the committed mark (or above an outbox skip pending) is refused (``admits``): not booked,
not acknowledged, so the node sends it again once the mark has moved; a firmware node never gets there (its outbox
holds 256 records). An outbox skip (``health.outbox_first``) never goes past the events the node has shown it
produced (``gaps.shown``), so one absurd ``outbox_first`` cannot make its later events count as dropped. What is
dropped is counted (the status' ``dropped``) and logged once per node and kind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from hub.ledger.models import NodeUpdate
from hub.ledger.service import LedgerService
from hub.link.commands import CommandQueue, NodeRebooted
from hub.link.gaps import OVERFLOW, RestoreMark, skip_cause
from hub.link.jobs import NodeJobs
from hub.link.marks import EventMarks, LaneTally
from hub.link.rfid import NodeRfid
from hub.transport import Link
from shared_protocol.auth import Key
from shared_protocol.frame import DownlinkSender
from shared_protocol.messages import Ack, Event, Health, Hello, LaneState, Message

log = logging.getLogger(__name__)

RESERVE_BLOCK = 1024
MAX_EVENTS_AHEAD = 4096  # an event_seq further than this above the committed mark is refused (not booked, not acked)
HELLO_LOG_INTERVAL_NS = 60_000_000_000  # a node's hellos are logged at info at most once a minute (hello storms)


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
    refused_ahead: int = 0  # events too far above the mark: not booked, not acknowledged
    implausible_counts: int = 0  # lane states whose count no lane can hold: not compared with the ledger
    outbox_claims: int = 0  # health reports whose outbox_first is beyond the events the node has shown: capped
    last_events_ahead: int = 0  # lane states whose last_event no event could be admitted at: believed only that far
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    last_seen_ms: int = 0


@dataclass(frozen=True, slots=True)
class StoredState:
    """A node's protocol state as the ledger's ``nodes`` table and movements hold it (restored at start)."""

    contiguous: int = 0
    above: frozenset[int] = frozenset()
    downlink_session: int = 0
    downlink_seq: int = 0
    tallies: dict[int, LaneTally] = field(default_factory=dict)
    restored: RestoreMark | None = None  # the node's mark in the backup this ledger was restored from


class NodeSession:
    def __init__(
        self, node_id: int, key: bytes, config_port: str, ledger: LedgerService, stored: StoredState | None = None
    ) -> None:
        stored = stored or StoredState()
        self.node_id = node_id
        self.key = Key(key)
        self.config_port = config_port
        self.ledger = ledger
        self.sender = DownlinkSender(node_id, self.key)
        self.sender.session = stored.downlink_session
        self.sender.seq = stored.downlink_seq
        self.reserved = stored.downlink_seq  # committed reservation: frames up to this seq may go out
        self._reserving = 0  # the reservation being committed (0: none)
        self.marks = EventMarks(stored.contiguous, set(stored.above))
        self.tallies: dict[int, LaneTally] = dict(stored.tallies)
        self.link: Link | None = None
        self._route_warned = False
        self.ack_wanted = False
        self.commands = CommandQueue()
        self.pending_skip = 0  # outbox overflow: events up to this one will never arrive (protocol section 11)
        self.skip_cause = OVERFLOW  # ... why (gaps.skip_cause: a full outbox, or the ledger's restore)
        self.restored = stored.restored
        self.max_last_event = 0  # highest lane_state.last_event seen
        self.hello: Hello | None = None
        self.health: Health | None = None
        self.health_ms = 0
        self.lane_states: dict[int, LaneState] = {}
        self.rfid = NodeRfid(node_id)
        self.stats = NodeStats()
        self.jobs = NodeJobs(f"node {node_id}")
        self.assignments_queued = False  # a hello's lane assignments are waiting to be sent (one job for a storm)
        self._hello_logged_ns = 0
        self._warned: set[str] = set()  # the kinds of drops already logged at warning (at most a handful)

    @property
    def session(self) -> int:
        return self.sender.session

    @property
    def up(self) -> bool:
        return self.link is not None and self.link.connected

    @property
    def firmware(self) -> str | None:
        h = self.hello
        return f"{h.fw_major}.{h.fw_minor}.{h.fw_patch}" if h is not None else None

    def tally(self, lane: int) -> LaneTally:
        t = self.tallies.get(lane)
        if t is None:
            t = self.tallies[lane] = LaneTally()
        return t

    # --------------------------------------------------------------------------------------- uplink side

    def heard(self, link: Link, arrival_ns: int, arrival_ms: int) -> None:
        """An authenticated frame arrived on ``link``: count it and answer there from now on."""
        stats = self.stats
        stats.frames += 1
        stats.last_seen_ns = arrival_ns
        stats.last_seen_ms = arrival_ms
        if not stats.first_seen_ns:
            stats.first_seen_ns = arrival_ns
        if self.link is not link:
            if link.name != self.config_port and self.config_port and not self._route_warned:
                self._route_warned = True
                log.warning(
                    "node %d: frames arrive on %s, not its configured port %s: answering there",
                    self.node_id,
                    link.name,
                    self.config_port,
                )
            self.link = link

    def warn_once(self, kind: str, text: str, *args: Any) -> None:
        """Log a drop of ``kind`` at warning the first time for this node, at debug after (the counters say more)."""
        first = kind not in self._warned
        self._warned.add(kind)
        log.log(logging.WARNING if first else logging.DEBUG, "node %d: " + text, self.node_id, *args)

    def admits(self, event_seq: int) -> bool:
        """Is ``event_seq`` close enough to the committed mark, or above a pending outbox skip, to be booked? One
        further is refused (counted, not acknowledged: the node sends it again), so what the ledger and ``marks``
        hold above the mark stays bounded."""
        c, skip = self.marks.contiguous, self.pending_skip
        if event_seq <= c + MAX_EVENTS_AHEAD or skip < event_seq <= skip + MAX_EVENTS_AHEAD:
            return True
        self.stats.refused_ahead += 1
        self.warn_once("ahead", "event %d is more than %d above its mark %d: refused", event_seq, MAX_EVENTS_AHEAD, c)
        return False

    def dropped(self) -> dict[str, int]:
        """What the bounds dropped for this node, by kind (the status)."""
        return {
            "events_ahead": self.stats.refused_ahead,
            "implausible_counts": self.stats.implausible_counts,
            "outbox_claims": self.stats.outbox_claims,
            "last_events_ahead": self.stats.last_events_ahead,
            "marks_forgotten": self.marks.forgotten,
            "jobs": self.jobs.dropped,
            "commands": self.commands.dropped,
            "sent_forgotten": self.commands.sent_forgotten,
            "unknown_results_unrecorded": self.commands.unknown_unrecorded,
        }

    def hello_received(self, msg: Hello) -> bool:
        """A hello: a new boot count starts a new downlink session; an ack is due either way. True when the node
        rebooted (another boot count than the session's)."""
        self.stats.hellos += 1
        now_ns = time.monotonic_ns()
        level = logging.INFO if now_ns - self._hello_logged_ns >= HELLO_LOG_INTERVAL_NS else logging.DEBUG
        if level == logging.INFO:
            self._hello_logged_ns = now_ns
        if self.hello is not None and self.hello.layout_hash != msg.layout_hash:
            log.warning(
                "node %d: lane layout changed (hash %08x -> %08x): re-wired?",
                self.node_id,
                self.hello.layout_hash,
                msg.layout_hash,
            )
        self.hello = msg
        rebooted = msg.boot_count != self.sender.session
        if rebooted:
            self.rfid.restarted()
            self.sender.new_session(msg.boot_count)
            self.reserved = 0  # nothing reserved in the new session yet: the first frame waits for the commit
            self.commands.forget_sent(NodeRebooted(f"node {self.node_id} rebooted before answering"))
            log.log(
                level,
                "node %d: hello, boot %d (firmware %s, %d lanes) on %s: new downlink session",
                self.node_id,
                msg.boot_count,
                self.firmware,
                msg.lane_count,
                self.link.name if self.link else "?",
            )
        else:
            log.log(level, "node %d: hello again, boot %d (%d hellos)", self.node_id, msg.boot_count, self.stats.hellos)
        self.ack_wanted = True
        return rebooted

    def lane_state_received(self, msg: LaneState) -> None:
        """Keep a lane state; its ``last_event`` counts as shown (an outbox skip may reach it: ``gaps.shown``) only
        as far as an event could be admitted (``admits``): what a corrupted counter (2**31) can make the hub skip is
        bounded as events ahead are, and an honest node that dropped more than that gets there a window at a time."""
        self.lane_states[msg.lane] = msg
        last = msg.last_event
        bound = max(self.marks.contiguous, self.pending_skip) + MAX_EVENTS_AHEAD
        if last > bound:
            self.stats.last_events_ahead += 1
            self.warn_once(
                "last_event", "lane %d names event %d, more than %d above its mark: taken as %d", msg.lane, last,
                MAX_EVENTS_AHEAD, bound,
            )  # fmt: skip
            last = bound
        self.max_last_event = max(self.max_last_event, last)

    def health_received(self, msg: Health, arrival_ms: int) -> None:
        # Answered with the (committed) mark: an idle node hears from the hub every health period, so it keeps its
        # session instead of saying hello again after 5 quiet minutes (protocol section 11, node link timing).
        self.health = msg
        self.health_ms = arrival_ms
        self.ack_wanted = True

    def event_received(self) -> None:
        self.stats.events += 1

    def event_failed(self) -> None:
        """An event's transaction failed: nothing of it is booked or acknowledged (the node retransmits)."""
        self.stats.failed += 1

    def event_committed(self, msg: Event, applied: bool) -> None:
        """An event's ledger outcome committed (``applied`` or a duplicate): the mark may move, an ack is due."""
        if applied:
            self.stats.applied += 1
            tally = self.tally(msg.lane)
            tally.total += msg.count_delta
            if msg.event_seq > tally.max_event:
                tally.max_event = msg.event_seq
        else:
            self.stats.duplicates += 1
        self.marks.add(msg.event_seq)
        self.ack_wanted = True

    def tag_committed(self, event_seq: int, applied: bool) -> None:
        """A tag event's ledger outcome committed: it is one of the node's events, so the mark may move and an ack
        is due, exactly as for a weight event (it counts in no lane tally: tags are not weight)."""
        if applied:
            self.rfid.tags_applied += 1
        else:
            self.rfid.tags_duplicates += 1
        self.marks.add(event_seq)
        self.ack_wanted = True

    def outbox_dropped(self, upto: int, dropped: int) -> bool:
        """A health report shows events up to ``upto`` will never arrive (``gaps.outbox_skip``); True when that
        is news. The lane states requested next book them as a gap that skips the mark past them. ``dropped``: the
        report's ``outbox_dropped``, which says why (``gaps.skip_cause``)."""
        if upto == self.pending_skip:
            return False
        self.pending_skip = upto
        self.skip_cause = skip_cause(self.marks, self.restored, dropped)
        return True

    def gap_booked(self, lane: int, diff: int, *, duplicate: bool, skip_to: int) -> None:
        """A sensor gap committed: the lane's tally holds it, and a gap covering events a full outbox dropped moves
        the mark past them (acked now)."""
        if not duplicate:
            self.tally(lane).total += diff
        self.stats.gaps += 1
        if skip_to:
            self.marks.skip_to(skip_to)
            if self.pending_skip <= self.marks.contiguous:
                self.pending_skip = 0
            self.ack_wanted = True
            self.transmit()

    def persist_seq(self, frame_seq: int, *, fw_version: str | None = None) -> asyncio.Future[None]:
        """Persist the last accepted uplink seq (a frame that carries no event); the future is the barrier behind
        everything received before it."""
        fut = self.ledger.submit(NodeUpdate(self.node_id, uplink_seq=frame_seq, fw_version=fw_version))
        fut.add_done_callback(consume)
        return fut

    # ------------------------------------------------------------------------------------- downlink side

    def send_internal(self, message: Message) -> None:
        self.commands.internal(message)
        self.transmit()

    def transmit(self) -> None:
        """Send what is due (the ack first, then queued commands) as far as the session, link and the committed
        downlink-seq reservation allow; the rest waits for the next call."""
        link = self.link
        if self.sender.session == 0 or link is None or not link.connected:
            return
        while self.ack_wanted or self.commands:
            if self.sender.seq >= self.reserved:
                self._reserve()
                return
            if self.ack_wanted:
                self.ack_wanted = False
                self._send(link, Ack(self.marks.contiguous))
                self.stats.acks_sent += 1
                continue
            cmd = self.commands.take()
            if cmd is None:
                break
            self.commands.sent_as(cmd, self.sender.session, self._send(link, cmd.message))
            self.stats.commands_sent += 1
        if self.reserved - self.sender.seq < RESERVE_BLOCK // 2:
            self._reserve()

    def _send(self, link: Link, message: Message) -> int:
        frame = self.sender.encode(message)
        if not link.send_frame(frame):
            self.stats.downlink_dropped += 1
        return self.sender.seq

    def _reserve(self) -> None:
        if self._reserving:
            return
        session = self.sender.session
        target = max(self.reserved, self.sender.seq) + RESERVE_BLOCK
        self._reserving = target
        try:
            fut = self.ledger.submit(
                NodeUpdate(
                    self.node_id,
                    seen_ms=self.stats.last_seen_ms or None,  # not a frame from the node: keep its last-seen time
                    downlink_session=session,
                    downlink_seq=target,
                )
            )
        except Exception as exc:  # the ledger is closing
            self._reserving = 0
            log.debug("node %d: cannot reserve downlink seq: %s", self.node_id, exc)
            return
        fut.add_done_callback(functools.partial(self._reserved, session, target))

    def _reserved(self, session: int, target: int, fut: asyncio.Future[None]) -> None:
        self._reserving = 0
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.warning("node %d: could not persist the downlink seq (%s): downlink waits", self.node_id, exc)
            return
        if session == self.sender.session:
            self.reserved = max(self.reserved, target)
        self.transmit()  # also starts the new session's reservation if this one was for an older session

    # --------------------------------------------------------------------------------------------- status

    def status(self, now_ns: int, rejected: dict[str, int], forged: int) -> dict[str, Any]:
        """The node's part of ``HubService.status()`` (JSON-ready)."""
        s = self.stats
        return {
            "node_id": self.node_id,
            "port": self.config_port,
            "link": self.link.name if self.link is not None else None,
            "up": self.up,
            "session": self.session,
            "contiguous_event_seq": self.marks.contiguous,
            "last_seen_s_ago": round((now_ns - s.last_seen_ns) / 1e9, 3) if s.last_seen_ns else None,
            "last_seen_ms": s.last_seen_ms or None,
            "frames": s.frames,
            "events": s.events,
            "applied": s.applied,
            "duplicates": s.duplicates,
            "failed": s.failed,
            "acks_sent": s.acks_sent,
            "commands_sent": s.commands_sent,
            "downlink_dropped": s.downlink_dropped,
            "gaps": s.gaps,
            "hellos": s.hellos,
            "dropped": self.dropped(),
            "forged_frames": forged,
            "rejected": rejected,
            "firmware": self.firmware,
            "health": self.health.to_dict() if self.health is not None else None,
            "lane_states": {str(k): v.to_dict() for k, v in sorted(self.lane_states.items())},
            "rfid": self.rfid.status(time.time_ns() // 1_000_000),
        }


def consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget future's exception (so asyncio does not log it as never retrieved)."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("ledger: node update failed: %s", fut.exception())
