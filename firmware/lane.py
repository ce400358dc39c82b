"""One lane (one SKU facing on one or more load cells): samples -> weight -> events -> counters.

Per sample (``sample``): read every cell's HX711, sum the raw counts, reject outliers, convert to tenths of
grams with the lane's calibration, and feed the detector. Nothing on that path allocates on the MicroPython
heap (ints only, preallocated state), so the sampling loop never triggers a garbage collection.

A cell that does not answer marks the lane faulted and tells the detector, which abandons any change in
progress and, once samples return, compares the new stable level with the one before the fault instead of
reporting a confident count. Tare and calibration need a stable lane (the hub's command is answered
"busy" otherwise) and re-base the detector, so a re-zeroed lane never looks like a pick.
"""

from firmware.calibration import Calibration, CalibrationError
from firmware.detector import Detector
from firmware.filters import MovingAverage, OutlierFilter
from firmware.ticks import COUNTER_MASK
from shared_protocol.compat import const
from shared_protocol.messages import FLAG_OVERLOAD, FLAG_SENSOR_FAULT, FLAG_UNCALIBRATED, FLAG_UNSTABLE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from firmware.hx711 import HX711

_RAW_MAX = const(0x7FFFFF)
_RAW_MIN = const(-0x800000)
_RAW_AVG = const(8)  # samples in the raw mean used for tare / calibration
_SHOW_AVG = const(8)  # samples in the displayed (reported) weight
_OUTLIER_SIGMAS = const(6)
_ZERO_EVERY = const(64)  # automatic zero tracking moves at most one count per this many stable samples


class Lane:
    def __init__(self, index: int, cells: "list[HX711]", calibration: Calibration, detector: Detector) -> None:
        if not cells:
            raise ValueError("a lane needs at least one cell")
        if calibration.cells != len(cells):
            raise CalibrationError("calibration is for " + str(calibration.cells) + " cells")
        self.index = index
        self._cells = cells
        self.cal = calibration
        self.det = detector
        self.sku = ""  # the SKU on this lane (set_lane; "" while none is assigned)
        self._outlier = OutlierFilter()
        self._raw_avg = MovingAverage(_RAW_AVG)
        self._show = MovingAverage(_SHOW_AVG)
        self.raw = 0  # last outlier-filtered raw sum
        self.raw_mean = 0
        self.weight_dg = 0  # smoothed, for reports and the status page
        self.fault = False
        self.faults = 0
        self.overload = False
        self.samples = 0
        self._zero_n = 0

    def sample(self, t_ms: int) -> bool:
        """Read the cells once; True when the detector confirmed an event (see ``self.det.ev_*``)."""
        total = 0
        over = False
        for cell in self._cells:
            v = cell.read()
            if v is None:
                if not self.fault:
                    self.fault = True
                    self.faults += 1
                    self.det.fault(t_ms)
                return False
            if v >= _RAW_MAX or v <= _RAW_MIN:
                over = True
            total += v
        self.fault = False
        self.overload = over
        self.samples = (self.samples + 1) & COUNTER_MASK  # stays a small int on 32-bit ports
        # Outlier threshold in raw counts from the detector's noise estimate (dg -> counts, no big ints).
        c10 = self.cal.c10 if self.cal.c10 > 0 else -self.cal.c10
        thr = (self.det.noise_dg() * _OUTLIER_SIGMAS * c10) // 100 + 1
        raw = self._outlier.feed(total, thr)
        self.raw = raw
        self.raw_mean = self._raw_avg.feed(raw)
        w = self.cal.to_dg(raw)
        self.weight_dg = self._show.feed(w)
        if self.det.feed(t_ms, w):
            return True
        if self.det.stable:
            self._zero_n += 1
            if self._zero_n >= _ZERO_EVERY:
                self._zero_n = 0
                # One count of offset is far below the noise: the detector's level tracking absorbs it.
                self.cal.track_zero(self.raw_mean, True)
        return False

    def _rebase(self) -> None:
        self.det.reset()
        self._show.reset()
        self._outlier.reset()

    def tare(self) -> "int | None":
        """Zero the lane at its current load; None (busy) unless the lane is stable and healthy."""
        if self.fault or not self.det.stable:
            return None
        self.cal.tare(self.raw_mean)
        self._rebase()
        return self.cal.offset

    def calibrate(self, known_dg: int) -> "int | None":
        """Two-point calibration with ``known_dg`` on the (tared) lane; None (busy) unless stable.
        Raises CalibrationError for an implausible result (the old calibration stays)."""
        if self.fault or not self.det.stable:
            return None
        c10 = self.cal.calibrate(self.raw_mean, known_dg)
        self._rebase()
        return c10

    def flags(self) -> int:
        f = 0
        if self.fault:
            f |= FLAG_SENSOR_FAULT
        if not self.det.stable:
            f |= FLAG_UNSTABLE
        if not self.cal.calibrated:
            f |= FLAG_UNCALIBRATED
        if self.overload:
            f |= FLAG_OVERLOAD
        return f
