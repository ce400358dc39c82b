"""The end of a new firmware image's trial: the image has proven itself.

``smartshelf flash`` switches a board to a new image on trial (``/fw/trial`` names it); the loader
(``firmware/main.py``) counts its boots and, after ``TRIAL_BOOTS`` of them without this confirmation, switches back to
the previous image. The proof (``firmware/node.py``, ``on_proven``): the hub answered the node's hello (the image
runs, reads its config and speaks with the node's key), or the image ran ten minutes without a reset (it works; the
hub may be down). ``confirm`` then removes the trial marks, if they name the running image (the loader tells it,
``firmware/app.py``'s ``IMAGE``): an image the loader fell back to proves nothing about the one on trial. The paths
are the loader's flash layout.
"""

import os


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return str(f.read()).strip()
    except OSError:
        return ""


def confirm(image: "str | None", root: str = "") -> bool:
    """End the trial of ``image`` (the running one; None: not loaded from /fw), if it is on one; True when it was."""
    if not image or _read(root + "/fw/trial") != image:
        return False
    for name in ("/fw/trial", "/fw/tries"):
        try:
            os.remove(root + name)
        except OSError:
            pass
    return True
