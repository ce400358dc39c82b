"""What happened on the shelf while the firmware was stopped: the lanes' levels kept across a stop.

When the node stops on purpose (Ctrl-C: ``mpremote`` taking the board over, ``smartshelf flash`` installing a new
image) it writes each lane's stable level to ``state/levels`` (``save``). At the next boot the record is read and
removed at once (``take``: it is used once), and when a lane's detector has its first stable level the node
compares the two (``firmware/node.py``): a whole number of units that left or came while nobody watched is recorded
as an anomaly with that count and a low confidence (40, as after a sensor fault), so the counters and the ledger
follow the shelf and staff can check it. A lane that was moving or faulted when the node stopped has no level
(``UNKNOWN``). A power cut or a crash writes no record: the lanes start from what they weigh, as before.
"""

import struct
from array import array

from firmware.persist import Record
from shared_protocol.compat import const

UNKNOWN = const(-0x80000000)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from firmware.lane import Lane


def save(path: str, lanes: "list[Lane]") -> None:
    """Each lane's stable level (dg), or UNKNOWN for a lane moving or faulted now."""
    buf = bytearray(4 * len(lanes))
    for i in range(len(lanes)):
        lane = lanes[i]
        level = lane.det.level_dg() if lane.det.stable and not lane.fault else UNKNOWN
        struct.pack_into(">i", buf, 4 * i, level)
    Record(path).save(bytes(buf))


def take(path: str, lanes: int) -> "array[int] | None":
    """The levels saved at the last stop (removed from flash now), or None: no record, or one for another layout."""
    import os

    data = Record(path).load()
    for name in (path, path + ".tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    if data is None or len(data) != 4 * lanes:
        return None
    out = array("i", [UNKNOWN] * lanes)
    for i in range(lanes):
        out[i] = struct.unpack_from(">i", data, 4 * i)[0]
    return out
