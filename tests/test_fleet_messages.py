"""The fleet wire contract (hub/fleet/README.md): what the hub encodes, the central consumer decodes, and every
payload ``decode`` refuses, with a one-line reason."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.fleet import decoding
from hub.fleet import messages as m
from hub.fleet.messages import FleetMessageError, decode

HUB = "store-042"
NOW = 1_796_000_000_000

ROW = (1201, NOW - 10_000, NOW - 9_900, "COLA-330", "sensor:7:0", -2, "sensor_pick", "node:7:ev:88", 0, "node:7",
       None, None, 7, 88, -7000, 94)  # fmt: skip
ALERT = (3, "shrinkage", "lane:7:0/COLA-330", "resolved", NOW - 5000, NOW - 4000, "alice", NOW - 1000, "bob",
         "written off", 1300, 17)  # fmt: skip


SKU = ("COLA-330", "Cola 330 ml", 3500, 10, 24, 60, None)
LANE = ("7:0", 7, 0, "COLA-330", 12, 42000, NOW)
NODE = (7, "aisle 3", "1.2.0", NOW)


def movements(first: int, n: int) -> list[tuple[Any, ...]]:
    return [(first + i, *ROW[1:]) for i in range(n)]


def test_movements_round_trip_in_the_contracts_shape() -> None:
    payload = m.encode_movements(HUB, movements(1201, 3), NOW, incarnation=2)
    data = json.loads(payload)
    assert list(data) == ["v", "hub", "kind", "sent_ms", "incarnation", "first", "last", "rows"]
    assert (data["v"], data["hub"], data["kind"], data["first"], data["last"]) == (1, HUB, "movements", 1201, 1203)
    assert data["rows"][0] == list(ROW) and data["incarnation"] == 2
    got = decode(HUB, "movements", payload)
    assert isinstance(got, m.Movements) and got.incarnation == 2
    assert got.rows[2] == m.Movement(1203, *ROW[1:]) and got.rows[0].qty == -2 and got.sent_ms == NOW
    never_restored = decode(HUB, "movements", m.encode_movements(HUB, movements(1, 1), NOW))
    assert isinstance(never_restored, m.Movements) and never_restored.incarnation == 1


def test_alerts_snapshot_status_and_rewind_round_trip() -> None:
    alerts = decode(HUB, "alerts", m.encode_alerts(HUB, [ALERT], NOW, incarnation=3))
    assert isinstance(alerts, m.Alerts) and alerts.rows == (m.Alert(*ALERT),) and alerts.incarnation == 3
    snap_payload = m.encode_snapshot(
        HUB,
        NOW,
        incarnation=3,
        last_movement_id=1203,
        skus=[("COLA-330", "Cola 330 ml", 3500, 10, 24, 60, "05449000000996")],
        lanes=[("7:0", 7, 0, "COLA-330", 12, 42000, NOW), ("7:1", 7, 1, None, None, None, None)],
        nodes=[(7, "aisle 3", "1.2.0", NOW)],
        book=[("COLA-330", "backroom", 48)],
    )
    snap = decode(HUB, "snapshot", snap_payload)
    assert isinstance(snap, m.Snapshot) and (snap.incarnation, snap.last_movement_id) == (3, 1203)
    assert snap.lanes[1] == m.LaneInfo("7:1", 7, 1, None, None, None, None) and snap.book[0].qty == 48
    assert json.loads(snap_payload)["skus"][0]["gtin"] == "05449000000996"
    assert decode(HUB, "status", m.encode_status(HUB, "offline", NOW)) == m.Status(HUB, NOW, "offline")
    rewind = decode(HUB, "rewind", m.encode_rewind(HUB, NOW, movements_after=0, alerts=True))
    assert rewind == m.Rewind(HUB, NOW, 0, True)


def test_topics() -> None:
    assert m.topic("smartshelf/v1", HUB, "movements") == "smartshelf/v1/store-042/movements"
    assert m.parse_topic("smartshelf/v1", "smartshelf/v1/store-042/alerts") == (HUB, "alerts")
    for bad in (
        "smartshelf/v1/store 042/alerts",
        "smartshelf/v1/x/other",
        "smartshelf/v2/x/alerts",
        "smartshelf/v1/a/b/c",
    ):
        with pytest.raises(FleetMessageError):
            m.parse_topic("smartshelf/v1", bad)
    assert m.check_prefix("acme/shelves/v1") == "acme/shelves/v1"
    for bad_prefix in ("", "a//b", "a/+/b", "a/#", "/a", "a/", "$SYS/x"):
        with pytest.raises(FleetMessageError):
            m.check_prefix(bad_prefix)


def payload(**changes: Any) -> bytes:
    data = json.loads(m.encode_movements(HUB, movements(1201, 2), NOW))
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode()


def row_with(column: str, value: Any) -> bytes:
    data = json.loads(m.encode_movements(HUB, movements(1201, 2), NOW))
    data["rows"][1][m.MOVEMENT_COLUMNS.index(column)] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("topic_hub", "kind", "body", "says"),
    [
        (HUB, "movements", b"\xff{}", "not UTF-8"),
        (HUB, "movements", b"{", "not JSON"),
        (HUB, "movements", b"[]", "must be a JSON object"),
        (HUB, "movements", b'{"v": 1, "v": 1}', "appears twice"),
        (HUB, "movements", row_with("qty", 1.5), "integers, not 1.5"),
        (HUB, "movements", row_with("qty", True), "rows[1].qty: must be an integer"),
        (HUB, "movements", row_with("qty", 1 << 63), "rows[1].qty: must be an integer"),
        (HUB, "movements", b'{"v": NaN}', "NaN is not JSON"),
        (HUB, "movements", row_with("sku", "x" * 33), "rows[1].sku: must be text of 1..32"),
        (HUB, "movements", row_with("note", "a\x00b"), "rows[1].note: must not contain NUL"),
        (HUB, "movements", row_with("note", "\ud800"), "unpaired surrogates"),
        (HUB, "movements", row_with("reason", "Sale; DROP"), "rows[1].reason: must match"),
        (HUB, "movements", row_with("leg", 2), "rows[1].leg: must be an integer 0..1"),
        (HUB, "movements", row_with("id", 1201), "rows[1].id: must be 1202"),
        (HUB, "movements", payload(last=1205), "must hold every movement 1201..1205, not 2 rows"),
        (HUB, "movements", payload(rows=[]), "must hold every movement"),
        (HUB, "movements", payload(hub="store-043"), "'store-043' is not the topic's hub 'store-042'"),
        (HUB, "movements", payload(kind="alerts"), "is not the topic's kind"),
        (HUB, "movements", payload(v=2), "movements.v: must be 1"),
        (HUB, "movements", payload(sent_ms=-1), "movements.sent_ms: must be an integer"),
        (HUB, "movements", payload(extra=1), "unknown extra"),
        (HUB, "movements", payload(first=...), "missing first"),
        (HUB, "movements", payload(incarnation=...), "missing incarnation"),
        (HUB, "movements", payload(incarnation=0), "movements.incarnation: must be an integer 1.."),
        (HUB, "movements", payload(incarnation="2"), "movements.incarnation: must be an integer"),
        (HUB, "alerts", m.encode_alerts(HUB, [ALERT], NOW, incarnation=0), "alerts.incarnation: must be an integer"),
        (HUB, "alerts", m.encode_alerts(HUB, [ALERT], NOW).replace(b'"incarnation":1,', b""), "missing incarnation"),
        (HUB, "snapshot", m.encode_snapshot(HUB, NOW, incarnation=-1, last_movement_id=0, skus=[], lanes=[], nodes=[],
         book=[]), "snapshot.incarnation: must be an integer 1.."),
        (HUB, "movements", json.dumps({"rows": [[]] * 1001}).encode(), "fields are"),
        ("store 042", "movements", payload(), "hub id must be"),
        (HUB, "gossip", payload(), "unknown kind"),
        (HUB, "status", b'{"v":1,"hub":"store-042","kind":"status","sent_ms":1,"state":"gone"}', "one of online"),
        (HUB, "status", b" " * 5000, "over the 4096 allowed"),
        (HUB, "rewind", m.encode_rewind(HUB, NOW, movements_after=-1, alerts=False), "movements_after"),
        (HUB, "rewind", b'{"v":1,"hub":"store-042","kind":"rewind","sent_ms":1,"movements_after":null,"alerts":1}',
         "rewind.alerts: must be true or false"),
        (HUB, "alerts", m.encode_alerts(HUB, [ALERT, ALERT], NOW), "holds an alert twice"),
        # a key twice in a snapshot's list (central's copies are keyed as the hub's tables: PostgreSQL would refuse)
        (HUB, "snapshot", m.encode_snapshot(HUB, NOW, last_movement_id=0, skus=[SKU, SKU], lanes=[], nodes=[],
         book=[]), "snapshot.skus: holds an entry twice"),
        (HUB, "snapshot", m.encode_snapshot(HUB, NOW, last_movement_id=0, skus=[], lanes=[LANE, LANE], nodes=[],
         book=[]), "snapshot.lanes: holds an entry twice"),
        (HUB, "snapshot", m.encode_snapshot(HUB, NOW, last_movement_id=0, skus=[], lanes=[], nodes=[NODE, NODE],
         book=[]), "snapshot.nodes: holds an entry twice"),
        (HUB, "snapshot", m.encode_snapshot(HUB, NOW, last_movement_id=0, skus=[], lanes=[], nodes=[],
         book=[("COLA-330", "backroom", 1), ("COLA-330", "backroom", 2)]), "snapshot.book: holds an entry twice"),
        (HUB, "alerts", m.encode_alerts(HUB, [(*ALERT[:3], "closed", *ALERT[4:])], NOW), "rows[0].status"),
        (HUB, "movements", b"[" * 100_000 + b"]" * 100_000, "payload"),
    ],
)  # fmt: skip
def test_decode_refuses_with_one_line(topic_hub: str, kind: str, body: bytes, says: str) -> None:
    with pytest.raises(FleetMessageError) as err:
        decode(topic_hub, kind, body)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_batch_limits() -> None:
    with pytest.raises(FleetMessageError, match=r"1\.\.1000 rows"):
        m.encode_movements(HUB, movements(1, 1001), NOW)
    big = decode(HUB, "movements", m.encode_movements(HUB, movements(1, 1000), NOW))
    assert isinstance(big, m.Movements) and (big.first, big.last, len(big.rows)) == (1, 1000, 1000)


# --- property: whatever the ledger can hold encodes into a message decode accepts, unchanged where allowed ----------

texts = st.text(max_size=40)
keys = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "" or True)
skus = st.from_regex(r"[ -~]{1,32}", fullmatch=True)
ms = st.integers(0, (1 << 53) - 1)
i64 = st.integers(-(1 << 63), (1 << 63) - 1)


@st.composite
def movement_rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    first = draw(st.integers(1, 1 << 40))
    n = draw(st.integers(1, 30))
    rows = []
    for i in range(n):
        rows.append(
            (
                first + i,
                draw(ms),
                draw(ms),
                draw(st.none() | skus),
                draw(keys),
                draw(i64),
                draw(st.from_regex(r"[a-z][a-z_]{0,20}", fullmatch=True)),
                draw(keys),
                draw(st.integers(0, 1)),
                draw(keys),
                draw(st.none() | st.text(max_size=200)),
                draw(st.none() | st.integers(1, 1 << 40)),
                draw(st.none() | st.integers(1, 0xFFFFFFFF)),
                draw(st.none() | st.integers(0, 0xFFFFFFFF)),
                draw(st.none() | i64),
                draw(st.none() | st.integers(0, 100)),
            )
        )
    return rows


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()
    return value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(movement_rows(), ms)
def test_any_ledger_rows_round_trip(rows: list[tuple[Any, ...]], sent: int) -> None:
    got = decode(HUB, "movements", m.encode_movements(HUB, rows, sent))
    assert isinstance(got, m.Movements) and got.first == rows[0][0] and got.last == rows[-1][0]
    assert [tuple(r) for r in got.rows] == [tuple(_clean(v) for v in r) for r in rows]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20_000), st.text(min_size=1, max_size=50))
def test_free_text_is_cut_and_cleaned_never_refused(note: str, resolution: str) -> None:
    row = (1, *ROW[1:10], note, *ROW[11:])
    got = decode(HUB, "movements", m.encode_movements(HUB, [row], NOW))
    assert isinstance(got, m.Movements)
    text = got.rows[0].note
    assert text is not None and len(text) <= m.TEXT_MAX
    if len(note) <= m.TEXT_MAX and "\x00" not in note and all(not 0xD800 <= ord(c) <= 0xDFFF for c in note):
        assert text == note
    alert = decode(HUB, "alerts", m.encode_alerts(HUB, [(*ALERT[:9], resolution, *ALERT[10:])], NOW))
    assert isinstance(alert, m.Alerts) and alert.rows[0].resolution is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_garbage_is_refused_never_crashes(body: bytes) -> None:
    for kind in m.KINDS:
        with contextlib.suppress(FleetMessageError):
            decode(HUB, kind, body)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_messages_are_refused_or_still_valid(data: st.DataObject) -> None:
    """Any one value of a valid message replaced by an arbitrary JSON value: refused with FleetMessageError, or
    accepted as a valid message (never another exception)."""
    original = json.loads(m.encode_movements(HUB, movements(1201, 3), NOW))
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=6,
    )
    key = data.draw(st.sampled_from(sorted(original)))
    if key == "rows":
        r = data.draw(st.integers(0, 2))
        c = data.draw(st.integers(0, 15))
        original["rows"][r][c] = data.draw(json_values)
    else:
        original[key] = data.draw(json_values)
    with contextlib.suppress(FleetMessageError):
        decode(HUB, "movements", json.dumps(original).encode())
    if key == "rows":  # the column-at-a-time fast check agrees with the checks that name the bad value
        rows = json.loads(json.dumps(original["rows"]))
        assert decoding._movements_ok(rows, 1201) == _slow_ok(rows, 1201)


def _slow_ok(rows: list[Any], first: int) -> bool:
    try:
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != 16:
                return False
            values = decoding._row(row, decoding.MOVEMENT_CHECKS, m.MOVEMENT_COLUMNS, "x")
            if values[0] != first + i:
                return False
    except FleetMessageError:
        return False
    return True
