"""Commands the hub sends to nodes: each node's queue, a caller waiting for the answer, and the audit records.

* ``CommandQueue`` (one per node) holds the commands waiting to be sent, in order, and the last
  ``MAX_SENT_COMMANDS`` sent ones by downlink seq, so an answer that comes late still finds its command. At most
  ``MAX_BACKLOG`` wait: the hub's own commands (lane assignments and state requests after each hello, however many
  hellos a node sends) wait once each (an equal one already waiting is enough), and beyond the bound they are dropped
  and a person's command is refused (``CommandError``), both counted in ``dropped``.
* ``CommandDesk`` (one per hub) is what ``HubService.command`` reaches: ``call`` queues a command, lets the node's
  session send it as soon as the link and its downlink reservation allow, and waits for the node's
  ``command_result`` (``answered``) within a timeout. Answers to commands a person asked for, refusals of the hub's
  own commands (``set_lane`` after a hello), timeouts and answers to unknown commands are written to the audit
  trail (actor ``node:<id>``, action ``command`` / ``command_timeout``), off the frame path, in the background,
  from where the command was asked for (its origin, ``hub.ledger.origin``: the hub's own commands are ``auto``).
  Answers to unknown commands are recorded at most ``UNKNOWN_BURST`` at once and one per ``UNKNOWN_REFILL_S`` after
  that, per node (a node sending them in a loop cannot fill the audit trail); the others are counted
  (``unknown_unrecorded``) and logged at debug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from hub.ledger.origin import acting_from
from hub.ledger.origin import current as current_origin
from hub.ledger.service import LedgerService
from shared_protocol.messages import (
    DOWNLINK,
    STATUS_BAD_ARGS,
    STATUS_BUSY,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_UNSUPPORTED,
    Ack,
    CommandResult,
    Message,
)

log = logging.getLogger(__name__)

MAX_SENT_COMMANDS = 256  # sent commands remembered per node for late answers
MAX_BACKLOG = 256  # commands waiting to be sent per node
UNKNOWN_BURST = 16  # answers to unknown commands recorded in the audit trail at once, per node ...
UNKNOWN_REFILL_S = 60.0  # ... then one per minute
STATUS_NAMES = {
    STATUS_OK: "ok",
    STATUS_BAD_ARGS: "bad_args",
    STATUS_UNSUPPORTED: "unsupported",
    STATUS_BUSY: "busy",
    STATUS_FAILED: "failed",
}


class CommandError(Exception):
    """A command could not be delivered or answered; the message says why."""


class UnknownNode(CommandError):
    """A command for a node the hub does not have; ``UnknownNode.of`` makes its line (the only place that does)."""

    @classmethod
    def of(cls, node_id: int, configured: Iterable[int], config: object = "hub.toml") -> UnknownNode:
        """``node 42 is not configured (this hub has nodes 1, 2: hub.toml's [[node]] tables and its nodes_files)``:
        the nodes the hub has (``configured``) and where nodes are configured (``config``: the hub's hub.toml)."""
        return cls(
            f"node {node_id} is not configured (this hub has {node_list(configured)}:"
            f" {config}'s [[node]] tables and its nodes_files)"
        )


def node_list(node_ids: Iterable[int]) -> str:
    """``no nodes``, ``node 3``, ``nodes 1, 2``, ``nodes 1..12, 15``: runs of three or more as ``first..last``."""
    ids = sorted(set(node_ids))
    if not ids:
        return "no nodes"
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = [f"{r[0]}..{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs]
    return f"node{'s' if len(ids) > 1 else ''} {', '.join(parts)}"


class CommandTimeout(CommandError):
    pass


class NodeRebooted(CommandError):
    pass


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    node_id: int
    command: str
    args: dict[str, Any]
    session: int
    seq: int
    status: int
    value: int
    elapsed_s: float

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, f"status {self.status}")

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


@dataclass(slots=True)
class PendingCommand:
    message: Message
    requested_by: str
    future: asyncio.Future[CommandOutcome] | None = None  # None: fire and record (set_lane after hello, ...)
    record: bool = True  # write the answer to the audit trail
    created_ns: int = 0
    session: int = 0  # set when sent
    seq: int = 0
    abandoned: bool = False  # the caller gave up before it was sent
    origin: str | None = None  # where it was asked for (hub.ledger.origin); None: the hub's own

    def describe(self) -> dict[str, Any]:
        d = self.message.to_dict()
        return {"command": d.pop("type"), "args": d}

    def fail(self, exc: CommandError) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)
            # retrieved here: whoever awaits it still gets it, and a future nobody awaits any more (its job was
            # cancelled as the hub stops) is not logged as an error when it is collected
            self.future.exception()


class CommandQueue:
    """One node's commands: waiting to be sent, and sent but not answered yet."""

    __slots__ = ("_backlog", "_budget", "_budget_at", "_sent", "dropped", "sent_forgotten", "unknown_unrecorded")

    def __init__(self) -> None:
        self._backlog: deque[PendingCommand] = deque()
        self._sent: OrderedDict[int, PendingCommand] = OrderedDict()
        self.dropped = 0  # commands not queued: the backlog was full
        self.sent_forgotten = 0  # sent ones forgotten unanswered (beyond MAX_SENT_COMMANDS): a late answer is unknown
        self.unknown_unrecorded = 0  # answers to unknown commands not written to the audit trail
        self._budget = float(UNKNOWN_BURST)
        self._budget_at = time.monotonic()

    def __bool__(self) -> bool:
        """Is a command waiting to be sent?"""
        return bool(self._backlog)

    def __len__(self) -> int:
        """Commands waiting to be sent."""
        return len(self._backlog)

    def push(self, cmd: PendingCommand) -> None:
        """Queue a person's command; ``CommandError`` when ``MAX_BACKLOG`` commands are waiting already."""
        if len(self._backlog) >= MAX_BACKLOG:
            self.dropped += 1
            raise CommandError(f"{MAX_BACKLOG} commands are waiting for this node: try again later")
        self._backlog.append(cmd)

    def internal(self, message: Message) -> None:
        """A command of the hub's own (lane assignments, state requests): audited only when refused. Not queued
        again while an equal one waits, nor beyond ``MAX_BACKLOG`` (dropped, counted)."""
        if any(c.message == message and not c.record and not c.abandoned for c in self._backlog):
            return
        if len(self._backlog) >= MAX_BACKLOG:
            self.dropped += 1
            return
        self._backlog.append(PendingCommand(message, "hub", record=False, created_ns=time.monotonic_ns()))

    def may_record_unknown(self) -> bool:
        """May an answer to an unknown command go to the audit trail now (``UNKNOWN_BURST``, then one per
        ``UNKNOWN_REFILL_S``)? False counts it as unrecorded."""
        now = time.monotonic()
        self._budget = min(float(UNKNOWN_BURST), self._budget + (now - self._budget_at) / UNKNOWN_REFILL_S)
        self._budget_at = now
        if self._budget >= 1.0:
            self._budget -= 1.0
            return True
        self.unknown_unrecorded += 1
        return False

    def take(self) -> PendingCommand | None:
        """The next command to send (commands whose caller gave up are skipped), or None."""
        while self._backlog:
            cmd = self._backlog.popleft()
            if not cmd.abandoned:
                return cmd
        return None

    def sent_as(self, cmd: PendingCommand, session: int, seq: int) -> None:
        cmd.session, cmd.seq = session, seq
        self._sent[seq] = cmd
        while len(self._sent) > MAX_SENT_COMMANDS:
            self._sent.popitem(last=False)
            self.sent_forgotten += 1

    def answered(self, seq: int) -> PendingCommand | None:
        return self._sent.pop(seq, None)

    def forget_sent(self, why: CommandError) -> None:
        """A new boot session: the node will never answer what it was sent before; their callers get ``why``."""
        for cmd in self._sent.values():
            cmd.fail(why)
        self._sent.clear()

    def all(self) -> Iterator[PendingCommand]:
        yield from self._backlog
        yield from self._sent.values()


class Addressee(Protocol):
    """What the desk needs of a node's session (``hub.link.session.NodeSession``)."""

    @property
    def node_id(self) -> int: ...

    @property
    def session(self) -> int: ...

    @property
    def commands(self) -> CommandQueue: ...

    def transmit(self) -> None: ...


class CommandDesk:
    def __init__(self, ledger: LedgerService) -> None:
        self.ledger = ledger
        self._writes: set[asyncio.Task[None]] = set()

    async def call(
        self, node: Addressee, message: Message, *, timeout_s: float = 10.0, actor: str = "hub"
    ) -> CommandOutcome:
        """Send ``message`` to ``node`` and wait for its ``command_result`` (recorded in the audit trail).

        Queued while the node is not connected or has no session yet (sent after its next hello); raises
        ``CommandTimeout`` (also recorded) or ``NodeRebooted``, and ``ValueError`` / ``ProtocolError`` for
        something that is not a command or out of range (checked now, not when it is sent)."""
        if message.DIRECTION != DOWNLINK or isinstance(message, Ack):
            raise ValueError(f"{message.NAME} is not a command")
        message.encode_payload()  # range checks now (ProtocolError), not when it is sent
        fut: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
        cmd = PendingCommand(message, actor, fut, created_ns=time.monotonic_ns(), origin=current_origin())
        node.commands.push(cmd)
        node.transmit()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            cmd.abandoned = True
            sent = cmd.seq != 0
            self._record(
                node.node_id,
                cmd,
                {"status": "timeout", "sent": sent, "timeout_s": timeout_s},
                action="command_timeout",
            )
            why = "did not answer" if sent else "was not reachable (not connected or no hello yet)"
            raise CommandTimeout(f"node {node.node_id} {why}: {message.NAME} timed out after {timeout_s:g} s") from None

    def answered(self, node: Addressee, msg: CommandResult, arrival_ns: int) -> None:
        """A node's ``command_result``: resolve the waiting call, log it, and record it when it is audited."""
        cmd = node.commands.answered(msg.command_seq)
        if cmd is None:
            recorded = node.commands.may_record_unknown()
            log.log(
                logging.INFO if recorded else logging.DEBUG,
                "node %d: result for unknown command seq %d (status %d, value %d)",
                node.node_id,
                msg.command_seq,
                msg.status,
                msg.value,
            )
            if not recorded:
                return
            details = {"command": "unknown", "seq": msg.command_seq, "session": node.session}
            self._write(node.node_id, "command", {**details, "status": msg.status, "value": msg.value})
            return
        d = cmd.describe()
        elapsed_s = (arrival_ns - cmd.created_ns) / 1e9
        outcome = CommandOutcome(
            node.node_id, d["command"], d["args"], cmd.session, cmd.seq, msg.status, msg.value, elapsed_s
        )
        late = cmd.abandoned or (cmd.future is not None and cmd.future.done())
        if cmd.future is not None and not cmd.future.done():
            cmd.future.set_result(outcome)
        log.log(
            logging.INFO if outcome.ok else logging.WARNING,
            "node %d: %s %s -> %s (value %d)",
            node.node_id,
            outcome.command,
            outcome.args,
            outcome.status_name,
            outcome.value,
        )
        if cmd.record or not outcome.ok:
            extra: dict[str, Any] = {"status": outcome.status_name, "value": msg.value}
            if late:
                extra["late"] = True
            self._record(node.node_id, cmd, extra)

    async def settle(self, timeout_s: float = 5.0) -> None:
        """Wait for the audit writes in flight (before the ledger closes)."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)

    def _record(self, node_id: int, cmd: PendingCommand, extra: dict[str, Any], action: str = "command") -> None:
        details = cmd.describe()
        details.update(node_id=node_id, session=cmd.session, seq=cmd.seq, requested_by=cmd.requested_by)
        details.update(extra)
        self._write(node_id, action, details, cmd.origin)

    def _write(self, node_id: int, action: str, details: dict[str, Any], origin: str | None = None) -> None:
        async def write() -> None:
            try:
                await self.ledger.record_audit(f"node:{node_id}", action, details)
            except Exception as exc:
                log.warning("node %d: could not record %s: %s", node_id, action, exc)

        with acting_from(origin):  # the task takes the context it is created in
            self._spawn(write())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
