"""A UART node's downlinks through a real gateway process: the command queued with
``knute devices send`` comes back over the node's serial link as a FRAME record
right after its uplink, and the node's receiving side (firmware.downlink, here on
CPython behind a pty) applies it."""

from __future__ import annotations

import json
import os
import select
import time
from pathlib import Path

from firmware.downlink_model import Downlink
from firmware.state import Store
from knute.protocol import downlink, frame, stream
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.ptys import Pty
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker

KEY = bytes(range(16))
DEV = 0x1234


class LinkReader:
    """What the gateway writes to one device's end of a serial link, as records.

    One decoder for the whole test: bytes that arrive with or after a record are
    kept for the next ``next()``, never dropped, so the reader never starts again
    in the middle of a record. A record that does not decode fails the test with
    every byte read so far.
    """

    def __init__(self, pty: Pty) -> None:
        self.pty = pty
        self.decoder = stream.StreamDecoder()
        self.seen = bytearray()
        self.waiting: list[tuple[int, bytes]] = []

    def next(self, timeout: float) -> tuple[int, bytes] | None:
        """The next record within ``timeout`` seconds, or None."""
        deadline = time.monotonic() + timeout
        while not self.waiting and time.monotonic() < deadline:
            ready, _, _ = select.select([self.pty.master], [], [], 0.1)
            if ready:
                data = os.read(self.pty.master, 4096)
                self.seen += data
                for item in self.decoder.feed(data):
                    assert isinstance(item, tuple), f"{item!r} in {self.seen.hex()}"
                    self.waiting.append(item)
        return self.waiting.pop(0) if self.waiting else None


def test_uart_node_receives_its_command_after_its_uplink(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> None:
    gw = GatewayProcess(tmp_path / "gw")
    wired = Pty(tmp_path / "ttyNODE")
    gw.write_test_config("gw-serial", mosquitto.port, f"""[downlinks]
commands_from_mqtt = false
[[serial]]
name = "wired"
url = "{tmp_path / 'ttyNODE'}"
""")
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "config.json").write_text(json.dumps({
        "role": "water_meter", "device_id": DEV, "key": KEY.hex(), "link": {"type": "uart"},
        "water": {"sends_per_day": 4, "profile_len": 6}}))
    node = Downlink(Store(str(node_dir / "state")), DEV, str(node_dir / "config.json"),
                    upd_root=str(node_dir / "upd"), lib=str(node_dir / "lib"))
    try:
        gw.cli("devices", "add", f"{DEV:08x}", "--kind", "water_meter", "--key", KEY.hex())
        gw.start()
        sent = gw.cli("devices", "send", f"{DEV:08x}", "config", "water.sends_per_day=2",
                      "water.profile_len=12", "--json")
        cmd_id = json.loads(sent.stdout)[0]["cmd_id"]
        values = {"index": 1000, "profile_end_h": 3, "battery": 19, "profile": [1]}
        before = time.time()
        wired.write(stream.encode_record(
            stream.REC_FRAME, frame.encode("water_meter", DEV, 1, values, KEY)))
        link = LinkReader(wired)
        got = link.next(15.0)
        assert got, gw.log_tail()
        rtype, body = got
        assert rtype == stream.REC_FRAME
        dl = downlink.decode(body, KEY)
        print(f"downlink {body.hex()} ({len(body)} bytes) commands {dl['commands']}")
        ops = [c[1] for c in dl["commands"]]
        assert ops == [downlink.OP_CONFIG]
        assert dl["commands"][0][0] == cmd_id
        node.uplink_sent(1)
        assert node.receive(body) is None
        cfg = json.loads((node_dir / "config.json").read_text())
        assert cfg["water"] == {"sends_per_day": 2, "profile_len": 12}
        print(f"uplink to downlink on the wire within {time.time() - before:.2f} s")
        # The node's next uplink reports it; the gateway marks it applied.
        report = node.report()
        assert report is not None
        uplink2_at = time.time()
        wired.write(stream.encode_record(stream.REC_FRAME, frame.encode(
            "water_meter", DEV, 2, {**values, "dl": report}, KEY)))
        node.report_sent()

        def state() -> str:
            show = json.loads(gw.cli("devices", "show", f"{DEV:08x}", "--json").stdout)
            cmds = {c["cmd_id"]: c["state"] for c in show["downlinks"]}
            return str(cmds[cmd_id])

        wait_for(lambda: state() == "applied", 20, "the command to be applied")
        # The report also asked for the time (no clock since the node's boot): the
        # answer is the end of uplink 2, as the gateway saw the record arrive.
        node.uplink_sent(2)
        got = link.next(15.0)
        assert got and got[0] == stream.REC_FRAME, gw.log_tail()
        clock = downlink.decode(got[1], KEY)
        assert clock["dcnt"] == 1
        (cmd,) = clock["commands"]
        assert cmd[1:3] == [downlink.OP_CLOCK, 2]
        stamp = cmd[3] + cmd[4] / 1000
        # Between the write of uplink 2 and the downlink's arrival here (to the ms it is
        # rounded to), however long the gateway took under load.
        assert uplink2_at - 0.001 <= stamp <= time.time() + 0.001, (uplink2_at, stamp)
        assert node.receive(got[1]) is None and node.now_ms() is not None
        # Nothing but whole records went over the link: no bytes of another write.
        assert not link.waiting and link.decoder.pending() == 0, link.seen.hex()
        totals = gw.status()["totals"]
        assert (totals.get("downlinks_sent"), totals.get("downlinks_applied")) == (2, 1)
        assert gw.stop() == 0
    finally:
        gw.close()
        wired.close()


def test_radio_bridge_gets_a_tx_record_for_its_own_window(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> None:
    gw = GatewayProcess(tmp_path / "gw")
    bridge = Pty(tmp_path / "ttyBRIDGE")
    gw.write_test_config("gw-bridge", mosquitto.port, f"""[downlinks]
commands_from_mqtt = false
[[serial]]
name = "bridge"
url = "{tmp_path / 'ttyBRIDGE'}"
""")
    try:
        gw.cli("devices", "add", f"{DEV:08x}", "--kind", "water_meter", "--key", KEY.hex())
        gw.start()
        gw.cli("devices", "send", f"{DEV:08x}", "reboot")
        up = frame.encode("water_meter", DEV, 1, {"index": 1, "profile_end_h": 3,
                                                  "battery": 19, "profile": [1]}, KEY)
        bridge.write(stream.encode_record(
            stream.REC_RADIO, stream.pack_radio(-91, 65, 868_500_000, 10, up)))
        got = LinkReader(bridge).next(15.0)
        assert got, gw.log_tail()
        rtype, body = got
        assert rtype == stream.REC_TX
        at_ms, freq, sf, payload = stream.unpack_tx(body)
        # at_ms 0: the bridge places it in the uplink's window by its own clock; RX1
        # on the uplink's channel, or RX2 if the gateway was too slow for RX1.
        assert at_ms == 0 and (freq, sf) in ((868_500_000, 10), (869_525_000, 12))
        dl = downlink.decode(payload, KEY)
        assert [c[1] for c in dl["commands"]] == [downlink.OP_REBOOT]
        assert gw.stop() == 0
    finally:
        gw.close()
        bridge.close()
