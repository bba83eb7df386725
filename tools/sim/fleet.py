"""Simulated nodes that send real encrypted frames: the models behind ``knute simulate``.

A water meter here behaves like the firmware's water-meter role: it counts
litres per hour from a household consumption model (low at night, morning and
evening peaks, later mornings at weekends, almost nothing on holidays away),
keeps its index, raises the same alarms (leak: no hour without flow in the
last 24; burst: an hour above the threshold; tamper; low battery) and sends
four times a day with the last six hourly values. An air node reports particle
levels that follow traffic peaks and slow weather swings, temperature and
humidity on a daily cycle and a wandering pressure, every 10 minutes.

Time is simulated: the fleet runs on a clock that the caller advances (``knute
simulate --speed 3600`` runs an hour a second). Everything is seeded, so a run
can be repeated exactly.

Faults a run can inject (each counted in ``Fleet.injected``): ``leak``,
``burst``, ``tamper``, ``sensor`` (air node's particle sensor fails),
``garbage`` (random bytes on the link), ``truncated`` (a frame cut short),
``replay`` (an old frame sent again), ``reset`` (a node whose counter restarts
at 0, as a node without persistent state would).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from knute.protocol import ccm, frame

HOUR = 3600
DAY = 24 * HOUR
WATER_SEND_EVERY_S = 6 * HOUR
AIR_SEND_EVERY_S = 600
BURST_LPH = 1500
FAULTS = ("leak", "burst", "tamper", "sensor", "garbage", "truncated", "replay", "reset")

# Share of a household's daily water use per hour of the day (sums to 1): low at
# night, a morning peak (showers) and a longer evening peak (cooking, washing).
_WEEKDAY = [0.5, 0.3, 0.2, 0.2, 0.3, 1.0, 4.0, 8.0, 7.0, 4.5, 3.5, 3.5,
            4.0, 3.5, 3.0, 3.0, 4.0, 5.5, 7.5, 8.0, 7.0, 5.5, 3.5, 1.5]
_WEEKEND = [0.8, 0.5, 0.3, 0.2, 0.2, 0.4, 1.0, 2.5, 5.5, 8.0, 8.0, 6.5,
            5.5, 4.5, 4.0, 4.0, 4.5, 5.5, 7.0, 7.0, 6.0, 4.5, 3.0, 1.5]
_WEEKDAY_SHARE = [w / sum(_WEEKDAY) for w in _WEEKDAY]
_WEEKEND_SHARE = [w / sum(_WEEKEND) for w in _WEEKEND]
# Norwegian public holidays of 2026 as (month, day): nobody at home in half the houses.
HOLIDAYS = {(1, 1), (4, 2), (4, 3), (4, 6), (5, 1), (5, 14), (5, 17), (5, 25),
            (12, 25), (12, 26)}


def _day_of(t: float) -> tuple[int, int, int, int]:
    """(month, day, weekday 0=Monday, hour) of Unix time `t` in UTC."""
    import time as _time

    tm = _time.gmtime(t)
    return tm.tm_mon, tm.tm_mday, tm.tm_wday, tm.tm_hour


@dataclass
class Household:
    """Water use of one household: litres in the hour starting at a given time."""

    persons: int
    litres_per_person_day: float
    away_on_holidays: bool
    leak_lph: float = 0.0
    burst_at: float | None = None

    def litres(self, hour_start: float, rng: random.Random) -> int:
        """Litres through the meter in the hour that starts at `hour_start`."""
        month, mday, wday, hour = _day_of(hour_start)
        share = (_WEEKEND_SHARE if wday >= 5 else _WEEKDAY_SHARE)[hour]
        daily = self.persons * self.litres_per_person_day
        if (month, mday) in HOLIDAYS and self.away_on_holidays:
            daily *= 0.05
        mean = daily * share
        # Mostly-zero small hours: use happens in events, not as a steady flow.
        used = 0.0 if rng.random() < math.exp(-mean / 6.0) else rng.gammavariate(2.0, mean / 2.0)
        used += self.leak_lph
        if self.burst_at is not None and hour_start <= self.burst_at < hour_start + HOUR:
            used += BURST_LPH * 1.6
        return max(0, round(used))


@dataclass
class Node:
    """What every simulated node has: identity, key, counter and send schedule."""

    device_id: int
    kind: str
    key: bytes
    next_send: float
    fcnt: int = 0
    sent: int = 0
    high_water: int = -1          # highest counter a correct gateway has accepted
    last_frames: deque[bytes] = field(default_factory=lambda: deque(maxlen=4))
    _block: Any = None

    def seal(self, values: dict[str, Any]) -> bytes:
        """The next frame for `values`, with the node's key and next counter."""
        if self._block is None:
            self._block = ccm.aes_block(self.key)
        raw = frame.encode(self.kind, self.device_id, self.fcnt, values, self.key, 4,
                           self._block)
        self.fcnt += 1
        self.sent += 1
        self.last_frames.append(raw)
        return raw


@dataclass
class MeterNode(Node):
    """A water meter: index, hourly history, alarms like the firmware's role."""

    household: Household = field(default_factory=lambda: Household(2, 150.0, False))
    index_l: int = 0
    hour_mark: float = 0.0       # start of the first hour not yet counted
    history: deque[int] = field(default_factory=lambda: deque(maxlen=48))
    battery_pct: float = 100.0
    tamper: bool = False
    profile_len: int = 6

    def advance(self, now: float, rng: random.Random) -> None:
        """Count every hour that has ended by `now`."""
        while self.hour_mark + HOUR <= now:
            litres = self.household.litres(self.hour_mark, rng)
            self.index_l = (self.index_l + litres) & 0xFFFFFFFF
            self.history.append(litres)
            self.hour_mark += HOUR
            self.battery_pct = max(0.0, self.battery_pct - 0.0007)  # about 15 years

    def values(self) -> dict[str, Any]:
        """The raw field values of the next frame."""
        profile = list(self.history)[-self.profile_len:] or [0]
        last_day = list(self.history)[-24:]
        alarms = 0
        if len(last_day) == 24 and min(last_day) > 0:
            alarms |= 1 << 0                                   # leak
        if any(v > BURST_LPH for v in profile):
            alarms |= 1 << 1                                   # burst
        if self.tamper:
            alarms |= 1 << 3                                   # tamper
        if self.battery_pct < 10:
            alarms |= 1 << 5                                   # low battery
        values: dict[str, Any] = {
            "index": self.index_l,
            "profile_end_h": int(self.hour_mark // HOUR) % 256,
            "alarms": alarms,
            "battery": min(20, round(self.battery_pct / 5)),
            "profile": profile,
        }
        if alarms:
            values["max_flow"] = max(profile)
        return values


@dataclass
class AirNode(Node):
    """An air-quality node near a road: traffic peaks, weather, a daily cycle."""

    pm_base: float = 8.0
    weather: float = 0.0
    pressure_hpa: float = 1013.0
    pm_failed: bool = False

    def values(self, now: float, rng: random.Random) -> dict[str, Any]:
        """The raw field values of the next frame at time `now`."""
        _, _, wday, hour = _day_of(now)
        traffic = 1.0
        if wday < 5 and hour in (7, 8, 16, 17):
            traffic = 2.2
        elif hour >= 22 or hour < 5:
            traffic = 0.6
        self.weather = max(-0.8, min(2.5, self.weather + rng.gauss(0, 0.05)))
        self.pressure_hpa = max(960.0, min(1045.0, self.pressure_hpa + rng.gauss(0, 0.15)))
        pm25 = max(0.5, self.pm_base * traffic * (1 + self.weather) + rng.gauss(0, 0.8))
        day_phase = math.cos((hour - 15) / 24 * 2 * math.pi)
        temp_c = 4.0 + 5.0 * day_phase + rng.gauss(0, 0.3)
        humidity = max(20, min(100, round(80 - 15 * day_phase + rng.gauss(0, 2))))
        status = 0
        values: dict[str, Any]
        if self.pm_failed:
            status |= 1 << 0
            values = {"pm1": None, "pm2_5": None, "pm10": None}
        else:
            values = {"pm1": round(pm25 * 6.5), "pm2_5": round(pm25 * 10),
                      "pm10": round(pm25 * 16.5)}
        values.update({
            "temperature": round(temp_c * 10),
            "humidity": humidity,
            "pressure": round(self.pressure_hpa * 10),
            "status": status,
        })
        return values


@dataclass
class Transmission:
    """One thing a node puts on the air: a frame (maybe damaged) or garbage."""

    node: Node | None
    payload: bytes
    fault: str | None = None      # the injected fault, if any
    valid: bool = True            # a correct gateway accepts it (new counter, intact)


class Fleet:
    """A seeded set of nodes and the schedule of what they send.

    ``due(now)`` returns, in time order, every transmission whose time has come.
    """

    def __init__(self, meters: int, air: int, *, start: float, seed: int = 1,
                 faults: tuple[str, ...] = (), fault_rate: float = 0.02,
                 first_device_id: int = 0x10000000, profile_len: int = 6) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(FAULTS)}")
        self.rng = random.Random(seed)
        self.faults = faults
        self.fault_rate = fault_rate
        self.injected: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self.nodes: list[Node] = []
        self._queue: list[tuple[float, int, int]] = []
        start_hour = start - start % HOUR
        for i in range(meters):
            household = Household(
                persons=self.rng.choice([1, 1, 2, 2, 2, 3, 4, 5]),
                litres_per_person_day=self.rng.uniform(110, 190),
                away_on_holidays=self.rng.random() < 0.5,
            )
            node = MeterNode(
                device_id=first_device_id + i, kind="water_meter",
                key=self.rng.randbytes(16),
                next_send=start + self.rng.uniform(0, WATER_SEND_EVERY_S),
                household=household, index_l=self.rng.randrange(10_000, 900_000),
                hour_mark=start_hour - 24 * HOUR, battery_pct=self.rng.uniform(40, 100),
                profile_len=profile_len,
            )
            node.advance(start, self.rng)
            self.nodes.append(node)
        for j in range(air):
            self.nodes.append(AirNode(
                device_id=first_device_id + 0x01000000 + j, kind="air_quality",
                key=self.rng.randbytes(16),
                next_send=start + self.rng.uniform(0, AIR_SEND_EVERY_S),
                pm_base=self.rng.uniform(4, 14), pressure_hpa=self.rng.uniform(995, 1030),
            ))
        for pos, each in enumerate(self.nodes):
            heapq.heappush(self._queue, (each.next_send, each.device_id, pos))

    def add_node(self, node: Node) -> None:
        """Schedule one more node (its first send at ``node.next_send``)."""
        self.nodes.append(node)
        heapq.heappush(self._queue, (node.next_send, node.device_id, len(self.nodes) - 1))

    def next_time(self) -> float:
        """Simulated time of the next scheduled send."""
        return self._queue[0][0] if self._queue else math.inf

    def _inject(self, node: Node, now: float) -> str | None:
        if not self.faults or self.rng.random() >= self.fault_rate:
            return None
        fault = self.rng.choice(self.faults)
        if fault == "leak" and isinstance(node, MeterNode):
            node.household.leak_lph = self.rng.uniform(2, 12)
        elif fault == "burst" and isinstance(node, MeterNode):
            node.household.burst_at = now + self.rng.uniform(0, WATER_SEND_EVERY_S)
        elif fault == "tamper" and isinstance(node, MeterNode):
            node.tamper = True
        elif fault == "sensor" and isinstance(node, AirNode):
            node.pm_failed = True
        elif fault in ("leak", "burst", "tamper", "sensor"):
            return None  # the fault does not apply to this kind of node
        self.injected[fault] += 1
        return fault

    def due(self, now: float) -> list[Transmission]:
        """Everything sent up to simulated time `now`, in time order."""
        out: list[Transmission] = []
        while self._queue and self._queue[0][0] <= now:
            when, _, pos = heapq.heappop(self._queue)
            node = self.nodes[pos]
            fault = self._inject(node, when)
            if fault == "reset":
                node.fcnt = 0
            if isinstance(node, MeterNode):
                node.advance(when, self.rng)
                raw = node.seal(node.values())
                node.next_send = when + WATER_SEND_EVERY_S
            else:
                assert isinstance(node, AirNode)
                raw = node.seal(node.values(when, self.rng))
                node.next_send = when + AIR_SEND_EVERY_S
            # A reset node re-sends counters the gateway has seen: rejected, by design.
            valid = node.fcnt - 1 > node.high_water
            if valid:
                node.high_water = node.fcnt - 1
            out.append(Transmission(node, raw, fault, valid=valid))
            if fault == "garbage":
                out.append(Transmission(None, self.rng.randbytes(self.rng.randrange(1, 40)),
                                        fault, valid=False))
            elif fault == "truncated":
                out.append(Transmission(node, raw[: self.rng.randrange(1, len(raw))], fault,
                                        valid=False))
            elif fault == "replay" and len(node.last_frames) > 1:
                out.append(Transmission(node, node.last_frames[0], fault, valid=False))
            heapq.heappush(self._queue, (node.next_send, node.device_id, pos))
        return out
