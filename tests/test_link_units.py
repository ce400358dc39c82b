"""The node link's small parts on their own: command queues, per-node jobs, event marks, RFID sightings."""

from __future__ import annotations

import asyncio

import pytest

from hub.link.commands import MAX_SENT_COMMANDS, CommandQueue, NodeRebooted, PendingCommand
from hub.link.jobs import NodeJobs
from hub.link.marks import EventMarks
from hub.link.rfid import RfidSightings
from shared_protocol.messages import Identify, RequestState, Tare


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


def test_rfid_sightings_log_arrivals_and_departures() -> None:
    rfid = RfidSightings()
    epc = bytes.fromhex("e2801160600002084c7d1a5f")
    rfid.seen(0, epc, -40, 1000)
    rfid.seen(0, epc, -42, 2000)  # still there: not logged again
    assert rfid.present == {(0, epc.hex()): (-42, 2000)}
    rfid.lost(0, epc, 3000)
    assert rfid.present == {} and [e[:2] for e in rfid.log] == [(1000, "seen"), (3000, "lost")]
