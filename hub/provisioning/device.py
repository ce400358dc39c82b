"""A board over its USB console, driven by stock mpremote (``python -m mpremote``, one subprocess per session, no
private API): what is on it (``probe``), installing an image (``install``: staged, verified, switched by one
rename, then reset). The code that runs on the board is below as text; it prints one marked JSON line or raises.

Nothing secret goes through argv or the logs: ``config.json`` (the node's key) travels as a file mpremote copies
from a private temporary directory, and the probe never prints the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from firmware.identity import unclaimed_record
from hub.provisioning.image import ARCHS, Image

MPREMOTE = (sys.executable, "-m", "mpremote")
PROBE_MARK = "SMARTSHELF-PROBE "
PROBE_TIMEOUT_S = 20.0  # a soft reset and the probe take a second or two on a board
SWITCH_MARK = "SMARTSHELF-SWITCHED "


class DeviceError(Exception):
    """What went wrong with the board, in one line; nothing on the board was switched."""


@dataclass(frozen=True)
class Probe:
    implementation: str
    version: tuple[int, int, int]
    mpy: int  # sys.implementation._mpy
    sysname: str  # os.uname().sysname ("esp32", "rp2", ...; "" without os.uname)
    machine: str  # sys.implementation._machine
    block: int
    blocks: int
    free_blocks: int
    active: str  # /fw/active ("" if none)
    previous: str
    # The image to build on and fall back to: the one the loader boots now (active if complete, else previous if
    # complete), except while active is on trial (firmware/main.py): then the previous, confirmed one if complete.
    bootable: str
    files: dict[str, str]  # the bootable image's files (and manifest.json) as the board hashes them (sha256)
    loader: str  # sha256 of /main.py ("" if none)
    node_id: int | None  # /config.json's node id (None: no valid config)
    images: tuple[str, ...]  # the directories under /fw

    @property
    def mpy_version(self) -> int:
        return self.mpy & 0xFF

    @property
    def arch(self) -> str:
        """The board's native architecture as mpy-cross names it ("" when it has none)."""
        return ARCHS.get(self.mpy >> 10, "")

    @property
    def free_bytes(self) -> int:
        return self.block * self.free_blocks


# On the board: the sha256 of a file, read in 512-byte chunks into one buffer (the probe and the switch use it).
SHA = r"""
def _sha(p):
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(m[:n])
    return binascii.hexlify(h.digest()).decode()
"""

PROBE = r"""
import sys, os, json
try:
    import hashlib, binascii
except ImportError:
    hashlib = None
"""
PROBE += SHA
PROBE += r"""def _rd(p):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return ''
i = {'impl': sys.implementation.name, 'version': list(sys.implementation.version[:3]),
     'mpy': getattr(sys.implementation, '_mpy', 0), 'machine': getattr(sys.implementation, '_machine', '')}
try:
    i['sysname'] = os.uname()[0]
except AttributeError:
    i['sysname'] = ''
s = os.statvfs('/')
i['block'] = s[0]
i['blocks'] = s[2]
i['free'] = s[3]
def _complete(d):
    try:
        with open('/fw/' + d + '/manifest.json') as f:
            m = json.load(f)
        if m['id'] != d:
            return False
        for p in m['files']:
            if os.stat('/fw/' + d + '/' + p)[6] != m['files'][p][0]:
                return False
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False
    return True
i['active'] = _rd('/fw/active')
i['previous'] = _rd('/fw/previous')
t = _rd('/fw/trial')
a = ''
for d in ((i['previous'], i['active']) if t and t == i['active'] else (i['active'], i['previous'])):
    if d and _complete(d):
        a = d
        break
i['bootable'] = a
fs = {}
if a and hashlib:
    try:
        fs['manifest.json'] = _sha('/fw/' + a + '/manifest.json')
        with open('/fw/' + a + '/manifest.json') as f:
            for p in json.load(f)['files']:
                try:
                    fs[p] = _sha('/fw/' + a + '/' + p)
                except OSError:
                    pass
    except (OSError, ValueError, KeyError):
        pass
i['files'] = fs
try:
    i['loader'] = _sha('/main.py') if hashlib else ''
except OSError:
    i['loader'] = ''
try:
    with open('/config.json') as f:
        i['node_id'] = json.load(f).get('node_id')
except (OSError, ValueError, AttributeError):
    i['node_id'] = None
try:
    i['images'] = [e[0] for e in os.ilistdir('/fw') if e[1] == 0x4000]
except OSError:
    i['images'] = []
print('SMARTSHELF-PROBE ' + json.dumps(i))
"""

# Before the copy: every image directory but the one the board boots now (BASE, the fallback while installing) and
# the new one goes (the space is needed), the new image's directories exist, and the files it shares with BASE are
# copied on the board instead of over the wire.
PREPARE = r"""
import os
def _rm(p):
    for e in os.ilistdir(p):
        q = p + '/' + e[0]
        if e[1] == 0x4000:
            _rm(q)
        else:
            os.remove(q)
    os.rmdir(p)
def _md(p):
    try:
        os.mkdir(p)
    except OSError:
        pass
_md('/fw')
_md('/state')
for d in [e[0] for e in os.ilistdir('/fw') if e[1] == 0x4000]:
    if d not in KEEP:
        _rm('/fw/' + d)
_md('/fw/' + NEW)
for d in DIRS:
    _md('/fw/' + NEW + '/' + d)
b = bytearray(512)
m = memoryview(b)
for p in COPY:
    with open('/fw/' + BASE + '/' + p, 'rb') as r, open('/fw/' + NEW + '/' + p, 'wb') as w:
        while True:
            n = r.readinto(b)
            if not n:
                break
            w.write(m[:n])
print('SMARTSHELF-PREPARED')
"""

# After the copy: every file checked (size and sha256) against what the host built; then the fallback pointer (the
# image the board booted) and the trial mark (the new image is on trial until the node reaches the hub: the loader
# switches back after firmware/main.py's TRIAL_BOOTS boots without that), the loader and the config are put in
# place, and last the switch itself: /fw/active replaced by one rename.
SWITCH = r"""
import os, hashlib, binascii
"""
SWITCH += SHA
SWITCH += r"""for p, want in EXPECT.items():
    try:
        got = _sha(p)
    except OSError:
        got = 'missing'
    if got != want:
        raise OSError('verify ' + p + ': ' + got)
def _put(path, text):
    with open(path + '.new', 'w') as f:
        f.write(text)
    os.rename(path + '.new', path)
if BASE and BASE != NEW:
    _put('/fw/previous', BASE)
    _put('/fw/trial', NEW)
try:
    os.remove('/fw/tries')
except OSError:
    pass
for p in RENAME:
    os.rename(p + '.new', p)
_put('/fw/active', NEW)
print('SMARTSHELF-SWITCHED ' + NEW)
"""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Device:
    """A board on ``port``; every call is one mpremote session (it interrupts whatever runs on the board)."""

    def __init__(self, port: str, timeout_s: float = 300.0, probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.probe_timeout_s = probe_timeout_s

    def _mpremote(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str] | None:
        """The mpremote session's outcome; None if it did not end within ``timeout_s`` (it is killed then)."""
        try:
            return subprocess.run(
                [*MPREMOTE, "connect", self.port, *args],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return None

    def _failure(self, proc: subprocess.CompletedProcess[str], doing: str) -> DeviceError:
        text = (proc.stderr + proc.stdout).strip()
        if "could not enter raw repl" in text:
            return DeviceError(f"{self.port}: not MicroPython (no raw REPL answer)")
        if "No space left on device" in text or "OSError: 28" in text or "ENOSPC" in text:
            return DeviceError(f"{self.port}: flash full while {doing}")
        if "failed to access" in text:
            return DeviceError(f"{self.port}: cannot open the port")
        last = text.splitlines()[-1] if text else f"mpremote exit status {proc.returncode}"
        return DeviceError(f"{self.port}: {doing} failed: {last.removeprefix('mpremote: ')}")

    def probe(self) -> Probe:
        proc = self._mpremote("exec", PROBE, timeout_s=self.probe_timeout_s)
        if proc is None:  # mpremote waits for ever on a device that talks but never answers
            raise DeviceError(f"{self.port}: not MicroPython (no raw REPL answer within {self.probe_timeout_s:.0f} s)")
        if proc.returncode != 0:
            raise self._failure(proc, "reading the board")
        for line in proc.stdout.splitlines():
            if line.startswith(PROBE_MARK):
                try:
                    d = json.loads(line[len(PROBE_MARK) :])
                except ValueError:
                    raise DeviceError(f"{self.port}: the board's answer to the probe is garbled") from None
                break
        else:
            raise DeviceError(f"{self.port}: not MicroPython (no answer to the probe)")
        if d.get("impl") != "micropython":
            raise DeviceError(f"{self.port}: not MicroPython ({d.get('impl')})")
        v = [*d["version"], 0, 0, 0][:3]
        node_id = d.get("node_id")
        return Probe(
            str(d["impl"]), (int(v[0]), int(v[1]), int(v[2])), int(d["mpy"]), str(d.get("sysname", "")),
            str(d.get("machine", "")), int(d["block"]), int(d["blocks"]), int(d["free"]), str(d["active"]),
            str(d["previous"]), str(d["bootable"]), {str(k): str(h) for k, h in d["files"].items()}, str(d["loader"]),
            node_id if isinstance(node_id, int) and not isinstance(node_id, bool) else None,
            tuple(str(x) for x in d["images"]),
        )  # fmt: skip

    def switch_back(self, image_id: str) -> None:
        """Make ``image_id`` (complete on the board) the active image again and reset (best effort)."""
        code = (
            f"import os\nNEW = {image_id!r}\n"
            "with open('/fw/active.new', 'w') as f:\n    f.write(NEW)\nos.rename('/fw/active.new', '/fw/active')\n"
            "for p in ('/fw/trial', '/fw/tries'):\n    try:\n        os.remove(p)\n    except OSError:\n        pass\n"
        )
        self._mpremote("exec", code, "+", "reset", timeout_s=self.probe_timeout_s)

    def restart(self) -> None:
        """Reset the board (best effort), so a node whose firmware the probe interrupted counts again."""
        self._mpremote("reset", timeout_s=self.probe_timeout_s)

    def install(self, image: Image, probe: Probe, config: bytes | None) -> tuple[int, int]:
        """Stage ``image`` under /fw/<id> (files shared with the image the board boots copied on the board, the
        others over the wire), verify it, put the loader and ``config`` (if given) in place, switch, reset. Returns
        (files sent, bytes sent). Raises DeviceError; until the switch nothing the board boots from has changed."""
        new = image.image_id
        base = probe.bootable  # what the board boots now: kept, and the fallback afterwards
        want = image.digests()
        if base == new:  # the same image again: what the board has right stays
            copy: list[str] = []
            send = {p: image.files[p] for p in sorted(want) if probe.files.get(p) != want[p]}
        else:  # what the booted image has too is copied on the board; the rest goes over the wire
            copy = sorted(p for p, h in want.items() if base and probe.files.get(p) == h)
            send = {p: image.files[p] for p in sorted(want) if p not in copy}
        expect = {f"/fw/{new}/{p}": h for p, h in want.items()}
        rename: list[str] = []
        extra: dict[str, bytes] = {}
        if probe.loader != _sha(image.loader):
            extra["main.py.new"] = image.loader
            rename.append("/main.py")
            expect["/main.py.new"] = _sha(image.loader)
        if config is not None:
            # A new node: whatever state the board holds is another identity's, and goes at its next boot (the
            # record names no node; firmware/identity.py). Renamed before the config: a cut in between leaves the
            # old node starting afresh, never the new one inheriting the old one's events.
            identity = unclaimed_record()
            extra["state/identity.new"] = identity
            rename.append("/state/identity")
            expect["/state/identity.new"] = _sha(identity)
            extra["config.json.new"] = config
            rename.append("/config.json")
            expect["/config.json.new"] = _sha(config)
        dirs = sorted({p.rpartition("/")[0] for p in want if "/" in p})
        keep = [base, new] + ([probe.previous] if base == new else [])  # a repair in place keeps a fallback
        prepare = f"BASE = {base!r}\nNEW = {new!r}\nKEEP = {keep!r}\nDIRS = {dirs!r}\nCOPY = {copy!r}\n" + PREPARE
        switch = f"BASE = {base!r}\nNEW = {new!r}\nEXPECT = {expect!r}\nRENAME = {rename!r}\n" + SWITCH
        with tempfile.TemporaryDirectory(prefix="smartshelf-flash-") as tmp:  # 0700: config.json holds the key
            stage = Path(tmp) / new
            stage.mkdir()
            for rel, data in send.items():
                dest = stage / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            args: list[str] = ["exec", prepare]
            if send:
                args += ["+", "fs", "cp", "-r", str(stage), ":/fw/"]
            for name, data in extra.items():
                local = Path(tmp) / name.replace("/", "_")
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                args += ["+", "fs", "cp", str(local), f":/{name}"]
            args += ["+", "exec", switch, "+", "reset"]
            proc = self._mpremote(*args, timeout_s=self.timeout_s)
        if proc is None:
            raise DeviceError(f"{self.port}: the install did not finish within {self.timeout_s:.0f} s")
        if SWITCH_MARK + new not in proc.stdout:
            doing = "copying the firmware" if "SMARTSHELF-PREPARED" in proc.stdout else "preparing the flash"
            if "OSError: verify" in proc.stdout + proc.stderr:
                doing = "verifying the copied firmware"
            raise self._failure(proc, doing)
        sent = list(send.values()) + list(extra.values())
        return len(sent), sum(len(d) for d in sent)
