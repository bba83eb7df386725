"""One device's fields as an operator types them: id, key, kind and location.

Each parser turns text (a CLI argument, a CSV cell) into the value the
registry stores, or raises one KnuteError that says what is wrong with it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from knute.gateway.errors import KnuteError
from knute.protocol import kinds

_HEX8 = re.compile(r"^[0-9a-fA-F]{8}$")
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
# protocol.frame.MAX_DEVICE_ID (the header's 4 id bytes), not imported from there:
# protocol.frame brings AES-CCM and cryptography, which `knute devices` and
# `knute gateway check` need nowhere else. tests/tools/test_cli_light.py pins the two.
MAX_DEVICE_ID = 0xFFFFFFFF


def parse_device_id(text: str | int) -> int:
    """A device id from decimal, ``0x``-hex or exactly 8 hex digits (the printed form)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        raw = str(text).strip()
        try:
            if raw.lower().startswith("0x"):
                value = int(raw[2:], 16)
            elif _HEX8.match(raw):
                value = int(raw, 16)
            else:
                value = int(raw, 10)
        except ValueError:
            raise KnuteError(
                f"device id {raw!r} is not decimal, 0x-hex or 8 hex digits") from None
    if value < 0 or value > MAX_DEVICE_ID:
        raise KnuteError(f"device id {value} is outside 0..{MAX_DEVICE_ID}")
    return value


def format_device_id(device_id: int) -> str:
    """The printed form of a device id: 8 lower-case hex digits."""
    return f"{device_id:08x}"


# A key as the registry share and the export files name it (gateway.registry_share).
# Here, beside the other fields, and not there: the rekey bookkeeping of `knute devices`
# and the registry's downlink store compare fingerprints and never seal, and the share
# brings X25519, HKDF and AES-GCM from cryptography.
_FP_TAG = b"knute key fingerprint v1\0"
SEALED_PREFIX = "x25519:"          # a sealed key in an export file's key column


def fingerprint(key: bytes) -> str:
    """16 hex digits naming a key without revealing it."""
    import hashlib  # here: OpenSSL's start is wasted on the commands that never call this

    return hashlib.sha256(_FP_TAG + key).digest()[:8].hex()


def parse_key(key: str | bytes) -> bytes:
    """A 16-byte AES key from bytes or 32 hex digits."""
    if isinstance(key, bytes | bytearray):
        raw = bytes(key)
    else:
        text = key.strip()
        if not _HEX32.match(text):
            raise KnuteError("key must be 32 hex digits (16 bytes)")
        raw = bytes.fromhex(text)
    if len(raw) != 16:
        raise KnuteError("key must be 16 bytes")
    return raw


def check_kind(kind: str) -> str:
    """``kind`` if it names a sensor kind in protocol.kinds, else a KnuteError."""
    if kind not in kinds.KIND_IDS:
        names: list[str] = [str(k) for k in kinds.KIND_IDS]
        known = ", ".join(sorted(names))
        raise KnuteError(f"unknown kind {kind!r} (known: {known})")
    return kind



# Location entries that must be numbers, and their ranges.
_NUMERIC_LOCATION = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0)}


def location_value(col: str, val: str) -> Any:
    """A location entry from a CSV cell: an int, a finite float, or the text."""
    try:
        return int(val)
    except ValueError:
        pass
    try:
        number = float(val)
    except ValueError:
        if col in _NUMERIC_LOCATION:
            raise KnuteError(f"{col}: {val!r} is not a number") from None
        return val
    if math.isfinite(number):
        return number
    if col in _NUMERIC_LOCATION:
        raise KnuteError(f"{col}: {val!r} is not a finite number")
    return val          # "inf" or "nan" as a word in an address stays text


def check_location(location: Mapping[str, Any]) -> None:
    """KnuteError unless every number in ``location`` is finite (and lat/lon in range)."""
    for key, value in location.items():
        _check_finite(value, f"location {key}")
        if key in _NUMERIC_LOCATION:
            lo, hi = _NUMERIC_LOCATION[key]
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise KnuteError(f"{key}: must be a number, got {value!r}")
            if not lo <= value <= hi:
                raise KnuteError(f"{key}: must be {lo:g}..{hi:g}, got {value:g}")


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise KnuteError(f"{where}: {value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_finite(item, where)



# A device's own send interval (the silent-node alarm): a second up to a year.
MAX_INTERVAL_S = 366 * 86400


def parse_interval(value: str | float | None) -> float | None:
    """A device's send interval in seconds from a number or its text; None for none given
    (empty text): the device then has its kind's interval."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            raise KnuteError(f"interval_s: {text!r} is not a number of seconds") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise KnuteError(f"interval_s: must be seconds, got {value!r}")
    else:
        number = float(value)
    if not math.isfinite(number) or not 1 <= number <= MAX_INTERVAL_S:
        raise KnuteError(f"interval_s: must be seconds 1..{MAX_INTERVAL_S}, got {value!r}")
    return number


def device_row(device_id: int | str, kind: str, key: bytes | str, name: str, site: str,
               location: Mapping[str, Any] | None,
               interval_s: str | float | None = None) -> tuple[Any, ...]:
    """The registry row of one device (id, kind, key, name, site, location JSON, added_at,
    interval_s).

    Every field is checked first; the first bad one is a KnuteError.
    """
    dev = parse_device_id(device_id)
    check_kind(kind)
    raw_key = parse_key(key)
    check_location(location or {})
    loc = json.dumps(dict(location or {}), sort_keys=True, allow_nan=False)
    return (dev, kind, raw_key, name, site, loc, time.time(), parse_interval(interval_s))
