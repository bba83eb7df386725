"""The committed vector files: what their independent generator builds, and what knute does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from knute.gateway.pipeline_checks import Verifier
from knute.gateway.registry import Device
from knute.protocol import frame, stream
from knute.protocol.errors import FrameError

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _reasons_where(*places: str) -> set[str]:
    # The reasons of docs/protocol.md's table (section 9) whose "where" is one of places.
    table = DOC.split("## 9. Error reasons", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", table, flags=re.M)
    return {reason for reason, where in rows if where in places}


def test_vector_files_are_reproducible_from_the_independent_generator() -> None:
    result = subprocess.run(
        [sys.executable, str(VECTORS / "make_vectors.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, (
        result.stderr + "tests/vectors/ is stale: rerun tests/vectors/make_vectors.py")


def test_every_decoding_reason_has_a_rejected_frame() -> None:
    # Receiver-state reasons (unknown_device, replay, ...) need a registry, not bytes;
    # encoder-only reasons are never met by a decoder.
    have = {v["reason"] for v in _load("frames.json")["rejected"]}
    wanted = _reasons_where("frame", "payload")
    assert {"frame_short", "frame_long", "frame_version", "frame_kind", "frame_tag"} <= wanted
    assert wanted <= have, sorted(wanted - have)


def test_every_link_reason_has_a_stream_fault() -> None:
    have = {item["reason"] for s in _load("link.json")["streams"] for item in s["items"]
            if "reason" in item}
    wanted = _reasons_where("link")
    assert len(wanted) == 6
    assert wanted <= have, sorted(wanted - have)


@pytest.mark.parametrize("vector", _load("frames.json")["rejected"], ids=lambda v: v["name"])
def test_rejected_frame_has_its_reason_in_protocol_and_gateway(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["frame"])
    key = bytes.fromhex(vector["key"])
    with pytest.raises(FrameError) as err:
        frame.decode(raw, key)
    assert err.value.reason == vector["reason"]
    # The gateway's own path (parse_header, then cryptography's AESCCM) agrees.
    with pytest.raises(FrameError) as err:
        Verifier().verify(raw, Device(device_id=0x1234, kind="water_meter", key=key))
    assert err.value.reason == vector["reason"]


def _receive(decoder: stream.StreamDecoder, data: bytes) -> list[Any]:
    out: list[Any] = []
    for item in decoder.feed(data):
        if isinstance(item, FrameError):
            out.append({"reason": item.reason})
            continue
        if item[0] in (stream.REC_RADIO, stream.REC_TX):
            try:
                if item[0] == stream.REC_RADIO:
                    stream.unpack_radio(item[1])
                else:
                    stream.unpack_tx(item[1])
            except FrameError as err:
                out.append({"reason": err.reason})
                continue
        out.append({"type": item[0], "body": item[1].hex()})
    return out


@pytest.mark.parametrize("vector", _load("link.json")["streams"], ids=lambda v: v["name"])
def test_stream_gives_its_records_and_faults(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["wire"])
    assert _receive(stream.StreamDecoder(), wire) == vector["items"]
    decoder = stream.StreamDecoder()
    bytewise = [item for i in range(len(wire)) for item in _receive(decoder, wire[i:i + 1])]
    assert bytewise == vector["items"]


@pytest.mark.parametrize("vector", _load("link.json")["records"], ids=lambda v: v["name"])
def test_record_encodes_to_its_wire_bytes(vector: dict[str, Any]) -> None:
    body = bytes.fromhex(vector["body"])
    wire = stream.encode_record(vector["type"], body)
    assert wire.hex() == vector["record"]
    assert stream.decode_record(wire[1:-1]) == (vector["type"], body)
    if "tx" in vector:
        tx = vector["tx"]
        payload = bytes.fromhex(tx["payload"])
        assert stream.unpack_tx(body) == (tx["at_ms"], tx["freq_hz"], tx["sf"], payload)
        assert stream.pack_tx(tx["at_ms"], tx["freq_hz"], tx["sf"], payload) == body
