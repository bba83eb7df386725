"""The dedup merge keeps a bounded list of the best receivers and counts the rest."""

from __future__ import annotations

import json
import random

from knute.gateway import pipeline as pl
from knute.gateway.registry import Device
from knute.gateway.status import Counters
from knute.protocol import frame

KEY = bytes(range(16))
DEV = 0x00001234


def water(fcnt: int) -> bytes:
    return frame.encode("water_meter", DEV, fcnt, {"index": 1000, "profile_end_h": 7,
                                                   "battery": 18, "profile": [1, 2, 3]}, KEY)


def radio(buf: bytes, at: float, name: str, snr: float | None, rssi: int | None,
          source_type: str = "radio") -> pl.Reception:
    meta: dict[str, object] = {"source": name}
    if rssi is not None:
        meta["rssi_dbm"] = rssi
    if snr is not None:
        meta["snr_db"] = snr
    return pl.Reception(name, source_type, buf, 1_700_000_000.0 + at, at, meta)


def published(ready: pl.Ready) -> dict[str, object]:
    """The reading JSON the spool will publish for a released frame."""
    doc: dict[str, object] = json.loads(pl.to_accepted(ready, prefix="c",
                                                       gateway_id="g").payload)
    return doc


def make(max_receivers: int) -> pl.Pipeline:
    return pl.Pipeline({DEV: Device(DEV, "water_meter", KEY)}, counters=Counters(),
                       max_receivers=max_receivers)


def test_flood_of_copies_keeps_the_best_n_and_counts_the_rest() -> None:
    p = make(4)
    buf = water(5)
    rng = random.Random(7)
    heard = [(f"r{i}", rng.randint(-200, 120) / 10, rng.randint(-130, -60)) for i in range(500)]
    verdicts = [p.submit(radio(buf, i / 1000, name, snr, rssi))
                for i, (name, snr, rssi) in enumerate(heard)]
    assert verdicts[0].status == "pending"
    assert {v.status for v in verdicts[1:]} == {"merged"}
    (ready,) = p.drain()
    assert ready.receivers_dropped == 496
    best = sorted(heard, key=lambda h: (h[1], h[2]), reverse=True)[:4]
    # The four heard best, in the order they arrived.
    order = {name: i for i, (name, _, _) in enumerate(heard)}
    assert [r["source"] for r in ready.receivers] == \
        sorted((name for name, _, _ in best), key=order.__getitem__)
    assert ready.received_at == 1_700_000_000.0          # the first copy's time, kept
    doc = published(ready)
    assert len(doc["receivers"]) == 4 and doc["receivers_dropped"] == 496  # type: ignore[arg-type]
    assert len(json.dumps(doc)) < 2000


def test_under_the_bound_every_receiver_is_kept_in_arrival_order() -> None:
    p = make(8)
    buf = water(6)
    for i, (snr, rssi) in enumerate([(1.0, -100), (9.0, -80), (None, None)]):
        p.submit(radio(buf, i / 100, f"r{i}", snr, rssi))
    (ready,) = p.drain()
    assert [r["source"] for r in ready.receivers] == ["r0", "r1", "r2"]
    assert ready.receivers_dropped == 0
    assert "receivers_dropped" not in published(ready)


def test_ties_keep_the_earlier_receiver_and_radio_is_remembered() -> None:
    p = make(1)
    buf = water(7)
    p.submit(radio(buf, 0.0, "wired", None, None, source_type="serial"))
    p.submit(radio(buf, 0.01, "weak", -5.0, -120))      # better than no metadata: replaces
    p.submit(radio(buf, 0.02, "same", -5.0, -120))      # a tie: the earlier one stays
    (ready,) = p.drain()
    assert [r["source"] for r in ready.receivers] == ["weak"]
    assert ready.receivers_dropped == 2 and ready.source_type == "radio"


def test_frames_carry_the_epoch_they_were_accepted_in() -> None:
    p = pl.Pipeline({DEV: Device(DEV, "water_meter", KEY)}, {DEV: 9}, counters=Counters(),
                    epochs={DEV: 2})
    p.submit(radio(water(10), 0.0, "r0", 1.0, -90))
    waiting = p.submit(radio(water(11), 0.0, "r0", 1.0, -90))
    p.forget_counter(DEV, 3)                  # an operator's reset, while 11 waits
    p.submit(radio(water(1), 0.0, "r0", 1.0, -90))
    assert waiting.status == "pending"
    ids = [published(ready)["id"] for ready in p.drain()]
    assert ids == ["00001234:2:10", "00001234:2:11", "00001234:3:1"]
