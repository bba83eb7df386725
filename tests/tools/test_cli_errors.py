"""The ``knute`` command on odd numbers and closed pipes (issue 11, item 13).

Run as real processes: what an operator types must end in one line on stderr
and exit 2, and a reader that stops early (``| head -1``) must not produce a
traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from knute.gateway.registry import Registry
from knute.tools.cli import EXIT_BROKEN_PIPE

KEY = "00112233445566778899aabbccddeeff"


def knute(knute_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``knute ARGS``."""
    return subprocess.run([str(knute_bin), *args], capture_output=True, text=True, timeout=60)


def one_error_line(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr holding every needle."""
    assert out.returncode == 2, out
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("value", ["Infinity", "-inf", "NaN", "sNaN", "1e999999999",
                                   "-1e999999999", "1e30"])
def test_encode_refuses_non_finite_and_huge_numbers(knute_bin: Path, value: str) -> None:
    out = knute(knute_bin, "encode", "--kind", "water_meter", "--device-id", "00000001",
                "--key", KEY, "--fcnt", "1", f"index={value}", "profile_end_h=3")
    one_error_line(out, "index")


def test_encode_still_encodes_plain_numbers(knute_bin: Path) -> None:
    out = knute(knute_bin, "encode", "--kind", "water_meter", "--device-id", "00000001",
                "--key", KEY, "--fcnt", "1", "index=1234", "battery=85", "profile_end_h=3",
                "profile=1,2")
    assert out.returncode == 0, out.stderr
    bytes.fromhex(out.stdout.strip())


@pytest.mark.parametrize("option,value", [
    ("--water-sends", "nan"), ("--water-sends", "-4"), ("--air-sends", "inf"),
    ("--capacity-mah", "nan"), ("--capacity-mah", "0"), ("--sleep-ua", "-1"),
    ("--tx-ma", "inf"), ("--tx-ma", "-60"),
])
def test_airtime_refuses_nan_inf_and_negative_figures(knute_bin: Path, option: str,
                                                      value: str) -> None:
    out = knute(knute_bin, "airtime", option, value)
    one_error_line(out, option, "finite")


def test_airtime_takes_zero_sends(knute_bin: Path) -> None:
    out = knute(knute_bin, "airtime", "--water-sends", "0", "--json")
    assert out.returncode == 0, out.stderr


def closed_pipe_run(knute_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run knute with a stdout pipe whose reader is already gone (``| head`` done)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([str(knute_bin), *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)


def meters_registry(tmp_path: Path, count: int) -> Path:
    """A registry of ``count`` water meters, long enough to fill a pipe with `devices list`."""
    registry = tmp_path / "registry.db"
    reg = Registry(str(registry))
    for n in range(count):
        reg.add(n + 1, "water_meter", KEY, name=f"meter {n}")
    reg.close()
    return registry


def test_devices_list_into_a_closed_pipe(tmp_path: Path, knute_bin: Path) -> None:
    registry = meters_registry(tmp_path, 50)
    out = closed_pipe_run(knute_bin, "devices", "list", "--registry", str(registry))
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.returncode == EXIT_BROKEN_PIPE
    assert out.stderr.strip() in ("", "50 devices")


@pytest.mark.parametrize("args", [("airtime", "--json"), ("airtime",),
                                  ("protocol", "sizes"), ("protocol", "sizes", "--json")])
def test_reports_into_a_closed_pipe(knute_bin: Path, args: tuple[str, ...]) -> None:
    out = closed_pipe_run(knute_bin, *args)
    assert out.stderr == "", out.stderr
    assert out.returncode == EXIT_BROKEN_PIPE


def test_head_on_a_real_pipeline(tmp_path: Path, knute_bin: Path) -> None:
    registry = meters_registry(tmp_path, 3000)
    out = subprocess.run(
        f"'{knute_bin}' devices list --registry '{registry}' | head -1",
        shell=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["device", "kind", "name", "site", "interval_s", "last_fcnt",
                                  "last_seen", "battery", "alarms"]
    assert "Traceback" not in out.stderr, out.stderr
