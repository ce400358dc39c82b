"""``bluetooth`` on the emulated board: MicroPython's documented low-level BLE API (peripheral and GATT server
roles), backed by a real Bumble peripheral on the emulation host's air (``tools/emulation/radio/``).

The ROM (``rom.py``) registers this module as ``bluetooth`` when the board has a radio (``NodeProcess(...,
radio_fd=...)``): the board runner then offers the JS module ``emu_ble`` (``tools/mpy_runtime/board.mjs``). A
board without one has no ``bluetooth`` module at all, as an ESP32 image built without BLE.

**What is emulated.** ``BLE()`` (a singleton), ``active``, ``config`` ('mac', 'gap_name', 'mtu', 'rxbuf'),
``irq``, ``gap_advertise``, ``gap_disconnect``, ``gatts_register_services``, ``gatts_read``, ``gatts_write``,
``gatts_set_buffer``, ``gatts_notify``; ``UUID`` and the ``FLAG_*`` constants. Central and GATT client roles,
indications, L2CAP and pairing are absent (AttributeError), as on a port built without them. Errors are NimBLE's
(ESP32) as MicroPython reports them: ENODEV (19) while inactive, EBUSY when services are registered while
advertising or connected, EINVAL for more than 31 bytes of advertising data or an unknown handle, ENOTCONN and
ENOMEM from ``gatts_notify``.

**What this side decides.** The GATT database lives here, as in MicroPython's ``modbluetooth``: each value handle
has a buffer of 20 bytes (``gatts_set_buffer`` resizes it and clears it, with or without append mode; a local
``gatts_write`` grows it), and a client's write is cut to the buffer as NimBLE's access callback cuts it.
``gatts_notify`` fails locally: ENOMEM when ``TX_CREDITS`` notifications are still in flight (NimBLE's mbufs on
an ESP32: a burst runs out, the host returns them as the notifications are sent), ENOTCONN when the connection is
not (or no longer) there. Truncation to MTU - 3 happens on the air (the peripheral's Bumble stack), where the MTU
is always current.

**Interrupts.** The board runner calls ``dispatch`` (through ``rom.ble_dispatch``) from its 2 ms poll, between
two steps of the program's event loop, and only while main.py's program runs. The VM is idle then: the handler
never runs inside a REPL line, an asyncified call or one of the firmware's own statements, and it may read the
board's clock or call any method here. Events arrive while the firmware sleeps as well as while it works, at most
one poll after the radio sent them (an ESP32 runs the handler on the NimBLE task at once, between any two
bytecodes: the emulation never interleaves that finely). At the REPL, or while Ctrl-C stops the program, the
events wait in the runner (client writes beyond its queue are dropped, counted by ``dropped()``). Dispatching at
the board's clock reads (``board.py sync``) was the alternative; it re-enters the firmware wherever it reads the
clock, also inside its own handler, and delivers nothing while the firmware awaits without reading it: not used.

As documented, the ``addr`` memoryview passed to the handler is valid only inside it: it views one preallocated
buffer, which is scribbled over (0xEE) when the handler returns, so a firmware that keeps it sees the bug at
once. An unhandled exception in the handler is printed as MicroPython prints it and the next event is handled;
SystemExit (``machine.reset()``) and KeyboardInterrupt leave ``dispatch`` (the ROM ends the program with them).

**Steady state without allocation.** A client's write is copied from the runner's frame into the value's
preallocated buffer three bytes per call (``emu_ble.get`` returns small ints), the data tuple of
``_IRQ_GATTS_WRITE`` is kept per (connection, handle), and a notification's bytes go out three per call
(``emu_ble.put``): writes, their IRQs and notifications allocate nothing once a connection is up.
``gatts_read`` returns new bytes, as on a board.

**Wire.** One frame per SOCK_SEQPACKET message on the board's radio fd: a type byte, then little-endian fields
(``MSG_*`` below; addresses are 6 bytes in display order, as MicroPython gives them). The runner keeps a frame
queue and the radio's state it needs without entering the VM (connections and their MTU, tx credits,
advertising); board and radio resynchronise at every boot with ``MSG_RESET`` / ``MSG_READY``. The peripheral
(``tools/emulation/radio/peripheral.py``) is the other end. Runs under MicroPython; importable by CPython for the
constants.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    def const(x: int) -> int: ...

else:
    from shared_protocol.compat import const

try:
    import emu_ble  # type: ignore[import-not-found, unused-ignore]  # registered by tools/mpy_runtime/board.mjs
except ImportError:  # CPython (the radio reads the constants) or a board without a radio
    emu_ble = None

# -- the wire (keep in step with tools/mpy_runtime/board.mjs and tools/emulation/radio/peripheral.py) ----------
# board -> radio
MSG_RESET = const(0x01)  # gen:u32 (the runner, at power on and every reboot: the old radio session is gone)
MSG_ACTIVE = const(0x02)  # on:u8
MSG_NAME = const(0x03)  # utf-8 name
MSG_MTU = const(0x04)  # preferred ATT MTU:u16
MSG_SERVICES = const(0x05)  # n:u8 {uuid n:u8 {uuid flags:u16 vh:u16 n:u8 {uuid flags:u16 h:u16}}}; uuid: n:u8 LE
MSG_BUFFER = const(0x06)  # vh:u16 len:u16 append:u8
MSG_VALUE = const(0x07)  # vh:u16 update:u8 data (the local value: gatts_write, a cleared append buffer)
MSG_ADVERTISE = const(0x08)  # interval:u16 (0.625 ms units) connectable:u8 adv_len:u8 adv resp
MSG_ADV_STOP = const(0x09)
MSG_NOTIFY = const(0x0A)  # conn:u16 vh:u16 data
MSG_DISCONNECT = const(0x0B)  # conn:u16
# radio -> board
MSG_READY = const(0x81)  # gen:u32 addr_type:u8 addr:6
MSG_CONNECTED = const(0x82)  # conn:u16 addr_type:u8 addr:6
MSG_DISCONNECTED = const(0x83)  # conn:u16 addr_type:u8 addr:6
MSG_WRITE = const(0x84)  # conn:u16 vh:u16 data
MSG_MTU_EXCHANGED = const(0x85)  # conn:u16 mtu:u16
MSG_SENT = const(0x86)  # n:u16 notifications off the board's hands (tx credits back)

TX_CREDITS = const(8)  # notifications in flight before gatts_notify raises ENOMEM
DEFAULT_BUFFER = const(20)  # MP_BLUETOOTH_DEFAULT_ATTR_LEN
DEFAULT_MTU = const(256)  # NimBLE's preferred ATT MTU on an ESP32
DEFAULT_NAME = "MPY ESP32"
MAX_ADV = const(31)  # legacy advertising payload
MAX_VALUE = const(512)  # an attribute value's largest size (ATT)
MAX_NOTIFY = const(514)  # MTU 517 - 3: what the largest MTU lets through
FIRST_HANDLE = const(10)  # NimBLE's GAP (1..5) and GATT (6..9) services come first

# -- the documented module constants -----------------------------------------------------------------------------
FLAG_BROADCAST = const(0x0001)
FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)

# MicroPython's errno numbers (the WebAssembly VM's errno module has them too)
_EINVAL = const(22)
_ENOMEM = const(12)
_ENODEV = const(19)
_EBUSY = const(16)
_ENOTCONN = const(107)

_SCRIBBLE = const(0xEE)


class UUID:
    """A Bluetooth UUID: a 16-bit int (or 32-bit), a 128-bit string ``'6E400001-B5A3-...'`` (hyphens optional),
    or 2 / 4 / 16 bytes little-endian (a buffer, or another UUID). ``bytes(uuid)`` gives its little-endian bytes,
    as MicroPython's does."""

    _b: bytes

    def __init__(self, value: "Any") -> None:
        if isinstance(value, UUID):
            b = value._b
        elif isinstance(value, int):
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError("invalid UUID")
            b = bytes((value >> (8 * i)) & 0xFF for i in range(2 if value <= 0xFFFF else 4))
        elif isinstance(value, str):
            digits = value.replace("-", "")
            if len(digits) != 32:
                raise ValueError("invalid UUID")
            try:
                b = bytes(reversed(bytes.fromhex(digits)))
            except ValueError:
                raise ValueError("invalid UUID")  # noqa: B904 (MicroPython: no raise ... from)
        else:
            b = bytes(value)
            if len(b) not in (2, 4, 16):
                raise ValueError("invalid UUID")
        self._b = b

    def __iter__(self) -> "Any":
        return iter(self._b)

    def __len__(self) -> int:
        return len(self._b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UUID) and other._b == self._b

    def __hash__(self) -> int:
        return hash(self._b)

    def __repr__(self) -> str:
        if len(self._b) == 16:
            h = bytes(reversed(self._b)).hex()
            return "UUID('" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32] + "')"
        n = 0
        for i in range(len(self._b)):
            n |= self._b[i] << (8 * i)
        return "UUID(" + hex(n) + ")"

    __str__ = __repr__


class _Value:
    """A value handle's entry in the GATT database: its buffer, how much of it is used, append mode."""

    def __init__(self, alloc: int) -> None:
        self.buf = bytearray(alloc)
        self.len = 0
        self.append = False


class BLE:
    """The board's radio: ``BLE()`` returns the one object (a new boot makes a new one)."""

    _instance: "BLE | None" = None

    def __new__(cls) -> "BLE":
        if BLE._instance is None:
            self = object.__new__(cls)
            self._setup()
            BLE._instance = self
        return BLE._instance

    def _setup(self) -> None:
        self._active = False
        self._handler: Any = None
        self._name = DEFAULT_NAME.encode()
        self._mtu = DEFAULT_MTU
        self._rxbuf = 0
        self._db: dict[int, _Value] = {}
        self._adv = b""
        self._resp = b""
        self._addr = bytearray(6)  # the handler's addr: one buffer, scribbled over after each handler call
        self._addr_mv = memoryview(self._addr)
        self._write_args: dict[int, tuple[int, int]] = {}  # (conn << 16 | vh) -> the _IRQ_GATTS_WRITE tuple

    # -- configuration -----------------------------------------------------------------------------------------
    def active(self, *args: "Any") -> bool:
        if len(args) > 1:
            raise TypeError("function takes at most 1 argument")
        if args:
            on = bool(args[0])
            if on != self._active:
                self._active = on
                self._db = {}
                self._write_args = {}
                _begin(MSG_ACTIVE)
                _put(1 if on else 0, 1)
                _end()
                if on:  # a fresh stack: what config set while inactive applies again
                    self._send_name()
                    self._send_mtu()
        return self._active

    def config(self, *args: "Any", **kwargs: "Any") -> "Any":
        if args and kwargs:
            raise TypeError("can't query and set at the same time")
        if args:
            if len(args) != 1:
                raise TypeError("must query one param")
            name = args[0]
            if name == "mac":
                self._need_active()
                return (1, _mac())
            if name == "gap_name":
                return bytes(self._name)
            if name == "mtu":
                self._need_active()
                return self._mtu
            if name == "rxbuf":
                return self._rxbuf
            raise ValueError("unknown config param")
        for key in kwargs:
            value = kwargs[key]
            if key == "gap_name":
                name_bytes = value.encode() if isinstance(value, str) else bytes(value)
                if len(name_bytes) > 31:
                    raise OSError(_EINVAL)
                self._name = name_bytes
                if self._active:
                    self._send_name()
            elif key == "mtu":
                self._need_active()
                if not 23 <= value <= 517:
                    raise OSError(_EINVAL)
                self._mtu = value
                self._send_mtu()
            elif key == "rxbuf":
                self._rxbuf = int(value)
            else:
                raise ValueError("unknown config param")
        return None

    def irq(self, handler: "Callable[[int, Any], Any] | None") -> None:
        if handler is not None and not callable(handler):
            raise TypeError("handler must be callable or None")
        self._handler = handler

    # -- GAP -----------------------------------------------------------------------------------------------------
    def gap_advertise(
        self, interval_us: "int | None", adv_data: "Any" = None, *, resp_data: "Any" = None, connectable: bool = True
    ) -> None:
        self._need_active()
        if interval_us is None:
            _begin(MSG_ADV_STOP)
            _end()
            return
        if adv_data is not None:
            adv = _as_bytes(adv_data)
            if len(adv) > MAX_ADV:
                raise OSError(_EINVAL)
            self._adv = adv
        if resp_data is not None:
            resp = _as_bytes(resp_data)
            if len(resp) > MAX_ADV:
                raise OSError(_EINVAL)
            self._resp = resp
        units = int(interval_us) // 625
        if units == 0:
            units = 48  # NimBLE's default: 30 ms
        if not 0x20 <= units <= 0x4000:  # 20 ms .. 10.24 s
            raise OSError(_EINVAL)
        _begin(MSG_ADVERTISE)
        _put(units, 2)
        _put(1 if connectable else 0, 1)
        _put(len(self._adv), 1)
        _put_bytes(self._adv, len(self._adv))
        _put_bytes(self._resp, len(self._resp))
        _end()

    def gap_disconnect(self, conn_handle: int) -> bool:
        self._need_active()
        if not emu_ble.mtu(conn_handle):
            return False
        _begin(MSG_DISCONNECT)
        _put(conn_handle, 2)
        _end()
        return True

    # -- GATT server -----------------------------------------------------------------------------------------------
    def gatts_register_services(self, services_definition: "Any") -> "tuple[tuple[int, ...], ...]":
        self._need_active()
        if emu_ble.advertising() or emu_ble.connections():
            raise OSError(_EBUSY)
        db: dict[int, _Value] = {}
        handles: list[tuple[int, ...]] = []
        frame: list[tuple[bytes, list[tuple[bytes, int, int, list[tuple[bytes, int, int]]]]]] = []
        h = FIRST_HANDLE
        for service in services_definition:
            service_uuid, characteristics = service
            svc_handles: list[int] = []
            chars: list[tuple[bytes, int, int, list[tuple[bytes, int, int]]]] = []
            h += 1  # the service declaration
            for characteristic in characteristics:
                if len(characteristic) not in (2, 3):
                    raise ValueError("invalid characteristic tuple")
                uuid, flags = characteristic[0], int(characteristic[1])
                vh = h + 1  # after the characteristic declaration
                h += 2
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    h += 1  # the CCCD
                db[vh] = _Value(DEFAULT_BUFFER)
                svc_handles.append(vh)
                descs: list[tuple[bytes, int, int]] = []
                for descriptor in characteristic[2] if len(characteristic) == 3 else ():
                    d_uuid, d_flags = descriptor
                    db[h] = _Value(DEFAULT_BUFFER)
                    svc_handles.append(h)
                    descs.append((_uuid_bytes(d_uuid), int(d_flags), h))
                    h += 1
                chars.append((_uuid_bytes(uuid), flags, vh, descs))
            frame.append((_uuid_bytes(service_uuid), chars))
            handles.append(tuple(svc_handles))
        self._db = db
        self._write_args = {}
        _begin(MSG_SERVICES)
        _put(len(frame), 1)
        for s_uuid, chars in frame:
            _put_uuid(s_uuid)
            _put(len(chars), 1)
            for c_uuid, flags, vh, descs in chars:
                _put_uuid(c_uuid)
                _put(flags, 2)
                _put(vh, 2)
                _put(len(descs), 1)
                for d_uuid, d_flags, dh in descs:
                    _put_uuid(d_uuid)
                    _put(d_flags, 2)
                    _put(dh, 2)
        _end()
        return tuple(handles)

    def gatts_read(self, value_handle: int) -> bytes:
        self._need_active()
        entry = self._entry(value_handle)
        data = bytes(memoryview(entry.buf)[: entry.len])
        if entry.append and entry.len:
            entry.len = 0
            self._send_value(value_handle, entry, False)
        return data

    def gatts_write(self, value_handle: int, data: "Any", send_update: bool = False) -> None:
        self._need_active()
        entry = self._entry(value_handle)
        value = _as_bytes(data)
        n = len(value)
        if n > MAX_VALUE:
            raise OSError(_EINVAL)
        if n > len(entry.buf):
            entry.buf = bytearray(n)
        entry.buf[:n] = value
        entry.len = n
        self._send_value(value_handle, entry, bool(send_update))

    def gatts_set_buffer(self, value_handle: int, len: int, append: bool = False) -> None:
        self._need_active()
        entry = self._entry(value_handle)
        entry.buf = bytearray(len)
        entry.len = 0
        entry.append = bool(append)
        _begin(MSG_BUFFER)
        _put(value_handle, 2)
        _put(len, 2)
        _put(1 if append else 0, 1)
        _end()

    def gatts_notify(self, conn_handle: int, value_handle: int, data: "Any" = None) -> None:
        self._need_active()
        if data is None:
            entry = self._entry(value_handle)
            buf: Any = entry.buf
            n = entry.len
        else:
            buf = data.encode() if isinstance(data, str) else data
            n = len(buf)
        if not emu_ble.take():  # the stack's buffers are all in flight (NimBLE: no mbuf for the notification)
            raise OSError(_ENOMEM)
        if not emu_ble.mtu(conn_handle):
            emu_ble.give()
            raise OSError(_ENOTCONN)
        _begin(MSG_NOTIFY)
        _put(conn_handle, 2)
        _put(value_handle, 2)
        _put_bytes(buf, n if n < MAX_NOTIFY else MAX_NOTIFY)
        _end()

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _need_active(self) -> None:
        if not self._active:
            raise OSError(_ENODEV)

    def _entry(self, value_handle: int) -> _Value:
        entry = self._db.get(value_handle)
        if entry is None:
            raise OSError(_EINVAL)
        return entry

    def _send_name(self) -> None:
        _begin(MSG_NAME)
        _put_bytes(self._name, len(self._name))
        _end()

    def _send_mtu(self) -> None:
        _begin(MSG_MTU)
        _put(self._mtu, 2)
        _end()

    def _send_value(self, vh: int, entry: _Value, update: bool) -> None:
        _begin(MSG_VALUE)
        _put(vh, 2)
        _put(1 if update else 0, 1)
        _put_bytes(entry.buf, entry.len)
        _end()

    # -- events (dispatch) -------------------------------------------------------------------------------------------
    def _event(self, kind: int) -> None:
        if kind == MSG_WRITE:
            conn = _get(0, 2)
            vh = _get(2, 2)
            entry = self._db.get(vh)
            if entry is None:
                return
            self._take_write(entry, _size() - 4)
            key = conn << 16 | vh
            args = self._write_args.get(key)
            if args is None:
                args = (conn, vh)
                self._write_args[key] = args
            self._call(_IRQ_GATTS_WRITE, args)
        elif kind in (MSG_CONNECTED, MSG_DISCONNECTED):
            conn = _get(0, 2)
            addr = self._addr
            for i in range(6):
                addr[i] = _get(3 + i, 1)
            event = _IRQ_CENTRAL_CONNECT if kind == MSG_CONNECTED else _IRQ_CENTRAL_DISCONNECT
            if kind == MSG_DISCONNECTED:
                self._forget(conn)
            try:
                self._call(event, (conn, _get(2, 1), self._addr_mv))
            finally:
                for i in range(6):
                    addr[i] = _SCRIBBLE
        elif kind == MSG_MTU_EXCHANGED:
            self._call(_IRQ_MTU_EXCHANGED, (_get(0, 2), _get(2, 2)))

    def _take_write(self, entry: _Value, n: int) -> None:
        """A client's write of ``n`` bytes (the current frame's, from offset 4) into the value's buffer, cut to
        it, appended in append mode: NimBLE's access callback, without an allocation."""
        buf = entry.buf
        start = entry.len if entry.append else 0
        end = start + n
        if end > len(buf):
            end = len(buf)
        k = start
        j = 4
        while k + 3 <= end:
            v = _get(j, 3)
            buf[k] = v & 0xFF
            buf[k + 1] = (v >> 8) & 0xFF
            buf[k + 2] = v >> 16
            k += 3
            j += 3
        while k < end:
            buf[k] = _get(j, 1)
            k += 1
            j += 1
        entry.len = end

    def _forget(self, conn: int) -> None:
        for key in list(self._write_args):
            if key >> 16 == conn:
                del self._write_args[key]

    def _call(self, event: int, data: "Any") -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            handler(event, data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as err:  # as modbluetooth: printed, and the stack carries on
            print("Unhandled exception in IRQ callback handler")
            sys.print_exception(err)  # type: ignore[attr-defined]


def dispatch() -> None:
    """Deliver the events the radio has sent (the runner calls this, through ``rom.ble_dispatch``, only while the
    program runs and between two steps of its event loop). SystemExit / KeyboardInterrupt from the handler leave
    here; the events after it are dropped with the interpreter."""
    ble = BLE._instance
    while True:
        kind = _next()
        if kind == 0:
            return
        if ble is not None and ble._active:
            ble._event(kind)


def dropped() -> int:
    """Client writes the runner dropped because its event queue was full (the program did not run)."""
    return int(emu_ble.dropped())


# -- the runner's emu_ble, cached (a JsProxy attribute lookup allocates; a call with ints does not) -------------------
if emu_ble is not None:
    _next = emu_ble.next  # the next queued event frame: its type, 0 if none
    _size = emu_ble.size  # the current frame's length after the type byte
    _get = emu_ble.get  # (offset, n <= 3) -> the current frame's bytes there, little-endian
    _begin = emu_ble.begin  # (type): start an outgoing frame
    _put = emu_ble.put  # (value, n <= 3): append n little-endian bytes
    _end = emu_ble.end  # send the frame


def _put_bytes(data: "Any", n: int) -> None:
    i = 0
    while i + 3 <= n:
        _put(data[i] | data[i + 1] << 8 | data[i + 2] << 16, 3)
        i += 3
    while i < n:
        _put(data[i], 1)
        i += 1


def _put_uuid(b: bytes) -> None:
    _put(len(b), 1)
    _put_bytes(b, len(b))


def _uuid_bytes(uuid: "Any") -> bytes:
    if not isinstance(uuid, UUID):
        raise TypeError("UUID expected")
    b: bytes = uuid._b
    return b


def _as_bytes(data: "Any") -> bytes:
    b: bytes = data.encode() if isinstance(data, str) else bytes(data)
    return b


def _mac() -> bytes:
    """The static random address: the radio's, once it has said it; before, the ESP32 rule (the board's MAC with
    the two top bits set) applied to ``machine.unique_id()``, which the emulator makes agree with the radio's."""
    if emu_ble.mac(0) >= 0:
        return bytes(emu_ble.mac(i) for i in range(6))
    import machine  # type: ignore[import-not-found, unused-ignore]

    uid: bytes = machine.unique_id()
    if len(uid) < 6:
        return bytes(6)
    return bytes([uid[0] | 0xC0]) + uid[1:6]
