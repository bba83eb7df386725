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
from knute.backend.leaks import (
    BURST_L_H,
    DISTRICT_RISE_MIN_L_H,
    DISTRICT_RISE_SHARE,
    MNF_TREND_L_H,
    STEADY_FLOW_L_H,
)
from knute.backend.store import Retention

DEVICE_HEX = frozenset("0123456789abcdef")
_AREA_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


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
class AirArea:
    """An area of the air-quality index: a name and its stations (air nodes)."""

    name: str
    stations: tuple[str, ...]


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
    store_url: str = ""              # postgresql://...: the database server instead of SQLite
    schema_path: Path | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Oslo"))
    night_flow_l_h: float = 20.0
    continuous_flow_hours: int = CONTINUOUS_FLOW_HOURS
    expected_interval_s: float = 6 * 3600.0
    silent_after_intervals: int = 3
    night_use_l_per_property_h: float = NIGHT_USE_L_PER_PROPERTY_H
    district_leak_l_h: float = 100.0
    steady_flow_l_h: float = STEADY_FLOW_L_H
    burst_l_h: float = BURST_L_H
    district_rise_share: float = DISTRICT_RISE_SHARE
    district_rise_min_l_h: float = DISTRICT_RISE_MIN_L_H
    mnf_trend_l_h: float = MNF_TREND_L_H
    evaluate_every_s: float = 60.0
    districts: tuple[District, ...] = ()
    web_enabled: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_days: int = 14
    readings_days: float = 0.0       # [retention]: 0 keeps for ever
    hourly_days: float = 0.0
    daily_days: float = 0.0
    retention_every_s: float = 3600.0
    # [air] (docs/air.md): the index scale shown first, PM averaging and the QC thresholds
    air_scale: str = "eaqi"
    air_pm_averaging: str = "1h"
    air_min_readings: int = 2
    air_stale_after_s: float = 3 * 3600.0
    air_kappa: float = 0.4
    air_rh_from: float = 70.0
    air_rh_fog: float = 95.0
    air_max_correction: float = 2.0
    air_stuck_readings: int = 12
    air_stuck_range: float = 0.0
    air_disagree_abs: float = 10.0
    air_disagree_rel: float = 1.0
    air_areas: tuple[AirArea, ...] = ()
    # [open_data] (docs/air.md): optional outputs for neighbours
    open_data_sensor_community_url: str = ""        # empty: no uploads
    open_data_sensor_community_prefix: str = "knute-"
    open_data_home_assistant_prefix: str = ""       # e.g. homeassistant; empty: no discovery
    open_data_senml: bool = False                   # publish <prefix>/senml/<device> too

    def retention(self) -> Retention:
        """The retention policy of ``[retention]`` (local days in ``water.timezone``)."""
        return Retention(self.readings_days, self.hourly_days, self.daily_days, self.timezone)

    @property
    def subscription(self) -> str:
        """The topic filter: ``<prefix>/+/+/up``, under ``$share/<group>/`` if set."""
        base = f"{self.prefix}/+/+/up"
        return f"$share/{self.share_group}/{base}" if self.share_group else base


_SECTIONS: dict[str, dict[str, type]] = {
    "mqtt": {"host": str, "port": int, "client_id": str, "prefix": str, "protocol": str,
             "share_group": str, "session_expiry_s": int, "keepalive_s": int},
    "store": {"path": str, "url": str, "schema": str},
    "water": {"timezone": str, "night_flow_l_h": float, "continuous_flow_hours": int,
              "expected_interval_s": float, "silent_after_intervals": int,
              "night_use_l_per_property_h": float, "district_leak_l_h": float,
              "evaluate_every_s": float, "steady_flow_l_h": float, "burst_l_h": float,
              "district_rise_share": float, "district_rise_min_l_h": float,
              "mnf_trend_l_h": float},
    "web": {"enabled": bool, "host": str, "port": int, "days": int},
    "retention": {"readings_days": float, "hourly_days": float, "daily_days": float,
                  "every_s": float},
    "air": {"scale": str, "pm_averaging": str, "min_readings": int, "stale_after_s": float,
            "kappa": float, "rh_from": float, "rh_fog": float, "max_correction": float,
            "stuck_readings": int, "stuck_range": float, "disagree_abs": float,
            "disagree_rel": float},
    "open_data": {"sensor_community_url": str, "sensor_community_prefix": str,
                  "home_assistant_prefix": str, "senml": bool},
}
# The series looks this far back: hours must outlive raw readings by a profile's
# reach (backend.store.PROFILE_REACH_S) and the signals' window.
_HOURLY_AFTER_READINGS_DAYS = 11


def _typed(where: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
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
        if name not in (*_SECTIONS, "district", "air_area"):
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
        if section == "store" and key == "url":
            if not value.startswith(("postgresql://", "postgres://")):
                raise ConfigError(f"{path}: store.url: expected a postgresql:// URL, "
                                  f"got {value!r}")
            mapped["store_url"] = value
        elif section == "store":
            mapped["store_path" if key == "path" else "schema_path"] = (
                (path.parent / value) if not Path(value).is_absolute() else Path(value))
        elif section == "retention":
            mapped["retention_every_s" if key == "every_s" else key] = value
        elif key == "timezone":
            try:
                mapped["timezone"] = ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(f"{path}: water.timezone: unknown time zone "
                                  f"{value!r}") from None
        elif section in ("web", "air", "open_data"):
            mapped[f"{section}_{key}"] = value
        else:
            mapped[key] = value
    if not 0 <= mapped.get("web_port", 0) <= 65535:
        raise ConfigError(f"{path}: web.port: expected 0-65535 (0: any free port), "
                          f"got {mapped['web_port']!r}")
    if not 1 <= mapped.get("web_days", 1) <= 366:
        raise ConfigError(f"{path}: web.days: expected 1-366, got {mapped['web_days']!r}")
    if mapped.get("protocol", "5") not in ("5", "3.1.1"):
        raise ConfigError(f"{path}: mqtt.protocol: expected \"5\" or \"3.1.1\", "
                          f"got {mapped['protocol']!r}")
    if "/" in mapped.get("share_group", "") or "+" in mapped.get("share_group", ""):
        raise ConfigError(f"{path}: mqtt.share_group: must not contain '/' or '+'")
    if "store_url" in mapped and "store.path" in values:
        raise ConfigError(f"{path}: store.url and store.path: give one store, not both")
    _check_retention(path, mapped)
    if "store_path" not in mapped:
        mapped["store_path"] = path.parent / "knute-backend.sqlite"
    mapped["districts"] = _districts(path, raw.get("district", []))
    _check_air(path, mapped)
    mapped["air_areas"] = _air_areas(path, raw.get("air_area", []))
    return Config(**mapped)


def _check_air(path: Path, mapped: dict[str, Any]) -> None:
    if mapped.get("air_scale", "eaqi") not in ("eaqi", "no"):
        raise ConfigError(f"{path}: air.scale: expected \"eaqi\" or \"no\", "
                          f"got {mapped['air_scale']!r}")
    if mapped.get("air_pm_averaging", "1h") not in ("1h", "24h"):
        raise ConfigError(f"{path}: air.pm_averaging: expected \"1h\" or \"24h\", "
                          f"got {mapped['air_pm_averaging']!r}")
    if not 0 < mapped.get("air_rh_from", 70.0) < mapped.get("air_rh_fog", 95.0) < 100:
        raise ConfigError(f"{path}: air.rh_from and air.rh_fog: expected "
                          "0 < rh_from < rh_fog < 100")
    if mapped.get("air_min_readings", 1) < 1:
        raise ConfigError(f"{path}: air.min_readings: must be at least 1")
    url = mapped.get("open_data_sensor_community_url", "")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: open_data.sensor_community_url: expected an http(s) URL, "
                          f"got {url!r}")


def _air_areas(path: Path, tables: Any) -> tuple[AirArea, ...]:
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: air_area must be an array of tables ([[air_area]])")
    out: list[AirArea] = []
    for i, table in enumerate(tables):
        where = f"{path}: air_area[{i}]"
        unknown = set(table) - {"name", "stations"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
        name = table.get("name")
        if (not isinstance(name, str) or not name or name[0] in "_-"
                or not set(name) <= _AREA_CHARS):
            raise ConfigError(f"{where}.name: expected a lower-case name of letters, digits, "
                              f"'_' and '-', got {name!r}")
        if any(a.name == name for a in out):
            raise ConfigError(f"{where}.name: air area {name!r} is defined twice")
        stations = _devices(f"{where}.stations", table.get("stations", []))
        if not stations:
            raise ConfigError(f"{where}.stations: an area needs at least one station")
        out.append(AirArea(name, stations))
    return tuple(out)


def _check_retention(path: Path, mapped: dict[str, Any]) -> None:
    readings, hourly = mapped.get("readings_days", 0.0), mapped.get("hourly_days", 0.0)
    daily = mapped.get("daily_days", 0.0)
    if hourly and (not readings or hourly < readings + _HOURLY_AFTER_READINGS_DAYS):
        raise ConfigError(f"{path}: retention.hourly_days: must be at least "
                          f"retention.readings_days + {_HOURLY_AFTER_READINGS_DAYS} "
                          "(a profile reaches 11 days back), and readings_days must be set")
    if daily and (not hourly or daily < hourly):
        raise ConfigError(f"{path}: retention.daily_days: must be 0 (for ever) or at least "
                          "retention.hourly_days, and hourly_days must be set")
    if mapped.get("retention_every_s", 1.0) <= 0:
        raise ConfigError(f"{path}: retention.every_s: must be positive")


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
