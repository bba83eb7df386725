"""``knute gateway run``: the thin I/O shell around the pure pipeline.

Threads:
- one per source (serial reader, UDP listener) putting ``Reception`` objects
  into a bounded ingest queue; the Modbus poller (one asyncio thread for every
  polled device) puts its ``ModbusReading`` objects into the same queue and
  its device conditions into a queue of their own;
- the ingest loop (the main thread): pipeline decisions, dedup window, spool
  commits through ``spool.AcceptBatcher`` (50 ms or 256 frames per
  transaction), registry display-cache updates, control requests;
- the forwarder's own threads (spool -> MQTT, QoS 1);
- the status socket server (and one writer thread per `knute gateway tap` client)
  and, when configured, the Prometheus endpoint.

Signals: SIGTERM/SIGINT stop the sources, push everything already received
through the pipeline and into the spool, give the forwarder
``drain_timeout_s`` to deliver, then exit 0. Devices added or removed with
``knute devices`` take effect within a second without a restart or a signal
(``gateway.registry_watch``); SIGHUP and the status socket's ``reload`` re-read
the registry at once.

One gateway per spool: ``<spool>.lock`` is held (flock) while the daemon runs,
so a second instance on the same data exits with one line before it opens
anything. A status socket on which a gateway answers is never taken over.

Modbus device conditions and silent nodes (``gateway.silence``: ``silent``
after its missed send intervals, ``heard`` again, checked every second)
are spooled like readings (``gateway.conditions``);
rejected frames are logged with rate limits (``gateway.rejectlog``).

Why one module of ~690 lines: it is one class, the running gateway, and its
methods read and change the same state on the ingest loop's thread: what
``_open`` wires together (pipeline, spool, batcher, forwarder, sources, registry
watch), the sources of frames waiting for their commit and the devices seen
since the last registry flush, the timers and control requests of housekeeping,
and the order in which shutdown drains all of it. What is decided is already in
modules of its own (gateway.pipeline, spool, forwarder, registry_watch, silence,
conditions, rejectlog, downlink_service, peers, share_apply); what is left could
only be cut into parts of that one class (mixins sharing its attributes), which
would scatter the loop's order across files instead of showing it in one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from knute.gateway import message
from knute.gateway.conditions import ConditionOutbox
from knute.gateway.config import MODBUS_SOURCE, GatewayConfig
from knute.gateway.dbfile import DataLock
from knute.gateway.errors import ConfigError, KnuteError
from knute.gateway.model import Counters
from knute.gateway.pipeline import Pipeline, Ready, Reception, to_accepted
from knute.gateway.registry import Registry, Seen
from knute.gateway.registry_watch import RegistryWatch
from knute.gateway.rejectlog import RejectionLog
from knute.gateway.silence import SilenceWatch
from knute.gateway.simclock import SimulatedClock
from knute.gateway.status import StatusServer, Tap

if TYPE_CHECKING:
    from knute.gateway.modbus.poller import DeviceCondition, ModbusReading

log = logging.getLogger("knute.gateway")

QUEUE_LIMIT = 20000          # receptions waiting for the ingest loop
REGISTRY_FLUSH_S = 10.0      # display cache write interval
REGISTRY_POLL_S = 1.0        # how often the registry is checked for changes by knute devices
COMMIT_WINDOW_S = 0.05
COMMIT_MAX_FRAMES = 256
SHARE_APPLY_S = 0.5          # how often registry-share messages are applied
SHARE_QUEUE_LIMIT = 200_000  # share messages waiting for the ingest loop
PEERS_APPLY_S = 0.2          # how often counters learned from other gateways are applied
SILENCE_CHECK_S = 1.0        # how often devices are checked for being overdue (gateway.silence)


class _Control:
    """A request from the status thread that the ingest loop carries out."""

    def __init__(self, action: str, device_id: int | None = None) -> None:
        self.action = action
        self.device_id = device_id
        self.done = threading.Event()
        self.error: str | None = None


class Daemon:
    """The running gateway. ``run()`` blocks until SIGTERM/SIGINT or ``stop()``."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.counters = Counters()
        self.started_at = time.time()
        start = cfg.clock_start if cfg.clock_start is not None else self.started_at
        # clock_file: held at clock_start (or the daemon's start) until the file gives the epoch
        self.sim_clock = SimulatedClock(
            cfg.clock_speed, epoch=None if cfg.clock_file else (start, start),
            clock_file=cfg.clock_file, held_at=start)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._queue: queue.Queue[Reception | ModbusReading] = queue.Queue(QUEUE_LIMIT)
        self.conditions = ConditionOutbox(prefix=cfg.mqtt.prefix, gateway_id=cfg.gateway_id)
        self.silence = SilenceWatch(cfg.silence, self.started_at)
        self._last_silence_check = 0.0
        self._polled: frozenset[int] = frozenset(
            d.device_id for d in (cfg.modbus.devices if cfg.modbus is not None else ()))
        self._controls: queue.Queue[_Control] = queue.Queue()
        self._pending_sources: dict[tuple[int, int], list[str]] = {}
        self._seen: dict[int, Seen] = {}
        self._last_registry_flush = time.monotonic()
        self._last_registry_poll = time.monotonic()
        self.rejections = RejectionLog(log)
        # Packet-forwarder sources by name: told which (address, EUI) brought a verified
        # frame (first or merged copy), so they keep serving it during a flood
        # (UdpForwarderSource.vouch).
        self._vouchers: dict[str, Any] = {}
        self.sources: list[Any] = []
        self.registry: Registry | None = None
        self.registry_watch: RegistryWatch | None = None
        self.spool: Any = None
        self.forwarder: Any = None
        self.batcher: Any = None
        self.pipeline: Pipeline | None = None
        self.status_server: StatusServer | None = None
        self.tap = Tap()            # `knute gateway tap` clients
        self.metrics: Any = None
        self.data_lock: DataLock | None = None
        self.downlinks: Any = None      # gateway.downlink_service.DownlinkRuntime
        self.peers: Any = None       # gateway.peers.PeerListener with [mqtt] learn_counters
        self.inbox: Any = None
        self._last_peers_apply = time.monotonic()
        self._last_share_apply = time.monotonic()
        self.learned = 0             # replay counters raised by other gateways' readings
        self.share: Any = None       # gateway.registry_share state with a [share] key

    # -- wiring ---------------------------------------------------------------------------

    def _open(self) -> None:
        from knute.gateway.forwarder import Forwarder
        from knute.gateway.spool import AcceptBatcher, Spool

        cfg = self.cfg
        for path in (cfg.registry, cfg.spool):
            try:
                os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
            except OSError as exc:
                raise KnuteError(f"{cfg.path}: data directory {os.path.dirname(path)}: "
                                 f"{exc.strerror}") from None
        # First of all: a second gateway on this spool stops here, before it touches
        # the files, the ports or the status socket of the one already running.
        self.data_lock = DataLock(cfg.spool)
        self.data_lock.acquire()
        self._check_files()
        self.registry = Registry(cfg.registry)
        self.spool = Spool(cfg.spool, max_bytes=cfg.spool_max_bytes,
                           max_age_s=cfg.spool_max_age_s, fsync=cfg.spool_fsync,
                           max_message_bytes=cfg.mqtt.max_message_bytes)
        devices = self.registry.snapshot()
        self.pipeline = Pipeline(devices, self.spool.counters(), counters=self.counters,
                                 dedup_window_s=cfg.dedup_window_s,
                                 reset_below=cfg.counter_reset_below,
                                 max_receivers=cfg.max_receivers,
                                 epochs=self.spool.epochs())
        self.registry_watch = RegistryWatch(self.registry, self.pipeline)
        self.batcher = AcceptBatcher(self.spool, window_s=COMMIT_WINDOW_S,
                                     max_frames=COMMIT_MAX_FRAMES, on_commit=self._committed)
        self.forwarder = Forwarder(self.spool, cfg.mqtt,
                                   gateway_id=cfg.gateway_id,
                                   status_provider=self.mqtt_counters)
        if cfg.share_key is not None:
            from knute.gateway.registry_share import load_private_key
            from knute.gateway.share_apply import ShareState

            try:
                private = load_private_key(cfg.share_key)
            except KnuteError as exc:
                raise ConfigError(f"{cfg.path}: share.key: {exc}") from None
            self.share = ShareState(private, prefix=cfg.mqtt.prefix, gateway_id=cfg.gateway_id,
                                    queue_limit=SHARE_QUEUE_LIMIT)
        if cfg.mqtt.learn_counters or self.share is not None:
            from knute.gateway.peers import CounterInbox, PeerListener

            self.inbox = CounterInbox() if cfg.mqtt.learn_counters else None
            self.peers = PeerListener(
                cfg.mqtt, gateway_id=cfg.gateway_id, inbox=self.inbox,
                extra_topics=self.share.topics if self.share is not None else (),
                on_other=self.share.offer if self.share is not None else None)
        # Each kind of source is imported when the configuration has one (pyserial,
        # the Semtech protocol): a gateway loads only what it runs.
        if cfg.serial:
            from knute.gateway.sources.serial import SerialSource

        for scfg in cfg.serial:
            self.sources.append(SerialSource(scfg, self._sink, self.counters))
        if cfg.packet_forwarders:
            from knute.gateway.sources.udp_forwarder import UdpForwarderSource

        for ucfg in cfg.packet_forwarders:
            try:
                self.sources.append(UdpForwarderSource(ucfg, self._sink, self.counters))
                self._vouchers[ucfg.name] = self.sources[-1].vouch
            except OSError as exc:
                raise KnuteError(f"{cfg.path}: packet_forwarder {ucfg.name!r}: cannot listen "
                                 f"on {ucfg.host}:{ucfg.port}: {exc.strerror}") from None
        if cfg.modbus is not None and cfg.modbus.devices:
            from knute.gateway.sources.modbus import ModbusSource

            # A poll is stamped when it is answered, so on a simulation's clock the
            # poller's hours (its hourly profile) are the simulated ones too.
            self.sources.append(ModbusSource(
                cfg.modbus, self._modbus_reading, on_condition=self._modbus_condition,
                last_fcnt=self.spool.counters(), name=MODBUS_SOURCE,
                clock=(time.time if cfg.clock_speed == 1.0
                       else lambda: self._simulated(time.time()))))
        if cfg.downlinks.enabled:
            from knute.gateway.downlink_service import DownlinkRuntime

            self.downlinks = DownlinkRuntime(cfg, self.sources, self.counters,
                                             lambda: self.pipeline.devices if self.pipeline
                                             else {})
            self.pipeline.next_keys = self.downlinks.next_keys()
            self.downlinks.watch(self.registry_watch, self.pipeline)
        try:
            self.status_server = StatusServer(cfg.status_socket, self._handle_request,
                                              self.tap)
        except OSError as exc:
            raise KnuteError(f"{cfg.path}: status.socket {cfg.status_socket}: "
                             f"{exc.strerror}") from None
        if cfg.metrics_port is not None:
            from knute.gateway.metrics import MetricsServer

            assert cfg.metrics_host is not None
            try:
                self.metrics = MetricsServer(cfg.metrics_host, cfg.metrics_port, self.status)
            except OSError as exc:
                raise KnuteError(f"{cfg.path}: metrics.listen {cfg.metrics_host}:"
                                 f"{cfg.metrics_port}: {exc.strerror}") from None
        log.info("gateway %s: %d devices, %d sources, spool %s (%d rows waiting), mqtt %s",
                 cfg.gateway_id, len(devices), len(self.sources), cfg.spool,
                 self.spool.stats()["depth"],
                 ", ".join(f"{h}:{p}" for h, p in cfg.mqtt.broker_list))

    def _check_files(self) -> None:
        """ConfigError (exit 78, no restart) for files no restart can fix.

        A CA that is not PEM would otherwise fail every reconnect; a registry or
        spool path naming a file that is not that knute database (the
        configuration file itself, the other database) must never be replaced.
        """
        from knute.gateway import registry, spool
        from knute.gateway.config_checks import tls_problems
        from knute.gateway.dbfile import (
            REGISTRY_APP_ID,
            SPOOL_APP_ID,
            NotKnuteFile,
            check_identity,
        )

        cfg = self.cfg
        problems = tls_problems(cfg)
        if problems:
            raise ConfigError(problems[0])
        try:
            check_identity(cfg.registry, "registry", REGISTRY_APP_ID, registry.SCHEMA_VERSION)
            check_identity(cfg.spool, "spool", SPOOL_APP_ID, spool.SCHEMA_VERSION)
        except NotKnuteFile as exc:
            raise ConfigError(f"{cfg.path}: {exc}") from None

    def _sink(self, rx: Reception) -> None:
        if self.cfg.clock_speed != 1.0:
            rx = dataclasses.replace(rx, received_at=self._simulated(rx.received_at))
        try:
            self._queue.put(rx, timeout=1.0)
        except queue.Full:
            self.counters.reject("overload", rx.source)

    def _simulated(self, t: float) -> float:
        """Wall-clock ``t`` on ``[gateway] clock_speed``'s clock (simulations only)."""
        return self.sim_clock.at(t)

    def _modbus_reading(self, reading: ModbusReading) -> None:
        # On the poller's thread: must not block.
        self.counters.inc("received", MODBUS_SOURCE)
        try:
            self._queue.put_nowait(reading)
        except queue.Full:
            self.counters.reject("overload", MODBUS_SOURCE)

    def _modbus_condition(self, cond: DeviceCondition) -> None:
        # On the poller's thread; the ingest loop spools it.
        self.conditions.put(cond)

    # -- status ---------------------------------------------------------------------------

    def mqtt_counters(self) -> dict[str, Any]:
        """Counters for the retained MQTT status message."""
        snap = self.counters.snapshot()
        totals = snap["totals"]
        return {"received": totals.get("received", 0), "accepted": totals.get("accepted", 0),
                "rejected": totals.get("rejected", 0), "merged": totals.get("merged", 0),
                "rejected_by_reason": snap["rejected"]}

    def status(self) -> dict[str, Any]:
        """The full live status (``knute gateway status --json``)."""
        snap = self.counters.snapshot()
        sources: dict[str, Any] = {}
        for src in self.sources:
            entry: dict[str, Any] = {"received": 0, "accepted": 0, "rejected": 0, "merged": 0,
                                     "rejected_by_reason": {}}
            entry.update(snap["sources"].get(src.name, {}))
            entry.update(src.stats())
            sources[src.name] = entry
        spool = self.spool.stats() if self.spool is not None else {}
        fwd: dict[str, Any] = {}
        if self.forwarder is not None:
            fwd = {"state": self.forwarder.state, "broker": self.forwarder.broker,
                   "brokers": self.forwarder.brokers_status(), **self.forwarder.stats()}
        totals = {"received": 0, "accepted": 0, "rejected": 0, "merged": 0}
        totals.update(snap["totals"])
        totals["spooled"] = int(spool.get("accepted_total", 0))
        totals["evicted"] = int(spool.get("evicted_total", 0))
        totals["forwarded"] = int(fwd.get("forwarded_total", 0))
        pipeline = self.pipeline
        watch = self.registry_watch
        return {
            "gateway": self.cfg.gateway_id,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 1),
            "devices": len(pipeline.devices) if pipeline is not None else 0,
            "totals": totals,
            "rejected": snap["rejected"],
            "sources": sources,
            "ingest": {"queue": self._queue.qsize(),
                       "dedup_waiting": pipeline.waiting() if pipeline is not None else 0,
                       "commit_waiting": self.batcher.waiting() if self.batcher else 0},
            "spool": spool,
            "forwarder": fwd,
            "registry": {"path": self.cfg.registry,
                         "checks": watch.checks if watch is not None else 0,
                         "reloads": watch.reloads if watch is not None else 0,
                         "share": self.share.stats() if self.share is not None else None},
            "silence": self.silence.stats(),
            "downlinks": self.downlinks.stats() if self.downlinks is not None else None,
            "peers": ({**self.peers.stats(), "learned": self.learned}
                      if self.peers is not None else None),
        }

    def _handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd in ("reset-counter", "reload"):
            device = req.get("device")
            if cmd == "reset-counter" and not isinstance(device, int):
                return {"ok": False, "error": "reset-counter needs an integer device"}
            ctl = _Control(cmd, device if isinstance(device, int) else None)
            self._controls.put(ctl)
            if not ctl.done.wait(10.0):
                return {"ok": False, "error": "the ingest loop did not answer in 10 s"}
            return {"ok": ctl.error is None, "error": ctl.error}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # -- signals --------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
        else:
            self._stop.set()

    def stop(self) -> None:
        """Ask the daemon to drain and stop (as SIGTERM does)."""
        self._stop.set()

    # -- the ingest loop ------------------------------------------------------------------

    def run(self) -> int:
        """Open everything, serve until stopped, drain, close. Returns the exit status."""
        try:
            self._open()
        except BaseException:
            self._close()
            raise
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self._on_signal)
        assert self.status_server is not None
        self.status_server.start()
        self.forwarder.start()
        if self.downlinks is not None:
            self.downlinks.start()
        if self.peers is not None:
            self.peers.start()
        for src in self.sources:
            src.start()
        log.info("gateway %s running", self.cfg.gateway_id)
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        while not self._stop.is_set():
            now = time.monotonic()
            deadline = pipeline.next_deadline()
            timeout = COMMIT_WINDOW_S
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - now))
            try:
                rx = self._queue.get(timeout=max(timeout, 0.001))
            except queue.Empty:
                pass
            else:
                self._submit(rx)
                for _ in range(1024):
                    try:
                        rx = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    self._submit(rx)
            self._release(pipeline.due(time.monotonic()))
            self._spool_conditions()
            self._spool_downlink_status()
            self._commit(force=False)
            self._housekeeping()

    def _submit(self, item: Reception | ModbusReading) -> None:
        assert self.pipeline is not None
        if isinstance(item, Reception):
            verdict = self.pipeline.submit(item)
            source, what = item.source, "frame"
            if verdict.status != "rejected" and source in self._vouchers:
                self._vouchers[source](item.receiver)
        else:
            verdict = self.pipeline.submit_reading(item.frame, item.receiver, item.received_at,
                                                   item.at, source=MODBUS_SOURCE)
            source, what = MODBUS_SOURCE, "reading"
        if verdict.status == "rejected":
            self.rejections.rejected(source, verdict, what, time.monotonic())
        raw = item.frame if isinstance(item, Reception) else b""
        if raw and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: frame %s: %s%s", source, raw.hex(), verdict.status,
                      f" {verdict.reason}" if verdict.reason else "")
        if verdict.status == "rejected" and self.tap.active:
            self.tap.publish({
                "event": "rejected", "source": source, "hex": raw.hex() if raw else None,
                "reason": verdict.reason, "detail": verdict.detail, "fcnt": verdict.fcnt,
                "device": (f"{verdict.device_id:08x}" if verdict.device_id is not None
                           else None), "received_at": message.iso_utc(item.received_at)})

    def _spool_conditions(self, final: bool = False) -> None:
        """Hand new (and, after a failed commit, unaccepted) condition changes to the batcher."""
        assert self.pipeline is not None
        self.conditions.collect(self.pipeline.devices)
        self.conditions.hand_over(self.batcher.add, self._commit_failed, final=final)

    def _check_silence(self) -> None:
        """Queue a ``silent`` condition for each device that became overdue."""
        assert self.pipeline is not None
        devices = [(d.device_id, d.kind, d.last_seen, d.interval_s)
                   for d in self.pipeline.devices.values()
                   if d.device_id not in self._polled]    # Modbus: offline/online instead
        for cond in self.silence.check(devices, time.time()):
            log.warning("device %08x (%s) is silent: %s", cond.device_id, cond.kind,
                        cond.to_dict()["detail"])
            self.conditions.put(cond)

    def _spool_downlink_status(self, final: bool = False) -> None:
        """Hand the downlink commands' progress messages to the batcher."""
        if self.downlinks is not None:
            self.downlinks.outbox.hand_over(self.batcher.add, self._commit_failed, final=final)
    def _release(self, ready: Sequence[Ready]) -> None:
        for item in ready:
            if self.downlinks is not None:
                self.downlinks.heard(item)
            accepted = to_accepted(item, prefix=self.cfg.mqtt.prefix,
                                   gateway_id=self.cfg.gateway_id)
            self._pending_sources[(accepted.device_id, accepted.fcnt)] = [
                r.source for r in item.receptions]
            self._seen[accepted.device_id] = Seen(
                accepted.device_id, accepted.fcnt, accepted.received_at, item.battery,
                tuple(item.alarms))
            back = self.silence.heard(accepted.device_id, accepted.kind, accepted.received_at)
            if back is not None:
                log.info("device %08x heard again after being silent", back.device_id)
                self.conditions.put(back)
            if self.tap.active:
                self.tap.publish({
                    "event": "accepted", "source": item.receptions[0].source,
                    "hex": item.raw.hex() if item.receptions[0].frame else None,
                    "reading": json.loads(accepted.payload)})
            try:
                self.batcher.add(accepted)
            except Exception as exc:
                self._commit_failed(exc)

    def _commit(self, force: bool) -> None:
        try:
            if force:
                self.batcher.flush()
            else:
                self.batcher.poll()
        except Exception as exc:
            self._commit_failed(exc)

    def _commit_failed(self, exc: Exception) -> None:
        # The batch was not accepted; memory must not run ahead of the spool.
        from knute.gateway.spool import SpoolError

        if not isinstance(exc, SpoolError | sqlite3.Error | OSError):
            raise exc  # a programming error: let the supervisor (systemd) see it
        log.error("spool commit failed, frames of this batch not accepted: %s", exc)
        self.counters.inc("spool_errors")
        self._pending_sources.clear()
        # Condition changes are not sent again by anybody: keep them for a later commit.
        self.conditions.requeue()
        if self.downlinks is not None:
            self.downlinks.outbox.requeue()
        assert self.pipeline is not None
        try:
            self.pipeline.load_counters(self.spool.counters())
        except Exception as again:  # keep running; the next commit retries
            log.error("cannot re-read replay counters: %s", again)

    def _committed(self, batch: Sequence[Any]) -> None:
        for item in batch:
            if self.conditions.committed(item):        # a condition message, not a reading
                continue
            if self.downlinks is not None and self.downlinks.outbox.committed(item):
                continue                                # a command's progress message
            sources = self._pending_sources.pop((item.device_id, item.fcnt), None) or []
            self.counters.inc("accepted")
            for name in dict.fromkeys(sources):
                self.counters.inc("accepted", name, total=False)
        self.forwarder.wake()

    def _housekeeping(self, final: bool = False) -> None:
        now = time.monotonic()
        self.rejections.flush(now)
        if not final and now - self._last_silence_check >= SILENCE_CHECK_S:
            self._last_silence_check = now
            self._check_silence()
        assert self.registry_watch is not None
        if (self.share is not None and not final
                and now - self._last_share_apply >= SHARE_APPLY_S):
            self._last_share_apply = now
            self._apply_share()
        if self.inbox is not None and (final or now - self._last_peers_apply >= PEERS_APPLY_S):
            self._last_peers_apply = now
            self._apply_learned()
        if not final and now - self._last_registry_poll >= REGISTRY_POLL_S:
            self._last_registry_poll = now
            self.registry_watch.poll()
        if self._reload.is_set():
            self._reload.clear()
            self.registry_watch.reload()
        while True:
            try:
                ctl = self._controls.get_nowait()
            except queue.Empty:
                break
            self._control(ctl)
        if self._seen and (final or now - self._last_registry_flush >= REGISTRY_FLUSH_S):
            self._last_registry_flush = now
            seen, self._seen = list(self._seen.values()), {}
            try:
                assert self.registry is not None
                self.registry.record_seen(seen)
            except Exception as exc:  # display cache only
                log.warning("registry display cache not updated: %s", exc)

    def _apply_learned(self) -> None:
        """Raise replay counters to what other gateways accepted (gateway.peers)."""
        assert self.pipeline is not None
        raised = self.pipeline.learn_counters(self.inbox.take())
        if not raised:
            return
        self.learned += len(raised)
        try:
            self.spool.learn_counters(raised)
        except Exception as exc:  # memory is ahead (stricter); the next reading retries
            log.warning("replay counters learned from other gateways not saved: %s", exc)

    def _apply_share(self) -> None:
        """Apply the shared registry's messages; publish our key fingerprints."""
        assert self.registry is not None and self.pipeline is not None
        assert self.registry_watch is not None
        try:
            if self.share.apply(self.registry):
                self.registry_watch.reload()
        except Exception as exc:  # the registry file: keep serving, try again
            log.error("registry share not applied: %s", exc)
        if self.peers is not None:
            self.peers.publish_retained(self.share.fingerprints(self.pipeline.devices))
        self.share.refresh()

    def _control(self, ctl: _Control) -> None:
        try:
            if ctl.action == "reload":
                assert self.registry_watch is not None
                self.registry_watch.reload()
            elif ctl.action == "reset-counter" and ctl.device_id is not None:
                # Release and commit what is waiting first (in the old epoch), so the
                # reset is not undone by it and no old frame lands in the new epoch.
                assert self.pipeline is not None
                self._release(self.pipeline.drain())
                self._commit(force=True)
                epoch = self.spool.reset_counter(ctl.device_id)
                self.pipeline.forget_counter(ctl.device_id, epoch)
                if self.registry is not None:
                    self.registry.clear_counter(ctl.device_id)
                log.warning("replay counter of device %08x reset by the operator; its "
                            "epoch is now %d", ctl.device_id, epoch)
        except Exception as exc:  # reported to the requester
            ctl.error = str(exc)
        finally:
            ctl.done.set()

    # -- shutdown -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        log.info("stopping: draining sources, pipeline and spool")
        for src in self.sources:
            try:
                src.stop()
            except Exception as exc:
                log.warning("%s: stop failed: %s", src.name, exc)
        while True:
            try:
                rx = self._queue.get_nowait()
            except queue.Empty:
                break
            self._submit(rx)
        if self.pipeline is not None:
            self._release(self.pipeline.drain())
        if self.batcher is not None:
            self._spool_conditions(final=True)
            self._commit(force=True)
        self._housekeeping(final=True)
        if self.downlinks is not None:
            self.downlinks.stop()
            self._spool_downlink_status(final=True)
            self._commit(force=True)
            self.downlinks = None
        self.rejections.close()
        if self.forwarder is not None:
            self.forwarder.stop(self.cfg.drain_timeout_s)
        if self.peers is not None:
            self.peers.stop()
        self._close()
        log.info("stopped: %s", json.dumps(self.counters.snapshot()["totals"], sort_keys=True))

    def _close(self) -> None:
        if self.status_server is not None:
            self.status_server.close()
            self.status_server = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        for src in self.sources:
            if getattr(src, "state", None) is not None and src.state.value != "stopped":
                with contextlib.suppress(Exception):
                    src.stop()
        if self.spool is not None:
            self.spool.close()
        if self.registry is not None:
            self.registry.close()
        if self.data_lock is not None:
            self.data_lock.release()
