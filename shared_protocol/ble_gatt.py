"""The smart-shelf GATT service (protocol section 8): its UUIDs, and the poke.

One primary service with two characteristics: uplink (node -> hub: notify, read) and downlink (hub -> node: write,
write without response). Both carry frames in fragments (``ble_fragments.py``).

The *poke* is a one-byte write of 0x00 to the downlink characteristic. The hub writes it once it has subscribed
to uplink notifications; the node answers with a hello on this connection, so nothing it sends is lost before the
subscription. A fragment is never one byte long (two header bytes and data), so the poke cannot be mistaken for
one. It carries no authority: a forged poke makes a node say hello, which it does anyway after a boot.
"""

SERVICE_UUID = "5c3a0001-8f4e-4b7a-9d2c-6e1f5a7b3c90"
UPLINK_UUID = "5c3a0002-8f4e-4b7a-9d2c-6e1f5a7b3c90"
DOWNLINK_UUID = "5c3a0003-8f4e-4b7a-9d2c-6e1f5a7b3c90"
POKE = b"\x00"
