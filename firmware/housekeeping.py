"""The node's upkeep (every 250 ms): uptime, the identify LED, outbox compaction, garbage collection, watchdog.

* ``Uptime``: milliseconds since boot, accumulated across the 2**30 tick wrap.
* ``IdentifyLed``: ``identify`` blinks the board's LED (250 ms on, 250 ms off) for some seconds; 0 stops it.
* ``Housekeeping``: compacts the outbox journal when 32 acknowledged events are in it, or a minute after the
  last ack once nothing is pending; collects garbage every 5 s; feeds the watchdog only while the sampler
  and the link (and the RFID task, on a node with readers: ``need``) make progress (each sets its bit in
  ``alive``).
"""

import gc

from firmware.ticks import ticks_add, ticks_diff
from shared_protocol.compat import const

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware.delivery import Delivery
    from firmware.outbox import Outbox

COMPACT_ACKED = const(32)
COMPACT_IDLE_MS = const(60000)
GC_EVERY_MS = const(5000)
BLINK_MS = const(250)
SAMPLER_ALIVE = const(1)
LINK_ALIVE = const(2)
RFID_ALIVE = const(4)
_ALL_ALIVE = const(SAMPLER_ALIVE | LINK_ALIVE)


class Uptime:
    def __init__(self, now: int) -> None:
        self._ms = 0
        self._last = now

    def ms(self, now: int) -> int:
        d = ticks_diff(now, self._last)
        if d > 0:
            self._ms += d
            self._last = now
        return self._ms


class IdentifyLed:
    """The LED through the board's ``set_led(on)``; changed only when its state changes."""

    def __init__(self, set_led: "Callable[[bool], None]", now: int) -> None:
        self._set_led = set_led
        self._until = now
        self._blinking = False
        self._on = False

    def identify(self, now: int, seconds: int) -> None:
        self._blinking = seconds > 0
        self._until = ticks_add(now, seconds * 1000)
        if not self._blinking:
            self._set(False)

    def tick(self, now: int) -> None:
        if self._blinking:
            if ticks_diff(now, self._until) >= 0:
                self._blinking = False
                self._set(False)
            else:
                self._set((ticks_diff(now, self._until) // BLINK_MS) & 1 == 0)

    def _set(self, on: bool) -> None:
        if on != self._on:
            self._on = on
            self._set_led(on)


class Housekeeping:
    """``alive``: the tasks that ran since the watchdog was last fed (``SAMPLER_ALIVE | LINK_ALIVE``, and
    ``RFID_ALIVE``); ``need``: the ones that must have (a node with RFID readers adds ``RFID_ALIVE``).
    ``compactions`` counts outbox compactions."""

    def __init__(
        self,
        outbox: "Outbox",
        delivery: "Delivery",
        uptime: Uptime,
        led: IdentifyLed,
        feed_watchdog: "Callable[[], None]",
        now: int,
    ) -> None:
        self._ob = outbox
        self._delivery = delivery
        self._uptime = uptime
        self._led = led
        self._feed = feed_watchdog
        self._gc_at = now
        self.alive = 0
        self.need = _ALL_ALIVE
        self.compactions = 0

    def run(self, now: int) -> None:
        self._uptime.ms(now)
        self._led.tick(now)
        ob = self._ob
        acked_in_journal = ob.journal_records - ob.depth
        if acked_in_journal >= COMPACT_ACKED or (
            ob.journal_records and not ob.depth and ticks_diff(now, self._delivery.last_progress) >= COMPACT_IDLE_MS
        ):
            ob.compact()
            self.compactions += 1
        if ticks_diff(now, self._gc_at) >= 0:
            gc.collect()
            self._gc_at = ticks_add(now, GC_EVERY_MS)
        if self.alive & self.need == self.need:  # every other task ran since the last feed
            self.alive = 0
            self._feed()
