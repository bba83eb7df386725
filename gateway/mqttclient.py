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
``_do_on_publish``, ``_loop_rc_handle``).
``available()`` checks that they exist; where they do not (another paho
version) the forwarder uses paho's ``Client`` as it is.
tests/gateway/test_mqttclient.py plays a broker byte by byte against it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

READ_CHUNK = 65536
WRITE_HOLD_MAX = 256 * 1024

_PRIVATE = ("_sock_recv", "_sock_send", "_sock_close", "_handle_pubackcomp", "_do_on_publish",
            "_loop_rc_handle")
_SUCCESS = ReasonCode(PacketTypes.PUBACK)             # reason code 0, "Success"
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def available() -> bool:
    """Whether the installed paho-mqtt has the private methods this client overrides."""
    return all(callable(getattr(mqtt.Client, name, None)) for name in _PRIVATE)


class ForwarderClient(mqtt.Client):
    """paho's ``Client`` with buffered reads, held writes and shared objects for plain
    PUBACKs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx = b""          # bytes read ahead of paho's reader ...
        self._rx_pos = 0        # ... from this position on
        self._tx = bytearray()  # packets paho wrote while writes were held, not sent yet
        self._holding = False

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
        if cmd != "PUBACK" or len(packet) != 2:
            result: MQTTErrorCode = super()._handle_pubackcomp(cmd)
            return result
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                rc: MQTTErrorCode = self._do_on_publish(mid, _SUCCESS, _NO_PROPERTIES)
                return rc
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def make_client(*args: Any, **kwargs: Any) -> mqtt.Client:
    """A ``ForwarderClient`` where the installed paho allows it, else paho's ``Client``."""
    if available():
        return ForwarderClient(*args, **kwargs)
    return mqtt.Client(*args, **kwargs)

