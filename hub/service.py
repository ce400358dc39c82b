"""``HubService``: the running hub. Ledger writer + serial links + ingest + control socket, started and
stopped in the right order.

Start: claim the control socket (refuse if another hub answers on it), open the ledger (creating or upgrading
the database; scheduled backups from the config), restore each configured node's protocol state from the
``nodes`` table (last uplink seq, downlink session and reservation, contiguous event mark and the events stored
above it), start ingest, one ``SerialLink`` per configured port, and the control server.

Stop: stop reading from the ports, let ingest handle the frames already read, wait for audit writes, close the
ledger (everything submitted commits and its acks still go out on the open ports), then close ports and socket.

In-process API (for the status page): ``await hub.command(node_id, message)`` / ``await hub.set_lane(...)``
return a ``CommandOutcome`` or raise a ``CommandError``; ``hub.status()`` is a JSON-ready snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from hub.config import HubConfig
from hub.control import ControlServer, claim
from hub.ingest import Ingest
from hub.ledger.backup import BackupPolicy
from hub.ledger.models import InvalidArgument, LedgerError
from hub.ledger.service import LedgerService
from hub.nodes import CommandError, CommandOutcome, LaneTally, NodeLink, UnknownNode
from hub.queries import HubReader
from hub.reconcile.config import ReconcileConfig
from hub.reconcile.reconciler import Reconciler
from hub.schema import MIGRATIONS
from hub.transport.serial import SerialLink
from hub.web.server import WebServer
from shared_protocol.errors import ProtocolError
from shared_protocol.messages import Calibrate, Identify, Message, SetLane, Tare

log = logging.getLogger(__name__)

COMMAND_NAMES = ("tare", "calibrate", "set-lane", "identify")


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
        self.reader: HubReader | None = None
        self.ingest: Ingest | None = None
        self.links: list[SerialLink] = []
        self.control: ControlServer | None = None
        self._use_control = control
        self._open_ports = open_ports  # False: frames come only through ``ingest.enqueue`` (benchmarks)
        self._use_reconciler = reconcile
        self.reconciler: Reconciler | None = None
        self.web: WebServer | None = None
        self._started_ns = 0
        self._last_status: tuple[int, int, int] = (0, 0, 0)  # monotonic ns, frames, applied

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> HubService:
        cfg = self.config
        cfg.database.parent.mkdir(parents=True, exist_ok=True)
        if self._use_control:
            cfg.control_socket.parent.mkdir(parents=True, exist_ok=True)
            claim(cfg.control_socket)
        backups = None
        if cfg.backup is not None:
            cfg.backup.directory.mkdir(parents=True, exist_ok=True)
            backups = BackupPolicy(cfg.backup.directory, cfg.backup.interval_s, cfg.backup.keep)
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
            self.reader = reader = await HubReader.open(cfg.database)
            nodes: list[NodeLink] = []
            seqs: dict[int, int] = {}
            for n in cfg.nodes:
                state = await reader.node(n.node_id)
                if state is None:
                    nodes.append(NodeLink.restore(n.node_id, n.key, n.port))
                    continue
                above = await reader.events_above(n.node_id, state.highest_contiguous_event_seq)
                nodes.append(
                    NodeLink.restore(
                        n.node_id,
                        n.key,
                        n.port,
                        contiguous=state.highest_contiguous_event_seq,
                        above=above,
                        downlink_session=state.downlink_session,
                        downlink_seq=state.downlink_seq,
                    )
                )
                seqs[n.node_id] = state.last_uplink_seq
            tallies = await reader.sensor_tallies()
            for node in nodes:
                for (node_id, lane), (total, max_event) in tallies.items():
                    if node_id == node.node_id:
                        node.tallies[lane] = LaneTally(total, max_event)
            self.ingest = ingest = Ingest(ledger, reader, nodes)
            for node_id, seq in seqs.items():
                ingest.restore_uplink_seq(node_id, seq)
            ingest.start()
            for n in cfg.nodes if self._open_ports else ():
                link = SerialLink(
                    n.port,
                    n.baud,
                    ingest.enqueue,
                    label=n.port,
                    reopen_min_s=self.reopen_min_s,
                    reopen_max_s=self.reopen_max_s,
                )
                self.links.append(link)
                link.start()
            if self._use_control:
                self.control = ControlServer(cfg.control_socket, self.handle_control)
                await self.control.start()
            if self._use_reconciler:
                self.reconciler = Reconciler(ledger, ReconcileConfig.from_mapping(cfg.reconcile))
                self.reconciler.start()
            if cfg.web is not None:
                self.web = WebServer.start(
                    cfg.database,
                    ledger,
                    asyncio.get_running_loop(),
                    host=cfg.web.host,
                    port=cfg.web.port,
                    threads=cfg.web.threads,
                    max_live_clients=cfg.web.max_live_clients,
                    status=self.status,
                )
                log.info("status page on %s", self.web.url)
        except BaseException:
            await self.stop()
            raise
        self._started_ns = time.monotonic_ns()
        self._last_status = (self._started_ns, 0, 0)
        if not cfg.nodes:
            log.warning("no nodes configured: add [[node]] tables to %s", cfg.path)
        log.info("hub running: %d node(s), database %s (synchronous=%s)", len(cfg.nodes), cfg.database,
                 cfg.synchronous)  # fmt: skip
        return self

    async def stop(self) -> None:
        if self.web is not None:
            await self.web.stop()  # first: its requests write through the ledger, which is still running
            self.web = None
        if self.reconciler is not None:
            await self.reconciler.stop()
            self.reconciler = None
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
        """Assign ``sku`` to the lane in the ledger (the source of truth, re-sent after every hello), then send
        the node its unit weight and spread."""
        if self.ledger is None or self.reader is None:
            raise CommandError("the hub is not running")
        if self.config.node(node_id) is None:
            raise UnknownNode(f"node {node_id} is not configured")
        record = await self.reader.sku(sku)
        if record is None:
            raise CommandError(f"unknown SKU {sku!r}: add it first (smartshelf ledger add-sku)")
        await self.ledger.assign_lane(node_id, lane, sku, actor=actor, lane_id=lane_id)
        message = SetLane(lane, record.unit_weight_dg, record.spread_permille, sku)
        return await self.command(node_id, message, timeout_s=timeout_s, actor=actor)

    async def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op != "command":
            return {"ok": False, "error": f"unknown op {op!r} (command, status)"}
        try:
            node_id = _int(request, "node")
            timeout_s = float(request.get("timeout_s", 10.0))
            actor = str(request.get("actor") or "control")
            name = request.get("command")
            if name == "set-lane":
                outcome = await self.set_lane(
                    node_id, _int(request, "lane"), str(request.get("sku", "")), actor=actor, timeout_s=timeout_s
                )
            else:
                outcome = await self.command(node_id, _message(name, request), timeout_s=timeout_s, actor=actor)
        except (CommandError, LedgerError, ProtocolError, ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}
        return {
            "ok": True,
            "node": outcome.node_id,
            "command": outcome.command,
            "args": outcome.args,
            "session": outcome.session,
            "seq": outcome.seq,
            "status": outcome.status_name,
            "value": outcome.value,
            "elapsed_s": round(outcome.elapsed_s, 3),
        }

    # --------------------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        ingest = self.ingest
        now = time.monotonic_ns()
        nodes: list[dict[str, Any]] = []
        if ingest is not None:
            for node in ingest.nodes.values():
                s = node.stats
                nodes.append(
                    {
                        "node_id": node.node_id,
                        "port": node.config_port,
                        "link": node.link.name if node.link is not None else None,
                        "up": node.up,
                        "session": node.session,
                        "contiguous_event_seq": node.marks.contiguous,
                        "last_seen_s_ago": round((now - s.last_seen_ns) / 1e9, 3) if s.last_seen_ns else None,
                        "last_seen_ms": s.last_seen_ms or None,
                        "frames": s.frames,
                        "events": s.events,
                        "applied": s.applied,
                        "duplicates": s.duplicates,
                        "failed": s.failed,
                        "acks_sent": s.acks_sent,
                        "commands_sent": s.commands_sent,
                        "downlink_dropped": s.downlink_dropped,
                        "gaps": s.gaps,
                        "hellos": s.hellos,
                        "forged_frames": ingest.forged(node.node_id),
                        "rejected": ingest.rejects_by_reason(node.node_id),
                        "firmware": _fw(node),
                        "health": node.health.to_dict() if node.health is not None else None,
                        "lane_states": {str(k): v.to_dict() for k, v in sorted(node.lane_states.items())},
                        "rfid_present": len(node.rfid_present),
                    }
                )
        links = [
            {
                "port": link.name,
                "connected": link.connected,
                "opens": link.stats.opens,
                "disconnects": link.stats.disconnects,
                "bytes_in": link.stats.bytes_in,
                "frames_in": link.stats.frames_in,
                "garbage_chunks": link.stats.garbage_chunks,
                "garbage_bytes": link.stats.garbage_bytes,
                "frames_out": link.stats.frames_out,
                "dropped_out": link.stats.dropped_out,
                "last_error": link.stats.last_error,
            }
            for link in self.links
        ]
        totals: dict[str, Any] = {}
        if ingest is not None:
            st = ingest.stats
            totals = {
                "frames": st.frames,
                "accepted": st.accepted,
                "rejected": st.rejected,
                "rejected_unknown_node": ingest.rejects_by_reason(0),
                "overruns": st.overruns,
                "events": st.events,
                "applied": st.applied,
                "duplicates": st.duplicates,
                "failed": st.failed,
                "acks_sent": st.acks_sent,
                "commands_sent": st.commands_sent,
                "gaps": st.gaps,
                "uptime_s": round((now - self._started_ns) / 1e9, 1) if self._started_ns else 0,
            }
        return {"nodes": nodes, "links": links, "totals": totals}

    def status_line(self) -> str:
        ingest = self.ingest
        if ingest is None:
            return "status: not running"
        now = time.monotonic_ns()
        t0, frames0, applied0 = self._last_status
        st = ingest.stats
        dt = max((now - t0) / 1e9, 1e-9)
        self._last_status = (now, st.frames, st.applied)
        parts = [
            f"status: {(st.frames - frames0) / dt:.1f} frames/s",
            f"events applied {st.applied} (+{st.applied - applied0}, {st.duplicates} duplicate, {st.failed} failed)",
            f"rejected {st.rejected}",
        ]
        for node in ingest.nodes.values():
            seen = node.stats.last_seen_ns
            ago = f"{(now - seen) / 1e9:.1f}s ago" if seen else "never"
            forged = ingest.forged(node.node_id)
            parts.append(
                f"node {node.node_id} {'up' if node.up else 'down'} seen {ago} ack {node.marks.contiguous}"
                + (f" forged {forged}" if forged else "")
            )
        return "; ".join(parts)


def _int(request: dict[str, Any], name: str) -> int:
    value = request.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return value


def _message(name: object, request: dict[str, Any]) -> Message:
    if name == "tare":
        return Tare(_int(request, "lane"))
    if name == "calibrate":
        grams = request.get("grams")
        if not isinstance(grams, (int, float)) or isinstance(grams, bool):
            raise ValueError(f"grams must be a number, not {grams!r}")
        dg = round(grams * 10)
        if not 1 <= dg <= 1_000_000:
            raise InvalidArgument(f"calibration weight {grams} g is outside 0.1 g .. 100 kg")
        return Calibrate(_int(request, "lane"), dg)
    if name == "identify":
        return Identify(_int(request, "seconds"))
    raise ValueError(f"unknown command {name!r} ({', '.join(COMMAND_NAMES)})")


def _fw(node: NodeLink) -> str | None:
    h = node.hello
    return f"{h.fw_major}.{h.fw_minor}.{h.fw_patch}" if h is not None else None
