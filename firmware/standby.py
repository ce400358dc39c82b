"""What happened on the shelf while the firmware was stopped: the lanes' levels kept across a stop.

When the node stops on purpose (Ctrl-C: ``mpremote`` taking the board over, ``smartshelf flash`` installing a new
image) it writes each lane's stable level and scale to ``state/levels`` (``save``). At the next boot the record is
read and removed at once (``take``: it is used once). When a lane's detector has its first stable level (within
``firmware/node.py``'s ``UNWATCHED_MS`` of the boot) the node compares the two: a change within a quarter unit of a
whole number of units is recorded as an anomaly with that count, any other change of at least half a unit as an
anomaly with count 0 (the weight only), both with a low confidence (40, as after a sensor fault), so the counters
and the ledger follow the shelf and staff can check it. A lane that was moving or faulted when the node stopped,
or whose calibration is not the one it had then, is not compared. A power cut or a crash writes no record: the
lanes start from what they weigh, as before.
"""

import struct
from array import array

from firmware.persist import Record
from shared_protocol.compat import const

UNKNOWN = const(-0x40000000)  # no level (a small int on 32-bit ports, below any weight a lane reports)
_LANE = const(8)  # level_dg i32, c10 i32

TYPE_CHECKING = False
if TYPE_CHECKING:
    from firmware.lane import Lane


def save(path: str, lanes: "list[Lane]") -> None:
    """Each lane's stable level (dg) and scale, the level UNKNOWN for a lane moving or faulted now."""
    buf = bytearray(_LANE * len(lanes))
    for i in range(len(lanes)):
        lane = lanes[i]
        level = lane.det.level_dg() if lane.det.stable and not lane.fault and lane.cal.calibrated else UNKNOWN
        struct.pack_into(">ii", buf, _LANE * i, level, lane.cal.c10)
    Record(path).save(bytes(buf))


def take(path: str, lanes: int) -> "array[int] | None":
    """The levels saved at the last stop as [level, c10] per lane (removed from flash now), or None: no record, or
    one for another layout."""
    import os

    data = Record(path).load()
    for name in (path, path + ".tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    if data is None or len(data) != _LANE * lanes:
        return None
    out = array("i", [UNKNOWN] * (2 * lanes))
    for i in range(2 * lanes):
        out[i] = struct.unpack_from(">i", data, 4 * i)[0]
    return out


def unwatched_count(d: int, unit: int) -> int:
    """The units a level change ``d`` (dg) is, for a unit of ``unit`` dg: a whole number within a quarter unit,
    else 0."""
    k = (2 * d + unit) // (2 * unit) if d >= 0 else -((-2 * d + unit) // (2 * unit))
    r = d - k * unit
    return k if 4 * (r if r >= 0 else -r) <= unit else 0
