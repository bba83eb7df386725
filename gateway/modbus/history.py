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
                 keep: int, at: float | None = None,
                 previous: tuple[float, int] | None = None) -> list[tuple[int, int]]:
    """The hour-boundary samples after a reading of ``index`` in unix hour ``hour``.

    The first reading in each hour gives that hour's boundary sample. When the
    reading before it (``previous``: its unix time and index) was taken in the
    hour just before and ``at`` is this reading's time, the sample is the index
    interpolated at the boundary between the two readings: the total grows by
    the flow between polls, so the first reading alone would put the water of
    the minutes since the boundary into the hour before (a quarter of an hour's
    flow at 15-minute polls). Otherwise it is the reading itself. A total that
    went down (meter replaced or reset) starts the samples again.
    """
    if hours and (index < hours[-1][1] or hour < hours[-1][0]):
        hours = []
    if not hours or hours[-1][0] != hour:
        sample = index
        if at is not None and previous is not None:
            sample = _at_boundary(hour * 3600, previous, (at, index))
        hours = [*hours, (hour, sample)]
    return hours[-keep:]


def _at_boundary(boundary: int, before: tuple[float, int], after: tuple[float, int]) -> int:
    """The index at ``boundary`` (unix s) interpolated between two readings around it.

    ``after``'s index when ``before`` is not from the hour before the boundary,
    is not older than ``after`` or has a higher index (a reset between them).
    """
    (t0, i0), (t1, i1) = before, after
    if not boundary - 3600 <= t0 < boundary <= t1 or t1 <= t0 or i0 > i1:
        return i1
    return i0 + round((i1 - i0) * (boundary - t0) / (t1 - t0))


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
