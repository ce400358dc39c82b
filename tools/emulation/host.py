"""``smartshelf emulate``: emulated shelf nodes, each an emulated board running the real firmware on a real pty.

For each node the host

* provisions its flash (a directory under ``<dir>/state/node-<id>/flash``) as the factory would: this
  checkout's firmware (the loader as ``/main.py``, the image under ``/fw``), ``config.json`` with the node
  id, its key and the lane layout of the scenario (and, for a node with tagged lanes, its RFID reader: the
  ``rfid`` section), the lanes' factory calibrations and SKU assignments. The key
  and everything the node stores itself (boot count, sequence reservation, outbox, counters) survive a restart
  of the emulator, as a real node's flash would; ``--fresh`` starts with new nodes. ``--blank`` boards get
  nothing: MicroPython only, and their flash is whatever was installed on them (``mpremote``, ``smartshelf
  flash``);
* opens a pty (``os.openpty``, raw mode) and points a stable symlink at it, ``<dir>/node-<id>``;
* starts the board (``tools/mpy_runtime`` node mode, ``board.mjs``): MicroPython whose console is the pty, with
  its REPL, raw REPL, resets and the flash, booting ``main.py`` from the flash; its ROM (``rom.py``) gives the
  firmware the emulated hardware (``board.py``: HX711s fed by the scenario's physics). A hub reading
  ``<dir>/node-<id>`` cannot tell it from a node on USB, and neither can ``mpremote``;
* holds the pty's slave side open itself, so the node's writes never fail while no hub is connected, and
  flushes what nobody reads once more than ``BACKLOG_MAX`` bytes have waited for a second (a USB port with
  no host drops data too); the runner bounds what it buffers in front of the pty as well;
* writes a hub config fragment (``[[node]]`` tables: ``id``, ``key``, ``port``) for the provisioned nodes and the
  ground truth (``tools/emulation/scenarios.py``), one JSON line per physical action once its time has come;
* with ``--link ble``: puts every board on an emulated air as well (``tools/emulation/radio/``: a radio thread
  with one asyncio loop), each board with its radio (its ROM then has ``bluetooth``, backed by a Bumble
  peripheral with the node's static random address ``C2:5E:5E:...``), provisions ``"link": "ble"`` in its
  config, writes ``link = "ble"`` and ``address`` instead of ``port`` in its ``[[node]]`` table and serves the
  hub's adapter controller at ``<dir>/hci.sock`` (``hub BLE adapter: bumble:unix:<dir>/hci.sock``). The console
  ptys stay (mpremote, logs). A board's reset or restart is its radio going away and coming back: the hub's
  connections to it end with a supervision timeout;
* reports what the boards say: resets, the firmware stopping (a config error, Ctrl-C from mpremote: the board
  is then at its REPL) and starting again.

Node keys are secrets, whatever the umask: the hub config fragment and the lock file (whoever can open it can hold
it) are 0600, ``<dir>/state`` (the flashes, whose ``config.json`` holds the key) is 0700, and so is ``<dir>`` when
the emulator creates it. A ``<dir>`` that belongs to another user is refused (``/tmp`` is shared).

A board that fails to run (its ROM or emulated hardware broken: the runner exits) is powered up again after 2 s
with the same flash, at most ``MAX_RESTARTS`` times; a firmware that fails resets the board itself
(``firmware/main.py``). Ctrl-C (or SIGTERM) stops every node, closes the ptys and removes the symlinks; nothing
is left running, and a host that dies anyway takes its nodes with it (they exit when their stdin closes).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import struct
import sys
import termios
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from firmware import config as node_config
from hub.cli.args import number
from hub.private_files import PRIVATE_DIR, make_private_dirs, open_private
from hub.provisioning.image import build as build_image
from tools.emulation.provision import provision
from tools.emulation.scenarios import SCENARIOS, Scenario, build
from tools.mpy_runtime import DEFAULT_FLASH_BYTES, MicroPythonUnavailable, NodeProcess

if TYPE_CHECKING:
    from tools.emulation.radio.host import Radio

DEFAULT_DIR = Path("/tmp/smartshelf-emu")
MAX_NODES = 32
BACKLOG_MAX = 4096  # unread bytes on a pty for a whole second: nobody is listening, drop them
MAX_RESTARTS = 5
RESTART_DELAY_S = 2.0
LINKS = ("serial", "ble")


class EmulatorError(Exception):
    """The emulator cannot start (bad arguments, a busy directory, no MicroPython runtime)."""


@dataclass
class EmulatedNode:
    node_id: int
    key: bytes = field(repr=False)
    port: Path  # the stable symlink
    device: str  # /dev/pts/N
    flash_dir: Path
    log_path: Path
    plan: dict[str, Any] = field(repr=False)
    skus: list[str]
    master: int = -1
    slave: int = -1
    process: NodeProcess | None = None
    restarts: int = 0
    restart_at: float | None = None
    blank: bool = False  # a board with MicroPython only: the emulator leaves its flash alone
    stopped: str = ""  # why the firmware is not running ("" while it runs)
    backlog_since: float | None = None
    flushed_bytes: int = 0
    boot_reported: bool = False
    address: str = ""  # the board's BLE address (--link ble)


def _read_key(flash: Path, node_id: int) -> bytes | None:
    """The key of an already provisioned node (its config must be valid and for this node id)."""
    try:
        cfg = node_config.load(str(flash / "config.json"))
    except node_config.ConfigError:
        return None
    return cfg.key if cfg.node_id == node_id else None


def unique_id(node_id: int) -> bytes:
    """The emulated board's ``machine.unique_id()``: six bytes, like an ESP32's MAC, stable per node id."""
    return b"\x02\x5e\x5e" + (node_id & 0xFFFFFF).to_bytes(3, "big")


def _ble_address(node_id: int) -> str:
    from tools.emulation.radio.peripheral import ble_address  # Bumble: only when the nodes go on the air

    return ble_address(node_id)


def install_factory_image(flash: Path) -> None:
    """Put this checkout's firmware on a node's flash as the factory would, in the layout ``smartshelf flash``
    makes (the loader as ``/main.py``, the image under ``/fw/<id>``, ``/fw/active`` naming it; sources, not
    ``.mpy``), writing only what differs and removing other images, so an emulator started on a changed checkout
    runs the changed firmware."""
    image = build_image("", compiled=False)
    fw = flash / "fw"
    wanted = {"main.py": image.loader, **{f"fw/{image.image_id}/{p}": d for p, d in image.files.items()}}
    wanted["fw/active"] = image.image_id.encode()
    for legacy in ("lib/firmware", "lib/shared_protocol"):  # where the factory put the firmware before /fw
        shutil.rmtree(flash / legacy, ignore_errors=True)
    if fw.is_dir():
        for old in fw.iterdir():
            if old.is_dir() and old.name != image.image_id:
                shutil.rmtree(old)
        (fw / "previous").unlink(missing_ok=True)
    for rel, data in wanted.items():
        dest = flash / rel
        if dest.is_file() and dest.read_bytes() == data:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)


def toml_fragment(nodes: list[EmulatedNode], link: str = "serial") -> str:
    """The hub's ``[[node]]`` tables for the provisioned nodes (strings quoted as TOML basic strings); a blank
    board has no key until it is installed and registered (``smartshelf flash``). A BLE node has its ``link``
    and ``address`` instead of a ``port``."""
    out = ["# Emulated shelf nodes (smartshelf emulate); include from hub.toml with nodes_files = [...]"]
    for n in nodes:
        if n.blank:
            continue
        out += ["", "[[node]]", f"id = {n.node_id}", f'key = "{n.key.hex()}"']
        if link == "ble":
            out += ['link = "ble"', f'address = "{n.address}"']
        else:
            out.append(f"port = {json.dumps(str(n.port))}")
    return "\n".join(out) + "\n"


def write_nodes_file(path: Path, text: str) -> None:
    """The hub config fragment (node keys), replaced atomically: 0600 whatever the umask, in a directory made 0700
    if it is new."""
    make_private_dirs(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Emulator:
    """Emulated nodes on ptys: ``start()``, then ``poll()`` every ~0.1 s (or ``run()``), then ``stop()``."""

    def __init__(
        self,
        nodes: int | list[int],
        scenario: str | Scenario = "store",
        directory: Path = DEFAULT_DIR,
        *,
        seed: int = 1,
        duration_s: float | None = None,
        write_config: Path | None = None,
        truth_path: Path | None = None,
        fresh: bool = False,
        blank: bool = False,
        flash_bytes: int = DEFAULT_FLASH_BYTES,
        out: Callable[[str], None] | None = None,
        link: str = "serial",
        ble_mtu: int | None = None,
    ) -> None:
        if link not in LINKS:
            raise EmulatorError(f"--link must be one of {', '.join(LINKS)}, got {link!r}")
        node_ids = list(range(1, nodes + 1)) if isinstance(nodes, int) else list(nodes)
        if not 1 <= len(node_ids) <= MAX_NODES:
            raise EmulatorError(f"--nodes must be 1..{MAX_NODES}, got {len(node_ids)}")
        if any(not 1 <= n <= 0xFFFFFFFF for n in node_ids) or len(set(node_ids)) != len(node_ids):
            raise EmulatorError("node ids must be unique and 1..4294967295")
        if isinstance(scenario, str):
            if scenario not in SCENARIOS:
                raise EmulatorError(f"unknown scenario {scenario!r} (choose from {', '.join(SCENARIOS)})")
            try:
                scenario = build(scenario, node_ids, seed, duration_s)
            except ValueError as err:
                raise EmulatorError(str(err)) from None
        missing = [n for n in node_ids if n not in scenario.nodes]
        if missing:
            raise EmulatorError(f"scenario {scenario.name!r} has no layout for node(s) {missing}")
        self.node_ids = node_ids
        self.scenario = scenario
        self.directory = Path(directory)
        self.write_config = Path(write_config) if write_config else self.directory / "nodes.toml"
        self.truth_path = Path(truth_path) if truth_path else self.directory / "truth.jsonl"
        self.fresh = fresh
        self.blank = blank
        self.flash_bytes = flash_bytes
        self.seed = seed
        self.link = link
        self.ble_mtu = ble_mtu  # --link ble: the largest ATT MTU the nodes accept (their config's ble.mtu)
        self.radio: Radio | None = None  # --link ble: the air and the boards' peripherals
        self.nodes: list[EmulatedNode] = []
        self.epoch = 0.0
        self._out = out or (lambda s: print(s, flush=True))
        self._truth: IO[str] | None = None
        self._truth_next = 0
        self._lock: IO[str] | None = None
        self._started = False

    # -- start ------------------------------------------------------------------------------------
    def start(self) -> list[EmulatedNode]:
        try:
            make_private_dirs(self.directory)
            if self.directory.stat().st_uid != os.geteuid():
                raise EmulatorError(f"cannot use {self.directory}: it belongs to another user (choose another --dir)")
            self._lock = os.fdopen(open_private(self.directory / ".lock", os.O_WRONLY | os.O_CREAT), "w")
        except OSError as err:
            raise EmulatorError(f"cannot use {self.directory}: {err.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise EmulatorError(f"another smartshelf emulate is using {self.directory}") from None
        self._started = True
        try:
            self._start_nodes()
        except OSError as err:
            self.stop(quiet=True)
            raise EmulatorError(f"{err.filename or self.directory}: {err.strerror or err}") from None
        except BaseException:
            self.stop(quiet=True)
            raise
        return self.nodes

    def _start_nodes(self) -> None:
        self.epoch = time.time()
        make_private_dirs(self.directory / "state")
        os.chmod(self.directory / "state", PRIVATE_DIR)  # the flashes hold node keys (older runs made it 0755)
        for nid in self.node_ids:
            self.nodes.append(self._provision(nid))
        for node in self.nodes:
            self._open_pty(node)
        if self.link == "ble":
            from tools.emulation.radio.host import Radio  # Bumble: only when the nodes go on the air

            self.radio = Radio()
            self.radio.start(self.directory)
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            assert node.process is not None
            try:
                node.process.wait_ready(30.0)
            except (RuntimeError, TimeoutError) as err:
                raise EmulatorError(f"node {node.node_id} did not start: {err}") from None
        write_nodes_file(self.write_config, toml_fragment(self.nodes, self.link))
        self.truth_path.parent.mkdir(parents=True, exist_ok=True)
        self._truth = open(self.truth_path, "w")  # noqa: SIM115 (written as time passes, closed in stop)
        sc = self.scenario
        self._out(
            f"smartshelf emulate: {len(self.nodes)} node(s), scenario {sc.name!r} (seed {self.seed}), "
            f"state in {self.directory}"
        )
        for node in self.nodes:
            lanes = ", ".join(node.skus)
            ble = f"  ble: {node.address}" if self.radio is not None else ""
            self._out(f"node {node.node_id}: {node.port} -> {node.device}{ble}  lanes: {lanes}  log: {node.log_path}")
        self._out(f"hub config: {self.write_config}")
        if self.radio is not None:
            self._out(f"hub BLE adapter: bumble:unix:{self.radio.hci_path}")
        self._out(f"ground truth: {self.truth_path}")
        self.poll()

    def _provision(self, nid: int) -> EmulatedNode:
        state = self.directory / "state" / f"node-{nid}"
        flash = state / "flash"
        if self.fresh and state.exists():
            shutil.rmtree(state)
        flash.mkdir(parents=True, exist_ok=True)
        node_plan = self.scenario.nodes[nid]
        plan = node_plan.plan()
        if self.blank:
            key = b""
        else:
            key = _read_key(flash, nid) or secrets.token_bytes(32)
            extra: dict[str, Any] = {"link": "ble"} if self.link == "ble" else {}
            if self.link == "ble" and self.ble_mtu is not None:
                extra["ble"] = {"mtu": self.ble_mtu}
            rfid = node_plan.rfid_config()  # a node with tagged lanes has a UHF reader (NodePlan.rfid_wiring)
            if rfid is not None:
                extra["rfid"] = rfid
            extra.update(node_plan.config)  # what a scenario sets besides (e.g. a test's small outbox)
            provision(str(flash), node_config.dumps(nid, key, node_plan.config_lanes(), **extra), plan)
            install_factory_image(flash)
        return EmulatedNode(
            nid, key, self.directory / f"node-{nid}", "", flash, self.directory / f"node-{nid}.log", plan,
            [lane.sku.sku for lane in node_plan.lanes], blank=self.blank,
            address=_ble_address(nid) if self.link == "ble" else "",
        )  # fmt: skip

    def _open_pty(self, node: EmulatedNode) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass unchanged both ways
        os.set_blocking(master, False)
        node.master, node.slave = master, slave
        node.device = os.ttyname(slave)
        tmp = node.port.with_name(node.port.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(node.device)
        os.replace(tmp, node.port)

    def _spawn(self, node: EmulatedNode) -> None:
        # a board (re)started gets a new radio: the last one's connections end
        radio_fd = self.radio.attach(node.node_id) if self.radio is not None else None
        try:
            proc = NodeProcess(
                node.master,
                node.flash_dir,
                epoch_ms=self.epoch * 1000.0,
                files={"/emu/plan.json": json.dumps(node.plan).encode()},
                log_path=node.log_path,
                unique_id=unique_id(node.node_id),
                flash_bytes=self.flash_bytes,
                radio_fd=radio_fd,
            )
            proc.start()
        except MicroPythonUnavailable as err:
            raise EmulatorError(str(err)) from None
        finally:
            if radio_fd is not None:
                os.close(radio_fd)  # the board's process has its own copy
        node.process = proc
        node.stopped = ""

    # -- running ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.time() - self.epoch

    def poll(self) -> None:
        """Write the ground truth that has happened, watch the ptys and the node processes."""
        now = self.elapsed()
        truth = self.scenario.truth
        if self._truth is not None:
            wrote = False
            while self._truth_next < len(truth) and truth[self._truth_next].t <= now:
                self._truth.write(truth[self._truth_next].to_json(self.epoch) + "\n")
                self._truth_next += 1
                wrote = True
            if wrote:
                self._truth.flush()
        mono = time.monotonic()
        for node in self.nodes:
            self._watch_backlog(node, mono)
            self._watch_process(node, mono)

    def _watch_backlog(self, node: EmulatedNode, mono: float) -> None:
        if node.slave < 0:
            return
        buf = fcntl.ioctl(node.slave, termios.FIONREAD, b"\0\0\0\0")
        waiting = struct.unpack("i", buf)[0]
        if waiting <= BACKLOG_MAX:
            node.backlog_since = None
        elif node.backlog_since is None:
            node.backlog_since = mono
        elif mono - node.backlog_since >= 1.0:
            termios.tcflush(node.slave, termios.TCIFLUSH)
            node.flushed_bytes += waiting
            node.backlog_since = None

    def _watch_process(self, node: EmulatedNode, mono: float) -> None:
        proc = node.process
        if proc is None:
            if node.restart_at is not None and mono >= node.restart_at:
                node.restart_at = None
                node.restarts += 1
                self._out(f"node {node.node_id}: restarting (reset {node.restarts} of {MAX_RESTARTS})")
                self._spawn(node)
            return
        for st in proc.status():
            self._board_event(node, st)
        if proc.poll() is None:
            return
        info = proc.exit_info or {}
        proc.stop()
        node.process = None
        error = str(info.get("error") or "").strip()
        if node.restarts < MAX_RESTARTS:
            node.stopped = "crashed"
            last = error.splitlines()[-1] if error else f"exit status {proc.poll()}"
            self._out(f"node {node.node_id}: crashed ({last}); log {node.log_path}")
            node.restart_at = mono + RESTART_DELAY_S
        else:
            node.stopped = f"crashed {node.restarts + 1} times; given up"
            self._out(f"node {node.node_id}: {node.stopped}; log {node.log_path}")

    def _board_event(self, node: EmulatedNode, st: dict[str, Any]) -> None:
        """What the board reported: a reset (the firmware boots again) or main.py's program ending (the board
        is at its REPL: a config error, Ctrl-C from mpremote, or no firmware on a blank board)."""
        event = st.get("event")
        if event == "reset":
            self._out(f"node {node.node_id}: {st.get('kind')} reset")
        elif event == "program" and st.get("running"):
            node.stopped = ""
        elif event == "program":
            error = st.get("error") or ""
            if error == "KeyboardInterrupt":
                node.stopped = "interrupted (Ctrl-C): at the REPL"
            elif error:
                node.stopped = f"the firmware stopped ({error}): at the REPL"
            else:
                node.stopped = "the firmware stopped by itself (a config error?): at the REPL"
            self._out(f"node {node.node_id}: {node.stopped}; log {node.log_path}")

    def run(self, seconds: float | None = None) -> None:
        """Poll until Ctrl-C / SIGINT / SIGTERM (or for ``seconds``), then stop everything. SIGINT is handled here
        even when the emulator was started with it ignored (a background job of a script: POSIX shells start those
        with SIGINT ignored), so ``kill -INT`` stops it as Ctrl-C does."""
        previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        try:
            self._out("running; Ctrl-C stops")
            deadline = None if seconds is None else time.monotonic() + seconds
            while deadline is None or time.monotonic() < deadline:
                self.poll()
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
            self.stop()

    # -- stop -------------------------------------------------------------------------------------
    def stop(self, quiet: bool = False) -> None:
        if not self._started:
            return
        self._started = False
        procs = [n.process for n in self.nodes if n.process is not None]
        for p in procs:
            if p.proc is not None and p.poll() is None:
                p.proc.terminate()
        for p in procs:
            p.stop()
        if self.radio is not None:
            self.radio.stop()
            self.radio = None
        for node in self.nodes:
            node.process = None
            for fd in (node.master, node.slave):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            node.master = node.slave = -1
            with contextlib.suppress(OSError):
                if node.port.is_symlink() and os.readlink(node.port) == node.device:
                    node.port.unlink()
        if self._truth is not None:
            self._truth.close()
            self._truth = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if not quiet:
            flushed = sum(n.flushed_bytes for n in self.nodes)
            note = f" ({flushed} unread bytes dropped while no hub listened)" if flushed else ""
            self._out(f"smartshelf emulate: stopped {len(self.nodes)} node(s){note}")

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(quiet=True)


_count = number(int, lambda n: 1 <= n <= MAX_NODES, f"must be 1..{MAX_NODES}", "a whole number")
_seconds = number(float, lambda v: 0.0 <= v <= 30 * 86400.0, "must be 0 .. 2592000 s")


def add_emulate_parser(sub: Any) -> None:
    """Register ``smartshelf emulate`` on the ``smartshelf`` command's subparsers."""
    p = sub.add_parser(
        "emulate",
        help="run emulated shelf nodes (the real firmware under MicroPython) on ptys a hub can open",
        description="Start N emulated nodes, each the real firmware under the MicroPython runtime with "
        "emulated HX711s and a scripted physical scenario, each on a pty with a stable path (DIR/node-ID). "
        "Writes the hub's [[node]] tables (--write-config) and the ground truth (--truth, JSON lines). "
        "Ctrl-C stops everything.",
    )
    p.add_argument("--nodes", type=_count, default=1, metavar="N", help=f"number of nodes, ids 1..N (1..{MAX_NODES})")
    p.add_argument("--scenario", choices=SCENARIOS, default="store", help="what happens on the shelves (default store)")
    p.add_argument("--dir", default=str(DEFAULT_DIR), help=f"pty links, logs and node state (default {DEFAULT_DIR})")
    p.add_argument("--write-config", metavar="PATH", help="hub config fragment with the nodes (default DIR/nodes.toml)")
    p.add_argument("--truth", metavar="PATH", help="ground-truth JSON lines (default DIR/truth.jsonl)")
    p.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    p.add_argument("--duration", type=_seconds, metavar="S", help="how long shoppers keep coming (scenario default)")
    p.add_argument("--fresh", action="store_true", help="new nodes: forget keys, boot counts, outboxes in DIR")
    p.add_argument(
        "--blank",
        action="store_true",
        help="boards with MicroPython only (empty flash at first, then whatever was installed on them): for "
        "smartshelf flash / mpremote; not in the hub config",
    )
    p.add_argument(
        "--link",
        choices=LINKS,
        default="serial",
        help="serial (default): the hub reads each node's pty; ble: the nodes are also on an emulated air, "
        "provisioned for BLE, and the hub's adapter is served at DIR/hci.sock (bumble:unix:...)",
    )
    p.add_argument("--seconds", type=_seconds, metavar="S", help="stop by itself after S seconds")
    p.set_defaults(func=main)


def main(args: Any) -> int:
    """``smartshelf emulate``."""
    try:
        emu = Emulator(
            args.nodes,
            args.scenario,
            Path(args.dir),
            seed=args.seed,
            duration_s=args.duration,
            write_config=Path(args.write_config) if args.write_config else None,
            truth_path=Path(args.truth) if args.truth else None,
            fresh=args.fresh,
            blank=args.blank,
            link=args.link,
        )
        emu.start()
    except EmulatorError as err:
        print(f"smartshelf emulate: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    emu.run(args.seconds)
    return 0
