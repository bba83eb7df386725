"""ADR with two gateways, each with its own registry, on real processes: the uplinks of
one node at SF12 reach both through their own packet forwarders (UDP, rxpk ``lsnr``)
with different SNRs, Mosquitto between them. Only the gateway that wins the claim of
the deciding uplink queues the data-rate rule's change, and its decision rests on the
best SNR of both gateways: the one strong uplink was heard well only by the other."""

from __future__ import annotations

import base64
import json
import select
import time
from functools import partial
from pathlib import Path

from knute.protocol import downlink
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.e2e.test_downlink_gateway import Watcher, water
from tests.e2e.two_gateways import KEY, METER, close_pair, gateway_pair, start_and_share
from tests.gateway.pf_client import PacketForwarder, push_data, rxpk

PULL_RESP = 3
# Per uplink, the SNR each gateway's concentrator reports. Uplink 1 is heard well only
# by B (it wins that claim); A wins 2 and 3 and decides after 3 (adr_history = 3).
# A's own best is -10 dB: at SF12 a margin of -10 + 20 - 10 = 0, no step. The best of
# both is B's +1 dB: 11 dB, 3 steps; 2 dB of hysteresis leaves 9 dB, still 3, and
# adr_max_steps = 2 makes it SF10 at 14 dBm.
SNRS = ({"gw-a": -14.0, "gw-b": 1.0}, {"gw-a": -10.0, "gw-b": -16.0},
        {"gw-a": -10.0, "gw-b": -16.0})


def _claims(gw: GatewayProcess) -> int:
    """Uplinks the gateway has decided the claim of (won or lost)."""
    city = gw.status()["downlinks"]["city"]
    return int(city["won"]) + int(city["lost"])


def _decided(gw: GatewayProcess, uplinks: int) -> bool:
    """Whether the gateway has decided the claims of this many uplinks."""
    return _claims(gw) >= uplinks


def _pull_resp(pf: PacketForwarder, wait_s: float) -> bytes | None:
    """The downlink of the next PULL_RESP within ``wait_s`` (acks skipped)."""
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([pf.sock], [], [], left)
        if ready:
            data, _ = pf.sock.recvfrom(65535)
            if len(data) >= 4 and data[3] == PULL_RESP:
                return base64.b64decode(json.loads(data[4:])["txpk"]["data"])
    return None


def test_only_the_claim_winner_decides_on_the_best_snr_of_both(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> None:
    gws, pfs = gateway_pair(tmp_path, mosquitto.port, gather_ms=700,
                            downlinks="adr_history = 3\n")
    watcher = Watcher(mosquitto)
    try:
        start_and_share(gws, tmp_path / "operator.db")

        def ready(gw: GatewayProcess) -> bool:
            status = gw.status()
            return bool(status["devices"] == 1 and status["downlinks"]["city"]["subscribed"])

        for name, gw in gws.items():
            wait_for(partial(ready, gw), 30, f"{name} to serve the device, subscribed")
            pfs[name].pull()
        tmst = 1_000_000
        for fcnt, snr in enumerate(SNRS, start=1):
            tmst += 10_000_000
            raw = water(fcnt)
            for name, pf in pfs.items():
                body = {"rxpk": [rxpk(raw, tmst=tmst, freq=868.3, datr="SF12BW125",
                                      lsnr=snr[name])]}
                pf.send_raw(push_data(pf.eui, body)[1])
            for name, gw in gws.items():
                wait_for(partial(_decided, gw, fcnt), 30,
                         f"{name} to decide the claim of uplink {fcnt}")
        got = _pull_resp(pfs["gw-a"], 10.0)
        assert got is not None, gws["gw-a"].log_tail()
        cmds = downlink.decode(got, KEY)["commands"]
        # Radio settings: radio.sf (code 11) and radio.power_dbm (12) of protocol.md 12.
        assert [c[1:] for c in cmds] == [[downlink.OP_CONFIG, {11: 10, 12: 14}]], cmds
        assert _pull_resp(pfs["gw-b"], 1.0) is None            # B sends nothing
        assert "ADR margin 11.0 dB" in gws["gw-a"].log_text(), gws["gw-a"].log_tail()
        totals = {name: gw.status()["totals"] for name, gw in gws.items()}
        assert totals["gw-a"].get("adr_changes") == 1
        assert totals["gw-b"].get("adr_changes") is None, gws["gw-b"].log_tail()
        wait_for(lambda: any(m.get("state") == "sent" for m in watcher.messages
                             if str(m.get("id")).startswith("adr-")), 10, "the adr- sent")
        adr_msgs = [m for m in watcher.messages if str(m.get("id")).startswith("adr-")]
        assert {(m["gateway"], m["state"]) for m in adr_msgs} == {("gw-a", "queued"),
                                                                  ("gw-a", "sent")}, adr_msgs
        # B took A's notice: it holds the change as sent, so it will not decide again
        # until the node has reported it.
        def b_adopted() -> bool:
            out = gws["gw-b"].cli("devices", "show", f"{METER:08x}", "--json").stdout
            return any(str(c.get("id")).startswith("adr-") and c["state"] == "sent"
                       for c in json.loads(out)["downlinks"])

        wait_for(b_adopted, 10, "gw-b to adopt the change")
        claims = {n: gw.status()["downlinks"]["city"] for n, gw in gws.items()}
        print(f"claims: a won {claims['gw-a']['won']} lost {claims['gw-a']['lost']}, "
              f"b won {claims['gw-b']['won']} lost {claims['gw-b']['lost']}")
        assert (claims["gw-a"]["won"], claims["gw-b"]["won"]) == (2, 1)
    finally:
        close_pair(gws, pfs)
        watcher.close()
