"""LedgerService: the business writes keep their names and signatures, each runs its Tx method as one transaction."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import pytest

from hub.ledger import LedgerService, Sku
from hub.ledger.models import UnknownSku
from hub.ledger.operations import Operation
from hub.ledger.postings import Tx
from hub.schema import MIGRATIONS

T = TypeVar("T")

# As they were written out by hand before issue 9 (a7518b4); since then generated from the Tx methods.
SIGNATURES = {
    "add_sku": "(sku: 'Sku', *, actor: 'str') -> 'bool'",
    "register_node": "(node_id: 'int', *, actor: 'str', label: 'str' = '', key_id: 'str | None' = None) -> 'None'",
    "assign_lane": (
        "(node_id: 'int', lane_index: 'int', sku: 'str | None', *, actor: 'str', lane_id: 'str | None' = None)"
        " -> 'LaneAssigned'"
    ),
    "record_sale": (
        "(sku: 'str', qty: 'int', *, actor: 'str', ref: 'str | None' = None, ts: 'Timestamp' = None, "
        "location: 'str | None' = None) -> 'ApplyResult'"
    ),
    "record_order_pick": (
        "(sku: 'str', qty: 'int', order: 'str', *, actor: 'str', ref: 'str | None' = None, "
        "ts: 'Timestamp' = None, location: 'str | None' = None) -> 'ApplyResult'"
    ),
    "record_receipt": (
        "(sku: 'str', qty: 'int', *, actor: 'str', ref: 'str | None' = None, ts: 'Timestamp' = None, "
        "location: 'str' = 'backroom') -> 'ApplyResult'"
    ),
    "record_return": (
        "(sku: 'str', qty: 'int', *, actor: 'str', ref: 'str | None' = None, ts: 'Timestamp' = None, "
        "restockable: 'bool' = True, location: 'str' = 'backroom') -> 'ApplyResult'"
    ),
    "record_count": (
        "(sku: 'str', counted: 'int', *, actor: 'str', ref: 'str | None' = None, "
        "ts: 'Timestamp' = None, location: 'str' = 'backroom') -> 'CountResult'"
    ),
    "restock": (
        "(sku: 'str', lane_id: 'str', qty: 'int', *, actor: 'str', ref: 'str | None' = None, "
        "ts: 'Timestamp' = None, from_location: 'str' = 'backroom') -> 'ApplyResult'"
    ),
    "transfer": (
        "(sku: 'str', qty: 'int', from_location: 'str', to_location: 'str', *, actor: 'str', "
        "ref: 'str | None' = None, ts: 'Timestamp' = None) -> 'ApplyResult'"
    ),
    "write_off": (
        "(sku: 'str', qty: 'int', reason: 'Reason', *, actor: 'str', ref: 'str | None' = None, "
        "ts: 'Timestamp' = None, location: 'str' = 'backroom', "
        "note: 'str | None' = None) -> 'ApplyResult'"
    ),
    "reverse": "(movement_id: 'int', *, actor: 'str', why: 'str') -> 'Applied'",
    "open_alert": (
        "(kind: 'str', cause_key: 'str', evidence: 'dict[str, Any]', *, actor: 'str', "
        "ts: 'Timestamp' = None) -> 'AlertOpened'"
    ),
    "acknowledge_alert": "(alert_id: 'int', *, actor: 'str') -> 'Alert'",
    "resolve_alert": (
        "(alert_id: 'int', *, actor: 'str', resolution: 'str', write_off: 'WriteOff | None' = None) -> 'Alert'"
    ),
    "record_audit": "(actor: 'str', action: 'str', details: 'dict[str, Any]') -> 'None'",
}


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService(tmp_path / "l.db", migrations=MIGRATIONS, synchronous="NORMAL") as svc:
        yield svc


def test_the_business_writes_keep_their_names_and_signatures(tmp_path: Path) -> None:
    service = LedgerService(tmp_path / "never-opened.db", migrations=MIGRATIONS)
    assert {name: str(inspect.signature(getattr(service, name))) for name in SIGNATURES} == SIGNATURES
    assert not (tmp_path / "never-opened.db").exists()


def test_a_generated_write_is_the_tx_method_without_tx(tmp_path: Path) -> None:
    service = LedgerService(tmp_path / "l.db", migrations=MIGRATIONS)
    sale = service.record_sale
    assert sale is service.record_sale  # built once per service
    assert sale.__name__ == "record_sale" and sale.__qualname__ == "LedgerService.record_sale"
    tx_params = list(inspect.signature(Tx.sale).parameters)
    assert list(inspect.signature(sale).parameters) == tx_params[1:] and tx_params[0] == "tx"
    assert service.write_off.__doc__ == LedgerService.write_off.__doc__ == Tx.write_off.__doc__
    assert "write-off" in (Tx.write_off.__doc__ or "")


async def test_each_generated_write_is_its_own_transaction_in_queue_order(ledger: LedgerService) -> None:
    before = ledger.stats.transactions
    await ledger.add_sku(Sku("TEA", "Tea", 1000), actor="t")
    receipt = await ledger.record_receipt("TEA", 5, actor="t", ref="R1", ts=1_700_000_000_000)
    with pytest.raises(UnknownSku):
        await ledger.record_sale("COFFEE", 1, actor="t", ref="S1")
    assert ledger.stats.transactions == before + 2  # the refused sale committed nothing
    queued = [ledger.record_sale("TEA", 1, actor="t", ref=f"S{i}") for i in range(3)]
    sales = [await q for q in queued]
    assert [s.movement_ids[0] for s in sales] == sorted(s.movement_ids[0] for s in sales)
    async with await ledger.reader() as reader:
        assert await reader.book_total("TEA") == 2
        moved = (await reader.movements(sku="TEA", limit=10)).items
        assert {m.id: m.ts_ms for m in moved}[receipt.movement_ids[0]] == 1_700_000_000_000


async def test_an_operation_runs_its_method_through_the_writers_transact() -> None:
    async def sale(tx: Tx, sku: str, qty: int, *, actor: str) -> tuple[object, str, int, str]:
        """Sell."""
        return (tx, sku, qty, actor)

    class Writer:
        sell = Operation(sale)

        def __init__(self) -> None:
            self.runs = 0

        async def transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
            self.runs += 1
            return await fn(cast(Tx, "the open transaction"))

    writer = Writer()
    assert await writer.sell("TEA", 2, actor="pos") == ("the open transaction", "TEA", 2, "pos")
    assert (
        writer.runs == 1
        and writer.sell.__doc__ == "Sell."
        and str(inspect.signature(writer.sell))
        == ("(sku: 'str', qty: 'int', *, actor: 'str') -> 'tuple[object, str, int, str]'")
    )
