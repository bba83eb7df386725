"""The gateway's downlink worker against the node's own receiving side.

The gateway half is the real DownlinkService with its SQLite store and the real
pipeline (for the key rotation); the node half is firmware.downlink.Downlink,
the code a node runs, here on CPython. Between them, the downlink bytes the
worker hands to its transmitter go straight to the node's ``receive``, and
the node's ``report()`` rides in the next uplink.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from firmware.downlink_model import Downlink
from firmware.state import Store
from knute.gateway.downlink_commands import Command
from knute.gateway.downlink_plan import PATH_PKTFWD, PATH_SERIAL, Uplink, Window
from knute.gateway.downlink_service import DownlinkService, uplink_from
from knute.gateway.downlinks import DownlinkStore
from knute.gateway.model import Counters, Reception
from knute.gateway.pipeline import Pipeline
from knute.gateway.registry import Registry
from knute.protocol import downlink as dls
from knute.protocol import frame

KEY = bytes(range(16))
DEV = 0x1234


class Link:
    """Hands each downlink to the node (and remembers it)."""

    def __init__(self, node: Downlink) -> None:
        self.node = node
        self.sent: list[tuple[bytes, Window]] = []
        self.results: list[str | None] = []

    def transmit_downlink(self, frame_: bytes, window: Window, up: Uplink,
                          done: Any) -> str | None:
        self.sent.append((frame_, window))
        self.results.append(self.node.receive(frame_))
        return None


class Loop:
    """One gateway worker and one node."""

    def __init__(self, tmp: Path, path: str = PATH_SERIAL, auto_ack: bool = False) -> None:
        reg = Registry(str(tmp / "registry.db"))
        reg.add(DEV, "water_meter", KEY)
        self.registry = reg
        self.store = DownlinkStore(str(tmp / "registry.db"))
        cfg = {"role": "water_meter", "device_id": DEV, "key": KEY.hex(),
               "link": {"type": "uart" if path == PATH_SERIAL else "lora"},
               "water": {"sends_per_day": 4, "profile_len": 6}}
        (tmp / "node").mkdir()
        self.config = tmp / "node" / "config.json"
        self.config.write_text(json.dumps(cfg))
        self.board_ms = 5_000
        self.node = Downlink(Store(str(tmp / "node" / "state")), DEV, str(self.config),
                             lambda: self.board_ms, str(tmp / "node" / "upd"),
                             str(tmp / "node" / "lib"))
        self.link = Link(self.node)
        self.status: list[Command] = []
        self.counters = Counters()
        self.service = DownlinkService(self.store, {"src": self.link}, self.counters,
                                       lambda c, k: self.status.append(c), auto_ack=auto_ack)
        self.path = path
        self.fcnt = 0
        self.pipeline = Pipeline(reg.snapshot())

    def uplink(self, *, end_s: float | None = None, alarm: int = 0) -> Uplink:
        """The node sends its next uplink (its report as the frame's ``dl`` field, sealed
        with the key the node uses); the real pipeline verifies it, the worker handles it."""
        self.fcnt += 1
        report = self.node.report()
        values: dict[str, Any] = {"index": 1000, "profile_end_h": 3, "battery": 19,
                                  "profile": [1], "alarms": alarm}
        if report is not None:
            values["dl"] = report
        self.pipeline.next_keys = self.store.next_keys()
        self.pipeline.update_devices(self.registry.snapshot())
        raw = frame.encode("water_meter", DEV, self.fcnt, values, self.node.uplink_key())
        end = time.time() if end_s is None else end_s
        receiver: dict[str, Any] = {"source": "src"}
        if self.path == PATH_PKTFWD:
            receiver.update(freq_hz=868100000, sf=9, gateway_eui="aa", tmst=1)
        verdict = self.pipeline.submit(Reception(
            "src", "radio" if self.path == PATH_PKTFWD else "serial", raw, end, 0.0,
            receiver))
        assert verdict.status == "pending", verdict
        up = uplink_from(self.pipeline.drain()[0])
        assert up.path == self.path and up.end_s == end
        self.node.uplink_sent(self.fcnt, self.board_ms)
        self.node.report_sent()
        self.service.handle(up)
        return up

    def states(self) -> dict[int, tuple[str, str | None]]:
        return {c.cmd_id: (c.state, c.result) for c in self.store.commands(DEV)}

    def close(self) -> None:
        self.store.close()
        self.registry.close()


@pytest.fixture
def loop(tmp_path: Path) -> Any:
    lp = Loop(tmp_path)
    yield lp
    lp.close()


def test_clock_request_is_answered_with_the_end_of_that_uplink(loop: Loop) -> None:
    assert loop.node.now_ms() is None
    loop.board_ms = 123_456                 # the node's own time source, far from real time
    end_s = 1796158014.123
    loop.uplink(end_s=end_s)
    assert loop.link.results == [None]
    assert loop.node.offset_ms == round(end_s * 1000) - 123_456
    loop.board_ms += 60_000
    assert loop.node.now_ms() == round(end_s * 1000) + 60_000
    loop.uplink()                           # the report: applied; no clock flag any more
    assert list(loop.states().values()) == [("applied", None)]
    assert len(loop.link.sent) == 1
    assert loop.counters.get("downlinks_applied") == 1


def test_config_applied_and_refused_values_reported(loop: Loop) -> None:
    loop.uplink()                                        # clock
    ok, _ = loop.store.queue(DEV, "config", {"values": {"1": 2, "2": 12}})
    air, _ = loop.store.queue(DEV, "config", {"values": {"8": 600}})
    loop.uplink()
    loop.uplink()
    states = loop.states()
    assert states[ok.cmd_id] == ("applied", None)
    assert states[air.cmd_id] == ("rejected", "cmd_key")
    rejected = loop.store.get(DEV, air.cmd_id)
    assert rejected is not None and rejected.detail == 8
    cfg = json.loads(loop.config.read_text())
    assert cfg["water"]["sends_per_day"] == 2 and cfg["water"]["profile_len"] == 12


def test_lost_downlink_is_sent_again_under_a_new_counter(loop: Loop) -> None:
    loop.uplink()
    loop.uplink()                                        # clock applied
    cmd, _ = loop.store.queue(DEV, "reboot")
    lost = Link(loop.node)
    lost.transmit_downlink = lambda *a: None            # type: ignore[method-assign]
    loop.service.transmitters["src"] = lost
    loop.uplink()                                        # sent, never arrives
    assert loop.store.get(DEV, cmd.cmd_id).state == "sent"  # type: ignore[union-attr]
    loop.service.transmitters["src"] = loop.link
    loop.uplink()                                        # no report: sent again
    loop.uplink()
    assert loop.states()[cmd.cmd_id] == ("applied", None)
    assert loop.node.reboot
    counters = [dls.decode(f, KEY)["dcnt"] for f, _ in loop.link.sent]
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    assert loop.store.get(DEV, cmd.cmd_id).sends == 2  # type: ignore[union-attr]


def test_key_rotation_in_two_phases(loop: Loop) -> None:
    loop.uplink()
    loop.uplink()
    new = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
    rk = loop.store.begin_rekey(DEV, new)
    loop.uplink()                  # phase 1 sent under the old key; the node keeps both
    assert loop.node.key_next == new and loop.node.key == KEY
    up = loop.uplink()             # sealed with the new key: the gateway commits it
    assert up.under_next_key
    assert loop.store.device_key(DEV) == new and loop.store.next_keys() == {}
    assert loop.states()[rk.cmd_id] == ("applied", None)
    # rekey_done went out under the new key: the node dropped the old one
    last = loop.link.sent[-1][0]
    assert dls.decode(last, new)["commands"][0][1] == dls.OP_REKEY_DONE
    assert loop.node.key == new and loop.node.key_next is None
    loop.uplink()
    assert all(state == "applied" for state, _ in loop.states().values())


def test_alarm_acknowledged_when_configured(tmp_path: Path) -> None:
    lp = Loop(tmp_path, auto_ack=True)
    try:
        lp.node.alarm_raised(1)
        lp.uplink(alarm=1)
        assert lp.node.alarm_bits == 0
        assert [c.op for c in lp.store.commands(DEV)] == ["time", "ack"]
    finally:
        lp.close()


def test_packet_forwarder_window_rx1_then_rx2_when_the_budget_is_spent(
        tmp_path: Path) -> None:
    lp = Loop(tmp_path, path=PATH_PKTFWD)
    try:
        lp.uplink()
        assert lp.link.sent[-1][1].name == "rx1"
        ledger = next(iter(lp.service._ledgers.values()))
        ledger.spend(868100000, 36_000.0, time.time())   # RX1's 1 % hour spent
        lp.store.queue(DEV, "reboot")
        lp.uplink()
        win = lp.link.sent[-1][1]
        assert (win.name, win.freq_hz, win.sf) == ("rx2", 869525000, 12)
    finally:
        lp.close()


def test_module_update_reaches_the_node_in_order(loop: Loop, tmp_path: Path) -> None:
    lib = tmp_path / "node" / "lib"
    for path, text in (("firmware/__init__.py", ""), ("firmware/app.py", "APP = 1\n"),
                       ("protocol/__init__.py", "")):
        (lib / path).parent.mkdir(parents=True, exist_ok=True)
        (lib / path).write_text(text)
    module = b"APP = 2\n" + b"# padding\n" * 60
    bundle = dls.bundle([("firmware/app.py", module)])
    loop.uplink()
    loop.uplink()                                          # clock out of the way
    cmds = loop.store.queue_update(DEV, bundle, 192)
    chunks = -(-len(bundle) // 192)
    assert [c.op for c in cmds] == ["upd_begin"] + ["upd_chunk"] * chunks + ["upd_switch"]
    for _ in range(chunks + 3):
        loop.uplink()
    states = loop.states()
    assert all(states[c.cmd_id] == ("applied", None) for c in cmds), states
    assert loop.node.reboot
    from firmware import downlink_update

    folder, rolled = downlink_update.boot_hook(str(tmp_path / "node" / "upd"))
    assert rolled is None and (Path(folder) / "firmware/app.py").read_bytes() == module
    sizes = [len(f) for f, _ in loop.link.sent]
    print(f"update of {len(bundle)} bytes in downlinks of {sizes} bytes")
    assert max(sizes) <= dls.MAX_DOWNLINK


def test_too_late_for_rx1_takes_rx2_and_too_late_for_both_waits(tmp_path: Path) -> None:
    lp = Loop(tmp_path, path=PATH_PKTFWD)
    try:
        lp.uplink(end_s=time.time() - 1.5)           # RX1 opened half a second ago
        assert [w.name for _, w in lp.link.sent] == ["rx2"]
        lp.store.queue(DEV, "reboot")
        lp.uplink(end_s=time.time() - 5)             # both windows are gone
        assert len(lp.link.sent) == 1
        assert lp.counters.get("downlink_no_window") == 1
        assert [c.state for c in lp.store.commands(DEV)][-1] == "queued"
    finally:
        lp.close()
