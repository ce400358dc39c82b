"""The protocol's single error type: every decoding or encoding failure raises ``ProtocolError``."""

from shared_protocol.compat import const

TRUNCATED = const(1)  # fewer bytes than the layout needs
BAD_VERSION = const(2)  # protocol version this side does not speak
BAD_TYPE = const(3)  # unknown message type, or a type that does not travel in this direction
BAD_LENGTH = const(4)  # declared length disagrees with the bytes present, or too long
BAD_FIELD = const(5)  # a field value outside its range (on encode or decode)
BAD_TAG = const(6)  # authentication tag does not match (forged, corrupted, or wrong session)
REPLAY = const(7)  # sequence number not above the last accepted one
UNKNOWN_NODE = const(8)  # no key provisioned for this node id
BAD_ENCODING = const(9)  # COBS / text (base64) layer is malformed
BAD_FRAGMENT = const(10)  # BLE fragment header inconsistent or out of order

REASON_NAMES = {
    TRUNCATED: "truncated",
    BAD_VERSION: "bad_version",
    BAD_TYPE: "bad_type",
    BAD_LENGTH: "bad_length",
    BAD_FIELD: "bad_field",
    BAD_TAG: "bad_tag",
    REPLAY: "replay",
    UNKNOWN_NODE: "unknown_node",
    BAD_ENCODING: "bad_encoding",
    BAD_FRAGMENT: "bad_fragment",
}


class ProtocolError(Exception):
    """A frame or field that cannot be encoded or accepted. ``reason`` is one of the constants above."""

    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    @property
    def reason_name(self) -> str:
        return REASON_NAMES.get(self.reason, "unknown")

    def __str__(self) -> str:
        return self.reason_name + ": " + self.detail
