"""SGTIN-96 EPCs for the emulation: the codes a tagged product's UHF tags carry (GS1 EPC Tag Data Standard 2.0).

``sgtin96(gtin, company_prefix_len, serial, filter_value=1)`` encodes a GTIN (8, 12, 13 or 14 digits, check
digit included and verified) and a serial number as the 96-bit EPC a tag backscatters, as 24 lowercase hex
digits. Layout, most significant bit first (TDS 2.0 section 14.5.1):

=========  ======  ==================================================================================
header     8 bits  0x30 (SGTIN-96)
filter     3 bits  1 = point-of-sale trade item (the default here), 0 = all others, ...
partition  3 bits  how the next 44 bits split between company prefix and item reference (``PARTITIONS``)
prefix     M bits  the GS1 company prefix (6..12 digits) as an integer
item ref   N bits  the indicator digit (GTIN-14's first digit) followed by the item reference digits
serial     38 bits 0 .. 274877906943
=========  ======  ==================================================================================

``decode_sgtin96`` reverses it (for tests and tools) and ``tag_uri`` / ``pure_identity_uri`` give the
``urn:epc:tag:sgtin-96:...`` and ``urn:epc:id:sgtin:...`` forms. Example from the standard:
``urn:epc:tag:sgtin-96:3.0614141.812345.6789`` is ``3074257bf7194e4000001a85`` (GTIN 80614141123458).

Portable (CPython and MicroPython; the 96-bit value is a long integer on both).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SGTIN96_HEADER = 0x30
SERIAL_BITS = 38
SERIAL_MAX = (1 << SERIAL_BITS) - 1

# Per partition value: (company prefix bits, digits, item reference bits, digits); TDS 2.0 table 14-2.
PARTITIONS = (
    (40, 12, 4, 1),
    (37, 11, 7, 2),
    (34, 10, 10, 3),
    (30, 9, 14, 4),
    (27, 8, 17, 5),
    (24, 7, 20, 6),
    (20, 6, 24, 7),
)


def _digits(s: str, what: str) -> None:
    if not s:
        raise ValueError(what + ": empty")
    for c in s:
        if c not in "0123456789":
            raise ValueError(what + ": digits only, got " + repr(s))


def check_digit(digits: str) -> int:
    """The GS1 check digit of ``digits`` (a GTIN without its last digit): weights 3, 1, 3, ... from the right."""
    _digits(digits, "gtin")
    total = 0
    weight = 3
    for i in range(len(digits) - 1, -1, -1):
        total += weight * (ord(digits[i]) - 48)
        weight = 4 - weight
    return (10 - total % 10) % 10


def gtin14(gtin: str) -> str:
    """A GTIN-8/12/13/14 as 14 digits (zeros in front), its check digit verified."""
    _digits(gtin, "gtin")
    if len(gtin) not in (8, 12, 13, 14):
        raise ValueError("gtin: 8, 12, 13 or 14 digits, got " + str(len(gtin)))
    g = "0" * (14 - len(gtin)) + gtin
    if check_digit(g[:13]) != ord(g[13]) - 48:
        raise ValueError("gtin: bad check digit in " + gtin)
    return g


def sgtin96(gtin: str, company_prefix_len: int, serial: int, filter_value: int = 1) -> str:
    """The SGTIN-96 EPC of one unit of ``gtin`` (24 lowercase hex digits)."""
    g = gtin14(gtin)
    if company_prefix_len < 6 or company_prefix_len > 12:
        raise ValueError("company prefix length: 6..12 digits, got " + str(company_prefix_len))
    if serial < 0 or serial > SERIAL_MAX:
        raise ValueError("serial: 0.." + str(SERIAL_MAX) + " for SGTIN-96, got " + str(serial))
    if filter_value < 0 or filter_value > 7:
        raise ValueError("filter: 0..7, got " + str(filter_value))
    partition = 12 - company_prefix_len
    pbits, _pdigits, ibits, _idigits = PARTITIONS[partition]
    prefix = int(g[1 : 1 + company_prefix_len])
    item = int(g[0] + g[1 + company_prefix_len : 13])
    v = SGTIN96_HEADER
    v = (v << 3) | filter_value
    v = (v << 3) | partition
    v = (v << pbits) | prefix
    v = (v << ibits) | item
    v = (v << SERIAL_BITS) | serial
    h = hex(v)[2:]
    return "0" * (24 - len(h)) + h


def decode_sgtin96(epc: str) -> "dict[str, Any]":
    """``filter``, ``company_prefix`` and ``item_ref`` (digit strings, as in the URIs), ``serial`` and ``gtin``
    (14 digits) of an SGTIN-96 EPC given as 24 hex digits; ValueError when it is not one."""
    if len(epc) != 24:
        raise ValueError("SGTIN-96: 24 hex digits, got " + str(len(epc)))
    v = int(epc, 16)
    if v >> 88 != SGTIN96_HEADER:
        raise ValueError("not an SGTIN-96 (header " + hex(v >> 88) + ")")
    filter_value = (v >> 85) & 7
    partition = (v >> 82) & 7
    if partition > 6:
        raise ValueError("SGTIN-96: bad partition 7")
    pbits, pdigits, ibits, idigits = PARTITIONS[partition]
    serial = v & SERIAL_MAX
    item = (v >> SERIAL_BITS) & ((1 << ibits) - 1)
    prefix = (v >> (SERIAL_BITS + ibits)) & ((1 << pbits) - 1)
    ps = str(prefix)
    its = str(item)
    if len(ps) > pdigits or len(its) > idigits:
        raise ValueError("SGTIN-96: company prefix or item reference too large for its partition")
    ps = "0" * (pdigits - len(ps)) + ps
    its = "0" * (idigits - len(its)) + its
    body = its[0] + ps + its[1:]
    return {
        "filter": filter_value,
        "company_prefix": ps,
        "item_ref": its,
        "serial": serial,
        "gtin": body + str(check_digit(body)),
    }


def tag_uri(epc: str) -> str:
    """``urn:epc:tag:sgtin-96:F.PREFIX.ITEMREF.SERIAL`` of an SGTIN-96 EPC."""
    d = decode_sgtin96(epc)
    return "urn:epc:tag:sgtin-96:" + str(d["filter"]) + "." + _identity(d)


def pure_identity_uri(epc: str) -> str:
    """``urn:epc:id:sgtin:PREFIX.ITEMREF.SERIAL`` (what the tag identifies, without the filter)."""
    return "urn:epc:id:sgtin:" + _identity(decode_sgtin96(epc))


def _identity(d: "dict[str, Any]") -> str:
    return str(d["company_prefix"]) + "." + str(d["item_ref"]) + "." + str(d["serial"])
