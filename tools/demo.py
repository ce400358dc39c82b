"""`smartshelf demo` (`make demo`): emulated shelves -> real hub -> SQLite ledger, compared with the truth.

One process runs the hub service (serial transports, ingest, the single ledger writer, reconciliation) and
a point-of-sale feed, next to `smartshelf emulate`'s nodes (each a MicroPython process on its own pty)
playing the `store` scenario: honest shoppers whose sales reach the POS late (posted in batches through the hub's
HTTP API with the POS's own bearer token, as a real till system would), one theft, one damaged item,
one misplaced item, a restock and a lane falling to its reorder point; chips and coffee carry RFID tags (their
node has a UHF reader, one antenna per lane), and a coffee is swapped for an object of the same weight, which
only its tag reveals (a tamper alert). Progress is printed live; with
``--duration`` the demo stops by itself and prints a summary that compares the ledger with the scenario's
ground truth (exit status 0 when every lane's count matches and exactly the expected alerts were raised).

``--link ble``: the same story over Bluetooth LE. The nodes go on the emulated air (a Bumble peripheral each), the
hub's ``[ble]`` adapter is Bumble on the air's HCI socket, and the hub shares 2 connection slots among the 3
nodes, so it rotates them as a Pi's adapter with more nodes than slots would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from hub.config import load_config
from hub.ledger.causes import Cause
from hub.ledger.models import Alert
from hub.ledger.reader import LedgerReader
from hub.ledger.service import LedgerService
from hub.private_files import make_private_dirs
from hub.schema import MIGRATIONS
from hub.service import HubService
from hub.web.accounts.clients import add_client, new_token, token_sha256
from hub.web.accounts.users import add_user, hash_password
from tools.emulation.host import Emulator, EmulatorError
from tools.emulation.scenarios import Scenario, build
from tools.emulation.store import STAFF, expected_outcome, lane_id, open_store

SETTLE_S = 20.0  # the last seconds of a timed demo: no new shopping, events and sales drain
MIN_DURATION_S = 75.0
LIVE_SHOPPING_S = 600.0  # without --duration: the story, then shoppers for ten minutes (then the shelves idle)
STORY_SPAN_S = 150.0 - 12.0  # the store story from its first action to the restock
RECONCILE = {"window_s": 150.0, "grace_s": 5.0, "lead_s": 10.0, "putback_s": 60.0, "interval_s": 2.0}
WEB_PORT = 8443  # the status page (HTTPS); any free port when 8443 is taken
DEMO_LOGIN = ("demo", "demo-password")  # a manager account on the demo's throw-away ledger
BLE_SLOTS = 2  # --link ble: fewer slots than nodes, so the hub rotates its connections
POS = "demo-pos"  # the point of sale's API client (its writes are recorded as actor api:demo-pos)


def _subject(cause_key: str) -> str:
    """What an alert is about, without the detail (``lane:A1`` for ``lane:A1/COLA``); an unknown key as it is."""
    cause = Cause.parse_or_none(cause_key)
    return cause_key if cause is None else str(cause.subject)


def story_scale(duration_s: float | None) -> float:
    if duration_s is None:
        return 1.0
    return max(0.3, min(1.0, (duration_s - SETTLE_S - 12.0 - 8.0) / STORY_SPAN_S))


class Demo:
    def __init__(self, directory: Path, nodes: int, duration_s: float | None, seed: int, link: str = "serial") -> None:
        if duration_s is not None and duration_s < MIN_DURATION_S:
            raise ValueError(f"--duration must be at least {MIN_DURATION_S:.0f} s (the story needs it)")
        self.dir = directory.resolve()
        self.nodes = nodes
        self.link = link
        self.duration_s = duration_s
        shopping = (duration_s - SETTLE_S) if duration_s is not None else LIVE_SHOPPING_S
        self.scenario: Scenario = build("store", list(range(1, nodes + 1)), seed, shopping, story_scale(duration_s))
        self.epoch = 0.0
        self.paid: set[int] = set()
        self.booked: set[int] = set()
        self.pos_token = new_token()
        self.api_url = ""  # the hub's /api/v1/sales once its web server runs
        self.api_tls: ssl.SSLContext | None = None  # trusts the hub's own certificate (generated on first start)

    # -- setup ------------------------------------------------------------------------------------
    async def seed_ledger(self, db: Path) -> None:
        """The store's books (``open_store``) and a manager login for the status page."""
        ledger = LedgerService(db, migrations=MIGRATIONS)
        await ledger.start()
        try:
            await open_store(ledger, self.scenario)
            pw_hash = hash_password(DEMO_LOGIN[1])
            await ledger.transact(lambda tx: add_user(tx, DEMO_LOGIN[0], pw_hash, "manager", actor=STAFF))
            pos_hash = token_sha256(self.pos_token)
            await ledger.transact(lambda tx: add_client(tx, POS, pos_hash, ("sales",), actor=STAFF))
        finally:
            await ledger.close()

    def write_config(self, db: Path, adapter: str = "") -> Path:
        cfg = self.dir / "hub.toml"
        lines = [
            "# Written by smartshelf demo",
            "[hub]",
            f'database = "{db}"',
            'synchronous = "FULL"',
            f'control_socket = "{self.dir / "hub.sock"}"',
            'nodes_files = ["emu/nodes.toml"]',
            "",
            "[reconcile]",
            *(f"{k} = {v}" for k, v in RECONCILE.items()),
            "",
            "[web]",
            'host = "127.0.0.1"',
            f"port = {WEB_PORT if _port_free(WEB_PORT) else 0}",
        ]
        if adapter:
            lines += ["", "[ble]", f'adapter = "{adapter}"', f"slots = {BLE_SLOTS}"]
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    # -- the shop floor's paperwork ---------------------------------------------------------------
    async def paperwork(self, ledger: LedgerService, now_s: float, flush: bool = False) -> None:
        """POS sales for honest picks when they are paid (late), one batch per call through the HTTP API, and
        staff booking each delivery they shelve (received into the backroom, then restocked onto the lane)."""
        sales: list[dict[str, object]] = []
        paying: list[int] = []
        for i, row in enumerate(self.scenario.truth):
            if row.action == "restock" and i not in self.booked and row.t_end <= now_s:
                self.booked.add(i)
                await ledger.record_receipt(row.sku, row.units, actor=STAFF, ref=f"delivery:{i}")
                await ledger.restock(row.sku, lane_id(row.node, row.lane), row.units, actor=STAFF, ref=f"restock:{i}")
            due = row.pay_t is not None and (row.pay_t <= now_s or flush)
            if row.paid_units and i not in self.paid and row.t <= now_s and due:
                assert row.pay_t is not None
                ts_ms = int((self.epoch + min(row.pay_t, now_s)) * 1000)
                sales.append({"id": f"pos:{i}", "sku": row.sku, "quantity": row.paid_units, "timestamp": ts_ms})
                paying.append(i)
        if sales:
            await asyncio.to_thread(self.post_sales, sales)  # the hub's loop keeps serving the API's writes
            self.paid.update(paying)

    def post_sales(self, items: list[dict[str, object]]) -> None:
        """One POS batch. Idempotent by the ids: a batch retried after a lost answer books nothing twice."""
        body = json.dumps({"items": items}).encode()
        headers = {"Authorization": f"Bearer {self.pos_token}", "Content-Type": "application/json"}
        for attempt in range(3):
            request = urllib.request.Request(self.api_url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30, context=self.api_tls) as resp:
                    resp.read()
                return
            except urllib.error.HTTPError as err:
                raise RuntimeError(f"POS batch refused: {err.code} {err.read().decode(errors='replace')}") from err
            except OSError:
                if attempt == 2:
                    raise
                time.sleep(0.5)

    # -- reporting --------------------------------------------------------------------------------
    async def observed(self, reader: LedgerReader) -> dict[str, int]:
        return {b.lane_id: b.qty for b in await reader.observed_stock()}

    def progress(self, now_s: float, observed: dict[str, int], hub: HubService, alerts: list[Alert]) -> str:
        exp = expected_outcome(self.scenario.truth, now_s - 3.0)
        cells = []
        for lid, (sku, units) in sorted(exp.counts.items()):
            got = observed.get(lid)
            mark = "" if got == units else "*"
            cells.append(f"{sku}:{got if got is not None else '-'}/{units}{mark}")
        status = hub.status()
        frames = sum(int(n.get("frames", 0)) for n in status.get("nodes", []))
        open_alerts = ", ".join(
            sorted(f"{a.kind}@{_subject(a.cause_key)}" for a in alerts if str(a.status) != "resolved")
        )
        return (
            f"[{now_s:5.0f} s] frames {frames:5d}  ledger/truth  " + "  ".join(cells)
            + (f"\n         open alerts: {open_alerts}" if open_alerts else "")
        )  # fmt: skip

    def summary(self, observed: dict[str, int], alerts: list[Alert], until_s: float) -> bool:
        exp = expected_outcome(self.scenario.truth, until_s)
        ok = True
        print("\n=== summary: ledger vs ground truth ===")
        print(f"{'lane':<14}{'sku':<12}{'truth':>6}{'ledger':>8}")
        for lid, (sku, units) in sorted(exp.counts.items()):
            got = observed.get(lid)
            good = got == units
            ok &= good
            print(f"{lid:<14}{sku:<12}{units:>6}{got if got is not None else '-':>8}  {'ok' if good else 'MISMATCH'}")
        raised = {(a.kind, a.cause_key) for a in alerts}
        missing = exp.alerts - raised
        unexpected = raised - exp.alerts
        print("\nexpected alerts:")
        for kind, cause in sorted(exp.alerts):
            print(f"  {kind:<10} {cause:<32} {'raised' if (kind, cause) in raised else 'MISSING'}")
        if unexpected:
            print("unexpected alerts:")
            for kind, cause in sorted(unexpected):
                print(f"  {kind:<10} {cause}")
        ok &= not missing and not unexpected
        print(f"\nresult: {'ledger matches the ground truth' if ok else 'MISMATCH'}")
        return ok

    # -- run --------------------------------------------------------------------------------------
    async def run(self) -> int:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        make_private_dirs(self.dir / "emu")  # 0700: the ledger (password and token hashes), node keys
        db = self.dir / "ledger.db"
        await self.seed_ledger(db)
        adapter: list[str] = []

        def said(line: str) -> None:
            print(f"emulate: {line}", flush=True)
            if line.startswith("hub BLE adapter: "):
                adapter.append(line.split(": ", 1)[1])

        emu = Emulator(list(range(1, self.nodes + 1)), self.scenario, self.dir / "emu", fresh=True, out=said,
                       link=self.link)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            emu.start()
        except EmulatorError as err:
            print(f"smartshelf demo: {err}", file=sys.stderr)
            return 2
        self.epoch = emu.epoch
        ok = False
        hub: HubService | None = None
        try:
            hub = HubService(load_config(self.write_config(db, adapter[0] if adapter else "")), control=False)
            await hub.start()
            assert hub.ledger is not None and hub.reconciler is not None
            reader = await hub.ledger.reader()
            until = f"stops after {self.duration_s:.0f} s" if self.duration_s else "Ctrl-C stops"
            print(f"demo: hub on {db}; {self.nodes} emulated node(s); {until}", flush=True)
            if hub.web is None:
                raise RuntimeError("the demo's hub.toml has no [web]: the POS posts through the HTTP API")
            self.api_url = hub.web.url + "api/v1/sales"
            if hub.web.certificate is not None:
                self.api_tls = ssl.create_default_context(cafile=str(hub.web.certificate))
            print(f"demo: status page {hub.web.url} (login {DEMO_LOGIN[0]} / {DEMO_LOGIN[1]})", flush=True)
            if hub.web.fingerprint is not None:
                print(f"demo: its self-signed certificate's SHA-256 is {hub.web.fingerprint} (the browser asks once)",
                      flush=True)  # fmt: skip
            api = f"{self.api_url} (API client {POS}; OpenAPI at {hub.web.url}api/openapi.json)"
            print(f"demo: the POS posts sales to {api}", flush=True)
            last_print = 0.0
            while not stop.is_set():
                now_s = time.time() - self.epoch
                if self.duration_s is not None and now_s >= self.duration_s:
                    break
                emu.poll()
                await self.paperwork(hub.ledger, now_s)
                if now_s - last_print >= 5.0:
                    last_print = now_s
                    print(self.progress(now_s, await self.observed(reader), hub, await reader.alerts(limit=1000)),
                          flush=True)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
            end_s = time.time() - self.epoch
            # Late POS batches arrive; then the reconciliation window closes on everything that happened.
            await self.paperwork(hub.ledger, end_s, flush=True)
            await asyncio.sleep(1.0)
            settle_ms = int((self.epoch + end_s + RECONCILE["window_s"] + RECONCILE["grace_s"] + 1) * 1000)
            await hub.reconciler.run_once(settle_ms)
            ok = self.summary(await self.observed(reader), await reader.alerts(limit=1000), end_s - 3.0)
            await reader.close()
        finally:
            if hub is not None:
                await hub.stop()
            emu.stop(quiet=True)
        print(f"ledger kept in {db} (inspect with: smartshelf ledger stock --db {db})")
        return 0 if ok else 1


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(directory: Path, nodes: int, duration_s: float | None, seed: int, link: str = "serial") -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        demo = Demo(directory, nodes, duration_s, seed, link)
    except ValueError as err:
        print(f"smartshelf demo: {err}", file=sys.stderr)
        return 2
    return asyncio.run(demo.run())
