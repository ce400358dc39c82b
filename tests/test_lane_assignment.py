"""A lane's sensor units are its SKU's (issue 13, section 5; ``hub/ledger/postings/settle.py``).

A node counts units, not products: its counters go on across a change of its lane's SKU, and the hub compares them
with the lane's counter reference (every node movement at the lane, whatever its SKU). Observed stock is per SKU. A
node that counted before its lane had a SKU (an emulated board, a node moved or re-provisioned), or under the lane's
previous SKU, would leave the lane's SKU short of what the node counts, for good: its counters agree with the
reference (no gap) and a count is relative to them. So assigning a lane moves its units to its SKU, in the assigning
transaction, audited; the reference does not move, so no reboot or restart books a phantom gap.

Here at the ledger level, with the hub's own comparison (``gaps.lane_gap`` against ``LedgerReader.sensor_tallies``,
as a restarted hub loads them) and its staff count (a node count event, then the physical count and
``rebase_lane`` in one transaction, as ``HubService.set_count`` does); the same through a running hub and a node
on a pty is in ``tests/test_sensor_corrections.py``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.fleet import messages as fleet_messages
from hub.fleet import outbox
from hub.ledger import LedgerService, SensorEvent, SensorGap, Sku
from hub.ledger import schema as ledger_schema
from hub.ledger.models import LANE_PREFIX, NotReversible, Reason
from hub.ledger.postings import Tx
from hub.link.gaps import lane_gap
from hub.link.marks import EventMarks, LaneTally
from hub.schema import MIGRATIONS
from hub.web.pages import metrics
from shared_protocol.messages import KIND_COUNT, KIND_PICK, KIND_PUT, LaneState
from tests.test_lane_activity import check_tables
from tools.bench.web_reports import walk_lane_outages

NODE = 7
T0 = 1_700_000_000_000


class Node:
    """A node's lane 0 as the firmware keeps it: a counter (on its flash, so a reboot keeps it) and its events."""

    def __init__(self, ledger: LedgerService, count: int = 0) -> None:
        self.ledger, self.count, self.seq, self.gaps = ledger, count, 0, 0

    async def event(self, delta: int, kind: int = KIND_PICK) -> None:
        self.seq += 1
        self.count += delta
        ev = SensorEvent(NODE, self.seq, 0, kind, delta, delta * 3500, 97, T0 + self.seq * 1000)
        assert not (await self.ledger.submit(ev)).duplicate

    async def report(self) -> int:
        """Its lane_state, compared as a (re)started hub does: the gap booked, if any (0: none)."""
        async with await self.ledger.reader() as reader:
            total, max_event = (await reader.sensor_tallies()).get((NODE, 0), (0, 0))
            node = await reader.node(NODE)
        marks = EventMarks(node.highest_contiguous_event_seq if node is not None else 0)
        state = LaneState(0, self.count, 0, 0, self.count * 3500, 0, self.seq)
        self.gaps += 1
        gap = lane_gap(state, LaneTally(total, max_event), marks, 0, self.gaps)
        if gap is None:
            return 0
        await self.ledger.submit(SensorGap(NODE, 0, gap.diff, gap.ref, T0 + self.seq * 1000 + 1, note=gap.note))
        return gap.diff

    async def staff_count(self, counted: int, ref: str) -> int:
        """``HubService.set_count``: the node books count - counter as a count event, then the hub books the
        physical count and re-bases the lane in one transaction. Returns the units absorbed."""
        if counted != self.count:
            await self.event(counted - self.count, KIND_COUNT)
        lane = await lane_of(self.ledger)
        sku = await sku_of(self.ledger, lane)
        assert sku is not None

        async def book(tx: Tx) -> int:
            await tx.count(sku, counted, actor="alice", ref=ref, location=LANE_PREFIX + lane)
            return await tx.rebase_lane(lane, actor="alice", ref=ref)

        return await self.ledger.transact(book)


async def lane_of(ledger: LedgerService) -> str:
    async with await ledger.reader() as reader:
        (lane,) = [x for x in await reader.lanes(NODE) if x.lane_index == 0]
        return lane.lane_id


async def sku_of(ledger: LedgerService, lane_id: str) -> str | None:
    return rows(ledger, "SELECT sku FROM lanes WHERE lane_id = ?", (lane_id,))[0][0]


def rows(ledger: LedgerService, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(ledger.path)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def observed(ledger: LedgerService, lane_id: str) -> dict[str | None, int]:
    """The lane's observed stock per SKU (zeros left out), and its units with no SKU (in no balance) under None."""
    out = {
        sku: qty
        for sku, qty in rows(ledger, "SELECT sku, qty FROM observed_stock WHERE lane_id = ? AND qty != 0", (lane_id,))
    }
    (none,) = rows(
        ledger, "SELECT coalesce(sum(qty), 0) FROM movements WHERE location = ? AND sku IS NULL", ("sensor:" + lane_id,)
    )[0]
    if none:
        out[None] = none
    return out


def moves(ledger: LedgerService) -> list[tuple[Any, ...]]:
    return rows(
        ledger,
        "SELECT source_ref, leg, sku, qty, node_id, actor FROM movements WHERE reason = 'lane_assigned' ORDER BY id",
    )


def audited(ledger: LedgerService, action: str) -> list[dict[str, Any]]:
    return [json.loads(r[0]) for r in rows(ledger, "SELECT details FROM audit WHERE action = ? ORDER BY id", (action,))]


def check_derived(ledger: LedgerService) -> None:
    """What the writer keeps beside the movements equals a recomputation, the reports equal the walk of every
    movement, and every balance its movements."""
    conn = sqlite3.connect(ledger.path)
    try:
        check_tables(conn)
        for days in (1, 30):
            p = metrics.period(days, T0 + 10 * 86_400_000)
            assert metrics.lane_outages(conn, p) == walk_lane_outages(conn, p)
        assert (
            conn.execute(
                "SELECT count(*) FROM balances AS b WHERE qty != (SELECT coalesce(sum(m.qty), 0) FROM movements AS m"
                " WHERE m.sku = b.sku AND m.location = b.location)"
            ).fetchone()[0]
            == 0
        )
    finally:
        conn.close()


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, prune_interval_s=None) as svc:
        for sku, dg in (("COLA", 3500), ("TEA", 1000)):
            await svc.add_sku(Sku(sku, sku.title(), dg, 20), actor="setup")
        yield svc


async def restart(ledger: LedgerService) -> LedgerService:
    await ledger.close()
    svc = LedgerService(ledger.path, migrations=MIGRATIONS, prune_interval_s=None)
    await svc.start()
    return svc


# --------------------------------------------------------------------------------------------- no SKU -> SKU


async def test_units_booked_before_the_lane_had_a_sku_become_its_skus_when_assigned(ledger: LedgerService) -> None:
    node = Node(ledger, count=12)  # a board that counts already: 12 units on its lane, on its flash
    assert await node.report() == 12  # its opening stock, booked on an unassigned lane
    await node.event(-2)
    await node.event(-1)
    lane = await lane_of(ledger)
    assert lane == "node7-lane0" and observed(ledger, lane) == {None: 9}

    await ledger.assign_lane(NODE, 0, "COLA", actor="manager")
    assert observed(ledger, lane) == {"COLA": 9} == {"COLA": node.count}  # at once, in the assigning transaction
    ((ref0, leg0, sku0, qty0, node0, actor0), (ref1, leg1, sku1, qty1, node1, _)) = moves(ledger)
    assert ref0 == ref1 and ref0.startswith(f"lane_assigned:{lane}:") and (leg0, leg1) == (0, 1)
    assert (sku0, qty0, sku1, qty1, node0, node1, actor0) == (None, -9, "COLA", 9, None, None, "manager")
    (entry,) = audited(ledger, "move_lane_units")
    assert entry == {"lane_id": lane, "sku": "COLA", "units": 9, "by_sku": [[None, 9]], "refs": [ref0],
                     "cause": "assign_lane"}  # fmt: skip
    (assign,) = audited(ledger, "assign_lane")
    assert (assign["old_sku"], assign["sku"]) == (None, "COLA")

    assert await node.report() == 0  # the reference did not move: the node's counters agree, no phantom gap
    await node.event(-3)
    await node.event(1, KIND_PUT)
    assert observed(ledger, lane) == {"COLA": 7} == {"COLA": node.count}
    assert await node.report() == 0  # a node reboot: its counters come back from its flash, the same report

    ledger = await restart(ledger)  # a hub restart: the reference is rebuilt from the movements with a node
    try:
        node.ledger = ledger
        assert await node.report() == 0 and observed(ledger, lane) == {"COLA": 7}
        assert await node.staff_count(7, "C1") == 0  # staff count what is there: nothing to book, nothing absorbed
        assert await node.staff_count(5, "C2") == 0 and observed(ledger, lane) == {"COLA": 5} == {"COLA": node.count}
        assert await node.report() == 0
        book = rows(ledger, "SELECT book_qty, counted_qty FROM physical_counts ORDER BY id")
        assert book == [(0, 7), (7, 5)]  # the book side: only the counts staff made
        assert len(moves(ledger)) == 2  # the one move, of two legs
        assert rows(ledger, "SELECT count(*) FROM movements WHERE reason = 'sensor_gap'") == [(1,)]
        check_derived(ledger)
    finally:
        await ledger.close()


async def test_the_units_under_no_sku_are_read_through_the_lanes_spans_not_every_no_sku_movement(
    ledger: LedgerService,
) -> None:
    """assign_lane sums a lane's units under no SKU inside its write transaction (the hub's writer waits), and the
    shelf page and ``ledger stock`` read the same sum: through each no-SKU span's id range. SQLite chose the
    (sku, ts) index for ``sku IS NULL`` instead, every no-SKU movement of the ledger per span (seconds at tens of
    thousands of them)."""
    from hub.ledger.lane_activity import UNDER_NO_SKU
    from hub.ledger.reader import NO_SKU_UNITS, no_sku_params

    node = Node(ledger, count=3)
    await node.report()
    lane = await lane_of(ledger)
    with sqlite3.connect(ledger.path) as conn:
        plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {UNDER_NO_SKU}", no_sku_params(lane))]
        assert any("m USING INTEGER PRIMARY KEY" in step for step in plan), plan
        assert not any("movements_sku_ts" in step for step in plan), plan
        assert conn.execute(NO_SKU_UNITS.sql, no_sku_params(lane)).fetchone() == (3,)


async def test_a_lane_reassigned_from_one_sku_to_another_takes_the_nodes_count_with_it(ledger: LedgerService) -> None:
    """SKU A -> SKU B: the node goes on counting the lane (set_lane only changes its unit weight), so the units it
    counts are B's; A's observed stock on the lane ends (0), B's is the node's count at once."""
    await ledger.assign_lane(NODE, 0, "COLA", actor="setup", lane_id="A1")
    node = Node(ledger, count=6)
    assert await node.report() == 6
    await node.event(-1)
    (pick,) = rows(ledger, "SELECT id FROM movements WHERE event_seq = 1")
    await ledger.reverse(pick[0], actor="web:manager", why="a hand on the shelf")  # a correction under COLA: +1
    assert observed(ledger, "A1") == {"COLA": 6} and node.count == 5

    await ledger.assign_lane(NODE, 0, "TEA", actor="manager")
    assert observed(ledger, "A1") == {"TEA": 6}  # the reference (5) and its correction (+1), now TEA's
    (entry,) = audited(ledger, "move_lane_units")
    assert (entry["sku"], entry["by_sku"], entry["units"]) == ("TEA", [["COLA", 6]], 6)
    assert await node.report() == 0
    await node.event(-2)
    assert observed(ledger, "A1") == {"TEA": 4} and node.count == 3  # the correction still stands beside the node

    # a reversal of a movement booked under COLA, now the lane holds TEA: the correction is TEA's
    (cola_pick,) = rows(ledger, "SELECT id FROM movements WHERE source_ref = 'node:7:ev:1'")
    with pytest.raises(NotReversible):
        await ledger.reverse(cola_pick[0], actor="web:manager", why="twice")
    (gap,) = rows(ledger, "SELECT id FROM movements WHERE reason = 'sensor_gap'")
    await ledger.reverse(gap[0], actor="web:manager", why="the opening stock was never there")
    assert observed(ledger, "A1") == {"TEA": -2}
    ((_, details),) = [(e["cause"], e) for e in audited(ledger, "move_lane_units") if e["cause"] == "reverse"]
    assert (details["sku"], details["by_sku"]) == ("TEA", [["COLA", -6]])
    assert await node.report() == 0

    absorbed = await node.staff_count(4, "C1")  # the count absorbs both corrections: observed = the count
    assert absorbed == -5 and observed(ledger, "A1") == {"TEA": 4} == {"TEA": node.count}
    (rebase,) = audited(ledger, "rebase_lane")
    assert (rebase["absorbed"], rebase["by_sku"]) == (-5, [["TEA", -5]])
    assert await node.report() == 0
    await node.event(-1)
    assert observed(ledger, "A1") == {"TEA": 3} == {"TEA": node.count}

    ledger = await restart(ledger)
    try:
        node.ledger = ledger
        assert await node.report() == 0 and observed(ledger, "A1") == {"TEA": 3}
        await ledger.record_count("TEA", 0, actor="manager", ref="C-out", location="lane:A1")  # the book first
        await ledger.assign_lane(NODE, 0, None, actor="manager")  # unassigned: the units have no SKU again
        assert observed(ledger, "A1") == {None: 3} and await node.report() == 0
        await ledger.assign_lane(NODE, 0, "COLA", actor="manager")
        assert observed(ledger, "A1") == {"COLA": 3} and await node.report() == 0
        causes = [(e["sku"], e["by_sku"], e["cause"]) for e in audited(ledger, "move_lane_units")]
        assert causes[-2:] == [(None, [["TEA", 3]], "assign_lane"), ("COLA", [[None, 3]], "assign_lane")]
        check_derived(ledger)
    finally:
        await ledger.close()


async def test_a_move_of_a_lanes_units_is_not_reversible(ledger: LedgerService) -> None:
    node = Node(ledger, count=4)
    await node.report()
    await ledger.assign_lane(NODE, 0, "COLA", actor="manager")
    for mid, _ in rows(ledger, "SELECT id, leg FROM movements WHERE reason = 'lane_assigned'"):
        with pytest.raises(NotReversible, match="follows the assignment"):
            await ledger.reverse(mid, actor="web:manager", why="undo")
    assert observed(ledger, "node7-lane0") == {"COLA": 4}


async def test_a_lane_with_nothing_elsewhere_is_assigned_without_a_move(ledger: LedgerService) -> None:
    await ledger.assign_lane(NODE, 0, "COLA", actor="setup", lane_id="A1")  # a new lane: nothing booked yet
    node = Node(ledger, count=3)
    await node.report()
    await node.event(-3)  # emptied before the change of product, as a store does it
    await ledger.assign_lane(NODE, 0, "TEA", actor="manager")
    await ledger.assign_lane(NODE, 0, "TEA", actor="manager")  # the same again: nothing
    assert moves(ledger) == [] and audited(ledger, "move_lane_units") == []
    assert Reason.LANE_ASSIGNED.is_sensor


# ------------------------------------------------------------------------------ a ledger written before the rule


async def test_a_count_or_assigning_the_same_sku_repairs_a_lane_left_short_by_an_older_ledger(
    ledger: LedgerService,
) -> None:
    """A ledger written before the rule: units with no SKU on a lane assigned since (the tester's ledger: negative
    lanes that set-count left as they were). A staff count of the lane settles it first; so does assigning it the
    SKU it has (``set-lane`` again)."""
    for node_id, lane_id in ((NODE, "node7-lane0"), (8, "node8-lane0")):
        await ledger.submit(SensorGap(node_id, 0, 10, "f1:lane0", T0))
        await ledger.submit(SensorEvent(node_id, 1, 0, KIND_PICK, -2, -7000, 97, T0 + 1))
        conn = sqlite3.connect(ledger.path)  # assigned as the code before the rule did it: nothing moved
        conn.execute("UPDATE lanes SET sku = 'COLA' WHERE lane_id = ?", (lane_id,))
        conn.commit()
        conn.close()
        await ledger.submit(SensorEvent(node_id, 2, 0, KIND_PICK, -3, -10500, 97, T0 + 2))
        assert observed(ledger, lane_id) == {None: 8, "COLA": -3}  # the node says 5

    node = Node(ledger, count=5)
    node.seq = 2
    assert await node.report() == 0  # the counters agree with the reference: no gap would ever repair it
    assert await node.staff_count(5, "C1") == 0
    assert observed(ledger, "node7-lane0") == {"COLA": 5}
    assert [e["cause"] for e in audited(ledger, "move_lane_units")] == ["count"]

    await ledger.assign_lane(8, 0, "COLA", actor="manager")
    assert observed(ledger, "node8-lane0") == {"COLA": 5}
    assert [(e["lane_id"], e["cause"]) for e in audited(ledger, "move_lane_units")][-1] == (
        "node8-lane0",
        "assign_lane",
    )
    check_derived(ledger)


# ------------------------------------------------------------------------------------------------- the fleet


async def test_the_fleet_contract_carries_the_moves(ledger: LedgerService) -> None:
    """The central consumer's strict decoder takes the moves as the hub publishes them (reason, a leg with no SKU)."""
    node = Node(ledger, count=5)
    await node.report()
    await ledger.assign_lane(NODE, 0, "COLA", actor="manager")
    published = rows(ledger, outbox.MOVEMENTS_AFTER, (0, 1000))
    got = fleet_messages.decode("store-1", "movements", fleet_messages.encode_movements("store-1", published, T0))
    assert isinstance(got, fleet_messages.Movements)
    assert [(r.reason, r.sku, r.qty, r.leg) for r in got.rows if r.reason == "lane_assigned"] == [
        ("lane_assigned", None, -5, 0),
        ("lane_assigned", "COLA", 5, 1),
    ]


# ------------------------------------------------------------------------------------------- the migration


def test_the_migration_lets_movements_take_lane_assigned_at_sensor_locations_only(tmp_path: Path) -> None:
    """A database of the version before: its rows intact after the upgrade, ``lane_assigned`` taken at a sensor
    location (with no SKU on one leg) and refused at a book one; a connection opened before sees the rule too."""
    before_step = ledger_schema.LANE_ASSIGNED.version - 1
    db = tmp_path / "old.db"
    conn = ledger_schema.connect(db)
    ledger_schema.migrate(conn, MIGRATIONS[:before_step])
    conn.execute("INSERT INTO skus (sku, name, unit_weight_dg) VALUES ('TEA', 'Tea', 1000)")
    conn.execute("INSERT INTO nodes (node_id) VALUES (1)")
    row = (
        "INSERT INTO movements (ts_ms, recorded_ms, sku, location, qty, reason, source_ref, leg, actor)"
        " VALUES (1, 1, ?, ?, ?, ?, ?, ?, 'staff')"
    )
    conn.execute(
        "INSERT INTO movements (ts_ms, recorded_ms, location, qty, reason, source_ref, actor, node_id)"
        " VALUES (1, 1, 'sensor:a', 4, 'sensor_gap', 'node:1:gap:x', 'node:1', 1)"
    )
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(row, (None, "sensor:a", -4, "lane_assigned", "lane_assigned:a:1", 0))
    other = ledger_schema.connect(db)
    other.execute("SELECT count(*) FROM movements").fetchone()  # parses the old schema
    assert ledger_schema.migrate(conn, MIGRATIONS)[0] == before_step
    conn.execute(row, (None, "sensor:a", -4, "lane_assigned", "lane_assigned:a:1", 0))
    other.execute(row, ("TEA", "sensor:a", 4, "lane_assigned", "lane_assigned:a:1", 1))
    for bad in (("TEA", "lane:a", 1, "lane_assigned", "x:1", 0), ("TEA", "sensor:a", 1, "lane_moved", "x:2", 0)):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(row, bad)
    assert conn.execute("SELECT reason, sku, qty FROM movements ORDER BY id").fetchall() == [
        ("sensor_gap", None, 4),
        ("lane_assigned", None, -4),
        ("lane_assigned", "TEA", 4),
    ]
    assert conn.execute("SELECT sku, location, qty FROM balances").fetchall() == [("TEA", "sensor:a", 4)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    other.close()
