"""What a node's sensing reports become in the ledger: events, lane readings and sensor gaps.

* ``event`` -> ``ledger.submit_then(SensorEvent, ...)`` without waiting (observed time = arrival - ``age_ms``;
  ``AGE_UNKNOWN`` books the arrival time with a note). The ledger dedupes by ``(node, event_seq)``. When its
  completion runs (right after COMMIT, no future in between) the node's marks advance and an ack is due. Acks are
  **coalesced**: one commit completes a whole batch in one go, the completions only mark nodes, and one
  ``call_soon`` flush then sends a single ``Ack(highest contiguous)`` per node. Nothing is acked before its commit;
  a failed commit acks nothing (the node retransmits).
* ``lane_state`` -> a ``LaneReading`` for the shelf charts, thinned by ``ReadingThinner`` and submitted without
  waiting, and a per-node job that, once everything received before it has committed, books the ``SensorGap`` its
  counters show (``gaps.lane_gap``).
* ``health`` -> a per-node job that, once everything before it has committed, notes events a full outbox dropped
  (``gaps.outbox_skip``; or that the node had delivered before the ledger's restore from a backup, told apart by the
  restore point and the node's own ``outbox_dropped``: ``gaps.skip_cause``) and asks for the lane states whose
  counters then book them. An ``outbox_first`` beyond the events the node has shown it produced skips only up to
  those (counted in ``outbox_claims``, logged once).
* ``tag_seen`` / ``tag_lost`` (v1.2) -> ``ledger.submit(TagEvent)``: events of the node (the same event_seq), so
  exactly the path of ``event``: deduplicated by the ledger, the mark advanced and the ack sent only from the
  committed outcome, coalesced with the weight events'. Time = arrival - ``age_ms`` (the arrival for a seen tag,
  the last read on the lane for a lost one); ``AGE_UNKNOWN`` books the hub's arrival time, marked as unknown. A
  dropped tag event is a hole in the sequence like a dropped weight event: the outbox skip books it from the lane
  counters, which tags never change, so it moves the mark without booking any stock (``hub.ledger.sensor``).
* ``reader_health`` -> the node's ``NodeRfid`` (status); what the ledger needs of it (a reader's state changed, an
  outage between reports, the periodic confirmation of the present tags) as a ``ReaderReport``, without waiting.

Every ledger item a frame leads to carries the frame's seq, or is submitted after a ``NodeUpdate`` that does (the
writer commits in submission order), so a frame whose effect committed has its seq committed too: a hub killed
between accepting a frame and committing it never books that frame twice, whatever is replayed to the next hub
(``tests/test_ingest_hostile.py``). Events further than ``session.MAX_EVENTS_AHEAD`` above the node's mark are
refused (``NodeSession.admits``); a lane state whose count no lane can hold (beyond ``MAX_COUNT`` units either way)
is not compared with the ledger (counted in ``implausible_counts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from hub.ledger.epc import epc_hex
from hub.ledger.models import LaneReading, SensorEvent, SensorGap
from hub.ledger.sensor import ReadingThinner
from hub.ledger.service import LedgerService
from hub.ledger.tags import LOST, SEEN, TagEvent
from hub.ledger.workqueue import Completion
from hub.link.gaps import lane_gap, outbox_overclaim, outbox_skip, shown
from hub.link.session import NodeSession, consume
from shared_protocol.messages import (
    AGE_UNKNOWN,
    ALL_LANES,
    MAX_COUNT,
    Event,
    Health,
    LaneState,
    ReaderHealth,
    RequestState,
    TagLost,
    TagSeen,
)

log = logging.getLogger(__name__)


class SensorBooking:
    def __init__(self, ledger: LedgerService) -> None:
        self.ledger = ledger
        self.readings = ReadingThinner()
        self._dirty: set[NodeSession] = set()
        self._flush_scheduled = False

    # ---------------------------------------------------------------------------------------------- events

    def event(self, node: NodeSession, frame_seq: int, msg: Event, arrival_ms: int) -> None:
        node.event_received()
        if not node.admits(msg.event_seq):
            return
        if msg.age_ms == AGE_UNKNOWN:
            observed, note = arrival_ms, "age unknown (event from an earlier node boot): time is the hub's arrival"
        else:
            observed, note = max(0, arrival_ms - msg.age_ms), None
        self.ledger.submit_then(  # no future: _event_done runs as soon as the batch committed
            SensorEvent(
                node.node_id,
                msg.event_seq,
                msg.lane,
                msg.kind,
                msg.count_delta,
                msg.weight_delta_dg,
                msg.confidence,
                observed,
                frame_seq,
                note,
            ),
            functools.partial(self._event_done, node, msg),
        )

    def _event_done(self, node: NodeSession, msg: Event, fut: Completion) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            node.event_failed()
            log.warning("node %d: event %d not applied (%s): not acknowledged", node.node_id, msg.event_seq, exc)
            return
        node.event_committed(msg, applied=not fut.result().duplicate)
        self._mark(node)

    # ------------------------------------------------------------------------------------------------ tags

    def tag(self, node: NodeSession, frame_seq: int, msg: TagSeen | TagLost, arrival_ms: int) -> None:
        node.rfid.tags += 1
        if not node.admits(msg.event_seq):
            return
        known = msg.age_ms != AGE_UNKNOWN
        seen = isinstance(msg, TagSeen)
        self.ledger.submit_then(
            TagEvent(
                node.node_id,
                msg.event_seq,
                msg.lane,
                SEEN if seen else LOST,
                epc_hex(bytes(msg.epc)),
                max(0, arrival_ms - msg.age_ms) if known else arrival_ms,
                msg.rssi if isinstance(msg, TagSeen) else None,
                ts_known=known,
                uplink_seq=frame_seq,
            ),
            functools.partial(self._tag_done, node, msg.event_seq),
        )

    def _tag_done(self, node: NodeSession, event_seq: int, fut: Completion) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            node.event_failed()
            log.warning("node %d: tag event %d not applied (%s): not acknowledged", node.node_id, event_seq, exc)
            return
        node.tag_committed(event_seq, applied=not fut.result().duplicate)
        self._mark(node)

    def reader_health(self, node: NodeSession, frame_seq: int, msg: ReaderHealth, arrival_ms: int) -> None:
        report = node.rfid.report(msg, arrival_ms, frame_seq)
        if report is not None:  # it carries the frame's seq: both commit together, a replay cannot book it again
            self.ledger.submit(report).add_done_callback(consume)
        else:
            node.persist_seq(frame_seq)

    def _mark(self, node: NodeSession) -> None:
        """An outcome committed for ``node``: one flush (after this commit's callbacks) sends its ack."""
        self._dirty.add(node)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """One ack per node for everything that committed since the last flush."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for node in dirty:
            node.transmit()

    # ---------------------------------------------------------------------------------------- lane states

    def lane_state(self, node: NodeSession, frame_seq: int, msg: LaneState, arrival_ms: int) -> None:
        node.lane_state_received(msg)
        barrier = node.persist_seq(frame_seq)
        reading = LaneReading(node.node_id, msg.lane, arrival_ms, msg.weight_dg, msg.count, msg.flags)
        if self.readings.keep(reading):  # a lane the ledger does not know: ignored there
            self.ledger.submit_then(reading, functools.partial(self.reading_done, reading))
        node.jobs.add(functools.partial(self._check_lane, node, msg, frame_seq, arrival_ms, barrier))

    def reading_done(self, reading: LaneReading, fut: Completion | asyncio.Future[bool]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None or not fut.result():  # not stored (e.g. the lane is not registered yet): keep the next
            self.readings.forget(reading.node_id, reading.lane_index)
        if exc is not None:
            log.warning("node %d lane %d: lane reading not stored: %s", reading.node_id, reading.lane_index, exc)

    async def _check_lane(
        self, node: NodeSession, msg: LaneState, frame_seq: int, arrival_ms: int, barrier: asyncio.Future[None]
    ) -> None:
        with contextlib.suppress(Exception):
            await barrier  # everything received before this lane state has committed (or failed)
        if not -MAX_COUNT <= msg.count <= MAX_COUNT:  # no lane holds that many: a broken node, never booked
            node.stats.implausible_counts += 1
            node.warn_once("count", "lane %d says it holds %d units: not compared with the ledger", msg.lane, msg.count)
            return
        gap = lane_gap(msg, node.tally(msg.lane), node.marks, node.pending_skip, frame_seq, node.skip_cause)
        if gap is None:
            return
        booking = SensorGap(
            node.node_id, gap.lane, gap.diff, gap.ref, arrival_ms, skip_events_to=gap.skip_to or None, note=gap.note
        )
        try:
            result = await self.ledger.submit(booking)
        except Exception as exc:
            log.warning("node %d lane %d: sensor gap %+d not booked: %s", node.node_id, gap.lane, gap.diff, exc)
            return
        if gap.diff or not gap.skip_to:
            log.warning("node %d lane %d: sensor gap %+d booked (%s)", node.node_id, gap.lane, gap.diff, gap.note)
        else:
            log.warning("node %d: %s; no lane counter changed: the mark moves, no stock booked", node.node_id, gap.note)
        node.gap_booked(gap.lane, gap.diff, duplicate=result.duplicate, skip_to=gap.skip_to)

    # -------------------------------------------------------------------------------------------- health

    def health(self, node: NodeSession, frame_seq: int, msg: Health, arrival_ms: int) -> None:
        node.health_received(msg, arrival_ms)
        barrier = node.persist_seq(frame_seq)
        # The lane states received before this health: "outbox empty" speaks for the events they name, not for
        # events of lane states that arrive after it (a burst, a BLE connection's backlog) while the job waits.
        last_event = node.max_last_event
        node.jobs.add(functools.partial(self._check_outbox, node, msg, last_event, barrier))

    async def _check_outbox(
        self, node: NodeSession, msg: Health, last_event: int, barrier: asyncio.Future[None]
    ) -> None:
        with contextlib.suppress(Exception):
            await barrier  # everything received before this health frame has committed (or failed)
        if outbox_overclaim(msg.outbox_first, node.marks, last_event):  # the skip stops at what it has shown
            node.stats.outbox_claims += 1
            node.warn_once(
                "outbox",
                "health says its outbox starts at event %d, but it has shown events only up to %d:"
                " later events are not taken as dropped",
                msg.outbox_first,
                shown(node.marks, last_event),
            )
        skip = outbox_skip(msg.outbox_first, node.marks, last_event, node.pending_skip)
        if node.outbox_dropped(skip, msg.outbox_dropped):  # a full outbox, or lost with a restore (gaps.skip_cause)
            log.warning(
                "node %d: events %d..%d %s: booking a sensor gap from its lane counters",
                node.node_id,
                node.marks.contiguous + 1,
                skip,
                node.skip_cause,
            )
        if node.pending_skip > node.marks.contiguous:
            node.send_internal(RequestState(ALL_LANES))
