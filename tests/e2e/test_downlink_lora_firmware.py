"""A command published on Mosquitto reaches a LoRa node running the real firmware on
the unix port, over each radio path the gateway has, and is applied:

- the packet-forwarder path: tools/sim's concentrator plays the concentrator
  against the real gateway (PUSH_DATA of the node's uplink lines, PULL_DATA,
  PULL_RESP turned into a TX line in the node's receive file, TX_ACK);
- the radio-bridge path: a second firmware node in the radio_bridge role hears
  the meter's uplink lines, hands them to the gateway over a serial line and
  transmits the gateway's TX record in the meter's window.

In both the node applies the command by its restart in place, its next uplink
reports it and the status topic follows the command to ``applied``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.node import KEY_HEX
from knute.tools.rig.nullmodem import NullModem
from knute.tools.rig.wait import wait_for
from knute.tools.sim.pktfwd_radio import ConcentratorThread, NodeRadio, RadioConcentrator
from tests.conftest import Broker, free_port
from tests.e2e.lora_meter import DEV, FREQ, SF, lora_meter
from tests.e2e.test_downlink_gateway import Watcher
from tests.firmware.conftest import NodeFactory, bench_node, flash_lib
from tests.upybuild import micropython_bin, upy_bits

__all__ = ["bench_node", "flash_lib", "micropython_bin", "upy_bits"]


def _start_gateway(gw: GatewayProcess) -> None:
    """Register the meter, start the gateway and wait until it takes commands."""
    gw.cli("devices", "add", f"{DEV:08x}", "--kind", "water_meter", "--key", KEY_HEX)
    gw.start()
    wait_for(lambda: gw.status()["downlinks"]["commands_topic"]["subscribed"], 30,
             "the command topics subscribed")


def _command_applied(gw: GatewayProcess, watcher: Watcher, meter: Any, ref: str) -> None:
    topic = f"t/water_meter/{DEV:08x}/down"
    watcher.command(topic, {"id": ref, "command": "config",
                            "values": {"water.leak_hours": 5}})
    wait_for(lambda: watcher.states(ref) == ["queued"], 20, f"{ref} queued")
    meter.start()
    try:
        wait_for(lambda: "applied" in watcher.states(ref), 90, f"{ref} applied")
    except AssertionError:
        raise AssertionError(f"{watcher.states(ref)}\n{meter.console()}\n"
                             + gw.log_tail()) from None
    print(f"{ref}: {watcher.states(ref)}")
    assert watcher.states(ref)[-2:] == ["sent", "applied"]
    assert re.search(r"downlink \d+ applied", meter.console()), meter.console()
    # The downlink came in one of the meter's windows, as a TX line in its receive file.
    assert (meter.dir / "dl.txt").read_text().startswith("TX ")
    cfg = json.loads((meter.dir / "config.json").read_text())
    assert cfg["water"]["leak_hours"] == 5


def test_mqtt_command_reaches_the_firmware_through_the_packet_forwarder(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker, bench_node: NodeFactory) -> None:
    meter = lora_meter(bench_node)
    gw = GatewayProcess(tmp_path / "gw")
    port = free_port()
    gw.write_test_config("gw-lora-fw", mosquitto.port, f"""[[packet_forwarder]]
name = "lora"
listen = "127.0.0.1:{port}"
""")
    conc = RadioConcentrator("127.0.0.1", port,
                             [NodeRadio(str(meter.dir / "air.txt"), str(meter.dir / "dl.txt"),
                                        FREQ, SF)], pull_every_s=0.5)
    stepping = ConcentratorThread(conc)
    watcher = Watcher(mosquitto)
    try:
        _start_gateway(gw)
        stepping.start()
        wait_for(lambda: gw.status()["sources"]["lora"]["gateways"], 10, "the PULL_DATA")
        _command_applied(gw, watcher, meter, "pf-1")
        # Semtech's TX_ACK came back without error for every downlink written.
        assert conc.tx_errors == {} and conc.downlinks >= 1
        wait_for(lambda: gw.status()["sources"]["lora"].get("tx_ack_none", 0) >= 1, 10,
                 "the TX_ACK")
        meter.close()
        assert gw.stop() == 0
    finally:
        stepping.stop()
        conc.close()
        gw.close()
        watcher.close()


def test_mqtt_command_reaches_the_firmware_through_a_radio_bridge(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker, bench_node: NodeFactory) -> None:
    meter = lora_meter(bench_node)
    with NullModem() as line:
        # The bridge hears the meter's uplink lines and transmits into its receive file.
        bridge_cfg = {
            "role": "radio_bridge", "device_id": 1, "board": "unix",
            "link": {"type": "uart", "uart": "link"},
            "radio": {"freq_hz": FREQ, "sf": SF},
            "bench": {"uart": {"link": line.a_path},
                      "radio": {"path": str(meter.dir / "air.txt"),
                                "rx_path": str(meter.dir / "dl.txt")},
                      "time_scale": 1, "stop_after_s": 3600},
        }
        bridge = bench_node(bridge_cfg, name="bridge", uarts=())
        gw = GatewayProcess(tmp_path / "gw")
        gw.write_test_config("gw-lora-fw", mosquitto.port, f"""[[serial]]
name = "bridge"
url = "{line.b_path}"
""")
        watcher = Watcher(mosquitto)
        try:
            _start_gateway(gw)
            bridge.start()
            bridge.wait_line("boot role=radio_bridge")
            _command_applied(gw, watcher, meter, "br-1")
            meter.close()
            bridge.close()
            assert gw.stop() == 0
        finally:
            gw.close()
            watcher.close()
