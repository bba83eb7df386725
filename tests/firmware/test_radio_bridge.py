"""The radio_bridge role and LoRa nodes on the bench radio, end to end."""

from __future__ import annotations

from typing import Any

from knute.protocol import frame, stream
from knute.tools.rig.node import HOUR_T0, KEY, KEY_HEX, pulse_lines, water_config
from tests.firmware.conftest import NodeFactory

# A LoRa node carries protocol.airtime and the duty-cycle ledger instead of the
# stream framing; like the wired nodes and the bridge it runs in the bench_node
# heap: 64 KiB on the 64-bit unix port, 48 KiB on the 32-bit build
# (docs/firmware.md, "Memory").


def bridge_config(**radio: Any) -> dict[str, Any]:
    """A radio_bridge config on the bench: radio lines from radio.txt.

    The tests write the file whole before the bridge starts, so the stepped clock
    (time_scale 0) serves: the bridge reads every line, and only its waits for more
    (500 simulated ms each) move the clock to the stop, at no real time. (On the
    real-time clock each run was 2 s of waiting.)
    """
    section = {"freq_hz": 868300000, "sf": 9}
    section.update(radio)
    return {
        "role": "radio_bridge", "device_id": 1, "board": "unix",
        "link": {"type": "uart", "uart": "link"}, "radio": section,
        "bench": {"radio": {"path": "radio.txt"}, "time_scale": 0, "stop_after_s": 2},
    }


def _radio_records(records: list[tuple[int, bytes]]) -> list[tuple[dict[str, Any], bytes]]:
    return [stream.unpack_radio(body) for rtype, body in records if rtype == stream.REC_RADIO]


def test_bridge_forwards_packets_with_rssi_snr_frequency(bench_node: NodeFactory) -> None:
    good = [frame.encode("water_meter", 77, n, {"index": 10 + n, "profile_end_h": 3,
                                                "alarms": 0, "battery": 19, "profile": [n]}, KEY)
            for n in range(2)]
    lines = [
        "RX -97 7.25 " + good[0].hex(),
        "# a comment line",
        "RX -120 -12.5 " + bytes(range(40)).hex(),   # some other LoRa network: dropped
        "RX -61 9 " + good[1].hex(),
        "RX nonsense",
    ]
    cfg = bridge_config()
    cfg["link"]["log"] = True
    node = bench_node(cfg)
    (node.dir / "radio.txt").write_text("\n".join(lines) + "\n")
    node.start()
    assert node.wait() == 0, node.console()
    records = node.records()
    got = _radio_records(records)
    logs = [body.decode() for rtype, body in records if rtype == stream.REC_LOG]
    assert any("radio_bridge: listening on 868300000 Hz SF9" in line for line in logs)
    assert [meta["rssi_dbm"] for meta, _ in got] == [-97, -61]
    # SNR comes from the radio in dB * 4 and goes on the wire in dB * 10.
    assert [meta["snr_db"] for meta, _ in got] == [7.3, 9.0]
    assert all(meta["freq_hz"] == 868300000 and meta["sf"] == 9 for meta, _ in got)
    assert [bytes(body) for _, body in got] == good
    assert frame.decode(got[1][1], KEY)["values"]["index"] == 11
    assert ("status dropped=1 forwarded=2 heard=3 link_errors=0 sent=0 tx_dropped=0"
            in node.console())


def test_lora_meter_through_bridge_to_the_gateway_link(bench_node: NodeFactory) -> None:
    meter_cfg = water_config(sends_per_day=24, profile_len=1)
    meter_cfg["link"] = {"type": "lora"}
    meter_cfg["radio"] = {"freq_hz": 868100000, "sf": 12}
    meter_cfg["send_phase_s"] = 0       # at the hour: the three sends fit the run
    # The stepped clock (time_scale 0): on the scaled one (10 h a second) a loaded machine
    # that held the node back a tenth of a second moved its sends past an hour's pulses.
    meter_cfg["bench"].update({"radio": {"path": "air.txt"}, "radio_rssi_dbm": -104,
                               "radio_snr_db": -3.5, "stop_after_s": 3 * 3600 + 600,
                               "time_scale": 0})
    meter = bench_node(meter_cfg, name="meter")
    (meter.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [5, 6, 7], 6))
    meter.start()
    assert meter.wait() == 0, meter.console()
    air = (meter.dir / "air.txt").read_text()
    assert len(air.splitlines()) == 3
    assert "toa_ms=" in meter.console()

    bridge = bench_node(bridge_config(freq_hz=868100000, sf=12), name="bridge")
    (bridge.dir / "radio.txt").write_text(air)
    bridge.start()
    assert bridge.wait() == 0, bridge.console()
    got = _radio_records(bridge.records())
    decoded = [frame.decode(body, bytes.fromhex(KEY_HEX)) for _, body in got]
    assert [d["values"]["profile"] for d in decoded] == [[5], [6], [7]]
    # The index is read at send time: it may include the next hour's first pulse.
    indexes = [d["values"]["index"] for d in decoded]
    assert indexes[0] in (5, 6) and indexes[1] in (11, 13) and indexes[2] == 18
    assert {(m["rssi_dbm"], m["snr_db"], m["sf"]) for m, _ in got} == {(-104, -3.5, 12)}
    assert [d["values"]["profile_end_h"] for d in decoded] == [
        (HOUR_T0 // 3600 + h) % 256 for h in (1, 2, 3)]


def test_duty_cycle_defers_and_counts(bench_node: NodeFactory) -> None:
    # g2 (868.7-869.2 MHz) allows 0.1 %: 3.6 s an hour. An SF12 frame at coding
    # rate 4/8 takes over 1.8 s, so two never fit in one hour. A tamper alarm that no gateway
    # acknowledges is sent again 30 minutes after its frame (firmware.downlink):
    # that second frame of the hour cannot fit and must wait until the first
    # leaves the hour. The stepped bench clock (time_scale 0) moves only when
    # the node sleeps, so the schedule is the same however loaded the machine.
    cfg = water_config(sends_per_day=24, profile_len=24, tamper="tamper")
    cfg["downlink"] = True
    cfg["link"] = {"type": "lora"}
    cfg["radio"] = {"freq_hz": 868900000, "sf": 12, "cr": 8}
    cfg["jitter_s"] = 0
    cfg["send_phase_s"] = 0
    cfg["bench"].update({"radio": {"path": "air.txt"}, "pin": {"tamper": "tamper.txt"},
                         "stop_after_s": 2 * 3600 + 600, "time_scale": 0})
    # The LoRa water meter's receive windows need more than 64 KiB on the 64-bit port:
    # with downlinks on the node gets the heap of board_heap.bench_heap.
    node = bench_node(cfg)
    (node.dir / "pulses.txt").write_text(pulse_lines(HOUR_T0, [300] * 3, 6))
    (node.dir / "tamper.txt").write_text("1\n")
    node.start()
    assert node.wait() == 0, node.console()
    console = node.console()
    sent = [line for line in console.splitlines() if "knute: sent fcnt=" in line]
    assert len(sent) == len((node.dir / "air.txt").read_text().splitlines())
    airtime = []
    for line in sent:
        fields = dict(item.split("=") for item in line.split()[2:])
        airtime.append((int(fields["fcnt"]), int(fields["t"]), int(fields["toa_ms"])))
    assert len(airtime) >= 2 and min(toa for _, _, toa in airtime) > 1800, airtime
    (fcnt1, end1, _), (fcnt2, end2, _) = airtime[:2]
    # The repeat, due 30 minutes after the first frame, was deferred in g2 until
    # the first frame left the hour, and counted.
    deferred = [line for line in console.splitlines() if "knute: deferred" in line]
    assert deferred and deferred[0].startswith(f"knute: deferred fcnt={fcnt2}: sub-band g2 "), \
        console
    assert fcnt2 == fcnt1 + 1 and end2 == end1 + 3600, airtime
    # Never more than 3.6 s on air in any hour (the window ending at each send).
    for _, end, _ in airtime:
        assert sum(toa for _, t, toa in airtime if end - 3600 < t <= end) <= 3600, airtime
