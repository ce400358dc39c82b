"""The config's ``rfid`` section (firmware/config.py) on CPython and the real MicroPython VM: every bad value is one
ConfigError line naming the field; good ones parse to the readers the poller opens."""

from __future__ import annotations

import json
from typing import Any

M = "tests.portable.rfid_cases"
T = 120

LANES = [{"cells": [[4, 5]]}, {"cells": [[6, 7]]}, {"cells": [[8, 9]]}]
READER = {"uart": 1, "tx": 17, "rx": 16, "region": "eu", "switch": [25, 26], "antennas": [0, 1, 2]}


def doc(rfid: Any = None, **over: Any) -> str:
    d: dict[str, Any] = {"node_id": 3, "key": "00" * 16, "lanes": LANES, "led": 2}
    if rfid is not None:
        d["rfid"] = rfid
    d.update(over)
    return json.dumps(d)


def reader(**over: Any) -> dict[str, Any]:
    r = dict(READER)
    r.update(over)
    return r


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in READER.items() if k != key}


BAD = [
    (doc([]), "rfid: must be an object with readers"),
    (doc({}), "rfid.readers: must be a list of 1..2 readers"),
    (doc({"readers": []}), "rfid.readers: must be a list of 1..2 readers"),
    (doc({"readers": [reader(), reader(uart=2), reader(uart=0)]}), "rfid.readers: must be a list of 1..2 readers"),
    (doc({"readers": [reader()], "seen": 2}), "rfid.seen: unknown field"),
    (doc({"readers": [reader(ant=1)]}), "rfid.readers[0].ant: unknown field"),
    (doc({"readers": [5]}), "rfid.readers[0]: must be an object"),
    (doc({"readers": [without("region")]}), "rfid.readers[0].region: missing"),
    (doc({"readers": [without("antennas")]}), "rfid.readers[0].antennas: missing"),
    (doc({"readers": [reader(uart=3)]}), "rfid.readers[0].uart: 3 is outside 0..2"),
    (doc({"readers": [reader(), reader(tx=18, rx=19, switch=[])]}), "rfid.readers[1].uart: UART 1 is already used"),
    (doc({"readers": [reader(tx=4)]}), "rfid.readers[0].tx: pin 4 is already used by lanes[0].cells[0]"),
    (doc({"readers": [reader(rx=2)]}), "rfid.readers[0].rx: pin 2 is already used by led"),
    (doc({"readers": [reader(rx=17)]}), "rfid.readers[0].rx: pin 17 is already used by rfid.readers[0].tx"),
    (doc({"readers": [reader(switch=[25, 16])]}), "rfid.readers[0].switch[1]: pin 16 is already used by"),
    (doc({"readers": [reader(tx=70)]}), "rfid.readers[0].tx: 70 is outside 0..63"),
    (doc({"readers": [reader(baud=12345)]}), "rfid.readers[0].baud: must be one of 9600, 19200"),
    (doc({"readers": [reader(region="jp")]}), 'rfid.readers[0].region: must be one of "eu", "us"'),
    (doc({"readers": [reader(power_dbm=31)]}), "rfid.readers[0].power_dbm: 31 is outside 10..30"),
    (doc({"readers": [reader(power_dbm=20.5)]}), "rfid.readers[0].power_dbm: must be an integer"),
    (doc({"readers": [reader(switch=[25, 26, 27, 28])]}), "rfid.readers[0].switch: must be a list of 0..3 pins"),
    (doc({"readers": [reader(antennas=[])]}), "rfid.readers[0].antennas: must be a list of 1..8 lanes"),
    (doc({"readers": [reader(antennas=[0, 1, 2, 0, 1])]}), "rfid.readers[0].antennas: 5 antennas, but 2 switch pins"),
    (doc({"readers": [reader(switch=[], antennas=[0, 1])]}), "rfid.readers[0].antennas: 2 antennas, but 0 switch pins"),
    (doc({"readers": [reader(antennas=[0, 3])]}), "rfid.readers[0].antennas[1]: 3 is outside 0..2"),
    (doc({"readers": [reader()], "seen_n": 0}), "rfid.seen_n: 0 is outside 1..10"),
    (doc({"readers": [reader()], "window_ms": 50}), "rfid.window_ms: 50 is outside 100..60000"),
    (doc({"readers": [reader()], "dwell_ms": 10}), "rfid.dwell_ms: 10 is outside 50..5000"),
    (doc({"readers": [reader()], "lost_s": 0}), "rfid.lost_s: 0 is outside 1..3600"),
    (
        doc({"readers": [reader()], "lost_s": 1, "dwell_ms": 200}),
        "rfid.lost_s: 1 s is shorter than two rounds of rfid.readers[0]'s antennas (2 x 3 x 200 ms)",
    ),
    (
        # a window shorter than one round of the antennas: a tag's own antenna reads it once per round, so its lane
        # would count as stale between two of its turns
        doc(
            {
                "readers": [reader(switch=[25, 26, 27], antennas=[0, 1, 2, 0, 1, 2, 0, 1])],
                "dwell_ms": 400,
                "window_ms": 3000,
            }
        ),
        "rfid.window_ms: 3000 ms is shorter than one round of rfid.readers[0]'s antennas (8 x (400 + 50) ms)",
    ),
    (
        doc({"readers": [reader(switch=[], antennas=[0]), reader(uart=2, tx=21, rx=22)], "window_ms": 700}),
        "rfid.window_ms: 700 ms is shorter than one round of rfid.readers[1]'s antennas (3 x (200 + 50) ms)",
    ),
]

GOOD = [
    doc(),
    doc({"readers": [reader()]}),
    doc(
        {
            "readers": [
                reader(baud=57600, region="us", power_dbm=26),
                {"uart": 2, "tx": 21, "rx": 22, "region": "cn900", "antennas": [2]},
            ],
            "seen_n": 3,
            "window_ms": 2000,
            "lost_s": 30,
            "dwell_ms": 150,
        }
    ),
    # one antenna: nothing to wait for between its turns, any window goes
    doc({"readers": [reader(switch=[], antennas=[1])], "dwell_ms": 5000, "window_ms": 100, "lost_s": 10}),
    # exactly one round of the antennas: 4 x (200 + 50) ms
    doc({"readers": [reader(antennas=[0, 1, 2, 0])], "window_ms": 1000}),
]


def test_every_bad_rfid_value_is_named(runtime: Any) -> None:
    got = runtime.call(M, "config_errors", [text for text, _ in BAD], timeout_s=T)
    for msg, (_text, expected) in zip(got, BAD, strict=True):
        assert isinstance(msg, str) and expected in msg, (msg, expected)
        assert "\n" not in msg


def test_good_rfid_sections_parse(runtime: Any) -> None:
    got = runtime.call(M, "config_errors", GOOD, timeout_s=T)
    assert got[0] == ["", None]  # no rfid section: no readers
    assert got[1] == [
        "",
        {
            "seen_n": 2, "window_ms": 3000, "lost_s": 10, "dwell_ms": 200, "cycle_ms": 3 * (200 + 50),
            "readers": [[1, 17, 16, 115200, 0x03, 20, [25, 26], [0, 1, 2]]],
        },
    ]  # fmt: skip
    assert got[2] == [
        "",
        {
            "seen_n": 3, "window_ms": 2000, "lost_s": 30, "dwell_ms": 150, "cycle_ms": 3 * (150 + 50),
            "readers": [[1, 17, 16, 57600, 0x02, 26, [25, 26], [0, 1, 2]], [2, 21, 22, 115200, 0x01, 20, [], [2]]],
        },
    ]  # fmt: skip
    assert got[3][1]["cycle_ms"] == 0 and got[3][1]["window_ms"] == 100  # one antenna: no round to wait for
    assert got[4][1]["cycle_ms"] == 1000


def test_the_config_file_round_trips_with_an_rfid_section(tmp_path: Any) -> None:
    from firmware import config as config_mod

    text = config_mod.dumps(5, bytes(16), [([(4, 5)], 80), ([(6, 7)], 80)], rfid={"readers": [reader(antennas=[1])]})
    (tmp_path / "config.json").write_text(text)
    cfg = config_mod.load(str(tmp_path / "config.json"))
    assert cfg.rfid is not None and cfg.rfid.readers[0].antennas == [1] and cfg.rfid.readers[0].region_name == "eu"
    # the lane layout hash (hello.layout_hash) is the lanes' alone: adding readers does not change it
    plain = config_mod.parse(json.loads(config_mod.dumps(5, bytes(16), [([(4, 5)], 80), ([(6, 7)], 80)])))
    assert cfg.layout_hash() == plain.layout_hash()
