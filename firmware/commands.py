"""The hub's commands, executed and answered with ``command_result(command_seq = the command frame's seq,
status, value)``.

==================  ==================================================================================
``tare``            OK, value = new zero offset (raw counts); BUSY while the lane moves or is faulted
``calibrate``       OK, value = counts per 10 g; BUSY as for tare; FAILED for an implausible result
``set_lane``        OK; the unit weight, spread and SKU are stored and used from the next sample
``identify``        OK; the LED blinks for ``seconds`` (0 stops)
``set_config``      OK; UNSUPPORTED for an unknown key; BAD_ARGS out of range (keys: ``settings.SETTINGS``)
``request_state``   ``lane_state`` of the lane (255: all lanes), then OK
``set_count``       OK, value = event_seq of the last count event (0: the count agreed); BUSY while the lane
                    moves or is faulted, or when the outbox has no room for the count events (v1.1)
==================  ==================================================================================

A lane number the node does not have is BAD_ARGS; a flash error is FAILED; any other message is UNSUPPORTED.
A command's effects (a calibration, an assignment, a setting) are on flash before it is answered.
"""

from firmware.assignment import assignment_path, save_assignment
from firmware.calibration import CalibrationError
from firmware.shelf import NO_ROOM
from shared_protocol.messages import (
    ALL_LANES,
    STATUS_BAD_ARGS,
    STATUS_BUSY,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_UNSUPPORTED,
    Calibrate,
    CommandResult,
    Identify,
    RequestState,
    SetConfig,
    SetCount,
    SetLane,
    Tare,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware.calibration import CalibrationStore
    from firmware.housekeeping import IdentifyLed
    from firmware.lane import Lane
    from firmware.reports import Reports
    from firmware.session import Session
    from firmware.settings import Settings
    from firmware.shelf import Shelf
    from shared_protocol.frame import Frame
    from shared_protocol.messages import Message


class Commands:
    """``calibrations[i]`` stores lane i's calibration; assignments go to ``state_dir``; ``deliver(seq, now)``
    sends an event a command recorded (a count), as the sampler's events are sent."""

    def __init__(
        self,
        shelf: "Shelf",
        calibrations: "list[CalibrationStore]",
        state_dir: str,
        session: "Session",
        reports: "Reports",
        settings: "Settings",
        led: "IdentifyLed",
        deliver: "Callable[[int, int], None]",
    ) -> None:
        self._shelf = shelf
        self._cal = calibrations
        self._st = state_dir
        self._session = session
        self._reports = reports
        self._settings = settings
        self._led = led
        self._deliver = deliver

    def answer(self, frame: "Frame", now: int) -> None:
        """Execute the command ``frame`` carries and send its result."""
        msg = frame.message
        try:
            status, value = self.execute(msg, now)
        except (OSError, CalibrationError) as err:
            print("smartshelf: command " + msg.NAME + " failed: " + str(err))
            status, value = STATUS_FAILED, 0
        self._session.send(CommandResult(frame.seq, status, value))

    def execute(self, msg: "Message", now: int) -> "tuple[int, int]":
        """(status, value) of one command."""
        if isinstance(msg, RequestState):
            n = len(self._shelf.lanes)
            if msg.lane == ALL_LANES:
                for j in range(n):
                    self._reports.lane_state(j)
            elif msg.lane < n:
                self._reports.lane_state(msg.lane)
            else:
                return STATUS_BAD_ARGS, 0
            return STATUS_OK, 0
        if isinstance(msg, Identify):
            self._led.identify(now, msg.seconds)
            return STATUS_OK, 0
        if isinstance(msg, SetConfig):
            status = self._settings.apply(msg.key, msg.value)
            if status == STATUS_OK:
                self._settings.store()
                self._reports.reschedule(now)
            return status, 0
        if isinstance(msg, Tare):
            return self._tare(msg.lane)
        if isinstance(msg, Calibrate):
            return self._calibrate(msg.lane, msg.known_weight_dg)
        if isinstance(msg, SetLane):
            lane = self._lane(msg.lane)
            if lane is None:
                return STATUS_BAD_ARGS, 0
            save_assignment(assignment_path(self._st, lane.index), msg.unit_weight_dg, msg.spread_permille, msg.sku)
            lane.det.set_unit(msg.unit_weight_dg, msg.spread_permille)
            lane.sku = msg.sku
            return STATUS_OK, 0
        if isinstance(msg, SetCount):
            return self._set_count(msg.lane, msg.count, now)
        return STATUS_UNSUPPORTED, 0

    def _lane(self, i: int) -> "Lane | None":
        lanes = self._shelf.lanes
        if 0 <= i < len(lanes):
            return lanes[i]
        return None

    def _tare(self, i: int) -> "tuple[int, int]":
        lane = self._lane(i)
        if lane is None:
            return STATUS_BAD_ARGS, 0
        offset = lane.tare()
        if offset is None:
            return STATUS_BUSY, 0
        self._cal[lane.index].save(lane.cal)
        return STATUS_OK, offset

    def _set_count(self, i: int, count: int, now: int) -> "tuple[int, int]":
        lane = self._lane(i)
        if lane is None:
            return STATUS_BAD_ARGS, 0
        if lane.fault or not lane.det.stable:
            # Units are moving (the count staff took is of a settled lane), or a cell is silent: when it answers
            # again the detector reports the change since the fault, which would count what was counted twice.
            return STATUS_BUSY, 0

        def deliver(seq: int) -> None:
            self._deliver(seq, now)

        seq = self._shelf.set_count(i, count, now, deliver)
        if seq == NO_ROOM:
            return STATUS_BUSY, 0
        if seq:
            self._reports.lane_state(i)  # once, after all of the count's events
        return STATUS_OK, seq

    def _calibrate(self, i: int, known_dg: int) -> "tuple[int, int]":
        lane = self._lane(i)
        if lane is None:
            return STATUS_BAD_ARGS, 0
        try:
            c10 = lane.calibrate(known_dg)
        except CalibrationError as err:
            print("smartshelf: lane " + str(lane.index) + " calibration refused: " + str(err))
            return STATUS_FAILED, 0
        if c10 is None:
            return STATUS_BUSY, 0
        self._cal[lane.index].save(lane.cal)
        return STATUS_OK, c10
