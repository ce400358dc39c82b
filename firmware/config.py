"""The node's configuration file on flash (``/config.json``), validated as a whole before anything runs.

```json
{
  "node_id": 1,
  "key": "000102030405060708090a0b0c0d0e0f",
  "lanes": [
    {"cells": [[4, 5]], "rate_sps": 80},
    {"cells": [[6, 7], [8, 9]], "rate_sps": 10}
  ],
  "intervals": {"lane_state_s": 10, "health_s": 30, "retransmit_ms": 2000},
  "led": 2,
  "watchdog_s": 0,
  "outbox": 256,
  "link": "ble",
  "ble": {"mtu": 247, "adv_ms": 250},
  "rfid": {
    "readers": [{"uart": 1, "tx": 17, "rx": 16, "baud": 115200, "region": "eu", "power_dbm": 20,
                 "switch": [25, 26], "antennas": [0, 1, 1]}],
    "seen_n": 2, "window_ms": 3000, "lost_s": 10, "dwell_ms": 200
  }
}
```

* ``node_id``: 1..4294967295, as provisioned in the hub. ``key``: the node's secret, 32..128 hex characters
  (16..64 bytes).
* ``lanes``: 1..32 lanes, in lane-number order; each has 1..8 ``cells`` given as ``[sck_pin, dout_pin]``
  (GPIO numbers 0..63; every pin is used once) and ``rate_sps`` (the HX711 RATE pin: 10 or 80, default 80).
* ``intervals`` (optional): ``lane_state_s`` 1..3600 (default 10), ``health_s`` 5..3600 (default 30),
  ``retransmit_ms`` 500..60000 (default 2000).
* ``led`` (optional): the identify LED, a GPIO number or a pin name such as ``"LED"``; ``watchdog_s``
  (optional, 0 = off): hardware watchdog timeout, 2..3600.
* ``outbox`` (optional): how many records (events, tag records) the node keeps until the hub acknowledges them,
  4..1024 (default 256: about 6 KiB of RAM, 10 KiB with RFID). When it is full the oldest is dropped and the hub
  books the loss from the lane counters (``firmware/outbox.py``). Lower it only while the outbox is empty: records
  beyond a smaller outbox at boot are dropped before their counters are rebuilt.
* ``link`` (optional): ``"serial"`` (the USB console, the default) or ``"ble"`` (``firmware/link_ble.py``); ``ble``
  (optional, BLE only): ``mtu`` the largest ATT MTU the node accepts, 23..517 (default 247; the hub starts the
  exchange), ``adv_ms`` the advertising interval, 20..10240 ms (default 250).

* ``rfid`` (optional; ``firmware/rfid/``): UHF RFID readers (R200 / YRM100 / JRD-4035 class modules on a UART).
  ``readers``: 1..2 readers, each with ``uart`` (the UART id, 0..2; one reader per UART; on ESP32 boards UART0 is
  the REPL console that carries the serial link to the hub, so put readers on UART1 / UART2 there; on the RP2040 the
  console is USB and UART0 is free. The config cannot know the board, so it does not refuse 0), ``tx`` and ``rx`` (the
  board's GPIOs wired to the module's RX and TX), ``baud`` (9600, 19200, 38400, 57600 or 115200; default 115200),
  ``region`` (the module's frequency plan, required: ``"eu"``, ``"us"``, ``"cn900"``, ``"cn800"`` or ``"kr"``),
  ``power_dbm`` (TX power, 10..30, default 20), ``switch`` (0..3 GPIOs driving the RF switch that selects the
  antenna, first pin = bit 0; default none) and ``antennas`` (1..8 lanes, one per antenna: ``antennas[i]`` is the
  lane covered by the antenna the switch selects with value ``i``, so at most ``2 ** len(switch)`` of them; a lane
  may have several). Every pin is used once, by a cell, the LED or a reader. ``seen_n`` (1..10, default 2) reads
  within ``window_ms`` (100..60000, default 3000) make a tag present on a lane; ``lost_s`` (1..3600, default 10)
  without a read lose it, and must cover two rounds of each reader's antennas (``2 * len(antennas) *
  dwell_ms``); ``dwell_ms`` (50..5000, default 200) is the time each antenna inventories in turn. A reader with
  several antennas reads each of them once per round, ``len(antennas) * (dwell_ms + 50)`` ms (50: the stop and the
  next start between two dwells), so ``window_ms`` must cover one round of each reader's antennas: a tag's own
  antenna reads it once per round, and a shorter window would count its lane as stale between two of its turns
  (``RfidConfig.cycle_ms`` is the longest round, 0 when every reader has one antenna: it reads all the time).

``load`` raises ``ConfigError`` whose message names the field (``lanes[1].cells[0]: pin 4 is already used by
lanes[0].cells[0]``); unknown fields are errors too, so a typo cannot silently fall back to a default.
"""

import binascii
import json

from shared_protocol.compat import const

CONFIG_FILE = "/config.json"
MAX_LANES = const(32)
MAX_CELLS = const(8)
MAX_PIN = const(63)
MAX_U32 = const(0xFFFFFFFF)
_MAX_FILE = const(16384)

DEFAULT_LANE_STATE_S = const(10)
DEFAULT_HEALTH_S = const(30)
DEFAULT_RETRANSMIT_MS = const(2000)
DEFAULT_OUTBOX = const(256)  # firmware/outbox.py DEFAULT_CAPACITY
MIN_OUTBOX = const(4)
MAX_OUTBOX = const(1024)

# (name, lo, hi, default) of the optional ``intervals`` table.
INTERVALS = (
    ("lane_state_s", 1, 3600, DEFAULT_LANE_STATE_S),
    ("health_s", 5, 3600, DEFAULT_HEALTH_S),
    ("retransmit_ms", 500, 60000, DEFAULT_RETRANSMIT_MS),
)
_TOP = ("node_id", "key", "lanes", "intervals", "led", "watchdog_s", "outbox", "link", "ble", "rfid")
LINKS = ("serial", "ble")
_BLE = ("mtu", "adv_ms")
DEFAULT_BLE_MTU = const(247)
DEFAULT_ADV_MS = const(250)
_LANE = ("cells", "rate_sps")
_RFID = ("readers", "seen_n", "window_ms", "lost_s", "dwell_ms")
_READER = ("uart", "tx", "rx", "baud", "region", "power_dbm", "switch", "antennas")
MAX_READERS = const(2)
MAX_UART = const(2)
MAX_ANTENNAS = const(8)
MAX_SWITCH_PINS = const(3)
BAUDS = (9600, 19200, 38400, 57600, 115200)
# (name, the module's region code: firmware/rfid/uhf.py REGION_*)
RFID_REGIONS = (("eu", 0x03), ("us", 0x02), ("cn900", 0x01), ("cn800", 0x04), ("kr", 0x06))
# (name, lo, hi, default) of the rfid section's numbers.
RFID_NUMBERS = (
    ("seen_n", 1, 10, 2),
    ("window_ms", 100, 60000, 3000),
    ("lost_s", 1, 3600, 10),
    ("dwell_ms", 50, 5000, 200),
)
DEFAULT_POWER_DBM = const(20)
DEFAULT_BAUD = const(115200)
# Between two dwells of a reader: the stop, its answer after the inventory round in progress (~30 ms), the next poll
# (10 ms) and the next start (firmware/rfid/uhf.py, "Timing").
DWELL_OVERHEAD_MS = const(50)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ConfigError(ValueError):
    """The configuration is missing, unreadable or invalid; the message names the field."""


class LaneConfig:
    def __init__(self, cells: "list[tuple[int, int]]", rate_sps: int) -> None:
        self.cells = cells
        self.rate_sps = rate_sps


class ReaderConfig:
    """One RFID reader: its UART and pins, the module's settings, and the lane of each antenna."""

    def __init__(
        self,
        uart: int,
        tx: int,
        rx: int,
        baud: int,
        region: int,
        power_dbm: int,
        switch: "list[int]",
        antennas: "list[int]",
        region_name: str = "",
    ) -> None:
        self.uart = uart
        self.tx = tx
        self.rx = rx
        self.baud = baud
        self.region = region  # the module's region code
        self.region_name = region_name
        self.power_dbm = power_dbm
        self.switch = switch
        self.antennas = antennas


def round_ms(antennas: int, dwell_ms: int) -> int:
    """One round of a reader's ``antennas`` (each inventoried ``dwell_ms`` in turn); 0 for a single antenna, which
    reads all the time."""
    if antennas < 2:
        return 0
    return antennas * (dwell_ms + DWELL_OVERHEAD_MS)


class RfidConfig:
    """``cycle_ms``: the longest round of a reader's antennas (``round_ms``): every antenna has had its turn."""

    def __init__(self, readers: "list[ReaderConfig]", seen_n: int, window_ms: int, lost_s: int, dwell_ms: int) -> None:
        self.readers = readers
        self.seen_n = seen_n
        self.window_ms = window_ms
        self.lost_s = lost_s
        self.dwell_ms = dwell_ms
        cycle = 0
        for r in readers:
            c = round_ms(len(r.antennas), dwell_ms)
            if c > cycle:
                cycle = c
        self.cycle_ms = cycle


class Config:
    def __init__(
        self,
        node_id: int,
        key: bytes,
        lanes: "list[LaneConfig]",
        intervals: "dict[str, int]",
        led: "int | str | None" = None,
        watchdog_s: int = 0,
        link: str = "serial",
        ble_mtu: int = DEFAULT_BLE_MTU,
        adv_ms: int = DEFAULT_ADV_MS,
        rfid: "RfidConfig | None" = None,
        outbox: int = DEFAULT_OUTBOX,
    ) -> None:
        self.node_id = node_id
        self.key = key
        self.lanes = lanes
        self.lane_state_s = intervals["lane_state_s"]
        self.health_s = intervals["health_s"]
        self.retransmit_ms = intervals["retransmit_ms"]
        self.led = led
        self.watchdog_s = watchdog_s
        self.link = link
        self.ble_mtu = ble_mtu
        self.adv_ms = adv_ms
        self.rfid = rfid
        self.outbox = outbox

    def layout_hash(self) -> int:
        """CRC-32 of the lane layout (lanes, cells per lane, pins): ``hello.layout_hash``."""
        return layout_hash(self.lanes)


def layout_hash(lanes: "list[LaneConfig]") -> int:
    buf = bytearray()
    for lane in lanes:
        buf.append(len(lane.cells))
        for sck, dout in lane.cells:
            buf.append(sck)
            buf.append(dout)
    return int(binascii.crc32(bytes(buf))) & MAX_U32


def _is_int(v: "Any") -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(where: str, v: "Any", lo: int, hi: int) -> int:
    if not _is_int(v):
        raise ConfigError(where + ": must be an integer, got " + repr(v))
    if v < lo or v > hi:
        raise ConfigError(where + ": " + str(v) + " is outside " + str(lo) + ".." + str(hi))
    return int(v)


def _unknown(where: str, d: "dict[str, Any]", allowed: "tuple[str, ...]") -> None:
    extra = sorted(k for k in d if k not in allowed)
    if extra:
        raise ConfigError(where + str(extra[0]) + ": unknown field (allowed: " + ", ".join(allowed) + ")")


def _key(v: "Any") -> bytes:
    if not isinstance(v, str):
        raise ConfigError("key: must be a hex string")
    n = len(v)
    if n % 2 or n < 32 or n > 128:
        raise ConfigError("key: must be 32..128 hex characters (16..64 bytes), got " + str(n))
    for c in v:
        if c not in "0123456789abcdefABCDEF":
            raise ConfigError("key: must be hex, found " + repr(c))
    return bytes(binascii.unhexlify(v))


def _pins_of(lanes: "list[LaneConfig]") -> "dict[int, str]":
    """Every cell pin, with the field that uses it."""
    used: dict[int, str] = {}
    for i in range(len(lanes)):
        cells = lanes[i].cells
        for j in range(len(cells)):
            for pin in cells[j]:
                used[pin] = "lanes[" + str(i) + "].cells[" + str(j) + "]"
    return used


def _pin(where: str, v: "Any", used: "dict[int, str]") -> int:
    pin = _int(where, v, 0, MAX_PIN)
    if pin in used:
        raise ConfigError(where + ": pin " + str(pin) + " is already used by " + used[pin])
    used[pin] = where
    return pin


def _reader(where: str, d: "Any", n_lanes: int, used: "dict[int, str]", uarts: "dict[int, str]") -> ReaderConfig:
    if not isinstance(d, dict):
        raise ConfigError(where + ": must be an object with uart, tx, rx, region and antennas")
    _unknown(where + ".", d, _READER)
    for name in ("uart", "tx", "rx", "region", "antennas"):
        if name not in d:
            raise ConfigError(where + "." + name + ": missing")
    uart = _int(where + ".uart", d["uart"], 0, MAX_UART)
    if uart in uarts:
        raise ConfigError(where + ".uart: UART " + str(uart) + " is already used by " + uarts[uart])
    uarts[uart] = where
    tx = _pin(where + ".tx", d["tx"], used)
    rx = _pin(where + ".rx", d["rx"], used)
    baud = d.get("baud", DEFAULT_BAUD)
    if not _is_int(baud) or baud not in BAUDS:
        raise ConfigError(where + ".baud: must be one of " + ", ".join(str(b) for b in BAUDS) + ", got " + repr(baud))
    region = d["region"]
    code = -1
    for name, c in RFID_REGIONS:
        if region == name:
            code = c
    if code < 0:
        names = ", ".join('"' + r[0] + '"' for r in RFID_REGIONS)
        raise ConfigError(where + ".region: must be one of " + names + ", got " + repr(region))
    power = _int(where + ".power_dbm", d.get("power_dbm", DEFAULT_POWER_DBM), 10, 30)
    sw = d.get("switch", [])
    if not isinstance(sw, list) or len(sw) > MAX_SWITCH_PINS:
        raise ConfigError(where + ".switch: must be a list of 0.." + str(MAX_SWITCH_PINS) + " pins")
    switch = []
    for k in range(len(sw)):
        switch.append(_pin(where + ".switch[" + str(k) + "]", sw[k], used))
    ants = d["antennas"]
    most = 1 << len(switch)
    if not isinstance(ants, list) or not ants or len(ants) > MAX_ANTENNAS:
        raise ConfigError(where + ".antennas: must be a list of 1.." + str(MAX_ANTENNAS) + " lanes, one per antenna")
    if len(ants) > most:
        raise ConfigError(
            where + ".antennas: " + str(len(ants)) + " antennas, but " + str(len(switch))
            + " switch pins select at most " + str(most)
        )  # fmt: skip
    antennas = []
    for k in range(len(ants)):
        antennas.append(_int(where + ".antennas[" + str(k) + "]", ants[k], 0, n_lanes - 1))
    return ReaderConfig(uart, tx, rx, baud, code, power, switch, antennas, region)


def _rfid(v: "Any", lanes: "list[LaneConfig]", led: "int | str | None") -> "RfidConfig | None":
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ConfigError("rfid: must be an object with readers")
    _unknown("rfid.", v, _RFID)
    numbers = {}
    for name, lo, hi, default in RFID_NUMBERS:
        numbers[name] = _int("rfid." + name, v.get(name, default), lo, hi)
    readers_v = v.get("readers")
    if not isinstance(readers_v, list) or not readers_v or len(readers_v) > MAX_READERS:
        raise ConfigError("rfid.readers: must be a list of 1.." + str(MAX_READERS) + " readers")
    used = _pins_of(lanes)
    if isinstance(led, int):
        used[led] = "led"
    uarts: dict[int, str] = {}
    readers = []
    for i in range(len(readers_v)):
        readers.append(_reader("rfid.readers[" + str(i) + "]", readers_v[i], len(lanes), used, uarts))
    for i in range(len(readers)):
        cycle = 2 * len(readers[i].antennas) * numbers["dwell_ms"]
        if numbers["lost_s"] * 1000 < cycle:
            raise ConfigError(
                "rfid.lost_s: " + str(numbers["lost_s"]) + " s is shorter than two rounds of rfid.readers[" + str(i)
                + "]'s antennas (2 x " + str(len(readers[i].antennas)) + " x " + str(numbers["dwell_ms"]) + " ms)"
            )  # fmt: skip
        if numbers["window_ms"] < round_ms(len(readers[i].antennas), numbers["dwell_ms"]):
            raise ConfigError(
                "rfid.window_ms: " + str(numbers["window_ms"]) + " ms is shorter than one round of rfid.readers["
                + str(i) + "]'s antennas (" + str(len(readers[i].antennas)) + " x (" + str(numbers["dwell_ms"])
                + " + " + str(DWELL_OVERHEAD_MS) + ") ms)"
            )  # fmt: skip
    return RfidConfig(readers, numbers["seen_n"], numbers["window_ms"], numbers["lost_s"], numbers["dwell_ms"])


def _lanes(v: "Any") -> "list[LaneConfig]":
    if not isinstance(v, list) or not v:
        raise ConfigError("lanes: must be a list of 1.." + str(MAX_LANES) + " lanes")
    if len(v) > MAX_LANES:
        raise ConfigError("lanes: " + str(len(v)) + " lanes, at most " + str(MAX_LANES))
    used: dict[int, str] = {}
    out = []
    for i in range(len(v)):
        where = "lanes[" + str(i) + "]"
        lane = v[i]
        if not isinstance(lane, dict):
            raise ConfigError(where + ": must be an object with cells and rate_sps")
        _unknown(where + ".", lane, _LANE)
        rate = lane.get("rate_sps", 80)
        if not _is_int(rate) or rate not in (10, 80):
            raise ConfigError(where + ".rate_sps: must be 10 or 80, got " + repr(rate))
        cells = lane.get("cells")
        if not isinstance(cells, list) or not cells or len(cells) > MAX_CELLS:
            raise ConfigError(where + ".cells: must be a list of 1.." + str(MAX_CELLS) + " [sck_pin, dout_pin] pairs")
        pairs = []
        for j in range(len(cells)):
            cw = where + ".cells[" + str(j) + "]"
            cell = cells[j]
            if not isinstance(cell, list) or len(cell) != 2:
                raise ConfigError(cw + ": must be [sck_pin, dout_pin]")
            pins = []
            for k in range(2):
                pin = _int(cw + ("[0] (sck)", "[1] (dout)")[k], cell[k], 0, MAX_PIN)
                if pin in used:
                    raise ConfigError(cw + ": pin " + str(pin) + " is already used by " + used[pin])
                used[pin] = cw
                pins.append(pin)
            pairs.append((pins[0], pins[1]))
        out.append(LaneConfig(pairs, rate))
    return out


def parse(d: "Any") -> Config:
    """Validate a decoded JSON document; raises ConfigError naming the first bad field."""
    if not isinstance(d, dict):
        raise ConfigError("config: must be a JSON object")
    _unknown("", d, _TOP)
    for name in ("node_id", "key", "lanes"):
        if name not in d:
            raise ConfigError(name + ": missing")
    node_id = _int("node_id", d["node_id"], 1, MAX_U32)
    key = _key(d["key"])
    lanes = _lanes(d["lanes"])
    iv = d.get("intervals", {})
    if not isinstance(iv, dict):
        raise ConfigError("intervals: must be an object")
    _unknown("intervals.", iv, tuple(x[0] for x in INTERVALS))
    intervals = {}
    for name, lo, hi, default in INTERVALS:
        intervals[name] = _int("intervals." + name, iv.get(name, default), lo, hi)
    led = d.get("led")
    if led is not None and not (isinstance(led, str) and 0 < len(led) <= 16):
        led = _int("led", led, 0, MAX_PIN)
    watchdog_s = d.get("watchdog_s", 0)
    if watchdog_s != 0:
        watchdog_s = _int("watchdog_s", watchdog_s, 2, 3600)
    elif not _is_int(watchdog_s):
        raise ConfigError("watchdog_s: must be an integer")
    link = d.get("link", "serial")
    if link not in LINKS:
        raise ConfigError("link: must be " + " or ".join('"' + x + '"' for x in LINKS) + ", got " + repr(link))
    ble = d.get("ble", {})
    if not isinstance(ble, dict):
        raise ConfigError("ble: must be an object")
    _unknown("ble.", ble, _BLE)
    mtu = _int("ble.mtu", ble.get("mtu", DEFAULT_BLE_MTU), 23, 517)
    adv_ms = _int("ble.adv_ms", ble.get("adv_ms", DEFAULT_ADV_MS), 20, 10240)
    rfid = _rfid(d.get("rfid"), lanes, led)
    outbox = _int("outbox", d.get("outbox", DEFAULT_OUTBOX), MIN_OUTBOX, MAX_OUTBOX)
    return Config(node_id, key, lanes, intervals, led, watchdog_s, link, mtu, adv_ms, rfid, outbox)


def load(path: str = CONFIG_FILE) -> Config:
    """Read and validate the config file; any problem is a ConfigError that names the file and the field."""
    try:
        with open(path) as f:
            text = f.read(_MAX_FILE + 1)
    except OSError:
        raise ConfigError(path + ": cannot be read (missing?)")
    if len(text) > _MAX_FILE:
        raise ConfigError(path + ": larger than " + str(_MAX_FILE) + " bytes")
    try:
        d = json.loads(text)
    except ValueError:
        raise ConfigError(path + ": not valid JSON")
    try:
        return parse(d)
    except ConfigError as err:
        raise ConfigError(path + ": " + str(err))


def dumps(node_id: int, key: bytes, lanes: "list[tuple[list[tuple[int, int]], int]]", **extra: "Any") -> str:
    """The JSON text of a config (used to provision nodes); validated by ``parse`` before it is returned."""
    d: dict[str, Any] = {
        "node_id": node_id,
        "key": binascii.hexlify(key).decode(),
        "lanes": [{"cells": [[s, o] for s, o in cells], "rate_sps": rate} for cells, rate in lanes],
    }
    for k in extra:
        d[k] = extra[k]
    text = json.dumps(d)
    parse(json.loads(text))
    return text
