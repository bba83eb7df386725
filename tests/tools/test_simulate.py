"""``knute simulate`` as a process: real records on a pty, real packet-forwarder datagrams."""

from __future__ import annotations

import base64
import csv
import json
import os
import select
import socket
import subprocess
import time
from pathlib import Path

from knute.protocol import frame, stream
from knute.protocol.errors import FrameError
from knute.tools.sim.pktfwd import EU868_CHANNELS_MHZ


def fleet_keys(csv_path: Path) -> dict[int, bytes]:
    """Device id -> key, from the fleet CSV ``knute simulate --csv`` writes."""
    with csv_path.open(encoding="utf-8") as f:
        return {int(row["device_id"], 16): bytes.fromhex(row["key"]) for row in csv.DictReader(f)}


def read_records(fd: int, dec: stream.StreamDecoder) -> list[bytes]:
    """The record bodies in what the pty ``fd`` holds now (none once its other end is
    gone); garbled records are passed over."""
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        chunk = b""
    return [body for item in dec.feed(chunk)
            if not isinstance(item, FrameError) for _, body in [item]]


def test_simulate_sends_verifiable_frames_on_serial_and_udp(
    knute_bin: str, tmp_path: Path
) -> None:
    link = tmp_path / "radio"
    fleet_csv = tmp_path / "fleet.csv"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    proc = subprocess.Popen(
        [knute_bin, "simulate", "--meters", "6", "--air", "2", "--speed", "20000",
         "--for", "4", "--serial-pty", str(link), "--udp", f"127.0.0.1:{port}",
         "--forwarders", "3", "--csv", str(fleet_csv), "--json", "--seed", "4"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        dec = stream.StreamDecoder()
        records: list[bytes] = []
        datagrams: list[bytes] = []
        while proc.poll() is None and time.monotonic() < deadline + 10:
            ready, _, _ = select.select([fd, udp.fileno()], [], [], 0.2)
            if fd in ready:
                records += read_records(fd, dec)
            if udp.fileno() in ready:
                data, addr = udp.recvfrom(4096)
                datagrams.append(data)
                udp.sendto(data[:3] + b"\x01", addr)  # PUSH_ACK / keep the client happy
        os.close(fd)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
        udp.close()
    assert proc.returncode == 0
    summary = json.loads(out)
    keys = fleet_keys(fleet_csv)
    assert len(keys) == 8
    assert records, "no records on the pty"
    for raw in records:
        dev = frame.parse_header(raw)[1]
        frame.decode(raw, keys[dev])  # raises if the frame does not verify
    pushes = [d for d in datagrams if len(d) > 12 and d[0] == 2 and d[3] == 0]
    assert pushes
    heard: dict[bytes, set[bytes]] = {}
    sf_of: dict[int, set[str]] = {}
    freqs: set[float] = set()
    for push in pushes:
        eui = push[4:12]
        for pk in json.loads(push[12:])["rxpk"]:
            raw = base64.b64decode(pk["data"])
            assert pk["size"] == len(raw) and pk["stat"] == 1 and pk["datr"].startswith("SF")
            frame.decode(raw, keys[frame.parse_header(raw)[1]])
            heard.setdefault(raw, set()).add(eui)
            sf_of.setdefault(frame.parse_header(raw)[1], set()).add(pk["datr"])
            freqs.add(pk["freq"])
    assert any(len(euis) > 1 for euis in heard.values()), "overlapping coverage expected"
    # The channel plan and a data rate per node: frames hop over the eight channels,
    # each node keeps its own SF, and the fleet has several.
    assert len(freqs) >= 4 and freqs <= set(EU868_CHANNELS_MHZ), freqs
    assert all(len(datr) == 1 for datr in sf_of.values()), sf_of
    assert len(set().union(*sf_of.values())) >= 2, sf_of
    assert summary["frames"] == summary["serial_records"]
    assert summary["push_acked"] > 0


def test_simulate_without_an_output_is_one_clear_error(knute_bin: str) -> None:
    result = subprocess.run([knute_bin, "simulate", "--for", "1"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "knute simulate: nowhere to send: give --serial-pty, --serial or --udp")


def test_simulate_runs_real_firmware_nodes_on_their_own_serial_lines(
    knute_bin: str, tmp_path: Path
) -> None:
    from knute.gateway.registry import Registry

    registry = tmp_path / "registry.db"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    proc = subprocess.Popen(
        [knute_bin, "simulate", "--meters", "1", "--air", "0", "--speed", "7200", "--for", "10",
         "--udp", f"127.0.0.1:{udp.getsockname()[1]}", "--real-firmware", "1",
         "--registry", str(registry)],
        stdout=subprocess.PIPE, text=True,
    )
    records: list[bytes] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("firmware node "), line
        device = int(line.split()[2].rstrip(":"), 16)
        fd = os.open(line.split()[-1], os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        dec = stream.StreamDecoder()
        while proc.poll() is None:
            if select.select([fd], [], [], 0.2)[0]:
                records += read_records(fd, dec)
        os.close(fd)
        out = proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
        udp.close()
    assert proc.returncode == 0
    reg = Registry(str(registry))
    try:
        dev = reg.get(device)
        assert dev is not None and dev.kind == "water_meter"
        key = dev.key
    finally:
        reg.close()
    frames = [frame.decode(raw, key) for raw in records]
    assert frames and all(f["device_id"] == device for f in frames)
    assert [f["fcnt"] for f in frames] == list(range(len(frames)))
    assert "1 nodes" in out
