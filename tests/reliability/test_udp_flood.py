"""A flood on the packet-forwarder port (``udp_flood``): the gateway sheds the flood, not
the legitimate frames, and its log, memory and status reply stay bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from knute.tools.bench.reliability import udp_flood as flood
from tests.reliability.conftest import check


def test_legitimate_frames_get_through_a_flood(tmp_path: Path) -> None:
    result = flood.case_udp_flood(tmp_path, flood_s=4.0, rate=10000.0, legit_rate=10.0)
    check(result, allow_duplicates=False)
    notes = result.notes
    # Counts, not times. Every genuine frame of the baseline is accepted. During the
    # flood the kernel may drop datagrams when the gateway is short of CPU (it chooses
    # which, so that share varies from run to run), but every genuine frame the gateway
    # read (it acknowledged the PUSH_DATA) is accepted: the gateway sheds the flood, never
    # the legitimate traffic it has seen.
    assert notes["legit_accepted_baseline"] == notes["legit_sent_baseline"] == 40
    assert notes["flood_sent"] > 10 * notes["legit_sent_flood"]
    assert notes["legit_accepted_flood"] == notes["legit_read_flood"], notes
    assert notes["log_bytes_flood"] < flood.MAX_LOG_BYTES
    assert notes["status_bytes"] < flood.MAX_STATUS_BYTES


@pytest.mark.slow
def test_legitimate_frames_get_through_a_long_flood_at_full_speed(tmp_path: Path) -> None:
    result = flood.case_udp_flood(tmp_path, flood_s=20.0)
    check(result, allow_duplicates=False)
    notes = result.notes
    assert notes["legit_accepted_flood"] == notes["legit_read_flood"], notes
    assert notes["log_bytes_flood"] < flood.MAX_LOG_BYTES
