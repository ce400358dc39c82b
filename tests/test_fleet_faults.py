"""The multi-store tier under faults, end to end: central ends up holding exactly the union of the hubs' ledgers.

Three stores, each a real ``HubService`` with its own SQLite ledger, reconciler and ``[fleet]`` publisher (TLS to
the broker, its own user and password, the broker's ACL), fed by a fake node on a real pty (picks, puts, picks
whose weight is not whole units) and by its staff (sales, receipts, restocks; alerts acknowledged and resolved,
shrinkage written off). One real Mosquitto, one real PostgreSQL, and two central consumers in one shared
subscription group: ``central-a`` in this process, ``central-b`` a real ``smartshelf central run`` subprocess.

Faults, in one scenario, while the stores keep booking:

* store-c's network cut for minutes (a TCP relay that blackholes its connections: no answer, no RST), overlapping
  every other fault: healed only once its publisher (production settings: reconnect back-off 1 s doubling to 60 s)
  has gone ``CUT_S`` (2 minutes) of its own clock without a PUBACK and has failed enough reconnects that its next
  wait is the 60 s ceiling; the broker has meanwhile dropped its connection (keepalive exceeded). Its outbox then
  holds more messages than the broker queues for a client (``max_queued_messages``, set low here): nothing may
  depend on that queue. After it reconnects, what it booked during the cut (movements, alert changes) is published
  in order (a subscriber of its topics checks: first appearances in id / rev order, none missing) and central holds
  each cut-time movement exactly once;
* duplicates: a store's already acknowledged batches published again in other batch boundaries;
* ``central-b`` SIGKILLed mid-batch: inside its PostgreSQL transaction (held there by a row lock the test takes on
  ``stock``, so the kill provably lands between its movements' insert and its commit), then restarted;
* the broker SIGKILLed (its sessions and queued messages since its last save are gone) and restarted before central
  is back (central-b's network to it cut, central-a stopped): the stores reconnect first and publish into a broker
  where no subscription exists, which acknowledges with PUBACK 0x10 ("no matching subscribers") and drops the
  messages; the hubs keep them (their cursors stay) and publish them again until central takes them;
* a rewind to 0 sent to store-b, as central does for a store rebuilt from nothing: its whole ledger again;
* two bad messages injected on purpose (a forged payload, a broken one).

Then everything drains, and per store: central's movements equal the hub's (every id once, every column), its
stock per SKU and location equals the hub's balances, its alerts the hub's latest states, ``smartshelf central
check`` finds nothing but the two injected messages, and ``rejected`` holds exactly those. A failure prints the
differences and the timeline of what was done when.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import math
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hub.fleet.messages import (
    MOVEMENT_COLUMNS,
    Alerts,
    FleetMessageError,
    Movements,
    decode,
    encode_movements,
    encode_rewind,
)
from hub.fleet.publisher import FleetPublisher
from tests.fleet_faults_support import (
    CentralInProcess,
    CentralProcess,
    NetworkCut,
    Store,
    central_state,
    differences,
    hub_state,
    out_of_order,
    true,
    until,
)
from tests.fleet_support import FreshDatabase, MqttTestClient
from tools.servers.mosquitto import Broker

pytestmark = pytest.mark.slow

PREFIX = "smartshelf/v1"
HUBS = ("store-a", "store-b", "store-c")
CUT_HUB = "store-c"
CENTRAL, CENTRAL_PW = "central", "central-secret"
REWIND_ACL = f"pattern read {PREFIX}/%u/rewind\nuser {CENTRAL}\ntopic write {PREFIX}/+/rewind\n"
ROOT = Path(__file__).resolve().parents[1]
AHEAD = ("store-a", "store-b")  # reconnect before central after the broker's crash (store-c is cut then)
DRAIN_TIMEOUT_S = 120.0
CUT_S = 120.0  # the cut as the cut hub's publisher sees it: this long without a PUBACK, on its own clock
BROKER_QUEUE = 20  # the broker's max_queued_messages, far below what the cut hub's outbox holds at the heal
JITTER_LOW = 0.75  # hub/fleet/publisher.py: each reconnect wait is the back-off delay times uniform(0.75, 1)
LOGGERS = ("hub.central", "hub.fleet")


def password(hub: str) -> str:
    return f"pw-{hub}-7f3a"


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(f"{time.monotonic() - self.t0:6.1f} s  {text}")

    async def at(self, t: float) -> None:
        await asyncio.sleep(max(0.0, self.t0 + t - time.monotonic()))

    def __str__(self) -> str:
        return "timeline:\n" + "\n".join(self.lines)


def central_toml(tmp: Path, broker: Broker, db: FreshDatabase, client_id: str, port: int = 0) -> Path:
    (tmp / "central-password").write_text(CENTRAL_PW + "\n")
    (tmp / "central-password").chmod(0o600)
    path = tmp / f"{client_id}.toml"
    path.write_text(
        "[central]\nbatch_messages = 20\nbatch_delay_s = 0.02\nstatus_interval_s = 3600\n\n"
        f'[database]\ndsn = "{db.dsn}?application_name={client_id}"\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {port or broker.port}\ncafile = "{broker.ca_file}"\n'
        f'username = "{CENTRAL}"\npassword_file = "central-password"\nclient_id = "{client_id}"\n'
        "reconnect_min_s = 0.1\nreconnect_max_s = 1\nsession_expiry_s = 600\n"
    )
    path.chmod(0o600)  # the dsn holds a password
    return path


# ------------------------------------------------------------------------------------------------- the faults


async def kill_mid_batch(db: FreshDatabase, central_b: CentralProcess, timeline: Timeline) -> str:
    """Hold every ``stock`` row (FOR UPDATE) until central-b's backend waits on a lock inside its batch
    transaction, SIGKILL it there, then let go: its transaction can never commit. Preferably while it inserts
    movements (its statement that adds them to the stock waits for the lock); when the other consumer holds the
    stores' rows meanwhile, central-b waits at its transaction's first statement: let go and try again, a few
    times, before settling for that."""
    monitor = await asyncpg.connect(db.dsn)
    seen: list[Any] = []
    try:
        for attempt in range(12):
            async with monitor.transaction():
                await monitor.execute("SELECT 1 FROM stock FOR UPDATE")
                deadline = time.monotonic() + 2.5
                while time.monotonic() < deadline:
                    await monitor.execute("SELECT pg_stat_clear_snapshot()")  # else: read once per transaction
                    seen = await monitor.fetch(
                        "SELECT pid, xact_start, query, application_name, wait_event_type FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    waiting = [r for r in seen if r[3] == "central-b" and r[4] == "Lock" and r[1] is not None]
                    if waiting and ("INSERT INTO movements" in waiting[0][2] or attempt >= 8):
                        central_b.kill()
                        pid, started, query = waiting[0][:3]
                        await monitor.execute("SELECT pg_stat_clear_snapshot()")
                        still = await monitor.fetchval("SELECT xact_start FROM pg_stat_activity WHERE pid = $1", pid)
                        assert still == started, "central-b's transaction ended before the kill landed"
                        statement = " ".join(query.split())[:60]
                        timeline.note(f"central-b SIGKILLed inside its batch transaction (attempt {attempt + 1}, "
                                      f"backend {pid} waiting in: {statement}...)")  # fmt: skip
                        return statement
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
        raise AssertionError(f"central-b never waited inside a batch: {[tuple(r) for r in seen]}")
    finally:
        await monitor.close()


async def broker_crash_central_last(
    broker: Broker, central_a: CentralInProcess, b_net: NetworkCut, stores: dict[str, Store], timeline: Timeline
) -> None:
    """SIGKILL the broker while central is away (central-b's network to it cut, central-a stopped), restart it, and
    let the stores in ``AHEAD`` reconnect and publish before central comes back: the broker has no subscription
    then, so it answers PUBACK 0x10 (a success in MQTT) and drops those messages: the hubs keep them (their cursors
    stay) and publish them again."""
    b_net.cut()
    broker.kill()  # from this (the main) thread: the broker dies with the thread that started it
    timeline.note("central-b's network to the broker cut, broker SIGKILLed")
    await central_a.stop()
    await asyncio.sleep(1.0)
    before = {h: stores[h].publisher_status["movements_acked"] for h in AHEAD}
    broker.start()
    timeline.note("broker restarted (its state as of its last save: none), central still away")

    async def published() -> bool:
        st = {h: stores[h].publisher_status for h in AHEAD}
        return all(st[h]["connected"] and st[h]["untaken"].get("movements", 0) > 0 for h in AHEAD)

    await until(published, "the stores to publish into the restarted broker", 30)
    after = {h: stores[h].publisher_status["movements_acked"] for h in AHEAD}
    assert after == before, (before, after)  # nobody took them: the cursors stay
    timeline.note(f"{' and '.join(AHEAD)} reconnected and published with no subscriber there: PUBACK 0x10, the"
                  f" messages dropped by the broker, kept by the hubs (cursors {after})")  # fmt: skip
    await central_a.start()
    b_net.heal()
    timeline.note("central-a started again, central-b's network healed")


def republish_acked(broker: Broker, store: Store, timeline: Timeline) -> int:
    """store's acknowledged movements once more, as store (its own credentials), in batches of 37."""
    acked = int(store.publisher_status["movements_acked"])
    conn = sqlite3.connect(store.db)
    try:
        cols = ", ".join(MOVEMENT_COLUMNS)
        rows = conn.execute(f"SELECT {cols} FROM movements WHERE id <= ? ORDER BY id", (acked,)).fetchall()
    finally:
        conn.close()
    client = MqttTestClient(broker, store.hub_id, password(store.hub_id))
    try:
        for i in range(0, len(rows), 37):
            payload = encode_movements(store.hub_id, rows[i : i + 37], int(time.time() * 1000))
            assert client.publish(f"{PREFIX}/{store.hub_id}/movements", payload) == 0
    finally:
        client.close()
    timeline.note(f"republished {store.hub_id}'s {len(rows)} acknowledged movements in batches of 37")
    return len(rows)


def inject_bad_messages(broker: Broker) -> list[tuple[str, str]]:
    """A forged payload (store-c publishing store-a's movements) and a broken one (store-b): both to reject."""
    forged = encode_movements("store-a", [(1, 1, 1, "COLA-330", "shelf", -1, "sale", "x", 0, "pos", None, None,
                                            None, None, None, None)], int(time.time() * 1000))  # fmt: skip
    sent = [("store-c", f"{PREFIX}/store-c/movements", forged), ("store-b", f"{PREFIX}/store-b/alerts", b"{not json")]
    for hub, topic, payload in sent:
        client = MqttTestClient(broker, hub, password(hub))
        try:
            assert client.publish(topic, payload) == 0
        finally:
            client.close()
    return [(topic, hub) for hub, topic, _ in sent]


def send_rewind(broker: Broker, hub: str) -> None:
    client = MqttTestClient(broker, CENTRAL, CENTRAL_PW)
    try:
        payload = encode_rewind(hub, int(time.time() * 1000), movements_after=0, alerts=True)
        assert client.publish(f"{PREFIX}/{hub}/rewind", payload) == 0
    finally:
        client.close()


@dataclass(frozen=True)
class AtHeal:
    """The cut hub when its network came back: its cursor, its last movement, its alert outbox (revs)."""

    acked: int
    last_id: int
    revs: list[int]
    waits: list[float]  # between its reconnect attempts during the cut, and the last one to the reconnection
    alert_of: dict[int, int] = field(default_factory=dict)  # rev -> the alert it is a state of


async def heal_long_cut(
    cut: NetworkCut, store: Store, shopping: asyncio.Event, work: list[asyncio.Task[None]], broker: Broker,
    timeline: Timeline,
) -> AtHeal:  # fmt: skip
    """Wait until ``store``'s publisher has gone ``CUT_S`` without a PUBACK (its clock) and has failed enough
    reconnects that its next wait is its back-off's ceiling; stop its shopping; check what the cut left in its
    outbox; heal; wait for its reconnection (at the end of that wait)."""
    fleet = store.service.fleet
    assert fleet is not None
    defaults = inspect.signature(FleetPublisher).parameters
    production = (defaults["reconnect_min_s"].default, defaults["reconnect_max_s"].default)
    assert (fleet.reconnect_min_s, fleet.reconnect_max_s) == production, "the hub's production back-off, no test cap"
    to_ceiling = math.ceil(math.log2(fleet.reconnect_max_s / fleet.reconnect_min_s))  # failed attempts: 6

    def attempts() -> list[float]:
        return [t for t, was_cut in cut.accepts if was_cut]

    async def long_enough() -> bool:
        age = store.publisher_status["last_puback_age_s"]
        return age is not None and age >= CUT_S and len(attempts()) >= to_ceiling

    await until(long_enough, f"{store.hub_id}: {CUT_S:.0f} s without a PUBACK, {to_ceiling} reconnects", CUT_S + 90)
    shopping.set()
    await asyncio.gather(*work)
    conn = sqlite3.connect(store.db)
    try:
        last_id = conn.execute("SELECT coalesce(max(id), 0) FROM movements").fetchone()[0]
        outbox = conn.execute("SELECT rev, alert_id FROM fleet_outbox ORDER BY rev").fetchall()
        revs = [r[0] for r in outbox]
    finally:
        conn.close()
    st = store.publisher_status
    acked, batches = st["movements_acked"], math.ceil((last_id - st["movements_acked"]) / fleet.cfg.batch_size)
    seen = f"no PUBACK for {st['last_puback_age_s']:.0f} s, {len(attempts())} reconnects failed"
    assert not st["connected"] and st["last_puback_age_s"] >= CUT_S, (seen, str(timeline))
    assert st["oldest_unpublished_age_s"] >= CUT_S - 5, (st, str(timeline))  # booked at the cut, waiting since
    assert batches > broker.max_queued_messages and revs, (acked, last_id, revs, str(timeline))
    cut.heal()
    healed = time.monotonic()
    timeline.note(f"{store.hub_id}'s network healed ({seen}): its outbox holds movements {acked + 1}..{last_id} "
                  f"({batches} messages of {fleet.cfg.batch_size}; the broker queues {broker.max_queued_messages} "
                  f"per client) and {len(revs)} alert changes")  # fmt: skip
    await until(lambda: true(bool(store.publisher_status["connected"])), "the reconnection", fleet.reconnect_max_s + 20)
    tried = [*attempts(), next(t for t, was_cut in cut.accepts if not was_cut and t >= healed)]
    waits = [round(b - a, 1) for a, b in itertools.pairwise(tried)]
    timeline.note(f"{store.hub_id} reconnected; between its attempts since the cut (s): {waits}")
    # the last wait was the ceiling's (a wait of 32 s and a 5 s TLS timeout are less than 45 s)
    assert waits[-1] >= JITTER_LOW * fleet.reconnect_max_s, (waits, str(timeline))
    return AtHeal(acked, last_id, revs, waits, {rev: alert_id for rev, alert_id in outbox})


def observe(broker: Broker, hub: str) -> MqttTestClient:
    """A plain subscriber of ``hub``'s movements and alerts (central's user), to see the order they come in."""
    observer = MqttTestClient(broker, CENTRAL, CENTRAL_PW)
    for kind in ("movements", "alerts"):
        assert observer.subscribe(f"{PREFIX}/{hub}/{kind}") == 1
    return observer


async def check_published_after_the_cut(observer: MqttTestClient, db: FreshDatabase, at: AtHeal) -> None:
    """What the cut hub booked during the cut was published after it reconnected, in order (movements by id, alert
    changes by rev: first appearances; a batch in flight may be sent again), and central holds each movement once."""
    ids: list[int] = []
    revs: list[int] = []
    latest: dict[int, int] = {}  # alert id -> the highest rev published
    refused = 0
    for topic, payload in await asyncio.to_thread(observer.quiet, 0.5):
        try:
            message = decode(CUT_HUB, topic.rsplit("/", 1)[1], payload)
        except FleetMessageError:
            refused += 1
            continue
        if isinstance(message, Movements):
            ids += [row.id for row in message.rows]
        elif isinstance(message, Alerts):
            revs += [row.rev for row in message.rows]
            latest.update((row.id, max(row.rev, latest.get(row.id, 0))) for row in message.rows)
    assert refused == 1  # the forged message injected on its topic
    missing, early = out_of_order(ids, range(at.acked + 1, at.last_id + 1))
    assert not missing and not early and ids[0] <= at.acked + 1, (missing[:20], early[:20], ids[:20])
    # the outbox holds an alert's latest state: one that changed again after the heal (the reconciler runs on) is
    # published at its newer rev only, and its older one never
    newer = {rev for rev in at.revs if latest.get(at.alert_of[rev], 0) > rev}
    missing, early = out_of_order(revs, [rev for rev in at.revs if rev not in newer])
    assert not missing and not early, (missing, early, at.revs, revs)
    got = await fetch(db, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM movements WHERE hub_id ="
                          f" '{CUT_HUB}' AND id > {at.acked} AND id <= {at.last_id}")  # fmt: skip
    assert got == [(at.last_id - at.acked, at.last_id - at.acked, at.acked + 1, at.last_id)], (got, at)


# --------------------------------------------------------------------------------------------------- the test


async def test_central_equals_the_union_of_the_hubs_ledgers_through_every_fault(
    tmp_path: Path, broker_factory: Callable[..., Broker], postgres_db: FreshDatabase
) -> None:
    users = {h: password(h) for h in HUBS} | {CENTRAL: CENTRAL_PW}
    broker = broker_factory(
        extra_acl=REWIND_ACL, users=users, central_users={CENTRAL}, max_queued_messages=BROKER_QUEUE
    )
    timeline = Timeline()
    logs = logging.FileHandler(tmp_path / "in-process.log")  # central-a's and the hubs' publishers'
    logs.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).addHandler(logs)
        logging.getLogger(name).setLevel(logging.INFO)
    cut = await NetworkCut(broker.port).start()  # store-c's network
    b_net = await NetworkCut(broker.port).start()  # central-b's
    central_a = CentralInProcess(central_toml(tmp_path, broker, postgres_db, "central-a"))
    b_toml = central_toml(tmp_path, broker, postgres_db, "central-b", b_net.port)
    central_b = CentralProcess(b_toml, tmp_path / "central-b.log")
    stores = {h: Store(h, tmp_path / h, password(h), seed=11 + 20 * i) for i, h in enumerate(HUBS)}
    shopping = {h: asyncio.Event() for h in HUBS}  # set: that store stops booking
    work: dict[str, list[asyncio.Task[None]]] = {h: [] for h in HUBS}
    observer: MqttTestClient | None = None
    b_started: asyncio.Task[None] | None = None
    try:
        await central_a.start()
        b_started = asyncio.create_task(central_b.start())  # a subprocess: seconds to start, meanwhile the stores
        for h, s in stores.items():
            await s.start(cut.port if h == CUT_HUB else broker.port, broker.ca_file)
            work[h] = [asyncio.create_task(s.feed(shopping[h])), asyncio.create_task(s.staff(shopping[h]))]
        await until(lambda: true(stores[CUT_HUB].publisher_status["movements_acked"] > 0), "store-c publishing", 30)
        timeline = Timeline()
        cut.cut()  # first: the cut spans every other fault (and central-b's start)
        at_cut = hub_state(stores[CUT_HUB].db).last_id
        timeline.note(f"3 stores booking, {CUT_HUB}'s network cut (its ledger at movement {at_cut})")
        await b_started
        timeline.note("central-a (in process) and central-b (subprocess) consuming")

        await timeline.at(3)
        await asyncio.to_thread(republish_acked, broker, stores["store-a"], timeline)

        await timeline.at(8)
        await kill_mid_batch(postgres_db, central_b, timeline)
        await asyncio.sleep(1.5)
        await central_b.start()
        timeline.note("central-b restarted")

        await timeline.at(16)  # the broker gave up on store-c's connection (1.5 keepalives without a packet)
        await asyncio.to_thread(broker.wait_for_log, f"Client smartshelf-hub-{CUT_HUB} has exceeded timeout", 30)
        timeline.note(f"the broker dropped {CUT_HUB}'s connection: keepalive exceeded")
        await broker_crash_central_last(broker, central_a, b_net, stores, timeline)
        observer = await asyncio.to_thread(observe, broker, CUT_HUB)

        await timeline.at(32)
        await asyncio.to_thread(send_rewind, broker, "store-b")
        timeline.note("rewind to 0 (every movement and alert again) sent to store-b")

        await timeline.at(34)
        expected_rejected = await asyncio.to_thread(inject_bad_messages, broker)
        timeline.note("a forged and a broken message injected")

        await timeline.at(38)
        for h in AHEAD:
            shopping[h].set()
            await asyncio.gather(*work[h])
        timeline.note(f"{' and '.join(AHEAD)} stopped booking; {CUT_HUB} books on")

        at_heal = await heal_long_cut(cut, stores[CUT_HUB], shopping[CUT_HUB], work[CUT_HUB], broker, timeline)
        assert at_heal.acked <= at_cut < at_heal.last_id and cut.dropped_bytes > 0, str(timeline)
        states = {h: hub_state(s.db) for h, s in stores.items()}
        timeline.note("booked: " + ", ".join(
            f"{h} {st.last_id} movements, {len(st.alerts)} alerts" for h, st in states.items()
        ))  # fmt: skip

        lines = await drained(postgres_db, stores, timeline)
        if lines:
            pytest.fail("\n".join([*lines, str(timeline), f"logs: {tmp_path}"]), pytrace=False)
        await check_published_after_the_cut(observer, postgres_db, at_heal)
        statuses = {h: s.publisher_status for h, s in stores.items()}
        report = await check_command(tmp_path / "central-a.toml")
        await central_a.stop()
        assert central_b.stop() == 0
    finally:
        (tmp_path / "timeline.txt").write_text(str(timeline))
        if observer is not None:
            observer.close()
        if b_started is not None and not b_started.done():
            b_started.cancel()
        for h in HUBS:
            shopping[h].set()
            for task in work[h]:
                task.cancel()
        for s in stores.values():
            with contextlib.suppress(Exception):
                await s.stop()
        with contextlib.suppress(AssertionError):
            await central_a.stop()
        central_b.stop()
        await cut.close()
        await b_net.close()
        with contextlib.suppress(OSError):
            shutil.copy(broker.log_path, tmp_path / "mosquitto.log")
        logs.close()
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(logs)
            logging.getLogger(name).setLevel(levels[name])

    # central check: every store complete, its book equal to the hub's; the only problems are the injected messages
    problems = {h["hub_id"]: h["problems"] for h in report}
    assert problems == {"store-a": [], "store-b": ["1 message(s) rejected"], "store-c": ["1 message(s) rejected"]}, (
        json.dumps(report, indent=1), str(timeline))  # fmt: skip
    assert all(h["book_compared"] and not h["gaps"] and h["missing_tail"] is None for h in report), report
    got = await fetch(postgres_db, "SELECT topic, hub_id FROM rejected ORDER BY id")
    assert sorted(got) == sorted(expected_rejected), (got, str(timeline))
    kinds = await fetch(postgres_db, "SELECT kind, status, count(*) FROM alerts GROUP BY 1, 2 ORDER BY 1, 2")
    assert {k[1] for k in kinds} >= {"resolved"} and {k[0] for k in kinds} >= {"shrinkage", "damage"}, kinds

    # the faults did happen, and were seen
    duplicates = central_a.total("movements_duplicate") + sum(
        int(n) for n in re.findall(r"stopped: .*?(\d+) duplicate\(s\)", central_b.text())
    )
    assert duplicates > 0 and central_a.total("movements_inserted") > 0
    assert statuses["store-b"]["rewinds"] >= 2, statuses  # first contact, the test's
    assert all(statuses[h]["untaken"].get("movements", 0) >= 1 for h in AHEAD), statuses  # 0x10: kept, sent again
    assert all(st["connects"] >= 2 for st in statuses.values()), statuses  # the broker's kill (and the cut)
    assert central_b.starts == 2 and b_net.blackholed >= 1  # store-c's: `heal_long_cut`
    assert sum(s.resolved for s in stores.values()) > 0 and sum(s.acknowledged for s in stores.values()) > 0
    dropped = broker.log_path.read_text(errors="replace").count("Outgoing messages are being dropped")
    print(f"\n{timeline}\ncentral: {duplicates} duplicate movement(s) ignored; central-a: {central_a.runs[0].stats}")
    print(f"the broker dropped messages for a client {dropped} time(s) (max_queued_messages {BROKER_QUEUE})")
    print("alerts at central (kind, status, count):", kinds)
    for h, st in statuses.items():
        print(f"{h}: {st['connects']} connects, {st['published']}, rewinds {st['rewinds']}, refused {st['refused']}")


async def drained(db: FreshDatabase, stores: dict[str, Store], timeline: Timeline) -> list[str]:
    """Wait until central equals every hub and stays so across a snapshot; the differences left otherwise."""
    conn = await asyncpg.connect(db.dsn)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    stable_since: float | None = None
    signature: Any = None
    try:
        while True:
            lines: list[str] = []
            current = []
            for h, s in stores.items():
                hub, central = hub_state(s.db), await central_state(conn, h)
                lines += differences(h, hub, central)
                row = await conn.fetchrow(
                    "SELECT snapshot_last_movement_id, movements_complete_to FROM hubs WHERE hub_id = $1", h
                )
                marks = (row["snapshot_last_movement_id"], row["movements_complete_to"]) if row else (None, None)
                if marks != (hub.last_id, hub.last_id):
                    lines.append(f"{h}: central's snapshot and complete-to marks {marks}, hub's last id {hub.last_id}")
                current.append((hub.last_id, len(hub.alerts), s.publisher_status["alerts_waiting"]))
            now = time.monotonic()
            if lines or current != signature:
                stable_since, signature = (None if lines else now), current
            elif stable_since is None:
                stable_since = now
            elif now - stable_since >= 6.0:
                timeline.note("central equals every hub, and stayed so for 6 s")
                return []
            if now > deadline:
                status = {h: s.publisher_status for h, s in stores.items()}
                return [*lines, f"publishers: {json.dumps(status, indent=1)}"]
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def check_command(config: Path) -> list[dict[str, Any]]:
    argv = [sys.executable, "-m", "hub.cli", "central", "check", "--config", str(config), "--json"]
    done = await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    report: list[dict[str, Any]] = json.loads(done.stdout)
    return report


async def fetch(db: FreshDatabase, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(db.dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()
