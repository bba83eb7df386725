"""Prometheus metrics for a running gateway (``[metrics] listen = "127.0.0.1:9108"``).

A custom collector reads the same status dict that ``knute gateway status``
prints, at scrape time, so the two never disagree and nothing is counted
twice. It is registered in its own CollectorRegistry (no process-global
state) and served by prometheus-client's small HTTP server.

Exposed families (all prefixed ``knute_gateway_``):
  received_total{source}              frames/records/rxpk heard
  accepted_total{source}              frames committed to the spool
  merged_total{source}                copies folded into a frame by dedup
  rejected_total{source,reason}       rejections by reason
  spool_depth, spool_bytes, spool_oldest_age_seconds
  spool_evicted_total                 rows evicted by the overflow policy
  spool_parked, parked_total          rows the broker refused, parked (now; ever)
  forwarded_total, publish_errors_total, mqtt_reconnects_total
  mqtt_connected                      1 while the broker session is up
  source_up{source}                   1 while a source's link is open
  silent_devices                      devices overdue by [silence] missed_intervals
  downlinks_total{state}              downlinks sent; commands applied, rejected, expired
  downlink_errors_total               downlinks not sent (no path, refused by a TX_ACK, ...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "knute_gateway"


class StatusCollector(Collector):
    """Turns the daemon's status dict into metric families at scrape time."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        st = self._status()
        sources: dict[str, Any] = st.get("sources", {})
        for name, help_text in (("received", "Frames, records and rxpk entries heard"),
                                ("accepted", "Frames committed to the spool"),
                                ("merged", "Copies merged into one frame by dedup")):
            fam = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=["source"])
            for src, entry in sorted(sources.items()):
                fam.add_metric([src], float(entry.get(name, 0)))
            yield fam
        rej = CounterMetricFamily(f"{PREFIX}_rejected", "Rejected frames by reason",
                                  labels=["source", "reason"])
        for src, entry in sorted(sources.items()):
            for reason, n in sorted(entry.get("rejected_by_reason", {}).items()):
                rej.add_metric([src, reason], float(n))
        yield rej
        up = GaugeMetricFamily(f"{PREFIX}_source_up", "1 while the source's link is open",
                               labels=["source"])
        for src, entry in sorted(sources.items()):
            up.add_metric([src], 1.0 if entry.get("state") == "open" else 0.0)
        yield up
        spool: dict[str, Any] = st.get("spool", {})
        for key, metric in (("depth", "spool_depth"), ("bytes", "spool_bytes"),
                            ("oldest_age_s", "spool_oldest_age_seconds"),
                            ("parked", "spool_parked_rows")):
            yield GaugeMetricFamily(f"{PREFIX}_{metric}", f"Spool {key}",
                                    value=float(spool.get(key, 0)))
        yield CounterMetricFamily(f"{PREFIX}_spool_evicted", "Rows evicted from the spool",
                                  value=float(spool.get("evicted_total", 0)))
        yield CounterMetricFamily(f"{PREFIX}_spool_parked", "Rows parked (never published)",
                                  value=float(spool.get("parked_total", 0)))
        fwd: dict[str, Any] = st.get("forwarder", {})
        for key, metric in (("forwarded_total", "forwarded"),
                            ("publish_errors", "publish_errors"),
                            ("reconnects", "mqtt_reconnects")):
            yield CounterMetricFamily(f"{PREFIX}_{metric}", f"Forwarder {key}",
                                      value=float(fwd.get(key, 0)))
        yield GaugeMetricFamily(f"{PREFIX}_mqtt_connected", "1 while connected to the broker",
                                value=1.0 if fwd.get("connected") else 0.0)
        silence: dict[str, Any] = st.get("silence", {})
        yield GaugeMetricFamily(f"{PREFIX}_silent_devices",
                                "Devices that missed [silence] missed_intervals send intervals",
                                value=float(silence.get("silent", 0)))
        totals: dict[str, Any] = st.get("totals", {})
        dl = CounterMetricFamily(f"{PREFIX}_downlinks", "Downlinks sent, and commands by "
                                 "outcome", labels=["state"])
        for state in ("sent", "applied", "rejected", "expired"):
            dl.add_metric([state], float(totals.get(f"downlinks_{state}", 0)))
        yield dl
        yield CounterMetricFamily(f"{PREFIX}_downlink_errors", "Downlinks not sent",
                                  value=float(totals.get("downlink_errors", 0)))


class MetricsServer:
    """The HTTP endpoint (loopback by default) serving the collector."""

    def __init__(self, host: str, port: int, status: Callable[[], dict[str, Any]]) -> None:
        from prometheus_client import start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(status))
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self._thread.name = "knute-metrics"   # every gateway thread is named knute-*

    @property
    def port(self) -> int:
        """The bound port (when the config asked for 0)."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
