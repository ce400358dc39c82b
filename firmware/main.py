"""The loader, flashed as ``/main.py``: picks the installed firmware image and starts the node from it.

Flash layout (``smartshelf flash`` writes it, ``hub/provisioning/``)::

    /main.py                  this loader (replaced as a whole: written beside, then renamed over)
    /config.json              the node's configuration
    /fw/active                the id of the firmware image to run (one line): renaming a new one over it is the
                              switch from one version to the next
    /fw/previous              the id of the image it replaced: the fallback
    /fw/trial, /fw/tries      the image the installer switched to, on trial until the node reaches the hub, and
                              the boots it has had on trial (``firmware/trial.py`` ends the trial)
    /fw/<id>/manifest.json    {"id", "version": [major, minor, patch], "arch", "files": {path: [size, sha256]}}
    /fw/<id>/firmware/..., /fw/<id>/shared_protocol/...   the image (.mpy or .py)
    /state/                   what the node keeps itself (boot count, outbox, counters, calibrations)

At boot the loader takes ``active`` if its image is complete (every file of its manifest there, with its size),
else ``previous``; if the image it took does not import (a damaged or foreign ``.mpy``), it tries the other.
An install that was interrupted (power cut, mpremote killed, a full flash) never replaced ``active``, so the node
boots what it ran before. With no image under ``/fw`` the firmware is imported from ``sys.path`` as it is
(``/lib``: a developer's copy).

A new image is on trial until it proves itself: the hub answers its hello, or it runs ten minutes without a reset
(``firmware/trial.py``). An image that has not in ``TRIAL_BOOTS`` boots (it crashes and resets, or hangs until the
watchdog or a power cycle) is given up: the loader switches back to the previous image for good and says so on the
console. Boots count, not time: power cycles in a row while the hub is down count too.
"""

import sys

FW = "/fw"
PACKAGES = ("firmware", "shared_protocol")
TRIAL_BOOTS = 3

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _read_id(name: str) -> str:
    try:
        with open(FW + "/" + name) as f:
            return str(f.read()).strip()
    except OSError:
        return ""


def _write_id(name: str, text: str) -> None:
    import os

    with open(FW + "/" + name + ".new", "w") as f:
        f.write(text)
    os.rename(FW + "/" + name + ".new", FW + "/" + name)


def _remove(name: str) -> None:
    import os

    try:
        os.remove(FW + "/" + name)
    except OSError:
        pass


def settle_trial() -> None:
    """Count this boot of an image on trial; after ``TRIAL_BOOTS`` of them, switch back to the previous image."""
    active = _read_id("active")
    if not active or _read_id("trial") != active:
        return
    try:
        tries = int(_read_id("tries") or "0")
    except ValueError:
        tries = TRIAL_BOOTS
    if tries < TRIAL_BOOTS:
        _write_id("tries", str(tries + 1))
        return
    previous = _read_id("previous")
    if previous and previous != active and complete(previous):
        _write_id("active", previous)
        _remove("previous")
        print("smartshelf: firmware image " + active + " did not reach the hub in " + str(TRIAL_BOOTS)
              + " boots: back to " + previous)  # fmt: skip
    else:
        print("smartshelf: firmware image " + active + " did not reach the hub, and there is nothing to go back to")
    _remove("trial")
    _remove("tries")


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
            app.IMAGE = image  # the trial it may end is its own (firmware/trial.py)
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
    try:
        settle_trial()
    except OSError as err:  # a full or failing flash: boot what is there
        print("smartshelf: firmware trial not counted: " + str(err))
    app = load()
    if app is None:
        print("smartshelf: no firmware to run (see " + FW + "); staying at the REPL")
        return
    app.start()


if __name__ == "__main__":
    start()
