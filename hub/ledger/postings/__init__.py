"""Business postings inside one write transaction (used by ``LedgerService`` and the CSV imports).

``Tx`` is the one object a transaction function receives (``LedgerService.transact(fn)`` calls ``fn(tx)``): the
open transaction (``conn``, ``now_ms``, the audit trail) with every posting below as a method. Every method runs
inside a transaction the writer opened; it validates first and raises a ``LedgerError`` (nothing written) or writes
its rows and one audit entry. The postings live by area, as functions of the transaction (``TxCore``):

* ``checks``     who, how many, which client id: ``check_actor``, ``check_qty``, ``check_ref``, whose reference it is
* ``core``       ``TxCore``: the connection, the transaction's time, the audit trail
* ``legs``       the posting primitive: legs under one source reference, duplicates and conflicts, balances, locations
* ``stock``      sales, order picks, receipts, returns, restocks, transfers, write-offs, counts, reversals
* ``catalogue``  SKU master data
* ``lanes``      nodes and lanes: register, assign a SKU, hand a replaced node's lanes to its successor, absorb the
                 staff corrections of a lane's sensor movements when staff count it through its node (``rebase_lane``)
* ``settle``     a lane's sensor units are its SKU's: on a change of SKU (and a reversal, a count) the units booked
                 under another SKU or none are moved to it (``settle_lane``, reason ``lane_assigned``)
* ``alerts``     open, acknowledge, later evidence, resolve (with the entry the resolution implies)

and, for reconciliation's runs, ``expire_unconfirmed_tags`` (``hub.ledger.tag_booking``): tags not read again
after their node restarted are recorded gone.

Rules a store manager relies on, besides those of each area's module:

* **Source references.** Each posting has a unique source reference ``<kind>:<client id>``; posting the same
  reference again with the same content **by the same actor** is a no-op reported as ``Duplicate``; with different
  content it is refused (``RefConflict``): a mistake is corrected with a reversal and a new posting, never by
  re-sending. Each API client has its own ids: a reference used by an API client is refused to every other actor,
  and one used by anyone else is refused to an API client (``RefConflict`` naming that actor, never the other
  posting's content), so two tills each sending their own line ``1`` cannot silently lose a sale. Staff, the CLI
  and the hub share the store's references (a file re-imported by another person is still a duplicate).
  Alert resolutions post under references no client can produce: ``writeoff:alert<id>`` (clients cannot post
  write-offs) and ``resolution:alert<id>`` for a count.
  A posting with two sides (restock, transfer, non-restockable return) is one source reference with two legs.
* **Business time.** ``ts`` is an aware datetime or ms since the epoch; None: the time the posting is recorded
  (and a re-sent reference is then not compared on time).
"""

from __future__ import annotations

from hub.ledger import tag_booking
from hub.ledger.postings import alerts, catalogue, lanes, legs, stock
from hub.ledger.postings.alerts import AlertOpened, WriteOff
from hub.ledger.postings.checks import REF_MAX, RESOLUTION_KIND, check_actor, check_qty, check_ref
from hub.ledger.postings.core import TxCore
from hub.ledger.postings.lanes import AUTO_LANE_ID_RE
from hub.ledger.postings.legs import Leg


class Tx(TxCore):
    """One open write transaction on the writer's connection, with every posting as a method."""

    # the posting primitive and what postings are checked against (legs.py)
    post = legs.post
    legs_of = legs.legs_of
    balance = legs.balance
    book_location = legs.book_location
    shelf_location = legs.shelf_location

    # stock (stock.py)
    sale = stock.sale
    order_pick = stock.order_pick
    receipt = stock.receipt
    return_ = stock.return_
    restock = stock.restock
    transfer = stock.transfer
    write_off = stock.write_off
    count = stock.count
    reverse = stock.reverse

    # catalogue (catalogue.py)
    add_sku = catalogue.add_sku
    require_sku = catalogue.require_sku

    # nodes and lanes (lanes.py)
    register_node = lanes.register_node
    register_node_if_missing = lanes.register_node_if_missing
    assign_lane = lanes.assign_lane
    replace_node = lanes.replace_node
    rebase_lane = lanes.rebase_lane

    # alerts (alerts.py)
    open_alert = alerts.open_alert
    acknowledge_alert = alerts.acknowledge_alert
    update_alert_evidence = alerts.update_alert_evidence
    resolve_alert = alerts.resolve_alert

    async def expire_unconfirmed_tags(self, restarted_before_ms: int) -> int:
        """Tags not read again since their node restarted at or before ``restarted_before_ms``, on a node whose
        readers have worked since: recorded gone (``tag_booking.expire_unconfirmed``). Returns how many."""
        return await tag_booking.expire_unconfirmed(self.conn, restarted_before_ms, self.now_ms)


__all__ = [
    "AUTO_LANE_ID_RE",
    "REF_MAX",
    "RESOLUTION_KIND",
    "AlertOpened",
    "Leg",
    "Tx",
    "TxCore",
    "WriteOff",
    "check_actor",
    "check_qty",
    "check_ref",
]
