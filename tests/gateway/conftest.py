"""Fixtures shared by the gateway's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Broker


@pytest.fixture
def tuned_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto with persistence and unlimited queues, so it loses nothing itself.

    For outage tests (a subscriber's queue survives a restart) and for the status
    topic, whose retained message docs/mqtt.md advises a persistent broker for.
    """
    broker = Broker(tmp_path_factory.mktemp("tuned-mosquitto"), "mosquitto", persistent=True,
                    extra_config="max_queued_messages 0\nmax_inflight_messages 0\n")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
