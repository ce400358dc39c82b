"""The audit trail (issue 13): every action that changes the ledger, users, API clients or alerts writes its entry in
the same transaction as the change, saying who (actor), when (ts_ms) and from where (origin: ``ip:<address>``,
``cli:<user>@<host>``, ``auto``); nothing prunes it.

* Each action of the Python API (what the page, the API, the command line and the hub all call): with audit entries
  refused (a TEMP trigger on the writer's connection) the action fails and the database is exactly as it was, so
  the change and its entry are one transaction; allowed, the entries are there with the actor and the origin the
  work was started under.
* The command line (every ``smartshelf`` command that writes), the control socket (the peer's OS user, from the
  kernel), a node's answer to a command (from where the command was asked), the hub's own work (``auto``).
* Retention: pruning (lane readings, tags, sign-in attempts) leaves the trail whole.

The status page's and the API's requests (``ip:<address>``) are tests/test_web_audit.py.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import io
import json
import os
import pwd
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.security import generate_password_hash

from hub.ledger import LedgerService, Reason, SensorEvent, SensorGap, Sku, WriteOff
from hub.ledger import origin as origin_mod
from hub.ledger.origin import AUTOMATIC, acting_from
from hub.ledger.postings import Tx
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.reconciler import Reconciler
from hub.reconcile.resolve import resolve
from hub.schema import MIGRATIONS
from hub.web.accounts.clients import add_client, disable_client, token_sha256
from hub.web.accounts.users import (
    add_user,
    end_sessions,
    prune_login_attempts,
    record_login,
    set_disabled,
    set_password,
    set_role,
)
from shared_protocol.messages import KIND_PICK

ORIGIN = "ip:192.0.2.7"
WHO = "web:alice"
HASH = generate_password_hash("a long password", method="pbkdf2:sha256:1000")
CLI = origin_mod.cli()  # this process: cli:<login>@<host>


def _sql(db: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def _snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (what a refused action must leave as it was)."""
    tables = [r[0] for r in _sql(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: sorted(_sql(db, f'SELECT * FROM "{t}"'), key=repr) for t in tables}


def _entries(db: Path, after_id: int = 0) -> list[tuple[str, str, str | None]]:
    return [
        (str(a), str(act), o)
        for a, act, o in _sql(db, "SELECT actor, action, origin FROM audit WHERE id > ? ORDER BY id", (after_id,))
    ]


def _last_id(db: Path) -> int:
    return int(_sql(db, "SELECT coalesce(max(id), 0) FROM audit")[0][0])


async def _seed(ledger: LedgerService) -> None:
    await ledger.add_sku(Sku("COLA", "Cola", 3500, 20, reorder_point=6, capacity=30), actor="seed")
    await ledger.add_sku(Sku("TEA", "Tea", 1200, reorder_point=4, capacity=20), actor="seed")
    await ledger.assign_lane(1, 0, "COLA", actor="seed", lane_id="A1")
    await ledger.record_receipt("COLA", 50, actor="seed", ref="R0")
    await ledger.restock("COLA", "A1", 10, actor="seed", ref="RS0")
    await ledger.record_sale("COLA", 1, actor="seed", ref="S0")
    await ledger.open_alert("shrinkage", "lane:A1/COLA", {"missing": 2}, actor="reconcile")  # alert 1
    await ledger.open_alert("reorder", "sku:TEA", {"observed": 3}, actor="reconcile")  # alert 2
    for name, role in (("alice", "admin"), ("bob", "clerk"), ("carol", "viewer")):
        await ledger.transact(functools.partial(add_user, username=name, password_hash=HASH, role=role, actor="seed"))
    await ledger.transact(lambda tx: set_disabled(tx, "carol", True, actor="seed"))
    await ledger.transact(lambda tx: add_client(tx, "till", token_sha256("ssk_x"), ("sales",), actor="seed"))


async def _reverse_s0(ledger: LedgerService) -> Any:
    async with await ledger.reader() as reader:
        (sale,) = [m for m in (await reader.movements(limit=100)).items if m.source_ref == "sale:S0"]
    return await ledger.reverse(sale.id, actor=WHO, why="keyed twice")


def _tx(fn: Callable[[Tx], Awaitable[Any]]) -> Callable[[LedgerService], Awaitable[Any]]:
    return lambda ledger: ledger.transact(fn)


SALES_CSV = b"id,timestamp,sku,quantity\nF1,2026-11-27T10:00:00Z,COLA,2\n"

# every action that changes the ledger, users, API clients or alerts -> (what runs it, the entries it writes)
ACTIONS: dict[str, tuple[Callable[[LedgerService], Awaitable[Any]], list[tuple[str, str]]]] = {
    "add sku": (lambda lg: lg.add_sku(Sku("SOUP", "Soup", 4000), actor=WHO), [(WHO, "add_sku")]),
    "register node": (lambda lg: lg.register_node(9, actor=WHO, label="back wall"), [(WHO, "register_node")]),
    "assign lane": (lambda lg: lg.assign_lane(2, 0, "TEA", actor=WHO, lane_id="B1"), [(WHO, "assign_lane")]),
    "replace node": (lambda lg: lg.replace_node(1, 5, actor=WHO), [(WHO, "replace_node")]),
    "sale": (lambda lg: lg.record_sale("COLA", 1, actor=WHO, ref="S1"), [(WHO, "sale")]),
    "order pick": (lambda lg: lg.record_order_pick("COLA", 1, "ORD1", actor=WHO, ref="P1"), [(WHO, "pick")]),
    "receipt": (lambda lg: lg.record_receipt("COLA", 6, actor=WHO, ref="R1"), [(WHO, "receipt")]),
    "return": (lambda lg: lg.record_return("COLA", 1, actor=WHO, ref="RT1", restockable=False), [(WHO, "return")]),
    "restock": (lambda lg: lg.restock("COLA", "A1", 2, actor=WHO, ref="RS1"), [(WHO, "restock")]),
    "transfer": (lambda lg: lg.transfer("COLA", 2, "backroom", "warehouse", actor=WHO, ref="T1"), [(WHO, "transfer")]),
    "write-off": (lambda lg: lg.write_off("COLA", 1, Reason.DAMAGE, actor=WHO, ref="W1"), [(WHO, "writeoff")]),
    "count": (lambda lg: lg.record_count("COLA", 30, actor=WHO, ref="C1"), [(WHO, "count")]),
    "reversal": (_reverse_s0, [(WHO, "reverse")]),
    "open alert": (lambda lg: lg.open_alert("damage", "lane:A1/COLA", {}, actor=WHO), [(WHO, "open_alert")]),
    "acknowledge alert": (lambda lg: lg.acknowledge_alert(1, actor=WHO), [(WHO, "acknowledge_alert")]),
    "alert evidence": (
        _tx(lambda tx: tx.update_alert_evidence(1, {"missing": 3}, actor=WHO)),
        [(WHO, "update_alert_evidence")],
    ),
    "resolve alert with a write-off": (
        lambda lg: lg.resolve_alert(
            1, actor=WHO, resolution="stolen", write_off=WriteOff("COLA", 2, Reason.SHRINKAGE, "lane:A1")
        ),
        [(WHO, "writeoff"), (WHO, "resolve_alert")],
    ),
    "resolve alert (page / cli)": (lambda lg: resolve(lg, 2, "dismissed", actor=WHO), [(WHO, "resolve_alert")]),
    "import sales": (
        lambda lg: lg.import_csv("sales", SALES_CSV, actor=WHO, name="s.csv"),
        [(WHO, "sale"), (WHO, "import_sales")],
    ),
    "import epcs": (
        lambda lg: lg.import_epcs(b"epc,sku\nE2801160600002054CC2096F,COLA\n", actor=WHO, name="e.csv"),
        [(WHO, "import_epcs")],
    ),
    "add user": (_tx(lambda tx: add_user(tx, "dave", HASH, "clerk", actor=WHO)), [(WHO, "add_user")]),
    "change role": (_tx(lambda tx: set_role(tx, "bob", "manager", actor=WHO)), [(WHO, "set_user_role")]),
    "disable user": (_tx(lambda tx: set_disabled(tx, "bob", True, actor=WHO)), [(WHO, "disable_user")]),
    "enable user": (_tx(lambda tx: set_disabled(tx, "carol", False, actor=WHO)), [(WHO, "enable_user")]),
    "reset password": (_tx(lambda tx: set_password(tx, "bob", HASH, actor=WHO)), [(WHO, "reset_password")]),
    "sign out everywhere": (
        _tx(lambda tx: end_sessions(tx, "bob", actor="web:bob", why="logout")),
        [("web:bob", "end_sessions")],
    ),
    "sign in": (_tx(lambda tx: record_login(tx, "bob", "192.0.2.7", True)), [("web:bob", "login")]),
    "add api client": (
        _tx(lambda tx: add_client(tx, "wms", token_sha256("ssk_y"), ("receipts",), actor=WHO)),
        [(WHO, "add_api_client")],
    ),
    "disable api client": (_tx(lambda tx: disable_client(tx, "till", actor=WHO)), [(WHO, "disable_api_client")]),
    "reconciliation run": (
        lambda lg: Reconciler(lg, ReconcileConfig()).run_once(),
        [("reconcile", "update_alert_evidence"), ("reconcile", "reconcile")],  # TEA's reorder alert, evidence new
    ),
    "a node's answer": (
        lambda lg: lg.record_audit("node:1", "command", {"command": "tare", "status": "ok"}),
        [("node:1", "command")],
    ),
}


async def _refuse_audit(tx: Tx) -> None:
    await tx.conn.execute(
        "CREATE TEMP TRIGGER refuse_audit BEFORE INSERT ON main.audit BEGIN SELECT RAISE(ABORT, 'no audit'); END"
    )


async def _allow_audit(tx: Tx) -> None:
    await tx.conn.execute("DROP TRIGGER temp.refuse_audit")


@pytest.mark.parametrize("name", sorted(ACTIONS))
async def test_each_action_is_audited_in_the_transaction_of_its_change(tmp_path: Path, name: str) -> None:
    action, expected = ACTIONS[name]
    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await _seed(ledger)
        before = _snapshot(db)
        await ledger.transact(_refuse_audit)
        with acting_from(ORIGIN), pytest.raises(sqlite3.IntegrityError, match="no audit"):
            await action(ledger)
        assert _snapshot(db) == before  # the change went with its entry: nothing was written
        await ledger.transact(_allow_audit)
        last = _last_id(db)
        t0 = int(time.time() * 1000)
        with acting_from(ORIGIN):
            await action(ledger)
        t1 = int(time.time() * 1000)
    assert _entries(db, last) == [(actor, act, ORIGIN) for actor, act in expected]
    times = [t for (t,) in _sql(db, "SELECT ts_ms FROM audit WHERE id > ?", (last,))]
    assert all(t0 <= t <= t1 for t in times)
    assert _snapshot(db) != before


async def test_work_without_an_origin_is_the_writers_own(tmp_path: Path) -> None:
    """No origin set: the service's (``auto`` by default: the hub's own work; a command line names itself)."""
    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await ledger.add_sku(Sku("TEA", "Tea", 1200), actor="hub")
    async with LedgerService(db, migrations=MIGRATIONS, origin=CLI) as ledger:
        await ledger.add_sku(Sku("SOUP", "Soup", 4000), actor="cli:alice")
        with acting_from(ORIGIN):
            await ledger.add_sku(Sku("COLA", "Cola", 3500), actor="web:alice")
    assert _entries(db) == [
        ("hub", "add_sku", AUTOMATIC),
        ("cli:alice", "add_sku", CLI),
        ("web:alice", "add_sku", ORIGIN),
    ]
    assert f"cli:{getpass.getuser()}@{socket.gethostname()}" == CLI


async def test_an_entry_without_an_origin_is_refused_by_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS):
        pass
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="where it came from"):
        conn.execute("INSERT INTO audit (ts_ms, actor, action, details) VALUES (1, 'x', 'y', '{}')")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("INSERT INTO audit (ts_ms, actor, action, details, origin) VALUES (1, 'x', 'y', '{}', '')")
    conn.close()


async def _execute(tx: Tx, sql: str) -> None:
    await tx.conn.execute(sql)


async def test_the_trail_cannot_be_edited_through_the_writer(tmp_path: Path) -> None:
    """The ledger's one writer cannot change or delete an entry either: the triggers refuse it, nothing changes."""
    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await _seed(ledger)
        before = _sql(db, "SELECT * FROM audit ORDER BY id")
        for stmt in (
            "UPDATE audit SET actor = 'someone else' WHERE id = 1",
            "UPDATE audit SET origin = 'ip:10.9.9.9'",
            "DELETE FROM audit WHERE id = 1",
            "DELETE FROM audit",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                await ledger.transact(functools.partial(_execute, sql=stmt))
    assert _sql(db, "SELECT * FROM audit ORDER BY id") == before


# ------------------------------------------------------------------------------------------- the hub's own work


async def test_the_sensor_paths_own_changes_are_audited_as_automatic(tmp_path: Path) -> None:
    """An event of a lane the ledger does not know registers the lane and opens its ``unassigned_lane`` alert: both
    audited (actor ``node:<id>``, origin ``auto``) in the batch's transaction, once; a skip without units too."""
    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await ledger.submit(SensorEvent(4, 1, 2, KIND_PICK, -1, -3500, 90, 1_000))
        await ledger.submit(SensorEvent(4, 2, 2, KIND_PICK, -1, -3500, 90, 2_000))  # the same lane: nothing new
        await ledger.submit(SensorGap(4, 2, 0, "g1", 3_000, skip_events_to=5))
    alert_id = _sql(db, "SELECT id FROM alerts WHERE kind = 'unassigned_lane'")[0][0]
    assert _entries(db) == [
        ("node:4", "register_lane", AUTOMATIC),
        ("node:4", "open_alert", AUTOMATIC),
        ("node:4", "event_skip", AUTOMATIC),
    ]
    details = [json.loads(d) for (d,) in _sql(db, "SELECT details FROM audit ORDER BY id")]
    assert details[0] == {"lane_id": "node4-lane2", "node_id": 4, "lane_index": 2}
    assert details[1] == {"alert_id": alert_id, "kind": "unassigned_lane", "cause_key": "lane:node4-lane2"}


async def test_a_sensor_batch_is_not_written_without_its_audit_entries(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        before = _snapshot(db)
        await ledger.transact(_refuse_audit)
        with pytest.raises(sqlite3.IntegrityError, match="no audit"):
            await ledger.submit(SensorEvent(4, 1, 2, KIND_PICK, -1, -3500, 90, 1_000))
        assert _snapshot(db) == before


async def test_a_nodes_answer_is_audited_from_where_the_command_was_asked(tmp_path: Path) -> None:
    """The answer arrives on the hub's own task (ingest); its entry keeps the origin of the call that sent it."""
    from hub.link.commands import CommandDesk, CommandQueue
    from shared_protocol.messages import CommandResult, Identify

    class Node:
        node_id, session = 1, 1

        def __init__(self) -> None:
            self.commands = CommandQueue()

        def transmit(self) -> None:
            cmd = self.commands.take()
            assert cmd is not None
            self.commands.sent_as(cmd, 1, 7)

    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        desk, node = CommandDesk(ledger), Node()
        with acting_from(ORIGIN):
            call = asyncio.ensure_future(desk.call(node, Identify(3), actor="web:manager"))
        await asyncio.sleep(0)
        desk.answered(node, CommandResult(7, 0, 0), 0)  # outside the caller's context, as ingest does
        assert (await call).ok
        with acting_from("cli:someone@else"), pytest.raises(Exception, match="timed out"):
            await desk.call(Node(), Identify(3), actor="cli:x", timeout_s=0.01)
        await desk.settle()
    assert _entries(db) == [("node:1", "command", ORIGIN), ("node:1", "command_timeout", "cli:someone@else")]
    assert json.loads(_sql(db, "SELECT details FROM audit WHERE id = 1")[0][0])["requested_by"] == "web:manager"


# ------------------------------------------------------------------------------------------------- command line


def _cli(*argv: str) -> int:
    from hub.cli import main

    return main(list(argv))


async def _seeded(db: Path) -> None:
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await _seed(ledger)


def test_every_command_line_write_is_audited_as_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.db"
    asyncio.run(_seeded(db))
    sales = tmp_path / "sales.csv"
    sales.write_bytes(SALES_CSV)
    backup = tmp_path / "backup.db"
    d = ("--db", str(db))
    runs: list[tuple[tuple[str, ...], list[str]]] = [
        (("ledger", "import", "sales", str(sales), *d), ["sale", "import_sales"]),
        (("ledger", "add-sku", "SOUP", "--unit-weight-dg", "4000", *d), ["add_sku"]),
        (("ledger", "assign-lane", "--node", "2", "--lane", "0", "--sku", "SOUP", *d), ["assign_lane"]),
        (("users", "add", "erin", "--role", "viewer", "--password-stdin", *d), ["add_user"]),
        (("api-clients", "add", "pos2", "--scopes", "sales", *d), ["add_api_client"]),
        (("api-clients", "disable", "pos2", *d), ["disable_api_client"]),
        (("reconcile", "run", *d), ["update_alert_evidence", "reconcile"]),  # TEA's reorder alert
        (("reconcile", "resolve", "2", "dismissed", *d), ["resolve_alert"]),
        (("ledger", "backup", str(backup), *d), []),  # reads only
        (("ledger", "restore", str(backup), *d), ["restore"]),
    ]
    for argv, actions in runs:
        monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
        last = _last_id(db)
        assert _cli(*argv) == 0, (argv, capsys.readouterr())
        assert [(act, o) for _, act, o in _entries(db, last)] == [(a, CLI) for a in actions], argv
    restored = json.loads(_sql(db, "SELECT details FROM audit WHERE action = 'restore'")[0][0])
    assert restored["source"] == str(backup) and restored["previous_kept_as"] == f"{db}.bak"


def test_flash_replacing_a_node_without_a_hub_is_audited_as_from_the_command_line(tmp_path: Path) -> None:
    from hub.provisioning.flash import replace_in_ledger

    db = tmp_path / "l.db"
    asyncio.run(_seeded(db))
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'[hub]\ndatabase = "{db}"\n')
    cfg.chmod(0o600)
    last = _last_id(db)
    assert asyncio.run(replace_in_ledger(cfg, 1, 8)) == ["A1"]
    assert _entries(db, last) == [("smartshelf flash", "replace_node", CLI)]


async def test_a_control_socket_request_is_audited_as_from_the_os_user_at_the_other_end(tmp_path: Path) -> None:
    """The origin is the peer's user as the kernel reports it (SO_PEERCRED), whatever the request claims."""
    from hub.service.control import ControlServer, request
    from tests.hub_support import short_dir

    db = tmp_path / "l.db"
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await ledger.add_sku(Sku("TEA", "Tea", 1200), actor="seed")

        async def handler(req: dict[str, Any]) -> dict[str, Any]:
            lane = (await ledger.assign_lane(3, 0, "TEA", actor=str(req["actor"]))).lane_id
            return {"ok": True, "lane": lane}

        with short_dir() as d:
            server = ControlServer(d / "hub.sock", handler)
            await server.start()
            try:
                with acting_from("ip:6.6.6.6"):  # the client's own context never reaches the hub
                    reply = await request(d / "hub.sock", {"actor": "cli:mallory"}, timeout_s=5)
            finally:
                await server.close()
    assert reply == {"ok": True, "lane": "node3-lane0"}
    me = pwd.getpwuid(os.getuid()).pw_name
    assert _entries(db)[-1] == ("cli:mallory", "assign_lane", f"cli:{me}@{socket.gethostname()}")


# ---------------------------------------------------------------------------------------------------- retention


async def test_pruning_never_touches_the_trail(tmp_path: Path) -> None:
    """The writer's upkeep prunes lane readings, tag events and sign-in attempts, never the audit trail."""
    db = tmp_path / "l.db"
    future = 2**62
    async with LedgerService(db, migrations=MIGRATIONS) as ledger:
        await _seed(ledger)
        await ledger.transact(lambda tx: record_login(tx, "bob", "192.0.2.7", False))
        before = _sql(db, "SELECT * FROM audit ORDER BY id")
        await ledger.prune_lane_readings(future)
        await ledger.prune_tags(future)
        await ledger.transact(lambda tx: prune_login_attempts(tx, before_ms=future))
    assert _sql(db, "SELECT * FROM audit ORDER BY id") == before and len(before) > 10
