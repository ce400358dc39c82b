"""The node link's small parts on their own: command queues, per-node jobs, event marks, RFID reader reports."""

from __future__ import annotations

import asyncio

import pytest

from hub.ledger.tags import CONFIRM_INTERVAL_MS, ReaderReport
from hub.link.commands import MAX_SENT_COMMANDS, CommandQueue, NodeRebooted, PendingCommand
from hub.link.jobs import NodeJobs
from hub.link.marks import EventMarks
from hub.link.rfid import NodeRfid
from shared_protocol.messages import (
    READER_OK,
    READER_SILENT,
    READER_STARTING,
    Identify,
    ReaderHealth,
    RequestState,
    Tare,
)


def test_a_queue_sends_in_order_and_skips_commands_whose_caller_gave_up() -> None:
    q = CommandQueue()
    first, gone, last = PendingCommand(Tare(0), "a"), PendingCommand(Tare(1), "b"), PendingCommand(Tare(2), "c")
    for cmd in (first, gone, last):
        q.push(cmd)
    gone.abandoned = True
    q.internal(RequestState(255))
    assert q
    taken = [q.take(), q.take(), q.take()]
    assert taken[:2] == [first, last] and taken[2] is not None and taken[2].requested_by == "hub"
    assert not taken[2].record and q.take() is None and not q


async def test_sent_commands_are_found_by_seq_and_bounded() -> None:
    q = CommandQueue()
    loop = asyncio.get_running_loop()
    cmds = [PendingCommand(Identify(1), "x", loop.create_future()) for _ in range(MAX_SENT_COMMANDS + 2)]
    for seq, cmd in enumerate(cmds, start=1):
        q.sent_as(cmd, 4, seq)
    assert q.answered(1) is None and q.answered(2) is None  # the oldest two were forgotten
    assert q.answered(3) is cmds[2] and (cmds[2].session, cmds[2].seq) == (4, 3)
    assert q.answered(3) is None  # answered once
    q.forget_sent(NodeRebooted("rebooted"))
    assert all(isinstance(c.future.exception(), NodeRebooted) for c in cmds[3:] if c.future is not None)
    assert q.answered(MAX_SENT_COMMANDS + 2) is None


async def test_jobs_run_one_at_a_time_in_order_and_survive_a_failure() -> None:
    jobs = NodeJobs("node 9")
    ran: list[str] = []
    gate = asyncio.Event()

    async def first() -> None:
        await gate.wait()
        ran.append("first")

    async def broken() -> None:
        raise RuntimeError("boom")

    async def last() -> None:
        ran.append("last")

    for job in (first, broken, last):
        jobs.add(job)
    await asyncio.sleep(0.01)
    assert ran == []  # the later jobs wait for the first
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert ran == ["first", "last"]
    await jobs.cancel()


async def test_cancelled_jobs_are_dropped() -> None:
    jobs = NodeJobs("node 9")
    ran: list[int] = []
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    async def later() -> None:
        ran.append(1)

    jobs.add(stuck)
    jobs.add(later)
    await asyncio.sleep(0)
    await jobs.cancel()
    await asyncio.sleep(0.01)
    assert ran == []
    jobs.add(later)  # a new worker after a cancel
    await asyncio.sleep(0.01)
    assert ran == [1]
    await jobs.cancel()


@pytest.mark.parametrize(
    ("adds", "contiguous", "above"),
    [([1, 2, 3], 3, set()), ([2, 3], 0, {2, 3}), ([2, 3, 1], 3, set()), ([1, 1, 5], 1, {5})],
)
def test_marks_advance_only_over_contiguous_events(adds: list[int], contiguous: int, above: set[int]) -> None:
    marks = EventMarks()
    for seq in adds:
        marks.add(seq)
    assert (marks.contiguous, marks.above) == (contiguous, above)


def test_a_skip_moves_the_mark_and_picks_up_what_follows() -> None:
    marks = EventMarks(2, {7, 8, 10})
    assert marks.after_skip(6) == 8 and marks.contiguous == 2
    marks.skip_to(6)
    assert (marks.contiguous, marks.above) == (8, {10})


def _health(reader: int, state: int, reads: int = 10, silences: int = 0, resets: int = 0) -> ReaderHealth:
    return ReaderHealth(reader, state, reads, 0, resets, silences, 3)


def test_reader_reports_book_state_changes_and_periodic_confirmations_only() -> None:
    rfid = NodeRfid(7)
    t = 1_000_000
    first = rfid.report(_health(0, READER_OK), t)  # first report since the hub started: books the state
    assert first == ReaderReport(7, 0, t, READER_OK, True, None, "")
    assert rfid.report(_health(0, READER_OK, reads=20), t + 1000) is None  # nothing new, confirmed a moment ago
    silent = rfid.report(_health(0, READER_SILENT, reads=20, silences=1), t + 2000)
    assert silent is not None and (silent.state, silent.all_ok) == (READER_SILENT, False)
    assert rfid.report(_health(0, READER_SILENT, reads=20, silences=1), t + 3000) is None  # still silent
    back = rfid.report(_health(0, READER_OK, reads=30, silences=1), t + 4000)
    assert back is not None and back.state == READER_OK and back.missed_from_ms is None
    later = rfid.report(_health(0, READER_OK, reads=40, silences=1), t + 4000 + CONFIRM_INTERVAL_MS)
    assert later is not None and later.all_ok and later.missed_from_ms is None  # the periodic confirmation


def test_an_outage_between_two_ok_reports_is_found_from_the_counters() -> None:
    rfid = NodeRfid(7)
    rfid.report(_health(0, READER_OK, silences=2), 5000)
    missed = rfid.report(_health(0, READER_OK, silences=3), 6000)  # its silent report was lost on the way
    assert missed is not None and (missed.missed_from_ms, missed.missed_cause) == (5000, "silent between two reports")
    reset = rfid.report(_health(0, READER_OK, silences=3, resets=1), 7000)
    assert reset is not None and (reset.missed_from_ms, reset.missed_cause) == (6000, "reset between two reports")


def test_counters_that_went_down_are_a_new_boot_not_an_outage_and_a_restart_forgets_the_readers() -> None:
    rfid = NodeRfid(7)
    rfid.report(_health(0, READER_OK, reads=500, silences=4), 5000)
    assert rfid.report(_health(0, READER_OK, reads=3, silences=0), 6000) is None  # the node rebooted meanwhile
    rfid.restarted()
    assert rfid.readers == {}


def test_present_tags_are_confirmed_only_while_every_reader_works() -> None:
    rfid = NodeRfid(7)
    rfid.report(_health(0, READER_OK), 1000)
    starting = rfid.report(_health(1, READER_STARTING), 1000 + CONFIRM_INTERVAL_MS)
    assert starting is not None and not starting.all_ok  # reader 1 is not reading: nothing is confirmed
    ok = rfid.report(_health(1, READER_OK), 2000 + CONFIRM_INTERVAL_MS)
    assert ok is not None and ok.all_ok
    status = rfid.status(2000 + CONFIRM_INTERVAL_MS)
    assert [(r["reader"], r["state"], r["present"]) for r in status["readers"]] == [(0, "ok", 3), (1, "ok", 3)]
