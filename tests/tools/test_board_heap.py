"""Downlinks are on by default, sized to the boards knute supports (knute.tools.board_heap).

Every pin map in firmware/boards/ has a heap figure, every role's measured
downlink need fits the smallest of them, `knute provision` refuses a config whose
board cannot hold the path (naming the key and the file), and bench nodes get
their heap from one rule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from knute.gateway.errors import KnuteError
from knute.tools import board_heap
from knute.tools.cli.provision import build_config

BOARDS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "firmware" / "boards")
                .glob("*.py") if p.stem not in ("__init__", "unix"))


def _args(kind: str, board: str, *settings: str, config: str | None = None,
          link: str = "lora") -> argparse.Namespace:
    return argparse.Namespace(config=config, kind=kind, board=board, link=link, sf=None,
                              set=list(settings))


def test_every_board_has_a_heap_figure_that_holds_every_role() -> None:
    assert BOARDS and sorted(board_heap.BOARD_HEAP_KIB) == BOARDS
    smallest = board_heap.smallest_board_kib()
    assert smallest == 112                                  # the ESP32 boards
    for (role, link), (kib32, kib64) in board_heap.DOWNLINK_NEED_KIB.items():
        assert kib32 <= smallest, (role, link)              # a board (32-bit)
        assert kib64 <= smallest, (role, link)              # the bench's 64-bit nodes


@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("kind", ["water_meter", "air_quality"])
def test_provision_turns_downlinks_on_for_every_supported_board(board: str, kind: str) -> None:
    from firmware import config as fw_config

    config = build_config(_args(kind, board), 0x1234, bytes(16), "unix")
    assert "downlink" not in config                         # the firmware's default
    assert fw_config.validate(json.loads(json.dumps(config)))["downlink"] is True


def test_a_board_below_the_need_is_refused_naming_key_and_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A board whose build gave 56 KiB (below what an ESP32 build of before
    # MicroPython 1.21 on ESP-IDF 4.2.2 or later gave): the air node needs 64 KiB
    # with LoRa downlinks.
    monkeypatch.setitem(board_heap.BOARD_HEAP_KIB, "heltec_v2", 56)
    path = tmp_path / "air.json"
    path.write_text(json.dumps({"downlink": True}))
    with pytest.raises(KnuteError) as err:
        build_config(_args("air_quality", "heltec_v2", config=str(path)), 0x1234, bytes(16),
                     "unix")
    message = str(err.value)
    assert '"downlink": true' in message and str(path) in message, message
    assert "64 KiB" in message and "56 KiB" in message and "\n" not in message
    with pytest.raises(KnuteError, match=r'config\.json: "downlink": true needs 64 KiB'):
        build_config(_args("air_quality", "heltec_v2"), 0x1234, bytes(16), "unix")
    # Turned off, the same board takes the node; the water meter fits it with downlinks.
    off = build_config(_args("air_quality", "heltec_v2", "downlink=false"), 0x1234,
                       bytes(16), "unix")
    assert off["downlink"] is False
    build_config(_args("water_meter", "heltec_v2"), 0x1234, bytes(16), "unix")


def test_bench_nodes_get_their_heap_from_one_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KNUTE_FW_HEAP", raising=False)
    water = {"role": "water_meter"}
    assert board_heap.bench_heap(water, 64) == "112k"       # downlinks on by default
    # Every role's downlink path fits 64 KiB on the 32-bit build: bench nodes with
    # downlinks run there; one role needing more gives them the smallest board's heap.
    assert board_heap.bench_heap(water, 32) == "64k"
    monkeypatch.setitem(board_heap.DOWNLINK_NEED_KIB, ("air_quality", "uart"), (72, 88))
    assert board_heap.bench_heap(water, 32) == "112k"
    assert board_heap.bench_heap(dict(water, downlink=False), 64) == "64k"
    assert board_heap.bench_heap(dict(water, downlink=False), 32) == "48k"
    assert board_heap.bench_heap({"role": "radio_bridge"}, 64) == "64k"
    monkeypatch.setenv("KNUTE_FW_HEAP", "200k")
    assert board_heap.bench_heap(water, 64) == "200k"
