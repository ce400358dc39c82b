"""RFID beside the weight through the reconciler, on a real ledger: store timelines (honest picks, a substitution, a
misplaced item, a hand passing over, a node restart, a silent reader, an ambiguous count) and the alerts, verdicts
and evidence they leave. Rules on their own: tests/test_reconcile_tag_rules.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.ledger import LaneReading, LedgerService, SensorEvent, Sku
from hub.ledger.tags import LOST, READER_OK, READER_SILENT, READER_STARTING, SEEN, ReaderReport, TagEvent, TagRecheck
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.reconciler import Reconciler
from hub.reconcile.resolve import resolve
from hub.reconcile.tag_rules import NO_TAG_LEFT, SWAPPED
from hub.schema import MIGRATIONS
from shared_protocol.messages import KIND_PICK, KIND_PUT

T = 1_700_000_000_000
S = 1000
COLA_GTIN, TEA_GTIN = "80614141123458", "00000096385074"


def sgtin(gtin_item: int, serial: int) -> str:
    """An SGTIN-96 of company 0614141 (partition 5), item reference ``gtin_item``: COLA is 812345."""
    value = 0x30
    for v, bits in ((1, 3), (5, 3), (614141, 24), (gtin_item, 20), (serial, 38)):
        value = (value << bits) | v
    return f"{value:024X}"


COLA1, COLA2, COLA3 = (sgtin(812345, n) for n in (1, 2, 3))
TEA1 = "E2801160600002054CC2096F"  # a TEA unit known by the store's EPC table only


class Shelf:
    """Node 1 of a store: its events in its one sequence, as ingest would submit them."""

    def __init__(self, ledger: LedgerService) -> None:
        self.ledger = ledger
        self.seq = 0

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    async def seen(self, epc: str, ts: int, lane: int = 0, known: bool = True) -> None:
        await self.ledger.submit(TagEvent(1, self._next(), lane, SEEN, epc, ts, -50, ts_known=known))

    async def lost(self, epc: str, ts: int, lane: int = 0, known: bool = True) -> None:
        await self.ledger.submit(TagEvent(1, self._next(), lane, LOST, epc, ts, ts_known=known))

    async def pick(self, ts: int, units: int = 1, lane: int = 0, conf: int = 95, weight: int | None = None) -> None:
        w = -3500 * units if weight is None else weight
        await self.ledger.submit(SensorEvent(1, self._next(), lane, KIND_PICK, -units, w, conf, ts))

    async def put(self, ts: int, units: int = 1, lane: int = 0, weight: int | None = None) -> None:
        w = 3500 * units if weight is None else weight
        await self.ledger.submit(SensorEvent(1, self._next(), lane, KIND_PUT, units, w, 95, ts))

    async def reading(self, ts: int, weight_dg: int, lane: int = 0) -> None:
        await self.ledger.submit(LaneReading(1, lane, ts, weight_dg, weight_dg // 3500))

    async def reader(self, ts: int, state: int = READER_OK) -> None:
        await self.ledger.submit(ReaderReport(1, 0, ts, state, all_ok=state == READER_OK))


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as service:
        await service.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20, gtin=COLA_GTIN), actor="t")
        await service.add_sku(Sku("TEA", "Green tea", 1200, gtin=TEA_GTIN), actor="t")
        await service.add_sku(Sku("SOUP", "Soup", 4000), actor="t")
        await service.assign_lane(1, 0, "COLA", actor="t", lane_id="A1")
        await service.assign_lane(1, 1, "TEA", actor="t", lane_id="B1")
        await service.assign_lane(1, 2, "SOUP", actor="t", lane_id="C1")
        await service.import_epcs(f"epc,sku\n{TEA1},TEA\n".encode(), actor="t")
        yield service


@pytest.fixture
async def shelf(ledger: LedgerService) -> Shelf:
    node = Shelf(ledger)
    await node.reader(T - 3600 * S)
    return node


def q(ledger: LedgerService, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(ledger.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def alerts(ledger: LedgerService, kind: str) -> list[tuple[int, str, str, dict[str, Any]]]:
    return [
        (r[0], r[1], r[2], json.loads(r[3]))
        for r in q(ledger, "SELECT id, cause_key, status, evidence FROM alerts WHERE kind = ? ORDER BY id", (kind,))
    ]


def verdicts(ledger: LedgerService) -> list[tuple[str, str]]:
    return q(ledger, "SELECT epc, verdict FROM recon_tags ORDER BY ts_ms, event_id")


async def test_honest_picks_of_tagged_items_raise_nothing(ledger: LedgerService, shelf: Shelf) -> None:
    for epc in (COLA1, COLA2, COLA3):
        await shelf.seen(epc, T)
    await shelf.reading(T, 3 * 3500)
    await shelf.pick(T + 100 * S)  # one cola taken ...
    await shelf.reading(T + 101 * S, 2 * 3500)
    await shelf.lost(COLA1, T + 103 * S)  # ... its tag last read 3 s later, in the shopper's hand
    await shelf.pick(T + 300 * S, units=2)
    await shelf.lost(COLA3, T + 296 * S)  # the tag may go first: within the window
    await shelf.lost(COLA2, T + 302 * S)
    await ledger.record_sale("COLA", 1, actor="pos", ref="S1", ts=T + 200 * S)
    await ledger.record_sale("COLA", 2, actor="pos", ref="S2", ts=T + 400 * S)
    rec = Reconciler(ledger)
    await rec.run_once(T + 3000 * S)
    assert verdicts(ledger) == [(COLA1, "picked"), (COLA3, "picked"), (COLA2, "picked")]
    assert q(ledger, "SELECT kind FROM alerts") == []
    assert q(ledger, "SELECT counted, tags_left, units_by_tags FROM recon_pick_rfid ORDER BY pick_id") == [
        (1, 1, None),
        (2, 2, None),
    ]
    before = q(ledger, "SELECT * FROM recon_tags ORDER BY 1"), q(ledger, "SELECT count(*) FROM audit")
    await rec.run_once(T + 3000 * S)  # nothing new: nothing changes
    assert (q(ledger, "SELECT * FROM recon_tags ORDER BY 1"), q(ledger, "SELECT count(*) FROM audit")) == before


async def test_a_tag_leaving_with_the_weight_unchanged_is_one_tamper_alert_per_lane_with_its_evidence(
    ledger: LedgerService, shelf: Shelf
) -> None:
    for epc in (COLA1, COLA2):
        await shelf.seen(epc, T)
    await shelf.reading(T + 10 * S, 2 * 3500)
    await shelf.lost(COLA1, T + 500 * S)  # nothing left the lane by weight
    await shelf.reading(T + 600 * S, 2 * 3500 + 5)
    rec = Reconciler(ledger)
    await rec.run_once(T + 550 * S)
    assert verdicts(ledger) == []  # judged once the weight and a return had their time
    report = await rec.run_once(T + 700 * S)
    assert verdicts(ledger) == [(COLA1, "tamper")] and report.stats["tags_tamper"] == 1
    [(alert_id, cause, status, ev)] = alerts(ledger, "tamper")
    assert (cause, status, ev["unexplained_units"], ev["tags_total"]) == ("lane:A1/COLA", "open", 1, 1)
    tag = ev["tags"][0]
    assert (tag["epc"], tag["sku"], tag["weight_steps"], tag["event_seq"]) == (COLA1, "COLA", [], 3)
    assert tag["departed"].startswith("2023-11-14T22:21:40")
    assert [r["weight_dg"] for r in tag["readings"]] == [7000, 7005]  # the lane's weights around it
    await shelf.lost(COLA2, T + 800 * S)
    await rec.run_once(T + 1000 * S)
    [(same_id, _, _, ev)] = alerts(ledger, "tamper")  # the same alert, one more tag
    assert same_id == alert_id and ev["tags_total"] == 2 and [t["epc"] for t in ev["tags"]] == [COLA1, COLA2]
    assert q(ledger, "SELECT alert_id FROM recon_tags") == [(alert_id,), (alert_id,)]
    resolved = await resolve(ledger, alert_id, "theft", actor="manager", note="camera")
    assert (resolved.resolution or "").startswith("theft confirmed: 2 written off")
    assert q(
        ledger, "SELECT sku, qty, location, reason FROM movements WHERE id = ?", (resolved.resolution_movement_id,)
    ) == [("COLA", -2, "lane:A1", "shrinkage")]


async def test_a_unit_swapped_for_one_of_the_same_weight_is_tamper_though_the_weight_matched(
    ledger: LedgerService, shelf: Shelf
) -> None:
    await shelf.seen(COLA1, T)
    await shelf.pick(T + 100 * S)
    await shelf.lost(COLA1, T + 102 * S)
    await shelf.put(T + 140 * S)  # something of a cola's weight put back, and no cola tag
    await Reconciler(ledger).run_once(T + 3000 * S)
    [(_, _, _, ev)] = alerts(ledger, "tamper")
    assert ev["tags"][0]["why"] == SWAPPED
    assert [s["kind"] for s in ev["tags"][0]["weight_steps"]] == ["pick", "put"]
    assert q(ledger, "SELECT kind FROM alerts WHERE kind = 'shrinkage'") == []  # the weight alone saw a put-back


async def test_a_departure_waits_for_the_node_events_before_it(ledger: LedgerService, shelf: Shelf) -> None:
    await shelf.seen(COLA1, T)
    shelf.seq += 1  # 2: the pick, its frame lost on the way
    await shelf.lost(COLA1, T + 102 * S)  # 3
    rec = Reconciler(ledger)
    await rec.run_once(T + 1000 * S)
    assert verdicts(ledger) == [] and q(ledger, "SELECT settled_to_id FROM recon_tag_state") == [(1,)]
    await ledger.submit(SensorEvent(1, 2, 0, KIND_PICK, -1, -3500, 95, T + 100 * S))  # re-sent by the node
    await rec.run_once(T + 1100 * S)
    assert verdicts(ledger) == [(COLA1, "picked")] and alerts(ledger, "tamper") == []


async def test_a_tag_of_another_sku_is_misplaced_after_the_grace_and_its_alert_resolves_when_it_leaves(
    ledger: LedgerService, shelf: Shelf
) -> None:
    await shelf.seen(TEA1, T + 10 * S)  # a hand with a tea passes over the cola lane ...
    await shelf.lost(TEA1, T + 14 * S)
    await shelf.seen(TEA1, T + 100 * S)  # ... later the tea is left there
    rec = Reconciler(ledger)
    await rec.run_once(T + 150 * S)
    assert alerts(ledger, "misplaced") == []  # within the grace
    await rec.run_once(T + 300 * S)
    [(_, cause, status, ev)] = alerts(ledger, "misplaced")
    assert (cause, status, ev["tags_present"]) == ("lane:A1/COLA", "open", 1)
    assert (ev["tags"][0]["epc"], ev["tags"][0]["sku"], ev["tags"][0]["weight_confirmed"]) == (TEA1, "TEA", False)
    await rec.run_once(T + 400 * S)
    assert len(alerts(ledger, "misplaced")) == 1  # one alert per cause, not one per run
    await shelf.lost(TEA1, T + 500 * S)  # taken back to its shelf
    await rec.run_once(T + 700 * S)
    [(_, _, status, ev)] = alerts(ledger, "misplaced")
    assert status == "resolved" and ev["tags"][0]["left"].startswith("2023-11-14T22:21:40")
    assert verdicts(ledger) == [(TEA1, "cross_read"), (TEA1, "cross_read")]  # another SKU, no weight change


async def test_a_put_of_the_wrong_weight_and_its_tag_are_one_misplaced_alert(
    ledger: LedgerService, shelf: Shelf
) -> None:
    await shelf.put(T + 100 * S, weight=1200)  # 120 g on the cola lane ...
    await shelf.seen(TEA1, T + 101 * S)  # ... and it is a tea
    await Reconciler(ledger).run_once(T + 400 * S)
    [(_, _, _, ev)] = alerts(ledger, "misplaced")
    assert len(ev["events"]) == 1 and ev["likely_sku"] == "TEA"  # the weight's view
    assert ev["tags"][0]["epc"] == TEA1 and ev["tags"][0]["weight_confirmed"]  # the tag's: the same item


async def test_a_pick_with_no_tag_leaving_is_noted_and_its_tag_named_when_it_leaves_late(
    ledger: LedgerService, shelf: Shelf
) -> None:
    for epc in (COLA1, COLA2):
        await shelf.seen(epc, T)
    await shelf.pick(T + 100 * S)  # the weight says one left; no tag did (yet)
    rec = Reconciler(ledger)
    await rec.run_once(T + 1500 * S)  # settled: no sale, so shrinkage
    [(alert_id, _, _, ev)] = alerts(ledger, "shrinkage")
    assert ev["picks"][0]["rfid"]["note"] == NO_TAG_LEFT and ev["picks"][0]["rfid"]["tags"] == []
    await shelf.lost(COLA2, T + 1600 * S)  # the unit's tag leaves 25 minutes later (basket left nearby)
    await rec.run_once(T + 1800 * S)
    assert verdicts(ledger) == [(COLA2, "picked_late")] and alerts(ledger, "tamper") == []
    [(same, _, _, ev)] = alerts(ledger, "shrinkage")
    assert same == alert_id and ev["picks"][0]["rfid"]["tags"] == [
        {"epc": COLA2, "left": "2023-11-14T22:40:00.000Z", "late": True}
    ]


async def test_a_count_the_weight_left_open_is_settled_by_the_tags_that_left(
    ledger: LedgerService, shelf: Shelf
) -> None:
    for epc in (COLA1, COLA2, COLA3):
        await shelf.seen(epc, T)
    await shelf.pick(T + 100 * S, units=2, conf=40, weight=-10_400)  # 2 at 40 %: the weight fits 3 too
    for epc in (COLA1, COLA2, COLA3):
        await shelf.lost(epc, T + 101 * S)
    await ledger.record_sale("COLA", 3, actor="pos", ref="S1", ts=T + 300 * S)
    report = await Reconciler(ledger).run_once(T + 1500 * S)
    assert q(ledger, "SELECT units, sold, unexplained, status FROM recon_picks") == [(3, 3, 0, "explained")]
    assert q(ledger, "SELECT counted, confidence, tags_left, units_by_tags FROM recon_pick_rfid") == [(2, 40, 3, 3)]
    assert report.stats["picks_counted_by_tags"] == 1 and q(ledger, "SELECT kind FROM alerts") == []


async def test_a_node_restart_raises_no_false_alert(ledger: LedgerService, shelf: Shelf) -> None:
    for epc in (COLA1, COLA2, COLA3):
        await shelf.seen(epc, T)
    await shelf.seen(TEA1, T)  # a misplaced tea, alerted before the restart
    rec = Reconciler(ledger)
    await rec.run_once(T + 200 * S)
    [(alert_id, _, _, _)] = alerts(ledger, "misplaced")
    await shelf.lost(COLA3, T + 250 * S, known=False)  # decided before the restart, delivered after: no time
    await ledger.submit(TagRecheck(1, T + 300 * S))  # the hello of the new boot
    await shelf.reader(T + 300 * S, READER_STARTING)
    await shelf.reader(T + 310 * S)
    await shelf.seen(COLA1, T + 312 * S)  # read again: still there
    await shelf.seen(TEA1, T + 312 * S)
    # COLA2 is never read again: it left while the node was down, when is unknown
    await rec.run_once(T + 500 * S)
    assert q(ledger, "SELECT epc FROM tag_presence WHERE unconfirmed_ms IS NOT NULL") == [(COLA2,)]
    await rec.run_once(T + 700 * S)  # the readers worked tag_reseen_s (300 s) since the restart
    assert q(ledger, "SELECT epc, kind FROM tag_events WHERE kind = 'expired'") == [(COLA2, "expired")]
    assert verdicts(ledger) == [(COLA3, "time_unknown")]
    assert alerts(ledger, "tamper") == []
    [(same, _, status, ev)] = alerts(ledger, "misplaced")
    assert (same, status, ev["tags_present"]) == (alert_id, "open", 1)  # the tea is still there: the same alert
    assert q(ledger, "SELECT first_seen_ms FROM tag_presence WHERE epc = ?", (COLA1,)) == [(T,)]


async def test_a_cross_read_on_an_untagged_lane_is_counted_and_never_alerted(
    ledger: LedgerService, shelf: Shelf
) -> None:
    await shelf.seen(COLA1, T, lane=2)  # the soup lane's antenna reads a cola next to it ...
    await shelf.lost(COLA1, T + 30 * S, lane=2)  # ... for 30 s; the soup lane's weight never moved
    report = await Reconciler(ledger).run_once(T + 500 * S)
    assert verdicts(ledger) == [(COLA1, "cross_read")] and report.stats["tags_cross_read"] == 1
    assert q(ledger, "SELECT kind FROM alerts") == []


async def test_a_tag_leaving_while_a_reader_was_silent_is_no_evidence(ledger: LedgerService, shelf: Shelf) -> None:
    await shelf.seen(COLA1, T)
    await shelf.reader(T + 90 * S, READER_SILENT)
    await shelf.lost(COLA1, T + 95 * S)
    await shelf.reader(T + 200 * S)
    await Reconciler(ledger).run_once(T + 500 * S)
    assert verdicts(ledger) == [(COLA1, "reader_outage")] and alerts(ledger, "tamper") == []


async def test_one_silent_reader_does_not_excuse_the_tags_leaving_the_nodes_other_reader(
    ledger: LedgerService, shelf: Shelf
) -> None:
    await shelf.seen(COLA3, T - 60 * S)  # read before reader 1 stopped: it may be on reader 1
    await ledger.submit(ReaderReport(1, 1, T, READER_SILENT))  # reader 1 of the node stops reading, for good
    for epc in (COLA1, COLA2):
        await shelf.seen(epc, T + 60 * S)  # read after: on reader 0, which works
    await shelf.reading(T + 60 * S, 3 * 3500)
    await shelf.lost(COLA1, T + 500 * S)  # gone, the weight unchanged
    await shelf.reading(T + 600 * S, 3 * 3500)
    rec = Reconciler(ledger)
    await rec.run_once(T + 700 * S)
    assert verdicts(ledger) == [(COLA1, "tamper")] and len(alerts(ledger, "tamper")) == 1
    # the node restarts with reader 1 still dead; reader 0 reads COLA2 no more: it left meanwhile
    await ledger.submit(TagRecheck(1, T + 800 * S))
    await ledger.submit(ReaderReport(1, 0, T + 800 * S, READER_STARTING))
    await ledger.submit(ReaderReport(1, 0, T + 810 * S, READER_OK))
    await rec.run_once(T + 1200 * S)  # reader 0 has read for tag_reseen_s since
    assert q(ledger, "SELECT epc FROM tag_events WHERE kind = 'expired'") == [(COLA2,)]
    assert q(ledger, "SELECT epc FROM tag_presence WHERE present = 1") == [(COLA3,)]  # held: maybe on reader 1


async def test_departures_after_the_newest_tag_events_were_pruned_are_judged_under_ids_of_their_own(
    ledger: LedgerService, shelf: Shelf
) -> None:
    day = 86_400 * S
    await shelf.seen(COLA1, T - 40 * day)
    await shelf.lost(COLA1, T - 40 * day + 500 * S)  # the weight unchanged: tamper, its verdict kept for the alert
    await shelf.seen(COLA3, T - 40 * day, lane=2)  # a cross-read on the soup lane: a verdict no alert cites
    await shelf.lost(COLA3, T - 40 * day + 30 * S, lane=2)
    rec = Reconciler(ledger)
    await rec.run_once(T - 40 * day + 1000 * S)
    [(alert_id, _, _, _)] = alerts(ledger, "tamper")
    assert q(ledger, "SELECT settled_to_id FROM recon_tag_state") == [(4,)]
    assert await ledger.prune_tags(T - 30 * day) == 6  # every event (the newest too) and the two tags' stays
    await rec.run_once(T - 30 * day)
    assert verdicts(ledger) == [(COLA1, "tamper")]  # the cross-read's verdict went with its event
    await shelf.seen(COLA2, T)
    await shelf.lost(COLA2, T + 500 * S)
    await rec.run_once(T + 1000 * S)
    assert verdicts(ledger) == [(COLA1, "tamper"), (COLA2, "tamper")]  # judged, above the mark
    [(same, _, _, ev)] = alerts(ledger, "tamper")
    assert same == alert_id and ev["tags_total"] == 2 and [t["epc"] for t in ev["tags"]] == [COLA1, COLA2]
    # each verdict on its own event: the trail never shows the old verdict on the new event
    assert q(ledger, "SELECT e.id, e.epc, r.epc FROM tag_events AS e JOIN recon_tags AS r ON r.event_id = e.id") == [
        (6, COLA2, COLA2)
    ]


async def test_a_tag_two_nodes_hold_is_misplaced_on_one_lane_at_most(ledger: LedgerService, shelf: Shelf) -> None:
    tea2 = "E2801160600002054CC20970"
    await ledger.import_epcs(f"epc,sku\n{tea2},TEA\n".encode(), actor="t")
    await ledger.assign_lane(2, 0, "TEA", actor="t", lane_id="B2")  # node 2: the next shelf
    await ledger.assign_lane(2, 1, "SOUP", actor="t", lane_id="C2")
    # a tea on its own lane B2, which node 1's cola lane reads too (stronger): a cross-read on A1
    await ledger.submit(TagEvent(2, 1, 0, SEEN, TEA1, T, -70))
    await shelf.seen(TEA1, T + 5 * S)
    # another tea left between the cola lane A1 and node 2's soup lane C2: misplaced, on A1 (read stronger) only
    await shelf.seen(tea2, T + 10 * S)
    await ledger.submit(TagEvent(2, 2, 1, SEEN, tea2, T + 10 * S, -65))
    rec = Reconciler(ledger)
    report = await rec.run_once(T + 300 * S)
    [(alert_id, cause, status, ev)] = alerts(ledger, "misplaced")
    assert (cause, status, [t["epc"] for t in ev["tags"]]) == ("lane:A1/COLA", "open", [tea2])
    assert report.stats["tags_misplaced"] == 1 and report.stats["tags_cross_read_present"] == 2
    # node 2 reads that tea on its tea lane too: it is on its own shelf after all, the alert resolves
    await ledger.submit(TagEvent(2, 3, 0, SEEN, tea2, T + 400 * S, -80))
    await rec.run_once(T + 500 * S)
    [(same, _, status, ev)] = alerts(ledger, "misplaced")
    assert (same, status, ev["tags"][0]["left"]) == (alert_id, "resolved", "a cross-read: the tag is on lane B2")
    await rec.run_once(T + 800 * S)
    assert len(alerts(ledger, "misplaced")) == 1  # not raised again
    await shelf.lost(TEA1, T + 900 * S)  # the cross-read ends: judged as one, never alerted
    await rec.run_once(T + 1200 * S)
    assert verdicts(ledger) == [(TEA1, "cross_read")] and alerts(ledger, "tamper") == []


def test_the_tag_settings_are_checked_like_the_others() -> None:
    with pytest.raises(ValueError, match="tag_window_s cannot be negative"):
        ReconcileConfig.from_mapping({"tag_window_s": -1})
    assert ReconcileConfig.from_mapping({"misplaced_grace_s": 30}).ms("misplaced_grace_s") == 30_000
