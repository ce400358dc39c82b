"""Shared fixtures of the web tests: a LedgerService on its own loop thread (like the hub's), a Flask app."""

from __future__ import annotations

import asyncio
import http.client
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask
from flask.testing import FlaskClient

from hub.ledger import LedgerService, SensorGap, Sku
from hub.ledger.models import now_ms
from hub.ledger.tags import SEEN, TagEvent
from hub.schema import MIGRATIONS
from hub.web import LoopWriter, create_app
from hub.web.accounts.users import ROLES, add_user

T = TypeVar("T")
PASSWORD = "correct horse battery"
# A cola unit's tag, read on lane A1 (GS1 TDS's SGTIN-96 example: GTIN 80614141123458, COLA's GTIN here)
SEED_EPC = "3074257BF7194E4000001A85"
COLA_GTIN = "80614141123458"


@dataclass
class Env:
    db: Path
    writer: LoopWriter
    app: Flask

    def write(self, fn: Callable[[LedgerService], Awaitable[T]]) -> T:
        return self.writer.call(fn)

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the ledger on a connection of the test's own (what a refused request must leave as it was)."""
        conn = sqlite3.connect(self.db)
        try:
            return list(conn.execute(query, params))
        finally:
            conn.close()

    def client(self, role: str | None = None) -> FlaskClient:
        """A test client, signed in as the seeded user of ``role`` (None: anonymous) without a password round."""
        client = self.app.test_client()
        if role is not None:
            with client.session_transaction() as sess:
                sess["user"] = role
                sess["epoch"] = self.sql("SELECT session_epoch FROM users WHERE username = ?", (role,))[0][0]
        return client

    def csrf(self, client: FlaskClient) -> str:
        with client.session_transaction() as sess:
            token = sess.setdefault("csrf", "t" * 43)
        return str(token)


def login(env: Env, username: str, password: str) -> int:
    """Sign in through the login form on a fresh client; the answer's status (302: signed in, 401: refused)."""
    client = env.app.test_client()
    client.get("/login")
    resp = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": env.csrf(client), "next": "/"}
    )
    return resp.status_code


class EventStream:
    """A live stream (``/events``) of a signed-in browser (its session ``cookie``) on a served app, read event by
    event."""

    def __init__(self, port: int, cookie: str, timeout: float = 10.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", "/events", headers={"Cookie": cookie, "Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()

    def next_event(self) -> str | None:
        """The next event's name; None when the stream ended."""
        name = ""
        while True:
            line = self.resp.readline().decode()
            if not line:
                return None
            if line.startswith("event: "):
                name = line[7:].strip()
            elif line == "\n" and name:
                return name


def _fast_hash(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="pbkdf2:sha256:1000")


async def _seed(ledger: LedgerService) -> None:
    cola = Sku("COLA", "Cola 330 ml", 3500, 20, reorder_point=6, reorder_qty=24, capacity=30, gtin=COLA_GTIN)
    await ledger.add_sku(cola, actor="t")
    await ledger.add_sku(Sku("TEA", "Green tea", 1200, reorder_point=4, capacity=20), actor="t")
    await ledger.add_sku(Sku("SOUP", "Soup", 4000, reorder_point=2, capacity=10), actor="t")
    await ledger.assign_lane(1, 0, "COLA", actor="t", lane_id="A1")
    await ledger.assign_lane(1, 1, "TEA", actor="t", lane_id="B1")
    await ledger.assign_lane(1, 2, "SOUP", actor="t", lane_id="C1")
    await ledger.apply_sensor_gap(SensorGap(1, 0, 21, "seed0", now_ms()))
    await ledger.apply_sensor_gap(SensorGap(1, 1, 3, "seed1", now_ms()))
    # far above the event_seqs the tests give node 1's weight events (they start at 1)
    await ledger.submit(TagEvent(1, 1_000_000, 0, SEEN, SEED_EPC, now_ms() - 60_000, -45))
    await ledger.open_alert("shrinkage", "lane:A1/COLA", {"missing": 2}, actor="reconcile")
    await ledger.open_alert("reorder", "sku:TEA", {"observed": 3}, actor="reconcile")
    for role in ROLES:
        await ledger.transact(_adder(role))


def _adder(role: str) -> Callable[[Any], Awaitable[None]]:
    return lambda tx: add_user(tx, role, _fast_hash(PASSWORD), role, actor="t")  # username = role


def _count_lane(db: Path, writer: LoopWriter) -> Callable[[int, int, int, str], tuple[bool, str]]:
    """What the running hub's ``count_lane`` does once the node took the count (``HubService.set_count``, tested
    with a node in tests/test_hub_service.py and end to end in tests/test_install_count.py): a physical count of the
    lane's book stock."""

    def count_lane(node_id: int, lane: int, counted: int, actor: str) -> tuple[bool, str]:
        conn = sqlite3.connect(db)
        try:
            lane_id, sku = conn.execute(
                "SELECT lane_id, sku FROM lanes WHERE node_id = ? AND lane_index = ?", (node_id, lane)
            ).fetchone()
        finally:
            conn.close()
        result = writer.call(lambda ledger: ledger.record_count(sku, counted, actor=actor, location=f"lane:{lane_id}"))
        return True, f"counted {result.counted_qty}, book {result.book_qty}"

    return count_lane


def run_env(tmp_path: Path) -> Iterator[Env]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hub-loop", daemon=True)
    thread.start()
    db = tmp_path / "ledger.db"
    ledger = LedgerService(db, migrations=MIGRATIONS, synchronous="NORMAL")

    def on_loop(coro: Awaitable[Any]) -> Any:
        async def run() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), loop).result(30)

    on_loop(ledger.start())
    writer = LoopWriter(ledger, loop)
    try:
        writer.call(_seed)
        yield Env(db, writer, create_app(db, writer, config={"TESTING": True}, count_lane=_count_lane(db, writer)))
    finally:
        on_loop(ledger.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
