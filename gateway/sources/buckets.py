"""Token buckets for what remote senders may cost: per peer, per gateway, in total."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class TokenBucket:
    """One token bucket: ``rate`` events a second with bursts of ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = 0.0

    def allow(self, now: float) -> bool:
        """Take one token; False when the bucket is empty."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens >= self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class Buckets:
    """Token buckets by key (a peer address, a gateway EUI), bounded in number.

    Each key may pass ``rate`` events a second with bursts of ``burst``. The
    table keeps the ``max_keys`` keys used last; a key pushed out is counted in
    ``evicted`` and starts again with a full bucket, so a sender that cycles
    through more keys than the table holds is not slowed by it: the other
    limits (allow-list, the cheap checks before any parsing) are what stop it.
    """

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.evicted = 0
        self._table: OrderedDict[Any, list[float]] = OrderedDict()

    def allow(self, key: Any, now: float) -> bool:
        """Take one token from ``key``'s bucket; False when it is empty."""
        slot = self._table.get(key)
        if slot is None:
            slot = [self.burst, now]
            self._table[key] = slot
            if len(self._table) > self.max_keys:
                self._table.popitem(last=False)
                self.evicted += 1
        else:
            self._table.move_to_end(key)
            tokens = slot[0] + (now - slot[1]) * self.rate
            slot[0] = tokens if tokens < self.burst else self.burst
            slot[1] = now
        if slot[0] < 1.0:
            return False
        slot[0] -= 1.0
        return True

    def __len__(self) -> int:
        return len(self._table)
