"""Simulated Modbus water meters and air-quality stations (``knute modbus-sim``).

A pymodbus server answers for several unit ids at once, each described by a
register map (``--device UNIT:MAP``, a shipped map's name or a .toml path),
with values that change like the real thing: a meter's index grows with a
wandering flow, particle counts wander, temperature follows the day. It
listens on Modbus TCP (``--tcp HOST:PORT``) and/or on a pseudo-terminal for
Modbus RTU (``--rtu-pty``: prints the path a poller opens, as a USB RS-485
adapter would appear).

Fault knobs, for tests and bench work:

  --slow-ms UNIT:MS          answer UNIT only after MS milliseconds
  --exception-rate RATE      answer any request with exception 4 (device failure)
                             with probability RATE
  --exception-unit UNIT      UNIT always answers with exception 2 (illegal address)
  --silent-unit UNIT         UNIT never answers (as any unit without --device)
  --wrong-unit UNIT:OTHER    UNIT's answers carry unit id OTHER
  --crc-error-unit UNIT      UNIT's RTU answers carry a wrong CRC
  --short-unit UNIT          UNIT's answers hold one register less than asked
  --alarm UNIT:NAME          set alarm/status bit NAME (e.g. leak, pm_fault)

Once listening it prints where (``--json``: one JSON object on one line) and
serves until SIGINT/SIGTERM or ``--duration`` seconds.

RTU on a pty: the pymodbus serial server needs a device path, and so does the
poller; a pty has only one (the master side is a bare descriptor). So the
server opens one end of a ``NullModem`` (two ptys joined back to back), the
poller the other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.rig.nullmodem import NullModem

DEFAULT_DEVICES = ("1:generic_water_meter", "2:generic_air_station")
DEFAULT_TCP = "127.0.0.1:5020"


@dataclass
class Faults:
    """The fault knobs, per unit."""

    slow_s: dict[int, float] = field(default_factory=dict)
    exception_rate: float = 0.0
    exception_units: set[int] = field(default_factory=set)
    silent_units: set[int] = field(default_factory=set)
    wrong_unit: dict[int, int] = field(default_factory=dict)
    crc_units: set[int] = field(default_factory=set)
    short_units: set[int] = field(default_factory=set)


# ---------------------------------------------------------------- the simulated devices

class SimUnit:
    """One simulated device: a register map and plausible, changing readings."""

    def __init__(self, unit_id: int, rmap: Any, rng: random.Random, alarms: set[str]) -> None:
        from knute.protocol import kinds

        self.unit_id = unit_id
        self.map = rmap
        self.rng = rng
        self.kind: dict[str, Any] = kinds.KINDS[rmap.kind_id]
        self.alarms = alarms
        self.started = time.monotonic()
        self.last = self.started
        self.time_s = time.time()
        self.index_l = rng.uniform(1e5, 5e6)
        self.flow_m3h = rng.uniform(8.0, 30.0)
        self.pm2_5 = rng.uniform(4.0, 25.0)
        self.humidity = rng.uniform(45.0, 80.0)
        self.pressure = rng.uniform(995.0, 1025.0)
        self.no2 = rng.uniform(10.0, 50.0)

    @staticmethod
    def _wander(value: float, step: float, lo: float, hi: float, rng: random.Random) -> float:
        return min(hi, max(lo, value + rng.uniform(-step, step)))

    def step(self) -> dict[str, float]:
        """Advance the simulation to now; the readings in the kind's units by field name."""
        self.time_s = time.time()       # the device's clock ([clock] in a map)
        now = time.monotonic()
        dt = max(0.0, now - self.last)
        self.last = now
        rng = self.rng
        self.flow_m3h = self._wander(self.flow_m3h, 0.5, 8.0, 40.0, rng)
        self.index_l += self.flow_m3h * 1000.0 / 3600.0 * dt
        self.pm2_5 = self._wander(self.pm2_5, 0.8, 2.0, 80.0, rng)
        self.humidity = self._wander(self.humidity, 0.5, 20.0, 98.0, rng)
        self.pressure = self._wander(self.pressure, 0.2, 970.0, 1040.0, rng)
        self.no2 = self._wander(self.no2, 1.0, 2.0, 150.0, rng)
        day = time.time() / 86400.0 * 2 * math.pi
        return {
            "index": self.index_l,
            "max_flow": self.flow_m3h * 1000.0,
            "battery": 95.0,
            "pm1": self.pm2_5 * 0.7,
            "pm2_5": self.pm2_5,
            "pm10": self.pm2_5 * 1.6,
            "temperature": 8.0 + 6.0 * math.sin(day) + rng.uniform(-0.2, 0.2),
            "humidity": self.humidity,
            "pressure": self.pressure,
            "no2": self.no2,
        }

    def image(self) -> dict[tuple[int, int], int]:
        """(function, address) -> register word (or bit) for the map's registers, now."""
        from knute.gateway.modbus import decode
        from knute.gateway.modbus.regmap import kind_field, unit_conversion

        readings = self.step()
        out: dict[tuple[int, int], int] = {}
        for reg in self.map.registers:
            fdef = kind_field(self.kind, reg.field)
            if fdef["type"] == "bits":
                names = [name for _bit, name in reg.bits if name in self.alarms]
                if reg.function in (1, 2):
                    out[(reg.function, reg.address)] = 1 if names else 0
                    continue
                word = 0
                for bit, name in reg.bits:
                    if name in self.alarms:
                        word |= 1 << bit
                words = decode.encode_value(word, "u" + reg.dtype[1:], reg.word_order,
                                            reg.byte_order)
            else:
                value = readings.get(reg.field)
                if value is None:  # a field this simulator has no model for: mid-range
                    value = (fdef["min"] + fdef["max"]) / 2 * fdef.get("mul", 1) \
                        / fdef.get("div", 1)
                factor, shift = unit_conversion(reg.unit, fdef["unit"]) or (1.0, 0.0)
                physical = (value - shift) / factor
                stored = (physical - reg.offset) / reg.scale
                words = decode.encode_value(_fit(stored, reg.dtype), reg.dtype,
                                            reg.word_order, reg.byte_order)
            for pos, word in enumerate(words):
                out[(reg.function, reg.address + pos)] = word
        clock = self.map.clock
        if clock is not None:      # read at the same step as the registers above
            stored = (self.time_s - clock.offset) / clock.scale
            for pos, word in enumerate(decode.encode_value(_fit(stored, clock.dtype),
                                                           clock.dtype, clock.word_order,
                                                           clock.byte_order)):
                out[(clock.function, clock.address + pos)] = word
        return out


def _fit(value: float, dtype: str) -> int | float:
    """``value`` as the register type holds it: rounded and clamped for integers."""
    if dtype.startswith("float"):
        return value
    bits = int(dtype[1:])
    lo, hi = (0, (1 << bits) - 1) if dtype[0] == "u" else (-(1 << (bits - 1)),
                                                           (1 << (bits - 1)) - 1)
    return min(hi, max(lo, round(value)))


# ---------------------------------------------------------------- pymodbus server glue

def _sim_device(unit: SimUnit | None, unit_id: int, faults: Faults,
                rng: random.Random) -> Any:
    """A pymodbus SimDevice whose registers are filled from ``unit`` at every request."""
    from pymodbus.constants import ExcCodes
    from pymodbus.simulator import DataType, SimData, SimDevice

    spans: dict[int, tuple[int, int]] = {}
    if unit is not None:
        for reg in unit.map.read_registers:
            lo, hi = spans.get(reg.function, (reg.address, reg.end))
            spans[reg.function] = (min(lo, reg.address), max(hi, reg.end))
    blocks: list[list[Any]] = []
    for function in (1, 2, 3, 4):   # SimDevice's tuple order: coils, inputs, holding, input
        lo, hi = spans.get(function, (0, 16 if function in (1, 2) else 1))
        if function in (1, 2):
            blocks.append([SimData(address=lo, count=hi - lo, values=False,
                                   datatype=DataType.BITS)])
        else:
            blocks.append([SimData(address=lo, count=hi - lo, values=0,
                                   datatype=DataType.REGISTERS)])

    async def action(function: int, start: int, address: int, count: int,
                     registers: list[int], values: Any) -> Any:
        import asyncio

        delay = faults.slow_s.get(unit_id)
        if delay:
            await asyncio.sleep(delay)
        if unit_id in faults.exception_units:
            return ExcCodes.ILLEGAL_ADDRESS
        if faults.exception_rate and rng.random() < faults.exception_rate:
            return ExcCodes.DEVICE_FAILURE
        if unit is None or values is not None:
            return None
        for (fc, addr), word in unit.image().items():
            if fc != function:
                continue
            if fc in (1, 2):   # bits: 16 to a register, bit 0 first; start counts registers
                slot, bit = divmod(addr, 16)
                if 0 <= slot - start < len(registers):
                    mask = 1 << bit
                    cur = registers[slot - start]
                    registers[slot - start] = (cur | mask) if word else (cur & ~mask)
            elif 0 <= addr - start < len(registers):
                registers[addr - start] = word
        return None

    return SimDevice(id=unit_id, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
                     action=action)


def make_trace(faults: Faults, units: set[int], rtu: bool) -> Any:
    """The server's packet hook: silences, rewrites unit ids, breaks CRCs, drops a register."""
    from knute.gateway.modbus.decode import with_crc

    def trace(sending: bool, packet: bytes) -> bytes:
        if not sending or not packet:
            return packet
        head = 0 if rtu else 6          # unit id: RTU byte 0, TCP after the 6-byte MBAP start
        if len(packet) <= head + 1:
            return packet
        unit = packet[head]
        if unit not in units or unit in faults.silent_units:
            return b""
        body = bytearray(packet[:-2] if rtu else packet)
        if unit in faults.short_units and body[head + 1] in (3, 4) and body[head + 2] >= 2:
            body[head + 2] -= 2
            del body[-2:]
            if not rtu:
                body[4:6] = (len(body) - 6).to_bytes(2, "big")
        if unit in faults.wrong_unit:
            body[head] = faults.wrong_unit[unit] & 0xFF
        if not rtu:
            return bytes(body)
        out = with_crc(bytes(body))
        if unit in faults.crc_units:
            out = out[:-1] + bytes((out[-1] ^ 0xFF,))
        return out

    return trace


# ---------------------------------------------------------------- run

async def serve(args: argparse.Namespace, units: dict[int, SimUnit], faults: Faults,
                 rng: random.Random, tcp: tuple[str, int] | None) -> int:
    import asyncio

    from pymodbus.server import ModbusSerialServer, ModbusTcpServer

    def devices() -> list[Any]:
        out = [_sim_device(unit, uid, faults, rng) for uid, unit in sorted(units.items())]
        if 0 not in units:   # answers for every other unit id; the trace hook silences them
            out.append(_sim_device(None, 0, faults, rng))
        return out

    answering = set(units)
    servers: list[Any] = []

    async def start(server: Any, cannot: str) -> None:
        """Serve in the background; a port or pty that will not open is one clear error."""
        try:
            await server.serve_forever(background=True)
        except (OSError, RuntimeError) as exc:
            raise KnuteError(f"{cannot}: {exc}") from None
        servers.append(server)
    server: Any
    pty: NullModem | None = None
    info: dict[str, Any] = {"pid": os.getpid(), "tcp": None, "rtu": None,
                            "devices": [{"unit_id": uid, "map": unit.map.name,
                                         "kind": unit.map.kind, "alarms": sorted(unit.alarms)}
                                        for uid, unit in sorted(units.items())]}
    try:
        if tcp is not None:
            server = ModbusTcpServer(devices(), address=tcp,
                                     trace_packet=make_trace(faults, answering, rtu=False))
            await start(server, f"cannot listen on {tcp[0]}:{tcp[1]}")
            info["tcp"] = f"{tcp[0]}:{tcp[1]}"
        if args.rtu_pty:
            pty = NullModem()          # the server opens one end, the poller the other
            server = ModbusSerialServer(devices(), port=pty.a_path, baudrate=19200,
                                        trace_packet=make_trace(faults, answering, rtu=True))
            await start(server, f"cannot open pty {pty.a_path}")
            info["rtu"] = pty.b_path
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            where = [f"tcp {info['tcp']}"] if info["tcp"] else []
            if info["rtu"]:
                where.append(f"rtu {info['rtu']}")
            print(f"modbus-sim: listening on {' and '.join(where)}", flush=True)
            for dev in info["devices"]:
                extra = f" alarms {','.join(dev['alarms'])}" if dev["alarms"] else ""
                print(f"  unit {dev['unit_id']}: {dev['map']} ({dev['kind']}){extra}",
                      flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.duration is not None:
            loop.call_later(args.duration, stop.set)
        await stop.wait()
    finally:
        for server in servers:
            try:
                await server.shutdown()
            except Exception as exc:  # a transport already gone at shutdown
                print(f"modbus-sim: shutdown: {exc}", file=sys.stderr)
        if pty is not None:
            pty.close()
    return 0
