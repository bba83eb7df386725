"""Human descriptions of every rejection reason, for logs, CLI errors and docs."""

from __future__ import annotations

DESCRIPTIONS: dict[str, str] = {
    "cbor_truncated": "payload CBOR item runs past the end",
    "cbor_trailing": "bytes left after the payload's CBOR item",
    "cbor_unsupported": "payload uses CBOR outside the subset (tag, float, simple value)",
    "cbor_indefinite": "payload uses an indefinite-length CBOR item",
    "cbor_non_shortest": "payload CBOR integer or length not in its shortest form",
    "cbor_map_key": "payload CBOR map key not an unsigned integer, unsorted or repeated",
    "cbor_too_deep": "payload CBOR nested too deep",
    "cbor_too_long": "payload CBOR string or container too long",
    "cbor_bad_text": "payload CBOR text string is not UTF-8",
    "frame_short": "frame shorter than header and tag",
    "frame_long": "frame longer than 255 bytes",
    "frame_version": "unknown frame version",
    "frame_kind": "unknown sensor kind",
    "frame_tag": "authentication tag does not verify (wrong key, or the frame was altered)",
    "frame_fcnt": "frame counter out of range",
    "frame_device": "device id out of range",
    "key_length": "key is not 16 bytes",
    "payload_shape": "payload is not an array of the kind's fields",
    "payload_type": "a payload field has the wrong type",
    "payload_range": "a payload field is outside its range",
    "payload_missing": "a required payload field is missing",
    "payload_unknown": "a field name the kind does not have",
    "link_cobs": "link record is not valid COBS",
    "link_crc": "link record CRC-32 does not match",
    "link_short": "link record too short",
    "link_oversize": "link record longer than the limit",
    "link_type": "unknown link record type",
    "link_radio": "radio record too short for its metadata",
    "unknown_device": "device not in the registry",
    "replay": "frame counter not above the last accepted one",
    "duplicate": "same frame heard again after it was accepted",
    "counter_reset": "frame counter went back: node reset or replay, needs an operator",
    "kind_mismatch": "frame's sensor kind differs from the kind registered for the device",
    "oversize": "more than 255 bytes: no frame is that long",
    "overload": "ingest queue full: the gateway cannot keep up",
    "pf_short": "packet-forwarder datagram too short",
    "pf_version": "packet-forwarder protocol version is not 2",
    "pf_type": "unknown packet-forwarder datagram type",
    "pf_gateway": "packet forwarder's gateway EUI is not in the allowed list",
    "pf_json": "packet-forwarder JSON is not valid",
    "pf_field": "rxpk object lacks a field or has one of the wrong type",
    "pf_base64": "rxpk data is not valid base64",
    "pf_size": "rxpk size differs from the decoded data length",
    "pf_crc": "concentrator reported a CRC error (stat != 1)",
    "pf_rate": "packet-forwarder datagram dropped: its sender is over its rate",
}


def describe(reason: str) -> str:
    """``reason: description`` for a known reason, the bare reason otherwise."""
    text = DESCRIPTIONS.get(reason)
    return f"{reason}: {text}" if text else reason
