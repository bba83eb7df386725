"""The compact spool (schema 4): a reading's JSON stored deflated and published byte for
byte as the gateway built it before; the v3 -> v4 migration; epochs; the message bound;
files 0600."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.gateway import message
from knute.gateway.spool import SCHEMA_VERSION, Accepted, Spool, row_size
from knute.gateway.spool_rows import Stored, message_of, store_form
from knute.gateway.spool_schema import FORM_DEFLATED, PARKED_TABLE, deflate
from knute.protocol import frame, kinds
from tests.budget import examples
from tests.gateway.test_spool_park import V2_SCHEMA
from tests.protocol.strategies import KIND_NAMES, readings

RADIO = {"source": "lora0", "rssi_dbm": -101, "snr_db": -3.5, "freq_hz": 868_300_000, "sf": 10}
FORWARDER = {"source": "pf-roof", "gateway_eui": "b827ebfffe6b1a2c", "rssi_dbm": -112,
             "snr_db": -4.25, "freq_hz": 868_100_000, "datr": "SF9BW125", "chan": 0,
             "tmst": 3512348611}
SITE = {"site": "Storgata 1", "lat": 59.91, "lon": 10.75, "note": "kjeller, bak døra"}


def reading(kind: str, values: dict[str, Any], *, device_id: int = 0x1234, fcnt: int = 7,
            received_at: float = 1_714_564_800.25, receivers: list[dict[str, Any]] | None = None,
            site: dict[str, Any] | None = None, dropped: int = 0,
            source: str = "radio") -> message.Reading:
    return message.Reading(
        device_id=device_id, kind=kind, kind_id=kinds.kind_id(kind), fcnt=fcnt, values=values,
        received_at=received_at, receivers=[RADIO] if receivers is None else receivers,
        source=source, site=site, gateway_id="gw-test", prefix="city",
        receivers_dropped=dropped)


def old_path(r: message.Reading) -> tuple[str, bytes]:
    """Topic and JSON as the gateway built them before the compact spool."""
    frm = {"kind": r.kind, "kind_id": r.kind_id, "device_id": r.device_id, "fcnt": r.fcnt,
           "tag_len": 4, "values": r.values}
    name = message.device_name(r.device_id)
    return (message.topic(r.prefix, r.kind, name),
            message.reading_json(frm, device=name, gateway_id=r.gateway_id,
                                 received_at=r.received_at, receivers=r.receivers,
                                 source=r.source, site=r.site))


def accepted(r: message.Reading) -> Accepted:
    return Accepted(device_id=r.device_id, fcnt=r.fcnt, kind=r.kind, topic=r.topic(),
                    payload=b"", alarm=False, received_at=r.received_at, reading=r)


def open_spool(path: Path, **kw: Any) -> Spool:
    args: dict[str, Any] = {"max_bytes": 10**9, "max_age_s": 10**10}
    args.update(kw)
    return Spool(str(path), **args)


receivers_lists = st.lists(st.sampled_from([RADIO, FORWARDER, {"source": "uart0"}]),
                           min_size=1, max_size=3)


def through_the_spool(r: message.Reading, epoch: int = 0) -> tuple[str | None, str, bytes]:
    """What the spool stores for a reading and builds back from it for the forwarder."""
    form, text, body = store_form(accepted(r), epoch)
    stored = Stored(1, r.device_id, r.fcnt, epoch, 1, body, False, r.received_at, 0)
    return message_of(stored, (form, text))


# The stored form differs by kind and reading shape: 100 fixed examples give
# each kind over a dozen readings. Nightly: 2,000.
@settings(max_examples=examples(ci=100, nightly=2000))
@given(st.sampled_from(KIND_NAMES).flatmap(lambda k: st.tuples(st.just(k), readings(k))),
       st.integers(0, 0xFFFFFFFF), st.integers(0, frame.MAX_FCNT),
       st.floats(1_000_000_000, 3_000_000_000, allow_nan=False), receivers_lists,
       st.sampled_from([None, SITE, {"site": "x"}]))
def test_stored_form_gives_the_same_json_bytes(kind_values: tuple[str, dict[str, Any]],
                                               device_id: int, fcnt: int, received: float,
                                               receivers: list[dict[str, Any]],
                                               site: dict[str, Any] | None) -> None:
    kind, values = kind_values
    r = reading(kind, values, device_id=device_id, fcnt=fcnt, received_at=received,
                receivers=receivers, site=site)
    topic, kind_back, payload = through_the_spool(r)
    assert (topic, payload) == old_path(r) and kind_back == kind
    assert through_the_spool(r, 3)[2] == r.json(3)


def test_spool_publishes_the_old_bytes_and_stores_a_fraction(tmp_path: Path) -> None:
    """The JSON of readings through the old path (built at accept) and the spool's."""
    spool = open_spool(tmp_path / "s.db")
    water = {"index": 123_456, "profile_end_h": 200, "alarms": 0b10, "battery": 17,
             "profile": [0, 2, 31, 45, 12, 8]}
    air = {"pm1": 52, "pm2_5": 87, "pm10": 143, "temperature": -35, "humidity": 64,
           "pressure": 10132, "status": 0}
    items = [reading("water_meter", water, fcnt=1, site=SITE),
             reading("air_quality", air, device_id=0x2001, fcnt=9, receivers=[FORWARDER, RADIO],
                     source="radio"),
             reading("water_meter", dict(water, index=123_460), fcnt=2, site=SITE),
             reading("air_quality", {"pm2_5": 87, "temperature": None, "status": 1},
                     device_id=0x2001, fcnt=10, receivers=[{"source": "uart0"}],
                     source="serial")]
    spool.accept([accepted(r) for r in items])
    rows = spool.pending(10)
    assert [(row.topic, row.payload) for row in rows] == [old_path(r) for r in items]
    assert [(row.device_id, row.fcnt, row.kind) for row in rows] == \
        [(r.device_id, r.fcnt, r.kind) for r in items]
    # Bytes counted per reading against max_bytes: a fraction of the JSON's.
    stored = spool.stats()["bytes"]
    as_json = sum(row_size(*old_path(r)) for r in items)
    assert stored * 3 < as_json, (stored, as_json)
    spool.close()
    again = open_spool(tmp_path / "s.db")          # contexts read back from the file
    assert [(row.topic, row.payload) for row in again.pending(10)] == \
        [old_path(r) for r in items]
    again.close()


def test_epoch_starts_at_every_counter_reset_and_names_the_ids(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    water = {"index": 1, "profile_end_h": 3, "battery": 19, "profile": [1]}
    spool.accept([accepted(reading("water_meter", water, fcnt=n)) for n in (5, 6)])
    assert spool.epoch(0x1234) == 0 and spool.last_fcnt(0x1234) == 6
    assert spool.reset_counter(0x1234) == 1
    assert spool.last_fcnt(0x1234) is None and 0x1234 not in spool.counters()
    spool.accept([accepted(reading("water_meter", water, fcnt=n)) for n in (5, 6)])
    assert spool.counters() == {0x1234: 6}
    assert spool.reset_counter(0x1234) == 2
    assert spool.reset_counter(0x9999) == 1          # a device never seen: epoch 1 too
    spool.close()
    spool = open_spool(tmp_path / "s.db")            # epochs are durable
    assert spool.epoch(0x1234) == 2 and spool.last_fcnt(0x1234) is None
    # JSON built by the pipeline before the reset (epoch 0) is built again with epoch 2.
    late = reading("water_meter", water, fcnt=5)
    spool.accept([Accepted(device_id=late.device_id, fcnt=5, kind=late.kind,
                           topic=late.topic(), payload=late.json(0), alarm=False,
                           received_at=late.received_at, reading=late, epoch=0)])
    ids = [json.loads(row.payload)["id"] for row in spool.pending(10)]
    assert ids == ["00001234:5", "00001234:6", "00001234:1:5", "00001234:1:6",
                   "00001234:2:5"]
    docs = [json.loads(row.payload) for row in spool.pending(10)]
    assert "epoch" not in docs[0] and [d.get("epoch") for d in docs[2:]] == [1, 1, 2]
    spool.close()


def test_a_message_over_the_bound_is_parked_not_published(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_message_bytes=2048)
    water = {"index": 1, "profile_end_h": 3, "battery": 19, "profile": [1]}
    crowd = [dict(FORWARDER, source=f"pf{i}") for i in range(40)]
    spool.accept([accepted(reading("water_meter", water, fcnt=1)),
                  accepted(reading("water_meter", water, fcnt=2, receivers=crowd)),
                  accepted(reading("water_meter", water, fcnt=3))])
    rows = spool.pending(10)
    assert [r.fcnt for r in rows] == [1, 3]
    assert all(len(r.payload) <= 2048 for r in rows)
    stats = spool.stats()
    assert stats["parked"] == 1 and stats["depth"] == 2 and stats["parked_total"] == 1
    (parked,) = spool.parked()
    assert parked.fcnt == 2 and "max_message_bytes 2048" in parked.reason
    assert len(parked.payload) > 2048 and json.loads(parked.payload)["fcnt"] == 2
    spool.close()


def test_an_unreadable_row_is_parked_and_the_rest_goes_on(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    water = {"index": 1, "profile_end_h": 3, "battery": 19, "profile": [1]}
    spool.accept([accepted(reading("water_meter", water, fcnt=n)) for n in (1, 2, 3)])
    spool._db.execute("UPDATE rows SET body = x'00ff' WHERE fcnt = 2")
    assert [r.fcnt for r in spool.pending(10)] == [1, 3]
    (parked,) = spool.parked()
    assert parked.fcnt == 2 and "unreadable" in parked.reason
    spool.close()


# Version 3: version 2's tables plus the parked table, which version 4 keeps as it was.
V3_SCHEMA = (V2_SCHEMA.replace("PRAGMA user_version = 2;", "") + PARKED_TABLE
             + "PRAGMA user_version = 3;\n")


def test_migrates_a_version_3_file(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path)
    db.executescript(V3_SCHEMA)
    water = reading("water_meter", {"index": 1, "profile_end_h": 3, "battery": 19,
                                    "profile": [1]}, fcnt=41, site=SITE)
    topic, payload = old_path(water)
    now = time.time()
    old_rows = [(0x1234, 40, "water_meter", topic, payload, 0, now),
                (0x1234, 41, "water_meter", topic, payload.replace(b"41", b"4l"), 1, now),
                (0x2001, 3, "air_quality", "city/air_quality/00002001/up", b'{"b":1}', 0, now),
                (0x1234, 42, "water_meter", topic, payload, 0, now)]
    db.executemany("INSERT INTO rows (device_id, fcnt, kind, topic, payload, alarm, "
                   "received_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [(*r, row_size(r[3], r[4])) for r in old_rows])
    db.execute("DELETE FROM rows WHERE fcnt = 42")    # the sequence is ahead of max(id)
    db.executemany("INSERT INTO replay VALUES (?, ?)", [(0x1234, 42), (0x2001, 3)])
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("accepted_total", 4),
                                                     ("acked_total", 0)])
    db.execute("INSERT INTO parked VALUES (9, 1, 1, 'water_meter', 't', x'7b7d', 0, 1.0, "
               "66, 'refused', 2.0)")
    db.commit()
    db.close()

    spool = open_spool(path)
    assert spool._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    rows = spool.pending(10)
    # Rows spooled before the upgrade are published with their bytes unchanged.
    assert [(r.row_id, r.device_id, r.fcnt, r.kind, r.topic, r.payload, r.alarm)
            for r in rows] == [(i + 1, d, f, k, t, p, bool(a))
                               for i, (d, f, k, t, p, a, _) in enumerate(old_rows[:3])]
    assert spool.counters() == {0x1234: 42, 0x2001: 3}
    assert spool.epoch(0x1234) == 0
    stats = spool.stats()
    assert stats["depth"] == 3 and stats["accepted_total"] == 4 and stats["parked"] == 1
    assert stats["bytes"] == sum(row_size(r[3], r[4]) for r in old_rows[:3])
    spool.accept([accepted(reading("water_meter", water.values, fcnt=43))])
    last = spool.pending(10)[-1]
    assert last.row_id == 5                           # ids continue past every old one
    assert json.loads(last.payload)["id"] == "00001234:43"
    spool.close()


def test_spool_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        spool = open_spool(tmp_path / "s.db")
        spool.accept([accepted(reading("water_meter", {"index": 1, "profile_end_h": 3,
                                                       "battery": 19, "profile": [1]}))])
        names = ["s.db", "s.db-wal", "s.db-shm"]
        modes = {n: stat.S_IMODE(os.stat(tmp_path / n).st_mode) for n in names}
        spool.close()
    finally:
        os.umask(old)
    assert modes == dict.fromkeys(names, 0o600)
    # A spool an older gateway left readable by others is made private at open.
    for name in names:
        if (tmp_path / name).exists():
            os.chmod(tmp_path / name, 0o644)
    open_spool(tmp_path / "s.db").close()
    assert stat.S_IMODE(os.stat(tmp_path / "s.db").st_mode) == 0o600


@pytest.mark.parametrize("bad", [b"", b"\x00\xff", deflate(b"{}")[:-2], deflate(b"{}") + b"x"])
def test_damaged_bodies_are_reported_not_raised(bad: bytes) -> None:
    stored = Stored(1, 1, 1, 0, 1, bad, False, 1.0, 0)
    topic, problem, payload = message_of(stored, (FORM_DEFLATED, '["t/x/1/up", "x"]'))
    assert topic is None and "unreadable" in problem and payload == b""
    assert message_of(stored, None)[0] is None
    assert message_of(stored, (7, '["t", "x"]'))[0] is None
