"""``knute demo --for N --json``: the whole path with a broker outage, nothing lost."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def test_headless_demo_loses_nothing_across_a_broker_outage(
    knute_bin: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(knute_bin), "demo", "--for", "12", "--json", "--meters", "30", "--air", "4",
         "--speed", "3600", "--workdir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"sent", "received", "lost", "duplicates", "alarms", "backend",
                            "downlinks_sent", "downlinks_applied"}
    print(f"downlinks sent {summary['downlinks_sent']}, applied "
          f"{summary['downlinks_applied']}")
    # The clock and the setting queued for the first firmware board leave after its
    # first uplink (a board asking for the time gets its answer too); the board's
    # next uplink reports both applied.
    assert summary["downlinks_sent"] >= 1
    assert summary["downlinks_applied"] >= 2
    assert summary["sent"] > 50
    assert summary["lost"] == 0
    # Every valid frame arrived; a firmware node may have sent one more as it stopped.
    assert summary["received"] >= summary["sent"]
    # The city's backend ran beside it: it stored each reading once and served its page.
    backend = summary["backend"]
    assert backend["readings"] == summary["received"]
    assert backend["bad"] == 0 and backend["meters"] == 30 + 2     # + the firmware meters
    assert backend["url"].startswith("http://127.0.0.1:")
    assert f"the backend's web page is at {backend['url']}" in result.stderr
    log = (tmp_path / "run" / "broker" / "mosquitto.log")
    if log.exists():  # the staged outage really stopped and restarted the broker
        assert log.read_text().count("--- start") == 2
