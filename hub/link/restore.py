"""A restarted hub picks up each node's protocol state where the ledger left it.

From the ``nodes`` table: the last accepted uplink seq (replay protection), the downlink session and its committed
reservation, the contiguous event mark; from the movements: the events stored above the mark and each lane's tally;
from the ledger's last restore from a backup (``LedgerReader.restore_point``), each node's mark in that backup, so
that events the node delivered before the restore are not taken for an outbox overflow (``gaps.skip_cause``, with
the node's own ``outbox_dropped``: the mark may also sit there because the node was away since the backup).
"""

from __future__ import annotations

from collections.abc import Iterable

from hub.config import NodeConfig
from hub.ledger.reader import LedgerReader
from hub.ledger.service import LedgerService
from hub.link.gaps import RestoreMark
from hub.link.marks import LaneTally
from hub.link.session import NodeSession, StoredState


def lane_tallies(raw: dict[tuple[int, int], tuple[int, int]]) -> dict[int, dict[int, LaneTally]]:
    """Per node, per lane index: what the ledger holds for the lane (``LedgerReader.sensor_tallies``' figures)."""
    tallies: dict[int, dict[int, LaneTally]] = {}
    for (node_id, lane), (total, max_event) in raw.items():
        tallies.setdefault(node_id, {})[lane] = LaneTally(total, max_event)
    return tallies


async def restore_sessions(
    ledger: LedgerService, reader: LedgerReader, nodes: Iterable[NodeConfig]
) -> tuple[list[NodeSession], dict[int, int]]:
    """One session per configured node, and the last accepted uplink seq of each node the ledger knows."""
    tallies = lane_tallies(await reader.sensor_tallies())
    point = await reader.restore_point()
    sessions: list[NodeSession] = []
    uplink_seqs: dict[int, int] = {}
    for n in nodes:
        state = await reader.node(n.node_id)
        lanes = tallies.get(n.node_id, {})
        if state is None:
            sessions.append(NodeSession(n.node_id, n.key, n.port, ledger, StoredState(tallies=lanes)))
            continue
        c = state.highest_contiguous_event_seq
        mark = point.marks.get(n.node_id) if point is not None else None
        stored = StoredState(
            contiguous=c,
            above=frozenset(await reader.events_above(n.node_id, c)),
            downlink_session=state.downlink_session,
            downlink_seq=state.downlink_seq,
            tallies=lanes,
            restored=RestoreMark(mark, point.describe()) if point is not None and mark is not None else None,
        )
        sessions.append(NodeSession(n.node_id, n.key, n.port, ledger, stored))
        uplink_seqs[n.node_id] = state.last_uplink_seq
    return sessions, uplink_seqs
