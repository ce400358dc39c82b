"""Pieces of the fault-injection HIL test: the hub as a subprocess that can be SIGKILLed, ledger seeding,
read-only ledger queries, forged frames and the node's own record of the events it produced."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from firmware.counters import CountersStore
from firmware.outbox import DEFAULT_CAPACITY, Outbox
from hub.ledger.service import LedgerService
from hub.schema import MIGRATIONS
from shared_protocol.auth import Key
from shared_protocol.frame import encode_frame
from shared_protocol.messages import KIND_PICK, Event
from shared_protocol.serial_framing import encode_serial
from tools.emulation.host import Emulator
from tools.emulation.scenarios import Scenario
from tools.emulation.store import open_store
from tools.mpy_runtime import REPO_ROOT

FORGED_WEIGHT_DG = -12345  # a weight no real event of these scenarios has: a forged event would stand out
FORGED_EVENT_SEQ = 900_000


async def seed_ledger(db: Path, scenario: Scenario) -> None:
    """Catalogue, lane assignments and opening stock, exactly as ``smartshelf demo`` books them."""
    ledger = LedgerService(db, migrations=MIGRATIONS)
    await ledger.start()
    try:
        await open_store(ledger, scenario)
    finally:
        await ledger.close()


def seed(db: Path, scenario: Scenario) -> None:
    asyncio.run(seed_ledger(db, scenario))


def write_hub_config(directory: Path, db: Path, nodes: list[tuple[int, bytes, Path]]) -> Path:
    """hub.toml (absolute paths) plus a nodes file pointing every node at its relay's port."""
    nodes_file = directory / "relay-nodes.toml"
    out = ["# nodes behind the fault relays"]
    for nid, key, port in nodes:
        out += ["", "[[node]]", f"id = {nid}", f'key = "{key.hex()}"', f"port = {json.dumps(str(port))}"]
    nodes_file.write_text("\n".join(out) + "\n")
    nodes_file.chmod(0o600)  # node keys: the hub refuses to start on keys other users can read
    cfg = directory / "hub.toml"
    cfg.write_text(
        "\n".join(
            [
                "[hub]",
                f"database = {json.dumps(str(db))}",
                'synchronous = "FULL"',
                f"control_socket = {json.dumps(str(directory / 'hub.sock'))}",
                f"nodes_files = [{json.dumps(str(nodes_file))}]",
                "",
            ]
        )
    )
    return cfg


def write_ble_hub_config(
    directory: Path, db: Path, nodes_file: Path, adapter: str, *, slots: int, idle_s: float, hold_s: float
) -> Path:
    """hub.toml (absolute paths) for BLE nodes: the emulator's nodes file and its air's adapter."""
    cfg = directory / "hub.toml"
    cfg.write_text(
        "\n".join(
            [
                "[hub]",
                f"database = {json.dumps(str(db))}",
                f"control_socket = {json.dumps(str(directory / 'hub.sock'))}",
                f"nodes_files = [{json.dumps(str(nodes_file))}]",
                "",
                "[ble]",
                f"adapter = {json.dumps(adapter)}",
                f"slots = {slots}",
                f"idle_s = {idle_s}",
                f"hold_s = {hold_s}",
                "",
            ]
        )
    )
    return cfg


def contiguous(db: Path, node_id: int) -> int:
    """The node's highest contiguous event_seq as the ledger holds it."""
    rows = query(db, "SELECT highest_contiguous_event_seq FROM nodes WHERE node_id = ?", (node_id,))
    return int(rows[0][0]) if rows else 0


class HubProcess:
    """``python -m hub.cli hub run`` as a subprocess in its own process group; ``kill()`` is SIGKILL. With
    ``commit_faults`` it runs under ``tests.faults.commit_kill``, whose ``kill_in_commit`` kills it inside a ledger
    commit."""

    def __init__(self, config: Path, log_path: Path, *, commit_faults: bool = False) -> None:
        self.config = config
        self.log_path = log_path
        self.module = "tests.faults.commit_kill" if commit_faults else "hub.cli"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.commit_kills = 0

    def start(self) -> None:
        assert self.proc is None
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in kill/stop)
        self._log.write(f"=== hub start {self.starts + 1} ===\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "hub", "run", "--config", str(self.config), "--log-level", "info",
             "--status-interval", "5"],
            cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, no warning: whatever the hub was doing stops there."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            self.kills += 1
        self._close()

    def arm_commit_kill(self, mode: str) -> None:
        """Arm a SIGKILL inside the next commit that books node events (``mode``: "during" the COMMIT or right
        "after" it; ``tests.faults.commit_kill``); the hub dies there (``running()`` turns False), then
        ``killed_in_commit()``."""
        assert self.proc is not None and self.module == "tests.faults.commit_kill"
        self.proc.send_signal(signal.SIGUSR1 if mode == "during" else signal.SIGUSR2)

    def killed_in_commit(self) -> None:
        """The armed kill happened: the hub died of SIGKILL."""
        assert self.proc is not None
        rc = self.proc.wait(30)
        assert rc == -signal.SIGKILL, rc
        self.kills += 1
        self.commit_kills += 1
        self._close()

    def stop(self) -> int | None:
        """SIGTERM (a clean stop), SIGKILL if it does not exit in time; returns the exit status."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()
        return rc

    def _close(self) -> None:
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def status(self) -> dict[str, Any] | None:
        """The running hub's status (``smartshelf hub status``), or None when it does not answer."""
        res = subprocess.run(
            [sys.executable, "-m", "hub.cli", "hub", "status", "--config", str(self.config)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if res.returncode != 0:
            return None
        try:
            data = json.loads(res.stdout)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A read-only query on the ledger file (never through the hub)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def observed_stock(db: Path) -> dict[str, int]:
    """Lane id -> observed units, as the ledger holds them now (to compare with ``expected_outcome``'s counts)."""
    return {str(lid): int(q) for lid, _sku, q in query(db, "SELECT lane_id, sku, qty FROM observed_stock")}


@contextlib.contextmanager
def hub_beside(emu: Emulator, config: Path, log_path: Path) -> Iterator[HubProcess]:
    """The hub as a subprocess beside ``emu``'s running nodes; on the way out (a failed assertion included) both
    stop. A test that wants the hub's clean exit asserts ``hub.stop() == 0`` itself; stopping again is harmless."""
    hub = HubProcess(config, log_path)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
        emu.stop()


def forged_frame(node_id: int, seq: int, event_seq: int) -> bytes:
    """A well-formed event frame for ``node_id`` authenticated with a key that is not the node's."""
    msg = Event(event_seq, 0, KIND_PICK, -3, FORGED_WEIGHT_DG, 99, 0)
    return encode_serial(encode_frame(msg, node_id, seq, Key(os.urandom(32))))


def node_outbox(flash_dir: Path, scratch: Path, capacity: int = DEFAULT_CAPACITY) -> Outbox:
    """The node's outbox as its flash holds it (read from a copy: loading may rewrite a torn journal), ``capacity``
    records as its config says (``"outbox"``)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(flash_dir / "state", scratch)
    return Outbox(str(scratch / "outbox"), 0, capacity)


def tear_last_record(flash_dir: Path, cut: int) -> None:
    """A power cut in the middle of the outbox journal's last append: its last ``cut`` bytes never reached flash."""
    journal = flash_dir / "state" / "outbox.log"
    size = journal.stat().st_size
    with open(journal, "r+b") as f:
        f.truncate(size - cut)


def rebuilt_on_flash(flash_dir: Path, lanes: int, capacity: int) -> tuple[Outbox, list[int]]:
    """What the node rebuilds from its flash at boot (from a scratch copy, by the firmware's own loaders): its outbox
    and each lane's count (the counters' checkpoint plus the journalled events after it, as ``firmware/shelf.py``)."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "state"
        box = node_outbox(flash_dir, scratch, capacity)
        counters = CountersStore(str(scratch / "counters"), lanes)
        for i in range(box.depth):
            if box.is_event(i):
                m = box.message(i, 0)
                assert isinstance(m, Event)
                counters.apply(m.lane, m.event_seq, m.kind, m.count_delta)
        return box, [c.count for c in counters.lanes]


def unacked_on_flash(flash_dir: Path, acked_upto: int) -> int:
    """How many journalled records above ``acked_upto`` the node's flash holds (the outbox the node re-sends), read by
    the firmware's own loader (``node_outbox``: whatever the journal's format) from a scratch copy."""
    if not (flash_dir / "state" / "outbox.log").exists():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ob = node_outbox(flash_dir, Path(tmp) / "state")
        return len([i for i in range(ob.depth) if ob.seq_at(i) > acked_upto])
