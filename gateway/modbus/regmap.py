"""Declarative Modbus register maps: one TOML file per device model.

A map says which registers a device model exposes and which field of a knute
sensor kind (``protocol.kinds``) each one fills, so that a polled device
produces the same raw wire integers a radio node would send. docs/modbus.md is
the reference; ``gateway/modbus/maps/`` holds the shipped templates, read with
``importlib.resources`` so they are found in an installed wheel too. In short::

    [device]
    model = "generic water meter"
    kind = "water_meter"          # a kind name from protocol.kinds
    word_order = "big"            # defaults for every register below
    byte_order = "big"
    max_gap = 0                   # unused registers one request may read across

    [registers.index]             # the table name is the kind field, unless `field` says
    function = 3                  # 3 holding, 4 input, 1 coils, 2 discrete inputs
    address = 0                   # protocol address, counted from 0
    type = "u64"                  # u16 s16 u32 s32 u64 s64 float32 float64 (bit for 1/2)
    scale = 1.0                   # value = register * scale + offset, in `unit`
    offset = 0.0
    unit = "L"                    # converted to the kind field's unit

    [registers.status]            # a bit set: register bit -> kind bit name
    function = 3
    address = 6
    type = "u16"
    field = "alarms"
    bits = { 0 = "leak", 1 = "burst" }

    [fixed]                       # fields the device has no register for, in the kind's unit
    battery = 100

    [profile]                     # hourly series computed by the gateway from a total
    from = "index"
    slots = 24

    [clock]                       # optional: the device's own time, unix seconds
    function = 3                  # read with the registers, so a poll is stamped with the
    address = 8                   # time the device read them at (no round trip in it)
    type = "u32"
    scale = 1.0                   # seconds per count (0.001: milliseconds)

Conversion to the wire: ``raw = round(kind_value * div / mul)`` with the kind
field's ``mul``/``div``, so a float32 temperature of 21.53 °C becomes 215
(``div`` 10). Values outside the kind's range are refused (a nullable field
becomes null).

``load_map`` validates everything at load. Any problem is one ``MapError``
(a ``KnuteError``) naming the file and the line: tomllib reports no line
numbers for valid TOML, so the offending table or key is searched for in the
source text.

Why one module of ~700 lines: it is the map format, in the order docs/modbus.md
describes it — the model (Register, RegisterMap, ReadBlock), the validator that
builds it (about half the lines, one check per documented rule), and the
conversion of registers into kind values. The validator and the model change
together whenever the format gains a key; split, every such change would touch
two modules that import each other's private helpers.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError
from knute.gateway.modbus import decode
from knute.protocol import kinds

# The shipped maps are package data of gateway.modbus (they travel in the wheel).
SHIPPED_MAPS: Traversable = resources.files("knute.gateway.modbus") / "maps"

FUNCTIONS = {1: "coils", 2: "discrete inputs", 3: "holding registers", 4: "input registers"}
MAX_REGISTERS = 125     # per read of holding/input registers (MAP v1.1b3, 6.3 and 6.4)
MAX_BITS = 2000         # per read of coils/discrete inputs (MAP v1.1b3, 6.1 and 6.2)

# Spellings of units accepted in maps -> the spelling protocol.kinds uses.
UNIT_ALIASES: dict[str, str] = {
    "l": "L", "litre": "L", "liter": "L", "litres": "L", "liters": "L",
    "m3": "m³", "m^3": "m³",
    "l/h": "L/h", "m3/h": "m³/h", "m^3/h": "m³/h", "l/s": "L/s", "l/min": "L/min",
    "ug/m3": "µg/m³", "μg/m³": "µg/m³", "mg/m3": "mg/m³",
    "c": "°C", "degc": "°C", "deg c": "°C", "celsius": "°C", "k": "K", "kelvin": "K",
    "%rh": "%", "percent": "%",
    "pa": "Pa", "kpa": "kPa", "hpa": "hPa", "mbar": "hPa", "bar": "bar",
    "h": "h", "": "",
}

# (map unit, kind unit) -> (factor, offset): kind value = value * factor + offset
CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("m³", "L"): (1000.0, 0.0),
    ("m³/h", "L/h"): (1000.0, 0.0),
    ("L/s", "L/h"): (3600.0, 0.0),
    ("L/min", "L/h"): (60.0, 0.0),
    ("mg/m³", "µg/m³"): (1000.0, 0.0),
    ("K", "°C"): (1.0, -273.15),
    ("Pa", "hPa"): (0.01, 0.0),
    ("kPa", "hPa"): (10.0, 0.0),
    ("bar", "hPa"): (1000.0, 0.0),
}

_TOP_KEYS = ("device", "registers", "fixed", "profile", "clock")
_DEVICE_KEYS = ("model", "kind", "word_order", "byte_order", "max_gap")
_REGISTER_KEYS = ("function", "address", "type", "word_order", "byte_order", "scale", "offset",
                  "unit", "field", "bits", "bit")
_PROFILE_KEYS = ("from", "slots")
_CLOCK_KEYS = ("function", "address", "type", "word_order", "byte_order", "scale", "offset")
CLOCK = "clock"                      # the field name of a map's [clock] register
_CLOCK_SET_AFTER = 946684800.0       # 2000-01-01: a device time before it was never set


class MapError(KnuteError):
    """A register map that cannot be used; the message names the file and the line."""


def kind_field(kind: dict[str, Any], name: str) -> dict[str, Any]:
    """The kinds-table entry of field ``name`` (KeyError if the kind has none)."""
    found: dict[str, Any] | None = kinds.field_by_name(kind, name)
    if found is None:
        raise KeyError(name)
    return found


def canonical_unit(unit: str) -> str | None:
    """The canonical spelling of a unit, or None if it is not known."""
    text = unit.strip()
    if text in UNIT_ALIASES.values() or text in ("m³", "mg/m³", "µg/m³"):
        return text
    return UNIT_ALIASES.get(text.lower())


def unit_conversion(unit: str, kind_unit: str) -> tuple[float, float] | None:
    """(factor, offset) taking a value in ``unit`` to ``kind_unit``, or None if impossible."""
    if unit == kind_unit:
        return (1.0, 0.0)
    return CONVERSIONS.get((unit, kind_unit))


@dataclass(frozen=True)
class Register:
    """One entry of a map's ``[registers]``: where a value sits and what it fills."""

    name: str
    field: str
    function: int
    address: int
    dtype: str
    word_order: str = "big"
    byte_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    bits: tuple[tuple[int, str], ...] = ()   # bit sets: (register bit, kind bit name)
    line: int = 0

    @property
    def count(self) -> int:
        """Registers (or coils) this entry occupies."""
        return decode.register_count(self.dtype)

    @property
    def end(self) -> int:
        """One past the last address it occupies."""
        return self.address + self.count


@dataclass(frozen=True)
class ReadBlock:
    """One read request: a function code and a contiguous address range."""

    function: int
    address: int
    count: int


@dataclass(frozen=True)
class RegisterMap:
    """A validated register map (see the module docstring)."""

    path: str
    model: str
    kind: str
    kind_id: int
    registers: tuple[Register, ...]
    fixed: tuple[tuple[str, int], ...] = ()      # field -> raw wire value
    profile_from: str | None = None              # field whose growth fills the series
    profile_field: str | None = None             # the kind's series field
    profile_slots: int = 24
    max_gap: int = 0
    clock: Register | None = None                # the device's time (unix s), if it has one

    @property
    def name(self) -> str:
        """The file name without directory and extension (how configs refer to it)."""
        return Path(self.path).stem

    @property
    def read_registers(self) -> tuple[Register, ...]:
        """Every register a poll reads: the kind's and the clock."""
        return self.registers if self.clock is None else (*self.registers, self.clock)

    def reads(self, limit_registers: int = MAX_REGISTERS,
              limit_bits: int = MAX_BITS) -> list[ReadBlock]:
        """The fewest read requests that cover every register.

        Entries of the same function that are contiguous (or at most ``max_gap``
        addresses apart) share one request, up to 125 registers (2000 coils).
        """
        blocks: list[ReadBlock] = []
        for reg in sorted(self.read_registers, key=lambda r: (r.function, r.address)):
            limit = limit_bits if reg.function in (1, 2) else limit_registers
            if blocks:
                last = blocks[-1]
                last_end = last.address + last.count
                if (last.function == reg.function and reg.address <= last_end + self.max_gap
                        and max(reg.end, last_end) - last.address <= limit):
                    blocks[-1] = ReadBlock(last.function, last.address,
                                           max(reg.end, last_end) - last.address)
                    continue
            blocks.append(ReadBlock(reg.function, reg.address, reg.count))
        return blocks


# ---------------------------------------------------------------- turning registers into values

def physical_value(reg: Register, words: list[int]) -> float | int:
    """The register's value in its declared unit: decoded * scale + offset."""
    raw = decode.decode_value(words, reg.dtype, reg.word_order, reg.byte_order)
    if reg.scale == 1.0 and reg.offset == 0.0:
        return raw
    return raw * reg.scale + reg.offset


def wire_value(field: dict[str, Any], unit: str, value: float) -> int | None:
    """The kind's raw wire integer for ``value`` (in ``unit``), None if invalid or out of range."""
    conv = unit_conversion(unit, field["unit"])
    if conv is None or isinstance(value, bool):
        return None
    kind_value = value * conv[0] + conv[1]
    if not math.isfinite(kind_value):
        return None
    raw = round(kind_value * field.get("div", 1) / field.get("mul", 1))
    if field["type"] == "u" and raw < 0:
        return None
    if raw < field["min"] or raw > field["max"]:
        return None
    return int(raw)


def physical_from_wire(field: dict[str, Any], unit: str, raw: int) -> float:
    """The inverse of ``wire_value``: a value in ``unit`` for a raw wire integer."""
    conv = unit_conversion(unit, field["unit"])
    if conv is None:
        raise ValueError(f"no conversion from {unit!r} to {field['unit']!r}")
    kind_value = float(raw * field.get("mul", 1) / field.get("div", 1))
    return (kind_value - conv[1]) / conv[0]


# ---------------------------------------------------------------- loading and validation

class _Source:
    """The map's text, to find the line of a table or key tomllib gives no position for."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r'^\s*("([^"]*)"|\'([^\']*)\'|[A-Za-z0-9_.-]+)\s*=')

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    @staticmethod
    def _split(dotted: str) -> tuple[str, ...]:
        return tuple(part.strip().strip('"').strip("'") for part in dotted.split("."))

    def line_of(self, *path: str) -> int:
        """The 1-based line that defines ``path`` (a table or a key), else its nearest parent."""
        for depth in range(len(path), 0, -1):
            found = self._find(path[:depth])
            if found:
                return found
        return 1

    def _find(self, path: tuple[str, ...]) -> int:
        table: tuple[str, ...] = ()
        for num, line in enumerate(self.lines, start=1):
            header = self._HEADER.match(line)
            if header:
                table = self._split(header.group(1))
                if table == path:
                    return num
                continue
            key = self._KEY.match(line)
            if key is None:
                continue
            name = key.group(2) if key.group(2) is not None else key.group(3)
            keys = (name,) if name is not None else self._split(key.group(1))
            full = table + keys
            # a key line (or a dotted key / inline table) that defines `path` or its parent
            if full[:len(path)] == path and len(full) >= len(path):
                return num
            if len(full) < len(path) and path[:len(full)] == full and "{" in line:
                return num
        return 0

    def error(self, path: tuple[str, ...], problem: str) -> MapError:
        """A MapError for the line of ``path``: ``file:line: dotted.path: problem``."""
        where = ".".join(path)
        prefix = f"{where}: " if where else ""
        return MapError(f"{self.path}:{self.line_of(*path)}: {prefix}{problem}")


def resolve_map_path(name: str, base_dir: str = ".") -> str:
    """A map file path: a path (relative to ``base_dir``) or a shipped map's name.

    A shipped map's name becomes the path of its file inside the installed
    package; a name that no shipped map has is a MapError listing the names.
    """
    if os.sep in name or name.endswith(".toml"):
        return name if os.path.isabs(name) else os.path.join(base_dir, name)
    shipped = SHIPPED_MAPS / f"{name}.toml"
    if not shipped.is_file():
        raise MapError(f"{name!r} is neither a .toml file nor a shipped register map "
                       f"(shipped: {', '.join(shipped_maps())})")
    # Installed packages live in directories (pip unpacks wheels), so the
    # resource is a file with a path that error messages can name.
    return str(shipped)


def shipped_maps() -> list[str]:
    """Names of the maps shipped in ``gateway/modbus/maps/``."""
    return sorted(entry.name.removesuffix(".toml") for entry in SHIPPED_MAPS.iterdir()
                  if entry.name.endswith(".toml"))


def load_map(path: str) -> RegisterMap:
    """Read and validate a map file; MapError (file:line: problem) if it is not valid."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise MapError(f"{path}: cannot read register map: {exc.strerror}") from None
    return parse_map(raw.decode("utf-8", "replace"), path)


def _number(src: _Source, path: tuple[str, ...], value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise src.error(path, f"must be a number, not {value!r}")
    if not math.isfinite(value):
        raise src.error(path, "must be a finite number")
    return float(value)


def _integer(src: _Source, path: tuple[str, ...], value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise src.error(path, f"must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise src.error(path, f"must be {lo}..{hi}, not {value}")
    return value


def _text(src: _Source, path: tuple[str, ...], value: Any,
          choices: tuple[str, ...] = ()) -> str:
    if not isinstance(value, str):
        raise src.error(path, f"must be a string, not {value!r}")
    if choices and value not in choices:
        raise src.error(path, f"must be one of {', '.join(choices)}, not {value!r}")
    return value


def _table(src: _Source, path: tuple[str, ...], value: Any,
           allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise src.error(path, "must be a table")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise src.error((*path, key),
                                f"unknown key (expected one of {', '.join(allowed)})")
    return value


def parse_map(text: str, path: str = "<map>") -> RegisterMap:
    """Validate the TOML text of a map (``path`` is used in error messages)."""
    src = _Source(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"at line (\d+)", str(exc))
        line = f":{where.group(1)}" if where else ""
        raise MapError(f"{path}{line}: invalid TOML: {exc}") from None
    _table(src, (), data, _TOP_KEYS)

    device = _table(src, ("device",), data.get("device"), _DEVICE_KEYS) \
        if "device" in data else None
    if device is None:
        raise MapError(f"{path}:1: [device] table missing (it names the sensor kind)")
    if "kind" not in device:
        raise src.error(("device",), "kind missing (one of "
                        f"{', '.join(sorted(kinds.KIND_IDS))})")
    kind_name = _text(src, ("device", "kind"), device["kind"], tuple(sorted(kinds.KIND_IDS)))
    kind_id = kinds.KIND_IDS[kind_name]
    kind: dict[str, Any] = kinds.KINDS[kind_id]
    model = _text(src, ("device", "model"), device.get("model", Path(path).stem))
    word_order = _text(src, ("device", "word_order"), device.get("word_order", "big"),
                       decode.ORDERS)
    byte_order = _text(src, ("device", "byte_order"), device.get("byte_order", "big"),
                       decode.ORDERS)
    max_gap = _integer(src, ("device", "max_gap"), device.get("max_gap", 0), 0,
                       MAX_REGISTERS - 2)

    field_names = [f["name"] for f in kind["fields"]]
    series = [f["name"] for f in kind["fields"] if f["type"] == "series"]
    end_fields = {name + "_end_h" for name in series}

    # -- [profile]
    profile_from: str | None = None
    profile_field: str | None = None
    slots = 24
    if "profile" in data:
        prof = _table(src, ("profile",), data["profile"], _PROFILE_KEYS)
        if not series:
            raise src.error(("profile",), f"kind {kind_name} has no series field to fill")
        profile_field = series[0]
        if "from" not in prof:
            raise src.error(("profile",), "from missing (the field holding the total)")
        profile_from = _text(src, ("profile", "from"), prof["from"])
        len_max = kind_field(kind, profile_field)["len"][1]
        slots = _integer(src, ("profile", "slots"), prof.get("slots", len_max), 1, len_max)

    # -- [registers]
    regs_data = _table(src, ("registers",), data.get("registers", {}), None)
    if not regs_data:
        raise src.error(("registers",) if "registers" in data else (),
                        "no [registers.<name>] table: a map needs at least one register")
    registers: list[Register] = []
    filled: dict[str, str] = {}
    for rname, rdata in regs_data.items():
        rpath = ("registers", rname)
        entry = _table(src, rpath, rdata, _REGISTER_KEYS)
        reg = _register(src, rpath, rname, entry, kind, field_names, series, end_fields,
                        word_order, byte_order)
        fdef = kind_field(kind, reg.field)
        if fdef["type"] != "bits":
            if reg.field in filled:
                raise src.error((*rpath, "field") if "field" in entry else rpath,
                                f"field {reg.field!r} is already filled by "
                                f"registers.{filled[reg.field]}")
            filled[reg.field] = rname
        registers.append(reg)
    clock = _clock(src, data["clock"], word_order, byte_order) if "clock" in data else None
    _check_overlaps(src, registers if clock is None else [*registers, clock])

    # -- [fixed]
    fixed: list[tuple[str, int]] = []
    if "fixed" in data:
        for fname, fvalue in _table(src, ("fixed",), data["fixed"], None).items():
            fpath = ("fixed", fname)
            if fname not in field_names:
                raise src.error(fpath, f"unknown field of {kind_name} (fields: "
                                f"{', '.join(field_names)})")
            fdef = kind_field(kind, fname)
            if fdef["type"] in ("series", "bits") or fname in end_fields:
                raise src.error(fpath, f"field {fname!r} cannot have a fixed value")
            if fname in filled:
                raise src.error(fpath, f"field {fname!r} is already filled by "
                                f"registers.{filled[fname]}")
            raw = wire_value(fdef, fdef["unit"], _number(src, fpath, fvalue))
            if raw is None:
                raise src.error(fpath, f"{fvalue!r} {fdef['unit']} is outside the range of "
                                f"{kind_name}.{fname}")
            fixed.append((fname, raw))
            filled[fname] = "fixed"

    if profile_from is not None:
        if profile_from not in filled or filled[profile_from] == "fixed":
            raise src.error(("profile", "from"),
                            f"{profile_from!r} is not a field filled by a register")
        assert profile_field is not None
        filled[profile_field] = "profile"
        filled[profile_field + "_end_h"] = "profile"

    for fdef in kind["fields"]:
        name = fdef["name"]
        if (name in filled or fdef["type"] == "bits" or fdef.get("optional")
                or fdef.get("nullable")):
            continue
        how = "[profile] from = ..." if fdef["type"] == "series" or name in end_fields else \
            f"a register with field = {name!r} or [fixed] {name} = ..."
        raise MapError(f"{path}:{src.line_of('device', 'kind')}: kind {kind_name} needs "
                       f"field {name!r}; this map does not fill it (add {how})")

    return RegisterMap(path=path, model=model, kind=kind_name, kind_id=kind_id,
                       registers=tuple(registers), fixed=tuple(fixed),
                       profile_from=profile_from, profile_field=profile_field,
                       profile_slots=slots, max_gap=max_gap, clock=clock)


def _clock(src: _Source, data: Any, word_order: str, byte_order: str) -> Register:
    """The ``[clock]`` table: a register (or two, four) holding the device's unix time."""
    path = (CLOCK,)
    entry = _table(src, path, data, _CLOCK_KEYS)
    for key in ("function", "address", "type"):
        if key not in entry:
            raise src.error(path, f"{key} missing")
    function = _integer(src, (*path, "function"), entry["function"], 3, 4)
    address = _integer(src, (*path, "address"), entry["address"], 0, 0xFFFF)
    dtype = _text(src, (*path, "type"), entry["type"], tuple(decode.TYPES))
    if address + decode.register_count(dtype) > 0x10000:
        raise src.error((*path, "address"), f"{dtype} at {address} runs past address 65535")
    scale = _number(src, (*path, "scale"), entry.get("scale", 1.0))
    if scale <= 0:
        raise src.error((*path, "scale"), "must be positive (seconds per count)")
    return Register(name=CLOCK, field=CLOCK, function=function, address=address, dtype=dtype,
                    word_order=_text(src, (*path, "word_order"),
                                     entry.get("word_order", word_order), decode.ORDERS),
                    byte_order=_text(src, (*path, "byte_order"),
                                     entry.get("byte_order", byte_order), decode.ORDERS),
                    scale=scale, offset=_number(src, (*path, "offset"), entry.get("offset", 0.0)),
                    unit="s", line=src.line_of(*path))


def _register(src: _Source, rpath: tuple[str, ...], rname: str, entry: dict[str, Any],
              kind: dict[str, Any], field_names: list[str], series: list[str],
              end_fields: set[str], word_order: str, byte_order: str) -> Register:
    for key in ("function", "address"):
        if key not in entry:
            raise src.error(rpath, f"{key} missing")
    function = _integer(src, (*rpath, "function"), entry["function"], 1, 4)
    address = _integer(src, (*rpath, "address"), entry["address"], 0, 0xFFFF)
    fname = _text(src, (*rpath, "field"), entry["field"]) if "field" in entry else rname
    if fname not in field_names:
        where = (*rpath, "field") if "field" in entry else rpath
        raise src.error(where, f"unknown field {fname!r} of {kind['name']} (fields: "
                        f"{', '.join(field_names)})")
    if fname in series or fname in end_fields:
        raise src.error(rpath, f"field {fname!r} is computed by the gateway: use [profile]")
    fdef = kind_field(kind, fname)
    is_bits = fdef["type"] == "bits"

    if function in (1, 2):
        dtype = _text(src, (*rpath, "type"), entry.get("type", decode.BIT), (decode.BIT,))
        if not is_bits:
            raise src.error((*rpath, "function"), f"{FUNCTIONS[function]} hold single bits; "
                            f"field {fname!r} is not a bit set")
        if "bit" not in entry:
            raise src.error(rpath, "bit missing (the kind bit this input sets)")
        bit_name = _text(src, (*rpath, "bit"), entry["bit"], tuple(fdef["bits"]))
        for key in ("bits", "scale", "offset", "unit", "word_order", "byte_order"):
            if key in entry:
                raise src.error((*rpath, key), f"not used with {FUNCTIONS[function]}")
        return Register(name=rname, field=fname, function=function, address=address,
                        dtype=dtype, bits=((0, bit_name),), line=src.line_of(*rpath))

    if "type" not in entry:
        raise src.error(rpath, f"type missing (one of {', '.join(decode.TYPES)})")
    dtype = _text(src, (*rpath, "type"), entry["type"], tuple(decode.TYPES))
    if address + decode.register_count(dtype) > 0x10000:
        raise src.error((*rpath, "address"), f"{dtype} at {address} runs past address 65535")
    worder = _text(src, (*rpath, "word_order"), entry.get("word_order", word_order),
                   decode.ORDERS)
    border = _text(src, (*rpath, "byte_order"), entry.get("byte_order", byte_order),
                   decode.ORDERS)
    if "bit" in entry:
        raise src.error((*rpath, "bit"), "bit is for coils and discrete inputs; "
                        "registers use bits = { <bit number> = <name> }")
    if is_bits:
        if dtype not in decode.INTEGER_TYPES:
            raise src.error((*rpath, "type"), f"a bit set needs an integer type, not {dtype}")
        for key in ("scale", "offset", "unit"):
            if key in entry:
                raise src.error((*rpath, key), "not used with a bit set")
        if "bits" not in entry:
            raise src.error(rpath, f"bits missing: {{ <bit number> = <one of "
                            f"{', '.join(fdef['bits'])}> }}")
        bits_tab = _table(src, (*rpath, "bits"), entry["bits"], None)
        width = 16 * decode.register_count(dtype)
        pairs: list[tuple[int, str]] = []
        for key, bname in bits_tab.items():
            bpath = (*rpath, "bits", key)
            if not key.isdigit() or int(key) >= width:
                raise src.error(bpath, f"bit number must be 0..{width - 1}, not {key!r}")
            pairs.append((int(key), _text(src, bpath, bname, tuple(fdef["bits"]))))
        if not pairs:
            raise src.error((*rpath, "bits"), "maps no bit")
        return Register(name=rname, field=fname, function=function, address=address,
                        dtype=dtype, word_order=worder, byte_order=border,
                        bits=tuple(sorted(pairs)), line=src.line_of(*rpath))

    if "bits" in entry:
        raise src.error((*rpath, "bits"), f"field {fname!r} is not a bit set")
    scale = _number(src, (*rpath, "scale"), entry.get("scale", 1.0))
    if scale == 0:
        raise src.error((*rpath, "scale"), "must not be 0")
    offset = _number(src, (*rpath, "offset"), entry.get("offset", 0.0))
    unit_text = _text(src, (*rpath, "unit"), entry.get("unit", fdef["unit"]))
    unit = canonical_unit(unit_text)
    if unit is None or unit_conversion(unit, fdef["unit"]) is None:
        convertible = sorted({a for (a, b) in CONVERSIONS if b == fdef["unit"]})
        raise src.error((*rpath, "unit"), f"{unit_text!r} does not convert to "
                        f"{kind['name']}.{fname}'s unit {fdef['unit']!r} (use "
                        f"{', '.join(repr(u) for u in [fdef['unit'], *convertible])})")
    return Register(name=rname, field=fname, function=function, address=address, dtype=dtype,
                    word_order=worder, byte_order=border, scale=scale, offset=offset,
                    unit=unit, line=src.line_of(*rpath))


def _check_overlaps(src: _Source, registers: list[Register]) -> None:
    ordered = sorted(registers, key=lambda r: (r.function, r.address, r.line))
    for prev, reg in itertools.pairwise(ordered):
        if prev.function == reg.function and reg.address < prev.end:
            later, earlier = (reg, prev) if reg.line >= prev.line else (prev, reg)
            raise src.error(_table_path(later),
                            f"{FUNCTIONS[later.function]} {later.address}..{later.end - 1} "
                            f"overlap {'.'.join(_table_path(earlier))} "
                            f"({earlier.address}..{earlier.end - 1})")


def _table_path(reg: Register) -> tuple[str, ...]:
    """Where ``reg`` is in the map: ``[clock]`` or ``[registers.<name>]``."""
    return (CLOCK,) if reg.field == CLOCK else ("registers", reg.name)


# ---------------------------------------------------------------- registers -> kind values

Image = dict[tuple[int, int], int]   # (function, address) -> register word, or 0/1 for a bit


def image_from_block(block: ReadBlock, values: list[int] | list[bool]) -> Image:
    """The (function, address) -> value entries of one answered read."""
    return {(block.function, block.address + pos): int(values[pos])
            for pos in range(block.count)}


def map_values(rmap: RegisterMap, image: Image) -> tuple[dict[str, Any], list[str]]:
    """Raw wire values by field name for the registers in ``image``, and problems.

    Fixed fields are included, bit sets are the OR of every register feeding
    them, the profile series is not (the poller derives it). A value outside
    the kind's range (or NaN) is a problem named ``registers.<name>``: a
    nullable field becomes None, any other field is left out.
    """
    kind: dict[str, Any] = kinds.KINDS[rmap.kind_id]
    values: dict[str, Any] = dict(rmap.fixed)
    problems: list[str] = []
    for reg in rmap.registers:
        fdef = kind_field(kind, reg.field)
        if fdef["type"] == "bits":
            if reg.function in (1, 2):
                word = image[(reg.function, reg.address)] & 1
            else:
                words = [image[(reg.function, a)] for a in range(reg.address, reg.end)]
                word = int(decode.decode_value(words, "u" + reg.dtype[1:], reg.word_order,
                                               reg.byte_order))
            acc = values.get(reg.field, 0)
            names = list(fdef["bits"])
            for bit, bname in reg.bits:
                if word >> bit & 1:
                    acc |= 1 << names.index(bname)
            values[reg.field] = acc
            continue
        words = [image[(reg.function, a)] for a in range(reg.address, reg.end)]
        raw = wire_value(fdef, reg.unit, physical_value(reg, words))
        if raw is None:
            problems.append(f"registers.{reg.name}")
            if fdef.get("nullable"):
                values[reg.field] = None
            continue
        values[reg.field] = raw
    return values, problems


def device_time(rmap: RegisterMap, image: Image) -> float | None:
    """The device's own time (unix seconds) from its ``[clock]`` register, or None.

    None also when the map has no clock or the register holds no usable time
    (not finite, or not after 2000-01-01: a clock that was never set).
    """
    reg = rmap.clock
    if reg is None:
        return None
    words = [image[(reg.function, a)] for a in range(reg.address, reg.end)]
    value = float(physical_value(reg, words))
    if not math.isfinite(value) or value < _CLOCK_SET_AFTER:
        return None
    return value
