"""The simulated city: seeded, its litres add up, and each leak shows where it should."""

from __future__ import annotations

import statistics
from dataclasses import replace

from knute.tools.sim.city import DAY_S, HOUR_S, UTC_OFFSET_S, build


def test_the_same_seed_gives_the_same_city_in_any_order() -> None:
    a = build(5, districts=2, households=20, days=16, leak_sizes_l_h=(100.0,))
    b = build(5, districts=2, households=20, days=16, leak_sizes_l_h=(100.0,))
    device = a.districts[1].households[3]
    later = a.household_use(device, 9)
    assert [a.household_use(device, d) for d in range(10)][9] == later
    assert b.household_use(device, 9) == later
    assert a.leaks == b.leaks and a.households == b.households
    assert build(6, districts=2, households=20, days=16).household_use(device, 9) != later


def test_demand_curve_and_night_use_are_in_the_published_ranges() -> None:
    city = build(3, districts=1, households=200, days=14)
    per_person = []
    night = []
    for device, home in city.households.items():
        days = [city.household_use(device, d) for d in range(14)]
        per_person.append(statistics.mean(sum(d) for d in days) / home.persons)
        # 02:00-04:00 local time
        night += [d[h] for d in days for h in range(24)
                  if 2 <= (h + UTC_OFFSET_S // HOUR_S) % 24 < 4]
    assert 150 <= statistics.mean(per_person) <= 210           # about 180 L/person/day
    assert 1.0 <= statistics.mean(night) <= 2.6                # about 1.7 L/property/h


def test_a_pipe_leak_is_loss_and_a_household_leak_is_not() -> None:
    city = build(7, districts=2, households=30, days=16, leak_sizes_l_h=(300.0,))
    # Perfect bulk meters, so the balance is exact to the rounding of the meters.
    city.districts = [replace(d, inflow_bias=0.0, outflow_bias=0.0) for d in city.districts]
    pipe = next(leak for leak in city.leaks if leak.where == "pipe")
    home = next(leak for leak in city.leaks if leak.where == "household")
    for dma in city.districts:
        for day in (0, 15):
            use = {d: city.household_use(d, day) for d in dma.households}
            inlet, outlet = city.bulk_hours(dma.name, day, use, noise=False)
            flushing = city.flushing(dma.name, day)
            for h in range(24):
                start = city.start + day * DAY_S + h * HOUR_S
                loss = (inlet[h].litres - outlet[h].litres
                        - sum(u[h] for u in use.values()) - flushing.get(h, 0.0))
                expected = dma.background_l_h + (
                    pipe.size_l_h if dma.name == pipe.subject and start >= pipe.start else 0.0)
                assert abs(loss - expected) < 0.1, (dma.name, day, h)
    last = city.household_use(home.subject, 15)
    assert min(last) >= 300                                    # behind the household meter


def test_lost_frames_leave_estimated_hours_with_the_exact_sum() -> None:
    city = build(11, districts=1, households=60, days=16)
    estimated = 0
    for device in city.households:
        for day in range(16):
            use = city.household_use(device, day)
            hours = city.household_hours(device, day, use)
            error = city.households[device].meter_error
            counted = sum(round(v * (1 + error)) for v in use)
            assert abs(sum(h.litres for h in hours) - counted) < 1e-6
            estimated += sum(h.quality == "estimated" for h in hours)
    assert estimated > 0


def test_city_households_send_frames_whose_profiles_are_the_city_litres() -> None:
    from knute.protocol import frame
    from knute.tools.sim.city_nodes import city_fleet

    day0 = 1_767_571_200                                   # 2026-01-05T00:00:00Z
    city = build(4, districts=2, households=6, days=16, start=day0,
                 leak_sizes_l_h=(300.0,), leak_start=day0 + 30 * HOUR_S)
    start = float(city.start + 10 * HOUR_S)
    fleet = city_fleet(city, start, seed=4)
    keys = {n.device_id: n.key for n in fleet.nodes}
    assert sorted(f"{k:08x}" for k in keys) == sorted(city.households)
    leaking = next(leak for leak in city.leaks if leak.where == "household")
    checked = leak_hours = 0
    for tx in fleet.due(start + 3 * DAY_S):
        got = frame.decode(tx.payload, keys[frame.parse_header(tx.payload)[1]])
        values = got["values"]
        device = f"{got['device_id']:08x}"
        # The hour after the profile's last: the one whose number mod 256 is profile_end_h.
        end_h = int(tx_time(fleet, tx) // HOUR_S)
        end_h -= (end_h - values["profile_end_h"]) % 256
        for i, litres in enumerate(values["profile"]):
            hour = (end_h - len(values["profile"]) + i) * HOUR_S
            day, into = divmod(hour - city.start, DAY_S)
            assert litres == city.household_counted(device, day)[into // HOUR_S]
            if device == leaking.subject and hour >= leaking.start:
                assert litres >= 300 * 0.98
                leak_hours += 1
            checked += 1
    assert checked > 6 * 2 * 4 * 2 and leak_hours >= 24


def tx_time(fleet: object, tx: object) -> float:
    """When ``tx`` was sent: its node's next send is 6 hours later."""
    return float(tx.node.next_send) - 6 * HOUR_S          # type: ignore[attr-defined]
