"""Forgeries, replays (after a restart, across two sources), counter resets,
device-id spoofing, keys never in logs or output, 0600 files, and the whole gateway
over TLS with a test CA and a password against Mosquitto."""

from __future__ import annotations

from pathlib import Path

from knute.tools.bench import reliability as rel
from tests.reliability.conftest import check


def test_security_over_tls(tmp_path: Path) -> None:
    result = rel.case_security(tmp_path, tls=True)
    check(result, allow_duplicates=False)
    assert result.delivered == 11


def test_key_leak_check_finds_a_key() -> None:
    key = bytes(range(16))
    assert rel.key_leaks({"log": f"oops {key.hex()} here"}, [key])
    assert rel.key_leaks({"log": "password hunter2"}, ["hunter2"])
    assert not rel.key_leaks({"log": "nothing to see"}, [key, "hunter2"])
