"""Lane flags: a ``sensor`` alert per lane whose latest lane reading says the lane cannot weigh correctly.

A node reports each lane's state (``lane_state``: weight, count, flags; ``firmware/lane.py``), which the ledger keeps
as lane readings (``lane_readings``, thinned by ingest: the first, one whenever the weight, count or flags change,
and one per 5 minutes of a quiet lane). Three of the flags mean the lane's weights, and so its events, cannot be
trusted until someone acts:

| flag | problem (cause key ``lane:<lane>/<problem>``) | what to do |
| --- | --- | --- |
| ``FLAG_UNCALIBRATED`` | ``uncalibrated`` | calibrate the lane (a freshly flashed board has no calibration) |
| ``FLAG_SENSOR_FAULT`` | ``sensor_fault`` | check the load cells and their wiring (the HX711 does not answer) |
| ``FLAG_OVERLOAD`` | ``overload`` | take weight off: more than the lane's cells can weigh |

``FLAG_UNSTABLE`` is normal while a hand is on the shelf and raises nothing.

Per lane and problem: the lane's latest reading (at or before the run's ``now``) carries the flag: open (or keep) the
alert, with the latest reading's flags and since when the run of readings carrying the flag goes
(the first reading after the last one without it; pruned readings shorten the run). The latest reading does not
carry it: the alert clears itself, as the other sensor checks' do. Neither happens for a lane of a silent node (its
own alert covers it, and its last reading says nothing about now) or whose latest reading is older than
``lane_flags_max_age_s`` (3900 s: a running node's lane has a stored reading at least every 5 minutes plus its
``lane_state_s``, at most 3600 s): the alert, if any, stays as it is.

The evidence holds neither the reading's time nor its weight and count, only its flags and the run's start: a quiet
flagged lane stores a reading every 5 minutes and one in use at every change of weight, and an evidence changed by
each would be an alert update, an audit entry and a fleet message at every run (the page shows the weight live).

The cause keys are ``Cause.lane_problem(lane, problem)``: ``lane:<lane>/uncalibrated`` and so on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Set
from datetime import UTC, datetime
from typing import Any

from hub.ledger.causes import OVERLOAD, SENSOR_FAULT, UNCALIBRATED, Cause
from hub.reconcile.config import ReconcileConfig
from shared_protocol.messages import FLAG_OVERLOAD, FLAG_SENSOR_FAULT, FLAG_UNCALIBRATED, FLAG_UNSTABLE

PROBLEMS: tuple[tuple[str, int], ...] = (
    (UNCALIBRATED, FLAG_UNCALIBRATED),
    (SENSOR_FAULT, FLAG_SENSOR_FAULT),
    (OVERLOAD, FLAG_OVERLOAD),
)
FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (FLAG_SENSOR_FAULT, SENSOR_FAULT),
    (FLAG_UNSTABLE, "unstable"),
    (FLAG_UNCALIBRATED, UNCALIBRATED),
    (FLAG_OVERLOAD, OVERLOAD),
)

_LATEST_SQL = "SELECT ts_ms, flags FROM lane_readings WHERE lane_id = ? AND ts_ms <= ? ORDER BY ts_ms DESC LIMIT 1"
# The first reading of the run carrying the flag: after the latest one without it (a primary-key range, read
# backwards from the latest reading until a reading without the flag).
_SINCE_SQL = (
    "SELECT min(ts_ms) FROM lane_readings WHERE lane_id = ?1 AND ts_ms <= ?2 AND ts_ms > coalesce("
    "(SELECT ts_ms FROM lane_readings WHERE lane_id = ?1 AND ts_ms <= ?2 AND flags & ?3 = 0"
    " ORDER BY ts_ms DESC LIMIT 1), -1)"
)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def flag_cause(lane_id: str, problem: str) -> str:
    """The cause key of a lane's flag problem: ``lane:<lane>/<problem>``."""
    return str(Cause.lane_problem(lane_id, problem))


def flag_names(flags: int) -> list[str]:
    """The flags a reading carries, by name (unknown bits as ``0x...``)."""
    names = [name for bit, name in FLAG_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _ in FLAG_NAMES)
    return [*names, f"0x{rest:04x}"] if rest else names


def check_lane_flags(
    conn: sqlite3.Connection,
    now_ms: int,
    cfg: ReconcileConfig,
    lanes: Mapping[str, tuple[int, str | None]],
    silent: Set[int],
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
    """The flag alerts to open or keep (cause key, evidence fields) and those to clear (cause key -> resolution),
    for ``lanes`` (lane id -> node id, SKU) of the nodes not in ``silent``; reads inside the caller's transaction."""
    oldest = now_ms - round(cfg.lane_flags_max_age_s * 1000)
    opens: list[tuple[str, dict[str, Any]]] = []
    clears: dict[str, str] = {}
    for lane_id, (node_id, sku) in sorted(lanes.items()):
        if node_id in silent:
            continue
        latest = conn.execute(_LATEST_SQL, (lane_id, now_ms)).fetchone()
        if latest is None or latest[0] < oldest:
            continue
        ts, flags = latest
        for problem, bit in PROBLEMS:
            cause = flag_cause(lane_id, problem)
            if not flags & bit:
                clears[cause] = f"lane {lane_id}: its reading of {_iso(ts)} no longer flags it {problem}"
                continue
            since = int(conn.execute(_SINCE_SQL, (lane_id, now_ms, bit)).fetchone()[0])
            fields = {
                "problem": problem,
                "lane_id": lane_id,
                "node_id": node_id,
                "sku": sku,
                "flags": flags,
                "flag_names": flag_names(flags),
                "since_ms": since,
                "since": _iso(since),
            }
            opens.append((cause, fields))
    return opens, clears
