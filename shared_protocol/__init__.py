"""Smart-shelf wire protocol v1: shared, unchanged, by the MicroPython firmware and the CPython hub.

Modules: ``errors`` (the one error type), ``messages`` (payloads), ``auth`` (HMAC tags), ``frame``
(header + payload + tag, sender and receiver with replay rules), ``serial_framing`` (0x00-delimited COBS
uplink), ``downlink_text`` (REPL-safe hub -> node lines), ``ble_fragments`` (MTU-sized pieces).
The byte layout is specified in ``shared_protocol/README.md``.
"""

PROTOCOL_VERSION = 1
