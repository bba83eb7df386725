"""``knute gateway run`` as a real process: a flood of copies of one frame makes one
bounded reading, and ids stay unique across counter resets, restarts and
re-provisioning (``knute devices reset-counter`` on the running gateway)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knute.protocol import frame
from knute.tools.rig.ptys import Pty
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.gateway.pf_client import PacketForwarder, push_data, rxpk
from tests.gateway.test_daemon import KEY, METER, Gateway, Subscriber, rec

NEW_KEY = bytes(range(100, 116))


def meter(fcnt: int, index: int, key: bytes = KEY) -> bytes:
    """A water-meter frame of METER whose content is set by ``index``."""
    return frame.encode("water_meter", METER, fcnt, {"index": index, "profile_end_h": 3,
                                                     "battery": 19, "profile": [fcnt % 50]}, key)


@pytest.fixture
def rig(tmp_path: Path, knute_bin: Path, mosquitto: Broker) -> Iterator[dict[str, Any]]:
    """A registered gateway (not started) on the test broker, its ptys and a subscriber."""
    gw = Gateway(tmp_path, mosquitto.port)
    wired = Pty(tmp_path / "ttyWIRED")
    bridge = Pty(tmp_path / "ttyBRIDGE")
    sub = Subscriber(mosquitto)
    pf = PacketForwarder("127.0.0.1", gw.udp_port)
    try:
        yield {"gw": gw, "wired": wired, "sub": sub, "pf": pf}
    finally:
        gw.close()
        sub.disconnect()
        pf.close()
        wired.close()
        bridge.close()


def test_a_flood_of_copies_makes_one_reading_with_bounded_receivers(
        rig: dict[str, Any]) -> None:
    gw, sub, pf = rig["gw"], rig["sub"], rig["pf"]
    # A long dedup window so that the whole flood lands in it, even on a busy machine;
    # max_receivers is left at its default (8).
    text = gw.config.read_text().replace("dedup_window_ms = 200", "dedup_window_ms = 5000")
    gw.config.write_text(text)
    gw.start()
    buf = meter(30, 5000)
    copies = 0
    for burst in range(25):               # 25 PUSH_DATA of 40 copies: 1,000 receivers
        packets = [rxpk(buf, lsnr=-10.0 + (burst * 40 + i) % 97 / 10, rssi=-120 + i,
                        tmst=burst * 1000 + i) for i in range(40)]
        if burst == 7:
            packets[3] = rxpk(buf, lsnr=13.5, rssi=-71, tmst=424242)    # the best one
        _token, dgram = push_data(pf.eui, {"rxpk": packets})
        pf.send_raw(dgram)
        copies += len(packets)
    readings = wait_for(lambda: [m for m in sub.readings() if m["fcnt"] == 30], timeout=30,
                        what="the flooded reading")
    st = gw.status()
    assert st["totals"]["accepted"] == 1
    merged = st["totals"]["merged"]
    duplicates = st["sources"]["concentrator"]["rejected_by_reason"].get("duplicate", 0)
    assert merged + duplicates == copies - 1          # every copy accounted for
    (reading,) = readings
    assert len(reading["receivers"]) == 8
    assert reading["receivers_dropped"] == merged + 1 - 8
    assert any(r.get("tmst") == 424242 for r in reading["receivers"])   # the best is kept
    assert len(json.dumps(reading, separators=(",", ":"))) < 3000
    assert gw.stop() == 0


def published_once_per_id(readings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """id -> reading; fails if one id ever came with different content."""
    by_id: dict[str, dict[str, Any]] = {}
    for m in readings:
        seen = by_id.setdefault(m["id"], m)
        assert seen == m, f"id {m['id']} names two different readings:\n{seen}\n{m}"
    return by_id


def test_ids_are_never_reused_across_counter_resets(rig: dict[str, Any]) -> None:
    gw, wired, sub = rig["gw"], rig["wired"], rig["sub"]
    gw.start()
    name = f"{METER:08x}"
    for fcnt in range(20, 25):
        wired.write(rec(meter(fcnt, 1000 + fcnt)))
    wait_for(lambda: {f"{name}:{f}" for f in range(20, 25)} <= sub.ids(), what="epoch 0")
    # The node loses its state and counts from 1 again: refused until the operator says so.
    wired.write(rec(meter(1, 2001)))
    wait_for(lambda: gw.rejected("wired").get("counter_reset"), what="counter_reset")
    gw.devices("reset-counter", name)
    for fcnt in range(1, 6):
        wired.write(rec(meter(fcnt, 2000 + fcnt)))
    wait_for(lambda: {f"{name}:1:{f}" for f in range(1, 6)} <= sub.ids(), what="epoch 1")
    # The same reading heard again (another receiver, after its window): one id, once.
    wired.write(rec(meter(5, 2005)))
    wait_for(lambda: gw.rejected("wired").get("duplicate"), what="duplicate")
    # A restart keeps the epoch; a second reset starts the next one.
    assert gw.stop() == 0
    gw.start()
    wired.write(rec(meter(6, 2006)))
    wait_for(lambda: f"{name}:1:6" in sub.ids(), what="epoch 1 after a restart")
    gw.devices("reset-counter", name)
    for fcnt in range(1, 4):
        wired.write(rec(meter(fcnt, 3000 + fcnt)))
    wait_for(lambda: {f"{name}:2:{f}" for f in range(1, 4)} <= sub.ids(), what="epoch 2")
    # Re-provisioning: a new key, the counter from 0 again, and the same reset.
    gw.devices("remove", name)
    gw.devices("add", name, "--kind", "water_meter", "--key", NEW_KEY.hex())
    gw.devices("reset-counter", name)
    for fcnt in range(0, 3):
        wired.write(rec(meter(fcnt, 4000 + fcnt, key=NEW_KEY)))
    wait_for(lambda: {f"{name}:3:{f}" for f in range(0, 3)} <= sub.ids(),
             what="epoch 3 after re-provisioning")
    by_id = published_once_per_id(sub.readings())
    assert len(by_id) == 5 + 6 + 3 + 3
    indexes = [m["readings"]["index"]["value"] for m in by_id.values()]
    assert len(set(indexes)) == len(indexes)          # every reading published once
    assert {m.get("epoch", 0) for m in by_id.values()} == {0, 1, 2, 3}
    assert gw.stop() == 0
    out = subprocess.run([str(gw.knute), "gateway", "parked", "--config", str(gw.config),
                          "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["parked"] == 0
