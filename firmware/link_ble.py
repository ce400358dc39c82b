"""The node's end of the BLE link: one GATT service, frames up as notifications, frames down as writes.

The same link contract as ``link_serial.py`` (``send``, ``poll``, ``rejected``), plus what only a radio has:
``advertise(adv)`` (the lane-state beacon, ``firmware/beacons.py``) and ``fresh()`` (a hub has connected and
subscribed, and poked the node: the node starts its session again, so what waits goes out on this connection).

**GATT.** One primary service (``SERVICE_UUID``) with the uplink characteristic (notify, read) and the downlink
characteristic (write, write without response). Both carry raw frames cut into fragments of at most MTU - 3 bytes
(``shared_protocol/ble_fragments.py``, protocol section 8). The hub (the central) starts the MTU exchange: a
Pico W (BTstack) cannot as a peripheral. The node accepts up to ``cfg.ble_mtu``; until the exchange, 23.

**One hub at a time.** The node serves one central. A second one that connects is disconnected at the next poll.

**Interrupts.** The ``bluetooth`` IRQ handler (``_irq``) only records: a connection's handle, a disconnect, the
exchanged MTU, and a downlink write copied into a preallocated ring of ``RX_SLOTS`` fragments (a full ring drops
the write and counts it in ``rx_dropped``). ``poll`` (the link task, every 20 ms) does the rest: it reassembles
frames, disconnects a second central, restarts advertising after a disconnect and sends what waits.

**Uplink.** ``send`` keeps the frame (a reference, no copy) in a ring of ``TX_SLOTS`` frames and sends as many
fragments as the stack takes now; the stack's buffers are bounded (NimBLE raises ENOMEM, BTstack would queue on
the heap without limit, so the link never has more than one call's worth in flight on its own) and the rest
goes at the next poll. A full ring refuses the frame (``send`` returns False, counted in ``tx_dropped``): an
event stays in the outbox and is sent again, a report is simply sent later. Each fragment is built in one
preallocated buffer: no allocation per notification. A disconnect drops the frames not yet sent.
"""

from shared_protocol.ble_fragments import FRAG_HEADER, MAX_FRAGMENTS, MIN_MTU, Reassembler
from shared_protocol.ble_gatt import DOWNLINK_UUID, SERVICE_UUID, UPLINK_UUID
from shared_protocol.compat import const
from shared_protocol.errors import ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_FLAG_READ = const(0x0002)
_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)

RX_SLOTS = const(8)  # downlink fragments the IRQ handler can keep until the next poll
TX_SLOTS = const(8)  # uplink frames waiting for the stack
_NONE = const(-1)


class BleLink:
    """``ble``: a ``bluetooth.BLE()`` (the board's radio). ``mtu``: the largest ATT MTU accepted.
    ``adv_interval_us``: the advertising interval. Counters: ``tx_dropped`` (frames refused, ring full or not
    connected), ``rx_dropped`` (downlink writes lost, ring full), ``connects``, ``disconnects``."""

    def __init__(self, ble: "Any", mtu: int, adv_interval_us: int, name: str = "") -> None:
        import bluetooth  # type: ignore[import-not-found, unused-ignore]  # the board's: ESP32, Pico W, emulated

        self._ble = ble
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
        self._rx = [bytearray(slot) for _ in range(RX_SLOTS)]
        self._rx_len = [0] * RX_SLOTS
        self._rx_head = 0  # next slot poll takes
        self._rx_count = 0
        self._frag = bytearray(slot)
        self._tx: list[bytes | None] = [None] * TX_SLOTS
        self._tx_head = 0
        self._tx_count = 0
        self._tx_off = 0  # bytes of the head frame already sent
        self._msg_id = 0
        self._reasm = Reassembler()
        self._conn = _NONE
        self._extra = _NONE  # a second central, disconnected at the next poll
        self._mtu = MIN_MTU
        self._fresh = False
        self._lost = False
        self._adv: bytes | None = None
        self._advertising = False
        self.bad_fragments = 0
        self.tx_dropped = 0
        self.rx_dropped = 0
        self.connects = 0
        self.disconnects = 0
        ble.irq(self._irq)

    # -- interrupt handler: records only -------------------------------------------------------------
    def _irq(self, event: int, data: "Any") -> None:
        if event == _IRQ_GATTS_WRITE:
            conn, handle = data
            if handle != self._rx_h or conn != self._conn:
                return
            if self._rx_count >= RX_SLOTS:
                self.rx_dropped += 1
                return
            value = self._ble.gatts_read(handle)
            n = len(value)
            if n == 1 and value[0] == 0:  # the poke (shared_protocol/ble_gatt.py): the hub has subscribed
                self._fresh = True
                return
            i = (self._rx_head + self._rx_count) % RX_SLOTS
            self._rx[i][0:n] = value
            self._rx_len[i] = n
            self._rx_count += 1
        elif event == _IRQ_CENTRAL_CONNECT:
            conn = data[0]
            if self._conn == _NONE:
                self._conn = conn
                self._mtu = MIN_MTU
                self._advertising = False  # a connection ends advertising (NimBLE, BTstack)
            else:
                self._extra = conn
        elif event == _IRQ_CENTRAL_DISCONNECT:
            conn = data[0]
            if conn == self._conn:
                self._conn = _NONE
                self._lost = True
                self._advertising = False
            elif conn == self._extra:
                self._extra = _NONE
        elif event == _IRQ_MTU_EXCHANGED:
            conn, mtu = data
            if conn == self._conn:
                self._mtu = mtu if mtu <= self._max_mtu else self._max_mtu

    # -- the link contract ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn != _NONE

    @property
    def mtu(self) -> int:
        return self._mtu

    def fresh(self) -> bool:
        """True once after the connected hub's poke (``shared_protocol/ble_gatt.py``): it has subscribed, so the
        node says hello on this connection."""
        if self._fresh:
            self._fresh = False
            self.connects += 1
            return True
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
        """The frames whose last fragment arrived since the last poll, in order; also: disconnect a second
        central, advertise again after a disconnect, and send what waits."""
        if self._extra != _NONE:
            extra, self._extra = self._extra, _NONE
            try:
                self._ble.gap_disconnect(extra)
            except OSError:
                pass
        if self._lost:
            self._lost = False
            self.disconnects += 1
            self._drop_tx()
            self._reasm = Reassembler()  # a frame cut by the disconnect never joins the next one
        if self._conn == _NONE and not self._advertising and self._adv is not None:
            self._start_advertising()
        frames: list[bytes] = []
        while self._rx_count:
            i = self._rx_head
            try:
                frame = self._reasm.feed(memoryview(self._rx[i])[: self._rx_len[i]])
            except ProtocolError:
                frame = None
                self.bad_fragments += 1
            self._rx_head = (i + 1) % RX_SLOTS
            self._rx_count -= 1
            if frame is not None:
                frames.append(frame)
        if self._tx_count:
            self._pump()
        return frames

    def rejected(self) -> int:
        return self.bad_fragments + self.rx_dropped

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
        self._tx_off = 0

    def _pump(self) -> None:
        """Notify fragments of the waiting frames until the stack refuses one (tried again at the next poll)."""
        ble = self._ble
        frag = self._frag
        while self._tx_count and self._conn != _NONE:
            frame = self._tx[self._tx_head]
            assert frame is not None
            size = self._mtu - 3 - FRAG_HEADER
            n = len(frame)
            count = (n + size - 1) // size
            if count > MAX_FRAGMENTS:  # cannot happen for a frame of 274 bytes at MTU 23: drop, never block
                self._next_frame()
                continue
            off = self._tx_off
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
                ble.gatts_notify(self._conn, self._tx_h, memoryview(frag)[:j] if j < len(frag) else frag)
            except OSError:
                return  # ENOMEM: the stack's buffers are full; ENOTCONN: the disconnect IRQ follows
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
