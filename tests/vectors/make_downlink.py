"""Build tests/vectors/downlink.json independently of protocol/.

Downlinks are assembled from docs/protocol.md section 12 with cbor2 (canonical
mode), cryptography's AESCCM, struct and hashlib, as make_vectors.py does for
uplinks, so they check protocol/downlink.py and firmware/downlink.py against a
second implementation. The reasons of rejected downlinks and the results of
rejected commands are assigned here by hand from the spec, never by running
knute's code. ``python tests/vectors/make_downlink.py`` rewrites the file;
``--check`` says whether the committed file is what this script produces.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

HERE = Path(__file__).parent
KEY = "000102030405060708090a0b0c0d0e0f"
NEW_KEY = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
OTHER_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
DEVICE = 0x00001234


def _header(device_id: int, dcnt: int, ctrl: int = 0x60) -> bytes:
    return struct.pack(">BI", ctrl, device_id) + dcnt.to_bytes(3, "big")


def _nonce(device_id: int, dcnt: int) -> bytes:
    return struct.pack(">BII", 1, device_id, dcnt) + bytes(4)


def _seal(device_id: int, dcnt: int, payload: bytes, key: str = KEY,
          ctrl: int = 0x60) -> bytes:
    hdr = _header(device_id, dcnt, ctrl)
    sealed = AESCCM(bytes.fromhex(key), tag_length=8).encrypt(
        _nonce(device_id, dcnt), payload, hdr)
    return hdr + sealed


def to_json(value: Any) -> Any:
    """A CBOR value as JSON: bytes as {"bytes": hex}, maps as {"map": [[key, value], ...]}."""
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, dict):
        return {"map": [[k, to_json(value[k])] for k in sorted(value)]}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


MODULE = b"# knute test module\nVERSION = 2\n"
BUNDLE_PATH = "firmware/roles/water_meter.py"


def bundle() -> bytes:
    """The bundle of section 12.8 holding MODULE at BUNDLE_PATH."""
    raw = BUNDLE_PATH.encode()
    return (bytes((len(raw),)) + raw + struct.pack(">I", len(MODULE))
            + hashlib.sha256(MODULE).digest() + MODULE)


# (name, note, device id, dcnt, key, commands)
CASES: list[tuple[str, str, int, int, str, list[Any]]] = [
    ("clock", "set the clock: uplink 7 ended at 2026-12-01 20:46:54.123 UTC",
     DEVICE, 1, KEY, [[1, 1, 7, 1796158014, 123]]),
    ("config", "four sends a day, 6-hour profile, burst at 2000 L/h",
     DEVICE, 2, KEY, [[2, 2, {1: 4, 2: 6, 3: 2000}]]),
    ("ack_alarm", "acknowledge leak (bit 0) and low battery (bit 5)",
     DEVICE, 3, KEY, [[3, 3, 0b100001]]),
    ("rekey", "phase 1 of a key rotation to key number 1",
     DEVICE, 4, KEY, [[4, 4, 1, bytes.fromhex(NEW_KEY)]]),
    ("rekey_done", "phase 2, sealed with the new key",
     DEVICE, 5, NEW_KEY, [[5, 5, 1]]),
    ("reboot", "reset the node", DEVICE, 6, KEY, [[6, 6]]),
    ("clock_and_ack", "two commands in one downlink",
     DEVICE, 7, KEY, [[7, 1, 9, 1796158614, 5], [8, 3, 1]]),
    ("upd_begin", f"start staging update 1, a bundle of {len(bundle())} bytes",
     DEVICE, 8, KEY, [[9, 7, 1, len(bundle())]]),
    ("upd_chunk_sf12", "the first 22 bundle bytes: what one chunk carries at SF10-SF12",
     DEVICE, 9, KEY, [[10, 8, 1, 0, bundle()[:22]]]),
    ("upd_switch", "check and switch to update 1",
     DEVICE, 10, KEY, [[11, 9, 1]]),
    ("long_counter", "the last downlink counter of a device with the highest id",
     0xFFFFFFFF, 0xFFFFFF, OTHER_KEY, [[65535, 6]]),
]


def build(name: str, note: str, device_id: int, dcnt: int, key: str,
          cmds: list[Any]) -> dict[str, Any]:
    """One downlink vector with its intermediate values."""
    payload = cbor2.dumps(cmds, canonical=True)
    raw = _seal(device_id, dcnt, payload, key)
    return {
        "name": name, "note": note, "device_id": device_id, "dcnt": dcnt, "key": key,
        "commands": to_json(cmds),
        "header": _header(device_id, dcnt).hex(),
        "nonce": _nonce(device_id, dcnt).hex(),
        "payload_cbor": payload.hex(),
        "frame": raw.hex(),
    }


def rejected() -> list[dict[str, Any]]:
    """Downlinks a node must drop: its device id, last accepted counter, key, reason."""
    good = _seal(DEVICE, 20, cbor2.dumps([[1, 6]]))
    flipped = bytearray(good)
    flipped[9] ^= 0x01
    out = []

    def add(name: str, frame: bytes, reason: str, last: int = 10,
            device_id: int = DEVICE) -> None:
        out.append({"name": name, "device_id": device_id, "last_dcnt": last, "key": KEY,
                    "frame": frame.hex(), "reason": reason})

    add("truncated", good[:16], "dl_short")
    add("empty", b"", "dl_short")
    add("oversize", _seal(DEVICE, 20, cbor2.dumps([[1, 8, 1, 0, bytes(205)]])), "dl_long")
    add("uplink_control", _seal(DEVICE, 20, cbor2.dumps([[1, 6]]), ctrl=0x41), "dl_format")
    add("short_tag_control", _seal(DEVICE, 20, cbor2.dumps([[1, 6]]), ctrl=0x40), "dl_format")
    add("other_device", _seal(DEVICE + 1, 20, cbor2.dumps([[1, 6]])), "dl_device")
    add("wrong_key", _seal(DEVICE, 20, cbor2.dumps([[1, 6]]), OTHER_KEY), "dl_forged")
    add("flipped_bit", bytes(flipped), "dl_forged")
    add("uplink_direction", _header(DEVICE, 20) + AESCCM(bytes.fromhex(KEY), 8).encrypt(
        struct.pack(">BII", 0, DEVICE, 20) + bytes(4), cbor2.dumps([[1, 6]]),
        _header(DEVICE, 20)), "dl_forged")
    add("replayed", good, "dl_replay", last=20)
    add("out_of_order", good, "dl_order", last=21)
    add("not_an_array", _seal(DEVICE, 20, cbor2.dumps(6)), "dl_payload")
    add("empty_list", _seal(DEVICE, 20, cbor2.dumps([])), "dl_payload")
    add("five_commands", _seal(DEVICE, 20, cbor2.dumps([[1, 6]] * 5)), "dl_payload")
    add("command_no_op", _seal(DEVICE, 20, cbor2.dumps([[1]])), "dl_payload")
    add("command_id_too_big", _seal(DEVICE, 20, cbor2.dumps([[65536, 6]])), "dl_payload")
    add("cbor_float", _seal(DEVICE, 20, bytes.fromhex("8182 01 f93c00")), "dl_payload")
    add("cbor_trailing", _seal(DEVICE, 20, cbor2.dumps([[1, 6]]) + b"\x00"), "dl_payload")
    return out


# Commands a water-meter node on a UART link (config as in "node") must reject,
# each with the report entries it sends back: id << 8 | detail << 4 | result.
NODE = {"role": "water_meter", "device_id": DEVICE, "key": KEY,
        "link": {"type": "uart"}, "water": {"sends_per_day": 4, "profile_len": 6}}
RESULTS = ("applied", "cmd_unknown", "cmd_args", "cmd_range", "cmd_key", "cmd_state",
           "cmd_hash", "cmd_stale", "cmd_order")


def _entry(cmd_id: int, result: str, detail: int = 0) -> int:
    return (cmd_id << 8) | (detail << 4) | RESULTS.index(result)


COMMAND_CASES: list[tuple[str, list[Any], list[int]]] = [
    ("config_applied", [21, 2, {4: 12}], [_entry(21, "applied")]),
    ("config_out_of_range", [22, 2, {3: 50, 4: 12}], [_entry(22, "cmd_range", 3)]),
    ("config_not_dividing_24", [23, 2, {1: 5}], [_entry(23, "cmd_range", 1)]),
    ("config_profile_too_short", [24, 2, {2: 4}], [_entry(24, "cmd_range", 2)]),
    ("config_unknown_code", [25, 2, {15: 1}], [_entry(25, "cmd_key", 15)]),
    ("config_air_key_on_water", [26, 2, {8: 600}], [_entry(26, "cmd_key", 8)]),
    ("config_radio_key_on_uart", [27, 2, {11: 9}], [_entry(27, "cmd_key", 11)]),
    ("config_two_bad", [28, 2, {3: 0, 5: 400}],
     [_entry(28, "cmd_range", 3), _entry(28, "cmd_range", 5)]),
    ("config_not_a_map", [29, 2, [1, 4]], [_entry(29, "cmd_args")]),
    ("config_negative", [30, 2, {4: -1}], [_entry(30, "cmd_range", 4)]),
    ("unknown_op", [31, 42], [_entry(31, "cmd_unknown")]),
    ("clock_without_uplink", [32, 1, 7, 1796158014, 0], [_entry(32, "cmd_stale")]),
    ("clock_ms_over_999", [33, 1, 7, 1796158014, 1000], [_entry(33, "cmd_args")]),
    ("rekey_short_key", [34, 4, 1, bytes(15)], [_entry(34, "cmd_args")]),
    ("rekey_done_none_pending", [35, 5, 1], [_entry(35, "cmd_state")]),
    ("reboot_with_argument", [36, 6, 1], [_entry(36, "cmd_args")]),
    ("chunk_before_begin", [37, 8, 1, 0, b"abc"], [_entry(37, "cmd_state")]),
    ("switch_before_begin", [38, 9, 1], [_entry(38, "cmd_state")]),
    ("begin_too_big", [39, 7, 1, 65536], [_entry(39, "cmd_range")]),
]


def commands() -> list[dict[str, Any]]:
    """Authentic downlinks whose one command the node of NODE rejects (or applies)."""
    out = []
    for pos, (name, cmd, entries) in enumerate(COMMAND_CASES):
        raw = _seal(DEVICE, 100 + pos, cbor2.dumps([cmd], canonical=True))
        out.append({"name": name, "command": to_json(cmd), "frame": raw.hex(),
                    "dcnt": 100 + pos, "report": entries})
    return out


def vectors() -> dict[str, Any]:
    """The downlink.json document."""
    data = bundle()
    return {
        "about": "knute downlink vectors, built by tests/vectors/make_downlink.py from "
                 "docs/protocol.md section 12 with cbor2, cryptography's AESCCM and hashlib. "
                 "'downlinks' decode to their commands under their key; each of 'rejected' "
                 "is dropped with its reason by a node with that device id and last accepted "
                 "counter; each of 'commands' is accepted by the node of 'node' and gives "
                 "the report entries listed.",
        "downlinks": [build(*case) for case in CASES],
        "rejected": rejected(),
        "node": NODE,
        "commands": commands(),
        "bundle": {"path": BUNDLE_PATH, "module": MODULE.hex(),
                   "sha256": hashlib.sha256(MODULE).hexdigest(), "bundle": data.hex()},
    }


def main() -> int:
    """Write downlink.json (with --check, say whether it is up to date)."""
    text = json.dumps(vectors(), indent=1) + "\n"
    path = HERE / "downlink.json"
    if "--check" in sys.argv[1:]:
        if path.read_text(encoding="utf-8") != text:
            print("stale: " + str(path), file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
