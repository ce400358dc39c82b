"""Run Python code under the real MicroPython runtime (the WebAssembly build from npm, driven by Node.js).

One Node.js process is kept alive and serves many requests; each request runs in a fresh interpreter
(a few milliseconds) whose file system holds ``shared_protocol/``, ``firmware/`` and any extra package
directories under ``/lib``, importable exactly as on a flashed node.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("runner.mjs")
PACKAGE = "@micropython/micropython-webassembly-pyscript"
DEFAULT_PACKAGES: tuple[str, ...] = ("shared_protocol", "firmware")


class MicroPythonUnavailable(RuntimeError):
    """Node.js or the npm MicroPython package is missing."""


class MicroPythonError(Exception):
    """Code run under MicroPython raised; carries MicroPython's own traceback."""

    def __init__(self, exc_type: str, traceback: str, stdout: str = "") -> None:
        super().__init__(f"{exc_type} under MicroPython:\n{traceback}")
        self.exc_type = exc_type
        self.traceback = traceback
        self.stdout = stdout


def find_node() -> str:
    node = shutil.which("node")
    if node is None:
        raise MicroPythonUnavailable("Node.js ('node') is not on PATH; run 'make bootstrap' or install nodejs")
    package_dir = REPO_ROOT / "node_modules" / PACKAGE
    if not (package_dir / "micropython.mjs").is_file():
        raise MicroPythonUnavailable(f"{PACKAGE} is not installed in {REPO_ROOT / 'node_modules'}; run 'npm ci'")
    return node


class MicroPythonRuntime:
    """A Node.js process hosting MicroPython interpreters; use as a context manager or call ``close``."""

    def __init__(
        self,
        packages: Iterable[str | tuple[Path, str]] = DEFAULT_PACKAGES,
        heap_bytes: int = 8 * 1024 * 1024,
        timeout_s: float = 120.0,
    ) -> None:
        roots: list[tuple[str, str]] = []
        for pkg in packages:
            if isinstance(pkg, tuple):
                roots.append((str(pkg[0]), pkg[1]))
            else:
                roots.append((str(REPO_ROOT / pkg), pkg))
        self._env = dict(os.environ, MPY_LIB_ROOTS=json.dumps(roots), MPY_HEAP_BYTES=str(heap_bytes))
        self._timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._next_id = 1
        self._buf = b""

    # -- process management -------------------------------------------------------------------
    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        node = find_node()
        self._proc = subprocess.Popen(
            [node, str(RUNNER)],
            cwd=REPO_ROOT,
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buf = b""
        hello = self._read_reply(timeout_s=60.0)
        if not hello.get("ok"):
            raise MicroPythonUnavailable(f"MicroPython runner failed to start: {hello}")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> MicroPythonRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_reply(self, timeout_s: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.wait()
                self._proc = None
                raise TimeoutError(f"MicroPython did not answer within {timeout_s:.0f} s (runner restarted)")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                self._proc = None
                raise MicroPythonUnavailable(f"MicroPython runner exited:\n{err}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    # -- running code ---------------------------------------------------------------------------
    def exec(
        self,
        code: str,
        files: Mapping[str, bytes] | None = None,
        timeout_s: float | None = None,
        fresh: bool = True,
    ) -> Any:
        """Run ``code`` (top-level ``await`` allowed) and return the JSON value it assigned to ``result``."""
        self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        req_id = self._next_id
        self._next_id += 1
        req = {
            "id": req_id,
            "code": code,
            "fresh": fresh,
            "files": {k: base64.b64encode(v).decode() for k, v in (files or {}).items()},
        }
        proc.stdin.write(json.dumps(req).encode() + b"\n")
        proc.stdin.flush()
        reply = self._read_reply(self._timeout_s if timeout_s is None else timeout_s)
        if reply.get("id") != req_id:
            raise RuntimeError(f"MicroPython runner answered request {reply.get('id')}, expected {req_id}")
        if not reply["ok"]:
            err = reply["error"]
            raise MicroPythonError(err["type"], err["traceback"], reply.get("stdout", ""))
        self.last_stdout: str = reply.get("stdout", "")
        return reply["result"]

    def call(self, module: str, func: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Import ``module`` under MicroPython and return ``module.func(*args)``; args and result are JSON."""
        code = (
            "import json\n"
            f"import {module} as _m\n"
            f"_args = json.loads({json.dumps(json.dumps(list(args)))})\n"
            f"_r = _m.{func}(*_args)\n"
            "if hasattr(_r, 'send'):\n"
            "    _r = await _r\n"
            "result = _r\n"
        )
        return self.exec(code, timeout_s=timeout_s)


ROM_PACKAGES: tuple[str | tuple[Path, str], ...] = (
    "shared_protocol",
    "firmware",
    (REPO_ROOT / "tools" / "emulation", "tools/emulation"),
)
DEFAULT_FLASH_BYTES = 0x1F0000  # an ESP32's default file-system partition (about 1.9 MiB)


class NodeProcess:
    """One emulated shelf-node board in the runner's node mode (``board.mjs``): the MicroPython VM behind a
    console on ``link_fd`` (a pty master, non-blocking) that behaves like a board's USB serial port (REPL, raw
    REPL, Ctrl-C, soft and hard resets), booting ``main.py`` from its flash. ``flash_dir`` on the host is the
    board's flash (``flash_bytes`` big), mirrored back as it changes; ``rom`` are the packages of its ROM (the
    emulated hardware, ``tools/emulation/rom.py``); ``files`` extra MEMFS files outside the flash (the plan of
    the board's physical world at ``/emu/plan.json``). ``radio_fd`` (optional): the board's end of a SOCK_SEQPACKET
    socket to its radio (``tools.emulation.radio.host.Radio.attach``), made non-blocking and passed to the runner:
    the ROM then has a ``bluetooth`` module; without it the board has none, as an image built without BLE."""

    def __init__(
        self,
        link_fd: int,
        flash_dir: Path,
        *,
        epoch_ms: float,
        files: Mapping[str, bytes] | None = None,
        log_path: Path | None = None,
        rom: Iterable[str | tuple[Path, str]] = ROM_PACKAGES,
        heap_bytes: int = 2 * 1024 * 1024,
        flash_bytes: int = DEFAULT_FLASH_BYTES,
        unique_id: bytes = b"",
        max_pending: int = 65536,
        radio_fd: int | None = None,
    ) -> None:
        roots: list[tuple[str, str]] = []
        for pkg in rom:
            roots.append((str(pkg[0]), pkg[1]) if isinstance(pkg, tuple) else (str(REPO_ROOT / pkg), pkg))
        spec = {
            "fd": link_fd,
            "flash_dir": str(flash_dir),
            "flash_bytes": flash_bytes,
            "files": {k: base64.b64encode(v).decode() for k, v in (files or {}).items()},
            "plan": "/emu/plan.json",
            "epoch_ms": epoch_ms,
            "log": str(log_path) if log_path is not None else None,
            "max_pending": max_pending,
            "unique_id": unique_id.hex(),
            "radio_fd": radio_fd,
        }
        # The spec (with the node's files, e.g. a long scenario plan) goes through a private file: an
        # environment variable is limited to 128 KiB on Linux.
        fd, spec_path = tempfile.mkstemp(prefix="mpy-node-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        self._spec_path = Path(spec_path)
        self._env = dict(
            os.environ,
            MPY_LIB_ROOTS=json.dumps(roots),
            MPY_HEAP_BYTES=str(heap_bytes),
            MPY_NODE_SPEC_FILE=spec_path,
        )
        self._fd = link_fd
        self._radio_fd = radio_fd
        if radio_fd is not None:
            os.set_blocking(radio_fd, False)
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self.exit_info: dict[str, Any] | None = None

    def start(self) -> None:
        node = find_node()
        err = open(self._log_path, "ab") if self._log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [node, str(RUNNER), "--node"],
                cwd=REPO_ROOT,
                env=self._env,
                stdin=subprocess.PIPE,  # never written: its end tells the runner the host is gone
                stdout=subprocess.PIPE,
                stderr=err,
                pass_fds=(self._fd,) if self._radio_fd is None else (self._fd, self._radio_fd),
                start_new_session=True,  # a terminal's Ctrl-C reaches the host only; the host stops the nodes
            )
        finally:
            if not isinstance(err, int):
                err.close()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def status(self) -> list[dict[str, Any]]:
        """Status lines the runner has written since the last call ({"event": "ready" | "reset" | "program" |
        "exit", ...}: see board.mjs)."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            return []
        try:
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            chunk = b""
        self._buf += chunk
        out: list[dict[str, Any]] = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                if obj.get("event") == "exit":
                    self.exit_info = obj
                out.append(obj)
        return out

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for st in self.status():
                if st.get("event") == "ready":
                    return
                if st.get("event") == "exit":
                    raise MicroPythonUnavailable(f"the emulated board did not start: {st.get('error')}")
            if self.poll() is not None:
                raise MicroPythonUnavailable(f"the node runner exited with status {self.poll()}")
            time.sleep(0.02)
        raise TimeoutError(f"the node runner did not start within {timeout_s:.0f} s")

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM (the runner flushes its flash mirror and exits), then SIGKILL after ``timeout_s``."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.status()
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()
        self._spec_path.unlink(missing_ok=True)
        return proc.returncode
