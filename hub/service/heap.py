"""The hub process's garbage collector, set once the service has started.

CPython's cyclic collector runs a young collection every 700 net container allocations and walks every live tracked
object at each full one. The hub allocates several short-lived objects per frame (the decoded message, its work
item, a future, a completion), so at a few thousand frames/s the default thresholds collect hundreds of times a
second, and each full collection walks the ~85,000 objects that importing Flask, the ledger and the web layer left
behind, all of them alive for the life of the process. Collections hold the GIL: while one runs, neither the event
loop nor the ledger's SQLite thread makes progress.

``settle()`` is called by ``smartshelf hub run`` once everything the process keeps is built: a full collection,
``gc.freeze()`` (those objects leave the generations the collector walks; reference counting still frees them), and
a young threshold of ``YOUNG`` allocations. Measured with ``smartshelf bench hub`` side by side on one machine: the
collector's time during a run fell from ~28 s (5,356 young, 487 middle, 44 full collections) to under 1 s, and the
event loop's CPU per frame by a quarter. Cyclic garbage still goes, only in larger batches; no object the hub holds
is leaked by it, and the memory held meanwhile is bounded by ``YOUNG`` allocations.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG = 20_000  # allocations between young collections (CPython's default: 700)
OLDER = 20  # young collections per middle one, and middle ones per full one (defaults 10, 10)


def settle() -> None:
    """Freeze what the process has built so far and collect young objects in larger batches (call once, after
    start-up)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, OLDER, OLDER)


@contextlib.contextmanager
def settled() -> Iterator[None]:
    """``settle()`` for a while (a benchmark measuring the hub as ``hub run`` sets it up, in a process that goes on
    afterwards): the frozen objects and the thresholds as they were at the end."""
    threshold = gc.get_threshold()
    settle()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
