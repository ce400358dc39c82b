"""EPC and GTIN codes: what a tag's EPC says about its product, and GTINs checked by their check digit.

* **EPCs** travel as raw bytes (protocol §5.1); the ledger keeps them as upper-case hex (``normalise_epc``), the
  form GS1 prints them in (``3074257BF7194E4000001A85``). Staff type them in any case, with spaces or dashes.
* **SGTIN** (GS1 EPC Tag Data Standard: the serialised GTIN retail items carry) is decoded with ``epcpy``, Nedap's
  maintained implementation of the TDS (MIT, pure Python, no dependencies, ~35 ms to import): header ``0x30``
  SGTIN-96 (12 bytes) and ``0x36`` SGTIN-198 (26 bytes, the 198 bits padded to 16-bit words), all seven
  partitions (company prefix of 6..12 digits), the GTIN-14 rebuilt with its check digit. Any other EPC (another
  scheme, a tag still holding its factory EPC, a corrupt read) decodes to nothing: the tag is still tracked, as
  "unknown" unless the store's EPC table names it (``epc_imports``).
* **GTINs** (GTIN-8, -12, -13 or -14) are stored as 14 digits (left-padded with zeros, as GS1 compares them) after
  their check digit is verified (GS1 General Specifications §7.9: weights 3, 1, 3, ... from the right).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from epcpy.epc_schemes.sgtin import SGTIN
from epcpy.utils.common import ConvertException

EPC_MAX_BYTES = 32  # as on the wire (protocol §5.1)
_HEX = re.compile(r"(?:[0-9A-F]{2}){1,32}")
_SEPARATORS = re.compile(r"[ \t:-]+")  # ASCII only: no ligature or other script passes as hex
_SGTIN_LENGTHS = {0x30: (12, "sgtin-96"), 0x36: (26, "sgtin-198")}  # header byte -> (EPC bytes, scheme)
GTIN_LENGTHS = (8, 12, 13, 14)


class InvalidCode(ValueError):
    """Not an EPC or GTIN this module accepts; the message says why (for import reports and form errors)."""


@dataclass(frozen=True, slots=True)
class ProductCode:
    """What an EPC's standard encoding says: the scheme, the product (GTIN-14) and the unit (serial)."""

    scheme: str  # sgtin-96 | sgtin-198
    gtin: str  # 14 digits
    serial: str
    uri: str  # the pure identity, urn:epc:id:sgtin:<company prefix>.<indicator + item reference>.<serial>


def epc_hex(epc: bytes) -> str:
    """The ledger's form of an EPC read from a tag."""
    return epc.hex().upper()


def normalise_epc(text: str) -> str:
    """An EPC typed or imported by staff as the ledger keeps it: hex, 1..32 bytes, upper case, no separators."""
    compact = _SEPARATORS.sub("", text.strip(" \t\r\n")).upper()
    if not text.isascii() or _HEX.fullmatch(compact) is None:
        raise InvalidCode(f"EPC {text.strip()[:80]!r} is not 1..{EPC_MAX_BYTES} bytes of hex (e.g. 3074257BF719...)")
    return compact


def decode(epc: str) -> ProductCode | None:
    """The SGTIN an EPC (the ledger's hex form) encodes, or None for any other EPC."""
    if len(epc) < 2:
        return None
    known = _SGTIN_LENGTHS.get(int(epc[:2], 16))
    if known is None or len(epc) != 2 * known[0]:
        return None
    try:
        sgtin = SGTIN.from_hex(epc)
        gtin = sgtin.gtin()
    except (ConvertException, ValueError):  # a partition value 7, a company prefix or item reference too large, ...
        return None
    serial = sgtin.epc_uri.split(":", 4)[4].split(".", 2)[2]
    return ProductCode(known[1], gtin, serial, sgtin.epc_uri)


def gtin_check_digit(body: str) -> int:
    """The check digit of a GTIN's other digits (GS1 mod-10: weights 3 and 1 alternating from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def normalise_gtin(text: str) -> str:
    """A GTIN-8, -12, -13 or -14 as the ledger keeps it (14 digits) once its check digit is right."""
    digits = text.strip(" \t\r\n")
    if not digits.isascii() or not digits.isdigit() or len(digits) not in GTIN_LENGTHS:
        raise InvalidCode(f"GTIN {digits[:40]!r} must be 8, 12, 13 or 14 digits")
    expected = gtin_check_digit(digits[:-1])
    if int(digits[-1]) != expected:
        raise InvalidCode(f"GTIN {digits} has a wrong check digit: {digits[-1]}, it should be {expected}")
    return digits.zfill(14)
