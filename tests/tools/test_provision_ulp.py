"""`knute provision` writes the ULP pulse counter (/ulp.bin) for a deep-sleeping water meter.

Through the real mpremote on a virtual board (the unix port), as the other
provision tests: the meter_esp32 pin map, power.sleep "deep", and the node
booting from that flash on the bench (whose simulated ULP counts a pulse file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from knute.gateway.errors import KnuteError
from knute.tools import ulp
from knute.tools.cli.provision import build_config, ulp_bin
from knute.tools.sim.vdevice import VirtualBoard
from tests.tools.conftest import bench_wiring


def _args(board: str, *settings: str) -> argparse.Namespace:
    return argparse.Namespace(config=None, kind="water_meter", board=board, link="uart",
                              sf=None, set=list(settings))


def test_provision_writes_the_ulp_image_for_the_deep_sleep_meter(
        knute_bin: Path, board: VirtualBoard, tmp_path: Path) -> None:
    wiring = bench_wiring(tmp_path, board)
    result = subprocess.run(
        [str(knute_bin), "provision", "--port", board.port, "--kind", "water_meter",
         "--board", "meter_esp32", "--link", "uart", "--set", "power.sleep=deep",
         "--config", str(wiring), "--json", "--no-start"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    written = (board.flash_dir / "ulp.bin").read_bytes()
    # meter_esp32: pulse GPIO32 = RTC_GPIO9, direction GPIO33 = 8, tamper GPIO25 = 6
    assert written == ulp.image(9, 8, 6, 1)
    assert written[:4] == b"ulp\0"
    config = json.loads((board.flash_dir / "config.json").read_text())
    assert config["board"] == "meter_esp32" and config["power"]["sleep"] == "deep"


def test_light_sleep_writes_no_ulp_image() -> None:
    assert ulp_bin(build_config(_args("meter_esp32"), 0x1234, bytes(16), "unix")) is None


def test_the_tamper_active_level_goes_into_the_image() -> None:
    config = build_config(_args("meter_esp32", "power.sleep=deep", "water.tamper_active=0"),
                          0x1234, bytes(16), "unix")
    assert ulp_bin(config) == ulp.image(9, 8, 6, 0)
    assert ulp_bin(config) != ulp.image(9, 8, 6, 1)


def test_a_board_without_rtc_inputs_is_refused_naming_the_pin() -> None:
    # The Heltec V2's tamper input is GPIO23, not an RTC GPIO: the ULP cannot read it.
    config = build_config(_args("heltec_v2", "power.sleep=deep"), 0x1234, bytes(16), "unix")
    with pytest.raises(KnuteError) as err:
        ulp_bin(config)
    assert str(err.value) == (
        'power.sleep "deep" on board heltec_v2: the ULP reads water.tamper (pin-map entry '
        '\'tamper\'): GPIO 23 is not an RTC GPIO (docs/firmware.md, "Power")')
