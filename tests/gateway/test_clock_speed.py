"""``[gateway] clock_speed``: a simulation's gateway stamps receptions on the fleet's clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from knute.gateway import config
from knute.gateway.errors import KnuteError
from knute.gateway.message import iso_utc
from knute.gateway.registry import Registry
from knute.protocol import frame
from knute.tools.rig.gateway import GatewayProcess, status_and_broker
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from knute.tools.sim.pktfwd import ForwarderClient, rxpk
from tests.conftest import Broker, free_port

KEY = bytes(range(16))
DEVICE = 0x11000001
MINIMAL = '[gateway]\nid = "gw1"\n{extra}\n[[serial]]\nname = "bridge"\nurl = "tty0"\n'


def _load(tmp_path: Path, extra: str) -> config.GatewayConfig:
    path = tmp_path / "gw.toml"
    path.write_text(MINIMAL.format(extra=extra))
    return config.load(str(path))


def test_clock_defaults_to_the_wall_clock(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert cfg.clock_speed == 1.0 and cfg.clock_start is None
    cfg = _load(tmp_path, "clock_speed = 1800\nclock_start = 1764676800.5")
    assert cfg.clock_speed == 1800.0 and cfg.clock_start == 1764676800.5


@pytest.mark.parametrize(("extra", "problem"), [
    ("clock_speed = 0.5", "gateway.clock_speed: must be 1..1e+06"),
    ("clock_speed = 'fast'", "gateway.clock_speed: must be an integer or a number"),
    ("clock_start = -1", "gateway.clock_start: must be 0..1e+11"),
])
def test_clock_mistakes_are_one_line(tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(KnuteError) as err:
        _load(tmp_path, extra)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_received_at_runs_on_the_simulated_clock(mosquitto: Broker, tmp_path: Path) -> None:
    # The simulation started an hour ago (wall clock) and runs 100 times faster:
    # a frame heard now is stamped about 100 hours after its start.
    start = time.time() - 3600.0
    reg = Registry(str(tmp_path / "registry.db"))
    reg.add(DEVICE, "air_quality", KEY)
    reg.close()
    udp_port = free_port()
    gateway = GatewayProcess(tmp_path / "gw")
    gateway.write_config(f"""
[gateway]
id = "sim"
data_dir = "{tmp_path}"
clock_speed = 100
clock_start = {start}

{status_and_broker(gateway.status_socket, mosquitto.host, mosquitto.port, "city")}

[[packet_forwarder]]
name = "conc"
listen = "127.0.0.1:{udp_port}"
""")
    watch = Subscriber(mosquitto.host, mosquitto.port, "city/+/+/up")
    conc = ForwarderClient(bytes.fromhex("aa555a0000000301"), "127.0.0.1", udp_port)
    try:
        gateway.start()
        buf = frame.encode("air_quality", DEVICE, 1, {"pm2_5": 120, "status": 0}, KEY)
        before = time.time()
        conc.push([rxpk(buf, rssi_dbm=-90, lsnr_db=5.0, sf=7, freq_mhz=868.1, chan=0)])
        wait_for(lambda: bool(watch.messages()), 20, "the reading")
        after = time.time()
        stamped = watch.messages()[0].doc()["received_at"]
        low, high = start + (before - 1 - start) * 100, start + (after + 1 - start) * 100
        assert iso_utc(low) <= stamped <= iso_utc(high)
        assert stamped > iso_utc(after + 98 * 3600)
    finally:
        conc.close()
        watch.close()
        gateway.stop()
        gateway.close()
