"""The data-rate rule's bookkeeping per device (gateway/adr.py AdrHistory)."""

from __future__ import annotations

from knute.gateway import adr


def test_a_decision_needs_the_whole_history_and_a_change() -> None:
    hist = adr.AdrHistory(history=3)
    assert hist.observe(1, 5.0, 12) is None
    assert hist.observe(1, 5.0, 12) is None
    got = hist.observe(1, 5.0, 12)          # margin 5 + 20 - 10 = 15 dB: 5 steps
    assert got == adr.AdrDecision(sf=7, power_dbm=14, margin_db=15.0, steps=5, changed=True)
    # At SF7 the same SNR leaves 2.5 dB, no whole step: nothing to send.
    for _ in range(3):
        assert hist.observe(2, 5.0, 7) is None


def test_sent_starts_a_new_history_at_the_new_power() -> None:
    hist = adr.AdrHistory(history=2)
    hist.observe(1, 20.0, 7)
    first = hist.observe(1, 20.0, 7)        # 20 + 7.5 - 10 = 17.5: 5 power steps
    assert first is not None and (first.sf, first.power_dbm) == (7, 4)
    hist.sent(1, first)
    assert hist.observe(1, 20.0, 7) is None             # one uplink of the new history
    second = hist.observe(1, 20.0, 7)
    assert second is not None and second.power_dbm == 2  # from 4 dBm, not from 14


def test_uplinks_without_snr_or_a_lora_sf_are_ignored() -> None:
    hist = adr.AdrHistory(history=1)
    assert hist.observe(1, None, 9) is None
    assert hist.observe(1, 10.0, None) is None
    assert hist.observe(1, 10.0, 6) is None
    assert hist.observe(1, -30.0, 12) is None      # short of margin at SF12, 14 dBm: no change
    # The per-device lists are independent and bounded by the history.
    hist2 = adr.AdrHistory(history=2, installation_margin_db=0.0)
    assert hist2.observe(1, -20.0, 12) is None
    got = hist2.observe(1, -20.0, 12)              # margin 0: no step
    assert got is None
