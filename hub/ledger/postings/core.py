"""``TxCore``: one open write transaction on the writer's connection, and the audit trail every write appends to
(who: the actor; when: the transaction's time; from where: the origin the work was queued with).

The postings of each area (``stock``, ``catalogue``, ``lanes``, ``alerts``) are functions of a ``TxCore``; ``Tx``
(``hub.ledger.postings``) is this class with all of them as its methods.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiosqlite

from hub.ledger.origin import AUTOMATIC
from hub.ledger.postings.checks import check_actor


class TxCore:
    """One open write transaction on the writer's connection: ``conn``, the transaction's time ``now_ms`` and where
    the work came from, ``origin`` (``hub.ledger.origin``: written with every audit entry of the transaction)."""

    def __init__(self, conn: aiosqlite.Connection, now_ms: int, origin: str = AUTOMATIC) -> None:
        self.conn = conn
        self.now_ms = now_ms
        self.origin = origin

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self.conn.execute_fetchall(sql, params))

    async def insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT; returns the new row's id."""
        cur = await self.conn.execute(sql, params)
        rowid = cur.lastrowid
        await cur.close()
        assert rowid is not None
        return rowid

    async def audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Append one entry to the audit trail (``actor`` as the posting already checked it), in this transaction:
        it is committed with the change it describes or not at all."""
        await self.conn.execute(
            "INSERT INTO audit (ts_ms, actor, action, details, origin) VALUES (?, ?, ?, ?, ?)",
            (self.now_ms, actor, action, json.dumps(details, sort_keys=True, separators=(",", ":")), self.origin),
        )

    async def record_audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Append one entry to the audit trail for an ``actor`` not checked yet (e.g. a node's answer to a command
        the hub sent)."""
        await self.audit(check_actor(actor), action, details)
