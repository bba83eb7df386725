"""Build tests/vectors/frames.json and link.json independently of protocol/.

The frames are assembled from docs/protocol.md with cbor2 (canonical mode),
cryptography's AESCCM and struct, the link records with zlib's CRC-32 and the
COBS encoder of Cheshire and Baker's paper written out below, so they check
protocol/ against a second implementation. Rejected frames and link faults
carry the reason docs/protocol.md gives for them, assigned here by hand from
the spec, never by running protocol/. ``python tests/vectors/make_vectors.py``
rewrites both files; tests/protocol/test_vectors.py checks that the committed
files are what this script produces.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

HERE = Path(__file__).parent

# (name, kind name, kind id, ordered wire fields, device id, fcnt, tag length, key)
CASES: list[dict[str, Any]] = [
    {
        "name": "water_meter_typical",
        "note": "household meter, four frames a day, 6 hourly values, no alarm",
        "kind": "water_meter", "kind_id": 1,
        "payload": [123456, 200, 0, 17, [0, 2, 31, 45, 12, 8]],
        "device_id": 0x00001234, "fcnt": 7, "tag_len": 4,
        "key": "000102030405060708090a0b0c0d0e0f",
    },
    {
        "name": "water_meter_leak_alarm",
        "note": "leak and low battery alarms, max_flow present, 12 overlapping hourly values",
        "kind": "water_meter", "kind_id": 1,
        "payload": [4012345, 17, 0b100001, 3, [3, 3, 4, 3, 3, 3, 3, 4, 3, 3, 3, 3], 40],
        "device_id": 0x0A0B0C0D, "fcnt": 70000, "tag_len": 4,
        "key": "2b7e151628aed2a6abf7158809cf4f3c",
    },
    {
        "name": "water_meter_long_tag",
        "note": "8-byte tag, counter at its maximum",
        "kind": "water_meter", "kind_id": 1,
        "payload": [0, 0, 0, 20, [0]],
        "device_id": 0xFFFFFFFF, "fcnt": 0xFFFFFF, "tag_len": 8,
        "key": "ffeeddccbbaa99887766554433221100",
    },
    {
        "name": "air_quality_typical",
        "note": "all sensors valid, winter morning",
        "kind": "air_quality", "kind_id": 2,
        "payload": [52, 87, 143, -35, 64, 10132, 0],
        "device_id": 0x00000099, "fcnt": 1, "tag_len": 4,
        "key": "000102030405060708090a0b0c0d0e0f",
    },
    {
        "name": "air_quality_pm_fault_no2",
        "note": "particle sensor failed (nulls, pm_fault set), NO2 present",
        "kind": "air_quality", "kind_id": 2,
        "payload": [None, None, None, 215, 41, 9987, 0b1, 38],
        "device_id": 0x00C0FFEE, "fcnt": 123456, "tag_len": 4,
        "key": "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
    },
]

WATER = ("index", "profile_end_h", "alarms", "battery", "profile", "max_flow")
AIR = ("pm1", "pm2_5", "pm10", "temperature", "humidity", "pressure", "status", "no2")


def build(case: dict[str, Any]) -> dict[str, Any]:
    """One vector: inputs, the intermediate values and the frame, all in hex."""
    tag_len = case["tag_len"]
    ctrl = (1 << 6) | (0x20 if tag_len == 8 else 0) | case["kind_id"]
    header = struct.pack(">BI", ctrl, case["device_id"]) + case["fcnt"].to_bytes(3, "big")
    nonce = struct.pack(">BII", 0, case["device_id"], case["fcnt"]) + bytes(4)
    plain = cbor2.dumps(case["payload"], canonical=True)
    key = bytes.fromhex(case["key"])
    sealed = AESCCM(key, tag_length=tag_len).encrypt(nonce, plain, header)
    names = WATER if case["kind"] == "water_meter" else AIR
    return {
        "name": case["name"],
        "note": case["note"],
        "kind": case["kind"],
        "device_id": case["device_id"],
        "fcnt": case["fcnt"],
        "tag_len": tag_len,
        "key": case["key"],
        "values": dict(zip(names, case["payload"], strict=False)),
        "header": header.hex(),
        "nonce": nonce.hex(),
        "payload_cbor": plain.hex(),
        "frame": (header + sealed).hex(),
    }


def _header(ctrl: int, device_id: int, fcnt: int) -> bytes:
    return struct.pack(">BI", ctrl, device_id) + fcnt.to_bytes(3, "big")


def _sealed(ctrl: int, payload: bytes, key_hex: str = CASES[0]["key"],
            device_id: int = 0x00001234, fcnt: int = 8) -> bytes:
    """A frame with any control byte and any payload bytes, sealed as section 3 says."""
    tag_len = 8 if ctrl & 0x20 else 4
    header = _header(ctrl, device_id, fcnt)
    nonce = struct.pack(">BII", 0, device_id, fcnt) + bytes(4)
    return header + AESCCM(bytes.fromhex(key_hex), tag_length=tag_len).encrypt(
        nonce, payload, header)


def _water(*fields: Any) -> bytes:
    return cbor2.dumps(list(fields), canonical=True)


def rejected() -> list[dict[str, Any]]:
    """Frames a decoder holding the key must reject, each with its reason (section 8)."""
    good = bytes.fromhex(build(CASES[0])["frame"])
    long_tag = bytes.fromhex(build(CASES[2])["frame"])
    typical = [123456, 200, 0, 17, [0, 2, 31, 45, 12, 8]]
    flipped_tag = bytearray(good)
    flipped_tag[-1] ^= 0x01
    next_fcnt = bytearray(good)
    next_fcnt[7] ^= 0x01
    other_key = _sealed(0x41, _water(*typical), key_hex="0f0e0d0c0b0a09080706050403020100",
                        fcnt=7)
    # (name, reason, note, frame)
    cases: list[tuple[str, str, str, bytes]] = [
        ("short_header", "frame_short", "7 bytes: not even a header", good[:7]),
        ("short_header_bad_version", "frame_short",
         "7 bytes with version 2: length is checked before version", b"\x81" + good[1:7]),
        ("short_no_payload", "frame_short",
         "12 bytes, 4-byte tag: no room for a 1-byte payload", good[:12]),
        ("short_long_tag", "frame_short",
         "16 bytes with the 8-byte tag bit set: one short of header + 1 + 8", long_tag[:16]),
        ("long_256", "frame_long", "256 bytes, one over the LoRa limit",
         _header(0x41, 0x1234, 9) + bytes(range(248))),
        ("version_0", "frame_version", "control 0x01: version bits 00", b"\x01" + good[1:]),
        ("version_2", "frame_version", "control 0x81: version bits 10", b"\x81" + good[1:]),
        ("version_3", "frame_version", "control 0xc1: version bits 11", b"\xc1" + good[1:]),
        ("version_2_10_bytes", "frame_version",
         "10 bytes with version 2: the version is checked before the tag-dependent length",
         b"\x81" + good[1:10]),
        ("kind_0", "frame_kind", "kind id 0 is reserved", _sealed(0x40, _water(*typical))),
        ("kind_3", "frame_kind", "kind id 3 is not in the table", _sealed(0x43, b"\x80")),
        ("kind_31_long_tag", "frame_kind", "kind id 31, 8-byte tag",
         _sealed(0x7F, _water(*typical))),
        ("tag_flipped", "frame_tag", "last tag bit of water_meter_typical flipped",
         bytes(flipped_tag)),
        ("header_altered", "frame_tag", "counter 7 changed to 6 after sealing",
         bytes(next_fcnt)),
        ("wrong_key", "frame_tag", "sealed under another key", other_key),
        ("tag_bit_set", "frame_tag",
         "long-tag bit set on a frame sealed with a 4-byte tag", b"\x61" + good[1:]),
        ("cbor_non_shortest", "cbor_non_shortest", "index 7 written as 1a 00000007",
         _sealed(0x41, bytes.fromhex("851a00000007") + _water(*typical)[6:])),
        ("cbor_trailing", "cbor_trailing", "a byte after the array",
         _sealed(0x41, _water(*typical) + b"\x00")),
        ("cbor_truncated", "cbor_truncated", "array of 5 with 2 items",
         _sealed(0x41, bytes.fromhex("850102"))),
        ("cbor_float", "cbor_unsupported", "battery as a half float",
         _sealed(0x41, bytes.fromhex("851a0001e24018c800f94c00860002181f182d0c08"))),
        ("cbor_indefinite", "cbor_indefinite", "indefinite-length array",
         _sealed(0x41, bytes.fromhex("9f01020304800bff"))),
        ("cbor_bad_text", "cbor_bad_text", "a surrogate (ed a0 80) in a text string",
         _sealed(0x41, bytes.fromhex("8563eda08000000080"))),
        ("cbor_too_deep", "cbor_too_deep", "five nested arrays",
         _sealed(0x41, bytes.fromhex("818181818100"))),
        ("cbor_map_key", "cbor_map_key", "a map with keys 1 then 0",
         _sealed(0x41, bytes.fromhex("a201000000"))),
        ("cbor_too_long", "cbor_too_long",
         "an array of 1025 items: over the limit before it runs past the end",
         _sealed(0x41, bytes.fromhex("99040101"))),
        ("payload_shape_map", "payload_shape", "a map instead of an array",
         _sealed(0x41, bytes.fromhex("a10000"))),
        ("payload_shape_eight", "payload_shape", "8 elements; water_meter has 7 fields",
         _sealed(0x41, _water(*typical, 40, [1], 1))),
        ("payload_missing", "payload_missing", "profile left off (it is not optional)",
         _sealed(0x41, _water(*typical[:4]))),
        ("payload_type_null", "payload_type", "null index (not nullable)",
         _sealed(0x41, _water(None, *typical[1:]))),
        ("payload_type_text", "payload_type", "alarms as text",
         _sealed(0x41, _water(123456, 200, "leak", 17, [0]))),
        ("payload_range_battery", "payload_range", "battery 21 (max 20)",
         _sealed(0x41, _water(123456, 200, 0, 21, [0]))),
        ("payload_range_bit", "payload_range", "alarm bit 6 (the list has bits 0-5)",
         _sealed(0x41, _water(123456, 200, 64, 17, [0]))),
        ("payload_range_series", "payload_range", "25 profile values (at most 24)",
         _sealed(0x41, _water(123456, 200, 0, 17, [1] * 25))),
        ("payload_range_negative", "payload_range", "air_quality humidity -1 (min 0)",
         _sealed(0x42, cbor2.dumps([52, 87, 143, -35, -1, 10132, 0]))),
    ]
    return [{"name": name, "reason": reason, "note": note, "key": CASES[0]["key"],
             "frame": raw.hex()} for name, reason, note, raw in cases]


def cobs(data: bytes) -> bytes:
    """COBS as in Cheshire and Baker's paper (StuffData): a code byte per run."""
    out = bytearray()
    run = bytearray()
    for byte in data:
        if byte:
            run.append(byte)
            if len(run) == 254:
                out += bytes((255,)) + run
                run = bytearray()
        else:
            out += bytes((len(run) + 1,)) + run
            run = bytearray()
    out += bytes((len(run) + 1,)) + run
    return bytes(out)


def record(rtype: int, body: bytes) -> bytes:
    """One link record with its delimiters (section 6)."""
    raw = bytes((rtype,)) + body
    return b"\x00" + cobs(raw + struct.pack("<I", zlib.crc32(raw))) + b"\x00"


def _run_of_254() -> bytes:
    # A LOG body for which type | body | CRC is exactly 254 non-zero bytes.
    for n in range(1000):
        body = f"run {n:03d} ".encode() + b"=" * 241
        raw = b"\x03" + body
        if b"\x00" not in struct.pack("<I", zlib.crc32(raw)):
            return body
    raise RuntimeError("no body without a zero CRC byte")


# The clock downlink of docs/protocol.md section 12.12 (tests/vectors/downlink.json).
DOWNLINK_CLOCK = bytes.fromhex("60000012340000010aa27fc07e0849a0e2082ac49cc77d4d20bf8012")


def link() -> dict[str, Any]:
    """The link.json document: good records and streams with their faults."""
    frame0 = bytes.fromhex(build(CASES[0])["frame"])
    frame2 = bytes.fromhex(build(CASES[2])["frame"])
    radio_body = struct.pack(">hhIB", -117, -75, 868100000, 12) + frame0
    tx_body = struct.pack(">QIB", 1796158015123, 868100000, 12) + DOWNLINK_CLOCK
    tx_now_body = struct.pack(">QIB", 0, 869525000, 12) + DOWNLINK_CLOCK
    log_text = "knute 1.4 boot: målar 12 L/h, reset=power"
    run254 = _run_of_254()
    records: list[dict[str, Any]] = [
        {"name": "frame_typical", "note": "section 7.4", "type": 1, "body": frame0.hex()},
        {"name": "frame_long_tag", "note": "water_meter_long_tag", "type": 1,
         "body": frame2.hex()},
        {"name": "radio", "note": "what a radio bridge heard",
         "type": 2, "body": radio_body.hex(),
         "radio": {"rssi_dbm": -117, "snr_db_x10": -75, "freq_hz": 868100000, "sf": 12,
                   "frame": frame0.hex()}},
        {"name": "tx", "note": "a downlink for a radio bridge to send in RX1",
         "type": 4, "body": tx_body.hex(),
         "tx": {"at_ms": 1796158015123, "freq_hz": 868100000, "sf": 12,
                "payload": DOWNLINK_CLOCK.hex()}},
        {"name": "tx_now", "note": "at_ms 0: the bridge picks the window itself",
         "type": 4, "body": tx_now_body.hex(),
         "tx": {"at_ms": 0, "freq_hz": 869525000, "sf": 12,
                "payload": DOWNLINK_CLOCK.hex()}},
        {"name": "log", "note": "a console line, UTF-8", "type": 3,
         "body": log_text.encode().hex(), "text": log_text},
        {"name": "log_254_run", "note": "type | body | CRC is 254 non-zero bytes: code 0xff, "
         "then the final code 0x01", "type": 3, "body": run254.hex(),
         "text": run254.decode()},
        {"name": "log_300", "note": "the longest body, 300 bytes, runs over 254 bytes",
         "type": 3, "body": (b"x" * 300).hex(), "text": "x" * 300},
        {"name": "empty_frame_body", "note": "a good record; its frame is then frame_short",
         "type": 1, "body": ""},
    ]
    for rec in records:
        rec["record"] = record(rec["type"], bytes.fromhex(rec["body"])).hex()
    wire = {r["name"]: bytes.fromhex(r["record"]) for r in records}

    def item(name: str) -> dict[str, Any]:
        rec = next(r for r in records if r["name"] == name)
        return {"type": rec["type"], "body": rec["body"]}

    corrupt = bytearray(wire["frame_typical"])
    corrupt[20] ^= 0x10
    unterminated = record(3, b"line cut by a reset")[:-1]
    raw254 = b"\x03" + run254
    raw254 += struct.pack("<I", zlib.crc32(raw254))
    streams: list[dict[str, Any]] = [
        {"name": "noise_then_records",
         "note": "noise before the first record is closed by its leading 0x00 and "
                 "reported (13 points past the end)",
         "wire": b"\x13\x37" + wire["frame_typical"] + wire["radio"],
         "items": [{"reason": "link_cobs"}, item("frame_typical"), item("radio")]},
        {"name": "empty_records",
         "note": "runs of delimiters are empty records and ignored",
         "wire": b"\x00\x00\x00" + wire["log"] + b"\x00\x00" + wire["frame_long_tag"],
         "items": [item("log"), item("frame_long_tag")]},
        {"name": "crc_then_good", "note": "one bit of a body flipped, then a good record",
         "wire": bytes(corrupt) + wire["frame_long_tag"],
         "items": [{"reason": "link_crc"}, item("frame_long_tag")]},
        {"name": "cut_record",
         "note": "a record cut after 7 bytes (its code 03 points past the end), then a good one",
         "wire": wire["frame_typical"][:7] + wire["log"],
         "items": [{"reason": "link_cobs"}, item("log")]},
        {"name": "short_record", "note": "COBS of 4 bytes: less than type + CRC",
         "wire": bytes.fromhex("00050102030400") + wire["log"],
         "items": [{"reason": "link_short"}, item("log")]},
        {"name": "unknown_type", "note": "type 0x0e and type 0x00 with good CRCs",
         "wire": record(0x0E, b"future") + record(0, b"") + wire["log"],
         "items": [{"reason": "link_type"}, {"reason": "link_type"}, item("log")]},
        {"name": "short_radio", "note": "a RADIO record with 8 bytes of metadata",
         "wire": record(2, bytes(8)) + wire["log"],
         "items": [{"reason": "link_radio"}, item("log")]},
        {"name": "short_tx", "note": "a TX record with 12 bytes of metadata",
         "wire": record(4, bytes(12)) + wire["log"],
         "items": [{"reason": "link_radio"}, item("log")]},
        {"name": "oversize", "note": "309 bytes without a delimiter: dropped, reported once",
         "wire": b"\x55" * 309 + wire["log"],
         "items": [{"reason": "link_oversize"}, item("log")]},
        {"name": "not_oversize", "note": "308 bytes without a delimiter are still read as "
         "a record (0x55 codes run past the end)",
         "wire": b"\x55" * 308 + wire["log"],
         "items": [{"reason": "link_cobs"}, item("log")]},
        {"name": "longest_records", "note": "bodies of 300 bytes and of an exact 254-byte run",
         "wire": wire["log_300"] + wire["log_254_run"] + wire["empty_frame_body"],
         "items": [item("log_300"), item("log_254_run"), item("empty_frame_body")]},
        {"name": "254_run_without_final_code",
         "note": "the same 254-byte run encoded without the final 0x01 decodes the same",
         "wire": b"\x00\xff" + raw254 + b"\x00",
         "items": [item("log_254_run")]},
        {"name": "no_final_delimiter",
         "note": "a record whose closing 0x00 has not come yet yields nothing",
         "wire": wire["log"] + unterminated,
         "items": [item("log")]},
    ]
    for stream in streams:
        stream["wire"] = stream["wire"].hex()
    return {
        "about": "knute link records (docs/protocol.md section 6), built by "
        "tests/vectors/make_vectors.py with zlib's CRC-32 and its own COBS. 'records' are "
        "good records: type, body and the bytes on the wire, delimiters included. 'streams' "
        "are byte streams and what a receiver makes of them, in order: a good record as "
        "its type and body, a fault as its reason (a RADIO or TX record shorter than its "
        "metadata included), whether the stream arrives at once or a byte at a time.",
        "records": records,
        "streams": streams,
    }


def vectors() -> dict[str, Any]:
    """The frames.json document."""
    return {
        "about": "knute frame v1 vectors, built by tests/vectors/make_vectors.py "
        "from docs/protocol.md with cbor2 and cryptography's AESCCM. 'frames' decode to "
        "their values; each of 'rejected' fails with its reason when decoded with its key.",
        "frames": [build(case) for case in CASES],
        "rejected": rejected(),
    }


def main() -> int:
    """Write frames.json and link.json (with --check, say whether they are up to date)."""
    stale = 0
    for name, doc in (("frames.json", vectors()), ("link.json", link())):
        text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
        target = HERE / name
        if "--check" in sys.argv:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                print(f"{name} is stale", file=sys.stderr)
                stale = 1
        else:
            target.write_text(text, encoding="utf-8")
    return stale


if __name__ == "__main__":
    sys.exit(main())
