"""The simulated city on the wire: households as frame-sending meters, bulk meters on Modbus.

``city_fleet`` turns the city's households (tools/sim/city.py) into the
water meters of a ``Fleet``, so their readings take the normal frame path of
``knute simulate`` (encrypted frames over a serial line or packet
forwarders). ``CityBulkUnit`` is a ``knute modbus-sim`` unit whose totaliser
follows one district's bulk inlet or outlet meter in the same simulated time,
so the backend can balance each district from both sides.
"""

from __future__ import annotations

import random
from typing import Any

from knute.gateway.simclock import SimulatedClock
from knute.tools.sim.city import DAY_S, HOUR_S, City
from knute.tools.sim.fleet import Fleet, MeterNode
from knute.tools.sim.modbus import SimUnit

BULK_START_INDEX_L = 50_000_000.0


class CityHousehold:
    """A fleet household model that reads its litres from the city (``Fleet`` calls ``litres``)."""

    def __init__(self, city: City, device: str) -> None:
        self.city = city
        self.device = device
        self.leak_lph = 0.0            # the fleet's own fault knobs; the city has its leaks
        self.burst_at: float | None = None
        self._day: tuple[int, list[int]] | None = None

    def litres(self, hour_start: float, rng: random.Random) -> int:
        """Litres the household meter counts in the hour starting at ``hour_start``."""
        offset = int(hour_start) - self.city.start
        day, hour = divmod(offset, DAY_S)
        if self._day is None or self._day[0] != day:
            self._day = (day, self.city.household_counted(self.device, day))
        return self._day[1][hour // HOUR_S]


def city_fleet(city: City, start: float, seed: int, faults: tuple[str, ...] = (),
               fault_rate: float = 0.02) -> Fleet:
    """A ``Fleet`` whose water meters are the city's households (device ids as the city's)."""
    devices = sorted(city.households)
    fleet = Fleet(len(devices), 0, start=start, seed=seed, faults=faults, fault_rate=fault_rate)
    start_hour = start - start % HOUR_S
    for node, device in zip(fleet.nodes, devices, strict=True):
        assert isinstance(node, MeterNode)
        node.device_id = int(device, 16)
        node.household = CityHousehold(city, device)   # type: ignore[assignment]
        node.history.clear()
        node.hour_mark = max(float(city.start), start_hour - 24 * HOUR_S)
        node.advance(start, fleet.rng)
    return fleet


def bulk_units(city: City) -> list[tuple[int, str, str, str]]:
    """(Modbus unit id, district, ``inflow``/``outflow``, device id) of every bulk meter."""
    out = []
    unit = 1
    for dma in city.districts:
        out.append((unit, dma.name, "inflow", dma.inflow))
        unit += 1
        if dma.outflow:
            out.append((unit, dma.name, "outflow", dma.outflow))
            unit += 1
    return out


def gateway_clock_start(sim_start: float, wall_start: float, speed: float) -> float | None:
    """``[gateway] clock_start`` that puts a gateway on the city's clock, or None at speed 1.

    The gateway's clock is ``clock_start + (t - clock_start) * speed`` at wall
    time ``t`` (it meets the wall clock at ``clock_start``); the city's is
    ``sim_start + (t - wall_start) * speed``. With ``clock_speed = speed`` the
    two are one clock when ``clock_start`` is where the city's clock meets the
    wall clock. At speed 1 they never meet unless they are the same.
    """
    if speed == 1.0:
        return None
    return (wall_start * speed - sim_start) / (speed - 1.0)


class CityBulkUnit(SimUnit):
    """A ``knute modbus-sim`` unit that is one bulk meter of the city.

    ``clock`` is the city's (its epoch given, or held until a clock file gives
    it), so a separate ``knute simulate`` process on the same clock runs
    the households in step. The totaliser is the meter's litres since the
    city's first hour, the flow the running hour's, and the meter's own clock
    (the map's ``[clock]``) the simulated time both were read at.
    """

    def __init__(self, unit_id: int, rmap: Any, rng: random.Random, city: City,
                 district: str, side: str, clock: SimulatedClock) -> None:
        super().__init__(unit_id, rmap, rng, set())
        self.city = city
        self.district = district
        self.side = 0 if side == "inflow" else 1
        self.clock = clock
        self._days: dict[int, list[float]] = {}

    def _hours(self, day: int) -> list[float]:
        if day not in self._days:
            self._days[day] = [h.litres for h in
                               self.city.bulk_hours(self.district, day)[self.side]]
        return self._days[day]

    def index_at(self, t: float) -> tuple[float, float]:
        """(totaliser litres, flow L/h) of this meter at simulated unix time ``t``."""
        offset = max(0.0, t - self.city.start)
        day, into = divmod(offset, DAY_S)
        total = BULK_START_INDEX_L
        for d in range(int(day)):
            total += sum(self._hours(d))
        hours = self._hours(int(day))
        hour = int(into // HOUR_S)
        total += sum(hours[:hour]) + hours[hour] * (into % HOUR_S) / HOUR_S
        return total, hours[hour]

    def step(self) -> dict[str, float]:
        """The readings at the simulated time now (the other fields as ``SimUnit``)."""
        readings = super().step()
        now = self.time_s = self.clock.now()
        index, flow = self.index_at(now)
        readings.update(index=index, max_flow=flow)
        return readings

