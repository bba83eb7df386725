"""The backend's TOML configuration: ``knute backend run --config FILE``.

Every problem is one ``ConfigError`` line that names the file and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from knute.backend.analytics import CONTINUOUS_FLOW_HOURS, NIGHT_USE_L_PER_PROPERTY_H

DEVICE_HEX = frozenset("0123456789abcdef")


class ConfigError(Exception):
    """The configuration file cannot be used; the message names file and key."""


@dataclass(frozen=True)
class District:
    """A district metered area: bulk inlet and outlet meters and its households."""

    name: str
    inflow: tuple[str, ...]
    outflow: tuple[str, ...]
    households: tuple[str, ...]
    properties: int


@dataclass(frozen=True)
class Config:
    """Everything ``knute backend run`` needs."""

    path: Path
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "knute-backend"
    prefix: str = "knute"
    protocol: str = "5"
    share_group: str = ""
    session_expiry_s: int = 7 * 86400
    keepalive_s: int = 30
    store_path: Path = Path("knute-backend.sqlite")
    schema_path: Path | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Oslo"))
    night_flow_l_h: float = 20.0
    continuous_flow_hours: int = CONTINUOUS_FLOW_HOURS
    expected_interval_s: float = 6 * 3600.0
    silent_after_intervals: int = 3
    night_use_l_per_property_h: float = NIGHT_USE_L_PER_PROPERTY_H
    district_leak_l_h: float = 100.0
    evaluate_every_s: float = 60.0
    districts: tuple[District, ...] = ()

    @property
    def subscription(self) -> str:
        """The topic filter: ``<prefix>/+/+/up``, under ``$share/<group>/`` if set."""
        base = f"{self.prefix}/+/+/up"
        return f"$share/{self.share_group}/{base}" if self.share_group else base


_SECTIONS: dict[str, dict[str, type]] = {
    "mqtt": {"host": str, "port": int, "client_id": str, "prefix": str, "protocol": str,
             "share_group": str, "session_expiry_s": int, "keepalive_s": int},
    "store": {"path": str, "schema": str},
    "water": {"timezone": str, "night_flow_l_h": float, "continuous_flow_hours": int,
              "expected_interval_s": float, "silent_after_intervals": int,
              "night_use_l_per_property_h": float, "district_leak_l_h": float,
              "evaluate_every_s": float},
}


def _typed(where: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    if isinstance(value, int | float) and value < 0:
        raise ConfigError(f"{where}: must not be negative, got {value!r}")
    return value


def _devices(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of device ids, got {value!r}")
    for device in value:
        if not (isinstance(device, str) and len(device) == 8 and set(device) <= DEVICE_HEX):
            raise ConfigError(f"{where}: {device!r} is not a device id "
                              "(8 lower-case hex digits)")
    return tuple(value)


def load(path: Path | str) -> Config:
    """Read and check the configuration file at ``path``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for name in raw:
        if name not in (*_SECTIONS, "district"):
            raise ConfigError(f"{path}: unknown section [{name}]")
    for section, keys in _SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(f"{path}: unknown key {section}.{key}")
            values[f"{section}.{key}"] = _typed(f"{path}: {section}.{key}", value, keys[key])
    mapped: dict[str, Any] = {"path": path}
    for dotted, value in values.items():
        section, key = dotted.split(".")
        if section == "store":
            mapped["store_path" if key == "path" else "schema_path"] = (
                (path.parent / value) if not Path(value).is_absolute() else Path(value))
        elif key == "timezone":
            try:
                mapped["timezone"] = ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(f"{path}: water.timezone: unknown time zone "
                                  f"{value!r}") from None
        else:
            mapped[key] = value
    if mapped.get("protocol", "5") not in ("5", "3.1.1"):
        raise ConfigError(f"{path}: mqtt.protocol: expected \"5\" or \"3.1.1\", "
                          f"got {mapped['protocol']!r}")
    if "/" in mapped.get("share_group", "") or "+" in mapped.get("share_group", ""):
        raise ConfigError(f"{path}: mqtt.share_group: must not contain '/' or '+'")
    if "store_path" not in mapped:
        mapped["store_path"] = path.parent / "knute-backend.sqlite"
    mapped["districts"] = _districts(path, raw.get("district", []))
    return Config(**mapped)


def _districts(path: Path, tables: Any) -> tuple[District, ...]:
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: district must be an array of tables ([[district]])")
    out = []
    names = set()
    for i, table in enumerate(tables):
        where = f"{path}: district[{i}]"
        unknown = set(table) - {"name", "inflow", "outflow", "households", "properties"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
        name = table.get("name")
        if not isinstance(name, str) or not name or "/" in name or "+" in name:
            raise ConfigError(f"{where}.name: expected a name without '/' or '+', "
                              f"got {name!r}")
        if name in names:
            raise ConfigError(f"{where}.name: district {name!r} is defined twice")
        names.add(name)
        inflow = _devices(f"{where}.inflow", table.get("inflow", []))
        if not inflow:
            raise ConfigError(f"{where}.inflow: a district needs at least one inlet meter")
        outflow = _devices(f"{where}.outflow", table.get("outflow", []))
        households = _devices(f"{where}.households", table.get("households", []))
        properties = _typed(f"{where}.properties", table.get("properties", len(households)),
                            int)
        out.append(District(name, inflow, outflow, households, properties))
    return tuple(out)
