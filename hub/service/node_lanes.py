"""Does the node have the lane a ``set-lane`` names, as far as the running hub knows? (``HubService.set_lane``.)

A node says how many lanes it has in its ``hello``, and a BLE node in every beacon too (signed with its key). So:

* the hello's lane count, else the beacon's: a lane beyond it is refused before anything is sent;
* a node heard since the hub started but with no lane count (a serial node whose session went on across a hub
  restart: it did not reboot, so it says no hello while the hub keeps answering it) is sent the command, and its
  own answer decides (``STATUS_BAD_ARGS`` for a lane it does not have; the ledger is written only after an OK);
* a node not heard at all since the hub started is waited for, within the command's timeout (``wait_heard``): a
  board just flashed (``smartshelf flash`` read its first hello itself, then gave the port back) says its next
  hello seconds later. One still not heard (off, unplugged, out of range, on another port) is refused: its lanes
  are unknown. The line says what to do: power it and check its link, or book the assignment in the ledger only
  (``smartshelf ledger assign-lane``), which the hub sends the node after its next hello.

Each refusal is ``InvalidArgument`` (nothing sent or written: ``smartshelf hub command`` exits 2).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path

from hub.ledger.models import InvalidArgument
from hub.link.session import NodeSession
from hub.transport.ble.beacons import NodeBeacon


def lane_count(session: NodeSession | None, beacon: NodeBeacon | None) -> int | None:
    """The lanes the node said it has since the hub started: its hello's count, else its last beacon's."""
    if session is not None and session.hello is not None:
        return session.hello.lane_count
    if beacon is not None and beacon.accepted and beacon.lane_count:
        return beacon.lane_count
    return None


def heard(session: NodeSession | None, beacon: NodeBeacon | None) -> bool:
    """Has the hub heard the node since it started: an authenticated frame, or an authentic beacon?"""
    return (session is not None and session.stats.frames > 0) or (beacon is not None and beacon.accepted > 0)


Lookup = Callable[[], tuple["NodeSession | None", "NodeBeacon | None"]]

_POLL_S = 0.05


async def wait_heard(lookup: Lookup, timeout_s: float) -> None:
    """Return once the node has been heard (or said its lane count), or after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not heard(*lookup()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(_POLL_S)


def check_lane(
    node_id: int, lane: int, sku: str, session: NodeSession | None, beacon: NodeBeacon | None, config: Path
) -> None:
    """Refuse (``InvalidArgument``) a set-lane of a lane beyond the node's, or of a node not heard since the hub
    started; ``config`` names the hub.toml in the advice."""
    count = lane_count(session, beacon)
    if count is not None:
        if not 0 <= lane < count:
            raise InvalidArgument(f"node {node_id} has {count} lanes (0..{count - 1}): there is no lane {lane}")
        return
    if not heard(session, beacon):
        cfg, q_sku = shlex.quote(str(config)), shlex.quote(sku)
        raise InvalidArgument(
            f"node {node_id} has not been heard since the hub started (nor while set-lane waited for it), so its"
            " lanes are not known: nothing sent."
            f" Power it and check its link (smartshelf hub status --config {cfg}), then set-lane again; or book"
            f" the assignment in the ledger only (smartshelf ledger assign-lane --config {cfg} --node {node_id}"
            f" --lane {lane} --sku {q_sku}): the hub sends it to the node after its next hello"
        )
