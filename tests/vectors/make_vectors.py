"""Build tests/vectors/frames.json independently of protocol/.

The frames are assembled from docs/protocol.md with cbor2 (canonical mode),
cryptography's AESCCM and struct, so they check protocol/ against a second
implementation. ``python tests/vectors/make_vectors.py`` rewrites the file;
tests/protocol/test_vectors.py checks that the committed file is what this
script produces.
"""

from __future__ import annotations

import json
import struct
import sys
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


def vectors() -> dict[str, Any]:
    """The whole vectors document."""
    return {
        "about": "knute frame v1 vectors, built by tests/vectors/make_vectors.py "
        "from docs/protocol.md with cbor2 and cryptography's AESCCM",
        "frames": [build(case) for case in CASES],
    }


def main() -> int:
    """Write frames.json (or, with --check, say whether it is up to date)."""
    text = json.dumps(vectors(), indent=1, ensure_ascii=False) + "\n"
    target = HERE / "frames.json"
    if "--check" in sys.argv:
        return 0 if target.read_text(encoding="utf-8") == text else 1
    target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
