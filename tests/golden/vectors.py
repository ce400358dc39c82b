"""Golden vectors for wire protocol v1.1: one per message type plus edge values (v1.1 added set_count and
the count event kind; every v1.0 vector is unchanged).

``python -m tests.golden.vectors --write`` regenerates ``tests/golden/protocol_v1.json``; do that only
for a deliberate protocol change (and bump the version). Tests check that CPython and MicroPython both
reproduce every byte of this file and decode it back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tests.portable.protocol_cases import encode_vector

VECTORS_PATH = Path(__file__).resolve().parent / "protocol_v1.json"

KEY_A = "000102030405060708090a0b0c0d0e0f"
KEY_B = "c0ffee" * 10 + "42"  # 31 bytes, odd length on purpose
EPC = "e2801160600002084c7d1a5f"

# fmt: off
SPECS: list[dict[str, Any]] = [
    {"name": "hello", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 1,
     "message": {"type": "hello", "fw_major": 0, "fw_minor": 1, "fw_patch": 0, "boot_count": 1,
                 "lane_count": 4, "layout_hash": 0xA1B2C3D4}},
    {"name": "lane_state", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 2,
     "message": {"type": "lane_state", "lane": 0, "count": 24, "removed_total": 130, "added_total": 154,
                 "weight_dg": 81234, "flags": 0, "last_event": 17}},
    {"name": "lane_state_negative", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 3,
     "message": {"type": "lane_state", "lane": 31, "count": -2, "removed_total": 0xFFFFFFFF, "added_total": 0,
                 "weight_dg": -2147483648, "flags": 0x001F, "last_event": 0}},
    {"name": "event_pick", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 4,
     "message": {"type": "event", "event_seq": 18, "lane": 0, "kind": 1, "count_delta": -2,
                 "weight_delta_dg": -9010, "confidence": 98, "age_ms": 350}},
    {"name": "event_put", "direction": "uplink", "key": KEY_A, "node_id": 0xFFFFFFFF, "seq": 0xFFFFFFFF,
     "message": {"type": "event", "event_seq": 0xFFFFFFFF, "lane": 3, "kind": 2, "count_delta": 32767,
                 "weight_delta_dg": 2147483647, "confidence": 100, "age_ms": 0xFFFFFFFF}},
    {"name": "event_anomaly", "direction": "uplink", "key": KEY_B, "node_id": 513, "seq": 65536,
     "message": {"type": "event", "event_seq": 1, "lane": 1, "kind": 3, "count_delta": 0,
                 "weight_delta_dg": -37, "confidence": 0, "age_ms": 12}},
    {"name": "command_result", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 5,
     "message": {"type": "command_result", "command_seq": 3, "status": 0, "value": -5}},
    {"name": "health", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 6,
     "message": {"type": "health", "uptime_s": 86400, "free_heap": 112640, "sample_rate_chz": 8000,
                 "tx_frames": 1234, "rx_frames": 99, "rx_rejected": 1, "outbox_depth": 3, "outbox_dropped": 0,
                 "outbox_first": 16}},
    {"name": "rfid_seen", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 7,
     "message": {"type": "rfid_seen", "lane": 2, "rssi": -61, "epc": EPC}},
    {"name": "rfid_lost", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 8,
     "message": {"type": "rfid_lost", "lane": 2, "epc": EPC}},
    {"name": "tag_seen", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 9,
     "message": {"type": "tag_seen", "event_seq": 19, "lane": 2, "rssi": -58, "age_ms": 1500, "epc": EPC}},
    {"name": "tag_lost", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 10,
     "message": {"type": "tag_lost", "event_seq": 20, "lane": 2, "age_ms": 0, "epc": EPC}},
    {"name": "reader_health", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 11,
     "message": {"type": "reader_health", "reader": 0, "state": 1, "reads": 120345, "bad_frames": 3, "resets": 1,
                 "silences": 2, "present": 17}},
    {"name": "ack", "direction": "downlink", "key": KEY_A, "node_id": 1, "seq": 1, "session": 1,
     "message": {"type": "ack", "event_seq": 18}},
    {"name": "tare", "direction": "downlink", "key": KEY_A, "node_id": 1, "seq": 2, "session": 1,
     "message": {"type": "tare", "lane": 0}},
    {"name": "calibrate", "direction": "downlink", "key": KEY_A, "node_id": 1, "seq": 3, "session": 1,
     "message": {"type": "calibrate", "lane": 1, "known_weight_dg": 10000}},
    {"name": "set_lane", "direction": "downlink", "key": KEY_A, "node_id": 1, "seq": 4, "session": 7,
     "message": {"type": "set_lane", "lane": 0, "unit_weight_dg": 4505, "spread_permille": 11,
                 "sku": "COLA-330ML-CAN"}},
    {"name": "set_lane_long_sku", "direction": "downlink", "key": KEY_B, "node_id": 513, "seq": 9, "session": 2,
     "message": {"type": "set_lane", "lane": 31, "unit_weight_dg": 1000000, "spread_permille": 1000,
                 "sku": "A" * 31 + "~"}},
    {"name": "identify", "direction": "downlink", "key": KEY_A, "node_id": 1, "seq": 5, "session": 1,
     "message": {"type": "identify", "seconds": 10}},
    {"name": "set_config", "direction": "downlink", "key": KEY_A, "node_id": 1, "seq": 6, "session": 1,
     "message": {"type": "set_config", "key": 1, "value": -100}},
    {"name": "request_state", "direction": "downlink", "key": KEY_A, "node_id": 1, "seq": 7, "session": 1,
     "message": {"type": "request_state", "lane": 255}},
    # v1.1
    {"name": "set_count", "direction": "downlink", "key": KEY_A, "node_id": 1, "seq": 8, "session": 1,
     "message": {"type": "set_count", "lane": 2, "count": 24}},
    {"name": "set_count_max", "direction": "downlink", "key": KEY_B, "node_id": 513, "seq": 10, "session": 2,
     "message": {"type": "set_count", "lane": 31, "count": 1000000}},
    {"name": "event_count", "direction": "uplink", "key": KEY_A, "node_id": 1, "seq": 9,
     "message": {"type": "event", "event_seq": 19, "lane": 2, "kind": 4, "count_delta": -3,
                 "weight_delta_dg": 0, "confidence": 100, "age_ms": 40}},
]


def build() -> list[dict[str, Any]]:
    return [dict(spec, **encode_vector(spec)) for spec in SPECS]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help="rewrite the checked-in vectors file")
    args = ap.parse_args(argv)
    vectors = build()
    text = json.dumps(vectors, indent=1) + "\n"
    if args.write:
        VECTORS_PATH.write_text(text)
        print(f"wrote {len(vectors)} vectors to {VECTORS_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
