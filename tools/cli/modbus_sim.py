"""``knute modbus-sim``: serve simulated Modbus meters and air stations over TCP and RTU.

The simulator is ``tools.sim.modbus`` (its docstring lists the fault knobs);
this is the command: options, their checks, and the server's lifetime.
"""

from __future__ import annotations

import argparse
import os
import random

from knute.gateway.errors import KnuteError
from knute.tools.sim.modbus import DEFAULT_DEVICES, DEFAULT_TCP, Faults, SimUnit, serve


def add_arguments(parser: argparse.ArgumentParser, name: str = "modbus-sim") -> None:
    """Options of ``knute modbus-sim``."""
    parser.add_argument("--tcp", metavar="HOST:PORT",
                        help=f"listen for Modbus TCP (default {DEFAULT_TCP} when no --rtu-pty)")
    parser.add_argument("--rtu-pty", action="store_true",
                        help="serve Modbus RTU on a new pseudo-terminal and print its path")
    parser.add_argument("--device", action="append", default=[], metavar="UNIT:MAP",
                        help="a simulated unit and its register map (repeatable; default "
                        + ", ".join(DEFAULT_DEVICES) + ")")
    parser.add_argument("--slow-ms", action="append", default=[], metavar="UNIT:MS",
                        help="delay UNIT's answers by MS milliseconds (repeatable)")
    parser.add_argument("--exception-rate", type=float, default=0.0, metavar="RATE",
                        help="probability of answering with exception 4 (0..1)")
    parser.add_argument("--exception-unit", action="append", type=int, default=[],
                        metavar="UNIT", help="UNIT always answers with exception 2")
    parser.add_argument("--silent-unit", action="append", type=int, default=[], metavar="UNIT",
                        help="UNIT never answers")
    parser.add_argument("--wrong-unit", action="append", default=[], metavar="UNIT:OTHER",
                        help="UNIT's answers carry unit id OTHER")
    parser.add_argument("--crc-error-unit", action="append", type=int, default=[],
                        metavar="UNIT", help="UNIT's RTU answers carry a wrong CRC")
    parser.add_argument("--short-unit", action="append", type=int, default=[], metavar="UNIT",
                        help="UNIT's answers hold one register less than asked for")
    parser.add_argument("--alarm", action="append", default=[], metavar="UNIT:NAME",
                        help="set alarm/status bit NAME on UNIT (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: run until SIGINT/SIGTERM)")
    parser.add_argument("--json", action="store_true",
                        help="print where it listens as one JSON line")
    parser.add_argument("--city", type=int, default=None, metavar="SEED",
                        help="serve the bulk meters of the simulated city SEED (units 1..N, "
                        "see knute simulate --city) instead of --device")
    parser.add_argument("--city-clock", default=None, metavar="START:WALL:SPEED",
                        help="with --city: simulated unix time START at wall time WALL, "
                        "SPEED simulated seconds per second (default: now, now, 1)")
    parser.add_argument("--city-clock-file", default=None, metavar="FILE",
                        help="with --city-clock: the clock stands at START until FILE gives "
                        'its epoch, {"simulated": START, "wall": <unix s>} (WALL is then '
                        "not used; see knute simulate --clock-file)")
    from knute.tools.sim.city import add_city_arguments

    add_city_arguments(parser)


def _pair(text: str, opt: str) -> tuple[int, str]:
    unit, sep, rest = text.partition(":")
    if not sep or not unit.strip().isdigit() or not rest:
        raise KnuteError(f"{opt} {text!r}: expected UNIT:VALUE")
    value = int(unit)
    if not 0 <= value <= 255:
        raise KnuteError(f"{opt} {text!r}: unit id must be 0..255")
    return value, rest


def _unit_int(text: str, opt: str) -> tuple[int, int]:
    unit, rest = _pair(text, opt)
    try:
        return unit, int(rest)
    except ValueError:
        raise KnuteError(f"{opt} {text!r}: {rest!r} is not an integer") from None


def _build(args: argparse.Namespace) -> tuple[dict[int, SimUnit], Faults, random.Random]:
    from knute.gateway.modbus.regmap import load_map, resolve_map_path

    rng = random.Random(args.seed)
    if args.city is not None:
        return _city_units(args, rng), _faults(args), rng
    alarms: dict[int, set[str]] = {}
    for text in args.alarm:
        unit, name = _pair(text, "--alarm")
        alarms.setdefault(unit, set()).add(name)
    units: dict[int, SimUnit] = {}
    for text in args.device or list(DEFAULT_DEVICES):
        unit, map_name = _pair(text, "--device")
        if unit in units:
            raise KnuteError(f"--device {text!r}: unit {unit} is given twice")
        rmap = load_map(resolve_map_path(map_name, os.getcwd()))
        units[unit] = SimUnit(unit, rmap, random.Random(rng.random()), alarms.get(unit, set()))
    for unit, names in alarms.items():
        if unit not in units:
            raise KnuteError(f"--alarm: unit {unit} is not a --device")
        from knute.protocol import kinds

        known = {b for f in units[unit].kind["fields"] if f["type"] == "bits" for b in f["bits"]}
        unknown = names - known
        if unknown:
            raise KnuteError(f"--alarm: {', '.join(sorted(unknown))} is not a bit of "
                             f"{units[unit].map.kind} ({', '.join(sorted(known))})")
        del kinds
    return units, _faults(args), rng


def _city_units(args: argparse.Namespace, rng: random.Random) -> dict[int, SimUnit]:
    """The city's bulk meters as units 1..N (inlet, then outlet, district by district)."""
    import time

    from knute.gateway.modbus.regmap import load_map, resolve_map_path
    from knute.gateway.simclock import SimulatedClock
    from knute.tools.sim.city import city_from_args
    from knute.tools.sim.city_nodes import CityBulkUnit, bulk_units

    now = time.time()
    start, wall, speed = now, now, 1.0
    if args.city_clock:
        try:
            start, wall, speed = (float(v) for v in args.city_clock.split(":"))
        except ValueError:
            raise KnuteError(f"--city-clock {args.city_clock!r}: expected "
                             "START:WALL:SPEED") from None
    if args.city_clock_file and not args.city_clock:
        raise KnuteError("--city-clock-file needs --city-clock (its START and SPEED)")
    city = city_from_args(args, args.city, start)
    # The city's bulk meters keep their own time: a poll is stamped with it.
    rmap = load_map(resolve_map_path("bulk_water_meter", os.getcwd()))
    clock = SimulatedClock(speed, epoch=None if args.city_clock_file else (start, wall),
                           clock_file=args.city_clock_file, held_at=start)
    return {unit: CityBulkUnit(unit, rmap, random.Random(rng.random()), city, district, side,
                               clock)
            for unit, district, side, _device in bulk_units(city)}


def _faults(args: argparse.Namespace) -> Faults:
    if not 0.0 <= args.exception_rate <= 1.0:
        raise KnuteError("--exception-rate must be 0..1")
    return Faults(
        slow_s={u: ms / 1000.0 for u, ms in (_unit_int(t, "--slow-ms") for t in args.slow_ms)},
        exception_rate=args.exception_rate,
        exception_units=set(args.exception_unit),
        silent_units=set(args.silent_unit),
        wrong_unit=dict(_unit_int(t, "--wrong-unit") for t in args.wrong_unit),
        crc_units=set(args.crc_error_unit),
        short_units=set(args.short_unit),
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (or --duration)."""
    import asyncio
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    units, faults, rng = _build(args)
    tcp: tuple[str, int] | None = None
    if args.tcp or not args.rtu_pty:
        host, sep, port = (args.tcp or DEFAULT_TCP).rpartition(":")
        if not sep or not port.isdigit():
            raise KnuteError(f"--tcp {args.tcp!r}: expected HOST:PORT")
        tcp = (host or "127.0.0.1", int(port))
    return asyncio.run(serve(args, units, faults, rng, tcp))
