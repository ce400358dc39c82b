"""Round-trip properties of protocol v1 messages, and encode-time range checks, on CPython and MicroPython.

The strategies here derive every value range from each class's ``FIELDS`` (clipped to the struct width,
which is written out independently below) and are reused by the fuzz and framing tests.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared_protocol.auth import MAX_KEY_LEN, MIN_KEY_LEN, Key
from shared_protocol.frame import HEADER_LEN, decode_frame, encode_frame
from shared_protocol.messages import BY_NAME, DOWNLINK, MESSAGE_CLASSES, UPLINK, Message, from_dict
from tests.conftest import CPythonRuntime, MicroPythonCaller
from tests.portable import protocol_cases

MOD = "tests.portable.protocol_cases"
CASES: Any = protocol_cases  # the portable bodies are unannotated (MicroPython code)
U32_MAX = 2**32 - 1
TAG_BYTES = 8

# Struct widths of the integer field kinds, written out here rather than taken from the module under test.
WIDTH: dict[str, tuple[int, int]] = {
    "B": (0, 2**8 - 1),
    "b": (-(2**7), 2**7 - 1),
    "H": (0, 2**16 - 1),
    "h": (-(2**15), 2**15 - 1),
    "I": (0, 2**32 - 1),
    "i": (-(2**31), 2**31 - 1),
}

# One fixed profile: CI must see the same examples every run.
PROFILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Case = dict[str, Any]


# -- strategies ----------------------------------------------------------------------------------------


def int_field(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Uniform-ish integers in [lo, hi], with the edges and their neighbours drawn often."""
    edges = sorted({lo, hi, min(lo + 1, hi), max(hi - 1, lo), min(max(0, lo), hi)})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def field_value(kind: str, lo: int, hi: int) -> st.SearchStrategy[Any]:
    """Valid JSON values (the ``to_dict`` form) for one field."""
    if kind in WIDTH:
        wlo, whi = WIDTH[kind]
        return int_field(max(lo, wlo), min(hi, whi))
    if kind == "E":
        return st.binary(min_size=1, max_size=32).map(bytes.hex)
    if kind == "S":
        return st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=32)
    raise AssertionError("unknown field kind " + kind)


def message_dict_for(cls: type[Message]) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {"type": st.just(cls.NAME)}
    for name, kind, lo, hi in cls.FIELDS:
        fields[name] = field_value(kind, lo, hi)
    return st.fixed_dictionaries(fields)


def message_dicts(direction: int | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Valid message dicts of every type (or of every type travelling in ``direction``)."""
    classes = [c for c in MESSAGE_CLASSES if direction in (None, c.DIRECTION)]
    return st.sampled_from(classes).flatmap(message_dict_for)


u32_nonzero = int_field(1, U32_MAX)
keys_hex = st.binary(min_size=MIN_KEY_LEN, max_size=MAX_KEY_LEN).map(bytes.hex)


def frame_cases(direction: int | None = None, cls: type[Message] | None = None) -> st.SearchStrategy[Case]:
    """{"message", "node_id", "seq", "session", "key"}: the input of ``roundtrip_messages``."""
    return st.fixed_dictionaries(
        {
            "message": message_dicts(direction) if cls is None else message_dict_for(cls),
            "node_id": u32_nonzero,
            "seq": u32_nonzero,
            "session": u32_nonzero,
            "key": keys_hex,
        }
    )


def collect(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """Draw ``n`` examples deterministically (same profile as the property tests) for a batched call."""
    out: list[Any] = []

    @settings(PROFILE, max_examples=n, phases=[Phase.explicit, Phase.generate])
    @given(strategy)
    def _draw(example: Any) -> None:
        out.append(example)

    _draw()
    return out


def encode_case(case: Case) -> bytes:
    msg = from_dict(case["message"])
    return encode_frame(msg, case["node_id"], case["seq"], Key(bytes.fromhex(case["key"])), case["session"])


# -- the message table itself ----------------------------------------------------------------------------


def test_field_table_is_consistent() -> None:
    types = [c.TYPE for c in MESSAGE_CLASSES]
    assert len(set(types)) == len(types)
    assert {c.NAME for c in MESSAGE_CLASSES} == set(BY_NAME)
    for cls in MESSAGE_CLASSES:
        assert (cls.DIRECTION == UPLINK) == (0x01 <= cls.TYPE <= 0x3F), cls.NAME
        assert (cls.DIRECTION == DOWNLINK) == (0x40 <= cls.TYPE <= 0x7F), cls.NAME
        for name, kind, lo, hi in cls.FIELDS:
            if kind in WIDTH:
                wlo, whi = WIDTH[kind]
                assert wlo <= lo <= hi <= whi, (cls.NAME, name)
            else:
                assert kind in ("E", "S"), (cls.NAME, name)


# -- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.NAME)
def test_roundtrip_cpython(cls: type[Message]) -> None:
    @settings(PROFILE, max_examples=60)
    @given(case=frame_cases(cls=cls))
    def check(case: Case) -> None:
        assert case["message"]["type"] == cls.NAME
        roundtrip_one(case)

    check()


def roundtrip_one(case: Case) -> None:
    key = Key(bytes.fromhex(case["key"]))
    msg = from_dict(case["message"])
    assert from_dict(msg.to_dict()) == msg
    frame = encode_case(case)
    assert encode_case(case) == frame  # deterministic
    # Header layout, checked with struct independently of the module's own format string.
    version, msg_type, node_id, seq, plen = struct.unpack(">BBIIB", frame[:HEADER_LEN])
    assert (version, msg_type, node_id, seq) == (1, msg.TYPE, case["node_id"], case["seq"])
    assert len(frame) == HEADER_LEN + plen + TAG_BYTES
    back = decode_frame(frame, msg.DIRECTION, key, case["session"])
    assert back.message == msg
    assert back.message.to_dict() == case["message"]
    assert (back.node_id, back.seq) == (case["node_id"], case["seq"])
    json.dumps(back.message.to_dict())  # the dict form is JSON-ready


def test_roundtrip_micropython_matches_cpython(mpy: MicroPythonCaller) -> None:
    # ~300 cases, evenly over the message types.
    cases: list[Case] = []
    for cls in MESSAGE_CLASSES:
        cases += collect(frame_cases(cls=cls), 22)
    assert len(cases) >= 250
    cases = json.loads(json.dumps(cases))
    expected = CASES.roundtrip_messages(cases)
    for case, exp in zip(cases, expected, strict=True):
        assert "error" not in exp, (case, exp)
        assert exp["message"] == case["message"]
        assert exp["seq"] == case["seq"]
        assert bytes.fromhex(exp["frame"]) == encode_case(case)
    got = mpy.call(MOD, "roundtrip_messages", cases, timeout_s=60)
    assert len(got) == len(expected)
    for case, exp, mp in zip(cases, expected, got, strict=True):
        assert mp == exp, case


# -- encode-time validation on both runtimes -----------------------------------------------------------------

NOT_AN_INT: list[Any] = [True, False, "1", 1.0, None, [1]]


def _baseline(cls: type[Message]) -> dict[str, Any]:
    d: dict[str, Any] = {"type": cls.NAME}
    for name, kind, lo, _hi in cls.FIELDS:
        d[name] = lo if kind in WIDTH else ("e2" if kind == "E" else "A")
    return d


def _with(cls: type[Message], name: str, value: Any) -> dict[str, Any]:
    d = _baseline(cls)
    d[name] = value
    return d


def invalid_messages() -> list[dict[str, Any]]:
    """Every integer field just outside its range and beyond its struct width, wrong types, bad EPC/SKU."""
    out: list[dict[str, Any]] = []
    for cls in MESSAGE_CLASSES:
        for name, kind, lo, hi in cls.FIELDS:
            if kind in WIDTH:
                wlo, whi = WIDTH[kind]
                candidates = [lo - 1, hi + 1, wlo - 1, whi + 1, -1, 2**32, 2**32 + lo, -(2**31) - 1, 2**64, -(2**64)]
                bad = sorted({v for v in candidates if not lo <= v <= hi})
                out.extend(_with(cls, name, v) for v in bad)
                out.extend(_with(cls, name, v) for v in NOT_AN_INT)
            elif kind == "E":
                for v in ["", "e2" * 33, "e", "zz", "0g", "e2 ", 17, None, ["e2"]]:
                    out.append(_with(cls, name, v))
            else:
                for v in ["", "A" * 33, "A\x1fB", "A\x7f", "\x00", "caf\u00e9", "A\nB", "\t", "A\ud800", 5, None]:
                    out.append(_with(cls, name, v))
    return out


def valid_messages() -> list[dict[str, Any]]:
    """The edges that must still encode: every integer field at lo and hi, EPC/SKU at 1 and 32."""
    out: list[dict[str, Any]] = []
    for cls in MESSAGE_CLASSES:
        out.append(_baseline(cls))
        for name, kind, lo, hi in cls.FIELDS:
            if kind in WIDTH:
                out.extend([_with(cls, name, lo), _with(cls, name, hi)])
            elif kind == "E":
                out.extend([_with(cls, name, "00"), _with(cls, name, "ff" * 32), _with(cls, name, "E2FF")])
            else:
                out.extend([_with(cls, name, " "), _with(cls, name, "~" * 32), _with(cls, name, "COLA-330ML")])
    return out


def test_invalid_case_lists_are_meaningful() -> None:
    # Guard the generator itself: every int field contributes lo-1 and hi+1, and none of the "bad" values is valid.
    bad = invalid_messages()
    for cls in MESSAGE_CLASSES:
        for name, kind, lo, hi in cls.FIELDS:
            values = [d[name] for d in bad if d["type"] == cls.NAME and d[name] != _baseline(cls)[name]]
            if kind in WIDTH:
                assert lo - 1 in values and hi + 1 in values, (cls.NAME, name)
                assert not any(type(v) is int and lo <= v <= hi for v in values), (cls.NAME, name)


def test_out_of_range_fields_rejected(runtime: CPythonRuntime | MicroPythonCaller) -> None:
    bad = invalid_messages()
    good = valid_messages()
    extra = [{"type": "no_such_message"}, {"type": "ack"}, {"type": "tare", "lane": 0, "extra": 1}]
    got = runtime.call(MOD, "encode_errors", bad + good + extra, timeout_s=60)
    assert len(got) == len(bad) + len(good) + len(extra)
    for d, reason in zip(bad, got[: len(bad)], strict=True):
        assert reason == "bad_field", d
    for d, reason in zip(good, got[len(bad) : len(bad) + len(good)], strict=True):
        assert reason == "ok", d
    assert got[len(bad) + len(good) :] == ["bad_type", "bad_field", "ok"]


def _header_cases() -> tuple[list[Case], list[Case]]:
    up = {"type": "event", "event_seq": 1, "lane": 0, "kind": 1, "count_delta": -1, "weight_delta_dg": -90,
          "confidence": 90, "age_ms": 5}  # fmt: skip
    down = {"type": "ack", "event_seq": 7}
    base = {"node_id": 1, "seq": 1, "session": 1, "key": "00" * 16}
    bad: list[Case] = []
    good: list[Case] = []
    for msg in (up, down):
        for field in ("node_id", "seq"):
            for v in [0, -1, 2**32, 2**40, True, False, "1", 1.0, None]:
                bad.append(dict(base, message=msg, **{field: v}))
            for v in [1, U32_MAX]:
                good.append(dict(base, message=msg, **{field: v}))
    for v in [0, -1, 2**32, True, "1", None]:
        bad.append(dict(base, message=down, session=v))
    good.append(dict(base, message=down, session=U32_MAX))
    good.append(dict(base, message=up, session=0))  # uplink frames carry no session
    return bad, good


def test_header_values_rejected(runtime: CPythonRuntime | MicroPythonCaller) -> None:
    bad, good = _header_cases()
    got = runtime.call(MOD, "roundtrip_messages", bad + good)
    assert len(got) == len(bad) + len(good)
    for case, res in zip(bad, got[: len(bad)], strict=True):
        assert res == {"error": "bad_field"}, case
    for case, res in zip(good, got[len(bad) :], strict=True):
        assert "error" not in res, case
        assert res["message"] == case["message"] and res["seq"] == case["seq"]


def test_invalid_values_raise_protocol_error_in_process() -> None:
    # The same lists straight through the CPython API (no JSON): only ProtocolError, never TypeError and co.
    results: list[str] = CASES.encode_errors(invalid_messages())
    assert set(results) == {"bad_field"}
    check: Callable[[list[Case]], list[Any]] = CASES.roundtrip_messages
    assert all(r == {"error": "bad_field"} for r in check(_header_cases()[0]))
