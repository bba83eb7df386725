"""Random and mutated input everywhere frames enter: the decoders (hypothesis,
atheris), the serial and UDP sources and the pipeline (in process), and the running
gateway. Zero crashes, zero accepted forgeries, every rejection counted by reason."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knute.protocol import frame, stream
from knute.protocol.errors import FrameError
from knute.tools.bench import reliability as rel
from tests.reliability.conftest import check

KEY = bytes(range(16))
GOOD = frame.encode("water_meter", 0x1234, 7, {"index": 4242, "profile_end_h": 3,
                                                "battery": 19, "profile": [1, 2, 3]}, KEY)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decode_random_bytes_only_raises_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        frame.decode(data, KEY)


@settings(max_examples=400)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=4))
def test_no_edit_of_a_genuine_frame_verifies(edits: list[tuple[int, int]]) -> None:
    buf = bytearray(GOOD)
    for pos, value in edits:
        buf[pos] = value
    try:
        out = frame.decode(bytes(buf), KEY)
    except FrameError:
        return
    assert bytes(buf) == GOOD and out["fcnt"] == 7     # only the unedited frame verifies


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=320), max_size=6), st.binary(max_size=200),
       st.integers(1, 64))
def test_stream_framing_resynchronises_after_garbage(bodies: list[bytes], noise: bytes,
                                                     chunk: int) -> None:
    good = [b[:stream.MAX_BODY] for b in bodies]
    wire = noise + b"".join(stream.encode_record(stream.REC_FRAME, b) for b in good)
    dec = stream.StreamDecoder()
    out: list[object] = []
    for i in range(0, len(wire), chunk):
        out += dec.feed(wire[i:i + chunk])
    got = [item[1] for item in out if isinstance(item, tuple)]
    for item in out:
        assert isinstance(item, tuple | FrameError)
    # Noise may at worst produce junk records before the first delimiter; every good
    # record after it comes out intact and in order.
    assert got[len(got) - len(good):] == good


def test_twenty_thousand_mutated_frames_in_process(tmp_path: Path) -> None:
    result = rel.case_bad_input(tmp_path, frames=20_000, atheris_runs=20_000)
    check(result)
    assert result.notes.get("atheris_runs", 0) >= 20_000, result.notes
    reasons = result.notes["rejected_by_reason"]
    for reason in ("frame_tag", "frame_short", "link_crc", "pf_json", "unknown_device"):
        assert reasons.get(reason), (reason, reasons)


def test_mutated_frames_through_the_running_gateway(tmp_path: Path) -> None:
    check(rel.case_bad_input_daemon(tmp_path, frames=1500))


@pytest.mark.slow
def test_a_million_mutated_frames_and_a_million_fuzz_runs(tmp_path: Path) -> None:
    result = rel.case_bad_input(tmp_path, frames=1_000_000, atheris_runs=1_000_000)
    check(result)
    assert result.notes["atheris_runs"] >= 1_000_000


@pytest.mark.slow
def test_fifty_thousand_mutated_frames_through_the_running_gateway(tmp_path: Path) -> None:
    check(rel.case_bad_input_daemon(tmp_path, frames=50_000))
