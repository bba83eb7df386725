"""The data-rate rule's memory per device (gateway/adr_history.py): the best SNR of all
receivers per uplink, the last N uplinks, durable in the registry file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from knute.gateway import adr
from knute.gateway.adr_history import AdrHistory
from knute.gateway.config import MqttConfig
from knute.gateway.downlink_city import DownlinkCity
from knute.gateway.downlinks import DownlinkStore
from knute.gateway.registry import Registry

DEV = 0x1234


def _feed(hist: AdrHistory, snrs: list[float], sf: int, *, start: int = 0,
          decide: bool = True) -> adr.AdrDecision | None:
    got = None
    for i, snr in enumerate(snrs):
        got = hist.observe(DEV, start + i, snr, sf, decide_as=f"adr-{i}" if decide else None)
    return got


def test_a_decision_needs_the_whole_history_and_a_change() -> None:
    hist = AdrHistory(history=3, hysteresis_db=0.0, max_steps=None)
    assert _feed(hist, [5.0, 5.0], 12) is None
    got = hist.observe(DEV, 2, 5.0, 12, decide_as="adr-x")  # 5 + 20 - 10 = 15 dB: 5 steps
    assert got == adr.AdrDecision(sf=7, power_dbm=14, margin_db=15.0, steps=5, changed=True)
    assert hist.snr_history(DEV) == []                      # a change starts a new history
    # At SF7 the same SNR leaves 2.5 dB, no whole step: nothing to send.
    assert _feed(hist, [5.0] * 3, 7, start=3) is None
    assert hist.snr_history(DEV) == [5.0] * 3


def test_each_uplink_keeps_the_best_snr_of_its_receivers() -> None:
    hist = AdrHistory(history=4)
    for fcnt in range(4):
        hist.observe(DEV, fcnt, -8.0, 12)                 # one receiver
        hist.observe(DEV, fcnt, 3.0 if fcnt == 2 else -9.0, 12)   # another, later
    assert hist.snr_history(DEV) == [-8.0, -8.0, 3.0, -8.0]
    # A counter reset (new epoch) is a new uplink, not the old fcnt 0.
    hist.observe(DEV, 0, -1.0, 12, epoch=1)
    assert hist.snr_history(DEV) == [-8.0, 3.0, -8.0, -1.0]


def test_only_the_last_n_uplinks_count() -> None:
    # A strong old uplink falls out of the window before the decision ...
    hist = AdrHistory(history=3, hysteresis_db=0.0, max_steps=None)
    assert _feed(hist, [20.0, -12.0, -12.0], 12, decide=False) is None
    assert hist.observe(DEV, 3, -12.0, 12, decide_as="a") is None   # margin -2: no room
    assert hist.snr_history(DEV) == [-12.0, -12.0, -12.0]
    # ... while a window that still holds it moves the node down.
    longer = AdrHistory(history=4, hysteresis_db=0.0, max_steps=None)
    _feed(longer, [20.0, -12.0, -12.0], 12, decide=False)
    got = longer.observe(DEV, 3, -12.0, 12, decide_as="a")
    assert got is not None and got.margin_db == 30.0


def test_missing_receivers_and_uplinks_without_snr() -> None:
    hist = AdrHistory(history=1)
    assert hist.observe(DEV, 0, None, 9, decide_as="a") is None     # no receiver said
    assert hist.observe(DEV, 1, 10.0, None, decide_as="b") is None  # not a LoRa uplink
    assert hist.observe(DEV, 2, 10.0, 6, decide_as="c") is None     # an SF the rule lacks
    assert hist.snr_history(DEV) == []
    assert hist.observe(DEV, 3, -30.0, 12, decide_as="d") is None   # no margin at SF12, 14 dBm


def test_follow_takes_a_change_made_elsewhere_once() -> None:
    hist = AdrHistory(history=2)
    _feed(hist, [0.0], 9, decide=False)
    assert hist.follow(DEV, "adr-7-100", 8)                # an adopted change: power 8
    assert hist.power_dbm(DEV) == 8 and hist.snr_history(DEV) == []
    _feed(hist, [0.0], 9, decide=False)
    assert not hist.follow(DEV, "adr-7-100", 8)            # the same: history kept
    assert hist.snr_history(DEV) == [0.0]
    # The node rejected it: the power it had stays.
    assert hist.follow(DEV, "adr-7-100", 8, void=True)
    assert hist.power_dbm(DEV) == 14
    assert not hist.follow(DEV, "adr-7-100", 8, void=True)


def test_the_history_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "registry.db")
    Registry(path).close()
    hist = AdrHistory(path, history=3)
    _feed(hist, [1.0, 2.0], 12, decide=False)
    hist.follow(DEV, "adr-1-1", 10)
    _feed(hist, [4.0, 5.0], 12, start=5, decide=False)
    hist.close()
    again = AdrHistory(path, history=3)
    assert again.snr_history(DEV) == [4.0, 5.0] and again.power_dbm(DEV) == 10
    assert again.observe(DEV, 7, 6.0, 12, decide_as="adr-2-2") is not None   # the third
    again.close()


def test_two_gateways_on_one_registry_file_decide_once(tmp_path: Path) -> None:
    path = str(tmp_path / "registry.db")
    Registry(path).close()
    a, b = AdrHistory(path, history=2), AdrHistory(path, history=2)
    a.observe(DEV, 0, 5.0, 12)
    b.observe(DEV, 0, 6.0, 12)
    got_a = a.observe(DEV, 1, 5.0, 12, decide_as="adr-a")
    got_b = b.observe(DEV, 1, 6.0, 12, decide_as="adr-b")
    assert got_a is not None and got_b is None     # b found the history a cleared
    assert got_a.margin_db == 16.0                 # b's 6 dB of uplink 0: 6 + 20 - 10
    a.close()
    b.close()


def test_the_city_channel_gives_the_best_snr_of_every_claim(tmp_path: Path) -> None:
    path = str(tmp_path / "registry.db")
    Registry(path).close()
    store = DownlinkStore(path, stride=(0, 2))
    city = DownlinkCity(MqttConfig(prefix="t"), store, gateway_id="gw-a", index=0,
                        gather_s=0.05, client_id="c")
    try:
        assert city.best_snr(DEV, 5, -3.0) == -3.0           # nobody else claimed it
        assert city.best_snr(DEV, 5, None) is None
        for gw, idx, snr in (("gw-b", 1, 7.5), ("gw-c", 2, None), ("gw-d", 3, -1.0)):
            claim = {"gateway": gw, "index": idx, "device": f"{DEV:08x}", "fcnt": 5,
                     "snr_db": snr, "due": False, "at": time.time()}
            city.handle(f"t/downlink/claim/{DEV:08x}", json.dumps(claim).encode())
        assert city.best_snr(DEV, 5, -3.0) == 7.5            # gw-c's missing SNR is skipped
        assert city.best_snr(DEV, 5, 9.0) == 9.0
        assert city.best_snr(DEV, 6, -3.0) == -3.0           # another uplink
    finally:
        store.close()


def test_a_late_claim_raises_the_uplink_it_names() -> None:
    hist = AdrHistory(history=3)
    hist.observe(DEV, 0, -9.0, 12)
    hist.observe(DEV, 1, -9.0, 12)
    assert hist.raise_snr(DEV, 0, -2.0)
    assert not hist.raise_snr(DEV, 1, -12.0)           # never lowers
    assert not hist.raise_snr(DEV, 7, 5.0)             # an uplink this history lacks
    assert hist.snr_history(DEV) == [-2.0, -9.0]


def test_a_node_lost_after_a_change_falls_back_and_is_held() -> None:
    # One uplink an hour (at = the hour). Counters are not time: a node skips up to 15
    # at every restart, and each change is applied by one.
    hist = AdrHistory(history=2, hysteresis_db=0.0, max_steps=None)
    hist.observe(DEV, 1, 5.0, 12, at=3600.0)
    down = hist.observe(DEV, 2, 5.0, 12, at=7200.0, decide_as="adr-2")
    assert down is not None and down.sf == 7 and not down.fallback
    h = 3600.0
    assert hist.observe(DEV, 16, 3.0, 7, at=3 * h, decide_as="x") is None   # restarted
    assert hist.observe(DEV, 17, 3.0, 7, at=6 * h, decide_as="x") is None   # 2 lost: not yet
    back = hist.observe(DEV, 18, 3.0, 7, at=10.5 * h, decide_as="adr-18")  # 4.5 intervals
    assert back == adr.AdrDecision(12, 14, 0.5, 0, True, fallback=True)
    # Held: a strong history does not move it down again for 3 histories (6 uplinks) ...
    for n in range(1, 7):
        assert hist.observe(DEV, 18 + n, 5.0, 12, at=(10.5 + n) * h, decide_as="h") is None
    # ... then it may.
    later = hist.observe(DEV, 25, 5.0, 12, at=17.5 * h, decide_as="h25")
    assert later is not None and later.sf == 7
    # Lost again after that: back again.
    back = hist.observe(DEV, 40, 5.0, 7, at=30 * h, decide_as="y")
    assert back is not None and back.fallback and back.sf == 12


def test_no_fallback_when_another_receiver_heard_it_or_the_change_raised() -> None:
    h = 3600.0
    hist = AdrHistory(history=2, hysteresis_db=0.0, max_steps=None)
    hist.observe(DEV, 0, 5.0, 12, at=0.0)
    assert hist.observe(DEV, 1, 5.0, 12, at=h, decide_as="adr-1") is not None   # to SF7
    hist.observe(DEV, 2, 3.0, 7, at=2 * h)
    for n in (3, 4, 5):                          # only another gateway heard these
        hist.raise_snr(DEV, n, 3.0, at=n * h)
    assert hist.observe(DEV, 6, 3.0, 7, at=6 * h, decide_as="x") is None
    # A change that raised the SF is no reason to fall back.
    up = AdrHistory(history=2)
    up.observe(DEV, 0, -25.0, 9, at=0.0)
    assert up.observe(DEV, 1, -25.0, 9, at=h, decide_as="adr-up") is not None   # to SF12
    assert up.observe(DEV, 9, -15.0, 12, at=20 * h, decide_as="x") is None


def test_a_fallback_also_replaces_a_change_still_open() -> None:
    # The node applied the change, its report went out at the new settings and was lost:
    # the command looks open (sent, not reported) when the node is heard again.
    h = 3600.0
    hist = AdrHistory(history=2, hysteresis_db=0.0, max_steps=None)
    hist.observe(DEV, 0, 5.0, 12, at=0.0)
    assert hist.observe(DEV, 1, 5.0, 12, at=h, decide_as="adr-1") is not None
    hist.observe(DEV, 16, 5.0, 7, at=2 * h, change_open=True)
    assert hist.snr_history(DEV) == []           # uplinks while a change is open: not counted
    back = hist.observe(DEV, 17, 5.0, 12, at=7 * h, decide_as="adr-17", change_open=True)
    assert back is not None and back.fallback and (back.sf, back.power_dbm) == (12, 14)


def test_a_change_adopted_from_another_gateway_is_watched_too() -> None:
    h = 3600.0
    hist = AdrHistory(history=3)
    hist.observe(DEV, 1, 5.0, 12, at=h)
    hist.observe(DEV, 2, 5.0, 12, at=2 * h)       # recorded; the other gateway decided
    assert hist.follow(DEV, "adr-2-5", 14, sf=10)
    hist.observe(DEV, 3, 0.0, 10, at=3 * h)
    back = hist.observe(DEV, 4, 0.0, 10, at=8 * h, decide_as="adr-4")
    assert back is not None and back.fallback and back.sf == 12


def test_uplinks_close_together_do_not_make_a_short_interval() -> None:
    # A history heard within a second (a bench, a burst): the interval is taken as a
    # minute, so ten seconds of quiet after the change is no reason to fall back.
    hist = AdrHistory(history=3, hysteresis_db=0.0, max_steps=None)
    for n in range(2):
        hist.observe(DEV, n, 5.0, 12, at=100.0 + n * 0.01)
    assert hist.observe(DEV, 2, 5.0, 12, at=100.02, decide_as="adr-2") is not None
    assert hist.observe(DEV, 3, 5.0, 7, at=110.0, decide_as="x") is None
    back = hist.observe(DEV, 4, 5.0, 7, at=110.0 + 4 * 60.0 + 1, decide_as="adr-4")
    assert back is not None and back.fallback
