"""A node's flash as the factory leaves it: ``config.json``, the lanes' calibrations and SKU assignments, and the
installer's count of what is on each lane. Runs on the host (CPython, a directory: ``smartshelf emulate``) and in
tests (either runtime).
"""

import json

from firmware.assignment import save_assignment
from firmware.calibration import Calibration, CalibrationStore
from firmware.counters import CountersStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def provision(root: str, config_text: str, plan: "dict[str, Any]") -> None:
    """Write a node's flash as the factory would: ``config.json``, each lane's calibration and its SKU
    assignment (``plan["lanes"][i]``: ``cal`` = {"offset", "c10"}, ``unit_dg``, ``spread_permille``, ``sku``).
    Runs on the host (CPython, a directory) and in tests (either runtime)."""
    _mkdir(root)
    _mkdir(root + "/state")
    with open(root + "/config.json", "w") as f:
        f.write(config_text)
    cells = json.loads(config_text)["lanes"]
    lanes = plan.get("lanes", [])
    for i in range(len(lanes)):
        lane = lanes[i]
        cal = lane.get("cal")
        if cal is not None and i < len(cells):
            n = len(cells[i]["cells"])
            CalibrationStore(root + "/state/cal" + str(i), n).save(Calibration(n, int(cal["offset"]), int(cal["c10"])))
        if lane.get("unit_dg"):
            save_assignment(
                root + "/state/lane" + str(i), int(lane["unit_dg"]), int(lane.get("spread_permille", 0)), lane["sku"]
            )
    # The installer's count of what is on each lane at install: the node's counters start from it, so the hub
    # observes absolute stock rather than change since install. Only on first provisioning: afterwards the
    # counters are the node's own.
    initial = [int(lane.get("initial", 0)) for lane in lanes]
    if any(initial) and len(initial) == len(cells) and not _exists(root + "/state/counters"):
        counters = CountersStore(root + "/state/counters", len(initial))
        for i in range(len(initial)):
            counters.lanes[i].count = initial[i]
        counters.checkpoint()


def _exists(path: str) -> bool:
    import os

    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _mkdir(path: str) -> None:
    import os

    try:
        os.stat(path)
    except OSError:
        os.mkdir(path)
