"""What differs between MicroPython and CPython, in one place."""

__all__ = ["const", "ct_equal"]

try:
    from micropython import const  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[misc, unused-ignore]
        return x


def ct_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
