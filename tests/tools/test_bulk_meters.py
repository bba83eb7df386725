"""The demo's bulk inlet meters count their households' water plus the district's loss, hour
by hour, whichever meter asks for an hour first; and they never raise household alarms."""

from __future__ import annotations

from knute.tools.sim.bulk_meters import BulkMeterNode, Loss, add_inlets
from knute.tools.sim.fleet import HOUR, Fleet, MeterNode

START = 1_767_571_200.0 + 1234.0     # 2026-01-05 00:20:34 UTC


def test_an_inlet_counts_its_households_and_the_loss_in_every_hour() -> None:
    fleet = Fleet(7, 2, start=START, seed=5, faults=("tamper",), fault_rate=0.1)
    meters = [n for n in fleet.nodes if isinstance(n, MeterNode)]
    meters[1].household.leak_lph = 9.0
    districts = [(0xB0000001, meters[:4], Loss(0.04, 12.0)),
                 (0xB0000002, meters[4:], Loss(0.0, 30.0))]
    inlets = add_inlets(fleet, districts, START)
    assert [n.device_id for n in fleet.nodes[-2:]] == [0xB0000001, 0xB0000002]
    frames = 0
    for step in range(1, 3 * 24):
        frames += len(fleet.due(START + step * HOUR))
    assert frames > 30
    end = START + 3 * 24 * HOUR
    for node in (*meters, *inlets):
        node.advance(end, fleet.rng)
    for inlet, (_, members, loss) in zip(inlets, districts, strict=True):
        assert all(m.hour_mark == inlet.hour_mark for m in members)
        for back in range(1, 48):
            used = sum(m.history[-back] for m in members)
            assert inlet.history[-back] == round(used + used * loss.share + loss.fixed_l_h)
        # The inlet's water never stops, but it is no household leak.
        assert min(inlet.history) > 0
        assert isinstance(inlet, BulkMeterNode) and inlet.values()["alarms"] & 0b11 == 0
    # A household's own leak is in its meter's count and so in the inlet's.
    assert meters[1].household.leak_lph == 9.0 and min(meters[1].history) >= 9
