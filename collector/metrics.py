"""The collector's own metrics, served for Prometheus on /metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass(frozen=True, slots=True)
class MetricTotals:
    received: int
    accepted: int
    rejected: int
    duplicates: int
    points_written: int


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("pilot_collector_messages_received", "MQTT messages received", registry=r)
        self.accepted = Counter("pilot_collector_messages_accepted", "Messages that passed validation", registry=r)
        self.rejected = Counter(
            "pilot_collector_messages_rejected", "Messages sent to the dead-letter topic", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "pilot_collector_messages_duplicate",
            "Redelivered or replayed messages already stored, per device and channel",
            ["site", "line", "device", "channel"],
            registry=r,
        )
        self.seq_gaps = Counter(
            "pilot_collector_seq_missing",
            "Messages missing according to seq, per device and channel",
            ["site", "line", "device", "channel"],
            registry=r,
        )
        self.points_written = Counter("pilot_collector_points_written", "Points written to InfluxDB", registry=r)
        self.sparkplug_historical = Counter(
            "pilot_collector_sparkplug_historical_points",
            "Sparkplug telemetry points flagged is_historical (store-and-forward): backfill, not live",
            registry=r,
        )
        self.sparkplug_rebirths = Counter(
            "pilot_collector_sparkplug_rebirth_requests", "NCMD Node Control/Rebirth sent to edge nodes", registry=r
        )
        self.sparkplug_stale_deaths = Counter(
            "pilot_collector_sparkplug_stale_deaths",
            "NDEATHs ignored: their bdSeq is not the current birth's",
            registry=r,
        )
        self.sparkplug_ignored_metrics = Counter(
            "pilot_collector_sparkplug_ignored_metrics",
            "Sparkplug metric values mapped to no profile metric and no signal",
            registry=r,
        )
        self.batches = Counter("pilot_collector_batches", "Batches handled, by outcome", ["outcome"], registry=r)
        self.write_retries = Counter("pilot_collector_write_retries", "InfluxDB writes retried", registry=r)
        self.write_seconds = Histogram(
            "pilot_collector_write_seconds",
            "Time to write one batch to InfluxDB, retries included",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.backlog = Gauge("pilot_collector_backlog_messages", "Received messages not yet acknowledged", registry=r)
        self.connected = Gauge("pilot_collector_mqtt_connected", "1 while connected to the broker", registry=r)
        self.watchdog_reconnects = Counter(
            "pilot_collector_watchdog_reconnects",
            "Reconnects because the broker stopped delivering while the connection looked alive",
            registry=r,
        )
        self.thread_failures = Counter(
            "pilot_collector_thread_failures",
            "Failures of a collector thread (validate, write, replay, watchdog), each retried with backoff",
            ["thread"],
            registry=r,
        )
        self.healthy = Gauge(
            "pilot_collector_healthy",
            "1 while connected to the broker with every collector thread running and none failing",
            registry=r,
        )
        self.sessions_lost = Counter(
            "pilot_collector_mqtt_sessions_lost",
            "Times our broker session was taken over by another connection with our client id (taken_over) or"
            " was missing on a reconnect (not_present): what the broker had queued for us may be gone",
            ["reason"],
            registry=r,
        )
        self.spool_batches = Gauge(
            "pilot_collector_spool_batches", "Batches in the disk spool, waiting for InfluxDB", registry=r
        )
        self.spool_bytes = Gauge("pilot_collector_spool_bytes", "Bytes the disk spool holds", registry=r)
        self.spool_quota_bytes = Gauge("pilot_collector_spool_quota_bytes", "The disk spool's quota", registry=r)

    def totals(self) -> MetricTotals:
        """A snapshot of the counters, for progress reports and tests."""
        value = self.registry.get_sample_value
        rejected, duplicates = (
            sum(
                sample.value
                for metric in counter.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
            for counter in (self.rejected, self.duplicates)
        )
        return MetricTotals(
            received=int(value("pilot_collector_messages_received_total") or 0),
            accepted=int(value("pilot_collector_messages_accepted_total") or 0),
            rejected=int(rejected),
            duplicates=int(duplicates),
            points_written=int(value("pilot_collector_points_written_total") or 0),
        )

    def watch_backlog(self, size: Callable[[], float]) -> None:
        self.backlog.set_function(size)

    def watch_health(self, healthy: Callable[[], bool]) -> None:
        self.healthy.set_function(lambda: float(healthy()))

    def watch_spool(self, batches: Callable[[], float], size: Callable[[], float], quota: float) -> None:
        self.spool_batches.set_function(batches)
        self.spool_bytes.set_function(size)
        self.spool_quota_bytes.set(quota)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
