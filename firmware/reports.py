"""What the node reports unasked: every lane's ``lane_state`` in turn and its ``health``, on timers.

``lane_state`` for every lane every ``lane_state_s`` (10 s, spread over the period: one lane at a time);
``health`` every ``health_s`` (30 s), each followed by one ``reader_health`` per RFID reader (``rfid``, the
node's ``firmware/rfid/poller.py``, when it has readers; a reader's state change sends its own at once); both for
every lane when a session starts. (A lane's state also goes up
right after each of its events: ``firmware/node.py``.) The periods are ``Settings``, which ``set_config``
changes; the new period applies at once.

On a radio link (``periodic_lanes = False``) the lanes' periodic states are left to the beacon, which carries the
counts between connections: a connection carries them at its start and after each event, so a connection with
nothing else to carry goes quiet and the hub lets its slot go.
"""

from firmware.ticks import ticks_add, ticks_diff
from shared_protocol.compat import const
from shared_protocol.messages import Health

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware.housekeeping import Uptime
    from firmware.rfid.poller import RfidPoller
    from firmware.session import Session
    from firmware.settings import Settings
    from firmware.shelf import Shelf

_MAX_U32 = const(0xFFFFFFFF)


class Reports:
    def __init__(
        self,
        shelf: "Shelf",
        session: "Session",
        settings: "Settings",
        uptime: "Uptime",
        mem_free: "Callable[[], int]",
        now: int,
    ) -> None:
        self._shelf = shelf
        self._session = session
        self._settings = settings
        self._uptime = uptime
        self._mem_free = mem_free
        self._lane = 0
        self._lane_at = ticks_add(now, settings.lane_state_ms // len(shelf.lanes))
        self._health_at = ticks_add(now, settings.health_ms)
        self._rate_samples = 0
        self._rate_at = now
        self.periodic_lanes = True
        self.rfid: RfidPoller | None = None

    def tick(self, now: int) -> None:
        n = len(self._shelf.lanes)
        if self.periodic_lanes and ticks_diff(now, self._lane_at) >= 0:
            self.lane_state(self._lane)
            self._lane = (self._lane + 1) % n
            self._lane_at = ticks_add(now, self._settings.lane_state_ms // n)
        if ticks_diff(now, self._health_at) >= 0:
            self._send_health(now)
            self._health_at = ticks_add(now, self._settings.health_ms)

    def session_started(self, now: int) -> None:
        self._send_health(now)
        for i in range(len(self._shelf.lanes)):
            self.lane_state(i)

    def reschedule(self, now: int) -> None:
        """The periods changed: the next lane's state now, health a (new) period from now."""
        self._lane_at = now
        self._health_at = ticks_add(now, self._settings.health_ms)

    def _send_health(self, now: int) -> None:
        self._session.send(self.health(now))
        rfid = self.rfid
        if rfid is not None:
            for i in range(len(rfid.readers)):
                self._session.send(rfid.health(i))

    def lane_state(self, i: int) -> None:
        self._session.send(self._shelf.lane_state(i))

    def health(self, now: int) -> Health:
        """The health message now; the sample rate is measured since the previous call."""
        lanes = self._shelf.lanes
        total = 0
        for lane in lanes:
            total += lane.samples
        dt = ticks_diff(now, self._rate_at)
        rate = 0
        if dt > 0:
            rate = (total - self._rate_samples) * 100000 // (dt * len(lanes))
            self._rate_samples = total
            self._rate_at = now
        ob = self._shelf.outbox
        session = self._session
        return Health(
            min(self._uptime.ms(now) // 1000, _MAX_U32),
            min(max(self._mem_free(), 0), _MAX_U32),
            min(rate, 0xFFFF),
            session.tx_frames & _MAX_U32,
            session.rx_frames & _MAX_U32,
            session.rejected() & _MAX_U32,
            min(ob.depth, 0xFFFF),
            ob.dropped & _MAX_U32,
            ob.first_seq(),
        )
