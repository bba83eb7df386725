"""``knute bench protocol`` and ``knute bench gateway``: the JSON keys of the hot-path
figures (presence and types; the figures themselves are printed, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from knute.tools.bench.protocol import (
    _workload,
    gateway_path,
    gateway_path_passes,
    hostile_frames,
    raw_path,
)

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "knute.tools.cli", "bench", *args, "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_protocol_bench_json_keys() -> None:
    result = bench("protocol", "--frames", "4000", "--upy-frames", "200")
    for key in ("decode_verify_per_s", "raw_decode_per_s", "decode_verify_pure_per_s",
                "decode_verify_python_per_s",
                "reject_random_per_s", "reject_mutated_per_s", "reject_authentic_per_s",
                "upy_encode_per_s", "upy_peak_heap_bytes"):
        assert type(result[key]) is int and result[key] > 0, key
    assert type(result["ratio_vs_raw"]) is float and result["ratio_vs_raw"] > 0
    assert result["ratio_vs_raw"] == round(result["decode_verify_per_s"]
                                           / result["raw_decode_per_s"], 3)
    assert result["ratio_vs_raw_python"] == round(result["decode_verify_python_per_s"]
                                                  / result["raw_decode_per_s"], 3)
    # Which payload walk the gateway path ran: the compiled one wherever it is built.
    from knute.gateway import fastframe
    assert result["fast_path"] == fastframe.FAST_PATH


def test_gateway_bench_json_keys() -> None:
    result = bench("gateway", "--frames", "2000", "--messages", "300", "--backlog", "1000")
    for key in ("decode_verify_per_s", "end_to_end_per_s", "bare_paho_per_s", "backlog",
                "spool_bytes_per_reading", "json_bytes_per_reading"):
        assert type(result[key]) is int and result[key] > 0, key
    for key in ("ratio_vs_bare_paho", "cpu_us_per_reading", "cpu_us_ingest",
                "cpu_us_spool_forward", "bare_paho_cpu_us_per_msg", "drain_s", "drain_cpu_s",
                "drain_cpu_us_per_reading",
                "peak_rss_mb"):
        assert type(result[key]) is float and result[key] >= 0, key
    assert result["cpu_us_per_reading"] > 0
    assert abs(result["cpu_us_per_reading"]
               - result["cpu_us_ingest"] - result["cpu_us_spool_forward"]) < 0.2
    # amqtt is the demo extra: its figures are numbers where it is installed, else null.
    for key in ("bare_amqtt_per_s", "bare_amqtt_cpu_us_per_msg"):
        assert result[key] is None or (type(result[key]) in (int, float) and result[key] > 0)


def test_the_measured_paths_accept_the_workload_and_reject_the_hostile_frames() -> None:
    # The rates mean something only if the paths do what they say: every workload
    # frame is accepted by both, every hostile one is rejected by the gateway path.
    frames, keys = _workload(devices=30)
    gateway, raw = gateway_path(keys), raw_path(keys)
    for buf in frames:
        decoded = gateway(buf)
        assert decoded is not None
        assert list(decoded["values"].values()) == raw(buf)
    for case, work in hostile_frames(frames, keys).items():
        assert all(gateway(buf) is None for buf in work), case
    # The accepted figure times Pipeline.decide itself: on every pass (the counters
    # forgotten before each) it accepts every workload frame, never leaving one to
    # the general route.
    for python_decoders in (False, True):
        decide, new_pass = gateway_path_passes(keys, python_decoders)
        for _ in range(2):
            new_pass()
            assert all(type(decide(buf)) is dict for buf in frames)
