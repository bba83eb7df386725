"""The ``[modbus]`` table of the gateway configuration.

::

    [modbus]
    state_file = "modbus-state.json"   # per-device frame counter and hourly index
    offline_after = 3                  # consecutive failed polls before `offline`
    log_interval_s = 60                # at most one log line per device and reason

    [[modbus.bus]]
    name = "plant-rs485"
    rtu = "/dev/ttyUSB0"               # a serial port (or a pyserial URL) ...
    baudrate = 9600
    parity = "E"                       # N, E or O
    stopbits = 1
    timeout_s = 0.5                    # default per-request timeout of its devices
    retries = 1                        # default extra attempts per request

    [[modbus.bus]]
    name = "district-tcp"
    tcp = "10.0.4.20:502"              # ... or a Modbus TCP server
    shared = false                     # one connection per device (default) or one shared

    [[modbus.device]]
    bus = "plant-rs485"
    unit_id = 3
    device_id = "0x1000a003"           # the knute device id (topics, JSON)
    map = "generic_water_meter"        # a shipped map's name, or a path to a .toml file
    interval_s = 60
    timeout_s = 0.5                    # optional: overrides the bus's
    retries = 1

``parse_settings`` checks every key and raises one KnuteError naming the file
and the key; it is meant to be called by ``gateway.config`` for the table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knute.gateway.errors import KnuteError
from knute.gateway.modbus.regmap import MapError, RegisterMap, load_map, resolve_map_path

DEFAULT_OFFLINE_AFTER = 3
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_RETRIES = 1
DEFAULT_INTERVAL_S = 60.0
MIN_INTERVAL_S = 0.05


@dataclass(frozen=True)
class BusSettings:
    """One ``[[modbus.bus]]``: an RS-485 line (``rtu``) or a Modbus TCP server (``tcp``)."""

    name: str
    tcp: tuple[str, int] | None = None
    rtu: str | None = None
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    shared: bool = False            # TCP only: one connection for all its devices

    @property
    def kind(self) -> str:
        """"tcp" or "rtu"."""
        return "tcp" if self.tcp is not None else "rtu"

    @property
    def target(self) -> str:
        """host:port or the serial port, for logs and status."""
        if self.tcp is not None:
            return f"{self.tcp[0]}:{self.tcp[1]}"
        return str(self.rtu)


@dataclass(frozen=True)
class DeviceSettings:
    """One ``[[modbus.device]]``: a unit on a bus, read with a register map."""

    device_id: int
    bus: str
    unit_id: int
    map: RegisterMap
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    @property
    def name(self) -> str:
        """The device id as 8 lower-case hex digits."""
        return f"{self.device_id:08x}"


@dataclass(frozen=True)
class ModbusSettings:
    """The whole ``[modbus]`` table."""

    buses: tuple[BusSettings, ...] = ()
    devices: tuple[DeviceSettings, ...] = ()
    state_file: str | None = None
    offline_after: int = DEFAULT_OFFLINE_AFTER
    log_interval_s: float = 60.0


class _Tab:
    def __init__(self, file: str, where: str, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise KnuteError(f"{file}: {where}: must be a table")
        self.file, self.where, self.data = file, where, data
        self.used: set[str] = set()

    def err(self, key: str, problem: str) -> KnuteError:
        return KnuteError(f"{self.file}: {self.where}.{key}: {problem}")

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def integer(self, key: str, default: int | None, lo: int, hi: int) -> int:
        value = self.get(key, default)
        if value is None:
            raise self.err(key, "missing")
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.err(key, f"must be an integer {lo}..{hi}, not {value!r}")
        return int(value)

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self.get(key, default)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or not lo <= value <= hi):
            raise self.err(key, f"must be a number {lo:g}..{hi:g}, not {value!r}")
        return float(value)

    def text(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.get(key, default)
        if value is None:
            raise self.err(key, "missing")
        if not isinstance(value, str) or not value:
            raise self.err(key, f"must be a non-empty string, not {value!r}")
        if choices and value not in choices:
            raise self.err(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def done(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise self.err(key, "unknown key")


def parse_device_id(text: Any) -> int | None:
    """A device id from decimal, 0x-hex or 8 hex digits (as the CLI accepts), else None."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str):
        raw = text.strip().lower()
        try:
            hex8 = len(raw) == 8 and all(c in "0123456789abcdef" for c in raw)
            value = int(raw, 16) if raw.startswith("0x") or hex8 else int(raw, 10)
        except ValueError:
            return None
    else:
        return None
    return value if 0 <= value <= 0xFFFFFFFF else None


def _host_port(tab: _Tab, key: str) -> tuple[str, int]:
    text = tab.text(key)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise tab.err(key, f"must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def parse_settings(data: Mapping[str, Any], *, file: str = "<config>",
                   base_dir: str = ".") -> ModbusSettings:
    """Check and convert the ``[modbus]`` table; KnuteError naming file and key otherwise.

    Register maps are loaded (and validated) here, so a broken map stops the
    gateway at start with the map's file and line.
    """
    top = _Tab(file, "modbus", data)
    state = top.get("state_file")
    if state is not None and (not isinstance(state, str) or not state):
        raise top.err("state_file", "must be a path")
    state_file = None if state is None else (
        state if os.path.isabs(state) else os.path.join(base_dir, state))
    offline_after = top.integer("offline_after", DEFAULT_OFFLINE_AFTER, 1, 1000)
    log_interval = top.number("log_interval_s", 60.0, 0.0, 86400.0)

    raw_buses = top.get("bus", [])
    if not isinstance(raw_buses, list):
        raise top.err("bus", "must be an array of tables ([[modbus.bus]])")
    buses: dict[str, BusSettings] = {}
    for pos, raw in enumerate(raw_buses):
        tab = _Tab(file, f"modbus.bus[{pos}]", raw)
        name = tab.text("name")
        if name in buses:
            raise tab.err("name", f"{name!r} is used by another bus")
        has_tcp, has_rtu = "tcp" in tab.data, "rtu" in tab.data
        if has_tcp == has_rtu:
            raise KnuteError(f"{file}: modbus.bus[{pos}]: give exactly one of tcp = "
                             "\"HOST:PORT\" or rtu = \"/dev/tty...\"")
        tcp = _host_port(tab, "tcp") if has_tcp else None
        rtu = tab.text("rtu") if has_rtu else None
        bus = BusSettings(
            name=name, tcp=tcp, rtu=rtu,
            baudrate=tab.integer("baudrate", 9600, 300, 4_000_000),
            bytesize=tab.integer("bytesize", 8, 7, 8),
            parity=tab.text("parity", "N", ("N", "E", "O")),
            stopbits=tab.integer("stopbits", 1, 1, 2),
            timeout_s=tab.number("timeout_s", DEFAULT_TIMEOUT_S, 0.01, 60.0),
            retries=tab.integer("retries", DEFAULT_RETRIES, 0, 10),
            shared=bool(tab.get("shared", False)),
        )
        if not isinstance(tab.get("shared", False), bool):
            raise tab.err("shared", "must be true or false")
        tab.done()
        buses[name] = bus

    raw_devices = top.get("device", [])
    if not isinstance(raw_devices, list):
        raise top.err("device", "must be an array of tables ([[modbus.device]])")
    devices: list[DeviceSettings] = []
    seen_ids: set[int] = set()
    seen_units: set[tuple[str, int]] = set()
    maps: dict[str, RegisterMap] = {}
    for pos, raw in enumerate(raw_devices):
        tab = _Tab(file, f"modbus.device[{pos}]", raw)
        bus_name = tab.text("bus")
        if bus_name not in buses:
            raise tab.err("bus", f"no [[modbus.bus]] named {bus_name!r}")
        bus = buses[bus_name]
        unit_id = tab.integer("unit_id", None, 0 if bus.tcp else 1, 255 if bus.tcp else 247)
        if (bus_name, unit_id) in seen_units:
            raise tab.err("unit_id", f"unit {unit_id} on bus {bus_name!r} is listed twice")
        seen_units.add((bus_name, unit_id))
        device_id = parse_device_id(tab.get("device_id"))
        if device_id is None:
            raise tab.err("device_id", "must be a device id (decimal, 0x-hex or 8 hex digits)")
        if device_id in seen_ids:
            raise tab.err("device_id", f"{device_id:08x} is used by another device")
        seen_ids.add(device_id)
        try:
            map_path = resolve_map_path(tab.text("map"), base_dir)
        except MapError as exc:
            raise tab.err("map", str(exc)) from None
        if map_path not in maps:
            maps[map_path] = load_map(map_path)
        devices.append(DeviceSettings(
            device_id=device_id, bus=bus_name, unit_id=unit_id, map=maps[map_path],
            interval_s=tab.number("interval_s", DEFAULT_INTERVAL_S, MIN_INTERVAL_S, 86400.0),
            timeout_s=tab.number("timeout_s", bus.timeout_s, 0.01, 60.0),
            retries=tab.integer("retries", bus.retries, 0, 10),
        ))
        tab.done()
    top.done()
    return ModbusSettings(buses=tuple(buses.values()), devices=tuple(devices),
                          state_file=state_file, offline_after=offline_after,
                          log_interval_s=log_interval)
