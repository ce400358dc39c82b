"""Commit notifications (hub/ledger/changes.py): every write path reports what it changed, after COMMIT only, and a
listener can neither miss a commit nor fail one."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.ledger import LaneReading, LedgerService, NodeUpdate, Reason, SensorEvent, SensorGap, Sku
from hub.ledger.changes import Changes
from hub.ledger.models import now_ms
from hub.ledger.postings import Tx, WriteOff
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.reconciler import Reconciler
from hub.reconcile.resolve import resolve
from hub.schema import MIGRATIONS
from hub.web.accounts.users import add_user, prune_login_attempts, record_login
from shared_protocol.messages import KIND_PICK

NODE = 7


def pick(seq: int, lane: int = 0) -> SensorEvent:
    return SensorEvent(NODE, seq, lane, KIND_PICK, -1, -3500, 96, now_ms(), uplink_seq=100 + seq)


class Seen:
    def __init__(self, ledger: LedgerService) -> None:
        self.changes: list[Changes] = []
        self.unlisten = ledger.changes.listen(self.changes.append)

    def take(self) -> Changes:
        """Every change since the last take, merged."""
        merged = Changes()
        for c in self.changes:
            merged = merged.merge(c)
        self.changes.clear()
        return merged


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as svc:
        await svc.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20, reorder_point=8, reorder_qty=10), actor="setup")
        await svc.assign_lane(NODE, 0, "COLA", actor="setup", lane_id="A1")
        yield svc


async def test_every_write_path_reports_what_it_changed(ledger: LedgerService) -> None:
    seen = Seen(ledger)
    await ledger.add_sku(Sku("TEA", "Tea", 1200), actor="t")
    assert seen.take() == Changes(skus=frozenset({"TEA"}))
    await ledger.add_sku(Sku("TEA", "Green tea", 1250), actor="t")  # an UPSERT that updates: still reported
    assert seen.take() == Changes(skus=frozenset({"TEA"}))
    await ledger.assign_lane(NODE, 1, "TEA", actor="t", lane_id="B1")
    assert seen.take() == Changes(lanes=frozenset({"B1"}))

    # the sensor batch: events, gaps, readings; node updates are not tracked
    await ledger.submit(pick(1))
    assert seen.take() == Changes(locations=frozenset({"sensor:A1"}))
    await ledger.apply_sensor_gap(SensorGap(NODE, 1, 4, "g1", now_ms()))
    assert seen.take().locations == {"sensor:B1"}
    assert await ledger.submit(LaneReading(NODE, 0, now_ms(), 70_000, 20, 0))
    assert seen.take() == Changes(readings=frozenset({"A1"}))
    await ledger.update_node(NodeUpdate(NODE, uplink_seq=500))
    assert seen.take() == Changes() and not seen.changes

    # an event of a lane nobody assigned: the lane is registered and an alert opened, in the same batch
    await ledger.submit(pick(2, lane=5))
    unknown = seen.take()
    assert unknown.lanes == {"node7-lane5"} and unknown.locations == {"sensor:node7-lane5"}
    assert unknown.causes == {"lane:node7-lane5"} and len(unknown.alerts) == 1
    await ledger.assign_lane(NODE, 5, "TEA", actor="t")  # resolves the unassigned_lane alert
    assigned = seen.take()
    assert assigned.lanes == {"node7-lane5"} and assigned.alerts == unknown.alerts

    # business postings: the book locations they move
    await ledger.record_receipt("COLA", 10, actor="t", ref="r1")
    assert seen.take() == Changes(locations=frozenset({"backroom"}))
    await ledger.restock("COLA", "A1", 4, actor="t", ref="s1")
    assert seen.take().locations == {"backroom", "lane:A1"}
    await ledger.record_sale("COLA", 1, actor="t", ref="x1")
    assert seen.take().locations == {"lane:A1"}
    report = await ledger.import_csv("sales", b"id,timestamp,sku,quantity\nc1,2026-11-27T10:00:00Z,COLA,1\n", actor="t")
    assert report.ok and seen.take().locations == {"lane:A1"}

    # alerts: opened, acknowledged, resolved with a write-off, evidence updated through transact
    opened = await ledger.open_alert("shrinkage", "lane:A1/COLA", {"unexplained_units": 1}, actor="t")
    assert seen.take() == Changes(alerts=frozenset({opened.alert_id}), causes=frozenset({"lane:A1/COLA"}))
    await ledger.acknowledge_alert(opened.alert_id, actor="t")
    assert seen.take() == Changes(alerts=frozenset({opened.alert_id}), causes=frozenset({"lane:A1/COLA"}))
    await ledger.transact(lambda tx: tx.update_alert_evidence(opened.alert_id, {"unexplained_units": 2}, actor="t"))
    assert seen.take().alerts == {opened.alert_id}
    write_off = WriteOff("COLA", 1, Reason.SHRINKAGE, "lane:A1")
    await ledger.resolve_alert(opened.alert_id, actor="t", resolution="theft", write_off=write_off)
    resolved = seen.take()
    assert resolved.alerts == {opened.alert_id} and resolved.locations == {"lane:A1"}

    # reconciliation (its own tables, and alerts) and an alert resolution through its module
    await Reconciler(ledger, ReconcileConfig()).run_once()
    reorder = seen.take()
    assert "sku:COLA" in reorder.causes  # 7 on the book: at or below the reorder point
    damage = await ledger.open_alert("damage", "lane:A1/COLA", {"sku": "COLA", "location": "lane:A1"}, actor="t")
    seen.take()
    await resolve(ledger, damage.alert_id, "no_damage", actor="t")
    assert seen.take().alerts == {damage.alert_id}

    # the web's own tables are not tracked: nothing the live page shows
    await ledger.transact(lambda tx: add_user(tx, "ann", "scrypt:x$y", "viewer", actor="t"))
    await ledger.transact(lambda tx: record_login(tx, "ann", "1.2.3.4", True))
    await ledger.transact(prune_login_attempts)
    assert not seen.changes


async def test_a_rolled_back_transaction_reports_nothing(ledger: LedgerService) -> None:
    seen = Seen(ledger)

    async def sale_then_fail(tx: Tx) -> None:
        await tx.receipt("COLA", 3, ts=None, actor="t", ref="doomed")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await ledger.transact(sale_then_fail)
    assert not seen.changes
    await ledger.add_sku(Sku("SOUP", "Soup", 4000), actor="t")
    assert seen.take() == Changes(skus=frozenset({"SOUP"}))  # nothing of the rolled-back one left behind


async def test_listeners_hear_before_the_writer_answers_and_never_fail_it(ledger: LedgerService) -> None:
    heard: list[Changes] = []

    def broken(changes: Changes) -> None:
        raise RuntimeError("a buggy listener")

    ledger.changes.listen(broken)
    unlisten = ledger.changes.listen(heard.append)
    await ledger.record_receipt("COLA", 1, actor="t", ref="r1")  # the buggy listener fails nothing
    assert [c.locations for c in heard] == [{"backroom"}]  # told before the caller's future resolved
    unlisten()
    await ledger.record_receipt("COLA", 1, actor="t", ref="r2")
    assert len(heard) == 1
    assert ledger.changes.notified >= 2


async def test_the_triggers_live_on_the_writers_connection_only(ledger: LedgerService) -> None:
    conn = sqlite3.connect(ledger.path)
    try:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'ledger_changes%'").fetchall() == []
        conn.execute("INSERT INTO skus (sku, name, unit_weight_dg) VALUES ('OTHER', 'Other', 100)")  # no temp table
        conn.commit()
    finally:
        conn.close()
