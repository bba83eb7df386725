"""``knute backend run`` on the database server: two consumers on one PostgreSQL database.

Two processes share a subscription group and one database (``[store] url``):
every reading is stored once, the meter's series is whole, a leak raises its
alert, each serves the web page from that database, and ``knute backend
status`` and ``export`` read it too.
A database the server refuses is one line naming it, exit status 2.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

from knute.backend.store_pg import PgStore
from knute.tools.rig.broker import Broker
from knute.tools.rig.postgres import PostgresCluster
from knute.tools.rig.wait import wait_for
from tests.backend.factory import HOUR_S, T0, reading
from tests.backend.test_backend_process import Backend, Client


def _config(tmp_path: Path, broker: Broker, url: str, client_id: str) -> Path:
    path = tmp_path / f"{client_id}.toml"
    path.write_text(f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
share_group = "backend"
[store]
url = "{url}"
[water]
evaluate_every_s = 3600
[web]
port = 0                        # side by side: any free port each
""")
    return path


def test_two_consumers_share_one_postgres_database(
        tmp_path: Path, mqtt_broker_factory: Callable[..., Broker],
        pg_cluster: PostgresCluster, knute_bin: Path) -> None:
    broker = mqtt_broker_factory("mosquitto")
    url = pg_cluster.create_database()
    consumers = [Backend(knute_bin, _config(tmp_path, broker, url, f"backend-{n}"))
                 for n in (1, 2)]
    client = Client(broker)
    store = PgStore(url)
    try:
        # 5 days of 6-hour readings with flow in every hour: a continuous-flow leak.
        docs = [reading("00000001", k, T0 + k * 6 * HOUR_S, [3.0] * 6, 3.0 * 6 * k)
                for k in range(1, 21)]
        for doc in docs:
            client.send(doc)
            client.send(doc)                              # overlapping gateways
        wait_for(lambda: sum(store.counters().get(k, 0) for k in ("stored", "duplicate"))
                 == 40, 120, "every message handled")
        assert store.count_readings() == 20 and store.counters()["duplicate"] == 20
        assert [h.litres for h in store.hours("00000001")] == [3.0] * 120
        alert = wait_for(lambda: client.alert("knute/alert/continuous_flow/00000001"), 60,
                         "the continuous-flow alert")
        assert alert["state"] == "open"
        for consumer in consumers:      # each serves the page from the shared database
            found = re.search(r"web page at (\S+)", consumer.text())
            assert found is not None, consumer.text()
            with urllib.request.urlopen(found.group(1) + "api/summary", timeout=30) as answer:
                assert json.loads(answer.read())["readings"] == 20
            with urllib.request.urlopen(found.group(1) + "api/meters/00000001",
                                        timeout=30) as answer:
                assert len(json.loads(answer.read())["hours"]) == 120
    finally:
        codes = [c.stop() for c in consumers]
        client.close()
        store.close()
    assert codes == [0, 0]
    assert all("store error" not in c.text() for c in consumers)
    status = subprocess.run([str(knute_bin), "backend", "status", "--json", "--config",
                             str(tmp_path / "backend-1.toml")], capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["readings"] == 20 and report["store"] == url
    out = tmp_path / "hours.csv"
    done = subprocess.run([str(knute_bin), "backend", "export", "hours", "--out", str(out),
                           "--config", str(tmp_path / "backend-2.toml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 121


def test_a_database_the_server_refuses_is_one_line(
        tmp_path: Path, pg_cluster: PostgresCluster, knute_bin: Path) -> None:
    config = tmp_path / "b.toml"
    config.write_text(f'[store]\nurl = "{pg_cluster.url("nowhere")}"\n')
    done = subprocess.run([str(knute_bin), "backend", "status", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "nowhere" in line and "cannot connect" in line and 'database "nowhere"' in line
