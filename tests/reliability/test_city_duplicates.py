"""Where ``cross_gateway_replay``'s duplicates came from: the drain itself.

The case never cuts gateway A's broker link, yet the backend saw about ten
readings twice. ``Rig.drain`` switched the fault relay to ``relay`` although it
was relaying already, and a switch resets every open connection: A lost its
MQTT connection with rows in flight and sent them again (same id, same bytes).
A drain now leaves a relaying link alone, so a case without a fault has no
duplicates and A's log no lost connection.
"""

from __future__ import annotations

from pathlib import Path

from knute.tools.bench import reliability as rel
from tests.reliability.conftest import check


def test_a_case_without_a_fault_has_no_duplicates(tmp_path: Path) -> None:
    result = rel.case_cross_gateway_replay(tmp_path, frames=100)
    check(result)
    log = (tmp_path / "gateway" / "gateway.log").read_text()
    assert "connection lost" not in log
    assert result.delivered >= 100 and result.duplicates == 0, result
