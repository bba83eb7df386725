"""A serial source: knute link records (protocol.stream) over a UART or USB radio.

The port is opened with pyserial's ``serial_for_url``, so a device path, a
``socket://host:port`` simulator or a pty all work. Records:

- FRAME: one knute frame from a wired node (source type "serial");
- RADIO: a radio-bridge node's LoRa packet with rssi/snr/freq/sf (type "radio");
- LOG: a node's console line, logged at debug level: sanitised (no line break
  or escape sequence from the node reaches the log) and at most ten lines per
  10 s per link, the rest summarised (``gateway.logsafe``).

Faulty records (COBS, CRC, oversize, ...) are counted by reason; the stream
decoder resynchronises at the next delimiter. When the device disappears
(a USB radio unplugged: read errors, or the path vanishes) the source closes
the port, goes to ``BACKOFF`` and tries again with capped, jittered backoff
until the device is back; the daemon keeps running meanwhile.

Downlinks go back over the same link (``transmit_downlink``): to a UART node
as a FRAME record written at once (the node reads it in its receive window;
the link buffers it until then), to a radio-bridge node as a TX record with
``at_ms`` 0, which the bridge places in the uplink's RX1 or RX2 window by its
own clock (docs/protocol.md section 6).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial  # type: ignore[import-untyped]

from knute.gateway.config import SerialSourceConfig
from knute.gateway.logsafe import EventLog, RateLimit, clean
from knute.gateway.model import Counters
from knute.gateway.pipeline import Reception
from knute.gateway.sources.base import Backoff, LinkState, Sink, ThreadedSource
from knute.protocol import stream
from knute.protocol.errors import FrameError

log = logging.getLogger("knute.source.serial")
READ_TIMEOUT_S = 0.2


class RecordReader:
    """Turns bytes from one link into receptions (pure apart from the clocks passed in)."""

    def __init__(self, name: str, counters: Counters) -> None:
        self.name = name
        self.counters = counters
        self.decoder = stream.StreamDecoder()
        self.logs = 0
        self._events = EventLog(log, period_s=60.0)
        self._node_log = EventLog(log, period_s=10.0, burst=10, level=logging.DEBUG)

    def _reject(self, reason: str, at: float) -> None:
        self.counters.reject(reason, self.name)
        self._events.event(reason, f"{self.name}: bad link record: {reason}", at)

    def flush_logs(self, at: float) -> None:
        """Write the summaries of rate-limited log lines whose period has ended."""
        self._events.flush(at)
        self._node_log.flush(at)

    def close_logs(self) -> None:
        """Write every held summary (when the source stops)."""
        self._events.close()
        self._node_log.close()

    def reset(self) -> None:
        """Forget a partial record (after the link was reopened)."""
        self.decoder = stream.StreamDecoder()

    def feed(self, data: bytes, received_at: float, at: float) -> list[Reception]:
        """Receptions for the complete records in ``data``; faults are counted."""
        out: list[Reception] = []
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                self.counters.inc("received", self.name)
                self._reject(item.reason, at)
                continue
            rtype, body = item
            if rtype == stream.REC_LOG:
                self.logs += 1
                self.counters.inc("log_records", self.name)
                if log.isEnabledFor(logging.DEBUG):
                    self._node_log.event("log", f"{self.name}: node log: {clean(body)}", at)
                continue
            self.counters.inc("received", self.name)
            if rtype == stream.REC_RADIO:
                try:
                    meta, frame = stream.unpack_radio(body)
                except FrameError as exc:
                    self._reject(exc.reason, at)
                    continue
                receiver: dict[str, Any] = {"source": self.name, **meta}
                out.append(Reception(self.name, "radio", bytes(frame), received_at, at,
                                     receiver))
            else:
                out.append(Reception(self.name, "serial", bytes(body), received_at, at,
                                     {"source": self.name}))
        return out


Opener = Callable[..., Any]


class SerialSource(ThreadedSource):
    """One serial link, read by its own thread, reopened after it is lost."""

    kind = "serial"
    thread_prefix = "serial"

    def __init__(self, cfg: SerialSourceConfig, sink: Sink, counters: Counters, *,
                 opener: Opener | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = cfg.name
        self.sink = sink
        self.counters = counters
        self.reader = RecordReader(cfg.name, counters)
        self.backoff = Backoff(cfg.reopen_min_s, cfg.reopen_max_s)
        self._opener: Opener = opener or serial.serial_for_url
        self._port: Any = None
        self._lock = threading.Lock()
        self._logged = RateLimit(60.0)
        self.opens = 0
        self.losses = 0
        self.last_error = ""

    def _shutdown(self) -> None:
        self._close()
        self.reader.close_logs()

    def transmit_downlink(self, frame: bytes, window: Any, up: Any,
                          done: Callable[[str | None], None]) -> str | None:
        """Write a downlink to the node behind this link; None, or why it could not."""
        if up.path != "serial":
            # at_ms 0: the bridge knows the end of the uplink to the millisecond and
            # places the downlink in that window itself (docs/protocol.md section 6).
            record = stream.encode_record(stream.REC_TX,
                                          stream.pack_tx(0, window.freq_hz, window.sf, frame))
        else:
            record = stream.encode_record(stream.REC_FRAME, frame)
        with self._lock:
            port = self._port
            if port is None:
                return "link_down"
            try:
                port.write(record)
                port.flush()
            except (OSError, serial.SerialException) as exc:
                log.warning("%s: downlink not written: %s", self.name, exc)
                return "link_write"
        return None

    def stats(self) -> dict[str, Any]:
        """State and link counters for the status report."""
        return {"type": self.kind, "url": self.cfg.url, "state": self._state.value,
                "opens": self.opens, "losses": self.losses, "last_error": self.last_error}

    def _close(self) -> None:
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                port.close()

    def _open(self) -> bool:
        self._set_state(LinkState.OPENING)
        try:
            port = self._opener(self.cfg.url, baudrate=self.cfg.baudrate,
                                timeout=READ_TIMEOUT_S)
        except (OSError, serial.SerialException, ValueError) as exc:
            self.last_error = str(exc)
            if self._logged.allow("open", time.monotonic()):
                log.warning("%s: cannot open %s: %s", self.name, self.cfg.url, exc)
            return False
        with self._lock:
            self._port = port
        self.opens += 1
        self.reader.reset()
        self._set_state(LinkState.OPEN)
        log.info("%s: link open on %s", self.name, self.cfg.url)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._port is None and not self._open():
                self._set_state(LinkState.BACKOFF)
                self._stop.wait(self.backoff.next())
                continue
            try:
                self._read_until_lost()
            except (OSError, serial.SerialException, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial raises these when the port is
                # closed under a pending read.
                if self._stop.is_set():
                    break
                self.losses += 1
                self.last_error = str(exc)
                log.warning("%s: link lost (%s); reopening with backoff", self.name, exc)
                self._close()
                self._set_state(LinkState.BACKOFF)
                self._stop.wait(self.backoff.next())

    def _read_until_lost(self) -> None:
        opened_at = time.monotonic()
        port = self._port
        while not self._stop.is_set():
            waiting = port.in_waiting
            data = port.read(max(1, min(waiting, 4096)))
            self.reader.flush_logs(time.monotonic())
            if not data:
                continue
            if self.backoff.attempts and time.monotonic() - opened_at > 5.0:
                self.backoff.reset()
            for rx in self.reader.feed(bytes(data), time.time(), time.monotonic()):
                self.sink(rx)
