"""protocol.ccm with associated data of 2^16 - 2^8 bytes and more (RFC 3610 long form)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from knute.protocol import ccm
from knute.protocol.errors import FrameError

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
NONCE = bytes.fromhex("00000012340000000700000000")
PLAIN = bytes.fromhex("851a0001e24018c80011860002181f182d0c08")


def _aad(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


@pytest.mark.parametrize("aad_len", [0, 1, 8, 0xFEFF, 0xFF00, 0xFF01, 0x10000, 70000])
@pytest.mark.parametrize("tag_len", [4, 8])
def test_seal_equals_aesccm_on_both_sides_of_the_long_form(aad_len: int, tag_len: int) -> None:
    aad = _aad(aad_len)
    expected = AESCCM(KEY, tag_length=tag_len).encrypt(NONCE, PLAIN, aad)
    block = ccm.aes_block(KEY)
    assert ccm.seal(block, NONCE, aad, PLAIN, tag_len) == expected
    assert ccm.open_(block, NONCE, aad, expected, tag_len) == PLAIN


def test_open_rejects_a_long_aad_that_differs_in_its_last_byte() -> None:
    aad = bytearray(_aad(0xFF00))
    block = ccm.aes_block(KEY)
    sealed = ccm.seal(block, NONCE, bytes(aad), PLAIN, 8)
    aad[-1] ^= 1
    with pytest.raises(FrameError) as err:
        ccm.open_(block, NONCE, bytes(aad), sealed, 8)
    assert err.value.reason == "frame_tag"


def test_long_aad_vectors_are_what_aesccm_gives() -> None:
    # tests/protocol/upy_suite.py checks protocol.ccm against these on both runtimes.
    doc = json.loads((ROOT / "tests" / "vectors" / "ccm.json").read_text())
    assert {v["aad_len"] for v in doc["long_aad"]} >= {0xFEFF, 0xFF00}
    for v in doc["long_aad"]:
        aead = AESCCM(bytes.fromhex(v["key"]), tag_length=v["tag_len"])
        sealed = aead.encrypt(bytes.fromhex(v["nonce"]), bytes.fromhex(v["plain"]),
                              _aad(v["aad_len"]))
        assert sealed.hex() == v["sealed"]
