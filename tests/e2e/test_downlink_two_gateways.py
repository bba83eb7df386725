"""Two gateway processes, each with its own registry (the device shared to both over
the broker, its key sealed for each), hear one node through their own packet
forwarders, Mosquitto between them, ``[downlinks] gateways = 2``: 100 commands
published once each on MQTT are each answered by exactly one gateway, the node
(firmware.downlink.Downlink, the code a node runs) applies each once, no downlink
counter repeats, and each command's ``sent`` and ``applied`` reach the backend
once, with gateway A killed (kill -9) halfway; A back at the end holds nothing
open and answers with a counter above B's."""

from __future__ import annotations

import base64
import json
import random
import select
import sqlite3
import struct
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from firmware.downlink_model import Downlink
from firmware.state import Store
from knute.protocol import downlink, frame
from knute.tools.rig.gateway import GatewayProcess
from knute.tools.rig.wait import WaitTimeout, wait_for
from tests.conftest import Broker
from tests.e2e.test_downlink_gateway import PREFIX, Watcher, tx_ack
from tests.e2e.two_gateways import KEY, METER, close_pair, gateway_pair, start_and_share
from tests.gateway.pf_client import PacketForwarder, push_data, rxpk

PULL_RESP = 3
COMMANDS = 100
KILL_AT = 50
VALUES = (4, 6, 8, 12, 24)     # water.sends_per_day: divisors of 24, >= 24 / profile_len


def _open_commands(registry: Path) -> int:
    """Commands a gateway's registry holds as queued or sent."""
    db = sqlite3.connect(str(registry), timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM dl_commands WHERE state IN "
                              "('queued', 'sent')").fetchone()[0])
    finally:
        db.close()


class Node:
    """The node: its real downlink code on CPython, its uplinks heard by both forwarders."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        cfg = {"role": "water_meter", "device_id": METER, "key": KEY.hex(),
               "link": {"type": "lora"}, "water": {"sends_per_day": 4, "profile_len": 6}}
        (root / "config.json").write_text(json.dumps(cfg))
        self.dl = Downlink(Store(str(root / "state")), METER, str(root / "config.json"),
                           None, str(root / "upd"), str(root / "lib"))
        self.fcnt = 0
        self.tmst = 1_000_000

    def uplink(self) -> bytes:
        """The next uplink, with the report of what the node applied."""
        self.fcnt += 1
        self.tmst += 10_000_000
        values: dict[str, Any] = {"index": 1000 + self.fcnt, "profile_end_h": 3,
                                  "battery": 19, "profile": [1]}
        report = self.dl.report()
        if report is not None:
            values["dl"] = report
        raw = frame.encode("water_meter", METER, self.fcnt, values, self.dl.uplink_key())
        self.dl.uplink_sent(self.fcnt)
        self.dl.report_sent()
        return raw


# The outcomes of an uplink a gateway claimed (gateway/downlink_service.py): answered,
# answered by the other gateway, or not answerable; each is counted once the downlink
# worker is done with the uplink, an answer after its PULL_RESP left.
DECIDED = ("downlinks_sent", "downlink_claimed_elsewhere", "downlink_no_window",
           "downlink_errors")


def _decided(gw: GatewayProcess) -> int:
    """The uplinks this gateway's downlink worker has decided on (``DECIDED``)."""
    totals = gw.status()["totals"]
    return sum(int(totals.get(name, 0)) for name in DECIDED)


def _read_pull_resps(pfs: dict[str, PacketForwarder], wait_s: float
                     ) -> list[tuple[str, int, bytes]]:
    """The PULL_RESPs that reach the forwarders within ``wait_s`` (0: those already
    there): (which, token, downlink bytes). PUSH_ACKs and PULL_ACKs are skipped."""
    out: list[tuple[str, int, bytes]] = []
    deadline = time.monotonic() + wait_s
    socks = {pf.sock: name for name, pf in pfs.items()}
    while True:
        ready, _, _ = select.select(list(socks), [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return out
        for sock in ready:
            data, _ = sock.recvfrom(65535)
            if len(data) >= 4 and data[3] == PULL_RESP:
                txpk = json.loads(data[4:])["txpk"]
                out.append((socks[sock], struct.unpack_from(">H", data, 1)[0],
                            base64.b64decode(txpk["data"])))


def _pull_resps(gws: dict[str, GatewayProcess], pfs: dict[str, PacketForwarder],
                push: Callable[[], None]) -> list[tuple[str, int, bytes]]:
    """``push`` an uplink every gateway in ``pfs`` claims (a command is open at each),
    and return the PULL_RESPs it brought, read once every gateway has decided on it:
    a winner's PULL_RESP is sent before its decision is counted, over loopback UDP, so
    every answer, a second one included, is at the forwarder by then."""
    before = {name: _decided(gws[name]) for name in pfs}
    push()
    wait_for(lambda: all(_decided(gws[name]) > before[name] for name in pfs), 30,
             f"{', '.join(pfs)} to decide on the uplink")
    return _read_pull_resps(pfs, 0.0)


def test_two_gateways_answer_each_uplink_once_and_never_repeat_a_counter(
        tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> None:
    rng = random.Random(42)
    gws, pfs = gateway_pair(tmp_path, mosquitto.port, gather_ms=500)
    watcher = Watcher(mosquitto)
    node = Node(tmp_path / "node")
    downlinks: list[tuple[str, dict[str, Any]]] = []    # (gateway, decoded) as received
    topic = f"{PREFIX}/water_meter/{METER:08x}/down"
    try:
        start_and_share(gws, tmp_path / "operator.db")
        def serves_device(gw: GatewayProcess) -> bool:
            return bool(gw.status()["devices"] == 1)

        def subscribed(gw: GatewayProcess) -> bool:
            dl = gw.status()["downlinks"]
            return bool(dl["commands_topic"]["subscribed"] and dl["city"]["subscribed"])

        for name, gw in gws.items():
            wait_for(partial(serves_device, gw), 30, f"{name} to get the device")
            wait_for(partial(subscribed, gw), 30, f"{name} subscribed")
            pfs[name].pull()
        alive = ["gw-a", "gw-b"]

        def heard_by_all(ref: str) -> bool:
            return watcher.states(ref).count("queued") >= len(alive)

        def uplink(snr: dict[str, float], quiet_s: float | None = None
                   ) -> list[tuple[str, int, bytes]]:
            """The node's next uplink, heard by every live gateway; its answers. With
            ``quiet_s``, an uplink nobody should answer: whatever comes in that time (a
            gateway that has nothing to send counts no decision to wait for)."""
            raw = node.uplink()

            def push() -> None:
                for name in alive:
                    body = {"rxpk": [rxpk(raw, tmst=node.tmst, freq=868.3, datr="SF9BW125",
                                          lsnr=snr[name])]}
                    pfs[name].send_raw(push_data(pfs[name].eui, body)[1])

            listening = {n: pfs[n] for n in alive}
            if quiet_s is not None:
                push()
                return _read_pull_resps(listening, quiet_s)
            return _pull_resps(gws, listening, push)

        for i in range(COMMANDS):
            ref = f"c-{i}"
            watcher.command(topic, {"id": ref, "command": "config",
                                    "values": {"water.sends_per_day": VALUES[i % len(VALUES)]}})
            wait_for(partial(heard_by_all, ref), 30, f"{ref} queued at every gateway")
            # Which gateway hears the node better changes from uplink to uplink; before
            # the kill, gateway A answers (it hears best), then it dies with its command
            # applied at the node but not yet reported.
            snr = {"gw-a": rng.uniform(-10, 10), "gw-b": rng.uniform(-10, 10)}
            if i == KILL_AT:
                snr = {"gw-a": 9.0, "gw-b": -9.0}
            got = uplink(snr)
            assert len(got) == 1, (i, [(g, t) for g, t, _ in got],
                                   gws["gw-a"].log_tail(), gws["gw-b"].log_tail())
            name, token, raw = got[0]
            decoded = downlink.decode(raw, KEY)
            downlinks.append((name, decoded))
            assert node.dl.receive(raw) is None, node.dl.counts
            tx_ack(pfs[name], token)
            if i == KILL_AT:
                assert name == "gw-a"
                gws["gw-a"].kill()
                alive = ["gw-b"]
        # One more uplink carries the last report; nothing is left to send.
        last = uplink({"gw-a": 0.0, "gw-b": 0.0}, 1.5)
        assert last == [], [downlink.decode(r, KEY) for _, _, r in last]
        time.sleep(0.5)                    # a late second answer would show up here
        assert _read_pull_resps({n: pfs[n] for n in alive}, 0.5) == []
        # A comes back: from its sessions it gets the commands B took meanwhile and B's
        # notices of what it sent and what the node reported; it holds nothing open
        # (so it sends nothing again), and its next counter is above B's last.
        gws["gw-a"].start()
        wait_for(partial(subscribed, gws["gw-a"]), 30, "gw-a subscribed again")
        wait_for(lambda: _open_commands(tmp_path / "gw-a" / "registry.db") == 0, 30,
                 "gw-a to close what B did while it was away")
        # Every command applied, once A is back too: the states A spooled before the
        # kill (the `applied` of the report it read in its last uplink, when its
        # forwarder had not sent it yet on a loaded box) leave its spool now. (A also
        # publishes `queued` for the commands its session kept while it was away.)
        refs = [f"c-{i}" for i in range(COMMANDS)]
        try:
            wait_for(lambda: all("applied" in watcher.states(r) for r in refs), 60,
                     "every command applied")
        except WaitTimeout as exc:
            open_refs = {r: watcher.states(r) for r in refs
                         if "applied" not in watcher.states(r)}
            raise AssertionError(f"{exc}: {open_refs}\n{gws['gw-b'].log_tail()}") from None
        pfs["gw-a"].pull()
        alive = ["gw-a", "gw-b"]
        assert uplink({"gw-a": 5.0, "gw-b": -5.0}, 1.5) == []
        watcher.command(topic, {"id": "after", "command": "reboot"})
        wait_for(partial(heard_by_all, "after"), 30, "after queued at both")
        last = uplink({"gw-a": 5.0, "gw-b": -5.0})
        assert [g for g, _, _ in last] == ["gw-a"]
        downlinks.append(("gw-a", downlink.decode(last[0][2], KEY)))
        assert node.dl.receive(last[0][2]) is None, node.dl.counts
    finally:
        close_pair(gws, pfs)
        watcher.close()

    counters = [d["dcnt"] for _, d in downlinks]
    print(f"{len(downlinks)} downlinks, by gw-a {sum(g == 'gw-a' for g, _ in downlinks)}, "
          f"by gw-b {sum(g == 'gw-b' for g, _ in downlinks)}; counters {counters[:6]}...")
    assert len(downlinks) == COMMANDS + 1
    assert len(set(counters)) == COMMANDS + 1 and counters == sorted(counters)
    assert all(d["dcnt"] % 2 == (0 if g == "gw-a" else 1) for g, d in downlinks)
    assert {g for g, _ in downlinks[:KILL_AT]} == {"gw-a", "gw-b"}
    assert node.dl.counts == {}            # no downlink refused: no replay, no order
    assert node.dl.last == counters[-1]
    assert node.dl.clock_set               # the clock flag of the first uplink, answered once
    assert sum(c[1] == downlink.OP_CLOCK for _, d in downlinks for c in d["commands"]) == 1
    # Each command: in exactly one downlink, `sent` and `applied` published once.
    for i in range(COMMANDS):
        ref = f"c-{i}"
        states = watcher.states(ref)
        assert states.count("sent") == 1 and states.count("applied") == 1, (ref, states)
        sent = next(m for m in watcher.messages if m.get("id") == ref and
                    m["state"] == "sent")
        carried = [d for g, d in downlinks if g == sent["gateway"]
                   and any(c[0] == sent["cmd_id"] for c in d["commands"])]
        assert len(carried) == 1, (ref, sent)
        entry = next(c for c in carried[0]["commands"] if c[0] == sent["cmd_id"])
        assert entry[1:] == [downlink.OP_CONFIG, {1: VALUES[i % len(VALUES)]}], entry
    applied_by = {m["gateway"] for m in watcher.messages
                  if m.get("id") == f"c-{KILL_AT}" and m["state"] == "applied"}
    assert applied_by == {"gw-b"}          # A died; B read the node's report of A's command
