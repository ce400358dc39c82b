"""Commands the hub sends to nodes: each node's queue, a caller waiting for the answer, and the audit records.

* ``CommandQueue`` (one per node) holds the commands waiting to be sent, in order, and the last
  ``MAX_SENT_COMMANDS`` sent ones by downlink seq, so an answer that comes late still finds its command.
* ``CommandDesk`` (one per hub) is what ``HubService.command`` reaches: ``call`` queues a command, lets the node's
  session send it as soon as the link and its downlink reservation allow, and waits for the node's
  ``command_result`` (``answered``) within a timeout. Answers to commands a person asked for, refusals of the hub's
  own commands (``set_lane`` after a hello), timeouts and answers to unknown commands are written to the audit
  trail (actor ``node:<id>``, action ``command`` / ``command_timeout``), off the frame path, in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

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
    pass


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

    def describe(self) -> dict[str, Any]:
        d = self.message.to_dict()
        return {"command": d.pop("type"), "args": d}

    def fail(self, exc: CommandError) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)


class CommandQueue:
    """One node's commands: waiting to be sent, and sent but not answered yet."""

    __slots__ = ("_backlog", "_sent")

    def __init__(self) -> None:
        self._backlog: deque[PendingCommand] = deque()
        self._sent: OrderedDict[int, PendingCommand] = OrderedDict()

    def __bool__(self) -> bool:
        """Is a command waiting to be sent?"""
        return bool(self._backlog)

    def push(self, cmd: PendingCommand) -> None:
        self._backlog.append(cmd)

    def internal(self, message: Message) -> None:
        """A command of the hub's own (lane assignments, state requests): audited only when refused."""
        self._backlog.append(PendingCommand(message, "hub", record=False, created_ns=time.monotonic_ns()))

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
        cmd = PendingCommand(message, actor, fut, created_ns=time.monotonic_ns())
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
            log.info(
                "node %d: result for unknown command seq %d (status %d, value %d)",
                node.node_id,
                msg.command_seq,
                msg.status,
                msg.value,
            )
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
        self._write(node_id, action, details)

    def _write(self, node_id: int, action: str, details: dict[str, Any]) -> None:
        async def write() -> None:
            try:
                await self.ledger.record_audit(f"node:{node_id}", action, details)
            except Exception as exc:
                log.warning("node %d: could not record %s: %s", node_id, action, exc)

        self._spawn(write())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
