"""The lanes' assignment history the reports read (``lane_assignments``, migration 17): kept by a trigger on the audit
in the transaction that audits ``assign_lane``, and built by the migration from the audit entries of an older ledger,
with the same out-of-stock figures as the audit's JSON gave (``metrics.assignments`` read it before)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hub.ledger import LedgerService, SensorGap, Sku
from hub.ledger import schema as ledger_schema
from hub.ledger.models import InvalidArgument, now_ms
from hub.schema import MIGRATIONS
from hub.web.pages import metrics
from hub.web.schema import LANE_ASSIGNMENTS
from tools.bench import web_reports
from tools.bench.web_reports import walk_lane_outages

D = 86_400_000
H = 3_600_000
MIN = 60_000


def audit_history(conn: sqlite3.Connection, until_ms: int) -> dict[str, list[tuple[int, str | None]]]:
    """The assignment history as the reports read it before migration 17: the JSON of every audit entry."""
    out: dict[str, list[tuple[int, str | None]]] = {}
    for ts_ms, lane_id, sku in conn.execute(
        "SELECT ts_ms, json_extract(details, '$.lane_id'), json_extract(details, '$.sku') FROM audit"
        " WHERE action = 'assign_lane' AND ts_ms <= ? ORDER BY ts_ms, id",
        (until_ms,),
    ):
        out.setdefault(str(lane_id), []).append((int(ts_ms), sku))
    return out


def _run(
    db: Path, migrations: tuple[ledger_schema.Migration, ...], fn: Callable[[LedgerService], Awaitable[None]]
) -> None:
    async def go() -> None:
        async with LedgerService(db, migrations=migrations, synchronous="NORMAL") as ledger:
            await fn(ledger)

    asyncio.run(go())


def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def test_an_old_ledger_migrates_with_the_same_history_and_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger of version 16: D1 held TEA (sold out), then SOUP, then TEA again; A1 held COLA throughout; E1 COLA,
    then nothing. After the migration the table holds exactly the audit's history, and the out-of-stock figures are
    those of the audit's history (and of the walk of every movement)."""
    db = tmp_path / "old.db"
    t = now_ms()
    clock = {"now": t - 61 * D}
    monkeypatch.setattr("hub.ledger.service.now_ms", lambda: clock["now"])  # when the assignments are audited
    before = MIGRATIONS[: LANE_ASSIGNMENTS.version - 1]
    assert before[-1].version == LANE_ASSIGNMENTS.version - 1

    async def setup(ledger: LedgerService) -> None:
        for sku in ("TEA", "SOUP", "COLA"):
            await ledger.add_sku(Sku(sku, sku.title(), 1000), actor="t")
        await ledger.assign_lane(2, 0, "TEA", actor="t", lane_id="D1")
        await ledger.assign_lane(1, 0, "COLA", actor="t", lane_id="A1")
        await ledger.assign_lane(3, 0, "COLA", actor="t", lane_id="E1")
        await ledger.apply_sensor_gap(SensorGap(2, 0, 4, "tea-in", t - 60 * D))
        await ledger.apply_sensor_gap(SensorGap(2, 0, -4, "tea-out", t - 59 * D))
        await ledger.apply_sensor_gap(SensorGap(1, 0, 6, "cola-in", t - 60 * D))
        await ledger.apply_sensor_gap(SensorGap(1, 0, -6, "cola-out", t - 20 * D))
        await ledger.apply_sensor_gap(SensorGap(1, 0, 3, "cola-back", t - 10 * D))
        await ledger.apply_sensor_gap(SensorGap(3, 0, 2, "e-in", t - 40 * D))
        await ledger.apply_sensor_gap(SensorGap(3, 0, -2, "e-out", t - 35 * D))
        clock["now"] = t - 58 * D - MIN
        await ledger.assign_lane(2, 0, "SOUP", actor="t")
        await ledger.apply_sensor_gap(SensorGap(2, 0, 10, "soup-in", t - 58 * D))
        await ledger.apply_sensor_gap(SensorGap(2, 0, -10, "soup-out", t - H - MIN))
        clock["now"] = t - 30 * D
        await ledger.assign_lane(3, 0, None, actor="t")
        clock["now"] = t - H - MIN // 2
        await ledger.assign_lane(2, 0, "TEA", actor="t")
        await ledger.apply_sensor_gap(SensorGap(2, 0, 8, "tea-in2", t - H))

    _run(db, before, setup)
    old = _ro(db)
    assert old.execute("SELECT max(version) FROM schema_version").fetchone() == (LANE_ASSIGNMENTS.version - 1,)
    moments = (t, t - H, t - 30 * D, t - 58 * D, t - 61 * D)
    history = {until: audit_history(old, until) for until in moments}
    old.close()
    assert [sku for _, sku in history[t]["D1"]] == ["TEA", "SOUP", "TEA"] and history[t]["E1"][-1][1] is None

    conn = ledger_schema.connect(db)
    assert ledger_schema.migrate(conn, MIGRATIONS) == (LANE_ASSIGNMENTS.version - 1, MIGRATIONS[-1].version)
    conn.close()
    new = _ro(db)
    for until in moments:
        assert metrics.assignments(new, until) == history[until] == audit_history(new, until), until
    monkeypatch.setattr(web_reports, "assignments", audit_history)  # the walk with the audit's history, as before
    for days in (1, 7, 30, 60, 90):
        p = metrics.period(days, t)
        assert metrics.lane_outages(new, p) == walk_lane_outages(new, p), days
    d1 = {o.lane_id: o for o in metrics.lane_outages(new, metrics.period(30, t))}["D1"]
    assert (d1.out_ms, d1.sku, d1.count_at_end, d1.out_now) == (MIN, "TEA", 8, False)
    d1 = {o.lane_id: o for o in metrics.lane_outages(new, metrics.period(60, t))}["D1"]
    assert d1.out_ms == (D - MIN) + MIN  # TEA out from t - 59 days until SOUP took the lane, SOUP's last minute
    e1 = {o.lane_id: o for o in metrics.lane_outages(new, metrics.period(60, t))}["E1"]
    assert (e1.sku, e1.out_ms, e1.count_at_end) == (None, 5 * D, 0)  # out from t - 35 days until unassigned


def test_the_writer_keeps_the_history_in_the_auditing_transaction(tmp_path: Path) -> None:
    """Every audited ``assign_lane`` adds its row at once, the same as the audit's JSON; a refused one adds neither;
    other audit entries add none."""
    db = tmp_path / "l.db"

    async def write(ledger: LedgerService) -> None:
        await ledger.add_sku(Sku("TEA", "Tea", 1000), actor="t")
        await ledger.add_sku(Sku("SOUP", "Soup", 1000), actor="t")
        await ledger.assign_lane(1, 0, "TEA", actor="t", lane_id="A1")
        await ledger.assign_lane(1, 1, None, actor="t", lane_id="B1")
        await ledger.assign_lane(1, 0, "SOUP", actor="manager")
        await ledger.assign_lane(1, 0, "SOUP", actor="manager")  # the same again: nothing assigned, nothing audited
        with pytest.raises(InvalidArgument):
            await ledger.assign_lane(1, 2, "TEA", actor="t", lane_id="bad id!")

    _run(db, MIGRATIONS, write)
    conn = _ro(db)
    rows = conn.execute("SELECT lane_id, sku FROM lane_assignments ORDER BY ts_ms, id").fetchall()
    assert rows == [("A1", "TEA"), ("B1", None), ("A1", "SOUP")]
    assert conn.execute("SELECT count(*) FROM audit WHERE action = 'assign_lane'").fetchone() == (3,)
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] > 3  # the SKUs' entries: no rows of their own
    assert metrics.assignments(conn, now_ms() + D) == audit_history(conn, now_ms() + D)
    ids = conn.execute("SELECT id FROM lane_assignments ORDER BY id").fetchall()
    assert ids == conn.execute("SELECT id FROM audit WHERE action = 'assign_lane' ORDER BY id").fetchall()
