"""One Modbus link: a pymodbus client (a TCP connection or a serial port) and its
request lock, and the reasons a request fails.

``Link.read`` sends one read request and returns the registers or bits, or
raises ``Failure`` with one of ``LINK_REASONS``. pymodbus drops RTU frames with
a bad CRC and answers from another unit without telling the caller, so the
link keeps the raw bytes of the client's packet trace and ``classify_silence``
tells a timeout from a CRC error, a wrong unit or a bad frame. The poller
(gateway.modbus.poller) decides what a failure means for a device.

Each answered request leaves its ``Exchange`` on the link: when the request
went out and when its answer came, on the poller's clock and on the monotonic
clock. The device read its registers somewhere in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knute.gateway.modbus import decode
from knute.gateway.modbus.regmap import ReadBlock
from knute.gateway.modbus.settings import BusSettings

CONNECT_TIMEOUT_MIN_S = 1.0

TIMEOUT = "timeout"
EXCEPTION = "exception"
CRC = "crc"
WRONG_UNIT = "wrong_unit"
BYTE_COUNT = "byte_count"
BAD_FRAME = "bad_frame"
CONNECT = "connect"
LINK_REASONS = (TIMEOUT, EXCEPTION, CRC, WRONG_UNIT, BYTE_COUNT, BAD_FRAME, CONNECT)


class Failure(Exception):
    """One failed request: ``reason`` is one of LINK_REASONS."""

    def __init__(self, reason: str, detail: str = "", code: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.code = code


def classify_silence(rx: bytes, rtu: bool, unit_id: int) -> str:
    """Why a request got no usable answer, from the bytes that did arrive (maybe none).

    pymodbus drops RTU frames with a bad CRC and answers from another unit
    without telling the caller, so the raw bytes seen by the client's packet
    trace decide between ``timeout``, ``crc``, ``wrong_unit`` and ``bad_frame``.
    """
    if not rx:
        return TIMEOUT
    if rtu:
        if not decode.rtu_frame_ok(rx):
            return CRC
        return WRONG_UNIT if rx[0] != unit_id else BAD_FRAME
    if len(rx) >= 7 and rx[6] != unit_id:
        return WRONG_UNIT
    return BAD_FRAME


@dataclass(frozen=True)
class Exchange:
    """One answered request: when it went out and when its answer came, on the
    link's clock (``*_at``) and on the monotonic clock (``*_mono``)."""

    sent_at: float
    answered_at: float
    sent_mono: float
    answered_mono: float


class Link:
    """One pymodbus client (a TCP connection or a serial port) and its request lock.

    ``clock`` stamps each request's ``Exchange`` (the poller's clock: unix
    seconds, or a simulation's).
    """

    def __init__(self, bus: BusSettings, label: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self.label = label
        self.clock = clock
        self.lock = asyncio.Lock()
        self.client: Any = None
        self.rx = b""
        self.connects = 0
        self.exchange: Exchange | None = None    # the last answered request's

    @property
    def is_open(self) -> bool:
        """True while the client is connected."""
        return self.client is not None and bool(self.client.connected)

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # pymodbus passes every outgoing packet and the receive buffer through
        # here; keep what arrived since the last request to classify silences.
        self.rx = b"" if sending else bytes(data)
        return data

    def _new_client(self, timeout_s: float) -> Any:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        bus = self.bus
        if bus.tcp is not None:
            return AsyncModbusTcpClient(bus.tcp[0], port=bus.tcp[1], name=self.label,
                                        timeout=timeout_s, retries=0, reconnect_delay=0,
                                        trace_packet=self._trace)
        return AsyncModbusSerialClient(str(bus.rtu), framer=FramerType.RTU, name=self.label,
                                       baudrate=bus.baudrate, bytesize=bus.bytesize,
                                       parity=bus.parity, stopbits=bus.stopbits,
                                       timeout=timeout_s, retries=0, reconnect_delay=0,
                                       trace_packet=self._trace)

    async def _ensure(self, timeout_s: float) -> None:
        if self.client is None:
            self.client = self._new_client(timeout_s)
        if self.client.connected:
            return
        self.connects += 1
        try:
            ok = await asyncio.wait_for(self.client.connect(),
                                        max(timeout_s, CONNECT_TIMEOUT_MIN_S))
        except (TimeoutError, OSError) as exc:
            ok = False
            why = str(exc) or type(exc).__name__
        else:
            why = "refused or unreachable"
        if not ok:
            self.close()
            raise Failure(CONNECT, f"{self.bus.target}: {why}")

    async def read(self, block: ReadBlock, unit_id: int,
                   timeout_s: float) -> list[int] | list[bool]:
        """One read request; Failure with the reason if it does not give the values.

        An answer, even an exception, leaves its timing in ``exchange``; read it
        before the next request on this link (the caller holds no lock after
        the return, but nothing else runs on the loop until it awaits).
        """
        from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

        async with self.lock:
            await self._ensure(timeout_s)
            client = self.client
            # The client's own timeout is the device's (devices share an RTU client).
            client.ctx.comm_params.timeout_connect = timeout_s
            call = {1: client.read_coils, 2: client.read_discrete_inputs,
                    3: client.read_holding_registers, 4: client.read_input_registers}
            self.rx = b""
            sent_at, sent_mono = self.clock(), time.monotonic()
            try:
                rr = await asyncio.wait_for(
                    call[block.function](block.address, count=block.count, device_id=unit_id),
                    timeout_s + 0.5)
                self.exchange = Exchange(sent_at, self.clock(), sent_mono, time.monotonic())
            except (TimeoutError, ModbusIOException) as exc:
                reason = classify_silence(self.rx, self.bus.rtu is not None, unit_id)
                detail = rx_detail(self.rx) if self.rx else f"no answer within {timeout_s:g} s"
                if isinstance(exc, ModbusIOException) and "No response" not in str(exc):
                    detail = f"{detail}; {exc}"
                if self.bus.tcp is not None:
                    # A late answer would otherwise be taken for the next request's
                    # (servers and TCP-to-RTU gateways do not all keep transaction ids
                    # apart): start the next request on a fresh connection.
                    self.close()
                raise Failure(reason, detail) from None
            except ConnectionException as exc:
                self.close()
                raise Failure(CONNECT, str(exc)) from None
            except (ModbusException, OSError) as exc:
                if isinstance(exc, OSError):
                    self.close()
                raise Failure(BAD_FRAME, str(exc)) from None
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0) or 0)
            raise Failure(EXCEPTION, f"exception code {code}", code)
        if unit_id and getattr(rr, "dev_id", unit_id) != unit_id:
            raise Failure(WRONG_UNIT, f"answer from unit {rr.dev_id}")
        if block.function in (3, 4):
            words: list[int] = list(rr.registers)
            if len(words) != block.count:
                raise Failure(BYTE_COUNT, f"{len(words)} registers for {block.count} asked")
            return words
        bits: list[bool] = list(rr.bits)
        if len(bits) != 8 * ((block.count + 7) // 8):
            raise Failure(BYTE_COUNT, f"{len(bits)} bits for {block.count} asked")
        return bits[:block.count]

    def close(self) -> None:
        """Close the client; the next request reconnects."""
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def rx_detail(rx: bytes) -> str:
    """The first bytes that arrived, for a failure's detail."""
    return f"received {rx[:32].hex()}" if rx else ""
