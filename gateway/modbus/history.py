"""What a polled meter keeps between polls and across restarts: the hour-boundary
samples of its total (for the hourly profile a radio meter sends itself) and
its frame counter, in a JSON state file written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger("knute.modbus")

STATE_VERSION = 1


def update_hours(hours: list[tuple[int, int]], hour: int, index: int,
                 keep: int) -> list[tuple[int, int]]:
    """The hour-boundary samples after a reading of ``index`` in unix hour ``hour``.

    The first reading in each hour is that hour's boundary sample. A total that
    went down (meter replaced or reset) starts the samples again.
    """
    if hours and (index < hours[-1][1] or hour < hours[-1][0]):
        hours = []
    if not hours or hours[-1][0] != hour:
        hours = [*hours, (hour, index)]
    return hours[-keep:]


def hourly_profile(hours: list[tuple[int, int]], index: int, slots: int,
                   slot_max: int = 0xFFFFFF) -> tuple[list[int], int]:
    """(litres per hour slot oldest first, unix hour at which the last slot ends).

    Slots cover the run of consecutive hours ending with the running hour (the
    hour of the last sample): completed hours from one boundary sample to the
    next, then the running hour from its boundary sample to ``index``. Hours in
    which the gateway took no reading are left out, not guessed.
    """
    if not hours:
        raise ValueError("no hour samples")
    last_hour, last_index = hours[-1]
    profile = [min(max(index - last_index, 0), slot_max)]
    pos = len(hours) - 1
    while pos > 0 and len(profile) < slots and hours[pos - 1][0] == hours[pos][0] - 1:
        profile.append(min(hours[pos][1] - hours[pos - 1][1], slot_max))
        pos -= 1
    profile.reverse()
    return profile, last_hour + 1


# ---------------------------------------------------------------- persistent state

@dataclass
class DeviceState:
    """What survives a restart: the last frame counter and the hour-boundary samples."""

    fcnt: int = 0
    hours: list[tuple[int, int]] = field(default_factory=list)


def load_state(path: str | None) -> dict[int, DeviceState]:
    """The state file's devices; an absent or unreadable file is an empty state (logged)."""
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        out: dict[int, DeviceState] = {}
        for name, entry in data["devices"].items():
            hours = [(int(h), int(x)) for h, x in entry.get("hours", [])]
            out[int(name, 16)] = DeviceState(int(entry["fcnt"]), hours)
        return out
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.error("modbus state file %s unreadable (%s); counters continue from the spool's",
                  path, exc)
        return {}


def save_state(path: str, states: Mapping[int, DeviceState]) -> None:
    """Write the state file atomically (temporary file, then rename)."""
    data = {"version": STATE_VERSION,
            "devices": {f"{dev:08x}": {"fcnt": st.fcnt, "hours": [list(h) for h in st.hours]}
                        for dev, st in sorted(states.items())}}
    tmp = f"{path}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, path)
