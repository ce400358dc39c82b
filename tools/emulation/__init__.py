"""Emulated hardware at the lowest layer we can reach (DESIGN.md section 5), for tests and emulated boards.

Everything here is portable: it runs unchanged under CPython and MicroPython, so the firmware's drivers
can be exercised against it on the real MicroPython VM.
"""
