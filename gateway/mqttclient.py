"""The forwarder's paho-mqtt client: paho's own, with a cheaper way of reading PUBACKs.

Profiled while draining a backlog (docs/performance.md), paho-mqtt 2.x spends
most of its time per message on the way in: three ``recv`` system calls per
PUBACK (command byte, remaining length, body) and a ``ReasonCode`` and a
``Properties`` object built for every PUBACK, on MQTT 3.1.1 as well. This
subclass changes only those two steps; everything else (the session, packet
ids, the in-flight bookkeeping, keepalive, TLS, the callbacks) is paho's:

- ``_sock_recv``: one ``recv`` of up to ``READ_CHUNK`` bytes fills a buffer
  that paho's own packet reader then takes its bytes from, so a window of
  PUBACKs costs one system call instead of three each. The bytes are the same,
  in the same order; an end of stream or a socket error reaches paho as it
  would have (after the buffered bytes). ``buffered`` tells the event loop
  that bytes are waiting although the socket is not readable.
- ``_handle_pubackcomp``: a PUBACK of exactly two bytes (a packet id and
  nothing else: on MQTT 3.1.1 the only well-formed one, on MQTT 5 reason
  "Success" with no properties, section 3.4.2.1) is handed to ``on_publish``
  with one shared success ``ReasonCode`` and one shared empty ``Properties``.
  Every other PUBACK (MQTT 5 with a reason code or properties, or malformed)
  and every PUBCOMP goes to paho's own code, unchanged.

- Rows: ``publish_rows`` builds the QoS 1 PUBLISH packets of a window's due rows
  itself, byte for byte what paho's ``publish`` would send (MQTT 3.3; MQTT 5 with
  an empty property list), takes their packet ids from paho's own counter and
  sends them with one ``send``, without paho's message object, locks and queue
  per message. Their PUBACKs never reach paho's bookkeeping: a plain one
  (two bytes, as above) is taken straight from the read buffer, several per
  loop step, and reported in one ``on_rows_acked(mids)`` call; any other PUBACK
  for a row (an MQTT 5 reason code or properties, or malformed) is decoded by
  paho's own decoder and reported through ``on_publish`` as paho would. Other
  packets (CONNACK, PINGRESP, the PUBACK of a message sent with ``publish``) and
  partial ones go to paho's reader as before. A row never acknowledged is simply
  forgotten with the connection (every connection is a new client); the spool
  still holds it, so the PUBACK stays the commit point.
- ``loop_misc`` (paho's keepalive timers, in seconds) runs at most every
  ``MISC_INTERVAL_S``, not on every step of a drain.
- Writes: between ``hold_writes()`` and ``release_writes()`` the packets paho
  writes are collected and sent with one ``send`` (the forwarder holds while it
  publishes the rows the window lets out), instead of one system call per
  PUBLISH. paho counts a held packet as written; the bytes go out in paho's
  order, before anything written later. Should the send fail, the connection
  is lost exactly as when paho's own write fails (``on_disconnect``), and the
  rows, never acknowledged, are sent again on the next connection: the PUBACK
  stays the commit point. Past ``WRITE_HOLD_MAX`` bytes held, paho is told the
  socket would block and keeps its packets queued until the next write.

The overrides use private names of paho-mqtt 2.x (``_sock_recv``, ``_sock_send``,
``_sock_close``, ``_handle_pubackcomp``, ``_in_packet``, ``_out_messages``,
``_do_on_publish``, ``_loop_rc_handle``, ``_mid_generate_mutex``, ``_last_mid``,
``_msgtime_mutex``, ``_last_msg_out``, ``_last_bytes_received``, ``_protocol``,
``_packet.decode_puback``).
``available()`` checks that they exist; where they do not (another paho
version) the forwarder uses paho's ``Client`` as it is.
tests/gateway/test_mqttclient.py plays a broker byte by byte against it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, cast

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

READ_CHUNK = 65536
WRITE_HOLD_MAX = 256 * 1024
# paho's loop_misc only looks at keepalive timers (seconds): once per loop step, as
# the forwarder steps while draining (~10 rows each), is far more often than needed.
MISC_INTERVAL_S = 0.05

_PRIVATE = ("_sock_recv", "_sock_send", "_sock_close", "_handle_pubackcomp", "_do_on_publish",
            "_loop_rc_handle", "_mid_generate")
# set by paho's Client.__init__; checked on each new client (make_client)
_PRIVATE_STATE = ("_in_packet", "_out_messages", "_mid_generate_mutex", "_last_mid",
                  "_msgtime_mutex", "_last_msg_out", "_last_bytes_received", "_protocol",
                  "_sock", "_easy_log")
_MAX_TOPICS_CACHED = 4096
_SUCCESS = ReasonCode(PacketTypes.PUBACK)             # reason code 0, "Success"
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def available() -> bool:
    """Whether the installed paho-mqtt has the private methods this client overrides."""
    return (all(callable(getattr(mqtt.Client, name, None)) for name in _PRIVATE)
            and callable(getattr(_packet, "decode_puback", None)))


class Message(Protocol):
    """What ``publish_rows`` needs of a row (gateway.model.Row has it)."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def retain(self) -> bool: ...


class ForwarderClient(mqtt.Client):
    """paho's ``Client`` with buffered reads, held writes and shared objects for plain
    PUBACKs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx = b""          # bytes read ahead of paho's reader ...
        self._rx_pos = 0        # ... from this position on
        self._tx = bytearray()  # packets paho wrote while writes were held, not sent yet
        self._holding = False
        self._row_mids: set[int] = set()      # packet ids of rows sent, no PUBACK yet
        self._topic_heads: dict[str, bytes] = {}   # topic -> its length-prefixed bytes
        self.on_rows_acked: Callable[[list[int]], None] | None = None
        self._misc_due = 0.0

    @property
    def buffered(self) -> int:
        """Bytes read from the socket that paho has not taken yet."""
        return len(self._rx) - self._rx_pos

    def _sock_recv(self, bufsize: int) -> bytes:
        rx, pos = self._rx, self._rx_pos
        if pos < len(rx):
            end = pos + bufsize
            if end >= len(rx):
                self._rx, self._rx_pos = b"", 0
                return rx[pos:] if pos else rx
            self._rx_pos = end
            return rx[pos:end]
        data: bytes = super()._sock_recv(max(bufsize, READ_CHUNK))
        if len(data) <= bufsize:
            return data
        self._rx, self._rx_pos = data, bufsize
        return data[:bufsize]

    def publish_rows(self, rows: Sequence[Message]) -> tuple[MQTTErrorCode, list[int]]:
        """Publish ``rows`` at QoS 1, in order, with one send: (result, their packet ids).

        The packets are those paho's ``publish`` builds (no DUP flag: a connection
        sends a row once). A PUBACK for one of them is reported through
        ``on_rows_acked`` (plain) or ``on_publish`` (anything else), never both.
        Raises ValueError for a topic paho would refuse. Not success when there is
        no connection or it was lost while sending; the ids are then spent and the
        rows must be sent again on a new connection.
        """
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN, []
        heads = self._topic_heads
        v5 = self._protocol == mqtt.MQTTv5
        after_id = b"\0" if v5 else b""        # MQTT 5: an empty property list
        extra = 2 + len(after_id)
        with self._mid_generate_mutex:          # paho's counter: its ids and ours never meet
            mid = self._last_mid
            self._last_mid = (mid + len(rows) - 1) % 65535 + 1
        mids: list[int] = []
        parts: list[bytes] = []
        for row in rows:
            head = heads.get(row.topic)
            if head is None:
                head = self._topic_head(row.topic, v5)
            mid = mid % 65535 + 1
            mids.append(mid)
            length = len(head) + extra + len(row.payload)
            first = 0x33 if row.retain else 0x32          # PUBLISH, QoS 1
            if length < 128:
                fixed = bytes((first, length))
            elif length < 16384:
                fixed = bytes((first, (length & 127) | 128, length >> 7))
            else:
                fixed = bytes((first, *_remaining_length(length)))
            parts += (fixed, head, mid.to_bytes(2, "big") + after_id, row.payload)
        self._row_mids.update(mids)
        self._tx += b"".join(parts)
        with self._msgtime_mutex:
            self._last_msg_out = time.monotonic()
        if self._holding:
            return MQTTErrorCode.MQTT_ERR_SUCCESS, mids
        return self._flush(), mids

    def _topic_head(self, topic: str, v5: bool) -> bytes:
        """A topic as a PUBLISH carries it (length + UTF-8), checked as paho's publish."""
        raw = topic.encode()
        if not raw and not v5:
            raise ValueError("Invalid topic.")
        if b"+" in raw or b"#" in raw:
            raise ValueError("Publish topic cannot contain wildcards.")
        if len(raw) > 65535:
            raise ValueError("Publish topic is too long.")
        if len(self._topic_heads) >= _MAX_TOPICS_CACHED:
            self._topic_heads.clear()
        head = len(raw).to_bytes(2, "big") + raw
        self._topic_heads[topic] = head
        return head

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's read, with the plain PUBACKs of rows taken straight from the buffer."""
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if self._rx_pos >= len(self._rx):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if self._in_packet["command"] != 0:       # inside a packet: paho reads on
                return super().loop_read(max_packets)
            try:
                data: bytes = super()._sock_recv(READ_CHUNK)
            except BlockingIOError:
                return rc
            except OSError as exc:                    # as paho's reader: connection lost
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", exc)
                data = b""
            if not data:
                lost: MQTTErrorCode = self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                return lost
            self._rx, self._rx_pos = data, 0
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rx_pos < len(self._rx):
            if self._in_packet["command"] == 0 and self._take_row_pubacks():
                continue
            if self._sock is None:
                break
            rc = super().loop_read(1)                 # another packet, or part of one
        return rc

    def _take_row_pubacks(self) -> bool:
        """Settle the plain PUBACKs of rows at the head of the buffer; True if any."""
        rx, pos, end = self._rx, self._rx_pos, len(self._rx)
        waiting = self._row_mids
        acked: list[int] = []
        while pos + 4 <= end and rx[pos] == 0x40 and rx[pos + 1] == 2:
            mid = (rx[pos + 2] << 8) | rx[pos + 3]
            if mid not in waiting:
                break                             # paho's (a status message): its turn
            waiting.discard(mid)
            acked.append(mid)
            pos += 4
        if not acked:
            return False
        if pos >= end:
            self._rx, self._rx_pos = b"", 0
        else:
            self._rx_pos = pos
        with self._msgtime_mutex:
            self._last_bytes_received = time.monotonic()
        self._rows_acked(acked)
        return True

    def _rows_acked(self, mids: list[int]) -> None:
        handler = self.on_rows_acked
        if handler is not None:
            handler(mids)
            return
        on_publish = self._on_publish_v2()
        if on_publish is not None:
            for mid in mids:
                on_publish(self, self._userdata, mid, _SUCCESS, _NO_PROPERTIES)

    def _on_publish_v2(self) -> Callable[..., object] | None:
        """``on_publish`` (the forwarder's clients use callback API version 2)."""
        return cast("Callable[..., object] | None", self.on_publish)

    def loop_misc(self) -> MQTTErrorCode:
        """paho's keepalive work, at most every ``MISC_INTERVAL_S``."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        now = time.monotonic()
        if now < self._misc_due:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        self._misc_due = now + MISC_INTERVAL_S
        rc: MQTTErrorCode = super().loop_misc()
        return rc

    def hold_writes(self) -> None:
        """Collect the packets paho writes from now on, until ``release_writes``."""
        self._holding = True

    def release_writes(self) -> MQTTErrorCode:
        """Send what was collected (as much as the socket takes now; the rest when it is
        writable, see ``want_write``). Not success when the connection was lost."""
        self._holding = False
        return self._flush()

    def want_write(self) -> bool:
        """paho's answer, or True while collected bytes wait for the socket."""
        return bool(self._tx) or super().want_write()

    def loop_write(self) -> MQTTErrorCode:
        """Send collected bytes first, then paho's queued packets (while writes are held,
        paho's packets are only collected)."""
        if self._tx and not self._holding:
            rc = self._flush()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._tx:
                return rc
        result: MQTTErrorCode = super().loop_write()
        return result

    def _send_held(self) -> None:
        """Send collected bytes until the socket would block; OSError as paho's send."""
        tx = self._tx
        while tx:
            try:
                sent = super()._sock_send(tx)
            except BlockingIOError:
                return                                       # the rest when writable
            except OSError:
                tx.clear()
                raise
            del tx[:sent]

    def _flush(self) -> MQTTErrorCode:
        if self._sock is None:
            self._tx.clear()
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        try:
            self._send_held()
        except OSError:   # as when paho's own write fails: close, on_disconnect
            lost: MQTTErrorCode = self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            return lost
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if self._holding:
            if self._sock is None:
                raise ConnectionError("self._sock is None")
            if len(self._tx) >= WRITE_HOLD_MAX:
                raise BlockingIOError()
            self._tx += buf
            return len(buf)
        if self._tx:                    # what was collected goes first
            self._send_held()           # an OSError reaches paho's write as its own would
            if self._tx:
                raise BlockingIOError()
        sent: int = super()._sock_send(buf)
        return sent

    def _sock_close(self) -> None:
        if self._tx and self._sock is not None:
            with contextlib.suppress(OSError):   # best effort: a DISCONNECT may be among them
                super()._sock_send(self._tx)
        self._tx.clear()
        super()._sock_close()

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd == "PUBACK" and len(packet) >= 2:
            mid = (packet[0] << 8) | packet[1]
            if mid in self._row_mids:
                if len(packet) == 2:
                    self._row_mids.discard(mid)
                    self._rows_acked([mid])
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                # paho's decoder: MQTT 5 reason code and properties, MalformedPacket
                decoded = _packet.decode_puback(self._in_packet["command"], packet,
                                                self._protocol)
                self._row_mids.discard(mid)
                on_publish = self._on_publish_v2()
                if on_publish is not None:
                    on_publish(self, self._userdata, mid, decoded.reason, decoded.properties)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        if cmd != "PUBACK" or len(packet) != 2:
            result: MQTTErrorCode = super()._handle_pubackcomp(cmd)
            return result
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                rc: MQTTErrorCode = self._do_on_publish(mid, _SUCCESS, _NO_PROPERTIES)
                return rc
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def _remaining_length(length: int) -> bytes:
    """MQTT's variable byte integer (section 1.5.5); ValueError past its four bytes."""
    if length > 268_435_455:
        raise ValueError("Payload too large.")
    out = bytearray()
    while True:
        byte, length = length & 127, length >> 7
        out.append(byte | 128 if length else byte)
        if not length:
            return bytes(out)


def make_client(*args: Any, **kwargs: Any) -> mqtt.Client:
    """A ``ForwarderClient`` where the installed paho allows it, else paho's ``Client``."""
    if available():
        client = ForwarderClient(*args, **kwargs)
        if all(hasattr(client, name) for name in _PRIVATE_STATE):
            return client
    return mqtt.Client(*args, **kwargs)

