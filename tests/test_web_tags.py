"""RFID on the status page and the API: the tags on each lane (shelf page, overview, /lanes.json, live feed), one
tag's trail (/tags/<epc>) and the search for it, readers on the nodes page, alert evidence linking to the trail,
/api/v1/tags and /api/v1/tags/trail."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask.testing import FlaskClient

from hub.ledger import LedgerService, SensorEvent
from hub.ledger.models import now_ms
from hub.ledger.tags import LOST, SEEN, TagEvent
from hub.reconcile.reconciler import Reconciler
from hub.web import create_app
from hub.web.accounts.clients import SCOPES, TOKEN_PREFIX, add_client, token_sha256
from hub.web.live.lane_feed import feed
from shared_protocol.messages import KIND_PICK
from tests.web_support import SEED_EPC, Env

TEA_EPC = "E2801160600002054CC2096F"  # named TEA by the store's table below


def submit(env: Env, *items: Any) -> None:
    async def run(ledger: LedgerService) -> None:
        for item in items:
            await ledger.submit(item)

    env.write(run)


def page(env: Env, url: str, role: str = "viewer") -> str:
    resp = env.client(role).get(url)
    assert resp.status_code == 200, (resp.status_code, resp.data[:300])
    return resp.get_data(as_text=True)


def misplace_a_tea(env: Env, seq: int = 1_000_001) -> None:
    env.write(lambda ledger: ledger.import_epcs(f"epc,sku\n{TEA_EPC},TEA\n".encode(), actor="t"))
    submit(env, TagEvent(1, seq, 0, SEEN, TEA_EPC, now_ms() - 30_000, -61))


# --------------------------------------------------------------------------------------------------- pages


def test_the_shelf_page_lists_the_tags_on_the_lane_and_their_events(env: Env) -> None:
    misplace_a_tea(env)
    html = page(env, "/lanes/A1")
    tags = html.split('id="tags"')[1].split("</table>")[0]
    assert f'<tr id="tag-{SEED_EPC}">' in tags and f'href="/tags/{SEED_EPC}"' in tags and "<td>COLA" in tags
    tea = tags.split(f'<tr id="tag-{TEA_EPC}" class="other">')[1].split("</tr>")[0]
    assert "TEA" in tea and "not this lane's SKU: misplaced?" in tea and ">-61<" in tea
    assert "Tags on this lane (2)" in html
    timeline = html.split('id="timeline"')[1]
    assert timeline.count('<tr class="tag">') == 2 and "tag arrived" in timeline and "node:1" in timeline
    assert "No RFID tag is read on this lane." in page(env, "/lanes/B1")


def test_the_overview_and_lanes_json_show_each_lanes_tags(env: Env) -> None:
    misplace_a_tea(env)
    html = page(env, "/")
    a1 = html.split('id="lane-A1"')[1].split("</tr>")[0]
    assert 'data-tags="2"' in a1 and "(1 other SKU)" in a1 and " UTC</small>" in a1
    b1 = html.split('id="lane-B1"')[1].split("</tr>")[0]
    assert 'data-tags="0"' in b1 and '<small class="wide read"></small>' in b1
    lanes = {lane["lane_id"]: lane for lane in json.loads(page(env, "/lanes.json"))["lanes"]}
    assert (lanes["A1"]["tags_present"], lanes["A1"]["tags_other_sku"]) == (2, 1)
    assert isinstance(lanes["A1"]["tags_last_read_ms"], int) and lanes["B1"]["tags_last_read_ms"] is None


def test_the_live_feed_is_told_when_a_lanes_tags_change(env: Env) -> None:
    live = feed(env.app)
    before = {r.lane_id: r for r in live.rows()[0]}["A1"].tags_present
    reads = live.reads
    submit(env, TagEvent(1, 1_000_001, 0, LOST, SEED_EPC, now_ms()))
    after = {r.lane_id: r for r in live.rows()[0]}
    assert (before, after["A1"].tags_present) == (1, 0) and live.reads == reads + 1


def test_a_tags_trail_shows_where_it_sat_how_it_left_and_the_alerts_citing_it(env: Env) -> None:
    epc = SEED_EPC[:-1] + "6"  # the next cola unit (serial 6790), on node 2's shelf
    env.write(lambda ledger: ledger.assign_lane(2, 0, "COLA", actor="t", lane_id="A2"))
    env.write(lambda ledger: ledger.assign_lane(2, 1, "TEA", actor="t", lane_id="B2"))
    t = now_ms()
    submit(
        env,
        TagEvent(2, 1, 0, SEEN, epc, t - 400_000, -48),
        SensorEvent(2, 2, 0, KIND_PICK, -1, -3500, 95, t - 200_000),
        TagEvent(2, 3, 0, LOST, epc, t - 198_000),  # it left with that pick ...
        TagEvent(2, 4, 1, SEEN, epc, t - 100_000, -55),  # ... and sits on the tea lane now: misplaced
    )
    env.write(lambda ledger: Reconciler(ledger).run_once(t + 60_000))
    html = page(env, f"/tags/{epc}")
    assert "COLA Cola 330 ml" in html and "from its GTIN" in html and "SGTIN-96" in html
    assert "80614141123458" in html and ">6790<" in html and "urn:epc:id:sgtin:0614141.812345.6790" in html
    stays = html.split('id="trail"')[1].split("</table>")[0]
    rows = stays.split("<tbody>")[1].split("</tr>")
    assert 'href="/lanes/A2"' in rows[0] and "left with a pick" in rows[0]
    assert 'href="/lanes/B2"' in rows[1] and "still there" in rows[1]
    cited = html.split('id="tag-alerts"')[1].split("</section>")[0]
    assert "misplaced</a> about lane:B2/TEA" in cited
    assert "pick: movement" in html


def test_the_trail_address_is_the_ledgers_form_and_bad_or_unknown_epcs_are_refused(env: Env) -> None:
    client = env.client("viewer")
    resp = client.get(f"/tags/{SEED_EPC.lower()}")
    assert resp.status_code == 302 and resp.headers["Location"] == f"/tags/{SEED_EPC}"
    assert client.get("/tags/not-hex").status_code == 400
    assert client.get("/tags/" + "AB" * 12).status_code == 404  # never seen, not in the EPC table


def test_the_search_finds_tags_by_the_start_of_their_epc(env: Env) -> None:
    client = env.client("viewer")
    found = client.get("/tags?epc=30 74")
    assert found.status_code == 200 and f'href="/tags/{SEED_EPC}"' in found.get_data(as_text=True)
    assert "on lane now" in found.get_data(as_text=True).lower() and 'href="/lanes/A1"' in found.get_data(as_text=True)
    whole = client.get(f"/tags?epc={SEED_EPC.lower()}")
    assert whole.status_code == 302 and whole.headers["Location"] == f"/tags/{SEED_EPC}"
    bad = client.get("/tags?epc=xyz")
    assert bad.status_code == 400 and "is not the start of an EPC: 1..64 hex digits" in bad.get_data(as_text=True)
    assert "No tag starts with FF" in client.get("/tags?epc=FF").get_data(as_text=True)
    assert 'href="/tags"' in page(env, "/")  # in the navigation


def test_the_search_takes_any_number_of_hex_digits_not_only_whole_bytes(env: Env) -> None:
    client = env.client("viewer")
    for text in ("307", "3 07", "3", SEED_EPC[:-1].lower()):  # odd lengths: the start of an EPC, not an EPC
        found = client.get("/tags", query_string={"epc": text})
        assert found.status_code == 200 and f'href="/tags/{SEED_EPC}"' in found.get_data(as_text=True), text
    assert "No tag starts with 9" in client.get("/tags?epc=9").get_data(as_text=True)
    for text in ("30G", "3074" + "0" * 61, "٣٠٧"):  # not hex; longer than any EPC (65 digits); not ASCII digits
        refused = client.get("/tags", query_string={"epc": text})
        assert refused.status_code == 400 and "is not the start of an EPC" in refused.get_data(as_text=True), text


def _status() -> dict[str, Any]:
    rfid = {
        "readers": [
            {"reader": 0, "state": "ok", "reads": 5120, "bad_frames": 3, "resets": 0, "silences": 0, "present": 14,
             "reported_ms": now_ms(), "age_s": 4.0},
            {"reader": 1, "state": "silent", "reads": 80, "bad_frames": 0, "resets": 1, "silences": 2, "present": 0,
             "reported_ms": now_ms(), "age_s": 12.0},
        ],
        "tag_events": 40, "tag_events_applied": 40, "tag_events_duplicates": 0, "v10_sightings_ignored": 2,
    }  # fmt: skip
    node = {"node_id": 1, "port": "/dev/ttyUSB0", "link": "/dev/ttyUSB0", "up": True, "rfid": rfid}
    return {"nodes": [node], "links": [], "totals": {}}


def test_the_nodes_page_shows_each_rfid_readers_health(env: Env) -> None:
    app = create_app(env.db, env.writer, config={"TESTING": True}, status=_status)
    client: FlaskClient = app.test_client()
    with client.session_transaction() as sess:
        sess["user"], sess["epoch"] = "viewer", 0
    row = client.get("/nodes").get_data(as_text=True).split('<tr id="node-1">')[1].split("</tr>")[0]
    assert 'id="reader-1-0">RFID reader 0: ok, 14 tags, 5120 reads, 3 bad frames (4 s ago)' in row
    assert 'class="reader reader-silent" id="reader-1-1">RFID reader 1: silent, 0 tags, 80 reads, 1 resets' in row
    assert "2 v1.0 RFID sightings ignored" in row


def test_alert_evidence_naming_a_tag_links_to_its_trail_and_says_what_happened(env: Env) -> None:
    evidence = {
        "lane_id": "A1",
        "sku": "COLA",
        "tags_total": 1,
        "last_departure": "2026-01-05T10:02:03.000Z",
        "tags": [{"epc": SEED_EPC, "departed": "2026-01-05T10:02:03.000Z", "weight_steps": []}],
    }
    env.write(lambda ledger: ledger.open_alert("tamper", "lane:A1/COLA", evidence, actor="reconcile"))
    html = page(env, "/alerts?kind=tamper")
    assert f'<a href="/tags/{SEED_EPC}"><code>{SEED_EPC}</code></a>' in html
    assert "1 tag of COLA left lane A1 while its weight did not change (last 10:02:03 UTC)" in html
    assert "tag removed: the item is there without its tag" in page(env, "/alerts?kind=tamper", "manager")


# ------------------------------------------------------------------------------------------------------- API


def token(env: Env, scopes: tuple[str, ...] = ("read",)) -> str:
    name = "reader-" + "-".join(scopes)
    value = f"{TOKEN_PREFIX}{hashlib.sha256(name.encode()).hexdigest()[:43]}"
    env.write(lambda ledger: ledger.transact(lambda tx: add_client(tx, name, token_sha256(value), scopes, actor="t")))
    return value


def get(env: Env, url: str, bearer: str) -> Any:
    return env.app.test_client().get(url, headers={"Authorization": f"Bearer {bearer}"})


def test_api_tags_lists_the_tags_on_each_lane(env: Env) -> None:
    misplace_a_tea(env)
    bearer = token(env)
    body = get(env, "/api/v1/tags", bearer).get_json()
    [a1] = body["items"]  # only lanes with a tag
    assert (a1["lane_id"], a1["node_id"], a1["lane_index"], a1["sku"]) == ("A1", 1, 0, "COLA")
    assert [(t["epc"], t["sku"], t["other_sku"]) for t in a1["tags"]] == [  # by arrival
        (SEED_EPC, "COLA", False),
        (TEA_EPC, "TEA", True),
    ]
    assert get(env, "/api/v1/tags?lane=B1", bearer).get_json() == {
        "items": [{"lane_id": "B1", "node_id": 1, "lane_index": 1, "sku": "TEA", "tags": []}]
    }
    missing = get(env, "/api/v1/tags?lane=Z9", bearer)
    assert missing.status_code == 404 and missing.get_json()["errors"][0]["field"] == "lane"
    assert get(env, "/api/v1/tags?lane=a/b", bearer).status_code == 400


def test_api_trail_of_one_tag(env: Env) -> None:
    bearer = token(env)
    body = get(env, f"/api/v1/tags/trail?epc={SEED_EPC.lower()}", bearer).get_json()
    assert (body["epc"], body["scheme"], body["gtin"], body["serial"]) == (
        SEED_EPC,
        "sgtin-96",
        "80614141123458",
        "6789",
    )
    assert (body["sku"], body["sku_from"], body["events_total"]) == ("COLA", "gtin", 1)
    assert [(s["lane_id"], s["left_ms"], s["how"]) for s in body["stays"]] == [("A1", None, "still there")]
    assert [(e["kind"], e["effect"], e["event_seq"]) for e in body["events"]] == [("seen", "arrived", 1_000_000)]
    required = get(env, "/api/v1/tags/trail", bearer)
    assert required.status_code == 400 and required.get_json()["errors"] == [{"field": "epc", "message": "required"}]
    assert get(env, "/api/v1/tags/trail?epc=zz", bearer).status_code == 400
    assert get(env, "/api/v1/tags/trail?epc=" + "AB" * 12, bearer).status_code == 404


def test_the_epc_table_is_imported_through_the_api_with_its_own_scope(env: Env) -> None:
    assert "epcs" in SCOPES
    data = f"epc,sku\n{TEA_EPC},TEA\n".encode()
    client = env.app.test_client()
    refused = client.post(
        "/api/v1/imports/epcs", data=data, content_type="text/csv", headers={"Authorization": f"Bearer {token(env)}"}
    )
    assert refused.status_code == 403
    bearer = token(env, ("epcs",))
    headers = {"Authorization": f"Bearer {bearer}"}
    done = client.post("/api/v1/imports/epcs?name=tags.csv", data=data, content_type="text/csv", headers=headers)
    assert done.status_code == 201 and done.get_json()["applied"] == 1
    assert env.sql("SELECT epc, sku, actor FROM epc_skus") == [(TEA_EPC, "TEA", "api:reader-epcs")]
