"""A poll's time is halfway between its request and the answer, and the reading says how
long that took (``round_trip_ms``): the device read its registers in between, so the
stamp is off by at most half the round trip, however late the answer comes.

``knute modbus-sim --slow-ms`` makes the round trip long: a stamp taken when the answer
comes (as before) is half the delay after the midpoint.
"""

from __future__ import annotations

import threading
import time

from knute.gateway.modbus.poller import ModbusReading, Poller
from knute.tools.rig.wait import wait_for
from tests.modbus.conftest import SimFactory
from tests.modbus.test_poll import WATER, settings

DELAY_MS = 300


def test_a_poll_is_stamped_halfway_and_carries_its_round_trip(
        modbus_sim: SimFactory) -> None:
    sim = modbus_sim("--device", "1:generic_water_meter", "--slow-ms", f"1:{DELAY_MS}")
    got: list[tuple[float, float, ModbusReading]] = []   # (before the poll, handed on, reading)
    lock = threading.Lock()
    polled_from = [time.time()]

    def reading(r: ModbusReading) -> None:
        now = time.time()
        with lock:
            got.append((polled_from[0], now, r))
            polled_from[0] = now          # the next poll's request goes out after this

    cfg = settings({"tcp": sim.tcp, "timeout_s": 2.0},
                   [(1, WATER, "generic_water_meter", {"interval_s": 0.1})])
    poller = Poller(cfg, reading)
    poller.start()
    try:
        wait_for(lambda: len(got) >= 4, 30, "four answered polls")
    finally:
        poller.stop()
    with lock:
        polls = list(got)
    for before, handed_on, r in polls[1:]:     # the first one's request also connected
        half = r.receiver["round_trip_ms"] / 2000
        assert half >= DELAY_MS / 2000, r.receiver
        # The answer came at most ``handed_on``, the request went out after ``before``:
        # halfway is at least half the round trip from either (5 ms for the clocks:
        # the round trip is measured on the monotonic one, the stamp on the wall's).
        assert r.received_at <= handed_on - half + 0.005, (r.received_at, handed_on, half)
        assert r.received_at >= before + half - 0.005, (r.received_at, before, half)
