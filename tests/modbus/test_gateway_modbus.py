"""Modbus devices in the gateway: ``knute gateway run`` polling ``knute modbus-sim``
over TCP and RTU (a pty), publishing to a real broker; the ``[modbus]`` config table."""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.gateway import config
from knute.gateway.conditions import condition_row
from knute.gateway.errors import EXIT_CONFIG, KnuteError
from knute.gateway.modbus.link import LINK_REASONS
from knute.gateway.modbus.poller import DeviceCondition
from knute.gateway.spool import Accepted, Spool
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker, free_port
from tests.modbus.conftest import SimFactory

ROOT = Path(__file__).resolve().parents[2]
READING = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs/schema/reading.schema.json").read_text()))
CONDITION = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs/schema/condition.schema.json").read_text()))
PREFIX = "t"
TCP_DEV = 0x1000A001        # water meter, unit 1 of the TCP simulator
RTU_DEV = 0x1000A005        # water meter, unit 5 of the RTU simulator (pty)
STRANGER = 0x1000A002       # air station, unit 2 of the TCP simulator, not registered


# ---------------------------------------------------------------- the [modbus] table

MODBUS_TOML = """
[gateway]
id = "gw1"
[modbus]
state_file = "state/modbus.json"
[[modbus.bus]]
name = "plant"
tcp = "127.0.0.1:5020"
[[modbus.device]]
bus = "plant"
unit_id = 3
device_id = "0x1000a003"
map = "generic_water_meter"
interval_s = 30
"""


def write(tmp_path: Path, text: str) -> str:
    """A config file in ``tmp_path``."""
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return str(path)


def test_modbus_table_alone_is_a_source(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MODBUS_TOML))
    assert cfg.modbus is not None
    (dev,) = cfg.modbus.devices
    assert (dev.device_id, dev.unit_id, dev.interval_s, dev.map.kind) == (
        0x1000A003, 3, 30.0, "water_meter")
    assert cfg.modbus.buses[0].tcp == ("127.0.0.1", 5020)
    assert cfg.modbus.state_file == str(tmp_path / "state/modbus.json")
    assert cfg.source_names == ["modbus"]
    assert config.load(write(tmp_path, "[gateway]\nid = 'gw1'\n[[serial]]\nname = 'a'\n"
                             "url = 'tty0'\n")).modbus is None


def test_commented_modbus_example_parses() -> None:
    path = ROOT / "gateway.example.toml"
    head, mark, tail = path.read_text().partition("# [modbus]")
    assert mark, "gateway.example.toml has no commented [modbus] example"
    lines = [line[2:] if line.startswith("# ") else "" if line == "#" else line
             for line in (mark + tail).splitlines()]
    cfg = config.parse(tomllib.loads(head + "\n".join(lines)), str(path))
    assert cfg.modbus is not None and len(cfg.modbus.buses) == 2
    assert cfg.source_names == ["bridge-north", "concentrator", "modbus"]


@pytest.mark.parametrize(("edit", "message"), [
    (("unit_id = 3", "unit_id = 300"), r"modbus\.device\[0\]\.unit_id: must be an integer"),
    (("interval_s = 30", "interval_s = 30\ncolour = 1"), r"modbus\.device\[0\]\.colour: unknown"),
    (("[modbus]", "[modbus]\noffline_afterr = 2"), r"modbus\.offline_afterr: unknown key"),
    (('map = "generic_water_meter"', 'map = "nosuch.toml"'), r"nosuch\.toml: cannot read"),
    (('map = "generic_water_meter"', 'map = "nosuch_meter"'),
     r"modbus\.device\[0\]\.map: 'nosuch_meter' is neither a \.toml file nor a shipped "
     r"register map \(shipped: bulk_water_meter, generic_air_station, generic_water_meter\)"),
])
def test_modbus_table_errors_name_file_and_key(tmp_path: Path, edit: tuple[str, str],
                                              message: str) -> None:
    path = write(tmp_path, MODBUS_TOML.replace(*edit))
    with pytest.raises(KnuteError, match=message) as info:
        config.load(path)
    assert str(info.value).startswith(path) or "nosuch" in str(info.value)


def test_map_error_stops_the_gateway_with_file_and_line(tmp_path: Path,
                                                        knute_bin: Path) -> None:
    bad_map = tmp_path / "acme.toml"
    shipped = (ROOT / "gateway/modbus/maps/generic_water_meter.toml").read_text()
    bad_map.write_text(shipped.replace('type = "u64"', 'type = "u33"'))
    line = next(n for n, text in enumerate(shipped.splitlines(), 1)
                if text.startswith('type = "u64"'))
    path = write(tmp_path, MODBUS_TOML.replace('map = "generic_water_meter"',
                                               'map = "acme.toml"'))
    out = subprocess.run([str(knute_bin), "gateway", "run", "--config", path],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == EXIT_CONFIG      # a bad file: no restart loop
    assert f"{bad_map}:{line}: registers.index.type" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_modbus_source_name_is_taken_and_table_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, MODBUS_TOML + "[[serial]]\nname = 'modbus'\nurl = 'tty0'\n")
    with pytest.raises(KnuteError, match=r"source name 'modbus' is used twice"):
        config.load(path)
    path = write(tmp_path, "modbus = 1\n[gateway]\nid = 'gw1'\n")
    with pytest.raises(KnuteError, match=r"gw\.toml: modbus: must be a table, got 1$"):
        config.load(path)


def test_condition_example_in_docs_matches_the_schema() -> None:
    text = (ROOT / "docs/mqtt.md").read_text()
    _, mark, rest = text.partition("Example, `knute/water_meter/1000a003/condition`:")
    assert mark, "docs/mqtt.md lost its condition example"
    doc = json.loads(rest.split("```", 2)[1])
    CONDITION.validate(doc)
    assert doc["condition"] == "offline"


def test_condition_row_is_schema_valid_and_leaves_counters_alone(tmp_path: Path) -> None:
    change = DeviceCondition(TCP_DEV, "offline", "timeout", "no answer within 0.5 s",
                             1_767_225_600.25, 3, "plant", 7, "water_meter")
    row = condition_row(change, prefix="city", gateway_id="gw1")
    assert row.topic == f"city/water_meter/{TCP_DEV:08x}/condition"
    doc = json.loads(row.payload)
    CONDITION.validate(doc)
    assert doc["since"] == "2026-01-01T00:00:00.250Z" and doc["gateway"] == "gw1"
    assert (row.fcnt, row.alarm, row.received_at) == (0, True, change.since)
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 20, max_age_s=1e9)
    try:
        spool.accept([Accepted(TCP_DEV, 5, "water_meter", "city/water_meter/x/up", b"{}",
                               False, change.since)])
        spool.accept([row, condition_row(DeviceCondition(
            RTU_DEV, "online", None, None, change.since, 0, "rs485", 5, "water_meter"),
            prefix="city", gateway_id="gw1")])
        assert spool.counters() == {TCP_DEV: 5, RTU_DEV: 0}
        assert [r.topic for r in spool.pending(10)][1:] == [
            row.topic, f"city/water_meter/{RTU_DEV:08x}/condition"]
    finally:
        spool.close()


# ---------------------------------------------------------------- end to end

def ups(sub: Subscriber, dev: int) -> list[dict[str, Any]]:
    """A water meter's readings so far, first copies only."""
    return sub.first_copies(topic=up(dev))


def conds(sub: Subscriber, dev: int) -> list[dict[str, Any]]:
    """A water meter's condition messages so far, first copies only."""
    return sub.first_copies(topic=cond(dev))


def up(dev: int) -> str:
    """The reading topic of a water meter."""
    return f"{PREFIX}/water_meter/{dev:08x}/up"


def cond(dev: int) -> str:
    """The condition topic of a water meter."""
    return f"{PREFIX}/water_meter/{dev:08x}/condition"


class ModbusGateway(GatewayProcess):
    """``knute gateway run`` with a [modbus] table naming a TCP and an RTU bus."""

    def __init__(self, root: Path, broker: Broker, tcp: str, rtu: str) -> None:
        super().__init__(root)
        self.write_config(f"""
[gateway]
id = "gw-modbus"
dedup_window_ms = 50
drain_timeout_s = 5
log_level = "debug"
[status]
socket = "{self.status_socket}"
[mqtt]
host = "{broker.host}"
port = {broker.port}
prefix = "{PREFIX}"
[modbus]
state_file = "modbus-state.json"
offline_after = 2
[[modbus.bus]]
name = "plant-tcp"
tcp = "{tcp}"
timeout_s = 0.5
retries = 0
[[modbus.bus]]
name = "plant-rs485"
rtu = "{rtu}"
baudrate = 19200
timeout_s = 0.5
retries = 0
[[modbus.device]]
bus = "plant-tcp"
unit_id = 1
device_id = "{TCP_DEV:08x}"
map = "generic_water_meter"
interval_s = 0.25
[[modbus.device]]
bus = "plant-tcp"
unit_id = 2
device_id = "{STRANGER:08x}"
map = "generic_air_station"
interval_s = 0.5
[[modbus.device]]
bus = "plant-rs485"
unit_id = 5
device_id = "{RTU_DEV:08x}"
map = "generic_water_meter"
interval_s = 0.25
""")
        for dev in (TCP_DEV, RTU_DEV):
            self.cli("devices", "add", f"{dev:08x}", "--kind", "water_meter",
                     "--generate-key", "--site", "plant")

    def start(self, *, wait_sources: bool = False, log_json: bool = False,
              timeout: float = 60.0) -> None:
        """Start the daemon; return once its status socket answers."""
        super().start(wait_sources=wait_sources, log_json=log_json, timeout=timeout)


@pytest.fixture
def listener(mosquitto: Broker) -> Iterator[Subscriber]:
    """A subscriber to everything under the test prefix."""
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{PREFIX}/#")
    try:
        yield sub
    finally:
        sub.close()


def check_readings(readings: list[dict[str, Any]], dev: int, bus: str, unit: int) -> None:
    """Schema, source, receiver, increasing counters, plausible simulated meter values."""
    assert readings
    fcnts = [m["fcnt"] for m in readings]
    assert fcnts == sorted(set(fcnts)), fcnts
    indexes = [m["readings"]["index"]["value"] for m in readings]
    assert indexes == sorted(indexes), indexes            # a meter's total never goes back
    for m in readings:
        READING.validate(m)
        assert m["device"] == f"{dev:08x}" and m["id"] == f"{dev:08x}:{m['fcnt']}"
        assert m["source"] == "modbus" and m["gateway"] == "gw-modbus"
        [rx] = m["receivers"]
        assert rx.pop("round_trip_ms") >= 0
        assert rx == {"source": "modbus", "bus": bus, "unit_id": unit}
        assert m["site"] == {"site": "plant"}
        assert m["battery"] == 95 and m["alarms"] == []
        assert 1e5 <= m["readings"]["index"]["value"] <= 6e6
        assert 8000 <= m["readings"]["max_flow"]["value"] <= 40000
        assert m["profile"] and all(slot["litres"] >= 0 for slot in m["profile"])


def test_gateway_polls_modbus_tcp_and_rtu_and_publishes_conditions(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker, listener: Subscriber,
        modbus_sim: SimFactory) -> None:
    tcp_port = free_port()
    sim_args = ("--device", "1:generic_water_meter", "--device", "2:generic_air_station",
                "--seed", "7")
    tcp_sim = modbus_sim(*sim_args, port=tcp_port)
    rtu_sim = modbus_sim("--rtu-pty", "--device", "5:generic_water_meter", tcp=False)
    gw = ModbusGateway(tmp_path, mosquitto, tcp_sim.tcp, rtu_sim.rtu)
    try:
        gw.start()
        # Readings over both buses, each device announced online at its first answer.
        wait_for(lambda: len(ups(listener, TCP_DEV)) >= 6 and len(ups(listener, RTU_DEV))
                 >= 4, what="readings over TCP and RTU")
        wait_for(lambda: conds(listener, TCP_DEV) and conds(listener, RTU_DEV),
                 what="first online conditions")
        for dev in (TCP_DEV, RTU_DEV):
            (first,) = conds(listener, dev)
            CONDITION.validate(first)
            assert (first["condition"], first["reason"], first["gateway"]) == (
                "online", None, "gw-modbus")
        check_readings(ups(listener, TCP_DEV), TCP_DEV, "plant-tcp", 1)
        check_readings(ups(listener, RTU_DEV), RTU_DEV, "plant-rs485", 5)
        tcp = ups(listener, TCP_DEV)
        assert tcp[-1]["readings"]["index"]["value"] > tcp[0]["readings"]["index"]["value"]
        # The air station is polled but not registered: rejected, never published.
        wait_for(lambda: gw.status()["sources"]["modbus"]["rejected_by_reason"].get(
            "unknown_device", 0) >= 2, what="unregistered device rejected")
        assert not any("/air_quality/" in t for t in {m.topic for m in listener.messages()})
        st = gw.status()["sources"]["modbus"]
        assert (st["type"], st["state"], st["devices_total"]) == ("modbus", "open", 3)
        assert st["accepted"] >= 10 and st["received"] >= st["accepted"]

        # The TCP simulator goes away: offline, while the RTU meter keeps reading.
        tcp_sim.stop()
        offline = wait_for(lambda: [c for c in conds(listener, TCP_DEV)
                                    if c["condition"] == "offline"], what="offline")[0]
        CONDITION.validate(offline)
        assert offline["reason"] in LINK_REASONS
        assert offline["consecutive_failures"] == 2
        assert (offline["bus"], offline["unit_id"], offline["source"]) == ("plant-tcp", 1,
                                                                           "modbus")
        assert f"{TCP_DEV:08x}" in gw.status()["sources"]["modbus"]["offline"]
        # The condition is retained: a backend that subscribes now still learns it.
        late = Subscriber(mosquitto.host, mosquitto.port, f"{PREFIX}/#")
        try:
            wait_for(lambda: [c["condition"] for c in conds(late, TCP_DEV)] == ["offline"],
                     what="the retained offline condition for a late subscriber")
        finally:
            late.close()
        rtu_before = len(ups(listener, RTU_DEV))
        wait_for(lambda: len(ups(listener, RTU_DEV)) >= rtu_before + 3,
                 what="RTU readings while the TCP device is offline")
        last_tcp = ups(listener, TCP_DEV)[-1]["fcnt"]

        # It comes back on the same port: online, and counters carry on.
        modbus_sim(*sim_args, port=tcp_port)
        wait_for(lambda: [c["condition"] for c in conds(listener, TCP_DEV)] == [
            "online", "offline", "online"], what="online again")
        wait_for(lambda: ups(listener, TCP_DEV)[-1]["fcnt"] > last_tcp + 2,
                 what="readings after the return")
        check_readings([m for m in ups(listener, TCP_DEV) if m["fcnt"] > last_tcp],
                       TCP_DEV, "plant-tcp", 1)
        assert [c["condition"] for c in conds(listener, RTU_DEV)] == ["online"]
        assert gw.stop() == 0
        assert (tmp_path / "modbus-state.json").exists()

        # After a restart the counters continue above every published one.
        published = max(m["fcnt"] for m in ups(listener, TCP_DEV))
        gw.start()
        wait_for(lambda: ups(listener, TCP_DEV)[-1]["fcnt"] > published,
                 what="a reading after the restart")
        fcnts = [m["fcnt"] for m in ups(listener, TCP_DEV)]
        assert fcnts == sorted(set(fcnts))
        # Each start states every device's condition once: online at its first answer.
        wait_for(lambda: [c["condition"] for c in conds(listener, TCP_DEV)] == [
            "online", "offline", "online", "online"], what="online after the restart")
        assert gw.stop() == 0
        log = gw.log.read_text()
        assert log.count(f"reading from unknown device {STRANGER:08x}") == 2   # once per run
    finally:
        gw.close()
