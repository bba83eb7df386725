"""Property tests of frame v1: round trips, totality, tamper and key checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.protocol import ccm, frame, kinds
from knute.protocol.errors import FrameError
from tests.budget import examples
from tests.protocol.strategies import frames_in, readings

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())["frames"]

FrameIn = tuple[str, int, int, dict[str, Any], bytes, int]


@given(frames_in)
def test_round_trip_every_kind(case: FrameIn) -> None:
    kind, device_id, fcnt, values, key, tag_len = case
    raw = frame.encode(kind, device_id, fcnt, values, key, tag_len)
    got = frame.decode(raw, key)
    assert got["kind"] == kind
    assert (got["device_id"], got["fcnt"], got["tag_len"]) == (device_id, fcnt, tag_len)
    assert got["values"] == values
    assert frame.parse_header(raw) == (kinds.kind_id(kind), device_id, fcnt, tag_len)


# Each example flips every bit of its frame, one at a time (152 to 800 decodes for
# frames of 19 to 100 bytes). The classes the property depends on are the kind (2),
# the tag length (2) and the frame length: the 60 examples of the derandomized CI run
# hold every kind and tag length pair at least 7 times and frames of 19 to 100 bytes,
# 19,480 flipped frames. 300 examples (84,000 decodes) made this one test the pure
# tier's longest by far.
@settings(max_examples=60)
@given(frames_in)
def test_any_single_bit_flip_is_rejected(case: FrameIn) -> None:
    kind, device_id, fcnt, values, key, tag_len = case
    raw = frame.encode(kind, device_id, fcnt, values, key, tag_len)
    for bit in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FrameError):
            frame.decode(bytes(bad), key)


@given(frames_in, st.binary(min_size=16, max_size=16))
def test_wrong_key_is_rejected(case: FrameIn, other: bytes) -> None:
    kind, device_id, fcnt, values, key, tag_len = case
    if other == key:
        other = bytes(b ^ 1 for b in key)
    raw = frame.encode(kind, device_id, fcnt, values, key, tag_len)
    with pytest.raises(FrameError) as err:
        frame.decode(raw, other)
    assert err.value.reason == "frame_tag"


@settings(max_examples=1000)
@given(st.binary(max_size=80), st.binary(min_size=16, max_size=16))
def test_decode_is_total(data: bytes, key: bytes) -> None:
    try:
        got = frame.decode(data, key)
    except FrameError as err:
        assert isinstance(err.reason, str) and err.reason
    else:  # only possible by forging a tag: 2^-32 per try
        assert isinstance(got, dict)


# Two kinds, two tag lengths, and a cut anywhere in header, payload or tag: 100
# fixed examples put cuts in each part of each kind's frames many times (each
# example encrypts a frame in pure Python, so 300 cost 4 s of CPU). Nightly: 2,000.
@settings(max_examples=examples(ci=100, nightly=2000))
@given(frames_in, st.data())
def test_mutated_frames_fail_with_a_reason(case: FrameIn, data: st.DataObject) -> None:
    kind, device_id, fcnt, values, key, tag_len = case
    raw = bytearray(frame.encode(kind, device_id, fcnt, values, key, tag_len))
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(FrameError):
        frame.decode(bytes(raw[:cut]), key)
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(FrameError):
        frame.decode(bytes(raw) + extra, key)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=13, max_size=13),
       st.binary(max_size=40), st.binary(max_size=300), st.sampled_from([4, 8]))
def test_pure_ccm_equals_cryptography_aesccm(
    key: bytes, nonce: bytes, aad: bytes, plain: bytes, tag_len: int
) -> None:
    sealed = ccm.seal(ccm.aes_block(key), nonce, aad, plain, tag_len)
    assert sealed == AESCCM(key, tag_length=tag_len).encrypt(nonce, plain, aad)
    assert ccm.open_(ccm.aes_block(key), nonce, aad, sealed, tag_len) == plain


@given(frames_in)
def test_gateway_style_decrypt_matches_pure_path(case: FrameIn) -> None:
    kind, device_id, fcnt, values, key, tag_len = case
    raw = frame.encode(kind, device_id, fcnt, values, key, tag_len)
    kid, dev, cnt, tlen = frame.parse_header(raw)
    plain = AESCCM(key, tag_length=tlen).decrypt(
        frame.nonce(dev, cnt), raw[frame.HEADER_LEN:], raw[: frame.HEADER_LEN]
    )
    assert frame.open_payload(kid, plain) == frame.decode(raw, key)["values"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vectors(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(vector["key"])
    raw = frame.encode(vector["kind"], vector["device_id"], vector["fcnt"], vector["values"],
                       key, vector["tag_len"])
    assert raw.hex() == vector["frame"]
    assert frame.header(kinds.kind_id(vector["kind"]), vector["device_id"], vector["fcnt"],
                        vector["tag_len"]).hex() == vector["header"]
    assert frame.nonce(vector["device_id"], vector["fcnt"]).hex() == vector["nonce"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "frame_short"),
        (bytes.fromhex("41000012340000"), "frame_short"),
        (bytes.fromhex("4100001234000007aabbcc"), "frame_short"),
        (bytes.fromhex("0100001234000007aabbccddee"), "frame_version"),
        (bytes.fromhex("c100001234000007aabbccddee"), "frame_version"),
        (bytes.fromhex("5f00001234000007aabbccddee"), "frame_kind"),
        (bytes.fromhex("4000001234000007aabbccddee"), "frame_kind"),
        (bytes(256), "frame_long"),
        (bytes.fromhex("4100001234000007aabbccddee"), "frame_tag"),
    ],
)
def test_header_rejections(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        frame.decode(raw, bytes(16))
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"index": 1, "profile_end_h": 0, "battery": 3}, "payload_missing"),
        ({"index": -1, "profile_end_h": 0, "battery": 3, "profile": [1]}, "payload_range"),
        ({"index": 1, "profile_end_h": 256, "battery": 3, "profile": [1]}, "payload_range"),
        ({"index": 1, "profile_end_h": 0, "battery": 3, "profile": []}, "payload_range"),
        ({"index": 1, "profile_end_h": 0, "battery": 3, "profile": [1] * 25}, "payload_range"),
        ({"index": 1, "profile_end_h": 0, "battery": 3, "profile": [1], "alarms": 64},
         "payload_range"),
        ({"index": 1, "profile_end_h": 0, "battery": 3, "profile": [1], "colour": 2},
         "payload_unknown"),
        ({"index": None, "profile_end_h": 0, "battery": 3, "profile": [1]}, "payload_missing"),
        ({"index": True, "profile_end_h": 0, "battery": 3, "profile": [1]}, "payload_type"),
    ],
)
def test_encoder_checks_values_against_the_table(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(FrameError) as err:
        frame.encode("water_meter", 1, 1, values, bytes(16))
    assert err.value.reason == reason


def _sealed_payload(kind_id: int, payload: bytes) -> bytes:
    key = bytes(16)
    hdr = frame.header(kind_id, 5, 9, 4)
    return hdr + AESCCM(key, tag_length=4).encrypt(frame.nonce(5, 9), payload, hdr)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("a0", "payload_shape"),                       # a map, not an array
        ("80", "payload_missing"),                     # empty array
        ("880102030405060708", "payload_shape"),       # 8 elements (max 7)
        ("8501000003f6", "payload_type"),              # profile null
        ("850100000381f5", "payload_type"),            # profile element true
        ("850100001581", "cbor_truncated"),
        ("8501000003810000", "cbor_trailing"),
        ("85010000158100", "payload_range"),           # battery 21 > 20
    ],
)
def test_payload_rejections_inside_a_valid_envelope(payload: str, reason: str) -> None:
    raw = _sealed_payload(1, bytes.fromhex(payload))
    with pytest.raises(FrameError) as err:
        frame.decode(raw, bytes(16))
    assert err.value.reason == reason


def test_optional_fields_may_be_left_off_and_nullable_may_be_null() -> None:
    key = bytes(16)
    air = {"pm1": None, "pm2_5": None, "pm10": None, "temperature": -400, "humidity": 0,
           "pressure": 3000, "status": 1}
    assert frame.decode(frame.encode("air_quality", 1, 1, air, key), key)["values"] == air


def _field(kind_id: int, name: str) -> dict[str, Any]:
    field = kinds.field_by_name(kinds.KINDS[kind_id], name)
    assert field is not None
    return field


def test_scaled_readings() -> None:
    assert kinds.scaled(_field(2, "temperature"), -35) == -3.5
    assert kinds.scaled(_field(2, "pm2_5"), 120) == 12
    assert kinds.scaled(_field(1, "battery"), 17) == 85
    assert kinds.bit_names(_field(1, "alarms"), 0b100001) == ["leak", "low_battery"]


@given(readings("water_meter"))
def test_encoder_output_fits_the_lora_limit(values: dict[str, Any]) -> None:
    raw = frame.encode("water_meter", 1, 1, values, bytes(16))
    assert len(raw) <= frame.MAX_FRAME
