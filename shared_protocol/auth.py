"""HMAC-SHA256 over ``hashlib`` (RFC 2104), truncated to ``TAG_LEN`` bytes, for both runtimes.

MicroPython has no ``hmac`` module and its sha256 objects cannot be copied, so the padded keys are
computed once per key and each tag costs two SHA-256 passes.
"""

import hashlib

from shared_protocol.compat import const, ct_equal
from shared_protocol.errors import BAD_FIELD, ProtocolError

TAG_LEN = const(8)  # 64-bit tag; see README "Authentication" for why this length
_BLOCK = const(64)
MIN_KEY_LEN = const(16)
MAX_KEY_LEN = const(64)


class Key:
    """A per-node secret, provisioned at flash time; holds the HMAC inner and outer pads."""

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, (bytes, bytearray)):
            raise ProtocolError(BAD_FIELD, "key must be bytes")
        if not MIN_KEY_LEN <= len(secret) <= MAX_KEY_LEN:
            raise ProtocolError(BAD_FIELD, "key must be 16..64 bytes, got " + str(len(secret)))
        padded = bytes(secret) + bytes(_BLOCK - len(secret))
        self._ipad = bytes([b ^ 0x36 for b in padded])
        self._opad = bytes([b ^ 0x5C for b in padded])

    def digest(self, *parts: bytes) -> bytes:
        """Full 32-byte HMAC-SHA256 of the concatenated parts."""
        inner = hashlib.sha256(self._ipad)
        for part in parts:
            inner.update(part)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        tag: bytes = outer.digest()
        return tag

    def tag(self, *parts: bytes) -> bytes:
        return self.digest(*parts)[:TAG_LEN]

    def check(self, tag: bytes, *parts: bytes) -> bool:
        return ct_equal(self.tag(*parts), bytes(tag))
