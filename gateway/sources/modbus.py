"""The Modbus poller as a gateway source (see gateway/modbus/poller.py).

Unlike the serial and packet-forwarder sources it produces no frame bytes: the
gateway reads the device itself, so each answer arrives already decoded, in
the shape ``protocol.frame.decode`` returns, as a ``ModbusReading``. The
daemon hands those to the pipeline's path for already-verified readings and
the device conditions (``offline``/``online``) to the status topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.modbus.poller import ConditionSink, Poller, ReadingSink
from gateway.modbus.settings import ModbusSettings
from gateway.sources.base import LinkState


class ModbusSource(Poller):
    """A ``Poller`` with the source interface the daemon uses (name, state, stats)."""

    source_type = "modbus"

    def __init__(self, settings: ModbusSettings, on_reading: ReadingSink, *,
                 on_condition: ConditionSink | None = None,
                 last_fcnt: Mapping[int, int] | None = None, name: str = "modbus") -> None:
        super().__init__(settings, on_reading, on_condition=on_condition, last_fcnt=last_fcnt)
        self.name = name

    @property
    def state(self) -> LinkState:
        """OPEN while polling, CLOSED otherwise (per-device conditions are in stats())."""
        return LinkState.OPEN if self.running else LinkState.CLOSED

    def stats(self) -> dict[str, Any]:
        """The poller's stats plus the link state, for ``knute gateway status``."""
        out = super().stats()
        out["link_state"] = "open" if self.running else "stopped"
        return out
