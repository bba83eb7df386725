"""The Modbus poller as a gateway source (see gateway/modbus/poller.py).

Unlike the serial and packet-forwarder sources it produces no frame bytes: the
gateway reads the device itself, so each answer arrives already decoded, in
the shape ``protocol.frame.decode`` returns, as a ``ModbusReading``. The
daemon hands those to ``Pipeline.submit_reading`` (no decryption; registry,
replay check and dedup window as for radio frames) and spools each device
condition change (``offline``/``online``) as a message on
``<prefix>/<kind>/<device>/condition``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from knute.gateway.modbus.poller import ConditionSink, Poller, ReadingSink
from knute.gateway.modbus.settings import ModbusSettings
from knute.gateway.sources.base import LinkState


class ModbusSource(Poller):
    """A ``Poller`` with the source interface the daemon uses (name, state, stats).

    Unlike a bare ``Poller`` it reports a device's first answer after start as
    ``online`` (``report_first_online``), so each gateway start states every
    device's condition once: ``online`` at its first answer, ``offline`` after
    ``offline_after`` failed polls.
    """

    source_type = "modbus"

    def __init__(self, settings: ModbusSettings, on_reading: ReadingSink, *,
                 on_condition: ConditionSink | None = None,
                 last_fcnt: Mapping[int, int] | None = None, name: str = "modbus",
                 report_first_online: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings, on_reading, on_condition=on_condition, last_fcnt=last_fcnt,
                         clock=clock, report_first_online=report_first_online)
        self.name = name
        self._was_started = False

    def start(self) -> None:
        """Start polling (see ``Poller.start``)."""
        self._was_started = True
        super().start()

    @property
    def state(self) -> LinkState:
        """OPEN while polling, CLOSED before start, STOPPED after (devices: see stats())."""
        if self.running:
            return LinkState.OPEN
        return LinkState.STOPPED if self._was_started else LinkState.CLOSED

    def stats(self) -> dict[str, Any]:
        """The poller's stats with the source's type and link state, as the other sources.

        ``state`` is the link state every source reports (``open`` while polling);
        the per-device conditions are under ``devices`` and ``offline``.
        """
        out = super().stats()
        out["type"] = self.source_type
        out["state"] = self.state.value
        return out
