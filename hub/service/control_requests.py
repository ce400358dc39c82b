"""What the control socket's requests do (``smartshelf hub command`` / ``status``): parse one request, call the
running hub, answer one JSON object (``{"ok": false, "error": "<one line>"}`` for anything refused, with
``"bad_args": true`` when an argument was refused before anything was sent or written: a node this hub does not
have, a lane the node does not have, a calibration weight out of range, a set-lane for a node not heard since the
hub started)."""

from __future__ import annotations

from typing import Any, Protocol

from hub.config import ConfigError
from hub.ledger.models import InvalidArgument, LedgerError
from hub.link.commands import CommandError, CommandOutcome, UnknownNode
from hub.service.counting import SetCountOutcome
from shared_protocol.errors import ProtocolError
from shared_protocol.messages import Calibrate, Identify, Message, Tare

COMMAND_NAMES = ("tare", "calibrate", "set-lane", "identify", "set-count")


class Hub(Protocol):
    """What a request may reach of the running hub (``HubService``)."""

    def status(self) -> dict[str, Any]: ...

    async def command(
        self, node_id: int, message: Message, *, timeout_s: float = ..., actor: str = ...
    ) -> CommandOutcome: ...

    async def set_lane(
        self, node_id: int, lane: int, sku: str, *, actor: str, lane_id: str | None = ..., timeout_s: float = ...
    ) -> CommandOutcome: ...

    async def set_count(
        self, node_id: int, lane: int, count: int, *, actor: str, timeout_s: float = ...
    ) -> SetCountOutcome: ...

    def release_port(self, port: str, seconds: float) -> None: ...

    def resume_port(self, port: str) -> None: ...

    async def reload_nodes(self) -> list[int]: ...

    async def replace_node(self, old: int, new: int, *, actor: str) -> list[str]: ...


MAX_RELEASE_S = 3600.0


async def handle_request(hub: Hub, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "status":
        return {"ok": True, "status": hub.status()}
    if op == "replace-node":
        try:
            lanes = await hub.replace_node(
                _int(request, "old"), _int(request, "new"), actor=str(request.get("actor") or "control")
            )
        except (CommandError, LedgerError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "lanes": lanes}
    if op in ("release", "resume", "reload-nodes"):
        return await _port_request(hub, op, request)
    if op != "command":
        return {
            "ok": False,
            "error": f"unknown op {op!r} (command, status, release, resume, reload-nodes, replace-node)",
        }
    try:
        node_id = _int(request, "node")
        timeout_s = float(request.get("timeout_s", 10.0))
        actor = str(request.get("actor") or "control")
        name = request.get("command")
        counted: SetCountOutcome | None = None
        if name == "set-lane":
            outcome = await hub.set_lane(
                node_id, _int(request, "lane"), str(request.get("sku", "")), actor=actor, timeout_s=timeout_s
            )
        elif name == "set-count":
            counted = await hub.set_count(
                node_id, _int(request, "lane"), _int(request, "count"), actor=actor, timeout_s=timeout_s
            )
            outcome = counted.command
        else:
            outcome = await hub.command(node_id, _message(name, request), timeout_s=timeout_s, actor=actor)
    except (InvalidArgument, UnknownNode) as exc:  # refused before anything was sent or written (the CLI exits 2)
        return {"ok": False, "error": str(exc), "bad_args": True}
    except (CommandError, LedgerError, ProtocolError, ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}
    answer = _answer(outcome)
    if counted is not None:
        booked = counted.count
        answer["count"] = {
            "lane_id": counted.lane_id,
            "sku": counted.sku,
            "booked": booked is not None,
            "book": booked.book_qty if booked else None,
            "counted": booked.counted_qty if booked else None,
            "ref": booked.source_ref if booked else None,
            "summary": counted.summary(),
        }
    return answer


def _answer(outcome: CommandOutcome) -> dict[str, Any]:
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


async def _port_request(hub: Hub, op: str, request: dict[str, Any]) -> dict[str, Any]:
    """``smartshelf flash`` borrowing a node's port (release, resume) and announcing a new node (reload-nodes)."""
    try:
        if op == "reload-nodes":
            return {"ok": True, "added": await hub.reload_nodes()}
        port = request.get("port")
        if not isinstance(port, str) or not port:
            raise ValueError("port must be a device path")
        if op == "resume":
            hub.resume_port(port)
            return {"ok": True}
        seconds = request.get("seconds", 600)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 1 <= seconds <= MAX_RELEASE_S:
            raise ValueError(f"seconds must be 1..{MAX_RELEASE_S:.0f}, not {seconds!r}")
        hub.release_port(port, float(seconds))
        return {"ok": True}
    except (LookupError, ValueError, ConfigError, OSError) as exc:
        return {"ok": False, "error": str(exc)}
