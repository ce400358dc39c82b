"""`smartshelf emulate` end to end: emulated nodes (the real firmware under MicroPython) on real ptys.

The test plays the hub: it opens each node's stable pty path with pyserial, decodes with the protocol's
SerialDecoder + UplinkReceiver using the keys the emulator wrote, answers hellos and events with acks on the
text downlink, and compares the events with the scenario's ground truth. Real time: seconds per test.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import serial

from shared_protocol.auth import Key
from shared_protocol.downlink_text import encode_line
from shared_protocol.frame import DownlinkSender, UplinkReceiver
from shared_protocol.messages import KIND_PICK, Ack, Message
from shared_protocol.serial_framing import SerialDecoder
from tools.emulation import host
from tools.emulation.scenarios import ScenarioBuilder, build
from tools.mpy_runtime import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.micropython, pytest.mark.usefixtures("emulated_boards")]


class Hub:
    """The hub's side of the serial links, built from the fragment the emulator wrote."""

    def __init__(self, config: Path) -> None:
        nodes = tomllib.loads(config.read_text())["node"]
        self.keys = {n["id"]: Key(bytes.fromhex(n["key"])) for n in nodes}
        self.rx = UplinkReceiver(self.keys)
        self.ports = {n["id"]: serial.Serial(n["port"], 115200, timeout=0) for n in nodes}
        self.dec = {nid: SerialDecoder() for nid in self.ports}
        self.tx = {nid: DownlinkSender(nid, self.keys[nid]) for nid in self.ports}
        self.frames: list[dict[str, Any]] = []
        self.written: list[bytes] = []
        self.t0 = time.monotonic()

    def poll(self) -> list[dict[str, Any]]:
        out = []
        for nid, port in self.ports.items():
            for raw in self.dec[nid].feed(port.read(4096)):
                f = self.rx.accept(raw)
                d = f.message.to_dict()
                d.update(node=f.node_id, seq=f.seq, t=time.monotonic() - self.t0)
                if d["type"] == "hello":
                    self.tx[nid].new_session(d["boot_count"])
                out.append(d)
        self.frames += out
        return out

    def send(self, nid: int, msg: Message) -> None:
        line = encode_line(self.tx[nid].encode(msg))
        self.written.append(line)
        self.ports[nid].write(line)

    def close(self) -> None:
        for p in self.ports.values():
            p.close()


def _run(emu: host.Emulator, hub: Hub, seconds: float, on_frame: Any) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        emu.poll()
        for f in hub.poll():
            on_frame(f)
        time.sleep(0.02)


def test_two_nodes_over_ptys_hello_events_retransmission_and_truth(tmp_path: Path) -> None:
    b = ScenarioBuilder([1, 2], seed=5, start_s=5.0)
    b.pick(1, 0, 5.0, 1)  # COLA-330 on two cells at 80 SPS
    b.pick(2, 3, 5.0, 1)  # OIL-1L on a 20 kg cell at 10 SPS
    b.pick(2, 2, 6.5, 2, paid=False)  # CHOC-100: a theft
    scenario = b.build("e2e")
    lines: list[str] = []
    emu = host.Emulator([1, 2], scenario, tmp_path / "emu", out=lines.append)
    emu.start()
    hub = None
    try:
        assert any(line.startswith("node 1: ") and "-> /dev/pts/" in line for line in lines), lines
        for n in emu.nodes:
            assert n.port == tmp_path / "emu" / f"node-{n.node_id}" and os.readlink(n.port) == n.device
        hub = Hub(tmp_path / "emu" / "nodes.toml")
        acking = {"on": False}

        def on_frame(f: dict[str, Any]) -> None:
            if f["type"] == "hello":
                hub.send(f["node"], Ack(0))
            elif f["type"] == "event" and acking["on"]:
                hub.send(f["node"], Ack(f["event_seq"]))

        # Until every node's events have been sent twice without an ack...
        deadline = time.monotonic() + 60  # boots and detection: slower on a loaded machine
        while time.monotonic() < deadline:
            _run(emu, hub, 0.25, on_frame)
            evs = [f for f in hub.frames if f["type"] == "event"]
            if len([e for e in evs if e["node"] == 1]) >= 2 and len([e for e in evs if e["node"] == 2]) >= 4:
                break
        acking["on"] = True
        for nid in (1, 2):
            last = max(f["event_seq"] for f in hub.frames if f["type"] == "event" and f["node"] == nid)
            hub.send(nid, Ack(last))
        t_ack = time.monotonic() - hub.t0
        _run(emu, hub, 3.0, on_frame)
    finally:
        if hub is not None:
            hub.close()
        emu.stop()

    hellos = [f for f in hub.frames if f["type"] == "hello"]
    assert sorted({h["node"] for h in hellos}) == [1, 2]
    assert all(h["boot_count"] == 1 and h["lane_count"] == 4 for h in hellos)
    events = [f for f in hub.frames if f["type"] == "event"]
    # Every pick of the ground truth became exactly one event (by event_seq) of the right kind and count.
    truth = [r for r in scenario.truth if r.action in ("pick", "theft")]
    seen = {(e["node"], e["event_seq"]): e for e in events}
    assert sorted((e["node"], e["lane"], e["count_delta"]) for e in seen.values()) == sorted(
        (r.node, r.lane, r.units) for r in truth
    )
    assert all(e["kind"] == KIND_PICK and e["confidence"] >= 90 for e in seen.values())
    # Unacknowledged, each event was sent again in a new frame (higher seq) in the retransmission round 2 s
    # after the first unacknowledged send (a round re-sends every waiting event); after the ack, never.
    for nid, event_seq in seen:
        copies = [e for e in events if (e["node"], e["event_seq"]) == (nid, event_seq)]
        assert len(copies) >= 2, copies
        assert copies[1]["seq"] > copies[0]["seq"]
        assert 0.1 <= copies[1]["t"] - copies[0]["t"] <= 3.0
        if event_seq == 1:
            assert copies[1]["t"] - copies[0]["t"] >= 1.5, copies
        assert all(c["t"] < t_ack + 0.3 for c in copies), copies
    # Nothing the hub wrote contains a control byte (the REPL stays reachable).
    assert hub.written and all(all(0x20 <= c < 0x7F for c in line[:-1]) for line in hub.written)
    # The ground truth file: the initial stock of every lane, then the actions, as they happened.
    rows = [json.loads(line) for line in (tmp_path / "emu" / "truth.jsonl").read_text().splitlines()]
    assert [r["action"] for r in rows].count("initial") == 8
    acts = [r for r in rows if r["action"] != "initial"]
    assert [(r["node"], r["lane"], r["action"], r["units"]) for r in acts] == [
        (1, 0, "pick", -1),
        (2, 3, "pick", -1),
        (2, 2, "theft", -2),
    ]
    assert acts[0]["paid_units"] == 1 and acts[0]["pay_at"] > acts[0]["time"] and acts[2]["paid_units"] == 0
    # Everything stopped: the links are gone, the node processes too.
    assert not (tmp_path / "emu" / "node-1").exists()
    assert lines[-1].startswith("smartshelf emulate: stopped 2 node(s)")


def test_a_node_without_a_hub_keeps_running_then_talks_to_a_late_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "BACKLOG_MAX", 150)  # ~3 frames: reached within seconds
    emu = host.Emulator([4], build("idle", [4]), tmp_path / "emu", out=lambda s: None)
    emu.start()
    hub = None
    try:
        node = emu.nodes[0]
        deadline = time.monotonic() + 60  # a MicroPython boot, then a second of backlog: slow on a loaded machine
        while node.flushed_bytes == 0 and time.monotonic() < deadline:
            emu.poll()
            time.sleep(0.1)
        assert node.flushed_bytes > 150  # nobody read: the backlog was dropped, not accumulated
        assert node.process is not None and node.process.poll() is None  # ... and the node lives on
        hub = Hub(tmp_path / "emu" / "nodes.toml")
        got: list[dict[str, Any]] = []

        def on_frame(f: dict[str, Any]) -> None:
            got.append(f)
            if f["type"] == "hello":
                hub.send(f["node"], Ack(0))

        deadline = time.monotonic() + 60
        while not any(f["type"] == "health" for f in got) and time.monotonic() < deadline:
            _run(emu, hub, 0.2, on_frame)
    finally:
        if hub is not None:
            hub.close()
        emu.stop()
    # The late hub got a hello (still repeated: none had been answered) and the session's health and states.
    assert any(f["type"] == "hello" for f in got)
    health = next(f for f in got if f["type"] == "health")
    assert health["rx_frames"] == 1 and health["rx_rejected"] == 0
    assert {f["lane"] for f in got if f["type"] == "lane_state"} == {0, 1, 2, 3}


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def test_cli_prints_stable_paths_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    d = tmp_path / "emu"
    cfg = tmp_path / "hub-nodes.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "emulate", "--nodes", "2", "--scenario", "idle", "--dir", str(d),
         "--write-config", str(cfg)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        out: list[str] = []
        while True:
            line = proc.stdout.readline()
            assert line, (out, proc.stderr.read() if proc.stderr else "")
            out.append(line)
            if line.startswith("running"):
                break
        children = _children(proc.pid)
        assert len(children) == 2
        node_lines = [line for line in out if line.startswith("node ")]
        assert [line.split(":")[0] for line in node_lines] == ["node 1", "node 2"]
        port = Path(node_lines[0].split()[2])
        assert port == d / "node-1" and stat.S_ISCHR(os.stat(port).st_mode)
        assert tomllib.loads(cfg.read_text())["node"][1]["port"] == str(d / "node-2")
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped 2 node(s)" in rest
    assert not port.exists() and not (d / "node-2").exists()

    def gone(pid: int) -> bool:
        try:
            return "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True

    deadline = time.monotonic() + 10  # the node processes end with it (a moment later on a loaded machine)
    while not all(gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in children), [pid for pid in children if not gone(pid)]


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    from hub.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["emulate", "--nodes", "0", "--dir", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["emulate", "--scenario", "nope", "--dir", str(tmp_path)])
    with pytest.raises(host.EmulatorError, match="unknown scenario"):
        host.Emulator(1, "nope", tmp_path)
    # A directory another emulator holds is refused with a clear message.
    a = host.Emulator([9], build("idle", [9]), tmp_path / "x", out=lambda s: None)
    a.start()
    try:
        with pytest.raises(host.EmulatorError, match="another smartshelf emulate is using"):
            host.Emulator([9], build("idle", [9]), tmp_path / "x", out=lambda s: None).start()
    finally:
        a.stop()


def test_a_crashing_node_is_reset_then_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "RESTART_DELAY_S", 0.1)
    monkeypatch.setattr(host, "MAX_RESTARTS", 1)
    sc = build("idle", [1])
    sc.nodes[1].lane_plans[0]["comps"] = [["x", 1.0, 2.0, 0.0]]  # the emulated hardware itself is broken
    lines: list[str] = []
    emu = host.Emulator([1], sc, tmp_path / "emu", out=lines.append)
    emu.start()
    try:
        node = emu.nodes[0]
        deadline = time.monotonic() + 60  # two MicroPython boots: slow on a loaded machine
        while "given up" not in node.stopped and time.monotonic() < deadline:
            emu.poll()
            time.sleep(0.05)
    finally:
        emu.stop()
    assert "given up" in node.stopped, lines
    assert any("crashed (ValueError: bad component" in line for line in lines), lines
    assert any("restarting (reset 1 of 1)" in line for line in lines), lines
    # The traceback is on the node's console, as on a board's.
    assert "ValueError: bad component" in node.log_path.read_text()
    assert not (tmp_path / "emu" / "node-1").exists()


def test_node_flash_persists_across_emulator_runs_unless_fresh(tmp_path: Path) -> None:
    from firmware import persist

    d = tmp_path / "emu"
    state = d / "state" / "node-3" / "flash" / "state"

    log = d / "node-3.log"

    def booted() -> int:
        return log.read_text().count("smartshelf: node 3 boot ") if log.exists() else 0

    def one_run(fresh: bool) -> tuple[str, int | None, int | None]:
        before = booted()
        emu = host.Emulator([3], build("idle", [3]), d, fresh=fresh, out=lambda s: None)
        emu.start()
        try:
            deadline = time.monotonic() + 60  # a MicroPython boot: seconds on a loaded machine
            while (booted() == before or persist.load(str(state / "seq")) is None) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            emu.stop()
        key = tomllib.loads((d / "nodes.toml").read_text())["node"][0]["key"]
        return key, persist.load(str(state / "boot")), persist.load(str(state / "seq"))

    key1, boot1, seq1 = one_run(False)
    key2, boot2, seq2 = one_run(False)
    assert (boot1, boot2) == (1, 2) and key1 == key2  # the same node, rebooted: its key and counters stay
    assert seq1 is not None and seq2 is not None and seq2 > seq1  # frame seq never goes back (the hub's replay mark)
    key3, boot3, _ = one_run(True)
    assert boot3 == 1 and key3 != key1  # --fresh: a new node
