"""The gateway's downlink worker: after each verified uplink, read its report and send
what is queued for the device in its receive window (docs/protocol.md 12.11).

The daemon hands every released uplink to ``heard`` (it never blocks the ingest
loop); one thread does the rest, in this order per uplink:

1. an uplink verified under a pending rotation's next key commits the rotation
   (``DownlinkStore.commit_rekey``) and queues ``rekey_done``;
2. the ``dl`` report moves commands to ``applied`` or ``rejected``, and sends
   again what the node did not report;
3. the ``clock`` flag queues a ``time`` command (answered with the end of this
   uplink), the ``alarm`` flag an ``ack`` when ``downlinks.auto_ack`` is on;
4. if commands are due, ``downlink_plan.choose`` picks the window, the uplink is
   claimed and a counter taken in one committed transaction (so one gateway of
   several answers, and no counter is used twice), the downlink is sealed under
   the device's current key and handed to the source the uplink came from.

Each state change of a command is passed to ``on_status`` (the daemon spools it
for MQTT: gateway.downlink_status). Transmitters are the sources:
``transmit_downlink(frame, window, up, done)`` returns None when the downlink
went out or is on its way, or a reason; ``done(error)`` is called later when the
path answers asynchronously (a packet forwarder's TX_ACK). Counters:
``downlinks_sent``, ``downlinks_applied``, ``downlinks_rejected``,
``downlinks_expired`` and ``downlink_errors`` by reason.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from knute.gateway.adr_history import FALLBACK_MISSED, AdrHistory
from knute.gateway.config import GatewayConfig
from knute.gateway.downlink_commands import (
    APPLIED,
    CANCELLED,
    EXPIRED,
    REJECTED,
    SENT,
    Command,
)
from knute.gateway.downlink_plan import (
    PATH_BRIDGE,
    PATH_PKTFWD,
    PATH_SERIAL,
    DutyLedger,
    Uplink,
    Window,
    choose,
)
from knute.gateway.downlink_status import StatusOutbox
from knute.gateway.downlinks import DownlinkLimits, DownlinkStore
from knute.gateway.model import Counters, Device
from knute.gateway.pipeline import Ready
from knute.protocol import downlink as dls
from knute.protocol.errors import FrameError

if TYPE_CHECKING:
    from knute.gateway.downlink_city import DownlinkCity

log = logging.getLogger("knute.downlinks")

EXPIRE_EVERY_S = 30.0
ADR_SF, ADR_POWER = 11, 12  # config codes of radio.sf and radio.power_dbm (protocol.md 12)
ADR_REF = "adr-"            # ref prefix of the commands the data-rate rule queues
SPOOL_WAIT_S = 0.3          # a downlink waits at most this long for its states to be spooled
QUEUE_LIMIT = 4096

Done = Callable[[str | None], None]


class Transmitter(Protocol):
    """A source that can send a downlink back the way an uplink came."""

    def transmit_downlink(self, frame: bytes, window: Window, up: Uplink,
                          done: Done) -> str | None:
        """Send ``frame`` in ``window``; None if it went (or is going), else why not."""


StatusFn = Callable[[Command, str], None]


class DownlinkService:
    """One worker thread between the ingest loop and the downlink store."""

    def __init__(self, store: DownlinkStore, transmitters: Mapping[str, Transmitter],
                 counters: Counters, on_status: StatusFn, *, auto_ack: bool = False,
                 kinds_of: Callable[[int], str | None] | None = None,
                 adr: AdrHistory | None = None, city: DownlinkCity | None = None) -> None:
        self.store = store
        self.transmitters = dict(transmitters)
        self.counters = counters
        self.on_status = on_status
        self.auto_ack = auto_ack
        self._kinds_of = kinds_of or (lambda _d: None)
        self._queue: queue.Queue[Uplink | None] = queue.Queue(QUEUE_LIMIT)
        self._ledgers: dict[str, DutyLedger] = {}
        self._thread: threading.Thread | None = None
        self._last_expire = 0.0
        self._stopping = False
        self._last_error: dict[str, float] = {}
        self._kinds: dict[int, str] = {}
        self.adr = adr
        self.city = city
        if city is not None and adr is not None:
            city.on_claim = adr.raise_snr
        # Before a downlink leaves: wait (s) until its states are spooled (DownlinkRuntime).
        self.spooled: Callable[[float], bool] = lambda _timeout: True

    # -- the ingest side -----------------------------------------------------------

    def heard(self, up: Uplink) -> None:
        """Queue one verified uplink for the worker (never blocks)."""
        self._kinds[up.device_id] = up.kind
        try:
            self._queue.put_nowait(up)
        except queue.Full:
            self.counters.inc("downlink_overload")

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="downlinks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the uplinks already queued, then stop."""
        if self._thread is None:
            return
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            try:
                up = self._queue.get(timeout=1.0)
            except queue.Empty:
                up = None
                if self._stopping:
                    return
            if up is None and self._stopping:
                return
            if up is not None:
                try:
                    self.handle(up)
                except Exception as exc:  # a bad uplink or a database hiccup never stops it
                    self.counters.inc("downlink_errors")
                    self._error(f"device {up.device_id:08x} fcnt {up.fcnt}: {exc}")
            try:
                self._expire()
            except Exception as exc:
                self._error(f"expiry: {exc}")

    def _error(self, text: str) -> None:
        """Log a failure, once per distinct text a minute (a broken database repeats)."""
        now = time.monotonic()
        if self._last_error.get(text, -1e9) + 60.0 <= now:
            self._last_error[text] = now
            log.error("downlinks: %s", text)

    # -- the work ---------------------------------------------------------------------

    def _status(self, cmds: list[Command]) -> None:
        for cmd in cmds:
            name = {APPLIED: "downlinks_applied", REJECTED: "downlinks_rejected",
                    EXPIRED: "downlinks_expired"}.get(cmd.state)
            if name is not None:
                self.counters.inc(name)
            kind = self._kinds.get(cmd.device_id) or self._kinds_of(cmd.device_id) or "unknown"
            try:
                self.on_status(cmd, kind)
            except Exception as exc:
                log.error("downlinks: status of command %d not published: %s", cmd.cmd_id, exc)

    def _expire(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_expire < EXPIRE_EVERY_S:
            return
        self._last_expire = now
        self._status(self.store.expire())

    def handle(self, up: Uplink) -> None:
        """Everything one uplink means for the device's downlinks (the worker's step)."""
        store = self.store
        dev = up.device_id
        flags, entries = up.report
        if up.under_next_key:
            # Every gateway that hears the node under the next key commits it, whether
            # or not it answers the uplink; with peers the commit is told to them.
            origin = store.rekey_origin(dev)
            finish = store.commit_rekey(dev)
            if finish is not None:
                log.info("device %08x: key rotation committed (key %d)", dev,
                         finish.args["key_no"])
                rekeyed = [c for c in store.commands(dev) if c.op == "rekey"][-1:]
                if origin not in (None, "", store.gateway_id):
                    rekeyed = []            # the origin publishes the rekey's `applied`
                self._status([*rekeyed, finish])
                if self.city is not None and self.city.rekey is not None:
                    self.city.rekey.poke()
        if self.city is not None and not self._lead(up):
            store.report(dev, up.fcnt, entries)      # what the node says, without a word
            if self._adr_applies(up):
                self._adr(up, lead=False)            # the history, without a decision
            self.counters.inc("downlink_claimed_elsewhere", up.source)
            return
        reported = store.report(dev, up.fcnt, entries).changed
        self._status(reported)
        if self.city is not None:
            self.city.announce_closed(dev, up.fcnt, reported)
        open_ops = {c.op for c in store.commands(dev, open_only=True)}
        if flags & dls.FLAG_CLOCK and "time" not in open_ops:
            cmd, _ = store.queue(dev, "time")
            self._status([cmd])
        if flags & dls.FLAG_ALARM and self.auto_ack and "ack" not in open_ops:
            cmd, _ = store.queue(dev, "ack", {"bits": up.alarm_bits()})
            self._status([cmd])
        if self._adr_applies(up):
            self._adr(up, lead=True)
        due = store.due(dev)
        if not due:
            return
        sender = self.transmitters.get(up.source)
        if sender is None:
            self.counters.inc("downlink_errors", up.source)
            log.warning("device %08x: %d commands waiting, but source %s cannot send "
                        "downlinks", dev, len(due), up.source)
            return
        due = self._sealable(dev, due)
        if not due:
            return
        ledger = self._ledgers.setdefault(_transmitter_id(up), DutyLedger())
        plan = choose(up, [(c.cmd_id, c.op, c.args) for c in due], ledger, time.time())
        if plan is None:
            self.counters.inc("downlink_no_window", up.source)
            log.info("device %08x: no receive window after fcnt %d fits the downlink "
                     "(size or duty cycle); it waits for the next uplink", dev, up.fcnt)
            return
        key = store.device_key(dev)
        if key is None:
            return
        dcnt = store.take_counter(dev, after_fcnt=up.fcnt, epoch=up.epoch)
        if dcnt is None:
            self.counters.inc("downlink_claimed_elsewhere", up.source)
            return
        try:
            frame = dls.encode(dev, dcnt, list(plan.commands), key)
        except (FrameError, ValueError) as exc:
            self.counters.inc("downlink_errors", up.source)
            log.error("device %08x: cannot seal downlink: %s", dev, exc)
            return
        sent = store.mark_sent(dev, plan.cmd_ids, dcnt, up.fcnt)
        if self.city is not None:
            self.city.announce(dev, up.fcnt, dcnt, sent)

        def done(error: str | None, ids: tuple[int, ...] = plan.cmd_ids) -> None:
            if error is None:
                return
            self.counters.inc("downlink_errors", up.source)
            self.counters.reject(f"tx_{error.lower()}", up.source)
            log.warning("device %08x: downlink %d refused by %s: %s; sent again after "
                        "the next uplink", dev, dcnt, up.source, error)
            self._status(store.unsend(dev, ids))

        self._status([c for c in sent if c.state == SENT])
        if not self.spooled(SPOOL_WAIT_S):
            log.warning("device %08x: downlink %d leaves before its commands' states are "
                        "spooled", dev, dcnt)
        error = sender.transmit_downlink(frame, plan.window, up, done)
        if error is not None:
            done(error)
            return
        if plan.window.freq_hz:
            ledger.spend(plan.window.freq_hz, plan.window.airtime_ms, plan.window.at_s)
        self.counters.inc("downlinks_sent")
        self.counters.inc("downlinks_sent", up.source, total=False)
        log.info("device %08x: downlink %d (%d bytes, commands %s) in %s after fcnt %d",
                 dev, dcnt, len(frame), ",".join(map(str, plan.cmd_ids)), plan.window.name,
                 up.fcnt)

    def _sealable(self, dev: int, due: list[Command]) -> list[Command]:
        """The due commands with what sealing needs: a ``rekey`` without its key (several
        gateways keep only the number; a peer's adopted copy) takes the pending next key
        of that number, and is left out when this gateway holds none."""
        out = []
        for cmd in due:
            if cmd.op == "rekey" and "key" not in cmd.args:
                key = self.store.rekey_key(dev, int(cmd.args.get("key_no", -1)))
                if key is None:
                    continue
                cmd = replace(cmd, args={**cmd.args, "key": key.hex()})
            out.append(cmd)
        return out

    def _lead(self, up: Uplink) -> bool:
        """Several gateways: whether this one answers ``up`` (``gateway.downlink_city``).
        An uplink that asks for nothing, reports nothing and finds no command open is
        answered by nobody, so it needs no claim, unless the data-rate rule is on: then
        every LoRa uplink is claimed, so that the gateways learn each other's SNR of it
        and one of them, the winner, decides. Commands count as due only when the
        source that heard the uplink can send a downlink."""
        assert self.city is not None
        flags, entries = up.report
        if not (flags or entries or self.store.commands(up.device_id, open_only=True)
                or self._adr_applies(up)):
            return True
        due = bool(self.store.due(up.device_id)) and up.source in self.transmitters
        return self.city.elect(up.device_id, up.fcnt, up.snr_db, due, up.heard_s)

    def _adr_applies(self, up: Uplink) -> bool:
        """Whether the data-rate rule looks at ``up``: on, and a LoRa uplink with its SF."""
        return self.adr is not None and up.path != PATH_SERIAL and up.sf is not None

    def _adr(self, up: Uplink, *, lead: bool) -> None:
        """Record the uplink's best SNR of all receivers in the device's history and, when
        this gateway answers the uplink (``lead``), queue the data-rate rule's radio
        settings for the node when they change."""
        assert self.adr is not None
        dev = up.device_id
        mine = [c for c in self.store.commands(dev) if c.ref and c.ref.startswith(ADR_REF)]
        latest = max(mine, key=_adr_order) if mine else None
        if latest is not None:  # the latest change, made here or adopted from its maker
            assert latest.ref is not None
            self.adr.follow(dev, latest.ref, _adr_setting(latest, ADR_POWER),
                            sf=_adr_setting(latest, ADR_SF),
                            void=latest.state in (REJECTED, EXPIRED, CANCELLED))
        for old in mine:            # superseded by a later change: never sent again
            if old.open and old is not latest:
                self._status([self.store.cancel(dev, old.cmd_id)])
        still_open = [latest] if latest is not None and latest.open else []
        best = up.snr_db if self.city is None else self.city.best_snr(dev, up.fcnt, up.snr_db)
        ref = f"{ADR_REF}{up.fcnt}-{time.time_ns()}"
        decision = self.adr.observe(dev, up.fcnt, best, up.sf, epoch=up.epoch, at=up.heard_s,
                                    decide_as=ref if lead else None,
                                    change_open=bool(still_open))
        if decision is None:
            return
        for old in still_open:      # a fallback replaces the change the node was lost after
            self._status([self.store.cancel(dev, old.cmd_id)])
        values = {str(ADR_SF): decision.sf, str(ADR_POWER): decision.power_dbm}
        try:
            cmd, _ = self.store.queue(dev, "config", {"values": values}, ref=ref)
        except Exception:
            self.adr.follow(dev, ref, None, void=True)      # the node keeps its power
            raise
        self.counters.inc("adr_fallbacks" if decision.fallback else "adr_changes")
        if decision.fallback:
            log.warning("device %08x: ADR fallback: no receiver heard it for %d send "
                        "intervals after the last change; back to SF%d, %d dBm", dev,
                        FALLBACK_MISSED + 1, decision.sf, decision.power_dbm)
        log.info("device %08x: ADR margin %.1f dB (%d steps, best SNR %.1f dB of %s): "
                 "SF%d -> SF%d, %d dBm", dev, decision.margin_db, decision.steps,
                 best or 0.0, "all gateways" if self.city is not None else "all receivers",
                 up.sf or 0, decision.sf, decision.power_dbm)
        self._status([cmd])

    def stats(self) -> dict[str, Any]:
        """The worker's queue depth, for the status report."""
        return {"waiting": self._queue.qsize()}


def uplink_from(ready: Ready) -> Uplink:
    """The downlink side's view of a released frame: how it was heard and when it ended.

    The end of the uplink is the packet forwarder's ``time`` ("RX finished", UTC)
    when the concentrator has GPS time, else the moment the gateway received it
    (the end of the serial record, or the datagram's arrival).
    """
    rx = ready.receptions[0]
    receiver = dict(rx.receiver)
    end_s = ready.received_at
    if "gateway_eui" in receiver:
        path = PATH_PKTFWD
        stamp = receiver.get("time")
        if isinstance(stamp, str):
            with contextlib.suppress(ValueError):
                end_s = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    elif rx.source_type == "radio":
        path = PATH_BRIDGE
    else:
        path = PATH_SERIAL
    decoded = ready.decoded
    snrs = [float(r.receiver["snr_db"]) for r in ready.receptions
            if isinstance(r.receiver.get("snr_db"), int | float)]
    return Uplink(device_id=ready.device.device_id, kind=decoded["kind"], fcnt=decoded["fcnt"],
                  values=decoded["values"], end_s=end_s, source=rx.source, path=path,
                  receiver=receiver, under_next_key=ready.under_next_key,
                  heard_s=ready.received_at, epoch=ready.epoch,
                  snr_db=max(snrs) if snrs else None)


def _adr_order(cmd: Command) -> tuple[int, int]:
    """The order of the rule's changes: the time in their ref (``adr-<fcnt>-<ns>``), the
    same at every gateway, then the command id."""
    try:
        made = int(str(cmd.ref).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        made = 0
    return made, cmd.cmd_id


def _adr_setting(cmd: Command, code: int) -> int | None:
    """The SF or transmit power (config ``code``) a change of the rule sets, or None."""
    values = cmd.args.get("values") if isinstance(cmd.args, dict) else None
    value = values.get(str(code)) if isinstance(values, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _transmitter_id(up: Uplink) -> str:
    """The transmitter whose duty cycle a downlink after ``up`` spends."""
    eui = up.receiver.get("gateway_eui")
    return f"{up.source}/{eui}" if eui else up.source


class DownlinkRuntime:
    """Everything downlink the daemon runs, behind the few calls it makes:
    ``heard`` per released frame, ``refresh`` after a registry reload, ``rows`` to
    spool each loop, ``start``/``stop`` and ``stats``."""

    def __init__(self, cfg: GatewayConfig, sources: list[Any], counters: Counters,
                 devices: Callable[[], Mapping[int, Device]]) -> None:
        dl = cfg.downlinks
        self.store = DownlinkStore(cfg.registry, DownlinkLimits(dl.max_queued, dl.expiry_s,
                                                               dl.max_sends),
                                   (dl.gateway_index, dl.gateways), gateway_id=cfg.gateway_id,
                                   peers=rekey_peers(cfg))
        self._refresh: Callable[[], None] = lambda: None
        self.outbox = StatusOutbox(cfg.mqtt.prefix, cfg.gateway_id)
        self.city: DownlinkCity | None = None
        if dl.gateways > 1:
            from knute.gateway.downlink_city import DownlinkCity

            self.city = DownlinkCity(cfg.mqtt, self.store, gateway_id=cfg.gateway_id,
                                     index=dl.gateway_index, gather_s=dl.gather_s,
                                     client_id=cfg.mqtt.client_id or f"knute-{cfg.gateway_id}",
                                     count=counters.inc, gateways=dl.gateways)
        self.adr: AdrHistory | None = None
        if dl.adr:
            self.adr = AdrHistory(cfg.registry, installation_margin_db=dl.adr_margin_db,
                                  history=dl.adr_history, hysteresis_db=dl.adr_hysteresis_db,
                                  max_steps=dl.adr_max_steps)
        self._devices = devices
        self.publish = dl.status_topics
        transmitters = {s.name: s for s in sources if hasattr(s, "transmit_downlink")}
        self.service = DownlinkService(self.store, transmitters, counters, self._status,
                                       auto_ack=dl.auto_ack, kinds_of=self._kind_of,
                                       adr=self.adr, city=self.city)
        self.service.spooled = self.outbox.wait_spooled
        if self.city is not None and self.store.peers:
            self._rekey_city(cfg)
        self.listener: Any = None
        if dl.commands_from_mqtt:
            from knute.gateway.downlink_mqtt import CommandListener

            self.listener = CommandListener(
                cfg.mqtt, self.store, self._kind_of, self._status, self._refused,
                gateway_id=cfg.gateway_id,
                client_id=cfg.mqtt.client_id or f"knute-{cfg.gateway_id}")

    def _rekey_city(self, cfg: GatewayConfig) -> None:
        """Key rotations between the gateways of ``[share.peers]`` (gateway.rekey_city)."""
        from knute.gateway.registry_share import load_private_key, parse_public
        from knute.gateway.rekey_city import RekeyCity

        assert self.city is not None and cfg.share_key is not None
        city = self.city
        city.rekey = RekeyCity(
            self.store, prefix=cfg.mqtt.prefix, gateway_id=cfg.gateway_id,
            private=load_private_key(cfg.share_key),
            peers={g: parse_public(pub) for g, pub in cfg.share_peers},
            publish=city.publish_retained, on_status=self.service._status,
            on_keys=lambda: self._refresh())

    def _kind_of(self, device_id: int) -> str | None:
        dev = self._devices().get(device_id)
        return None if dev is None else dev.kind

    def _status(self, cmd: Command, kind: str) -> None:
        if self.publish:
            self.outbox.put(cmd, kind)

    def _refused(self, kind: str, device_id: int, doc: dict[str, Any]) -> None:
        if self.publish:
            self.outbox.put_doc(kind, device_id, doc)

    def next_keys(self) -> dict[int, bytes]:
        """Pending rotations' next keys, for the pipeline."""
        return self.store.next_keys()

    def watch(self, watch: Any, pipeline: Any) -> None:
        """Hook into the daemon's registry watch: a change of the registry file refreshes
        the pending rotations' keys, and re-reads the device snapshot only when the
        devices changed (the store's own commits do not cost a reload)."""
        refresh = self.refresh_keys(pipeline)
        self._refresh = refresh
        seen = [self._device_changes()]

        def devices_changed() -> bool:
            created = False
            try:   # a registry restored from a backup may lack the downlink tables
                created = self.store.ensure_tables()
            except Exception as exc:
                log.error("downlink tables not checked: %s", exc)
            refresh()
            now = self._device_changes()
            if not created and now is not None and now == seen[0]:
                return False
            seen[0] = now
            return True

        watch.on_reload = refresh
        watch.devices_changed = devices_changed

    def _device_changes(self) -> int | None:
        try:
            return self.store.device_changes()
        except Exception:  # unreadable: reload, as without the store
            return None

    def refresh_keys(self, pipeline: Any) -> Callable[[], None]:
        """A callback that gives ``pipeline`` the current next keys (after a registry
        reload: ``knute devices send DEVICE rekey`` changes the registry file)."""
        def refresh() -> None:
            try:
                pipeline.next_keys = self.store.next_keys()
            except Exception as exc:  # keep the keys we have
                log.error("downlink key rotations not re-read: %s", exc)
        return refresh

    def heard(self, ready: Ready) -> None:
        """A released frame: its report and the device's queue are looked at."""
        if ready.receptions and ready.receptions[0].frame:
            self.service.heard(uplink_from(ready))

    def start(self) -> None:
        """Start the worker and the command listener."""
        self.service.start()
        if self.city is not None:
            self.city.start()
        if self.listener is not None:
            self.listener.start()

    def stop(self) -> None:
        """Stop taking commands, finish the uplinks already heard, close the store."""
        if self.listener is not None:
            self.listener.stop()
        self.service.stop()
        if self.city is not None:
            self.city.stop()
        if self.adr is not None:
            self.adr.close()
        self.store.close()

    def stats(self) -> dict[str, Any]:
        """For ``knute gateway status``."""
        out = self.service.stats()
        if self.listener is not None:
            out["commands_topic"] = self.listener.stats()
        if self.city is not None:
            out["city"] = self.city.stats()
            if self.city.rekey is not None:
                out["rekey"] = self.city.rekey.stats()
        return out


def rekey_peers(cfg: GatewayConfig) -> tuple[str, ...]:
    """The gateways a key rotation started here must reach first: ``[share.peers]``,
    with several gateways (``[downlinks] gateways`` above 1) and a share key; else none
    (one gateway, or gateways on one registry file, rotate as before)."""
    if cfg.downlinks.gateways <= 1 or cfg.share_key is None:
        return ()
    return tuple(g for g, _pub in cfg.share_peers)
