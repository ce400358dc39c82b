"""Raw HX711 counts <-> tenths of grams, tare, two-point calibration, automatic zero tracking.

Scale is stored as ``c10`` = counts per 10 g (a 5 kg cell gives ~4,200; a 20 kg cell ~1,270), so
``dg = (raw - offset) * 100 / c10`` keeps 0.1 g resolution with integer arithmetic. The product is split
(quotient and remainder) so no intermediate exceeds a 31-bit small int: converting a sample never
allocates on MicroPython.

Calibrations are stored per lane with ``persist.Record`` (atomic replace, CRC) and validated on load: a
record that is corrupt, from another layout, or physically implausible is refused and the lane reports
itself uncalibrated instead of weighing wrongly.
"""

import struct

from firmware.persist import Record
from shared_protocol.compat import const

_FMT = ">BBiiH"  # version, cells, offset, c10, zero_band_dg
_VERSION = const(1)
MIN_C10 = const(50)  # ~5 counts/g: below that the cell or gain is wrong
MAX_C10 = const(200000)
MAX_RAW = const(0x7FFFFF)
DEFAULT_ZERO_BAND_DG = const(20)  # automatic zero tracking only within +/- 2 g of zero
_ZERO_STEP = const(1)  # counts of offset moved per tracked sample: slow by design


class CalibrationError(ValueError):
    pass


class Calibration:
    def __init__(self, cells: int = 1, offset: int = 0, c10: int = 4200, zero_band_dg: int = DEFAULT_ZERO_BAND_DG):
        self.cells = cells
        self.offset = offset
        self.c10 = c10
        self.zero_band_dg = zero_band_dg
        self.calibrated = False
        validate(cells, offset, c10)

    def to_dg(self, raw: int) -> int:
        """Weight in tenths of grams (rounded to nearest) for a raw count sum."""
        d = raw - self.offset
        c = self.c10
        if c < 0:
            c = -c
            d = -d
        neg = d < 0
        if neg:
            d = -d
        q = d // c
        r = d - q * c
        dg = q * 100 + (r * 100 + (c >> 1)) // c
        return -dg if neg else dg

    def to_raw_delta(self, dg: int) -> int:
        """Raw counts for a weight difference (calibration, thresholds; not on the sample path)."""
        return (dg * self.c10 + (50 if dg >= 0 else -50)) // 100

    def tare(self, raw_mean: int) -> None:
        """The lane is empty now: this raw reading is zero."""
        validate(self.cells, raw_mean, self.c10)
        self.offset = raw_mean

    def calibrate(self, raw_mean: int, known_dg: int) -> int:
        """Two-point calibration: zero is the current offset (tare first); ``raw_mean`` reads ``known_dg``."""
        if known_dg <= 0:
            raise CalibrationError("known weight must be positive")
        span = raw_mean - self.offset
        half = known_dg >> 1
        c10 = (span * 100 + half) // known_dg if span >= 0 else -((-span * 100 + half) // known_dg)
        validate(self.cells, self.offset, c10)
        self.c10 = c10
        self.calibrated = True
        return c10

    def from_points(self, raw1: int, dg1: int, raw2: int, dg2: int) -> None:
        """Calibration from any two known loads (e.g. with stock already on the lane)."""
        if dg1 == dg2:
            raise CalibrationError("the two calibration weights must differ")
        c10 = ((raw2 - raw1) * 100) // (dg2 - dg1)
        offset = raw1 - (dg1 * c10) // 100
        validate(self.cells, offset, c10)
        self.c10 = c10
        self.offset = offset
        self.calibrated = True

    def track_zero(self, raw: int, stable: bool) -> bool:
        """Automatic zero tracking: while the lane is stable and within the zero band, nudge the
        offset one count toward the reading. Returns True when it moved. Never while loaded or moving."""
        if not stable:
            return False
        dg = self.to_dg(raw)
        if dg > self.zero_band_dg or dg < -self.zero_band_dg or raw == self.offset:
            return False
        self.offset += _ZERO_STEP if raw > self.offset else -_ZERO_STEP
        return True

    def encode(self) -> bytes:
        return struct.pack(_FMT, _VERSION, self.cells, self.offset, self.c10, self.zero_band_dg)

    @classmethod
    def decode(cls, data: bytes, cells: int) -> "Calibration":
        if len(data) != struct.calcsize(_FMT):
            raise CalibrationError("calibration record has the wrong size")
        version, rec_cells, offset, c10, zero_band = struct.unpack(_FMT, data)
        if version != _VERSION:
            raise CalibrationError("calibration record version " + str(version))
        if rec_cells != cells:
            raise CalibrationError("calibration is for " + str(rec_cells) + " cells, lane has " + str(cells))
        cal = cls(cells, offset, c10, zero_band)
        cal.calibrated = True
        return cal


def validate(cells: int, offset: int, c10: int) -> None:
    if not 1 <= cells <= 8:
        raise CalibrationError("a lane has 1..8 cells")
    if abs(offset) > MAX_RAW * cells:
        raise CalibrationError("offset outside the ADC range")
    if not MIN_C10 <= abs(c10) <= MAX_C10:
        raise CalibrationError("scale " + str(c10) + " counts/10 g is implausible")


class CalibrationStore:
    """One lane's calibration on flash."""

    def __init__(self, path: str, cells: int) -> None:
        self._record = Record(path)
        self._cells = cells
        self.error = ""

    def load(self) -> "Calibration":
        """The stored calibration, or an uncalibrated default (``error`` says why) when none is valid."""
        data = self._record.load()
        if data is None:
            self.error = "no calibration stored"
            return Calibration(self._cells)
        try:
            cal = Calibration.decode(data, self._cells)
        except CalibrationError as err:
            self.error = str(err)
            return Calibration(self._cells)
        self.error = ""
        return cal

    def save(self, cal: "Calibration") -> None:
        self._record.save(cal.encode())
