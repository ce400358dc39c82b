"""Alert cause keys: what an alert is about, as one typed value built and parsed here and nowhere else.

An alert's ``cause_key`` (``alerts.cause_key``, free text in the schema) names what it is about; at most one
unresolved alert exists per ``(kind, cause_key)``, so evidence found later goes to the alert in flight. The keys
the hub writes, and that existing databases hold (the strings never change):

* ``lane:<lane_id>`` (``Cause.lane``): an event for a lane the ledger did not know (``unassigned_lane``);
* ``lane:<lane_id>/<sku>`` (``Cause.lane_sku``): shrinkage, damage, misplaced item (reconciliation);
* ``lane:<lane_id>/stuck``, ``lane:<lane_id>/drift`` (``Cause.lane_problem``): a stuck or drifting load cell
  (reconciliation, kind ``sensor``);
* ``sku:<sku>`` (``Cause.of_sku``): a reorder suggestion (reconciliation);
* ``node:<node_id>`` (``Cause.node``): about every lane of the node;
* ``node:<node_id>/silent`` (``Cause.node_problem``): a node not heard from (reconciliation, kind ``sensor``).

Lane ids never hold a ``/`` (``LANE_ID_RE``), so the lane is everything up to the first one; a SKU may (``SKU_RE``),
so the rest is the SKU unless it is one of ``LANE_PROBLEMS``. The one ambiguity: a SKU literally named like a problem
(``stuck``, ``drift``, ...) on a lane parses as the lane's problem; both name the same lane, which is all a reader of
the key uses.

``str(cause)`` is the stored key; ``Cause.parse(key)`` the value (``InvalidCause`` for anything else, e.g. a key
opened by other code); ``str(Cause.parse(key)) == key`` for every key it accepts. A query that matches a lane's or
a node's causes in SQL takes ``str(cause)`` (the cause itself) and ``cause.prefix`` (``lane:<id>/``: every more
specific cause of it) as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hub.ledger.models import LANE_ID_RE, SKU_RE

LANE = "lane:"
SKU = "sku:"
NODE = "node:"
STUCK = "stuck"
DRIFT = "drift"
UNCALIBRATED = "uncalibrated"  # the lane's readings flag it (hub.reconcile.lane_flags), as the next two
SENSOR_FAULT = "sensor_fault"
OVERLOAD = "overload"
SILENT = "silent"
LANE_PROBLEMS = frozenset({STUCK, DRIFT, UNCALIBRATED, SENSOR_FAULT, OVERLOAD})
NODE_PROBLEMS = frozenset({SILENT})


class InvalidCause(ValueError):
    """Not a cause key of the hub's (malformed, or of a kind this module does not know)."""


class CauseKind(StrEnum):
    LANE = "lane"
    LANE_SKU = "lane_sku"
    LANE_PROBLEM = "lane_problem"
    SKU = "sku"
    NODE = "node"
    NODE_PROBLEM = "node_problem"


_LANE_KINDS = frozenset({CauseKind.LANE, CauseKind.LANE_SKU, CauseKind.LANE_PROBLEM})
_NODE_KINDS = frozenset({CauseKind.NODE, CauseKind.NODE_PROBLEM})


@dataclass(frozen=True, slots=True)
class Cause:
    """What an alert is about. Build one with the constructors (``Cause.lane_sku("A1", "COLA")``), never by hand."""

    kind: CauseKind
    lane_id: str | None = None  # lane kinds
    sku: str | None = None  # lane_sku, sku
    node_id: int | None = None  # node kinds
    problem: str | None = None  # lane_problem, node_problem

    # ------------------------------------------------------------------------------------------ constructors

    @classmethod
    def lane(cls, lane_id: str) -> Cause:
        return cls(CauseKind.LANE, lane_id=_lane_id(lane_id))

    @classmethod
    def lane_sku(cls, lane_id: str, sku: str) -> Cause:
        return cls(CauseKind.LANE_SKU, lane_id=_lane_id(lane_id), sku=_sku(sku))

    @classmethod
    def lane_problem(cls, lane_id: str, problem: str) -> Cause:
        if problem not in LANE_PROBLEMS:
            raise InvalidCause(f"a lane's problem is one of {', '.join(sorted(LANE_PROBLEMS))}, not {problem!r}")
        return cls(CauseKind.LANE_PROBLEM, lane_id=_lane_id(lane_id), problem=problem)

    @classmethod
    def of_sku(cls, sku: str) -> Cause:
        """``sku:<sku>`` (``of_sku``: ``sku`` is the field)."""
        return cls(CauseKind.SKU, sku=_sku(sku))

    @classmethod
    def node(cls, node_id: int) -> Cause:
        return cls(CauseKind.NODE, node_id=_node_id(node_id))

    @classmethod
    def node_problem(cls, node_id: int, problem: str) -> Cause:
        if problem not in NODE_PROBLEMS:
            raise InvalidCause(f"a node's problem is one of {', '.join(sorted(NODE_PROBLEMS))}, not {problem!r}")
        return cls(CauseKind.NODE_PROBLEM, node_id=_node_id(node_id), problem=problem)

    # ------------------------------------------------------------------------------------------- the key

    def __str__(self) -> str:
        if self.kind is CauseKind.LANE:
            return f"{LANE}{self.lane_id}"
        if self.kind is CauseKind.LANE_SKU:
            return f"{LANE}{self.lane_id}/{self.sku}"
        if self.kind is CauseKind.LANE_PROBLEM:
            return f"{LANE}{self.lane_id}/{self.problem}"
        if self.kind is CauseKind.SKU:
            return f"{SKU}{self.sku}"
        if self.kind is CauseKind.NODE:
            return f"{NODE}{self.node_id}"
        return f"{NODE}{self.node_id}/{self.problem}"

    @classmethod
    def parse(cls, key: str) -> Cause:
        """The cause a stored key names; ``InvalidCause`` for any other text."""
        if not isinstance(key, str):
            raise InvalidCause(f"a cause key is text, not {type(key).__name__}")
        if key.startswith(LANE):
            lane_id, slash, rest = key[len(LANE) :].partition("/")
            if not slash:
                return cls.lane(lane_id)
            if rest in LANE_PROBLEMS:
                return cls.lane_problem(lane_id, rest)
            return cls.lane_sku(lane_id, rest)
        if key.startswith(SKU):
            return cls.of_sku(key[len(SKU) :])
        if key.startswith(NODE):
            head, slash, rest = key[len(NODE) :].partition("/")
            if not head.isascii() or not head.isdigit() or (len(head) > 1 and head[0] == "0"):
                raise InvalidCause(f"{key[:80]!r}: a node id is a whole number without leading zeros")
            return cls.node_problem(int(head), rest) if slash else cls.node(int(head))
        raise InvalidCause(f"{key[:80]!r} is not a cause key (lane:..., sku:... or node:...)")

    @classmethod
    def parse_or_none(cls, key: str) -> Cause | None:
        """``parse``, or None for a key this module does not know (an alert opened by other code)."""
        try:
            return cls.parse(key)
        except InvalidCause:
            return None

    # ------------------------------------------------------------------------------------- what it is about

    @property
    def about_lane(self) -> bool:
        return self.kind in _LANE_KINDS

    @property
    def about_node(self) -> bool:
        return self.kind in _NODE_KINDS

    @property
    def subject(self) -> Cause:
        """The lane, SKU or node without the detail: ``lane:A1`` for ``lane:A1/COLA``, ``node:3`` for
        ``node:3/silent``."""
        if self.lane_id is not None:
            return Cause.lane(self.lane_id)
        if self.node_id is not None:
            return Cause.node(self.node_id)
        return self

    @property
    def prefix(self) -> str:
        """What every more specific cause of this lane or node starts with (``lane:A1/``), for SQL (``substr(key, 1,
        length(?)) = ?``); ``ValueError`` for a SKU's cause, which has none."""
        if self.kind not in (CauseKind.LANE, CauseKind.NODE):
            raise ValueError(f"only a lane's or a node's cause has more specific ones, not {self}")
        return f"{self}/"


def _lane_id(lane_id: str) -> str:
    if not isinstance(lane_id, str) or LANE_ID_RE.fullmatch(lane_id) is None:
        raise InvalidCause(f"{str(lane_id)[:80]!r} is not a lane id")
    return lane_id


def _sku(sku: str) -> str:
    if not isinstance(sku, str) or SKU_RE.fullmatch(sku) is None:
        raise InvalidCause(f"{str(sku)[:80]!r} is not a SKU")
    return sku


def _node_id(node_id: int) -> int:
    if isinstance(node_id, bool) or not isinstance(node_id, int) or node_id < 0:
        raise InvalidCause(f"{node_id!r} is not a node id")
    return node_id
