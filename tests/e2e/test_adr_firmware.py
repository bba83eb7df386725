"""ADR over the downlink, on real processes: the gateway's data-rate rule sees a LoRa
firmware node's uplinks arrive with a wide SNR margin at SF12, queues a config
command with a lower SF and power, the node applies it by its restart in place
and its next uplinks go out at the new SF (the concentrator sees the new datr)."""

from __future__ import annotations

import json
from pathlib import Path

from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.node import KEY_HEX, water_config
from knute.tools.rig.wait import wait_for
from knute.tools.sim.pktfwd_radio import ConcentratorThread, NodeRadio, RadioConcentrator
from tests.conftest import Broker, free_port
from tests.firmware.conftest import NodeFactory, bench_node, flash_lib
from tests.upybuild import micropython_bin, upy_bits

__all__ = ["bench_node", "flash_lib", "micropython_bin", "upy_bits"]

DEV = 0x1234
FREQ = 868_100_000


def test_gateway_moves_a_strong_node_from_sf12_to_sf7(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker, bench_node: NodeFactory) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["downlink"] = True
    cfg["link"] = {"type": "lora"}
    cfg["radio"] = {"freq_hz": FREQ, "sf": 12}
    # Every uplink arrives at 5 dB SNR (the bench does not model the power): at SF12
    # the margin is 5 - (-20) - 10 = 15 dB, 5 steps of 3 dB: SF7 at the same power.
    # At SF7 it is 5 - (-7.5) - 10 = 2.5 dB, no whole step: the rule leaves it there.
    # (Semtech's bare rule: no hysteresis, all five steps in one command.)
    # A window waits up to 1.5 real seconds for the gateway's answer (one gateway: it
    # answers in a fraction of that), and that long when nobody answers, as after the
    # uplinks the rule only records. An answer a loaded machine makes miss its window
    # goes out again after the next uplink: the same one command, applied once. The
    # node's clock runs four hours a real second between its windows (it stands still
    # in them): its hourly uplinks come without a second's wait each.
    cfg["bench"].update({"radio": {"path": "air.txt", "rx_path": "dl.txt"},
                         "radio_snr_db": 5.0, "rx_wait_real_ms": 1500, "time_scale": 14400,
                         "stop_after_s": 1000 * 3600})
    meter = bench_node(cfg, name="meter")
    (meter.dir / "dl.txt").write_text("")
    gw = GatewayProcess(tmp_path / "gw")
    port = free_port()
    gw.write_test_config("gw-adr", mosquitto.port, f"""[downlinks]
commands_from_mqtt = false
adr = true
adr_history = 3
adr_hysteresis_db = 0.0
adr_max_steps = 5
[[packet_forwarder]]
name = "lora"
listen = "127.0.0.1:{port}"
""")
    radio = NodeRadio(str(meter.dir / "air.txt"), str(meter.dir / "dl.txt"), FREQ, 12)
    conc = RadioConcentrator("127.0.0.1", port, [radio], pull_every_s=0.5)
    stepping = ConcentratorThread(conc)
    try:
        gw.cli("devices", "add", f"{DEV:08x}", "--kind", "water_meter", "--key", KEY_HEX)
        gw.start()
        stepping.start()
        wait_for(lambda: gw.status()["sources"]["lora"]["gateways"], 10, "the PULL_DATA")
        meter.start()

        def adr_commands() -> list[dict[str, object]]:
            show = json.loads(gw.cli("devices", "show", f"{DEV:08x}", "--json").stdout)
            return [c for c in show["downlinks"] if str(c.get("id") or "").startswith("adr-")]

        try:
            wait_for(lambda: [c["state"] for c in adr_commands()] == ["applied"], 90,
                     "the ADR command applied")
        except AssertionError:
            raise AssertionError(f"{adr_commands()}\n{meter.console()}\n"
                                 + gw.log_tail()) from None
        (cmd,) = adr_commands()
        print(f"ADR command: {cmd}")
        radio_cfg = json.loads((meter.dir / "config.json").read_text())["radio"]
        assert (radio_cfg["sf"], radio_cfg.get("power_dbm", 14)) == (7, 14), radio_cfg
        # The node's uplinks after the change go out at SF7 (its radio lines say so).

        def last_sf() -> int:
            lines = (meter.dir / "air.txt").read_text().splitlines()
            return int(lines[-1].split()[6])

        wait_for(lambda: last_sf() == 7, 30, "an uplink at SF7")
        sfs = [int(line.split()[6]) for line in
               (meter.dir / "air.txt").read_text().splitlines()]
        print(f"uplink SFs: {sfs}")
        assert sfs[:3] == [12, 12, 12] and sfs[-1] == 7
        # At SF7 the margin is under one step: no second command.
        assert gw.status()["totals"].get("adr_changes") == 1
        assert len(adr_commands()) == 1
        meter.close()
        assert gw.stop() == 0
    finally:
        stepping.stop()
        conc.close()
        gw.close()
