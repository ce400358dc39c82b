"""After `smartshelf ledger restore` of an older backup, a node's outbox starts above the restored ledger's mark for
it: the node had delivered the events in between (the hub acknowledged them, so it let them go) and the restored
ledger lacks them. The hub books them from the node's counters as it books what a full outbox dropped, but says what
happened: delivered before the restore, not an outbox overflow (hub.link.gaps.skip_cause, the restore point of
hub.ledger.identity), unless the node says its outbox did drop events (its outbox_dropped, kept across boots): then
either may be. A real overflow later is still called one."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from hub.cli import main
from hub.ledger import Sku, backup_cli
from hub.ledger.identity import restore_point
from hub.ledger.schema import open_and_migrate
from hub.link.gaps import OVERFLOW, RestoreMark, skip_cause
from hub.link.marks import EventMarks
from hub.schema import MIGRATIONS
from shared_protocol.messages import RequestState
from tests.hub_support import KEY1, FakeNode, db_rows, eventually, start_hub, write_config


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def gap_notes(db: Path) -> list[tuple[str, int, str]]:
    return [
        (str(loc), int(qty), str(note))
        for loc, qty, note in db_rows(
            db, "SELECT location, qty, note FROM movements WHERE reason = 'sensor_gap' AND note LIKE '%events %'"
        )
    ]


@pytest.mark.parametrize("dropped_before", [0, 4])  # 4: the node's outbox had dropped events (its flash count)
async def test_events_lost_with_a_restore_are_not_called_an_outbox_overflow(
    tmp_path: Path, sockdir: Path, caplog: pytest.LogCaptureFixture, dropped_before: int
) -> None:
    node = FakeNode(1, KEY1, tmp_path / "node-1")
    node.plug()
    config = write_config(tmp_path, sockdir, [node])
    backup = tmp_path / "backups" / "before.db"
    backup.parent.mkdir()
    try:
        hub = await start_hub(config)
        try:
            assert hub.ledger is not None
            await hub.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
            await hub.ledger.assign_lane(1, 0, "COLA", actor="setup", lane_id="A1")
            node.hello()
            await node.wait_for(lambda: node.messages(RequestState))
            node.event(0, -1)
            node.event(0, -1)
            await node.wait_ack(2)
            await hub.ledger.backup(backup)  # the backup holds events 1..2
            for _ in range(3):
                node.event(0, -1)  # 3..5: booked and acknowledged, so the node lets them go
            await node.wait_ack(5)
        finally:
            await hub.stop()
        db = hub.config.database
        rc, out, err = await asyncio.to_thread(cli, "ledger", "restore", str(backup), "--config", str(config))
        assert (rc, err) == (0, ""), out
        details = json.loads(db_rows(db, "SELECT details FROM audit WHERE action = 'restore'")[0][0])
        assert details["node_marks"] == {"1": 2}  # the restore point: node 1's mark as the backup held it

        caplog.set_level(logging.WARNING, logger="hub.link.booking")
        hub = await start_hub(config)
        try:
            ingest = hub.ingest
            assert ingest is not None
            node.hello()
            await node.wait_for(lambda: 2 in node.acks[-1:])  # the restored ledger's mark
            node.event(0, -1)  # 6: the node's outbox holds only this one
            node.health(outbox_first=6, outbox_depth=1, dropped=dropped_before)
            await node.wait_ack(6)
            await eventually(lambda: gap_notes(db), what="the gap of events 3..5")
            [(where, qty, note)] = gap_notes(db)
            assert (where, qty) == ("sensor:A1", -3)
            restore = f"the ledger's restore from {backup} ("
            assert f"events 3..5 were delivered before {restore}" in note
            logged = [r.getMessage() for r in caplog.records if "events 3..5" in r.getMessage()]  # the skip, the gap
            assert logged[0].startswith(f"node 1: events 3..5 were delivered before {restore}"), logged
            assert len(logged) == 2, logged
            if dropped_before:  # the node's outbox has dropped events: an overflow is as possible as the restore
                assert note.endswith("UTC) or dropped by the node's full outbox") and "no outbox overflow" not in note
                assert all(line.count("or dropped by the node's full outbox") == 1 for line in logged), logged
            else:
                assert "(no outbox overflow)" in note and "full outbox" not in note
                assert not any("full outbox" in line for line in logged), logged

            # later, a real overflow: events 7..8 dropped by the full outbox, 9 held
            node.make_event(0, -1)
            node.make_event(0, -1)
            node.event(0, -1)
            node.health(outbox_first=9, outbox_depth=1, dropped=dropped_before + 2)
            await node.wait_ack(9)
            await eventually(lambda: len(gap_notes(db)) == 2, what="the gap of events 7..8")
            (_, qty, note) = gap_notes(db)[1]
            assert qty == -2 and note.endswith(f"events 7..8 {OVERFLOW}")
            assert any(f"node 1: events 7..8 {OVERFLOW}" in r.getMessage() for r in caplog.records)
            observed = db_rows(db, "SELECT qty FROM observed_stock WHERE lane_id = 'A1'")
            assert observed == [(node.counters[0].count,)] == [(-9,)]
        finally:
            await hub.stop()
    finally:
        node.unplug()


def test_skip_cause_tells_a_restore_from_an_overflow() -> None:
    restored = RestoreMark(2, "the ledger's restore from b.db (2026-12-07 10:00 UTC)")
    assert skip_cause(EventMarks(2), restored, 0) == (
        "were delivered before the ledger's restore from b.db (2026-12-07 10:00 UTC), so the restored ledger lacks"
        " them (no outbox overflow)"
    )
    # the mark has not moved since the backup (the node away since), but its outbox did drop events: either is
    # possible, and "no outbox overflow" is not claimed
    assert skip_cause(EventMarks(2), restored, 1) == (
        "were delivered before the ledger's restore from b.db (2026-12-07 10:00 UTC) or dropped by the node's full"
        " outbox"
    )
    assert skip_cause(EventMarks(3), restored, 0) == OVERFLOW  # the mark moved on since the restore: an overflow
    assert skip_cause(EventMarks(3), restored, 5) == OVERFLOW
    assert skip_cause(EventMarks(2), None, 0) == OVERFLOW  # never restored, or the node was not in the backup


@pytest.mark.parametrize(
    ("details", "marks"),
    [
        ({"incarnation": 7, "node_marks": {"1": 2, "9": 40}}, {1: 2, 9: 40}),
        ({"incarnation": 6, "node_marks": {"1": 2}}, None),  # an earlier restore's entry: not this incarnation's
        ({"incarnation": 7}, None),  # a restore made before the marks were recorded
        ({"incarnation": 7, "node_marks": {"x": 2}}, None),
    ],
)
def test_the_restore_point_is_the_restore_of_this_incarnation(
    details: dict[str, object], marks: dict[int, int] | None
) -> None:
    point = restore_point((7, 1_796_637_600_000, "b.db"), json.dumps(details))
    assert (point.marks if point is not None else None) == marks
    if point is not None:
        assert point.describe() == "the ledger's restore from b.db (2026-12-07 10:00 UTC)"
    assert restore_point(None, json.dumps(details)) is None  # never restored


def test_the_restore_records_the_marks_of_the_backup_even_when_a_hub_moves_them_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restore's audit entry (the restore point) holds each node's mark as the restored copy had it, read under
    the restore's lock: a hub started as soon as the lock is let go may move the marks before the entry is written."""
    backup, db = tmp_path / "before.db", tmp_path / "ledger.db"
    open_and_migrate(backup, MIGRATIONS)
    conn = sqlite3.connect(backup)
    with conn:
        conn.execute("INSERT INTO nodes (node_id, highest_contiguous_event_seq) VALUES (1, 2), (9, 40)")
    conn.close()
    restore = backup_cli.restore_database

    def restored_then_a_hub_books(*args: object, **kwargs: object) -> object:
        info = restore(*args, **kwargs)  # type: ignore[arg-type]
        hub = sqlite3.connect(db)
        with hub:
            hub.execute("UPDATE nodes SET highest_contiguous_event_seq = 7 WHERE node_id = 1")
        hub.close()
        return info

    monkeypatch.setattr(backup_cli, "restore_database", restored_then_a_hub_books)
    rc, out, err = cli("ledger", "restore", str(backup), "--db", str(db))
    assert (rc, err) == (0, ""), out
    details = json.loads(db_rows(db, "SELECT details FROM audit WHERE action = 'restore'")[0][0])
    assert details["node_marks"] == {"1": 2, "9": 40}
