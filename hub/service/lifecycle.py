"""``HubService``: the running hub. Ledger writer + node links + ingest + control socket (+ reconciliation and
the status page), started and stopped in the right order.

Start: refuse node keys that other users can read (``HubConfig.key_files``, ``hub.private_files``: one line naming
the file and the fix), claim the control socket (refuse if another hub answers on it), open the ledger (creating or
upgrading the database 0600, in a directory made 0700 if it is new; scheduled backups from the config), restore each
configured node's session from the ledger (``hub.link.restore``), start ingest, one ``SerialLink`` per configured
port, the control server, reconciliation, the fleet publisher (``[fleet]``: ``hub.fleet``) and the web server.

Stop: stop the web server and reconciliation, stop reading from the ports, let ingest handle the frames already
read, wait for audit writes, close the ledger (everything submitted commits and its acks still go out on the open
ports), then fail waiting commands and close ports and socket.

In-process API (for the status page and the control socket): ``await hub.command(node_id, message)`` /
``await hub.set_lane(...)`` return a ``CommandOutcome`` or raise a ``CommandError``; ``await hub.set_count(...)``
(staff counted a lane: the node's count and the book, protocol v1.1) returns a ``SetCountOutcome``; ``hub.status()``
is a JSON-ready snapshot (``hub.service.status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from dataclasses import replace
from typing import Any

from hub.config import HubConfig, NodeConfig, load_config
from hub.fleet.publisher import FleetPublisher
from hub.homeassistant.bridge import HomeAssistantBridge
from hub.ledger.models import CountResult, InvalidArgument, LedgerError, lane_location
from hub.ledger.postings import Tx
from hub.ledger.reader import SENSOR_TALLIES, LedgerReader, sensor_tallies_of
from hub.ledger.service import LedgerService
from hub.link.commands import CommandError, CommandOutcome, CommandTimeout, UnknownNode
from hub.link.ingest import Ingest
from hub.link.restore import lane_tallies, restore_sessions
from hub.link.session import NodeSession
from hub.private_files import check_key_files, make_private_dirs
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.reconciler import Reconciler
from hub.schema import MIGRATIONS
from hub.service import status
from hub.service.control import ControlServer, claim
from hub.service.control_requests import handle_request
from hub.service.counting import SetCountOutcome
from hub.service.node_lanes import check_lane, wait_heard
from hub.transport.ble.beacons import NodeBeacon
from hub.transport.ble.central import BleCentral
from hub.transport.serial import SerialLink
from hub.web.server import WebServer, start_web
from shared_protocol.messages import Message, SetCount, SetLane

log = logging.getLogger(__name__)


class UnknownPort(LookupError):
    """No node of this hub is on that port."""


class _Trial(Exception):
    """Rolls back a trial transaction (``set_lane``: would the ledger take the assignment?)."""


class HubService:
    def __init__(
        self,
        config: HubConfig,
        *,
        reopen_min_s: float = 0.2,
        reopen_max_s: float = 5.0,
        batch_linger_s: float = 0.0,
        control: bool = True,
        open_ports: bool = True,
        reconcile: bool = True,
    ) -> None:
        self.config = config
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = reopen_max_s
        self.batch_linger_s = batch_linger_s
        self.ledger: LedgerService | None = None
        self.reader: LedgerReader | None = None
        self.ingest: Ingest | None = None
        self.links: list[SerialLink] = []
        self.ble: BleCentral | None = None  # the BLE side, when a node has link = "ble"
        self._reloading = asyncio.Lock()
        self.control: ControlServer | None = None
        self._use_control = control
        self._open_ports = open_ports  # False: frames come only through ``ingest.enqueue`` (benchmarks)
        self._use_reconciler = reconcile
        self.reconciler: Reconciler | None = None
        self.web: WebServer | None = None
        self.fleet: FleetPublisher | None = None  # [fleet]: the ledger published to the chain's MQTT broker
        self.homeassistant: HomeAssistantBridge | None = None  # [homeassistant]: MQTT discovery
        self.started_ns = 0
        self.status_mark = status.StatusMark()

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> HubService:
        cfg = self.config
        check_key_files(cfg.key_files)
        if cfg.fleet is not None:
            cfg.fleet.read_password()  # a password file open to other users: refused before anything starts
        make_private_dirs(cfg.database.parent)
        if self._use_control:
            make_private_dirs(cfg.control_socket.parent)
            claim(cfg.control_socket)
        backups = None
        if cfg.backup is not None:
            make_private_dirs(cfg.backup.directory)
            backups = cfg.backup.policy()  # with its off-site copies, if configured
        ledger = LedgerService(
            cfg.database,
            migrations=MIGRATIONS,
            synchronous=cfg.synchronous,
            backups=backups,
            batch_linger_s=self.batch_linger_s,
        )
        await ledger.start()
        self.ledger = ledger
        try:
            self.reader = reader = await LedgerReader.open(cfg.database)
            sessions, uplink_seqs = await restore_sessions(ledger, reader, cfg.nodes)
            self.ingest = ingest = Ingest(ledger, reader, sessions, config_path=cfg.path)
            for node_id, seq in uplink_seqs.items():
                ingest.restore_uplink_seq(node_id, seq)
            ingest.start()
            for n in cfg.nodes:
                self._open_link(n)
            if self.ble is not None:
                self.ble.start()
            if self._use_control:
                self.control = ControlServer(cfg.control_socket, self.handle_control)
                await self.control.start()
            if self._use_reconciler:
                self.reconciler = Reconciler(ledger, ReconcileConfig.from_mapping(cfg.reconcile))
                self.reconciler.start()
            if cfg.fleet is not None:  # publishes in the background: a broker away never holds the hub up
                self.fleet = await FleetPublisher(cfg.fleet, ledger, cfg.database).start()
            if cfg.web is not None:
                self.web = start_web(cfg.web, cfg.database, ledger, self.status, self.count_lane)
                log.info("status page on %s", self.web.url)
                if self.web.fingerprint is not None:
                    log.info("status page certificate SHA-256 %s", self.web.fingerprint)
                if self.web.redirect_url is not None:
                    log.info("plain HTTP on %s redirects to the status page", self.web.redirect_url)
            if cfg.homeassistant is not None:  # connects in the background: a broker away never holds the hub up
                self.homeassistant = HomeAssistantBridge(cfg.homeassistant, cfg.database, ledger.changes, self.status)
                self.homeassistant.start()
        except BaseException:
            await self.stop()
            raise
        self.started_ns = time.monotonic_ns()
        self.status_mark = status.StatusMark(self.started_ns)
        if not cfg.nodes:
            log.warning("no nodes configured: add [[node]] tables to %s", cfg.path)
        log.info("hub running: %d node(s), database %s (synchronous=%s)", len(cfg.nodes), cfg.database,
                 cfg.synchronous)  # fmt: skip
        return self

    async def stop(self) -> None:
        if self.homeassistant is not None:
            await self.homeassistant.stop()  # says offline; reads the ledger: before it closes
            self.homeassistant = None
        if self.web is not None:
            await self.web.stop()  # first: its requests write through the ledger, which is still running
            self.web = None
        if self.reconciler is not None:
            await self.reconciler.stop()
            self.reconciler = None
        if self.fleet is not None:
            await self.fleet.stop()  # its cursor is written by the ledger: before it closes
            self.fleet = None
        for link in self.links:
            link.pause_reading()
        if self.ingest is not None:
            await self.ingest.stop()
            await self.ingest.cancel_jobs()
            await self.ingest.settle()
        if self.ledger is not None:
            await self.ledger.close()  # commits everything submitted; the resulting acks go out now
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        if self.ingest is not None:
            await self.ingest.close()
        for link in self.links:
            await link.close()
        self.links = []
        if self.ble is not None:
            await self.ble.close()
            self.ble = None
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader.close()
            self.reader = None
        self.ingest = None
        self.ledger = None

    async def __aenter__(self) -> HubService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _open_link(self, node: NodeConfig) -> None:
        if not self._open_ports or self.ingest is None:
            return
        if node.link == "ble":
            if self.ble is None:
                self.ble = BleCentral(self.config.ble, self.ingest.enqueue, self._wants_downlink)
            session = self.ingest.nodes.get(node.node_id)
            ble_link = self.ble.add_node(node)
            if session is not None:
                session.link = ble_link  # answered there (connected or not: the central connects when it must)
            return
        link = SerialLink(
            node.port,
            node.baud,
            self.ingest.enqueue,
            label=node.port,
            reopen_min_s=self.reopen_min_s,
            reopen_max_s=self.reopen_max_s,
        )
        self.links.append(link)
        link.start()

    def _wants_downlink(self, node_id: int) -> bool:
        """Node ``node_id``'s session has an ack or a command to send (a BLE node then needs a connection)."""
        session = self.ingest.nodes.get(node_id) if self.ingest is not None else None
        return session is not None and (session.ack_wanted or bool(session.commands))

    def _links_on(self, port: str) -> list[SerialLink]:
        want = os.path.realpath(port)
        found = [link for link in self.links if os.path.realpath(link.port) == want]
        if not found:
            raise UnknownPort(f"no node of this hub is on {port}")
        return found

    def release_port(self, port: str, seconds: float) -> None:
        """Let go of a node's port for ``seconds`` (``smartshelf flash`` asks, then ``resume_port``)."""
        for link in self._links_on(port):
            link.release(seconds)
        log.info("%s: released for %.0f s (smartshelf flash)", port, seconds)

    def resume_port(self, port: str) -> None:
        for link in self._links_on(port):
            link.resume()

    async def reload_nodes(self) -> list[int]:
        """Follow the configuration (``hub.toml`` and its nodes files) as it is now: serve the nodes added since the
        hub started, stop serving the ones no longer there (a board re-provisioned under a new id: its old id's
        link lets go of the port). A node still configured keeps its key and port until the hub restarts. The ids
        added."""
        if self.ingest is None or self.ledger is None or self.reader is None:
            return []
        async with self._reloading:  # two requests at once: the second finds the first one's nodes there
            ingest = self.ingest
            cfg = load_config(self.config.path)
            check_key_files(cfg.key_files)  # keys other users could read: not taken (the control request says why)
            wanted = {n.node_id for n in cfg.nodes}
            for old in [n for n in self.config.nodes if n.node_id not in wanted]:
                for link in [link for link in self.links if old.link == "serial" and link.port == old.port]:
                    self.links.remove(link)
                    await link.close()
                if old.link == "ble" and self.ble is not None:
                    await self.ble.remove_node(old.node_id)
                ingest.remove_node(old.node_id)
                log.info("node %d no longer configured: not served (%s)", old.node_id, old.port or "ble")
            kept = tuple(n for n in self.config.nodes if n.node_id in wanted)
            new = [n for n in cfg.nodes if n.node_id not in ingest.nodes]
            sessions, uplink_seqs = await restore_sessions(self.ledger, self.reader, new)
            for session, node in zip(sessions, new, strict=True):
                ingest.add_node(session, uplink_seqs.get(node.node_id, 0))
                had_ble = self.ble is not None
                self._open_link(node)
                if self.ble is not None and not had_ble:
                    self.ble.start()
                log.info("node %d added (%s)", node.node_id, node.port or "ble")
            self.config = replace(self.config, nodes=kept + tuple(new))
            return [n.node_id for n in new]

    async def replace_node(self, old: int, new: int, *, actor: str) -> list[str]:
        """Node ``new`` (a board provisioned in place of ``old``: replaced, or wiped) takes over ``old``'s lanes in
        the ledger (``Tx.replace_node``); the hub then follows its configuration (``reload_nodes``: ``new`` served,
        ``old`` no longer, once the nodes file says so). ``new`` starts afresh: its first report of each lane books
        the lane down to its count as a sensor gap. The lane ids handed over."""
        if self.ledger is None or self.ingest is None:
            raise CommandError("the hub is not running")

        async def move(tx: Tx) -> tuple[list[str], dict[tuple[int, int], tuple[int, int]]]:
            lanes = await tx.replace_node(old, new, actor=actor)
            return lanes, sensor_tallies_of(await tx.rows(SENSOR_TALLIES))  # as committed, in the same transaction

        lanes, raw = await self.ledger.transact(move)
        tallies = lane_tallies(raw)
        for node_id in (old, new):  # either still served (configured by hand): its tallies are its lanes' now,
            served = self.ingest.nodes.get(node_id)  # set before any later commit's outcome counts in them
            if served is not None:
                served.tallies = tallies.get(node_id, {})
        await self.reload_nodes()
        log.info("node %d took over the lanes of node %d: %s", new, old, ", ".join(lanes))
        return lanes

    async def healthy(self) -> bool:
        """The ledger's writer takes a transaction and finishes it (an empty one: nothing is written); for the
        systemd watchdog (``hub/service/watchdog.py``)."""

        async def nothing(tx: object) -> bool:
            return True

        if self.ledger is None:
            return False
        try:
            return await self.ledger.transact(nothing)
        except LedgerError:
            return False

    async def run(self, stop: asyncio.Event, status_interval_s: float | None = None) -> None:
        """Log a status line every ``status_interval_s`` until ``stop`` is set."""
        interval = status_interval_s or self.config.status_interval_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if not stop.is_set():
                log.info("%s", self.status_line())

    # ------------------------------------------------------------------------------------------- commands

    async def command(
        self, node_id: int, message: Message, *, timeout_s: float = 10.0, actor: str = "hub"
    ) -> CommandOutcome:
        """Send ``message`` (Tare, Calibrate, SetLane, Identify, SetConfig, RequestState) to a node and wait for
        its answer, which is also written to the audit trail."""
        if self.ingest is None:
            raise CommandError("the hub is not running")
        return await self.ingest.command(node_id, message, timeout_s=timeout_s, actor=actor)

    async def set_lane(
        self, node_id: int, lane: int, sku: str, *, actor: str, lane_id: str | None = None, timeout_s: float = 10.0
    ) -> CommandOutcome:
        """Send the node the unit weight and spread of ``sku`` for the lane, and once it has taken them assign ``sku``
        to the lane in the ledger (the source of truth, re-sent after every hello): the ledger never holds a lane the
        node refused. A lane beyond the lanes the node reported (its hello, or a BLE node's beacon) is refused first
        (``InvalidArgument``), and so are an unknown SKU and a node not heard since the hub started, waited for within
        ``timeout_s`` (a board just flashed says its next hello seconds later: ``node_lanes``; one
        heard without a hello, its session going on across a hub restart, decides by its answer); so is
        what the ledger would refuse (a lane that still holds book stock of its old SKU, a lane id in use), in a trial
        transaction that writes nothing. A node that refuses, or does not answer in time, leaves the ledger as it was;
        after an OK (and after no answer: the node may have taken it) the node is sent the ledger's assignments again
        once everything queued for it is done, so a hello's assignments read before the write cannot be its last."""
        if self.ledger is None or self.reader is None or self.ingest is None:
            raise CommandError("the hub is not running")
        if self.config.node(node_id) is None:
            raise UnknownNode.of(node_id, (n.node_id for n in self.config.nodes), self.config.path)
        record = await self.reader.sku(sku)
        if record is None:
            raise InvalidArgument(f"unknown SKU {sku!r}: add it first (smartshelf ledger add-sku); nothing sent")
        ingest, ble = self.ingest, self.ble

        def lookup() -> tuple[NodeSession | None, NodeBeacon | None]:
            return ingest.nodes.get(node_id), ble.book.nodes.get(node_id) if ble is not None else None

        async def trial(tx: Tx) -> None:  # the ledger's refusals before the node hears anything; rolled back
            await tx.assign_lane(node_id, lane, sku, actor=actor, lane_id=lane_id)
            raise _Trial

        with contextlib.suppress(_Trial):
            await self.ledger.transact(trial)
        # A board just flashed says its next hello seconds later: wait for it within the timeout, keeping at least
        # half of it (up to 5 s) for the command itself.
        started, keep = asyncio.get_running_loop().time(), min(timeout_s / 2, 5.0)
        await wait_heard(lookup, timeout_s - keep)
        check_lane(node_id, lane, sku, *lookup(), self.config.path)
        timeout_s = max(keep, timeout_s - (asyncio.get_running_loop().time() - started))
        message = SetLane(lane, record.unit_weight_dg, record.spread_permille, sku)
        try:
            outcome = await self.command(node_id, message, timeout_s=timeout_s, actor=actor)
        except CommandTimeout as exc:  # it may have taken it, its answer lost: it gets the ledger's back
            self.ingest.resend_assignments(node_id)
            raise CommandTimeout(f"{exc}; lane {lane} is not assigned in the ledger: run set-lane again") from exc
        if outcome.ok:
            try:
                await self.ledger.assign_lane(node_id, lane, sku, actor=actor, lane_id=lane_id)
            except LedgerError as exc:
                raise CommandError(
                    f"the node took the lane, the ledger did not ({exc}): the node gets the ledger's assignment back"
                ) from exc
            finally:
                # Whatever a hello meanwhile sent the node from the ledger as it was, the ledger's assignments as
                # they are now go after it (read by a job that runs once the jobs before it are done).
                self.ingest.resend_assignments(node_id)
        return outcome

    async def set_count(
        self, node_id: int, lane: int, count: int, *, actor: str, timeout_s: float = 10.0
    ) -> SetCountOutcome:
        """Staff counted ``count`` units on a lane (the stock a shelf is installed with, or a recount). The node
        sets its lane count and records the difference as count events, which reach the ledger like its other
        events (observed stock, reason ``sensor_count``); once the node has taken it, the count is booked as a
        physical count of the lane's book stock (book vs counted, under ``count:node<N>.lane<L>.boot<B>.cmd<S>``,
        plus a random suffix), and in the same transaction the staff corrections of the lane's sensor movements are
        absorbed (``Tx.rebase_lane``: the node's counter is the count now). A node that answers busy changes nothing.
        A node that does not answer in time may still have taken the count: ``CommandTimeout`` says so, and the same
        count again is the remedy (the node finds it agrees, answers OK, and the physical count is booked)."""
        if self.ledger is None or self.reader is None:
            raise CommandError("the hub is not running")
        if self.config.node(node_id) is None:
            raise UnknownNode.of(node_id, (n.node_id for n in self.config.nodes), self.config.path)
        record = next((x for x in await self.reader.lanes(node_id) if x.lane_index == lane), None)
        if record is None or record.sku is None:
            what = "is not in the ledger" if record is None else "has no SKU"
            raise InvalidArgument(
                f"lane {lane} of node {node_id} {what}: assign a SKU first (set-lane); the count is booked on it"
            )
        try:
            outcome = await self.command(node_id, SetCount(lane, count), timeout_s=timeout_s, actor=actor)
        except CommandTimeout as exc:
            raise CommandTimeout(f"{exc}; the node may still take the count: send the same count again") from exc
        if not outcome.ok:
            return SetCountOutcome(outcome, record.lane_id, record.sku, None)
        ref = f"node{node_id}.lane{lane}.boot{outcome.session}.cmd{outcome.seq}.{uuid.uuid4().hex[:8]}"
        lane_id, sku = record.lane_id, record.sku

        async def book(tx: Tx) -> tuple[CountResult, int]:  # the count re-bases the lane's sensor ledger with it
            counted = await tx.count(sku, count, actor=actor, ref=ref, location=lane_location(lane_id))
            return counted, await tx.rebase_lane(lane_id, actor=actor, ref=ref)

        try:
            booked, absorbed = await self.ledger.transact(book)
        except LedgerError as exc:
            raise CommandError(
                f"the node took the count, the book count was not recorded ({exc}): send it again"
            ) from exc
        return SetCountOutcome(outcome, lane_id, sku, booked, absorbed)

    async def count_lane(self, node_id: int, lane: int, count: int, actor: str) -> tuple[bool, str]:
        """``set_count`` for the shelf page: (booked, one line saying what happened or why not)."""
        try:
            outcome = await self.set_count(node_id, lane, count, actor=actor)
        except (CommandError, LedgerError) as exc:
            return False, str(exc)
        return outcome.count is not None, outcome.summary()

    async def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request from the control socket (``smartshelf hub command`` / ``status``)."""
        return await handle_request(self, request)

    # --------------------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        out = status.snapshot(self.ingest, self.links, self.started_ns, self.ble)
        out["fleet"] = self.fleet.status() if self.fleet is not None else None
        return out

    def status_line(self) -> str:
        line = status.line(self.ingest, self.status_mark)
        return f"{line}; {self.fleet.line()}" if self.fleet is not None else line
