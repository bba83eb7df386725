"""Each device's own send interval for the silent-node alarm (gateway/silence.py).

The rule: a device is silent after ``missed_intervals`` of ITS send interval
(the registry's ``interval_s``), its kind's only when it has none. Where the
interval comes from: the node's config.json (provisioning), ``knute devices
add/import/export``, the shared registry, and an applied config downlink.

End to end on real processes: tests/e2e/test_silent_node.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from knute.gateway import registry as registry_mod
from knute.gateway.device_csv import csv_header, csv_line
from knute.gateway.downlinks import DownlinkStore
from knute.gateway.errors import KnuteError
from knute.gateway.registry import Registry, create_v1
from knute.gateway.registry_share import Shared, decide, fingerprint, put_message, read_message
from knute.gateway.silence import (
    SILENT,
    SilenceSettings,
    SilenceWatch,
    config_send_interval_s,
    node_send_interval_s,
)

H = 3600.0
T0 = 1_767_225_600.0      # 2026-01-01T00:00:00Z
SLOW, FAST, PLAIN = 0x52000001, 0x52000002, 0x52000003
KEY = bytes(range(16))


def _meters() -> list[tuple[int, str, float | None, float | None]]:
    # Three water meters: every 8 h, every 15 min, and one on the kind's 6 h.
    return [(SLOW, "water_meter", None, 8 * H), (FAST, "water_meter", None, 900.0),
            (PLAIN, "water_meter", None, None)]


def test_each_device_is_silent_after_its_own_missed_intervals() -> None:
    watch = SilenceWatch(SilenceSettings(missed_intervals=3), started_at=T0)
    for dev, _, _, _ in _meters():
        watch.heard(dev, "water_meter", T0)
    # After 2 hours: the 15-minute meter missed 8 sends (3.5 x 900 s = 52.5 min),
    # the 8-hour one none.
    changes = watch.check(_meters(), T0 + 2 * H)
    assert [(c.device_id, c.condition, c.interval_s) for c in changes] == [
        (FAST, SILENT, 900.0)]
    assert changes[0].since == T0 + 3.5 * 900
    assert changes[0].to_dict()["detail"] == "no frame for 3 send intervals of 900 s"
    # The kind's 6 h: silent at 21 h; the 8-hour meter only at 28 h.
    assert [c.device_id for c in watch.check(_meters(), T0 + 21 * H)] == [PLAIN]
    assert watch.check(_meters(), T0 + 28 * H - 1) == []
    late = watch.check(_meters(), T0 + 28 * H)
    assert [(c.device_id, c.interval_s) for c in late] == [(SLOW, 8 * H)]


def test_a_device_interval_overrides_the_kind_and_the_kind_is_the_fallback() -> None:
    settings = SilenceSettings(missed_intervals=2, interval_s={"water_meter": 100.0})
    assert settings.limit_s("water_meter") == 250.0
    assert settings.limit_s("water_meter", 1000.0) == 2500.0
    assert settings.limit_s("noise_level") is None             # no kind interval, no own
    assert settings.limit_s("noise_level", 60.0) == 150.0      # its own interval suffices
    assert SilenceSettings(missed_intervals=0).limit_s("water_meter", 60.0) is None


def test_send_interval_from_the_node_config_and_from_a_config_downlink() -> None:
    assert node_send_interval_s("water_meter", {}) == 6 * H          # firmware default 4/day
    assert node_send_interval_s("water_meter", {"water": {"sends_per_day": 3}}) == 8 * H
    assert node_send_interval_s("air_quality", {}) == 600.0
    assert node_send_interval_s("air_quality", {"air": {"interval_s": 900}}) == 900.0
    assert node_send_interval_s("noise_level", {}) is None
    # Whitelist codes (protocol/downlink.py CONFIG_KEYS): 1 water.sends_per_day,
    # 8 air.interval_s; others set no interval.
    assert config_send_interval_s({"1": 96}) == 900.0
    assert config_send_interval_s({"8": 1800, "9": 30}) == 1800.0
    assert config_send_interval_s({"4": 12, "11": 9}) is None
    assert config_send_interval_s({"99": 5, "x": 1}) is None


def test_registry_migration_from_v3_keeps_devices_without_an_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "v3.db")
    create_v1(path)
    db = sqlite3.connect(path)
    with db:
        for version in (1, 2):
            registry_mod._MIGRATIONS[version](db)
        db.execute("PRAGMA user_version = 3")
        db.execute("INSERT INTO devices (device_id, kind, key) VALUES (?, ?, ?)",
                   (SLOW, "water_meter", KEY))
    db.close()
    reg = Registry(path)
    try:
        assert reg.version == 4
        dev = reg.get(SLOW)
        assert dev is not None and dev.interval_s is None
        assert dev.as_dict()["interval_s"] is None
        added = reg.add(FAST, "water_meter", KEY, interval_s=900)
        assert added.interval_s == 900.0
        with pytest.raises(KnuteError, match=r"interval_s: must be seconds 1\.\.31622400"):
            reg.add(PLAIN, "water_meter", KEY, interval_s=0)
    finally:
        reg.close()


def test_import_export_carry_the_interval(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "r.db"))
    try:
        text = (csv_header() + csv_line(SLOW, "water_meter", KEY, interval_s=8 * H)
                + csv_line(PLAIN, "water_meter", KEY))
        assert "interval_s" in csv_header()
        assert reg.import_report(text) == {"added": 2, "updated": 0, "unchanged": 0}
        assert reg.get(SLOW).interval_s == 8 * H          # type: ignore[union-attr]
        assert reg.get(PLAIN).interval_s is None          # type: ignore[union-attr]
        # Again: unchanged. A file without the column leaves the intervals alone.
        assert reg.import_report(text)["unchanged"] == 2
        old_form = "device_id,kind,key\n" + f"{SLOW:08x},water_meter,{KEY.hex()}\n"
        assert reg.import_report(old_form)["unchanged"] == 1
        assert reg.get(SLOW).interval_s == 8 * H          # type: ignore[union-attr]
        # Another interval is an update the operator confirms.
        moved = csv_header() + csv_line(SLOW, "water_meter", KEY, interval_s=900)
        with pytest.raises(KnuteError, match=r"line 2: .* another interval_s; nothing"):
            reg.import_report(moved)
        assert reg.import_report(moved, update=True)["updated"] == 1
        assert reg.get(SLOW).interval_s == 900.0          # type: ignore[union-attr]
        bad = csv_header() + f"{FAST:08x},water_meter,{KEY.hex()},,,soon\n"
        with pytest.raises(KnuteError, match=r"line 2: interval_s: 'soon' is not a number"):
            reg.import_report(bad)
    finally:
        reg.close()
    # A line appended to a file with an older header follows that header.
    assert csv_line(SLOW, "water_meter", KEY, "n", interval_s=60,
                    columns=["device_id", "kind", "key", "name", "site"]) == (
        f"{SLOW:08x},water_meter,{KEY.hex()},n\n")


def test_the_share_message_carries_and_binds_the_interval() -> None:
    private = X25519PrivateKey.generate()
    msg = put_message(gateway_id="gw-a", recipient=private.public_key(), device_id=SLOW,
                      kind="water_meter", key=KEY, name="", site="", location={},
                      version=5, interval_s=8 * H)
    shared = read_message(msg, gateway_id="gw-a", private=private)
    assert shared.interval_s == 8 * H and shared.key == KEY
    # The interval is bound to the sealed key: changed on the broker, it does not open.
    forged = msg.replace(b'"interval_s":28800.0', b'"interval_s":900.0')
    assert forged != msg
    with pytest.raises(KnuteError, match="does not open"):
        read_message(forged, gateway_id="gw-a", private=private)
    # Without an interval the message is the same as before the field existed.
    plain = put_message(gateway_id="gw-a", recipient=private.public_key(), device_id=SLOW,
                        kind="water_meter", key=KEY, name="", site="", location={}, version=5)
    assert b"interval_s" not in plain
    assert read_message(plain, gateway_id="gw-a", private=private).interval_s is None
    # A changed interval is an update; a message without one keeps the gateway's.
    row: tuple[str, bytes, str, str, dict[str, object], float | None] = (
        "water_meter", KEY, "", "", {}, 900.0)
    newer = Shared("put", SLOW, 11, "water_meter", "", "", {}, fingerprint(KEY), KEY, 8 * H)
    silent_on_it = Shared("put", SLOW, 11, "water_meter", "", "", {}, fingerprint(KEY), KEY)
    assert decide(row, 10, newer) == "update"
    assert decide(row, 10, silent_on_it) == "same"


def test_an_applied_config_downlink_moves_the_registry_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "r.db")
    reg = Registry(path)
    reg.add(FAST, "water_meter", KEY, interval_s=900)
    store = DownlinkStore(path)
    try:
        before = store.device_changes()
        cmd, _ = store.queue(FAST, "config", {"values": {"1": 3}})        # 3 a day: 8 h
        other, _ = store.queue(FAST, "config", {"values": {"4": 12}})     # leak_hours only
        store.mark_sent(FAST, [cmd.cmd_id, other.cmd_id], dcnt=0, up_fcnt=1)
        # Sent, not yet applied: the registry keeps the old interval.
        assert reg.get(FAST).interval_s == 900.0          # type: ignore[union-attr]
        out = store.report(FAST, 2, [(cmd.cmd_id, "applied", 0),
                                     (other.cmd_id, "applied", 0)])
        assert {c.state for c in out.changed} == {"applied"}
        assert reg.get(FAST).interval_s == 8 * H          # type: ignore[union-attr]
        # The gateway re-reads its device snapshot when this counter moves.
        assert store.device_changes() > before
        # A rejected one changes nothing.
        bad, _ = store.queue(FAST, "config", {"values": {"1": 24}})
        store.mark_sent(FAST, [bad.cmd_id], dcnt=1, up_fcnt=3)
        store.report(FAST, 4, [(bad.cmd_id, "cmd_range", 1)])
        assert reg.get(FAST).interval_s == 8 * H          # type: ignore[union-attr]
    finally:
        store.close()
        reg.close()


def test_a_sealed_export_carries_the_interval_to_another_gateway(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from knute.gateway.registry_share import new_private_key_file
    from knute.tools.cli.devices_share import export, open_sealed_csv

    key_file = str(tmp_path / "share.key")
    public = new_private_key_file(key_file)
    source = Registry(str(tmp_path / "operator.db"))
    target = Registry(str(tmp_path / "gateway.db"))
    try:
        source.add(SLOW, "water_meter", KEY, interval_s=8 * H)
        source.add(PLAIN, "water_meter", KEY)
        out = tmp_path / "devices.csv"
        assert export(source, public, str(out)) == 0
        text = out.read_text()
        assert text.splitlines()[0] == "device_id,kind,key,name,site,interval_s,location"
        assert KEY.hex() not in text
        opened = open_sealed_csv(text, SimpleNamespace(share_key=key_file), str(out))
        assert target.import_report(opened)["added"] == 2
        assert [(d.device_id, d.interval_s) for d in target.all()] == [
            (SLOW, 8 * H), (PLAIN, None)]
    finally:
        source.close()
        target.close()


def test_a_salvaged_registry_keeps_the_intervals(tmp_path: Path) -> None:
    from knute.tools.bench.reliability.damage import scribble

    path = str(tmp_path / "registry.db")
    reg = Registry(path)
    for n in range(300):
        reg.add(0x100 + n, "water_meter", bytes([n % 256]) * 16, interval_s=900 + n)
    reg.close()
    scribble(path, 0.6, 4096, seed=3)
    again = Registry(path)
    try:
        devices = again.all()
        assert 0 < len(devices) <= 300 and any(".corrupt-" in p.name
                                               for p in tmp_path.iterdir())
        assert all(d.interval_s == 900 + d.device_id - 0x100 for d in devices)
    finally:
        again.close()
