"""Support for the real-browser tests: Debian's Chromium driven by Playwright, and a live hub to point it at.

* ``launch_chromium(playwright)``: headless Chromium from ``/usr/bin/chromium`` (``SMARTSHELF_CHROMIUM`` overrides),
  never a browser that Playwright downloads. ``browser_unavailable()`` says why it cannot run (None when it can).
  Like the MicroPython tests (tests/conftest.py), the browser tests **fail** when the browser or the Playwright
  package is missing, so CI cannot go green without them; SMARTSHELF_ALLOW_NO_BROWSER=1 skips them instead.
* ``LiveHub``: a real ``HubService`` (ledger writer, ingest, reconciliation off, the hub's HTTP server serving the
  status page on a free port) on an asyncio loop in its own thread, with ``FakeNode`` shelves (tests/hub_support.py)
  on real ptys: the test thread stays free for Playwright's sync API, and ``pick()`` makes a node report a pick on
  demand.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hub.ledger import LedgerService, Sku
from hub.ledger.postings import Tx
from hub.schema import MIGRATIONS
from hub.service import HubService
from hub.web.accounts.users import add_user
from tests.hub_support import FakeNode, start_hub, write_config
from tools.mpy_runtime import REPO_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

T = TypeVar("T")

CHROMIUM = os.environ.get("SMARTSHELF_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium waits for the (closed) network at start.
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ALLOW_NO_BROWSER = "SMARTSHELF_ALLOW_NO_BROWSER"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PASSWORD = "browser-test-password"


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"the playwright package is not installed ({exc}); run `make bootstrap`"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing; run `make bootstrap` (apt-get install chromium) or set SMARTSHELF_CHROMIUM"
    return None


def launch_chromium(playwright: Playwright) -> Browser:
    # Playwright gives every launch a fresh, empty user-data-dir of its own.
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000)


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def fast_hash(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="pbkdf2:sha256:1000")


# ------------------------------------------------------------------------------------------------ the live hub


# username -> role, all with PASSWORD; "dora" is disabled by a test (nobody else may rely on her)
USERS = {"vera": "viewer", "carl": "clerk", "mia": "manager", "ada": "admin", "dora": "viewer"}


def _acked(node: FakeNode) -> Callable[[], list[int]]:
    return lambda: node.acks


def _user_adder(name: str, role: str) -> Callable[[Tx], Awaitable[None]]:
    return lambda tx: add_user(tx, name, fast_hash(PASSWORD), role, actor="test")


# (node_id, lane_index, lane_id, sku, initial count)
LANES: list[tuple[int, int, str, str, int]] = [
    (1, 0, "A1", "COLA", 12),
    (1, 1, "A2", "TEA", 3),
    (1, 2, "A3", "SOUP", 8),
    (1, 3, "A4", "CHIPS", 0),
    (2, 0, "B1", "WATER", 24),
    (2, 1, "B2", "JUICE", 9),
    (2, 2, "B3", "BEER", 6),
    (2, 3, "B4", "WINE", 4),
]
SKUS = [
    Sku("COLA", "Cola 330 ml", 3500, 20, reorder_point=6, reorder_qty=24, capacity=30),
    Sku("TEA", "Green tea", 1200, reorder_point=4, capacity=20),
    Sku("SOUP", "Tomato soup", 4000, reorder_point=2, capacity=10),
    Sku("CHIPS", "Salted chips 150 g", 1700, reorder_point=3, capacity=16),
    Sku("WATER", "Still water 500 ml", 5200, reorder_point=8, capacity=36),
    Sku("JUICE", "Orange juice 1 l", 10400, reorder_point=3, capacity=12),
    Sku("BEER", "Lager 330 ml", 3600, reorder_point=6, capacity=24),
    Sku("WINE", "Red wine 750 ml", 12500, reorder_point=2, capacity=8),
]


class LiveHub:
    """A HubService with the status page on an asyncio loop in a thread, and two FakeNode shelves on ptys."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sockdir = Path(tempfile.mkdtemp(prefix="ss-", dir="/tmp"))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hub-loop", daemon=True)
        self.nodes = [FakeNode(i, bytes([i]) * 16, directory / f"node-{i}") for i in (1, 2)]
        self.hub: HubService | None = None
        self.url = ""

    @property
    def db(self) -> Path:
        return self.directory / "hub.db"

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
        """Run ``fn()`` on the hub's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def ledger(self, fn: Callable[[LedgerService], Awaitable[T]]) -> T:
        async def run() -> T:
            assert self.hub is not None and self.hub.ledger is not None
            return await fn(self.hub.ledger)

        return self.call(run)

    def start(self) -> LiveHub:
        self.thread.start()
        self.call(self._start, timeout=60)
        return self

    async def _start(self) -> None:
        config = write_config(self.directory, self.sockdir, self.nodes, extra="")
        config.write_text(config.read_text() + '[web]\nhost = "127.0.0.1"\nport = 0\nthreads = 8\n')
        async with LedgerService(self.db, migrations=MIGRATIONS) as ledger:  # the store's books before the hub starts
            for sku in SKUS:
                await ledger.add_sku(sku, actor="test")
            for node_id, index, lane_id, sku_name, _ in LANES:
                await ledger.assign_lane(node_id, index, sku_name, actor="test", lane_id=lane_id)
            for name, role in USERS.items():
                await ledger.transact(_user_adder(name, role))
            await ledger.record_receipt("TEA", 20, actor="test", ref="po-tea")
            for i in range(6):
                await ledger.record_receipt("COLA", 24, actor="test", ref=f"po-{i}")
                await ledger.record_sale("COLA", 2, actor="test", ref=f"sale-cola-{i}")
                await ledger.record_sale("TEA", 1, actor="test", ref=f"sale-tea-{i}")
            await ledger.open_alert("shrinkage", "lane:A1/COLA", {"missing": 2}, actor="reconcile")
            await ledger.record_receipt("BEER", 6, actor="test", ref="po-beer", location="lane:B3")
            damage = {"sku": "BEER", "location": "lane:B3", "lane": "B3", "suggested_units": 1}
            await ledger.open_alert("damage", "lane:B3/BEER", damage, actor="reconcile")
            await ledger.open_alert("reorder", "sku:TEA", {"observed": 3}, actor="reconcile")
        # each node has counted its lanes' stock already: its first lane reports book the counts (sensor gaps)
        for node_id, index, _, _, count in LANES:
            node = self.nodes[node_id - 1]
            node.counters[index].count = node.counters[index].added = count
        for node in self.nodes:
            node.plug()
        self.hub = await start_hub(config)
        for node in self.nodes:
            node.hello()
        for node in self.nodes:
            await node.wait_for(_acked(node), timeout=10)
        assert self.hub.web is not None
        self.url = self.hub.web.url.rstrip("/")
        deadline = time.monotonic() + 15
        while self.counts() != {lane_id: count for _, _, lane_id, _, count in LANES}:
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub did not book the nodes' counts: {self.counts()}")
            await asyncio.sleep(0.05)

    def counts(self) -> dict[str, int]:
        """Every lane's observed count in the ledger (the sensor balance)."""
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT l.lane_id, coalesce(b.qty, 0) FROM lanes AS l"
                " LEFT JOIN balances AS b ON b.sku = l.sku AND b.location = 'sensor:' || l.lane_id"
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            return list(conn.execute(sql, params).fetchall())

    def pick(self, lane_id: str, units: int = 1) -> float:
        """Make the node holding ``lane_id`` report a pick of ``units``; returns time.monotonic() of the send."""
        node_id, index = next((n, i) for n, i, lane, _, _ in LANES if lane == lane_id)
        node = self.nodes[node_id - 1]

        async def send() -> float:
            sent = time.monotonic()
            node.event(index, -units)
            return sent

        return self.call(send)

    def stop(self) -> None:
        async def stop() -> None:
            if self.hub is not None:
                await self.hub.stop()
            for node in self.nodes:
                node.unplug()

        try:
            if self.thread.is_alive():
                self.call(stop, timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            shutil.rmtree(self.sockdir, ignore_errors=True)
