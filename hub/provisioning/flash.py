"""``smartshelf flash``: install the firmware on a shelf node over USB and provision it for this hub.

    smartshelf flash [PORT] --nodes-file provisioned-nodes.toml --node-id 7 --layout shelf-a.json   # a new node
    smartshelf flash [PORT] --nodes-file provisioned-nodes.toml                                     # new firmware
    smartshelf flash [PORT] --nodes-file ... --node-id 8 --layout shelf-a.json --replaces 7 --config hub.toml

1. The port: the one given, or the one board plugged in (USB VID:PID of MicroPython's RP2040 and the ESP32
   bridges); it must exist and be free (a running hub holds its nodes' ports).
2. What is on the board (``device.Probe``): MicroPython 1.22 or newer, its architecture
   (``sys.implementation._mpy``), the free flash, the installed image and the node id of its config.
3. The image for that architecture (``image.build``: mpy-cross, or sources with ``--no-mpy``), checked to fit.
4. A new node (``--node-id`` and ``--layout``, the lanes' wiring as in ``config.json``): a fresh key in its
   ``config.json``, registered in the nodes file the hub reads. A node with a config keeps it and its key.
5. The install (``device.Device.install``): staged under ``/fw/<id>``, verified, switched by one rename, reset.
6. The node's ``hello`` with the installed version, read from the port with its key; one line says what was
   installed where. A new firmware that installs but says no hello is switched back to the one the board ran.
   Every failure is one line too, and leaves the board booting what it booted before.
7. With ``--config``: the nodes file must be one ``hub.toml`` lists in ``hub.nodes_files`` (refused before the board
   is touched), and a running hub reloads its nodes files after every flash (``reload-nodes``): a node it still
   does not serve is a failure (exit status 1), not a success the hub never hears of.
8. ``--replaces OLD`` (a board replaced, or wiped and provisioned again): the new node takes over OLD's lanes in
   the ledger (``Tx.replace_node``, through the running hub, or directly when none runs), and OLD leaves the nodes
   file. The new identity starts afresh on the board (``firmware/identity.py``): its first report of each lane books
   the lane down to its count as a sensor gap (nothing of OLD's, delivered or not, is merged into its events).

The command line is ``hub/cli/flash_command.py``; exit status 0 installed and heard, 1 the board or the install
failed (or the running hub does not serve the node), 2 bad arguments, layout or nodes file.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serial

from firmware import config as node_config
from hub.config import ConfigError, load_config
from hub.ledger import origin
from hub.ledger.dblock import DbLock
from hub.ledger.models import LedgerError
from hub.ledger.service import LedgerService
from hub.provisioning import image as images
from hub.provisioning.device import PROBE_TIMEOUT_S, Device, DeviceError, Probe
from hub.provisioning.image import MPY_VERSION, ImageError
from hub.provisioning.ports import check_port, choose_port, stable_name
from hub.provisioning.registry import known_key, known_to_ledger, read_by_hub, register, unregister
from hub.schema import MIGRATIONS
from hub.service.control import HubNotRunning, request
from hub.service.control_requests import MAX_RELEASE_S
from shared_protocol.auth import Key
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import UplinkReceiver
from shared_protocol.serial_framing import SerialDecoder

MIN_VERSION = (1, 22, 0)


class UsageError(Exception):
    """Bad arguments, layout or nodes file (exit status 2); one line."""


def new_config(node_id: int, layout_path: Path) -> tuple[bytes, bytes]:
    """(config.json, key) for a new node: the layout's lanes, the node id and a fresh key; checked as the node
    checks it."""
    try:
        text = layout_path.read_text()
    except OSError as err:
        raise UsageError(f"{layout_path}: cannot read it: {err.strerror}") from None
    try:
        layout = json.loads(text)
    except ValueError as err:
        raise UsageError(f"{layout_path}: not JSON: {err}") from None
    if not isinstance(layout, dict):
        raise UsageError(f"{layout_path}: must be a JSON object with the node's lanes")
    for field in ("node_id", "key"):
        if field in layout:
            raise UsageError(
                f"{layout_path}: {field}: not part of a layout (the node id is --node-id; keys are made here)"
            )
    key = secrets.token_bytes(32)
    doc = dict(layout, node_id=node_id, key=key.hex())
    try:
        node_config.parse(doc)
    except node_config.ConfigError as err:
        raise UsageError(f"{layout_path}: {err}") from None
    return json.dumps(doc).encode(), key


def check_board(port: str, probe: Probe, compiled: bool, arch: str | None) -> str:
    """The architecture to compile for; raises DeviceError when the board cannot run the image."""
    if probe.version < MIN_VERSION:
        have = ".".join(map(str, probe.version))
        raise DeviceError(f"{port}: unsupported MicroPython {have} (needs 1.22 or newer)")
    if compiled and probe.mpy_version != MPY_VERSION:
        raise DeviceError(
            f"{port}: the board loads .mpy v{probe.mpy_version}, this hub makes v{MPY_VERSION} (--no-mpy: sources)"
        )
    board_arch = probe.arch
    if arch is not None and arch != board_arch:
        raise DeviceError(f"{port}: wrong arch: the board is {board_arch or 'bytecode only'}, --arch asks for {arch}")
    return board_arch


def wait_hello(port: str, node_id: int, key: bytes, version: tuple[int, int, int], wait_s: float) -> tuple[float, int]:
    """Read the node's frames until its hello with ``version``: (seconds it took, boot count)."""
    rx = UplinkReceiver({node_id: Key(key)})
    dec = SerialDecoder()
    t0 = time.monotonic()
    seen = ""
    try:
        with serial.Serial(port, 115200, timeout=0.1, exclusive=True) as ser:
            while time.monotonic() - t0 < wait_s:
                for raw in dec.feed(ser.read(4096)):
                    try:
                        msg = rx.accept(raw).message.to_dict()
                    except ProtocolError:
                        continue
                    if msg["type"] != "hello":
                        continue
                    got = (msg["fw_major"], msg["fw_minor"], msg["fw_patch"])
                    if got == version:
                        return time.monotonic() - t0, int(msg["boot_count"])
                    seen = f" (it says hello with firmware {'.'.join(map(str, got))})"
    except serial.SerialException as err:
        raise DeviceError(f"{port}: cannot listen for the node's hello: {err}") from None
    raise DeviceError(
        f"{port}: no hello from node {node_id} with firmware {'.'.join(map(str, version))} within {wait_s:.0f} s"
        f"{seen}; see its console: mpremote connect {port} repl"
    )


@dataclass(frozen=True)
class Request:
    """What the technician asked for (``smartshelf flash``'s options); ``wait_s`` None: do not wait for the hello."""

    node_id: int | None = None  # with layout: provision a new node
    replaces: int | None = None  # the new node takes over this node's lanes
    layout: Path | None = None
    nodes_file: Path | None = None
    hub_config: Path | None = None
    compiled: bool = True
    arch: str | None = None
    source: Path = images.SOURCE
    wait_s: float | None = 30.0
    timeout_s: float = 300.0


def flash(port: str | None, req: Request, out: Any = print) -> None:
    """The whole of ``smartshelf flash``; raises DeviceError, UsageError, ImageError or ConfigError, each one line."""
    if (req.node_id is None) != (req.layout is None):
        raise UsageError("a new node needs both --node-id and --layout")
    if req.replaces is not None:
        check_replacement(req, req.replaces)
    if req.hub_config is not None and req.nodes_file is not None and not read_by_hub(req.nodes_file, req.hub_config):
        raise UsageError(
            f"--nodes-file {req.nodes_file} is not listed in hub.nodes_files of {req.hub_config}: the hub would never "
            "learn the node's key (add it there, or give a nodes file listed there)"
        )
    port = choose_port(port)
    hub = RunningHub(load_config(req.hub_config).control_socket) if req.hub_config is not None else None
    lease = PROBE_TIMEOUT_S + 2 * req.timeout_s + (req.wait_s or 0.0) + 60.0  # probe, install, restart, hello
    borrowed = hub is not None and hub.borrow(port, lease)
    try:
        node_id, registered = _install(port, hub, req, out)
    finally:
        if borrowed:
            assert hub is not None
            hub.give_back(port)
    served = False
    if registered and req.replaces is not None:
        served = take_over(hub, req, req.replaces, node_id, out)
    if hub is not None and hub.running:  # a new node, or one the hub did not serve yet (its nodes file newly listed)
        reloaded = hub.reload_nodes()
        if hub.serves(node_id) is False:
            raise DeviceError(
                f"node {node_id} is installed, but the running hub does not serve it even after reloading its nodes "
                f"files: its key must be in {req.hub_config} or a file listed in its hub.nodes_files"
            )
        if node_id in reloaded or served:
            out(f"the running hub serves node {node_id} now")


def take_over(hub: RunningHub | None, req: Request, old: int, new: int, out: Any) -> bool:
    """``--replaces``, once the new node is installed and registered: its takeover of ``old``'s lanes first (through
    the running hub, which then serves it: True; else through a writer of our own), then ``old`` leaves the nodes
    file. A failure says how to finish (the board is installed and keeps its new firmware)."""
    assert req.hub_config is not None and req.nodes_file is not None
    through_hub = hub is not None and hub.running
    try:
        if hub is not None and through_hub:
            lanes = hub.replace_node(old, new)
        else:
            lanes = asyncio.run(replace_in_ledger(req.hub_config, old, new))
    except (ConfigError, LedgerError, DeviceError, sqlite3.Error) as err:
        raise DeviceError(
            f"node {new} is installed, but it has not taken over node {old}'s lanes ({err}); finish with: "
            f'smartshelf hub replace-node --config {req.hub_config} {old} {new} ("node {old} has no lanes": they '
            "have moved already)"
        ) from None
    out(f"node {new} took over the lanes of node {old}: {', '.join(lanes)}")
    if unregister(req.nodes_file, old):
        out(f"nodes file {req.nodes_file}: node {old} removed")
    return through_hub


def check_replacement(req: Request, old: int) -> None:
    """``--replaces OLD``: a new node, a ledger to move OLD's lanes in, and OLD's lanes there."""
    if req.node_id is None or req.hub_config is None or req.nodes_file is None:
        raise UsageError(
            "--replaces needs the new node (--node-id, --layout, --nodes-file) and the hub's --config (its ledger)"
        )
    if old == req.node_id:
        raise UsageError("--replaces: the new board needs an id of its own, not the one it replaces")
    if not known_to_ledger(old, req.hub_config, with_lanes=True):
        raise UsageError(f"--replaces: node {old} has no lanes in the hub's ledger: nothing to take over")


async def replace_in_ledger(hub_config: Path, old: int, new: int) -> list[str]:
    """No hub answers on its control socket: the lanes move through a writer of our own, the one writer while the hub
    is down (refused, LedgerBusy, when a hub has the database open all the same)."""
    database = load_config(hub_config).database
    DbLock(database).acquire(exclusive=True).release()
    async with LedgerService(database, migrations=MIGRATIONS, origin=origin.cli()) as ledger:
        return await ledger.replace_node(old, new, actor="smartshelf flash")


def _install(port: str, hub: RunningHub | None, req: Request, out: Any) -> tuple[int, bool]:
    """The install on a port nobody else holds: the node's id, and whether it was registered (a new node)."""
    check_port(port, hub_running=hub is not None and hub.running)
    device = Device(port, timeout_s=req.timeout_s)
    try:
        probe = device.probe()  # this stops the firmware: a refusal from here on resets the board (it boots as before)
    except DeviceError as err:
        if "not MicroPython" not in str(err) and "cannot open" not in str(err):
            device.restart()
        raise
    try:
        return _provision(device, probe, req, out)
    except (UsageError, ImageError, ConfigError, DeviceError):
        device.restart()  # whatever was refused or failed, the board boots what it has (the old image, if any)
        raise


def _provision(device: Device, probe: Probe, req: Request, out: Any) -> tuple[int, bool]:
    port = device.port
    image = images.build(check_board(port, probe, req.compiled, req.arch), compiled=req.compiled, source=req.source)
    nodes_file, hub_config = req.nodes_file, req.hub_config
    config: bytes | None = None
    node_id = req.node_id
    if node_id is not None and req.layout is not None:
        if nodes_file is None:
            raise UsageError("--nodes-file is needed: the new node's key must be kept where the hub reads it")
        if known_key(node_id, nodes_file, hub_config) is not None or known_to_ledger(node_id, hub_config):
            # The hub's replay marks and event numbers belong to that node; a second identity under its id would
            # have its frames refused or its events taken for duplicates. Re-provisioning needs a new id for now.
            raise UsageError(f"node {node_id} is already provisioned for this hub: give the new node an id of its own")
        config, key = new_config(node_id, req.layout)
    else:
        if probe.node_id is None:
            raise UsageError(f"{port}: the board has no node config: give --node-id and --layout")
        node_id = probe.node_id
        found = known_key(node_id, nodes_file, hub_config)
        if found is None:
            raise UsageError(
                f"node {node_id}'s key is in neither --nodes-file nor --config: re-provision it (--node-id, --layout)"
            )
        key = found
    blocks = sum(-(-len(d) // probe.block) for d in (*image.files.values(), image.loader, config or b""))
    stale = [d for d in probe.images if d not in (probe.bootable, image.image_id)]
    if probe.bootable != image.image_id and not stale and blocks > probe.free_blocks:
        raise DeviceError(
            f"{port}: flash full: the firmware needs {blocks * probe.block // 1024} KiB, "
            f"{probe.free_bytes // 1024} KiB free"
        )
    stable = stable_name(port)
    sent_files, sent_bytes = device.install(image, probe, config)
    if config is not None:  # the board has the key now: the hub gets it too
        assert nodes_file is not None
        replaced = register(nodes_file, node_id, key, stable)
        if replaced:
            out(f"nodes file {nodes_file}: node(s) {', '.join(map(str, replaced))} no longer on {stable}")
    kind = f"{image.arch or 'bytecode'} .mpy" if image.compiled else "sources"
    heard = ""
    if req.wait_s is not None:
        try:
            took, boot = wait_hello(port, node_id, key, image.version, req.wait_s)
        except DeviceError as err:
            base = probe.bootable
            if not base or base == image.image_id:
                raise
            device.switch_back(base)  # it installed but does not run: the board goes back to what it ran
            raise DeviceError(f"{err}; switched back to firmware {base}") from None
        heard = f"; hello after {took:.1f} s (boot {boot})"
    out(
        f"node {node_id}: firmware {image.image_id} ({kind}, {len(image.files) - 1} modules) installed on {stable}: "
        f"{sent_files} files sent ({sent_bytes / 1024:.1f} KiB){heard}"
    )
    return node_id, config is not None


class RunningHub:
    """The hub on this machine, through its control socket: it lends a node's port and learns new nodes."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.running = True

    def _ask(self, payload: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        try:
            return asyncio.run(request(self.socket_path, payload, timeout_s=timeout_s))
        except HubNotRunning:
            self.running = False
            return {"ok": False, "error": "no hub is running"}
        except (OSError, TimeoutError) as err:
            raise DeviceError(f"the running hub ({self.socket_path}) did not answer: {err}") from None

    def borrow(self, port: str, seconds: float) -> bool:
        """Ask the hub to let go of ``port`` for ``seconds`` (False: it does not hold it, or does not run); wait
        until it has."""
        reply = self._ask({"op": "release", "port": port, "seconds": min(MAX_RELEASE_S, seconds)})
        if not reply["ok"]:
            if self.running and not str(reply.get("error", "")).startswith("no node of this hub is on"):
                raise DeviceError(f"the running hub would not lend {port}: {reply.get('error')}")
            return False
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                check_port(port)
                return True
            except DeviceError:
                time.sleep(0.1)
        return True  # check_port will say what holds it

    def give_back(self, port: str) -> None:
        self._ask({"op": "resume", "port": port})

    def replace_node(self, old: int, new: int) -> list[str]:
        payload = {"op": "replace-node", "old": old, "new": new, "actor": "smartshelf flash"}
        reply = self._ask(payload, timeout_s=120.0)  # the hub rereads every lane's tallies: long on a big ledger
        if not reply["ok"]:
            raise ConfigError(f"the running hub did not hand node {old}'s lanes to node {new}: {reply['error']}")
        return [str(lane) for lane in reply["lanes"]]

    def serves(self, node_id: int) -> bool | None:
        """Whether the running hub serves ``node_id`` (None: no hub answers any more, nothing to tell)."""
        reply = self._ask({"op": "status"})
        if not reply["ok"]:
            return None
        return any(n.get("node_id") == node_id for n in reply["status"].get("nodes", []))

    def reload_nodes(self) -> list[int]:
        reply = self._ask({"op": "reload-nodes"})
        if not reply["ok"]:
            raise ConfigError(f"the running hub did not take the new node: {reply['error']}")
        return [int(n) for n in reply["added"]]
