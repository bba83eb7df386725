"""Nodes receive downlinks in their receive windows on the unix port (docs/protocol.md 12).

The test plays the gateway through the bench radio files: it reads each uplink
line the node appends (``RX ... <end_ms>``), builds the answer with
protocol.downlink_send and appends ``TX <start_ms> <freq> <sf> <hex>`` to the
node's ``rx_path`` for the node's RX1 (or RX2) window. The node waits up to
``rx_wait_real_ms`` of real time for it with its clock held, so the answer
arrives in the window whatever the machine's load; the clock is the stepped one
(bench ``time_scale`` 0), so the hours between sends take no real time. Every
test runs on the 64-bit and the 32-bit build.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from firmware import context, downlink_window
from knute.protocol import downlink as dl
from knute.protocol import frame, stream
from knute.tools.rig.node import HOUR_T0, KEY, LORA_FREQ, LORA_SF, Air, water_config
from tests.firmware.conftest import NodeFactory

DEVICE = 4660
# Nodes with downlinks on run in 64 KiB on the 32-bit build and the smallest
# supported board's heap on the 64-bit port (the one rule,
# knute.tools.board_heap.bench_heap); what each role needs at least is
# measured by tests/firmware/test_downlink_roles_heap.py.
DAYS3_MS = 3 * 86400 * 1000
FREQ = LORA_FREQ       # the channel and SF of the bench air (Air)
SF = LORA_SF
WAIT_S = 60.0
# The stepped bench clock (time_scale 0): it moves only when the node sleeps, and a
# window waits up to RX_WAIT_REAL_MS of real time for the test's answer with the clock
# standing, so the node and the test go in lock step: an hour between two sends
# costs no real time, and no load can make an answer late or move a send. (On the
# scaled clock, 3600x, every uplink was a real second of waiting: the back-off runs of
# tests/firmware/test_adr_backoff.py waited 27 s each.) The test ends the node itself
# (close), and every window it opens gets an answer or silence(); after silence() the
# node would run on at the machine's speed, so the stop comes well after the longest
# test's 30-odd simulated hours without letting a runaway node send for days.
RX_WAIT_REAL_MS = 300000
STOP_AFTER_S = 100 * 3600


def lora_water(**water: Any) -> dict[str, Any]:
    """A LoRa water meter sending every hour, with the bench radio files of Air."""
    cfg = water_config(sends_per_day=24, profile_len=1, **water)
    cfg["downlink"] = True
    cfg["link"] = {"type": "lora"}
    cfg["radio"] = {"freq_hz": FREQ, "sf": SF}
    cfg["bench"].update({"radio": {"path": "air.txt", "rx_path": "dl.txt"},
                         "rx_wait_real_ms": RX_WAIT_REAL_MS, "time_scale": 0,
                         "stop_after_s": STOP_AFTER_S})
    return cfg


def test_clock_3_days_off_is_set_in_rx1_and_profile_hours_are_right_after(
        bench_node: NodeFactory, upy_bits: int) -> None:
    cfg = lora_water()
    cfg["bench"]["start_time"] = HOUR_T0 - DAYS3_MS // 1000   # the board's clock: 3 days slow
    node = bench_node(cfg)
    air = Air(node)
    node.start()
    first, end_ms = air.uplink(node.proc)
    true_end_ms = end_ms + DAYS3_MS
    # Before: the node asks for the time (want + clock) and its hours are 3 days off.
    assert first["values"]["dl"] == [3]
    assert first["values"]["profile_end_h"] == (end_ms // 3_600_000) % 256
    down = dl.encode(DEVICE, 1, [dl.clock(7, first["fcnt"], true_end_ms // 1000,
                                          true_end_ms % 1000),
                                 dl.config(8, {4: 12})], KEY)
    air.answer(end_ms + 1000, down)                              # RX1
    second, end2_ms = air.uplink(node.proc)
    air.silence()
    third, end3_ms = air.uplink(node.proc)
    node.close()
    console = node.console()
    assert "downlink 1 applied" in console, console
    # After one exchange: the profile's hour is the true hour of the send.
    for got, end in ((second, end2_ms), (third, end3_ms)):
        assert got["values"]["profile_end_h"] == ((end + DAYS3_MS) // 3_600_000) % 256, console
    # The report: the clock command (7) and the config (8) applied; then nothing to say.
    assert second["values"]["dl"] == [0, 7 << 8, 8 << 8]
    assert "dl" not in third["values"]
    config = json.loads((node.dir / "config.json").read_text())
    assert config["water"]["leak_hours"] == 12
    assert node.state("clock") == {"offset_ms": DAYS3_MS}


def test_rx2_answer_and_an_answer_outside_the_windows(bench_node: NodeFactory,
                                                      upy_bits: int) -> None:
    node = bench_node(lora_water())
    air = Air(node)
    node.start()
    _first, end_ms = air.uplink(node.proc)
    # 300 ms late for RX1 (SF7 opens 8 symbols, about 8 ms): not heard; RX2 is.
    air.answer(end_ms + 1300, dl.encode(DEVICE, 1, [dl.ack_alarm(1, 1)], KEY))
    air.answer(end_ms + 2000, dl.encode(DEVICE, 2, [dl.config(2, {5: 30})], KEY),
               freq=869525000, sf=12)
    second, _ = air.uplink(node.proc)
    air.silence()
    node.close()
    assert second["values"]["dl"] == [3, 2 << 8], node.console()
    assert json.loads((node.dir / "config.json").read_text())["water"]["dry_days"] == 30


def test_hostile_downlinks_are_dropped_with_their_reasons(bench_node: NodeFactory,
                                                          upy_bits: int) -> None:
    node = bench_node(lora_water())
    air = Air(node)
    node.start()
    good = dl.encode(DEVICE, 5, [dl.ack_alarm(1, 1)], KEY)
    hostile = [
        ("dl_forged", dl.encode(DEVICE, 6, [dl.config(2, {4: 3})], bytes(16))),
        ("dl_replay", good),
        ("dl_order", dl.encode(DEVICE, 4, [dl.config(3, {4: 3})], KEY)),
        ("dl_short", good[:12]),
        ("dl_long", good[:8] + bytes(215)),
        ("dl_device", dl.encode(DEVICE + 1, 9, [dl.config(4, {4: 3})], KEY)),
        ("dl_format", b"\x41" + good[1:]),
    ]
    _, end_ms = air.uplink(node.proc)
    air.answer(end_ms + 1000, good)
    for _reason, raw in hostile:
        _, end_ms = air.uplink(node.proc)
        air.answer(end_ms + 1000, raw)
    # Authentic, but every value out of range or not this node's: refused, reported.
    _, end_ms = air.uplink(node.proc)
    air.answer(end_ms + 1000, dl.encode(DEVICE, 10, [dl.config(11, {1: 5}),
                                                     dl.config(12, {8: 600}),
                                                     [13, 77]], KEY))
    last, _ = air.uplink(node.proc)
    air.silence()
    node.close()
    console = node.console()
    for reason, _raw in hostile:
        assert f"downlink dropped: {reason}" in console, (reason, console)
    # sends_per_day 5 does not divide 24 (cmd_range, detail code 1); air.interval_s
    # is not a water meter's (cmd_key, code 8); op 77 is unknown (cmd_unknown).
    assert last["values"]["dl"][1:] == [
        dl.report_entry(11, dl.CMD_RANGE, 1), dl.report_entry(12, dl.CMD_KEY, 8),
        dl.report_entry(13, dl.CMD_UNKNOWN)]
    config = json.loads((node.dir / "config.json").read_text())
    assert "leak_hours" not in config["water"] and config["water"]["sends_per_day"] == 24
    assert node.state("dcnt") == {"last": 10}


def test_uart_node_gets_its_downlink_as_a_frame_record(bench_node: NodeFactory) -> None:
    cfg = water_config(sends_per_day=24, profile_len=1)
    cfg["downlink"] = True
    cfg["bench"].update({"rx_wait_real_ms": RX_WAIT_REAL_MS, "time_scale": 0,
                         "stop_after_s": STOP_AFTER_S})
    node = bench_node(cfg)
    node.start()
    reader = node.ptys["link"]
    first = node.link_frame(0, WAIT_S)
    down = dl.encode(DEVICE, 1, [dl.config(5, {3: 9000})], KEY)
    os.write(reader.master, stream.encode_record(stream.REC_FRAME, down))
    second = node.link_frame(1, WAIT_S)
    node.kill9()
    assert first["values"]["dl"] == [3]
    assert second["values"]["dl"] == [3, 5 << 8], node.console()
    assert json.loads((node.dir / "config.json").read_text())["water"]["burst_lph"] == 9000


def test_bridge_transmits_tx_records_in_the_devices_window(bench_node: NodeFactory) -> None:
    bridge_cfg = {
        "role": "radio_bridge", "device_id": 1, "board": "unix",
        "link": {"type": "uart", "uart": "link"},
        "radio": {"freq_hz": FREQ, "sf": SF},
        # Its statistics line every 10 simulated s, a tenth of a real second: the test
        # reads the counters there and ends the bridge, instead of racing the six
        # records to a stop time (100 simulated s at 10x: 10 real s of waiting).
        # stop_after_s is only an upper bound.
        "bridge": {"stats_s": 10},
        "bench": {"radio": {"path": "air.txt", "rx_path": "meter_dl.txt"}, "time_scale": 100,
                  "stop_after_s": int(WAIT_S * 100)},
    }
    bridge = bench_node(bridge_cfg, name="bridge")
    up = frame.encode("water_meter", DEVICE, 3, {"index": 1, "profile_end_h": 2, "alarms": 0,
                                                 "battery": 20, "profile": [1]}, KEY)
    (bridge.dir / "air.txt").write_text(f"RX -90 5.5 {up.hex()} 1796158014123\n")
    bridge.start()
    reader = bridge.ptys["link"]
    deadline = time.monotonic() + WAIT_S
    while not any(r[0] == stream.REC_RADIO for r in list(reader.records)):
        assert time.monotonic() < deadline, bridge.console()
        time.sleep(0.01)
    down = dl.encode(DEVICE, 1, [dl.reboot(1)], KEY)
    records = [stream.pack_tx(0, FREQ, SF, down),                 # RX1 of the uplink heard
               stream.pack_tx(0, 869525000, 12, down),            # RX2
               stream.pack_tx(1796158020000, 868300000, 9, down),  # at a given time
               stream.pack_tx(0, 868500000, 9, down),             # no such window: dropped
               stream.pack_tx(0, FREQ, SF, dl.encode(99, 1, [dl.reboot(1)], KEY)),  # unheard
               bytes(5)]                                          # short: link_radio
    os.write(reader.master, b"".join(stream.encode_record(stream.REC_TX, r) for r in records))
    out = bridge.dir / "meter_dl.txt"
    deadline = time.monotonic() + WAIT_S
    while len(out.read_text().splitlines() if out.exists() else []) < 3:
        assert time.monotonic() < deadline, bridge.console()
        time.sleep(0.01)
    # The counters once all six records are through (a line may come between two).
    bridge.wait_line(r"radio_bridge: heard=1 .* sent=3 tx_dropped=3$")
    bridge.close()
    assert out.read_text().splitlines() == [
        f"TX 1796158015123 {FREQ} {SF} {down.hex()}",
        f"TX 1796158016123 869525000 12 {down.hex()}",
        f"TX 1796158020000 868300000 9 {down.hex()}"]
    assert "sent=3 tx_dropped=3" in bridge.console()


def test_a_bad_module_set_rolls_back_after_three_boots(bench_node: NodeFactory) -> None:
    cfg = water_config()
    # The stepped clock: no input here needs real time (0.7 s a run at 36000x).
    cfg["bench"].update({"stop_after_s": 7 * 3600, "time_scale": 0})
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text("")
    # An update switched to set s1, whose app cannot even be loaded.
    s1 = node.dir / "upd" / "s1"
    shutil.copytree(node.dir / "lib", s1)
    (s1 / "firmware" / "app.mpy").write_bytes(b"M\x06broken")
    (node.dir / "upd" / "manifest.json").write_text(json.dumps(
        {"active": "upd/s1", "previous": "", "upd_no": 1, "confirmed": False, "tries": 0}))
    for boot in range(3):
        node.start()
        assert node.wait() != 0, node.console()            # the new set crashes
        manifest = json.loads((node.dir / "upd" / "manifest.json").read_text())
        assert manifest["tries"] == boot + 1 and manifest["active"] == "upd/s1"
    node.lines.clear()
    node.start()
    assert node.wait() == 0, node.console()
    console = node.console()
    assert "module update 1 rolled back" in console
    assert len(node.frames()) >= 1
    manifest = json.loads((node.dir / "upd" / "manifest.json").read_text())
    assert manifest["active"] == "" and manifest["rolled_back"] == 1
    assert not s1.exists()


def test_a_good_module_set_is_confirmed_by_its_first_send(bench_node: NodeFactory) -> None:
    cfg = water_config()
    cfg["downlink"] = True          # updates come by downlink: a node that takes them
    cfg["bench"].update({"stop_after_s": 7 * 3600, "time_scale": 0})     # as above
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text("")
    s1 = node.dir / "upd" / "s1"
    shutil.copytree(node.dir / "lib", s1)
    (node.dir / "upd" / "manifest.json").write_text(json.dumps(
        {"active": "upd/s1", "previous": "", "upd_no": 1, "confirmed": False, "tries": 0}))
    node.start()
    assert node.wait() == 0, node.console()
    assert "module update confirmed" in node.console(), node.console()
    manifest = json.loads((node.dir / "upd" / "manifest.json").read_text())
    assert manifest["confirmed"] is True and manifest["active"] == "upd/s1"


def test_the_node_side_constants_are_the_protocols() -> None:
    assert (downlink_window._FLAG_WANT, downlink_window._FLAG_CLOCK, downlink_window._FLAG_ALARM,
            downlink_window._FLAG_REKEY, downlink_window._FLAG_UPDATE) == (
        dl.FLAG_WANT, dl.FLAG_CLOCK, dl.FLAG_ALARM, dl.FLAG_REKEY, dl.FLAG_UPDATE)
    from firmware import downlink_model

    assert downlink_window._ALARM_REPEATS == downlink_model._ALARM_REPEATS
    # 8 symbols: 8.2 ms at SF7, 262.2 ms at SF12 (docs/protocol.md 12.6), rounded up.
    assert downlink_window.window_ms(7, 125000) == 9
    assert downlink_window.window_ms(12, 125000) == 263
    assert context.SENT == "sent"


def test_the_report_flags_agree_with_firmware_downlink(tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    from firmware.downlink_model import Downlink
    from firmware.state import Store

    (tmp_path / "config.json").write_text(json.dumps({
        "role": "water_meter", "device_id": DEVICE, "key": KEY.hex(),
        "link": {"type": "lora"}}))
    monkeypatch.chdir(tmp_path)
    store = Store("state")
    cfg = {"device_id": DEVICE, "tag_len": 4, "key_bytes": KEY, "kind": "water_meter",
           "downlink": True}

    class Hal:
        clock_set = False
        offset_ms = 0

    ctx = context.Context(cfg, Hal(), store, None, None)
    node = Downlink(store, DEVICE, "config.json", lambda: 0)
    assert downlink_window.report(ctx, {"alarms": 0}) == node.report() == [3]
    store.put("dlrep", [256, 517])
    node = Downlink(store, DEVICE, "config.json", lambda: 0)
    Hal.clock_set = True
    node.clock_set = True
    node.offset_ms = 5
    assert downlink_window.report(ctx, {"alarms": 0}) == node.report() == [0, 256, 517]
    assert downlink_window.report(ctx, {"alarms": 1})[0] == dl.FLAG_WANT | dl.FLAG_ALARM


def test_bench_firmware_reports_window_energy_next_to_the_uplinks() -> None:
    from knute.tools.bench.firmware import window_energy

    water = window_energy("water_meter")
    # SF9: RX1 listens 33 ms (8 symbols), RX2 263 ms at SF12, per uplink.
    assert water["windows_ms"] == 33 + 263
    assert water["windows_uah_per_day"] == round(4 * 296 * 11.5 / 3600, 1)
    assert 0 < water["windows_uah_per_day"] < water["uplink_uah_per_day"]
    assert window_energy("air_quality")["sends_per_day"] == 144
