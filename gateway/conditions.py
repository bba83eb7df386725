"""Modbus device conditions on their way to the spool.

A condition change (``offline`` after ``offline_after`` failed polls,
``online`` again) is spooled like a reading, as JSON on
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

log = logging.getLogger("knute.gateway")

CONDITION_RETRY_S = 1.0      # after a failed spool commit, condition messages wait this long


def condition_topic(prefix: str, kind: str, device: str) -> str:
    """The topic of a device's condition: ``<prefix>/<kind>/<device>/condition``."""
    return f"{prefix}/{kind}/{device}/condition"


def condition_row(cond: DeviceCondition, *, prefix: str, gateway_id: str) -> Accepted:
    """The spool row of a Modbus device's condition change (JSON: docs/mqtt.md).

    Retained: a condition is state, so a consumer that subscribes later still sees it.

    Its ``fcnt`` is 0: the spool advances a device's counter to the largest
    ``fcnt`` of its rows, so a 0 never moves an existing counter (a device
    without one gets 0, below the first counter a Modbus reading carries).
    """
    device = message.device_name(cond.device_id)
    doc = cond.to_dict()
    doc["since"] = message.iso_utc(cond.since)
    doc["gateway"] = gateway_id
    payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return Accepted(device_id=cond.device_id, fcnt=0, kind=cond.kind,
                    topic=condition_topic(prefix, cond.kind, device), payload=payload,
                    alarm=True, received_at=cond.since, retain=True)


class ConditionOutbox:
    """Condition changes from the poller's thread until a spool commit has taken them.

    ``put`` is called on the poller's thread; everything else on the ingest loop.
    """

    def __init__(self, *, prefix: str, gateway_id: str) -> None:
        self.prefix = prefix
        self.gateway_id = gateway_id
        self._incoming: queue.SimpleQueue[DeviceCondition] = queue.SimpleQueue()
        self._todo: list[Accepted] = []      # not handed to the batcher yet
        self._sent: list[Accepted] = []      # in the batcher, not committed yet
        self._retry_at = 0.0

    def put(self, cond: DeviceCondition) -> None:
        """A condition change from the poller (any thread, never blocks)."""
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
                log.debug("modbus device %08x: condition %s not published: device not "
                          "registered as %s", cond.device_id, cond.condition, cond.kind)
                continue
            self._todo.append(condition_row(cond, prefix=self.prefix,
                                            gateway_id=self.gateway_id))
            log.debug("modbus device %08x: condition %s spooled", cond.device_id,
                      cond.condition)

    def hand_over(self, add: Callable[[Accepted], None],
                  on_failure: Callable[[Exception], None], *, final: bool = False) -> None:
        """Give the waiting rows to ``add`` (the batcher), unless a retry is not due yet.

        When ``add`` fails, ``on_failure`` runs (it calls ``requeue``) and the
        rows not handed over yet stay waiting behind the requeued ones.
        """
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

    def requeue(self) -> None:
        """A commit failed: keep the rows handed over since the last commit for later."""
        if self._sent:
            self._todo[:0] = self._sent
            self._sent = []
            self._retry_at = time.monotonic() + CONDITION_RETRY_S

    def committed(self, item: Accepted) -> bool:
        """True (and forgotten) if ``item`` of a committed batch is a condition row."""
        if self._sent and item is self._sent[0]:
            del self._sent[0]
            return True
        return False
