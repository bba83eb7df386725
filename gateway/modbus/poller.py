"""Poll Modbus devices and hand their readings on as if they were decoded frames.

Why asyncio with pymodbus's async clients (AsyncModbusTcpClient,
AsyncModbusSerialClient) in one thread, and not the sync clients in a thread
per device: a gateway may poll dozens of meters; one event loop carries all of
them without a thread (and a stack) each, a per-request timeout is one
``asyncio.wait_for`` that cancels cleanly instead of a blocking socket read,
and stopping is a task cancellation rather than waiting out every thread's
read timeout. pymodbus's async clients are its primary 3.x interface; its own
retries and automatic reconnects are turned off (``retries=0``,
``reconnect_delay=0``) so that every attempt is seen, counted and timed here.

Isolation
    Every device runs its own task on its own interval. On a TCP bus every
    device has its own connection (unless the bus says ``shared = true``), so a
    slow or dead device never delays another. An RS-485 line carries one
    request at a time by nature: devices on one RTU bus take turns through a
    lock, and a dead device holds the line for at most its timeout times
    (retries + 1) per request.

Requests
    A map's registers are grouped into the fewest reads (``RegisterMap.reads``:
    contiguous addresses of one function code, at most 125 registers or 2000
    coils each). A poll succeeds when every read of the map was answered.

Failures, counted by reason for every failed attempt
    ``timeout``      no answer within the device's ``timeout_s``
    ``exception``    the device answered with a Modbus exception (codes counted apart)
    ``crc``          an RTU answer whose CRC does not match (or a truncated one)
    ``wrong_unit``   an answer from another unit id than the one asked
    ``byte_count``   an answer with more or fewer registers than asked for
    ``bad_frame``    an answer pymodbus could not use for another reason
    ``connect``      the TCP connection or the serial port could not be opened
    ``value_range``  an answer with a value the kind cannot carry (NaN, out of
                     range): the field is sent as null when the kind allows it,
                     otherwise the reading is dropped; not a link failure.
    Log lines are rate-limited to one per device and reason per ``log_interval_s``.

Offline condition
    After ``offline_after`` (default 3) consecutive failed polls the device gets
    the ``offline`` condition; the next answered poll clears it (``online``).
    Both changes go to the condition callback (``ConditionSink``) and show in
    ``stats()``. A device's condition is ``unknown`` until its first poll; with
    ``report_first_online`` the first answered poll after start is reported as
    ``online`` too (the gateway publishes conditions as messages, so a consumer
    that last saw ``offline`` before a gateway restart learns that the device
    answers again; a device still silent gets ``offline`` again anyway).

Frame counters
    Each reading gets ``fcnt`` = the device's last counter + 1. At start the
    last counter is the larger of the state file's and the one passed in as
    ``last_fcnt`` (the daemon passes ``Spool.counters()``: the counters of
    readings actually accepted), so counters keep increasing across restarts
    even when the state file lags behind. The state file is therefore written
    without fsync, at most every ``STATE_SAVE_S`` and at stop, atomically
    (write, then rename). The counter is 24 bits: at one reading a minute it
    lasts 31 years; a device that reaches it stops producing readings
    (``fcnt_exhausted``) until an operator resets its counter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from knute.gateway.logsafe import clean
from knute.gateway.modbus.history import (
    DeviceState,
    hourly_profile,
    load_state,
    save_state,
    update_hours,
)
from knute.gateway.modbus.link import CONNECT, Exchange, Failure, Link
from knute.gateway.modbus.regmap import (
    CLOCK,
    Image,
    ReadBlock,
    device_time,
    image_from_block,
    map_values,
)
from knute.gateway.modbus.settings import DeviceSettings, ModbusSettings
from knute.protocol import frame as pframe
from knute.protocol import kinds
from knute.protocol.errors import FrameError

log = logging.getLogger("knute.modbus")

SOURCE = "modbus"
STATE_SAVE_S = 5.0

VALUE_RANGE = "value_range"
FCNT_EXHAUSTED = "fcnt_exhausted"
SINK_ERROR = "sink_error"

ONLINE = "online"
OFFLINE = "offline"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ModbusReading:
    """One answered poll, shaped like a received radio frame.

    ``frame`` is exactly what ``protocol.frame.decode`` returns: kind, kind_id,
    device_id, fcnt, tag_len (0: nothing was authenticated on the wire, the
    gateway read it itself) and values (raw wire integers by field name,
    already checked against the kinds table). ``receiver`` is the reception
    metadata for the JSON's ``receivers`` list: ``{"source": "modbus", "bus":
    <bus name>, "unit_id": <unit>, "round_trip_ms": <ms from the poll's first
    request to its last answer>}``. ``received_at`` is unix seconds (the
    poller's clock) halfway between the two: the device read its registers in
    between, so that is off by at most half the round trip. A map with a
    ``[clock]`` stamps it with the device's own time instead, read in the same
    answer as the registers (the receiver then has ``"clock": "device"``).
    ``at`` is a monotonic reading (for a dedup window, if the caller keeps one).
    """

    frame: dict[str, Any]
    receiver: dict[str, Any]
    received_at: float
    at: float


@dataclass(frozen=True)
class DeviceCondition:
    """A change of a device's condition: ``offline`` after N failed polls, ``online`` again."""

    device_id: int
    condition: str               # "offline" | "online"
    reason: str | None           # the last failure's reason (offline), None (online)
    detail: str | None
    since: float                 # unix seconds of the change
    consecutive_failures: int
    bus: str
    unit_id: int
    kind: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``device`` is the 8-hex-digit name)."""
        return {"device": f"{self.device_id:08x}", "kind": self.kind,
                "condition": self.condition, "reason": self.reason, "detail": self.detail,
                "since": self.since, "consecutive_failures": self.consecutive_failures,
                "source": SOURCE, "bus": self.bus, "unit_id": self.unit_id}


ReadingSink = Callable[[ModbusReading], None]
ConditionSink = Callable[[DeviceCondition], None]


# ---------------------------------------------------------------- devices

class _Device:
    """One polled device: its settings, link, counters and persistent state."""

    def __init__(self, cfg: DeviceSettings, link: Link, state: DeviceState) -> None:
        self.cfg = cfg
        self.link = link
        self.state = state
        self.reads = cfg.map.reads()
        self.kind: dict[str, Any] = kinds.KINDS[cfg.map.kind_id]
        self.condition = UNKNOWN
        self.since = 0.0
        self.consecutive = 0
        self.polls = 0
        self.polls_failed = 0
        self.readings = 0
        self.failures: dict[str, int] = defaultdict(int)
        self.exception_codes: dict[int, int] = defaultdict(int)
        self.last_error: str | None = None
        self.last_ok_at: float | None = None
        self.last_total: tuple[float, int] | None = None   # (time, total) of the last reading

    def snapshot(self) -> dict[str, Any]:
        """This device's part of ``Poller.stats()``."""
        return {"bus": self.cfg.bus, "unit_id": self.cfg.unit_id, "kind": self.cfg.map.kind,
                "map": self.cfg.map.name, "interval_s": self.cfg.interval_s,
                "condition": self.condition, "since": self.since or None,
                "consecutive_failures": self.consecutive, "polls": self.polls,
                "polls_failed": self.polls_failed, "readings": self.readings,
                "failures": dict(self.failures),
                "exception_codes": {str(k): v for k, v in self.exception_codes.items()},
                "last_error": self.last_error, "last_ok_at": self.last_ok_at,
                "fcnt": self.state.fcnt}


class Poller:
    """Polls every configured Modbus device from one background thread (asyncio).

    ``on_reading(ModbusReading)`` and ``on_condition(DeviceCondition)`` are
    called from the poller's thread; they must not block for long (put the
    item on a queue). ``last_fcnt`` maps device id -> last accepted counter
    (``Spool.counters()``). ``report_first_online``: also report ``online`` when
    a device first answers after start, not only after ``offline``.
    """

    def __init__(self, settings: ModbusSettings, on_reading: ReadingSink, *,
                 on_condition: ConditionSink | None = None,
                 last_fcnt: Mapping[int, int] | None = None,
                 clock: Callable[[], float] = time.time,
                 report_first_online: bool = False) -> None:
        self.settings = settings
        self.on_reading = on_reading
        self.on_condition = on_condition
        self.report_first_online = report_first_online
        self.clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._started = threading.Event()
        self._running = False
        self._logged: dict[tuple[int, str], float] = {}
        self._suppressed = 0
        self._dirty = False
        self.sink_errors = 0
        states = load_state(settings.state_file)
        spool = dict(last_fcnt or {})
        self._states: dict[int, DeviceState] = {}
        for dev in settings.devices:
            st = states.get(dev.device_id, DeviceState())
            st.fcnt = max(st.fcnt, spool.get(dev.device_id, 0))
            self._states[dev.device_id] = st
        self._links: dict[str, Link] = {}
        self._devices: list[_Device] = []
        buses = {b.name: b for b in settings.buses}
        for dev in settings.devices:
            bus = buses[dev.bus]
            key = bus.name if (bus.rtu is not None or bus.shared) else f"{bus.name}/{dev.name}"
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = Link(bus, key, self.clock)
            self._devices.append(_Device(dev, link, self._states[dev.device_id]))

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start polling in a background thread (returns at once)."""
        if self._thread is not None:
            return
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # failures are ours to report
        self._running = True
        self._thread = threading.Thread(target=self._thread_main, name="knute-modbus",
                                        daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling, close every link and save the state file."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        self._thread = None
        self._running = False

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._running

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # pragma: no cover - a bug; keep the daemon alive
            log.exception("modbus poller stopped by an error")
        finally:
            self._running = False
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Blocking work pymodbus hands to the loop's executor (name lookups) runs on
        # threads named like every other gateway thread; asyncio.run() joins them.
        self._loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(thread_name_prefix="knute-modbus-io"))
        self._stop_event = asyncio.Event()
        tasks = [asyncio.create_task(self._run_device(dev), name=f"modbus-{dev.cfg.name}")
                 for dev in self._devices]
        saver = asyncio.create_task(self._save_loop(), name="modbus-state")
        self._started.set()
        try:
            await self._stop_event.wait()
        finally:
            for task in (*tasks, saver):
                task.cancel()
            await asyncio.gather(*tasks, saver, return_exceptions=True)
            for link in self._links.values():
                link.close()
            await asyncio.sleep(0)  # let transports finish closing
            self._save()

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(STATE_SAVE_S)
            self._save()

    def _save(self) -> None:
        path = self.settings.state_file
        if path is None or not self._dirty:
            return
        self._dirty = False
        try:
            with self._lock:
                states = {k: DeviceState(v.fcnt, list(v.hours)) for k, v in self._states.items()}
            save_state(path, states)
        except OSError as exc:
            self._dirty = True
            self._log_limited(0, "state_file", f"cannot write modbus state file {path}: {exc}")

    # -- polling -------------------------------------------------------------------------

    async def _run_device(self, dev: _Device) -> None:
        loop = asyncio.get_running_loop()
        interval = dev.cfg.interval_s
        due = loop.time()
        stop = self._stop_event
        assert stop is not None
        # Not `while True`: on Python 3.11 asyncio.wait_for (in the link's read) can
        # swallow the task's cancellation when the answer arrives at the same time,
        # and the poll loop would outlive stop(); the stop event ends it regardless.
        while not stop.is_set():
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._poll(dev)
            due += interval
            now = loop.time()
            if due < now:  # overran: keep the phase, skip the missed slots
                due += interval * ((now - due) // interval + 1)

    async def _poll(self, dev: _Device) -> None:
        image: Image = {}
        first: Exchange | None = None
        last: Exchange | None = None
        try:
            for block in dev.reads:
                image.update(image_from_block(block, await self._read(dev, block)))
                last = dev.link.exchange            # this read's (see Link.read)
                first = first or last
        except Failure as failure:
            self._failed(dev, failure)
            return
        if first is None or last is None:     # a map without registers: nothing was asked
            self._answered(dev, image, self.clock(), 0.0)
        else:
            self._answered(dev, image, (first.sent_at + last.answered_at) / 2,
                           last.answered_mono - first.sent_mono)

    async def _read(self, dev: _Device, block: ReadBlock) -> list[int] | list[bool]:
        cfg = dev.cfg
        for attempt in range(cfg.retries + 1):
            try:
                return await dev.link.read(block, cfg.unit_id, cfg.timeout_s)
            except Failure as failure:
                with self._lock:
                    dev.failures[failure.reason] += 1
                    if failure.code is not None:
                        dev.exception_codes[failure.code] += 1
                if attempt == cfg.retries or failure.reason == CONNECT:
                    raise
        raise AssertionError("unreachable")

    def _failed(self, dev: _Device, failure: Failure) -> None:
        cfg = dev.cfg
        change: DeviceCondition | None = None
        with self._lock:
            dev.polls += 1
            dev.polls_failed += 1
            dev.consecutive += 1
            dev.last_error = str(failure)
            if dev.consecutive >= self.settings.offline_after and dev.condition != OFFLINE:
                dev.condition = OFFLINE
                dev.since = self.clock()
                change = DeviceCondition(cfg.device_id, OFFLINE, failure.reason, failure.detail,
                                         dev.since, dev.consecutive, cfg.bus, cfg.unit_id,
                                         cfg.map.kind)
        self._log_limited(cfg.device_id, failure.reason,
                          f"modbus {cfg.name} (bus {cfg.bus}, unit {cfg.unit_id}): poll failed: "
                          f"{failure}")
        if change is not None:
            log.warning("modbus %s (bus %s, unit %d): offline after %d failed polls (%s)",
                        cfg.name, cfg.bus, cfg.unit_id, dev.consecutive, failure.reason)
            self._emit_condition(change)

    def _answered(self, dev: _Device, image: Image, at: float, round_trip_s: float) -> None:
        """Hand on an answered poll: ``at`` halfway between its first request and its
        last answer on the poller's clock, ``round_trip_s`` between them (monotonic)."""
        cfg = dev.cfg
        rmap = cfg.map
        now = self.clock()
        change: DeviceCondition | None = None
        with self._lock:
            previous = dev.condition
            dev.polls += 1
            dev.consecutive = 0
            dev.last_ok_at = now
            if dev.condition != ONLINE:
                if dev.condition == OFFLINE or self.report_first_online:
                    change = DeviceCondition(cfg.device_id, ONLINE, None, None, now, 0, cfg.bus,
                                             cfg.unit_id, rmap.kind)
                dev.condition = ONLINE
                dev.since = now
        if change is not None:
            if previous == OFFLINE:
                log.warning("modbus %s (bus %s, unit %d): answering again", cfg.name, cfg.bus,
                            cfg.unit_id)
            else:
                log.info("modbus %s (bus %s, unit %d): answering", cfg.name, cfg.bus,
                         cfg.unit_id)
            self._emit_condition(change)
        values, problems = map_values(rmap, image)
        receiver: dict[str, Any] = {"source": SOURCE, "bus": cfg.bus, "unit_id": cfg.unit_id,
                                    "round_trip_ms": round(round_trip_s * 1000.0, 1)}
        if rmap.clock is not None:
            meter_at = device_time(rmap, image)
            if meter_at is None:
                with self._lock:
                    dev.failures[VALUE_RANGE] += 1
                self._log_limited(cfg.device_id, VALUE_RANGE,
                                  f"modbus {cfg.name}: its [{CLOCK}] holds no usable time; "
                                  "the poll is stamped by the gateway")
            else:
                at = meter_at
                receiver[CLOCK] = "device"
        if rmap.profile_from is not None and rmap.profile_field is not None:
            total = values.get(rmap.profile_from)
            if isinstance(total, int):
                with self._lock:
                    dev.state.hours = update_hours(dev.state.hours, int(at // 3600), total,
                                                   rmap.profile_slots + 1, at, dev.last_total)
                    dev.last_total = (at, total)
                    hours = list(dev.state.hours)
                profile, end_hour = hourly_profile(hours, total, rmap.profile_slots)
                values[rmap.profile_field] = profile
                values[rmap.profile_field + "_end_h"] = end_hour % 256
        try:
            values = kinds.unpack(dev.kind, kinds.pack(dev.kind, values))
        except FrameError as exc:
            problems.append(f"{exc.reason} {exc.detail or ''}".strip())
            values = {}
        if problems:
            with self._lock:
                dev.failures[VALUE_RANGE] += len(problems)
            self._log_limited(cfg.device_id, VALUE_RANGE,
                              f"modbus {cfg.name}: values the kind {rmap.kind} cannot carry: "
                              f"{', '.join(problems)}")
        if not values:
            return
        with self._lock:
            if dev.state.fcnt >= pframe.MAX_FCNT:
                dev.failures[FCNT_EXHAUSTED] += 1
                exhausted = True
            else:
                exhausted = False
                dev.state.fcnt += 1
                dev.readings += 1
                self._dirty = True
            fcnt = dev.state.fcnt
        if exhausted:
            self._log_limited(cfg.device_id, FCNT_EXHAUSTED,
                              f"modbus {cfg.name}: frame counter exhausted; reset it")
            return
        reading = ModbusReading(
            frame={"kind": rmap.kind, "kind_id": rmap.kind_id, "device_id": cfg.device_id,
                   "fcnt": fcnt, "tag_len": 0, "values": values},
            receiver=receiver, received_at=at, at=time.monotonic())
        try:
            self.on_reading(reading)
        except Exception:
            self.sink_errors += 1
            log.exception("modbus %s: the reading callback failed", cfg.name)

    def _emit_condition(self, change: DeviceCondition) -> None:
        if self.on_condition is None:
            return
        try:
            self.on_condition(change)
        except Exception:
            self.sink_errors += 1
            log.exception("modbus: the condition callback failed")

    def _log_limited(self, device_id: int, reason: str, text: str) -> None:
        now = time.monotonic()
        key = (device_id, reason)
        last = self._logged.get(key)
        if last is not None and now - last < self.settings.log_interval_s:
            self._suppressed += 1
            return
        self._logged[key] = now
        log.warning("%s", clean(text, limit=400))

    # -- status --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for the status topic and ``knute gateway status``.

        ``failures`` counts failed request attempts by reason (summed over the
        devices), ``devices`` has one entry per device (by 8-hex-digit name)
        with its condition (``unknown`` before the first poll, ``online``,
        ``offline``), counters and last error.
        """
        with self._lock:
            devices = {dev.cfg.name: dev.snapshot() for dev in self._devices}
        failures: dict[str, int] = defaultdict(int)
        codes: dict[str, int] = defaultdict(int)
        for entry in devices.values():
            for reason, n in entry["failures"].items():
                failures[reason] += n
            for code, n in entry["exception_codes"].items():
                codes[code] += n
        return {
            "state": "running" if self._running else "stopped",
            "devices_total": len(devices),
            "online": sum(1 for d in devices.values() if d["condition"] == ONLINE),
            "offline": sorted(n for n, d in devices.items() if d["condition"] == OFFLINE),
            "polls": sum(d["polls"] for d in devices.values()),
            "readings": sum(d["readings"] for d in devices.values()),
            "failures": dict(failures),
            "exception_codes": dict(codes),
            "log_suppressed": self._suppressed,
            "sink_errors": self.sink_errors,
            "links": {key: {"bus": link.bus.name, "kind": link.bus.kind,
                            "target": link.bus.target, "open": link.is_open,
                            "connects": link.connects}
                      for key, link in self._links.items()},
            "devices": devices,
        }
