"""A small deterministic PRNG that gives the same sequence on CPython and MicroPython.

The ``random`` module differs between the runtimes (and is optional on MicroPython), so emulators that
must reproduce a run from a seed on both use this xorshift32 (Marsaglia 2003) instead. Values above
2**30 are long ints on 32-bit MicroPython ports: fine for models, not for allocation-free paths.
"""

_M32 = 0xFFFFFFFF


class XorShift32:
    def __init__(self, seed: int = 1) -> None:
        seed &= _M32
        # The all-zero state is a fixed point of xorshift; any other seed is a full-period start.
        self.state = seed if seed else 0x9E3779B9

    def next(self) -> int:
        """The next value in 1 .. 2**32 - 1."""
        x = self.state
        x ^= (x << 13) & _M32
        x ^= x >> 17
        x ^= (x << 5) & _M32
        self.state = x
        return x

    def below(self, n: int) -> int:
        """A value in 0 .. n - 1 (n <= 2**32; the modulo bias is negligible for the small n used here)."""
        return self.next() % n

    def gauss(self, sigma: int) -> int:
        """Approximately normal integer noise with standard deviation ``sigma``: Irwin-Hall, 12 uniforms.

        Twelve uniforms on [0, 2**16) sum to a mean of 12 * 2**15 and a standard deviation of exactly 2**16;
        the result is rounded towards minus infinity by the shift, the same way on both runtimes.
        """
        s = 0
        for _ in range(6):
            x = self.next()
            s += (x & 0xFFFF) + (x >> 16)
        return ((s - 393216) * sigma) >> 16
