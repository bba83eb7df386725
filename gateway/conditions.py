"""Device conditions on their way to the spool.

A condition change (a polled Modbus device ``offline`` after ``offline_after``
failed polls, ``online`` again; a node ``silent`` after its missed send
intervals, ``heard`` again: gateway.silence) is spooled like a reading, as JSON on
``<prefix>/<kind>/<device>/condition``, so it survives broker outages and
restarts and reaches the broker in order (QoS 1, at least once). Nobody sends
a condition again, so one that a failed spool commit did not take is kept and
handed over again ``CONDITION_RETRY_S`` later.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from knute.gateway import message
from knute.gateway.model import Accepted, Device

if TYPE_CHECKING:
    from knute.gateway.modbus.poller import DeviceCondition
    from knute.gateway.silence import SilenceCondition

log = logging.getLogger("knute.gateway")

CONDITION_RETRY_S = 1.0      # after a failed spool commit, condition messages wait this long


def condition_topic(prefix: str, kind: str, device: str) -> str:
    """The topic of a device's condition: ``<prefix>/<kind>/<device>/condition``."""
    return f"{prefix}/{kind}/{device}/condition"


def condition_row(cond: DeviceCondition | SilenceCondition, *, prefix: str,
                  gateway_id: str) -> Accepted:
    """The spool row of a device's condition change (JSON: docs/mqtt.md).

    Retained: a condition is state, so a consumer that subscribes later still sees it.

    Its ``fcnt`` is 0: the spool advances a device's counter to the largest
    ``fcnt`` of its rows, so a 0 never moves an existing counter (a device
    without one gets 0, below the first counter a Modbus reading carries).
    """
    device = message.device_name(cond.device_id)
    doc = cond.to_dict()
    doc["since"] = message.iso_utc(cond.since)
    if doc.get("last_seen") is not None:
        doc["last_seen"] = message.iso_utc(doc["last_seen"])
    doc["gateway"] = gateway_id
    payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return Accepted(device_id=cond.device_id, fcnt=0, kind=cond.kind,
                    topic=condition_topic(prefix, cond.kind, device), payload=payload,
                    alarm=True, received_at=cond.since, retain=True)


class SpooledOutbox:
    """Rows the gateway makes itself (conditions, downlink progress) until a spool commit
    has taken them.

    The ingest loop hands the waiting rows to the batcher (``hand_over``), learns of each
    committed one (``committed``) and, when a commit fails, puts the uncommitted ones back
    in front (``requeue``), to be handed over again ``retry_s`` later.
    """

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self._todo: list[Accepted] = []      # not handed to the batcher yet
        self._sent: list[Accepted] = []      # in the batcher, not committed yet
        self._retry_at = 0.0

    def hand_over(self, add: Callable[[Accepted], None],
                  on_failure: Callable[[Exception], None], *, final: bool = False) -> None:
        """Give the waiting rows to ``add`` (the batcher), unless a retry is not due yet.

        When ``add`` fails, ``on_failure`` runs (it calls ``requeue``) and the
        rows not handed over yet stay waiting behind the requeued ones.
        """
        self.collect_incoming()
        if not self._todo or (not final and time.monotonic() < self._retry_at):
            return
        todo, self._todo = self._todo, []
        for pos, row in enumerate(todo):
            self._sent.append(row)
            try:
                add(row)
            except Exception as exc:
                on_failure(exc)          # puts the uncommitted ones back first
                self._todo.extend(todo[pos + 1:])
                break

    def collect_incoming(self) -> None:
        """Move rows made on other threads to the waiting list (none here)."""

    def requeue(self) -> None:
        """A commit failed: keep the rows handed over since the last commit for later."""
        if self._sent:
            self._todo[:0] = self._sent
            self._sent = []
            self._retry_at = time.monotonic() + self.retry_s

    def committed(self, item: Accepted) -> bool:
        """True (and forgotten) if ``item`` of a committed batch is one of these rows."""
        if self._sent and item is self._sent[0]:
            del self._sent[0]
            return True
        return False


class ConditionOutbox(SpooledOutbox):
    """Condition changes from the poller's thread until a spool commit has taken them.

    ``put`` is called on the poller's thread; everything else on the ingest loop.
    """

    def __init__(self, *, prefix: str, gateway_id: str) -> None:
        super().__init__(CONDITION_RETRY_S)
        self.prefix = prefix
        self.gateway_id = gateway_id
        self._incoming: queue.SimpleQueue[DeviceCondition | SilenceCondition] = (
            queue.SimpleQueue())

    def put(self, cond: DeviceCondition | SilenceCondition) -> None:
        """A condition change from the poller or the silence check (any thread, never blocks)."""
        self._incoming.put(cond)

    def collect(self, devices: Mapping[int, Device]) -> None:
        """Turn new condition changes into spool rows, for registered devices only."""
        while True:
            try:
                cond = self._incoming.get_nowait()
            except queue.Empty:
                break
            # Like its readings, a device's conditions are published only when it is
            # registered with the kind its register map produces.
            device = devices.get(cond.device_id)
            if device is None or device.kind != cond.kind:
                log.debug("device %08x: condition %s not published: device not "
                          "registered as %s", cond.device_id, cond.condition, cond.kind)
                continue
            self._todo.append(condition_row(cond, prefix=self.prefix,
                                            gateway_id=self.gateway_id))
            log.debug("device %08x: condition %s spooled", cond.device_id,
                      cond.condition)
