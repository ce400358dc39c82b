"""`smartshelf bench ble` end to end with tiny sizes (tools/bench/ble.py): a real hub on the emulated air and a real
hub on ptys; the figures' structure and sanity are checked, never their values (the machine is shared)."""

from __future__ import annotations

from hub.config import BleConfig
from tests.hub_support import short_dir
from tools.bench import ble
from tools.cli import BENCH_TARGETS

TINY = ble.Sizes(events=30, runs=1, rate=4.0, seconds=1.5, beacons=3, beacon_gap_s=0.1)
SLOTS = 5


async def test_the_ble_bench_books_every_event_once_within_its_slots_and_reports_every_figure() -> None:
    with short_dir() as d:  # the air's unix socket needs a short path
        f = await ble.bench(d, TINY, BleConfig(slots=SLOTS, idle_s=0.5, hold_s=2.0))
    assert "ble" in BENCH_TARGETS
    assert f["stack"].startswith("emulated BLE stack (Bumble, no air timing")
    b, s = f["ble"], f["serial"]
    # every event booked once, on both links; nothing retransmitted twice into the ledger
    assert f["booked_once"] and b["booked"]["ok"] and s["booked"]["ok"]
    picks = int(TINY.rate * TINY.seconds)
    assert b["booked"]["events"] == picks + TINY.beacons + 2 * TINY.events
    assert s["booked"]["events"] == picks + TINY.events
    # the slots are shared, never exceeded
    assert b["picks"]["most_simultaneous"] <= SLOTS and b["most_simultaneous_overall"] <= SLOTS
    assert b["picks"]["connections"] >= 1 and b["picks"]["slot_refusals"] == 0
    # throughput at each MTU, as negotiated
    for mtu in ble.MTUS:
        t = b["throughput"][str(mtu)]
        assert t["mtu"] == mtu and t["events"] == TINY.events and t["events_per_s"] > 0 and t["setup_ms"] >= 0
    assert f["event_fragments"]["23"] > f["event_fragments"]["247"] == 1
    assert s["throughput"]["events_per_s"] > 0
    # a latency for every pick, and every beacon reached the page
    for side in (b, s):
        for what in ("pick_to_commit", "pick_to_ack"):
            lat = side["picks"][what]
            assert lat["n"] == picks and 0 <= lat["p50_ms"] <= lat["p95_ms"] <= lat["max_ms"]
    assert b["beacon_to_page"]["n"] == TINY.beacons and b["beacon_to_page"]["missed"] == 0
    assert b["beacons"]["forged"] == b["beacons"]["replayed"] == 0
    assert set(f["ble_over_serial"]) == {
        "events_per_s_mtu23",
        "events_per_s_mtu247",
        "pick_to_commit_p50_ms",
        "pick_to_commit_p95_ms",
        "pick_to_ack_p50_ms",
        "pick_to_ack_p95_ms",
    }
