"""Several gateways with their own registries: disjoint counters and command ids, the
claim ranking, and the commands one gateway adopts from another's notice."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.gateway import config
from knute.gateway import downlinks as dlq
from knute.gateway.config import MqttConfig
from knute.gateway.downlink_city import DownlinkCity, command_ref, rank, winner
from knute.gateway.errors import KnuteError
from knute.gateway.registry import Registry
from knute.protocol import downlink_send as dls

DEV = 0x1234
KEY = bytes(range(16))


def _store(path: Path, index: int = 0, count: int = 1) -> dlq.DownlinkStore:
    reg = Registry(str(path))
    if reg.get(DEV) is None:
        reg.add(DEV, "water_meter", KEY)
    reg.close()
    return dlq.DownlinkStore(str(path), stride=(index, count))


def test_stride_helpers() -> None:
    assert [dlq.next_in_stride(v, 1, 3) for v in (-1, 0, 1, 3, 4)] == [1, 1, 4, 4, 7]
    assert [dlq.next_cmd_id(v, 0, 1) for v in (0, 1, 65534, 65535)] == [1, 2, 65535, 1]
    assert [dlq.next_cmd_id(v, 2, 4) for v in (0, 3, 7, 65535)] == [3, 7, 11, 3]
    assert all((dlq.next_cmd_id(v, 5, 7) - 1) % 7 == 5 for v in range(0, 65536, 97))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=60))
def test_counters_of_three_gateways_never_meet(tmp_path_factory: pytest.TempPathFactory,
                                               steps: list[tuple[int, bool]]) -> None:
    # Each step: a gateway takes a counter; the others learn it, or (a lost notice) not.
    root = tmp_path_factory.mktemp("city")
    stores = [_store(root / f"r{i}.db", i, 3) for i in range(3)]
    taken: list[int] = []
    try:
        for who, told in steps:
            before = stores[who].counter(DEV)
            value = stores[who].take_counter(DEV)
            assert value is not None and value % 3 == who
            assert before is None or value > before   # above all it took or learned
            taken.append(value)
            if told:
                for other, store in enumerate(stores):
                    if other != who:
                        store.learn_counter(DEV, value)
        assert len(taken) == len(set(taken))
    finally:
        for store in stores:
            store.close()


def test_a_learned_counter_only_raises(tmp_path: Path) -> None:
    store = _store(tmp_path / "r.db", 1, 2)
    assert store.take_counter(DEV) == 1
    assert store.learn_counter(DEV, 10) and store.take_counter(DEV) == 11
    assert not store.learn_counter(DEV, 4) and store.take_counter(DEV) == 13
    assert not store.learn_counter(DEV, dls.MAX_DCNT + 1)
    store.close()


def test_a_command_sent_elsewhere_is_adopted_and_reported_once(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", 0, 2)
    b = _store(tmp_path / "b.db", 1, 2)
    b.queue(DEV, "reboot", ref="warm-up")               # b's ids run ahead of a's
    cmd_a, _ = a.queue(DEV, "config", {"values": {"1": 4}}, ref="c-1")
    cmd_b, _ = b.queue(DEV, "config", {"values": {"1": 4}}, ref="c-1")
    assert (cmd_a.cmd_id - 1) % 2 == 0 and (cmd_b.cmd_id - 1) % 2 == 1
    b.cancel(DEV, b.commands(DEV)[0].cmd_id)
    # a answers uplink 7 with c-1 and a command only a had (the clock flag's).
    clock, _ = a.queue(DEV, "time")
    dcnt = a.take_counter(DEV, after_fcnt=7)
    assert dcnt is not None
    sent = a.mark_sent(DEV, [cmd_a.cmd_id, clock.cmd_id], dcnt, 7)
    notice = [{"ref": command_ref(c, "gw-a"), "cmd_id": c.cmd_id, "op": c.op,
               "args": c.args, "expires_at": c.expires_at} for c in sent]
    assert b.adopt(DEV, notice, dcnt, 7) == 2
    assert b.adopt(DEV, notice, dcnt, 7) == 2          # the notice again: the same rows
    rows = {c.ref: c for c in b.commands(DEV, open_only=True)}
    assert set(rows) == {"c-1", f"gw-a/{clock.cmd_id}/{clock.created_at:.6f}"}
    assert all(c.state == "sent" for c in rows.values())
    assert rows["c-1"].cmd_id == cmd_a.cmd_id
    assert b.due(DEV) == []                             # b never sends them itself
    # The node reports both in uplink 8: each gateway closes them, under a's ids.
    entries = [(cmd_a.cmd_id, "applied", 0), (clock.cmd_id, "applied", 0)]
    for store in (a, b):
        changed = store.report(DEV, 8, entries).changed
        assert sorted(c.state for c in changed) == ["applied", "applied"]
    assert b.adopt(DEV, notice, dcnt, 7) == 0          # closed here: left alone
    a.close()
    b.close()


def test_an_adopted_id_that_clashes_is_not_taken(tmp_path: Path) -> None:
    b = _store(tmp_path / "b.db", 1, 2)
    mine, _ = b.queue(DEV, "reboot", ref="r-1")
    clash = [{"ref": "other", "cmd_id": mine.cmd_id, "op": "reboot", "args": {},
              "expires_at": 2e9}]
    assert b.adopt(DEV, clash, 5, 3) == 0
    assert b.adopt(DEV, [{**clash[0], "op": "format_disk"}], 5, 3) == 0
    assert [c.ref for c in b.commands(DEV)] == ["r-1"]
    b.close()


def test_rank_due_then_snr_then_index() -> None:
    claims = {"a": rank(False, 9.0, 0, "a"), "b": rank(True, -3.0, 1, "b")}
    assert winner(claims) == "b"
    claims["c"] = rank(True, 2.0, 2, "c")
    assert winner(claims) == "c"
    claims["d"] = rank(True, 2.0, 1, "d")
    assert winner(claims) == "d"
    assert winner({"x": rank(True, None, 0, "x"), "y": rank(True, -20.0, 1, "y")}) == "y"


def test_rekey_with_several_gateways_needs_the_peers(tmp_path: Path) -> None:
    store = _store(tmp_path / "r.db", 0, 2)
    with pytest.raises(KnuteError, match=r"share keys in \[share\] peers"):
        store.begin_rekey(DEV, bytes(16))
    store.close()


def test_config_checks_the_index(tmp_path: Path) -> None:
    base = {"gateway": {"id": "g", "registry": str(tmp_path / "r.db")},
            "serial": [{"name": "s", "url": "/dev/null"}]}
    cfg = config.parse({**base, "downlinks": {"gateways": 3, "gateway_index": 2,
                                              "gather_ms": 200}})
    assert (cfg.downlinks.gateway_index, cfg.downlinks.gateways) == (2, 3)
    assert cfg.downlinks.gather_s == pytest.approx(0.2)
    with pytest.raises(KnuteError, match="gateway_index"):
        config.parse({**base, "downlinks": {"gateways": 2, "gateway_index": 2}})


def test_messages_from_the_others(tmp_path: Path) -> None:
    store = _store(tmp_path / "r.db", 0, 2)
    city = DownlinkCity(MqttConfig(prefix="t"), store, gateway_id="gw-a", index=0,
                        gather_s=0.05, client_id="c")
    counter = {"gateway": "gw-b", "device": f"{DEV:08x}", "dcnt": 41}
    city.handle(f"t/downlink/counter/{DEV:08x}/gw-b", json.dumps(counter).encode())
    assert store.counter(DEV) == 41 and city.figures["counters_learned"] == 1
    city.handle(f"t/downlink/counter/{DEV:08x}/gw-a",       # its own: ignored
                json.dumps({**counter, "gateway": "gw-a", "dcnt": 99}).encode())
    assert store.counter(DEV) == 41
    claim = {"gateway": "gw-b", "index": 1, "device": f"{DEV:08x}", "fcnt": 3,
             "snr_db": 5.0, "due": True}
    city.handle(f"t/downlink/claim/{DEV:08x}", json.dumps(claim).encode())
    assert city.figures["claims_heard"] == 1
    # A claim out of a session's backlog (a gateway back after a while) was decided long ago.
    old = {**claim, "fcnt": 4, "at": time.time() - 120}
    city.handle(f"t/downlink/claim/{DEV:08x}", json.dumps(old).encode())
    assert city.figures["claims_heard"] == 1
    for bad in (b"[]", b"{", b'{"gateway": "gw-b"}'):
        with pytest.raises((ValueError, KeyError)):
            city.handle(f"t/downlink/claim/{DEV:08x}", bad)
    # Not connected to the broker: the gateway answers alone.
    assert city.elect(DEV, 3, 1.0, True, None) and city.figures["alone"] == 1
    assert store.take_counter(DEV) == 42
    store.close()


def test_a_missing_index_is_caught_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(KnuteError, match="index 2 of 2"):
        _store(tmp_path / "r.db", 2, 2)


def test_a_report_read_elsewhere_closes_the_copies_here(tmp_path: Path) -> None:
    b = _store(tmp_path / "b.db", 1, 2)
    ok, _ = b.queue(DEV, "reboot", ref="r-1")
    bad, _ = b.queue(DEV, "config", {"values": {"1": 4}}, ref="c-1")
    closed: list[dict[str, Any]] = [
        {"ref": "r-1", "state": "applied", "result": None, "detail": None},
        {"ref": "c-1", "state": "rejected", "result": "cmd_range", "detail": 1},
        {"ref": "nobody", "state": "applied"}, {"ref": "r-1", "state": "queued"}]
    assert b.close_reported(DEV, closed) == 2
    assert b.close_reported(DEV, closed) == 0          # closed already: nothing moves
    got = {c.ref: (c.state, c.result, c.detail) for c in b.commands(DEV)}
    assert got == {"r-1": ("applied", None, None), "c-1": ("rejected", "cmd_range", 1)}
    # The command delivered again later (a returning gateway's session) is not queued.
    again, new = b.queue(DEV, "reboot", ref="r-1")
    assert not new and again.state == "applied" and again.cmd_id == ok.cmd_id
    assert bad.cmd_id != ok.cmd_id
    b.close()
