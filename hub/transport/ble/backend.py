"""Which BLE backend the hub's scanners and clients use, from one adapter spec (``[ble] adapter`` in hub.toml).

* ``"bluez"`` or ``""``: bleak's default backend (BlueZ over D-Bus on a Raspberry Pi); nothing to open here.
* ``"bumble:<transport>"``: a Bumble host stack on any Bumble HCI transport -- ``bumble:unix:/path/hci.sock`` (the
  emulated air), ``bumble:usb:0`` or ``bumble:hci-socket:0`` (a dongle driven without BlueZ),
  ``bumble:serial:/dev/ttyUSB0,1000000`` (an HCI UART controller). See ``bumble_backend.py``.

Hub code holds a ``BleBackend`` and passes its classes to bleak (``backend=``); ``None`` means bleak's default.
Opening a Bumble adapter imports Bumble's HCI layer only then, so a hub on BlueZ never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from hub.transport.ble.bumble_backend import BleAdapterError, BumbleAdapter

__all__ = ["BleAdapterError", "BleBackend", "open_backend"]

SPEC_FORMS = '"bluez", "" or "bumble:<bumble transport>" (e.g. bumble:unix:/run/hci.sock, bumble:usb:0)'


@dataclass
class BleBackend:
    """The backend classes the hub passes to bleak; ``None`` means bleak's default (BlueZ on Linux)."""

    name: str
    scanner: type[BaseBleakScanner] | None
    client: type[BaseBleakClient] | None
    adapter: BumbleAdapter | None = field(default=None, repr=False)

    @property
    def is_open(self) -> bool:
        """False once a Bumble adapter's transport is lost or closed (reopen with ``open_backend``); BlueZ: True."""
        return self.adapter is None or self.adapter.is_open

    async def close(self) -> None:
        """Release the adapter (a no-op for BlueZ); the backend can't be used afterwards."""
        if self.adapter is not None:
            await self.adapter.close()


async def open_backend(spec: str, *, mtu: int = 247) -> BleBackend:
    """The backend for ``spec``; raises ValueError for an unknown spec, BleAdapterError when it can't be opened."""
    spec = spec.strip()
    if spec in ("", "bluez"):
        return BleBackend("bluez", None, None)
    scheme, _, transport = spec.partition(":")
    if scheme != "bumble" or not transport:
        raise ValueError(f"BLE adapter {spec!r}: expected {SPEC_FORMS}")
    adapter = BumbleAdapter(transport, mtu=mtu)
    await adapter.open()
    return BleBackend(spec, adapter.scanner_backend, adapter.client_backend, adapter)
