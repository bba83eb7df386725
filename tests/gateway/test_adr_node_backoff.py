"""The data-rate history when a node comes back at higher settings by itself.

A node moved below its provisioned settings that hears no downlink backs off on
its own (docs/radio.md, "A node's own back-off"): power back to the provisioned
power first, then one SF up at a time. The gateway sees the SF of every uplink
but not the power, so an uplink at another SF than its history's is a fresh
start: the history at the old SF is dropped and, when the SF went up, the power
is taken to be the default again (the node restores its power before its SF).
"""

from __future__ import annotations

from knute.gateway import adr
from knute.gateway.adr_history import AdrHistory

DEV = 0x4321


def test_a_node_back_at_a_higher_sf_by_itself_starts_a_fresh_history() -> None:
    hist = AdrHistory(history=4, hysteresis_db=0.0, max_steps=None)
    for fcnt in range(4):          # heard well at SF9: moved to SF7 and 10 dBm
        got = hist.observe(DEV, fcnt, 11.0, 9, decide_as=f"adr-{fcnt}", at=1000.0 + fcnt)
    assert got is not None and (got.sf, got.power_dbm) == (7, 10)
    assert hist.power_dbm(DEV) == 10
    # Heard at SF7 a few times, faintly, then the node hears nothing and backs off.
    for fcnt in range(4, 7):
        assert hist.observe(DEV, fcnt, -6.0, 7, decide_as="x", at=1000.0 + fcnt) is None
    assert hist.snr_history(DEV) == [-6.0] * 3
    # Back by itself at SF8 (and, unseen, 14 dBm): the SF7 uplinks say nothing of it.
    assert hist.observe(DEV, 20, -9.0, 8, decide_as="y", at=1020.0) is None
    assert hist.snr_history(DEV) == [-9.0]
    assert hist.power_dbm(DEV) == adr.POWER_MAX_DBM
    # A decision waits for a whole history at SF8, and rests on it alone.
    for fcnt in range(21, 23):
        assert hist.observe(DEV, fcnt, -9.0, 8, decide_as="z", at=1000.0 + fcnt) is None
    got = hist.observe(DEV, 23, -9.0, 8, decide_as="w", at=1023.0)
    # -9 - (-10) - 10 = -9 dB at SF8: three steps short, power already at 14: SF up.
    assert got is not None and got.margin_db == -9.0 and (got.sf, got.power_dbm) == (11, 14)


def test_an_sf_lowered_without_a_known_change_also_starts_afresh() -> None:
    # (another gateway's change this one missed): the history at SF9 is not SF7's
    hist = AdrHistory(history=3, hysteresis_db=0.0, max_steps=None)
    for fcnt in range(2):
        hist.observe(DEV, fcnt, -12.0, 9, at=1000.0 + fcnt)
    hist.observe(DEV, 2, -3.0, 7, decide_as="a", at=1002.0)
    assert hist.snr_history(DEV) == [-3.0]
    assert hist.power_dbm(DEV) == adr.POWER_MAX_DBM     # not raised: the power stays


def test_the_same_sf_keeps_its_history() -> None:
    hist = AdrHistory(history=5)
    for fcnt in range(3):
        hist.observe(DEV, fcnt, -1.0 - fcnt, 10, at=1000.0 + fcnt)
    assert hist.snr_history(DEV) == [-1.0, -2.0, -3.0]
