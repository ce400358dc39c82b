"""A lane's SKU assignment on flash (``set_lane``; provisioned at the factory): unit weight, spread and SKU.

One record per lane (``<root>/state/lane<i>``, atomic replace with a CRC): ``>IH`` (unit_weight_dg,
spread_permille) then the SKU's bytes (1..32 printable ASCII). Applied at boot; a missing or invalid record
leaves the lane without a unit weight (its events carry no count).
"""

import struct

from firmware.persist import Record

_ASSIGN_FMT = ">IH"  # unit_weight_dg, spread_permille, then the SKU's bytes


def assignment_path(state_dir: str, lane: int) -> str:
    return state_dir + "/lane" + str(lane)


def load_assignment(path: str) -> "tuple[int, int, str]":
    """(unit_weight_dg, spread_permille, sku) stored by set_lane; (0, 0, "") when none is valid."""
    data = Record(path).load()
    if data is None or len(data) < 7 or len(data) > 6 + 32:
        return 0, 0, ""
    unit, spread = struct.unpack(_ASSIGN_FMT, data[:6])
    raw = data[6:]
    for c in raw:
        if c < 0x20 or c > 0x7E:
            return 0, 0, ""
    if not 1 <= unit <= 1000000 or spread > 1000:
        return 0, 0, ""
    return unit, spread, raw.decode()


def save_assignment(path: str, unit_dg: int, spread_permille: int, sku: str) -> bool:
    """Store the assignment unless flash already holds exactly it (the hub re-sends every lane's assignment at each
    hello, which a BLE node says on every connection: no flash wear for that); True when it wrote."""
    data = struct.pack(_ASSIGN_FMT, unit_dg, spread_permille) + sku.encode()
    record = Record(path)
    if record.load() == data:
        return False
    record.save(data)
    return True
