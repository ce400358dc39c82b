"""Portable protocol test bodies: run unchanged under CPython and MicroPython, JSON in and out.

Bytes travel as lowercase hex strings. Any exception other than ProtocolError escapes and fails the test.
"""

from shared_protocol import ble_fragments, downlink_text, serial_framing
from shared_protocol.auth import Key
from shared_protocol.errors import ProtocolError
from shared_protocol.frame import DownlinkReceiver, UplinkReceiver, decode_frame, encode_frame
from shared_protocol.messages import DOWNLINK, UPLINK, from_dict


def _dir(name):
    return DOWNLINK if name == "downlink" else UPLINK


def encode_vector(v):
    """Everything a golden vector pins down, computed on this runtime."""
    key = Key(bytes.fromhex(v["key"]))
    msg = from_dict(v["message"])
    frame = encode_frame(msg, v["node_id"], v["seq"], key, v.get("session", 0))
    out = {
        "frame": frame.hex(),
        "serial": serial_framing.encode_serial(frame).hex(),
        "ble_mtu23": [p.hex() for p in ble_fragments.fragment(frame, 23, v["seq"] & 0xFF)],
    }
    if v["direction"] == "downlink":
        out["downlink_line"] = downlink_text.encode_line(frame).decode()
    return out


def encode_vectors(vectors):
    return [encode_vector(v) for v in vectors]


def decode_vectors(vectors):
    """Decode each vector's frame (and its serial / text / BLE forms) back to a message dict."""
    out = []
    for v in vectors:
        key = Key(bytes.fromhex(v["key"]))
        session = v.get("session", 0)
        direction = _dir(v["direction"])
        frame = decode_frame(bytes.fromhex(v["frame"]), direction, key, session)
        via_serial = serial_framing.SerialDecoder().feed(bytes.fromhex(v["serial"]))
        r = ble_fragments.Reassembler()
        via_ble = None
        for piece in v["ble_mtu23"]:
            via_ble = r.feed(bytes.fromhex(piece))
        item = {
            "node_id": frame.node_id,
            "seq": frame.seq,
            "message": frame.message.to_dict(),
            "serial_ok": via_serial == [bytes.fromhex(v["frame"])],
            "ble_ok": via_ble == bytes.fromhex(v["frame"]),
        }
        if "downlink_line" in v:
            line = v["downlink_line"].encode()
            item["text_ok"] = downlink_text.LineDecoder().feed(line) == [bytes.fromhex(v["frame"])]
        out.append(item)
    return out


def roundtrip_messages(cases):
    """cases: [{"message": dict, "node_id", "seq", "session", "key"}] -> the decoded dicts, or error reasons."""
    out = []
    for c in cases:
        key = Key(bytes.fromhex(c["key"]))
        try:
            msg = from_dict(c["message"])
            frame = encode_frame(msg, c["node_id"], c["seq"], key, c.get("session", 0))
        except ProtocolError as err:
            out.append({"error": err.reason_name})
            continue
        back = decode_frame(frame, msg.DIRECTION, key, c.get("session", 0))
        out.append({"frame": frame.hex(), "message": back.message.to_dict(), "seq": back.seq})
    return out


def encode_errors(cases):
    """Encode each message dict; return the error reason name, or "ok" when it encoded."""
    key = Key(b"k" * 16)
    out = []
    for c in cases:
        try:
            msg = from_dict(c)
            encode_frame(msg, 1, 1, key, 1)
            out.append("ok")
        except ProtocolError as err:
            out.append(err.reason_name)
    return out


def decode_any(key_hex, inputs, session=1):
    """Decode arbitrary byte strings through every decoder; only ProtocolError may come out."""
    key = Key(bytes.fromhex(key_hex))
    out = []
    for h in inputs:
        data = bytes.fromhex(h)
        res = []
        for direction in (UPLINK, DOWNLINK):
            try:
                f = decode_frame(data, direction, key, session)
                res.append("ok:" + f.message.NAME)
            except ProtocolError as err:
                res.append(err.reason_name)
        try:
            serial_framing.cobs_decode(data)
            res.append("cobs_ok")
        except ProtocolError as err:
            res.append(err.reason_name)
        try:
            downlink_text.decode_line(data)
            res.append("line_ok")
        except ProtocolError as err:
            res.append(err.reason_name)
        r = ble_fragments.Reassembler()
        try:
            got = r.feed(data)
            res.append("frag_done" if got is not None else "frag_more")
        except ProtocolError as err:
            res.append(err.reason_name)
        d = serial_framing.SerialDecoder()
        res.append(len(d.feed(data)))
        ld = downlink_text.LineDecoder()
        res.append(len(ld.feed(data)))
        out.append(res)
    return out


def serial_stream(key_hex, chunks_hex):
    """Feed a serial byte stream in the given chunks; return verified frames and decoder counters."""
    key = Key(bytes.fromhex(key_hex))
    dec = serial_framing.SerialDecoder()
    rx = UplinkReceiver({})
    got = []
    for h in chunks_hex:
        for raw in dec.feed(bytes.fromhex(h)):
            nid = int.from_bytes(raw[2:6], "big") if len(raw) >= 6 else 0
            rx.keys[nid] = key
            try:
                f = rx.accept(raw)
                got.append([f.node_id, f.seq, f.message.to_dict()])
            except ProtocolError as err:
                got.append(err.reason_name)
    return {"frames": got, "garbage_chunks": dec.garbage_chunks, "garbage_bytes": dec.garbage_bytes}


def uplink_accept(keys, frames_hex, last_seq=None):
    """Hub-side acceptance: keys {node_id: key_hex}; returns per-frame "ok:<seq>" or the reason."""
    rx = UplinkReceiver({int(k): Key(bytes.fromhex(v)) for k, v in keys.items()})
    for k, v in (last_seq or {}).items():
        rx.last_seq[int(k)] = v
    out = []
    for h in frames_hex:
        try:
            f = rx.accept(bytes.fromhex(h))
            out.append("ok:" + str(f.seq))
        except ProtocolError as err:
            out.append(err.reason_name)
    counts = {}
    for (nid, reason), n in rx.rejected.counts.items():
        counts[str(nid) + "/" + str(reason)] = n
    return {"results": out, "rejected": counts}


def downlink_accept(node_id, key_hex, session, frames_hex):
    rx = DownlinkReceiver(node_id, Key(bytes.fromhex(key_hex)), session)
    out = []
    for h in frames_hex:
        try:
            f = rx.accept(bytes.fromhex(h))
            out.append("ok:" + f.message.NAME)
        except ProtocolError as err:
            out.append(err.reason_name)
    return {"results": out, "rejected": rx.rejected}


def text_lines(stream_hex_chunks):
    dec = downlink_text.LineDecoder()
    frames = []
    for h in stream_hex_chunks:
        frames.extend(f.hex() for f in dec.feed(bytes.fromhex(h)))
    return {"frames": frames, "bad": dec.bad_lines, "ignored": dec.ignored_lines}


def ble_roundtrip(frames_hex, mtu):
    r = ble_fragments.Reassembler()
    out = []
    for i, h in enumerate(frames_hex):
        got = None
        for piece in ble_fragments.fragment(bytes.fromhex(h), mtu, i & 0xFF):
            if len(piece) > mtu - 3:
                raise AssertionError("fragment longer than MTU - 3")
            got = r.feed(piece)
        out.append(got.hex() if got is not None else None)
    return out


# -- batched bodies for the protocol test suite (one MicroPython call each) -----------------------


def decode_any_groups(groups):
    """groups: [[key_hex, session, [input_hex...]], ...] -> [decode_any(...) result per group]."""
    return [decode_any(g[0], g[2], g[1]) for g in groups]


def serial_streams(key_hex, streams):
    """Several independent serial streams, each a list of hex chunks fed one by one."""
    return [serial_stream(key_hex, chunks) for chunks in streams]


def _error_text(err):
    return {"reason": err.reason_name, "detail": str(err)}


def uplink_session(keys, frames_hex):
    """Like uplink_accept, plus what was applied, the detail of each error and the final last_seq."""
    rx = UplinkReceiver({int(k): Key(bytes.fromhex(v)) for k, v in keys.items()})
    results = []
    details = []
    applied = []
    for h in frames_hex:
        try:
            f = rx.accept(bytes.fromhex(h))
        except ProtocolError as err:
            results.append(err.reason_name)
            details.append(str(err))
            continue
        results.append("ok:" + str(f.seq))
        details.append("")
        applied.append([f.node_id, f.seq, f.message.to_dict()])
    counts = {}
    for (nid, reason), n in rx.rejected.counts.items():
        counts[str(nid) + "/" + str(reason)] = n
    last_seq = {}
    for nid, seq in rx.last_seq.items():
        last_seq[str(nid)] = seq
    return {"results": results, "details": details, "applied": applied, "rejected": counts, "last_seq": last_seq}


def downlink_session(node_id, key_hex, session, frames_hex):
    """Like downlink_accept, plus what was applied, the detail of each error and the final last_seq."""
    rx = DownlinkReceiver(node_id, Key(bytes.fromhex(key_hex)), session)
    results = []
    details = []
    applied = []
    for h in frames_hex:
        try:
            f = rx.accept(bytes.fromhex(h))
        except ProtocolError as err:
            results.append(err.reason_name)
            details.append(str(err))
            continue
        results.append("ok:" + str(f.seq))
        details.append("")
        applied.append([f.node_id, f.seq, f.message.to_dict()])
    return {
        "results": results,
        "details": details,
        "applied": applied,
        "rejected": rx.rejected,
        "last_seq": rx.last_seq,
    }


def text_cases(frames_hex, lines_hex, streams):
    """encode_line for each frame, decode_line (hex or reason) for each line, text_lines for each stream."""
    encoded = []
    for h in frames_hex:
        try:
            encoded.append(downlink_text.encode_line(bytes.fromhex(h)).hex())
        except ProtocolError as err:
            encoded.append(err.reason_name)
    decoded = []
    for h in lines_hex:
        try:
            decoded.append(downlink_text.decode_line(bytes.fromhex(h)).hex())
        except ProtocolError as err:
            decoded.append(err.reason_name)
    return {"encoded": encoded, "decoded": decoded, "streams": [text_lines(s) for s in streams]}


def ble_fragments_many(cases):
    """cases: [[mtu, msg_id, frame_hex], ...] -> the fragments (hex list) or the reason, per case."""
    out = []
    for c in cases:
        try:
            out.append([p.hex() for p in ble_fragments.fragment(bytes.fromhex(c[2]), c[0], c[1])])
        except ProtocolError as err:
            out.append(err.reason_name)
    return out


def ble_feed_many(sequences):
    """Each sequence of fragments (hex) goes to a fresh Reassembler; per piece "more", "done:<hex>" or a reason."""
    out = []
    for seq in sequences:
        r = ble_fragments.Reassembler()
        res = []
        for h in seq:
            try:
                got = r.feed(bytes.fromhex(h))
                res.append("more" if got is None else "done:" + got.hex())
            except ProtocolError as err:
                res.append(err.reason_name)
        out.append({"results": res, "dropped": r.dropped})
    return out


def cobs_cases(datas_hex):
    """cobs_encode of each input, and what a SerialDecoder returns for its encode_serial form (or the reason)."""
    out = []
    for h in datas_hex:
        data = bytes.fromhex(h)
        item = {"cobs": serial_framing.cobs_encode(data).hex()}
        try:
            wire = serial_framing.encode_serial(data)
            item["serial"] = [f.hex() for f in serial_framing.SerialDecoder().feed(wire)]
        except ProtocolError as err:
            item["serial"] = err.reason_name
        out.append(item)
    return out


def cobs_decode_types(hex_chunks):
    """cobs_decode on bytes and bytearray inputs: same output or same error on both runtimes."""
    out = []
    for h in hex_chunks:
        for conv in (bytes, bytearray):
            try:
                out.append(serial_framing.cobs_decode(conv(bytes.fromhex(h))).hex())
            except ProtocolError as err:
                out.append(err.reason_name)
    return out
