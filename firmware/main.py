"""The loader, flashed as ``/main.py``: picks the installed firmware image and starts the node from it.

Flash layout (``smartshelf flash`` writes it, ``hub/provisioning/``)::

    /main.py                  this loader (replaced as a whole: written beside, then renamed over)
    /config.json              the node's configuration
    /fw/active                the id of the firmware image to run (one line): renaming a new one over it is the
                              switch from one version to the next
    /fw/previous              the id of the image it replaced: the fallback
    /fw/<id>/manifest.json    {"id", "version": [major, minor, patch], "arch", "files": {path: [size, sha256]}}
    /fw/<id>/firmware/..., /fw/<id>/shared_protocol/...   the image (.mpy or .py)
    /state/                   what the node keeps itself (boot count, outbox, counters, calibrations)

At boot the loader takes ``active`` if its image is complete (every file of its manifest there, with its size),
else ``previous``; if the image it took does not import (a damaged or foreign ``.mpy``), it tries the other.
An install that was interrupted (power cut, mpremote killed, a full flash) never replaced ``active``, so the node
boots what it ran before. With no image under ``/fw`` the firmware is imported from ``sys.path`` as it is
(``/lib``: a developer's copy).
"""

import sys

FW = "/fw"
PACKAGES = ("firmware", "shared_protocol")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _read_id(name: str) -> str:
    try:
        with open(FW + "/" + name) as f:
            return str(f.read()).strip()
    except OSError:
        return ""


def complete(image_id: str) -> bool:
    """Every file the image's manifest lists is there with its size (the installer checked the hashes)."""
    import json
    import os

    base = FW + "/" + image_id
    try:
        with open(base + "/manifest.json") as f:
            manifest = json.load(f)
        if manifest["id"] != image_id:
            return False
        files = manifest["files"]
        for path in files:
            if os.stat(base + "/" + path)[6] != files[path][0]:
                return False
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False
    return True


def images() -> "list[str]":
    """The complete images to try, in order: active, then previous."""
    out: list[str] = []
    for name in ("active", "previous"):
        image = _read_id(name)
        if image and image not in out and complete(image):
            out.append(image)
    return out


def _forget() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in PACKAGES:
            del sys.modules[name]


def load() -> "Any":
    """The firmware's ``app`` module from the first image that imports (None if none does)."""
    found = images()
    for image in found:
        path = FW + "/" + image
        sys.path.insert(1, path)
        try:
            from firmware import app

            print("smartshelf: firmware image " + image)
            return app
        except Exception as err:  # ImportError, ValueError (an .mpy of another arch or version), SyntaxError
            sys.print_exception(err)  # type: ignore[attr-defined, unused-ignore]
            print("smartshelf: firmware image " + image + " does not load")
            sys.path.remove(path)
            _forget()
    if found or _read_id("active"):
        return None
    try:
        from firmware import app
    except ImportError:
        return None
    return app


def start() -> None:
    app = load()
    if app is None:
        print("smartshelf: no firmware to run (see " + FW + "); staying at the REPL")
        return
    app.start()


if __name__ == "__main__":
    start()
