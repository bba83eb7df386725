"""The downlink store: counter, queue, states, expiry, bounds and key rotation."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.gateway import downlinks as dlq
from knute.gateway.downlink_rekey import RekeyState
from knute.gateway.errors import KnuteError
from knute.gateway.registry import Registry
from knute.protocol import downlink_send as dls

DEV = 0x1234
KEY = bytes(range(16))
NEW_KEY = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")


def _open(path: str, **limits: float) -> dlq.DownlinkStore:
    reg = Registry(path)
    if reg.get(DEV) is None:
        reg.add(DEV, "water_meter", KEY)
    reg.close()
    return dlq.DownlinkStore(path, dlq.DownlinkLimits(**limits))  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: os.PathLike[str]) -> Iterator[dlq.DownlinkStore]:
    s = _open(os.path.join(str(tmp_path), "registry.db"))
    yield s
    s.close()


def test_counter_starts_at_zero_and_survives_a_reopen(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "registry.db")
    s = _open(path)
    assert s.counter(DEV) is None
    assert [s.take_counter(DEV) for _ in range(3)] == [0, 1, 2]
    s.close()
    s = _open(path)
    assert s.counter(DEV) == 2
    assert s.take_counter(DEV) == 3
    s.close()


def test_counter_ends_at_24_bits(store: dlq.DownlinkStore) -> None:
    store.take_counter(DEV)
    store._db.execute("UPDATE dl_devices SET dcnt = ? WHERE device_id = ?",
                      (dls.MAX_DCNT, DEV))
    with pytest.raises(dlq.CounterExhausted, match="00001234"):
        store.take_counter(DEV)
    assert store.counter(DEV) == dls.MAX_DCNT


def test_command_ids_and_refs(store: dlq.DownlinkStore) -> None:
    a, new_a = store.queue(DEV, "time", ref="m-1", now=100.0)
    b, _ = store.queue(DEV, "config", {"values": {"1": 4}}, now=101.0)
    again, new_again = store.queue(DEV, "time", ref="m-1", now=102.0)
    assert (a.cmd_id, b.cmd_id) == (1, 2)
    assert new_a and not new_again and again.cmd_id == 1
    assert [c.state for c in store.commands(DEV)] == ["queued", "queued"]
    with pytest.raises(KnuteError, match="unknown command 'warp'"):
        store.queue(DEV, "warp")


def test_queue_bound_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    s = _open(os.path.join(str(tmp_path), "r.db"), max_queued=2)
    s.queue(DEV, "reboot")
    s.queue(DEV, "reboot")
    with pytest.raises(dlq.QueueFull, match=r"00001234 has 2 commands waiting \(downlinks"):
        s.queue(DEV, "reboot")
    s.close()


def test_report_moves_states_and_unreported_goes_back(store: dlq.DownlinkStore) -> None:
    a, _ = store.queue(DEV, "time", now=10.0)
    b, _ = store.queue(DEV, "config", {"values": {"3": 5}}, now=10.0)
    c, _ = store.queue(DEV, "reboot", now=10.0)
    store.mark_sent(DEV, [a.cmd_id, b.cmd_id, c.cmd_id], dcnt=0, up_fcnt=7, now=11.0)
    # The report of uplink 7 itself cannot hold them yet: nothing changes.
    assert store.report(DEV, 7, [], now=11.5).changed == []
    out = store.report(DEV, 8, [(a.cmd_id, "applied", 0), (b.cmd_id, "cmd_range", 3),
                                (b.cmd_id, "cmd_range", 4)], now=12.0)
    states = {x.cmd_id: (x.state, x.result, x.detail) for x in out.changed}
    assert states == {a.cmd_id: ("applied", None, None), b.cmd_id: ("rejected", "cmd_range", 3),
                      c.cmd_id: ("queued", None, None)}
    assert [x.cmd_id for x in store.due(DEV, now=12.0)] == [c.cmd_id]
    assert store.get(DEV, c.cmd_id).sends == 1  # type: ignore[union-attr]


def test_expiry_and_send_limit(tmp_path: os.PathLike[str]) -> None:
    s = _open(os.path.join(str(tmp_path), "r.db"), max_sends=2, expiry_s=100.0)
    a, _ = s.queue(DEV, "reboot", now=0.0)
    b, _ = s.queue(DEV, "time", now=50.0)
    for fcnt in (1, 2):
        s.mark_sent(DEV, [a.cmd_id], dcnt=fcnt, up_fcnt=fcnt, now=float(fcnt))
        s.report(DEV, fcnt + 1, [], now=float(fcnt))
    gone = s.expire(now=60.0)
    assert [(x.cmd_id, x.state) for x in gone] == [(a.cmd_id, "expired")]
    assert [x.cmd_id for x in s.expire(now=150.0)] == [b.cmd_id]
    assert s.due(DEV, now=150.0) == []
    assert len(s.commands(DEV)) == 2
    s.expire(now=151.0 + dlq.KEEP_CLOSED_S)          # finished ones are forgotten
    assert s.commands(DEV) == []
    s.close()


def test_cancel(store: dlq.DownlinkStore) -> None:
    a, _ = store.queue(DEV, "reboot")
    assert store.cancel(DEV, a.cmd_id).state == "cancelled"
    with pytest.raises(KnuteError, match="no open command"):
        store.cancel(DEV, a.cmd_id)


def test_rekey_two_phases(store: dlq.DownlinkStore) -> None:
    cmd = store.begin_rekey(DEV, NEW_KEY)
    assert cmd.op == "rekey" and cmd.as_dict()["args"] == {"key_no": 1}
    assert "f0e1" not in str(cmd.as_dict())
    assert store.next_keys() == {DEV: NEW_KEY}
    with pytest.raises(KnuteError, match="already pending"):
        store.begin_rekey(DEV, bytes(16))
    done = store.commit_rekey(DEV)
    assert done is not None and done.op == "rekey_done" and done.args == {"key_no": 1}
    assert store.rekey_state(DEV) == RekeyState(1)
    reg = Registry(store.path)
    dev = reg.get(DEV)
    reg.close()
    assert dev is not None and dev.key == NEW_KEY
    assert store.get(DEV, cmd.cmd_id).state == "applied"  # type: ignore[union-attr]
    assert store.commit_rekey(DEV) is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["queue", "send", "report_all", "report_none", "expire"]),
                max_size=40))
def test_ids_of_open_commands_stay_unique(tmp_path_factory: pytest.TempPathFactory,
                                          steps: list[str]) -> None:
    path = str(tmp_path_factory.mktemp("q") / "r.db")
    s = _open(path, max_queued=5, max_sends=3)
    fcnt = 0
    now = 0.0
    for step in steps:
        now += 1.0
        if step == "queue":
            try:
                s.queue(DEV, "reboot", now=now)
            except dlq.QueueFull:
                assert len(s.commands(DEV, open_only=True)) == 5
        elif step == "send":
            due = s.due(DEV, now)[:4]
            dcnt = s.take_counter(DEV)
            if due and dcnt is not None:
                s.mark_sent(DEV, [c.cmd_id for c in due], dcnt, fcnt, now)
        elif step.startswith("report"):
            fcnt += 1
            sent = [c for c in s.commands(DEV, open_only=True) if c.state == "sent"]
            entries = [(c.cmd_id, "applied", 0) for c in sent] if step == "report_all" else []
            s.report(DEV, fcnt, entries, now)
        else:
            s.expire(now)
        open_ids = [c.cmd_id for c in s.commands(DEV, open_only=True, limit=1000)]
        assert len(open_ids) == len(set(open_ids)) <= 5
    counters = s.counter(DEV)
    s.close()
    assert counters is None or counters >= 0


def test_downlinks_table_of_the_configuration() -> None:
    from knute.gateway import config

    base = {"gateway": {"id": "g"}, "serial": [{"name": "s", "url": "/dev/null"}]}
    cfg = config.parse({**base, "downlinks": {"max_queued": 4, "expiry_hours": 2,
                                              "auto_ack": True}})
    assert (cfg.downlinks.max_queued, cfg.downlinks.expiry_s, cfg.downlinks.auto_ack) == (
        4, 7200.0, True)
    with pytest.raises(KnuteError, match=r"downlinks\.max_queued"):
        config.parse({**base, "downlinks": {"max_queued": 0}})
    with pytest.raises(KnuteError, match=r"downlinks\.warp"):
        config.parse({**base, "downlinks": {"warp": 1}})


def test_the_stores_own_commits_cost_no_registry_reload(tmp_path: os.PathLike[str]) -> None:
    from knute.gateway import config
    from knute.gateway.downlink_service import DownlinkRuntime
    from knute.gateway.model import Counters
    from knute.gateway.pipeline import Pipeline
    from knute.gateway.registry_watch import RegistryWatch

    path = os.path.join(str(tmp_path), "registry.db")
    cfg = config.parse({"gateway": {"id": "g", "registry": path},
                        "serial": [{"name": "s", "url": "/dev/null"}],
                        "downlinks": {"commands_from_mqtt": False}})
    reg = Registry(path)
    reg.add(DEV, "water_meter", KEY)
    pipeline = Pipeline(reg.snapshot())
    watch = RegistryWatch(reg, pipeline)
    runtime = DownlinkRuntime(cfg, [], Counters(), lambda: pipeline.devices)
    runtime.watch(watch, pipeline)
    other = dlq.DownlinkStore(path)          # `knute devices send` in another process
    try:
        reg.changed()
        for _ in range(3):
            other.queue(DEV, "reboot")
            other.take_counter(DEV)
            watch.poll()
        assert watch.reloads == 0
        other.begin_rekey(DEV, NEW_KEY)          # the next key reaches the pipeline ...
        watch.poll()
        assert pipeline.next_keys == {DEV: NEW_KEY} and watch.reloads == 0
        other.commit_rekey(DEV)                  # ... and the committed key the devices
        watch.poll()
        assert watch.reloads == 1 and pipeline.devices[DEV].key == NEW_KEY
        assert pipeline.next_keys == {}
        writer = Registry(path)                  # `knute devices add` elsewhere
        writer.add(0x99, "air_quality", KEY)
        writer.close()
        watch.poll()
        assert watch.reloads == 2 and 0x99 in pipeline.devices
        reg.record_seen([])                      # the display cache does not count
        before = other.device_changes()
        from knute.gateway.registry import Seen
        writer = Registry(path)
        writer.record_seen([Seen(DEV, 5, 1.0, 50, ())])
        writer.close()
        assert other.device_changes() == before
    finally:
        other.close()
        runtime.store.close()
        reg.close()


def test_update_plan_figures() -> None:
    from knute.gateway.downlink_plan import update_plan

    one = update_plan(5112, 9, 1, 900.0)
    assert (one["chunk_bytes"], one["chunks"], one["downlinks_per_node"]) == (85, 61, 63)
    assert one["hours_per_node"] == 15.75          # 63 uplinks, one every 15 minutes
    fleet = update_plan(5112, 9, 500, 900.0)
    # 500 x 63 downlinks of 615.4 ms within 36 s an hour of the g1 sub-band
    assert fleet["hours_for_duty_cycle"] == pytest.approx(500 * 63 * 0.6154 / 36, rel=1e-3)
    assert fleet["hours_for_fleet"] == fleet["hours_for_duty_cycle"] > one["hours_per_node"]
    print(f"5 KB at SF9: one node {one['hours_per_node']} h, 500 nodes "
          f"{fleet['hours_for_fleet']} h")


def test_downlink_metrics_come_from_the_status() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from knute.gateway.metrics import StatusCollector

    reg = CollectorRegistry()
    reg.register(StatusCollector(lambda: {"totals": {
        "downlinks_sent": 3, "downlinks_applied": 2, "downlink_errors": 1}}))
    text = generate_latest(reg).decode()
    assert 'knute_gateway_downlinks_total{state="sent"} 3.0' in text
    assert 'knute_gateway_downlinks_total{state="applied"} 2.0' in text
    assert 'knute_gateway_downlinks_total{state="expired"} 0.0' in text
    assert "knute_gateway_downlink_errors_total 1.0" in text


def test_an_uplink_is_claimed_once_and_a_counter_reset_starts_over(
        store: dlq.DownlinkStore) -> None:
    assert store.take_counter(DEV, after_fcnt=40) == 0
    assert store.take_counter(DEV, after_fcnt=40) is None      # another gateway: no
    assert store.take_counter(DEV, after_fcnt=39) is None      # an older uplink: no
    assert store.take_counter(DEV, after_fcnt=41) == 1
    # The operator reset the node's counter: epoch 1 starts again at low counters.
    assert store.take_counter(DEV, after_fcnt=0, epoch=1) == 2
    cmd, _ = store.queue(DEV, "reboot", now=1.0)
    store.mark_sent(DEV, [cmd.cmd_id], 3, up_fcnt=50, now=2.0)
    out = store.report(DEV, 1, [], now=3.0)       # the node restarted its counter
    assert [(c.cmd_id, c.state) for c in out.changed] == [(cmd.cmd_id, "queued")]
