"""Putting the firmware on shelf nodes (``smartshelf flash``): the parts, each calling only the ones below it.

    flash.py      the command: port, probe, image, a new node's config and key, install, the node's hello
    registry.py   the nodes file the hub reads (``[[node]]``: id, key, port), written atomically, owner-only
    ports.py      serial ports: there and free, stable names (/dev/serial/by-id), the boards plugged in
    device.py     a board through stock mpremote: probe, staged install, verify, switch, reset
    image.py      the firmware image: modules compiled by mpy-cross for the board's arch (or sources), manifest

The layout on the board, and how it boots the installed image or falls back to the previous one, is the
loader's docstring (``firmware/main.py``, installed as ``/main.py``).
"""
