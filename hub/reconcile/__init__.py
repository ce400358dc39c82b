"""Reconciliation: sensor picks matched to sales and order picks, and the alerts the rest raises.

Modules: ``config`` (settings), ``matching`` (the allocation, pure), ``rules`` (weight fit, damage, misplaced,
reorder quantity; pure), ``plan`` (read the ledger, compute a run), ``apply`` (write it through the ledger's
writer), ``reconciler`` (the asyncio task and ``run_once``), ``resolve`` (closing alerts and the ledger entry each
outcome posts), ``cli`` (``smartshelf reconcile ...``). Rules and reasons: ``README.md``.
"""

from hub.reconcile.apply import RunReport
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.plan import ReconcileConflict
from hub.reconcile.reconciler import Reconciler
from hub.reconcile.resolve import OUTCOMES, resolve

__all__ = ["OUTCOMES", "ReconcileConfig", "ReconcileConflict", "Reconciler", "RunReport", "resolve"]
