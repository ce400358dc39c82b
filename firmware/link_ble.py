"""The node's end of the BLE link: one GATT service, frames up as notifications, frames down as writes.

The same link contract as ``link_serial.py`` (``send``, ``poll``, ``rejected``, ``fresh``, ``vouch``), plus what only
a radio has: ``advertise(adv)`` (the lane-state beacon, ``firmware/beacons.py``).

**GATT** (``shared_protocol/ble_gatt.py``, protocol section 8). One primary service with the uplink characteristic
(notify, read) and the downlink characteristic (write, write without response). Both carry raw frames cut into
fragments of at most MTU - 3 bytes (``shared_protocol/ble_fragments.py``). The hub (the central) starts the MTU
exchange: a Pico W (BTstack) cannot as a peripheral. The node accepts up to ``mtu``; until the exchange, 23. Once
the hub has subscribed it writes the one-byte *poke*; ``fresh()`` then says so once, and the node says hello on
this connection.

**One hub at a time.** The node serves one central. A second one that connects is disconnected at the next poll.
A central that has sent no authenticated frame (``vouch``, called by the node) within ``AUTH_MS`` of connecting is
disconnected (again every ``AUTH_MS`` while it stays), and so is one from which none has come for ``SILENT_MS``
(a hub that died and left its connection open on its adapter; a live hub closes a connection that idles for
seconds): a stranger cannot hold the node's only connection, and the node advertises again for the hub.

**Interrupts.** The ``bluetooth`` IRQ handler (``_irq``) only records, and every field has one writer: the handler
owns the connection handle, the MTU, the last second central's handle, free-running counters of connects,
disconnects, second centrals and pokes, and the write index of a preallocated ring of ``RX_SLOTS`` downlink
fragments (a full ring drops the write: ``rx_dropped``); ``poll`` owns the read index and what it has seen of the
counters, and reads the connection fields until two reads agree. A scheduled IRQ (ESP32, Pico W: between two
bytecodes of ``poll``) therefore never loses an update. Each slot records the connection it came on; a fragment of
an earlier connection is discarded (``stale``), so a frame cut by a disconnect never joins the next connection's
and never vouches for it; one of a connection newer than the poll's view waits for the next poll.

**Uplink.** ``send`` keeps the frame (a reference, no copy) in a ring of ``TX_SLOTS`` frames and sends fragments
while the stack takes them, at most ``BURST`` between two polls: NimBLE (ESP32) refuses with ENOMEM when its buffers
are full, BTstack (Pico W) would keep queueing on the heap, so the link bounds what it hands over per 20 ms poll and
treats a ``MemoryError`` as a refusal too. The rest goes at the next poll. A full ring refuses the frame
(``send`` returns False, ``tx_dropped``): an event stays in the outbox and is sent again, a report is sent later.
A frame's fragment size is fixed when its first fragment goes out. Full fragments are built in one preallocated
buffer and allocate nothing; a frame's last, shorter fragment costs a memoryview slice (per frame, not per
notification), and a refusal the stack's exception. A disconnect drops the frames not yet sent
(counted in ``tx_dropped``).
"""

from firmware.ticks import ticks_diff
from shared_protocol.ble_fragments import FRAG_HEADER, MAX_FRAGMENTS, MIN_MTU, Reassembler
from shared_protocol.ble_gatt import DOWNLINK_UUID, SERVICE_UUID, UPLINK_UUID
from shared_protocol.compat import const
from shared_protocol.errors import ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_FLAG_READ = const(0x0002)
_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)

AUTH_MS = const(15000)  # a central that sends no authenticated frame this long after connecting is disconnected
SILENT_MS = const(120000)  # ... and one from which none came this long (the hub acks every health report, 30 s)
RX_SLOTS = const(8)  # downlink fragments the IRQ handler can keep until the next poll
TX_SLOTS = const(40)  # uplink frames waiting for the stack: a session start sends health + a state per lane (<= 32)
BURST = const(8)  # fragments handed to the stack per poll at most (BTstack would queue any number on the heap)
_NONE = const(-1)


class BleLink:
    """``ble``: a ``bluetooth.BLE()`` (the board's radio). ``mtu``: the largest ATT MTU accepted.
    ``adv_interval_us``: the advertising interval. ``clock``: milliseconds (the board's; ``time.ticks_ms`` if not
    given). Counters: ``tx_dropped`` (frames refused or dropped), ``rx_dropped`` (downlink writes lost, ring full),
    ``bad_fragments``, ``stale`` (fragments of an earlier connection), ``connects``, ``disconnects``, ``strangers``
    (centrals disconnected for sending nothing authenticated: strangers, and hubs silent for ``SILENT_MS``)."""

    def __init__(
        self, ble: "Any", mtu: int, adv_interval_us: int, name: str = "", clock: "Callable[[], int] | None" = None
    ) -> None:
        import bluetooth  # type: ignore[import-not-found, unused-ignore]  # the board's: ESP32, Pico W, emulated

        self._ble = ble
        if clock is None:
            import time

            clock = time.ticks_ms  # type: ignore[attr-defined, unused-ignore]
        self._clock = clock
        self._max_mtu = mtu
        self._interval = adv_interval_us
        ble.active(True)
        ble.config(mtu=mtu)
        if name:
            ble.config(gap_name=name)
        service = (
            bluetooth.UUID(SERVICE_UUID),
            (
                (bluetooth.UUID(UPLINK_UUID), _FLAG_NOTIFY | _FLAG_READ),
                (bluetooth.UUID(DOWNLINK_UUID), _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE),
            ),
        )
        ((self._tx_h, self._rx_h),) = ble.gatts_register_services((service,))
        slot = mtu - 3
        ble.gatts_set_buffer(self._rx_h, slot)  # the default (20 bytes) would cut every longer write
        # written by the IRQ handler only
        self._conn = _NONE
        self._extra = _NONE  # the last second central (disconnected by the next poll) ...
        self._n_extra = 0  # ... and how many there were
        self._mtu = MIN_MTU
        self._n_conn = 0  # connections accepted
        self._n_lost = 0  # ... and ended
        self._pokes = 0
        self._rx_w = 0  # free-running write index of the ring
        self.rx_dropped = 0
        self._rx = [bytearray(slot) for _ in range(RX_SLOTS)]
        self._rx_len = [0] * RX_SLOTS
        self._rx_conn = [0] * RX_SLOTS  # which connection (``_n_conn``) each slot came on
        # written by poll / send only
        self._rx_r = 0
        self._seen_extra = 0
        self._budget = BURST  # fragments the stack may still take before the next poll
        self._seen_conn = 0
        self._seen_lost = 0
        self._seen_pokes = 0
        self._since = 0  # when the current connection, or its last authenticated frame, was seen (ms)
        self._vouched = 0  # the connection (``_n_conn``) an authenticated frame came on
        self._reasm = Reassembler()
        self._frag = bytearray(slot)
        self._tx: list[bytes | None] = [None] * TX_SLOTS
        self._tx_head = 0
        self._tx_count = 0
        self._tx_off = 0  # bytes of the head frame already sent
        self._tx_size = 0  # the head frame's fragment data size, fixed at its first fragment
        self._msg_id = 0
        self._adv: bytes | None = None
        self._advertising = False
        self.bad_fragments = 0
        self.stale = 0
        self.tx_dropped = 0
        self.connects = 0
        self.disconnects = 0
        self.strangers = 0
        ble.irq(self._irq)

    # -- interrupt handler: records only -------------------------------------------------------------
    def _irq(self, event: int, data: "Any") -> None:
        if event == _IRQ_GATTS_WRITE:
            conn, handle = data
            if handle != self._rx_h or conn != self._conn:
                return
            value = self._ble.gatts_read(handle)
            n = len(value)
            if n == 1 and value[0] == 0:  # the poke (shared_protocol/ble_gatt.py): the hub has subscribed
                self._pokes += 1
                return
            w = self._rx_w
            if w - self._rx_r >= RX_SLOTS:
                self.rx_dropped += 1
                return
            i = w % RX_SLOTS
            self._rx[i][0:n] = value
            self._rx_len[i] = n
            self._rx_conn[i] = self._n_conn
            self._rx_w = w + 1  # published last: poll reads the slot only once the index says it is there
        elif event == _IRQ_CENTRAL_CONNECT:
            conn = data[0]
            if self._conn == _NONE:
                self._mtu = MIN_MTU
                self._n_conn += 1
                self._conn = conn
            else:
                self._extra = conn
                self._n_extra += 1
        elif event == _IRQ_CENTRAL_DISCONNECT:
            conn = data[0]
            if conn == self._conn:
                self._conn = _NONE
                self._n_lost += 1
        elif event == _IRQ_MTU_EXCHANGED:
            conn, mtu = data
            if conn == self._conn:
                self._mtu = mtu if mtu <= self._max_mtu else self._max_mtu

    # -- the link contract ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn != _NONE

    def vouch(self) -> None:
        """An authenticated frame arrived on the current connection: the central is the hub."""
        self._vouched = self._seen_conn
        self._since = self._clock()

    def fresh(self) -> bool:
        """True once for each poke of the connected hub (``shared_protocol/ble_gatt.py``): it has subscribed, so the
        node says hello on this connection."""
        pokes = self._pokes
        if pokes != self._seen_pokes:
            self._seen_pokes = pokes
            return self._conn != _NONE
        return False

    def send(self, frame: bytes) -> bool:
        """Keep ``frame`` for sending and send what the stack takes now; False when not connected or full."""
        if self._conn == _NONE or self._tx_count >= TX_SLOTS:
            self.tx_dropped += 1
            return False
        self._tx[(self._tx_head + self._tx_count) % TX_SLOTS] = frame
        self._tx_count += 1
        self._pump()
        return True

    def poll(self) -> "list[bytes]":
        """The frames whose last fragment arrived since the last poll, in order; also: follow connects and
        disconnects, disconnect a second central or a stranger, advertise again, and send what waits."""
        extra = self._n_extra
        if extra != self._seen_extra:
            self._seen_extra = extra
            self._disconnect(self._extra)
        # One consistent view of the IRQ handler's fields (an IRQ may land between two reads: read until stable).
        lost, n, conn = self._n_lost, self._n_conn, self._conn
        while (lost, n, conn) != (self._n_lost, self._n_conn, self._conn):
            lost, n, conn = self._n_lost, self._n_conn, self._conn
        self._budget = BURST
        if n != self._seen_conn:  # a new connection: whatever was left of the earlier ones goes
            self.connects += n - self._seen_conn
            self._seen_conn = n
            self._since = self._clock()
            self._advertising = False  # a connection ends advertising (NimBLE, BTstack); it starts again below
            self.disconnects += lost - self._seen_lost
            self._seen_lost = lost
            self._drop_tx()
            self._reasm = Reassembler()
        elif lost != self._seen_lost:  # the connection ended (a frame cut by it never joins the next one)
            self.disconnects += lost - self._seen_lost
            self._seen_lost = lost
            self._drop_tx()
            self._reasm = Reassembler()
            self._advertising = False
        if conn != _NONE:
            quiet = ticks_diff(self._clock(), self._since)
            if quiet > (SILENT_MS if self._vouched == n else AUTH_MS):
                self.strangers += 1
                self._since = self._clock()  # asked again after as long if it stays
                self._disconnect(conn)
        elif not self._advertising and self._adv is not None:
            self._start_advertising()
        frames: list[bytes] = []
        r = self._rx_r
        while r != self._rx_w:
            i = r % RX_SLOTS
            if self._rx_conn[i] > n:
                break  # from a connection this poll has not taken in yet: the next poll's
            if self._rx_conn[i] != n:
                self.stale += 1
            else:
                try:
                    frame = self._reasm.feed(memoryview(self._rx[i])[: self._rx_len[i]])
                except ProtocolError:
                    frame = None
                    self.bad_fragments += 1
                if frame is not None:
                    frames.append(frame)
            r += 1
            self._rx_r = r  # the slot is free for the IRQ handler from here on
        if self._tx_count:
            self._pump()
        return frames

    def rejected(self) -> int:
        return self.bad_fragments + self.rx_dropped + self.stale

    def _disconnect(self, conn: int) -> None:
        if conn == _NONE:
            return
        try:
            self._ble.gap_disconnect(conn)
        except OSError:
            pass

    # -- advertising ---------------------------------------------------------------------------------
    def advertise(self, adv: bytes) -> None:
        """Advertise ``adv`` (raw AD structures, at most 31 bytes) from now on; while a hub is connected, from the
        disconnect on."""
        self._adv = adv
        if self._conn == _NONE:
            self._start_advertising()

    def _start_advertising(self) -> None:
        try:
            self._ble.gap_advertise(self._interval, adv_data=self._adv, connectable=True)
            self._advertising = True
        except OSError:
            self._advertising = False  # tried again at the next poll

    # -- uplink --------------------------------------------------------------------------------------
    def _drop_tx(self) -> None:
        while self._tx_count:
            self._tx[self._tx_head] = None
            self._tx_head = (self._tx_head + 1) % TX_SLOTS
            self._tx_count -= 1
            self.tx_dropped += 1
        self._tx_off = 0

    def _pump(self) -> None:
        """Notify fragments of the waiting frames until the stack refuses one or ``BURST`` went out (the rest at the
        next poll)."""
        ble = self._ble
        frag = self._frag
        while self._tx_count and self._conn != _NONE and self._budget > 0:
            frame = self._tx[self._tx_head]
            assert frame is not None
            off = self._tx_off
            if off == 0:
                self._tx_size = self._mtu - 3 - FRAG_HEADER
            size = self._tx_size
            n = len(frame)
            count = (n + size - 1) // size
            if count > MAX_FRAGMENTS:  # cannot happen for a frame of 274 bytes at MTU 23: drop, never block
                self.tx_dropped += 1
                self._next_frame()
                continue
            index = off // size
            end = off + size if off + size < n else n
            frag[0] = self._msg_id
            frag[1] = (index << 4) | (count - 1)
            j = FRAG_HEADER
            while off < end:
                frag[j] = frame[off]
                j += 1
                off += 1
            try:
                ble.gatts_notify(self._conn, self._tx_h, frag if j == len(frag) else memoryview(frag)[:j])
            except (OSError, MemoryError):
                return  # ENOMEM (NimBLE) / heap (BTstack): the stack is full; ENOTCONN: the disconnect IRQ follows
            self._budget -= 1
            if end >= n:
                self._next_frame()
            else:
                self._tx_off = end

    def _next_frame(self) -> None:
        self._tx[self._tx_head] = None
        self._tx_head = (self._tx_head + 1) % TX_SLOTS
        self._tx_count -= 1
        self._tx_off = 0
        self._msg_id = (self._msg_id + 1) & 0xFF
