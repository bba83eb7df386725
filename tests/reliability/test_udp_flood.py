"""A flood on the packet-forwarder port (``udp_flood``): the gateway sheds the flood, not
the legitimate frames, and its log, memory and status reply stay bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import check
from tools import bench_udp_flood as flood


def test_legitimate_frames_get_through_a_flood(tmp_path: Path) -> None:
    result = flood.case_udp_flood(tmp_path, flood_s=4.0, rate=10000.0, legit_rate=10.0)
    check(result, allow_duplicates=False)
    notes = result.notes
    # Counts, not times: every genuine frame of the baseline accepted, and of those sent
    # during the flood every one, or (if the gateway could not read every datagram and
    # the kernel dropped some) about no more lost than the kernel's share of all
    # datagrams (twice it, and one frame of bad luck).
    assert notes["legit_accepted_baseline"] == notes["legit_sent_baseline"] == 40
    assert notes["flood_sent"] > 10 * notes["legit_sent_flood"]
    lost = notes["legit_sent_flood"] - notes["legit_accepted_flood"]
    share = notes["kernel_dropped"] / (notes["flood_sent"] + 2 * notes["legit_sent_flood"])
    assert lost <= 2 * share * notes["legit_sent_flood"] + (share > 0), notes
    assert notes["log_bytes_flood"] < flood.MAX_LOG_BYTES
    assert notes["status_bytes"] < flood.MAX_STATUS_BYTES


@pytest.mark.slow
def test_legitimate_frames_get_through_a_long_flood_at_full_speed(tmp_path: Path) -> None:
    result = flood.case_udp_flood(tmp_path, flood_s=20.0)
    check(result, allow_duplicates=False)
    notes = result.notes
    lost = notes["legit_sent_flood"] - notes["legit_accepted_flood"]
    share = notes["kernel_dropped"] / (notes["flood_sent"] + 2 * notes["legit_sent_flood"])
    assert lost <= 2 * share * notes["legit_sent_flood"] + 1, notes
    assert notes["log_bytes_flood"] < flood.MAX_LOG_BYTES
