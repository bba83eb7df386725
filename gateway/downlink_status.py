"""A downlink command's progress on MQTT: one message per state change on
``<prefix>/<kind>/<device>/down/status`` (docs/schema/downlink_status.schema.json),
held in ``StatusOutbox`` until a spool commit has taken it. gateway.downlink_service
(``DownlinkRuntime``) puts each command's new state here and, before a downlink
leaves, waits until the states are spooled (``wait_spooled``).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

from knute.gateway.conditions import SpooledOutbox
from knute.gateway.downlink_commands import EXPIRED, REJECTED, Command
from knute.gateway.downlink_plan import config_name
from knute.gateway.message import iso_utc
from knute.gateway.model import Accepted

RETRY_S = 1.0               # after a failed spool commit, progress messages wait this long


def status_topic(prefix: str, kind: str, device_id: int) -> str:
    """Where a command's progress is published: ``<prefix>/<kind>/<device>/down/status``."""
    return f"{prefix}/{kind}/{device_id:08x}/down/status"


def status_message(cmd: Command, gateway_id: str, kind: str) -> dict[str, Any]:
    """The JSON of one progress step (docs/schema/downlink_status.schema.json)."""
    out: dict[str, Any] = {
        "device": f"{cmd.device_id:08x}", "kind": kind, "id": cmd.ref, "cmd_id": cmd.cmd_id,
        "command": cmd.op, "state": cmd.state, "sends": cmd.sends,
        "at": iso_utc(cmd.updated_at), "expires_at": iso_utc(cmd.expires_at),
        "gateway": gateway_id}
    if cmd.state == REJECTED:
        out["result"] = cmd.result
        out["detail"] = cmd.detail
        if cmd.op == "config" and cmd.result in ("cmd_range", "cmd_key") and cmd.detail:
            out["key"] = config_name(cmd.detail)
    elif cmd.state == EXPIRED and cmd.result is not None:
        out["result"] = cmd.result          # peer_missing: a rotation's peers not all there
    if cmd.op == "rekey" and cmd.args.get("waiting_for"):
        out["waiting_for"] = list(cmd.args["waiting_for"])
    return out


class StatusOutbox(SpooledOutbox):
    """Progress messages until a spool commit has taken them.

    ``put`` and ``put_doc`` may be called from any thread; the rest on the ingest
    loop: the messages travel like a Modbus device's condition (spooled, then
    published at QoS 1), so they survive broker outages and restarts and keep
    their order.
    """

    def __init__(self, prefix: str, gateway_id: str) -> None:
        super().__init__(RETRY_S)
        self.prefix = prefix
        self.gateway_id = gateway_id
        self._incoming: queue.SimpleQueue[Accepted] = queue.SimpleQueue()
        self._spooled = threading.Condition()
        self._put_n = self._committed_n = 0

    def put(self, cmd: Command, kind: str) -> None:
        """One command's new state."""
        self.put_doc(kind, cmd.device_id, status_message(cmd, self.gateway_id, kind))

    def put_doc(self, kind: str, device_id: int, doc: dict[str, Any]) -> None:
        """A finished status document (a refused MQTT command has no stored command)."""
        payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        with self._spooled:
            self._put_n += 1
        self._incoming.put(Accepted(device_id=device_id, fcnt=0, kind=kind,
                                    topic=status_topic(self.prefix, kind, device_id),
                                    payload=payload, alarm=False, received_at=time.time()))

    def collect_incoming(self) -> None:
        """Move the messages put on other threads to the waiting list."""
        while True:
            try:
                self._todo.append(self._incoming.get_nowait())
            except queue.Empty:
                break

    def committed(self, item: Accepted) -> bool:
        """True (and forgotten) if ``item`` of a committed batch is one of these rows."""
        if not super().committed(item):
            return False
        with self._spooled:
            self._committed_n += 1
            self._spooled.notify_all()
        return True

    def wait_spooled(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every message put so far is committed to the
        spool; whether it is. A downlink waits so before it leaves: a gateway killed
        right after it lost the states of the report it read in that uplink (the node
        reports once), and its counter's ``sent``."""
        with self._spooled:
            target = self._put_n
            return self._spooled.wait_for(lambda: self._committed_n >= target, timeout)

    def waiting(self) -> int:
        """Rows not committed yet (for tests and the status report)."""
        return self._incoming.qsize() + len(self._todo) + len(self._sent)
