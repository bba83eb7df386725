"""The register-image file format and the I2C bus served from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.drivers.regimage import RegImage
from firmware.drivers.regimage_edit import RegImageEdit

TEXT = """\
# two devices on one bus
device 76
88: 70 6B 43 67   # trimming
D0: 60
device 0x23
00: 01 02
"""


def test_parse_read_and_missing_registers() -> None:
    image = RegImageEdit(TEXT)
    assert image.scan() == [0x23, 0x76]
    assert image.readfrom_mem(0x76, 0x88, 5) == bytes([0x70, 0x6B, 0x43, 0x67, 0x00])
    assert image.readfrom_mem(0x76, 0xD0, 1) == b"\x60"
    assert image.readfrom_mem(0x23, 0xFF, 3) == bytes([0x00, 0x01, 0x02])   # wraps at 0xFF
    buf = bytearray(2)
    image.readfrom_mem_into(0x23, 0x00, buf)
    assert buf == b"\x01\x02"


def test_absent_device_raises_enodev_like_machine_i2c() -> None:
    image = RegImage(TEXT)
    with pytest.raises(OSError) as err:
        image.readfrom_mem(0x77, 0xD0, 1)
    assert err.value.args[0] == 19
    with pytest.raises(OSError):
        image.writeto_mem(0x77, 0xF4, b"\x01")


def test_writes_change_the_image_in_memory() -> None:
    image = RegImageEdit(TEXT)
    image.writeto_mem(0x76, 0xF4, b"\x25")
    assert image.get(0x76, 0xF4) == 0x25


@pytest.mark.parametrize("text, where", [
    ("88: 00", "line 1"),
    ("device 76\n88 00 11", "line 2"),
    ("device 76\nzz: 00", "line 2"),
    ("device 76\n\n88: 100", "line 3"),
    ("device 80", "line 1"),
    ("device 76\nFF: 01 02", "line 2"),
])
def test_bad_lines_are_named(text: str, where: str) -> None:
    with pytest.raises(ValueError, match=where):
        RegImage(text)


def test_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "bme280.img"
    path.write_text("device 76\nF7: 11\n")
    image = RegImage(path=str(path))
    assert image.readfrom_mem(0x76, 0xF7, 1) == b"\x11"
    path.write_text("device 76\nF7: 22 33\n")
    os.utime(path, (1, 1))                  # a different mtime even on coarse clocks
    assert image.readfrom_mem(0x76, 0xF7, 2) == b"\x22\x33"
    assert image.reloads == 2
    frozen = RegImage(path=str(path), watch=False)
    path.write_text("device 76\nF7: 44\n")
    os.utime(path, (2, 2))
    assert frozen.readfrom_mem(0x76, 0xF7, 1) == b"\x22"


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(0x08, 0x77), st.binary(min_size=256, max_size=256),
                       max_size=3))
def test_dump_and_load_round_trip(devices: dict[int, bytes]) -> None:
    image = RegImageEdit("")
    for addr, regs in devices.items():
        image.put(addr, 0, regs)
    again = RegImage(image.dump())
    assert {a: bytes(r) for a, r in again.devices.items()} == devices


def test_the_node_side_class_leaves_the_editing_methods_out() -> None:
    # A node loads only firmware.drivers.regimage: every name there stays in its RAM.
    for name in ("dump", "get", "put", "scan"):
        assert not hasattr(RegImage, name), name
        assert hasattr(RegImageEdit, name), name
