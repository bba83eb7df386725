"""``knute simulate --city``: households as frames on the line, bulk meters on Modbus TCP."""

from __future__ import annotations

import argparse
import os
import random
import select
import subprocess
import time
from pathlib import Path

from knute.gateway.simclock import SimulatedClock
from knute.protocol import frame, stream
from knute.tools.sim.city import city_from_args
from knute.tools.sim.city_nodes import BULK_START_INDEX_L, CityBulkUnit, bulk_units
from tests.conftest import free_port
from tests.tools.test_simulate import fleet_keys, read_records


def test_city_frames_and_bulk_meters_follow_one_model(knute_bin: str, tmp_path: Path) -> None:
    from pymodbus.client import ModbusTcpClient

    from knute.gateway.modbus.regmap import load_map, resolve_map_path

    link = tmp_path / "radio"
    fleet_csv = tmp_path / "fleet.csv"
    port = free_port()
    speed = 3600.0
    proc = subprocess.Popen(
        [knute_bin, "simulate", "--city", "--districts", "2", "--households", "4",
         "--leaks", "500", "--speed", str(speed), "--for", "8", "--serial-pty", str(link),
         "--modbus", f"127.0.0.1:{port}", "--csv", str(fleet_csv), "--seed", "9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]   # up to the last leak line
        clock = next(line for line in lines if line.startswith("city clock:")).split()
        start, wall_start = float(clock[3]), float(clock[6].rstrip(","))
        assert any(line.startswith("district dma02: 4 households; inflow 10000002 "
                                   "(Modbus unit 2), outflow 10000003 (Modbus unit 3)")
                   for line in lines), lines
        # The inlet of dma01 (unit 1): its totaliser is the city model's, at the sim time.
        args = argparse.Namespace(districts=2, households=4, leaks="500", leak_start=None)
        city = city_from_args(args, 9, start)
        rmap = load_map(resolve_map_path("bulk_water_meter", os.getcwd()))
        model = CityBulkUnit(1, rmap, random.Random(1), city, "dma01", "inflow",
                             SimulatedClock(speed, epoch=(start, wall_start)))
        client = ModbusTcpClient("127.0.0.1", port=port)
        assert client.connect()  # type: ignore[no-untyped-call]
        readings = []
        for _ in range(3):
            before = start + (time.time() - wall_start) * speed
            regs = client.read_holding_registers(0, count=10, device_id=1).registers
            after = start + (time.time() - wall_start) * speed
            index = (regs[0] << 48) | (regs[1] << 32) | (regs[2] << 16) | regs[3]
            readings.append(index)
            assert model.index_at(before)[0] - 1 <= index <= model.index_at(after)[0] + 1
            # The meter's clock (bulk_water_meter's [clock]): the simulated second the
            # totaliser was read at.
            meter_time = regs[8] << 16 | regs[9]
            # Its register holds whole seconds (rounded: 0.5 s), and this side knows the
            # simulation's wall start to the printed millisecond: half a millisecond is
            # 1.8 simulated seconds at 3600x.
            slack = 0.5 + 0.0005 * speed
            assert before - slack <= meter_time <= after + slack
            assert model.index_at(meter_time - 0.5)[0] - 1 <= index \
                <= model.index_at(meter_time + 0.5)[0] + 1
            time.sleep(0.5)
        client.close()  # type: ignore[no-untyped-call]
        assert readings[0] > BULK_START_INDEX_L and readings[-1] > readings[0]
        # Household frames on the line verify with the keys in the CSV.
        deadline = time.monotonic() + 15
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        dec = stream.StreamDecoder()
        records: list[bytes] = []
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                records += read_records(fd, dec)
        os.close(fd)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    keys = fleet_keys(fleet_csv)
    # The households, and the bulk meters the gateway polls (it accepts registered ones only).
    bulk = [device for _, _, _, device in bulk_units(city)]
    assert bulk == ["10000000", "10000002", "10000003"]
    assert sorted(f"{k:08x}" for k in keys) == sorted([*city.households, *bulk])
    assert records
    for raw in records:
        frame.decode(raw, keys[frame.parse_header(raw)[1]])
    printed = [*lines, *out.splitlines()]
    household = next(leak for leak in city.leaks if leak.where == "household")
    assert f"leak: household {household.subject} 500 L/h from " in "\n".join(printed), city.leaks
    assert any(line.startswith("leak: pipe dma01 500 L/h from ") for line in printed)
