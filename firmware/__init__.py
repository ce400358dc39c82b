"""Shelf-node firmware (MicroPython). On a board this package lives in /lib/firmware next to
/lib/shared_protocol, so imports are the same on the node, under the emulated board and in tests."""

FW_VERSION = (0, 2, 0)
