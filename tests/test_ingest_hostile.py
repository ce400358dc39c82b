"""Ingest against nodes that hold a valid key and misbehave (issue 13, section 5).

Frames are built and signed by ``shared_protocol`` with the node's own key, so every one of them passes
verification; what they say is hostile: events far above the node's mark, counters no lane can hold, hello storms,
endless distinct RFID tags, answers to commands never sent. They are fed to the running hub's ``Ingest`` exactly as
a transport does (``enqueue``), and afterwards: no exception escaped (nothing logged at ERROR), the ledger's
consistency check holds, and every per-node structure is within its bound.

The last test kills the ledger's writer at each commit of a frame sequence (a hub killed mid-way: everything after
that commit is lost), restarts the hub on the same database and replays every frame: a frame whose effect committed
had its sequence number committed with it (or before it), so its replay is refused, and the ledger ends exactly as
without the crash.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from hub.config import HubConfig, NodeConfig
from hub.ledger import Sku
from hub.ledger.models import LaneReading, NodeUpdate, SensorEvent, SensorGap
from hub.ledger.tags import ReaderReport, TagEvent, TagRecheck
from hub.link import commands, jobs, marks
from hub.link.session import MAX_EVENTS_AHEAD, NodeSession
from hub.service import HubService
from shared_protocol.auth import TAG_LEN, Key
from shared_protocol.frame import HEADER_LEN, UplinkSender
from shared_protocol.messages import (
    BY_TYPE,
    KIND_PICK,
    READER_OK,
    READER_SILENT,
    CommandResult,
    Event,
    Health,
    Hello,
    LaneState,
    Message,
    ReaderHealth,
    RfidSeen,
    SetLane,
    TagLost,
    TagSeen,
)
from tests.hub_support import db_rows, eventually

NODE = 1
KEY = bytes(range(32))
U32 = 0xFFFFFFFF
EPC1 = bytes.fromhex("3074257BF7194E4000001A85")
EPC2 = bytes.fromhex("3074257BF7194E4000001A86")


class Wire:
    """The hub's ``Link`` to the node under test: keeps what the hub sends (nobody answers it)."""

    name = "hostile-node"
    connected = True

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True


@dataclass
class Node:
    """The node side: signs with the node's key, frame seq strictly increasing (what every frame passes)."""

    seq: int = 0
    sent: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.uplink = UplinkSender(NODE, Key(KEY), self._next)

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def frame(self, message: Message) -> bytes:
        data = self.uplink.encode(message)
        self.sent.append(data)
        return data


async def start(directory: Path) -> HubService:
    cfg = HubConfig(
        path=directory / "hub.toml",
        database=directory / "hub.db",
        synchronous="NORMAL",  # about logic, not durability: fast
        nodes=(NodeConfig(NODE, KEY, ""),),
    )
    hub = HubService(cfg, control=False, open_ports=False, reconcile=False)
    await hub.start()
    return hub


async def start_with_lane(directory: Path) -> HubService:
    """``start`` with SKU COLA on the node's lane 0 (lane id A1)."""
    hub = await start(directory)
    assert hub.ledger is not None
    await hub.ledger.add_sku(Sku("COLA", "Cola", 3500, 20), actor="setup")
    await hub.ledger.assign_lane(NODE, 0, "COLA", actor="setup", lane_id="A1")
    return hub


def feed(hub: HubService, wire: Wire, frames: Iterable[bytes], spacing_ns: int = 0) -> None:
    assert hub.ingest is not None
    now = time.monotonic_ns()
    for i, f in enumerate(frames):
        hub.ingest.enqueue(wire, f, now + i * spacing_ns)


async def settle(hub: HubService, timeout_s: float = 30.0) -> None:
    """Until ingest, the writer and every node's jobs have nothing left to do (three quiet looks in a row)."""
    assert hub.ingest is not None and hub.ledger is not None
    ingest, ledger = hub.ingest, hub.ledger
    quiet, deadline = 0, time.monotonic() + timeout_s
    while quiet < 3:
        await asyncio.sleep(0.01)
        writer_waits = ledger._queue._waiter is not None and not ledger._queue.qsize()  # between transactions
        busy = ingest._inbox or not writer_waits or ingest.desk._writes
        busy = busy or not all(n.jobs.idle for n in ingest.nodes.values())
        quiet = 0 if busy else quiet + 1
        assert time.monotonic() < deadline, "the hub did not settle"


def session(hub: HubService) -> NodeSession:
    assert hub.ingest is not None
    return hub.ingest.nodes[NODE]


async def assert_sound(hub: HubService, caplog: pytest.LogCaptureFixture) -> None:
    """No exception escaped, the ledger is consistent, every bounded structure is within its bound."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert hub.reader is not None and hub.ingest is not None
    assert await hub.reader.consistency_errors() == []
    n = session(hub)
    assert len(n.lane_states) <= 32 and len(n.tallies) <= 32 and len(n.rfid.readers) <= 8
    assert len(n.marks.above) <= marks.MAX_ABOVE
    assert len(n.jobs) <= jobs.MAX_JOBS
    assert len(n.commands) <= commands.MAX_BACKLOG and len(n.commands._sent) <= commands.MAX_SENT_COMMANDS
    assert len(hub.ingest.booking.readings._last) <= 32
    assert len(hub.ingest.booking._dirty) <= 1 and len(hub.ingest._reject_logged) <= 32
    assert set(hub.ingest.receiver.last_seq) <= {NODE}
    # What the ledger holds above the node's mark (read by every sensor batch of the node) stays bounded too.
    db = hub.config.database
    (mark,) = db_rows(db, "SELECT highest_contiguous_event_seq FROM nodes WHERE node_id = ?", (NODE,))[0]
    above = db_rows(
        db,
        "SELECT (SELECT count(*) FROM movements WHERE node_id = ?1 AND event_seq > ?2)"
        " + (SELECT count(*) FROM tag_events WHERE node_id = ?1 AND event_seq > ?2)",
        (NODE, mark),
    )[0][0]
    assert above <= 2 * MAX_EVENTS_AHEAD


# ------------------------------------------------------------------------------------------ property-based fuzzing

event_seqs = st.one_of(st.integers(1, 48), st.integers(1, U32))  # mostly near the mark, sometimes anywhere


def field_values(name: str, kind: str, lo: int, hi: int) -> st.SearchStrategy[Any]:
    """Any value the protocol lets through for a field, its extremes often (an EPC: 1..32 random bytes)."""
    if kind == "E":
        return st.binary(min_size=1, max_size=32)
    if name == "event_seq":
        return event_seqs
    if name in ("last_event", "outbox_first"):
        return st.one_of(st.integers(0, 48), st.integers(lo, hi))
    if name == "boot_count":
        return st.integers(1, 3)  # reboots, and hellos of the same boot
    return st.one_of(st.sampled_from(sorted({lo, hi, min(max(0, lo), hi)})), st.integers(lo, hi))


def hostile(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.tuples(*(field_values(*f) for f in cls.FIELDS)).map(lambda values: cls(*values))


UPLINK = (Hello, Event, LaneState, Health, TagSeen, TagLost, ReaderHealth, CommandResult, RfidSeen)
HOSTILE = st.one_of(*(hostile(cls) for cls in UPLINK))


@seed(20251305)
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(HOSTILE, min_size=1, max_size=80))
def test_signed_hostile_frames_leave_the_ledger_consistent_and_the_hub_bounded(
    caplog: pytest.LogCaptureFixture, messages: list[Message]
) -> None:
    async def run(directory: Path) -> None:
        hub = await start_with_lane(directory)
        try:
            assert hub.ledger is not None
            node, wire = Node(), Wire()
            feed(hub, wire, [node.frame(m) for m in messages])
            await settle(hub)
            await assert_sound(hub, caplog)
        finally:
            await hub.stop()

    caplog.clear()
    with caplog.at_level(logging.WARNING), tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


# ---------------------------------------------------------------------------------------------- what each bound does


async def test_events_far_above_the_mark_are_refused_not_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await start(tmp_path)
    try:
        node, wire = Node(), Wire()
        hello = node.frame(Hello(1, 0, 0, 1, 4, 0))
        far = [node.frame(Event(MAX_EVENTS_AHEAD + 2 + 7 * i, 0, KIND_PICK, -1, -3500, 90, 0)) for i in range(300)]
        near = [node.frame(Event(2 + i, 1, KIND_PICK, -1, -3500, 90, 0)) for i in range(40)]  # 1 never comes
        feed(hub, wire, [hello, *far, *near])
        await settle(hub)
        n = session(hub)
        assert n.stats.refused_ahead == 300 and n.dropped()["events_ahead"] == 300
        assert n.marks.contiguous == 0 and len(n.marks.above) == 40  # booked, waiting for event 1
        assert db_rows(hub.config.database, "SELECT count(*) FROM movements") == [(40,)]
        assert sum("more than 4096 above its mark" in r.getMessage() for r in caplog.records) == 1  # logged once
        # Forgetting committed seqs above the mark (past its bound) only delays the mark: the ledger re-learns them.
        n.marks = marks.EventMarks(0, set(range(2, marks.MAX_ABOVE + 10)))
        assert len(n.marks.above) == marks.MAX_ABOVE and n.marks.forgotten == 8
        await assert_sound(hub, caplog)
    finally:
        await hub.stop()


async def test_storms_of_hellos_and_reports_queue_a_bounded_amount_of_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hub = await start(tmp_path)
    try:
        assert hub.ledger is not None and hub.ingest is not None
        await hub.ledger.add_sku(Sku("COLA", "Cola", 3500, 20), actor="setup")
        for lane in range(4):
            await hub.ledger.assign_lane(NODE, lane, "COLA", actor="setup")
        node, wire = Node(), Wire()
        n = session(hub)
        # 300 hellos, half of them claiming a reboot: one assignment job at a time, each command waiting once.
        feed(hub, wire, [node.frame(Hello(1, 0, 0, 1 + (i % 2), 4, 0)) for i in range(300)])
        await eventually(lambda: n.stats.hellos == 300, what="the hellos")
        assert len(n.jobs) <= 1 and len(n.commands) <= 5  # 4 lanes' assignments and one state request, at most
        await settle(hub)
        assert len(n.commands) == 0 and SetLane(0, 3500, 20, "COLA") in [_downlink(f) for f in wire.frames]
        hello_lines = [r for r in caplog.records if "node 1: hello" in r.getMessage() and r.levelno >= logging.INFO]
        assert len(hello_lines) == 1, [r.getMessage() for r in hello_lines]  # the rest at debug (counted)

        # A flood of lane states while the ledger cannot commit: at most MAX_JOBS checks wait, the rest are counted.
        gate = asyncio.Event()
        original = hub.ledger._commit

        async def held() -> None:
            await gate.wait()
            await original()

        hub.ledger._commit = held  # type: ignore[method-assign]
        feed(hub, wire, [node.frame(LaneState(i % 4, 0, 0, 0, 0, 0, 0)) for i in range(jobs.MAX_JOBS + 200)])
        await eventually(lambda: n.jobs.dropped > 0, what="dropped checks")
        assert len(n.jobs) <= jobs.MAX_JOBS and n.dropped()["jobs"] == n.jobs.dropped
        gate.set()
        hub.ledger._commit = original  # type: ignore[method-assign]
        await settle(hub)

        # Answers to commands never sent: a burst is recorded, the rest only counted.
        feed(hub, wire, [node.frame(CommandResult(10_000 + i, 0, 0)) for i in range(100)])
        await settle(hub)
        recorded = db_rows(hub.config.database, "SELECT count(*) FROM audit WHERE action = 'command'")[0][0]
        assert recorded == commands.UNKNOWN_BURST and n.commands.unknown_unrecorded == 100 - commands.UNKNOWN_BURST

        # Endless distinct tags: booked in the ledger (each is a record of the node), no per-node state grows.
        tags = [node.frame(TagSeen(i + 1, i % 4, -40, 0, i.to_bytes(12, "big"))) for i in range(2000)]
        feed(hub, wire, tags)
        await settle(hub)
        assert n.marks.contiguous == 2000 and n.marks.above == set()
        assert db_rows(hub.config.database, "SELECT count(*) FROM tag_presence")[0][0] == 2000

        # Counters no lane can hold are not booked as a gap; a plausible one is.
        feed(hub, wire, [node.frame(LaneState(0, 2_000_000_000, 0, 0, 0, 0, 2000))])
        feed(hub, wire, [node.frame(LaneState(1, 12, 0, 12, 0, 0, 2000))])
        await settle(hub)
        gaps = db_rows(hub.config.database, "SELECT qty FROM movements WHERE reason = 'sensor_gap'")
        assert gaps == [(12,)] and n.stats.implausible_counts == 1
        await assert_sound(hub, caplog)
    finally:
        await hub.stop()


async def test_an_outbox_start_far_above_what_the_node_produced_skips_no_later_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A keyed node says its outbox starts at event 2**31 though it has shown events only up to 3 (its events and
    its lane's ``last_event``): the skip stops at 3, so its real event 4 is booked, not taken as dropped; the claim is
    counted and logged once however often it comes."""
    hub = await start_with_lane(tmp_path)
    try:
        assert hub.ledger is not None
        node, wire = Node(), Wire()
        frames = [node.frame(Hello(1, 0, 0, 1, 4, 0))]
        frames += [node.frame(Event(i, 0, KIND_PICK, -1, -3500, 90, 0)) for i in (1, 2, 3)]
        frames.append(node.frame(LaneState(0, -3, 3, 0, 0, 0, 3)))
        frames += [node.frame(Health(60, 100_000, 8000, 5, 0, 0, 1, 0, 2**31)) for _ in range(3)]
        feed(hub, wire, frames)
        await settle(hub)
        n = session(hub)
        assert n.marks.contiguous == 3 and n.pending_skip <= 3
        assert n.dropped()["outbox_claims"] == 3
        feed(hub, wire, [node.frame(Event(4, 0, KIND_PICK, -1, -3500, 90, 0))])
        feed(hub, wire, [node.frame(LaneState(0, -4, 4, 0, 0, 0, 4))])
        await settle(hub)
        picks = db_rows(hub.config.database, "SELECT count(*) FROM movements WHERE reason = 'sensor_pick'")
        assert picks == [(4,)] and n.marks.contiguous == 4 and n.stats.applied == 4
        assert db_rows(hub.config.database, "SELECT qty FROM movements WHERE reason = 'sensor_gap'") == []
        claims = [r for r in caplog.records if "outbox starts at event 2147483648" in r.getMessage()]
        assert len(claims) == 1 and claims[0].levelno == logging.WARNING
        await assert_sound(hub, caplog)
    finally:
        await hub.stop()


def _downlink(frame: bytes) -> Message | None:
    """The message of a downlink frame the hub sent (whatever its session: only its payload matters here)."""
    cls = BY_TYPE.get(frame[1])
    return cls.decode_payload(frame[HEADER_LEN:-TAG_LEN]) if cls is not None else None


# ------------------------------------------------------------------------------- a crash between accept and commit


class Killed(sqlite3.OperationalError):
    """The writer was killed: this transaction and every later one never commit."""


def frame_seq_of(item: Any, seqs: dict[str, int]) -> int | None:
    """The uplink frame a ledger item came from (None: not from a frame, e.g. a downlink reservation)."""
    if isinstance(item, SensorEvent | TagEvent):
        return item.uplink_seq
    if isinstance(item, NodeUpdate):
        return None  # what persists a seq, not an effect
    if isinstance(item, TagRecheck):
        return seqs["hello"]
    if isinstance(item, ReaderReport):
        return seqs["silent"] if item.state == READER_SILENT else seqs["ok"]
    if isinstance(item, LaneReading):
        return seqs["lane_state"]
    if isinstance(item, SensorGap):
        return int(next(p for p in item.ref.split(":") if p[:1] == "f")[1:])  # [ev<a>-<b>:]f<frame seq>:lane<i>
    return seqs["answer"]  # the only business write: the audit record of the unknown command's answer


def ledger_summary(db: Path) -> dict[str, Any]:
    """What the frames booked, without the times (replays arrive later) or a gap's reference (its frame)."""
    return {
        "movements": db_rows(db, "SELECT reason, qty, event_seq, location FROM movements ORDER BY reason, event_seq"),
        "tags": db_rows(db, "SELECT event_seq, epc, kind, effect FROM tag_events ORDER BY event_seq"),
        "presence": db_rows(db, "SELECT epc, present, unconfirmed_ms IS NOT NULL FROM tag_presence ORDER BY epc"),
        "outages": db_rows(db, "SELECT reader, cause, to_ms IS NULL FROM rfid_outages ORDER BY id"),
        "answers": db_rows(db, "SELECT count(*) FROM audit WHERE action = 'command'"),
        "mark": db_rows(db, "SELECT highest_contiguous_event_seq FROM nodes"),
    }


@dataclass
class Run:
    summary: dict[str, Any]  # the ledger at the end (ledger_summary)
    committed: list[tuple[int, Any]]  # (frame seq, item) of every item with an effect committed before the kill
    commits: int  # transactions committed while the frames under test were handled (before the kill)
    persisted: int  # the node's last uplink seq in the ledger after the kill


async def crash_and_replay(directory: Path, kill_at: int | None) -> Run:
    """Setup frames (committed), then the frames under test with the writer killed before its ``kill_at``-th commit
    (None: never); a new hub on the same database gets every frame again and one new lane state."""
    node, wire = Node(), Wire()
    hub = await start(directory)
    assert hub.ledger is not None
    await hub.ledger.add_sku(Sku("COLA", "Cola", 3500, 20, gtin="80614141123458"), actor="setup")
    await hub.ledger.assign_lane(NODE, 0, "COLA", actor="setup", lane_id="A1")
    setup = [node.frame(Hello(1, 0, 0, 1, 4, 0)), node.frame(TagSeen(1, 0, -40, 0, EPC1))]
    setup.append(node.frame(Event(2, 0, KIND_PICK, -1, -3500, 90, 0)))
    feed(hub, wire, setup)
    await settle(hub)

    seqs: dict[str, int] = {}
    under_test = []
    for name, message in [
        ("hello", Hello(1, 0, 0, 2, 4, 0)),  # a restart: its tags are rechecked
        ("seen", TagSeen(3, 0, -40, 0, EPC2)),
        ("silent", ReaderHealth(0, READER_SILENT, 10, 0, 0, 1, 1)),
        ("ok", ReaderHealth(0, READER_OK, 20, 0, 0, 1, 1)),
        ("pick", Event(4, 0, KIND_PICK, -1, -3500, 90, 0)),
        ("lane_state", LaneState(0, 5, 2, 0, 17500, 0, 4)),  # the ledger has -2: a gap of +7
        ("answer", CommandResult(999_999, 0, 0)),  # to a command never sent: recorded
        ("health", Health(60, 100_000, 8000, 9, 0, 0, 0, 0, 0)),
    ]:
        under_test.append(node.frame(message))
        seqs[name] = node.seq

    ledger = hub.ledger
    ledger.max_batch = 1  # every item its own transaction: a kill can fall between any two
    committed: list[tuple[int, Any]] = []
    current: list[Any] = []
    commits = [0]
    left = [kill_at if kill_at is not None else 10**9]
    original_commit, original_sensor, original_business = ledger._commit, ledger._sensor_batch, ledger._business

    async def sensor_batch(batch: Any) -> None:
        current[:] = [w.item for w in batch]
        await original_sensor(batch)

    async def business(work: Any) -> None:
        current[:] = ["business write"]
        await original_business(work)

    async def commit() -> None:
        if left[0] <= 0:
            raise Killed("the hub was killed")
        left[0] -= 1
        await original_commit()
        commits[0] += 1
        for item in current:
            seq = frame_seq_of(item, seqs)
            if seq is not None:
                committed.append((seq, item))

    ledger._commit, ledger._sensor_batch, ledger._business = commit, sensor_batch, business  # type: ignore[method-assign]
    feed(hub, wire, under_test, spacing_ns=5_000_000)
    await settle(hub)
    await hub.stop()  # what was queued after the kill fails to commit, as it would have died with the process
    (persisted,) = db_rows(directory / "hub.db", "SELECT last_uplink_seq FROM nodes WHERE node_id = ?", (NODE,))[0]

    hub = await start(directory)
    try:
        feed(hub, Wire(), [*setup, *under_test])  # everything again, byte for byte (a replay, or the node's resend)
        await settle(hub)
        feed(hub, Wire(), [node.frame(LaneState(0, 5, 2, 0, 17500, 0, 4))])  # the node's next report
        await settle(hub)
        assert hub.reader is not None and await hub.reader.consistency_errors() == []
    finally:
        await hub.stop()
    return Run(ledger_summary(directory / "hub.db"), committed, commits[0], persisted)


async def test_a_crash_between_accepting_a_frame_and_committing_it_never_books_the_frame_twice(
    tmp_path: Path,
) -> None:
    reference = await crash_and_replay(tmp_path / "reference", None)
    summary = reference.summary
    assert summary["presence"] == [(EPC1.hex().upper(), 1, 1), (EPC2.hex().upper(), 1, 0)]
    assert summary["outages"] == [(0, "silent", 0)] and summary["answers"] == [(1,)]
    assert [(r, q) for r, q, _e, _loc in summary["movements"] if r == "sensor_gap"] == [("sensor_gap", 7)]
    assert reference.commits >= 10
    for kill_at in range(reference.commits + 1):
        run = await crash_and_replay(tmp_path / f"kill-{kill_at}", kill_at)
        # Every effect that committed before the kill came with its frame's seq (or after it): a replay is refused.
        late = [(seq, type(item).__name__) for seq, item in run.committed if seq > run.persisted]
        assert late == [], (kill_at, run.persisted, late)
        # Exactly as without the crash; only the audit record of a command's answer may be missing: the command
        # died with the hub that sent it (a later hub records an answer to it as one to an unknown command).
        answers = run.summary.pop("answers")
        assert run.summary == {k: v for k, v in summary.items() if k != "answers"}, kill_at
        assert answers in ([(0,)], [(1,)]), (kill_at, answers)


@pytest.mark.parametrize(("outbox_first", "last_event"), [(2**31, 2**31 - 1), (0, 2**31)])
async def test_a_lane_state_naming_an_absurd_event_cannot_lift_the_outbox_skip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, outbox_first: int, last_event: int
) -> None:
    """The events a node has shown include its lane states' ``last_event``: a corrupted one (2**31) is believed only
    as far as an event could be admitted (``MAX_EVENTS_AHEAD`` above the mark), counted and logged once; the node's
    real event 4 is still booked as a pick, and its honest lane state afterwards leaves the lane's stock right."""
    hub = await start_with_lane(tmp_path)
    try:
        assert hub.ledger is not None
        node, wire = Node(), Wire()
        frames = [node.frame(Hello(1, 0, 0, 1, 4, 0))]
        frames += [node.frame(Event(i, 0, KIND_PICK, -1, -3500, 90, 0)) for i in (1, 2, 3)]
        frames.append(node.frame(LaneState(0, -3, 3, 0, 0, 0, last_event)))  # a corrupted counter
        frames.append(node.frame(Health(60, 100_000, 8000, 5, 0, 0, 1, 0, outbox_first)))
        frames.append(node.frame(LaneState(0, -3, 3, 0, 0, 0, last_event)))
        feed(hub, wire, frames)
        await settle(hub)
        n = session(hub)
        assert MAX_EVENTS_AHEAD <= n.max_last_event <= 3 + MAX_EVENTS_AHEAD and n.pending_skip <= n.max_last_event
        assert n.dropped()["last_events_ahead"] == 2
        feed(hub, wire, [node.frame(Event(4, 0, KIND_PICK, -1, -3500, 90, 0))])
        await settle(hub)
        feed(hub, wire, [node.frame(LaneState(0, -4, 4, 0, 0, 0, 4))])
        await settle(hub)
        db = hub.config.database
        assert db_rows(db, "SELECT count(*) FROM movements WHERE reason = 'sensor_pick'") == [(4,)]
        assert db_rows(db, "SELECT sum(qty) FROM movements WHERE location = 'sensor:A1'") == [(-4,)]
        warned = [r for r in caplog.records if f"names event {last_event}" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    finally:
        await hub.stop()


async def test_an_honest_node_that_dropped_more_than_the_admit_window_gets_there_a_window_at_a_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node cut off long enough to drop events 4..8999 (more than ``MAX_EVENTS_AHEAD``) from its full outbox, which
    holds 9000..9009: each health period (its health, lane state and unacknowledged events sent again) the skip
    grows by at most a window, then the gap is booked and its events are picks; the stock is the node's count."""
    hub = await start_with_lane(tmp_path)
    try:
        assert hub.ledger is not None
        node, wire = Node(), Wire()
        frames = [node.frame(Hello(1, 0, 0, 1, 4, 0))]
        frames += [node.frame(Event(i, 0, KIND_PICK, -1, -3500, 90, 0)) for i in (1, 2, 3)]
        feed(hub, wire, frames)
        await settle(hub)
        n = session(hub)
        periods = 0
        while n.marks.contiguous < 9009:
            periods += 1
            assert periods <= 6, (n.marks.contiguous, n.pending_skip, n.max_last_event)
            again = [node.frame(Health(60, 100_000, 8000, 5, 0, 0, 1, 0, 9000))]
            again.append(node.frame(LaneState(0, -9009, 9009, 0, 0, 0, 9009)))
            again += [node.frame(Event(i, 0, KIND_PICK, -1, -3500, 90, 0)) for i in range(9000, 9010)]
            feed(hub, wire, again)
            await settle(hub)
        assert periods >= 2  # the first period's skip stopped at the window
        db = hub.config.database
        assert db_rows(db, "SELECT count(*) FROM movements WHERE reason = 'sensor_pick'") == [(13,)]
        assert db_rows(db, "SELECT qty FROM movements WHERE reason = 'sensor_gap'") == [(-8996,)]
        assert db_rows(db, "SELECT sum(qty) FROM movements WHERE location = 'sensor:A1'") == [(-9009,)]
        await assert_sound(hub, caplog)
    finally:
        await hub.stop()
