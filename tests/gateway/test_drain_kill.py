"""kill -9 of a forwarder draining a backlog: nothing lost, duplicates only of unacked rows.

The forwarder child drains a spooled backlog into a real Mosquitto with rows
published by ``ForwarderClient.publish_rows`` and acknowledged in bulk. It is
killed with SIGKILL mid-drain. Then: every row the spool no longer holds has
reached the subscriber (a row leaves the spool only after its PUBACK); after a
restart every reading arrives; and every reading that arrived twice was still
in the spool at the kill (its delete had not committed), so the duplicates are
at most the in-flight window plus one batch of acknowledgements.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from knute.gateway.spool import Spool
from knute.tools.rig.subscriber import Subscriber
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.gateway.test_forwarder import (
    check_delivery,
    kill_mid_drain,
    make_rows,
    reap_forwarder_process,
    start_forwarder_process,
    stop_forwarder_process,
)

ACK_BATCH = 512          # Forwarder's default ack_batch
INFLIGHT = 32            # the child's max_inflight (test_forwarder.FORWARDER_CHILD)


def reading_id(payload: bytes) -> str:
    return str(json.loads(payload)["id"])


def test_kill_9_mid_drain_loses_nothing_and_repeats_only_unacked_rows(
        tuned_broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    rows = make_rows(devices=8, per_device=2500)
    spool = Spool(str(db), max_bytes=10**9, max_age_s=10**9)
    for start in range(0, len(rows), 256):
        spool.accept(rows[start:start + 256])
    every = {reading_id(r.payload) for r in spool.pending(10**9)}
    spool.close()
    assert len(every) == len(rows)
    collector = Subscriber(tuned_broker.host, tuned_broker.port, "knute/+/+/up")
    proc = start_forwarder_process(db, tuned_broker.port)
    try:
        left_at_kill = kill_mid_drain(proc, db, len(rows) * 3 // 4)
        spool = Spool(str(db), max_bytes=10**9, max_age_s=10**9)
        unacked = {reading_id(r.payload) for r in spool.pending(10**9)}
        spool.close()
        assert unacked, "the backlog was drained before the kill"
        assert len(unacked) == left_at_kill
        assert unacked <= every
        # Deleted from the spool means acknowledged by the broker: all of it arrives.
        wait_for(lambda: every - unacked <= collector.ids())
        proc = start_forwarder_process(db, tuned_broker.port)
        wait_for(lambda: len(collector.ids()) == len(rows))
        check_delivery(collector, rows)
        copies = Counter(reading_id(m.payload) for m in collector.messages("/up"))
        repeated = {rid for rid, n in copies.items() if n > 1}
        assert repeated <= unacked, f"deleted rows sent again: {sorted(repeated - unacked)[:5]}"
        assert len(repeated) <= INFLIGHT + ACK_BATCH
        assert max(copies.values()) <= 2
        stop_forwarder_process(proc)
    finally:
        reap_forwarder_process(proc)
        collector.close()
    spool = Spool(str(db), max_bytes=10**9, max_age_s=10**9)
    assert spool.depth == 0
    spool.close()
