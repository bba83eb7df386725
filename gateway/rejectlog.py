"""Log lines for rejected frames, rate-limited (the counters always count every frame).

A counter reset: at most once per device per hour. An unknown device: at most
once per device per hour and, whatever the number of devices, one line a
minute per source, the rest summarised ("... and 8,412 more like it in the
last 60 s", ``gateway.logsafe``). Any other reason likewise one line a minute
per source and reason.
"""

from __future__ import annotations

import logging

from knute.gateway.logsafe import EventLog, RateLimit, clean
from knute.gateway.pipeline import UNKNOWN_DEVICE, Verdict
from knute.gateway.pipeline_checks import COUNTER_RESET


class RejectionLog:
    """Say why frames were rejected without letting a flood of them fill the log."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._per_device = RateLimit(3600.0)
        self._events = EventLog(logger, period_s=60.0)

    def rejected(self, source: str, verdict: Verdict, what: str, now: float) -> None:
        """One rejected ``what`` (frame, reading) from ``source``, at monotonic ``now``."""
        dev = f"{verdict.device_id:08x}" if verdict.device_id is not None else "-"
        if verdict.reason == UNKNOWN_DEVICE:
            if self._per_device.allow((UNKNOWN_DEVICE, verdict.device_id), now):
                self._events.event(
                    (UNKNOWN_DEVICE, source),
                    f"{source}: {what} from unknown device {dev} (fcnt {verdict.fcnt}); add "
                    "it with 'knute devices add' (logged once an hour per device)", now)
        elif verdict.reason == COUNTER_RESET:
            if self._per_device.allow((COUNTER_RESET, verdict.device_id), now):
                self._log.warning("%s: device %s counter went back to %s (%s): node reset "
                                  "or replay; after checking the node run 'knute devices "
                                  "reset-counter %s' (logged once an hour per device)",
                                  source, dev, verdict.fcnt, verdict.detail, dev)
        else:
            who = f" from {dev} fcnt {verdict.fcnt}" if verdict.device_id is not None else ""
            detail = f" ({clean(verdict.detail)})" if verdict.detail else ""
            self._events.event((verdict.reason, source),
                               f"{source}: rejected {what}{who}: {verdict.reason}{detail}",
                               now)

    def flush(self, now: float) -> None:
        """Write the summaries whose minute is over."""
        self._events.flush(now)

    def close(self) -> None:
        """Write every summary still open (at shutdown)."""
        self._events.close()
