"""Read-only queries the hub service needs beyond ``LedgerReader``'s (same read-only connection rules).

Several hub tasks share one ``HubReader``: every method is a single statement, so no method relies on a
read transaction spanning calls (do not use ``snapshot()`` on the shared instance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hub.ledger.reader import LedgerReader


@dataclass(frozen=True, slots=True)
class AssignedLane:
    lane_index: int
    sku: str
    unit_weight_dg: int
    spread_permille: int


class HubReader(LedgerReader):
    @classmethod
    async def open(cls, path: Path | str, *, busy_timeout_ms: int = 5000) -> HubReader:
        reader = await super().open(path, busy_timeout_ms=busy_timeout_ms)
        assert isinstance(reader, HubReader)
        return reader

    async def events_above(self, node_id: int, event_seq: int) -> set[int]:
        """Stored event_seqs of a node above ``event_seq`` (the ledger's marks after a restart)."""
        rows = await self._all(
            "SELECT event_seq FROM movements WHERE node_id = ? AND event_seq > ?", (node_id, event_seq)
        )
        return {int(r[0]) for r in rows}

    async def assigned_lanes(self, node_id: int) -> list[AssignedLane]:
        rows = await self._all(
            "SELECT l.lane_index, s.sku, s.unit_weight_dg, s.spread_permille FROM lanes AS l"
            " JOIN skus AS s ON s.sku = l.sku WHERE l.node_id = ? ORDER BY l.lane_index",
            (node_id,),
        )
        return [AssignedLane(*r) for r in rows]

    async def sensor_tallies(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Per (node, lane index): observed units the ledger holds for the lane (events, gaps, reversals) and the
        highest event_seq among them. One pass over the movements (there is no index on location): run it at
        start, then keep the figures up to date from committed outcomes."""
        rows = await self._all(
            "SELECT l.node_id, l.lane_index, t.total, t.max_event FROM (SELECT location, coalesce(sum(qty), 0) AS"
            " total, coalesce(max(event_seq), 0) AS max_event FROM movements WHERE location GLOB 'sensor:*'"
            " GROUP BY location) AS t JOIN lanes AS l ON t.location = 'sensor:' || l.lane_id"
        )
        return {(int(r[0]), int(r[1])): (int(r[2]), int(r[3])) for r in rows}
