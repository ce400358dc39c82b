"""The alerts page: filters, keyset pages, readable evidence, acknowledge, and resolve with the ledger entry each
outcome posts (write-off, count adjustment, nothing), refusing bad input without changing anything."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from hub.ledger.postings import Tx
from hub.reconcile.resolve import OUTCOMES
from hub.web.pages.alerts import parse_filters
from hub.web.pages.alerts_queries import PAGE_SIZE, Filters, list_alerts
from hub.web.pages.alerts_text import readable_evidence
from tests.web_support import Env


def _fingerprint(env: Env) -> list[tuple[Any, ...]]:
    return env.sql(
        "SELECT (SELECT count(*) FROM movements), (SELECT count(*) FROM audit), (SELECT count(*) FROM physical_counts),"
        " (SELECT group_concat(id || ':' || status || ':' || coalesce(resolution, ''), ',') FROM alerts),"
        " (SELECT group_concat(sku || '@' || location || '=' || qty, ',') FROM balances)",
    )


def _text(resp: Any) -> str:
    return html.unescape(resp.get_data(as_text=True))


def _shrinkage_evidence(lane: str, sku: str, units: int) -> dict[str, Any]:
    """As hub/reconcile/apply.py writes it (two picks listed)."""
    picks = [
        {
            "movement_id": 100 + i,
            "source_ref": f"node:1:ev:{40 + i}",
            "ts": "2025-11-27T10:02:00Z",
            "ts_ms": 1764237720000,
            "units": 1,
            "put_back": 0,
            "sold": 0,
            "unexplained": 1,
            "node_id": 1,
            "event_seq": 40 + i,
            "weight_delta_dg": -3510,
            "confidence": 95,
            "explained_by": [],
        }
        for i in range(2)
    ]
    return {
        "lane_id": lane,
        "node_id": 1,
        "sku": sku,
        "location": f"lane:{lane}",
        "unexplained_units": units,
        "picks_total": len(picks),
        "first_pick": picks[0]["ts"],
        "last_pick": picks[-1]["ts"],
        "picks": picks,
        "picks_omitted": 0,
        "window_s": 900,
        "lead_s": 120,
        "grace_s": 300,
        "rule": "removed from the lane, not put back, and no sale or order pick of the SKU within the window",
    }


def _damage_evidence(lane: str, sku: str, units: int) -> dict[str, Any]:
    """As hub/reconcile/plan.py (_lane_fields) and apply.py (upsert) write it."""
    return {
        "lane_id": lane,
        "node_id": 1,
        "sku": sku,
        "sku_name": "Green tea",
        "location": f"lane:{lane}",
        "unit_weight_dg": 1200,
        "spread_permille": 0,
        "events": [{"movement_id": 7, "rule": "not_whole_units", "weight_delta_dg": -1800, "units": units}],
        "events_total": 1,
        "events_omitted": 0,
        "last_movement_id": 7,
        "suggested_units": units,
    }


def _open(env: Env, kind: str, cause: str, evidence: dict[str, Any], ts: int | None = None) -> int:
    opened = env.write(lambda ledger: ledger.open_alert(kind, cause, evidence, actor="reconcile", ts=ts))
    return opened.alert_id


def _realistic_shrinkage(env: Env, units: int = 3) -> int:
    """The seeded shrinkage alert of lane A1 (its evidence only {"missing": 2}), given the evidence reconciliation
    writes (an unresolved alert per cause key: opening it again would return the seeded one)."""
    alert = int(env.sql("SELECT id FROM alerts WHERE cause_key = 'lane:A1/COLA'")[0][0])
    evidence = _shrinkage_evidence("A1", "COLA", units)
    env.write(lambda ledger: ledger.transact(lambda tx: tx.update_alert_evidence(alert, evidence, actor="reconcile")))
    return alert


@pytest.fixture
def stocked(env: Env) -> Env:
    """10 COLA booked on lane A1, 5 TEA on lane B1."""
    env.write(lambda ledger: ledger.record_receipt("COLA", 10, actor="t", ref="r1", location="lane:A1"))
    env.write(lambda ledger: ledger.record_receipt("TEA", 5, actor="t", ref="r2", location="lane:B1"))
    return env


def _resolve(env: Env, client: FlaskClient, alert: int, **form: str) -> str:
    resp = client.post(f"/alerts/{alert}/resolve", data={**form, "csrf_token": env.csrf(client)}, follow_redirects=True)
    assert resp.status_code == 200
    return _text(resp)


def _balance(env: Env, sku: str, location: str) -> int:
    rows = env.sql("SELECT qty FROM balances WHERE sku = ? AND location = ?", (sku, location))
    return int(rows[0][0]) if rows else 0


def _alert(env: Env, alert: int) -> tuple[Any, ...]:
    return env.sql("SELECT status, resolved_by, resolution, resolution_movement_id FROM alerts WHERE id = ?", (alert,))[
        0
    ]


# ------------------------------------------------------------------------------------------------ resolving


def test_theft_writes_off_the_unexplained_units_from_the_lane(stocked: Env) -> None:
    env = stocked
    alert = _realistic_shrinkage(env)
    page = _resolve(env, env.client("manager"), alert, outcome="theft", note="seen on camera", shown_qty="3")
    status, by, resolution, movement = _alert(env, alert)
    assert (status, by, resolution) == ("resolved", "web:manager", "theft confirmed: 3 written off (seen on camera)")
    assert f"Alert {alert} resolved: theft confirmed: 3 written off (seen on camera) (movement {movement})." in page
    assert env.sql("SELECT sku, location, qty, reason, source_ref, actor FROM movements WHERE id = ?", (movement,)) == [
        ("COLA", "lane:A1", -3, "shrinkage", f"writeoff:alert{alert}", "web:manager")
    ]
    assert _balance(env, "COLA", "lane:A1") == 7
    assert env.sql("SELECT actor FROM audit WHERE action = 'resolve_alert'") == [("web:manager",)]
    assert f'id="alert-{alert}"' not in _text(env.client("manager").get("/alerts"))


def test_theft_with_a_quantity_and_damage_write_offs(stocked: Env) -> None:
    env = stocked
    theft = _realistic_shrinkage(env)
    damage = _open(env, "damage", "lane:B1/TEA", _damage_evidence("B1", "TEA", 1))
    admin = env.client("admin")
    assert "2 written off" in _resolve(env, admin, theft, outcome="theft", qty="2", note="two missing")
    assert "damaged: 1 written off" in _resolve(env, admin, damage, outcome="damaged", note="leaking", shown_qty="1")
    assert env.sql(
        "SELECT sku, location, qty, reason FROM movements WHERE source_ref GLOB 'writeoff:*' ORDER BY id"
    ) == [
        ("COLA", "lane:A1", -2, "shrinkage"),
        ("TEA", "lane:B1", -1, "damage"),
    ]
    assert (_balance(env, "COLA", "lane:A1"), _balance(env, "TEA", "lane:B1")) == (8, 4)


def test_count_posts_the_difference_as_a_count_adjustment(stocked: Env) -> None:
    env = stocked
    alert = _realistic_shrinkage(env)
    page = _resolve(env, env.client("manager"), alert, outcome="count", counted="6", note="")
    status, _, resolution, movement = _alert(env, alert)
    assert status == "resolved" and resolution == "counted 6 on the lane (book 10)"
    assert f"(movement {movement})" in page
    assert env.sql("SELECT sku, location, qty, reason FROM movements WHERE id = ?", (movement,)) == [
        ("COLA", "lane:A1", -4, "count_adjustment")
    ]
    assert env.sql("SELECT sku, location, book_qty, counted_qty FROM physical_counts") == [("COLA", "lane:A1", 10, 6)]
    assert _balance(env, "COLA", "lane:A1") == 6
    # a count that agrees with the book posts nothing
    again = _open(env, "shrinkage", "lane:B1/TEA", _shrinkage_evidence("B1", "TEA", 1))
    movements = env.sql("SELECT count(*) FROM movements")
    page = _resolve(env, env.client("manager"), again, outcome="count", counted="5")
    assert f"Alert {again} resolved: counted 5 on the lane (book 5)." in page
    assert env.sql("SELECT count(*) FROM movements") == movements and _alert(env, again)[3] is None


def test_found_and_other_outcomes_post_nothing(stocked: Env) -> None:
    env = stocked
    shrink = _realistic_shrinkage(env)
    misplaced = _open(env, "misplaced", "lane:C1/SOUP", {"lane_id": "C1", "sku": "SOUP", "location": "lane:C1"})
    movements = env.sql("SELECT count(*) FROM movements")
    manager = env.client("manager")
    assert f"Alert {shrink} resolved: found (behind the boxes)." in _resolve(
        env, manager, shrink, outcome="found", note="behind the boxes"
    )
    assert f"Alert {misplaced} resolved: kept." in _resolve(env, manager, misplaced, outcome="kept")
    assert env.sql("SELECT count(*) FROM movements") == movements
    assert _alert(env, shrink) == ("resolved", "web:manager", "found (behind the boxes)", None)


def test_reorder_ordered_acknowledges_and_dismissed_resolves(env: Env) -> None:
    reorder = int(env.sql("SELECT id FROM alerts WHERE cause_key = 'sku:TEA'")[0][0])
    manager = env.client("manager")
    assert "acknowledged as ordered" in _resolve(env, manager, reorder, outcome="ordered")
    assert _alert(env, reorder)[0] == "acknowledged"
    assert "already acknowledged" in _resolve(env, manager, reorder, outcome="ordered")
    assert f"Alert {reorder} resolved: dismissed." in _resolve(env, manager, reorder, outcome="dismissed")
    assert _alert(env, reorder)[0] == "resolved"


def test_a_kind_outside_reconciliation_has_one_plain_outcome(env: Env) -> None:
    alert = _open(env, "temperature", "node:1/temp", {"celsius": 41})
    manager = env.client("manager")
    page = _text(manager.get("/alerts"))
    row = page.split(f'id="alert-{alert}"')[1].split("</tr>")[0]
    assert re.findall(r'<option value="([^"]+)"', row) == ["resolved"]
    before = _fingerprint(env)
    assert "not resolved" in _resolve(env, manager, alert, outcome="found")
    assert _fingerprint(env) == before
    assert f"Alert {alert} resolved: fan replaced." in _resolve(
        env, manager, alert, outcome="resolved", note="fan replaced"
    )
    assert _alert(env, alert) == ("resolved", "web:manager", "fan replaced", None)
    other = _open(env, "temperature", "node:2/temp", {})
    assert f"Alert {other} resolved: resolved." in _resolve(env, manager, other, outcome="resolved")


BAD_FORMS: list[tuple[dict[str, str], str]] = [
    ({}, "choose an outcome"),
    ({"outcome": "bogus"}, "resolved as one of: found, count, theft"),
    ({"outcome": "resolved"}, "resolved as one of"),
    ({"outcome": "dismissed"}, "resolved as one of"),
    ({"outcome": "theft", "qty": "-1", "note": "x"}, "whole number 1..1,000,000"),
    ({"outcome": "theft", "qty": "0", "note": "x"}, "whole number 1..1,000,000"),
    ({"outcome": "theft", "qty": "2.5", "note": "x"}, "whole number"),
    ({"outcome": "theft", "qty": "two", "note": "x"}, "whole number"),
    ({"outcome": "theft", "qty": "1000001", "note": "x"}, "whole number"),
    ({"outcome": "theft"}, "say why"),
    ({"outcome": "theft", "note": "   "}, "say why"),
    ({"outcome": "count"}, "needs the number of units counted"),
    ({"outcome": "count", "counted": "-3"}, "whole number 0..1,000,000"),
    ({"outcome": "found", "qty": "2"}, "units (qty) are for a write-off"),
    ({"outcome": "found", "counted": "2"}, "counted quantity is for a count"),
    ({"outcome": "found", "note": "x" * 501}, "at most 500 characters"),
    ({"outcome": "found", "note": "two\nlines"}, "one line"),
]


@pytest.mark.parametrize(("form", "message"), BAD_FORMS)
def test_bad_input_is_refused_and_changes_nothing(stocked: Env, form: dict[str, str], message: str) -> None:
    env = stocked
    alert = _realistic_shrinkage(env)
    before = _fingerprint(env)
    page = _resolve(env, env.client("manager"), alert, **form)
    assert f"Alert {alert} not resolved:" in page and message in page
    assert _fingerprint(env) == before


def test_resolving_twice_is_refused(stocked: Env) -> None:
    env = stocked
    alert = _realistic_shrinkage(env)
    manager = env.client("manager")
    _resolve(env, manager, alert, outcome="theft", note="gone", shown_qty="3")
    before = _fingerprint(env)
    page = _resolve(env, manager, alert, outcome="theft", note="gone again", shown_qty="3")
    assert f"Alert {alert} not resolved: alert {alert} is already resolved" in page
    assert "not resolved" in _resolve(env, manager, alert, outcome="found")
    assert _fingerprint(env) == before
    assert env.sql("SELECT count(*) FROM movements WHERE reason = 'shrinkage'") == [(1,)]


def test_seeded_evidence_without_sku_or_location_gets_a_clear_error(env: Env) -> None:
    alert = int(env.sql("SELECT id FROM alerts WHERE cause_key = 'lane:A1/COLA'")[0][0])  # evidence {"missing": 2}
    manager = env.client("manager")
    before = _fingerprint(env)
    page = _resolve(env, manager, alert, outcome="theft", qty="2", note="gone")
    assert f"alert {alert}'s evidence names no sku, so no ledger entry can be posted" in page
    assert "nothing to write off" in _resolve(env, manager, alert, outcome="theft", note="gone", shown_qty="0")
    assert "names no sku" in _resolve(env, manager, alert, outcome="count", counted="3")
    assert _fingerprint(env) == before
    assert "resolved: found" in _resolve(env, manager, alert, outcome="found")


def test_unknown_alert_is_404_and_clerks_may_not_resolve(env: Env) -> None:
    manager = env.client("manager")
    assert (
        manager.post("/alerts/9999/resolve", data={"outcome": "found", "csrf_token": env.csrf(manager)}).status_code
        == 404
    )
    clerk = env.client("clerk")
    alert = int(env.sql("SELECT id FROM alerts WHERE cause_key = 'sku:TEA'")[0][0])
    before = _fingerprint(env)
    resp = clerk.post(f"/alerts/{alert}/resolve", data={"outcome": "dismissed", "csrf_token": env.csrf(clerk)})
    assert resp.status_code == 403 and _fingerprint(env) == before


def test_back_goes_only_to_the_alerts_list(env: Env) -> None:
    alert = int(env.sql("SELECT id FROM alerts WHERE cause_key = 'sku:TEA'")[0][0])
    manager = env.client("manager")
    for back, expected in [
        ("/alerts?kind=reorder", "/alerts?kind=reorder"),
        ("//evil.example/", "/alerts"),
        ("https://evil.example/alerts", "/alerts"),
        ("/alerts/../users", "/alerts"),
    ]:
        resp = manager.post(f"/alerts/{alert}/acknowledge", data={"back": back, "csrf_token": env.csrf(manager)})
        assert resp.status_code == 302 and resp.headers["Location"] == expected


# --------------------------------------------------------------------------------------------------- the page


def _row(page: str, alert: int) -> str:
    return page.split(f'<tr id="alert-{alert}">')[1].split("</tr>")[0]


def test_rows_show_forms_by_role_and_the_outcomes_of_the_kind(env: Env) -> None:
    shrink = _realistic_shrinkage(env)
    damage = _open(env, "damage", "lane:B1/TEA", _damage_evidence("B1", "TEA", 1))
    sensor = _open(env, "sensor", "node:1/silent", {"problem": "silent"})
    reorder = int(env.sql("SELECT id FROM alerts WHERE cause_key = 'sku:TEA'")[0][0])
    page = env.client("manager").get("/alerts").get_data(as_text=True)
    # exactly the outcomes of the kind, those posting nothing first (the default choice never writes off)
    expect = {
        shrink: ("shrinkage", ["found", "count", "theft"]),
        damage: ("damage", ["no_damage", "damaged"]),
        sensor: ("sensor", ["fixed"]),
        reorder: ("reorder", ["ordered", "dismissed"]),
    }
    for alert, (kind, options) in expect.items():
        row = _row(page, alert)
        assert '<form class="resolve"' in row and "Acknowledge" in row and ">Resolve</button>" in row
        assert re.findall(r'<option value="([^"]*)"', row) == options and set(options) == set(OUTCOMES[kind])
        assert ('name="qty"' in row) == (kind in ("shrinkage", "damage"))
        assert ('name="counted"' in row) == (kind == "shrinkage")
        assert 'name="note"' in row
    assert 'href="/lanes/A1">lane:A1/COLA</a>' in _row(page, shrink)
    assert "<a " not in _row(page, reorder).split("</td>")[0]
    clerk = env.client("clerk").get("/alerts").get_data(as_text=True)
    assert "Acknowledge" in _row(clerk, shrink) and 'class="resolve"' not in clerk
    viewer = env.client("viewer").get("/alerts").get_data(as_text=True)
    assert "<form" not in _row(viewer, shrink)


def test_evidence_is_readable_not_raw_json(env: Env) -> None:
    alert = _open(env, "shrinkage", "lane:C1/SOUP", _shrinkage_evidence("C1", "SOUP", 2))
    row = _row(env.client("viewer").get("/alerts").get_data(as_text=True), alert)
    assert "<dt>unexplained_units</dt><dd>2" in row and "<dt>location</dt><dd>lane:C1" in row
    assert "<dt>picks</dt><dd>2 entries" in row
    assert "<li>confidence: 95, event_seq: 40, explained_by: none, movement_id: 100, node_id: 1," in row
    assert "{&#34;" not in row and '{"' not in row
    items = readable_evidence('{"events": [' + ",".join(f'{{"n": {i}}}' for i in range(25)) + '], "ok": true}')
    assert [(e.key, e.text) for e in items] == [("ok", "yes"), ("events", "25 entries, the newest 10 shown")]
    assert items[1].items[0] == "n: 15" and items[1].more == 15
    assert readable_evidence("[1, 2]")[0].text == "1, 2"
    assert readable_evidence('{"e": [{"a": 1}]}')[0].text == "1 entry"


def test_resolved_alerts_show_who_resolved_them_and_what_was_posted(stocked: Env) -> None:
    env = stocked
    alert = _realistic_shrinkage(env)
    manager = env.client("manager")
    manager.post(f"/alerts/{alert}/acknowledge", data={"csrf_token": env.csrf(manager)})
    _resolve(env, manager, alert, outcome="theft", note="gone", shown_qty="3")
    movement = _alert(env, alert)[3]
    assert f'id="alert-{alert}"' not in manager.get("/alerts").get_data(as_text=True)
    row = _row(_text(manager.get("/alerts?status=resolved")), alert)
    assert "acknowledged by web:manager" in row and "resolved by web:manager" in row
    assert "theft confirmed: 3 written off (gone)" in row
    assert f"posted movement {movement}: -3 COLA at lane:A1 (shrinkage)" in row
    assert "<form" not in row


def test_browser_flow_pick_an_outcome_and_resolve(stocked: Env) -> None:
    """What the browser test does: open /alerts, fill the row's resolve form, submit it."""
    env = stocked
    alert = _open(env, "damage", "lane:B1/TEA", _damage_evidence("B1", "TEA", 1))
    manager = env.client("manager")
    row = _row(manager.get("/alerts").get_data(as_text=True), alert)
    form = re.search(r'<form class="resolve" method="post" action="([^"]+)">(.*?)</form>', row, re.DOTALL)
    assert form is not None
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[2]))
    default = re.findall(r'<option value="([^"]*)"', form[2])[0]  # what the select submits untouched
    assert default == "no_damage"
    data = {**{k: html.unescape(v) for k, v in hidden.items()}, "outcome": default, "qty": "", "note": ""}
    page = _text(manager.post(form[1], data=data, follow_redirects=True))
    assert f"Alert {alert} resolved: no damage." in page
    assert f'id="alert-{alert}"' not in page


# ------------------------------------------------------------------------------------------- filters, pages


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def _ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="alert-(\d+)">', page)]


def test_filters(env: Env) -> None:
    old = _open(env, "damage", "lane:B1/TEA", _damage_evidence("B1", "TEA", 1), ts=_ms("2025-01-10T23:59:59"))
    new = _open(env, "misplaced", "lane:C1/SOUP", {"sku": "SOUP"}, ts=_ms("2025-01-11T00:00:00"))
    seeded = [int(r[0]) for r in env.sql("SELECT id FROM alerts WHERE cause_key IN ('lane:A1/COLA', 'sku:TEA')")]
    viewer = env.client("viewer")
    env.write(lambda ledger: ledger.acknowledge_alert(old, actor="t"))
    env.write(lambda ledger: ledger.resolve_alert(new, actor="t", resolution="kept"))

    def ids(query: str) -> set[int]:
        resp = viewer.get("/alerts" + query)
        assert resp.status_code == 200, resp.data[:300]
        return set(_ids(resp.get_data(as_text=True)))

    assert ids("") == {old, *seeded}
    assert ids("?status=unresolved") == {old, *seeded}
    assert ids("?status=open") == set(seeded)
    assert ids("?status=acknowledged") == {old}
    assert ids("?status=resolved") == {new}
    assert ids("?status=all") == {old, new, *seeded}
    assert ids("?status=all&kind=damage") == {old}
    assert ids("?status=all&q=lane:") == {old, new, seeded[0]}
    assert ids("?status=all&q=SOU") == {new}
    assert ids("?status=all&q=%25") == set()  # LIKE wildcards are literal
    assert ids("?status=all&from=2025-01-11") == {new, *seeded}
    assert ids("?status=all&to=2025-01-10") == {old}
    assert ids("?status=all&from=2025-01-10&to=2025-01-11") == {old, new}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=gone", "status must be one of unresolved, open, acknowledged, resolved, all"),
        ("kind=nope", "no alerts of kind 'nope'"),
        ("q=" + "x" * 101, "at most 100 characters"),
        ("from=2025-13-01", "from: must be a date like 2025-11-27"),
        ("to=yesterday", "to: must be a date"),
        ("from=2025-02-02&to=2025-02-01", "the date range is empty"),
        ("before=12", "not a page position"),
        ("after=x.y", "not a page position"),
    ],
)
def test_bad_filters_get_a_clear_error(env: Env, query: str, message: str) -> None:
    resp = env.client("viewer").get("/alerts?" + query)
    assert resp.status_code == 400 and message in _text(resp)
    assert _ids(resp.get_data(as_text=True)) == []


def test_keyset_pages_newest_first(env: Env) -> None:
    async def many(tx: Tx) -> None:
        for i in range(120):  # pairs share an opened time: ties are ordered by id
            await tx.open_alert("test", f"item:{i}", {"i": i}, actor="t", ts=10_000 + (i // 2) * 1000)

    env.write(lambda ledger: ledger.transact(many))
    expected = [
        int(r[0]) for r in env.sql("SELECT id FROM alerts WHERE status != 'resolved' ORDER BY opened_ms DESC, id DESC")
    ]
    assert len(expected) == 122
    viewer = env.client("viewer")
    pages: list[list[int]] = []
    url: str | None = "/alerts"
    while url:
        page = viewer.get(url).get_data(as_text=True)
        pages.append(_ids(page))
        older = re.search(r'<a href="([^"]+)">Older', page)
        url = html.unescape(older[1]) if older else None
    assert [len(p) for p in pages] == [PAGE_SIZE, PAGE_SIZE, 22]
    assert [i for p in pages for i in p] == expected
    # and back: Newer from the last page gives the second
    last = viewer.get(
        html.unescape(re.findall(r'<a href="([^"]+)">Older', viewer.get("/alerts").get_data(as_text=True))[0])
    )
    second = last.get_data(as_text=True)
    third_url = html.unescape(re.findall(r'<a href="([^"]+)">Older', second)[0])
    third = viewer.get(third_url).get_data(as_text=True)
    newer = html.unescape(re.findall(r'<a href="([^"]+)">&larr; Newer', third)[0])
    assert _ids(viewer.get(newer).get_data(as_text=True)) == pages[1]
    newest = html.unescape(re.findall(r'<a href="([^"]+)">&larr; Newer', second)[0])
    assert _ids(viewer.get(newest).get_data(as_text=True)) == pages[0]
    # filters are kept across pages
    kind_page = viewer.get("/alerts?kind=test").get_data(as_text=True)
    assert "kind=test" in html.unescape(re.findall(r'<a href="([^"]+)">Older', kind_page)[0])


def test_list_alerts_directly(env: Env) -> None:
    conn = sqlite3.connect(f"file:{env.db}?mode=ro", uri=True)
    try:
        kinds = sorted({*OUTCOMES})
        page = list_alerts(conn, parse_filters({"status": "all"}, kinds), page_size=1)
        assert len(page.rows) == 1 and page.older is not None and page.first and page.newer is None
        opened_ms, alert_id = page.older.split(".")
        nxt = list_alerts(conn, Filters(status="all"), before=(int(opened_ms), int(alert_id)), page_size=1)
        assert nxt.rows[0].id != page.rows[0].id and nxt.older is None and nxt.newer is not None
    finally:
        conn.close()


def test_a_write_off_is_refused_when_the_evidence_grew_since_the_page(env: Env) -> None:
    """The form carries the units it showed (shown_qty); the reconciler growing the evidence in between makes the
    resolve refuse (flash, nothing written) instead of writing off more than the manager saw."""
    env.write(lambda ledger: ledger.record_receipt("COLA", 10, actor="t", ref="r1", location="lane:A1"))
    alert = _realistic_shrinkage(env, units=3)
    manager = env.client("manager")
    page = _text(manager.get("/alerts"))
    assert "(empty: 3)" in page
    shown = re.search(rf'action="/alerts/{alert}/resolve".*?name="shown_qty" value="(\d+)"', page, re.DOTALL)
    assert shown is not None and shown[1] == "3"
    evidence = _shrinkage_evidence("A1", "COLA", 9)
    env.write(lambda ledger: ledger.transact(lambda tx: tx.update_alert_evidence(alert, evidence, actor="reconcile")))
    out = _resolve(env, manager, alert, outcome="theft", note="camera", shown_qty="3")
    assert "evidence changed since the page was shown: it now has 9 units to write off, not 3" in out
    assert _alert(env, alert)[0] != "resolved" and _balance(env, "COLA", "lane:A1") == 10
    # a form that does not say what it showed (not this page's) writes nothing off either
    out = _resolve(env, manager, alert, outcome="theft", note="camera")
    assert "the form does not say how many units it showed" in out and _balance(env, "COLA", "lane:A1") == 10
    # reloaded, the page shows 9 and the same form writes 9 off
    out = _resolve(env, manager, alert, outcome="theft", note="camera", shown_qty="9")
    assert "9 written off" in out and _balance(env, "COLA", "lane:A1") == 1


@pytest.mark.parametrize(
    ("kind", "evidence", "expected"),
    [
        (
            "shrinkage",
            {
                "unexplained_units": 2,
                "sku": "COLA",
                "lane_id": "A1",
                "window_s": 150.0,
                "first_pick": "2026-11-27T15:09:12.033Z",
                "last_pick": "2026-11-27T15:09:40.000Z",
            },
            "2 units of COLA left lane A1 and were neither put back nor sold within 150 s"
            " (picks 15:09:12-15:09:40 UTC).",
        ),
        (
            "damage",
            {"suggested_units": 1, "sku": "SOUP", "lane_id": "C1"},
            "The weight on lane C1 (SOUP) dropped without a whole item leaving: 1 unit likely damaged or spilled.",
        ),
        (
            "misplaced",
            {"sku": "COLA", "lane_id": "A1", "likely_sku": "CHIPS", "events": [{"weight_delta_dg": 1607}]},
            "Something weighing 160.7 g was put on lane A1 (COLA): it fits CHIPS, not COLA.",
        ),
        (
            "reorder",
            {"sku": "TEA", "sku_name": "Green tea", "available": 3, "reorder_point": 4, "suggested_qty": 17},
            "TEA (Green tea): 3 available, at or below the reorder point 4; suggested order 17.",
        ),
        (
            "sensor",
            {"problem": "silent", "node_id": 2, "last_seen": "2026-11-27T15:00:00.000Z"},
            "Node 2 has not been heard from since 2026-11-27T15:00:00 UTC.",
        ),
        (
            "sensor",
            {"problem": "uncalibrated", "lane_id": "A1", "sku": "COLA", "since": "2026-11-27T15:00:00.000Z"},
            "Lane A1 (COLA) reports no calibration (tare it empty, then calibrate it with a known weight) since"
            " 2026-11-27T15:00:00 UTC: its counts cannot be trusted.",
        ),
        (
            "sensor",
            {"problem": "overload", "lane_id": "B2", "sku": None, "since": "2026-11-27T15:00:00.000Z"},
            "Lane B2 reports more weight than its cells can weigh (take weight off) since 2026-11-27T15:00:00 UTC:"
            " its counts cannot be trusted.",
        ),
        ("shrinkage", {"missing": 2}, ""),  # evidence without what the sentence needs: no sentence, no error
        ("custom", {"anything": 1}, ""),
    ],
)
def test_each_alert_kind_reads_as_one_sentence(kind: str, evidence: dict[str, object], expected: str) -> None:
    from hub.web.pages.alerts_text import summary

    assert summary(kind, json.dumps(evidence)) == expected
