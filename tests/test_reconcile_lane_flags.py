"""Lane flags (hub/reconcile/lane_flags.py) against a real ledger: a lane whose latest reading is flagged
uncalibrated, faulty or overloaded gets a sensor alert and shows "sensor trouble"; a clean reading clears it;
FLAG_UNSTABLE alone, silent nodes' lanes and old readings raise nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.ledger import AlertStatus, LaneReading, LedgerService, NodeUpdate, Sku
from hub.reconcile import ReconcileConfig
from hub.reconcile.lane_flags import flag_names
from hub.schema import MIGRATIONS
from hub.web.db import open_ro
from hub.web.lanes import STATE_LABELS, lanes
from shared_protocol.messages import FLAG_OVERLOAD, FLAG_SENSOR_FAULT, FLAG_UNCALIBRATED, FLAG_UNSTABLE
from tests.test_reconcile_alerts import NODE, Shop, ms


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
        s = await Shop(ledger).setup()
        await ledger.update_node(NodeUpdate(NODE, seen_ms=ms(0)))
        yield s


async def reading(shop: Shop, lane_index: int, t: float, flags: int, weight: int = 0, node: int = NODE) -> None:
    assert await shop.ledger.submit(LaneReading(node, lane_index, ms(t), weight, weight // 3500, flags))


def troubled(shop: Shop) -> set[str]:
    """The lanes the status page's overview shows as "sensor trouble" (the others are "out": no sensor counts)."""
    conn = open_ro(shop.ledger.path)
    try:
        return {row.lane_id for row in lanes(conn) if STATE_LABELS[row.state] == "sensor trouble"}
    finally:
        conn.close()


async def test_an_uncalibrated_lane_is_sensor_trouble_until_a_clean_reading(shop: Shop) -> None:
    await reading(shop, 0, 0, FLAG_UNCALIBRATED)
    await reading(shop, 0, 10, FLAG_UNCALIBRATED | FLAG_UNSTABLE, 1234)
    await reading(shop, 0, 20, FLAG_UNCALIBRATED, 7000)
    await reading(shop, 1, 20, 0, 7000)
    report = await shop.run(30)
    [alert] = await shop.alerts("sensor")
    assert alert.cause_key == "lane:A1/uncalibrated" and alert.status == AlertStatus.OPEN
    assert report.opened == [("sensor", "lane:A1/uncalibrated", alert.id)]
    ev = alert.evidence
    assert ev["problem"] == "uncalibrated" and ev["lane_id"] == "A1" and ev["node_id"] == NODE and ev["sku"] == "COLA"
    assert ev["flags"] == FLAG_UNCALIBRATED and ev["flag_names"] == ["uncalibrated"]
    assert ev["since_ms"] == ms(0) and ev["since"].endswith("Z")
    assert "weight_dg" not in ev and "count" not in ev  # a lane in use changes them all the time
    assert troubled(shop) == {"A1"}

    again = await shop.run(40)  # nothing new: nothing written
    assert (again.opened, again.updated, again.resolved) == ([], [], [])
    await reading(shop, 0, 300, FLAG_UNCALIBRATED, 7000)  # the 5-minute reading of a quiet lane: no update either
    again = await shop.run(310)
    assert (again.opened, again.updated, again.resolved) == ([], [], [])
    await reading(shop, 0, 312, FLAG_UNCALIBRATED, 3500)  # the lane in use, still uncalibrated: no update
    again = await shop.run(315)
    assert (again.opened, again.updated, again.resolved) == ([], [], [])

    await reading(shop, 0, 320, 0, 7000)  # calibrated
    report = await shop.run(330)
    [alert] = await shop.alerts("sensor")
    assert alert.status == AlertStatus.RESOLVED and report.resolved == [("sensor", "lane:A1/uncalibrated", alert.id)]
    assert alert.resolution is not None and alert.resolution.startswith("lane A1: its reading of")
    assert "no longer flags it uncalibrated" in alert.resolution
    assert troubled(shop) == set()


async def test_one_alert_per_problem_since_the_latest_flagged_run(shop: Shop) -> None:
    await reading(shop, 2, 0, FLAG_SENSOR_FAULT)
    await reading(shop, 2, 10, 0, 1500)  # the fault went away once: the run starts again after it
    await reading(shop, 2, 20, FLAG_SENSOR_FAULT | FLAG_UNSTABLE)
    await reading(shop, 2, 30, FLAG_SENSOR_FAULT | FLAG_OVERLOAD, 90_000)
    await shop.run(40)
    alerts = {a.cause_key: a for a in await shop.alerts("sensor")}
    assert sorted(alerts) == ["lane:B1/overload", "lane:B1/sensor_fault"]
    fault, overload = alerts["lane:B1/sensor_fault"].evidence, alerts["lane:B1/overload"].evidence
    assert fault["problem"] == "sensor_fault" and fault["since_ms"] == ms(20)
    assert overload["problem"] == "overload" and overload["since_ms"] == ms(30)
    assert fault["flag_names"] == ["sensor_fault", "overload"] == overload["flag_names"]

    await reading(shop, 2, 50, FLAG_OVERLOAD, 80_000)  # the cells answer again; still overloaded
    report = await shop.run(60)
    assert report.resolved == [("sensor", "lane:B1/sensor_fault", alerts["lane:B1/sensor_fault"].id)]
    assert report.updated == [("sensor", "lane:B1/overload", alerts["lane:B1/overload"].id)]
    [still] = await shop.alerts("sensor", status=AlertStatus.OPEN)
    assert still.cause_key == "lane:B1/overload"  # updated: its flags changed
    assert still.evidence["since_ms"] == ms(30) and still.evidence["flag_names"] == ["overload"]
    assert troubled(shop) == {"B1"}


async def test_unstable_alone_and_a_reading_after_now_raise_nothing(shop: Shop) -> None:
    await reading(shop, 0, 0, FLAG_UNSTABLE, 3500)
    await reading(shop, 1, 100, FLAG_UNCALIBRATED)  # after the run's now
    await shop.run(30)
    assert await shop.alerts("sensor") == []
    assert troubled(shop) == set()


async def test_a_silent_nodes_lanes_are_left_to_its_own_alert(shop: Shop) -> None:
    await shop.ledger.add_sku(Sku("SOAP", "Soap", 1200, 10), actor="setup")
    await shop.ledger.assign_lane(9, 0, "SOAP", actor="setup", lane_id="C1")
    await shop.ledger.assign_lane(9, 1, None, actor="setup", lane_id="C2")  # no SKU yet: still checked
    await shop.ledger.update_node(NodeUpdate(9, seen_ms=ms(0)))
    await shop.ledger.update_node(NodeUpdate(NODE, seen_ms=ms(600)))
    await reading(shop, 0, 0, FLAG_UNCALIBRATED, node=9)
    await reading(shop, 1, 0, FLAG_UNCALIBRATED, node=9)
    await shop.run(100)
    assert sorted(a.cause_key for a in await shop.alerts("sensor")) == ["lane:C1/uncalibrated", "lane:C2/uncalibrated"]
    await shop.run(601)  # node 9 silent: its alert opens, the lanes' are neither cleared nor touched
    open_ = await shop.alerts("sensor", status=AlertStatus.OPEN)
    assert sorted(a.cause_key for a in open_) == ["lane:C1/uncalibrated", "lane:C2/uncalibrated", "node:9/silent"]

    await reading(shop, 0, 700, FLAG_UNCALIBRATED, node=9)  # a silent node's lane is skipped: no new alert
    await shop.ledger.assign_lane(9, 2, "SOAP", actor="setup", lane_id="C3")
    await reading(shop, 2, 700, FLAG_SENSOR_FAULT, node=9)
    await shop.run(710)
    assert len(await shop.alerts("sensor")) == 3

    await shop.ledger.update_node(NodeUpdate(9, seen_ms=ms(800)))  # back, calibrated
    for lane_index in (0, 1, 2):
        await reading(shop, lane_index, 800, 0, node=9)
    await shop.run(810)
    assert await shop.alerts("sensor", status=AlertStatus.OPEN) == []


async def test_old_readings_are_skipped(tmp_path: Path) -> None:
    cfg = ReconcileConfig(lane_flags_max_age_s=60)
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as ledger:
        shop = await Shop(ledger, cfg).setup()
        await ledger.update_node(NodeUpdate(NODE, seen_ms=ms(100)))
        await reading(shop, 0, 0, FLAG_OVERLOAD)
        await shop.run(61)  # older than 60 s: says nothing about now
        assert await shop.alerts("sensor") == []
        await reading(shop, 0, 100, FLAG_OVERLOAD)
        await shop.run(110)
        [alert] = await shop.alerts("sensor")
        assert alert.cause_key == "lane:A1/overload" and alert.evidence["since_ms"] == ms(0)
        await shop.run(200)  # the reading grew old: the alert stays as it is
        [alert] = await shop.alerts("sensor")
        assert alert.status == AlertStatus.OPEN
        await reading(shop, 0, 300, 0)
        await shop.run(310)
        [alert] = await shop.alerts("sensor")
        assert alert.status == AlertStatus.RESOLVED


def test_flag_names_and_the_setting() -> None:
    assert flag_names(0) == []
    assert flag_names(FLAG_SENSOR_FAULT | FLAG_UNSTABLE | FLAG_UNCALIBRATED | FLAG_OVERLOAD) == [
        "sensor_fault",
        "unstable",
        "uncalibrated",
        "overload",
    ]
    assert flag_names(FLAG_UNCALIBRATED | 0x0100) == ["uncalibrated", "0x0100"]
    assert ReconcileConfig().lane_flags_max_age_s == 3900.0
    assert ReconcileConfig.from_mapping({"lane_flags_max_age_s": 120}).lane_flags_max_age_s == 120.0
    with pytest.raises(ValueError, match="negative"):
        ReconcileConfig.from_mapping({"lane_flags_max_age_s": -1})
