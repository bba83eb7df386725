"""The pipeline's two checks that keep state: the tag and the frame counter.

``Verifier`` checks a frame's tag under its device's key and decodes it, with
one cached AESCCM object per device; its answer is exactly what
``protocol.frame.decode`` returns, or the same FrameError reason.
``ReplayGuard`` holds each device's last accepted counter and the fingerprint
of the frame accepted with it, and says whether a counter may follow it (the
rule is step 5 of gateway.pipeline's docstring and docs/protocol.md section 8).

gateway.pipeline builds one of each per ``Pipeline`` and calls them on its
general route; ``Pipeline.decide`` writes their common case out inline. Like
the pipeline, nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from knute.gateway import fastframe
from knute.gateway.model import Device
from knute.protocol.errors import FRAME_TAG, FrameError

REPLAY = "replay"
DUPLICATE = "duplicate"
COUNTER_RESET = "counter_reset"

DEFAULT_RESET_BELOW = 16

_NONCE = fastframe.NONCE.pack     # protocol.frame.nonce's layout, as one C call


class Verifier:
    """Verifies and decrypts frames, with one cached AESCCM object per device key."""

    def __init__(self) -> None:
        # device id -> (key, tag length, its AESCCM); a device whose key or tag length
        # changes gets a new object (keyed by the id alone: no tuple built per frame)
        self._aead: dict[int, tuple[bytes, int, AESCCM]] = {}

    def cipher(self, device: Device, tag_len: int) -> AESCCM:
        """The device's cached AESCCM for ``tag_len`` (a new one after a key change)."""
        cached = self._aead.get(device.device_id)
        if cached is None or cached[1] != tag_len or cached[0] != device.key:
            cached = (device.key, tag_len, AESCCM(device.key, tag_length=tag_len))
            self._aead[device.device_id] = cached
        return cached[2]

    def forget(self, keep: Mapping[int, Device]) -> None:
        """Drop cached ciphers of devices not in ``keep`` (after a registry reload)."""
        for device_id in list(self._aead):
            dev = keep.get(device_id)
            if dev is None or dev.key != self._aead[device_id][0]:
                del self._aead[device_id]

    def verify(self, buf: bytes, device: Device,
               header_fields: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
        """Check the tag and decode; same result as ``protocol.frame.decode(buf, key)``.

        ``header_fields`` is ``protocol.frame.parse_header(buf)`` when the caller
        has it already. Raises FrameError with the same reason
        ``protocol.frame.decode`` gives.
        """
        kind_id, device_id, fcnt, tag_len = header_fields or fastframe.parse_header(buf)
        aead = self.cipher(device, tag_len)
        if buf.__class__ is not bytes:
            buf = bytes(buf)
        try:
            # protocol.frame.nonce(device_id, fcnt) and the 8 header bytes as associated
            # data (DIR_UPLINK 0, HEADER_LEN 8)
            plain = aead.decrypt(_NONCE(0, device_id, fcnt), buf[8:], buf[:8])
        except InvalidTag:
            raise FrameError(FRAME_TAG) from None
        return fastframe.decoded(kind_id, device_id, fcnt, tag_len, plain)


class ReplayGuard:
    """Last accepted frame counter per device, and the rule for what may follow it."""

    def __init__(self, counters: Mapping[int, int] | None = None,
                 reset_below: int = DEFAULT_RESET_BELOW) -> None:
        self.reset_below = reset_below
        self._last: dict[int, int] = dict(counters or {})
        self._digest: dict[int, bytes] = {}

    def load(self, counters: Mapping[int, int]) -> None:
        """Replace the state with ``counters`` (the spool's committed truth)."""
        # In place: Pipeline.decide holds these two dicts.
        self._last.clear()
        self._last.update(counters)
        for device_id in [d for d in self._digest if d not in self._last]:
            del self._digest[device_id]

    def last(self, device_id: int) -> int | None:
        """The last accepted counter of a device, or None."""
        return self._last.get(device_id)

    def check(self, device_id: int, fcnt: int, fingerprint: bytes) -> str | None:
        """None if ``fcnt`` may be accepted, else the rejection reason."""
        last = self._last.get(device_id)
        if last is None or fcnt > last:
            return None
        if fcnt == last:
            known = self._digest.get(device_id)
            return DUPLICATE if known is None or known == fingerprint else REPLAY
        if fcnt < self.reset_below <= last:
            return COUNTER_RESET
        return REPLAY

    def is_last(self, device_id: int, fcnt: int, fingerprint: bytes) -> bool:
        """Whether these are the very bytes accepted with the device's last counter."""
        return self._last.get(device_id) == fcnt and self._digest.get(device_id) == fingerprint

    def advance(self, device_id: int, fcnt: int, fingerprint: bytes) -> None:
        """Record ``fcnt`` as the device's last accepted counter."""
        self._last[device_id] = fcnt
        self._digest[device_id] = fingerprint

    def learn(self, device_id: int, fcnt: int) -> bool:
        """Raise a device's counter to ``fcnt`` accepted elsewhere; True if it rose.

        The bytes accepted there are unknown, so a frame with exactly this counter
        is then a ``duplicate`` here (another gateway already took it).
        """
        last = self._last.get(device_id)
        if last is not None and fcnt <= last:
            return False
        self._last[device_id] = fcnt
        self._digest.pop(device_id, None)
        return True

    def forget(self, device_id: int) -> None:
        """Drop a device's counter (operator-confirmed counter reset)."""
        self._last.pop(device_id, None)
        self._digest.pop(device_id, None)
