"""``knute backend run``: the MQTT consumer that stores readings and raises alerts.

``Backend`` is the core: ``handle(topic, payload)`` checks a reading, stores
it (idempotent on ``id``), rebuilds its meter's hourly series and evaluates
the per-meter signals; ``evaluate(now)`` runs the signals that depend on time
passing (silent meters) and on several meters (district night leakage). Each
alert transition is handed to ``publish(topic, document)``.

``run(config)`` is the I/O shell: a paho-mqtt client with a fixed client id
and a persistent session (MQTT 5 ``clean_start=False`` with a session expiry,
or 3.1.1 ``clean_session=False``), QoS 1, and manual acknowledgement: a
reading is acknowledged only after the store committed it (or counted it as
bad), so a crash before the commit gets it redelivered.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from knute.backend import alerts, analytics, queries
from knute.backend.air_service import AIR, AirIndexer
from knute.backend.alerts import Rule
from knute.backend.config import Config, District
from knute.backend.hours import HOUR_S, Hour, format_hour, parse_utc
from knute.backend.ingest import BadReading, ReadingChecker
from knute.backend.open_data import OpenData
from knute.backend.service_leaks import (
    evaluate_backflow,
    evaluate_district_rise,
    evaluate_meter_leaks,
    evaluate_mnf_trend,
    leaks_rules,
)
from knute.backend.store import SqlStore, open_store

WATER = "water_meter"
NODE_ALARMS = ("leak", "burst", "backflow", "tamper")
# A district's bulk (inlet, outlet) meter carries the flow of hundreds of
# households: it never has a zero hour, its night flow is the district's and an
# hour of 2,000 L is ordinary. The household flow rules (and the node's own
# flow alarms, the same rules in the firmware) say nothing about it; the
# district signals read its hours instead. Its index, backflow, tamper and
# silence are checked as any meter's (docs/water.md, "Bulk meters").
HOUSEHOLD_ONLY = ("continuous_flow", "night_flow", "steady_flow", "burst",
                  "alarm_leak", "alarm_burst")

Publish = Callable[[str, Mapping[str, Any]], None]
Evidence = Callable[[], Sequence[Mapping[str, Any]]]
EVALUATE_BACK_S = 9 * 86400     # signals look at this much history (profiles reach 253 h back)


def iso(t: float) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as the contract writes times."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _evidence(hours: Sequence[Hour]) -> list[dict[str, Any]]:
    return [{"hour": format_hour(h.start), "litres": h.litres, "quality": h.quality}
            for h in hours]


def _last_heard(t: float) -> list[dict[str, Any]]:
    return [{"last_heard": iso(t)}]


def log(message: str) -> None:
    """One line on stderr."""
    print(f"knute backend: {message}", file=sys.stderr, flush=True)


class Backend:
    """Store, series and signals behind one lock (paho's thread and the timer share it)."""

    def __init__(self, config: Config, store: SqlStore, publish: Publish,
                 checker: ReadingChecker | None = None,
                 publish_air: Callable[[str, Any], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.publish = publish
        self.checker = checker or ReadingChecker(config.schema_path)
        self.air = AirIndexer(config, store, publish_air or publish, time.time)
        self.open_data = OpenData(config, publish_air or publish)
        self.lock = threading.Lock()
        self.handled: dict[str, int] = {}     # this process's outcomes (the store counts all)
        # The alert documents of the meter being evaluated, read in one query.
        self._alerts: dict[str, dict[str, Any] | None] = {}
        self.assigned = {d for district in config.districts
                         for d in (*district.inflow, *district.outflow, *district.households)}
        self.bulk = {d for district in config.districts
                     for d in (*district.inflow, *district.outflow)}
        # The districts' rollup of household hours, kept at ingest from here on.
        store.set_districts({d.name: d.households for d in config.districts})
        hours = config.continuous_flow_hours
        self.rules = {
            "continuous_flow": Rule(
                "continuous_flow", open_above=hours - 0.5, close_below=0.5, close_after=2,
                unit="h", text=f"no zero hour in {hours} h or more; closes after 2 hours "
                               "in a row without flow"),
            "night_flow": Rule(
                "night_flow", open_above=config.night_flow_l_h,
                close_below=config.night_flow_l_h / 2, open_after=2, close_after=2,
                unit="L/h", text="lowest hourly flow 02:00-04:00 local time above "
                                 f"{config.night_flow_l_h:g} L/h on 2 nights in a row; "
                                 "closes after 2 nights below half of it"),
            "index_backwards": Rule(
                "index_backwards", open_above=0.5, close_below=0.5, close_after=4,
                text="the meter index went down; closes after 4 readings without it"),
            "silent": Rule(
                "silent", open_above=float(config.silent_after_intervals), close_below=1.0,
                unit="intervals",
                text=f"nothing heard for {config.silent_after_intervals} expected intervals "
                     f"of {config.expected_interval_s:g} s; closes when heard again"),
            "district_leak": Rule(
                "district_leak", open_above=config.district_leak_l_h,
                close_below=config.district_leak_l_h / 2, close_after=2, unit="L/h",
                text="minimum night flow minus "
                     f"{config.night_use_l_per_property_h:g} L/h per property above "
                     f"{config.district_leak_l_h:g} L/h; closes after 2 nights below half"),
        }
        self.rules.update(leaks_rules(config))
        for name in NODE_ALARMS:
            self.rules[f"alarm_{name}"] = Rule(
                f"alarm_{name}", open_above=0.5, close_below=0.5,
                text=f"the meter reported its own '{name}' alarm; closes with its first "
                     "reading without it")

    # -- readings ------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> str:
        """Check, store and evaluate one message; return what happened to it (see ``_handle``)."""
        outcome = self._handle(topic, payload)
        self.handled[outcome] = self.handled.get(outcome, 0) + 1
        return outcome

    def _handle(self, topic: str, payload: bytes) -> str:
        """Check, store and evaluate one message; return what happened to it.

        ``bad`` (counted, one line logged), ``duplicate``, ``late`` or ``stored``.
        Store errors (disk full, database locked) propagate: the caller must not
        acknowledge the message then.
        """
        with self.lock:
            try:
                doc = self.checker.check(topic, payload)
            except BadReading as exc:
                self.store.count("bad")
                log(f"bad reading on {topic}: {exc}")
                return "bad"
            with self.store.transaction():
                outcome = self.store.add_reading(doc)
                if outcome in ("duplicate", "expired"):
                    return outcome
                try:
                    self.open_data.handle(doc)
                    if doc["kind"] == AIR:
                        self.air.handle(doc)
                except self.store.errors:
                    raise
                except Exception as exc:     # the reading is stored whatever the index does
                    self.store.count("air_errors")
                    log(f"air index or open data failed on {topic}: "
                        f"{type(exc).__name__}: {exc}")
                if doc["kind"] != WATER:
                    return outcome
                device = str(doc["device"])
                if self.assigned and device not in self.assigned:
                    self.store.count("unassigned")
                keys = [f"{name}/{device}" for name in self.rules]
                found = self.store.alerts_by_key(keys)
                self._alerts = {key: found.get(key) for key in keys}
                try:
                    self._evaluate_meter(device, doc)
                finally:
                    self._alerts = {}
                return outcome

    def stored_alert(self, key: str) -> dict[str, Any] | None:
        """Alert ``key``'s stored document (read with the meter's others while it is evaluated)."""
        if key in self._alerts:
            return self._alerts[key]
        return self.store.alert(key)

    def _track(self, signal_name: str, subject: str, subject_kind: str,
               keep_period: bool = False) -> _Tracker:
        return _Tracker(self, signal_name, subject, subject_kind, keep_period)

    def _evaluate_meter(self, device: str, doc: Mapping[str, Any]) -> None:
        received = parse_utc(doc["received_at"])
        if device in self.bulk:
            self._evaluate_bulk(device, doc, received)
            return
        since = int(received) - EVALUATE_BACK_S
        hours = self.store.hours(device, since - since % HOUR_S)
        need = self.config.continuous_flow_hours
        with self._track("continuous_flow", device, "meter", True) as flow:
            for i, (hour, length) in enumerate(analytics.run_length_by_hour(hours)):
                if hour <= flow.last:
                    continue
                flow.feed(hour, length, format_hour(hour + HOUR_S),
                          partial(_evidence, hours[max(i - length + 1, i + 1 - need):i + 1]))
        with self._track("night_flow", device, "meter", True) as night_flow:
            for night in analytics.nights(hours, self.config.timezone):
                if night.min_l_h is not None and night.night.toordinal() > night_flow.last:
                    night_flow.feed(night.night.toordinal(), night.min_l_h,
                                    format_hour(night.hours[-1].start + HOUR_S),
                                    partial(_evidence, night.hours))
        evaluate_meter_leaks(self, device, hours, doc)
        self._evaluate_index(device, doc, received)

    def _evaluate_bulk(self, device: str, doc: Mapping[str, Any], received: float) -> None:
        """A bulk meter's reading: backflow, index and node alarms, no household flow rule."""
        evaluate_backflow(self, device, doc)
        self._evaluate_index(device, doc, received)

    def _evaluate_index(self, device: str, doc: Mapping[str, Any], received: float) -> None:
        """The node's own alarms and a backwards index, on ``device``'s new reading."""
        at = str(doc["received_at"])
        alarms = set(doc.get("alarms", []))
        for name in NODE_ALARMS:
            if device in self.bulk and f"alarm_{name}" in HOUSEHOLD_ONLY:
                continue
            with self._track(f"alarm_{name}", device, "meter") as alarm:
                alarm.feed(received, float(name in alarms), at,
                           lambda: [{"reading": doc["id"], "received_at": at}])
        previous = self.store.previous_received(device, received)
        went_back = [s for s in self.store.index_steps(device)
                     if (previous is None or s[0] > previous) and s[0] <= received]
        with self._track("index_backwards", device, "meter") as backwards:
            backwards.feed(received, float(bool(went_back)), at, lambda: [
                {"hour": format_hour(h), "index_before_l": b, "index_after_l": a}
                for h, b, a in went_back])

    def raised_alerts(self) -> list[tuple[str, dict[str, Any]]]:
        """(topic, document) of every alert that ever opened, to publish again."""
        with self.lock:
            out = []
            for stored in self.store.alerts():
                if stored.get("opened_at") is None:
                    continue
                doc = {k: v for k, v in stored.items() if k != "_state"}
                out.append((alerts.topic(self.config.prefix, doc["alert"], doc["subject"]),
                            doc))
            return out

    # -- time-driven signals -------------------------------------------------

    def evaluate(self, now: float) -> None:
        """Silent meters and district night leakage, as of unix time ``now``."""
        with self.lock, self.store.transaction():
            self.store.lock("evaluate")       # one instance at a time on a shared server
            kinds = self.store.kinds()
            heard = {d: t for d, t in self.store.last_heard().items() if kinds[d] == WATER}
            for device, t in heard.items():
                intervals = (now - t) / self.config.expected_interval_s
                with self._track("silent", device, "meter") as silent:
                    silent.feed(now, intervals, iso(now), partial(_last_heard, t))
            for district in self.config.districts:
                self._evaluate_district(district, now)

    def balances(self, district_name: str, start: int, end: int) -> list[analytics.Balance]:
        """The hourly balances of a district in [start, end) (hour starts, unix s)."""
        district = next(d for d in self.config.districts if d.name == district_name)
        return queries.district_balances(self.store, district, start, end)

    def _evaluate_district(self, district: District, now: float) -> None:
        inlet = district.inflow[0]
        inlet_hours = self.store.hours(inlet, int(now) - EVALUATE_BACK_S, int(now))
        with self._track("district_leak", district.name, "district", True) as leak_alert:
            for night in analytics.nights(inlet_hours, self.config.timezone):
                if night.min_l_h is not None and night.night.toordinal() > leak_alert.last:
                    self._district_night(district, night, leak_alert)
        evaluate_district_rise(self, district, now)
        evaluate_mnf_trend(self, district, now)

    def _district_night(self, district: District, night: analytics.Night,
                        leak_alert: _Tracker) -> None:
        first, last = night.hours[0].start, night.hours[-1].start + HOUR_S
        balances = self.balances(district.name, first, last)
        leak = analytics.mnf_leakage(night.night, balances, district.properties,
                                     self.config.night_use_l_per_property_h)
        if leak is None:
            return
        evidence = [{"hour": format_hour(b.hour), "inflow_l": b.inflow_l,
                     "outflow_l": b.outflow_l, "households_l": b.households_l,
                     "loss_l": b.loss_l, "measured": b.measured,
                     "estimated": b.estimated, "missing": b.missing} for b in balances]
        leak_alert.feed(night.night.toordinal(), leak.leakage_l_h, format_hour(last),
                        lambda: evidence)


def district_balances(store: SqlStore, district: District, start: int,
                      end: int) -> list[analytics.Balance]:
    """The hourly balances of ``district`` in [start, end), meter by meter.

    ``analytics.district_balance`` on every meter's hours as read one by one:
    the rule the store's aggregate (``queries.district_balances``) is held
    equal to by the tests and timed against by ``knute bench web``.
    """
    series = {d: {h.start: h for h in store.hours(d, start, end)}
              for d in (*district.inflow, *district.outflow, *district.households)}
    out = []
    for hour in range(start - start % HOUR_S, end, HOUR_S):
        out.append(analytics.district_balance(
            hour, [series[d].get(hour) for d in district.inflow],
            [series[d].get(hour) for d in district.outflow],
            [series[d].get(hour) for d in district.households]))
    return out


def run(config: Config, stop: threading.Event | None = None) -> int:
    """Consume readings until SIGTERM/SIGINT (or ``stop``); return the exit status."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    stop = stop or threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    store = open_store(config)
    web = None
    if config.web_enabled:
        from knute.backend.web import WebServer

        web = WebServer(config, on_error=log)
        try:
            log(f"web page at {web.start()}")
        except BaseException:
            store.close()
            raise
    v5 = config.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         clean_session=None if v5 else False, manual_ack=True)

    def publish(topic: str, document: Mapping[str, Any]) -> None:
        client.publish(topic, json.dumps(document, ensure_ascii=False), qos=1, retain=True)
        log(f"alert {document['state']}: {topic}")

    def publish_retained(topic: str, document: Any) -> None:
        client.publish(topic, json.dumps(document, ensure_ascii=False), qos=1, retain=True)

    backend = Backend(config, store, publish, publish_air=publish_retained)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        if reason.is_failure:
            log(f"broker refused the connection: {reason}")
            return
        client.subscribe(config.subscription, qos=1)
        log(f"connected to {config.host}:{config.port} as {config.client_id}, "
            f"session present: {bool(flags.session_present)}")
        # Alerts raised while the broker was away (or lost with a broker without
        # persistence) are retained again, so the broker's view matches the store.
        for topic, document in backend.raised_alerts():
            client.publish(topic, json.dumps(document, ensure_ascii=False), qos=1, retain=True)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                     properties: Any) -> None:
        # Logged on the broker's SUBACK: from here on, readings reach this consumer.
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log(f"broker refused the subscription to {config.subscription}: {refused[0]}")
        else:
            log(f"subscribed to {config.subscription}")

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            backend.handle(message.topic, bytes(message.payload))
        except store.errors as exc:
            log(f"store error, reading left unacknowledged for redelivery: {exc}")
            return
        except Exception as exc:     # a defect must not stop the consumer
            log(f"error on {message.topic}: {type(exc).__name__}: {exc}")
            store.count("errors")
        client.ack(message.mid, message.qos)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.reconnect_delay_set(1, 30)
    properties = None
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = config.session_expiry_s
    try:
        client.connect_async(config.host, config.port, keepalive=config.keepalive_s,
                             clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                             properties=properties)
        client.loop_start()
        policy = config.retention()
        retained_at = 0.0
        while not stop.wait(config.evaluate_every_s):
            try:
                backend.evaluate(time.time())
                if config.readings_days and time.time() - retained_at >= config.retention_every_s:
                    retained_at = time.time()
                    with backend.lock:
                        done = store.apply_retention(retained_at, policy)
                    if any(done.values()):
                        log("retention: " + json.dumps(done, sort_keys=True))
            except store.errors as exc:
                log(f"store error during evaluation: {exc}")
        client.disconnect()
        client.loop_stop()
    finally:
        if web is not None:
            web.stop()
        backend.open_data.close()
        counters = store.counters()
        store.close()
    log("stopped; this process handled " + json.dumps(backend.handled, sort_keys=True)
        + "; counters " + json.dumps(counters, sort_keys=True))
    return 0


class _Tracker:
    """One alert's state for a batch of periods: loaded once, stored once.

    The state is written back only when more than ``last_period`` changed
    (feeding a period again then gives the same result), so a signal that
    stays quiet costs no write; ``keep_period`` also stores a new period (for
    signals with one period a night, whose evaluation is the costly part).
    Each transition is published.
    """

    def __init__(self, backend: Backend, signal_name: str, subject: str,
                 subject_kind: str, keep_period: bool) -> None:
        self.backend = backend
        self.keep_period = keep_period
        self.rule = backend.rules[signal_name]
        self.key = f"{signal_name}/{subject}"
        self.subject = subject
        self.subject_kind = subject_kind
        stored = backend.stored_alert(self.key)
        self.before: dict[str, Any] = stored["_state"] if stored else alerts.new_state()
        self.state = dict(self.before)
        self.at = ""

    @property
    def last(self) -> float:
        """The last period fed (−inf before the first)."""
        last = self.state.get("last_period")
        return float("-inf") if last is None else float(last)

    def feed(self, period: float, value: float, at: str, evidence: Evidence) -> None:
        """One period's value; ``evidence`` is computed only when it may open the alert."""
        if period <= self.last:
            return
        opening = self.state["state"] == alerts.CLOSED and value > self.rule.open_above
        shown = evidence() if opening else ()
        self.state, change = alerts.step(self.state, self.rule, period, value, at, shown)
        self.at = at
        if change:
            document = alerts.document(self.rule, self.subject, self.subject_kind,
                                       self.state, at)
            self.backend.publish(alerts.topic(self.backend.config.prefix,
                                              self.rule.signal, self.subject), document)

    def __enter__(self) -> _Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        ignored = () if self.keep_period else ("last_period",)
        moved = {k: v for k, v in self.state.items() if k not in ignored}
        if moved != {k: v for k, v in self.before.items() if k not in ignored}:
            document = alerts.document(self.rule, self.subject, self.subject_kind,
                                       self.state, self.at)
            stored = {**document, "_state": self.state}
            self.backend.store.put_alert(self.key, stored)
            if self.key in self.backend._alerts:
                self.backend._alerts[self.key] = stored
