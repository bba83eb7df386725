"""The forwarder's delivery policy, pure: what to send, what is acknowledged, what to park.

gateway.forwarder is the I/O shell (paho-mqtt, sockets, threads, the spool);
everything it decides about rows lives here and is tested without a broker.

``DeliveryWindow``: the rows of ONE connection. Rows are offered in spool
order; ``due()`` says which may be published now (at most ``limit`` in
flight); ``sent()`` records a row's packet id; ``on_puback()`` settles it:
acknowledged (to be deleted from the spool), refused (to be parked: the
broker will never take it) or failed for now (the connection is restarted
and the row sent again). ``stale()`` says when in-flight rows have waited
too long for any PUBACK. A row bigger than the broker's Maximum Packet Size
(MQTT 5 CONNACK) is refused before it is sent.

``LossTracker``: across connections. An MQTT 3.1.1 broker cannot refuse one
message: it closes the connection (Mosquitto's ``max_packet_size``, for
one). So when the connection is lost ``limit`` times in a row with the same
row oldest in flight and no row sent after it acknowledged, that row is
refused too. A connection that acknowledges a later row clears it; one that
ends with nothing in flight (say, no CONNACK) does not count either way. After
the first such loss the next connections send the suspect alone, so the
loss cannot be blamed on the rows behind it.

A loss counts only when the broker showed on that connection that it was
taking messages: it acknowledged the gateway's status, which the forwarder
publishes first after CONNACK. A broker node that is failing over (a cluster
reorganizing) accepts a connection and closes it at once, as often as the
gateway comes back; blaming the oldest row for that parked good readings.
Such a loss still makes the row the suspect (sent alone next time), without
counting. While a suspect is tested the forwarder sends it only after the
status PUBACK arrived, so a real refusal still shows as a loss on a
connection that took the status: a PUBACK written just before the broker
resets the connection can be lost with the reset, which is why the suspect
is not pipelined behind the status.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import NamedTuple

from knute.gateway.model import Row

# MQTT 5 PUBACK reason codes (section 3.4.2.1) that say "not now" rather than
# "never": the row is sent again on a new connection instead of being parked.
RETRY_REASON_CODES = frozenset({
    0x91,   # Packet Identifier in use
    0x97,   # Quota exceeded
})


class Refusal(NamedTuple):
    """A row the broker will not take, and why (the reason the spool parks it with)."""

    row: Row
    reason: str


def publish_packet_size(topic: str, payload: bytes, *, v5: bool) -> int:
    """Bytes of the QoS 1 PUBLISH packet paho sends for this message (MQTT 3.3)."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload) + (1 if v5 else 0)
    length_bytes = 1
    while remaining >= 128 ** length_bytes and length_bytes < 4:
        length_bytes += 1
    return 1 + length_bytes + remaining


class DeliveryWindow:
    """In-flight QoS 1 rows of one broker connection; see the module docstring.

    Every offered row is, at any time, in exactly one place: queued (offered,
    not sent), in flight (sent, no PUBACK yet), acknowledged (waiting for
    ``take_acked``), refused (waiting for ``take_refused``) or failed (sent
    again on the next connection). Rows leave the queue in offer order.
    """

    def __init__(self, limit: int, *, ack_timeout_s: float, now: float,
                 max_packet: int | None = None, v5: bool = False) -> None:
        if limit < 1:
            raise ValueError("the window needs a limit of at least 1")
        self.limit = limit
        self.ack_timeout_s = ack_timeout_s
        self.max_packet = max_packet
        self.v5 = v5
        self.cursor = 0                     # highest row id offered (spool.pending's after_id)
        self.newest_acked = 0               # highest row id acknowledged on this connection
        self.failed: list[Row] = []         # PUBACK said "not now": reconnect and resend
        self._queue: deque[Row] = deque()
        self._in_flight: dict[int, Row] = {}          # packet id -> row, in send order
        self._acked: list[int] = []
        self._refused: list[Refusal] = []
        self._last_progress = now

    # -- what the forwarder asks -----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Rows sent and not yet settled by a PUBACK."""
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        """Rows offered and not sent yet."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not self._queue and not self._in_flight

    def oldest_in_flight(self) -> Row | None:
        """The first row sent of those still in flight."""
        for row in self._in_flight.values():
            return row
        return None

    def due(self) -> list[Row]:
        """Queued rows that may be published now, in spool order (not removed yet).

        A row too large for the broker's Maximum Packet Size is refused here
        instead (it leaves the queue), so it never reaches the wire.
        """
        room = self.limit - len(self._in_flight)
        if self.max_packet is None or room <= 0:
            return list(islice(self._queue, max(0, room)))
        out: list[Row] = []
        i = 0
        while i < len(self._queue) and len(out) < room:
            row = self._queue[i]
            if self.max_packet is not None:
                size = publish_packet_size(row.topic, row.payload, v5=self.v5)
                if size > self.max_packet:
                    del self._queue[i]
                    self._refused.append(Refusal(row, f"{size} bytes is over the broker's "
                                                      "maximum packet size of "
                                                      f"{self.max_packet} bytes"))
                    continue
            out.append(row)
            i += 1
        return out

    def stale(self, now: float) -> bool:
        """True when rows are in flight and no PUBACK came for ``ack_timeout_s``."""
        return bool(self._in_flight) and now - self._last_progress > self.ack_timeout_s

    # -- what happened ---------------------------------------------------------------------

    def offer(self, rows: Iterable[Row]) -> None:
        """Rows read from the spool after ``cursor``, in spool (row id) order."""
        for row in rows:
            if row.row_id <= self.cursor:
                raise ValueError(f"row {row.row_id} offered after row {self.cursor}")
            self.cursor = row.row_id
            self._queue.append(row)

    def sent(self, row: Row, mid: int, now: float) -> None:
        """``row`` (the first of ``due()``) was published with packet id ``mid``."""
        if not self._queue or self._queue[0] is not row:
            raise ValueError(f"row {row.row_id} is not the next row to send")
        if mid in self._in_flight:
            raise ValueError(f"packet id {mid} is already in flight")
        if not self._in_flight:
            self._last_progress = now
        self._queue.popleft()
        self._in_flight[mid] = row

    def on_puback(self, mid: int, *, refused: str | None = None, retry: bool = False,
                  now: float) -> Row | None:
        """Settle the row sent with packet id ``mid``; None when no row has that id.

        ``refused`` (a reason): the broker will never take it; ``retry``: it
        failed for now. Neither: delivered.
        """
        row = self._in_flight.pop(mid, None)
        if row is None:
            return None
        self._last_progress = now
        if retry:
            self.failed.append(row)
        elif refused is not None:
            self._refused.append(Refusal(row, refused))
        else:
            self._acked.append(row.row_id)
            self.newest_acked = max(self.newest_acked, row.row_id)
        return row

    def on_pubacks(self, mids: Iterable[int], now: float) -> None:
        """Rows sent with these packet ids were delivered (plain PUBACKs, in bulk).

        The same as ``on_puback(mid, now=now)`` for each id; ids of no row in
        flight are ignored.
        """
        in_flight = self._in_flight
        acked = self._acked
        newest = self.newest_acked
        settled = False
        for mid in mids:
            row = in_flight.pop(mid, None)
            if row is not None:
                settled = True
                acked.append(row.row_id)
                if row.row_id > newest:
                    newest = row.row_id
        if settled:
            self.newest_acked = newest
            self._last_progress = now

    def take_acked(self) -> list[int]:
        """Row ids acknowledged since the last call (to delete from the spool)."""
        out, self._acked = self._acked, []
        return out

    @property
    def acked_waiting(self) -> int:
        """Acknowledged row ids not taken yet."""
        return len(self._acked)

    def take_refused(self) -> list[Refusal]:
        """Rows refused since the last call (to park in the spool)."""
        out, self._refused = self._refused, []
        return out


class LossTracker:
    """Refuses the row that keeps losing the connection (MQTT 3.1.1); see the module doc."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the loss limit must be at least 1")
        self.limit = limit
        self.suspect: int | None = None      # row id oldest in flight at the last losses
        self.losses = 0

    def connection_ended(self, oldest_in_flight: Row | None, newest_acked: int,
                         broker_took_messages: bool) -> Refusal | None:
        """Record how a lost connection ended; a Refusal when its suspect is convicted.

        ``newest_acked`` is the highest row id acknowledged on that connection
        (0: none). An acknowledgement of a row sent after the oldest in flight
        clears it: the broker read past it. ``broker_took_messages``: the broker
        acknowledged something on that connection (the gateway's status, sent
        first); a connection lost before that was the broker's trouble (a node
        failing over closes connections right after CONNACK), so it names the
        suspect to test but does not count against it.
        """
        if oldest_in_flight is None:
            if newest_acked:
                self.suspect, self.losses = None, 0
            return None
        if newest_acked > oldest_in_flight.row_id:
            self.suspect, self.losses = None, 0
            return None
        if oldest_in_flight.row_id != self.suspect:
            self.suspect, self.losses = oldest_in_flight.row_id, 0
        if not broker_took_messages:
            return None
        self.losses += 1
        if self.losses < self.limit:
            return None
        self.suspect, self.losses = None, 0
        return Refusal(oldest_in_flight,
                       f"the broker closed the connection {self.limit} times in a row with "
                       "this message the oldest in flight, after acknowledging the "
                       "gateway's status, and nothing after it acknowledged")

    def window_limit(self, limit: int) -> int:
        """The window for the next connection: 1 while a suspect is being tested."""
        return 1 if self.suspect is not None else limit
