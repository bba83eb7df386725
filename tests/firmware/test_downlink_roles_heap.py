"""What the downlink path costs each role with an uplink, and the heap it runs in.

The serial water meter, the LoRa water meter and the air node on either link
each boot with ``downlink`` on, send, listen in their receive windows, apply a
downlink by the restart in place and send again with the report of it. Every
role does so in the project's 64 KiB on the 32-bit build (a board's word
size), and the serial water meter on the 64-bit port too; the LoRa water meter
and the air node do not fit 64 KiB on the 64-bit port yet and run in their
measured need there (docs/firmware.md, "The downlink path's heap", says where
they run out). A node that meets a MemoryError anywhere fails its test. The
heap figures each node prints (after boot, after its first send, after the
apply and after the next boot) are printed for that table: a benchmark, not a
limit. The runs themselves are knute.tools.bench.firmware_downlink's, the
same ones ``knute bench firmware`` measures.
"""

from __future__ import annotations

import pytest

from knute.tools.bench.firmware_downlink import CaseRun, run_case
from knute.tools.rig.node import KEY_HEX
from tests.firmware.conftest import NodeFactory

STAGES = ["after boot", "after the first send", "after the apply", "after boot"]


def _figures(name: str, run: CaseRun) -> None:
    """Print the node's heap lines for docs/firmware.md; fail on any MemoryError."""
    print(f"\n{name} ({run.node.heap}):")
    for what, used, free in run.figures:
        print(f"  {what:<24} {used:>7} B used {free:>7} B free")
    # A role that ran out of heap anywhere on the way fails here, even where it
    # recovered (the app logs a failed poll and carries on).
    assert "MemoryError" not in run.console, run.console
    assert [what for what, _u, _f in run.figures][:4] == STAGES, run.console


def test_serial_water_meter_takes_a_downlink_in_the_bench_heap(bench_node: NodeFactory,
                                                              upy_bits: int) -> None:
    run = run_case("water_meter", "uart", bench_node, upy_bits)
    _figures("water meter, serial", run)
    first, second = run.frames
    assert first["values"]["dl"] == [3]
    assert second["values"]["dl"] == [3, 5 << 8], run.console
    assert run.config()["water"]["burst_lph"] == 9000


def test_lora_water_meter_takes_a_downlink(bench_node: NodeFactory, upy_bits: int) -> None:
    run = run_case("water_meter", "lora", bench_node, upy_bits)
    _figures("water meter, LoRa", run)
    first, second, third = run.frames
    assert first["values"]["dl"] == [3]
    assert second["values"]["dl"] == [0, 7 << 8, 8 << 8], run.console
    assert "dl" not in third["values"]
    assert run.config()["water"]["leak_hours"] == 12


@pytest.mark.parametrize("link", ["uart", "lora"])
def test_air_node_takes_a_downlink(bench_node: NodeFactory, upy_bits: int, link: str) -> None:
    run = run_case("air_quality", link, bench_node, upy_bits)
    _figures(f"air quality, {link}, SDS011 + BME280", run)
    first, second = run.frames
    assert first["values"]["dl"] == [3]
    assert second["values"]["dl"] == [3, 5 << 8], run.console
    assert second["values"]["temperature"] == 251
    assert run.config()["air"]["interval_s"] == 120


def test_downlink_must_be_a_boolean() -> None:
    from firmware import config

    base = {"role": "water_meter", "device_id": 1, "key": KEY_HEX}
    assert config.validate(dict(base))["downlink"] is True     # on unless turned off
    assert config.validate(dict(base, downlink=False))["downlink"] is False
    assert config.validate(dict(base, downlink=True))["downlink"] is True
    with pytest.raises(config.ConfigError, match="downlink must be true or false"):
        config.validate(dict(base, downlink="yes"))
