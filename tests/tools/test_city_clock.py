"""The simulated city's clock for a gateway, and leaks kept to one district."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knute.gateway.errors import KnuteError
from knute.tools.sim.city import build, city_from_args
from knute.tools.sim.city_nodes import gateway_clock_start

NOW = 1_796_168_189.917


@given(back_s=st.floats(0, 30 * 86400), speed=st.floats(1.5, 1e5),
       later_s=st.floats(0, 600))
def test_a_gateway_on_the_printed_clock_start_keeps_the_citys_time(
        back_s: float, speed: float, later_s: float) -> None:
    sim_start, wall_start = NOW - back_s, NOW
    clock_start = gateway_clock_start(sim_start, wall_start, speed)
    assert clock_start is not None and 0 <= clock_start <= 1e11   # [gateway] clock_start's range
    t = wall_start + later_s
    gateway = clock_start + (t - clock_start) * speed            # gateway/daemon.py's clock
    city = sim_start + (t - wall_start) * speed                  # the simulator's and modbus-sim's
    assert gateway == pytest.approx(city, abs=0.05)


def test_at_the_wall_clocks_speed_there_is_nothing_to_set() -> None:
    assert gateway_clock_start(NOW, NOW, 1.0) is None


def test_leak_district_puts_every_leak_there() -> None:
    city = build(3, districts=3, households=5, leak_sizes_l_h=(50.0, 500.0),
                 leak_district="dma02")
    assert len(city.leaks) == 4
    assert {leak.district for leak in city.leaks} == {"dma02"}
    assert {leak.subject for leak in city.leaks if leak.where == "pipe"} == {"dma02"}
    homes = [leak.subject for leak in city.leaks if leak.where == "household"]
    assert len(set(homes)) == 2 and set(homes) <= set(city.by_name("dma02").households)
    spread = build(3, districts=3, households=5, leak_sizes_l_h=(50.0, 500.0))
    assert len({leak.district for leak in spread.leaks}) == 3


def test_an_unknown_leak_district_is_one_line() -> None:
    args = argparse.Namespace(districts=2, households=3, leaks="100", leak_start=None,
                              leak_district="dma03")
    with pytest.raises(KnuteError, match=r"^--leak-district 'dma03': the city's districts "
                                         r"are dma01, dma02$"):
        city_from_args(args, 1, NOW)
