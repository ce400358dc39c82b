"""The end of a new firmware image's trial: the node has reached the hub.

``smartshelf flash`` switches a board to a new image on trial (``/fw/trial`` names it); the loader
(``firmware/main.py``) counts its boots and, after ``TRIAL_BOOTS`` of them without this confirmation, switches back to
the previous image. Reaching the hub (its answer to the node's hello authenticated: the image runs, reads its config
and speaks with the node's key) is the confirmation: ``confirm`` removes the trial marks. The paths are the loader's
flash layout.
"""

import os


def confirm(root: str = "") -> bool:
    """End the trial of the running image, if it is on one; True when it was."""
    ended = False
    for name in ("/fw/trial", "/fw/tries"):
        try:
            os.remove(root + name)
            ended = True
        except OSError:
            pass
    return ended
