"""A LoRa node's own data-rate back-off (docs/radio.md, "A node's own back-off").

A water meter on the unix port, provisioned at SF9 and 14 dBm, is moved to SF7
and 10 dBm by a downlink and then hears nothing: after ACK_LIMIT uplinks it asks
for the clock, after ACK_LIMIT + ACK_DELAY it restores its power, after each
further ACK_DELAY it raises its SF by one, up to the provisioned SF and no
further. An answer resets the count and keeps the settings reached. A power cut
in the middle of a step's write leaves the record before the step, which the
next boot runs on. The test plays the gateway through the bench radio files
(tests/firmware/test_node_downlink.py's Air); both builds.
"""

from __future__ import annotations

import json
from typing import Any

from firmware import downlink_window
from knute.protocol import downlink as dl
from knute.tools.rig.node import KEY, Air
from tests.firmware.conftest import NodeFactory
from tests.firmware.test_node_downlink import DEVICE, lora_water

LIMIT = downlink_window._ACK_LIMIT
DELAY = downlink_window._ACK_DELAY


def _lowered_node(bench_node: NodeFactory, **bench: Any) -> tuple[Any, Air, int]:
    """A node at SF9/14 dBm moved to SF7/10 dBm by downlink 1; (node, air, its dcnt)."""
    cfg = lora_water()
    cfg["radio"]["sf"] = 9
    cfg["bench"].update(bench)
    node = bench_node(cfg)
    air = Air(node)
    node.start()
    first, end_ms = air.uplink(node.proc)
    assert air.sf == 9 and first["values"]["dl"] == [3]     # want + clock: never set
    air.answer(end_ms + 1000, dl.encode(DEVICE, 1, [
        dl.clock(7, first["fcnt"], 1_800_000_000, 0), dl.config(8, {11: 7, 12: 10})], KEY))
    return node, air, 1


def _asks(got: dict[str, Any]) -> bool:
    """Whether the uplink asks for the clock (its alarm flags aside)."""
    return bool(got["values"].get("dl", [0])[0] & dl.FLAG_CLOCK)


def _unanswered(node: Any, air: Air) -> tuple[dict[str, Any], int]:
    """The next uplink, left without an answer (a TX line after both its windows)."""
    got, end_ms = air.uplink(node.proc)
    with air.down.open("a") as handle:
        handle.write(f"TX {end_ms + 3000} 0 0 00\n")
    return got, end_ms


def _stop(node: Any, air: Air) -> None:
    """End the node in the first window of its next uplink, waiting for an answer.

    The uplink before it has then had its windows and its count (and the count's
    write, at a threshold). On the stepped clock a node told silence() would run
    on at the machine's speed and could take a further step before the kill.
    """
    air.uplink(node.proc)
    node.close()


def test_backoff_asks_for_the_clock_then_steps_back_and_an_answer_resets_it(
        bench_node: NodeFactory, upy_bits: int) -> None:
    node, air, dcnt = _lowered_node(bench_node)
    seen: list[tuple[int, Any]] = []
    for _ in range(LIMIT + 2 * DELAY):
        got, end_ms = _unanswered(node, air)
        seen.append((air.sf, _asks(got)))
    console = node.console()
    assert [sf for sf, _ in seen] == [7] * (LIMIT + 2 * DELAY), console
    # No clock request until the limit, then one in every uplink.
    assert [asks for _, asks in seen] == [False] * LIMIT + [True] * (2 * DELAY), console
    # (each step is logged after its uplink's windows, so waited for)
    node.wait_line(f"no downlink heard in {LIMIT + DELAY} uplinks: back to sf=7 power_dbm=14")
    node.wait_line(f"no downlink heard in {LIMIT + 2 * DELAY} uplinks: back to sf=8 "
                   "power_dbm=14")
    assert node.state("adr") == [9, 14, 7, 10, 8, 14, LIMIT + 2 * DELAY, dcnt]
    # At SF8 now, still asking; the gateway answers the clock request in RX1.
    asking, end_ms = air.uplink(node.proc)
    assert air.sf == 8 and _asks(asking), console
    air.answer(end_ms + 1000, dl.encode(DEVICE, 2, [
        dl.clock(9, asking["fcnt"], 1_800_000_000, 0)], KEY))
    # Heard: the count starts again, the node stays where its back-off got it.
    after = []
    for _ in range(LIMIT):
        got, _end = _unanswered(node, air)
        after.append((air.sf, _asks(got)))
    _stop(node, air)
    console = node.console()
    assert "downlink 2 applied" in console, console
    assert after == [(8, False)] * LIMIT, console
    rec = node.state("adr")
    assert rec[:6] == [9, 14, 7, 10, 8, 14] and rec[6] >= LIMIT, rec
    # config.json keeps what the gateway set: the back-off lives in state/adr.json.
    radio = json.loads((node.dir / "config.json").read_text())["radio"]
    assert (radio["sf"], radio["power_dbm"]) == (7, 10)


def test_backoff_never_goes_past_the_provisioned_settings(
        bench_node: NodeFactory, upy_bits: int) -> None:
    node, air, dcnt = _lowered_node(bench_node)
    sfs = []
    for _ in range(LIMIT + 4 * DELAY + 2):
        got, _end = _unanswered(node, air)
        sfs.append((air.sf, _asks(got)))
    _stop(node, air)
    # power at +DELAY, SF8 at +2 DELAY, SF9 (provisioned) at +3 DELAY; then no more.
    want = [7] * (LIMIT + 2 * DELAY) + [8] * DELAY + [9] * (DELAY + 2)
    assert [sf for sf, _ in sfs] == want, node.console()
    # At the provisioned settings the node no longer asks.
    assert [asks for _, asks in sfs[-DELAY - 2:]] == [False] * (DELAY + 2), node.console()
    assert node.state("adr") == [9, 14, 7, 10, 9, 14, LIMIT + 3 * DELAY, dcnt]


def test_a_power_cut_in_a_steps_write_leaves_the_record_before_it(
        bench_node: NodeFactory, upy_bits: int) -> None:
    # The boot after the apply writes adr.json at LIMIT (1st) and at the step (2nd).
    node, air, dcnt = _lowered_node(bench_node, pause_writes_ms=1, pause_writes_of=["adr"],
                                    hold_write=["adr", 2])
    for _ in range(LIMIT + DELAY):
        _unanswered(node, air)
    node.wait_line("holding the adr write")
    node.kill9()
    assert (node.dir / "state" / "adr.tmp").exists()
    assert node.state("adr") == [9, 14, 7, 10, 7, 10, LIMIT, dcnt]
    # The next boot: the old record stands whole and the node runs on it.
    cfg = json.loads((node.dir / "config.json").read_text())
    del cfg["bench"]["hold_write"]
    node.write_config(cfg)
    seen = air.seen
    air = Air(node)
    air.seen = seen
    node.start()
    got, _end = _unanswered(node, air)
    got2, _end = _unanswered(node, air)
    _stop(node, air)
    console = node.console()
    assert "state/adr: a write was cut short" in console, console
    assert air.sf == 7 and _asks(got), console
    assert not (node.dir / "state" / "adr.tmp").exists()
    rec = node.state("adr")
    assert rec[:6] == [9, 14, 7, 10, 7, 10], rec
    assert _asks(got2), console
