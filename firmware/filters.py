"""Per-sample filters for load-cell signals: integer only, preallocated, no allocation per sample."""

from array import array

from shared_protocol.compat import const

MAX_AVERAGE = const(64)


class OutlierFilter:
    """Hampel-style outlier rejection with one sample of delay.

    The middle of the last three samples is passed through unchanged unless it lies more than
    ``threshold`` from their median, in which case the median replaces it. Ordinary noise is left
    untouched (so a downstream noise estimate stays honest), a real step passes intact, and a
    single-sample spike (ESD, a bit error on the wire) is removed. ``threshold`` is given per call so it
    can follow the lane's current noise estimate."""

    def __init__(self) -> None:
        self._a = 0
        self._b = 0
        self._n = 0
        self.rejected = 0

    def reset(self) -> None:
        self._n = 0

    def feed(self, x: int, threshold: int) -> int:
        a = self._a
        b = self._b
        self._a = b
        self._b = x
        if self._n < 2:
            self._n += 1
            return x if self._n == 1 else b
        lo = a
        hi = b
        if lo > hi:
            lo = b
            hi = a
        # median of (a, b, x)
        if x <= lo:
            med = lo
        elif x >= hi:
            med = hi
        else:
            med = x
        d = b - med
        if d > threshold or -d > threshold:
            self.rejected += 1
            return med
        return b


class MovingAverage:
    """Boxcar mean of the last ``n`` samples (rounded to nearest), kept as a running sum.

    Inputs must stay within +/- 2**24 so the running sum of up to 64 samples stays a small int on
    32-bit MicroPython ports (no big-int allocation)."""

    def __init__(self, n: int) -> None:
        if not 1 <= n <= MAX_AVERAGE:
            raise ValueError("average length must be 1..64")
        self._buf = array("i", [0] * n)
        self._size = n
        self._i = 0
        self._count = 0
        self._sum = 0

    def reset(self) -> None:
        self._i = 0
        self._count = 0
        self._sum = 0

    def feed(self, x: int) -> int:
        i = self._i
        if self._count == self._size:
            self._sum -= self._buf[i]
        else:
            self._count += 1
        self._buf[i] = x
        self._sum += x
        i += 1
        self._i = 0 if i == self._size else i
        c = self._count
        s = self._sum
        if s >= 0:
            return (s + (c >> 1)) // c
        return -((-s + (c >> 1)) // c)
