"""``knute demo --for N --json``: the whole path with a broker outage, nothing lost."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from knute.backend import config as backend_config
from knute.backend import queries
from knute.backend.store_sqlite import Store
from knute.tools.cli.demo import DEMO_LOSSES


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
                            "downlinks_sent", "downlinks_applied",
                            "air_index", "display_colour"}
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
    # + the firmware meters and the districts' two inlets
    assert backend["bad"] == 0 and backend["meters"] == 30 + 2 + 2
    assert backend["url"].startswith("http://127.0.0.1:")
    assert f"the backend's web page is at {backend['url']}" in result.stderr
    _districts_balance(tmp_path / "run" / "backend")
    log = (tmp_path / "run" / "broker" / "mosquitto.log")
    if log.exists():  # the staged outage really stopped and restarted the broker
        assert log.read_text().count("--- start") == 2


def _districts_balance(backend_dir: Path) -> None:
    """Each district's complete hours lose what its pipes lose in the model, to the litre."""
    config = backend_config.load(next(backend_dir.glob("*.toml")))
    store = Store(config.store_path)
    try:
        assert [d.name for d in config.districts] == ["sentrum", "nord"]
        complete = 0
        for district, (share, fixed) in zip(config.districts, DEMO_LOSSES, strict=True):
            hours = [h.start for d in district.households for h in store.hours(d)]
            balances = queries.district_balances(store, district, min(hours), max(hours) + 1)
            for b in balances:
                if b.complete:
                    complete += 1
                    assert b.loss_l is not None
                    assert fixed - 0.5 <= b.loss_l <= fixed + share * b.households_l + 0.5, b
        assert complete > 0
    finally:
        store.close()
