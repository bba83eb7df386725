"""A polled meter's hour boundary: interpolated between the polls on either side of it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from knute.gateway.modbus.history import hourly_profile, update_hours

H = 1000                     # a unix hour
B = H * 3600                 # its start (unix s)


def test_the_boundary_is_interpolated_between_the_polls_around_it() -> None:
    # 600 L/h steady: polls at 10 min before and 5 min after the boundary.
    hours = update_hours([], H - 1, 5000, 25, B - 600.0, None)
    hours = update_hours(hours, H, 5150, 25, B + 300.0, (B - 600.0, 5000))
    assert hours == [(H - 1, 5000), (H, 5100)]
    assert hourly_profile(hours, 5150, 24) == ([100, 50], H + 1)


def test_without_the_hour_before_the_first_reading_is_the_sample() -> None:
    # No poll before (a start), one two hours back (a gap: not guessed), one after
    # the reading (a clock step), and a total that went down between them (reset).
    assert update_hours([], H, 5150, 25, B + 300.0, None) == [(H, 5150)]
    assert update_hours([], H, 5150, 25, B + 300.0, (B - 3700.0, 4000)) == [(H, 5150)]
    assert update_hours([], H, 5150, 25, B + 300.0, (B + 400.0, 5000)) == [(H, 5150)]
    assert update_hours([], H, 150, 25, B + 300.0, (B - 600.0, 5000)) == [(H, 150)]
    # Without times the first reading in the hour is its sample, as before.
    assert update_hours([(H - 1, 4000)], H, 5150, 25) == [(H - 1, 4000), (H, 5150)]


@given(flows=st.lists(st.integers(0, 3000), min_size=4, max_size=12),
       poll_s=st.integers(30, 1200), phase_s=st.integers(0, 1199))
def test_slots_are_the_hours_within_a_poll_gaps_flow_change(
        flows: list[int], poll_s: int, phase_s: int) -> None:
    # A totaliser with a constant flow per hour, polled every poll_s: each complete
    # slot is off the hour's litres by at most the flow change at its two boundaries
    # times a quarter of the gap (the interpolation's worst case, mid-gap), plus rounding.
    start = B
    def total(t: float) -> float:
        done, into = divmod(t - start, 3600)
        return 1e6 + sum(flows[:int(done)]) + flows[int(done)] * into / 3600
    hours: list[tuple[int, int]] = []
    previous: tuple[float, int] | None = None
    t = float(start + phase_s % poll_s)
    end = start + 3600 * len(flows)
    while t < end:
        index = int(total(t))
        hours = update_hours(hours, int(t // 3600), index, 25, t, previous)
        previous = (t, index)
        t += poll_s
    profile, last = hourly_profile(hours, previous[1] if previous else 0, 24)
    first = last - len(profile)
    gap_h = poll_s / 3600
    for k, litres in enumerate(profile[:-1]):
        h = first + k - H
        if h == 0:
            continue                     # the first hour's boundary had no poll before it
        change = abs(flows[h] - flows[h - 1]) + abs(flows[min(h + 1, len(flows) - 1)]
                                                    - flows[h])
        assert abs(litres - flows[h]) <= change * gap_h / 4 + 2, (h, litres, flows)
