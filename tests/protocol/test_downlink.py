"""Downlink frames (protocol/downlink.py): vectors on both interpreters, sizes, totality."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.protocol import cbor, frame
from knute.protocol import downlink as dl
from knute.protocol.errors import FrameError

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
KEY = bytes(range(16))


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_suite_prints_the_same_on_micropython_and_cpython(micropython_bin: Path) -> None:
    suite = "tests/protocol/upy_downlink_suite.py"
    upy = _run([str(micropython_bin), suite])
    cpy = _run([sys.executable, suite])
    assert cpy.returncode == 0, cpy.stdout + cpy.stderr
    assert upy.returncode == 0, upy.stdout + upy.stderr
    assert upy.stdout == cpy.stdout
    assert "failures 0" in upy.stdout
    assert "2400 bit flips rejected" in upy.stdout


def test_vector_file_is_reproducible_from_the_independent_generator() -> None:
    result = _run([sys.executable, str(VECTORS / "make_downlink.py"), "--check"])
    assert result.returncode == 0, (
        result.stderr + "downlink.json is stale: rerun tests/vectors/make_downlink.py")


def test_every_frame_reason_has_a_rejected_vector() -> None:
    doc = json.loads((VECTORS / "downlink.json").read_text())
    have = {v["reason"] for v in doc["rejected"]}
    assert set(dl.DL_REASONS) == have


def test_every_command_but_a_chunk_fits_51_bytes_with_its_largest_arguments() -> None:
    top = 0xFFFF
    cmds: list[list[Any]] = [
        dl.clock(top, 0xFFFFFF, 0xFFFFFFFF, 999),
        dl.config(top, {row[0]: row[4] for row in dl.CONFIG_KEYS[:4]}),
        dl.config(top, {3: 0xFFFFFF, 6: 100000, 8: 86400, 13: 868500000}),
        dl.ack_alarm(top, 0xFF),
        dl.rekey(top, top, bytes(16)),
        dl.rekey_done(top, top),
        dl.reboot(top),
        dl.upd_begin(top, top, dl.MAX_BUNDLE),
        dl.upd_switch(top, top),
    ]
    for cmd in cmds:
        raw = dl.encode(0xFFFFFFFF, dl.MAX_DCNT, [cmd], KEY)
        assert len(raw) <= 51, (cmd, len(raw))
    for sf, room in dl.EU868_MAX_PAYLOAD.items():
        chunk = dl.upd_chunk(top, top, top, bytes(dl.chunk_capacity(sf)))
        assert len(dl.encode(1, 1, [chunk], KEY)) == room
        bigger = dl.upd_chunk(top, top, top, bytes(dl.chunk_capacity(sf) + 1))
        if room < dl.MAX_DOWNLINK:
            assert len(dl.encode(1, 1, [bigger], KEY)) > room
        else:
            with pytest.raises(FrameError, match="dl_long"):
                dl.encode(1, 1, [bigger], KEY)


def test_the_nodes_private_numbers_are_the_public_ones() -> None:
    # A node holds the numbers as `_NAME = const(...)` (no RAM); the public
    # names are protocol.downlink_send's. Each twin must agree.
    from firmware import downlink as node_downlink
    from firmware import downlink_model, downlink_update
    from knute.protocol import downlink_send

    twins = 0
    for module in (dl, node_downlink, downlink_model, downlink_update):
        for name, value in vars(module).items():
            public = getattr(downlink_send, name[1:], None)
            if name.startswith("_") and name[1:].isupper() and isinstance(public, int):
                assert value == public, (module.__name__, name)
                twins += 1
    assert twins >= 40


def test_downlink_and_uplink_nonces_never_meet() -> None:
    for dev, cnt in ((0, 0), (0x1234, 7), (0xFFFFFFFF, 0xFFFFFF)):
        assert dl.nonce(dev, cnt) != frame.nonce(dev, cnt)
        assert dl.nonce(dev, cnt)[0] == 1 and frame.nonce(dev, cnt)[0] == 0


def test_an_uplink_decoder_rejects_a_downlink_and_the_other_way_round() -> None:
    down = dl.encode(0x1234, 5, [dl.reboot(1)], KEY)
    try:
        frame.decode(down, KEY)
    except FrameError as err:
        assert err.reason == "frame_kind"
    else:
        raise AssertionError("an uplink decoder accepted a downlink")
    up = frame.encode("water_meter", 0x1234, 5, {"index": 1, "profile_end_h": 1,
                                                  "battery": 1, "profile": [1]}, KEY, 8)
    try:
        dl.decode(up, KEY)
    except FrameError as err:
        assert err.reason == "dl_format"
    else:
        raise AssertionError("a downlink decoder accepted an uplink")


commands = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255),
              st.lists(st.integers(0, 2**32) | st.binary(max_size=20), max_size=3))
    .map(lambda t: [t[0], t[1], *t[2]]),
    min_size=1, max_size=4)


@settings(max_examples=200)
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, dl.MAX_DCNT), commands)
def test_round_trip_and_agreement_with_aesccm(device_id: int, dcnt: int,
                                               cmds: list[list[Any]]) -> None:
    try:
        raw = dl.encode(device_id, dcnt, cmds, KEY)
    except FrameError as err:
        assert err.reason == "dl_long"
        return
    assert dl.decode(raw, KEY) == {"device_id": device_id, "dcnt": dcnt, "commands": cmds}
    plain = AESCCM(KEY, tag_length=8).decrypt(dl.nonce(device_id, dcnt), raw[8:], raw[:8])
    assert dl.commands(plain) == cmds


@settings(max_examples=300)
@given(st.binary(max_size=260))
def test_decode_is_total(data: bytes) -> None:
    try:
        dl.decode(data, KEY)
    except FrameError as err:
        assert err.reason in dl.DL_REASONS
    # A sealed payload of arbitrary bytes: authentic, so only dl_payload may refuse it.
    if len(data) <= 200:
        raw = dl.header(1, 1) + AESCCM(KEY, tag_length=8).encrypt(
            dl.nonce(1, 1), data or b"\x00", dl.header(1, 1))
        try:
            dl.decode(raw, KEY)
        except FrameError as err:
            assert err.reason == "dl_payload"


@settings(max_examples=400)
@given(st.binary(max_size=40) | commands.map(lambda c: cbor2.dumps(c, canonical=True)))
def test_the_command_decoder_is_a_strict_subset_of_the_cbor_decoder(data: bytes) -> None:
    # protocol.downlink reads commands with its own small decoder: whatever it
    # accepts, the full decoder (protocol.cbor_decode) accepts with the same value.
    try:
        cmds = dl.commands(data)
    except FrameError as err:
        assert err.reason == "dl_payload"
        return
    assert cbor.decode(data) == cmds
    assert cbor2.loads(data) == cmds
