"""What differs between MicroPython and CPython, in one place."""

__all__ = ["const", "ct_equal"]

TYPE_CHECKING = False
if TYPE_CHECKING:

    def const(x: int) -> int: ...

else:
    try:
        from micropython import const
    except ImportError:  # CPython

        def const(x):
            return x


def ct_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
