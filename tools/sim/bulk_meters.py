"""Bulk inlet meters for the districts of a ``Fleet``: its households' water, and what is lost.

``add_inlets`` gives each district (a list of the fleet's water meters) a bulk
inlet meter that sends frames as the households' meters do (a bulk meter with
a pulse output on a radio node). Each hour it counts the sum of its
households' litres that hour plus what the pipes between them lose: a share
of the flow and a fixed background (``Loss``). The households' models are
wrapped (``SharedHours``) so each hour is drawn once and counted by both the
household's meter and the inlet, whichever asks first. The backend then
balances each district: inflow - Σ households = the loss put in here.

Used by ``knute demo``, whose time runs faster than the wall clock: the bulk
meters of ``knute simulate --city`` answer Modbus polls, stamped by the
gateway on the wall clock, while these send hourly profiles on the
simulated clock, as the households do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from knute.tools.sim.fleet import BURST_LPH, HOUR, WATER_SEND_EVERY_S, Fleet, MeterNode

BULK_START_INDEX_L = 50_000_000
_KEEP_HOURS = 96          # hours a shared household remembers (a send interval is 6)


class SharedHours:
    """A household model whose litres per hour are drawn once and then remembered."""

    def __init__(self, inner: Any, history: Sequence[int], hour_mark: float) -> None:
        self.inner = inner
        # The hours the household counted before it was shared (oldest first, ending
        # at ``hour_mark``): the inlet counts the same litres for them.
        self.hours: dict[int, int] = {
            int(hour_mark) - (len(history) - i) * HOUR: v for i, v in enumerate(history)}

    # The fleet's fault injection sets these on a meter's household.
    @property
    def leak_lph(self) -> float:
        """The household's own leak (L/h)."""
        return float(self.inner.leak_lph)

    @leak_lph.setter
    def leak_lph(self, value: float) -> None:
        self.inner.leak_lph = value

    @property
    def burst_at(self) -> float | None:
        """When the household's burst happens (simulated unix s), or None."""
        return self.inner.burst_at  # type: ignore[no-any-return]

    @burst_at.setter
    def burst_at(self, value: float | None) -> None:
        self.inner.burst_at = value

    def litres(self, hour_start: float, rng: random.Random) -> int:
        """Litres in the hour starting at ``hour_start`` (the same on every call)."""
        hour = int(hour_start)
        if hour not in self.hours:
            self.hours[hour] = int(self.inner.litres(hour_start, rng))
            for old in [h for h in self.hours if h < hour - _KEEP_HOURS * HOUR]:
                del self.hours[old]
        return self.hours[hour]


@dataclass(frozen=True)
class Loss:
    """What a district's pipes lose: ``share`` of the flow plus ``fixed_l_h``."""

    share: float
    fixed_l_h: float


class InletHours:
    """A bulk inlet's model: Σ its households' litres each hour, plus the district's loss."""

    def __init__(self, households: Sequence[SharedHours], loss: Loss) -> None:
        self.households = households
        self.loss = loss
        self.leak_lph = 0.0            # a leak fault here is a leak in the mains
        self.burst_at: float | None = None

    def litres(self, hour_start: float, rng: random.Random) -> int:
        """Litres through the inlet in the hour starting at ``hour_start``."""
        used = sum(h.litres(hour_start, rng) for h in self.households)
        lost = used * self.loss.share + self.loss.fixed_l_h + self.leak_lph
        if self.burst_at is not None and hour_start <= self.burst_at < hour_start + HOUR:
            lost += BURST_LPH * 1.6
        return round(used + lost)


class BulkMeterNode(MeterNode):
    """A bulk meter: a water meter without the household alarms (its water never stops)."""

    def values(self) -> dict[str, Any]:
        """The raw field values of the next frame (leak and burst bits cleared)."""
        values = super().values()
        values["alarms"] &= ~0b11
        if not values["alarms"]:
            values.pop("max_flow", None)
        return values


def add_inlets(fleet: Fleet, districts: Sequence[tuple[int, Sequence[MeterNode], Loss]],
               start: float) -> list[BulkMeterNode]:
    """Give each (inlet device id, households, loss) district of ``fleet`` its inlet meter."""
    inlets = []
    for device_id, members, loss in districts:
        shared: list[SharedHours] = []
        for node in members:
            model: Any = node.household
            if not isinstance(model, SharedHours):
                model = SharedHours(model, list(node.history), node.hour_mark)
                node.household = model
            shared.append(model)
        # From the first hour every household remembers: the inlet counts those again.
        first = max((min(h.hours) for h in shared if h.hours),
                    default=min((n.hour_mark for n in members), default=start - start % HOUR))
        inlet = BulkMeterNode(
            device_id=device_id, kind="water_meter", key=fleet.rng.randbytes(16),
            next_send=start + fleet.rng.uniform(0, WATER_SEND_EVERY_S),
            household=InletHours(shared, loss),  # type: ignore[arg-type]
            index_l=BULK_START_INDEX_L, hour_mark=float(first),
            profile_len=members[0].profile_len if members else 6)
        inlet.advance(start, fleet.rng)
        fleet.add_node(inlet)
        inlets.append(inlet)
    return inlets
