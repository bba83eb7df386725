"""The MicroPython heap of each supported board, and what the downlink path needs of it.

One table for the tools (``knute provision`` and the bench): the firmware itself
never loads it, as every name on a node costs heap. The figures and their sources
are in docs/firmware.md, "The boards' heap".

- ``BOARD_HEAP_KIB``: the Python heap a board's stock MicroPython build gives a
  node (no PSRAM). ESP32: the first area of 56 KiB (ports/esp32/mpconfigport.h,
  MICROPY_GC_INITIAL_HEAP_SIZE), which the split heap grows at least once by as
  much (sized so that Wi-Fi and a TLS request still fit after that growth, which
  a node does not start): 112 KiB. ESP32-S3: 64 KiB, so 128 KiB. RP2040: one area
  of 192 KiB (ports/rp2/main.c; later builds give the heap all the RAM the linker
  script leaves, more than that).
- ``DOWNLINK_NEED_KIB``: the heap each role needs with ``downlink`` on, measured
  on the 32-bit unix port (a board's word size) and on the 64-bit port, by
  tests/firmware/test_downlink_roles_heap.py (docs/firmware.md, "The downlink
  path's heap").
"""

from __future__ import annotations

import os
from typing import Any

# Chip of each board in firmware/boards/, and the heap of that chip's build.
CHIP_HEAP_KIB = {"esp32": 112, "esp32s3": 128, "rp2040": 192}
BOARD_CHIP = {
    "heltec_v2": "esp32",
    "lilygo_t3_v1_6": "esp32",
    "meter_esp32": "esp32",
    "heltec_v3": "esp32s3",
    "lilygo_t3s3": "esp32s3",
    "pico_sx1262": "rp2040",
}
BOARD_HEAP_KIB = {board: CHIP_HEAP_KIB[chip] for board, chip in BOARD_CHIP.items()}

# (role, link type) -> (KiB on a 32-bit build, KiB on the 64-bit unix port), in
# steps of 8 KiB: the smallest heap the role's downlink run passes in 20 runs of
# 20, three at a time beside the firmware test suite (docs/firmware.md, "The
# downlink path's heap"). The air node on either link takes the names' table
# step (one block of 4.5 KB, 7 KB on the 64-bit port) on its first send; the
# room for it is held from the boot (firmware.names_room), which brought the
# serial air node to 64 KiB on the 32-bit build (72 before: in 64 KiB the step
# failed now and then) and the LoRa air node to 88 KiB on the 64-bit port (112).
DOWNLINK_NEED_KIB = {
    ("water_meter", "uart"): (48, 64),
    ("water_meter", "lora"): (56, 72),
    ("air_quality", "uart"): (64, 88),
    ("air_quality", "lora"): (64, 88),
}

# Roles that send uplinks of their own: downlinks are on by default for these
# (firmware/config.py fills the default; this mirrors it for the tools).
UPLINK_ROLES = ("water_meter", "air_quality")

# The project's own margin for nodes without downlinks (docs/firmware.md, "Memory").
MARGIN_HEAP = {64: "64k", 32: "48k"}
# The project's margin for nodes with downlinks: on a build where every role's
# downlink path fits it, bench nodes run in it (bench_heap).
DOWNLINK_MARGIN_KIB = 64


def smallest_board_kib() -> int:
    """The heap of the smallest supported board, KiB."""
    return min(BOARD_HEAP_KIB.values())


def downlink_on(config: dict[str, Any]) -> bool:
    """Whether a node with this config.json runs the downlink path (the firmware's default)."""
    value = config.get("downlink")
    if value is None:
        return config.get("role") in UPLINK_ROLES
    return value is True


def downlink_need_kib(config: dict[str, Any], bits: int = 32) -> int | None:
    """KiB the role needs with downlinks on (``bits`` 32: a board), None when not measured."""
    link = (config.get("link") or {}).get("type", "uart")
    need = DOWNLINK_NEED_KIB.get((str(config.get("role")), str(link)))
    if need is None:
        return None
    return need[0] if bits == 32 else need[1]


def check_downlink(config: dict[str, Any], path: str = "config.json") -> str | None:
    """One line naming the key and file when the board's heap cannot hold the downlink path."""
    if not downlink_on(config):
        return None
    board = str(config.get("board", "unix"))
    heap = BOARD_HEAP_KIB.get(board)
    need = downlink_need_kib(config, 32)
    if heap is None or need is None or heap >= need:
        return None
    link = (config.get("link") or {}).get("type", "uart")
    return (f'{path}: "downlink": true needs {need} KiB of heap (role {config.get("role")}, '
            f'link {link}); board {board} has {heap} KiB (set "downlink": false)')


def bench_heap(config: dict[str, Any], bits: int = 64) -> str:
    """The ``-X heapsize`` a bench node runs in: the one rule for every bench node.

    ``KNUTE_FW_HEAP`` when set; with downlinks on, 64 KiB on a build where every
    role's downlink path fits it (today the 32-bit build), else the smallest
    supported board's heap (the 64-bit port: its air nodes need 88 KiB);
    otherwise the project's margin (64 KiB, 48 KiB on the 32-bit build).
    """
    explicit = os.environ.get("KNUTE_FW_HEAP")
    if explicit:
        return explicit
    if downlink_on(config):
        need = max(kib[0 if bits == 32 else 1] for kib in DOWNLINK_NEED_KIB.values())
        if need <= DOWNLINK_MARGIN_KIB:
            return f"{DOWNLINK_MARGIN_KIB}k"
        return f"{smallest_board_kib()}k"
    return MARGIN_HEAP[bits]
