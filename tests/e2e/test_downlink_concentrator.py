"""The packet-forwarder path with tools/sim's concentrator: a bench node's uplink
line becomes PUSH_DATA with its bench-clock tmst, and the gateway's PULL_RESP
becomes a TX line in the node's rx file at the start of its RX1 window."""

from __future__ import annotations

import time
from pathlib import Path

from knute.protocol import downlink, frame
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.wait import wait_for
from knute.tools.sim.pktfwd_radio import NodeRadio, RadioConcentrator
from tests.conftest import Broker, free_port

KEY = bytes(range(16))
DEV = 0x1234
THREE_DAYS_MS = 3 * 86400 * 1000


def test_concentrator_turns_pull_resp_into_the_nodes_rx1_line(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> None:
    gw = GatewayProcess(tmp_path / "gw")
    port = free_port()
    gw.write_test_config("gw-conc", mosquitto.port, f"""[downlinks]
commands_from_mqtt = false
[[packet_forwarder]]
name = "lora"
listen = "127.0.0.1:{port}"
""")
    node = NodeRadio(str(tmp_path / "radio.txt"), str(tmp_path / "dl.txt"), 868_300_000, 8)
    conc = RadioConcentrator("127.0.0.1", port, [node], pull_every_s=0.5)
    try:
        gw.cli("devices", "add", f"{DEV:08x}", "--kind", "water_meter", "--key", KEY.hex())
        gw.start()
        gw.cli("devices", "send", f"{DEV:08x}", "time")
        gw.cli("devices", "send", f"{DEV:08x}", "config", "water.leak_hours=6")
        conc.step()                                      # PULL_DATA first
        wait_for(lambda: gw.status()["sources"]["lora"]["gateways"], 10, "the PULL_DATA")
        # The node's clock is three days behind; its uplink line carries that clock.
        end_ms = int(time.time() * 1000) - THREE_DAYS_MS
        up = frame.encode("water_meter", DEV, 1, {"index": 5, "profile_end_h": 3,
                                                  "battery": 19, "profile": [1]}, KEY)
        Path(node.path).write_text(f"RX -90 7.5 {up.hex()} {end_ms}\n")

        def tx_line() -> str:
            conc.step()
            rx = Path(node.rx_path)
            return rx.read_text() if rx.exists() else ""

        line = wait_for(tx_line, 15, "a TX line for the node")
        word, start, freq, sf, payload = line.split()
        assert word == "TX" and int(start) == end_ms + 1000
        assert (int(freq), int(sf)) == (868_300_000, 8)
        dl = downlink.decode(bytes.fromhex(payload), KEY)
        clock, config = dl["commands"]
        assert config == [2, downlink.OP_CONFIG, {4: 6}]
        # The clock answer is the gateway's time at the end of uplink 1, not the node's.
        assert clock[1:3] == [downlink.OP_CLOCK, 1]
        answer_ms = clock[3] * 1000 + clock[4]
        print(f"node clock {end_ms}, answer {answer_ms}: offset {answer_ms - end_ms} ms")
        assert abs(answer_ms - end_ms - THREE_DAYS_MS) < 5000
        wait_for(lambda: gw.status()["sources"]["lora"].get("tx_ack_none") == 1, 10,
                 "the TX_ACK")
        assert conc.tx_errors == {} and conc.downlinks == 1
        assert gw.stop() == 0
    finally:
        conc.close()
        gw.close()
