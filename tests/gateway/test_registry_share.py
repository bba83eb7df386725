"""gateway.registry_share and gateway.share_apply: sealing, the rules, conflicts.

The process-level proof (a broker, two real gateways, ``knute devices share``)
is tests/gateway/test_share_process.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from knute.gateway.errors import KnuteError
from knute.gateway.registry import SCHEMA_VERSION, Registry, create_v1
from knute.gateway.registry_share import (
    Shared,
    conflicts,
    decide,
    fingerprint,
    load_private_key,
    new_private_key_file,
    open_key,
    parse_public,
    put_message,
    read_message,
    remove_message,
    seal_key,
)
from knute.gateway.share_apply import ShareState

KEY = bytes(range(16))
OTHER = bytes(range(16, 32))


def keys(tmp_path: Path, name: str) -> tuple[X25519PrivateKey, X25519PublicKey]:
    path = str(tmp_path / f"{name}.key")
    public = new_private_key_file(path)
    return load_private_key(path), parse_public(public)


def test_a_key_opens_only_for_its_gateway_and_its_context(tmp_path: Path) -> None:
    mine, my_public = keys(tmp_path, "a")
    other, _ = keys(tmp_path, "b")
    sealed = seal_key(KEY, my_public, b"ctx")
    assert KEY.hex() not in sealed
    assert open_key(sealed, mine, b"ctx") == KEY
    with pytest.raises(KnuteError, match="does not open"):
        open_key(sealed, other, b"ctx")
    with pytest.raises(KnuteError, match="does not open"):
        open_key(sealed, mine, b"other context")


def test_the_key_file_is_private_and_kept(tmp_path: Path) -> None:
    path = str(tmp_path / "share.key")
    public = new_private_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert new_private_key_file(path) == public        # never regenerated
    os.chmod(path, 0o644)
    with pytest.raises(KnuteError, match="readable by others"):
        load_private_key(path)
    os.chmod(path, 0o600)
    Path(path).write_text("zz\n")
    with pytest.raises(KnuteError, match=r"share key .*: not 64 hex digits"):
        load_private_key(path)


def test_messages_are_bound_to_their_gateway_and_fields(tmp_path: Path) -> None:
    private, public = keys(tmp_path, "a")
    msg = put_message(gateway_id="gw-a", recipient=public, device_id=0x2000000A,
                      kind="water_meter", key=KEY, name="Gata 1", site="north",
                      location={"lat": 63.4}, version=5)
    assert KEY.hex() not in msg.decode()
    got = read_message(msg, gateway_id="gw-a", private=private)
    assert (got.op, got.device_id, got.version, got.key, got.name) == (
        "put", 0x2000000A, 5, KEY, "Gata 1")
    with pytest.raises(KnuteError, match="does not open"):            # another gateway's
        read_message(msg, gateway_id="gw-b", private=private)
    doc = json.loads(msg)
    doc["name"] = "Gata 2"                                          # a field changed
    with pytest.raises(KnuteError, match="does not open"):
        read_message(json.dumps(doc).encode(), gateway_id="gw-a", private=private)
    for bad, words in ((b"nope", "not JSON"), (b'{"v": 9}', "version-1"),
                       (b'{"v": 1, "op": "drop", "version": 1}', "op must be"),
                       (b'{"v": 1, "op": "remove", "version": -1}', "version must be"),
                       (b'{"v": 1, "op": "remove", "version": 1, "device": "x"}', "device id")):
        with pytest.raises(KnuteError, match=words):
            read_message(bad, gateway_id="gw-a", private=private)
    gone = read_message(remove_message(device_id=7, version=9), gateway_id="gw-a",
                        private=private)
    assert (gone.op, gone.device_id, gone.version) == ("remove", 7, 9)


def test_the_rules_never_overwrite_a_local_device() -> None:
    row: tuple[str, bytes, str, str, dict[str, object], float | None] = (
        "water_meter", KEY, "n", "s", {}, None)
    put = Shared("put", 1, 10, "water_meter", "n", "s", {}, fingerprint(KEY), KEY)
    changed = Shared("put", 1, 11, "water_meter", "n2", "s", {}, fingerprint(KEY), KEY)
    other_key = Shared("put", 1, 12, "water_meter", "n", "s", {}, fingerprint(OTHER), OTHER)
    gone = Shared("remove", 1, 13)
    assert decide(None, None, put) == "add"
    assert decide(row, 10, put) == "stale"
    assert decide(row, 10, changed) == "update"
    assert decide(row, 9, put) == "same"
    assert decide(row, None, put) == "adopt"                 # local, same key: joins
    assert decide(row, None, other_key) == "conflict"        # local, other key: kept
    assert decide(row, 10, gone) == "remove"
    assert decide(row, 14, gone) == "stale"
    assert decide(row, None, gone) == "keep"
    assert decide(None, None, gone) == "same"


def test_conflicts_between_gateways_are_listed() -> None:
    own = {1: fingerprint(KEY), 2: fingerprint(KEY)}
    others = {(1, "gw-b"): fingerprint(OTHER), (2, "gw-b"): fingerprint(KEY),
              (3, "gw-b"): fingerprint(OTHER), (1, "gw-a"): "ignored: that is us"}
    assert conflicts(own, others, "gw-a") == [
        {"device": "00000001", "gateways": {"gw-a": fingerprint(KEY), "gw-b": fingerprint(OTHER)}}]


def test_share_state_applies_updates_and_reports_a_local_conflict(tmp_path: Path) -> None:
    private, public = keys(tmp_path, "a")
    reg = Registry(str(tmp_path / "r.db"))
    state = ShareState(private, prefix="city", gateway_id="gw-a")

    def put(device_id: int, key: bytes, name: str, version: int) -> None:
        state.offer(f"city/registry/gw-a/{device_id:08x}", put_message(
            gateway_id="gw-a", recipient=public, device_id=device_id,
            kind="water_meter", key=key, name=name, site="", location={}, version=version))

    try:
        reg.add(9, "water_meter", OTHER, name="local")
        put(1, KEY, "one", 1)
        put(9, KEY, "shared nine", 1)
        state.offer("city/registry/gw-a/00000005", b"garbage")
        state.offer("city/registry-check/00000001/gw-b", json.dumps(
            {"fingerprint": fingerprint(OTHER)}).encode())
        assert state.apply(reg)
        assert reg.get(1).name == "one"  # type: ignore[union-attr]
        assert reg.get(9).key == OTHER   # type: ignore[union-attr]   # kept, not resolved
        put(1, KEY, "one renamed", 2)
        put(1, KEY, "stale", 1)
        state.offer("city/registry/gw-a/00000001", remove_message(device_id=1, version=1))
        assert state.apply(reg)
        assert reg.get(1).name == "one renamed"  # type: ignore[union-attr]
        assert state.fingerprints(reg.snapshot())
        state.refresh()
        st = state.stats()
        assert st["bad_messages"] == 1
        assert {c["device"] for c in st["conflicts"]} == {"00000001", "00000009"}
        state.offer("city/registry/gw-a/00000001", remove_message(device_id=1, version=3))
        assert state.apply(reg) and reg.get(1) is None
    finally:
        reg.close()


def test_a_version_2_registry_migrates_and_keeps_its_devices(tmp_path: Path) -> None:
    path = str(tmp_path / "v2.db")
    create_v1(path)
    db = sqlite3.connect(path)
    with db:
        for stmt in ("ALTER TABLE devices ADD COLUMN site TEXT NOT NULL DEFAULT ''",
                     "ALTER TABLE devices ADD COLUMN location TEXT NOT NULL DEFAULT '{}'",
                     "ALTER TABLE devices ADD COLUMN added_at REAL",
                     "ALTER TABLE devices ADD COLUMN last_fcnt INTEGER",
                     "ALTER TABLE devices ADD COLUMN last_seen REAL",
                     "ALTER TABLE devices ADD COLUMN battery INTEGER",
                     "ALTER TABLE devices ADD COLUMN alarms TEXT NOT NULL DEFAULT '[]'"):
            db.execute(stmt)
        db.execute("INSERT INTO devices (device_id, kind, key, name) VALUES (4, 'water_meter', "
                   "?, 'old')", (KEY,))
        db.execute("PRAGMA user_version = 2")
    db.close()
    reg = Registry(path)
    try:
        assert reg.version == SCHEMA_VERSION == 4
        assert reg.get(4).name == "old"  # type: ignore[union-attr]
        assert reg.shared_state(4) == (("water_meter", KEY, "old", "", {}, None), None)
    finally:
        reg.close()
