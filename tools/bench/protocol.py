"""`smartshelf bench protocol`: protocol throughput on CPython and real MicroPython in one run."""

from __future__ import annotations

import json
import platform
from typing import Any

from shared_protocol import ble_fragments
from shared_protocol.auth import Key
from shared_protocol.frame import encode_frame
from shared_protocol.messages import KIND_PICK, Event
from tools.bench.portable import protocol_loop
from tools.mpy_runtime import REPO_ROOT, MicroPythonRuntime


def _micropython(min_ms: int) -> dict[str, Any]:
    packages = ("shared_protocol", "firmware", (REPO_ROOT / "tools" / "bench", "tools/bench"))
    with MicroPythonRuntime(packages=packages) as rt:
        result: dict[str, Any] = rt.call("tools.bench.portable.protocol_loop", "run", min_ms, timeout_s=120)
        return result


def run(min_ms: int = 1000, as_json: bool = False) -> dict[str, Any]:
    figures = {
        "cpython": protocol_loop.run(min_ms),
        "micropython": _micropython(min_ms),
    }
    frame = encode_frame(Event(1, 0, KIND_PICK, -1, -4510, 97, 120), 42, 1, Key(b"\x01" * 16))
    wire = {
        "event_frame": len(frame),
        "serial": figures["cpython"]["serial_bytes"],
        "ble_fragments_mtu23": len(ble_fragments.fragment(frame, 23, 0)),
        "ble_fragments_mtu247": len(ble_fragments.fragment(frame, 247, 0)),
    }
    report = {"figures": figures, "wire_bytes": wire, "host": platform.platform(), "python": platform.python_version()}
    if as_json:
        print(json.dumps(report, indent=2))
        return report
    cp, mp = figures["cpython"], figures["micropython"]
    print(f"protocol v1 benchmark (event frame, HMAC-SHA256/64), each stage >= {min_ms} ms, same run")
    print(f"{'stage':<34}{'CPython /s':>14}{'MicroPython /s':>16}{'MP/CP':>8}")
    for key, label in (
        ("encode_auth_per_s", "encode + authenticate"),
        ("verify_decode_per_s", "verify + replay check + decode"),
        ("serial_roundtrip_per_s", "event node->hub over serial, all"),
    ):
        print(f"{label:<34}{cp[key]:>14,}{mp[key]:>16,}{mp[key] / cp[key]:>8.2f}")
    print(
        f"bytes per event: frame {wire['event_frame']}, on serial {wire['serial']} "
        f"(COBS + 2 delimiters), BLE notifications: {wire['ble_fragments_mtu23']} at MTU 23, "
        f"{wire['ble_fragments_mtu247']} at MTU 247"
    )
    print("MicroPython here is the WebAssembly build on this host, not a microcontroller; use the ratio.")
    return report
